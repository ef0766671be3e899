"""compare_runs.py: several runs' Loss and Accuracy, train and test, in one PNG, read from their event files as
TensorBoard reads them."""
import os
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_script, short_training_run

import curves


def last_written_per_step(logdir, split, tag):
    """``{step: value}`` of a tag, each step's value taken from the event file written last: what a resumed run's
    restart leaves of the steps it logged again (event files sort by their creation time)."""
    values = {}
    folder = os.path.join(logdir, split)
    for name in sorted(os.listdir(folder)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = value.simple_value
    return values


@pytest.fixture(scope="module")
def resumed_run(prepared_data_dir, tmp_path_factory):
    """A run of 2 epochs whose last checkpoint was lost, resumed from the first: steps 7-12 logged twice."""
    out = tmp_path_factory.mktemp("resumed")
    first = short_training_run(prepared_data_dir, out, epochs=2, skip_demos=True)
    for leftover in first.checkpoint_dir.glob("model.ckpt-12.*"):
        leftover.unlink()
    again = short_training_run(prepared_data_dir, out, epochs=2, skip_demos=True)
    assert "Resumed from" in again.stdout and "at global step 6" in again.stdout
    return again


def test_a_resumed_runs_curves_keep_each_step_once_as_its_restart_logged_it(resumed_run):
    read = curves.read_curves(str(resumed_run.logdir))

    for split in ("train", "test"):
        for tag in ("Loss", "Accuracy"):
            expected = last_written_per_step(resumed_run.logdir, split, tag)
            curve = read[split, tag]
            assert list(curve.steps) == sorted(expected)
            assert np.allclose(curve.values, [expected[step] for step in sorted(expected)])


def test_the_comparison_is_one_png_of_every_run_given(short_run, resumed_run, tmp_path):
    out = tmp_path / "figures" / "comparison.png"

    result = run_script("compare_runs.py", [short_run.logdir, resumed_run.logdir, "--out", out], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Wrote {out}: {short_run.logdir}, {resumed_run.logdir}\n"
    picture = iio.imread(out)
    assert picture.shape[:2] == (700, 1100) and len(np.unique(picture.reshape(-1, picture.shape[-1]), axis=0)) > 20


def test_a_parent_folder_is_read_as_a_run_per_subfolder(short_run, resumed_run, tmp_path):
    parent = tmp_path / "logs"
    shutil.copytree(short_run.logdir, parent / "plain")
    shutil.copytree(resumed_run.logdir, parent / "resumed")

    assert list(curves.run_folders([str(parent)])) == ["plain", "resumed"]


def test_a_folder_without_event_files_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)

    result = run_script("compare_runs.py", [tmp_path / "empty", "--out", tmp_path / "c.png"], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.endswith(f"error: no TensorBoard event files in {tmp_path / 'empty'} or its train/ and "
                                  f"test/ (give the --logdir of a training run, or a folder of them)\n")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "c.png").exists()


def test_smoothing_is_tensorboards_debiased_moving_average():
    values = np.array([1.0, 0.0, 0.0, 1.0])
    weight = 0.6
    # TensorBoard: last = last * w + (1 - w) * v, shown as last / (1 - w ** n).
    expected, last = [], 0.0
    for n, value in enumerate(values, start=1):
        last = last * weight + (1 - weight) * value
        expected.append(last / (1 - weight ** n))

    assert np.allclose(curves.smoothed(values, weight), expected)
