"""A small Oxford-IIIT Pet dataset in the real layout, and a real HTTP server for it.

The tests (data, training, GIFs) and the Docker image check all use this module,
because the real dataset (792 MB) cannot be downloaded where they run.

``make_archives(directory)`` writes ``images.tar.gz`` and ``annotations.tar.gz``:
``images/`` holds lower-case dog and capitalised cat breeds drawn so that each breed
looks different (a net can learn them), plus the awkward files the real archive has:
a greyscale JPEG, a palette and an RGBA PNG named ``.jpg``, a CMYK JPEG, a truncated
JPEG, an empty file and ``.mat`` files. ``annotations/`` holds ``list.txt`` (with its
``#`` header), ``trainval.txt`` and ``test.txt``.

``MirrorServer(directory)`` serves a folder on 127.0.0.1 with HTTP Range support, and
can cut its first response for a file after N bytes, like a dropped connection.

Run as a script to serve a freshly generated mirror until Ctrl-C or SIGTERM (one line,
exit status 128 + the signal's number, as every entry point of the project); it prints
the URL to put in ``$OXFORD_PETS_URL`` (``--port 0``, the default, takes any free port):

    python tests/mirror.py --port 0
"""
import argparse
import contextlib
import errno
import gzip
import http.server
import io
import os
import random
import re
import socket
import sys
import tarfile
import tempfile
import threading

from PIL import Image, ImageDraw

sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's own modules
import cli  # after the path that finds it when run as a script

# breed -> (species, number of clean images); species 1 is cat, 2 is dog, as in list.txt.
BREEDS = {
    "Abyssinian": (1, 6),
    "Egyptian_Mau": (1, 6),
    "beagle": (2, 6),
    "samoyed": (2, 24),
    "shiba_inu": (2, 24),
}
# The real archive's awkward files, each named like a pet image of its breed.
ODD_FILES = {
    "samoyed_901.jpg": "greyscale",
    "shiba_inu_902.jpg": "rgba_png",
    "samoyed_903.jpg": "cmyk",
    "shiba_inu_904.jpg": "palette_png",
    "shiba_inu_905.jpg": "truncated",
    "samoyed_906.jpg": "empty",
}
UNREADABLE = ("shiba_inu_905.jpg", "samoyed_906.jpg")
MAT_FILES = ("Abyssinian_100.mat", "Abyssinian_101.mat")
LIST_HEADER = """#Image CLASS-ID SPECIES BREED ID
#ID: 1:37 Class ids
#SPECIES: 1:Cat 2:Dog
#BREED ID: 1-12:Cat 1:25:Dog
#All images with 1st letter as captial are cat images
#images with small first letter are dog images
"""


def draw_pet(breed, number, size=(120, 90)):
    """A picture whose look depends on the breed (colours and shape) and varies per image."""
    rng = random.Random(f"{breed}:{number}")
    palette = {
        "shiba_inu": ((214, 128, 52), (40, 30, 25)),
        "samoyed": ((236, 236, 242), (40, 80, 200)),
        "beagle": ((120, 80, 40), (250, 250, 250)),
        "Abyssinian": ((60, 150, 60), (200, 40, 40)),
        "Egyptian_Mau": ((128, 128, 128), (20, 20, 20)),
    }
    background, foreground = palette[breed]
    jitter = tuple(min(255, max(0, c + rng.randint(-20, 20))) for c in background)
    picture = Image.new("RGB", size, jitter)
    draw = ImageDraw.Draw(picture)
    width, height = size
    x, y = rng.randint(0, width // 2), rng.randint(0, height // 2)
    if breed == "samoyed":
        for row in range(0, height, 12):
            draw.rectangle([0, row, width, row + 4], fill=foreground)
    elif breed == "shiba_inu":
        draw.ellipse([x, y, x + width // 2, y + height // 2], fill=foreground)
    else:
        draw.polygon([(x, y + height // 3), (x + width // 3, y), (x + width // 2, y + height // 2)],
                     fill=foreground)
    return picture


def encode(picture, kind):
    """Bytes of ``picture`` written the way ``kind`` names (see ODD_FILES)."""
    buffer = io.BytesIO()
    if kind == "greyscale":
        picture.convert("L").save(buffer, "JPEG", quality=90)
    elif kind == "rgba_png":
        rgba = picture.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(buffer, "PNG")
    elif kind == "cmyk":
        picture.convert("CMYK").save(buffer, "JPEG", quality=90)
    elif kind == "palette_png":
        picture.convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, "PNG")
    elif kind == "truncated":
        picture.save(buffer, "JPEG", quality=90)
        return buffer.getvalue()[: len(buffer.getvalue()) // 2]
    elif kind == "empty":
        return b""
    else:
        picture.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def image_files(size=(120, 90), breeds=None):
    """``{file name: bytes}`` of the ``images/`` folder."""
    files = {}
    for breed, (_, count) in (breeds or BREEDS).items():
        for number in range(1, count + 1):
            files[f"{breed}_{number}.jpg"] = encode(draw_pet(breed, number, size), "jpeg")
    for name, kind in ODD_FILES.items():
        breed, number = re.fullmatch(r"(.+)_(\d+)\.jpg", name).groups()
        files[name] = encode(draw_pet(breed, int(number), size), kind)
    for name in MAT_FILES:
        files[name] = b"MATLAB 5.0 MAT-file, not an image\n"
    return files


def annotation_files(image_names):
    """``{file name: bytes}`` of the ``annotations/`` folder, as the real one lays it out."""
    stems = sorted({os.path.splitext(name)[0] for name in image_names if name.endswith(".jpg")})
    breeds = sorted(BREEDS, key=str.lower)
    class_id = {breed: position + 1 for position, breed in enumerate(breeds)}
    breed_id = {}
    for species in (1, 2):
        for position, breed in enumerate(b for b in breeds if BREEDS[b][0] == species):
            breed_id[breed] = position + 1
    lines = []
    for stem in stems:
        breed = stem.rsplit("_", 1)[0]
        lines.append(f"{stem} {class_id[breed]} {BREEDS[breed][0]} {breed_id[breed]}\n")
    return {
        "list.txt": (LIST_HEADER + "".join(lines)).encode(),
        "trainval.txt": "".join(lines[0::2]).encode(),
        "test.txt": "".join(lines[1::2]).encode(),
    }


def write_tar_gz(path, members):
    """A reproducible .tar.gz of ``{member name: bytes}`` (fixed times, so same bytes each time)."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped:
        with tarfile.open(fileobj=zipped, mode="w") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                archive.addfile(info, io.BytesIO(data))
    return os.path.getsize(path)


def make_archives(directory, size=(120, 90)):
    """Write both archives into ``directory``; returns ``{archive name: bytes}``."""
    os.makedirs(directory, exist_ok=True)
    images = image_files(size)
    annotations = annotation_files(images)
    return {
        "images.tar.gz": write_tar_gz(os.path.join(directory, "images.tar.gz"),
                                      {f"images/{name}": data for name, data in images.items()}),
        "annotations.tar.gz": write_tar_gz(os.path.join(directory, "annotations.tar.gz"),
                                           {f"annotations/{name}": data for name, data in annotations.items()}),
    }


UNSAFE_KINDS = ("absolute", "dotdot", "symlink", "hardlink", "device", "fifo", "inner_symlink", "inner_hardlink",
                "link_chain")


def write_unsafe_archive(path, kind):
    """An archive with one clean file and members that must not be extracted (see UNSAFE_KINDS).

    ``link_chain`` is the attack that defeats checks made against the disk before
    extraction: ``p -> .``, then ``p/p/p/esc -> ../../..`` (harmless-looking while ``p``
    does not exist yet), then a file written through ``esc``, three folders up.
    """
    links = {"symlink": [("images/escape_link", tarfile.SYMTYPE, "../../outside")],
             "hardlink": [("images/escape_hard", tarfile.LNKTYPE, "/etc/passwd")],
             "inner_symlink": [("images/alias.jpg", tarfile.SYMTYPE, "safe_1.jpg")],
             "inner_hardlink": [("images/alias.jpg", tarfile.LNKTYPE, "images/safe_1.jpg")],
             "link_chain": [("p", tarfile.SYMTYPE, "."), ("p/p/p/esc", tarfile.SYMTYPE, "../../..")]}
    with tarfile.open(path, "w:gz") as archive:
        clean = tarfile.TarInfo("images/safe_1.jpg")
        clean.size = 4
        archive.addfile(clean, io.BytesIO(b"safe"))
        for name, link_type, target in links.get(kind, []):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = link_type, target
            archive.addfile(link)
        if kind in ("device", "fifo"):
            special = tarfile.TarInfo("images/disk" if kind == "device" else "images/pipe")
            special.type = tarfile.BLKTYPE if kind == "device" else tarfile.FIFOTYPE
            special.devmajor, special.devminor = 8, 0
            archive.addfile(special)
        elif kind in ("absolute", "dotdot", "link_chain"):
            bad = tarfile.TarInfo({"absolute": "/tmp/escaped.txt", "dotdot": "images/../../escaped.txt",
                                   "link_chain": "esc/escape_chain.txt"}[kind])
            bad.size = 7
            archive.addfile(bad, io.BytesIO(b"escaped"))


class MirrorServer:
    """Serves a folder on 127.0.0.1 with Range support; records every request it gets.

    ``cut_first(name, after_bytes)`` makes the next response for ``name`` stop after
    that many bytes and drop the connection, while announcing the full length;
    ``stall_first(name, after_bytes, drip_every=None)`` makes it stop sending after that
    many bytes and keep the connection open, silent or dripping one byte every
    ``drip_every`` seconds; ``fail_first(name, status)`` answers the next request for it
    with that HTTP error. Any path under ``/loop/`` redirects to itself, forever.
    ``pad_to={name: size}`` serves that archive followed by zeros up to ``size`` bytes
    (gzip readers skip trailing zeros), so the tutorial's literal official sizes match.
    """

    def __init__(self, directory, port=0, pad_to=None):
        self.directory = directory
        self.pad_to = dict(pad_to or {})
        self.requests = []  # (file name, Range header or None)
        self.cuts = {}
        self.stalls = {}
        self.failures = {}
        self.lock = threading.Lock()
        self.closing = threading.Event()  # ends stalled responses when the server stops
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def cut_first(self, name, after_bytes):
        with self.lock:
            self.cuts[name] = after_bytes

    def _take_cut(self, name):
        with self.lock:
            return self.cuts.pop(name, None)

    def stall_first(self, name, after_bytes, drip_every=None):
        with self.lock:
            self.stalls[name] = (after_bytes, drip_every)

    def _take_stall(self, name):
        with self.lock:
            return self.stalls.pop(name, None)

    def fail_first(self, name, status):
        """Answer the next request for ``name`` with an HTTP error, like a busy server."""
        with self.lock:
            self.failures[name] = status

    def _take_failure(self, name):
        with self.lock:
            return self.failures.pop(name, None)

    def served_bytes(self, name):
        """Exactly what a complete download of ``name`` holds."""
        with open(os.path.join(self.directory, name), "rb") as handle:
            data = handle.read()
        return data + bytes(self.pad_to.get(name, len(data)) - len(data))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/").split("?", 1)[0]
                server.requests.append((name, self.headers.get("Range")))
                if name.startswith("loop/"):
                    self.send_response(302)
                    self.send_header("Location", self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = os.path.join(server.directory, os.path.basename(name))
                if not name or "/" in name or not os.path.isfile(path):
                    self.send_error(404, "Not Found")
                    return
                failure = server._take_failure(name)
                if failure:
                    self.send_error(failure)
                    return
                file_size = os.path.getsize(path)
                total = max(file_size, server.pad_to.get(name, 0))
                start, status = 0, 200
                wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if wanted:
                    start, status = int(wanted.group(1)), 206
                    if start >= total:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{total}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                self.send_response(status)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(total - start))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                self.end_headers()
                budget = server._take_cut(name)
                stall = server._take_stall(name)
                if stall:
                    self._send_then_stall(path, file_size, total, start, *stall)
                    return
                for chunk in self._chunks(path, file_size, total, start):
                    if budget is not None:
                        chunk = chunk[:budget]
                        budget -= len(chunk)
                    self.wfile.write(chunk)
                    if budget == 0:  # drop the connection mid-body
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return

            def _send_then_stall(self, path, file_size, total, start, after_bytes, drip_every):
                """Send ``after_bytes``, then go quiet (or drip a byte at a time) until the server closes."""
                body = b"".join(self._chunks(path, file_size, total, start))
                self.close_connection = True
                try:
                    self.wfile.write(body[:after_bytes])
                    self.wfile.flush()
                    sent = after_bytes
                    while not server.closing.wait(drip_every or 3600) and sent < len(body):
                        self.wfile.write(body[sent:sent + 1])
                        self.wfile.flush()
                        sent += 1
                except OSError:  # the client gave up on us, as it should
                    pass

            @staticmethod
            def _chunks(path, file_size, total, start, size=1 << 20):
                with open(path, "rb") as handle:
                    handle.seek(min(start, file_size))
                    for chunk in iter(lambda: handle.read(size), b""):
                        yield chunk
                zeros = bytes(size)
                remaining = total - max(start, file_size)
                while remaining > 0:
                    yield zeros[:remaining]
                    remaining -= size

        return Handler


@contextlib.contextmanager
def silent_server():
    """A port that accepts connections and never answers: a server that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


# The sizes the tutorial passes to downloadImages: a mirror serving these runs it unchanged.
OFFICIAL_SIZES = {"annotations.tar.gz": 19173078, "images.tar.gz": 791918971}


def port_number(text):
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0-65535; 0 takes any free one)")
    return int(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate the test dataset and serve it on 127.0.0.1 until Ctrl-C.")
    parser.add_argument("--port", type=port_number, default=0, help="port to serve on (default 0: any free port)")
    parser.add_argument("--out", help="folder to write the archives into (default: a temporary one, removed at exit)")
    # As generated the archives are under 100 KB; padded, every try downloads 811 MB. Only the
    # tutorial's literal downloadImages calls, which pass the official sizes, need the padding.
    parser.add_argument("--official-sizes", action="store_true",
                        help="zero-pad the archives to the official sizes (811 MB in all) that the tutorial's "
                             "downloadImages calls expect")
    args = parser.parse_args(argv)
    # SIGTERM (kill, docker stop) and Ctrl-C end the server through the with-block: a temporary --out goes.
    cli.stop_on_signals()
    try:
        return serve(args)
    except cli.Stopped as stop:
        return cli.report_stop(stop)


def serve(args):
    with contextlib.ExitStack() as stack:
        out = args.out or stack.enter_context(tempfile.TemporaryDirectory(prefix="pets-mirror-"))
        try:
            make_archives(out)
        except OSError as error:
            print(f"mirror.py: cannot write the archives into {out}: {error.strerror}", file=sys.stderr)
            return 2
        try:
            server = stack.enter_context(
                MirrorServer(out, args.port, pad_to=OFFICIAL_SIZES if args.official_sizes else None))
        except OSError as error:
            why = error.strerror
            if error.errno == errno.EADDRINUSE:
                why = "in use; pick another, or --port 0 for any free one"
            print(f"mirror.py: port {args.port} on 127.0.0.1: {why}", file=sys.stderr)
            return 2
        print(server.url, flush=True)
        print(f"mirror.py: serving {out}; in another shell:\n"
              f"  OXFORD_PETS_URL={server.url} python visualize_convnets.py --image-size 64 --epochs 5",
              file=sys.stderr, flush=True)
        server.thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
