"""Real accidents (issue 15): a stop mid-sort, a captive portal, a first snapshot, a FIFO, Ctrl-C, a full disk.

Each is done to the scripts as it happens to a user, and must end in one line (or a run that goes on), never a
dead end, a traceback, a hang or a silent loss; next to each, a relative of it that the issue did not name.
"""
import csv
import io
import os
import re
import shutil
import signal
import subprocess
import sys

import imageio.v3 as iio
import mirror
import numpy as np
import pytest
from conftest import REPO, run_script, shell_command, training_args
from helpers import PORTAL_PAGE, lying_server, run_as_an_ordinary_user, unreadable
from PIL import Image

import architecture
import filter_gif as fg
import imFunctions as imf
import predict
import visualize_convnets as vc

HANG_GUARD_S = 120  # a process that would wait forever is killed after this; it is no measure of speed


def copy_of_data(prepared_data_dir, directory):
    """A sorted data folder of one's own (its files copied, its cache left behind)."""
    shutil.copytree(prepared_data_dir, directory, ignore=shutil.ignore_patterns("cache"))
    return directory


def only_line(text):
    assert text.count("\n") == 1 and text.endswith("\n"), text
    return text[:-1]


def listing(folder):
    return sorted(os.listdir(folder))


def short_training(data_dir, out_dir, classes=("shiba_inu", "samoyed"), **flags):
    """One epoch at 16 px of ``classes``, as a user starts it."""
    settings = {"image_size": 16, "epochs": 1, "skip_demos": True, **flags}
    return run_script("visualize_convnets.py", [*training_args(data_dir, out_dir, **settings), "--classes", *classes],
                      cwd=out_dir, timeout=HANG_GUARD_S)


# --------------------------------------------------------------------------- 1. state derived from the disk

def test_a_stop_mid_sort_leaves_a_split_the_next_run_redoes(prepared_data_dir, tmp_path):
    data_dir = copy_of_data(prepared_data_dir, tmp_path / "data")
    split = imf.read_json(data_dir / "split.json")
    # What a stop while sortImages links samoyed's files leaves: no manifest (it is written last), the breeds
    # sorted before samoyed whole, samoyed half linked, shiba_inu not yet there.
    os.remove(data_dir / "split.json")
    shutil.rmtree(data_dir / "train" / "shiba_inu")
    for name in split["train"]["samoyed"][::2]:
        os.remove(data_dir / "train" / "samoyed" / name)

    result = short_training(data_dir, tmp_path, classes=["shiba_inu", "samoyed"])

    assert result.returncode == 0, result.stderr
    for breed in ("shiba_inu", "samoyed"):
        assert listing(data_dir / "train" / breed) == sorted(split["train"][breed])


def test_a_split_that_lost_a_folder_or_a_file_since_it_was_made_is_redone(prepared_data_dir, tmp_path):
    data_dir = copy_of_data(prepared_data_dir, tmp_path / "data")
    split = imf.read_json(data_dir / "split.json")
    shutil.rmtree(data_dir / "test" / "samoyed")
    os.remove(data_dir / "train" / "beagle" / split["train"]["beagle"][0])

    imf.sortImages(0.15, data_dir=data_dir)

    assert listing(data_dir / "test" / "samoyed") == sorted(split["test"]["samoyed"])
    assert listing(data_dir / "train" / "beagle") == sorted(split["train"]["beagle"])


def test_an_empty_class_folder_made_in_the_split_is_no_class(prepared_data_dir, tmp_path):
    data_dir = copy_of_data(prepared_data_dir, tmp_path / "data")
    (data_dir / "train" / "corgi").mkdir()

    result = short_training(data_dir, tmp_path, classes=["shiba_inu", "corgi"])

    assert result.returncode == 2
    assert only_line(result.stderr).startswith("visualize_convnets.py: error: unknown class 'corgi'; valid classes: "
                                               "Abyssinian, beagle, Egyptian_Mau, samoyed, shiba_inu")


# --------------------------------------------------------------------------- 2. archives verified before they count

@pytest.fixture
def portal(tmp_path, monkeypatch):
    """A captive portal: every URL answers 200 with its sign-in page."""
    served = tmp_path / "portal"
    served.mkdir()
    for name in ("images.tar.gz", "annotations.tar.gz"):
        (served / name).write_bytes(PORTAL_PAGE)
    with mirror.MirrorServer(served) as server:
        monkeypatch.setenv("OXFORD_PETS_URL", server.url)
        yield server


def test_an_html_page_served_as_the_archive_is_one_line_and_never_renamed_into_place(portal, tmp_path):
    with pytest.raises(imf.DataError) as error:
        imf.downloadImages("images.tar.gz", None, data_dir=tmp_path / "data", progress=False)

    assert str(error.value) == (f"images.tar.gz from {portal.url}/images.tar.gz is not a gzip archive: the server "
                                f"sent an HTML page of {len(PORTAL_PAGE)} bytes (a captive portal or a proxy's login "
                                f"page?); removed it, and a rerun fetches it again")
    assert listing(tmp_path / "data") == []


def test_a_body_shorter_than_its_announced_length_is_one_line_naming_both_sizes(archives, tmp_path, monkeypatch):
    whole = (archives.directory / "images.tar.gz").read_bytes()
    with lying_server(whole[:1000], len(whole)) as url:
        monkeypatch.setenv("OXFORD_PETS_URL", url)
        with pytest.raises(imf.DataError) as error:
            imf.downloadImages("images.tar.gz", None, data_dir=tmp_path / "data", progress=False, retries=1)

    assert str(error.value) == (f"images.tar.gz from {url}/images.tar.gz has 1000 of {len(whole)} bytes; removed it, "
                                f"and a rerun fetches it again")
    assert listing(tmp_path / "data") == []


def test_a_broken_archive_already_in_place_is_set_aside_and_fetched_again(pets_server, archives, tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "images.tar.gz").write_bytes(PORTAL_PAGE)  # what an earlier version renamed into place

    imf.downloadImages("images.tar.gz", None, data_dir=data_dir, progress=False)

    assert (data_dir / "images.tar.gz").read_bytes() == (archives.directory / "images.tar.gz").read_bytes()
    assert (data_dir / "images.tar.gz.broken").read_bytes() == PORTAL_PAGE
    assert only_line(capsys.readouterr().err) == (
        f"Warning: {data_dir / 'images.tar.gz'} is not a gzip archive: the server sent an HTML page of "
        f"{len(PORTAL_PAGE)} bytes (a captive portal or a proxy's login page?): moved it to "
        f"{data_dir / 'images.tar.gz'}.broken; fetching it again")


def test_an_archive_that_fails_to_extract_is_set_aside_so_the_next_run_fetches_it(archives, tmp_path):
    whole = (archives.directory / "images.tar.gz").read_bytes()
    (tmp_path / "images.tar.gz").write_bytes(whole[:len(whole) // 2])  # cut short, its headers intact

    with pytest.raises(imf.DataError) as error:
        imf.maybeExtract("images.tar.gz", data_dir=tmp_path)

    assert str(error.value).endswith(f": moved it to {tmp_path / 'images.tar.gz'}.broken, and the next run fetches "
                                     f"it again")
    assert not (tmp_path / "images.tar.gz").exists() and (tmp_path / "images.tar.gz.broken").exists()


# --------------------------------------------------------------------------- 3. signals and OS errors

def start(script, args, cwd):
    return subprocess.Popen([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stopped(process, number, after_line):
    """Send signal ``number`` once ``process`` has printed a line starting ``after_line``; its status and
    stderr."""
    for line in process.stdout:
        if line.startswith(after_line):
            process.send_signal(number)
            break
    process.stdout.read()
    return process.wait(timeout=HANG_GUARD_S), process.stderr.read()


@pytest.fixture
def many_images(short_run, tmp_path):
    """A folder of 3000 links to one test image: predict takes a while over them."""
    image = next((short_run.data_dir / "test" / "samoyed").iterdir())
    folder = tmp_path / "many"
    folder.mkdir()
    for number in range(3000):
        os.link(image, folder / f"samoyed_{number}.jpg")
    return folder


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_predict_in_one_line_with_128_plus_its_number(number, short_run, many_images, tmp_path):
    process = start("predict.py", ["--checkpoint-dir", short_run.checkpoint_dir, "--batch-size", "1", many_images],
                    tmp_path)

    status, stderr = stopped(process, number, str(many_images))

    assert status == 128 + number
    assert only_line(stderr) == f"predict.py: stopped by {signal.Signals(number).name}"


def test_sigterm_stops_filter_gif_in_one_line_and_leaves_no_temporary_file(short_run, tmp_path):
    image = next((short_run.data_dir / "test" / "samoyed").iterdir())
    out = tmp_path / "out"
    process = start("filter_gif.py", ["--checkpoint-dir", short_run.checkpoint_dir, "--out", out, "--image", image,
                                      "--feature-vis", "conv2_2", "--feature-vis-first-steps", "1000000"], tmp_path)

    status, stderr = stopped(process, signal.SIGTERM, "Feature GIFs of")

    assert status == 128 + signal.SIGTERM
    assert only_line(stderr) == "filter_gif.py: stopped by SIGTERM; the file being written was removed"
    assert not [name for name in os.listdir(out) if ".tmp-" in name]


def test_a_checkpoint_folder_predict_cannot_read_is_one_line_naming_it(short_run, tmp_path):
    folder = tmp_path / "checkpoints"
    shutil.copytree(short_run.checkpoint_dir, folder)
    with unreadable(folder):
        result = run_as_an_ordinary_user("predict.py", "--checkpoint-dir", folder, "any.jpg")

    assert result.returncode == 1
    assert only_line(result.stderr) == f"predict.py: error: cannot use {folder}: permission denied"


def test_an_image_folder_predict_cannot_read_is_said_so_not_that_it_holds_no_images(short_run, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    with unreadable(folder):
        result = run_as_an_ordinary_user("predict.py", "--checkpoint-dir", short_run.checkpoint_dir, folder)

    assert result.returncode == 1
    assert only_line(result.stderr) == f"Warning: cannot read the folder {folder}: permission denied"


def test_a_snapshot_folder_filter_gif_cannot_read_is_one_line_naming_it(short_run, tmp_path):
    folder = tmp_path / "checkpoints"
    shutil.copytree(short_run.checkpoint_dir, folder)
    with unreadable(folder / "snapshots"):
        result = run_as_an_ordinary_user("filter_gif.py", "--checkpoint-dir", folder, "--out", tmp_path / "out")

    assert result.returncode == 1
    assert only_line(result.stderr) == f"filter_gif.py: error: cannot use {folder / 'snapshots'}: permission denied"


def test_filter_gif_on_a_missing_checkpoint_folder_says_there_is_none(tmp_path, capsys):
    status = fg.main(["--checkpoint-dir", str(tmp_path / "checkpionts"), "--out", str(tmp_path / "out")])

    assert status == 2
    assert only_line(capsys.readouterr().err).endswith(
        f"error: no checkpoint folder {tmp_path / 'checkpionts'} (a typo? --checkpoint-dir names it)")


def test_filter_gif_on_a_missing_image_says_there_is_no_such_file(short_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        fg.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(tmp_path / "out"),
                 "--image", str(tmp_path / "missing.jpg")])

    assert exit_status.value.code == 2
    assert only_line(capsys.readouterr().err).endswith(f"error: cannot read --image {tmp_path / 'missing.jpg'}: "
                                                       f"no such file")


def test_a_full_logdir_stops_the_run_in_one_line_naming_it(small_disk, prepared_data_dir, tmp_path):
    logdir = tmp_path / "logs"
    args = training_args(prepared_data_dir, tmp_path, image_size=32, skip_demos=True)

    result = small_disk(logdir, "64k", shell_command("visualize_convnets.py", args))

    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"visualize_convnets\.py: error: disk full: cannot write TensorBoard's events in "
                        rf"{re.escape(str(logdir))}/(train|test): it needs .+, .+ free", last), result.stderr
    assert "Training finished" not in result.stdout


# --------------------------------------------------------------------------- 4. inputs: regular files, 16 bits, empty

@pytest.fixture
def fifo(tmp_path):
    """A FIFO named like an image, which nobody ever writes to."""
    path = tmp_path / "fifo.jpg"
    os.mkfifo(path)
    return path


def test_predict_given_a_fifo_warns_in_one_line_and_never_waits_on_it(short_run, fifo, tmp_path):
    good = next((short_run.data_dir / "test" / "samoyed").iterdir())

    result = run_script("predict.py", ["--checkpoint-dir", short_run.checkpoint_dir, fifo, good], cwd=tmp_path,
                        timeout=HANG_GUARD_S)

    assert result.returncode == 1
    assert result.stderr == f"Warning: skipped {fifo}: a FIFO, not a regular file\n"
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(good)]


def test_predict_on_a_folder_holding_a_fifo_classifies_the_rest(short_run, fifo, tmp_path):
    shutil.copy(next((short_run.data_dir / "test" / "samoyed").iterdir()), tmp_path / "good.jpg")

    result = run_script("predict.py", ["--checkpoint-dir", short_run.checkpoint_dir, tmp_path], cwd=tmp_path,
                        timeout=HANG_GUARD_S)

    assert result.returncode == 1
    assert result.stderr == f"Warning: skipped {fifo}: a FIFO, not a regular file\n"
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(tmp_path / "good.jpg")]


def test_filter_gif_given_a_fifo_image_is_one_line_and_exit_2(short_run, fifo, tmp_path):
    result = run_script("filter_gif.py", ["--checkpoint-dir", short_run.checkpoint_dir, "--out", tmp_path / "out",
                                          "--image", fifo], cwd=tmp_path, timeout=HANG_GUARD_S)

    assert result.returncode == 2
    assert result.stderr == f"filter_gif.py: error: cannot read --image {fifo}: a FIFO, not a regular file\n"


def test_a_fifo_probe_image_is_one_line_and_exit_2(fifo, tmp_path):
    result = run_script("visualize_convnets.py", ["--data-dir", tmp_path / "data", "--probe-image", fifo],
                        cwd=tmp_path, timeout=HANG_GUARD_S)

    assert result.returncode == 2
    assert result.stderr == f"visualize_convnets.py: error: cannot read --probe-image {fifo}: a FIFO, not a regular file\n"


def test_a_fifo_among_the_datasets_images_is_skipped_like_an_unreadable_file(prepared_data_dir, tmp_path):
    data_dir = copy_of_data(prepared_data_dir, tmp_path / "data")
    os.mkfifo(data_dir / "images" / "samoyed_999.jpg")

    result = short_training(data_dir, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Warning: skipped 3 unreadable image file(s): " in result.stderr and "samoyed_999.jpg" in result.stderr


def sixteen_bit_gradient(path, width=64):
    """A greyscale PNG of 16 bits a pixel, 0 to 65535 left to right; returns the 0..255 levels it stands for."""
    levels = np.round(np.linspace(0, 65535, width)).astype(np.uint16)
    Image.fromarray(np.tile(levels, (width, 1))).save(path)
    assert Image.open(path).mode == "I;16"
    return np.round(levels / 65535 * 255)


def test_a_16_bit_image_is_scaled_onto_0_to_255_not_clipped(tmp_path):
    expected = sixteen_bit_gradient(tmp_path / "grey16.png")

    picture = imf.load_image(tmp_path / "grey16.png", 64)

    assert np.abs(picture[0, :, 0].astype(int) - expected).max() <= 1
    assert (picture[..., 0] == picture[..., 2]).all()


def test_a_16_bit_probe_image_is_centred_from_its_scaled_levels(tmp_path):
    expected = sixteen_bit_gradient(tmp_path / "grey16.png")
    dataset = imf.Dataset(*[None] * 6, mean_image=np.zeros((64, 64, 3), np.float32))

    probe = vc.probe_image(str(tmp_path / "grey16.png"), 64, dataset, architecture.TUTORIAL)

    assert np.abs(probe[0, :, 1] - expected).max() <= 1


def test_a_class_whose_images_are_all_unreadable_is_one_line_before_training(prepared_data_dir, tmp_path):
    data_dir = copy_of_data(prepared_data_dir, tmp_path / "data")
    for folder in ("images", "train/beagle", "test/beagle"):
        for name in os.listdir(data_dir / folder):
            if name.startswith("beagle_"):
                os.remove(data_dir / folder / name)
                (data_dir / folder / name).write_bytes(b"\xff\xd8 not a picture")

    result = short_training(data_dir, tmp_path, classes=["shiba_inu", "beagle"])

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (f"visualize_convnets.py: error: no readable training images of "
                                                      f"beagle in {data_dir / 'train'}: choose other --classes")
    assert "Training on" not in result.stdout


def one_image_a_breed(prepared_data_dir, directory, breeds):
    data_dir = copy_of_data(prepared_data_dir, directory)
    for name in os.listdir(data_dir / "images"):
        if imf.breed_of(name) in breeds and not name.endswith("_1.jpg"):
            os.remove(data_dir / "images" / name)
    imf.sortImages(0.15, data_dir=data_dir)
    return data_dir


def test_a_split_without_test_images_is_one_line_not_a_memoryview_error(prepared_data_dir, tmp_path):
    data_dir = one_image_a_breed(prepared_data_dir, tmp_path / "data", ("beagle", "Abyssinian"))

    with pytest.raises(imf.DataError) as error:
        imf.loadDataset(["beagle", "Abyssinian"], 16, data_dir)

    assert str(error.value) == (f"no readable test images of beagle, Abyssinian in {data_dir / 'test'}: the test "
                                f"accuracy needs some (a breed needs 2 or more readable images to give one to test)")


def test_a_class_without_test_images_beside_one_with_some_is_one_warning(prepared_data_dir, tmp_path, capsys):
    data_dir = one_image_a_breed(prepared_data_dir, tmp_path / "data", ("beagle",))

    dataset = imf.loadDataset(["samoyed", "beagle"], 16, data_dir)

    assert dataset.test_y[:, 1].sum() == 0 and dataset.test_y[:, 0].sum() > 0
    assert capsys.readouterr().err.splitlines()[-1] == (
        "Warning: no readable test images of beagle: the test accuracy measures samoyed only")


# --------------------------------------------------------------------------- 5. edges

def test_one_snapshot_makes_a_one_frame_gif(short_run, tmp_path, capsys):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(short_run.checkpoint_dir, checkpoints)
    for name in os.listdir(checkpoints / "snapshots"):
        if not name.startswith("filters-0."):
            os.remove(checkpoints / "snapshots" / name)

    status = fg.main(["--checkpoint-dir", str(checkpoints), "--out", str(tmp_path / "out"), "--layers", "conv1_1"])

    assert status == 0
    assert iio.imread(tmp_path / "out" / "conv1_1.gif", index=None).shape[0] == 1
    assert capsys.readouterr().out.startswith("1 snapshot so far, step 0: one-frame GIFs; wrote ")


def test_keep_checkpoints_past_what_tensorflow_takes_is_refused_up_front(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_status:
        vc.main(["--keep-checkpoints", "1000000000000"])

    assert exit_status.value.code == 2
    assert only_line(capsys.readouterr().err).endswith("error: --keep-checkpoints must be at most 2147483647, got "
                                                       "1000000000000")
    assert os.listdir(tmp_path) == []


def test_a_feature_vis_jitter_past_what_tensorflow_takes_is_refused_up_front(short_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        fg.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(tmp_path / "out"),
                 "--feature-vis", "conv1_1", "--feature-vis-jitter", "10000000000"])

    assert exit_status.value.code == 2
    assert only_line(capsys.readouterr().err).endswith("error: --feature-vis-jitter must be at most 2147483647, got "
                                                       "10000000000")


def test_temporary_files_a_killed_filter_gif_left_in_out_are_swept(short_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".conv1_1.gif.tmp-99999-0123abcd.gif").write_bytes(b"GIF89a half")

    assert fg.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(out), "--layers", "conv1_1"]) == 0

    assert listing(out) == ["conv1_1.gif", "conv1_1.png"]


def test_temporary_figures_a_killed_run_left_are_swept(prepared_data_dir, tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / ".pooling_demo.png.tmp-99999-0123abcd.png").write_bytes(b"\x89PNG half")

    result = short_training(prepared_data_dir, tmp_path, skip_demos=None)

    assert result.returncode == 0, result.stderr
    assert listing(figures) == ["convolution_demo.png", "convolution_filters.png", "pooling_demo.png"]


@pytest.fixture
def awkward_names(short_run, tmp_path):
    """An image under a name holding a newline, and one holding a tab."""
    image = next((short_run.data_dir / "test" / "samoyed").iterdir())
    folder = tmp_path / "awkward"
    folder.mkdir()
    for name in ("two\nlines.jpg", "a\ttab.jpg"):
        shutil.copy(image, folder / name)
    return folder


def test_the_tab_separated_output_keeps_a_name_with_a_tab_or_a_newline_in_one_record(short_run, awkward_names,
                                                                                    capsys):
    status = predict.main(["--checkpoint-dir", str(short_run.checkpoint_dir), str(awkward_names)])

    records = list(csv.reader(io.StringIO(capsys.readouterr().out), delimiter="\t"))
    assert status == 0
    assert [record[0] for record in records] == [str(awkward_names / "a\ttab.jpg"), str(awkward_names / "two\nlines.jpg")]
    assert [len(record) for record in records] == [3, 3]


def test_a_warning_about_a_name_with_a_newline_stays_one_line(short_run, tmp_path, capsys):
    broken = tmp_path / "broken\nname.jpg"
    broken.write_bytes(b"\xff\xd8 not really")

    status = predict.main(["--checkpoint-dir", str(short_run.checkpoint_dir), str(broken)])

    assert status == 1
    assert only_line(capsys.readouterr().err) == f"Warning: skipped {str(broken)!r}: not a readable image"


def test_keep_checkpoints_at_the_bound_is_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = vc.parse_args(["--keep-checkpoints", "2147483647", "--skip-demos"])
    assert args.keep_checkpoints == 2147483647


def test_a_file_name_that_is_not_utf_8_is_printed_as_its_bytes_not_a_traceback(short_run, tmp_path):
    folder = tmp_path / "latin1"
    folder.mkdir()
    name = b"samoy\xe9d.jpg"  # Latin-1, as an old camera or a zip from elsewhere names it
    shutil.copy(next((short_run.data_dir / "test" / "samoyed").iterdir()), os.path.join(os.fsencode(folder), name))

    # Python's strict output errors, as under a user's en_US.UTF-8 (this machine's C.UTF-8 would escape them).
    result = subprocess.run([sys.executable, os.path.join(REPO, "predict.py"), "--checkpoint-dir",
                             short_run.checkpoint_dir, folder], check=False, capture_output=True,
                            stdin=subprocess.DEVNULL, timeout=HANG_GUARD_S,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})

    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout.split(b"\t")[0] == os.path.join(os.fsencode(folder), name)
