"""Shared fixtures: the generated dataset, its real HTTP server, and a prepared data folder."""
import collections
import os
import subprocess
import sys

import pytest

import imFunctions as imf
import mirror

Archives = collections.namedtuple("Archives", "directory sizes")


def pytest_collection_modifyitems(config, items):
    """The image check (tests/test_image.py) starts in the background once collected, its test last."""
    image_checks = [item for item in items if item.nodeid.startswith("tests/test_image.py::")]
    for item in image_checks:
        items.remove(item)
        items.append(item)
        if not config.option.collectonly:
            item.module.start_image_check()
            config.stash[IMAGE_CHECK] = item.module.started


IMAGE_CHECK = pytest.StashKey()


def pytest_unconfigure(config):
    """A run that ends early (-x, Ctrl-C) stops the background image check; its script cleans up after itself."""
    process = config.stash.get(IMAGE_CHECK, {}).get("process")
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()


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


# --------------------------------------------------------------------------- training runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Run = collections.namedtuple("Run", "directory data_dir logdir checkpoint_dir figures_dir stdout stderr")


def run_script(script, args, cwd, timeout=600):
    """One of the project's scripts in a fresh Python, as a user would start it."""
    return subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)


def training_args(data_dir, out_dir, **flags):
    """Command-line arguments of a short training run writing under ``out_dir``."""
    # A learning rate 100x the tutorial's, so 18 steps change the filters visibly.
    # A checkpoint each epoch too (the clock would save only the last), so the rotation and fallbacks show.
    settings = dict(image_size=64, epochs=3, batch_size=8, learning_rate=1e-3, summary_every=2, snapshot_every=2,
                    checkpoint_every=1, keep_checkpoints=2, seed=1, data_dir=data_dir, logdir=out_dir / "logs",
                    checkpoint_dir=out_dir / "checkpoints", figures_dir=out_dir / "figures")
    settings.update(flags)
    args = []
    for name, value in settings.items():
        if value is not None:  # None: leave the flag to its default
            args += [f"--{name.replace('_', '-')}"] + ([] if value is True else [value])
    return args


def short_training_run(data_dir, out_dir, **flags):
    result = run_script("visualize_convnets.py", training_args(data_dir, out_dir, **flags), cwd=out_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return Run(out_dir, data_dir, out_dir / "logs", out_dir / "checkpoints", out_dir / "figures", result.stdout,
               result.stderr)


@pytest.fixture(scope="session")
def short_run(prepared_data_dir, tmp_path_factory):
    """A real 3-epoch run at 64 px: 6 steps an epoch, snapshots every 2 steps, a checkpoint each epoch, 2 kept."""
    return short_training_run(prepared_data_dir, tmp_path_factory.mktemp("run"))


# --------------------------------------------------------------------------- small disks

def small_disk_available(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    return subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """Runs a shell command with a folder mounted as a tmpfs of the given size, in a private mount namespace."""
    if not small_disk_available(tmp_path):
        pytest.skip("needs root and mount namespaces (unshare -m) to make a small disk")

    def run(folder, size, command):
        folder.mkdir(parents=True, exist_ok=True)
        script = f"mount -t tmpfs -o size={size} tmpfs '{folder}' && {command}"
        return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                              stdin=subprocess.DEVNULL, timeout=300)
    return run


def shell_command(script, args):
    return " ".join([sys.executable, os.path.join(REPO, script), *(f"'{arg}'" for arg in map(str, args))])
