"""Benchmark: filter_gif.py --feature-vis conv2_2 on the snapshots of a full 400-epoch run.

A 400-epoch run on the real split (340 training images, 34 steps an epoch) snapshots every
50 steps: 272 snapshots. This writes 272 snapshots of drifting conv weights (real Saver
files, gif_bench.write_snapshots), then, in one process, for each SIZE:EVERY of --runs,
writes that image size into run.json and times

    python filter_gif.py --layers conv1_1 --feature-vis conv2_2 --every EVERY

with filter_gif's default ascent steps, timing every FeatureVis.optimise call (one per
snapshot) inside it. The machine's load average and this process's CPU time are recorded
alongside, since a shared box's figures move with its load. Then, at each size, the ascent's
objective as it is (each input's own channel alone) against the one before issue 16 (the whole
layer for every input, channel c of input c kept), turn about on the same snapshots from the same
start, in seconds per snapshot. Ends with one JSON line.

    python bench/feature_vis_bench.py [--runs 64:10 224:100] [--compare-snapshots 4]
"""
import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import feature_maps  # noqa: E402
from architecture import TUTORIAL  # noqa: E402
import feature_vis  # noqa: E402
import filter_gif as fg  # noqa: E402
import gif_bench  # noqa: E402
import run_folder  # noqa: E402
import tf_start  # noqa: E402


class WholeLayerFeatureVis(feature_vis.FeatureVis):
    """The objective before issue 16: the layer's every channel computed for every input, channel c of input c
    kept (the diagonal)."""

    def objective(self, layers, below, layer, images, channels):
        return tf.linalg.diag_part(tf.reduce_mean(layers[layer].op.inputs[0], axis=[1, 2]))


def compare_objectives(checkpoint_dir, size, layer, count, steps):
    """Seconds per snapshot of ``steps`` ascent steps, whole layer against own channel, turn about on the first
    ``count`` snapshots (after one untimed warm-up each), from the same noise and jitter."""
    snapshots = feature_maps.read_snapshots(checkpoint_dir, feature_maps.find_snapshots(checkpoint_dir)[:count + 1],
                                            TUTORIAL)
    mean_image = np.full((size, size, 3), 127.5, np.float32)
    contenders = {name: (kind(layer, size, mean_image, TUTORIAL, 0.2, 0), np.random.default_rng(0))
                  for name, kind in (("whole_layer", WholeLayerFeatureVis), ("own_channel", feature_vis.FeatureVis))}
    seconds = {name: [] for name in contenders}
    for index, (_, params) in enumerate(snapshots):
        for name, (vis, rng) in contenders.items():
            started = time.perf_counter()
            vis.optimise(params, steps, size // 16, rng)
            if index:  # the first call sets up the kernels
                seconds[name].append(time.perf_counter() - started)
    return {name: float(np.median(values)) for name, values in seconds.items()}


def size_and_every(text):
    size, every = text.split(":")
    return int(size), int(every)


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_run(checkpoint_dir, out, size, every):
    """One filter_gif.main run at ``size`` px; its wall and CPU time and each snapshot's seconds."""
    run_folder.write_run(checkpoint_dir, {"classes": ["shiba_inu", "samoyed"], "image_size": size, "batch_size": 10,
                                  "train_images": 340, "seed": 0},
                 np.full((size, size, 3), 127.5, np.float32))
    per_snapshot = []
    optimise = feature_vis.FeatureVis.optimise

    def timed_optimise(self, *args):
        started = time.perf_counter()
        result = optimise(self, *args)
        per_snapshot.append(time.perf_counter() - started)
        return result

    feature_vis.FeatureVis.optimise = timed_optimise  # for this run only; restored below
    load_before, cpu_before, started = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
    try:
        assert fg.main(["--checkpoint-dir", checkpoint_dir, "--out", out, "--layers", "conv1_1",
                        "--feature-vis", "conv2_2", "--every", str(every)]) == 0
    finally:
        feature_vis.FeatureVis.optimise = optimise
    total = time.perf_counter() - started
    return dict(total_s=total, cpu_s=cpu_seconds() - cpu_before, per_snapshot=per_snapshot,
                load=(load_before, os.getloadavg()[0]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshots", type=int, default=272, help="snapshots written (a 400-epoch run's)")
    parser.add_argument("--runs", nargs="*", type=size_and_every, default=[(64, 10), (224, 100)],
                        metavar="SIZE:EVERY", help="image size and --every of each timed run")
    parser.add_argument("--compare-snapshots", type=int, default=4,
                        help="snapshots on which the two objectives are timed turn about (0: skip)")
    parser.add_argument("--compare-sizes", nargs="*", type=int, default=None,
                        help="image sizes the two objectives are compared at (default: those of --runs)")
    args = parser.parse_args()
    tf_start.gpus()  # TensorFlow's CUDA probe, its log shown only when it failed to find a GPU that is there
    defaults = fg.build_parser().parse_args([])
    first_steps, steps = defaults.feature_vis_first_steps, defaults.feature_vis_steps
    work = tempfile.mkdtemp(prefix="feature-vis-bench-")
    report = {"snapshots": args.snapshots, "first_steps": first_steps, "steps": steps}
    try:
        checkpoint_dir = os.path.join(work, "checkpoints")
        gif_bench.write_snapshots(checkpoint_dir, args.snapshots)
        for size, every in args.runs:
            run = timed_run(checkpoint_dir, os.path.join(work, f"out{size}"), size, every)
            first, later = run["per_snapshot"][0], run["per_snapshot"][1:]
            later_s = float(np.median(later)) if later else float("nan")
            print(f"{size} px, --every {every}: {len(run['per_snapshot'])} snapshots in {run['total_s']:.0f} s "
                  f"(CPU {run['cpu_s']:.0f} s, load {run['load'][0]:.1f} -> {run['load'][1]:.1f}); first "
                  f"{first:.1f} s ({first_steps} steps), later median {later_s:.1f} s ({steps} steps)")
            report.update({f"s{size}_snapshots": len(run["per_snapshot"]), f"s{size}_total_s": round(run["total_s"], 1),
                           f"s{size}_cpu_s": round(run["cpu_s"], 1), f"s{size}_first_snapshot_s": round(first, 2),
                           f"s{size}_later_snapshot_s": round(later_s, 2),
                           f"s{size}_s_per_step": round(later_s / steps, 3),
                           f"s{size}_load": [round(value, 2) for value in run["load"]]})
        compare_sizes = [size for size, _ in args.runs] if args.compare_sizes is None else args.compare_sizes
        for size in compare_sizes if args.compare_snapshots else []:
            compared = compare_objectives(checkpoint_dir, size, "conv2_2", args.compare_snapshots, steps)
            print(f"{size} px conv2_2, {steps} steps a snapshot: whole layer {compared['whole_layer']:.2f} s, own "
                  f"channel {compared['own_channel']:.2f} s a snapshot "
                  f"({compared['own_channel'] / compared['whole_layer']:.2f}x)")
            report.update({f"s{size}_whole_layer_snapshot_s": round(compared["whole_layer"], 3),
                           f"s{size}_own_channel_snapshot_s": round(compared["own_channel"], 3),
                           f"s{size}_own_vs_whole": round(compared["own_channel"] / compared["whole_layer"], 3)})
        sizes = [size for size, _ in args.runs]
        if len(sizes) == 2:
            small, large = sizes
            report[f"step_ratio_{large}_vs_{small}"] = round(report[f"s{large}_s_per_step"]
                                                             / report[f"s{small}_s_per_step"], 2)
        # A 400-epoch run at --every 10: the first snapshot, then 27 warm-started ones.
        for size in sizes:
            report[f"s{size}_projected_28_snapshots_s"] = round(report[f"s{size}_first_snapshot_s"]
                                                                + 27 * report[f"s{size}_later_snapshot_s"], 1)
        print(json.dumps(report))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
