"""filter_gif.py --feature-vis: each channel's preferred input, optimised at every snapshot of a real short run."""
import contextlib
import io
import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import feature_vis as fv
import filter_gif as fg
from conftest import run_script
from helpers import GAP, HEADER, checkpoint_tensor, exit_status, numpy_conv, numpy_conv_stack, title_strip

LAST_STEP = 18
STEPS = [0, LAST_STEP]  # --every 9 of the short run's snapshots at steps 0, 2, ..., 18
SIZE = 64
# Fewer ascent steps than the defaults (100, then 20), to keep the test short; enough to pass.
QUICK = ["--every", "9", "--feature-vis-first-steps", "30", "--feature-vis-steps", "20"]


def run_main(argv):
    """``fg.main(argv)`` with its stderr captured: ``(exit status, stderr)``."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = fg.main(argv)
    return status, stderr.getvalue()


@pytest.fixture(scope="module")
def conv2_2(short_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("feature_vis")
    status, stderr = run_main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(out),
                               "--layers", "conv1_1", "--feature-vis", "conv2_2", *QUICK])
    assert status == 0, stderr
    return out, stderr


def snapshot(checkpoint_dir, step):
    return checkpoint_dir / "snapshots" / f"filters-{step}"


def snapshot_params(checkpoint_dir, step):
    """``{scope: (weights, biases)}`` of a snapshot, read with TensorFlow's own reader."""
    tensor = checkpoint_tensor(snapshot(checkpoint_dir, step))
    return {scope: (tensor(f"{scope}/weights{scope[4:]}"), tensor(f"{scope}/biases{scope[4:]}"))
            for scope in ("conv1_1", "conv1_2", "conv2_1", "conv2_2")}


def mean_activations(inputs, checkpoint_dir, step, layer):
    """[input, channel]: each channel's mean ReLU output on each input, through the numpy conv stack."""
    tensor = checkpoint_tensor(snapshot(checkpoint_dir, step))
    return np.stack([numpy_conv_stack(image, tensor)[layer].mean(axis=(0, 1)) for image in inputs])


def tile(frame, index, columns=8):
    top = HEADER + GAP + (index // columns) * (SIZE + GAP)
    left = GAP + (index % columns) * (SIZE + GAP)
    return frame[top:top + SIZE, left:left + SIZE]


# --------------------------------------------------------------------------- what the inputs do

def test_each_live_channels_own_input_excites_it_more_than_the_other_channels_inputs(short_run, conv2_2):
    inputs = np.load(conv2_2[0] / "conv2_2_feature_vis.npy")
    activations = mean_activations(inputs, short_run.checkpoint_dir, LAST_STEP, "conv2_2")

    own = np.diag(activations)
    others = activations.T[~np.eye(len(own), dtype=bool)].reshape(len(own), len(own) - 1)  # row c: channel c
    live = activations.max(axis=0) > 0
    passing = (own > others.max(axis=1)) & (own >= 1.5 * others.mean(axis=1))
    share = passing[live].mean()
    ratio = np.median(own[live] / others.mean(axis=1)[live])
    print(f"live {live.sum()}/{len(live)}, passing {share:.2f}, median own/mean of others {ratio:.1f}")
    assert share >= 0.8, (share, ratio)


def test_each_input_is_convolved_only_into_its_own_channel_as_the_full_layer_would():
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(5, 7, 6, 4)).astype(np.float32)  # 5 inputs of 4 channels, for 5 output channels
    weights = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        own = session.run(fv.own_channel_maps(tf.constant(inputs), tf.constant(weights)))

    expected = np.stack([numpy_conv(inputs[c], weights, np.zeros(5))[..., c] for c in range(5)])
    np.testing.assert_allclose(own, expected, rtol=1e-4, atol=1e-4)


def test_the_inputs_stay_within_the_training_pixels_range(short_run, conv2_2):
    raw = np.load(conv2_2[0] / "conv2_2_feature_vis.npy") + np.load(short_run.checkpoint_dir / "mean_image.npy")

    assert raw.min() >= -1e-3 and raw.max() <= 255 + 1e-3
    assert raw.max() - raw.min() > 100  # and use that range rather than sit at grey


# --------------------------------------------------------------------------- the files

def test_gif_png_and_npy_have_the_grid_and_the_inputs_shapes(conv2_2):
    out, _ = conv2_2
    frames = iio.imread(out / "conv2_2_feature_vis.gif", index=None, mode="RGB")
    cell = SIZE + GAP

    assert frames.shape == (len(STEPS), HEADER + 8 * cell + GAP, 8 * cell + GAP, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "conv2_2_feature_vis.png").convert("RGB")).shape,
                                  frames.shape[1:])
    inputs = np.load(out / "conv2_2_feature_vis.npy")
    assert inputs.shape == (64, SIZE, SIZE, 3) and inputs.dtype == np.float32


def test_the_last_frames_tiles_are_the_saved_inputs_as_pixels(short_run, conv2_2):
    out, _ = conv2_2
    last = np.asarray(Image.open(out / "conv2_2_feature_vis.png").convert("RGB")).astype(int)
    raw = np.load(out / "conv2_2_feature_vis.npy") + np.load(short_run.checkpoint_dir / "mean_image.npy")

    for channel in (0, 9, 63):
        assert np.abs(tile(last, channel) - np.rint(raw[channel])).max() <= 1, channel


def test_each_frame_carries_its_step_and_the_inputs_change_through_training(conv2_2):
    frames = iio.imread(conv2_2[0] / "conv2_2_feature_vis.gif", index=None, mode="RGB").astype(int)
    width = frames.shape[2]
    titles = [title_strip(width, f"conv2_2 feature vis  step {step}") for step in STEPS]

    for frame, title, other in zip(frames, titles, titles[::-1]):
        assert np.abs(frame[:HEADER] - title).mean() < 1
        assert np.abs(frame[:HEADER] - other).mean() > 1
    assert np.abs(frames[0, HEADER:] - frames[-1, HEADER:]).mean() > 5


def test_progress_away_from_a_terminal_is_plain_lines_ending_with_every_snapshot_done(conv2_2):
    _, stderr = conv2_2
    lines = [line for line in stderr.splitlines() if line.startswith("conv2_2 feature vis")]

    assert "\r" not in stderr
    assert lines and "2/2" in lines[-1] and "step 18" in lines[-1]
    assert "dead" not in stderr


# --------------------------------------------------------------------------- dead channels, failures

def save_snapshot(prefix, params):
    """Write ``params`` as a snapshot under the names training gives the variables."""
    graph = tf.Graph()
    with graph.as_default():
        variables = {f"{scope}/{kind}{scope[4:]}": tf.Variable(value)
                     for scope, pair in params.items() for kind, value in zip(("weights", "biases"), pair)}
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(prefix), write_meta_graph=False, write_state=False)


def test_dead_channels_are_listed_in_one_line_and_drawn_flat(short_run, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(short_run.checkpoint_dir, checkpoints)
    params = snapshot_params(checkpoints, LAST_STEP)
    weights, biases = params["conv1_1"]
    weights[..., [3, 7]], biases[[3, 7]] = 0, -1  # negative for any input: these two never fire
    save_snapshot(checkpoints / "snapshots" / f"filters-{LAST_STEP}", params)

    status, stderr = run_main(["--checkpoint-dir", str(checkpoints), "--out", str(tmp_path / "out"),
                               "--layers", "conv1_1", "--feature-vis", "conv1_1", "--every", "9",
                               "--feature-vis-first-steps", "2", "--feature-vis-steps", "2"])

    assert status == 0
    assert "conv1_1: 2 dead channel(s) at step 18, zero for every input tried: 3 7\n" in stderr
    first = iio.imread(tmp_path / "out" / "conv1_1_feature_vis.gif", index=0, mode="RGB")
    last = np.asarray(Image.open(tmp_path / "out" / "conv1_1_feature_vis.png").convert("RGB"))
    assert (tile(last, 3) == 128).all() and (tile(last, 7) == 128).all()  # flat mid-grey
    assert tile(first, 3).std() > 1 and tile(last, 4).std() > 1  # alive at step 0; channel 4 alive throughout


@pytest.mark.parametrize("flags, message", [
    (["--feature-vis", "pool1"], "unknown --feature-vis layer 'pool1' of the tutorial network; available: conv1_1, "
                                 "conv1_2, conv2_1, conv2_2"),
    (["--feature-vis", "conv2_2", "--feature-vis-steps", "0"], "--feature-vis-steps must be at least 1, got 0"),
    (["--feature-vis-first-steps", "0"], "--feature-vis-first-steps must be at least 1, got 0"),
    (["--feature-vis-lr", "-0.1"], "--feature-vis-lr must be positive, got -0.1"),
    (["--feature-vis-jitter", "-1"], "--feature-vis-jitter must be at least 0, got -1"),
    (["--feature-vis-steps", "many"], "argument --feature-vis-steps: invalid int value: 'many'"),
    (["--feature-vis"], "argument --feature-vis: expected at least one argument"),
])
def test_bad_feature_vis_flags_are_one_line_and_exit_2(flags, message, short_run, tmp_path, capsys):
    status = exit_status(fg.main, ["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(tmp_path / "out"),
                                   *flags])

    assert status == 2
    stderr = capsys.readouterr().err
    assert stderr.endswith(f"error: {message}\n") and stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_folder_without_a_mean_image_that_no_checkpoint_records_is_one_line_and_exit_2_before_any_output(
        short_run, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(short_run.checkpoint_dir / "snapshots", checkpoints / "snapshots")
    shutil.copy(short_run.checkpoint_dir / "run.json", checkpoints / "run.json")

    status, stderr = run_main(["--checkpoint-dir", str(checkpoints), "--out", str(tmp_path / "out"),
                               "--feature-vis", "conv1_1"])

    assert status == 2
    assert stderr.endswith(f"error: {checkpoints / 'mean_image.npy'} is missing, and no checkpoint in {checkpoints} "
                           f"records it: not a training checkpoint folder?\n")
    assert not (tmp_path / "out").exists()


def test_the_benchmark_in_its_smallest_configuration_ends_with_its_json_line(tmp_path):
    result = run_script("bench/feature_vis_bench.py", ["--snapshots", "2", "--runs", "8:1", "16:1"], cwd=tmp_path,
                        timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["s8_snapshots"] == report["s16_snapshots"] == 2
    assert 0 < report["s8_first_snapshot_s"] < report["s8_total_s"]
    assert report["s8_s_per_step"] > 0 and report["step_ratio_16_vs_8"] > 0
    assert list(tmp_path.iterdir()) == []  # it worked in a temporary folder of its own
