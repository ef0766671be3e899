"""The trained network of a checkpoint folder, ready to classify: what predict.py and the explanations use.

The run's classes, image size and training mean come from the folder by run_folder's one
rule; the graph is visualize_convnets.build_graph's, so every checkpoint variable finds its
place; the newest readable full checkpoint is restored into it. Images are prepared as
training prepared them: resized, the training mean subtracted, no dropout.
"""
import numpy as np

import architecture
import cli
import run_folder
import tf_start
import tensorflow as tf
import visualize_convnets as vc

v1 = tf.compat.v1


class NoCheckpoint(cli.UsageError):
    """The folder holds no full checkpoint yet."""


class Classifier:
    """The trained network of a checkpoint folder, with its run's classes, image size and mean."""

    def __init__(self, checkpoint_dir):
        checkpoints = run_folder.find_checkpoints(checkpoint_dir)
        run, self.mean = run_folder.load_run(checkpoint_dir, checkpoints)
        self.classes, self.image_size = run["classes"], run["image_size"]
        self.network = architecture.of_run(run)
        self.model = vc.build_graph(self.image_size, len(self.classes), network=self.network)
        # Outside its graph a Saver would try to restore eagerly, which TF1 variables cannot.
        with self.model["graph"].as_default():
            tf_start.gpus()  # TensorFlow's CUDA probe, its log shown only when it failed to find a GPU that is there
            self.session = v1.Session(config=tf_start.session_config())
            tf_start.quiet_python_logs()
            self.checkpoint = run_folder.restore_latest(self.session, v1.train.Saver(), checkpoint_dir, checkpoints)
        if self.checkpoint is None:
            raise NoCheckpoint(f"no full checkpoint in {checkpoint_dir}: train first (python visualize_convnets.py)")

    @property
    def explained_layer(self):
        """The conv layer every explanation looks at (Grad-CAM's, explain.py; filter_gif's Grad-CAM PNG), as the
        network's description names it: the tutorial's conv2_2."""
        return self.network.views["explained"]

    def feed(self, pictures):
        """The feed of uint8 [n, size, size, 3] pictures, prepared as training prepared its images, no dropout."""
        return {self.model["X"]: self.network.prepare(pictures.astype(np.float32), self.mean),
                self.model["keepRate1"]: 1.0, self.model["keepRate2"]: 1.0}

    def probabilities(self, pictures):
        """[n, classes] softmax outputs for uint8 pictures."""
        return self.session.run(self.model["Y"], self.feed(pictures))
