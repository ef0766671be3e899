"""The README's commands for a newcomer, run as written."""
import os
import re
import shlex
import subprocess
import sys

from conftest import REPO
from helpers import serving

README = open(os.path.join(REPO, "README.md")).read()


def commands(heading):
    """The lines of the first ``sh`` block after ``heading``."""
    section = README.split(f"\n{heading}\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip()]


def as_run_here(line, port=None):
    """(environment, argv) of a README command: its python is this one, its paths the repository's."""
    words = shlex.split(line, comments=True)
    env = dict(os.environ)
    while re.fullmatch(r"[A-Z_]+=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value.replace("PORT", str(port))
    argv = [sys.executable if word == "python" else
            os.path.join(REPO, word) if os.path.isfile(os.path.join(REPO, word)) else word for word in words]
    return env, argv


def test_ci_runs_the_readmes_test_line():
    (line,) = commands("## Tests")
    ci = open(os.path.join(REPO, ".ci", "run")).read().splitlines()
    assert line in ci


def test_the_offline_commands_train_from_the_local_mirror(tmp_path):
    serve, train = commands("### Offline")
    _, serve_argv = as_run_here(serve)
    assert serve_argv[:2] == [sys.executable, os.path.join(REPO, "tests", "mirror.py")]
    with serving(*serve_argv[2:]) as (url, _):
        env, train_argv = as_run_here(train, port=url.rsplit(":", 1)[1])
        result = subprocess.run(train_argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert env["OXFORD_PETS_URL"] == url
    assert os.path.isfile(tmp_path / "data" / "images.tar.gz") and os.listdir(tmp_path / "logs" / "train")
    assert os.path.isfile(tmp_path / "checkpoints" / "checkpoint")
