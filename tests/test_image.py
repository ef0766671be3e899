"""The container built and run for real by docker/test-image.sh (root, Docker's engine and docker-compose needed).

The script starts a private dockerd, builds the Dockerfile on a local stand-in base and
runs docker/compose.yaml with docker-compose: training on bind mounts, docker stop and
resume, TensorBoard and the GIFs.
"""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

NEEDS = "needs root, Docker's engine and docker-compose: apt-get install docker.io docker-compose debootstrap"


def test_the_image_trains_stops_resumes_serves_tensorboard_and_makes_gifs():
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("dockerd", "docker-compose")):
        if os.environ.get("CI"):
            pytest.fail(f"CI {NEEDS}")
        pytest.skip(NEEDS)

    # The script's Python (the mirror, the HTTP and GIF checks) is this one, with the project's packages.
    result = subprocess.run(["bash", os.path.join(REPO, "docker", "test-image.sh")], cwd=REPO,
                            env={**os.environ, "PYTHON": sys.executable},
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800)

    assert result.returncode == 0, (result.stdout[-4000:] + result.stderr[-4000:])
