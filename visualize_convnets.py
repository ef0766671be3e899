"""Visualizing Convnets: the tutorial's 4-conv-layer CNN, Shiba Inu vs Samoyed, in TF1 graph code.

The article's steps, in its order, each a section of this file:
  1. the data: the Oxford-IIIT Pet images through imFunctions (download, extract, sort, build);
  2. how convolution and pooling work: two demos through placeholders and a Session, written
     as figures (the notebook's four 7x7 filters on a grey image; max pooling, SAME vs VALID);
  3. the convnet: placeholders X, Y_, keepRate1, keepRate2, name scopes conv1_1 ... softmax;
  4. loss, optimiser and accuracy: cross-entropy, Adam, the share of right answers;
  5. the TensorBoard summaries: Loss, Accuracy, the conv1_1 filters, a probe image's feature maps;
  6. training: the loop, with full checkpoints and filter snapshots (for filter_gif.py);
  7. evaluation: the test set's accuracy after every epoch.

The run's folder (one run at a time, resumed from the checkpoints on disk, saved by the clock)
is run_folder.py; filter_gif.py turns the snapshots into GIFs, predict.py classifies images.

    python visualize_convnets.py                       # the tutorial's defaults
    python visualize_convnets.py --image-size 64 --epochs 5
    tensorboard --logdir logs
"""
import math
import os
import signal
import sys

import numpy as np

import architecture
import augmentation
import cli
import drawing
import files
import imFunctions as imf
import pretrained
import resources
import run_folder
import tf_start
import tensorflow as tf
from progress import Progress

v1 = tf.compat.v1

POOLING_INPUT = [[1, 3, 2, 9], [7, 4, 1, 5], [8, 5, 2, 3], [4, 2, 1, 4]]  # the article's 4x4 example
STEP_PROGRESS = "{desc} |{bar:20}| step {n_fmt}/{total_fmt}{postfix} [{elapsed}<{remaining}]"


# --------------------------------------------------------------------------- the settings

def build_parser():
    """Every setting of a run, with the tutorial's values as defaults."""
    parser = cli.OneLineParser(description=__doc__.split("\n")[0], formatter_class=cli.DefaultsHelpFormatter,
                               epilog="Offline, or behind a slow link: OXFORD_PETS_URL=http://host:port points the "
                                      "download at a mirror of the dataset (README: Offline).")
    parser.add_argument("--classes", nargs="+", default=["shiba_inu", "samoyed"],
                        help="breeds to tell apart (any case, with or without underscores)")
    parser.add_argument("--epochs", type=int, default=400, help="total epochs; a resumed run continues up to it")
    parser.add_argument("--batch-size", type=int, default=10, help="images per training step")
    parser.add_argument("--learning-rate", type=float, default=1e-5, help="Adam's learning rate")
    parser.add_argument("--keep-conv", type=float, default=0.2,
                        help="dropout keep rate after each pool (keepRate1); it does not apply inside VGG16's blocks "
                             "(--pretrained), which ImageNet trained without dropout")
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
    parser.add_argument("--mixed-precision", nargs="?", const="auto", default=None,
                        choices=("auto", "float16", "bfloat16"),
                        help="compute in 16 bits, the weights kept in float32 (the tutorial computes in float32): "
                             "TensorFlow's graph rewrite for the hardware (auto: float16 with loss scaling on a GPU "
                             "with tensor cores, bfloat16 on a CPU with AVX512_BF16 or AMX, else float32 and a "
                             "warning); a run may resume with or without it")
    parser.add_argument("--augment", nargs="?", const=",".join(augmentation.NAMES), default=None,
                        metavar="flip,crop,rotate", help=augmentation.HELP.replace("%", "%%"))  # argparse's format
    parser.add_argument("--network", default=None, metavar="FILE",
                        help="a JSON description of another network to train (architecture.py says its form; "
                             "default: the resumed run's, else the tutorial's)")
    parser.add_argument("--pretrained", default=None, choices=architecture.PRETRAINED,
                        help="the article's advice for small datasets: VGG16's 13 conv layers with Keras's ImageNet "
                             "weights, the tutorial's fc1 and softmax on top; images prepared as VGG16 expects (BGR, "
                             "ImageNet's channel means). The weights are downloaded by Keras into its cache, or "
                             "read from --pretrained-weights; a resumed run reads them from its checkpoint")
    parser.add_argument("--pretrained-weights", default=None, metavar="FILE",
                        help=f"a local copy of Keras's {pretrained.PUBLISHED_FILE} (or the same weights in Keras 3's "
                             f"format), for a machine without internet")
    parser.add_argument("--fine-tune-from", default=None, metavar="LAYER",
                        help="with --pretrained the conv layers are frozen (only fc1 and the softmax learn); this "
                             "conv layer (e.g. conv5_1) and those above it learn too. A run may resume with or "
                             "without it: train the head, then resume fine-tuning")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"seeds numpy and the graph, 0..{run_folder.MAX_SEED} (default: the resumed run's, "
                             f"else a random one, saved for resuming)")
    parser.add_argument("--data-dir", default="data", help="downloads, extracted and sorted images, cache")
    parser.add_argument("--logdir", default="logs", help="TensorBoard event files (train/ and test/)")
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="checkpoints and filter snapshots")
    parser.add_argument("--figures-dir", default="figures", help="where the two demos write their figures")
    parser.add_argument("--skip-demos", action="store_true", help="do not run the convolution and pooling demos")
    return parser


def parse_args(argv=None):
    return cli.parse_checked(build_parser(), validate, argv)


def validate(args):
    """Every check that needs no data, so bad input stops the run before it writes anything."""
    cli.require_at_least_one(args, ("epochs", "batch_size", "image_size", "summary_every", "snapshot_every",
                                    "checkpoint_every", "keep_checkpoints"))
    if not 0 < args.test_fraction < 1:
        raise cli.UsageError(f"--test-fraction must be between 0 and 1 (exclusive), got {args.test_fraction}")
    for name in ("keep_conv", "keep_fc"):
        if not 0 < getattr(args, name) <= 1:
            raise cli.UsageError(f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(args, name)}")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise cli.UsageError(f"--learning-rate must be a finite positive number, got {args.learning_rate}")
    if not (math.isfinite(args.checkpoint_minutes) and args.checkpoint_minutes >= 0):
        raise cli.UsageError(f"--checkpoint-minutes must be 0 or more, got {args.checkpoint_minutes}")
    if args.seed is not None and not 0 <= args.seed <= run_folder.MAX_SEED:
        raise cli.UsageError(f"--seed must be in 0..{run_folder.MAX_SEED}, got {args.seed}")
    try:
        args.classes = imf.resolve_classes(args.classes, imf.known_breeds(args.data_dir))
    except ValueError as error:
        raise cli.UsageError(str(error))
    args.augment = augmentation_names(args.augment, args.image_size)
    args.network = read_network(args.network)
    args.pretrained_params = pretrained_choice(args)
    if args.probe_image and imf.load_image(args.probe_image, 16) is None:
        raise cli.UsageError(f"cannot read --probe-image {cli.shown(args.probe_image)}: "
                             f"{imf.image_problem(args.probe_image) or 'not an image, or damaged'}")
    check_memory(args.image_size, args.batch_size, imf.expected_image_count(args.classes, args.data_dir),
                 args.network or architecture.TUTORIAL)
    for folder in [args.data_dir, args.logdir, args.checkpoint_dir] + ([] if args.skip_demos else [args.figures_dir]):
        resources.check_writable(folder)


def augmentation_names(text, image_size):
    """--augment's augmentations (None: the tutorial's unaugmented training)."""
    if text is None:
        return None
    try:
        names = augmentation.parse(text)
    except ValueError as error:
        raise cli.UsageError(str(error))
    if image_size < augmentation.SMALLEST_SIDE:
        raise cli.UsageError(f"--augment needs an --image-size of at least {augmentation.SMALLEST_SIDE}, got "
                             f"{image_size}")
    return names


def read_network(path):
    """--network's description, or None: the resumed run's network, else the tutorial's."""
    if path is None:
        return None
    if not os.path.isfile(path):
        raise cli.UsageError(f"cannot use --network {cli.shown(path)}: no such file")
    record = files.read_json(path)
    try:
        if record is None:
            raise ValueError("not JSON")
        return architecture.from_record(record)
    except ValueError as error:
        raise cli.UsageError(f"cannot use --network {cli.shown(path)}: {error}")


def pretrained_choice(args):
    """Checks --pretrained, --pretrained-weights and --fine-tune-from, sets the network of --pretrained, and
    returns the weights of a local --pretrained-weights file (None: none given), read before anything is
    written."""
    if args.pretrained is None:
        if args.pretrained_weights:
            raise cli.UsageError("--pretrained-weights needs --pretrained vgg16")
        return None  # --fine-tune-from is checked against the resumed run's network (fine_tune_layer)
    if args.network is not None:
        raise cli.UsageError("--pretrained and --network each choose the network: give one")
    args.network = architecture.PRETRAINED_NETWORKS[args.pretrained]
    fine_tune_layer(args.fine_tune_from, args.network)
    return pretrained.load(args.pretrained_weights, args.pretrained) if args.pretrained_weights else None


def fine_tune_layer(layer, network):
    """--fine-tune-from checked against the network: one of a pretrained network's conv layers."""
    if layer is None:
        return None
    if network.pretrained is None:
        raise cli.UsageError(f"--fine-tune-from applies to a pretrained network (--pretrained); the {network.name} "
                             f"network trains every layer")
    if layer not in network.conv_layers:
        raise cli.UsageError(f"--fine-tune-from {layer!r} names no conv layer of {network.name}; choose one of "
                             f"{', '.join(network.conv_layers)}")
    return layer


def check_memory(image_size, batch_size, n_images, network, available=None):
    """Refuse, naming the figures, a run that cannot fit in this machine's memory."""
    parts = resources.memory_estimate(image_size ** 2, batch_size, n_images, network.weight_count(image_size),
                                      network.activations_per_pixel())
    resources.check_memory(parts, f"--image-size {image_size} with --batch-size {batch_size}", available)


# --------------------------------------------------------------------------- 1. the data

def prepare_data(classes, image_size, test_fraction, data_dir):
    """The tutorial's data cells through imFunctions, each stage skipped when already done."""
    for filename in ("annotations.tar.gz", "images.tar.gz"):
        if not imf.is_extracted(filename, data_dir):
            imf.downloadImages(filename, imf.expected_size(filename), data_dir=data_dir)
            imf.maybeExtract(filename, data_dir=data_dir)
    imf.sortImages(test_fraction, data_dir=data_dir)
    return imf.loadDataset(classes, image_size, data_dir)


def prepared_for(network, dataset):
    """The dataset as ``network`` takes its images. imFunctions centres them by the training mean image, the
    tutorial's preparation; another (VGG16's) is applied to the photos that centring came from, in place
    (the mean image is still recorded with the run)."""
    if network.preparation == architecture.CENTRED:
        return dataset
    for images in (dataset.train_x, dataset.test_x):
        images += dataset.mean_image
        images[...] = network.prepare(images, dataset.mean_image)
    return dataset


# --------------------------------------------------------------------------- 2. how convolution and pooling work

def demo_image(data_dir, breed, size=224):
    """The first readable training image of ``breed``, at the tutorial's size."""
    folder = os.path.join(data_dir, "train", breed)
    for name in sorted(os.listdir(folder)):
        image = imf.load_image(os.path.join(folder, name), size)
        if image is not None:
            return image
    raise imf.DataError(f"no readable image in {folder} for the demos")


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
    return [drawing.save_panels({"grey input": grey, **{name: outputs[..., k] for k, name in enumerate(names)}},
                                os.path.join(figures_dir, "convolution_demo.png")),
            drawing.save_panels({name: filters[:, :, 0, k] for k, name in enumerate(names)},
                                os.path.join(figures_dir, "convolution_filters.png"), cell=28, numbers=True)]


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
    return drawing.save_panels(panels, os.path.join(figures_dir, "pooling_demo.png"), cell=56, numbers=True,
                               shared_scale=True)


def demo_augmentation(image, names, seed, figures_dir):
    """The article's remedy for overfitting, seen: one training photo and eight augmented versions of it, as
    --augment draws them for the training step (augment_demo.png)."""
    graph = tf.Graph()
    with graph.as_default():
        photos = v1.placeholder(tf.float32, [None, *image.shape], name="photos")
        drawn = augmentation.augmented(photos, names, tf.constant([seed, 0], tf.int64))
        with v1.Session(graph=graph) as session:
            versions = session.run(drawn, {photos: np.repeat(image[None].astype(np.float32), 8, axis=0)})
    tiles = np.concatenate([image[None], np.uint8(np.clip(np.rint(versions), 0, 255))])
    path = os.path.join(figures_dir, "augment_demo.png")
    drawing.write_png(path, drawing.titled(drawing.tile_grid(tiles, 1, columns=3),
                                           f"the photo, then 8 draws of --augment {','.join(names)}"))
    return drawing.Figure(path, {"photo": image}, {})


# --------------------------------------------------------------------------- 3. the convnet

def conv_stack(images, network, conv_params, keep_conv=None):
    """The network's conv and pool layers, in the tutorial conv1_1 ... pool2 (architecture.TUTORIAL); returns
    ``{layer: activations}`` and the last output.

    A conv layer is a 3x3 SAME convolution and a ReLU; a pool a 2x2 max pool at stride 2, then dropout
    when ``keep_conv`` (keepRate1) is given. ``conv_params(layer, kernel_shape)`` gives a conv layer's
    weights and biases; it is called inside the layer's name scope, so training creates its variables
    there and filter_gif.py passes snapshot values instead.
    """
    layers = {}
    output = images
    for layer in network.layers:
        with tf.name_scope(layer.name):
            if layer.kind == architecture.CONV:
                weights, biases = conv_params(layer.name, network.kernel_shape(layer.name))
                convolved = tf.nn.conv2d(output, weights, strides=[1, 1, 1, 1], padding="SAME", name="conv")
                output = layers[layer.name] = tf.nn.relu(tf.nn.bias_add(convolved, biases), name="relu")
            else:
                output = layers[layer.name] = tf.nn.max_pool2d(output, 2, 2, "SAME", name="max_pool")
                if keep_conv is not None and network.pool_dropout:
                    output = tf.nn.dropout(output, rate=1.0 - keep_conv, name="dropout")
    return layers, output


def new_conv_variables(layer, kernel_shape):
    """The tutorial's initialisation: truncated normal weights (stddev 0.1), zero biases."""
    weights_name, biases_name = architecture.variable_names(layer)
    weights = tf.Variable(v1.truncated_normal(kernel_shape, stddev=0.1), name=weights_name)
    biases = tf.Variable(tf.zeros([kernel_shape[-1]]), name=biases_name)
    return weights, biases


def pretrained_conv_variables(trained_layers, initial_values):
    """conv_stack's ``conv_params`` for a pretrained network: variables initialised from placeholders (kept in
    ``initial_values`` by layer), which a new run feeds with the pretrained weights when it initialises (their
    default, zeros, serves a run that restores them instead); trainable in ``trained_layers`` alone, so Adam
    keeps no slots for the frozen ones."""
    def make(layer, kernel_shape):
        variables = []
        for name, shape in zip(architecture.variable_names(layer), (kernel_shape, kernel_shape[-1:])):
            initial = v1.placeholder_with_default(tf.zeros(shape), shape, name=f"pretrained_{name}")
            variables.append(tf.Variable(initial, trainable=layer in trained_layers, name=name))
            initial_values.setdefault(layer, []).append(initial)
        return tuple(variables)
    return make


def build_convnet(image_size, n_classes, network=architecture.TUTORIAL, augment=None, mean_image=None,
                  fine_tune_from=None):
    """The placeholders and the network, conv1_1 ... softmax; returns a dict of its tensors by name.

    With ``augment`` (--augment's names) the training step's batch is augmented between X and the
    first conv layer (augmentation.py): X is fed prepared, ``mean_image`` restores the photos. A
    pretrained network's conv layers are frozen but from ``fine_tune_from`` on; ``initial_values`` holds
    the placeholders its pretrained weights are fed to.
    """
    X = v1.placeholder(tf.float32, [None, *network.input_shape(image_size)], name="X")
    Y_ = v1.placeholder(tf.float32, [None, n_classes], name="Y_")
    keepRate1 = v1.placeholder(tf.float32, [], name="keepRate1")
    keepRate2 = v1.placeholder(tf.float32, [], name="keepRate2")
    inputs, augmenting, augment_seed = X, None, None
    if augment:
        inputs, augmenting, augment_seed = augmentation.training_inputs(X, network, mean_image, augment)
    initial_values = {}
    conv_params = new_conv_variables if network.pretrained is None else \
        pretrained_conv_variables(network.trained_layers(fine_tune_from), initial_values)
    layers, pooled = conv_stack(inputs, network, conv_params, keep_conv=keepRate1)
    with tf.name_scope("fc1"):
        flat_size, units = network.fc1_inputs(image_size), network.fc_units
        weights3_1 = tf.Variable(v1.truncated_normal([flat_size, units], stddev=0.1), name="weights3_1")
        biases3_1 = tf.Variable(tf.ones([units]), name="biases3_1")
        flat = tf.reshape(pooled, [-1, flat_size], name="flatten")
        fc1 = tf.nn.relu(tf.matmul(flat, weights3_1) + biases3_1, name="relu")
        fc1_drop = tf.nn.dropout(fc1, rate=1.0 - keepRate2, name="dropout")
    with tf.name_scope("softmax"):
        weights3_2 = tf.Variable(v1.truncated_normal([units, n_classes], stddev=0.1), name="weights3_2")
        biases3_2 = tf.Variable(tf.ones([n_classes]), name="biases3_2")
        logits = tf.add(tf.matmul(fc1_drop, weights3_2), biases3_2, name="logits")
        Y = tf.nn.softmax(logits, name="Y")
    return dict(X=X, Y_=Y_, keepRate1=keepRate1, keepRate2=keepRate2, layers=layers, logits=logits, Y=Y,
                inputs=inputs, augmenting=augmenting, augment_seed=augment_seed, initial_values=initial_values)


def build_graph(image_size, n_classes, learning_rate=1e-5, seed=None, precision=tf_start.FLOAT32,
                network=architecture.TUTORIAL, augment=None, mean_image=None, fine_tune_from=None):
    """The tutorial's graph in a new tf.Graph: the convnet (``network``'s layers), its loss, optimiser and
    accuracy, and the summaries; returns a dict of its tensors and ops by name.

    The graph is the same in every ``precision`` (a Session's rewrite casts it, tf_start.session_config),
    but for the loss scaling that float16 needs.
    """
    graph = tf.Graph()
    with graph.as_default():
        if seed is not None:
            v1.set_random_seed(seed)
        model = build_convnet(image_size, n_classes, network, augment, mean_image, fine_tune_from)
        loss, accuracy = loss_and_accuracy(model["logits"], model["Y"], model["Y_"])
        global_step = v1.train.get_or_create_global_step()
        train_step, loss_scale = optimiser(loss, learning_rate, global_step,
                                           loss_scaling=precision in tf_start.LOSS_SCALED)
        filter1_1 = conv_variable(graph, network.first_conv, architecture.variable_names(network.first_conv)[0])
        summaries, test_summaries = build_summaries(loss, accuracy, filter1_1, network.first_conv)
    return dict(model, graph=graph, loss=loss, accuracy=accuracy, global_step=global_step, train_step=train_step,
                summaries=summaries, test_summaries=test_summaries, filter1_1=filter1_1, precision=precision,
                loss_scale=loss_scale, network=network, trained_layers=network.trained_layers(fine_tune_from))


def conv_variable(graph, scope, name):
    """The tf.Variable ``scope/name`` of ``graph`` (a variable, not its resource handle)."""
    wanted = f"{scope}/{name}"
    return next(variable for variable in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)
                if variable.op.name == wanted)


def snapshot_variables(graph, network, layers=None):
    """The conv layers' weights and biases (of ``layers``, default all): all a conv feature map needs."""
    return [conv_variable(graph, layer, name) for layer in (network.conv_layers if layers is None else layers)
            for name in architecture.variable_names(layer)]


def conv_slots(graph, network):
    """Adam's moments of the conv layers: a checkpoint of a segment that froze a layer has none for it."""
    scopes = tuple(f"{layer}/" for layer in network.conv_layers)
    return [variable for variable in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)
            if variable.op.name.startswith(scopes) and "/Adam" in variable.op.name]


# --------------------------------------------------------------------------- 4. loss, optimiser and accuracy

def loss_and_accuracy(logits, Y, Y_):
    """The mean cross-entropy against the one-hot labels, and the share of images whose likeliest class is
    their label."""
    with tf.name_scope("cross_entropy"):
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=Y_, logits=logits), name="loss")
    with tf.name_scope("accuracy"):
        correct = tf.equal(tf.argmax(Y, 1), tf.argmax(Y_, 1), name="correct")
        accuracy = tf.reduce_mean(tf.cast(correct, tf.float32), name="accuracy")
    return loss, accuracy


def optimiser(loss, learning_rate, global_step, loss_scaling=False):
    """Adam on the loss: the training step, which also counts the global step, and the loss scale's variables
    (none but with ``loss_scaling``: float16, --mixed-precision on a GPU, tf_start.minimize_loss_scaled)."""
    with tf.name_scope("train"):
        adam = v1.train.AdamOptimizer(learning_rate)
        if loss_scaling:
            return tf_start.minimize_loss_scaled(adam, loss, global_step)
        return adam.minimize(loss, global_step=global_step, name="adam"), []


# --------------------------------------------------------------------------- 5. the TensorBoard summaries

def build_summaries(loss, accuracy, weights1_1, first_layer="conv1_1"):
    """The train run's merged summaries (Loss, Accuracy, the weights1_1 histogram, a picture of the 32
    conv1_1 filters: the first layer's, whatever the network) and the test run's (Loss and Accuracy: the
    weights are the same for both runs).

    Raw summary ops take their tag as given: ``tf.summary.scalar("Accuracy")`` would be
    renamed ``Accuracy_1``, since graph names are unique regardless of case and the
    tutorial's ``accuracy`` scope holds the name.
    """
    with tf.name_scope("summaries"):
        scalars = [tf.raw_ops.ScalarSummary(tags="Loss", values=loss, name="loss"),
                   tf.raw_ops.ScalarSummary(tags="Accuracy", values=accuracy, name="accuracy")]
        histogram = architecture.variable_names(first_layer)[0]
        weights = [tf.raw_ops.HistogramSummary(tag=histogram, values=weights1_1, name=histogram),
                   tf.raw_ops.ImageSummary(tag=f"{first_layer}_filters", tensor=filter_grid(weights1_1),
                                           max_images=1, name=f"{first_layer}_filters")]
        return v1.summary.merge(scalars + weights, name="train"), v1.summary.merge(scalars, name="test")


def filter_grid(weights, zoom=8):
    """[3, 3, 3, n] kernels as one [1, H, W, 3] image: a grid of rows x n/rows (4 x 8 for 32), 1 px gaps,
    zoomed."""
    n = weights.shape[-1]
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    low, high = tf.reduce_min(weights), tf.reduce_max(weights)
    scaled = (weights - low) / tf.maximum(high - low, 1e-8)
    kernels = tf.pad(tf.transpose(scaled, [3, 0, 1, 2]), [[0, 0], [0, 1], [0, 1], [0, 0]])
    columns = n // rows
    grid = tf.reshape(tf.transpose(tf.reshape(kernels, [rows, columns, 4, 4, 3]), [0, 2, 1, 3, 4]),
                      [1, rows * 4, columns * 4, 3])
    return tf.image.resize(grid, [rows * 4 * zoom, columns * 4 * zoom], method="nearest")


class ProbeMaps:
    """One fixed image's feature maps in the network's feature layers (the tutorial's conv1_2 and conv2_2), as
    TensorBoard images on snapshot steps: TensorBoard's step slider then plays what filter_gif.py animates."""

    def __init__(self, model, image):
        self.layers = model["network"].views["features"]
        self.fetches = {layer: model["layers"][layer] for layer in self.layers}
        self.feed = {model["X"]: image[None], model["keepRate1"]: 1.0, model["keepRate2"]: 1.0}

    def summary(self, session):
        maps = session.run(self.fetches, self.feed)
        return v1.Summary(value=[image_summary_value(f"feature_maps/{layer}", drawing.feature_grid(maps[layer][0]))
                                 for layer in self.layers])


def image_summary_value(tag, grey):
    """A TensorBoard image under exactly ``tag`` (an ImageSummary op would add "/image" to it)."""
    return v1.Summary.Value(tag=tag, image=v1.Summary.Image(height=grey.shape[0], width=grey.shape[1], colorspace=1,
                                                            encoded_image_string=drawing.encode_png(grey)))


def probe_image(probe_path, image_size, dataset, network):
    """The image whose feature maps go to TensorBoard, prepared as training's: --probe-image, else the first
    test image of the first class."""
    if probe_path:
        picture = imf.load_image(probe_path, image_size)
        if picture is None:
            raise cli.UsageError(f"cannot read --probe-image {probe_path}")
        return network.prepare(picture.astype(np.float32), dataset.mean_image)
    first_class = np.flatnonzero(dataset.test_y[:, 0]) if len(dataset.test_x) else []
    return dataset.test_x[first_class[0]] if len(first_class) else dataset.train_x[0]


def write_train_summary(session, model, feed, train_writer, step):
    """The train run's summaries as the notebook measures them: the step's batch with dropout off, before
    its update. Returns the batch's accuracy, which the epoch's Training Accuracy averages."""
    measured = run_checked(session, {"summary": model["summaries"], "accuracy": model["accuracy"],
                                     "loss": model["loss"]}, {**feed, model["keepRate1"]: 1.0, model["keepRate2"]: 1.0},
                           step)
    run_folder.add_summary(train_writer, measured["summary"], step)
    return measured["accuracy"]


def write_test_summary(session, model, dataset, test_writer, step, rng):
    """The test run's summaries on 10 random test images, without dropout."""
    picked = rng.choice(len(dataset.test_x), size=min(10, len(dataset.test_x)), replace=False)
    summary = session.run(model["test_summaries"], {
        model["X"]: dataset.test_x[picked], model["Y_"]: dataset.test_y[picked],
        model["keepRate1"]: 1.0, model["keepRate2"]: 1.0})
    run_folder.add_summary(test_writer, summary, step)


def take_snapshot(session, folder, probe, train_writer, step, first=False):
    """The conv layers' weights for filter_gif.py, and the probe image's feature maps for TensorBoard. The
    run's first snapshot holds every conv layer; the later ones the layers that train (with a pretrained
    network), the frozen ones read from the first."""
    folder.save_snapshot(session, step, first)
    run_folder.add_summary(train_writer, probe.summary(session), step)


# --------------------------------------------------------------------------- 6. training

def train(args, dataset, model, run, folder, pretrained_params=None):
    """Open the session, resume from the latest checkpoint if any, and train. Returns the exit status.
    ``pretrained_params``: a pretrained network's weights for a new run (a resumed one restores them)."""
    graph, network = model["graph"], model["network"]
    with graph.as_default():
        snapshot_layers = layers_ever_trained(network, model["trained_layers"], args.checkpoint_dir)
        # With every layer frozen a snapshot holds the step alone (a Saver needs a variable): still a GIF frame.
        snapshot = snapshot_variables(graph, network, snapshot_layers) or [model["global_step"]]
        folder.attach(graph, run, dataset.mean_image, snapshot,
                      args.keep_checkpoints, args.checkpoint_minutes,
                      segment=segment(model["precision"], args.augment, args.fine_tune_from),
                      optional_variables=model["loss_scale"] + conv_slots(graph, network),
                      first_snapshot_variables=snapshot_variables(graph, network))
        with v1.Session(config=tf_start.session_config(model["precision"])) as session:
            session.run(v1.global_variables_initializer(), pretrained_feed(model, pretrained_params))
            restored, step = folder.resume(session)
            train_writer = v1.summary.FileWriter(os.path.join(args.logdir, "train"), graph)
            test_writer = v1.summary.FileWriter(os.path.join(args.logdir, "test"))
            probe = ProbeMaps(model, probe_image(args.probe_image, args.image_size, dataset, model["network"]))
            with train_writer, test_writer:
                if restored:
                    steps_per_epoch = math.ceil(len(dataset.train_x) / args.batch_size)
                    print(f"Resumed from {restored} at global step {step} (epoch {step // steps_per_epoch + 1})")
                    # TensorBoard drops what the interrupted run logged after the restored step (it purges
                    # events from the START's step on): the curves show one timeline, not two.
                    for writer in (train_writer, test_writer):
                        writer.add_session_log(v1.SessionLog(status=v1.SessionLog.START), step + 1)
                else:
                    take_snapshot(session, folder, probe, train_writer, step, first=True)
                try:
                    return run_epochs(args, dataset, model, run["seed"], session, step, folder, probe,
                                      train_writer, test_writer)
                except run_folder.Diverged as error:
                    raise run_folder.Diverged(f"{error} (a --learning-rate too high for the data, here "
                                              f"{args.learning_rate:g}, is the usual cause); "
                                              f"{folder.last_saved()}") from None


def segment(precision, augment, fine_tune_from=None):
    """What this process's part of the run computes in, how it augments and which pretrained layers it
    fine-tunes: recorded from the step it resumes at, since a run may resume with or without
    --mixed-precision, --augment and --fine-tune-from."""
    return {"precision": precision, **({"augment": augment} if augment else {}),
            **({"fine_tune_from": fine_tune_from} if fine_tune_from else {})}


def layers_ever_trained(network, trained_layers, checkpoint_dir):
    """The conv layers a snapshot holds: those this segment trains and those an earlier one did (run.json's
    segments), so a layer missing from a snapshot is always at its first snapshot's value."""
    trained = set(trained_layers)
    for earlier in run_folder.read_segments(checkpoint_dir):
        trained.update(network.trained_layers(earlier.get("fine_tune_from")))
    return [layer for layer in network.conv_layers if layer in trained]


def pretrained_feed(model, params):
    """The feed that initialises a pretrained network's conv variables with its weights (none: the variables
    get zeros, and a checkpoint restores them)."""
    if not params:
        return {}
    return {initial: value for layer, initials in model["initial_values"].items()
            for initial, value in zip(initials, params[layer])}


def epoch_order(seed, epoch, count):
    """The training order of one epoch, the same whenever that epoch is (re)run."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def run_epochs(args, dataset, model, seed, session, step, folder, probe, train_writer, test_writer):
    """The tutorial's loop from global step ``step`` up to ``--epochs``; stops cleanly on a signal."""
    steps_per_epoch = math.ceil(len(dataset.train_x) / args.batch_size)
    summary_rng = np.random.default_rng([seed, step])
    interrupted = cli.Interrupted()
    for epoch in range(step // steps_per_epoch, args.epochs):
        order = epoch_order(seed, epoch, len(dataset.train_x))
        first = step - epoch * steps_per_epoch
        measured_accuracies = []
        with Progress(total=steps_per_epoch, initial=first, desc=f"Epoch {epoch + 1}", unit="step",
                      bar_format=STEP_PROGRESS) as progress:
            for batch_index in range(first, steps_per_epoch):
                picked = order[batch_index * args.batch_size:(batch_index + 1) * args.batch_size]
                feed = {model["X"]: dataset.train_x[picked], model["Y_"]: dataset.train_y[picked],
                        model["keepRate1"]: args.keep_conv, model["keepRate2"]: args.keep_fc}
                if (step + 1) % args.summary_every == 0:
                    measured_accuracies.append(write_train_summary(session, model, feed, train_writer, step + 1))
                    write_test_summary(session, model, dataset, test_writer, step + 1, summary_rng)
                # The progress line shows the update's own forward pass, dropout on (and augmented, with --augment).
                trained = run_checked(session, {"update": model["train_step"], "loss": model["loss"],
                                                "accuracy": model["accuracy"]},
                                      {**feed, **augmenting(model, seed, step)}, step + 1)
                step += 1
                show_step(progress, trained, len(picked) * (batch_index + 1 - first))
                if step % args.snapshot_every == 0:
                    take_snapshot(session, folder, probe, train_writer, step)
                if interrupted.signal:
                    progress.close()
                    print(f"Stopping on {signal.Signals(interrupted.signal).name} at global step {step}")
                    folder.save_checkpoint(session, step)
                    return 128 + interrupted.signal
                if folder.checkpoint_due():
                    progress.clear()  # the "Saved checkpoint" line on a line of its own
                    folder.save_checkpoint(session, step)
                    progress.refresh()
        print(f"Epoch number {epoch + 1} Training Accuracy: " + (
            f"{np.mean(measured_accuracies):.4f}" if measured_accuracies else "n/a (no summary step in this epoch)"))
        test_accuracy = evaluate(session, model, dataset.test_x, dataset.test_y, max(args.batch_size, 50))
        print(f"Test Set Accuracy: {test_accuracy:.4f}", flush=True)
        if args.checkpoint_every and (epoch + 1) % args.checkpoint_every == 0:
            folder.save_checkpoint(session, step)
    folder.save_checkpoint(session, step)
    if step % args.snapshot_every:
        take_snapshot(session, folder, probe, train_writer, step)
    print(f"Training finished: {args.epochs} epochs, global step {step}")
    return 0


def augmenting(model, seed, step):
    """The feed that augments the training step's batch (none without --augment): drawn from the run's seed and
    the global step, so a resumed run augments each step as a run that went through did."""
    if model["augmenting"] is None:
        return {}
    return {model["augmenting"]: True, model["augment_seed"]: [seed, step]}


def show_step(progress, trained, images):
    """The progress line: the step, its loss and accuracy, and the images a second this epoch so far."""
    rate = images / max(progress.format_dict["elapsed"], 1e-6)
    progress.set_postfix_str(f"loss {trained['loss']:.4f} accuracy {trained['accuracy']:.3f} {rate:.1f} images/s",
                             refresh=False)
    progress.update(1)


def run_checked(session, fetches, feed, step):
    """``session.run`` of a dict of fetches; a loss or a summary that is no longer a finite number is Diverged."""
    try:
        values = session.run(fetches, feed)
    except tf.errors.InvalidArgumentError as error:
        if "Nan in summary histogram" in error.message:
            raise run_folder.Diverged(f"the weights became NaN by global step {step}") from None
        raise
    if not math.isfinite(values["loss"]):
        raise run_folder.Diverged(f"the loss became {values['loss']} at global step {step}")
    return values


# --------------------------------------------------------------------------- 7. evaluation

def evaluate(session, model, images, labels, batch_size):
    """Accuracy over a whole set, in batches, without dropout."""
    correct = 0.0
    for start in range(0, len(images), batch_size):
        batch_accuracy = session.run(model["accuracy"], {
            model["X"]: images[start:start + batch_size], model["Y_"]: labels[start:start + batch_size],
            model["keepRate1"]: 1.0, model["keepRate2"]: 1.0})
        correct += batch_accuracy * len(images[start:start + batch_size])
    return correct / max(len(images), 1)


# --------------------------------------------------------------------------- running the tutorial

@cli.entry_point
def main(argv=None):
    args = parse_args(argv)
    with cli.signal_handlers_restored():  # called from a notebook, the kernel keeps its own
        return train_and_evaluate(args)


def train_and_evaluate(args):
    """The whole run for parsed ``args``, a stop or a failure turned into one line; returns the exit status."""
    tf_start.quiet_python_logs()
    # Until the loop takes over, a stop ends the run at once: downloads resume, writes are atomic.
    cli.stop_on_signals()
    print(tf_start.describe_devices(), flush=True)
    try:
        with run_folder.RunFolder(args.checkpoint_dir, args.logdir, args.data_dir) as folder:
            return run_the_tutorial(args, folder)
    except cli.Stopped as stop:
        print(f"Stopped by {stop.name} before training began; nothing to save")
        return stop.exit_status
    except run_folder.Diverged as error:
        cli.print_error(f"training diverged: {error}")
        return cli.EXIT_FAILURE
    except (cli.UsageError, cli.Failure) as error:
        return cli.report(error)
    except ValueError as error:
        cli.print_error(error)
        return cli.EXIT_FAILURE
    except OSError as error:  # a folder that went missing or is not ours to read, named in one line
        return cli.report(cli.os_failure(error))


def run_the_tutorial(args, folder):
    """The article's steps in order, in a run folder this process holds: the data, the demos, the convnet
    with its loss, optimiser and summaries, then training and evaluation."""
    run = folder.start(args.classes, args.image_size, args.batch_size, args.seed, args.network)
    network = architecture.of_run(run)
    fine_tune_layer(args.fine_tune_from, network)
    pretrained_params = args.pretrained_params  # read from --pretrained-weights as the flags were checked
    if network.pretrained and not folder.checkpoints and pretrained_params is None:
        print(f"Reading Keras's ImageNet weights for {network.name} (downloaded once into Keras's cache)", flush=True)
        pretrained_params = pretrained.load(None, network.pretrained)
    resources.warn_if_short_of_space(args.checkpoint_dir,
                                     3 * 4 * network.weight_count(args.image_size, len(args.classes)),
                                     "a checkpoint")  # the weights and Adam's two slots
    dataset = prepared_for(network, prepare_data(args.classes, args.image_size, args.test_fraction, args.data_dir))
    if not args.skip_demos:
        image = demo_image(args.data_dir, args.classes[0])
        with files.writing_into(args.figures_dir):  # what a killed run left there is swept first
            figures = [*demo_convolution(image, args.figures_dir), demo_pooling(args.figures_dir)]
            if args.augment:
                figures.append(demo_augmentation(image, args.augment, run["seed"], args.figures_dir))
            for figure in figures:
                print(f"Wrote {figure.path}")
    run = dict(run, classes=dataset.classLabels, train_images=len(dataset.train_x))
    print(f"Training on {len(dataset.train_x)} images, testing on {len(dataset.test_x)}: "
          f"{', '.join(dataset.classLabels)} at {args.image_size}px, seed {run['seed']}", flush=True)
    precision = tf_start.choose_precision(args.mixed_precision)
    if tf_start.precision_line(precision):
        print(tf_start.precision_line(precision), flush=True)
    if args.augment:
        print(f"Augmenting the training batches: {', '.join(args.augment)}", flush=True)
    if network.pretrained:
        trained = network.trained_layers(args.fine_tune_from)
        print(f"Pretrained {network.name}: " + (f"fine-tuning {', '.join(trained)}, the other conv layers frozen"
                                                if trained else "its conv layers frozen, fc1 and the softmax learn"),
              flush=True)
    model = build_graph(args.image_size, dataset.classes, args.learning_rate, run["seed"], precision, network,
                        args.augment, dataset.mean_image, args.fine_tune_from)
    return train(args, dataset, model, run, folder, pretrained_params)


if __name__ == "__main__":
    cli.guard_streams()
    sys.exit(main())
