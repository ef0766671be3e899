"""Shared fixtures: the generated dataset, its real HTTP server, and a prepared data folder."""
import collections

import pytest

import imFunctions as imf
import mirror

Archives = collections.namedtuple("Archives", "directory sizes")


@pytest.fixture(scope="session")
def archives(tmp_path_factory):
    """Both archives of the generated dataset, written once per test session."""
    directory = tmp_path_factory.mktemp("archives")
    return Archives(directory, mirror.make_archives(directory))


@pytest.fixture
def pets_server(archives, monkeypatch):
    """A live mirror on 127.0.0.1 that ``$OXFORD_PETS_URL`` points at."""
    with mirror.MirrorServer(archives.directory) as server:
        monkeypatch.setenv("OXFORD_PETS_URL", server.url)
        yield server


@pytest.fixture(scope="session")
def prepared_data_dir(archives, tmp_path_factory):
    """A data folder downloaded from a live mirror, extracted and sorted (15 % test)."""
    data_dir = tmp_path_factory.mktemp("data")
    with mirror.MirrorServer(archives.directory) as server, pytest.MonkeyPatch.context() as patch:
        patch.setenv("OXFORD_PETS_URL", server.url)
        for name, size in archives.sizes.items():
            imf.downloadImages(name, size, data_dir=data_dir, progress=False)
            imf.maybeExtract(name, data_dir=data_dir)
    imf.sortImages(0.15, data_dir=data_dir)
    return data_dir
