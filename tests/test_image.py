"""The container built and run for real by docker/test-image.sh (root, Docker's engine and docker-compose needed).

The script starts a private dockerd, builds the Dockerfile on a local stand-in base and
runs docker/compose.yaml with docker-compose: training on bind mounts, docker stop and
resume, TensorBoard and the GIFs.

Cold, it spends minutes downloading and building, mostly waiting on the network, so it
starts in the background as soon as pytest collects this test (conftest.py) and the
test, moved to the end of the run, waits for it: the rest of the suite runs meanwhile.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import REPO

NEEDS = "needs root, Docker's engine and docker-compose: apt-get install docker.io docker-compose debootstrap"
TIMEOUT_S = 1800
started = {}  # the one background check of this pytest run: {"process": Popen, "log": file}


def can_run():
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in ("dockerd", "docker-compose"))


def start_image_check():
    """Start docker/test-image.sh in the background, once; a machine that cannot run it starts nothing."""
    if started or not can_run():
        return
    log = tempfile.TemporaryFile(mode="w+")
    # The script's Python (the mirror, the HTTP and GIF checks) is this one, with the project's packages.
    started["process"] = subprocess.Popen(["bash", os.path.join(REPO, "docker", "test-image.sh")], cwd=REPO,
                                          env={**os.environ, "PYTHON": sys.executable}, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    started["log"] = log


def test_the_image_trains_stops_resumes_serves_tensorboard_and_makes_gifs():
    if not can_run():
        if os.environ.get("CI"):
            pytest.fail(f"CI {NEEDS}")
        pytest.skip(NEEDS)
    start_image_check()  # already running when conftest started it

    try:
        status = started["process"].wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        started["process"].kill()
        status = started["process"].wait()
    started["log"].seek(0)
    output = started["log"].read()

    print(output)  # the check's own lines, in pytest's report of this test (-rA shows them when it passes)
    assert status == 0, output[-8000:]
