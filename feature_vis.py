"""Feature visualisation through training: each channel's preferred input at every snapshot.

For each channel of a conv layer, an input image is found by gradient ascent on that
channel's mean activation (before its ReLU, so a channel that is negative everywhere still
gets a gradient), starting at every snapshot from the previous snapshot's result.
filter_gif.py --feature-vis LAYER writes them as a GIF, a PNG of its last frame and the
last inputs as .npy.
"""
import os
import sys
import time

import numpy as np

import cli
import drawing
import feature_maps
import files
import tf_start  # noqa: F401 -- TensorFlow's start-up notes held back
import tensorflow as tf
import visualize_convnets as vc
from progress import Progress

v1 = tf.compat.v1

# lucid's colour decorrelation (Olah et al., "Feature Visualization", Distill 2017): the square
# root of ImageNet's RGB covariance, scaled to unit column norm. Optimising in these
# decorrelated colours, like optimising in Fourier space, keeps the high frequencies and
# colour noise that plain pixel-space ascent produces out of the pictures.
COLOR_CORRELATION_SQRT = np.float32([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION_SQRT /= np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0).max()
DEAD_GREY = 128
# A layer wider than this (VGG16's 128 to 512) shows its first FEW_CHANNELS by default: each channel is one input
# through every layer below it, and on a CPU VGG16's conv5_3 costs seconds per channel and snapshot.
MANY_CHANNELS, FEW_CHANNELS = 64, 16


def add_arguments(parser):
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
    parser.add_argument("--feature-vis-channels", type=int, default=None, metavar="N",
                        help=f"the layer's first N channels (default: all of a layer of at most {MANY_CHANNELS}, "
                             f"else {FEW_CHANNELS}: VGG16's deep layers cost seconds per channel and snapshot on a "
                             f"CPU)")


def validate(args):
    cli.require_at_least_one(args, ("feature_vis_first_steps", "feature_vis_steps", "feature_vis_channels"))
    if not args.feature_vis_lr > 0:
        raise cli.UsageError(f"--feature-vis-lr must be positive, got {args.feature_vis_lr}")
    if args.feature_vis_jitter is not None and args.feature_vis_jitter < 0:
        raise cli.UsageError(f"--feature-vis-jitter must be at least 0, got {args.feature_vis_jitter}")
    cli.require_at_most(args, "feature_vis_jitter")  # a shift TensorFlow holds as a 32-bit int


def fourier_scale(size):
    """1/frequency per rfft2 coefficient: white noise in this basis is a natural image's spectrum."""
    frequencies = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    return np.float32(size / np.maximum(frequencies, 1.0 / size))


class FeatureVis:
    """One input per channel of ``layer``, optimised at once to excite that channel.

    The inputs live as a Fourier spectrum in decorrelated colours, squashed by a sigmoid into
    raw pixels 0..255 and then centred by the training mean, so they stay within what the
    network saw in training. The weights are placeholders, as in feature_maps.FeatureMaps, so
    one graph serves every snapshot; the spectrum and Adam's moments stay between snapshots,
    so each snapshot starts from the previous one's result.
    """

    def __init__(self, layer, image_size, mean_image, network, learning_rate, seed, channels=None):
        channels = shown_channels(network.channels(layer), channels)
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
            shifted = network.prepare(tf.roll(self.pixels, self.shift, axis=[1, 2]), mean_image)
            self.inputs = network.prepare(self.pixels, mean_image)
            # Weight placeholders, as FeatureMaps has, so optimise() can feed any snapshot's weights.
            layers, _ = vc.conv_stack(shifted, network, feature_maps.weight_placeholders(self.params))
            own_mean = self.objective(layers, network.layer_input(layer), layer, shifted, channels)
            self.peak = tf.reduce_max(layers[layer][..., :channels], axis=[0, 1, 2])  # each channel, every input
            self.ascend = v1.train.AdamOptimizer(learning_rate).minimize(-tf.reduce_sum(own_mean),
                                                                         var_list=[self.spectrum])
            initialise = v1.global_variables_initializer()
        self.session = v1.Session(graph=self.graph)
        self.session.run(initialise)

    def objective(self, layers, below, layer, images, channels):
        """Input c's objective: channel c's mean before its ReLU (so a channel that is negative everywhere
        still gets a gradient), [c]. Only that channel is computed for that input: the layer's other
        channels, c - 1 of every c it would compute, are not needed, so the ascent skips them. ``below``
        is the layer before (None: the layer takes the images); ``channels`` the first channels shown."""
        below = layers[below] if below else images  # the layer's input
        weights, biases = self.params[layer]
        return tf.reduce_mean(own_channel_maps(below, weights[..., :channels]), axis=[1, 2]) + biases[:channels]

    def optimise(self, params, steps, jitter, rng):
        """``(raw pixels [c, s, s, 3], network inputs, dead channels)`` after ``steps`` more ascent steps."""
        feed = feature_maps.weight_feed(self.params, params)
        for _ in range(steps):
            feed[self.shift] = rng.integers(-jitter, jitter + 1, 2)
            self.session.run(self.ascend, feed)
        del feed[self.shift]
        pixels, inputs, peak = self.session.run([self.pixels, self.inputs, self.peak], feed)
        return pixels, inputs, np.flatnonzero(peak <= 0)


def shown_channels(available, asked=None):
    """How many of a layer's channels feature visualisation shows: ``asked`` (at most all), else all of a narrow
    layer and the first few of a wide one."""
    if asked is not None:
        return min(asked, available)
    return available if available <= MANY_CHANNELS else FEW_CHANNELS


def own_channel_maps(inputs, weights):
    """Output channel c of a 3x3 SAME convolution (no bias) of input c alone: [c, h, w] for [c, h, w, k] inputs
    and [3, 3, k, c] weights. The inputs side by side as one image of c * k channels, each convolved with its
    own 3x3 kernel (a depthwise convolution), then summed over k: 1/c of the full convolution's work."""
    count, height, width, depth = inputs.shape
    side_by_side = tf.reshape(tf.transpose(inputs, [1, 2, 0, 3]), [1, height, width, count * depth])
    kernels = tf.reshape(tf.transpose(weights, [0, 1, 3, 2]), [3, 3, count * depth, 1])  # (c, k) at c * depth + k
    convolved = tf.nn.depthwise_conv2d(side_by_side, kernels, [1, 1, 1, 1], "SAME")
    return tf.transpose(tf.reduce_sum(tf.reshape(convolved, [height, width, count, depth]), axis=-1), [2, 0, 1])


def feature_vis_frame(layer, step, pixels, dead):
    tiles = drawing.to_uint8(pixels, 0.0, 255.0)
    tiles[dead] = DEAD_GREY  # a flat tile: a dead channel has no preferred input to show
    return drawing.titled(drawing.tile_grid(tiles, 1, columns=8), f"{layer} feature vis  step {step}")


def feature_vis_gifs(args, snapshots, image_size, mean_image, network):
    """Per --feature-vis layer: a GIF of every channel's preferred input through training."""
    jitter = args.feature_vis_jitter if args.feature_vis_jitter is not None else image_size // 16
    os.makedirs(args.out, exist_ok=True)
    written = []
    for layer in args.feature_vis:
        vis = FeatureVis(layer, image_size, mean_image, network, args.feature_vis_lr, args.feature_vis_seed,
                         args.feature_vis_channels)
        rng = np.random.default_rng(args.feature_vis_seed)
        frames, started = [], time.monotonic()
        with Progress(snapshots, desc=f"{layer} feature vis", unit="snapshot") as progress:
            for index, (step, params) in enumerate(progress):
                progress.set_postfix_str(f"step {step}", refresh=False)
                steps = args.feature_vis_first_steps if index == 0 else args.feature_vis_steps
                pixels, inputs, dead = vis.optimise(params, steps, jitter, rng)
                frames.append(feature_vis_frame(layer, step, pixels, dead))
        print(f"{layer}: {len(pixels)} of {network.channels(layer)} channels, "
              f"{(time.monotonic() - started) / len(snapshots):.1f} s per snapshot", flush=True)
        if len(dead):
            print(f"{layer}: {len(dead)} dead channel(s) at step {step}, zero for every input tried: "
                  f"{' '.join(map(str, dead))}", file=sys.stderr)
        stem = os.path.join(args.out, f"{layer}_feature_vis")
        drawing.write_gif(f"{stem}.gif", frames, args.fps)
        drawing.write_png(f"{stem}.png", frames[-1])
        files.write_npy_atomically(f"{stem}.npy", inputs)
        written += [f"{stem}.gif", f"{stem}.png", f"{stem}.npy"]
    return written
