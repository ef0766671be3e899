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
as change (--per-frame-norm scales each frame on its own). One snapshot (a run's first
--snapshot-every steps) makes one-frame GIFs. Ctrl-C or SIGTERM stops it with one line and
exit status 130 or 143, the file being written removed; what a killed run left in --out is
swept by the next.
"""

import argparse
import math
import sys

import numpy as np

import architecture
import cli
import drawing
import explain
import feature_maps
import feature_vis
import files
import imFunctions as imf
import resources
import run_folder
import tf_start

GIF_MAX_SIDE = 65535  # a GIF stores its width and height in 16 bits
# GIF delays are whole hundredths of a second (at most 655.35 s), and browsers play delays under
# 20 ms at 100 ms: outside this range a GIF cannot show the rate asked for.
FPS_RANGE = (0.01, 50.0)


def build_parser():
    parser = cli.OneLineParser(description=__doc__.split("\n")[0],
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="the training run's checkpoint folder")
    parser.add_argument("--out", default="gifs", help="folder for the GIFs and PNGs")
    parser.add_argument("--layers", nargs="+", default=None,
                        help="conv layers whose filters to animate (default: the network's filter view, the "
                             "tutorial's conv1_1 conv1_2 conv2_2)")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second")
    parser.add_argument("--every", type=int, default=1, help="use every K-th snapshot, and the last")
    parser.add_argument("--scale", type=int, default=12, help="pixels per kernel weight (nearest neighbour)")
    parser.add_argument("--input-channel", type=int, default=None,
                        help="show this input channel of deeper layers' kernels instead of their mean")
    parser.add_argument("--per-frame-norm", action="store_true", help="normalise each frame on its own")
    parser.add_argument("--image", default=None, help="an image whose feature maps to animate")
    parser.add_argument("--feature-layers", nargs="+", default=None,
                        help="layers whose feature maps --image animates (default: the network's feature view, "
                             "the tutorial's conv1_2 conv2_2)")
    parser.add_argument("--channels", nargs="+", default=None,
                        help="feature-map channels side by side, or 'all' for a grid of every channel "
                             "(default: each layer's two most active for the image at the latest snapshot)")
    feature_vis.add_arguments(parser)
    return parser


def parse_args(argv=None):
    return cli.parse_checked(build_parser(), validate, argv)


def validate(args):
    """The checks that need no run folder; the layers are checked against the run's network (check_layers)."""
    cli.require_at_least_one(args, ("every", "scale"))
    if not FPS_RANGE[0] <= args.fps <= FPS_RANGE[1]:
        raise cli.UsageError(f"--fps must be between {FPS_RANGE[0]:g} and {FPS_RANGE[1]:g} (GIF delays are "
                             f"hundredths of a second, and browsers slow anything faster than 50 down to 10), got "
                             f"{args.fps:g}")
    feature_vis.validate(args)
    problem = args.image and imf.image_problem(args.image)
    if problem:
        raise cli.UsageError(f"cannot read --image {cli.shown(args.image)}: {problem}")
    resources.check_writable(args.out)


def check_layers(args, network):
    """The layers asked for, checked against the run's network; unnamed ones are the network's views."""
    args.layers = args.layers or network.views["filters"]
    args.feature_layers = args.feature_layers or network.views["features"]
    for flag, layers, available in (("--layers", args.layers, network.conv_layers),
                                    ("--feature-layers", args.feature_layers, network.layer_names),
                                    ("--feature-vis", args.feature_vis or [], network.conv_layers)):
        for layer in layers:
            if layer not in available:
                raise cli.UsageError(f"unknown {flag} layer {layer!r} of the {network.name} network; available: "
                                     f"{', '.join(available)}")
    widest = filter_frame_size(args.scale, max(network.channels(layer) for layer in args.layers))[1]
    if widest > GIF_MAX_SIDE:
        raise cli.UsageError(f"--scale {args.scale} makes frames {widest} px wide; a GIF can be at most "
                             f"{GIF_MAX_SIDE} px, so --scale can be at most {max_scale()}")
    deeper = [layer for layer in args.layers if layer != network.first_conv]  # the first layer's kernels are RGB
    fewest_inputs = min(network.input_channels(layer) for layer in deeper) if deeper else None
    if args.input_channel is not None and fewest_inputs is not None and not 0 <= args.input_channel < fewest_inputs:
        raise cli.UsageError(f"--input-channel must be in 0..{fewest_inputs - 1}, got {args.input_channel}")
    if args.channels not in (None, ["all"]):
        fewest = min(network.channels(layer) for layer in args.feature_layers)
        for channel in args.channels:
            if not channel.isdigit() or int(channel) >= fewest:
                raise cli.UsageError(f"--channels takes channel numbers 0..{fewest - 1} or 'all', got {channel!r}")


def filter_frame_size(scale, kernels, columns=8):
    """(height, width) in pixels of a frame of ``kernels`` 3x3 kernels drawn by tile_grid and titled."""
    columns = min(columns, kernels)
    rows = math.ceil(kernels / columns)
    cell = 3 * scale + drawing.GAP
    return drawing.HEADER + rows * cell + drawing.GAP, columns * cell + drawing.GAP


def max_scale():
    return (GIF_MAX_SIDE - drawing.GAP) // 8 // 3 - 1


def check_frames_fit(count, height, width, available=None):
    """Frames are held in memory until the GIF is encoded: refuse, with the figures, what would not fit."""
    available = available or resources.available_memory()
    needed = count * height * width * 3 * 2  # the frames, and their stack for the encoder
    if needed > available:
        raise cli.UsageError(f"{count} frames of {width}x{height} px need about {files.human_bytes(needed)} of "
                             f"memory, more than the {files.human_bytes(available)} here: use a smaller --scale or a "
                             f"larger --every")


# --------------------------------------------------------------------------- filter GIFs

def kernel_tiles(weights, input_channel=None):
    """[3, 3, in, out] kernels as [out, 3, 3, c] tiles: RGB for 3 inputs, else one grey channel."""
    tiles = np.transpose(weights, (3, 0, 1, 2))
    if tiles.shape[-1] == 3:
        return tiles
    if input_channel is not None:
        return tiles[..., input_channel:input_channel + 1]
    return tiles.mean(axis=-1, keepdims=True)


def filter_gifs(snapshots, network, layers, scale, input_channel, per_frame_norm, fps, out):
    """One GIF (and a PNG of its last frame) per layer of its kernels through training."""
    written = []
    for layer in layers:
        check_frames_fit(len(snapshots), *filter_frame_size(scale, network.channels(layer)))
        tiles = [kernel_tiles(params[layer][0], None if layer == network.first_conv else input_channel)
                 for _, params in snapshots]
        frames = [drawing.titled(drawing.tile_grid(drawing.to_uint8(t, low, high), scale, columns=8),
                                 f"{layer}  step {step}")
                  for t, (low, high), (step, _) in zip(tiles, feature_maps.limits(tiles, per_frame_norm), snapshots)]
        written += feature_maps.save_animation(out, layer, frames, fps)
    return written


@cli.entry_point
def main(argv=None):
    args = parse_args(argv)
    with cli.signal_handlers_restored():  # called from a notebook, the kernel keeps its own
        cli.stop_on_signals()
        tf_start.gpus()  # TensorFlow's CUDA probe, before any session, so its log shows only when it failed
        made, failed = cli.said_in_one_line(lambda: make_outputs(args), "; the file being written was removed")
    if failed:
        return failed
    snapshots, written = made
    if len(snapshots) == 1:
        print(f"1 snapshot so far, step {snapshots[0][0]}: one-frame GIFs; wrote {', '.join(written)}")
    else:
        print(f"{len(snapshots)} snapshots, steps {snapshots[0][0]} to {snapshots[-1][0]}: wrote {', '.join(written)}")
    return 0


def make_outputs(args):
    """Every GIF and PNG asked for, from the inputs read first; returns the snapshots and the files written."""
    found = feature_maps.find_snapshots(args.checkpoint_dir)
    network, run, mean_image = load_network(args.checkpoint_dir, needs_run=bool(args.image or args.feature_vis))
    check_layers(args, network)
    snapshots = feature_maps.read_snapshots(args.checkpoint_dir, feature_maps.every_kth(found, args.every), network)
    if args.image:
        image = feature_maps.prepare_image(args.image, run["image_size"], mean_image, network)
    with files.writing_into(args.out):  # what killed runs left in --out is swept first
        written = filter_gifs(snapshots, network, args.layers, args.scale, args.input_channel, args.per_frame_norm,
                              args.fps, args.out)
        if args.image:
            maps_of = feature_maps.FeatureMaps(run["image_size"], network)
            written += feature_maps.feature_gifs(args.image, image, maps_of, snapshots, args.feature_layers,
                                                 args.channels, args.fps, args.per_frame_norm, args.out)
            written += feature_maps.feature_pngs(args.image, image, maps_of, args.checkpoint_dir, args.out)
            written += explain.grad_cam_png(args.checkpoint_dir, args.image, args.out)
        if args.feature_vis:
            written += feature_vis.feature_vis_gifs(args, snapshots, run["image_size"], mean_image, network)
    return snapshots, written


def load_network(checkpoint_dir, needs_run):
    """``(network, run, mean image)`` of the run folder, by run_folder's one rule. Filter GIFs need only the
    network: a folder whose run description cannot be read then holds the tutorial's (whose snapshots are
    unreadable if it does not)."""
    try:
        run, mean_image = run_folder.load_run(checkpoint_dir)
    except cli.UsageError:
        if needs_run:
            raise
        return architecture.TUTORIAL, None, None
    return architecture.of_run(run), run, mean_image


if __name__ == "__main__":
    cli.guard_streams()
    sys.exit(main())
