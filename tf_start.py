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
                pass_on(held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            held_bytes.append(held.read())


def pass_on(native_bytes):
    """What native code wrote to stderr while it was held back, written out now through sys.stderr: a stderr
    that is gone then loses it as it loses any line (cli.LosableStream), rather than failing the run."""
    if native_bytes:
        sys.stderr.write(native_bytes.decode(errors="replace"))
        sys.stderr.flush()


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
with native_stderr_held_back():
    import tensorflow as tf
    from tensorflow.core.protobuf import rewriter_config_pb2


def quiet_python_logs():
    """TensorFlow's Python warnings off: Saver's deprecation notice is not news to a TF1 tutorial."""
    tf.get_logger().setLevel("ERROR")


FLOAT32, MIXED_FLOAT16, MIXED_BFLOAT16 = "float32", "mixed_float16", "mixed_bfloat16"
# float16 asked for where no GPU has tensor cores: TensorFlow's rewrite leaves the graph in float32, and float16's
# loss scaling runs around it. Recorded and said as such, never as the mixed_float16 it did not compute in.
FLOAT32_LOSS_SCALED = "float32_loss_scaled"
LOSS_SCALED = (MIXED_FLOAT16, FLOAT32_LOSS_SCALED)


def precision_line(precision):
    """The line that says what a run computes in, or None for the tutorial's float32."""
    if precision == FLOAT32:
        return None
    if precision == FLOAT32_LOSS_SCALED:
        return f"Computing in float32 with float16's loss scaling ({precision}): no GPU with float16 tensor cores here"
    return f"Computing in {precision}: 16-bit matmuls and convolutions, float32 weights"


def session_config(precision=FLOAT32):
    """The Session's settings; ``precision`` picks Grappler's mixed-precision rewrite of the graph.

    Both rewrites compute the graph's matmuls and convolutions in 16 bits, casting at their
    edges, and keep every variable float32: MIXED_FLOAT16 is the CUDA one that TF1's
    enable_mixed_precision_graph_rewrite turns on (set here, per session, rather than through
    its process-wide switch), MIXED_BFLOAT16 the oneDNN one for CPUs with bfloat16 units.
    """
    config = tf.compat.v1.ConfigProto()
    config.gpu_options.allow_growth = True  # share the GPU with TensorBoard or a second run
    rewrites = config.graph_options.rewrite_options
    if precision == MIXED_FLOAT16:
        rewrites.auto_mixed_precision = rewriter_config_pb2.RewriterConfig.ON
    elif precision == MIXED_BFLOAT16:
        rewrites.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    return config


def cpu_has_bfloat16():
    """Whether this CPU computes in bfloat16 natively (AVX512_BF16 or AMX), as the oneDNN rewrite needs."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:  # not Linux: no way to tell, so no rewrite
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_has_float16(gpu):
    """Whether a GPU has tensor cores for float16 (compute capability 7.0, Volta, or newer)."""
    capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
    return capability is not None and tuple(capability) >= (7, 0)


def choose_precision(requested):
    """The precision a run computes in, for --mixed-precision ``requested`` (None, "auto", "float16" or
    "bfloat16"): auto takes a GPU's float16 tensor cores, else a CPU's bfloat16 units, else float32 with
    one warning line; a rewrite named where the hardware lacks it is one warning, and float32, which is
    what TensorFlow then computes in: FLOAT32_LOSS_SCALED for float16, whose loss scaling still runs."""
    if requested is None:  # the tutorial's float32: nothing to ask the hardware
        return FLOAT32
    found = gpus()
    float16_ready = bool(found) and all(gpu_has_float16(gpu) for gpu in found)
    bfloat16_ready = not found and cpu_has_bfloat16()
    if requested == "auto":
        if float16_ready or bfloat16_ready:
            return MIXED_FLOAT16 if float16_ready else MIXED_BFLOAT16
        where = "this GPU has no float16 tensor cores (compute capability 7.0+)" if found else \
            "this CPU has neither AVX512_BF16 nor AMX, and no GPU is visible"
        print(f"Warning: --mixed-precision needs 16-bit hardware, and {where}: training in float32", file=sys.stderr)
        return FLOAT32
    if requested == "float16" and not float16_ready:
        print("Warning: --mixed-precision float16 needs a GPU with float16 tensor cores: TensorFlow leaves the graph "
              "in float32 here, with the loss scaling", file=sys.stderr)
        return FLOAT32_LOSS_SCALED
    if requested == "bfloat16" and not bfloat16_ready:
        print("Warning: --mixed-precision bfloat16 needs a CPU with AVX512_BF16 or AMX and no GPU: TensorFlow leaves "
              "the graph in float32 here", file=sys.stderr)
        return FLOAT32
    return MIXED_FLOAT16 if requested == "float16" else MIXED_BFLOAT16


def minimize_loss_scaled(adam, loss, global_step):
    """``adam.minimize(loss)`` with float16's dynamic loss scaling: the training step and the loss scale's
    variables. Call it in the name scope Adam would be minimised in.

    The loss is scaled up before the backward pass so small gradients do not vanish in float16, and
    the gradients scaled back down before Adam sees them; the scale halves whenever they overflow,
    and that step changes no weight. Such a step still counts: a global step stays one batch of the
    epoch's order.
    """
    # Adam's variables made here, in this scope, as a plain minimize makes them: the loss scaling applies
    # the update inside a tf.cond, which would name them outside it, and then a checkpoint of one
    # precision would not restore into the other's graph.
    adam._create_slots(loss.graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES))
    scaled = tf.compat.v1.mixed_precision.MixedPrecisionLossScaleOptimizer(adam, "dynamic")
    update = scaled.minimize(loss, name="adam")
    with tf.control_dependencies([update]):
        counted = tf.group(global_step.assign_add(1, read_value=False), name="count_step")
    return counted, [variable for variable in scaled.variables() if variable not in adam.variables()]


@functools.cache
def gpus():
    """The GPUs TensorFlow sees. Its CUDA probe logs an error on every machine without one, so that
    log is shown only where an NVIDIA device is present and TensorFlow still found none. Call it
    before the first session, so the probe runs here."""
    with native_stderr_held_back() as held:
        found = tf.config.list_physical_devices("GPU")
    if not found and glob.glob("/dev/nvidia[0-9]*"):
        pass_on(held[0])
    return found


def describe_devices():
    """The run's first line: where it trains."""
    found = gpus()
    if found:
        return f"Training on {len(found)} GPU(s): {', '.join(gpu.name for gpu in found)}"
    return "No GPU visible to TensorFlow: training on the CPU"


# TensorFlow's CUDA probe runs at its first session or device query, and logs cuInit's failure on every machine
# without a GPU: a notebook's first cell that makes a Session, a script of the user's own, showed it. The probe is
# made here, as the project's modules are imported, where gpus() holds its log back.
gpus()
