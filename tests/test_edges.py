"""Issue 24's faults at the edges, as each happens to a user, and a relative of each that the issue did not name:
an archive damaged mid-body, readers racing a live run's saves, streams that break or never worked, the
notebook's errors, a GIF's last frame, published ports, the precision a CPU computes in."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile

import imageio.v3 as iio
import mirror
import numpy as np
import pytest
from conftest import REPO, run_script, training_args
from helpers import HEADER, as_an_ordinary_user, checkpoint_tensor, hardware_precision, title_strip, unreadable

import architecture
import classifier
import filter_gif as fg
import feature_maps
import imFunctions as imf
import predict
import run_folder
import tf_start

HANG_GUARD_S = 300  # a process that would wait forever is killed after this; it is no measure of speed


def only_line(text):
    assert text.count("\n") == 1 and text.endswith("\n"), text
    return text[:-1]


# --------------------------------------------------------------------------- 1. archives read whole before they count

def damaged(archive, how):
    """The archive's bytes changed as ``how`` says: one byte flipped mid-body, or the 8-byte gzip trailer cut."""
    data = bytearray(archive.read_bytes())
    if how == "mid-body":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[-8:]
    return bytes(data)


@pytest.fixture
def serving_damaged(archives, tmp_path, monkeypatch):
    """A live mirror whose images.tar.gz is damaged as asked; yields a function that damages it, and the server."""
    served = tmp_path / "served"
    shutil.copytree(archives.directory, served)
    with mirror.MirrorServer(served) as server:
        monkeypatch.setenv("OXFORD_PETS_URL", server.url)

        def damage(how):
            (served / "images.tar.gz").write_bytes(damaged(archives.directory / "images.tar.gz", how))
            return server
        yield damage


def training(data_dir, out_dir, *extra):
    args = training_args(data_dir, out_dir, image_size=16, epochs=1, skip_demos=True)
    return run_script("visualize_convnets.py", [*args, *extra], cwd=out_dir, timeout=HANG_GUARD_S)


def test_an_archive_damaged_mid_body_is_refused_in_one_line_and_nothing_is_marked_extracted(serving_damaged, archives,
                                                                                            tmp_path):
    server = serving_damaged("mid-body")
    data_dir = tmp_path / "data"

    refused = training(data_dir, tmp_path, "--classes", "samoyed", "beagle")
    left = sorted(os.listdir(data_dir))
    shutil.copy(archives.directory / "images.tar.gz", tmp_path / "served" / "images.tar.gz")  # the mirror mended
    rerun = training(data_dir, tmp_path, "--classes", "samoyed", "beagle")

    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    error = refused.stderr.splitlines()[-1]  # after the downloads' progress lines
    assert error.startswith(f"visualize_convnets.py: error: images.tar.gz from {server.url}/images.tar.gz is a "
                            f"damaged gzip archive (")
    assert error.endswith("); removed it, and a rerun fetches it again")
    assert ".images.tar.gz.extracted" not in left and "images.tar.gz" not in left
    assert rerun.returncode == 0, rerun.stderr
    with tarfile.open(archives.directory / "images.tar.gz") as whole:
        assert sorted(os.listdir(data_dir / "images")) == sorted(
            os.path.basename(member.name) for member in whole.getmembers() if member.isfile())


def test_an_archive_without_its_gzip_trailer_is_refused_though_every_member_reads(serving_damaged, tmp_path):
    server = serving_damaged("trailer")

    with pytest.raises(imf.DataError) as error:
        imf.downloadImages("images.tar.gz", None, data_dir=tmp_path / "data", progress=False)

    assert str(error.value).startswith(f"images.tar.gz from {server.url}/images.tar.gz is a damaged gzip archive (")
    assert os.listdir(tmp_path / "data") == []


def test_a_data_folder_marked_after_a_partial_extraction_recovers_on_its_next_run(pets_server, archives, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # What the earlier code left: the damaged archive in place, the members before the damage extracted, and the
    # marker it wrote for them.
    (data_dir / "images.tar.gz").write_bytes(damaged(archives.directory / "images.tar.gz", "mid-body"))
    with tarfile.open(archives.directory / "images.tar.gz") as whole:
        members = whole.getmembers()
        whole.extractall(data_dir, members=members[:len(members) // 2], filter="data")
    (data_dir / ".images.tar.gz.extracted").write_text(f"{len(members) // 2} members\n")

    run = training(data_dir, tmp_path, "--classes", "samoyed", "beagle")

    assert run.returncode == 0, run.stderr
    assert (data_dir / "images.tar.gz").read_bytes() == (archives.directory / "images.tar.gz").read_bytes()
    assert len(os.listdir(data_dir / "images")) == sum(member.isfile() for member in members)


def test_extracting_an_archive_damaged_mid_body_marks_nothing_and_sets_it_aside(archives, tmp_path):
    (tmp_path / "images.tar.gz").write_bytes(damaged(archives.directory / "images.tar.gz", "mid-body"))

    with pytest.raises(imf.DataError) as error:
        imf.maybeExtract("images.tar.gz", data_dir=tmp_path)

    assert "incorrect data check" in str(error.value)  # zlib's word for a CRC that does not match
    assert str(error.value).endswith("and the next run fetches it again")
    assert not imf.is_extracted("images.tar.gz", tmp_path) and (tmp_path / "images.tar.gz.broken").exists()


# --------------------------------------------------------------------------- 2. readers racing a live run's saves

@pytest.fixture
def racing_folder(short_run, tmp_path, monkeypatch):
    """A copy of a run's checkpoint folder that a live run (--keep-checkpoints 1) saves into between a reader's
    listing and its reading: the newest checkpoint it listed is pruned, a newer one there instead. The save is
    made at that moment by the listing itself, the first time it is taken, so the race is the same every time.
    Yields the folder and the newer checkpoint's prefix."""
    folder, pending = tmp_path / "checkpoints", tmp_path / "pending"
    shutil.copytree(short_run.checkpoint_dir, folder)
    pending.mkdir()
    (older, listed), (newest, saved) = sorted(run_folder.find_checkpoints(folder))[-2:]
    for name in os.listdir(folder):
        if name.startswith(os.path.basename(saved) + "."):
            os.rename(folder / name, pending / name)
    list_files = run_folder.find_checkpoints

    def listing_while_the_run_saves(checkpoint_dir):
        found = list_files(checkpoint_dir)
        if os.listdir(pending):
            for name in os.listdir(pending):
                os.rename(pending / name, folder / name)
            run_folder.remove_checkpoint(listed)
        return found

    monkeypatch.setattr(run_folder, "find_checkpoints", listing_while_the_run_saves)
    yield folder, saved


def test_predict_whose_newest_checkpoint_is_pruned_before_it_reads_it_restores_the_one_saved_instead(
        racing_folder, prepared_data_dir, capsys):
    folder, saved = racing_folder
    image = next((prepared_data_dir / "test" / "samoyed").iterdir())

    status = predict.main(["--checkpoint-dir", str(folder), str(image)])

    out, err = capsys.readouterr()
    assert status == 0 and err == ""
    assert only_line(out).startswith(f"{image}\t")
    assert classifier.Classifier(folder).checkpoint == saved  # the listing's race is over: it reads the newest


def test_filter_gifs_feature_maps_whose_newest_checkpoint_is_pruned_before_they_read_it_use_the_one_saved_instead(
        racing_folder, capsys):
    folder, saved = racing_folder

    # What filter_gif --image draws its per-layer PNGs from.
    step, params = feature_maps.newest_params(folder, architecture.TUTORIAL)

    assert capsys.readouterr().err == ""  # not "No readable full checkpoint: ... from the snapshot"
    assert step == int(saved.rsplit("-", 1)[1])
    assert np.array_equal(params["conv2_2"][0], checkpoint_tensor(saved)("conv2_2/weights2_2"))


# --------------------------------------------------------------------------- 3, 4. output streams that break or never worked

def training_command(data_dir, out_dir, epochs):
    return [sys.executable, os.path.join(REPO, "visualize_convnets.py"),
            *map(str, training_args(data_dir, out_dir, image_size=16, epochs=epochs, skip_demos=True,
                                    checkpoint_every=None))]


def saved_steps(out_dir):
    return [step for step, _ in run_folder.find_checkpoints(out_dir / "checkpoints")]


def test_a_pipe_closed_mid_run_stops_it_as_sigterm_does_with_a_checkpoint_and_status_141(prepared_data_dir, tmp_path):
    # python visualize_convnets.py ... 2>&1 | head -3: the reader leaves after three lines, mid-run.
    process = subprocess.Popen(training_command(prepared_data_dir, tmp_path, epochs=100000), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    head = [process.stdout.readline() for _ in range(3)]
    process.stdout.close()

    assert process.wait(timeout=HANG_GUARD_S) == 128 + signal.SIGPIPE, head
    assert len(saved_steps(tmp_path)) == 1 and saved_steps(tmp_path)[0] > 0


def test_a_closed_terminal_stops_the_run_as_sigterm_does_with_a_checkpoint_and_status_129(prepared_data_dir, tmp_path):
    process = subprocess.Popen(training_command(prepared_data_dir, tmp_path, epochs=100000), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stdout:
        if line.startswith("Epoch number 1"):
            process.send_signal(signal.SIGHUP)  # what the terminal sends as it closes
            break
    out = process.stdout.read()

    assert process.wait(timeout=HANG_GUARD_S) == 128 + signal.SIGHUP, process.stderr.read()
    step = saved_steps(tmp_path)[0]
    assert f"Stopping on SIGHUP at global step {step}" in out


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_full_device_as_output_loses_its_lines_not_the_run(stream, prepared_data_dir, tmp_path):
    with open("/dev/full", "w") as full:
        other = subprocess.PIPE
        finished = subprocess.run(training_command(prepared_data_dir, tmp_path, epochs=2), cwd=tmp_path, text=True,
                                  stdin=subprocess.DEVNULL, timeout=HANG_GUARD_S,
                                  **{stream: full, "stderr" if stream == "stdout" else "stdout": other})

    assert finished.returncode == 0, finished.stderr or finished.stdout
    assert "Traceback" not in (finished.stderr or "") + (finished.stdout or "")
    assert saved_steps(tmp_path) == [2 * 6]  # 44 training images at batch 8: 6 steps an epoch


# --------------------------------------------------------------------------- 8. the last snapshot closes every GIF

def last_frame_is_titled(path, text, rather_than):
    """Whether a GIF's last frame carries the title ``text``, not ``rather_than``: no pixel of the one off by
    more than the palette's rounding, some of the other's."""
    title = iio.imread(path, index=None, mode="RGB").astype(int)[-1, :HEADER]

    def pixels_off(text):
        return (np.abs(title - title_strip(title.shape[1], text)).max(axis=2) > 60).sum()
    return pixels_off(text) == 0 < pixels_off(rather_than)


def test_filter_gif_every_n_still_ends_its_gif_at_the_last_snapshot(short_run, tmp_path, capsys):
    steps = [step for step, _ in run_folder.find_snapshots(short_run.checkpoint_dir)]  # 0, 2, ..., 18
    assert (len(steps) - 1) % 4  # --every 4 alone would stop before the last

    status = fg.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(tmp_path), "--layers", "conv1_1",
                      "--every", "4"])

    assert status == 0
    assert capsys.readouterr().out.endswith(f"{len(steps[::4]) + 1} snapshots, steps 0 to {steps[-1]}: wrote "
                                            f"{tmp_path / 'conv1_1.gif'}, {tmp_path / 'conv1_1.png'}\n")
    assert last_frame_is_titled(tmp_path / "conv1_1.gif", f"conv1_1  step {steps[-1]}", f"conv1_1  step {steps[::4][-1]}")


def test_an_images_feature_gif_with_every_n_ends_at_the_last_snapshot(short_run, prepared_data_dir, tmp_path):
    image = next((prepared_data_dir / "test" / "samoyed").iterdir())
    steps = [step for step, _ in run_folder.find_snapshots(short_run.checkpoint_dir)]

    status = fg.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(tmp_path), "--layers", "conv1_1",
                      "--image", str(image), "--every", "4"])

    assert status == 0
    assert last_frame_is_titled(tmp_path / f"{image.stem}_conv2_2.gif", f"conv2_2  step {steps[-1]}",
                                f"conv2_2  step {steps[::4][-1]}")


# --------------------------------------------------------------------------- 10. what a run says it computes in

@pytest.mark.skipif(hardware_precision() == "mixed_float16", reason="a GPU with tensor cores computes in float16")
def test_float16_asked_for_without_tensor_cores_is_said_and_recorded_as_the_float32_it_computes_in(prepared_data_dir,
                                                                                                   tmp_path):
    run = run_script("visualize_convnets.py", training_args(prepared_data_dir, tmp_path, image_size=16, epochs=1,
                                                            skip_demos=True, mixed_precision="float16"),
                     cwd=tmp_path, timeout=HANG_GUARD_S)

    assert run.returncode == 0, run.stderr
    assert "mixed_float16" not in run.stdout
    assert "Computing in float32 with float16's loss scaling (float32_loss_scaled)" in run.stdout
    with open(tmp_path / "checkpoints" / "run.json") as handle:
        assert json.load(handle)["segments"] == [{"from_step": 0, "precision": "float32_loss_scaled"}]
    newest = run_folder.find_checkpoints(tmp_path / "checkpoints")[0][1]
    assert checkpoint_tensor(newest)("train/current_loss_scale") > 1  # the loss scaling did run


@pytest.mark.skipif(hardware_precision() == "mixed_float16", reason="a GPU with tensor cores computes in float16")
def test_the_benchmark_reports_the_float32_that_float16_computes_in_without_tensor_cores(tmp_path):
    result = run_script("bench/benchmark.py", ["--image-size", "16", "--batch-size", "2", "--repeats", "1",
                                               "--steps", "1", "--loop-steps", "2", "--loop-repeats", "1",
                                               "--matmul-size", "64", "--mixed-precision", "float16",
                                               "--loss-steps", "1"], cwd=tmp_path, timeout=HANG_GUARD_S)

    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["mixed_precision"] == "float32_loss_scaled"


@pytest.mark.skipif(hardware_precision() == "mixed_bfloat16", reason="this CPU computes in bfloat16")
def test_bfloat16_asked_for_without_bfloat16_units_is_said_and_recorded_as_float32(capsys):
    assert tf_start.choose_precision("bfloat16") == "float32"
    assert capsys.readouterr().err.endswith("TensorFlow leaves the graph in float32 here\n")


# --------------------------------------------------------------------------- 5. a local error is no network error

def test_a_read_only_data_folder_is_one_line_naming_it_never_retried_as_the_mirrors_fault(pets_server, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with unreadable(data_dir):
        data_dir.chmod(0o555)  # readable, not writable
        script = ("import sys, imFunctions as imf\n"
                  "imf.downloadImages('annotations.tar.gz', None, data_dir=sys.argv[1], progress=False)\n")
        result = subprocess.run([*as_an_ordinary_user(), sys.executable, "-c", script, str(data_dir)], cwd=REPO,
                                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=HANG_GUARD_S)

    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (f"imFunctions.DataError: cannot write annotations.tar.gz into {data_dir}: "
                                              f"permission denied")
    assert [request for request, _ in pets_server.requests] == ["annotations.tar.gz"]  # asked once, never again


def test_a_folder_in_the_way_of_the_partial_download_is_one_line_never_retried(pets_server, tmp_path):
    (tmp_path / "annotations.tar.gz.part").mkdir()  # in the way: no file can be written at its name

    with pytest.raises(imf.DataError) as error:
        imf.downloadImages("annotations.tar.gz", None, data_dir=tmp_path, progress=False, retries=2)

    assert str(error.value) == f"cannot write annotations.tar.gz into {tmp_path}: is a directory"
    assert len(pets_server.requests) == 1


# --------------------------------------------------------------------------- 6, 7. the notebook's errors and logs

@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A real IPython kernel (nbclient, ipykernel) that runs one cell at a time; yields ``run(source)``, which gives
    the executed cell and whether it stopped the notebook (nbclient's CellExecutionError, as Run All stops)."""
    nbformat = pytest.importorskip("nbformat", reason="Jupyter runs notebooks: pip install -r requirements-notebook.txt")
    nbclient = pytest.importorskip("nbclient", reason="Jupyter runs notebooks: pip install -r requirements-notebook.txt")
    work = tmp_path_factory.mktemp("kernel")
    notebook = nbformat.v4.new_notebook()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", REPO)
        client = nbclient.NotebookClient(notebook, timeout=HANG_GUARD_S, kernel_name="python3",
                                         resources={"metadata": {"path": work}})
        with client.setup_kernel():
            def run(source):
                notebook.cells.append(nbformat.v4.new_code_cell(source))
                try:
                    client.execute_cell(notebook.cells[-1], len(notebook.cells) - 1)
                except nbclient.exceptions.CellExecutionError:
                    return notebook.cells[-1], True
                return notebook.cells[-1], False
            yield run


def shown(cell):
    """Everything a cell shows: what it printed, and its error's traceback lines."""
    return "".join(output.get("text", "") for output in cell.outputs) + "\n".join(
        line for output in cell.outputs if output["output_type"] == "error" for line in output["traceback"])


def test_a_usage_error_in_the_notebooks_training_cell_ends_it_in_one_line_and_stops_run_all(kernel, tmp_path):
    cell, stopped = kernel(f"import visualize_convnets as vc\nvc.main(['--epochs', '0', '--data-dir', '{tmp_path}'])")

    assert stopped
    assert shown(cell) == "visualize_convnets.py: error: --epochs must be at least 1, got 0"


def test_a_stopped_runs_exit_status_ends_the_cell_in_one_line_and_stops_run_all(kernel):
    # What an interrupted run's main returns (130: Kernel > Interrupt), through the entry point every main has.
    cell, stopped = kernel("import cli\ncli._PROGRAM[:] = ['visualize_convnets.py']\n"
                           "cli.entry_point(lambda argv: 130)()")

    assert stopped
    assert shown(cell) == "visualize_convnets.py: stopped by SIGINT, exit status 130"


def test_a_failure_the_data_layer_raises_into_a_cell_is_its_one_line(kernel, pets_server, tmp_path):
    (tmp_path / "annotations.tar.gz.part").mkdir()  # a local error (fault 5's read-only folder, as root can meet it)
    cell, stopped = kernel(f"import os, imFunctions as imf\nos.environ['OXFORD_PETS_URL'] = '{pets_server.url}'\n"
                           f"imf.downloadImages('annotations.tar.gz', None, data_dir='{tmp_path}', progress=False)")

    assert stopped and "Traceback" not in shown(cell)
    assert shown(cell).splitlines()[-1] == f"DataError: cannot write annotations.tar.gz into {tmp_path}: is a directory"


def test_a_session_made_after_the_projects_modules_are_imported_shows_no_cuda_probe_log_without_a_gpu(tmp_path):
    # As the notebook's convolution demo makes one, or a script of one's own. (Inside a kernel, ipykernel forwards
    # what native code writes to fd 2 when it gets round to it, so a cell's outputs cannot show it reliably.)
    if glob.glob("/dev/nvidia[0-9]*"):
        pytest.skip("an NVIDIA device is here: the probe's log is shown when TensorFlow then finds no GPU")
    script = ("import tf_start, tensorflow as tf\n"
              "with tf.Graph().as_default():\n    print(tf.compat.v1.Session().run(tf.constant(7)))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=HANG_GUARD_S)

    assert (result.returncode, result.stdout, result.stderr) == (0, "7\n", "")
