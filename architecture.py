"""The network described once: its layers, the layers each view draws, how an image is prepared for it.

Training builds its graph from a description (visualize_convnets.build_convnet), records it with the
run (run.json and every full checkpoint, beside the run's other settings), and every reader rebuilds
the same network from that record: predict.py, filter_gif.py (filter GIFs, feature maps, Grad-CAM,
feature visualisation), TensorBoard's probe and the memory check. A run folder written before runs
recorded their network holds the tutorial's.

The tutorial's network, as the article draws it::

    X -> conv1_1 (32) -> conv1_2 (32) -> pool1 -> conv2_1 (64) -> conv2_2 (64) -> pool2 -> fc1 (512) -> softmax

Every conv layer is a 3x3 SAME convolution and a ReLU, its variables ``<layer>/weights<suffix>`` and
``<layer>/biases<suffix>`` (conv1_1's are ``conv1_1/weights1_1``, the article's ``filter1_1``); every
pool a 2x2 max pool at stride 2, followed in training by dropout at keepRate1. Another network is a
JSON file of the same form (``Network.record``), given to training with ``--network FILE``.
"""
import collections
import json
import math
import re

Layer = collections.namedtuple("Layer", "name kind channels")  # kind: CONV or POOL; a pool's channels are its input's

CONV, POOL = "conv", "pool"
CENTRED = "centred"  # an image is prepared by subtracting the training set's mean image
VGG16 = "vgg16"  # as Keras's VGG16 preprocess_input prepares it: RGB to BGR, minus ImageNet's channel means
PREPARATIONS = (CENTRED, VGG16)
IMAGENET_MEANS_BGR = (103.939, 116.779, 123.68)  # Keras's imagenet_utils, mode "caffe"
PRETRAINED = (VGG16,)  # the Keras applications whose trained weights a network can start from
INPUT_CHANNELS = 3  # RGB
LAYER_NAME = {CONV: re.compile(r"conv[0-9A-Za-z_]+"), POOL: re.compile(r"pool[0-9A-Za-z_]+")}
VIEWS = {
    "filters": "the conv layers whose kernels filter_gif.py animates by default",
    "features": "the layers whose feature maps an image's GIFs (filter_gif.py --image) and TensorBoard's probe show",
    "explained": "the conv layer Grad-CAM weighs",
}


class Network:
    """A convnet: conv and pool layers in order, then fc1 and a softmax, and the layers its views draw."""

    def __init__(self, name, layers, fc_units, views, preparation=CENTRED, pool_dropout=True, pretrained=None):
        self.name = name
        self.pretrained = pretrained  # the Keras application whose weights its conv layers start from, or None
        self.layers = tuple(Layer(*layer) for layer in layers)
        self.fc_units = fc_units
        self.views = dict(views)
        self.preparation = preparation
        self.pool_dropout = pool_dropout  # keepRate1 after each pool
        self.check()

    # ----------------------------------------------------------------- what it is

    @property
    def layer_names(self):
        return [layer.name for layer in self.layers]

    @property
    def conv_layers(self):
        return [layer.name for layer in self.layers if layer.kind == CONV]

    @property
    def first_conv(self):
        """The layer whose kernels see the RGB image: filter GIFs draw them in colour."""
        return self.conv_layers[0]

    def trained_layers(self, fine_tune_from=None):
        """The conv layers a training step changes: every one of a network trained from scratch; of a pretrained
        one, none (its conv layers frozen, the article's "learn only the last layer's weights") or
        ``fine_tune_from`` and those above it."""
        convs = self.conv_layers
        if self.pretrained is None:
            return convs
        return convs[convs.index(fine_tune_from):] if fine_tune_from else []

    def layer(self, name):
        return self.layers[self.layer_names.index(name)]

    def channels(self, name):
        """Channels of a layer's output (a pool keeps its input's)."""
        return self.shapes()[name][1]

    def input_channels(self, name):
        return self.shapes()[name][0]

    def shapes(self):
        """``{layer: (input channels, output channels)}``."""
        shapes, channels = {}, INPUT_CHANNELS
        for layer in self.layers:
            out = layer.channels if layer.kind == CONV else channels
            shapes[layer.name], channels = (channels, out), out
        return shapes

    def kernel_shape(self, name):
        """[3, 3, in, out] of a conv layer's weights."""
        return [3, 3, *self.shapes()[name]]

    def layer_input(self, name):
        """The layer before ``name``, or None for the first (its input is the image)."""
        index = self.layer_names.index(name)
        return self.layer_names[index - 1] if index else None

    # ----------------------------------------------------------------- sizes

    def pooled_size(self, image_size):
        """Side of the last layer's maps: each 2x2 SAME pool halves it, rounding up."""
        side = image_size
        for layer in self.layers:
            if layer.kind == POOL:
                side = math.ceil(side / 2)
        return side

    def fc1_inputs(self, image_size):
        """fc1's inputs: the last layer's output flattened."""
        return self.pooled_size(image_size) ** 2 * self.channels(self.layers[-1].name)

    def weight_count(self, image_size, n_classes=2):
        """The network's weights and biases. In the tutorial's fc1 holds nearly all of them: 102.76 M of
        102.83 M at 224 px (56 x 56 x 64 inputs to 512 units)."""
        conv = sum(math.prod(self.kernel_shape(name)) + self.channels(name) for name in self.conv_layers)
        return conv + (self.fc1_inputs(image_size) + 1) * self.fc_units + (self.fc_units + 1) * n_classes

    def activations_per_pixel(self):
        """Floats an image keeps for the backward pass, per input pixel: each layer's channels at its side's
        share of the image (the tutorial's: conv1_x at full size, pool1 and conv2_x at a quarter, pool2 at a
        sixteenth, 108 floats)."""
        total, share = 0.0, 1.0
        for layer in self.layers:
            if layer.kind == POOL:
                share /= 4
            total += self.channels(layer.name) * share
        return total

    def prepare(self, pictures, mean_image):
        """Pictures (numpy or TensorFlow, 0..255 RGB) as the network takes them: the training mean image
        subtracted, as training centred its data; for VGG16 as ImageNet training prepared them (Keras's
        preprocess_input: BGR, ImageNet's channel means subtracted), the mean image unused."""
        if self.preparation == VGG16:
            return pictures[..., ::-1] - IMAGENET_MEANS_BGR
        return pictures - mean_image

    def photos(self, inputs, mean_image):
        """Prepared inputs back as the photos they were made from (``prepare`` undone)."""
        if self.preparation == VGG16:
            return (inputs + IMAGENET_MEANS_BGR)[..., ::-1]
        return inputs + mean_image

    @staticmethod
    def input_shape(image_size):
        """An image as the network takes it, and the training mean image's shape."""
        return image_size, image_size, INPUT_CHANNELS

    # ----------------------------------------------------------------- the record

    def record(self):
        """The description as JSON-ready values: what a run records and ``--network`` reads."""
        record = {"name": self.name, "layers": [list(layer) for layer in self.layers], "fc_units": self.fc_units,
                  "views": self.views, "preparation": self.preparation, "pool_dropout": self.pool_dropout}
        # Only where set: the records of networks trained from scratch stay as runs before it wrote them.
        return {**record, "pretrained": self.pretrained} if self.pretrained else record

    def __eq__(self, other):
        return isinstance(other, Network) and self.record() == other.record()

    def __hash__(self):
        return hash(json.dumps(self.record(), sort_keys=True))

    def __repr__(self):
        return f"Network({self.name!r}: {' '.join(self.layer_names)})"

    def check(self):
        """ValueError, saying what is wrong, for a description no graph can be built from."""
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a network needs a name")
        if not self.layers or self.layers[0].kind != CONV:
            raise ValueError(f"network {self.name!r}: its first layer must be a conv layer")
        seen = set()
        for layer in self.layers:
            if layer.kind not in LAYER_NAME:
                raise ValueError(f"network {self.name!r}: layer {layer.name!r} is of kind {layer.kind!r}, not "
                                 f"{CONV!r} or {POOL!r}")
            if not isinstance(layer.name, str) or not LAYER_NAME[layer.kind].fullmatch(layer.name):
                raise ValueError(f"network {self.name!r}: a {layer.kind} layer's name is {layer.kind} followed by "
                                 f"letters, digits or _ (conv1_1, pool1), not {layer.name!r}")
            if layer.name in seen:
                raise ValueError(f"network {self.name!r}: two layers named {layer.name!r}")
            seen.add(layer.name)
            wanted_channels = layer.kind == CONV
            if wanted_channels != (type(layer.channels) is int and layer.channels > 0):
                raise ValueError(f"network {self.name!r}: layer {layer.name!r} needs "
                                 + ("a positive channel count" if wanted_channels else "null channels (a pool keeps "
                                    "its input's)") + f", not {layer.channels!r}")
        if type(self.fc_units) is not int or self.fc_units < 1:
            raise ValueError(f"network {self.name!r}: fc_units must be a positive integer, not {self.fc_units!r}")
        if self.preparation not in PREPARATIONS:
            raise ValueError(f"network {self.name!r}: preparation {self.preparation!r} is not one of "
                             f"{', '.join(PREPARATIONS)}")
        if self.pretrained is not None and self.pretrained not in PRETRAINED:
            raise ValueError(f"network {self.name!r}: pretrained {self.pretrained!r} is not one of "
                             f"{', '.join(PRETRAINED)}")
        self.check_views()

    def check_views(self):
        if set(self.views) != set(VIEWS):
            raise ValueError(f"network {self.name!r}: views must name exactly {', '.join(VIEWS)}")
        for view, allowed in (("filters", self.conv_layers), ("features", self.layer_names)):
            named = self.views[view]
            if not isinstance(named, list) or not named or any(name not in allowed for name in named):
                raise ValueError(f"network {self.name!r}: view {view!r} must list some of {', '.join(allowed)}, "
                                 f"not {named!r}")
        if self.views["explained"] not in self.conv_layers:
            raise ValueError(f"network {self.name!r}: view 'explained' must be one of its conv layers, not "
                             f"{self.views['explained']!r}")


def variable_names(layer):
    """``(weights, biases)``: a conv layer's variable names inside its scope, conv1_1's weights1_1 and biases1_1."""
    suffix = layer[len(CONV):]
    return f"weights{suffix}", f"biases{suffix}"


def checkpoint_names(layer):
    """``(weights, biases)`` of a conv layer as a checkpoint names them: ``conv1_1/weights1_1``."""
    return tuple(f"{layer}/{variable}" for variable in variable_names(layer))


def from_record(record):
    """The Network a run recorded, or ``--network`` gave; ValueError saying what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("a network description is a JSON object")
    missing = {"name", "layers", "fc_units", "views"} - set(record)
    unknown = set(record) - {"name", "layers", "fc_units", "views", "preparation", "pool_dropout", "pretrained"}
    if missing or unknown:
        raise ValueError("a network description needs name, layers, fc_units and views (and may have preparation, "
                         "pool_dropout and pretrained); " + (f"missing {', '.join(sorted(missing))}" if missing else
                                                   f"unknown {', '.join(sorted(unknown))}"))
    layers = record["layers"]
    if not isinstance(layers, list) or not all(isinstance(layer, list) and len(layer) == 3 for layer in layers):
        raise ValueError("a network's layers are a list of [name, kind, channels]")
    return Network(record["name"], layers, record["fc_units"], record["views"],
                   record.get("preparation", CENTRED), record.get("pool_dropout", True), record.get("pretrained"))


TUTORIAL = Network(
    "tutorial",
    layers=[("conv1_1", CONV, 32), ("conv1_2", CONV, 32), ("pool1", POOL, None),
            ("conv2_1", CONV, 64), ("conv2_2", CONV, 64), ("pool2", POOL, None)],
    fc_units=512,
    views={"filters": ["conv1_1", "conv1_2", "conv2_2"], "features": ["conv1_2", "conv2_2"], "explained": "conv2_2"})


def vgg16_layers():
    """VGG16's thirteen 3x3 conv layers in five blocks, each block closed by a 2x2 max pool."""
    layers = []
    for block, (convs, channels) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], start=1):
        layers += [(f"conv{block}_{index}", CONV, channels) for index in range(1, convs + 1)]
        layers.append((f"pool{block}", POOL, None))
    return layers


# VGG16's conv stack (Simonyan and Zisserman; Keras's keras.applications.VGG16 without its top), the tutorial's
# head on it. Keras's pools are VALID, these SAME: the same maps wherever a pool's input side is even (an
# --image-size that is a multiple of 32). No dropout inside VGG's blocks: ImageNet training had none there.
VGG16_NETWORK = Network(
    "vgg16", layers=vgg16_layers(), fc_units=512,
    views={"filters": ["conv1_1", "conv2_1"], "features": ["conv1_2", "conv3_3", "conv5_3"], "explained": "conv5_3"},
    preparation=VGG16, pool_dropout=False, pretrained=VGG16)
PRETRAINED_NETWORKS = {VGG16: VGG16_NETWORK}


def keras_layer(layer):
    """The name Keras's VGG16 gives a conv layer: conv5_3 is block5_conv3."""
    block, index = layer[len(CONV):].split("_")
    return f"block{block}_conv{index}"


def of_run(run):
    """The network of a run's settings: the one it recorded, else the tutorial's (a run of an earlier
    version, which had no other)."""
    return from_record(run["network"]) if "network" in run else TUTORIAL
