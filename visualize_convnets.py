"""Visualizing Convnets: the tutorial's 4-conv-layer CNN, Shiba Inu vs Samoyed, in TF1 graph code.

The tutorial's steps, in order:
  1. the data, through imFunctions: download, extract, sort, build (each skipped when done);
  2. two demos on the first training image, written as figures: a 7x7 four-filter
     convolution and SAME vs VALID max pooling, through placeholders and a Session;
  3. the graph: placeholders, name scopes conv1_1 ... softmax, dropout, Adam (tf.compat.v1);
  4. TensorBoard summaries (FileWriters <logdir>/train and <logdir>/test);
  5. the training loop: full Saver checkpoints each epoch and on SIGTERM/SIGINT (a run
     resumes from the latest), and small filter snapshots every --snapshot-every steps
     that filter_gif.py turns into GIFs.

    python visualize_convnets.py                       # the tutorial's defaults
    python visualize_convnets.py --image-size 64 --epochs 5
    tensorboard --logdir logs
"""
import argparse
import collections
import contextlib
import math
import os
import signal
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import imFunctions as imf


@contextlib.contextmanager
def native_stderr_held_back():
    """Hold back what native code writes to stderr; replay it only if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# TensorFlow's import logs a screenful of C++ start-up notes before its logging is set up;
# they would bury a one-line usage error. describe_devices() states what they hint at.
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


def build_parser():
    parser = OneLineParser(description=__doc__.split("\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--classes", nargs="+", default=["shiba_inu", "samoyed"],
                        help="breeds to tell apart (any case, with or without underscores)")
    parser.add_argument("--epochs", type=int, default=400, help="total epochs; a resumed run continues up to it")
    parser.add_argument("--batch-size", type=int, default=10, help="images per training step")
    parser.add_argument("--learning-rate", type=float, default=1e-5, help="Adam's learning rate")
    parser.add_argument("--keep-conv", type=float, default=0.2, help="dropout keep rate after each pool (keepRate1)")
    parser.add_argument("--keep-fc", type=float, default=0.5, help="dropout keep rate after fc1 (keepRate2)")
    parser.add_argument("--test-fraction", type=float, default=0.15, help="share of each breed held out for test")
    parser.add_argument("--image-size", type=int, default=224, help="side of the square images fed to the net")
    parser.add_argument("--summary-every", type=int, default=5, help="steps between TensorBoard summaries")
    parser.add_argument("--snapshot-every", type=int, default=50, help="steps between filter snapshots (for GIFs)")
    parser.add_argument("--checkpoint-every", type=int, default=1, help="epochs between full checkpoints")
    parser.add_argument("--keep-checkpoints", type=int, default=3, help="full checkpoints kept")
    parser.add_argument("--seed", type=int, default=None,
                        help="seeds numpy and the graph (default: a random one, saved for resuming)")
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
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")


def validate(args):
    """Every check that needs no data, so bad input stops the run before it writes anything."""
    require_at_least_one(args, ("epochs", "batch_size", "image_size", "summary_every", "snapshot_every",
                                "checkpoint_every", "keep_checkpoints"))
    if not 0 < args.test_fraction < 1:
        raise UsageError(f"--test-fraction must be between 0 and 1 (exclusive), got {args.test_fraction}")
    for name in ("keep_conv", "keep_fc"):
        if not 0 < getattr(args, name) <= 1:
            raise UsageError(f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(args, name)}")
    if not args.learning_rate > 0:
        raise UsageError(f"--learning-rate must be positive, got {args.learning_rate}")
    train_dir = os.path.join(args.data_dir, "train")
    known = sorted(os.listdir(train_dir)) if os.path.isdir(train_dir) else OXFORD_BREEDS
    try:
        args.classes = imf.resolve_classes(args.classes, known)
    except ValueError as error:
        raise UsageError(str(error))
    folders = [args.data_dir, args.logdir, args.checkpoint_dir]
    if not args.skip_demos:
        folders.append(args.figures_dir)
    for folder in folders:
        check_writable(folder)


def check_writable(folder):
    """A folder we can write into, or could create: its nearest existing ancestor decides."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {folder}: {existing} is not a writable folder")


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
    """A PIL image written as ``path`` through a temporary name beside it: never a half-written file."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        picture.save(temporary, format="PNG")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


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
            flat_size = pooled_size(image_size) ** 2 * CONV_LAYERS[-1][3]
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
        summaries = build_summaries(loss, accuracy, graph)
    return dict(graph=graph, X=X, Y_=Y_, keepRate1=keepRate1, keepRate2=keepRate2, layers=layers, Y=Y,
                loss=loss, accuracy=accuracy, global_step=global_step, train_step=train_step,
                summaries=summaries, filter1_1=conv_variable(graph, "conv1_1", "weights1_1"))


def conv_variable(graph, scope, name):
    """The tf.Variable ``scope/name`` of ``graph`` (a variable, not its resource handle)."""
    wanted = f"{scope}/{name}"
    return next(variable for variable in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)
                if variable.op.name == wanted)


def build_summaries(loss, accuracy, graph):
    """Loss, Accuracy, the weights1_1 histogram and a picture of the 32 conv1_1 filters, merged.

    Raw summary ops take their tag as given: ``tf.summary.scalar("Accuracy")`` would be
    renamed ``Accuracy_1``, since graph names are unique regardless of case and the
    tutorial's ``accuracy`` scope holds the name.
    """
    weights1_1 = conv_variable(graph, "conv1_1", "weights1_1")
    with tf.name_scope("summaries"):
        summaries = [
            tf.raw_ops.ScalarSummary(tags="Loss", values=loss, name="loss"),
            tf.raw_ops.ScalarSummary(tags="Accuracy", values=accuracy, name="accuracy"),
            tf.raw_ops.HistogramSummary(tag="weights1_1", values=weights1_1, name="weights1_1"),
            tf.raw_ops.ImageSummary(tag="conv1_1_filters", tensor=filter_grid(weights1_1, rows=4),
                                    max_images=1, name="conv1_1_filters"),
        ]
        return v1.summary.merge(summaries, name="merged")


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


def snapshot_variables(graph):
    """The four conv layers' weights and biases: all a conv feature map needs."""
    return [conv_variable(graph, scope, f"{kind}{suffix}")
            for scope, suffix, _, _ in CONV_LAYERS for kind in ("weights", "biases")]


def session_config():
    config = v1.ConfigProto()
    config.gpu_options.allow_growth = True  # share the GPU with TensorBoard or a second run
    return config


def describe_devices():
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"Training on {len(gpus)} GPU(s): {', '.join(gpu.name for gpu in gpus)}"
    return "No GPU visible to TensorFlow: training on the CPU"


# --------------------------------------------------------------------------- 5. checkpoints

def read_run(checkpoint_dir):
    return imf.read_json(os.path.join(checkpoint_dir, RUN_FILE))


def write_run(checkpoint_dir, run, mean_image):
    """What inference needs beside the checkpoints: classes, image size, the mean image."""
    os.makedirs(os.path.join(checkpoint_dir, SNAPSHOT_DIR), exist_ok=True)
    temporary = os.path.join(checkpoint_dir, f".{MEAN_FILE}.tmp-{os.getpid()}.npy")
    np.save(temporary, mean_image)
    os.replace(temporary, os.path.join(checkpoint_dir, MEAN_FILE))
    imf.write_json_atomically(os.path.join(checkpoint_dir, RUN_FILE), run)


def check_same_run(previous, run, checkpoint_dir):
    for key in ("classes", "image_size", "batch_size", "train_images", "seed"):  # the seed fixes the data order
        if previous[key] != run[key]:
            raise UsageError(f"{checkpoint_dir} holds a run with {key} {previous[key]}, not {run[key]}: "
                             f"use the same settings or another --checkpoint-dir")


def restore_latest(session, saver, checkpoint_dir):
    """Restore the newest readable full checkpoint; returns its path, or None if there is none."""
    state = tf.train.get_checkpoint_state(checkpoint_dir)
    candidates = list(reversed(state.all_model_checkpoint_paths)) if state else []
    # Earlier runs' checkpoints count towards --keep-checkpoints, so they get deleted in turn.
    saver.recover_last_checkpoints(candidates[::-1])
    for path in candidates:
        try:
            saver.restore(session, path)
            return path
        except (tf.errors.OpError, ValueError) as error:
            print(f"Warning: checkpoint {path} is unreadable ({type(error).__name__}); trying the one before",
                  file=sys.stderr)
    if candidates:
        raise imf.DataError(f"no readable checkpoint in {checkpoint_dir}; move it aside to start afresh")
    return None


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


# --------------------------------------------------------------------------- 5. training

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


def train(args, dataset, model, seed):
    """Open the session, restore the latest checkpoint if any, and train. Returns the exit status."""
    with model["graph"].as_default():
        # Relative paths in the state file keep the folder valid when moved or mounted elsewhere.
        saver = v1.train.Saver(max_to_keep=args.keep_checkpoints, save_relative_paths=True, name="full_saver")
        snapshot_saver = v1.train.Saver(snapshot_variables(model["graph"]), max_to_keep=None, name="snapshot_saver")
        train_writer = v1.summary.FileWriter(os.path.join(args.logdir, "train"), model["graph"])
        test_writer = v1.summary.FileWriter(os.path.join(args.logdir, "test"))
        with v1.Session(config=session_config()) as session, train_writer, test_writer:
            session.run(v1.global_variables_initializer())
            restored = restore_latest(session, saver, args.checkpoint_dir)
            step = int(session.run(model["global_step"]))
            if restored:
                steps_per_epoch = math.ceil(len(dataset.train_x) / args.batch_size)
                print(f"Resumed from {restored} at global step {step} (epoch {step // steps_per_epoch + 1})")
            else:
                save_snapshot(session, snapshot_saver, args.checkpoint_dir, step)
            return run_epochs(args, dataset, model, seed, session, step,
                              saver, snapshot_saver, train_writer, test_writer)


def run_epochs(args, dataset, model, seed, session, step, saver, snapshot_saver, train_writer, test_writer):
    """The tutorial's loop from global step ``step`` up to ``--epochs``; stops cleanly on a signal."""
    steps_per_epoch = math.ceil(len(dataset.train_x) / args.batch_size)
    summary_rng = np.random.default_rng([seed, step])
    interrupted = Interrupted()
    for epoch in range(step // steps_per_epoch, args.epochs):
        order = epoch_order(seed, epoch, len(dataset.train_x))
        progress = StepProgress(epoch + 1, steps_per_epoch)
        accuracies = []
        for batch_index in range(step - epoch * steps_per_epoch, steps_per_epoch):
            picked = order[batch_index * args.batch_size:(batch_index + 1) * args.batch_size]
            feed = {model["X"]: dataset.train_x[picked], model["Y_"]: dataset.train_y[picked],
                    model["keepRate1"]: args.keep_conv, model["keepRate2"]: args.keep_fc}
            # Loss, accuracy and (on summary steps) the summaries come from the update's own forward pass.
            fetches = [model["train_step"], model["loss"], model["accuracy"]]
            summarise = (step + 1) % args.summary_every == 0
            if summarise:
                fetches.append(model["summaries"])
            _, loss, accuracy, *summary = session.run(fetches, feed)
            step += 1
            accuracies.append(accuracy)
            progress.update(batch_index + 1, loss, accuracy, len(picked))
            if summarise:
                train_writer.add_summary(summary[0], step)
                write_test_summary(session, model, dataset, test_writer, step, summary_rng)
            if step % args.snapshot_every == 0:
                save_snapshot(session, snapshot_saver, args.checkpoint_dir, step)
            if interrupted.signal:
                progress.close()
                print(f"Stopping on {signal.Signals(interrupted.signal).name} at global step {step}")
                save_checkpoint(session, saver, args.checkpoint_dir, step)
                return 128 + interrupted.signal
        progress.close()
        print(f"Epoch number {epoch + 1} Training Accuracy: {np.mean(accuracies):.4f}")
        test_accuracy = evaluate(session, model, dataset.test_x, dataset.test_y, max(args.batch_size, 50))
        print(f"Test Set Accuracy: {test_accuracy:.4f}", flush=True)
        if (epoch + 1) % args.checkpoint_every == 0 or epoch + 1 == args.epochs:
            save_checkpoint(session, saver, args.checkpoint_dir, step)
    print(f"Training finished: {args.epochs} epochs, global step {step}")
    return 0


def save_checkpoint(session, saver, checkpoint_dir, step):
    path = saver.save(session, os.path.join(checkpoint_dir, CHECKPOINT_NAME), global_step=step,
                      write_meta_graph=False)
    print(f"Saved checkpoint {path}", flush=True)


def write_test_summary(session, model, dataset, test_writer, step, rng):
    """The merged summaries on 10 random test images, without dropout."""
    picked = rng.choice(len(dataset.test_x), size=min(10, len(dataset.test_x)), replace=False)
    summary = session.run(model["summaries"], {
        model["X"]: dataset.test_x[picked], model["Y_"]: dataset.test_y[picked],
        model["keepRate1"]: 1.0, model["keepRate2"]: 1.0})
    test_writer.add_summary(summary, step)


def save_snapshot(session, snapshot_saver, checkpoint_dir, step):
    snapshot_saver.save(session, os.path.join(checkpoint_dir, SNAPSHOT_DIR, SNAPSHOT_NAME), global_step=step,
                        write_meta_graph=False, write_state=False)


# --------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # Saver's deprecation notice is not news to a TF1 tutorial
    # Until the loop takes over, a stop ends the run at once: downloads resume, caches are atomic.
    # (As PID 1 in a container, python would otherwise ignore docker stop's SIGTERM here.)
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop_at_once)
    print(describe_devices(), flush=True)
    try:
        dataset = prepare_data(args)
        if not args.skip_demos:
            for figure in (*demo_convolution(demo_image(args), args.figures_dir), demo_pooling(args.figures_dir)):
                print(f"Wrote {figure.path}")
        previous = read_run(args.checkpoint_dir)
        seed = args.seed if args.seed is not None else (previous or {}).get("seed")
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)
        run = {"classes": dataset.classLabels, "image_size": args.image_size, "batch_size": args.batch_size,
               "train_images": len(dataset.train_x), "seed": seed}
        if previous:
            check_same_run(previous, run, args.checkpoint_dir)
        else:
            write_run(args.checkpoint_dir, run, dataset.mean_image)
        print(f"Training on {len(dataset.train_x)} images, testing on {len(dataset.test_x)}: "
              f"{', '.join(dataset.classLabels)} at {args.image_size}px, seed {seed}", flush=True)
        model = build_graph(args.image_size, dataset.classes, args.learning_rate, seed)
        return train(args, dataset, model, seed)
    except Stopped as stop:
        print(f"Stopped by {signal.Signals(stop.args[0]).name} before training began; nothing to save")
        return 128 + stop.args[0]
    except UsageError as error:
        print_error(error)
        return 2
    except (imf.DataError, ValueError) as error:
        print_error(error)
        return 1


def print_error(error):
    """The one line a user sees for a failure we foresaw, in argparse's form."""
    print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
