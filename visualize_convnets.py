"""Visualizing Convnets: the tutorial's 4-conv-layer CNN, Shiba Inu vs Samoyed, in TF1 graph code.

The tutorial's steps, in order:
  1. the data, through imFunctions: download, extract, sort, build (each skipped when done);
  2. two demos on the first training image, written as figures: a 7x7 four-filter
     convolution and SAME vs VALID max pooling, through placeholders and a Session;
  3. the graph: placeholders, name scopes conv1_1 ... softmax, dropout, Adam (tf.compat.v1);
  4. TensorBoard summaries (FileWriters <logdir>/train and <logdir>/test), measured as the
     notebook does, and a probe image's feature maps over training;
  5. the run's folder: one run at a time (a lock), resumed from the checkpoints on disk;
  6. the training loop: full Saver checkpoints every --checkpoint-minutes of training, at
     the end and on SIGTERM/SIGINT, and small filter snapshots every --snapshot-every
     steps that filter_gif.py turns into GIFs.

    python visualize_convnets.py                       # the tutorial's defaults
    python visualize_convnets.py --image-size 64 --epochs 5
    tensorboard --logdir logs
"""
import argparse
import collections
import contextlib
import fcntl
import functools
import glob
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import imFunctions as imf


@contextlib.contextmanager
def native_stderr_held_back():
    """Hold back what native code writes to stderr; replay it if the block fails.

    Yields a list that holds the bytes once the block is over, for a caller that
    decides afterwards that they matter.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    held_bytes = []
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield held_bytes
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            held_bytes.append(held.read())


# TensorFlow's C++ side logs its start-up notes (at import, at the first session) before and
# after its logging is set up; they would bury a one-line usage error and the run's own lines.
# Informational ones are off unless the user sets TF_CPP_MIN_LOG_LEVEL; the import's are held
# back, and the CUDA probe's are shown only when it fails (gpus()).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
with native_stderr_held_back():
    import tensorflow as tf

v1 = tf.compat.v1

# (scope, variable suffix, input channels, output channels) of the four 3x3 SAME convolutions.
CONV_LAYERS = (("conv1_1", "1_1", 3, 32), ("conv1_2", "1_2", 32, 32),
               ("conv2_1", "2_1", 32, 64), ("conv2_2", "2_2", 64, 64))
FEATURE_LAYERS = ("conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2")
FC_UNITS = 512
CHECKPOINT_NAME = "model.ckpt"
SNAPSHOT_DIR = "snapshots"
SNAPSHOT_NAME = "filters"
RUN_FILE = "run.json"
MEAN_FILE = "mean_image.npy"
STATE_FILE = "checkpoint"  # TensorFlow's list of the latest checkpoints: a hint, the files are the truth
LOCK_FILE = ".training.lock"
MAX_SEED = 2 ** 31 - 1
GRID_GAP = 2  # white pixels between the tiles of every grid drawn (TensorBoard images, GIFs)
OXFORD_IMAGES_PER_BREED = 200
OXFORD_BREEDS = (
    "Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "Bengal",
    "Birman", "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau", "english_cocker_spaniel",
    "english_setter", "german_shorthaired", "great_pyrenees", "havanese", "japanese_chin", "keeshond",
    "leonberger", "Maine_Coon", "miniature_pinscher", "newfoundland", "Persian", "pomeranian", "pug",
    "Ragdoll", "Russian_Blue", "saint_bernard", "samoyed", "scottish_terrier", "shiba_inu", "Siamese",
    "Sphynx", "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier")


class UsageError(Exception):
    """Bad input from the command line: one line, exit status 2."""


# --------------------------------------------------------------------------- configuration

class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, except where there is none to show (its help says what happens)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser():
    parser = OneLineParser(description=__doc__.split("\n")[0], formatter_class=DefaultsHelpFormatter,
                           epilog="Offline, or behind a slow link: OXFORD_PETS_URL=http://host:port points the "
                                  "download at a mirror of the dataset (README: Offline).")
    parser.add_argument("--classes", nargs="+", default=["shiba_inu", "samoyed"],
                        help="breeds to tell apart (any case, with or without underscores)")
    parser.add_argument("--epochs", type=int, default=400, help="total epochs; a resumed run continues up to it")
    parser.add_argument("--batch-size", type=int, default=10, help="images per training step")
    parser.add_argument("--learning-rate", type=float, default=1e-5, help="Adam's learning rate")
    parser.add_argument("--keep-conv", type=float, default=0.2, help="dropout keep rate after each pool (keepRate1)")
    parser.add_argument("--keep-fc", type=float, default=0.5, help="dropout keep rate after fc1 (keepRate2)")
    parser.add_argument("--test-fraction", type=float, default=0.15, help="share of each breed held out for test")
    parser.add_argument("--image-size", type=int, default=224, help="side of the square images fed to the net")
    parser.add_argument("--summary-every", type=int, default=5,
                        help="steps between TensorBoard summaries; on those steps the batch is also measured with "
                             "dropout off before its update, as the notebook measures, and the epoch's Training "
                             "Accuracy is the mean of those measures (a 1-in-N sample)")
    parser.add_argument("--snapshot-every", type=int, default=50,
                        help="steps between filter snapshots (for GIFs) and the probe image's feature maps in "
                             "TensorBoard")
    parser.add_argument("--probe-image", default=None,
                        help="the image whose conv1_2 and conv2_2 feature maps TensorBoard shows over training "
                             "(default: the first test image of the first class)")
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0,
                        help="minutes of training between full checkpoints (0: none by the clock); a run also "
                             "saves one at its end and when stopped with SIGTERM or Ctrl-C")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="also save a full checkpoint every N epochs (default: by the clock only)")
    parser.add_argument("--keep-checkpoints", type=int, default=3, help="full checkpoints kept")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"seeds numpy and the graph, 0..{MAX_SEED} (default: the resumed run's, else a "
                             f"random one, saved for resuming)")
    parser.add_argument("--data-dir", default="data", help="downloads, extracted and sorted images, cache")
    parser.add_argument("--logdir", default="logs", help="TensorBoard event files (train/ and test/)")
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="checkpoints and filter snapshots")
    parser.add_argument("--figures-dir", default="figures", help="where the two demos write their figures")
    parser.add_argument("--skip-demos", action="store_true", help="do not run the convolution and pooling demos")
    return parser


def parse_args(argv=None):
    return parse_checked(build_parser(), validate, argv)


def parse_checked(parser, validate_args, argv=None):
    """Parse, then validate: a UsageError becomes argparse's one-line error and exit status 2."""
    args = parser.parse_args(argv)
    try:
        validate_args(args)
    except UsageError as error:
        parser.error(str(error))
    return args


def require_at_least_one(args, names):
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def validate(args):
    """Every check that needs no data, so bad input stops the run before it writes anything."""
    require_at_least_one(args, ("epochs", "batch_size", "image_size", "summary_every", "snapshot_every",
                                "checkpoint_every", "keep_checkpoints"))
    if not 0 < args.test_fraction < 1:
        raise UsageError(f"--test-fraction must be between 0 and 1 (exclusive), got {args.test_fraction}")
    for name in ("keep_conv", "keep_fc"):
        if not 0 < getattr(args, name) <= 1:
            raise UsageError(f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(args, name)}")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise UsageError(f"--learning-rate must be a finite positive number, got {args.learning_rate}")
    if not (math.isfinite(args.checkpoint_minutes) and args.checkpoint_minutes >= 0):
        raise UsageError(f"--checkpoint-minutes must be 0 or more, got {args.checkpoint_minutes}")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed must be in 0..{MAX_SEED}, got {args.seed}")
    train_dir = os.path.join(args.data_dir, "train")
    known = sorted(os.listdir(train_dir)) if os.path.isdir(train_dir) else OXFORD_BREEDS
    try:
        args.classes = imf.resolve_classes(args.classes, known)
    except ValueError as error:
        raise UsageError(str(error))
    if args.probe_image and imf.load_image(args.probe_image, 16) is None:
        raise UsageError(f"cannot read --probe-image {args.probe_image}: not an image, or damaged")
    check_memory(args, available_memory())
    folders = [args.data_dir, args.logdir, args.checkpoint_dir]
    if not args.skip_demos:
        folders.append(args.figures_dir)
    for folder in folders:
        check_writable(folder)


def check_writable(folder):
    """A folder we can write into, or could create: its nearest existing ancestor decides."""
    existing = imf.nearest_existing(folder)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {folder}: {existing} is not a writable folder")


def memory_estimate(image_size, batch_size, n_images):
    """Bytes a run holds at once: ``{part: bytes}`` for the dataset, the graph's variables and a step."""
    pixels = image_size * image_size
    # Weights, Adam's two slots and the gradient, in float32; fc1 is nearly all of them.
    variables = 4 * 4 * (fc1_inputs(image_size) * FC_UNITS + sum(9 * cin * cout for _, _, cin, cout in CONV_LAYERS))
    # Per image: conv1_1, conv1_2 (full size, 32 channels), pool1 and conv2_1, conv2_2 (quarter size, 32 and
    # 64 and 64), pool2: 108 floats a pixel, kept for the backward pass and matched by their gradients.
    step = 2 * 4 * 108 * pixels * batch_size
    # The float32 arrays and, while they are built, the uint8 images they come from.
    dataset = n_images * pixels * 3 * (4 + 1)
    return {"the dataset": dataset, "the graph's variables": variables, "a training step": step}


def expected_image_count(args):
    """Images of the chosen classes in both splits: counted when sorted, else the dataset's ~200 a breed."""
    count = 0
    for breed in args.classes:
        folders = [os.path.join(args.data_dir, part, breed) for part in ("train", "test")]
        count += sum(len(os.listdir(f)) for f in folders if os.path.isdir(f)) or OXFORD_IMAGES_PER_BREED
    return count


def check_memory(args, available):
    """Refuse, naming the figures, a run that cannot fit in this machine's memory."""
    parts = memory_estimate(args.image_size, args.batch_size, expected_image_count(args))
    needed = sum(parts.values())
    if needed > available:
        detail = ", ".join(f"{name} {imf.human_bytes(size)}" for name, size in parts.items())
        raise UsageError(f"--image-size {args.image_size} with --batch-size {args.batch_size} needs about "
                         f"{imf.human_bytes(needed)} of memory ({detail}); this machine has "
                         f"{imf.human_bytes(available)}")


def available_memory():
    """This machine's memory, or the container's limit where one is set."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit_file) as handle:
                total = min(total, int(handle.read().strip()))
        except (OSError, ValueError):  # absent, or "max"
            pass
    return total


# --------------------------------------------------------------------------- 1. demos

# A written figure: its file, the arrays drawn in it by title, and where each one sits.
Figure = collections.namedtuple("Figure", "path panels boxes")
TITLE_HEIGHT = 26
PANEL_GAP = 16
POOLING_INPUT = [[1, 3, 2, 9], [7, 4, 1, 5], [8, 5, 2, 3], [4, 2, 1, 4]]  # the article's 4x4 example


def demo_filters():
    """The notebook's four 7x7 filters as [7, 7, 1, 4], and their names, exactly as it wrote them."""
    filters = np.zeros([7, 7, 1, 4])
    filters[3, :, 0, 0] = 1
    filters[:, 3, 0, 1] = 1
    filters[:, :, 0, 2] = np.eye(7)
    filters[:, :, :, 3] -= 1
    filters[3, 3, :, 3] = 8
    return filters, ("Horizontal", "Vertical", "Identity", "Outline")


def convolve(grey, filters):
    """A [H, W] image through [k, k, 1, n] filters, SAME padding, in a Session: [H, W, n]."""
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [1, None, None, 1], name="image")
        w = v1.placeholder(tf.float32, [None, None, 1, None], name="filters")
        convolved = tf.nn.conv2d(x, w, strides=[1, 1, 1, 1], padding="SAME", name="convolved")
        with v1.Session(graph=graph) as session:
            return session.run(convolved, {x: grey[None, :, :, None], w: filters})[0]


def demo_convolution(image, figures_dir):
    """The tutorial's first demo: the grey image through the notebook's four filters.

    Writes the outputs (convolution_demo.png) and the filters themselves
    (convolution_filters.png, the article's figure 2); returns both Figures.
    """
    filters, names = demo_filters()
    grey = np.mean(image, -1)
    outputs = convolve(grey, filters)
    return [save_panels({"grey input": grey, **{name: outputs[..., k] for k, name in enumerate(names)}},
                        os.path.join(figures_dir, "convolution_demo.png")),
            save_panels({name: filters[:, :, 0, k] for k, name in enumerate(names)},
                        os.path.join(figures_dir, "convolution_filters.png"), cell=28, numbers=True)]


def demo_image(args, size=224):
    """The first readable training image of the first class, at the tutorial's size."""
    folder = os.path.join(args.data_dir, "train", args.classes[0])
    for name in sorted(os.listdir(folder)):
        image = imf.load_image(os.path.join(folder, name), size)
        if image is not None:
            return image
    raise imf.DataError(f"no readable image in {folder} for the demos")


def demo_pooling(figures_dir):
    """The tutorial's second demo, the article's 4x4 example: a 2x2 kernel at stride 2, and a
    3x3 kernel at stride 1 with SAME padding (4x4 out) against VALID (2x2 out)."""
    values = np.array(POOLING_INPUT, np.float32)[None, :, :, None]
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [1, 4, 4, 1], name="input")
        pools = {"2x2, stride 2": tf.nn.max_pool2d(x, 2, 2, "SAME", name="pool_2x2"),
                 "3x3, stride 1, SAME": tf.nn.max_pool2d(x, 3, 1, "SAME", name="pool_3x3_same"),
                 "3x3, stride 1, VALID": tf.nn.max_pool2d(x, 3, 1, "VALID", name="pool_3x3_valid")}
        with v1.Session(graph=graph) as session:
            pooled = session.run(pools, {x: values})
    panels = {"input 4x4": values[0, :, :, 0], **{title: output[0, :, :, 0] for title, output in pooled.items()}}
    # One grey scale for all four, so a number has the same shade wherever it lands.
    return save_panels(panels, os.path.join(figures_dir, "pooling_demo.png"), cell=56, numbers=True,
                       shared_scale=True)


def save_panels(panels, path, cell=None, numbers=False, shared_scale=False):
    """``{title: 2-D array}`` drawn side by side in grey under their titles; returns the Figure.

    Each panel is scaled to [0, 255] on its own unless ``shared_scale``; ``cell`` pixels a
    value (default: about 224 px a panel); ``numbers`` writes each value on its cell, black
    on light cells and white on dark ones so every one reads. ``boxes`` holds each panel's
    (left, top, cell) in the figure.
    """
    title_font = ImageFont.load_default(size=15)
    all_values = np.concatenate([np.ravel(panel) for panel in panels.values()])
    placed, boxes, left = [], {}, 0
    for title, panel in panels.items():
        low, high = (all_values.min(), all_values.max()) if shared_scale else (panel.min(), panel.max())
        grey = grey_levels(panel, low, high)
        scale = cell or max(1, 224 // max(panel.shape))
        tile = Image.fromarray(grey).resize((panel.shape[1] * scale, panel.shape[0] * scale), Image.NEAREST)
        tile = tile.convert("RGB")
        if numbers:
            draw_numbers(tile, panel, grey, scale)
        placed.append((left, title, tile))
        boxes[title] = (left, TITLE_HEIGHT, scale)
        left += max(tile.width, int(title_font.getlength(title)) + 4) + PANEL_GAP
    figure = Image.new("RGB", (left - PANEL_GAP, TITLE_HEIGHT + max(tile.height for _, _, tile in placed)), "white")
    draw = ImageDraw.Draw(figure)
    for left, title, tile in placed:
        figure.paste(tile, (left, TITLE_HEIGHT))
        draw.text((left, 4), title, fill="black", font=title_font)
    save_png(figure, path)
    return Figure(path, dict(panels), boxes)


def grey_levels(values, low, high):
    """``values`` mapped linearly onto 0 (``low``) .. 255 (``high``), as uint8."""
    return np.uint8(np.round(255 * (values - low) / (high - low or 1)))


def draw_numbers(tile, panel, grey, scale):
    """Each value centred on its cell of the zoomed tile, in the colour that contrasts with the cell;
    a grey outline per cell keeps white cells apart from each other and from the page."""
    font = ImageFont.load_default(size=max(10, scale * 2 // 5))
    draw = ImageDraw.Draw(tile)
    for (row, column), value in np.ndenumerate(panel):
        left, top = column * scale, row * scale
        draw.rectangle((left, top, left + scale - 1, top + scale - 1), outline=(150, 150, 150))
        colour = "black" if grey[row, column] >= 128 else "white"
        draw.text((left + scale / 2, top + scale / 2), f"{value:g}", fill=colour, font=font, anchor="mm")


def save_png(picture, path):
    """A PIL image encoded in memory and written as ``path`` through a temporary name: never a half-written
    file, and a full disk is one line."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    imf.write_bytes_atomically(path, buffer.getvalue())


# --------------------------------------------------------------------------- 2. data

def prepare_data(args):
    """The tutorial's data cells through imFunctions, each stage skipped when already done."""
    for filename in ("annotations.tar.gz", "images.tar.gz"):
        if not os.path.exists(imf.extraction_marker(filename, args.data_dir)):
            imf.downloadImages(filename, imf.expected_size(filename), data_dir=args.data_dir)
            imf.maybeExtract(filename, data_dir=args.data_dir)
    imf.sortImages(args.test_fraction, data_dir=args.data_dir)
    return imf.loadDataset(args.classes, args.image_size, args.data_dir)


# --------------------------------------------------------------------------- 3. the graph

def conv_stack(images, conv_params, keep_conv=None):
    """conv1_1 ... pool2 of the tutorial; returns ``{layer: activations}`` and the last output.

    ``conv_params(suffix, in_channels, out_channels)`` gives a layer's weights and biases; it
    is called inside the layer's name scope, so training creates its variables there and
    filter_gif.py passes snapshot values instead. Dropout follows each pool when
    ``keep_conv`` (keepRate1) is given.
    """
    layers = {}
    output = images
    for scope, suffix, in_channels, out_channels in CONV_LAYERS:
        with tf.name_scope(scope):
            weights, biases = conv_params(suffix, in_channels, out_channels)
            convolved = tf.nn.conv2d(output, weights, strides=[1, 1, 1, 1], padding="SAME", name="conv")
            output = layers[scope] = tf.nn.relu(tf.nn.bias_add(convolved, biases), name="relu")
        if suffix.endswith("_2"):
            pool = f"pool{suffix[0]}"
            with tf.name_scope(pool):
                output = layers[pool] = tf.nn.max_pool2d(output, 2, 2, "SAME", name="max_pool")
                if keep_conv is not None:
                    output = tf.nn.dropout(output, rate=1.0 - keep_conv, name="dropout")
    return layers, output


def new_conv_variables(suffix, in_channels, out_channels):
    """The tutorial's initialisation: truncated normal weights (stddev 0.1), zero biases."""
    weights = tf.Variable(v1.truncated_normal([3, 3, in_channels, out_channels], stddev=0.1),
                          name=f"weights{suffix}")
    biases = tf.Variable(tf.zeros([out_channels]), name=f"biases{suffix}")
    return weights, biases


def pooled_size(image_size):
    """Side of the feature maps after two 2x2 SAME pools."""
    return math.ceil(math.ceil(image_size / 2) / 2)


def fc1_inputs(image_size):
    """fc1's inputs: pool2's output flattened. fc1 holds nearly all the graph's weights."""
    return pooled_size(image_size) ** 2 * CONV_LAYERS[-1][3]


def build_graph(image_size, n_classes, learning_rate=1e-5, seed=None):
    """The tutorial's graph in a new tf.Graph; returns a dict of its tensors and ops by name."""
    graph = tf.Graph()
    with graph.as_default():
        if seed is not None:
            v1.set_random_seed(seed)
        X = v1.placeholder(tf.float32, [None, image_size, image_size, 3], name="X")
        Y_ = v1.placeholder(tf.float32, [None, n_classes], name="Y_")
        keepRate1 = v1.placeholder(tf.float32, [], name="keepRate1")
        keepRate2 = v1.placeholder(tf.float32, [], name="keepRate2")
        layers, pooled = conv_stack(X, new_conv_variables, keep_conv=keepRate1)
        with tf.name_scope("fc1"):
            flat_size = fc1_inputs(image_size)
            weights3_1 = tf.Variable(v1.truncated_normal([flat_size, FC_UNITS], stddev=0.1), name="weights3_1")
            biases3_1 = tf.Variable(tf.ones([FC_UNITS]), name="biases3_1")
            flat = tf.reshape(pooled, [-1, flat_size], name="flatten")
            fc1 = tf.nn.relu(tf.matmul(flat, weights3_1) + biases3_1, name="relu")
            fc1_drop = tf.nn.dropout(fc1, rate=1.0 - keepRate2, name="dropout")
        with tf.name_scope("softmax"):
            weights3_2 = tf.Variable(v1.truncated_normal([FC_UNITS, n_classes], stddev=0.1), name="weights3_2")
            biases3_2 = tf.Variable(tf.ones([n_classes]), name="biases3_2")
            logits = tf.add(tf.matmul(fc1_drop, weights3_2), biases3_2, name="logits")
            Y = tf.nn.softmax(logits, name="Y")
        with tf.name_scope("cross_entropy"):
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=Y_, logits=logits), name="loss")
        with tf.name_scope("accuracy"):
            correct = tf.equal(tf.argmax(Y, 1), tf.argmax(Y_, 1), name="correct")
            accuracy = tf.reduce_mean(tf.cast(correct, tf.float32), name="accuracy")
        global_step = v1.train.get_or_create_global_step()
        with tf.name_scope("train"):
            train_step = v1.train.AdamOptimizer(learning_rate).minimize(loss, global_step=global_step, name="adam")
        summaries, test_summaries = build_summaries(loss, accuracy, graph)
    return dict(graph=graph, X=X, Y_=Y_, keepRate1=keepRate1, keepRate2=keepRate2, layers=layers, Y=Y,
                loss=loss, accuracy=accuracy, global_step=global_step, train_step=train_step,
                summaries=summaries, test_summaries=test_summaries, filter1_1=conv_variable(graph, "conv1_1", "weights1_1"))


def conv_variable(graph, scope, name):
    """The tf.Variable ``scope/name`` of ``graph`` (a variable, not its resource handle)."""
    wanted = f"{scope}/{name}"
    return next(variable for variable in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)
                if variable.op.name == wanted)


def build_summaries(loss, accuracy, graph):
    """The train run's merged summaries (Loss, Accuracy, the weights1_1 histogram, a picture of the 32
    conv1_1 filters) and the test run's (Loss and Accuracy: the weights are the same for both runs).

    Raw summary ops take their tag as given: ``tf.summary.scalar("Accuracy")`` would be
    renamed ``Accuracy_1``, since graph names are unique regardless of case and the
    tutorial's ``accuracy`` scope holds the name.
    """
    weights1_1 = conv_variable(graph, "conv1_1", "weights1_1")
    with tf.name_scope("summaries"):
        scalars = [tf.raw_ops.ScalarSummary(tags="Loss", values=loss, name="loss"),
                   tf.raw_ops.ScalarSummary(tags="Accuracy", values=accuracy, name="accuracy")]
        weights = [tf.raw_ops.HistogramSummary(tag="weights1_1", values=weights1_1, name="weights1_1"),
                   tf.raw_ops.ImageSummary(tag="conv1_1_filters", tensor=filter_grid(weights1_1, rows=4),
                                           max_images=1, name="conv1_1_filters")]
        return v1.summary.merge(scalars + weights, name="train"), v1.summary.merge(scalars, name="test")


def filter_grid(weights, rows, zoom=8):
    """[3, 3, 3, n] kernels as one [1, H, W, 3] image: a rows x n/rows grid, 1 px gaps, zoomed."""
    n = weights.shape[-1]
    low, high = tf.reduce_min(weights), tf.reduce_max(weights)
    scaled = (weights - low) / tf.maximum(high - low, 1e-8)
    kernels = tf.pad(tf.transpose(scaled, [3, 0, 1, 2]), [[0, 0], [0, 1], [0, 1], [0, 0]])
    columns = n // rows
    grid = tf.reshape(tf.transpose(tf.reshape(kernels, [rows, columns, 4, 4, 3]), [0, 2, 1, 3, 4]),
                      [1, rows * 4, columns * 4, 3])
    return tf.image.resize(grid, [rows * 4 * zoom, columns * 4 * zoom], method="nearest")


def tile_grid(tiles, zoom, columns):
    """[n, h, w, c] uint8 tiles zoomed by nearest neighbour into a grid with white gaps; RGB out.

    The one grid the project draws: TensorBoard's probe images here, every GIF in filter_gif.py.
    """
    count, height, width, _ = tiles.shape
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    zoomed = tiles.repeat(zoom, axis=1).repeat(zoom, axis=2)
    if zoomed.shape[-1] == 1:
        zoomed = zoomed.repeat(3, axis=-1)
    cell_h, cell_w = height * zoom + GRID_GAP, width * zoom + GRID_GAP
    grid = np.full((rows * cell_h + GRID_GAP, columns * cell_w + GRID_GAP, 3), 255, np.uint8)
    for index in range(count):
        top, left = GRID_GAP + (index // columns) * cell_h, GRID_GAP + (index % columns) * cell_w
        grid[top:top + height * zoom, left:left + width * zoom] = zoomed[index]
    return grid


def feature_grid(maps, tile=64, columns=8):
    """[h, w, channels] feature maps as one grey uint8 grid, each map shrunk to at most ``tile`` pixels
    (so a 224-px run's event files stay small) and all on one scale, 0 to the largest value."""
    high = float(maps.max()) or 1.0
    side = min(tile, maps.shape[0])
    shrunk = [np.asarray(Image.fromarray(np.uint8(np.clip(255 * maps[..., channel] / high, 0, 255)))
                         .resize((side, side), Image.BOX)) for channel in range(maps.shape[-1])]
    return tile_grid(np.stack(shrunk)[..., None], 1, columns)[..., 0]


def image_summary_value(tag, grey):
    """A TensorBoard image under exactly ``tag`` (an ImageSummary op would add "/image" to it)."""
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG")
    return v1.Summary.Value(tag=tag, image=v1.Summary.Image(height=grey.shape[0], width=grey.shape[1],
                                                            colorspace=1, encoded_image_string=buffer.getvalue()))


class ProbeMaps:
    """One fixed image's feature maps in conv1_2 and conv2_2, as TensorBoard images on snapshot steps:
    TensorBoard's step slider then plays what filter_gif.py animates."""

    LAYERS = ("conv1_2", "conv2_2")

    def __init__(self, model, image):
        self.fetches = {layer: model["layers"][layer] for layer in self.LAYERS}
        self.feed = {model["X"]: image[None], model["keepRate1"]: 1.0, model["keepRate2"]: 1.0}

    def summary(self, session):
        maps = session.run(self.fetches, self.feed)
        return v1.Summary(value=[image_summary_value(f"feature_maps/{layer}", feature_grid(maps[layer][0]))
                                 for layer in self.LAYERS])


def probe_image(args, dataset):
    """The image whose feature maps go to TensorBoard, centred as training's: --probe-image, else the first
    test image of the first class."""
    if args.probe_image:
        picture = imf.load_image(args.probe_image, args.image_size)
        if picture is None:
            raise UsageError(f"cannot read --probe-image {args.probe_image}")
        return picture.astype(np.float32) - dataset.mean_image
    first_class = np.flatnonzero(dataset.test_y[:, 0]) if len(dataset.test_x) else []
    return dataset.test_x[first_class[0]] if len(first_class) else dataset.train_x[0]


def snapshot_variables(graph):
    """The four conv layers' weights and biases: all a conv feature map needs."""
    return [conv_variable(graph, scope, f"{kind}{suffix}")
            for scope, suffix, _, _ in CONV_LAYERS for kind in ("weights", "biases")]


def session_config():
    config = v1.ConfigProto()
    config.gpu_options.allow_growth = True  # share the GPU with TensorBoard or a second run
    return config


@functools.cache
def gpus():
    """The GPUs TensorFlow sees. Its CUDA probe logs an error on every machine without one, so that
    log is shown only where an NVIDIA device is present and TensorFlow still found none."""
    with native_stderr_held_back() as held:
        found = tf.config.list_physical_devices("GPU")
    if not found and glob.glob("/dev/nvidia[0-9]*"):
        os.write(2, held[0])
    return found


def describe_devices():
    found = gpus()
    if found:
        return f"Training on {len(found)} GPU(s): {', '.join(gpu.name for gpu in found)}"
    return "No GPU visible to TensorFlow: training on the CPU"


# --------------------------------------------------------------------------- 5. the run's folder

# A run's settings and training mean are also kept inside each full checkpoint, beside the
# weights they belong to, so a lost or damaged run.json can be recovered from them.
RUN_KEYS = {"classes": list, "image_size": int, "batch_size": int, "train_images": int, "seed": int}
RUN_JSON_VARIABLE = "run/json"
RUN_MEAN_VARIABLE = "run/mean_image"
RunRecord = collections.namedtuple("RunRecord", "run mean_image prefix")


class RunLock:
    """An OS lock on the checkpoint and log folders for the run's life: one run writes them at a time.

    flock is released by the kernel however the process ends, kill -9 included, so a
    stale lock never blocks the next run. The file names the holder for the error message.
    """

    def __init__(self, folders):
        self.handles = []
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
            handle = open(os.path.join(folder, LOCK_FILE), "a+")
            self.handles.append(handle)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                raise UsageError(f"{folder} is in use by another training run ({describe_holder(handle.read())}): "
                                 f"wait for it or stop it, or use another --checkpoint-dir and --logdir")
            handle.truncate(0)
            handle.write(f"{os.getpid()} {socket.gethostname()}\n")
            handle.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.close()  # closing the file releases its lock


def describe_holder(text):
    pid, _, host = text.strip().partition(" ")
    if not pid.isdigit():
        return "its PID unknown"
    return f"PID {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


def clean_leftovers(checkpoint_dir, data_dir):
    """Remove what killed or failed runs left behind. Called with the run's lock held, so none is in use:
    TensorFlow's half-written checkpoint files (up to 1.2 GB each) and data files whose index was never
    written, its state file's temporaries, our own temporary files, and dataset caches whose writer is gone."""
    removed, freed = 0, 0
    for folder in (checkpoint_dir, os.path.join(checkpoint_dir, SNAPSHOT_DIR)):
        count, size = sweep_leftovers(folder)
        removed, freed = removed + count, freed + size
    caches = imf.clean_cache_leftovers(data_dir)
    if removed or caches:
        print(f"Removed what an interrupted run left: {removed} temporary file(s) ({imf.human_bytes(freed)}) "
              f"and {caches} half-written dataset cache(s)")


def sweep_leftovers(folder):
    """Remove one folder's leftovers of failed saves and writes; returns ``(files removed, bytes freed)``."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    removed, freed = 0, 0
    for name in names:
        # TensorFlow writes a checkpoint's index last: data without its index is a save cut short.
        data = re.fullmatch(r"(.+)\.data-\d+-of-\d+", name)
        if ".tempstate" in name or re.fullmatch(rf"{STATE_FILE}\.tmp[0-9a-f]{{32}}", name) \
                or imf.is_temporary_name(name) or (data and f"{data.group(1)}.index" not in names):
            path = os.path.join(folder, name)
            freed += os.path.getsize(path)
            os.remove(path)
            removed += 1
    return removed, freed


def find_checkpoints(checkpoint_dir):
    """``[(step, prefix)]`` of the full checkpoints whose index file is on disk, newest first.

    TensorFlow writes the index last, so a checkpoint still being written is not listed.
    """
    found = []
    for name in os.listdir(checkpoint_dir) if os.path.isdir(checkpoint_dir) else []:
        match = re.fullmatch(rf"{re.escape(CHECKPOINT_NAME)}-(\d+)\.index", name)
        if match:
            found.append((int(match.group(1)), os.path.join(checkpoint_dir, name[:-len(".index")])))
    return sorted(found, reverse=True)


def is_run(value):
    return isinstance(value, dict) and all(isinstance(value.get(key), kind) and not isinstance(value.get(key), bool)
                                           for key, kind in RUN_KEYS.items())


def read_run_file(checkpoint_dir):
    """``(run.json as a dict, None)``, or ``(None, what is wrong with it)``."""
    path = os.path.join(checkpoint_dir, RUN_FILE)
    if not os.path.exists(path):
        return None, "missing"
    value = imf.read_json(path)
    if value is None:
        return None, "not JSON"
    if not is_run(value):
        return None, f"not a run description (it needs {', '.join(RUN_KEYS)})"
    return {key: value[key] for key in RUN_KEYS}, None


def read_run(checkpoint_dir):
    """run.json as a dict, or None when it is missing or unreadable."""
    return read_run_file(checkpoint_dir)[0]


def read_mean_file(checkpoint_dir, image_size):
    """``(mean_image.npy, None)``, or ``(None, what is wrong with it)``."""
    path = os.path.join(checkpoint_dir, MEAN_FILE)
    if not os.path.exists(path):
        return None, "missing"
    try:
        mean_image = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None, "not a numpy array"
    if mean_image.shape != (image_size, image_size, 3) or not np.isfinite(mean_image).all():
        return None, f"not a {image_size}x{image_size} RGB mean image (shape {mean_image.shape})"
    return mean_image.astype(np.float32), None


def checkpoint_record(prefix):
    """What a checkpoint records of its run: a RunRecord, or None for one written before it did.

    Raises OpError, ValueError or OSError when the checkpoint cannot be read.
    """
    reader = tf.train.load_checkpoint(prefix)
    if not reader.has_tensor(RUN_JSON_VARIABLE):
        return None
    run = json.loads(reader.get_tensor(RUN_JSON_VARIABLE).decode())
    return RunRecord(run, reader.get_tensor(RUN_MEAN_VARIABLE), prefix) if is_run(run) else None


def newest_record(checkpoints):
    """The RunRecord of the newest readable checkpoint that has one, or None."""
    for _, prefix in checkpoints:
        try:
            record = checkpoint_record(prefix)
        except (tf.errors.OpError, ValueError, IndexError, OSError):  # IndexError: a short data file
            continue
        if record:
            return record
    return None


def recorded_run(checkpoint_dir, checkpoints):
    """The run this folder holds, or None for a new folder.

    A checkpoint's own record is the truth; run.json is its readable copy, recovered
    with one warning when missing, unreadable or different. Checkpoints that record
    nothing (written by an earlier version) need run.json, or the folder is refused:
    never a new random seed in silence.
    """
    path = os.path.join(checkpoint_dir, RUN_FILE)
    from_file, problem = read_run_file(checkpoint_dir)
    record = newest_record(checkpoints)
    if record and record.run != from_file:
        print(f"Warning: {path} is {problem or 'not what the checkpoints record'}: continuing the run "
              f"{os.path.basename(record.prefix)} records (seed {record.run['seed']}) and rewriting it",
              file=sys.stderr)
        return record.run
    if from_file is None and checkpoints:
        raise UsageError(f"{checkpoint_dir} holds checkpoints, but {path} is {problem} and they do not record "
                         f"their run's settings: put its run.json back, or use another --checkpoint-dir")
    if from_file is None and problem != "missing":
        print(f"Warning: ignoring {path} ({problem}): there is no checkpoint to continue", file=sys.stderr)
    return from_file


def load_run(checkpoint_dir):
    """``(run, mean_image)`` of a checkpoint folder, for the scripts that read one (filter_gif, predict).

    run.json and mean_image.npy first; either missing or unreadable is recovered from
    the newest readable checkpoint. Raises UsageError, naming the file, when neither can be had.
    """
    run, run_problem = read_run_file(checkpoint_dir)
    mean_image, mean_problem = read_mean_file(checkpoint_dir, run["image_size"]) if run else (None, None)
    if run is not None and mean_image is not None:
        return run, mean_image
    record = newest_record(find_checkpoints(checkpoint_dir))
    if record is None:
        name, problem = (RUN_FILE, run_problem) if run is None else (MEAN_FILE, mean_problem)
        raise UsageError(f"{os.path.join(checkpoint_dir, name)} is {problem}, and no checkpoint in {checkpoint_dir} "
                         f"records it: not a training checkpoint folder?")
    return record.run, record.mean_image


def write_run(checkpoint_dir, run, mean_image):
    """What inference needs beside the checkpoints: classes, image size, the mean image; rewritten only when
    they differ, each under a temporary name and renamed."""
    os.makedirs(checkpoint_dir, exist_ok=True)
    if read_run(checkpoint_dir) != run:
        imf.write_json_atomically(os.path.join(checkpoint_dir, RUN_FILE), run)
    recorded_mean, _ = read_mean_file(checkpoint_dir, run["image_size"])
    if recorded_mean is None or not np.array_equal(recorded_mean, mean_image):
        imf.write_npy_atomically(os.path.join(checkpoint_dir, MEAN_FILE), mean_image)


def check_same_run(previous, run, checkpoint_dir):
    """A resumed run must be the same run: the seed and batch size fix the data order, the rest the graph."""
    for key in RUN_KEYS:
        if key in run and previous[key] != run[key]:
            raise UsageError(f"{checkpoint_dir} holds a run with {key} {previous[key]}, not {run[key]}: "
                             f"use the same settings or another --checkpoint-dir")


def run_variables(run, mean_image):
    """The run's settings and mean image as variables, so every full checkpoint records them."""
    with tf.device("/cpu:0"):  # a string variable has no GPU kernel
        return [v1.Variable(json.dumps(run, sort_keys=True), trainable=False, name=RUN_JSON_VARIABLE),
                v1.Variable(mean_image, trainable=False, name=RUN_MEAN_VARIABLE)]


def restore_latest(session, saver, checkpoint_dir, checkpoints=None):
    """Restore the newest readable full checkpoint; returns its path, or None if there is none.

    Checkpoints are found from their files (the state file is only a hint); an
    unreadable one falls back to the one before, with a warning. One whose shapes do
    not fit this graph belongs to another run's settings: a UsageError.
    """
    checkpoints = find_checkpoints(checkpoint_dir) if checkpoints is None else checkpoints
    # Earlier runs' checkpoints count towards --keep-checkpoints, so they get deleted in turn.
    saver.recover_last_checkpoints([prefix for _, prefix in reversed(checkpoints)])
    graph_variables = {variable.op.name: variable
                       for variable in session.graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)}
    for _, prefix in checkpoints:
        try:
            shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
            check_shapes(prefix, shapes, graph_variables)
            # Checkpoints of earlier versions lack the run's variables: restore what they have. (In its
            # graph: outside it a Saver would try to restore eagerly, which TF1 variables cannot.)
            with session.graph.as_default():
                v1.train.Saver({name: variable for name, variable in graph_variables.items() if name in shapes},
                               name="restore").restore(session, prefix)
            return prefix
        except (tf.errors.OpError, ValueError, IndexError, OSError) as error:
            print(f"Warning: checkpoint {prefix} is unreadable ({type(error).__name__}); trying the one before",
                  file=sys.stderr)
    if checkpoints:
        raise imf.DataError(f"no readable checkpoint in {checkpoint_dir}; move it aside to start afresh")
    return None


def check_shapes(prefix, shapes, graph_variables):
    for name, variable in graph_variables.items():
        if name.startswith("run/"):
            continue
        if name not in shapes:
            raise UsageError(f"checkpoint {prefix} lacks {name}: it is not this tutorial's graph; "
                             f"use another --checkpoint-dir")
        if shapes[name] != variable.shape.as_list():
            raise UsageError(f"checkpoint {prefix} holds {name} of shape {shapes[name]}, but this run's graph needs "
                             f"{variable.shape.as_list()}: it was trained with other settings (its run.json says "
                             f"which); use them or another --checkpoint-dir")


def sync_state_file(checkpoint_dir, checkpoints):
    """Rewrite TensorFlow's state file from the checkpoints on disk when it is missing or says otherwise."""
    path = os.path.join(checkpoint_dir, STATE_FILE)
    names = [os.path.basename(prefix) for _, prefix in reversed(checkpoints)]
    try:
        state = tf.train.get_checkpoint_state(checkpoint_dir)
        hinted = (os.path.basename(state.model_checkpoint_path),
                  [os.path.basename(p) for p in state.all_model_checkpoint_paths]) if state else None
    except Exception:  # noqa: BLE001 -- a garbled text proto raises parse errors of several kinds
        hinted = "garbled"
    if not names or hinted == (names[-1], names):
        return
    if hinted is None:
        why = "missing"
    elif hinted == "garbled":
        why = "garbled"
    else:
        why = f"naming {hinted[0]} and {len(hinted[1])} checkpoint(s) of the {len(names)} on disk"
    print(f"Warning: {path} was {why}; rebuilt it from the checkpoints on disk, newest {names[-1]} (to go back "
          f"to an earlier checkpoint, move the later ones aside)", file=sys.stderr)
    lines = [f'model_checkpoint_path: "{names[-1]}"'] + [f'all_model_checkpoint_paths: "{name}"' for name in names]
    imf.write_bytes_atomically(path, ("\n".join(lines) + "\n").encode())


def drop_snapshots_after(checkpoint_dir, step):
    """Filter snapshots past the restored step belong to steps being trained again; they would mix two
    timelines in the GIFs, so they go (retaken as training passes those steps)."""
    folder = os.path.join(checkpoint_dir, SNAPSHOT_DIR)
    dropped = set()
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        match = re.fullmatch(rf"{SNAPSHOT_NAME}-(\d+)\.(index|data-\d+-of-\d+)", name)
        if match and int(match.group(1)) > step:
            os.remove(os.path.join(folder, name))
            dropped.add(int(match.group(1)))
    if dropped:
        print(f"Removed {len(dropped)} filter snapshot(s) after step {step}, taken after the last checkpoint of "
              f"the interrupted run; they are retaken as training repeats those steps")


class Stopped(Exception):
    """SIGTERM or SIGINT before the training loop: there is nothing to save yet."""


def stop_at_once(number, frame):
    raise Stopped(number)


class Interrupted:
    """Turns SIGTERM and SIGINT into a flag the training loop checks after each step."""

    def __init__(self):
        self.signal = None
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self.catch)

    def catch(self, number, frame):
        self.signal = number


class Diverged(Exception):
    """The loss or the weights stopped being finite numbers: nothing after this is worth saving."""


# --------------------------------------------------------------------------- 6. training

class StepProgress:
    """One self-overwriting line per epoch: step, loss, accuracy, images/s."""

    def __init__(self, epoch, steps):
        self.epoch, self.steps, self.started = epoch, steps, time.monotonic()
        self.images = 0

    def update(self, step, loss, accuracy, batch):
        self.images += batch
        rate = self.images / max(time.monotonic() - self.started, 1e-6)
        filled = int(20 * step / self.steps)
        sys.stderr.write(f"\rEpoch {self.epoch} [{'#' * filled}{'.' * (20 - filled)}] step {step}/{self.steps} "
                         f"loss {loss:.4f} accuracy {accuracy:.3f} {rate:.1f} images/s")
        sys.stderr.flush()

    def close(self):
        """End the line, so what is printed next stands on a line of its own."""
        sys.stderr.write("\n")
        sys.stderr.flush()


def epoch_order(seed, epoch, count):
    """The training order of one epoch, the same whenever that epoch is (re)run."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def evaluate(session, model, images, labels, batch_size):
    """Accuracy over a whole set, in batches, without dropout."""
    correct = 0.0
    for start in range(0, len(images), batch_size):
        batch_accuracy = session.run(model["accuracy"], {
            model["X"]: images[start:start + batch_size], model["Y_"]: labels[start:start + batch_size],
            model["keepRate1"]: 1.0, model["keepRate2"]: 1.0})
        correct += batch_accuracy * len(images[start:start + batch_size])
    return correct / max(len(images), 1)


class Checkpointer:
    """Full checkpoints by the clock (and every N epochs if asked), never of non-finite weights."""

    def __init__(self, args, session, saver, model):
        self.args, self.session, self.saver = args, session, saver
        self.minutes = args.checkpoint_minutes
        self.last_save = time.monotonic()
        self.saved_step = self.saved_path = None
        with model["graph"].as_default(), tf.name_scope("finite_check"):
            trainable = model["graph"].get_collection(v1.GraphKeys.TRAINABLE_VARIABLES)
            self.all_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in trainable])
        self.bytes = sum(v.shape.num_elements() * v.dtype.size
                         for v in model["graph"].get_collection(v1.GraphKeys.GLOBAL_VARIABLES))

    def check_finite(self, step):
        if not self.session.run(self.all_finite):
            raise Diverged(f"the weights are no longer finite numbers at global step {step}")

    def last_saved(self):
        if self.saved_path is None:
            return "no checkpoint was saved"
        return f"the last checkpoint, {self.saved_path}, holds the weights from before"

    def due(self):
        return self.minutes > 0 and time.monotonic() - self.last_save >= 60 * self.minutes

    def save(self, step):
        """Write ``model.ckpt-<step>``; a full disk is one line naming the folder and the size needed."""
        if step == self.saved_step:
            return
        self.check_finite(step)
        with saving("a checkpoint", self.args.checkpoint_dir, self.bytes):
            path = self.saver.save(self.session, os.path.join(self.args.checkpoint_dir, CHECKPOINT_NAME),
                                   global_step=step, write_meta_graph=False)
        self.saved_step, self.saved_path, self.last_save = step, path, time.monotonic()
        print(f"Saved checkpoint {path}", flush=True)


def train(args, dataset, model, run, checkpoints):
    """Open the session, restore the latest checkpoint if any, and train. Returns the exit status."""
    graph = model["graph"]
    with graph.as_default():
        run_variables(run, dataset.mean_image)
        # Relative paths in the state file keep the folder valid when moved or mounted elsewhere.
        saver = v1.train.Saver(max_to_keep=args.keep_checkpoints, save_relative_paths=True, name="full_saver")
        snapshot_saver = v1.train.Saver(snapshot_variables(graph), max_to_keep=None, name="snapshot_saver")
        with v1.Session(config=session_config()) as session:
            session.run(v1.global_variables_initializer())
            restored = restore_latest(session, saver, args.checkpoint_dir, checkpoints)
            step = int(session.run(model["global_step"]))
            # The run's description is written only now that the graph is built and any restore worked.
            write_run(args.checkpoint_dir, run, dataset.mean_image)
            checkpointer = Checkpointer(args, session, saver, model)
            train_writer = v1.summary.FileWriter(os.path.join(args.logdir, "train"), graph)
            test_writer = v1.summary.FileWriter(os.path.join(args.logdir, "test"))
            snapshots = Snapshots(session, snapshot_saver, args.checkpoint_dir,
                                  ProbeMaps(model, probe_image(args, dataset)), train_writer)
            with train_writer, test_writer:
                drop_snapshots_after(args.checkpoint_dir, step)
                if restored:
                    sync_state_file(args.checkpoint_dir, checkpoints)
                    checkpointer.saved_step, checkpointer.saved_path = step, restored
                    steps_per_epoch = math.ceil(len(dataset.train_x) / args.batch_size)
                    print(f"Resumed from {restored} at global step {step} (epoch {step // steps_per_epoch + 1})")
                    # TensorBoard drops what the interrupted run logged after the restored step (it purges
                    # events from the START's step on): the curves show one timeline, not two.
                    for writer in (train_writer, test_writer):
                        writer.add_session_log(v1.SessionLog(status=v1.SessionLog.START), step + 1)
                else:
                    snapshots.take(step)
                try:
                    return run_epochs(args, dataset, model, run["seed"], session, step, checkpointer, snapshots,
                                      train_writer, test_writer)
                except Diverged as error:
                    sys.stderr.write("\n")  # end the progress line
                    raise Diverged(f"{error} (a --learning-rate too high for the data, here {args.learning_rate:g}, "
                                   f"is the usual cause); {checkpointer.last_saved()}") from None


class Snapshots:
    """The conv layers' weights for filter_gif.py, and the probe image's feature maps for TensorBoard,
    taken on the same steps."""

    def __init__(self, session, saver, checkpoint_dir, probe, train_writer):
        self.session, self.saver, self.checkpoint_dir = session, saver, checkpoint_dir
        self.probe, self.train_writer = probe, train_writer

    def take(self, step):
        save_snapshot(self.session, self.saver, self.checkpoint_dir, step)
        self.train_writer.add_summary(self.probe.summary(self.session), step)


def run_epochs(args, dataset, model, seed, session, step, checkpointer, snapshots, train_writer, test_writer):
    """The tutorial's loop from global step ``step`` up to ``--epochs``; stops cleanly on a signal."""
    steps_per_epoch = math.ceil(len(dataset.train_x) / args.batch_size)
    summary_rng = np.random.default_rng([seed, step])
    interrupted = Interrupted()
    for epoch in range(step // steps_per_epoch, args.epochs):
        order = epoch_order(seed, epoch, len(dataset.train_x))
        progress = StepProgress(epoch + 1, steps_per_epoch)
        measured_accuracies = []
        for batch_index in range(step - epoch * steps_per_epoch, steps_per_epoch):
            picked = order[batch_index * args.batch_size:(batch_index + 1) * args.batch_size]
            feed = {model["X"]: dataset.train_x[picked], model["Y_"]: dataset.train_y[picked],
                    model["keepRate1"]: args.keep_conv, model["keepRate2"]: args.keep_fc}
            if (step + 1) % args.summary_every == 0:
                measured_accuracies.append(write_train_summary(session, model, feed, train_writer, step + 1))
                write_test_summary(session, model, dataset, test_writer, step + 1, summary_rng)
            # The progress line shows the update's own forward pass, dropout on.
            trained = run_checked(session, {"update": model["train_step"], "loss": model["loss"],
                                            "accuracy": model["accuracy"]}, feed, step + 1)
            step += 1
            progress.update(batch_index + 1, trained["loss"], trained["accuracy"], len(picked))
            if step % args.snapshot_every == 0:
                checkpointer.check_finite(step)  # a snapshot of NaN weights would blank every GIF frame
                snapshots.take(step)
            if interrupted.signal:
                progress.close()
                print(f"Stopping on {signal.Signals(interrupted.signal).name} at global step {step}")
                checkpointer.save(step)
                return 128 + interrupted.signal
            if checkpointer.due():
                progress.close()
                checkpointer.save(step)
        progress.close()
        print(f"Epoch number {epoch + 1} Training Accuracy: " + (
            f"{np.mean(measured_accuracies):.4f}" if measured_accuracies else "n/a (no summary step in this epoch)"))
        test_accuracy = evaluate(session, model, dataset.test_x, dataset.test_y, max(args.batch_size, 50))
        print(f"Test Set Accuracy: {test_accuracy:.4f}", flush=True)
        if args.checkpoint_every and (epoch + 1) % args.checkpoint_every == 0:
            checkpointer.save(step)
    checkpointer.save(step)
    if step % args.snapshot_every:
        snapshots.take(step)
    print(f"Training finished: {args.epochs} epochs, global step {step}")
    return 0


def run_checked(session, fetches, feed, step):
    """``session.run`` of a dict of fetches; a loss or a summary that is no longer a finite number is Diverged."""
    try:
        values = session.run(fetches, feed)
    except tf.errors.InvalidArgumentError as error:
        if "Nan in summary histogram" in error.message:
            raise Diverged(f"the weights became NaN by global step {step}") from None
        raise
    if not math.isfinite(values["loss"]):
        raise Diverged(f"the loss became {values['loss']} at global step {step}")
    return values


def write_train_summary(session, model, feed, train_writer, step):
    """The train run's summaries as the notebook measures them: the step's batch with dropout off, before
    its update. Returns the batch's accuracy, which the epoch's Training Accuracy averages."""
    measured = run_checked(session, {"summary": model["summaries"], "accuracy": model["accuracy"],
                                     "loss": model["loss"]}, {**feed, model["keepRate1"]: 1.0, model["keepRate2"]: 1.0},
                           step)
    train_writer.add_summary(measured["summary"], step)
    return measured["accuracy"]


def write_test_summary(session, model, dataset, test_writer, step, rng):
    """The test run's summaries on 10 random test images, without dropout."""
    picked = rng.choice(len(dataset.test_x), size=min(10, len(dataset.test_x)), replace=False)
    summary = session.run(model["test_summaries"], {
        model["X"]: dataset.test_x[picked], model["Y_"]: dataset.test_y[picked],
        model["keepRate1"]: 1.0, model["keepRate2"]: 1.0})
    test_writer.add_summary(summary, step)


def save_snapshot(session, snapshot_saver, checkpoint_dir, step):
    folder = os.path.join(checkpoint_dir, SNAPSHOT_DIR)
    snapshot_bytes = 4 * sum(9 * cin * cout + cout for _, _, cin, cout in CONV_LAYERS)  # float32 weights, biases
    with saving("a filter snapshot", folder, snapshot_bytes):
        snapshot_saver.save(session, os.path.join(folder, SNAPSHOT_NAME), global_step=step,
                            write_meta_graph=False, write_state=False)


@contextlib.contextmanager
def saving(what, folder, needed_bytes):
    """A Saver's failure as one line: a full disk names the folder and the size, its half-written file removed."""
    try:
        yield
    except tf.errors.OpError as error:
        sweep_leftovers(folder)  # a half-written checkpoint (1.2 GB at 224 px) would keep the disk full
        if "No space left on device" in error.message or "Disk quota exceeded" in error.message:
            raise imf.disk_full(folder, needed_bytes, what) from None
        raise imf.DataError(f"cannot save {what} in {folder}: {error.message.splitlines()[0]}") from None


# --------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # Saver's deprecation notice is not news to a TF1 tutorial
    # Until the loop takes over, a stop ends the run at once: downloads resume, writes are atomic.
    # (As PID 1 in a container, python would otherwise ignore docker stop's SIGTERM here.)
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop_at_once)
    print(describe_devices(), flush=True)
    try:
        with RunLock([args.checkpoint_dir, args.logdir]):
            return run_the_tutorial(args)
    except Stopped as stop:
        print(f"Stopped by {signal.Signals(stop.args[0]).name} before training began; nothing to save")
        return 128 + stop.args[0]
    except UsageError as error:
        print_error(error)
        return 2
    except Diverged as error:
        print_error(f"training diverged: {error}")
        return 1
    except (imf.DataError, ValueError) as error:
        print_error(error)
        return 1


def run_the_tutorial(args):
    """The tutorial's steps in order, in a checkpoint folder this process holds: data, demos, graph, training."""
    clean_leftovers(args.checkpoint_dir, args.data_dir)
    checkpoints = find_checkpoints(args.checkpoint_dir)
    previous = recorded_run(args.checkpoint_dir, checkpoints)
    seed = args.seed if args.seed is not None else (previous or {}).get("seed")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] & MAX_SEED)
    run = {"classes": args.classes, "image_size": args.image_size, "batch_size": args.batch_size, "seed": seed}
    if previous and checkpoints:
        check_same_run(previous, run, args.checkpoint_dir)  # before the data: settings known now fail fast
    warn_if_short_of_space(args)
    dataset = prepare_data(args)
    if not args.skip_demos:
        for figure in (*demo_convolution(demo_image(args), args.figures_dir), demo_pooling(args.figures_dir)):
            print(f"Wrote {figure.path}")
    run = {"classes": dataset.classLabels, "image_size": args.image_size, "batch_size": args.batch_size,
           "train_images": len(dataset.train_x), "seed": seed}
    if previous and checkpoints:
        check_same_run(previous, run, args.checkpoint_dir)
    print(f"Training on {len(dataset.train_x)} images, testing on {len(dataset.test_x)}: "
          f"{', '.join(dataset.classLabels)} at {args.image_size}px, seed {seed}", flush=True)
    model = build_graph(args.image_size, dataset.classes, args.learning_rate, seed)
    return train(args, dataset, model, run, checkpoints)


def warn_if_short_of_space(args):
    """A run that will not have room for its checkpoints says so before hours of training, not after."""
    checkpoint_bytes = 3 * 4 * (fc1_inputs(args.image_size) * FC_UNITS)  # weights and Adam's two slots
    free = shutil.disk_usage(args.checkpoint_dir).free
    if free < checkpoint_bytes:
        print(f"Warning: {args.checkpoint_dir} has {imf.human_bytes(free)} free, and a checkpoint takes "
              f"{imf.human_bytes(checkpoint_bytes)}: saving may fail with a full disk", file=sys.stderr)


def print_error(error):
    """The one line a user sees for a failure we foresaw, in argparse's form."""
    message = " ".join(str(error).split())
    print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
