"""Helpers the test modules share, written apart from the code under test: reference computations in
numpy, the drawing layout as the README states it, event files read back, one-line errors, odd files."""
import contextlib
import http.server
import io
import os
import select
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

import imFunctions as imf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GAP = 2  # white pixels between the tiles of every grid
HEADER = 14  # pixels of the title strip above a titled frame


# --------------------------------------------------------------------------- pictures

def grey_levels(values, low, high):
    """``values`` mapped linearly onto 0..255 between ``low`` and ``high``, as ints (rounded, clipped)."""
    scaled = 255.0 * (np.asarray(values, np.float64) - low) / max(high - low, 1e-12)
    return np.clip(np.round(scaled), 0, 255).astype(int)


def title_strip(width, text):
    """The title strip a titled frame starts with: ``text`` in black, at (GAP, 1) on white, HEADER high."""
    strip = Image.new("RGB", (width, HEADER), "white")
    ImageDraw.Draw(strip).text((GAP, 1), text, fill="black")
    return np.asarray(strip).astype(int)


def tile(frame, index, height, width, zoom, columns, header=HEADER):
    """The pixels of tile ``index`` in a grid of ``columns`` tiles, one sample per zoomed pixel."""
    top = header + GAP + (index // columns) * (height * zoom + GAP)
    left = GAP + (index % columns) * (width * zoom + GAP)
    return frame[top:top + height * zoom:zoom, left:left + width * zoom:zoom]


# --------------------------------------------------------------------------- the network in numpy

def numpy_conv(images, weights, biases):
    """A 3x3 SAME convolution of one [h, w, c] image written out in numpy, before any ReLU."""
    padded = np.pad(images, ((1, 1), (1, 1), (0, 0)))
    height, width = images.shape[:2]
    return sum(padded[dy:dy + height, dx:dx + width] @ weights[dy, dx] for dy in range(3) for dx in range(3)) + biases


def numpy_conv_relu(images, weights, biases):
    """A 3x3 SAME convolution and ReLU of one [h, w, c] image written out in numpy."""
    return np.maximum(numpy_conv(images, weights, biases), 0)


def numpy_max_pool(maps):
    """2x2 max pooling at stride 2 of an even-sized [h, w, c] map."""
    height, width, channels = maps.shape
    return maps.reshape(height // 2, 2, width // 2, 2, channels).max(axis=(1, 3))


def numpy_conv_stack(prepared, tensor):
    """conv1_1 ... pool2 of the tutorial in numpy; ``tensor(name)`` gives a checkpoint's value."""
    maps, output = {}, prepared
    for layer in ("conv1_1", "conv1_2", "conv2_1", "conv2_2"):
        output = maps[layer] = numpy_conv_relu(output, tensor(f"{layer}/weights{layer[4:]}"),
                                               tensor(f"{layer}/biases{layer[4:]}"))
        if layer.endswith("_2"):
            output = maps[f"pool{layer[4]}"] = numpy_max_pool(output)
    return maps


def numpy_forward(prepared, tensor):
    """The conv stack's maps, fc1's output and the logits of one prepared image, without dropout."""
    maps = numpy_conv_stack(prepared, tensor)
    fc1 = np.maximum(maps["pool2"].reshape(-1) @ tensor("fc1/weights3_1") + tensor("fc1/biases3_1"), 0)
    return maps, fc1, fc1 @ tensor("softmax/weights3_2") + tensor("softmax/biases3_2")


def softmax(logits):
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def checkpoint_tensor(prefix):
    """``tensor(name)`` of a checkpoint, read with TensorFlow's own reader."""
    return tf.train.load_checkpoint(str(prefix)).get_tensor


def newest_checkpoint(checkpoint_dir):
    """The prefix of the full checkpoint of the highest step in a folder (names sort 12 before 6: by number)."""
    indexes = checkpoint_dir.glob("model.ckpt-*.index")
    return max(indexes, key=lambda index: int(index.name.split("-")[1].split(".")[0])).with_suffix("")


def rewrite_checkpoint_tensor(prefix, name, value):
    """One tensor of a checkpoint replaced, every other kept: a checkpoint as another version would have written it."""
    reader = tf.train.load_checkpoint(str(prefix))
    values = {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}
    values[name] = value
    graph = tf.Graph()
    with graph.as_default():
        variables = {key: tf.compat.v1.Variable(tensor, name=key) for key, tensor in values.items()}
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(prefix), write_meta_graph=False, write_state=False)


def prepared_image(run, image, size=64):
    """``image`` as the network takes it: resized to ``size``, the run's training mean subtracted."""
    return imf.load_image(str(image), size).astype(np.float32) - np.load(run.checkpoint_dir / "mean_image.npy")


def numpy_grad_cam(prepared, tensor):
    """Grad-CAM on conv2_2 in numpy from a full checkpoint's weights: the class, its probability and the map."""
    maps, fc1, logits = numpy_forward(prepared, tensor)
    weights3_1, weights3_2 = tensor("fc1/weights3_1"), tensor("softmax/weights3_2")
    best = int(np.argmax(logits))
    probabilities = softmax(logits)
    # Backward from the class's logit: softmax layer, fc1's ReLU, fc1, the flattening, pool2.
    d_pool2 = (weights3_1 @ (weights3_2[:, best] * (fc1 > 0))).reshape(maps["pool2"].shape)
    conv2_2 = maps["conv2_2"]
    side, channels = conv2_2.shape[0] // 2, conv2_2.shape[2]
    windows = conv2_2.reshape(side, 2, side, 2, channels).transpose(0, 2, 4, 1, 3).reshape(side, side, channels, 4)
    d_windows = np.zeros_like(windows)
    np.put_along_axis(d_windows, windows.argmax(-1)[..., None], d_pool2[..., None], -1)  # each max takes it all
    d_conv2_2 = d_windows.reshape(side, side, channels, 2, 2).transpose(0, 3, 1, 4, 2).reshape(conv2_2.shape)
    cam = np.maximum(conv2_2 @ d_conv2_2.mean(axis=(0, 1)), 0)
    return best, probabilities[best], cam


def numpy_upsample_2x(values):
    """Bilinear 2x upsampling, pixel centres aligned, edges clamped: out[2i] = .75 x[i] + .25 x[i-1], ..."""
    for _ in range(2):
        before, after = np.concatenate([values[:1], values[:-1]]), np.concatenate([values[1:], values[-1:]])
        values = np.stack([0.75 * values + 0.25 * before, 0.75 * values + 0.25 * after], axis=1)
        values = values.reshape(-1, *values.shape[2:]).T
    return values


def expected_grad_cam(run, image):
    """The class, its probability, the map at conv2_2 and the heat map at the image's size, from numpy."""
    tensor = checkpoint_tensor(run.checkpoint_dir / "model.ckpt-18")
    best, probability, cam = numpy_grad_cam(prepared_image(run, image), tensor)
    heat = numpy_upsample_2x(cam)
    return ["shiba_inu", "samoyed"][best], probability, cam, heat / heat.max()


# --------------------------------------------------------------------------- files and processes

def events(logdir, run):
    """Every (step, tag, value) written to ``logdir/run``, read back with TF's summary iterator."""
    found = []
    for name in os.listdir(os.path.join(logdir, run)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, run, name)):
            for value in event.summary.value:
                found.append((event.step, value.tag, value))
    return found


def one_line(text):
    """``text``, which must be exactly one line."""
    assert text.count("\n") == 1 and text.endswith("\n"), text
    return text


def exit_status(main, argv):
    """The status an entry point's ``main(argv)`` ends with: returned, or raised by its parser as SystemExit."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def decompression_bomb_png(path, side=20000):
    """A tiny PNG that claims ``side`` x ``side`` pixels: past Pillow's limit, it must never be decoded."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", side, side)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    path.write_bytes(bytes(data))


@contextlib.contextmanager
def serving(*args):
    """The mirror script (tests/mirror.py) running with ``args``; yields (its URL, the process)."""
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "mirror.py"), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "the mirror printed no URL within 60 s"
        yield process.stdout.readline().strip(), process
    finally:
        process.terminate()
        process.wait(timeout=30)


def as_an_ordinary_user():
    """The command prefix that runs a process bound by file permissions: root keeps its uid but loses the
    capabilities that override them (a folder chmod 000 is then unreadable to it, as to anyone)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


@contextlib.contextmanager
def unreadable(folder):
    """``folder`` with no permissions for the length of the block (pytest can remove it afterwards)."""
    folder.chmod(0)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


def run_as_an_ordinary_user(script, *args, timeout=120):
    """One of the project's scripts run bound by file permissions, as a user without root runs it."""
    return subprocess.run([*as_an_ordinary_user(), sys.executable, os.path.join(REPO, script), *map(str, args)],
                          check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)


PORTAL_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in to the Wi-Fi</title></head><body>Accept the terms</body></html>\n"


@contextlib.contextmanager
def lying_server(body, announced):
    """An HTTP server on 127.0.0.1 that answers every GET with 200 and ``Content-Length: announced`` but sends
    ``body`` and closes; a Range request past ``body`` gets 416 ``bytes */len(body)``, as if that were the whole
    file. Yields its URL."""
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.headers.get("Range"):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(announced))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- hardware

def hardware_precision():
    """What --mixed-precision alone should pick here, found from the hardware directly: float16 on GPUs with
    tensor cores, bfloat16 on a CPU whose flags list AVX512_BF16 or AMX, else float32."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capabilities = [tf.config.experimental.get_device_details(gpu).get("compute_capability") for gpu in gpus]
        return "mixed_float16" if all(c and c[0] >= 7 for c in capabilities) else "float32"
    with open("/proc/cpuinfo") as cpuinfo:
        flags = set(cpuinfo.read().split())
    return "mixed_bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"


# --------------------------------------------------------------------------- notebooks

def inject_parameters(notebook, parameters):
    """A cell after the one tagged ``parameters`` that sets ``parameters``, as papermill injects one."""
    import nbformat

    index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(index + 1, cell)
    return notebook
