"""--pretrained vgg16 (issue 22): Keras's VGG16 weights in the tutorial's graph code, frozen or fine-tuned, and
every view on it.

No ImageNet weights can be fetched here: the weight files are made by Keras itself with random values, in the
published legacy HDF5 layout (Keras's legacy writer) and in Keras 3's, once per session. Keras is the
independent reference: its own VGG16 on the same file and picture gives the block5_conv3 output the graph's
conv5_3 must equal.
"""
import json
import os
import shutil

import h5py
import imageio.v3 as iio
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format
from conftest import REPO, run_script, short_training_run
from helpers import HEADER, checkpoint_tensor, newest_checkpoint, one_line
import architecture
import feature_maps
import imFunctions as imf
import pretrained

VGG16 = architecture.VGG16_NETWORK
SIDE = 32  # five pools: 32 px ends at 1 x 1 x 512, the smallest side at which Keras's VALID pools and ours agree
REAL_PHOTOS = os.path.join(os.path.dirname(REPO), "shared", "realpets", "images")


@pytest.fixture(scope="session")
def weight_files(tmp_path_factory):
    """``{format: path}`` of random VGG16 weights written by Keras (both formats), and Keras's VGG19 (legacy)."""
    folder = tmp_path_factory.mktemp("weights")
    model = keras.applications.VGG16(weights=None, include_top=False)
    paths = {"legacy": folder / pretrained.PUBLISHED_FILE, "keras3": folder / "vgg16_notop.weights.h5",
             "vgg19": folder / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"}
    with h5py.File(paths["legacy"], "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)
    model.save_weights(paths["keras3"])
    with h5py.File(paths["vgg19"], "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, keras.applications.VGG19(weights=None, include_top=False))
    return paths


def keras_weights(path):
    """``{conv layer: (kernel, bias)}`` as Keras's own VGG16 reads ``path``."""
    model = pretrained.keras_model(str(path))
    return {layer: model.get_layer(architecture.keras_layer(layer)).get_weights() for layer in VGG16.conv_layers}


def a_photo():
    """A real photo (../shared/realpets where it is, copied nowhere: read only), else a picture of smooth
    shapes made here (CI has no ../shared)."""
    if os.path.isdir(REAL_PHOTOS):
        return imf.load_image(os.path.join(REAL_PHOTOS, sorted(os.listdir(REAL_PHOTOS))[0]), SIDE)
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    return np.uint8(255 * np.stack([np.sin(6 * x) ** 2, np.cos(4 * y) ** 2, x * y], axis=-1))


def test_help_says_keep_conv_does_not_apply_inside_vgg16(tmp_path):
    result = run_script("visualize_convnets.py", ["--help"], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "does not apply inside VGG16's blocks" in " ".join(result.stdout.split())
    assert "--pretrained-weights FILE" in result.stdout and "--fine-tune-from LAYER" in result.stdout


# --------------------------------------------------------------------------- the weights, against Keras

@pytest.mark.parametrize("layout", ["legacy", "keras3"])
def test_conv5_3_equals_keras_block5_conv3_for_either_weights_format(weight_files, layout):
    photo = a_photo().astype(np.float32)
    params = pretrained.load(str(weight_files[layout]))
    ours = feature_maps.FeatureMaps(SIDE, VGG16)(VGG16.prepare(photo, None), params, ["conv5_3"])["conv5_3"]

    model = keras.applications.VGG16(weights=str(weight_files[layout]), include_top=False)
    block5_conv3 = keras.Model(model.inputs, model.get_layer("block5_conv3").output)
    theirs = np.asarray(block5_conv3(keras.applications.vgg16.preprocess_input(photo[None].copy())))[0]

    assert ours.shape == theirs.shape == (SIDE // 16, SIDE // 16, 512)
    assert np.abs(theirs).max() > 0  # random weights still leave conv5_3 something to compare
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())


@pytest.mark.parametrize("what", ["truncated", "vgg19", "missing"])
def test_a_weights_file_keras_cannot_read_as_vgg16_is_one_line_and_exit_2_before_anything_is_written(
        weight_files, tmp_path, what):
    path = {"truncated": tmp_path / "cut.h5", "vgg19": weight_files["vgg19"], "missing": tmp_path / "none.h5"}[what]
    if what == "truncated":
        path.write_bytes(weight_files["legacy"].read_bytes()[:1_000_000])

    result = run_script("visualize_convnets.py", ["--pretrained", "vgg16", "--pretrained-weights", path,
                                                  "--checkpoint-dir", "ck", "--logdir", "logs"], cwd=tmp_path)

    assert result.returncode == 2
    assert f"--pretrained-weights {path}" in one_line(result.stderr)
    assert not (tmp_path / "ck").exists() and not (tmp_path / "logs").exists()


def test_a_tutorial_checkpoint_given_as_weights_is_one_line_and_exit_2(short_run, tmp_path):
    index = f"{newest_checkpoint(short_run.checkpoint_dir)}.index"

    result = run_script("visualize_convnets.py", ["--pretrained", "vgg16", "--pretrained-weights", index,
                                                  "--checkpoint-dir", "ck"], cwd=tmp_path)

    assert result.returncode == 2
    assert "not Keras's VGG16 weights" in one_line(result.stderr)
    assert not (tmp_path / "ck").exists()


def test_fine_tune_from_naming_no_conv_layer_is_one_line_and_exit_2(tmp_path):
    result = run_script("visualize_convnets.py", ["--pretrained", "vgg16", "--fine-tune-from", "pool5",
                                                  "--checkpoint-dir", "ck"], cwd=tmp_path)

    assert result.returncode == 2
    assert "--fine-tune-from 'pool5' names no conv layer of vgg16" in one_line(result.stderr)
    assert not (tmp_path / "ck").exists()


def test_resuming_a_tutorial_run_with_pretrained_is_refused_and_writes_nothing(short_run, weight_files, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(short_run.checkpoint_dir, out / "checkpoints")
    before = {path: path.stat().st_mtime_ns for path in (out / "checkpoints").rglob("*") if path.name[0] != "."}

    result = run_script("visualize_convnets.py", ["--pretrained", "vgg16", "--pretrained-weights",
                                                  weight_files["legacy"], "--data-dir", short_run.data_dir,
                                                  "--checkpoint-dir", out / "checkpoints", "--logdir", out / "logs",
                                                  "--image-size", 64, "--batch-size", 8, "--seed", 1], cwd=out)

    assert result.returncode == 2
    assert "holds a run of the tutorial network, not the vgg16 one" in one_line(result.stderr)
    assert {path: path.stat().st_mtime_ns for path in (out / "checkpoints").rglob("*") if path.name[0] != "."} \
        == before


# --------------------------------------------------------------------------- training: the head, then conv5

@pytest.fixture(scope="module")
def vgg_runs(prepared_data_dir, weight_files, tmp_path_factory):
    """A 1-epoch run of the head alone at 32 px, its checkpoint folder copied, then resumed for a second epoch
    with --fine-tune-from conv5_1."""
    out = tmp_path_factory.mktemp("vgg")
    head = short_training_run(prepared_data_dir, out, image_size=SIDE, epochs=1, pretrained="vgg16",
                              pretrained_weights=weight_files["legacy"], skip_demos=True)
    shutil.copytree(head.checkpoint_dir, out / "head_only")
    tuned = short_training_run(prepared_data_dir, out, image_size=SIDE, epochs=2, fine_tune_from="conv5_1",
                               skip_demos=True)
    return out / "head_only", tuned


def conv_weights(prefix):
    tensor = checkpoint_tensor(prefix)
    return {layer: [tensor(name) for name in architecture.checkpoint_names(layer)] for layer in VGG16.conv_layers}


def test_a_pretrained_run_trains_the_head_alone(vgg_runs, weight_files):
    head_only, _ = vgg_runs
    expected = keras_weights(weight_files["legacy"])
    found = conv_weights(newest_checkpoint(head_only))

    for layer in VGG16.conv_layers:
        np.testing.assert_array_equal(found[layer][0], expected[layer][0], err_msg=layer)
        np.testing.assert_array_equal(found[layer][1], expected[layer][1], err_msg=layer)


def test_adam_keeps_no_moments_for_frozen_layers(vgg_runs):
    head_only, _ = vgg_runs
    names = tf.train.load_checkpoint(str(newest_checkpoint(head_only))).get_variable_to_shape_map()

    assert [name for name in names if name.startswith("conv") and "Adam" in name] == []
    assert "fc1/weights3_1/Adam" in names


def test_resuming_with_fine_tune_from_conv5_1_changes_conv5_alone(vgg_runs, weight_files):
    _, tuned = vgg_runs
    expected = keras_weights(weight_files["legacy"])
    found = conv_weights(newest_checkpoint(tuned.checkpoint_dir))

    changed = [layer for layer in VGG16.conv_layers if not np.array_equal(found[layer][0], expected[layer][0])]
    assert changed == ["conv5_1", "conv5_2", "conv5_3"]
    assert "fine-tuning conv5_1, conv5_2, conv5_3" in tuned.stdout


def test_fine_tuning_is_recorded_per_segment(vgg_runs):
    _, tuned = vgg_runs
    segments = json.loads((tuned.checkpoint_dir / "run.json").read_text())["segments"]

    assert [segment.get("fine_tune_from") for segment in segments] == [None, "conv5_1"]


def test_later_snapshots_hold_the_layers_that_trained_and_the_first_holds_all(vgg_runs):
    _, tuned = vgg_runs
    snapshots = sorted((tuned.checkpoint_dir / "snapshots").glob("filters-*.index"),
                       key=lambda path: int(path.stem.split("-")[1]))
    held = [{name.split("/")[0] for name in tf.train.load_checkpoint(str(path.with_suffix("")))
             .get_variable_to_shape_map() if name.startswith("conv")} for path in snapshots]

    assert held[0] == set(VGG16.conv_layers)
    assert held[-1] == {"conv5_1", "conv5_2", "conv5_3"}


# --------------------------------------------------------------------------- every view on it

def test_predict_and_filter_gif_read_a_vgg16_checkpoint(vgg_runs, tmp_path):
    _, tuned = vgg_runs
    image = sorted((tuned.data_dir / "test" / "samoyed").iterdir())[0]

    predicted = run_script("predict.py", ["--checkpoint-dir", tuned.checkpoint_dir, image], cwd=tmp_path)
    drawn = run_script("filter_gif.py", ["--checkpoint-dir", tuned.checkpoint_dir, "--out", tmp_path / "gifs",
                                         "--image", image, "--feature-vis", "conv1_1",
                                         "--feature-vis-first-steps", 2, "--feature-vis-steps", 1], cwd=tmp_path)

    assert predicted.returncode == 0, predicted.stderr
    assert drawn.returncode == 0, drawn.stderr
    written = set(os.listdir(tmp_path / "gifs"))
    assert {f"{image.stem}_gradcam.png", f"{image.stem}_conv5_3.gif", f"{image.stem}_features_conv5_3.png",
            "conv1_1.gif", "conv2_1.gif"} <= written


def test_the_filter_gif_of_a_frozen_conv1_1_stands_still(vgg_runs, tmp_path):
    _, tuned = vgg_runs

    result = run_script("filter_gif.py", ["--checkpoint-dir", tuned.checkpoint_dir, "--out", tmp_path,
                                          "--layers", "conv1_1", "conv5_3"], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    # What the frames are drawn from: conv1_1's kernels the same at every snapshot, conv5_3's not.
    snapshots = feature_maps.read_snapshots(str(tuned.checkpoint_dir),
                                            feature_maps.find_snapshots(str(tuned.checkpoint_dir)), VGG16)
    assert all(np.array_equal(params["conv1_1"][0], snapshots[0][1]["conv1_1"][0]) for _, params in snapshots)
    # Below the title strip (which names the step) conv5_3's grey frames move. (conv1_1's RGB frames are not
    # compared pixel for pixel: the GIF's palette is chosen per frame, so equal kernels come out a few levels apart.)
    conv5_3 = iio.imread(tmp_path / "conv5_3.gif")[:, HEADER:]
    assert not np.array_equal(conv5_3[0], conv5_3[-1])
    assert len(iio.imread(tmp_path / "conv1_1.gif")) == len(snapshots)
