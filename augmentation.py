"""The article's remedy for overfitting, "more training data by resizing, scaling and rotating", as graph ops.

visualize_convnets.py --augment puts these between X and the first conv layer, so the training
step's batch is augmented where the convolutions run (on a GPU, beside them), and the measuring
passes (the training accuracy measure, the test set, the probe, predict.py, Grad-CAM) see the
photos as they are. Each augmentation is drawn per image:

    flip    a horizontal mirror image, half of the time
    crop    a square of 80-100 % of the side, anywhere in the photo, resized back (bilinear)
    rotate  a rotation about the centre by up to 10 degrees either way, the corners filled by
            reflecting the photo (no black wedges for the network to learn)

X is fed centred (the photo minus the training mean image), so the photo is restored, augmented,
and centred again: the network sees what augmenting the photo and then centring it gives.
The random draws are stateless, seeded by the run's seed and the global step, so a run stopped
and resumed sees the same augmented batches as one that ran through.
"""
import math

import tf_start  # noqa: F401 -- TensorFlow's start-up notes held back
import tensorflow as tf  # noqa: E402

v1 = tf.compat.v1

NAMES = ("flip", "crop", "rotate")
CROP_SIDE = (0.8, 1.0)  # the share of the side a crop keeps
MAX_DEGREES = 10.0
SMALLEST_SIDE = 8  # below this a crop or a rotation moves whole pixels of a few-pixel image
HELP = (f"augment the training step's batches (the tutorial does not): a comma list of {', '.join(NAMES)} (the "
        f"bare flag takes all three): flip, a horizontal mirror image half of the time; crop, a square of "
        f"{CROP_SIDE[0]:.0%}-{CROP_SIDE[1]:.0%} of the side resized back; rotate, up to {MAX_DEGREES:g} degrees "
        f"either way, corners reflected. Drawn per image from the run's seed and the global step; a run may "
        f"resume with or without it")


def parse(text):
    """The augmentations of a ``--augment`` value (``flip,crop``), in the order they apply; ValueError names an
    unknown one."""
    asked = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in asked if name not in NAMES]
    if unknown or not asked:
        raise ValueError(f"unknown augmentation {unknown[0] if unknown else text!r}; choose from "
                         f"{', '.join(NAMES)} (a comma list, or the bare flag for all three)")
    return [name for name in NAMES if name in asked]


def augmented(photos, names, seed):
    """``photos`` [n, h, w, 3] (0..255, float) with each of ``names`` drawn per image from ``seed`` [2] (int64)."""
    count = tf.shape(photos)[0]

    def uniform(index, low=0.0, high=1.0):
        return tf.random.stateless_uniform([count], tf.random.experimental.stateless_fold_in(seed, index),
                                           minval=low, maxval=high)

    if "flip" in names:
        photos = tf.where((uniform(0) < 0.5)[:, None, None, None], tf.reverse(photos, axis=[2]), photos)
    if "crop" in names or "rotate" in names:
        side = uniform(1, *CROP_SIDE) if "crop" in names else tf.ones([count])
        top, left = uniform(2) * (1 - side), uniform(3) * (1 - side)
        angle = uniform(4, -MAX_DEGREES, MAX_DEGREES) * (math.pi / 180) if "rotate" in names else tf.zeros([count])
        photos = cropped_and_rotated(photos, side, top, left, angle)
    return photos


def cropped_and_rotated(photos, side, top, left, angle):
    """Each photo's square of ``side`` (a share of the side) at ``top``, ``left`` (shares of the side), resized
    back and turned by ``angle`` (radians) about its centre: one affine transform, read bilinearly, the corners
    reflected. At side 1 and angle 0 it is the photo itself."""
    height, width = photos.shape[1], photos.shape[2]
    cos, sin = tf.cos(angle), tf.sin(angle)
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    # Where each output pixel is read from: rotated about the centre, then scaled into the square and moved to it.
    shift_x = left * (width - 1) + side * (centre_x - cos * centre_x + sin * centre_y)
    shift_y = top * (height - 1) + side * (centre_y - sin * centre_x - cos * centre_y)
    zeros = tf.zeros_like(side)
    transforms = tf.stack([side * cos, -side * sin, shift_x, side * sin, side * cos, shift_y, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(images=photos, transforms=transforms, output_shape=[height, width],
                                                 fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")


def training_inputs(X, network, mean_image, names):
    """The network's input: X (photos prepared for ``network``, centred) augmented while the ``augmenting``
    placeholder is fed True (the training step alone), else X itself. Returns ``(inputs, augmenting, seed)``,
    the placeholders to feed."""
    augmenting = v1.placeholder_with_default(False, [], name="augmenting")
    seed = v1.placeholder_with_default(tf.zeros([2], tf.int64), [2], name="augment_seed")
    mean = tf.constant(mean_image, tf.float32, name="mean_image")

    def augment():
        return network.prepare(augmented(network.photos(X, mean), names, seed), mean)

    return tf.cond(augmenting, augment, lambda: X, name="augment"), augmenting, seed
