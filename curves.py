"""Training curves read back from TensorBoard's event files, and drawn side by side: the article's figures 7 and 8.

A run's --logdir holds ``train/`` and ``test/``, each with its event files (visualize_convnets.py
writes them). Here they are read with TensorBoard's own reader, so a run resumed after a stop
reads as TensorBoard draws it: the steps logged after the last checkpoint and before the stop
are dropped where the resumed run logged them again (it writes a SessionLog START at its step).
compare_runs.py draws several runs in one PNG.
"""
import collections
import io
import logging
import os

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or wanted, on a server or in a container
import matplotlib.pyplot as plt  # noqa: E402 -- after the backend is chosen
import numpy as np  # noqa: E402

import tf_start  # noqa: E402,F401 -- TensorFlow's start-up notes held back (TensorBoard's reader loads it)
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

import cli  # noqa: E402
import files  # noqa: E402

SPLITS = ("train", "test")
TAGS = ("Accuracy", "Loss")
Curve = collections.namedtuple("Curve", "steps values")


def has_events(folder):
    return os.path.isdir(folder) and any(name.startswith("events.out.tfevents.") for name in os.listdir(folder))


def run_folders(logdirs):
    """``{name: logdir}`` of the runs to draw: each folder given is a run, named by its path (it has ``train/`` or
    ``test/`` event files), or a parent of runs, one a subfolder named by its name, as ``tensorboard --logdir``
    shows them. A folder with neither is a UsageError."""
    runs = {}
    for logdir in logdirs:
        if any(has_events(os.path.join(logdir, split)) for split in SPLITS):
            runs[os.path.normpath(logdir)] = logdir
            continue
        children = sorted(os.path.join(logdir, name) for name in os.listdir(logdir)) if os.path.isdir(logdir) else []
        found = [child for child in children if any(has_events(os.path.join(child, split)) for split in SPLITS)]
        if not found:
            raise cli.UsageError(f"no TensorBoard event files in {cli.shown(logdir)} or its train/ and test/ (give "
                                 f"the --logdir of a training run, or a folder of them)")
        runs.update({os.path.basename(child): child for child in found})
    return runs


def read_curves(logdir):
    """``{(split, tag): Curve}`` of a run's Loss and Accuracy, train and test, as TensorBoard reads them."""
    # A resumed run writes its graph again; the reader says so in two lines about graphs, which are not drawn here.
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    curves = {}
    for split in SPLITS:
        folder = os.path.join(logdir, split)
        if not has_events(folder):
            continue
        reader = event_accumulator.EventAccumulator(folder, size_guidance={event_accumulator.SCALARS: 0},
                                                    purge_orphaned_data=True)
        reader.Reload()
        for tag in TAGS:
            if tag in reader.Tags()["scalars"]:
                events = reader.Scalars(tag)
                curves[split, tag] = Curve(np.array([e.step for e in events]), np.array([e.value for e in events]))
    return curves


def smoothed(values, weight):
    """TensorBoard's smoothing: an exponential moving average, debiased as TensorBoard debiases it."""
    out, last, count = np.empty(len(values)), 0.0, 0
    for index, value in enumerate(values):
        last, count = last * weight + (1 - weight) * value, count + 1
        out[index] = last / (1 - weight ** count) if weight else value
    return out


def draw(runs, path, smoothing=0.6):
    """One PNG: Accuracy and Loss over steps, train and test side by side, a colour per run; the raw values
    faint, TensorBoard's smoothing drawn over them."""
    figure, axes = plt.subplots(len(TAGS), len(SPLITS), figsize=(11, 7), sharex=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for run_index, (name, curves) in enumerate(runs.items()):
        colour = colours[run_index % len(colours)]
        for row, tag in enumerate(TAGS):
            for column, split in enumerate(SPLITS):
                curve = curves.get((split, tag))
                if curve is None or not len(curve.steps):
                    continue
                ax = axes[row][column]
                ax.plot(curve.steps, curve.values, color=colour, alpha=0.25, linewidth=0.8)
                ax.plot(curve.steps, smoothed(curve.values, smoothing), color=colour, linewidth=1.6, label=name)
    for row, tag in enumerate(TAGS):
        for column, split in enumerate(SPLITS):
            ax = axes[row][column]
            ax.set_title(f"{tag} ({split})")
            ax.grid(alpha=0.3)
            if tag == "Loss":
                ax.set_yscale("log")  # the tutorial's first losses are thousands, its last ones near zero
            if row == len(TAGS) - 1:
                ax.set_xlabel("global step")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=max(1, len(labels)), frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    files.write_bytes_atomically(path, buffer.getvalue())
    return path
