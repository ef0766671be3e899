"""Benchmark: filter_gif.py on the snapshots of a full 400-epoch run at the defaults.

A 400-epoch run at batch 10 on the tutorial's ~400 training images takes ~16,000 steps:
320 snapshots at --snapshot-every 50. This writes 320 snapshots of drifting conv weights
(224-px run, real Saver files), then times, in one process:

  weights   the three filter GIFs (conv1_1, conv1_2, conv2_2) and their PNGs
  image     the same plus --image: the tutorial's 448x224 feature-map GIFs of conv1_2 and
            conv2_2 and one PNG per conv and pool layer

and ends with one JSON line.

    python bench/gif_bench.py [--snapshots 320]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import filter_gif as fg  # noqa: E402
import visualize_convnets as vc  # noqa: E402
from architecture import TUTORIAL  # noqa: E402
import run_folder  # noqa: E402
import tf_start  # noqa: E402
import tensorflow as tf  # noqa: E402

v1 = tf.compat.v1

IMAGE_SIZE = 224


def write_snapshots(checkpoint_dir, count, every=50):
    """``count`` snapshots whose weights drift a little between saves, as training makes them."""
    rng = np.random.default_rng(0)
    run_folder.write_run(checkpoint_dir, {"classes": ["shiba_inu", "samoyed"], "image_size": IMAGE_SIZE, "batch_size": 10,
                                  "train_images": 340, "seed": 0},
                 rng.uniform(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32))
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3])
        vc.conv_stack(images, TUTORIAL, vc.new_conv_variables)
        variables = vc.snapshot_variables(graph, TUTORIAL)
        drift = tf.group(*[v.assign_add(tf.random.normal(v.shape, stddev=0.002)) for v in variables])
        saver = v1.train.Saver(variables, max_to_keep=None)
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            for index in range(count):
                saver.save(session, os.path.join(checkpoint_dir, run_folder.SNAPSHOT_DIR, run_folder.SNAPSHOT_NAME),
                           global_step=index * every, write_meta_graph=False, write_state=False)
                session.run(drift)
            # A "latest full checkpoint" for the feature-map PNGs: the conv variables suffice.
            saver.save(session, os.path.join(checkpoint_dir, run_folder.CHECKPOINT_NAME), global_step=count * every)


def timed(argv):
    started = time.perf_counter()
    assert fg.main(argv) == 0
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshots", type=int, default=320, help="snapshots to animate")
    args = parser.parse_args()
    tf_start.gpus()  # TensorFlow's CUDA probe, its log shown only when it failed to find a GPU that is there
    work = tempfile.mkdtemp(prefix="gif-bench-")
    try:
        checkpoint_dir = os.path.join(work, "checkpoints")
        started = time.perf_counter()
        write_snapshots(checkpoint_dir, args.snapshots)
        print(f"wrote {args.snapshots} snapshots in {time.perf_counter() - started:.1f} s")
        image = os.path.join(work, "dog.jpg")
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(image)
        common = ["--checkpoint-dir", checkpoint_dir]
        weights_s = timed(common + ["--out", os.path.join(work, "weights")])
        image_s = timed(common + ["--out", os.path.join(work, "image"), "--image", image])
        frames = len(os.listdir(os.path.join(checkpoint_dir, run_folder.SNAPSHOT_DIR))) // 2
        print(f"weights: 3 GIFs of {frames} frames in {weights_s:.1f} s; with --image: {image_s:.1f} s")
        print(json.dumps({"snapshots": args.snapshots, "weights_gifs_s": round(weights_s, 2),
                          "with_image_s": round(image_s, 2),
                          "frames_per_s": round(3 * args.snapshots / weights_s, 1)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
