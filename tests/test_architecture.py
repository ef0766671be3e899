"""The network described once (architecture.py): what it says of the tutorial, its record with the run, and a
network of other layers taken through training, predict.py and filter_gif.py without touching any module."""
import json
import os
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_script, short_training_run
from helpers import checkpoint_tensor, newest_checkpoint, numpy_conv_relu, numpy_max_pool, rewrite_checkpoint_tensor
import architecture
import imFunctions as imf
import visualize_convnets as vc

v1 = tf.compat.v1

# A network that is not the tutorial's: three conv layers of other widths, the second pool after the third.
SMALL = {
    "name": "small",
    "layers": [["conv1_1", "conv", 6], ["pool1", "pool", None], ["conv2_1", "conv", 10], ["conv3_1", "conv", 12],
               ["pool2", "pool", None]],
    "fc_units": 16,
    "views": {"filters": ["conv1_1", "conv3_1"], "features": ["conv2_1", "pool2"], "explained": "conv3_1"},
}


def numpy_small_stack(prepared, tensor):
    """SMALL's conv and pool layers written out in numpy, as the test states them."""
    maps = {}
    maps["conv1_1"] = numpy_conv_relu(prepared, tensor("conv1_1/weights1_1"), tensor("conv1_1/biases1_1"))
    maps["pool1"] = numpy_max_pool(maps["conv1_1"])
    maps["conv2_1"] = numpy_conv_relu(maps["pool1"], tensor("conv2_1/weights2_1"), tensor("conv2_1/biases2_1"))
    maps["conv3_1"] = numpy_conv_relu(maps["conv2_1"], tensor("conv3_1/weights3_1"), tensor("conv3_1/biases3_1"))
    maps["pool2"] = numpy_max_pool(maps["conv3_1"])
    return maps


@pytest.fixture(scope="module")
def small_run(prepared_data_dir, tmp_path_factory):
    """A short training run of SMALL, described in a JSON file given with --network."""
    out = tmp_path_factory.mktemp("small")
    (out / "small.json").write_text(json.dumps(SMALL))
    return short_training_run(prepared_data_dir, out, network=out / "small.json", epochs=2)


# --------------------------------------------------------------------------- the tutorial's description

def test_the_tutorials_weight_count_is_the_articles_arithmetic_and_the_graphs_variables():
    conv = (9 * 3 * 32 + 32) + (9 * 32 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 64 + 64)
    fc1 = (56 * 56 * 64 + 1) * 512  # two 2x2 pools take 224 px to 56
    softmax = (512 + 1) * 2
    model = vc.build_graph(224, 2)
    trainable = sum(v.shape.num_elements() for v in model["graph"].get_collection(v1.GraphKeys.TRAINABLE_VARIABLES))

    assert architecture.TUTORIAL.weight_count(224, 2) == conv + fc1 + softmax == trainable == 102_827_554
    assert fc1 == 102_760_960  # fc1 holds 102.76 M of the 102.83 M


def test_the_tutorials_activations_per_pixel_are_its_layers_at_their_sizes():
    # conv1_1, conv1_2 at full size; pool1, conv2_1, conv2_2 at a quarter; pool2 at a sixteenth.
    assert architecture.TUTORIAL.activations_per_pixel() == 32 + 32 + (32 + 64 + 64) / 4 + 64 / 16 == 108


def test_a_description_survives_its_json_record():
    record = json.loads(json.dumps(architecture.TUTORIAL.record()))

    assert architecture.from_record(record) == architecture.TUTORIAL
    assert architecture.from_record(SMALL).record() == {**SMALL, "preparation": "centred", "pool_dropout": True}


@pytest.mark.parametrize("change, message", [
    ({"layers": [["pool1", "pool", None], ["conv1_1", "conv", 8]]}, "its first layer must be a conv layer"),
    ({"layers": [["conv1_1", "conv", 0]]}, "layer 'conv1_1' needs a positive channel count, not 0"),
    ({"layers": [["conv1_1", "conv", 8], ["dense1", "dense", 8]]}, "layer 'dense1' is of kind 'dense', not 'conv' or 'pool'"),
    ({"layers": [["conv1_1", "conv", 8], ["conv1_1", "conv", 8]]}, "two layers named 'conv1_1'"),
    ({"layers": [["c1", "conv", 8]]}, "a conv layer's name is conv followed by letters, digits or _"),
    ({"views": {"filters": ["conv9_9"], "features": ["pool2"], "explained": "conv3_1"}},
     "view 'filters' must list some of conv1_1, conv2_1, conv3_1, not ['conv9_9']"),
    ({"views": {"filters": ["conv1_1"], "features": ["pool2"], "explained": "pool2"}},
     "view 'explained' must be one of its conv layers, not 'pool2'"),
    ({"fc_units": -1}, "fc_units must be a positive integer, not -1"),
])
def test_a_description_no_graph_can_be_built_from_is_one_line_and_exit_2(change, message, tmp_path):
    description = tmp_path / "net.json"
    description.write_text(json.dumps({**SMALL, **change}))

    result = run_script("visualize_convnets.py", ["--network", description, "--data-dir", tmp_path / "data",
                                                  "--checkpoint-dir", tmp_path / "checkpoints"], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "checkpoints").exists()


def test_a_network_file_that_is_not_json_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "net.json").write_text("conv1_1 32\n")

    result = run_script("visualize_convnets.py", ["--network", tmp_path / "net.json"], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.endswith(f"error: cannot use --network {tmp_path / 'net.json'}: not JSON\n")


# --------------------------------------------------------------------------- another network, end to end

def test_another_network_trains_with_the_shapes_and_maps_its_description_gives(small_run):
    tensor = checkpoint_tensor(newest_checkpoint(small_run.checkpoint_dir))
    shapes = {name: tensor(name).shape for name in ("conv1_1/weights1_1", "conv2_1/weights2_1", "conv3_1/weights3_1",
                                                    "fc1/weights3_1", "softmax/weights3_2")}

    # 64 px, pooled twice: 16 x 16 x 12 inputs to fc1's 16 units.
    assert shapes == {"conv1_1/weights1_1": (3, 3, 3, 6), "conv2_1/weights2_1": (3, 3, 6, 10),
                      "conv3_1/weights3_1": (3, 3, 10, 12), "fc1/weights3_1": (16 * 16 * 12, 16),
                      "softmax/weights3_2": (16, 2)}
    assert json.loads((small_run.checkpoint_dir / "run.json").read_text())["network"]["name"] == "small"


def test_predict_answers_for_another_network_as_numpy_computes_it(small_run, tmp_path):
    image = sorted((small_run.data_dir / "test" / "samoyed").iterdir())[0]
    result = run_script("predict.py", ["--checkpoint-dir", small_run.checkpoint_dir, "--json", image], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)

    tensor = checkpoint_tensor(newest_checkpoint(small_run.checkpoint_dir))
    picture = imf.load_image(str(image), 64).astype(np.float32)
    prepared = picture - np.load(small_run.checkpoint_dir / "mean_image.npy")
    pooled = numpy_small_stack(prepared, tensor)["pool2"].reshape(-1)
    fc1 = np.maximum(pooled @ tensor("fc1/weights3_1") + tensor("fc1/biases3_1"), 0)
    logits = fc1 @ tensor("softmax/weights3_2") + tensor("softmax/biases3_2")
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()

    assert np.allclose([answer["probabilities"][c] for c in ("shiba_inu", "samoyed")], expected, atol=2e-3)


def test_filter_gif_draws_another_networks_views(small_run, tmp_path):
    image = sorted((small_run.data_dir / "test" / "shiba_inu").iterdir())[0]

    result = run_script("filter_gif.py", ["--checkpoint-dir", small_run.checkpoint_dir, "--out", tmp_path / "gifs",
                                          "--image", image], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    written = sorted(os.listdir(tmp_path / "gifs"))
    stem = image.stem
    assert written == sorted(["conv1_1.gif", "conv1_1.png", "conv3_1.gif", "conv3_1.png",
                              f"{stem}_conv2_1.gif", f"{stem}_conv2_1.png", f"{stem}_pool2.gif", f"{stem}_pool2.png",
                              f"{stem}_gradcam.png"]
                             + [f"{stem}_features_{layer}.png" for layer in ("conv1_1", "pool1", "conv2_1", "conv3_1",
                                                                             "pool2")])
    # conv3_1's 12 kernels of 10 inputs, drawn one tile each: 8 columns, 2 rows.
    frame = iio.imread(tmp_path / "gifs" / "conv3_1.png")
    assert frame.shape[1] == 8 * (3 * 12 + 2) + 2


def test_another_network_resumes_from_its_record_without_the_flag(small_run, tmp_path):
    out = tmp_path / "again"
    checkpoints = out / "checkpoints"
    os.makedirs(out)
    shutil.copytree(small_run.checkpoint_dir, checkpoints)

    result = short_training_run(small_run.data_dir, out, epochs=3)

    assert "Resumed from" in result.stdout


# --------------------------------------------------------------------------- a folder of the previous version

def test_a_folder_written_before_networks_were_recorded_reads_as_the_tutorials(short_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(short_run.checkpoint_dir, old)
    run = json.loads((old / "run.json").read_text())
    del run["network"]
    (old / "run.json").write_text(json.dumps(run))
    for index in old.glob("model.ckpt-*.index"):
        recorded = json.loads(checkpoint_tensor(index.with_suffix(""))("run/json").decode())
        del recorded["network"]
        rewrite_checkpoint_tensor(index.with_suffix(""), "run/json", json.dumps(recorded, sort_keys=True).encode())
    image = sorted((short_run.data_dir / "test" / "samoyed").iterdir())[0]

    predicted = run_script("predict.py", ["--checkpoint-dir", old, image], cwd=tmp_path)
    drawn = run_script("filter_gif.py", ["--checkpoint-dir", old, "--out", tmp_path / "gifs", "--image", image],
                       cwd=tmp_path)

    assert predicted.returncode == 0 and predicted.stderr == "", predicted.stderr
    assert drawn.returncode == 0, drawn.stderr
    assert (tmp_path / "gifs" / "conv1_1.gif").exists() and (tmp_path / "gifs" / f"{image.stem}_gradcam.png").exists()
    assert "network" not in json.loads(checkpoint_tensor(newest_checkpoint(old))("run/json").decode())
