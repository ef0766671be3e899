"""What a run needs of the machine, checked before it starts: memory, disk space, writable folders.

A run that cannot fit in memory is refused with the figures; one that will not have room for
its checkpoints is warned before hours of training, not after; a folder that cannot be written
is refused before anything is.
"""
import os
import shutil
import sys

import cli
import files


def available_memory():
    """This machine's memory, or the container's limit where one is set."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit_file) as handle:
                total = min(total, int(handle.read().strip()))
        except (OSError, ValueError):  # absent, or "max"
            pass
    return total


def memory_estimate(pixels, batch_size, n_images, weights, floats_per_pixel):
    """Bytes a run holds at once: ``{part: bytes}`` for the dataset, the graph's variables and a step.

    ``weights``: the network's float32 parameters; ``floats_per_pixel``: the activations an image
    keeps for the backward pass, per input pixel.
    """
    return {
        # The float32 arrays and, while they are built, the uint8 images they come from.
        "the dataset": n_images * pixels * 3 * (4 + 1),
        # Weights, Adam's two slots and the gradient, in float32.
        "the graph's variables": 4 * 4 * weights,
        # The activations, matched by their gradients.
        "a training step": 2 * 4 * floats_per_pixel * pixels * batch_size,
    }


def check_memory(parts, what, available=None):
    """Refuse, naming the figures, a run whose ``{part: bytes}`` cannot fit in this machine's memory."""
    available = available_memory() if available is None else available
    needed = sum(parts.values())
    if needed > available:
        detail = ", ".join(f"{name} {files.human_bytes(size)}" for name, size in parts.items())
        raise cli.UsageError(f"{what} needs about {files.human_bytes(needed)} of memory ({detail}); this machine "
                             f"has {files.human_bytes(available)}")


def warn_if_short_of_space(folder, needed_bytes, what):
    """One warning when ``folder`` has less free space than ``what`` takes."""
    free = shutil.disk_usage(files.nearest_existing(folder)).free
    if free < needed_bytes:
        print(f"Warning: {folder} has {files.human_bytes(free)} free, and {what} takes "
              f"{files.human_bytes(needed_bytes)}: saving may fail with a full disk", file=sys.stderr)


def check_writable(folder):
    """A folder we can write into, or could create: its nearest existing ancestor decides."""
    existing = files.nearest_existing(folder)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise cli.UsageError(f"cannot write to {folder}: {existing} is not a writable folder")
