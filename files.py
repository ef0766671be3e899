"""Files written so that a crash, a kill or a full disk never leaves a half-written one.

Everything the project writes goes through here: bytes are written under a temporary name
beside the target, flushed to disk and renamed into place, so a reader sees the old file or
the new one, never part of one. Temporary names have one form (``.<name>.tmp-<pid>-<hex>``)
and one sweeper, so what a killed writer left is found and removed. A full disk is DiskFull:
one line naming the folder, the size needed and the space free.
"""
import contextlib
import errno
import fcntl
import io
import json
import os
import re
import secrets
import shutil
import stat

import numpy as np

import cli


class DiskFull(cli.Failure):
    """A write that found no space: names the folder, what was needed and what is free."""


def temporary_name(path):
    """A hidden name beside ``path``, unique to this writer, ending as ``path`` does (so savers
    that go by the suffix still do)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{os.path.splitext(name)[1]}")


def is_temporary_name(name):
    """A name temporary_name makes (the leading dot optional: caches of earlier versions had none)."""
    return re.fullmatch(r"\.?.+\.tmp-\d+-[0-9a-f]{8}(\.\w+)?", name) is not None


def sweep_temporaries(folder, also=lambda name: False):
    """Remove the temporary files and folders in ``folder`` (and the names ``also`` accepts), which only a
    writer that died can have left: call it where no other writer can be at work. Returns
    ``(entries removed, bytes freed)``."""
    removed, freed = 0, 0
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if is_temporary_name(name) or also(name):
            path = os.path.join(folder, name)
            if os.path.isdir(path) and not os.path.islink(path):
                freed += sum(os.path.getsize(os.path.join(root, file)) for root, _, names in os.walk(path)
                             for file in names)
                shutil.rmtree(path, ignore_errors=True)
            else:
                freed += os.path.getsize(path)
                remove(path)
            removed += 1
    return removed, freed


@contextlib.contextmanager
def writing_into(folder):
    """Held while this process writes into ``folder`` (made if missing): the first writer to find no other at
    work sweeps the temporary files that killed writers left (a GIF's can be 675 KB), so they never pile up.

    The lock is an flock of the folder itself, shared among writers: no lock file joins the outputs.
    """
    os.makedirs(folder, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if try_lock(descriptor):
            sweep_temporaries(folder)
        fcntl.flock(descriptor, fcntl.LOCK_SH)  # converts the exclusive lock, or waits out a sweeper
        yield
    finally:
        os.close(descriptor)


def write_bytes_atomically(path, data):
    """Write under a temporary name, flush it to disk, rename it into place: a failure leaves the old file."""
    temporary = temporary_name(path)
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        remove(temporary)
        if is_disk_full(error):
            raise disk_full(os.path.dirname(path) or ".", len(data), os.path.basename(path)) from None
        raise
    except BaseException:  # a stop by a signal (cli.Stopped) mid-write leaves nothing behind either
        remove(temporary)
        raise


def write_json_atomically(path, value):
    write_bytes_atomically(path, (json.dumps(value, indent=1) + "\n").encode())


def write_npy_atomically(path, array):
    """An array as a .npy file, encoded in memory (np.save would add .npy to a temporary name) and renamed."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes_atomically(path, buffer.getvalue())


def read_json(path):
    """The JSON value in ``path``, or None when it is missing or not JSON."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except (FileNotFoundError, IsADirectoryError, ValueError):
        return None


class NotRegularFile(OSError):
    """A FIFO, a device, a socket or a folder where a file was to be read: reading it could wait forever."""


SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                 (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def kind_of(mode):
    """What a file of this ``st_mode`` is, when it is not a regular file; None for a regular file."""
    return next((kind for test, kind in SPECIAL_KINDS if test(mode)), None if stat.S_ISREG(mode) else "not a file")


def open_regular(path):
    """``path`` opened for reading in binary, only if it is a regular file: a FIFO would block the open (and a
    device the read) forever, so it is opened without waiting and refused, as NotRegularFile, from its fstat."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ENXIO:  # a socket: no reading end to open
            raise NotRegularFile(errno.ENXIO, "a socket, not a regular file", path) from None
        raise
    kind = kind_of(os.fstat(descriptor).st_mode)
    if kind is not None:
        os.close(descriptor)
        raise NotRegularFile(errno.EINVAL, f"{kind}, not a regular file", path)
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


def remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def try_lock(handle, kind=fcntl.LOCK_EX):
    """flock ``handle`` without waiting: True when taken, False when another process holds it.

    The kernel releases an flock however its holder ends, kill -9 included: a stale lock never blocks.
    """
    try:
        fcntl.flock(handle, kind | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


# --------------------------------------------------------------------------- full disks

def is_disk_full(error):
    return getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT)


def nearest_existing(path):
    """``path`` made absolute, or its nearest ancestor that exists: what decides where it could be written."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return existing


def disk_full(folder, needed_bytes, what):
    """The one-line error for a full disk: which folder, how much it needed, how much is free."""
    free = shutil.disk_usage(nearest_existing(folder)).free
    return DiskFull(f"disk full: cannot write {what} in {folder}: it needs {human_bytes(needed_bytes)}, "
                    f"{human_bytes(free)} free")


def human_bytes(count):
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} PB"
