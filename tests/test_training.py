"""The training run, visualize_convnets.py: graph, summaries, checkpoints, resuming, flags."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import architecture
import cli
import imFunctions as imf
import mirror
import visualize_convnets as vc
from conftest import REPO, run_script, short_training_run, training_args
from helpers import checkpoint_tensor, events, grey_levels, numpy_conv_relu

STEPS_PER_EPOCH = 6  # 44 readable training images of shiba_inu and samoyed, batches of 8


def graph_def(logdir):
    for name in os.listdir(os.path.join(logdir, "train")):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, "train", name)):
            if event.graph_def:
                graph = tf.compat.v1.GraphDef()
                graph.ParseFromString(event.graph_def)
                return graph
    return None


# --------------------------------------------------------------------------- the graph

def test_graph_has_the_tutorials_placeholders_and_variables():
    model = vc.build_graph(32, 2)

    assert model["X"].shape.as_list() == [None, 32, 32, 3] and model["Y_"].shape.as_list() == [None, 2]
    shapes = {v.op.name: v.shape.as_list() for v in model["graph"].get_collection("variables")
              if "Adam" not in v.op.name and "beta" not in v.op.name}
    assert shapes == {
        "conv1_1/weights1_1": [3, 3, 3, 32], "conv1_1/biases1_1": [32],
        "conv1_2/weights1_2": [3, 3, 32, 32], "conv1_2/biases1_2": [32],
        "conv2_1/weights2_1": [3, 3, 32, 64], "conv2_1/biases2_1": [64],
        "conv2_2/weights2_2": [3, 3, 64, 64], "conv2_2/biases2_2": [64],
        "fc1/weights3_1": [8 * 8 * 64, 512], "fc1/biases3_1": [512],
        "softmax/weights3_2": [512, 2], "softmax/biases3_2": [2],
        "global_step": [],
    }


def test_graph_initialises_as_the_tutorial_did():
    model = vc.build_graph(16, 3, seed=0)
    with model["graph"].as_default(), tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        values = {v.op.name: session.run(v) for v in tf.compat.v1.trainable_variables()}

    assert np.abs(values["conv2_2/weights2_2"]).max() <= 0.2 + 1e-6  # truncated at two stddevs of 0.1
    assert 0.08 < values["conv2_2/weights2_2"].std() < 0.1
    assert not values["conv1_1/biases1_1"].any() and (values["fc1/biases3_1"] == 1).all()
    assert (values["softmax/biases3_2"] == 1).all()


def test_dropout_keeps_the_keep_rate_share_of_activations_scaled_up():
    model = vc.build_graph(16, 2, seed=0)
    fc1 = model["graph"].get_tensor_by_name("fc1/relu:0")
    fc1_dropout = model["graph"].get_tensor_by_name("fc1/dropout/SelectV2:0")
    images = np.random.default_rng(0).normal(0, 50, (64, 16, 16, 3)).astype(np.float32)
    with model["graph"].as_default(), tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        before, after = session.run([fc1, fc1_dropout],
                                    {model["X"]: images, model["keepRate1"]: 1.0, model["keepRate2"]: 0.25})

    active = before > 0
    kept = active & (after != 0)
    assert 0.22 < kept.sum() / active.sum() < 0.28
    np.testing.assert_allclose(after[kept], before[kept] / 0.25, rtol=1e-5)


def test_a_tiny_batch_is_overfitted(prepared_data_dir):
    dataset = imf.loadDataset(["shiba_inu", "samoyed"], 32, prepared_data_dir)
    picked = [0, 1, 2, 3, len(dataset.train_x) - 1, len(dataset.train_x) - 2]
    model = vc.build_graph(32, 2, learning_rate=1e-3, seed=0)
    feed = {model["X"]: dataset.train_x[picked], model["Y_"]: dataset.train_y[picked],
            model["keepRate1"]: 1.0, model["keepRate2"]: 1.0}
    with model["graph"].as_default(), tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        losses = [session.run([model["train_step"], model["loss"]], feed)[1] for _ in range(40)]
        accuracy = session.run(model["accuracy"], feed)

    assert losses[-1] < 0.01 * losses[0] and accuracy == 1.0


def test_same_seed_gives_the_same_first_epoch_losses(prepared_data_dir, tmp_path):
    losses = {}
    for name, seed in (("a", 7), ("b", 7), ("other", 8)):
        (tmp_path / name).mkdir()
        run = short_training_run(prepared_data_dir, tmp_path / name, image_size=32, epochs=1, summary_every=1,
                                 seed=seed, skip_demos=True)
        losses[name] = [value.simple_value for _, tag, value in sorted(events(run.logdir, "train"),
                                                                       key=lambda e: e[0]) if tag == "Loss"]

    assert len(losses["a"]) == STEPS_PER_EPOCH
    np.testing.assert_allclose(losses["a"], losses["b"], rtol=1e-5)
    assert not np.allclose(losses["a"], losses["other"], rtol=1e-3)


# --------------------------------------------------------------------------- summaries

def test_both_runs_hold_loss_and_accuracy(short_run):
    for run in ("train", "test"):
        tags = {tag for _, tag, _ in events(short_run.logdir, run)}
        assert {"Loss", "Accuracy"} <= tags, run


def test_summaries_are_written_every_summary_every_steps(short_run):
    for run in ("train", "test"):
        steps = sorted(step for step, tag, _ in events(short_run.logdir, run) if tag == "Loss")
        assert steps == list(range(2, 3 * STEPS_PER_EPOCH + 1, 2)), run


def test_train_run_holds_the_weights1_1_histogram(short_run):
    histograms = [value.histo for _, tag, value in events(short_run.logdir, "train") if tag == "weights1_1"]

    assert len(histograms) == 9 and histograms[0].num == 3 * 3 * 3 * 32


def test_train_run_holds_a_picture_of_the_conv1_1_filters(short_run):
    pictures = [value.image for _, tag, value in events(short_run.logdir, "train") if tag.startswith("conv1_1_filters")]

    assert len(pictures) == 9
    decoded = tf.io.decode_png(pictures[-1].encoded_image_string).numpy()
    assert decoded.shape == (4 * 4 * 8, 8 * 4 * 8, 3)


def test_the_test_run_holds_no_copy_of_the_weights_pictures(short_run):
    assert {tag for _, tag, _ in events(short_run.logdir, "test")} == {"Loss", "Accuracy"}


def test_the_train_run_shows_the_probe_images_feature_maps_on_snapshot_steps(short_run):
    for layer, channels, side in (("conv1_2", 32, 64), ("conv2_2", 64, 32)):
        pictures = {step: value.image for step, tag, value in events(short_run.logdir, "train")
                    if tag == f"feature_maps/{layer}"}
        assert sorted(pictures) == list(range(0, 19, 2)), layer
        rows = channels // 8
        assert tf.io.decode_png(pictures[18].encoded_image_string).numpy().shape == (
            2 + rows * (side + 2), 2 + 8 * (side + 2), 1), layer


def test_the_probe_is_the_first_test_image_of_the_first_class_through_that_steps_weights(short_run):
    dataset = imf.loadDataset(["shiba_inu", "samoyed"], 64, short_run.data_dir)
    probe = dataset.test_x[np.flatnonzero(dataset.test_y[:, 0])[0]]
    tensor = checkpoint_tensor(short_run.checkpoint_dir / "snapshots" / "filters-8")
    conv1_1 = numpy_conv_relu(probe, tensor("conv1_1/weights1_1"), tensor("conv1_1/biases1_1"))
    conv1_2 = numpy_conv_relu(conv1_1, tensor("conv1_2/weights1_2"), tensor("conv1_2/biases1_2"))
    [picture] = [value.image for step, tag, value in events(short_run.logdir, "train")
                 if tag == "feature_maps/conv1_2" and step == 8]

    drawn = tf.io.decode_png(picture.encoded_image_string).numpy()[..., 0].astype(int)
    for channel in range(32):
        top, left = 2 + (channel // 8) * 66, 2 + (channel % 8) * 66
        assert np.abs(drawn[top:top + 64, left:left + 64] - probe_tile(conv1_2[..., channel])).max() <= 1, channel


def probe_tile(activations):
    """A 64-px probe tile as the README states it: no shrinking, the channel on its own scale, 0 black and its
    own largest value white; a channel that is zero everywhere black."""
    return grey_levels(activations, 0.0, activations.max() or 1.0)


def test_every_live_channel_of_the_probe_reaches_white_and_dead_ones_stay_black(short_run):
    for layer, channels, side in (("conv1_2", 32, 64), ("conv2_2", 64, 32)):
        [picture] = [value.image for step, tag, value in events(short_run.logdir, "train")
                     if tag == f"feature_maps/{layer}" and step == 18]
        drawn = tf.io.decode_png(picture.encoded_image_string).numpy()[..., 0]
        brightest = [drawn[2 + (c // 8) * (side + 2):][:side, 2 + (c % 8) * (side + 2):][:, :side].max()
                     for c in range(channels)]
        assert set(brightest) <= {0, 255} and 255 in brightest, (layer, brightest)


def test_train_summaries_measure_the_batch_with_dropout_off_before_its_update(prepared_data_dir, tmp_path):
    # A checkpoint after every step (the clock at 60 microseconds), so each update's starting weights are there.
    run = short_training_run(prepared_data_dir, tmp_path, image_size=32, epochs=1, summary_every=2,
                             checkpoint_every=None, checkpoint_minutes=1e-6, keep_checkpoints=10, skip_demos=True)
    dataset = imf.loadDataset(["shiba_inu", "samoyed"], 32, prepared_data_dir)
    order = vc.epoch_order(1, 0, len(dataset.train_x))
    summaries = {(step, tag): value.simple_value for step, tag, value in events(run.logdir, "train")
                 if tag in ("Loss", "Accuracy")}
    model = vc.build_graph(32, 2)
    measured = {}
    with model["graph"].as_default(), tf.compat.v1.Session() as session:
        for step in (2, 4, 6):
            tf.compat.v1.train.Saver().restore(session, str(run.checkpoint_dir / f"model.ckpt-{step - 1}"))
            picked = order[(step - 1) * 8:step * 8]
            measured[step] = session.run([model["loss"], model["accuracy"]], {
                model["X"]: dataset.train_x[picked], model["Y_"]: dataset.train_y[picked],
                model["keepRate1"]: 1.0, model["keepRate2"]: 1.0})

    for step, (loss, accuracy) in measured.items():
        np.testing.assert_allclose(summaries[step, "Loss"], loss, rtol=1e-4)
        assert summaries[step, "Accuracy"] == pytest.approx(accuracy)
    mean_accuracy = np.mean([summaries[step, "Accuracy"] for step in (2, 4, 6)])
    assert f"Epoch number 1 Training Accuracy: {mean_accuracy:.4f}" in run.stdout.splitlines()


def test_the_graph_in_tensorboard_has_the_tutorials_name_scopes(short_run):
    scopes = {node.name.split("/")[0] for node in graph_def(short_run.logdir).node}

    assert {"X", "Y_", "keepRate1", "keepRate2", "conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2",
            "fc1", "softmax", "cross_entropy", "accuracy", "train"} <= scopes


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_real_tensorboard_serves_both_runs_and_their_tags(short_run):
    port = free_port()
    board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(short_run.logdir),
                              "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, tags = time.monotonic() + 90, {}
        while time.monotonic() < deadline and set(tags) != {"train", "test"}:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as reply:
                    tags = json.load(reply)
            except OSError:
                pass
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as reply:
            runs = json.load(reply)
    finally:
        board.terminate()
        board.wait(timeout=30)

    assert sorted(runs) == ["test", "train"]
    assert {"Loss", "Accuracy"} <= set(tags["train"]) and {"Loss", "Accuracy"} <= set(tags["test"])


# --------------------------------------------------------------------------- output

def test_prints_the_tutorials_lines_each_epoch(short_run):
    lines = short_run.stdout.splitlines()

    for epoch in (1, 2, 3):
        assert any(line.startswith(f"Epoch number {epoch} Training Accuracy: ") for line in lines)
    assert len([line for line in lines if line.startswith("Test Set Accuracy: ")]) == 3


def device_line():
    """The first line a run prints, from what TensorFlow reports in this process."""
    found = tf.config.list_physical_devices("GPU")
    if not found:
        return "No GPU visible to TensorFlow: training on the CPU"
    return f"Training on {len(found)} GPU(s): {', '.join(gpu.name for gpu in found)}"


def test_the_first_line_says_where_it_trains_as_tensorflow_reports_it(short_run):
    assert short_run.stdout.splitlines()[0] == device_line()


TENSORFLOW_LOG_LINE = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} \d\d:\d\d:\d\d)", re.M)


def test_a_run_shows_no_tensorflow_start_up_noise(short_run):
    assert TENSORFLOW_LOG_LINE.findall(short_run.stderr) == []
    assert short_run.stderr.strip()  # the progress lines are there: stderr was read


def test_demos_write_the_convolution_filters_and_pooling_figures(short_run):
    for name in ("convolution_demo.png", "convolution_filters.png", "pooling_demo.png"):
        with Image.open(short_run.figures_dir / name) as figure:
            assert figure.width > 2 * figure.height, name


# --------------------------------------------------------------------------- checkpoints

def test_keeps_the_last_few_full_checkpoints(short_run):
    state = tf.train.get_checkpoint_state(str(short_run.checkpoint_dir))

    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["model.ckpt-12", "model.ckpt-18"]


def test_a_full_checkpoint_restores_into_a_fresh_graph(short_run):
    model = vc.build_graph(64, 2)
    reader = tf.train.load_checkpoint(str(short_run.checkpoint_dir / "model.ckpt-18"))
    with model["graph"].as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.train.Saver().restore(session, str(short_run.checkpoint_dir / "model.ckpt-18"))
        step, filters = session.run([model["global_step"], model["filter1_1"]])

    assert step == 18
    np.testing.assert_array_equal(filters, reader.get_tensor("conv1_1/weights1_1"))


def test_filter_snapshots_are_taken_every_snapshot_every_steps(short_run):
    snapshots = sorted(int(name.split("-")[1].split(".")[0])
                       for name in os.listdir(short_run.checkpoint_dir / "snapshots") if name.endswith(".index"))

    assert snapshots == list(range(0, 19, 2))


def test_a_filter_snapshot_holds_only_the_conv_layers_and_is_under_1_mb(short_run):
    prefix = short_run.checkpoint_dir / "snapshots" / "filters-18"
    names = set(tf.train.load_checkpoint(str(prefix)).get_variable_to_shape_map())
    size = sum(os.path.getsize(short_run.checkpoint_dir / "snapshots" / f)
               for f in os.listdir(short_run.checkpoint_dir / "snapshots") if f.startswith("filters-18."))

    assert names == {f"{scope}/{kind}{scope[4:]}" for scope in ("conv1_1", "conv1_2", "conv2_1", "conv2_2")
                     for kind in ("weights", "biases")}
    assert size < 1_000_000


def test_the_checkpoint_folder_describes_its_run(short_run):
    run = json.loads((short_run.checkpoint_dir / "run.json").read_text())
    mean_image = np.load(short_run.checkpoint_dir / "mean_image.npy")
    dataset = imf.loadDataset(["shiba_inu", "samoyed"], 64, short_run.data_dir)

    assert (run["classes"], run["image_size"], run["seed"]) == (["shiba_inu", "samoyed"], 64, 1)
    np.testing.assert_allclose(mean_image, dataset.mean_image)


def copy_run(run, directory):
    """A second run folder holding ``run``'s checkpoints, with its own logs."""
    directory.mkdir()
    shutil.copytree(run.checkpoint_dir, directory / "checkpoints")
    return directory


def test_a_resumed_run_continues_up_to_its_total_epochs(short_run, tmp_path):
    directory = copy_run(short_run, tmp_path / "more")

    resumed = short_training_run(short_run.data_dir, directory, epochs=4, skip_demos=True)

    assert f"Resumed from {directory / 'checkpoints' / 'model.ckpt-18'} at global step 18 (epoch 4)" in resumed.stdout
    assert "Epoch number 3 " not in resumed.stdout and "Epoch number 4 " in resumed.stdout
    assert resumed.stdout.splitlines()[-1] == "Training finished: 4 epochs, global step 24"
    assert sorted(name for name in os.listdir(directory / "checkpoints") if name.endswith(".index")) == [
        "model.ckpt-18.index", "model.ckpt-24.index"]  # the earlier run's model.ckpt-12 counted towards the 2 kept


def test_resuming_with_other_settings_is_refused(short_run, tmp_path):
    directory = copy_run(short_run, tmp_path / "other")

    result = run_script("visualize_convnets.py", training_args(short_run.data_dir, directory, seed=2, skip_demos=True),
                        cwd=directory)

    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (f"visualize_convnets.py: error: {directory / 'checkpoints'} holds a run "
                                              f"with seed 1, not 2: use the same settings or another --checkpoint-dir")


def test_an_unreadable_latest_checkpoint_falls_back_to_the_one_before(short_run, tmp_path):
    directory = copy_run(short_run, tmp_path / "damaged")
    (directory / "checkpoints" / "model.ckpt-18.data-00000-of-00001").write_bytes(b"damaged")

    result = run_script("visualize_convnets.py", training_args(short_run.data_dir, directory, skip_demos=True),
                        cwd=directory)

    assert result.returncode == 0, result.stderr
    assert "Warning: checkpoint" in result.stderr and "model.ckpt-18 is unreadable" in result.stderr
    assert "at global step 12 (epoch 3)" in result.stdout
    assert result.stdout.splitlines()[-1] == "Training finished: 3 epochs, global step 18"


def test_sigterm_saves_a_checkpoint_and_the_next_run_continues_from_it(prepared_data_dir, tmp_path):
    args = training_args(prepared_data_dir, tmp_path, epochs=1000, skip_demos=True)
    training = subprocess.Popen([sys.executable, os.path.join(REPO, "visualize_convnets.py"), *map(str, args)],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = []
    for line in training.stdout:
        output.append(line)
        if line.startswith("Saved checkpoint"):
            training.send_signal(signal.SIGTERM)
            break
    output += training.stdout.readlines()
    assert training.wait(timeout=120) == 128 + signal.SIGTERM
    stopped_at = int(output[-2].rsplit(" ", 1)[1])  # "Stopping on SIGTERM at global step N"
    assert output[-1].strip().endswith(f"model.ckpt-{stopped_at}") and stopped_at > STEPS_PER_EPOCH

    finish_epoch = stopped_at // STEPS_PER_EPOCH + 1
    resumed = short_training_run(prepared_data_dir, tmp_path, epochs=finish_epoch, skip_demos=True)

    assert f"at global step {stopped_at} (epoch {finish_epoch})" in resumed.stdout
    assert resumed.stdout.splitlines()[-1] == (
        f"Training finished: {finish_epoch} epochs, global step {finish_epoch * STEPS_PER_EPOCH}")


def test_sigterm_before_training_stops_the_run_at_once(tmp_path):
    with mirror.silent_server() as url:  # a download that would hang for its whole timeout
        training = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "visualize_convnets.py"), "--data-dir", str(tmp_path / "data"),
             "--skip-demos"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "OXFORD_PETS_URL": url})
        first_line = training.stdout.readline()
        time.sleep(0.5)
        training.send_signal(signal.SIGTERM)
        status = training.wait(timeout=10)

    assert first_line == device_line() + "\n"
    assert status == 128 + signal.SIGTERM
    assert training.stdout.read() == "Stopped by SIGTERM before training began; nothing to save\n"


def test_the_data_order_of_an_epoch_is_the_same_when_it_is_rerun():
    assert vc.epoch_order(5, 3, 40).tolist() == vc.epoch_order(5, 3, 40).tolist()
    assert vc.epoch_order(5, 3, 40).tolist() != vc.epoch_order(5, 4, 40).tolist()


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("flags, message", [
    (["--classes", "shiba_inu", "corgi"], "unknown class 'corgi'; valid classes: Abyssinian, american_bulldog,"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--test-fraction", "1"], "--test-fraction must be between 0 and 1 (exclusive), got 1.0"),
    (["--test-fraction", "0"], "--test-fraction must be between 0 and 1 (exclusive), got 0.0"),
    (["--keep-conv", "0"], "--keep-conv must be in (0, 1], got 0.0"),
    (["--keep-fc", "1.5"], "--keep-fc must be in (0, 1], got 1.5"),
    (["--logdir", "a_file/logs"], "cannot write to a_file/logs: "),
    (["--checkpoint-dir", "a_file/checkpoints"], "cannot write to a_file/checkpoints: "),
    (["--batch-size", "ten"], "argument --batch-size: invalid int value: 'ten'"),
    (["--seed", "-1"], "--seed must be in 0..2147483647, got -1"),
    (["--seed", "2147483648"], "--seed must be in 0..2147483647, got 2147483648"),
    (["--learning-rate", "inf"], "--learning-rate must be a finite positive number, got inf"),
    (["--learning-rate", "nan"], "--learning-rate must be a finite positive number, got nan"),
    (["--learning-rate", "0"], "--learning-rate must be a finite positive number, got 0.0"),
    (["--checkpoint-minutes", "-1"], "--checkpoint-minutes must be 0 or more, got -1.0"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be at least 1, got 0"),
    (["--image-size", "100000"], "--image-size 100000 with --batch-size 10 needs about "),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(flags, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("in the way")

    with pytest.raises(SystemExit) as exit_status:
        vc.main(flags)

    error = capsys.readouterr().err
    assert exit_status.value.code == 2
    assert error.count("\n") == 1 and error.startswith(f"visualize_convnets.py: error: {message}")
    assert os.listdir(tmp_path) == ["a_file"]


def test_a_run_too_large_for_the_memory_is_refused_naming_the_figures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(cli.UsageError) as error:
        vc.check_memory(1000, 50, n_images=400, network=architecture.TUTORIAL, available=8 * 2 ** 30)

    assert str(error.value) == ("--image-size 1000 with --batch-size 50 needs about 82.0 GB of memory (the dataset "
                                "6.0 GB, the graph's variables 32.8 GB, a training step 43.2 GB); this machine has 8.6 GB")
    vc.check_memory(224, 10, n_images=400, network=architecture.TUTORIAL, available=8 * 2 ** 30)  # the tutorial's run fits in 8 GiB


def test_bad_input_from_the_command_line_prints_only_the_error(tmp_path):
    result = run_script("visualize_convnets.py", ["--keep-fc", "0"], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr == "visualize_convnets.py: error: --keep-fc must be in (0, 1], got 0.0\n"
    assert os.listdir(tmp_path) == []
