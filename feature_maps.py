"""The conv stack on any snapshot's weights: an image's feature maps through training, for filter_gif.py.

Training saves the conv layers' weights and biases every --snapshot-every steps (run_folder:
``snapshots/filters-<step>``). Here they are read back in global-step order and fed, as
placeholders, into visualize_convnets.conv_stack of the run's network (architecture.py), so one
graph serves every snapshot: the tutorial's GIF of an image's feature maps evolving, and one PNG
per conv and pool layer at the latest full checkpoint.
"""
import os
import sys

import numpy as np
from PIL import Image

import architecture
import cli
import drawing
import imFunctions as imf
import run_folder
import tf_start  # noqa: F401 -- TensorFlow's start-up notes held back
import tensorflow as tf
import visualize_convnets as vc

v1 = tf.compat.v1

# --------------------------------------------------------------------------- snapshots

def read_conv_params(prefix, network, frozen=None):
    """``{layer: (weights, biases)}`` of a checkpoint's conv layers, or None while it is missing or half-written.

    A snapshot of a pretrained network holds the layers that train; the frozen ones it lacks come from
    ``frozen`` (``{layer: (weights, biases)}`` of the run's first snapshot, which holds them all), or from
    ``frozen()`` where it is a function that reads them."""
    names = {layer: architecture.checkpoint_names(layer) for layer in network.conv_layers}
    held = run_folder.variable_names(prefix)
    if held is None:
        return None
    missing = [layer for layer, pair in names.items() if not set(pair) <= held]
    params = {} if not missing or frozen is None else (frozen() if callable(frozen) else frozen)
    if any(layer not in (params or {}) for layer in missing):
        return None
    tensors = run_folder.read_tensors(prefix, [name for layer, pair in names.items() if layer not in missing
                                               for name in pair])
    if tensors is None:
        return None
    return {scope: params[scope] if scope in missing else (tensors[weights], tensors[biases])
            for scope, (weights, biases) in names.items()}


def first_snapshot_params(checkpoint_dir, network):
    """The conv layers of the run's first snapshot (which holds every layer, frozen ones too), or None."""
    found = run_folder.find_snapshots(checkpoint_dir)
    return read_conv_params(found[0][1], network) if found else None


def no_snapshots(checkpoint_dir, readable=""):
    folder = run_folder.snapshot_dir(checkpoint_dir)
    return cli.UsageError(f"no {readable}filter snapshots in {folder}" +
                          ("" if readable else ": train first (python visualize_convnets.py)"))


def find_snapshots(checkpoint_dir):
    """``[(step, prefix)]`` of the snapshots in a checkpoint folder, oldest first; a missing folder, or one
    without snapshots, is a UsageError that says so."""
    if not os.path.isdir(checkpoint_dir):
        raise cli.UsageError(f"no checkpoint folder {checkpoint_dir}" + (
            ": it is a file" if os.path.exists(checkpoint_dir) else " (a typo? --checkpoint-dir names it)"))
    found = run_folder.find_snapshots(checkpoint_dir)
    if not found:
        raise no_snapshots(checkpoint_dir)
    return found


def every_kth(found, every):
    """Every ``every``-th of the snapshots found, and the last one always: a GIF ends where training has got to,
    whatever --every skips."""
    picked = found[::every]
    return picked if picked[-1] == found[-1] else picked + [found[-1]]


def read_snapshots(checkpoint_dir, found, network):
    """``[(step, params)]`` of the ``found`` snapshots that read; unreadable ones are skipped with a warning."""
    snapshots, skipped, first = [], [], {}

    def frozen():  # read once, and only for a snapshot that lacks a layer
        if "params" not in first:
            first["params"] = first_snapshot_params(checkpoint_dir, network)
        return first["params"]

    for step, prefix in found:
        params = read_conv_params(prefix, network, frozen)
        if params is None:
            skipped.append(os.path.basename(prefix))
        else:
            snapshots.append((step, params))
    if skipped:
        print(f"Warning: skipped {len(skipped)} unreadable snapshot(s): {', '.join(skipped)}", file=sys.stderr)
    if not snapshots:
        raise no_snapshots(checkpoint_dir, "readable ")
    return snapshots


def newest_params(checkpoint_dir, network):
    """``(step, params)`` of the newest full checkpoint that reads, else of the newest snapshot that reads."""
    # A live run may be pruning its checkpoints while they are read; a full checkpoint holds every layer.
    found = run_folder.newest_readable(checkpoint_dir, lambda prefix: read_conv_params(prefix, network))
    if found:
        return found[0], found[2]
    for step, prefix in run_folder.find_snapshots(checkpoint_dir)[::-1]:
        params = read_conv_params(prefix, network, lambda: first_snapshot_params(checkpoint_dir, network))
        if params is not None:
            print(f"No readable full checkpoint: feature maps from the snapshot of step {step}", file=sys.stderr)
            return step, params
    raise no_snapshots(checkpoint_dir, "readable ")


# --------------------------------------------------------------------------- the network

def weight_placeholders(placeholders):
    """conv_stack's ``conv_params`` that makes each layer's weights and biases placeholders, kept in
    ``placeholders`` by layer, so one graph serves every snapshot."""
    def make(layer, kernel_shape):
        weights_name, biases_name = architecture.variable_names(layer)
        weights = v1.placeholder(tf.float32, kernel_shape, name=weights_name)
        biases = v1.placeholder(tf.float32, kernel_shape[-1:], name=biases_name)
        placeholders[layer] = (weights, biases)
        return weights, biases
    return make


def weight_feed(placeholders, params):
    """The feed of a snapshot's ``{scope: (weights, biases)}`` into those placeholders."""
    return {tensor: value for scope, pair in placeholders.items() for tensor, value in zip(pair, params[scope])}


class FeatureMaps:
    """The conv stack of visualize_convnets on placeholders, so any snapshot's values can be fed."""

    def __init__(self, image_size, network):
        self.network = network
        self.graph = tf.Graph()
        self.params = {}
        with self.graph.as_default():
            self.images = v1.placeholder(tf.float32, [None, *network.input_shape(image_size)], name="X")
            self.layers, _ = vc.conv_stack(self.images, network, weight_placeholders(self.params))
        self.session = v1.Session(graph=self.graph)

    def __call__(self, image, params, layers):
        """``{layer: [h, w, channels]}`` of one prepared image under ``params``."""
        feed = {self.images: image[None], **weight_feed(self.params, params)}
        values = self.session.run({layer: self.layers[layer] for layer in layers}, feed)
        return {layer: value[0] for layer, value in values.items()}


def prepare_image(path, image_size, mean_image, network):
    """The image as training saw it: resized, then prepared for the network (the training mean subtracted)."""
    problem = imf.image_problem(path)
    if problem is not None:
        raise cli.UsageError(f"cannot read image {cli.shown(path)}: {problem}")
    picture = imf.load_image(path, image_size)
    if picture is None:
        raise cli.UsageError(f"cannot read image {cli.shown(path)} (not an image, damaged, or over Pillow's "
                             f"decompression-bomb limit of {Image.MAX_IMAGE_PIXELS * 2} pixels)")
    return network.prepare(picture.astype(np.float32), mean_image)


def channel_maps(maps, channels):
    """[channels, h, w, 1] of the chosen channels of one [h, w, c] feature map."""
    chosen = range(maps.shape[-1]) if channels == ["all"] else [int(c) for c in channels]
    return np.transpose(maps[..., list(chosen)], (2, 0, 1))[..., None]


def limits(values_per_frame, per_frame):
    """One (low, high) for all frames, or one per frame."""
    if per_frame:
        return [(float(v.min()), float(v.max())) for v in values_per_frame]
    low = min(float(v.min()) for v in values_per_frame)
    high = max(float(v.max()) for v in values_per_frame)
    return [(low, high)] * len(values_per_frame)


# --------------------------------------------------------------------------- the outputs

def feature_gifs(image_path, image, maps_of, snapshots, layers, channels, fps, per_frame_norm, out):
    """The tutorial's GIF: the image's chosen feature maps (``channels``: numbers, ['all'] or None for the
    two most active) at every snapshot, one GIF and a PNG of its last frame per layer."""
    image_size = image.shape[0]
    stem = os.path.splitext(os.path.basename(image_path))[0]
    maps = [maps_of(image, params, layers) for _, params in snapshots]
    shown = channels_to_show(os.path.basename(image_path), channels, layers, maps[-1], snapshots[-1][0])
    written = []
    for layer in layers:
        chosen = [channel_maps(m[layer], shown[layer]) for m in maps]
        zoom = max(1, image_size // chosen[0].shape[1])
        columns = len(chosen[0]) if shown[layer] != ["all"] else 8
        frames = [drawing.titled(drawing.tile_grid(drawing.to_uint8(c, low, high), zoom, columns),
                                 f"{layer}  step {step}")
                  for c, (low, high), (step, _) in zip(chosen, limits(chosen, per_frame_norm), snapshots)]
        written += save_animation(out, f"{stem}_{layer}", frames, fps)
    return written


def channels_to_show(name, channels, layers, latest, step):
    """``{layer: channels}`` for the feature GIFs: ``channels`` or, by default, each layer's two most
    active channels in ``latest`` (the maps at the latest snapshot), said in one line.

    Many channels end up zero for a given image, and the tutorial's fixed 0 and 1 could be
    among them: a black GIF. A dead channel asked for by number gets a warning.
    """
    if channels is None:
        chosen = {layer: most_active(latest[layer]) for layer in layers}
        print(f"Feature GIFs of {name} show the two most active channels at step {step}: "
              + ", ".join(f"{layer} {first} and {second}" for layer, (first, second) in chosen.items()))
        return chosen
    if channels != ["all"]:
        for layer in layers:
            dead = [channel for channel in channels if not latest[layer][..., int(channel)].any()]
            if dead:
                print(f"Warning: {layer} channel(s) {', '.join(dead)} zero everywhere on {name} at step {step}: "
                      f"black in the GIF", file=sys.stderr)
    return {layer: channels for layer in layers}


def most_active(maps, count=2):
    """The ``count`` channels of a [h, w, c] feature map with the largest total activation, largest first."""
    return [int(channel) for channel in np.argsort(-maps.sum(axis=(0, 1)), kind="stable")[:count]]


def feature_pngs(image_path, image, maps_of, checkpoint_dir, out):
    """Every conv and pool layer's feature maps at the latest full checkpoint, one PNG each."""
    layers = maps_of.network.layer_names
    step, params = newest_params(checkpoint_dir, maps_of.network)
    maps = maps_of(image, params, layers)
    stem = os.path.splitext(os.path.basename(image_path))[0]
    written = []
    for layer in layers:
        tiles = drawing.channel_tiles(maps[layer])[..., None]  # each channel on its own scale, as TensorBoard's
        zoom = max(1, image.shape[0] // 2 // tiles.shape[1])
        grid = drawing.tile_grid(tiles, zoom, columns=8)
        path = os.path.join(out, f"{stem}_features_{layer}.png")
        drawing.write_png(path, drawing.titled(grid, f"{layer}  step {step}"))
        written.append(path)
    return written


def save_animation(out, name, frames, fps):
    """``<name>.gif`` of the frames and ``<name>.png`` of the last one."""
    os.makedirs(out, exist_ok=True)
    gif, png = os.path.join(out, f"{name}.gif"), os.path.join(out, f"{name}.png")
    drawing.write_gif(gif, frames, fps)
    drawing.write_png(png, frames[-1])
    return [gif, png]
