"""Benchmark: the tutorial's training step against Keras 3, the machine's matmul peak, and the loop's overhead.

In one process, run after run (interleaved; the best of each is kept, medians are printed too,
since this machine is noisy and shared), on synthetic float32 data:

  graph    visualize_convnets.build_graph's training step, fetching [train_step, loss, accuracy]
           as run_epochs does, through a Session with visualize_convnets.session_config()
  keras    the same architecture in Keras 3 (3x3 SAME conv 32, 32, pool, dropout, conv 64, 64,
           pool, dropout, dense 512 relu, dropout, dense softmax; Adam, categorical cross-entropy),
           model.train_on_batch on the same arrays; compiled with Keras' default jit_compile
           ("auto", which Keras resolves to False, no XLA, on a machine without a GPU; the JSON
           line says what it resolved to), so both sides run TensorFlow's oneDNN kernels
  matmul   a square float32 matmul (4096 by default) in a Session with the same config: the peak
           GFLOP/s the step's FLOPs are compared with
  loop     visualize_convnets.train at its defaults (summaries every 5 steps with a test-set summary,
           a filter snapshot every 50 steps, full checkpoints by the clock, every 10 minutes, the
           end-of-epoch test accuracy) for two epochs of 34 steps into a temporary folder; the second
           epoch (steady state: no start-up, no first-call kernel set-up) is timed from the end of the
           first epoch's test accuracy to the end of its own, against the same number of bare training
           steps; checkpoints and snapshots timed through a RunFolder subclass, the summary steps and
           test accuracy through the tutorial's public functions on a warm session (nothing patched);
           the run's final checkpoint is timed on its own and its cost per epoch put on paper at
           this machine's speed and at a GPU's (--gpu-tflops)

    python bench/benchmark.py --quick          # about 2 minutes on 2 cores
    python bench/benchmark.py                  # more repeats and steps
    python bench/benchmark.py --image-size 64 --batch-size 10 --repeats 3

share_of_matmul_peak = train_img_per_s * 7.8 GFLOP / matmul_gflops: 7.8 GFLOP is one trained
224-px image (forward + both backward passes; scaled by (size/224)^2 at other sizes).
loop_overhead = loop epoch time / the same number of bare steps. checkpoint_per_epoch_gpu = the checkpoint's
write time / the epoch's FLOPs at --gpu-tflops. Ends with one JSON line.
"""
import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import drawing  # noqa: E402
import imFunctions as imf  # noqa: E402
import run_folder  # noqa: E402
import tf_start  # noqa: E402
import tensorflow as tf  # noqa: E402
import visualize_convnets as vc  # noqa: E402
from architecture import CONV, TUTORIAL  # noqa: E402
from progress import Progress  # noqa: E402

v1 = tf.compat.v1
GFLOP_PER_IMAGE_224 = 7.8


def train_flops_per_image(image_size, n_classes):
    """Multiply-adds x2 of one trained image: forward, input gradients (none for conv1_1), weight gradients."""
    forward, total, side = 0, 0, image_size
    for layer in TUTORIAL.layers:
        if layer.kind == CONV:
            flops = 2 * side * side * 9 * TUTORIAL.input_channels(layer.name) * layer.channels
            forward += flops
            total += flops * (2 if layer.name == TUTORIAL.first_conv else 3)
        else:
            side = -(-side // 2)
    fc = 2 * (TUTORIAL.fc1_inputs(image_size) * TUTORIAL.fc_units + TUTORIAL.fc_units * n_classes)
    return total + 3 * fc


def synthetic_batch(rng, count, image_size, n_classes):
    images = rng.standard_normal((count, image_size, image_size, 3), dtype=np.float32)
    labels = np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, count)]
    return images, labels


# --------------------------------------------------------------------------- the contenders

def graph_step(image_size, batch_size, n_classes, images, labels, keep_conv, keep_fc, precision=tf_start.FLOAT32):
    """A warm Session on build_graph; returns a function running one training step as run_epochs does."""
    model = vc.build_graph(image_size, n_classes, 1e-5, seed=1, precision=precision)
    with model["graph"].as_default():
        session = v1.Session(config=tf_start.session_config(precision))
        session.run(v1.global_variables_initializer())
    fetches = [model["train_step"], model["loss"], model["accuracy"]]
    feed = {model["X"]: images, model["Y_"]: labels, model["keepRate1"]: keep_conv, model["keepRate2"]: keep_fc}
    return session, lambda: session.run(fetches, feed)


def bare_step(image_size, n_classes, images, labels, keep_conv, keep_fc):
    """The same model as a plain compat.v1 graph written here, none of the project's code: placeholders, four
    3x3 SAME convolutions with ReLU, two 2x2 pools with dropout, fc 512 with dropout, softmax cross-entropy,
    Adam 1e-5, fetching the step, the loss and the accuracy. The yardstick for build_graph's step."""
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(1)
        x = v1.placeholder(tf.float32, [None, image_size, image_size, 3])
        y_ = v1.placeholder(tf.float32, [None, n_classes])
        keep1, keep2 = v1.placeholder(tf.float32, []), v1.placeholder(tf.float32, [])
        output = x
        for layer in TUTORIAL.layers:
            if layer.kind == CONV:
                weights = tf.Variable(v1.truncated_normal(TUTORIAL.kernel_shape(layer.name), stddev=0.1))
                # bias_add, as build_graph: Grappler fuses Conv2D, BiasAdd and Relu into one kernel, not an AddV2.
                biases = tf.Variable(tf.zeros([layer.channels]))
                output = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(output, weights, 1, "SAME"), biases))
            else:
                output = tf.nn.dropout(tf.nn.max_pool2d(output, 2, 2, "SAME"), rate=1.0 - keep1)
        flat = tf.reshape(output, [-1, int(np.prod(output.shape[1:]))])
        fc1 = tf.nn.relu(flat @ tf.Variable(v1.truncated_normal([flat.shape[1], TUTORIAL.fc_units], stddev=0.1))
                         + tf.Variable(tf.ones([TUTORIAL.fc_units])))
        logits = tf.nn.dropout(fc1, rate=1.0 - keep2) @ tf.Variable(
            v1.truncated_normal([TUTORIAL.fc_units, n_classes], stddev=0.1)) + tf.Variable(tf.ones([n_classes]))
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y_, logits=logits))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1), tf.argmax(y_, 1)), tf.float32))
        step = v1.train.AdamOptimizer(1e-5).minimize(loss)
        session = v1.Session(config=tf_start.session_config(), graph=graph)
        session.run(v1.global_variables_initializer())
    feed = {x: images, y_: labels, keep1: keep_conv, keep2: keep_fc}
    return session, lambda: session.run([step, loss, accuracy], feed)


def loss_after(steps, precision, image_size, n_classes, batches, keep_conv, keep_fc):
    """build_graph's loss after ``steps`` training steps from seed 1 on ``batches`` in turn, in ``precision``."""
    model = vc.build_graph(image_size, n_classes, 1e-5, seed=1, precision=precision)
    with model["graph"].as_default(), v1.Session(config=tf_start.session_config(precision)) as session:
        session.run(v1.global_variables_initializer())
        for index in range(steps):
            images, labels = batches[index % len(batches)]
            loss = session.run([model["train_step"], model["loss"]], {
                model["X"]: images, model["Y_"]: labels, model["keepRate1"]: keep_conv, model["keepRate2"]: keep_fc})[1]
    return float(loss)


def keras_model(image_size, batch_size, n_classes, keep_conv, keep_fc, jit_compile="auto"):
    import keras
    from keras import layers
    stack = []
    for layer in TUTORIAL.layers:
        if layer.kind == CONV:
            stack.append(layers.Conv2D(layer.channels, 3, padding="same", activation="relu"))
        else:
            stack += [layers.MaxPooling2D(2, padding="same"), layers.Dropout(1.0 - keep_conv)]
    model = keras.Sequential([
        keras.Input((image_size, image_size, 3), batch_size=batch_size),
        *stack,
        layers.Flatten(),
        layers.Dense(TUTORIAL.fc_units, activation="relu"),
        layers.Dropout(1.0 - keep_fc),
        layers.Dense(n_classes, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=jit_compile)
    return model


def matmul_run(size):
    """A Session computing one size x size float32 matmul per call (fetching one element keeps it whole)."""
    graph = tf.Graph()
    with graph.as_default():
        a = tf.Variable(v1.random_normal([size, size], seed=1))
        b = tf.Variable(v1.random_normal([size, size], seed=2))
        product = tf.matmul(a, b)[0, 0]
        session = v1.Session(config=tf_start.session_config(), graph=graph)
        session.run(v1.global_variables_initializer())
    return session, lambda: session.run(product)


def probe_summary_bytes(image_size, n_classes):
    """Bytes of one snapshot step's probe feature maps in the event file, for a noise image: the worst case
    for PNG (a photo's maps compress several times better)."""
    model = vc.build_graph(image_size, n_classes, seed=1)
    noise = np.random.default_rng(0).normal(0, 60, (image_size, image_size, 3)).astype(np.float32)
    with model["graph"].as_default(), v1.Session(config=tf_start.session_config()) as session:
        session.run(v1.global_variables_initializer())
        return len(vc.ProbeMaps(model, noise).summary(session).SerializeToString())


def seconds_per_call(function, calls):
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


# --------------------------------------------------------------------------- the real loop

class TimedRunFolder(run_folder.RunFolder):
    """The run folder, its full checkpoints and filter snapshots timed: ``spent[part]`` holds (start, end) pairs."""

    def __init__(self, *folders):
        super().__init__(*folders)
        self.spent = {"checkpoint": [], "snapshot": []}

    def timed(self, part, save, session, step, *more):
        started = time.perf_counter()
        try:
            return save(session, step, *more)
        finally:
            self.spent[part].append((started, time.perf_counter()))

    def save_checkpoint(self, session, step):
        return self.timed("checkpoint", super().save_checkpoint, session, step)

    def save_snapshot(self, session, step, first=False):
        return self.timed("snapshot", super().save_snapshot, session, step, first)


class TimedLines(io.StringIO):
    """An output stream that notes when each "Test Set Accuracy" line, an epoch's end, was written."""

    def __init__(self):
        super().__init__()
        self.epoch_ends = []

    def write(self, text):
        if text.startswith("Test Set Accuracy"):
            self.epoch_ends.append(time.perf_counter())
        return super().write(text)


def per_call(function, calls):
    """Seconds of ``calls`` calls of ``function``, after one warm-up call."""
    function()
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return time.perf_counter() - started


def loop_parts(model, dataset, batch_size, keep_conv, keep_fc, summary_steps, folder):
    """Seconds epoch 2 spends in the loop's summary steps and its test accuracy, timed through the tutorial's
    own public functions on a warm session of the same graph."""
    feed = {model["X"]: dataset.train_x[:batch_size], model["Y_"]: dataset.train_y[:batch_size],
            model["keepRate1"]: keep_conv, model["keepRate2"]: keep_fc}
    rng = np.random.default_rng(0)
    with model["graph"].as_default(), v1.Session(config=tf_start.session_config()) as session:
        session.run(v1.global_variables_initializer())
        writer = v1.summary.FileWriter(os.path.join(folder, "parts"))
        with writer:
            return {
                "train_summary": per_call(lambda: vc.write_train_summary(session, model, feed, writer, 1),
                                          summary_steps),
                "test_summary": per_call(lambda: vc.write_test_summary(session, model, dataset, writer, 1, rng),
                                         summary_steps),
                "evaluate": per_call(lambda: vc.evaluate(session, model, dataset.test_x, dataset.test_y,
                                                         max(batch_size, 50)), 1)}


def loop_epoch(image_size, batch_size, n_classes, steps, train_x, train_y, test_x, test_y, keep_conv, keep_fc,
               checkpoint_every=None):
    """Two epochs of visualize_convnets.train at its defaults in a temporary folder; the second epoch's time
    and parts, and the end-of-run checkpoint's time."""
    folder = tempfile.mkdtemp(prefix="train-bench-")
    try:
        args = vc.build_parser().parse_args([
            "--epochs", "2", "--batch-size", str(batch_size), "--image-size", str(image_size),
            "--keep-conv", str(keep_conv), "--keep-fc", str(keep_fc), "--skip-demos",
            "--logdir", os.path.join(folder, "logs"), "--checkpoint-dir", os.path.join(folder, "checkpoints"),
            "--data-dir", os.path.join(folder, "data"), "--figures-dir", os.path.join(folder, "figures")]
            + (["--checkpoint-every", str(checkpoint_every)] if checkpoint_every else []))
        dataset = imf.Dataset(train_x, train_y, test_x, test_y, n_classes,
                              [f"class{k}" for k in range(n_classes)], np.zeros(train_x.shape[1:], np.float32))
        model = vc.build_graph(image_size, n_classes, args.learning_rate, seed=1)
        handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
        output = TimedLines()
        try:
            with TimedRunFolder(args.checkpoint_dir, args.logdir, args.data_dir) as timed, \
                    contextlib.redirect_stdout(output), contextlib.redirect_stderr(io.StringIO()):
                described = timed.start(dataset.classLabels, image_size, batch_size, seed=1)
                status = vc.train(args, dataset, model, dict(described, train_images=len(train_x)), timed)
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
        if status != 0 or len(output.epoch_ends) != 2:
            raise RuntimeError(f"the training loop failed (status {status}):\n{output.getvalue()}")
        start, end = output.epoch_ends  # epoch 2: from the end of epoch 1's test accuracy to its own
        summary_steps = sum(1 for step in range(steps + 1, 2 * steps + 1) if step % args.summary_every == 0)
        parts = {part: sum(b - a for a, b in timed.spent[part] if a >= start and b <= end)
                 for part in ("checkpoint", "snapshot")}
        parts.update(loop_parts(model, dataset, batch_size, keep_conv, keep_fc, summary_steps, folder))
        final_checkpoint = timed.spent["checkpoint"][-1]
        snapshots = run_folder.snapshot_dir(args.checkpoint_dir)
        last_step = 2 * steps
        snapshot_step = max(s for s in range(0, last_step + 1, args.snapshot_every))
        snapshot_bytes = sum(os.path.getsize(os.path.join(snapshots, name)) for name in os.listdir(snapshots)
                             if name.startswith(f"{run_folder.SNAPSHOT_NAME}-{snapshot_step}."))
        checkpoint_bytes = sum(os.path.getsize(os.path.join(args.checkpoint_dir, name))
                               for name in os.listdir(args.checkpoint_dir)
                               if name.startswith(f"{run_folder.CHECKPOINT_NAME}-{last_step}."))
        return end - start, parts, snapshot_bytes, checkpoint_bytes, final_checkpoint[1] - final_checkpoint[0]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------- the loop's host work, at GPU speed

# An H200 SXM's stated dense peaks and memory bandwidth (NVIDIA's datasheet).
H200 = {"bf16_tflops": 989.0, "tf32_tflops": 494.0, "bandwidth_tb_s": 4.8}
ADAM_BYTES_PER_WEIGHT = 7 * 4  # reads the weight, its gradient and both moments, writes back three, float32


def host_work(image_size, batch_size, n_classes, train_x, train_y, test_x, keep_conv, keep_fc, defaults, calls,
              folder):
    """Milliseconds per training step of what the loop does on the host, whatever the device: each part timed
    on its own (``calls`` times, after a warm-up) and spread over the steps it recurs on at the loop's
    defaults (summaries every --summary-every steps, snapshots every --snapshot-every, the test accuracy
    once an epoch)."""
    model = vc.build_graph(image_size, n_classes, 1e-5, seed=1)
    graph = model["graph"]
    steps_per_epoch = -(-len(train_x) // batch_size)
    rng = np.random.default_rng(1)
    picked = rng.permutation(len(train_x))[:batch_size]
    with graph.as_default(), v1.Session(config=tf_start.session_config()) as session:
        needs_the_feed = model["X"][0, 0, 0, 0]  # a run that takes the fed batch and computes next to nothing
        weight_summaries = [graph.get_tensor_by_name(f"summaries/{name}:0")
                            for name in ("weights1_1", "conv1_1_filters")]
        snapshot_saver = v1.train.Saver(vc.snapshot_variables(graph, TUTORIAL), max_to_keep=None)
        session.run(v1.global_variables_initializer())
        feed = {model["X"]: train_x[picked], model["Y_"]: train_y[picked], model["keepRate1"]: keep_conv,
                model["keepRate2"]: keep_fc}
        summary = session.run(model["summaries"], {**feed, model["keepRate1"]: 1.0, model["keepRate2"]: 1.0})
        probe = vc.ProbeMaps(model, test_x[0])
        maps = session.run(probe.fetches, probe.feed)
        writer = v1.summary.FileWriter(os.path.join(folder, "host"))
        progress = Progress(total=10 ** 9, file=io.StringIO(), bar_format=vc.STEP_PROGRESS)
        trained = {"loss": 0.5, "accuracy": 0.5}
        evaluation_runs = -(-len(test_x) // max(batch_size, 50))
        rare = max(1, calls // 5)  # the slow parts that recur once a snapshot
        parts = {  # part: (what it does, calls timed, its share of a step)
            "batch copy (fancy index)": (lambda: (train_x[picked], train_y[picked]), calls, 1),
            "feed and session.run": (lambda: session.run(needs_the_feed, feed), calls,
                                     1 + 2 / defaults.summary_every + evaluation_runs / steps_per_epoch),
            "weights1_1 histogram and filter picture": (lambda: session.run(weight_summaries), calls,
                                                        1 / defaults.summary_every),
            "event writes": (lambda: writer.add_summary(summary, 1), calls, 2 / defaults.summary_every),
            "probe picture (grids, PNG)": (lambda: [vc.image_summary_value(layer, drawing.feature_grid(
                maps[layer][0])) for layer in probe.layers], rare, 1 / defaults.snapshot_every),
            "filter snapshot": (lambda: snapshot_saver.save(session, os.path.join(folder, "snapshot", "f"),
                                                            write_meta_graph=False, write_state=False),
                                rare, 1 / defaults.snapshot_every),
            "progress line": (lambda: vc.show_step(progress, trained, batch_size), calls, 1),
        }
        with writer, progress:
            return {part: 1000 * per_call(function, count) / count * share
                    for part, (function, count, share) in parts.items()}


def gpu_step_ms(image_size, batch_size, n_classes):
    """A training step's compute on paper on an H200: its FLOPs at the bf16 and TF32 peaks, and the traffic of
    Adam's update of fc1 (nearly all the weights) at the memory bandwidth."""
    flops = batch_size * train_flops_per_image(image_size, n_classes)
    fc1_weights = (TUTORIAL.fc1_inputs(image_size) + 1) * TUTORIAL.fc_units
    return {"bf16_ms": 1000 * flops / (H200["bf16_tflops"] * 1e12),
            "tf32_ms": 1000 * flops / (H200["tf32_tflops"] * 1e12),
            "fc1_adam_ms": 1000 * fc1_weights * ADAM_BYTES_PER_WEIGHT / (H200["bandwidth_tb_s"] * 1e12)}


# --------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps (about 2 minutes on 2 cores)")
    parser.add_argument("--image-size", type=int, default=224, help="side of the square synthetic images")
    parser.add_argument("--batch-size", type=int, default=10, help="images per training step")
    parser.add_argument("--classes", type=int, default=2, help="number of classes")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved rounds of graph, Keras and matmul blocks (default 10, --quick 6)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per timed block, half as many matmuls (default 8, --quick 5)")
    parser.add_argument("--matmul-size", type=int, default=4096, help="side of the square matmul")
    parser.add_argument("--loop-steps", type=int, default=34,
                        help="training steps per epoch of the real loop (34, the tutorial's: 340 training images "
                             "at batch 10; epoch 2 holds steps 35..68, seven summary steps and the step-50 snapshot)")
    parser.add_argument("--loop-repeats", type=int, default=None,
                        help="runs of the real loop, each beside a block of as many bare steps (default 3, --quick 1)")
    parser.add_argument("--gpu-tflops", type=float, default=67.0,
                        help="GPU speed the checkpoint's cost is put against: the H100/H200's FP32 peak (TF32 "
                             "tensor cores are faster still, so the real share is larger)")
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0,
                        help="the training run's clock for full checkpoints, for the share they cost")
    parser.add_argument("--mixed-precision", default="auto", choices=("auto", "float16", "bfloat16", "none"),
                        help="the mixed-precision step timed beside float32, as training's --mixed-precision picks "
                             "it (none: skip it)")
    parser.add_argument("--loss-steps", type=int, default=20,
                        help="training steps from seed 1 after which float32's and mixed precision's losses are "
                             "compared")
    parser.add_argument("--host-calls", type=int, default=20, help="calls timed of each part of the loop's host work")
    parser.add_argument("--keras-xla", action="store_true",
                        help="also time Keras with jit_compile=True (XLA on the CPU; slow to compile)")
    args = parser.parse_args(argv)
    tf_start.gpus()  # TensorFlow's CUDA probe, its log shown only when it failed to find a GPU that is there
    repeats = args.repeats or (6 if args.quick else 10)
    steps = args.steps or (5 if args.quick else 8)
    loop_repeats = args.loop_repeats or (1 if args.quick else 3)
    keep_conv, keep_fc = 0.2, 0.5
    tf_start.quiet_python_logs()
    began = time.perf_counter()

    rng = np.random.default_rng(0)
    images, labels = synthetic_batch(rng, args.batch_size, args.image_size, args.classes)
    graph_session, graph_run = graph_step(args.image_size, args.batch_size, args.classes, images, labels,
                                          keep_conv, keep_fc)
    contenders = {"graph": graph_run}
    bare_session, contenders["bare"] = bare_step(args.image_size, args.classes, images, labels, keep_conv, keep_fc)
    precision = tf_start.choose_precision(None if args.mixed_precision == "none" else args.mixed_precision)
    sessions = [bare_session]
    if precision != tf_start.FLOAT32:
        mixed_session, contenders["mixed"] = graph_step(args.image_size, args.batch_size, args.classes, images,
                                                        labels, keep_conv, keep_fc, precision)
        sessions.append(mixed_session)
    keras_models = {"keras": keras_model(args.image_size, args.batch_size, args.classes, keep_conv, keep_fc)}
    if args.keras_xla:
        keras_models["keras_xla"] = keras_model(args.image_size, args.batch_size, args.classes, keep_conv, keep_fc,
                                                jit_compile=True)
    for name, model in keras_models.items():
        contenders[name] = lambda model=model: model.train_on_batch(images, labels)
    matmul_session, contenders["matmul"] = matmul_run(args.matmul_size)
    for function in contenders.values():  # first calls: graph pruning, kernel set-up, tracing
        seconds_per_call(function, 2)

    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, function in contenders.items():
            times[name].append(seconds_per_call(function, steps if name != "matmul" else max(1, steps // 2)))

    loop_times, bare_times, parts_list, checkpoint_times, snapshot_bytes, checkpoint_bytes = [], [], [], [], 0, 0
    total = args.loop_steps * args.batch_size
    train_x, train_y = synthetic_batch(rng, total, args.image_size, args.classes)
    test_x, test_y = synthetic_batch(rng, max(1, round(total * 0.15 / 0.85)), args.image_size, args.classes)
    for _ in range(loop_repeats):
        bare_times.append(seconds_per_call(graph_run, args.loop_steps) * args.loop_steps)
        epoch, parts, snapshot_bytes, checkpoint_bytes, checkpoint_s = loop_epoch(
            args.image_size, args.batch_size, args.classes, args.loop_steps, train_x, train_y, test_x, test_y,
            keep_conv, keep_fc)
        loop_times.append(epoch)
        parts_list.append(parts)
        checkpoint_times.append(checkpoint_s)
    graph_session.close()
    matmul_session.close()
    for session in sessions:
        session.close()
    batches = [synthetic_batch(np.random.default_rng(index), args.batch_size, args.image_size, args.classes)
               for index in range(4)]
    losses = {name: loss_after(args.loss_steps, name, args.image_size, args.classes, batches, keep_conv, keep_fc)
              for name in {tf_start.FLOAT32, precision}}
    defaults = vc.build_parser().parse_args([])
    with tempfile.TemporaryDirectory(prefix="host-bench-") as folder:
        host = host_work(args.image_size, args.batch_size, args.classes, train_x, train_y, test_x, keep_conv,
                         keep_fc, defaults, args.host_calls, folder)
    gpu = gpu_step_ms(args.image_size, args.batch_size, args.classes)

    per_image = {name: args.batch_size / min(seconds) for name, seconds in times.items() if name != "matmul"}
    median_per_image = {name: args.batch_size / statistics.median(seconds)
                        for name, seconds in times.items() if name != "matmul"}
    matmul_flops = 2 * args.matmul_size ** 3
    gflops = matmul_flops / min(times["matmul"]) / 1e9
    gflop_per_image = GFLOP_PER_IMAGE_224 * (args.image_size / 224) ** 2
    best_loop = min(range(loop_repeats), key=lambda k: loop_times[k])
    bare = min(bare_times)
    for name in per_image:
        print(f"{name:9s} {per_image[name]:7.2f} images/s best, {median_per_image[name]:7.2f} median "
              f"({steps} steps x {repeats} rounds)")
    median_gflops = matmul_flops / statistics.median(times["matmul"]) / 1e9
    print(f"matmul    {gflops:7.1f} GFLOP/s best, {median_gflops:7.1f} median "
          f"({args.matmul_size}^2 float32)")
    print(f"loop      epoch of {args.loop_steps} steps {loop_times[best_loop]:.2f} s vs bare steps {bare:.2f} s; "
          + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in parts_list[best_loop].items()))
    checkpoint_s = min(checkpoint_times)
    gpu_epoch_s = args.loop_steps * args.batch_size * train_flops_per_image(args.image_size, args.classes) \
        / (args.gpu_tflops * 1e12)
    graph_vs_bare = statistics.median(b / g for g, b in zip(times["graph"], times["bare"]))
    print(f"bare      {per_image['bare']:7.2f} images/s best: the project's float32 step at "
          f"{graph_vs_bare:.3f}x a plain compat.v1 graph's speed (median of paired rounds)")
    mixed_ratio = None
    if "mixed" in times:
        mixed_ratio = statistics.median(g / m for g, m in zip(times["graph"], times["mixed"]))
        print(f"mixed     {per_image['mixed']:7.2f} images/s best: {precision} at {mixed_ratio:.2f}x float32's speed "
              f"(median of paired rounds)")
    print(f"loss after {args.loss_steps} steps from seed 1: " + ", ".join(f"{name} {value:.5f}"
                                                                         for name, value in sorted(losses.items())))
    host_ms = sum(host.values())
    print(f"host work per step {host_ms:.2f} ms: " + ", ".join(f"{part} {ms:.2f}" for part, ms in host.items()))
    print(f"an H200's compute per step on paper: {gpu['bf16_ms']:.3f} ms at its bf16 peak, {gpu['tf32_ms']:.3f} ms "
          f"at TF32, and {gpu['fc1_adam_ms']:.3f} ms of fc1's Adam traffic at {H200['bandwidth_tb_s']:g} TB/s: the "
          f"host's work is {host_ms / (gpu['tf32_ms'] + gpu['fc1_adam_ms']):.0f}x the TF32 step")
    print(f"checkpoint {checkpoint_bytes / 1e9:.2f} GB written in {checkpoint_s:.2f} s: each epoch it would add "
          f"{checkpoint_s / bare:.0%} to this machine's epoch; at GPU speed ({args.gpu_tflops:g} TFLOP/s, an epoch "
          f"in {gpu_epoch_s:.3f} s) it would take {checkpoint_s / gpu_epoch_s:.0f}x the epoch's training, while "
          f"one every {args.checkpoint_minutes:g} minutes adds {checkpoint_s / (60 * args.checkpoint_minutes):.2%}")

    report = {
        "train_img_per_s": round(per_image["graph"], 2),
        "keras_img_per_s": round(per_image["keras"], 2),
        "ratio_vs_keras": round(per_image["graph"] / per_image["keras"], 3),
        # Each round's Keras block right after its graph block: the median of those pairs drifts less.
        "ratio_vs_keras_paired_median": round(statistics.median(
            k / g for g, k in zip(times["graph"], times["keras"])), 3),
        "matmul_gflops": round(gflops, 1),
        "share_of_matmul_peak": round(per_image["graph"] * gflop_per_image / gflops, 3),
        "loop_overhead": round(loop_times[best_loop] / bare, 3),
        # Without the notebook's dropout-off measurement of the batch on summary steps (issue 11, item 6).
        "loop_overhead_without_train_measure": round(
            (loop_times[best_loop] - parts_list[best_loop]["train_summary"]) / bare, 3),
        "train_measure_share": round(parts_list[best_loop]["train_summary"] / bare, 3),
        "snapshot_bytes": snapshot_bytes,
        "probe_bytes_per_1000_steps_worst": probe_summary_bytes(args.image_size, args.classes) * 1000 // 50,
        "train_img_per_s_median": round(median_per_image["graph"], 2),
        "keras_img_per_s_median": round(median_per_image["keras"], 2),
        "keras_jit_compile": bool(keras_models["keras"].jit_compile),
        "checkpoint_bytes": checkpoint_bytes,
        "checkpoint_s": round(checkpoint_s, 2),
        "checkpoint_per_epoch_cpu": round(checkpoint_s / bare, 3),
        "gpu_tflops_assumed": args.gpu_tflops,
        "gpu_epoch_s": round(gpu_epoch_s, 4),
        "checkpoint_per_epoch_gpu": round(checkpoint_s / gpu_epoch_s, 1),
        "checkpoint_by_clock_share": round(checkpoint_s / (60 * args.checkpoint_minutes), 5),
        "loop_epoch_s": round(loop_times[best_loop], 2),
        "bare_steps_s": round(bare, 2),
        **{f"loop_{name}_s": round(seconds, 2) for name, seconds in parts_list[best_loop].items()},
        "gflop_per_image_counted": round(train_flops_per_image(args.image_size, args.classes) / 1e9, 2),
        "image_size": args.image_size, "batch_size": args.batch_size, "repeats": repeats, "steps": steps,
        "loop_steps": args.loop_steps, "loop_repeats": loop_repeats,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "tf_version": tf.__version__, "cpu_count": os.cpu_count(),
        "seconds": round(time.perf_counter() - began, 1),
    }
    report.update({
        "bare_img_per_s": round(per_image["bare"], 2),
        "graph_vs_bare_paired_median": round(graph_vs_bare, 3),
        "mixed_precision": precision,
        "mixed_img_per_s": round(per_image["mixed"], 2) if "mixed" in per_image else None,
        "mixed_vs_float32_paired_median": round(mixed_ratio, 3) if mixed_ratio else None,
        "loss_steps": args.loss_steps,
        **{f"loss_{name}": round(value, 6) for name, value in losses.items()},
        "host_ms_per_step": round(host_ms, 3),
        **{f"host_ms_{part.split(' (')[0].replace(' ', '_').replace('.', '')}": round(ms, 3)
           for part, ms in host.items()},
        **{f"h200_{key}": round(value, 4) for key, value in gpu.items()},
        "host_vs_h200_tf32_step": round(host_ms / (gpu["tf32_ms"] + gpu["fc1_adam_ms"]), 1),
    })
    if args.keras_xla:
        report["keras_xla_img_per_s"] = round(per_image["keras_xla"], 2)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
