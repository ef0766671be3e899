"""Never lose a run: the checkpoint folder as the truth, one run per folder, leftovers, the clock,
divergence and full disks. Every case runs visualize_convnets.py (or filter_gif.py) as a user would.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import filter_gif as fg
import files
import visualize_convnets as vc
from conftest import REPO, run_script, shell_command, short_training_run, training_args
from helpers import decompression_bomb_png

STEPS_PER_EPOCH = 6  # 44 readable training images of shiba_inu and samoyed, batches of 8


@pytest.fixture(scope="module")
def run32(prepared_data_dir, tmp_path_factory):
    """A real 3-epoch run at 32 px (small checkpoints, cheap to copy): checkpoints 12 and 18 kept."""
    return short_training_run(prepared_data_dir, tmp_path_factory.mktemp("run32"), image_size=32, skip_demos=True)


def copy_of(run, directory):
    directory.mkdir()
    shutil.copytree(run.checkpoint_dir, directory / "checkpoints")
    return directory


def train_again(run, directory, **flags):
    """visualize_convnets.py on ``directory``'s checkpoints with ``run``'s settings (changed by ``flags``)."""
    settings = {"image_size": 32, "skip_demos": True, **flags}
    return run_script("visualize_convnets.py", training_args(run.data_dir, directory, **settings), cwd=directory)


def error_line(result):
    """The last line of stderr, which must be the only line after the progress output."""
    return result.stderr.strip().splitlines()[-1]


def step_files(folder, name):
    """The steps of the ``<name>-<step>`` checkpoints in ``folder`` whose index file is written, in order."""
    return sorted(int(match.group(1)) for match in (re.fullmatch(rf"{re.escape(name)}-(\d+)\.index", entry)
                                                    for entry in os.listdir(folder)) if match)


def checkpoint_steps(directory):
    return step_files(directory / "checkpoints", "model.ckpt")


def saved_steps(result):
    return [int(line.rsplit("-", 1)[1]) for line in result.stdout.splitlines() if line.startswith("Saved checkpoint")]


# --------------------------------------------------------------------------- resume from the files

@pytest.mark.parametrize("state", [
    None,  # deleted
    b"\x00\x9f\xff binary \x01",
    b"model_checkpoint_path: {{ not a proto",
    b'model_checkpoint_path: "model.ckpt-12"\n',  # the usual hand roll-back
])
def test_a_missing_garbled_or_hand_edited_state_file_is_rebuilt_and_the_run_resumes(state, run32, tmp_path):
    directory = copy_of(run32, tmp_path / "run")
    state_file = directory / "checkpoints" / "checkpoint"
    state_file.unlink()
    if state is not None:
        state_file.write_bytes(state)

    result = train_again(run32, directory, epochs=3)

    assert result.returncode == 0, result.stderr
    assert f"Resumed from {directory / 'checkpoints' / 'model.ckpt-18'} at global step 18" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"Warning: {state_file} was ")
    rebuilt = tf.train.get_checkpoint_state(str(directory / "checkpoints"))
    assert os.path.basename(rebuilt.model_checkpoint_path) == "model.ckpt-18"
    assert [os.path.basename(p) for p in rebuilt.all_model_checkpoint_paths] == ["model.ckpt-12", "model.ckpt-18"]


def test_a_folder_whose_checkpoints_are_all_unreadable_never_starts_over(run32, tmp_path):
    directory = copy_of(run32, tmp_path / "run")
    for step in (12, 18):
        (directory / "checkpoints" / f"model.ckpt-{step}.data-00000-of-00001").write_bytes(b"damaged")
    snapshots_before = sorted(os.listdir(directory / "checkpoints" / "snapshots"))

    result = train_again(run32, directory, epochs=3)

    assert result.returncode == 1
    assert error_line(result) == (f"visualize_convnets.py: error: no readable checkpoint in {directory / 'checkpoints'}; "
                                  f"move it aside to start afresh")
    assert checkpoint_steps(directory) == [12, 18]
    assert sorted(os.listdir(directory / "checkpoints" / "snapshots")) == snapshots_before


def interrupted_before_its_last_checkpoint(run, directory):
    """A copy of ``run`` as if killed after step 18's snapshot but before its checkpoint: model.ckpt-18 gone."""
    copy_of(run, directory)
    shutil.copytree(run.logdir, directory / "logs")
    for name in os.listdir(directory / "checkpoints"):
        if name.startswith("model.ckpt-18."):
            os.remove(directory / "checkpoints" / name)
    return directory


def test_a_resumed_run_tells_tensorboard_to_drop_what_was_logged_after_its_checkpoint(run32, tmp_path):
    directory = interrupted_before_its_last_checkpoint(run32, tmp_path / "run")

    result = train_again(run32, directory, epochs=3)

    assert result.returncode == 0 and "at global step 12 (epoch 3)" in result.stdout
    for run in ("train", "test"):
        accumulator = event_accumulator.EventAccumulator(str(directory / "logs" / run), purge_orphaned_data=True)
        accumulator.Reload()
        steps = [event.step for event in accumulator.Scalars("Loss")]
        assert steps == list(range(2, 19, 2)), run  # once each: the interrupted run's 14..18 purged


def test_snapshots_taken_after_the_restored_checkpoint_are_dropped(run32, tmp_path):
    directory = interrupted_before_its_last_checkpoint(run32, tmp_path / "run")

    result = train_again(run32, directory, epochs=2)  # restores step 12 and has nothing left to train

    assert result.returncode == 0, result.stderr
    assert "Removed 3 filter snapshot(s) after step 12" in result.stdout
    assert step_files(directory / "checkpoints" / "snapshots", "filters") == list(range(0, 13, 2))


# --------------------------------------------------------------------------- run.json

@pytest.mark.parametrize("content", [None, "[1, 2]", '{"seed": "one"}', "not json"])
def test_a_missing_or_unreadable_run_json_is_recovered_from_the_checkpoint(content, run32, tmp_path):
    directory = copy_of(run32, tmp_path / "run")
    run_file = directory / "checkpoints" / "run.json"
    original = json.loads(run_file.read_text())
    run_file.unlink()
    if content is not None:
        run_file.write_text(content)

    result = train_again(run32, directory, epochs=3, seed=None)  # no --seed: it must come from the checkpoint

    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"Warning: {run_file} is ")
    assert "continuing the run model.ckpt-18 records (seed 1)" in warnings[0]
    assert "seed 1" in result.stdout and json.loads(run_file.read_text()) == original


def test_without_run_json_another_image_size_is_refused_and_the_folder_stays_usable(run32, tmp_path):
    directory = copy_of(run32, tmp_path / "run")
    (directory / "checkpoints" / "run.json").unlink()

    refused = train_again(run32, directory, epochs=3, image_size=48)
    resumed = train_again(run32, directory, epochs=3)

    assert refused.returncode == 2
    assert error_line(refused) == (f"visualize_convnets.py: error: {directory / 'checkpoints'} holds a run with "
                                   f"image_size 32, not 48: use the same settings or another --checkpoint-dir")
    assert resumed.returncode == 0 and "at global step 18" in resumed.stdout


def earlier_version_checkpoint(directory, image_size, step=6):
    """A full checkpoint as versions before the run was recorded in it wrote them: the graph's variables only."""
    model = vc.build_graph(image_size, 2, seed=3)
    with model["graph"].as_default(), tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        session.run(model["global_step"].assign(step))
        tf.compat.v1.train.Saver().save(session, str(directory / "checkpoints" / "model.ckpt"), global_step=step,
                                        write_meta_graph=False)


def test_checkpoints_that_record_no_run_and_have_no_run_json_are_refused(run32, tmp_path):
    directory = tmp_path / "run"
    (directory / "checkpoints").mkdir(parents=True)
    earlier_version_checkpoint(directory, 32)

    result = train_again(run32, directory, epochs=3, seed=None)

    assert result.returncode == 2
    assert error_line(result) == (
        f"visualize_convnets.py: error: {directory / 'checkpoints'} holds checkpoints, but "
        f"{directory / 'checkpoints' / 'run.json'} is missing and they do not record their run's settings: "
        f"put its run.json back, or use another --checkpoint-dir")
    assert sorted(os.listdir(directory / "checkpoints")) == [
        ".training.lock", "checkpoint", "model.ckpt-6.data-00000-of-00001", "model.ckpt-6.index"]


def test_a_checkpoint_whose_shapes_do_not_fit_the_graph_is_one_line_and_changes_nothing(run32, tmp_path):
    directory = tmp_path / "run"
    (directory / "checkpoints").mkdir(parents=True)
    earlier_version_checkpoint(directory, 32)
    claimed = {**json.loads((run32.checkpoint_dir / "run.json").read_text()), "image_size": 48}
    (directory / "checkpoints" / "run.json").write_text(json.dumps(claimed))  # a hand edit: 48 px

    result = train_again(run32, directory, epochs=3, image_size=48)

    assert result.returncode == 2
    assert error_line(result) == (
        f"visualize_convnets.py: error: checkpoint {directory / 'checkpoints' / 'model.ckpt-6'} holds "
        f"fc1/weights3_1 of shape [4096, 512], but this run's graph needs [9216, 512]: it was trained with other "
        f"settings (its run.json says which); use them or another --checkpoint-dir")
    assert json.loads((directory / "checkpoints" / "run.json").read_text()) == claimed
    assert not (directory / "checkpoints" / "mean_image.npy").exists()
    assert not list((directory / "logs").rglob("events.*"))


# --------------------------------------------------------------------------- one run per folder

def test_a_second_run_is_refused_naming_the_first_and_kill_9_loses_nothing(run32, prepared_data_dir, tmp_path):
    args = training_args(prepared_data_dir, tmp_path, image_size=32, epochs=1000, skip_demos=True)
    first = subprocess.Popen([sys.executable, os.path.join(REPO, "visualize_convnets.py"), *map(str, args)],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in first.stdout:
            if line.startswith("Saved checkpoint"):
                break
        second = run_script("visualize_convnets.py", args, cwd=tmp_path)
        while_training = fg.main(["--checkpoint-dir", str(tmp_path / "checkpoints"), "--out", str(tmp_path / "gifs"),
                                  "--layers", "conv1_1"])
        # kill -9 at a moment that falls mid-step, mid-save or mid-snapshot; seeded, so a failure can be rerun
        time.sleep(np.random.default_rng(9).uniform(0, 1.5))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    assert second.returncode == 2
    assert error_line(second) == (f"visualize_convnets.py: error: {tmp_path / 'checkpoints'} is in use by another "
                                  f"training run (PID {first.pid}): wait for it or stop it, or use another "
                                  f"--checkpoint-dir and --logdir")
    assert while_training == 0  # filter_gif reads a folder being trained into
    newest = checkpoint_steps(tmp_path)[-1]
    finish = newest // STEPS_PER_EPOCH + 1
    resumed = short_training_run(prepared_data_dir, tmp_path, image_size=32, epochs=finish, skip_demos=True)
    assert f"at global step {newest} " in resumed.stdout
    assert resumed.stdout.splitlines()[-1] == f"Training finished: {finish} epochs, global step {finish * 6}"
    assert not [name for name in os.listdir(tmp_path / "checkpoints") if "tempstate" in name]


# --------------------------------------------------------------------------- leftovers

def test_leftovers_of_killed_saves_are_removed_at_start(run32, tmp_path):
    directory = copy_of(run32, tmp_path / "run")
    checkpoints = directory / "checkpoints"
    leftovers = [checkpoints / "model.ckpt-24.data-00000-of-00001.tempstate8075498964573118855",
                 checkpoints / "snapshots" / "filters-20.data-00000-of-00001.tempstate42",
                 checkpoints / ("checkpoint.tmp" + "0123456789abcdef" * 2),
                 checkpoints / ".run.json.tmp-4242-0a1b2c3d.json",
                 checkpoints / "model.ckpt-30.data-00000-of-00001"]  # its index never written: a save cut short
    for path in leftovers:
        path.write_bytes(bytes(250_000))
    cache_leftover = run32.data_dir / "cache" / "shiba_inu-samoyed-00000000-32px-000000000000.tmp-99999-abcdef01"
    cache_leftover.mkdir()

    result = train_again(run32, directory, epochs=3)

    assert result.returncode == 0, result.stderr
    assert ("Removed what an interrupted run left: 5 temporary file(s) (1.2 MB) and 1 half-written dataset cache(s)"
            in result.stdout)
    assert not any(path.exists() for path in leftovers) and not cache_leftover.exists()


# --------------------------------------------------------------------------- checkpoints by the clock

def test_checkpoints_come_by_the_clock_not_by_the_epoch(run32, tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()

    result = train_again(run32, directory, epochs=3, checkpoint_every=None, checkpoint_minutes=1e-6)

    assert result.returncode == 0, result.stderr
    assert saved_steps(result) == list(range(1, 19))  # every step outlasts 60 microseconds


def test_at_the_defaults_a_short_run_saves_once_at_its_end(run32, tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()

    result = train_again(run32, directory, epochs=3, checkpoint_every=None)

    assert result.returncode == 0, result.stderr
    assert saved_steps(result) == [18] and checkpoint_steps(directory) == [18]


def test_the_clock_is_the_default_and_checkpoint_every_is_an_option():
    args = vc.build_parser().parse_args([])

    assert (args.checkpoint_minutes, args.checkpoint_every) == (10.0, None)
    assert vc.build_parser().parse_args(["--checkpoint-every", "2"]).checkpoint_every == 2


def test_a_run_takes_a_last_snapshot_at_its_end(run32, tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()

    result = train_again(run32, directory, epochs=3, snapshot_every=4)

    assert result.returncode == 0, result.stderr
    assert step_files(directory / "checkpoints" / "snapshots", "filters") == [0, 4, 8, 12, 16, 18]


# --------------------------------------------------------------------------- divergence

def test_a_diverging_run_stops_in_one_line_and_keeps_its_last_finite_checkpoint(run32, tmp_path):
    directory = copy_of(run32, tmp_path / "run")

    result = train_again(run32, directory, epochs=5, learning_rate=1e30)

    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith("visualize_convnets.py: error: training diverged: the ")
    assert ("(a --learning-rate too high for the data, here 1e+30, is the usual cause); the last checkpoint, "
            f"{directory / 'checkpoints' / 'model.ckpt-18'}, holds the weights from before") in line
    assert checkpoint_steps(directory) == [12, 18]
    reader = tf.train.load_checkpoint(str(directory / "checkpoints" / "model.ckpt-18"))
    assert all(np.isfinite(reader.get_tensor(name)).all() for name in reader.get_variable_to_shape_map()
               if reader.get_variable_to_dtype_map()[name].is_floating)


# --------------------------------------------------------------------------- full disks

def test_a_full_disk_during_a_checkpoint_is_one_line_and_leaves_no_half_written_file(small_disk, prepared_data_dir,
                                                                                    run32, tmp_path):
    args = training_args(prepared_data_dir, tmp_path, image_size=32, skip_demos=True)
    checkpoints = tmp_path / "checkpoints"
    # Room for the snapshots (262 KB each), not for a 25 MB checkpoint.
    result = small_disk(checkpoints, "4m", shell_command("visualize_convnets.py", args)
                        + f" ; status=$? ; ls -a '{checkpoints}' '{checkpoints}/snapshots' ; exit $status")

    checkpoint_bytes = sum(path.stat().st_size for path in run32.checkpoint_dir.glob("model.ckpt-18.*"))
    assert result.returncode == 1, result.stderr
    assert error_line(result).startswith(f"visualize_convnets.py: error: disk full: cannot write a checkpoint in "
                                         f"{checkpoints}: it needs {files.human_bytes(checkpoint_bytes)}, ")
    assert "tempstate" not in result.stdout  # the folder's listing, taken before the small disk went away


def test_a_full_disk_during_a_checkpoint_shows_no_tensorflow_log_before_its_one_line(small_disk, prepared_data_dir,
                                                                                    tmp_path):
    args = training_args(prepared_data_dir, tmp_path, image_size=32, skip_demos=True)
    result = small_disk(tmp_path / "checkpoints", "4m", shell_command("visualize_convnets.py", args))

    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("visualize_convnets.py: error: disk full: cannot write a checkpoint in ")
    assert not [line for line in lines if re.match(r"[IWEF]\d{4} \d\d:\d\d:\d\d", line)], result.stderr


def test_a_full_disk_for_the_dataset_cache_is_a_warning_and_training_goes_on(small_disk, prepared_data_dir, tmp_path):
    data_dir = tmp_path / "data"
    used_kb = int(subprocess.run(["du", "-sk", "--exclude=cache", str(prepared_data_dir)], capture_output=True,
                                 text=True).stdout.split()[0])
    args = training_args(data_dir, tmp_path, image_size=40, epochs=1, skip_demos=True)
    # Room for the images (hard links kept), not for the 40-px cache of 260 KB.
    result = small_disk(data_dir, f"{used_kb + 100}k",
                        f"tar -C '{prepared_data_dir}' --exclude=./cache -cf - . | tar -C '{data_dir}' -xf - && "
                        + shell_command("visualize_convnets.py", args))

    assert result.returncode == 0, result.stderr
    assert f"Warning: disk full: cannot write the dataset cache in {data_dir / 'cache'}: it needs " in result.stderr
    assert "Training finished: 1 epochs, global step 6" in result.stdout


def test_a_full_disk_never_replaces_a_good_gif_with_a_broken_one(small_disk, run32, tmp_path):
    out = tmp_path / "gifs"
    args = ["--checkpoint-dir", run32.checkpoint_dir, "--out", out, "--layers", "conv1_1"]
    command = shell_command("filter_gif.py", args)
    result = small_disk(out, "512k", f"{command} >/dev/null && cp '{out}/conv1_1.gif' '{tmp_path}/good.gif' && "
                                     f"(cat /dev/zero > '{out}/filler' 2>/dev/null; true) && {command} ; "
                                     f"status=$? ; cmp '{out}/conv1_1.gif' '{tmp_path}/good.gif' && "
                                     f"ls -a '{out}' && exit $status")

    assert result.returncode == 1, result.stdout + result.stderr
    assert error_line(result).startswith(f"filter_gif.py: error: disk full: cannot write conv1_1.gif in {out}: it needs ")
    assert sorted(result.stdout.split()) == [".", "..", "conv1_1.gif", "conv1_1.png", "filler"]


# --------------------------------------------------------------------------- the readers: filter_gif

def test_filter_gif_recovers_an_unreadable_run_json_and_mean_image_from_the_checkpoint(run32, tmp_path):
    checkpoints = copy_of(run32, tmp_path / "run") / "checkpoints"
    (checkpoints / "run.json").write_text('"not an object"')
    (checkpoints / "mean_image.npy").write_bytes(b"garbage")
    image = next((run32.data_dir / "test" / "samoyed").iterdir())

    status = fg.main(["--checkpoint-dir", str(checkpoints), "--out", str(tmp_path / "out"), "--layers", "conv1_1",
                      "--image", str(image)])

    assert status == 0 and (tmp_path / "out" / f"{image.stem}_features_pool2.png").exists()


def test_filter_gif_in_a_folder_that_records_no_run_is_one_line_naming_the_file(run32, tmp_path):
    directory = tmp_path / "run"
    (directory / "checkpoints").mkdir(parents=True)
    shutil.copytree(run32.checkpoint_dir / "snapshots", directory / "checkpoints" / "snapshots")
    earlier_version_checkpoint(directory, 32)
    (directory / "checkpoints" / "run.json").write_bytes(b"\x00garbage")
    image = next((run32.data_dir / "test" / "samoyed").iterdir())

    result = run_script("filter_gif.py", ["--checkpoint-dir", directory / "checkpoints", "--out", tmp_path / "out",
                                          "--image", image], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr == (f"filter_gif.py: error: {directory / 'checkpoints' / 'run.json'} is not JSON, and no "
                             f"checkpoint in {directory / 'checkpoints'} records it: not a training checkpoint folder?\n")


def test_filter_gif_refuses_a_decompression_bomb_image_in_one_line(run32, tmp_path):
    decompression_bomb_png(tmp_path / "bomb.png")

    result = run_script("filter_gif.py", ["--checkpoint-dir", run32.checkpoint_dir, "--out", tmp_path / "out",
                                          "--image", tmp_path / "bomb.png"], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.startswith(f"filter_gif.py: error: cannot read image {tmp_path / 'bomb.png'} (")
    assert result.stderr.count("\n") == 1
