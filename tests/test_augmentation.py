"""--augment: the article's "resizing, scaling and rotating" between X and conv1_1, on the training step alone."""
import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_script, short_training_run
from helpers import checkpoint_tensor, events, newest_checkpoint, numpy_forward

import imFunctions as imf
import visualize_convnets as vc

SIZE = 32


def photos(count, seed=0):
    """Photos no mirror maps onto themselves: a bright square in the left half, noise over everything."""
    rng = np.random.default_rng(seed)
    pictures = rng.uniform(0, 60, (count, SIZE, SIZE, 3)).astype(np.float32)
    pictures[:, 4:12, 2:10] += 180
    return pictures


def augmenting_graph(names, mean_image):
    return vc.build_graph(SIZE, 2, seed=0, augment=names, mean_image=mean_image)


def network_inputs(model, centred, step, augmenting=True):
    with model["graph"].as_default(), tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        feed = {model["X"]: centred}
        if augmenting:
            feed.update({model["augmenting"]: True, model["augment_seed"]: [1, step]})
        return session.run(model["inputs"], feed)


def test_a_flip_is_numpys_mirror_of_the_raw_photo_then_centred():
    raw = photos(16)
    mean_image = raw.mean(axis=0)
    model = augmenting_graph(["flip"], mean_image)

    inputs = network_inputs(model, raw - mean_image, step=3)

    mirrored = raw[:, :, ::-1] - mean_image
    as_is = raw - mean_image
    flipped = [bool(np.allclose(got, mirror, atol=1e-3)) for got, mirror in zip(inputs, mirrored)]
    kept = [bool(np.allclose(got, plain, atol=1e-3)) for got, plain in zip(inputs, as_is)]
    assert all(f != k for f, k in zip(flipped, kept))  # each image exactly one of the two
    assert 0 < sum(flipped) < 16  # a coin per image, not one for the batch


def test_crops_and_rotations_stay_within_the_photos_levels_and_change_each_image():
    raw = photos(8)
    mean_image = raw.mean(axis=0)
    model = augmenting_graph(["crop", "rotate"], mean_image)

    restored = network_inputs(model, raw - mean_image, step=0) + mean_image

    assert restored.min() >= raw.min() - 1e-3 and restored.max() <= raw.max() + 1e-3  # bilinear, corners reflected
    assert all(not np.allclose(got, photo, atol=1) for got, photo in zip(restored, raw))


def test_the_same_step_draws_the_same_augmentation_and_another_step_another():
    raw = photos(8)
    mean_image = raw.mean(axis=0)
    model = augmenting_graph(["flip", "crop", "rotate"], mean_image)

    first, again, later = (network_inputs(model, raw - mean_image, step) for step in (5, 5, 6))

    assert np.array_equal(first, again)
    assert not np.allclose(first, later)


def test_without_the_training_feed_the_network_sees_the_photos_as_they_are():
    raw = photos(4)
    mean_image = raw.mean(axis=0)
    model = augmenting_graph(["flip", "crop", "rotate"], mean_image)

    assert np.array_equal(network_inputs(model, raw - mean_image, 0, augmenting=False), raw - mean_image)


@pytest.mark.parametrize("flags, message", [
    (["--augment", "flip,blur"], "unknown augmentation 'blur'; choose from flip, crop, rotate"),
    (["--augment", "flip", "--image-size", "7"], "--augment needs an --image-size of at least 8, got 7"),
])
def test_bad_augment_flags_are_one_line_and_exit_2(flags, message, tmp_path):
    result = run_script("visualize_convnets.py", [*flags, "--data-dir", tmp_path / "data"], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------- in training runs

@pytest.fixture(scope="module")
def augmented_run(prepared_data_dir, tmp_path_factory):
    """A 2-epoch run with every augmentation, dropout off, and a learning rate so small that the weights stay
    what they were initialised to: each step's measured Loss is then the plain network's on its batch."""
    return short_training_run(prepared_data_dir, tmp_path_factory.mktemp("augmented"), augment=True, keep_conv=1,
                              keep_fc=1, learning_rate=1e-30, summary_every=1, epochs=2)


def test_the_measured_training_loss_is_the_unaugmented_batchs(augmented_run):
    dataset = imf.loadDataset(["shiba_inu", "samoyed"], 64, str(augmented_run.data_dir))
    tensor = checkpoint_tensor(newest_checkpoint(augmented_run.checkpoint_dir))
    order = np.random.default_rng([1, 0]).permutation(len(dataset.train_x))  # epoch 0 of seed 1, batches of 8
    batch = order[:8]
    losses = []
    for image, label in zip(dataset.train_x[batch], dataset.train_y[batch]):
        logits = numpy_forward(image, tensor)[2]
        losses.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits @ label)
    measured = {step: value.simple_value for step, tag, value in events(augmented_run.logdir, "train") if tag == "Loss"}

    assert math.isclose(measured[1], float(np.mean(losses)), rel_tol=1e-3)


def test_the_augmentation_is_recorded_per_segment_and_drawn_with_the_demos(augmented_run):
    run = json.loads((augmented_run.checkpoint_dir / "run.json").read_text())
    demo = iio.imread(augmented_run.figures_dir / "augment_demo.png")

    assert run["segments"] == [{"from_step": 0, "precision": "float32", "augment": ["flip", "crop", "rotate"]}]
    assert demo.ndim == 3 and demo.shape[2] == 3


def test_a_resumed_augmented_run_ends_with_the_weights_of_one_that_ran_through(prepared_data_dir, tmp_path):
    flags = dict(augment="crop,rotate,flip", keep_conv=1, keep_fc=1, skip_demos=True)
    for name in ("through", "stopped"):
        (tmp_path / name).mkdir()
    through = short_training_run(prepared_data_dir, tmp_path / "through", epochs=2, checkpoint_every=None, **flags)
    stopped = short_training_run(prepared_data_dir, tmp_path / "stopped", epochs=1, **flags)
    resumed = short_training_run(prepared_data_dir, tmp_path / "stopped", epochs=2, checkpoint_every=None, **flags)
    assert "Resumed from" in resumed.stdout and stopped.checkpoint_dir == resumed.checkpoint_dir

    final = {run: checkpoint_tensor(run.checkpoint_dir / "model.ckpt-12") for run in (through, resumed)}
    for name in ("conv1_1/weights1_1", "conv2_2/weights2_2", "fc1/weights3_1", "softmax/weights3_2"):
        assert np.allclose(final[through](name), final[resumed](name), rtol=0, atol=1e-6), name
