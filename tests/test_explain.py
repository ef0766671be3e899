"""explain.py and predict.py --explain: explanations through PAIR's saliency library on a real short run."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import classifier
import explain
import imFunctions as imf
from conftest import REPO, run_script
from helpers import checkpoint_tensor, expected_grad_cam, numpy_forward, prepared_image

# The figure's layout as the README states it: panels of 224 // size zoom, PANEL_GAP apart, each under a
# TITLE_HEIGHT strip holding its title in the 15-px default font at (its left edge, 4).
TITLE_HEIGHT, PANEL_GAP, ZOOM = 26, 16, 224 // 64


def a_test_image(run, breed, index=0):
    return run.data_dir / "test" / breed / sorted(os.listdir(run.data_dir / "test" / breed))[index]


@pytest.fixture(scope="module")
def network(short_run):
    return classifier.Classifier(short_run.checkpoint_dir)


@pytest.fixture(scope="module")
def explainer(network):
    return explain.Explainer(network)


# --------------------------------------------------------------------------- the methods

@pytest.mark.parametrize("breed", ["samoyed", "shiba_inu"])  # the shiba's map has zeros: the ReLU matters
def test_grad_cam_through_the_library_equals_the_numpy_reference(breed, short_run, explainer):
    image = a_test_image(short_run, breed)
    label, probability, cam, heat = expected_grad_cam(short_run, image)

    result = explainer.grad_cam(imf.load_image(str(image), 64))

    assert (result.label, result.probability) == (label, pytest.approx(probability, rel=1e-4))
    np.testing.assert_allclose(result.cam, cam, rtol=1e-3, atol=1e-4 * cam.max())
    np.testing.assert_allclose(result.heat, heat, atol=1e-4)


def test_integrated_gradients_sum_to_the_logits_change_from_a_black_photo(short_run, explainer):
    tensor = checkpoint_tensor(short_run.checkpoint_dir / "model.ckpt-18")
    mean = np.load(short_run.checkpoint_dir / "mean_image.npy")
    black = numpy_forward(np.zeros((64, 64, 3), np.float32) - mean, tensor)[2]  # all-zero pixels, then centred
    image = a_test_image(short_run, "samoyed")
    logits = numpy_forward(prepared_image(short_run, image), tensor)[2]
    best = int(np.argmax(logits))
    change = logits[best] - black[best]
    assert abs(change) >= 1

    attributions = explainer.integrated_gradients(imf.load_image(str(image), 64), best)

    assert float(attributions.sum()) == pytest.approx(change, rel=0.05)


# --------------------------------------------------------------------------- the figure

def title_strip(width, text):
    strip = Image.new("RGB", (width, TITLE_HEIGHT), "white")
    ImageDraw.Draw(strip).text((0, 4), text, fill="black", font=ImageFont.load_default(size=15))
    return np.asarray(strip)


def panels_of(png, count):
    """The figure's (title strip, picture) pairs, one a panel, each panel 64 px zoomed ZOOM times."""
    side = 64 * ZOOM
    assert png.shape == (TITLE_HEIGHT + side, count * side + (count - 1) * PANEL_GAP, 3)
    lefts = [index * (side + PANEL_GAP) for index in range(count)]
    return [(png[:TITLE_HEIGHT, left:left + side], png[TITLE_HEIGHT:, left:left + side:ZOOM][::ZOOM])
            for left in lefts]


@pytest.fixture(scope="module")
def explained(short_run, tmp_path_factory):
    """predict.py --explain (the default methods) on one test image of each class, as a user runs it."""
    out = tmp_path_factory.mktemp("explained")
    images = [a_test_image(short_run, breed) for breed in ("shiba_inu", "samoyed")]
    result = run_script("predict.py", ["--checkpoint-dir", short_run.checkpoint_dir, "--explain", "--out", out,
                                       *images], cwd=out)
    return result, out, images


def test_explain_keeps_predicts_answers_and_exit_status(explained):
    result, _, images = explained

    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(image) for image in images]


def test_each_png_holds_the_photo_and_one_panel_per_default_method_each_titled(short_run, explained):
    _, out, images = explained
    titles = ["Grad-CAM (conv2_2)", "SmoothGrad", "Integrated Gradients", "Blur IG", "XRAI"]

    for image in images:
        label, probability = expected_grad_cam(short_run, image)[:2]
        png = np.asarray(Image.open(out / f"{image.stem}_explained.png").convert("RGB"))

        panels = panels_of(png, 1 + len(titles))

        np.testing.assert_array_equal(panels[0][1], imf.load_image(str(image), 64))
        for (strip, _), title in zip(panels, [f"{label} {probability:.4f}", *titles]):
            np.testing.assert_array_equal(strip, title_strip(strip.shape[1], title), err_msg=title)


def test_the_grad_cam_panel_is_the_reference_heat_over_the_photo(short_run, explained):
    _, out, images = explained
    picture = imf.load_image(str(images[1]), 64)
    heat = expected_grad_cam(short_run, images[1])[3]
    jet = 255 * np.stack([np.clip(1.5 - np.abs(4 * heat - centre), 0, 1) for centre in (3, 2, 1)], axis=-1)

    png = np.asarray(Image.open(out / f"{images[1].stem}_explained.png").convert("RGB"))

    assert np.abs(panels_of(png, 6)[1][1] - (0.5 * picture + 0.5 * jet)).max() <= 1


def test_methods_named_are_the_panels_in_the_order_named(short_run, tmp_path):
    image = a_test_image(short_run, "samoyed")

    result = run_script("predict.py", ["--checkpoint-dir", short_run.checkpoint_dir, "--explain",
                                       "integrated_gradients,gradients", "--out", "why", image], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    png = np.asarray(Image.open(tmp_path / "why" / f"{image.stem}_explained.png").convert("RGB"))
    strips = [strip for strip, _ in panels_of(png, 3)[1:]]
    for strip, title in zip(strips, ["Integrated Gradients", "Gradients"]):
        np.testing.assert_array_equal(strip, title_strip(strip.shape[1], title), err_msg=title)


def test_a_bare_explain_before_the_images_takes_the_first_as_an_image(short_run, tmp_path):
    image = a_test_image(short_run, "samoyed")

    result = run_script("predict.py", ["--checkpoint-dir", short_run.checkpoint_dir, "--out", "why", "--explain",
                                       image], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\t")[0] == str(image)
    panels_of(np.asarray(Image.open(tmp_path / "why" / f"{image.stem}_explained.png").convert("RGB")), 6)


# --------------------------------------------------------------------------- bad input

def test_an_unknown_method_is_one_line_and_exit_status_2_before_anything_loads(tmp_path):
    # No checkpoint folder at all: the method is refused before the network would be looked for.
    result = run_script("predict.py", ["--checkpoint-dir", tmp_path / "none", "--explain", "grad_cam,lime",
                                       "x.jpg"], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr == ("predict.py: error: unknown explanation method 'lime'; available: grad_cam, gradients, "
                             "smoothgrad, integrated_gradients, blur_ig, xrai\n")
    assert not (tmp_path / "explanations").exists()


def test_a_fifo_and_a_non_image_among_the_inputs_are_warnings_exit_1_and_the_others_explained(short_run, tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "notes.jpg").write_text("not a picture")
    good = [a_test_image(short_run, "samoyed"), a_test_image(short_run, "shiba_inu")]

    result = run_script("predict.py", ["--checkpoint-dir", short_run.checkpoint_dir, "--explain", "gradients",
                                       good[0], "pipe.jpg", "notes.jpg", good[1]], cwd=tmp_path, timeout=300)

    assert result.returncode == 1
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning")]
    assert warnings == ["Warning: skipped pipe.jpg: a FIFO, not a regular file",
                        "Warning: skipped notes.jpg: not a readable image"]
    assert sorted(os.listdir(tmp_path / "explanations")) == sorted(f"{image.stem}_explained.png" for image in good)
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(image) for image in good]


def test_a_signal_while_explaining_is_one_line_and_leaves_whole_pngs_only(short_run, tmp_path):
    images = [short_run.data_dir / "test"]  # a dozen images, seconds each: it is still explaining when stopped
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "predict.py"), "--checkpoint-dir",
                                str(short_run.checkpoint_dir), "--explain", *map(str, images)], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    out = tmp_path / "explanations"
    for _ in range(1200):
        if out.is_dir() and any(name.endswith("_explained.png") for name in os.listdir(out)):
            break
        time.sleep(0.1)

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    assert (process.returncode, stderr) == (128 + signal.SIGTERM, "predict.py: stopped by SIGTERM\n")
    written = os.listdir(out)
    assert written and all(name.endswith("_explained.png") for name in written)
    for name in written:
        Image.open(out / name).load()  # each one whole
