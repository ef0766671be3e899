"""tests/mirror.py run as a script, the way the README's Offline section serves it."""
import os
import signal
import socket
import subprocess
import sys
import tarfile
import urllib.request

import mirror
import pytest
from conftest import REPO
from helpers import serving

SCRIPT = os.path.join(REPO, "tests", "mirror.py")


def test_port_0_serves_the_small_archives_at_their_own_size_on_a_free_port(tmp_path):
    with serving("--port", "0", "--out", str(tmp_path)) as (url, _):
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        with urllib.request.urlopen(f"{url}/images.tar.gz", timeout=30) as response:
            announced, body = int(response.headers["Content-Length"]), response.read()
    assert announced == len(body) == os.path.getsize(tmp_path / "images.tar.gz") < 10_000_000
    (tmp_path / "downloaded.tar.gz").write_bytes(body)
    with tarfile.open(tmp_path / "downloaded.tar.gz") as archive:
        assert "images/shiba_inu_1.jpg" in archive.getnames()


def test_official_sizes_pads_the_archives_to_what_the_tutorial_expects(tmp_path):
    size = mirror.OFFICIAL_SIZES["images.tar.gz"]
    with serving("--port", "0", "--out", str(tmp_path), "--official-sizes") as (url, _):
        last_byte = urllib.request.Request(f"{url}/images.tar.gz", headers={"Range": f"bytes={size - 1}-"})
        with urllib.request.urlopen(last_byte, timeout=30) as response:
            assert (response.status, response.headers["Content-Range"], response.read()) == (
                206, f"bytes {size - 1}-{size - 1}/{size}", b"\0")


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_without_out_the_archives_live_in_a_temporary_folder_removed_at_a_signal(number):
    with serving() as (_, process):
        folder = process.stderr.readline().split("serving ", 1)[1].split(";", 1)[0]
        assert sorted(os.listdir(folder)) == ["annotations.tar.gz", "images.tar.gz"]
        process.send_signal(number)
        assert process.wait(timeout=30) == 128 + number
    assert not os.path.exists(folder)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_mirror_in_one_line_with_128_plus_its_number(number, tmp_path):
    with serving("--out", str(tmp_path)) as (_, process):
        process.stderr.readline(), process.stderr.readline()  # what it serves, and how to use it
        process.send_signal(number)
        assert process.wait(timeout=30) == 128 + number
        assert process.stderr.read() == f"mirror.py: stopped by {signal.Signals(number).name}\n"


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, SCRIPT, "--port", str(port), "--out", str(tmp_path)],
                                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"mirror.py: port {port} on 127.0.0.1: in use; pick another, or --port 0 for any free one\n"


def test_a_port_out_of_range_is_refused_before_anything_is_written(tmp_path):
    result = subprocess.run([sys.executable, SCRIPT, "--port", "70000", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 2 and "70000 is not a port" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "out").exists()
