"""Grad-CAM (Selvaraju et al., 2017): where in an image the trained network looked.

The gradient of the predicted class's logit with respect to a conv layer's activations (the
network's explained layer, the tutorial's conv2_2), averaged over the positions, weighs each
channel; the ReLU of the channels' weighted sum is the map.
filter_gif.py --image writes it as ``<stem>_gradcam.png``.
"""
import collections
import os
import sys

import numpy as np
from PIL import Image

import classifier
import cli
import drawing
import imFunctions as imf
import tf_start  # noqa: F401 -- TensorFlow's start-up notes held back
import tensorflow as tf

GradCam = collections.namedtuple("GradCam", "label probability cam heat")


def grad_cam(network, picture):
    """Grad-CAM of the predicted class on the explained layer for one uint8 picture under a classifier.Classifier.

    ``cam`` is at that layer's size; ``heat`` is it upsampled bilinearly to the picture, scaled to [0, 1].
    """
    model = network.model
    explained = model["layers"][network.explained_layer]
    with model["graph"].as_default():
        predicted_logit = tf.reduce_max(model["logits"], axis=1)  # the predicted class's logit: softmax keeps order
        gradients = tf.gradients(predicted_logit, explained)[0]
    probabilities, activations, gradients = network.session.run([model["Y"], explained, gradients],
                                                                 network.feed(picture[None]))
    cam = np.maximum(activations[0] @ gradients[0].mean(axis=(0, 1)), 0)
    height, width = picture.shape[:2]
    upsampled = np.asarray(Image.fromarray(cam.astype(np.float32)).resize((width, height), Image.BILINEAR))
    best = int(np.argmax(probabilities[0]))
    return GradCam(network.classes[best], float(probabilities[0, best]), cam,
                   upsampled / max(float(upsampled.max()), 1e-12))


def heat_colours(heat):
    """[h, w] values in [0, 1] as [h, w, 3] jet colours in 0..255: blue, cyan, yellow, red."""
    return 255 * np.stack([np.clip(1.5 - np.abs(4 * heat - centre), 0, 1) for centre in (3, 2, 1)], axis=-1)


def grad_cam_figure(picture, result, layer):
    """The picture beside itself under its heat map, titled with the class, its probability and the layer."""
    overlay = np.uint8(np.round(0.5 * picture + 0.5 * heat_colours(result.heat)))
    grid = drawing.tile_grid(np.stack([picture, overlay]), max(1, 224 // picture.shape[0]), columns=2)
    return drawing.titled(grid, f"{result.label} {result.probability:.4f}  Grad-CAM on {layer}")


def grad_cam_png(checkpoint_dir, image_path, out):
    """``<stem>_gradcam.png`` from the latest full checkpoint; before the first one, a warning instead."""
    try:
        network = classifier.Classifier(checkpoint_dir)
    except (classifier.NoCheckpoint, cli.Failure) as error:
        print(f"Warning: no Grad-CAM: {error}", file=sys.stderr)
        return []
    picture = imf.load_image(image_path, network.image_size)
    path = os.path.join(out, f"{os.path.splitext(os.path.basename(image_path))[0]}_gradcam.png")
    drawing.write_png(path, grad_cam_figure(picture, grad_cam(network, picture), network.explained_layer))
    return [path]
