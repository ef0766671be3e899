"""Benchmark of --pretrained vgg16: a training step with the conv layers frozen against one fine-tuning conv5, and
the frozen network's forward pass against Keras's own VGG16 on the same arrays.

In one process, turn about (interleaved; medians printed, this machine is shared and noisy), on synthetic
float32 images with random weights (timings do not depend on the values):

  frozen     visualize_convnets.build_graph(network=VGG16) training step, [train_step, loss, accuracy]
  conv5      the same with fine_tune_from="conv5_1"
  forward    the frozen graph's conv5_3 for a batch (no dropout)
  keras      keras.applications.VGG16(weights=None, include_top=False)'s block5_conv3 on the same batch,
             model.predict_on_batch-style call through a keras.Model (TensorFlow's oneDNN kernels too)

    python bench/pretrained_bench.py --image-size 64 --batch-size 10 --repeats 5

Ends with one JSON line.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import architecture  # noqa: E402
import tf_start  # noqa: E402
import tensorflow as tf  # noqa: E402
import visualize_convnets as vc  # noqa: E402

v1 = tf.compat.v1


def training_step(size, batch, fine_tune_from):
    """A session and the fetches of a VGG16 training step, and its feed on random images."""
    model = vc.build_graph(size, 2, network=architecture.VGG16_NETWORK, fine_tune_from=fine_tune_from, seed=0)
    with model["graph"].as_default():
        session = v1.Session(config=tf_start.session_config())
        session.run(v1.global_variables_initializer())
    rng = np.random.default_rng(0)
    feed = {model["X"]: rng.normal(0, 50, (batch, size, size, 3)).astype(np.float32),
            model["Y_"]: np.eye(2, dtype=np.float32)[rng.integers(0, 2, batch)],
            model["keepRate1"]: 1.0, model["keepRate2"]: 0.5}
    fetches = [model["train_step"], model["loss"], model["accuracy"]]
    forward = {model["X"]: feed[model["X"]], model["keepRate1"]: 1.0, model["keepRate2"]: 1.0}
    return {"step": lambda: session.run(fetches, feed), "forward": lambda: session.run(model["layers"]["conv5_3"],
                                                                                        forward)}, feed[model["X"]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    tf_start.gpus()
    import keras
    frozen, images = training_step(args.image_size, args.batch_size, None)
    tuned, _ = training_step(args.image_size, args.batch_size, "conv5_1")
    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=images.shape[1:])
    block5_conv3 = keras.Model(vgg.inputs, vgg.get_layer("block5_conv3").output)
    runs = {"frozen_step": frozen["step"], "conv5_step": tuned["step"], "graph_forward": frozen["forward"],
            "keras_forward": lambda: block5_conv3([images], training=False).numpy()}
    seconds = {name: [] for name in runs}
    for repeat in range(args.repeats + 1):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            if repeat:  # the first call of each sets up its kernels
                seconds[name].append(time.perf_counter() - started)
    medians = {f"{name}_s": statistics.median(values) for name, values in seconds.items()}
    for name, value in medians.items():
        print(f"{name:18s} {value:.3f} s (median of {args.repeats}, batch {args.batch_size} at {args.image_size} px)")
    print(json.dumps({"image_size": args.image_size, "batch_size": args.batch_size, **medians,
                      "conv5_vs_frozen": medians["conv5_step_s"] / medians["frozen_step_s"],
                      "graph_vs_keras_forward": medians["graph_forward_s"] / medians["keras_forward_s"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
