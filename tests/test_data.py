"""The data layer, imFunctions.py: download, extract, sort, build, shuffle."""
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest

import files
import imFunctions as imf
import mirror
from helpers import decompression_bomb_png

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- download

def test_download_fetches_the_file_from_OXFORD_PETS_URL(pets_server, archives, tmp_path):
    path = imf.downloadImages("images.tar.gz", archives.sizes["images.tar.gz"], data_dir=tmp_path)

    assert open(path, "rb").read() == pets_server.served_bytes("images.tar.gz")
    assert pets_server.requests == [("images.tar.gz", None)]
    assert not os.path.exists(str(path) + ".part")


def test_download_resumes_a_cut_connection_with_a_range_request(pets_server, archives, tmp_path):
    pets_server.cut_first("images.tar.gz", 20000)

    path = imf.downloadImages("images.tar.gz", archives.sizes["images.tar.gz"], data_dir=tmp_path)

    assert open(path, "rb").read() == pets_server.served_bytes("images.tar.gz")
    assert pets_server.requests == [("images.tar.gz", None), ("images.tar.gz", "bytes=20000-")]


def test_download_resumes_a_part_file_left_by_an_earlier_call(pets_server, archives, tmp_path):
    served = pets_server.served_bytes("images.tar.gz")
    (tmp_path / "images.tar.gz.part").write_bytes(served[:1234])

    path = imf.downloadImages("images.tar.gz", len(served), data_dir=tmp_path)

    assert open(path, "rb").read() == served
    assert pets_server.requests == [("images.tar.gz", "bytes=1234-")]


def test_download_gives_up_after_its_retries_and_keeps_the_part_file(pets_server, archives, tmp_path):
    pets_server.cut_first("images.tar.gz", 5000)

    with pytest.raises(imf.DataError, match="run again to resume from byte 5000"):
        imf.downloadImages("images.tar.gz", archives.sizes["images.tar.gz"], data_dir=tmp_path, retries=0)

    assert (tmp_path / "images.tar.gz.part").stat().st_size == 5000
    assert not (tmp_path / "images.tar.gz").exists()


def test_download_retries_after_a_server_error_and_keeps_what_it_has(pets_server, archives, tmp_path):
    served = pets_server.served_bytes("images.tar.gz")
    (tmp_path / "images.tar.gz.part").write_bytes(served[:999])
    pets_server.fail_first("images.tar.gz", 503)

    path = imf.downloadImages("images.tar.gz", len(served), data_dir=tmp_path)

    assert open(path, "rb").read() == served
    assert pets_server.requests == [("images.tar.gz", "bytes=999-")] * 2


def test_download_keeps_a_complete_file_without_fetching_it_again(pets_server, archives, tmp_path):
    size = archives.sizes["images.tar.gz"]
    imf.downloadImages("images.tar.gz", size, data_dir=tmp_path)

    imf.downloadImages("images.tar.gz", size, data_dir=tmp_path)

    assert len(pets_server.requests) == 1


def test_download_of_the_wrong_size_fails_and_removes_the_file(pets_server, archives, tmp_path):
    wrong_size = archives.sizes["images.tar.gz"] + 1

    with pytest.raises(imf.DataError, match=r"images\.tar\.gz from http://127\.0\.0\.1:\d+/images\.tar\.gz has"):
        imf.downloadImages("images.tar.gz", wrong_size, data_dir=tmp_path)

    assert os.listdir(tmp_path) == []


def test_download_with_a_wrong_md5_fails_and_removes_the_file(pets_server, archives, tmp_path):
    with pytest.raises(imf.DataError, match="MD5"):
        imf.downloadImages("images.tar.gz", archives.sizes["images.tar.gz"], data_dir=tmp_path, md5="0" * 32)

    assert os.listdir(tmp_path) == []


def test_download_checks_an_official_archive_against_its_published_md5(archives, tmp_path, monkeypatch):
    size = archives.sizes["annotations.tar.gz"]
    monkeypatch.setitem(imf.OFFICIAL_ARCHIVES, "annotations.tar.gz", (size, "f" * 32))
    with mirror.MirrorServer(archives.directory) as server:
        monkeypatch.setattr(imf, "OFFICIAL_URL", server.url)  # this server plays the official address
        monkeypatch.delenv("OXFORD_PETS_URL", raising=False)

        with pytest.raises(imf.DataError, match="expected f{32}"):
            imf.downloadImages("annotations.tar.gz", size, data_dir=tmp_path)

    assert os.listdir(tmp_path) == []


def test_download_from_a_mirror_only_warns_when_the_published_md5_differs(pets_server, archives, tmp_path,
                                                                           monkeypatch, capsys):
    size = archives.sizes["annotations.tar.gz"]
    monkeypatch.setitem(imf.OFFICIAL_ARCHIVES, "annotations.tar.gz", (size, "f" * 32))

    path = imf.downloadImages("annotations.tar.gz", size, data_dir=tmp_path)

    assert os.path.getsize(path) == size
    assert "differs from the official archive" in capsys.readouterr().err


def test_download_of_a_missing_file_is_a_404_error_naming_file_and_url(pets_server, tmp_path):
    with pytest.raises(imf.DataError) as error:
        imf.downloadImages("nothing.tar.gz", 10, data_dir=tmp_path)

    assert str(error.value) == f"cannot download nothing.tar.gz from {pets_server.url}/nothing.tar.gz: HTTP 404 Not Found"
    assert os.listdir(tmp_path) == []


def test_download_from_a_server_that_never_answers_is_a_clear_error(tmp_path, monkeypatch):
    with mirror.silent_server() as url:
        monkeypatch.setenv("OXFORD_PETS_URL", url)

        with pytest.raises(imf.DataError, match=f"cannot download images.tar.gz from {url}/images.tar.gz after 2 attempts: timed out"):
            imf.downloadImages("images.tar.gz", 100, data_dir=tmp_path, timeout=0.3, retries=1)

    assert os.listdir(tmp_path) == []


def test_download_shows_bytes_total_and_rate(pets_server, archives, tmp_path, capsys):
    imf.downloadImages("images.tar.gz", archives.sizes["images.tar.gz"], data_dir=tmp_path)

    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    size = archives.sizes["images.tar.gz"]
    total = f"{size / 1e3:.1f}k" if size < 1e6 else f"{size / 1e6:.1f}M"  # tqdm's SI prefixes, 3 significant digits
    assert last_line.startswith("images.tar.gz: 100%")
    assert re.search(rf"\| {re.escape(total)}/{re.escape(total)} \[", last_line), last_line
    assert re.search(r"[\d.]+[kMG]?B/s\]$", last_line), last_line


def test_download_abandons_a_server_that_drips_bytes_and_keeps_them(pets_server, archives, tmp_path):
    pets_server.stall_first("images.tar.gz", 5000, drip_every=0.1)

    with pytest.raises(imf.DataError, match=r"after 1 attempts: \d+ bytes in 1 s \(run again to resume from byte "):
        imf.downloadImages("images.tar.gz", archives.sizes["images.tar.gz"], data_dir=tmp_path, retries=0,
                           stall_timeout=1.0, progress=False)

    kept = (tmp_path / "images.tar.gz.part").read_bytes()
    assert len(kept) > 5000 and kept == pets_server.served_bytes("images.tar.gz")[:len(kept)]


def test_download_keeps_every_byte_that_arrived_before_a_stall(pets_server, archives, tmp_path):
    pets_server.stall_first("images.tar.gz", 30_001)  # then silence, in the middle of a 1 MiB read

    with pytest.raises(imf.DataError, match="no data for 0.5 s \\(run again to resume from byte 30001\\)"):
        imf.downloadImages("images.tar.gz", archives.sizes["images.tar.gz"], data_dir=tmp_path, retries=0,
                           timeout=0.5, progress=False)

    assert (tmp_path / "images.tar.gz.part").read_bytes() == pets_server.served_bytes("images.tar.gz")[:30_001]


def test_download_after_a_stall_resumes_where_it_stopped(pets_server, archives, tmp_path):
    pets_server.stall_first("images.tar.gz", 4321)

    path = imf.downloadImages("images.tar.gz", archives.sizes["images.tar.gz"], data_dir=tmp_path, timeout=0.5,
                              progress=False)

    assert open(path, "rb").read() == pets_server.served_bytes("images.tar.gz")
    assert pets_server.requests == [("images.tar.gz", None), ("images.tar.gz", "bytes=4321-")]


def test_download_says_early_that_the_server_has_not_answered(tmp_path, monkeypatch, capsys):
    with mirror.silent_server() as url:
        monkeypatch.setenv("OXFORD_PETS_URL", url)

        with pytest.raises(imf.DataError):
            imf.downloadImages("images.tar.gz", 100, data_dir=tmp_path, timeout=1.0, retries=0)

    assert f"images.tar.gz: waiting for {url[len('http://'):]} to answer..." in capsys.readouterr().err


def test_download_says_early_that_a_connection_is_slow(pets_server, archives, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(imf, "SLOW_AFTER_S", 0.3)
    monkeypatch.setattr(imf, "SLOW_HOURS", 0.01)  # the test archive is small: 36 s counts as slow here
    pets_server.stall_first("images.tar.gz", 100, drip_every=0.05)

    with pytest.raises(imf.DataError):
        imf.downloadImages("images.tar.gz", archives.sizes["images.tar.gz"], data_dir=tmp_path, retries=0,
                           stall_timeout=1.0)

    slow = [line for line in capsys.readouterr().err.splitlines() if "slow connection" in line]
    assert len(slow) == 1 and "h left; Ctrl-C now and running again resumes from here" in slow[0]


def test_download_with_a_partial_the_server_cannot_continue_starts_over_and_says_so(pets_server, archives, tmp_path,
                                                                                     capsys):
    served = pets_server.served_bytes("images.tar.gz")
    (tmp_path / "images.tar.gz.part").write_bytes(served + b"junk")  # longer than the server's file: a 416

    path = imf.downloadImages("images.tar.gz", None, data_dir=tmp_path, progress=False)

    assert open(path, "rb").read() == served
    assert pets_server.requests == [("images.tar.gz", f"bytes={len(served) + 4}-"), ("images.tar.gz", None)]
    assert (f"Warning: the server's copy has {len(served)} bytes, which the {len(served) + 4} already downloaded do "
            f"not fit; starting images.tar.gz over") in capsys.readouterr().err


def test_download_with_a_whole_partial_finishes_on_the_servers_416(pets_server, archives, tmp_path):
    served = pets_server.served_bytes("images.tar.gz")
    (tmp_path / "images.tar.gz.part").write_bytes(served)

    path = imf.downloadImages("images.tar.gz", None, data_dir=tmp_path, progress=False)

    assert open(path, "rb").read() == served
    assert pets_server.requests == [("images.tar.gz", f"bytes={len(served)}-")]


def test_download_of_a_mirrors_archive_takes_the_size_its_server_announces(pets_server, archives, tmp_path):
    path = imf.downloadImages("annotations.tar.gz", imf.expected_size("annotations.tar.gz"), data_dir=tmp_path)

    assert imf.expected_size("annotations.tar.gz") is None  # OXFORD_PETS_URL is set
    assert os.path.getsize(path) == archives.sizes["annotations.tar.gz"]


def test_download_in_a_redirect_loop_is_one_line(pets_server, tmp_path):
    with pytest.raises(imf.DataError) as error:
        imf.downloadImages("loop/images.tar.gz", 100, data_dir=tmp_path, progress=False)

    assert str(error.value) == (f"cannot download images.tar.gz from {pets_server.url}/loop/images.tar.gz: "
                                f"the server redirects in a loop (HTTP 302)")


def test_download_that_cannot_reach_the_official_host_names_OXFORD_PETS_URL(tmp_path, monkeypatch):
    with mirror.silent_server() as url:
        closed = url  # nothing listens once the block ends
    monkeypatch.setattr(imf, "OFFICIAL_URL", closed)
    monkeypatch.delenv("OXFORD_PETS_URL", raising=False)

    with pytest.raises(imf.DataError) as error:
        imf.downloadImages("images.tar.gz", 100, data_dir=tmp_path, retries=0, progress=False)

    assert str(error.value).endswith("(offline? OXFORD_PETS_URL can point at a mirror (README: Offline))")
    assert "\n" not in str(error.value)


def test_download_to_a_full_disk_is_one_line_naming_the_folder_and_the_size(pets_server, archives, tmp_path):
    os.symlink("/dev/full", tmp_path / "images.tar.gz.part")  # every write there fails with ENOSPC

    with pytest.raises(files.DiskFull) as error:
        imf.downloadImages("images.tar.gz", archives.sizes["images.tar.gz"], data_dir=tmp_path, progress=False)

    assert str(error.value).startswith(f"disk full: cannot write images.tar.gz in {tmp_path}: it needs "
                                       f"{files.human_bytes(archives.sizes['images.tar.gz'])}, ")
    assert str(error.value).endswith(" free")


# --------------------------------------------------------------------------- extract

def downloaded(archives, tmp_path, name="images.tar.gz"):
    shutil.copy(archives.directory / name, tmp_path / name)
    return tmp_path


def test_extract_writes_the_archive_into_the_data_folder(archives, tmp_path):
    imf.maybeExtract("images.tar.gz", data_dir=downloaded(archives, tmp_path))

    assert sorted(os.listdir(tmp_path / "images")) == sorted(mirror.image_files())


def test_extract_a_second_time_does_nothing(archives, tmp_path):
    imf.maybeExtract("images.tar.gz", data_dir=downloaded(archives, tmp_path))
    os.remove(tmp_path / "images" / "samoyed_1.jpg")

    imf.maybeExtract("images.tar.gz", data_dir=tmp_path)

    assert not (tmp_path / "images" / "samoyed_1.jpg").exists()


@pytest.fixture(params=["filters", "no filters"])
def extraction_rules(request, monkeypatch):
    """Both ways of checking members: tarfile's filters, and the rules written out for Pythons before 3.11.4."""
    if request.param == "no filters":
        monkeypatch.delattr(tarfile, "data_filter")
    return request.param


def test_extract_writes_the_archive_with_either_rules(extraction_rules, archives, tmp_path):
    imf.maybeExtract("images.tar.gz", data_dir=downloaded(archives, tmp_path))

    assert sorted(os.listdir(tmp_path / "images")) == sorted(mirror.image_files())


@pytest.mark.parametrize("kind", mirror.UNSAFE_KINDS)
def test_extract_refuses_an_unsafe_member_and_writes_nothing(kind, extraction_rules, tmp_path):
    data_dir = tmp_path / "deep" / "data"
    data_dir.mkdir(parents=True)
    mirror.write_unsafe_archive(data_dir / "evil.tar.gz", kind)

    with pytest.raises(imf.DataError, match="refusing to extract evil.tar.gz: unsafe member"):
        imf.maybeExtract("evil.tar.gz", data_dir=data_dir)

    assert os.listdir(data_dir) == ["evil.tar.gz"]
    assert sorted(os.listdir(tmp_path)) == ["deep"] and os.listdir(tmp_path / "deep") == ["data"]


def test_extract_of_a_damaged_archive_is_a_clear_error(tmp_path):
    (tmp_path / "images.tar.gz").write_bytes(b"not a tar file")

    with pytest.raises(imf.DataError, match="cannot extract"):
        imf.maybeExtract("images.tar.gz", data_dir=tmp_path)


# --------------------------------------------------------------------------- sort

@pytest.fixture
def extracted_dir(archives, tmp_path):
    imf.maybeExtract("images.tar.gz", data_dir=downloaded(archives, tmp_path))
    return tmp_path


def listing(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


def test_sort_gives_each_breed_its_test_fraction(extracted_dir):
    imf.sortImages(0.25, data_dir=extracted_dir)

    for breed in mirror.BREEDS:
        total = len([n for n in mirror.image_files() if imf.breed_of(n) == breed])
        assert len(os.listdir(extracted_dir / "test" / breed)) == round(total * 0.25)
        assert len(os.listdir(extracted_dir / "train" / breed)) == total - round(total * 0.25)


def test_sort_names_breeds_by_the_file_name_without_its_number(extracted_dir):
    imf.sortImages(0.15, data_dir=extracted_dir)

    assert sorted(os.listdir(extracted_dir / "train")) == sorted(mirror.BREEDS)


def test_sort_ignores_files_that_are_not_images(extracted_dir):
    imf.sortImages(0.15, data_dir=extracted_dir)

    assert not [path for path in listing(extracted_dir / "train") + listing(extracted_dir / "test")
                if path.endswith(".mat")]


def test_sort_is_reproducible(archives, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for data_dir in (first, second):
        data_dir.mkdir()
        imf.maybeExtract("images.tar.gz", data_dir=downloaded(archives, data_dir))
        imf.sortImages(0.15, data_dir=data_dir)

    assert listing(first / "test") == listing(second / "test")


def test_sort_a_second_time_changes_nothing(extracted_dir):
    imf.sortImages(0.15, data_dir=extracted_dir)
    before = {path: os.stat(extracted_dir / path).st_mtime_ns for path in listing(extracted_dir)}

    imf.sortImages(0.15, data_dir=extracted_dir)

    assert {path: os.stat(extracted_dir / path).st_mtime_ns for path in listing(extracted_dir)} == before


def test_sort_with_another_fraction_redoes_the_split(extracted_dir):
    imf.sortImages(0.15, data_dir=extracted_dir)

    imf.sortImages(0.5, data_dir=extracted_dir)

    assert len(os.listdir(extracted_dir / "test" / "samoyed")) == round(27 * 0.5)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_sort_rejects_a_fraction_outside_zero_to_one(fraction, extracted_dir):
    with pytest.raises(ValueError, match=f"testFraction must be between 0 and 1 \\(exclusive\\), got {fraction}"):
        imf.sortImages(fraction, data_dir=extracted_dir)


# --------------------------------------------------------------------------- build

def test_build_returns_the_tutorials_six_values(prepared_data_dir):
    train_x, train_y, test_x, test_y, classes, classLabels = imf.buildDataset(
        ["shiba_inu", "samoyed"], image_size=32, data_dir=prepared_data_dir)

    assert train_x.dtype == test_x.dtype == np.float32
    assert train_x.shape[1:] == test_x.shape[1:] == (32, 32, 3)
    assert classes == 2 and classLabels == ["shiba_inu", "samoyed"]
    assert train_y.shape == (len(train_x), 2) and test_y.shape == (len(test_x), 2)
    assert set(train_y.sum(axis=1)) == {1.0} and set(test_y.sum(axis=1)) == {1.0}


def test_build_labels_each_image_with_its_breed(prepared_data_dir):
    _, train_y, _, test_y, _, _ = imf.buildDataset(["samoyed", "shiba_inu"], image_size=16,
                                                     data_dir=prepared_data_dir)

    train_names = {b: len(os.listdir(prepared_data_dir / "train" / b)) for b in ("samoyed", "shiba_inu")}
    unreadable_in_train = {b: sum(1 for n in mirror.UNREADABLE if n.startswith(b)
                                  and (prepared_data_dir / "train" / b / n).exists())
                           for b in train_names}
    assert train_y.sum(axis=0).tolist() == [train_names[b] - unreadable_in_train[b]
                                            for b in ("samoyed", "shiba_inu")]


def test_build_subtracts_the_training_sets_mean_image_from_both_sets(prepared_data_dir):
    dataset = imf.loadDataset(["shiba_inu", "samoyed"], image_size=24, data_dir=prepared_data_dir)

    np.testing.assert_allclose(dataset.train_x.mean(axis=0), 0, atol=1e-3)
    raw_test = dataset.test_x + dataset.mean_image
    np.testing.assert_allclose(raw_test, np.round(raw_test), atol=1e-3)  # whole uint8 values again
    assert 0 <= raw_test.min() and raw_test.max() <= 255


def test_build_converts_greyscale_palette_rgba_and_cmyk_files_to_rgb(extracted_dir):
    for name, kind in mirror.ODD_FILES.items():
        picture = imf.load_image(str(extracted_dir / "images" / name), 20)
        if name in mirror.UNREADABLE:
            assert picture is None, kind
        else:
            assert picture.shape == (20, 20, 3) and picture.dtype == np.uint8, kind


def test_build_skips_unreadable_files_with_one_warning_naming_them(prepared_data_dir, tmp_path, capsys):
    data_dir = tmp_path / "data"
    shutil.copytree(prepared_data_dir, data_dir)
    for name in mirror.UNREADABLE:  # make sure both are in the training split
        breed = imf.breed_of(name)
        shutil.copy(data_dir / "images" / name, data_dir / "train" / breed / name)

    imf.buildDataset(["shiba_inu", "samoyed"], image_size=16, data_dir=data_dir)

    warnings = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert warnings == ["Warning: skipped 2 unreadable image file(s): shiba_inu_905.jpg, samoyed_906.jpg"]


def test_build_resizes_every_image_to_the_image_size(prepared_data_dir):
    train_x, _, test_x, _, _, _ = imf.buildDataset(["beagle"], image_size=40, data_dir=prepared_data_dir)

    assert train_x.shape[1:] == test_x.shape[1:] == (40, 40, 3)


@pytest.mark.parametrize("spelling", [["Shiba_Inu", "SAMOYED"], ["shibainu", "samoyed"], ["shiba inu", "Samoyed"]])
def test_build_matches_class_names_whatever_their_case_and_underscores(spelling, prepared_data_dir):
    *_, classLabels = imf.buildDataset(spelling, image_size=16, data_dir=prepared_data_dir)

    assert classLabels == ["shiba_inu", "samoyed"]


def test_build_rejects_an_unknown_class_listing_the_valid_ones(prepared_data_dir):
    with pytest.raises(ValueError) as error:
        imf.buildDataset(["shiba_inu", "corgi"], image_size=16, data_dir=prepared_data_dir)

    assert str(error.value) == "unknown class 'corgi'; valid classes: Abyssinian, beagle, Egyptian_Mau, samoyed, shiba_inu"


def test_build_off_a_terminal_without_classes_uses_the_tutorials_breeds(prepared_data_dir, monkeypatch):
    monkeypatch.setattr(sys, "stdin", open(os.devnull))

    *_, classes, classLabels = imf.buildDataset(image_size=16, data_dir=prepared_data_dir)

    assert (classes, classLabels) == (2, ["shiba_inu", "samoyed"])


def test_ask_for_classes_takes_y_and_n_and_stops_at_break():
    answers = iter(["y", "maybe", "n", "Y", "break"])

    chosen = imf.ask_for_classes(["a", "b", "c", "d", "e"], ask=lambda prompt: next(answers))

    assert chosen == ["a", "c"]


def count_decodes(monkeypatch):
    calls = []
    real = imf.load_image
    monkeypatch.setattr(imf, "load_image", lambda path, size: calls.append(path) or real(path, size))
    return calls


def test_build_a_second_time_reads_the_cache_instead_of_decoding(prepared_data_dir, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    shutil.copytree(prepared_data_dir, data_dir)
    first = imf.buildDataset(["shiba_inu", "samoyed"], image_size=20, data_dir=data_dir)
    decodes = count_decodes(monkeypatch)

    second = imf.buildDataset(["shiba_inu", "samoyed"], image_size=20, data_dir=data_dir)

    assert decodes == []
    for before, after in zip(first[:4], second[:4]):
        np.testing.assert_array_equal(before, after)


def test_build_decodes_again_when_an_input_file_changes(prepared_data_dir, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    shutil.copytree(prepared_data_dir, data_dir)
    imf.buildDataset(["shiba_inu", "samoyed"], image_size=20, data_dir=data_dir)
    changed = data_dir / "train" / "samoyed" / sorted(os.listdir(data_dir / "train" / "samoyed"))[0]
    os.remove(changed)
    mirror.draw_pet("shiba_inu", 1).save(changed, "JPEG")
    decodes = count_decodes(monkeypatch)

    imf.buildDataset(["shiba_inu", "samoyed"], image_size=20, data_dir=data_dir)

    assert str(changed) in decodes
    assert len([name for name in os.listdir(data_dir / "cache") if name.endswith(tuple("0123456789abcdef"))
                and "-20px-" in name and name.startswith("shiba_inu-samoyed-")]) == 1  # the stale one is gone


def test_build_reuses_the_cache_when_the_data_folder_moves(prepared_data_dir, tmp_path, monkeypatch):
    first_place, second_place = tmp_path / "here" / "data", tmp_path / "there" / "data"
    shutil.copytree(prepared_data_dir, first_place)
    imf.buildDataset(["shiba_inu", "samoyed"], image_size=18, data_dir=first_place)
    shutil.copytree(first_place, second_place, copy_function=shutil.copy2)  # keeps mtimes, as a mount does
    decodes = count_decodes(monkeypatch)

    imf.buildDataset(["shiba_inu", "samoyed"], image_size=18, data_dir=second_place)

    assert decodes == []


def cache_folder(data_dir, size):
    [name] = [n for n in os.listdir(data_dir / "cache") if f"-{size}px-" in n and ".tmp-" not in n]
    return data_dir / "cache" / name


def copy_with_cache(prepared_data_dir, tmp_path, size):
    data_dir = tmp_path / "data"
    shutil.copytree(prepared_data_dir, data_dir)
    imf.buildDataset(["shiba_inu", "samoyed"], image_size=size, data_dir=data_dir)
    return data_dir, cache_folder(data_dir, size)


def damage_pixels(cache):
    data = bytearray((cache / "train_x.npy").read_bytes())
    data[-1] ^= 0xFF  # one pixel's value, the header and shape untouched
    (cache / "train_x.npy").write_bytes(bytes(data))


def garbage_labels(cache):
    np.save(cache / "train_y.npy", np.full(3, 7, dtype=np.int64))


def out_of_range_labels(cache):
    labels = np.load(cache / "train_y.npy")
    np.save(cache / "train_y.npy", labels + 5)


@pytest.mark.parametrize("damage, problem", [
    (lambda cache: (cache / "meta.json").write_text("[1, 2"), "has unreadable metadata (meta.json)"),
    (lambda cache: (cache / "meta.json").write_text('{"skipped": 3}'), "has unreadable metadata (meta.json)"),
    (lambda cache: (cache / "train_y.npy").write_bytes(b"garbage"), "has an unreadable array ("),
    (garbage_labels, "holds train labels of shape (3,), not"),
    (out_of_range_labels, "holds train labels outside 0..1"),
    (damage_pixels, "has a checksum mismatch in train_x.npy"),
])
def test_a_damaged_cache_is_rebuilt_with_one_warning(damage, problem, prepared_data_dir, tmp_path, monkeypatch,
                                                     capsys):
    data_dir, cache = copy_with_cache(prepared_data_dir, tmp_path, 22)
    first = imf.buildDataset(["shiba_inu", "samoyed"], image_size=22, data_dir=data_dir)
    damage(cache)
    capsys.readouterr()
    decodes = count_decodes(monkeypatch)

    again = imf.buildDataset(["shiba_inu", "samoyed"], image_size=22, data_dir=data_dir)

    warnings = [line for line in capsys.readouterr().err.splitlines() if "cache" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"Warning: the dataset cache {cache} {problem}")
    assert warnings[0].endswith("; rebuilding it")
    assert decodes  # decoded again, not trusted
    for before, after in zip(first[:4], again[:4]):
        np.testing.assert_array_equal(before, after)
    assert imf.buildDataset(["shiba_inu", "samoyed"], image_size=22, data_dir=data_dir) is not None
    assert "cache" not in capsys.readouterr().err  # the rebuilt cache is good


def test_the_skipped_files_warning_comes_once_when_they_are_first_met(prepared_data_dir, tmp_path, capsys):
    data_dir = tmp_path / "data"
    shutil.copytree(prepared_data_dir, data_dir)
    for name in mirror.UNREADABLE:
        shutil.copy(data_dir / "images" / name, data_dir / "train" / imf.breed_of(name) / name)

    imf.buildDataset(["shiba_inu", "samoyed"], image_size=26, data_dir=data_dir)
    imf.buildDataset(["shiba_inu", "samoyed"], image_size=26, data_dir=data_dir)

    assert [line for line in capsys.readouterr().err.splitlines() if "skipped" in line] == [
        "Warning: skipped 2 unreadable image file(s): shiba_inu_905.jpg, samoyed_906.jpg"]


def test_cache_temporaries_of_dead_writers_are_swept_unless_a_writer_holds_the_lock(prepared_data_dir, tmp_path):
    data_dir, _ = copy_with_cache(prepared_data_dir, tmp_path, 12)
    leftover = data_dir / "cache" / "shiba_inu-samoyed-1234abcd-12px-0123456789ab.tmp-999999-deadbeef"
    leftover.mkdir()
    (leftover / "train_x.npy").write_bytes(b"half")

    with open(data_dir / "cache" / ".lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # a writer at work: nothing may be swept
        assert imf.clean_cache_leftovers(data_dir) == 0 and leftover.exists()
    assert imf.clean_cache_leftovers(data_dir) == 1 and not leftover.exists()


def test_an_image_past_the_decompression_bomb_limit_is_skipped_and_counted(prepared_data_dir, tmp_path, capsys):
    data_dir = tmp_path / "data"
    shutil.copytree(prepared_data_dir, data_dir)
    decompression_bomb_png(data_dir / "train" / "samoyed" / "samoyed_999.jpg")

    dataset = imf.loadDataset(["shiba_inu", "samoyed"], image_size=16, data_dir=data_dir)

    assert "samoyed_999.jpg" in [line for line in capsys.readouterr().err.splitlines() if "skipped" in line][0]
    assert len(dataset.train_x) == len(imf.loadDataset(["shiba_inu", "samoyed"], 16, prepared_data_dir).train_x)


# --------------------------------------------------------------------------- shuffle

def test_shuffle_applies_one_permutation_to_images_and_labels():
    x = np.arange(50, dtype=np.float32).reshape(50, 1)
    y = np.arange(50)

    shuffled_x, shuffled_y = imf.shuffle(x, y, seed=3)

    assert shuffled_x[:, 0].tolist() == shuffled_y.tolist() != y.tolist()


def test_shuffle_with_a_seed_is_reproducible():
    x, y = np.arange(20), np.arange(20)

    assert imf.shuffle(x, y, seed=7)[0].tolist() == imf.shuffle(x, y, seed=7)[0].tolist()


def test_shuffle_rejects_images_and_labels_of_different_lengths():
    with pytest.raises(ValueError, match="x and y differ in length: 3 and 2"):
        imf.shuffle(np.zeros(3), np.zeros(2))


# --------------------------------------------------------------------------- the tutorial

TUTORIAL = textwrap.dedent("""\
    import imFunctions as imf
    imf.downloadImages('annotations.tar.gz', 19173078)
    imf.downloadImages('images.tar.gz', 791918971)
    imf.maybeExtract('annotations.tar.gz')
    imf.maybeExtract('images.tar.gz')
    imf.sortImages(0.15)
    train_x, train_y, test_x, test_y, classes, classLabels = imf.buildDataset()
    train_x, train_y = imf.shuffle(train_x, train_y)
    print(train_x.shape, test_x.shape, classes, classLabels)
""")


def test_the_tutorials_own_sequence_runs_unchanged_against_a_local_mirror(archives, tmp_path):
    with mirror.MirrorServer(archives.directory, pad_to=mirror.OFFICIAL_SIZES) as server:
        server.cut_first("images.tar.gz", 3_000_000)
        result = subprocess.run(
            [sys.executable, "-c", TUTORIAL], cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL,
            env={**os.environ, "OXFORD_PETS_URL": server.url, "PYTHONPATH": REPO}, timeout=300)
    try:
        assert result.returncode == 0, result.stderr
        readable = {part: sum(1 for breed in ("shiba_inu", "samoyed")
                              for name in os.listdir(tmp_path / "data" / part / breed) if name not in mirror.UNREADABLE)
                    for part in ("train", "test")}
        assert result.stdout.splitlines()[-1] == (
            f"({readable['train']}, 224, 224, 3) ({readable['test']}, 224, 224, 3) 2 ['shiba_inu', 'samoyed']")
        assert ("images.tar.gz", "bytes=3000000-") in server.requests
    finally:
        shutil.rmtree(tmp_path / "data")  # 800 MB of padding
