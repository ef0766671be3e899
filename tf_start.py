"""TensorFlow's quiet start-up, the device line and the session settings every script shares.

TensorFlow's C++ side logs its start-up notes (at import, at the first session) before and
after its logging is set up; they would bury a one-line usage error and a run's own lines.
Import this module before TensorFlow, then TensorFlow itself:

    import tf_start  # noqa: F401 -- TensorFlow's start-up notes held back
    import tensorflow as tf

Informational C++ logs are off unless the user sets TF_CPP_MIN_LOG_LEVEL; the import's are
held back, and the CUDA probe's are shown only when it fails (gpus()).
"""
import contextlib
import functools
import glob
import os
import sys
import tempfile


@contextlib.contextmanager
def native_stderr_held_back(replaced_by=()):
    """Hold back what native code writes to stderr; replay it if the block fails, unless with one of the
    ``replaced_by`` exceptions, whose one line says it all (TensorFlow's C++ log of a full disk, say).

    Yields a list that holds the bytes once the block is over, for a caller that
    decides afterwards that they matter.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    held_bytes = []
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield held_bytes
        except BaseException as error:
            os.dup2(saved, 2)
            if not isinstance(error, replaced_by):
                held.seek(0)
                os.write(2, held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            held_bytes.append(held.read())


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
with native_stderr_held_back():
    import tensorflow as tf


def quiet_python_logs():
    """TensorFlow's Python warnings off: Saver's deprecation notice is not news to a TF1 tutorial."""
    tf.get_logger().setLevel("ERROR")


def session_config():
    config = tf.compat.v1.ConfigProto()
    config.gpu_options.allow_growth = True  # share the GPU with TensorBoard or a second run
    return config


@functools.cache
def gpus():
    """The GPUs TensorFlow sees. Its CUDA probe logs an error on every machine without one, so that
    log is shown only where an NVIDIA device is present and TensorFlow still found none. Call it
    before the first session, so the probe runs here."""
    with native_stderr_held_back() as held:
        found = tf.config.list_physical_devices("GPU")
    if not found and glob.glob("/dev/nvidia[0-9]*"):
        os.write(2, held[0])
    return found


def describe_devices():
    """The run's first line: where it trains."""
    found = gpus()
    if found:
        return f"Training on {len(found)} GPU(s): {', '.join(gpu.name for gpu in found)}"
    return "No GPU visible to TensorFlow: training on the CPU"
