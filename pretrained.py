"""The article's closing advice: start from a network trained on ImageNet (--pretrained vgg16).

The weights are read by Keras's own loader, ``keras.applications.VGG16(weights=..., include_top=False)``:
"imagenet" downloads Keras's published file (below) into Keras's cache, checked against its published
MD5; a local file (--pretrained-weights, for a machine without internet) may be in the published legacy
HDF5 layout or in Keras 3's, and Keras checks its layers and their shapes against VGG16's. What comes
back is ``{layer: (kernel [3, 3, in, out], bias [out])}`` under the graph's names (conv1_1 ... conv5_3),
which initialise the conv variables of a new run; a resumed run reads every weight from its checkpoint.
"""
import os

import numpy as np

import architecture
import cli
import tf_start

PUBLISHED_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
PUBLISHED_BYTES = 58_889_256
PUBLISHED_MD5 = "6d6bbae143d832006294945121d1f1fc"
KERAS_APPLICATION = {architecture.VGG16: "VGG16"}
# What Keras raises for a file that is not its VGG16 without the top: h5py's OSError for a truncated or
# non-HDF5 file, ValueError for other layers or shapes (its VGG19, a tutorial checkpoint), KeyError for an
# HDF5 file without Keras's groups.
FOREIGN_FILE = (OSError, ValueError, KeyError, TypeError)


def keras_model(weights, name=architecture.VGG16):
    """Keras's own VGG16 without its top, its weights from ``weights`` ("imagenet", a file, or None for random)."""
    tf_start.gpus()  # TensorFlow's CUDA probe before Keras's first model, so its log shows only where it matters
    import keras  # only a pretrained run pays for Keras's import
    return getattr(keras.applications, KERAS_APPLICATION[name])(weights=weights, include_top=False)


def load(path=None, name=architecture.VGG16):
    """The conv layers' ``{layer: (kernel, bias)}`` of a pretrained network, from a local weights file, else
    downloaded by Keras. A file Keras cannot read as the network's weights is a UsageError naming what to do."""
    network = architecture.PRETRAINED_NETWORKS[name]
    if path is not None:
        if not os.path.isfile(path):
            raise cli.UsageError(f"cannot use --pretrained-weights {cli.shown(path)}: no such file")
        try:
            model = keras_model(path, name)
        except FOREIGN_FILE as error:
            raise cli.UsageError(
                f"cannot use --pretrained-weights {cli.shown(path)}: not Keras's {KERAS_APPLICATION[name]} weights "
                f"without the top ({first_line(error)}); use {PUBLISHED_FILE} ({PUBLISHED_BYTES:,} bytes, MD5 "
                f"{PUBLISHED_MD5})") from None
    else:
        try:
            model = keras_model("imagenet", name)
        except Exception as error:  # noqa: BLE001 -- Keras's download raises whatever its transport did
            raise cli.Failure(f"cannot download Keras's ImageNet weights for {KERAS_APPLICATION[name]} "
                              f"({first_line(error)}); without internet, copy {PUBLISHED_FILE} here and give "
                              f"--pretrained-weights FILE") from None
    params = {}
    for layer in network.conv_layers:
        kernel, bias = model.get_layer(architecture.keras_layer(layer)).get_weights()
        if list(kernel.shape) != network.kernel_shape(layer):  # Keras checked it; this graph relies on it
            raise cli.UsageError(f"--pretrained-weights: {layer} has kernels of shape {list(kernel.shape)}, not "
                                 f"{network.kernel_shape(layer)}")
        params[layer] = (np.asarray(kernel, np.float32), np.asarray(bias, np.float32))
    return params


def first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
