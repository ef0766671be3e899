"""Filter-evolution GIFs and feature maps from the training run's checkpoints.

Training (visualize_convnets.py) saves the four conv layers' weights and biases every
--snapshot-every steps under <checkpoint-dir>/snapshots/. This script reads them in
global-step order with TensorFlow's checkpoint reader and animates them, so it can run
while training goes on, after it, or in another container on the mounted folder:

    python filter_gif.py --checkpoint-dir checkpoints --out gifs
        one GIF per layer of its filters (and a PNG of the last frame): conv1_1 as RGB
        kernels, deeper layers one greyscale kernel per output channel, the mean over its
        input channels (--input-channel C shows one input channel instead)
    python filter_gif.py --image dog.jpg
        the tutorial's GIF: the image's feature maps in conv1_2 and conv2_2 at every
        snapshot, two channels side by side (each layer's two most active for the image
        at the latest snapshot, or --channels), plus one PNG per conv and pool layer of
        the feature maps at the latest full checkpoint, and <stem>_gradcam.png: the
        Grad-CAM of the class the network predicts, where in the image it looked
    python filter_gif.py --feature-vis conv2_2 --every 10
        what each channel of a layer responds to most, through training: one input per
        channel, found by gradient ascent at every snapshot starting from the previous
        snapshot's, as a GIF, a PNG of its last frame and the last inputs as .npy

Pixel values are scaled with one normalisation for all frames of a layer, so change shows
as change (--per-frame-norm scales each frame on its own).
"""
import argparse
import collections
import math
import os
import re
import sys
import time

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw

import imFunctions as imf
import predict
import visualize_convnets as vc
from visualize_convnets import UsageError, tf, tile_grid, v1

CONV_CHANNELS = {scope: (in_channels, out_channels) for scope, _, in_channels, out_channels in vc.CONV_LAYERS}
SUFFIX = {scope: suffix for scope, suffix, _, _ in vc.CONV_LAYERS}
HEADER = 14  # pixels above each frame for the layer name and global step
GAP = vc.GRID_GAP
GIF_MAX_SIDE = 65535  # a GIF stores its width and height in 16 bits
# GIF delays are whole hundredths of a second (at most 655.35 s), and browsers play delays under
# 20 ms at 100 ms: outside this range a GIF cannot show the rate asked for.
FPS_RANGE = (0.01, 50.0)


def build_parser():
    parser = vc.OneLineParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="the training run's checkpoint folder")
    parser.add_argument("--out", default="gifs", help="folder for the GIFs and PNGs")
    parser.add_argument("--layers", nargs="+", default=["conv1_1", "conv1_2", "conv2_2"],
                        help="conv layers whose filters to animate")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second")
    parser.add_argument("--every", type=int, default=1, help="use every K-th snapshot")
    parser.add_argument("--scale", type=int, default=12, help="pixels per kernel weight (nearest neighbour)")
    parser.add_argument("--input-channel", type=int, default=None,
                        help="show this input channel of deeper layers' kernels instead of their mean")
    parser.add_argument("--per-frame-norm", action="store_true", help="normalise each frame on its own")
    parser.add_argument("--image", default=None, help="an image whose feature maps to animate")
    parser.add_argument("--feature-layers", nargs="+", default=["conv1_2", "conv2_2"],
                        help="layers whose feature maps --image animates")
    parser.add_argument("--channels", nargs="+", default=None,
                        help="feature-map channels side by side, or 'all' for a grid of every channel "
                             "(default: each layer's two most active for the image at the latest snapshot)")
    add_feature_vis_arguments(parser)
    return parser


def parse_args(argv=None):
    return vc.parse_checked(build_parser(), validate, argv)


def validate(args):
    vc.require_at_least_one(args, ("every", "scale"))
    if not FPS_RANGE[0] <= args.fps <= FPS_RANGE[1]:
        raise UsageError(f"--fps must be between {FPS_RANGE[0]:g} and {FPS_RANGE[1]:g} (GIF delays are hundredths "
                         f"of a second, and browsers slow anything faster than 50 down to 10), got {args.fps:g}")
    for layer in args.layers:
        if layer not in CONV_CHANNELS:
            raise UsageError(f"unknown layer {layer!r}; available: {', '.join(CONV_CHANNELS)}")
    widest = filter_frame_size(args.scale, max(CONV_CHANNELS[layer][1] for layer in args.layers))[1]
    if widest > GIF_MAX_SIDE:
        raise UsageError(f"--scale {args.scale} makes frames {widest} px wide; a GIF can be at most "
                         f"{GIF_MAX_SIDE} px, so --scale can be at most {max_scale()}")
    fewest_inputs = min(CONV_CHANNELS[layer][0] for layer in args.layers if layer != "conv1_1") \
        if set(args.layers) - {"conv1_1"} else None
    if args.input_channel is not None and fewest_inputs is not None and not 0 <= args.input_channel < fewest_inputs:
        raise UsageError(f"--input-channel must be in 0..{fewest_inputs - 1}, got {args.input_channel}")
    for layer in args.feature_layers:
        if layer not in vc.FEATURE_LAYERS:
            raise UsageError(f"unknown feature layer {layer!r}; available: {', '.join(vc.FEATURE_LAYERS)}")
    if args.channels not in (None, ["all"]):
        fewest = min(feature_channels(layer) for layer in args.feature_layers)
        for channel in args.channels:
            if not channel.isdigit() or int(channel) >= fewest:
                raise UsageError(f"--channels takes channel numbers 0..{fewest - 1} or 'all', got {channel!r}")
    validate_feature_vis(args)
    vc.check_writable(args.out)


def filter_frame_size(scale, kernels, columns=8):
    """(height, width) in pixels of a frame of ``kernels`` 3x3 kernels drawn by tile_grid and titled."""
    columns = min(columns, kernels)
    rows = math.ceil(kernels / columns)
    return HEADER + rows * (3 * scale + GAP) + GAP, columns * (3 * scale + GAP) + GAP


def max_scale():
    return (GIF_MAX_SIDE - GAP) // 8 // 3 - 1


def check_frames_fit(count, height, width, available=None):
    """Frames are held in memory until the GIF is encoded: refuse, with the figures, what would not fit."""
    available = available or vc.available_memory()
    needed = count * height * width * 3 * 2  # the frames, and their stack for the encoder
    if needed > available:
        raise UsageError(f"{count} frames of {width}x{height} px need about {imf.human_bytes(needed)} of memory, "
                         f"more than the {imf.human_bytes(available)} here: use a smaller --scale or a larger --every")


def feature_channels(layer):
    """Channels of a conv or pool layer's output (a pool keeps its conv's channels)."""
    return CONV_CHANNELS[layer if layer.startswith("conv") else f"conv{layer[4]}_2"][1]


# --------------------------------------------------------------------------- snapshots

def find_snapshots(checkpoint_dir):
    """``[(global step, prefix)]`` of every snapshot whose index is written, oldest first."""
    folder = os.path.join(checkpoint_dir, vc.SNAPSHOT_DIR)
    found = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        match = re.fullmatch(rf"{vc.SNAPSHOT_NAME}-(\d+)\.index", name)
        if match:
            found.append((int(match.group(1)), os.path.join(folder, name[:-len(".index")])))
    if not found:
        raise UsageError(f"no filter snapshots in {folder}: train first (python visualize_convnets.py)")
    return sorted(found)


def read_conv_params(prefix):
    """``{scope: (weights, biases)}`` of a checkpoint, or None while it is missing or half-written."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {scope: (reader.get_tensor(f"{scope}/weights{SUFFIX[scope]}"),
                        reader.get_tensor(f"{scope}/biases{SUFFIX[scope]}"))
                for scope in CONV_CHANNELS}
    except (tf.errors.OpError, ValueError, IndexError, OSError):  # IndexError: a short data file
        return None


def load_snapshots(checkpoint_dir, every):
    """Every ``every``-th readable snapshot as ``[(step, params)]``; unreadable ones are skipped."""
    snapshots, skipped = [], []
    for step, prefix in find_snapshots(checkpoint_dir)[::every]:
        params = read_conv_params(prefix)
        if params is None:
            skipped.append(os.path.basename(prefix))
        else:
            snapshots.append((step, params))
    if skipped:
        print(f"Warning: skipped {len(skipped)} unreadable snapshot(s): {', '.join(skipped)}", file=sys.stderr)
    if not snapshots:
        raise UsageError(f"no readable filter snapshots in {os.path.join(checkpoint_dir, vc.SNAPSHOT_DIR)}")
    return snapshots


def first_readable(candidates):
    """``(step, params)`` of the first of ``[(step, prefix)]`` that reads, looking no further than needed;
    ``(None, None)`` when none does."""
    for step, prefix in candidates:
        params = read_conv_params(prefix)
        if params is not None:
            return step, params
    return None, None


def latest_full_checkpoint_params(checkpoint_dir):
    """``(step, params)`` of the newest full checkpoint that reads (found from its files), or ``(None, None)``."""
    return first_readable(vc.find_checkpoints(checkpoint_dir))


def latest_readable_snapshot(checkpoint_dir):
    """``(step, params)`` of the newest snapshot that reads."""
    step, params = first_readable(reversed(find_snapshots(checkpoint_dir)))
    if params is None:
        raise UsageError(f"no readable filter snapshots in {os.path.join(checkpoint_dir, vc.SNAPSHOT_DIR)}")
    return step, params


# --------------------------------------------------------------------------- drawing

def kernel_tiles(weights, input_channel=None):
    """[3, 3, in, out] kernels as [out, 3, 3, c] tiles: RGB for 3 inputs, else one grey channel."""
    tiles = np.transpose(weights, (3, 0, 1, 2))
    if tiles.shape[-1] == 3:
        return tiles
    if input_channel is not None:
        return tiles[..., input_channel:input_channel + 1]
    return tiles.mean(axis=-1, keepdims=True)


def to_uint8(values, low, high):
    return np.uint8(np.clip(255.0 * (values - low) / max(high - low, 1e-12), 0, 255))


def titled(grid, text):
    frame = Image.new("RGB", (grid.shape[1], grid.shape[0] + HEADER), "white")
    frame.paste(Image.fromarray(grid), (0, HEADER))
    ImageDraw.Draw(frame).text((GAP, 1), text, fill="black")
    return np.asarray(frame)


def write_gif(path, frames, fps, hold_last_ms=2000):
    """uint8 frames as a looping GIF, encoded in memory and renamed into place: never a broken GIF.

    imageio takes ``duration`` in ms, not ``fps``.
    """
    frame_ms = 1000.0 / fps
    durations = [frame_ms] * (len(frames) - 1) + [max(frame_ms, hold_last_ms)]
    stack = np.stack(frames)
    if (stack[..., 0] == stack[..., 1]).all() and (stack[..., 1] == stack[..., 2]).all():
        stack = stack[..., 0]  # grey frames need no palette search: 3x faster to write
    imf.write_bytes_atomically(path, iio.imwrite("<bytes>", stack, extension=".gif", duration=durations, loop=0))


def write_png(path, frame):
    """One uint8 frame as a PNG, encoded in memory and renamed into place."""
    vc.save_png(Image.fromarray(frame), path)


def limits(values_per_frame, per_frame):
    """One (low, high) for all frames, or one per frame."""
    if per_frame:
        return [(float(v.min()), float(v.max())) for v in values_per_frame]
    low = min(float(v.min()) for v in values_per_frame)
    high = max(float(v.max()) for v in values_per_frame)
    return [(low, high)] * len(values_per_frame)


# --------------------------------------------------------------------------- filter GIFs

def filter_gifs(args, snapshots):
    """One GIF (and a PNG of its last frame) per layer of its kernels through training."""
    written = []
    for layer in args.layers:
        check_frames_fit(len(snapshots), *filter_frame_size(args.scale, CONV_CHANNELS[layer][1]))
        tiles = [kernel_tiles(params[layer][0], None if layer == "conv1_1" else args.input_channel)
                 for _, params in snapshots]
        frames = [titled(tile_grid(to_uint8(t, low, high), args.scale, columns=8), f"{layer}  step {step}")
                  for t, (low, high), (step, _) in zip(tiles, limits(tiles, args.per_frame_norm), snapshots)]
        written += save_animation(args.out, layer, frames, args.fps)
    return written


def save_animation(out, name, frames, fps):
    os.makedirs(out, exist_ok=True)
    gif, png = os.path.join(out, f"{name}.gif"), os.path.join(out, f"{name}.png")
    write_gif(gif, frames, fps)
    write_png(png, frames[-1])
    return [gif, png]


# --------------------------------------------------------------------------- feature maps

def weight_placeholders(placeholders):
    """conv_stack's ``conv_params`` that makes each layer's weights and biases placeholders, kept in
    ``placeholders`` by scope, so one graph serves every snapshot."""
    def make(suffix, in_channels, out_channels):
        weights = v1.placeholder(tf.float32, [3, 3, in_channels, out_channels], name=f"weights{suffix}")
        biases = v1.placeholder(tf.float32, [out_channels], name=f"biases{suffix}")
        placeholders[f"conv{suffix}"] = (weights, biases)
        return weights, biases
    return make


def weight_feed(placeholders, params):
    """The feed of a snapshot's ``{scope: (weights, biases)}`` into those placeholders."""
    return {tensor: value for scope, pair in placeholders.items() for tensor, value in zip(pair, params[scope])}


class FeatureMaps:
    """The conv stack of visualize_convnets on placeholders, so any snapshot's values can be fed."""

    def __init__(self, image_size):
        self.graph = tf.Graph()
        self.params = {}
        with self.graph.as_default():
            self.images = v1.placeholder(tf.float32, [None, image_size, image_size, 3], name="X")
            self.layers, _ = vc.conv_stack(self.images, weight_placeholders(self.params))
        self.session = v1.Session(graph=self.graph)

    def __call__(self, image, params, layers):
        """``{layer: [h, w, channels]}`` of one prepared image under ``params``."""
        feed = {self.images: image[None], **weight_feed(self.params, params)}
        values = self.session.run({layer: self.layers[layer] for layer in layers}, feed)
        return {layer: value[0] for layer, value in values.items()}


def prepare_image(path, run, mean_image):
    """The image as training saw it: resized, the training mean subtracted."""
    picture = imf.load_image(path, run["image_size"])
    if picture is None:
        raise UsageError(f"cannot read image {path} (not an image, damaged, or over Pillow's "
                         f"decompression-bomb limit of {Image.MAX_IMAGE_PIXELS * 2} pixels)")
    return picture.astype(np.float32) - mean_image, run["image_size"]


def channel_maps(maps, channels):
    """[channels, h, w, 1] of the chosen channels of one [h, w, c] feature map."""
    chosen = range(maps.shape[-1]) if channels == ["all"] else [int(c) for c in channels]
    return np.transpose(maps[..., list(chosen)], (2, 0, 1))[..., None]


def feature_gifs(args, snapshots, image, image_size, network):
    """The tutorial's GIF: the image's chosen feature maps at every snapshot."""
    stem = os.path.splitext(os.path.basename(args.image))[0]
    maps = [network(image, params, args.feature_layers) for _, params in snapshots]
    channels = channels_to_show(args, maps[-1], snapshots[-1][0])
    written = []
    for layer in args.feature_layers:
        chosen = [channel_maps(m[layer], channels[layer]) for m in maps]
        zoom = max(1, image_size // chosen[0].shape[1])
        columns = len(chosen[0]) if channels[layer] != ["all"] else 8
        frames = [titled(tile_grid(to_uint8(c, low, high), zoom, columns), f"{layer}  step {step}")
                  for c, (low, high), (step, _) in zip(chosen, limits(chosen, args.per_frame_norm), snapshots)]
        written += save_animation(args.out, f"{stem}_{layer}", frames, args.fps)
    return written


def channels_to_show(args, latest, step):
    """``{layer: channels}`` for the feature GIFs, from --channels or, by default, each layer's two
    most active channels in ``latest`` (the maps at the latest snapshot), said in one line.

    Many channels end up zero for a given image, and the tutorial's fixed 0 and 1 could be
    among them: a black GIF. A dead channel asked for by number gets a warning.
    """
    name = os.path.basename(args.image)
    if args.channels is None:
        chosen = {layer: most_active(latest[layer]) for layer in args.feature_layers}
        print(f"Feature GIFs of {name} show the two most active channels at step {step}: "
              + ", ".join(f"{layer} {first} and {second}" for layer, (first, second) in chosen.items()))
        return chosen
    if args.channels != ["all"]:
        for layer in args.feature_layers:
            dead = [channel for channel in args.channels if not latest[layer][..., int(channel)].any()]
            if dead:
                print(f"Warning: {layer} channel(s) {', '.join(dead)} zero everywhere on {name} at step {step}: "
                      f"black in the GIF", file=sys.stderr)
    return {layer: args.channels for layer in args.feature_layers}


def most_active(maps, count=2):
    """The ``count`` channels of a [h, w, c] feature map with the largest total activation, largest first."""
    return [int(channel) for channel in np.argsort(-maps.sum(axis=(0, 1)), kind="stable")[:count]]


def feature_pngs(args, image, image_size, network):
    """Every conv and pool layer's feature maps at the latest full checkpoint, one PNG each."""
    step, params = latest_full_checkpoint_params(args.checkpoint_dir)
    if params is None:
        step, params = latest_readable_snapshot(args.checkpoint_dir)
        print(f"No readable full checkpoint: feature maps from the snapshot of step {step}", file=sys.stderr)
    maps = network(image, params, vc.FEATURE_LAYERS)
    stem = os.path.splitext(os.path.basename(args.image))[0]
    written = []
    for layer in vc.FEATURE_LAYERS:
        tiles = channel_maps(maps[layer], ["all"])
        zoom = max(1, image_size // 2 // tiles.shape[1])
        grid = tile_grid(to_uint8(tiles, float(tiles.min()), float(tiles.max())), zoom, columns=8)
        path = os.path.join(args.out, f"{stem}_features_{layer}.png")
        write_png(path, titled(grid, f"{layer}  step {step}"))
        written.append(path)
    return written


# --------------------------------------------------------------------------- Grad-CAM

GradCam = collections.namedtuple("GradCam", "label probability cam heat")


def grad_cam(classifier, picture):
    """Grad-CAM of the predicted class on conv2_2 for one uint8 picture: where the net looked.

    The gradient of the class's logit with respect to conv2_2's activations, averaged over
    the positions, weighs each channel; the ReLU of the channels' weighted sum is ``cam``
    (conv2_2's size), and ``heat`` is it upsampled bilinearly to the picture, scaled to [0, 1].
    """
    model = classifier.model
    conv2_2 = model["layers"]["conv2_2"]
    with model["graph"].as_default():
        logits = model["graph"].get_tensor_by_name("softmax/logits:0")
        predicted_logit = tf.reduce_max(logits, axis=1)  # the predicted class's logit: softmax keeps the order
        gradients = tf.gradients(predicted_logit, conv2_2)[0]
    probabilities, activations, gradients = classifier.session.run([model["Y"], conv2_2, gradients],
                                                                    classifier.feed(picture[None]))
    cam = np.maximum(activations[0] @ gradients[0].mean(axis=(0, 1)), 0)
    height, width = picture.shape[:2]
    upsampled = np.asarray(Image.fromarray(cam.astype(np.float32)).resize((width, height), Image.BILINEAR))
    best = int(np.argmax(probabilities[0]))
    return GradCam(classifier.classes[best], float(probabilities[0, best]), cam,
                   upsampled / max(float(upsampled.max()), 1e-12))


def heat_colours(heat):
    """[h, w] values in [0, 1] as [h, w, 3] jet colours in 0..255: blue, cyan, yellow, red."""
    return 255 * np.stack([np.clip(1.5 - np.abs(4 * heat - centre), 0, 1) for centre in (3, 2, 1)], axis=-1)


def grad_cam_figure(picture, result):
    """The picture beside itself under its heat map, titled with the class and its probability."""
    overlay = np.uint8(np.round(0.5 * picture + 0.5 * heat_colours(result.heat)))
    grid = tile_grid(np.stack([picture, overlay]), max(1, 224 // picture.shape[0]), columns=2)
    return titled(grid, f"{result.label} {result.probability:.4f}  Grad-CAM on conv2_2")


def grad_cam_png(args):
    """``<stem>_gradcam.png`` from the latest full checkpoint; before the first one, a warning instead."""
    try:
        classifier = predict.Classifier(args.checkpoint_dir)
    except (predict.NoCheckpoint, imf.DataError) as error:
        print(f"Warning: no Grad-CAM: {error}", file=sys.stderr)
        return []
    picture = imf.load_image(args.image, classifier.image_size)
    path = os.path.join(args.out, f"{os.path.splitext(os.path.basename(args.image))[0]}_gradcam.png")
    vc.save_png(Image.fromarray(grad_cam_figure(picture, grad_cam(classifier, picture))), path)
    return [path]


# --------------------------------------------------------------------------- feature visualisation

# lucid's colour decorrelation (Olah et al., "Feature Visualization", Distill 2017): the square
# root of ImageNet's RGB covariance, scaled to unit column norm. Optimising in these
# decorrelated colours, like optimising in Fourier space, keeps the high frequencies and
# colour noise that plain pixel-space ascent produces out of the pictures.
COLOR_CORRELATION_SQRT = np.float32([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION_SQRT /= np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0).max()
DEAD_GREY = 128


def add_feature_vis_arguments(parser):
    parser.add_argument("--feature-vis", nargs="+", default=None, metavar="LAYER",
                        help="conv layers whose channels' preferred inputs to animate through training "
                             "(gradient ascent on each channel's mean activation, at every snapshot)")
    parser.add_argument("--feature-vis-first-steps", type=int, default=100,
                        help="ascent steps on the first snapshot, from noise")
    parser.add_argument("--feature-vis-steps", type=int, default=20,
                        help="ascent steps on each later snapshot, starting from the previous one's result")
    parser.add_argument("--feature-vis-lr", type=float, default=0.2, help="Adam's learning rate for the ascent")
    parser.add_argument("--feature-vis-jitter", type=int, default=None,
                        help="largest random shift of the input each step, in pixels (default: image size / 16)")
    parser.add_argument("--feature-vis-seed", type=int, default=0, help="seeds the starting noise and the jitter")


def validate_feature_vis(args):
    for layer in args.feature_vis or []:
        if layer not in CONV_CHANNELS:
            raise UsageError(f"unknown --feature-vis layer {layer!r}; available: {', '.join(CONV_CHANNELS)}")
    vc.require_at_least_one(args, ("feature_vis_first_steps", "feature_vis_steps"))
    if not args.feature_vis_lr > 0:
        raise UsageError(f"--feature-vis-lr must be positive, got {args.feature_vis_lr}")
    if args.feature_vis_jitter is not None and args.feature_vis_jitter < 0:
        raise UsageError(f"--feature-vis-jitter must be at least 0, got {args.feature_vis_jitter}")


def fourier_scale(size):
    """1/frequency per rfft2 coefficient: white noise in this basis is a natural image's spectrum."""
    frequencies = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    return np.float32(size / np.maximum(frequencies, 1.0 / size))


class FeatureVis:
    """One input per channel of ``layer``, optimised at once to excite that channel.

    The inputs live as a Fourier spectrum in decorrelated colours, squashed by a sigmoid into
    raw pixels 0..255 and then centred by the training mean, so they stay within what the
    network saw in training. The weights are placeholders, as in FeatureMaps, so one graph
    serves every snapshot; the spectrum and Adam's moments stay between snapshots, so each
    snapshot starts from the previous one's result.
    """

    def __init__(self, layer, image_size, mean_image, learning_rate, seed):
        channels = CONV_CHANNELS[layer][1]
        scale = fourier_scale(image_size)
        # Every channel starts from the same noise, so tiles differ through the weights alone.
        noise = np.random.default_rng(seed).normal(0, 0.01, (1, 2, 3) + scale.shape).astype(np.float32)
        self.graph = tf.Graph()
        self.params = {}
        with self.graph.as_default():
            self.spectrum = tf.Variable(np.repeat(noise, channels, axis=0), name="spectrum")
            planes = tf.signal.irfft2d(tf.complex(self.spectrum[:, 0] * scale, self.spectrum[:, 1] * scale),
                                       fft_length=[image_size, image_size]) / 4.0  # lucid's scaling
            colours = tf.tensordot(tf.transpose(planes, [0, 2, 3, 1]), COLOR_CORRELATION_SQRT.T, axes=1)
            self.pixels = 255.0 * tf.sigmoid(colours)
            # Jitter: a random shift each step, so no picture relies on exact pixel positions.
            self.shift = v1.placeholder_with_default(tf.zeros([2], tf.int32), [2], name="shift")
            # Shift the raw pixels, then centre them, so every shifted input is still a valid one.
            shifted = tf.roll(self.pixels, self.shift, axis=[1, 2]) - mean_image
            self.inputs = self.pixels - mean_image
            # Weight placeholders, as FeatureMaps has, so optimise() can feed any snapshot's weights.
            layers, _ = vc.conv_stack(shifted, weight_placeholders(self.params))
            # The ReLU's input: a channel that is negative everywhere still gets a gradient.
            pre_relu = layers[layer].op.inputs[0]
            own_mean = tf.linalg.diag_part(tf.reduce_mean(pre_relu, axis=[1, 2]))  # channel c on input c
            self.peak = tf.reduce_max(layers[layer], axis=[0, 1, 2])  # each channel over every input
            self.ascend = v1.train.AdamOptimizer(learning_rate).minimize(-tf.reduce_sum(own_mean),
                                                                         var_list=[self.spectrum])
            initialise = v1.global_variables_initializer()
        self.session = v1.Session(graph=self.graph)
        self.session.run(initialise)

    def optimise(self, params, steps, jitter, rng):
        """``(raw pixels [c, s, s, 3], network inputs, dead channels)`` after ``steps`` more ascent steps."""
        feed = weight_feed(self.params, params)
        for _ in range(steps):
            feed[self.shift] = rng.integers(-jitter, jitter + 1, 2)
            self.session.run(self.ascend, feed)
        del feed[self.shift]
        pixels, inputs, peak = self.session.run([self.pixels, self.inputs, self.peak], feed)
        return pixels, inputs, np.flatnonzero(peak <= 0)


def feature_vis_frame(layer, step, pixels, dead):
    tiles = np.uint8(np.clip(np.rint(pixels), 0, 255))
    tiles[dead] = DEAD_GREY  # a flat tile: a dead channel has no preferred input to show
    return titled(tile_grid(tiles, 1, columns=8), f"{layer} feature vis  step {step}")


def feature_vis_gifs(args, snapshots, image_size, mean_image):
    """Per --feature-vis layer: a GIF of every channel's preferred input through training."""
    jitter = args.feature_vis_jitter if args.feature_vis_jitter is not None else image_size // 16
    os.makedirs(args.out, exist_ok=True)
    written = []
    for layer in args.feature_vis:
        vis = FeatureVis(layer, image_size, mean_image, args.feature_vis_lr, args.feature_vis_seed)
        rng = np.random.default_rng(args.feature_vis_seed)
        frames, started = [], time.perf_counter()
        for index, (step, params) in enumerate(snapshots):
            steps = args.feature_vis_first_steps if index == 0 else args.feature_vis_steps
            pixels, inputs, dead = vis.optimise(params, steps, jitter, rng)
            frames.append(feature_vis_frame(layer, step, pixels, dead))
            print(f"\r{layer} feature vis: snapshot {index + 1}/{len(snapshots)} (step {step}), "
                  f"{time.perf_counter() - started:.0f} s", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        if len(dead):
            print(f"{layer}: {len(dead)} dead channel(s) at step {step}, zero for every input tried: "
                  f"{' '.join(map(str, dead))}", file=sys.stderr)
        stem = os.path.join(args.out, f"{layer}_feature_vis")
        write_gif(f"{stem}.gif", frames, args.fps)
        write_png(f"{stem}.png", frames[-1])
        imf.write_npy_atomically(f"{stem}.npy", inputs)
        written += [f"{stem}.gif", f"{stem}.png", f"{stem}.npy"]
    return written


def main(argv=None):
    args = parse_args(argv)
    vc.gpus()  # TensorFlow's CUDA probe, before any session, so its log shows only when it failed
    try:
        snapshots = load_snapshots(args.checkpoint_dir, args.every)
        if args.image or args.feature_vis:
            run, mean_image = vc.load_run(args.checkpoint_dir)
        if args.image:
            image, image_size = prepare_image(args.image, run, mean_image)
        written = filter_gifs(args, snapshots)
        if args.image:
            network = FeatureMaps(image_size)
            written += feature_gifs(args, snapshots, image, image_size, network)
            written += feature_pngs(args, image, image_size, network)
            written += grad_cam_png(args)
        if args.feature_vis:
            written += feature_vis_gifs(args, snapshots, run["image_size"], mean_image)
    except UsageError as error:
        vc.print_error(error)
        return 2
    except imf.DataError as error:  # a full disk, say
        vc.print_error(error)
        return 1
    print(f"{len(snapshots)} snapshots, steps {snapshots[0][0]} to {snapshots[-1][0]}: wrote {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
