"""Explanations of one image under the trained network, through PAIR's saliency library (saliency.tf1).

Each method answers "which pixels made the network say this class?" in its own way, and
they disagree, which is the point of showing them side by side:

    grad_cam              Grad-CAM on the network's explained layer (Classifier.explained_layer):
                          that layer's channels weighted by the class logit's mean gradient
    gradients             the class logit's gradient with respect to the pixels
    smoothgrad            the gradient averaged over noisy copies of the photo
    integrated_gradients  gradients integrated along the straight path from a black photo
    blur_ig               gradients integrated along a path from a blurred photo to the photo
    xrai                  Integrated Gradients (from a black and a white photo) summed over segments

(The library's Guided IG is left out: saliency 0.2.1 calls np.quantile(interpolation=...), which numpy 2.4
removed.) predict.py --explain writes them (explanation_png); filter_gif.py --image writes the Grad-CAM
figure alone (grad_cam_png). The class explained is the one the network predicts; its logit,
not its probability, is what each method differentiates.
"""
import collections
import os
import sys

import numpy as np
import saliency.tf1 as saliency
from PIL import Image

import classifier
import cli
import drawing
import imFunctions as imf
import tf_start  # noqa: F401 -- TensorFlow's start-up notes held back
import tensorflow as tf

v1 = tf.compat.v1

TITLES = {"grad_cam": "Grad-CAM", "gradients": "Gradients", "smoothgrad": "SmoothGrad",
          "integrated_gradients": "Integrated Gradients", "blur_ig": "Blur IG", "xrai": "XRAI"}
DEFAULT_METHODS = ("grad_cam", "smoothgrad", "integrated_gradients", "blur_ig", "xrai")

IG_STEPS = 64  # Riemann steps: the attributions sum to the logit's change within 5 % (tests/test_explain.py; 4 fail it)
SMOOTHGRAD_SAMPLES = 25
SMOOTHGRAD_SEED = 0  # the same picture on every run: the noise is the library's np.random, seeded and restored
BATCH = 32  # path steps per session.run

GradCam = collections.namedtuple("GradCam", "label probability cam heat")
Explanation = collections.namedtuple("Explanation", "label probability attributions")


def parse_methods(text):
    """A comma list of method names as a tuple, or a UsageError naming the first unknown one."""
    methods = tuple(name.strip() for name in text.split(","))
    for name in methods:
        if name not in TITLES:
            raise cli.UsageError(f"unknown explanation method {name!r}; available: {', '.join(TITLES)}")
    return tuple(dict.fromkeys(methods))  # each once, in the order given


def black_photo(network):
    """All-zero pixels as the network's input sees them: centred by the training mean, so minus it."""
    return np.float32(0) - network.mean


def white_photo(network):
    return np.float32(255) - network.mean


class Explainer:
    """The saliency library's methods wired to a classifier.Classifier's graph and session.

    The library differentiates one number per image, ``y``: here the logit of the class fed to
    ``selector`` (the predicted one), gathered from the batch so the path methods can batch steps.
    """

    def __init__(self, network):
        self.network = network
        model = network.model
        with model["graph"].as_default():
            self.selector = v1.placeholder(tf.int32, [], name="explained_class")
            self.y = tf.gather(model["logits"], self.selector, axis=1)
        self.layer = network.explained_layer
        self.built = {}

    def library(self, kind):
        """The library's object of class ``kind``, made on first use: each adds its gradients to the graph."""
        if kind not in self.built:
            model = self.network.model
            extra = {"conv_layer": model["layers"][self.layer]} if kind is saliency.GradCam else {}
            self.built[kind] = kind(model["graph"], self.network.session, self.y, model["X"], **extra)
        return self.built[kind]

    def feed(self, label):
        """What every call feeds besides the input: the class explained, and no dropout."""
        model = self.network.model
        return {self.selector: label, model["keepRate1"]: 1.0, model["keepRate2"]: 1.0}

    def predicted(self, picture):
        """(class index, its probability) for a uint8 picture."""
        probabilities = self.network.probabilities(picture[None])[0]
        best = int(np.argmax(probabilities))
        return best, float(probabilities[best])

    def grad_cam(self, picture):
        """Grad-CAM of the predicted class: ``cam`` at the explained layer's size (ReLU of the channels weighted by
        their mean gradient), ``heat`` it upsampled bilinearly to the picture and scaled to [0, 1]."""
        best, probability = self.predicted(picture)
        cam = self.library(saliency.GradCam).GetMask(self.centred(picture), self.feed(best), should_resize=False,
                                                     three_dims=False)
        height, width = picture.shape[:2]
        # PIL's bilinear upsampling clamps at the edges (the library's skimage resize reflects, and normalises
        # before resizing): the heat is the map's own shape, pixel centres aligned.
        upsampled = np.asarray(Image.fromarray(cam.astype(np.float32)).resize((width, height), Image.BILINEAR))
        return GradCam(self.network.classes[best], probability, cam, upsampled / max(float(upsampled.max()), 1e-12))

    def centred(self, picture):
        return picture.astype(np.float32) - self.network.mean

    def integrated_gradients(self, picture, label, steps=IG_STEPS):
        """[h, w, 3] attributions of ``label``'s logit from the black photo; they sum to about the logit's change."""
        return self.library(saliency.IntegratedGradients).GetMask(
            self.centred(picture), self.feed(label), x_baseline=black_photo(self.network), x_steps=steps,
            batch_size=BATCH)

    def attributions(self, picture, method, label):
        """One method's raw map of ``label`` for a uint8 picture: [h, w] for the region methods, [h, w, 3] else."""
        x = self.centred(picture)
        if method == "grad_cam":
            return self.grad_cam(picture).heat
        if method == "gradients":
            return self.library(saliency.GradientSaliency).GetMask(x, self.feed(label))
        if method == "smoothgrad":
            state = np.random.get_state()
            np.random.seed(SMOOTHGRAD_SEED)
            try:
                return self.library(saliency.GradientSaliency).GetSmoothedMask(x, self.feed(label),
                                                                               nsamples=SMOOTHGRAD_SAMPLES)
            finally:
                np.random.set_state(state)
        if method == "integrated_gradients":
            return self.integrated_gradients(picture, label)
        if method == "blur_ig":
            # The path blurs the centred photo: its start is the photo's and the mean's blur alike, featureless.
            return self.library(saliency.BlurIG).GetMask(x, self.feed(label), batch_size=BATCH)
        if method == "xrai":
            return self.library(saliency.XRAI).GetMask(x, self.feed(label), batch_size=BATCH,
                                                       baselines=[black_photo(self.network), white_photo(self.network)])
        raise ValueError(method)

    def explain(self, picture, methods, progress=None):
        """The predicted class, its probability and each method's attributions, in the order given."""
        best, probability = self.predicted(picture)
        found = {}
        for method in methods:
            found[method] = self.attributions(picture, method, best)
            if progress is not None:
                progress.update()
        return Explanation(self.network.classes[best], probability, found)


# --------------------------------------------------------------------------- pictures

def panel(picture, method, attributions):
    """One method's panel as uint8 RGB of the picture's size: heat over the photo for a region method (Grad-CAM's
    heat as filter_gif draws it, 0 to its largest value; XRAI's regions stretched from lowest to highest), else the
    pixels' summed absolute attributions in grey, white from the 99th percentile up (the library's own view)."""
    if method == "grad_cam":
        return drawing.overlay_heat(picture, attributions)
    if method == "xrai":
        low, high = float(attributions.min()), float(attributions.max())
        return drawing.overlay_heat(picture, (attributions - low) / max(high - low, 1e-12))
    grey = drawing.to_uint8(saliency.VisualizeImageGrayscale(attributions), 0.0, 1.0)
    return np.repeat(grey[..., None], 3, axis=-1)


def explanation_figure(picture, explanation, layer):
    """The photo, titled with the class and its probability, then one titled panel per method."""
    panels = {f"{explanation.label} {explanation.probability:.4f}": picture}
    for method, attributions in explanation.attributions.items():
        panels[method_title(method, layer)] = panel(picture, method, attributions)
    return drawing.titled_panels(panels, zoom=max(1, 224 // picture.shape[0]))


def method_title(method, layer):
    return f"{TITLES[method]} ({layer})" if method == "grad_cam" else TITLES[method]


def explanation_png(explainer, picture, methods, path, progress=None):
    """Explain ``picture`` by each method and write the figure to ``path``; returns the Explanation."""
    explanation = explainer.explain(picture, methods, progress)
    drawing.write_png(path, explanation_figure(picture, explanation, explainer.layer))
    return explanation


def grad_cam_figure(picture, result, layer):
    """The picture beside itself under its Grad-CAM heat, titled with the class and its probability."""
    grid = drawing.tile_grid(np.stack([picture, drawing.overlay_heat(picture, result.heat)]),
                             max(1, 224 // picture.shape[0]), columns=2)
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
    drawing.write_png(path, grad_cam_figure(picture, Explainer(network).grad_cam(picture), network.explained_layer))
    return [path]
