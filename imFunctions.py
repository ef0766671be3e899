"""The data layer of the Visualizing Convnets tutorial: the Oxford-IIIT Pet dataset.

The tutorial's own first cells run against this module unchanged:

    import imFunctions as imf
    imf.downloadImages('annotations.tar.gz', 19173078)
    imf.downloadImages('images.tar.gz', 791918971)
    imf.maybeExtract('annotations.tar.gz')
    imf.maybeExtract('images.tar.gz')
    imf.sortImages(0.15)
    train_x, train_y, test_x, test_y, classes, classLabels = imf.buildDataset()
    train_x, train_y = imf.shuffle(train_x, train_y)

Everything lives in one data folder (``./data`` unless ``data_dir=`` says otherwise):
the downloaded archives, the extracted ``images/`` and ``annotations/``, the sorted
``train/<breed>/`` and ``test/<breed>/`` split, and ``cache/`` with decoded arrays.
The archives come from the dataset's official address, or from ``$OXFORD_PETS_URL``
when that is set (a mirror, or the tests' local server).
"""
import collections
import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image, UnidentifiedImageError

DATA_DIR = "data"
OFFICIAL_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data"
# (size in bytes, MD5) as published; torchvision pins the same checksums.
OFFICIAL_ARCHIVES = {
    "images.tar.gz": (791918971, "5c4f3ee8e5d25df40f4fd59a7f44e54c"),
    "annotations.tar.gz": (19173078, "95a8c909bbe2e81eed6a22bccdf3f68f"),
}
TUTORIAL_CLASSES = ("shiba_inu", "samoyed")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLIT_SEED = 0
CACHE_VERSION = 1
CHUNK_BYTES = 1 << 20

Dataset = collections.namedtuple(
    "Dataset", "train_x train_y test_x test_y classes classLabels mean_image")


class DataError(Exception):
    """A download, checksum or archive problem, worded for the person running the tutorial."""


# --------------------------------------------------------------------------- download

def base_url():
    return os.environ.get("OXFORD_PETS_URL") or OFFICIAL_URL


def downloadImages(filename, expected_bytes, data_dir=DATA_DIR, md5=None,
                   retries=4, timeout=30.0, progress=True):
    """Fetch ``<base URL>/<filename>`` into ``data_dir`` and return its path.

    The bytes stream into ``<filename>.part``; a cut connection is resumed with an HTTP
    Range request (``retries`` times, with backoff), and a later call resumes a ``.part``
    left behind. The file is renamed into place only once its size and MD5 check out:
    ``md5`` when given, else the published one for the official archives. A mirror
    (``$OXFORD_PETS_URL``) may serve other bytes of the official size, so there a
    published-MD5 mismatch is a warning, not an error. A complete file is kept.
    """
    strict_md5 = md5 is not None or base_url() == OFFICIAL_URL
    if md5 is None and OFFICIAL_ARCHIVES.get(filename, (None,))[0] == expected_bytes:
        md5 = OFFICIAL_ARCHIVES[filename][1]
    os.makedirs(data_dir, exist_ok=True)
    final_path = os.path.join(data_dir, filename)
    if os.path.isfile(final_path) and os.path.getsize(final_path) == expected_bytes:
        return final_path
    url = f"{base_url().rstrip('/')}/{filename}"
    part_path = final_path + ".part"
    bar = ProgressBar(filename, expected_bytes) if progress else None
    try:
        _fetch_with_retries(url, part_path, expected_bytes, retries, timeout, bar)
    finally:
        if bar:
            bar.close()
    _verify(part_path, filename, url, expected_bytes, md5, strict_md5)
    os.replace(part_path, final_path)
    return final_path


def _fetch_with_retries(url, part_path, expected_bytes, retries, timeout, bar):
    filename = os.path.basename(part_path)[:-len(".part")]
    for attempt in range(retries + 1):
        try:
            return _fetch_remaining(url, part_path, expected_bytes, timeout, bar)
        except urllib.error.HTTPError as error:
            if error.code < 500 and error.code not in (408, 429):  # the file is not there: retrying won't help
                _remove(part_path)
                raise DataError(f"cannot download {filename} from {url}: HTTP {error.code} {error.reason}")
            reason = f"HTTP {error.code} {error.reason}"
        except (OSError, http.client.HTTPException) as error:
            reason = str(getattr(error, "reason", None) or error) or type(error).__name__
        if attempt < retries:
            time.sleep(min(0.5 * 2 ** attempt, 8.0))
    raise DataError(f"cannot download {filename} from {url} after {retries + 1} attempts: "
                    f"{reason} (run again to resume from byte {_size(part_path)})")


def _fetch_remaining(url, part_path, expected_bytes, timeout, bar):
    """Append to ``part_path`` whatever of ``url`` it lacks."""
    have = _size(part_path)
    if have > expected_bytes:
        _remove(part_path)
        have = 0
    if have == expected_bytes:
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left past what we hold
            return
        raise
    with response:
        if response.status != 206:  # the server ignored the range: start over
            have = 0
        with open(part_path, "ab" if have else "wb") as part:
            if bar:
                bar.start(have)
            while True:
                chunk = response.read(CHUNK_BYTES)
                if not chunk:
                    break
                part.write(chunk)
                if bar:
                    bar.update(len(chunk))
    if _size(part_path) < expected_bytes:
        raise ConnectionError(f"connection closed after {_size(part_path)} of {expected_bytes} bytes")


def _verify(part_path, filename, url, expected_bytes, md5, strict_md5):
    size = _size(part_path)
    if size != expected_bytes:
        _remove(part_path)
        raise DataError(f"{filename} from {url} has {size} bytes, expected {expected_bytes}; removed it")
    if md5 is not None:
        digest = hashlib.md5()
        with open(part_path, "rb") as part:
            for chunk in iter(lambda: part.read(CHUNK_BYTES), b""):
                digest.update(chunk)
        if digest.hexdigest() != md5 and strict_md5:
            _remove(part_path)
            raise DataError(f"{filename} from {url} has MD5 {digest.hexdigest()}, expected {md5}; removed it")
        if digest.hexdigest() != md5:
            print(f"Warning: {filename} from the mirror {url} differs from the official archive "
                  f"(MD5 {digest.hexdigest()}, published {md5})", file=sys.stderr)


def _size(path):
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class ProgressBar:
    """One self-overwriting line on stderr: bytes, total, percent and rate."""

    def __init__(self, label, total, stream=None):
        self.label, self.total, self.stream = label, total, stream or sys.stderr
        self.done = self.started_at_bytes = 0
        self.started = self.shown = time.monotonic()

    def start(self, done):
        self.done = self.started_at_bytes = done
        self.started = time.monotonic()
        self.show()

    def update(self, count):
        self.done += count
        if time.monotonic() - self.shown >= 0.2 or self.done >= self.total:
            self.show()

    def show(self):
        self.shown = time.monotonic()
        rate = (self.done - self.started_at_bytes) / max(self.shown - self.started, 1e-6)
        percent = 100.0 * self.done / self.total if self.total else 100.0
        self.stream.write(f"\r{self.label}: {self.done / 1e6:.1f} / {self.total / 1e6:.1f} MB "
                          f"{percent:5.1f}% {rate / 1e6:.1f} MB/s")
        self.stream.flush()

    def close(self):
        self.show()
        self.stream.write("\n")
        self.stream.flush()


# --------------------------------------------------------------------------- extract

def extraction_marker(filename, data_dir=DATA_DIR):
    return os.path.join(data_dir, f".{filename}.extracted")


def maybeExtract(filename, data_dir=DATA_DIR):
    """Extract ``data_dir/<filename>`` into ``data_dir`` once; later calls do nothing.

    Every member is checked with the standard library's ``data`` filter before anything
    is written, so an archive with an absolute path, a ``..`` component, a device or a
    link pointing outside writes nothing at all.
    """
    marker = extraction_marker(filename, data_dir)
    if os.path.exists(marker):
        return
    archive_path = os.path.join(data_dir, filename)
    destination = os.path.realpath(data_dir)
    has_filters = hasattr(tarfile, "data_filter")
    try:
        with tarfile.open(archive_path) as archive:
            members = archive.getmembers()
            for member in members:
                problem = _unsafe_member(member, destination)
                if problem:
                    raise DataError(f"refusing to extract {filename}: unsafe member {member.name!r} ({problem})")
            archive.extractall(destination, members=members, **({"filter": "data"} if has_filters else {}))
    except (tarfile.TarError, EOFError, FileNotFoundError) as error:
        raise DataError(f"cannot extract {archive_path}: {error}")
    with open(marker, "w") as done:
        done.write(f"{len(members)} members\n")


def _unsafe_member(member, destination):
    """Why ``member`` must not be extracted into ``destination``, or None when it is safe."""
    if hasattr(tarfile, "data_filter"):
        try:  # the data filter strips a leading "/" quietly; we refuse such a name
            if tarfile.data_filter(member, destination).name != member.name:
                return "absolute path"
        except tarfile.FilterError as error:
            return str(error)
        return None
    # Python before 3.11.4 (the official TensorFlow images ship 3.11.0rc1) has no
    # extraction filters: the same rules, written out.
    if os.path.isabs(member.name):
        return "absolute path"
    if member.ischr() or member.isblk() or member.isfifo():
        return "device or pipe"
    path = os.path.join(destination, member.name)
    if not _inside(path, destination):
        return "path outside the destination"
    if member.issym() or member.islnk():
        if os.path.isabs(member.linkname):
            return "absolute link target"
        base = os.path.dirname(path) if member.issym() else destination
        if not _inside(os.path.join(base, member.linkname), destination):
            return "link target outside the destination"
    return None


def _inside(path, folder):
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


# --------------------------------------------------------------------------- sort

def breed_of(file_name):
    """``shiba_inu_12.jpg`` -> ``shiba_inu``; None for anything that is not a pet image."""
    stem, suffix = os.path.splitext(file_name)
    match = re.fullmatch(r"(.+)_\d+", stem)
    if suffix.lower() not in IMAGE_SUFFIXES or not match:
        return None
    return match.group(1)


def sortImages(testFraction, data_dir=DATA_DIR, seed=SPLIT_SEED):
    """Split ``images/`` into ``train/<breed>/`` and ``test/<breed>/`` by breed.

    Each breed gives ``testFraction`` of its images to test, picked with a fixed seed so
    the split is reproducible; a second call with the same fraction changes nothing.
    Files are hard-linked (copied where links are impossible), so ``images/`` stays whole.
    """
    if not 0 < testFraction < 1:
        raise ValueError(f"testFraction must be between 0 and 1 (exclusive), got {testFraction}")
    images_dir = os.path.join(data_dir, "images")
    if not os.path.isdir(images_dir):
        raise DataError(f"no images in {images_dir}: download and extract images.tar.gz first")
    by_breed = collections.defaultdict(list)
    for name in sorted(os.listdir(images_dir)):
        breed = breed_of(name)
        if breed:
            by_breed[breed].append(name)
    split = {"fraction": testFraction, "seed": seed, "train": {}, "test": {}}
    for breed, names in sorted(by_breed.items()):
        test_names = set(random.Random(f"{seed}:{breed}").sample(names, _test_count(len(names), testFraction)))
        split["test"][breed] = sorted(test_names)
        split["train"][breed] = [name for name in names if name not in test_names]
    manifest_path = os.path.join(data_dir, "split.json")
    if read_json(manifest_path) == split and os.path.isdir(os.path.join(data_dir, "train")):
        return split
    _remove(manifest_path)
    for part in ("train", "test"):
        shutil.rmtree(os.path.join(data_dir, part), ignore_errors=True)
        for breed, names in split[part].items():
            breed_dir = os.path.join(data_dir, part, breed)
            os.makedirs(breed_dir)
            for name in names:
                _link_or_copy(os.path.join(images_dir, name), os.path.join(breed_dir, name))
    write_json_atomically(manifest_path, split)
    return split


def _test_count(count, fraction):
    if count < 2:
        return 0
    return min(max(round(count * fraction), 1), count - 1)


def _link_or_copy(source, target):
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return None


def write_json_atomically(path, value):
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(value, handle, indent=1)
    os.replace(temporary, path)


# --------------------------------------------------------------------------- build

def breed_key(name):
    """One spelling for a breed: ``Shiba_Inu``, ``shiba_inu`` and ``shibainu`` agree."""
    return re.sub(r"[\s_-]", "", name).lower()


def resolve_classes(classes, breeds):
    """Map user-given names onto the breed folders, keeping the user's order."""
    by_key = {breed_key(breed): breed for breed in breeds}
    valid = ", ".join(sorted(breeds, key=str.lower))
    chosen = []
    for name in classes:
        breed = by_key.get(breed_key(name))
        if breed is None:
            raise ValueError(f"unknown class {name!r}; valid classes: {valid}")
        if breed not in chosen:
            chosen.append(breed)
    if not chosen:
        raise ValueError(f"no classes chosen; valid classes: {valid}")
    return chosen


def ask_for_classes(breeds, ask=input):
    """The original's prompt: breed by breed, y to include, n to skip, break to stop."""
    chosen = []
    for breed in breeds:
        answer = ""
        while answer not in ("y", "n", "break"):
            answer = ask(f"Include {breed}? [y/n/break] ").strip().lower()
        if answer == "break":
            break
        if answer == "y":
            chosen.append(breed)
    return chosen


def choose_classes(classes, data_dir):
    """The class folders to use: the given names, else asked for, else the tutorial's."""
    train_dir = os.path.join(data_dir, "train")
    if not os.path.isdir(train_dir):
        raise DataError(f"no sorted images in {train_dir}: run sortImages first")
    breeds = sorted(os.listdir(train_dir))
    if classes is None and sys.stdin is not None and sys.stdin.isatty():
        classes = ask_for_classes(breeds)
    elif classes is None:
        classes = TUTORIAL_CLASSES
        print(f"Not an interactive terminal: using the tutorial's classes {', '.join(classes)}")
    return resolve_classes(classes, breeds)


def buildDataset(classes=None, image_size=224, data_dir=DATA_DIR):
    """Return ``train_x, train_y, test_x, test_y, classes, classLabels`` as the original did.

    Images are float32 NHWC of ``image_size`` pixels with the training set's mean image
    subtracted from both sets, labels one-hot, ``classes`` their count and
    ``classLabels`` their breed names in one-hot order.
    """
    return loadDataset(classes, image_size, data_dir)[:6]


def loadDataset(classes=None, image_size=224, data_dir=DATA_DIR, workers=None):
    """``buildDataset``'s arrays plus the training mean image that was subtracted."""
    labels = choose_classes(classes, data_dir)
    train_u8, train_index, test_u8, test_index = load_uint8_split(labels, image_size, data_dir, workers)
    if len(train_u8) == 0:
        raise DataError(f"no readable training images for {', '.join(labels)} in {data_dir}/train")
    mean_image = train_u8.mean(axis=0, dtype=np.float64).astype(np.float32)
    train_x = _centred_float32(train_u8, mean_image, workers)
    del train_u8
    test_x = _centred_float32(test_u8, mean_image, workers)
    one_hot = np.eye(len(labels), dtype=np.float32)
    return Dataset(train_x, one_hot[train_index], test_x, one_hot[test_index],
                   len(labels), labels, mean_image)


def _centred_float32(images_u8, mean_image, workers=None, chunk=16):
    """uint8 in, float32 minus the mean out: one pass, one allocation, split over threads.

    Most of the time goes to first touching the new float32 pages, which threads share well.
    """
    centred = np.empty(images_u8.shape, np.float32)

    def centre(start):
        np.subtract(images_u8[start:start + chunk], mean_image, out=centred[start:start + chunk], dtype=np.float32)

    with concurrent.futures.ThreadPoolExecutor(_worker_count(workers)) as pool:
        list(pool.map(centre, range(0, len(images_u8), chunk)))
    return centred


def _worker_count(workers):
    """Threads for decoding and converting: Pillow and numpy release the GIL for both."""
    return workers or min(8, (os.cpu_count() or 1) + 2)


def load_uint8_split(labels, image_size, data_dir, workers=None):
    """Decoded uint8 images and class indices of both splits, from the cache when valid."""
    files = {part: [(os.path.join(data_dir, part, breed, name), index)
                    for index, breed in enumerate(labels)
                    for name in sorted(os.listdir(os.path.join(data_dir, part, breed)))]
             for part in ("train", "test")}
    cache_dir = _cache_dir(labels, image_size, files, data_dir)
    cached = _read_cache(cache_dir)
    if cached is None:
        cached = {}
        skipped = []
        for part in ("train", "test"):
            images, keep = decode_images([path for path, _ in files[part]], image_size, workers)
            cached[f"{part}_x"] = images
            cached[f"{part}_y"] = np.array([index for (_, index), ok in zip(files[part], keep) if ok],
                                           dtype=np.int64)
            skipped += [path for (path, _), ok in zip(files[part], keep) if not ok]
        _write_cache(cache_dir, cached, skipped)
    else:
        skipped = read_json(os.path.join(cache_dir, "meta.json"))["skipped"]
    if skipped:
        print(f"Warning: skipped {len(skipped)} unreadable image file(s): "
              f"{', '.join(os.path.basename(path) for path in skipped)}", file=sys.stderr)
    return cached["train_x"], cached["train_y"], cached["test_x"], cached["test_y"]


def decode_images(paths, image_size, workers=None):
    """Decode ``paths`` into one uint8 array; returns it and which paths decoded."""
    images = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    keep = np.zeros(len(paths), dtype=bool)

    def decode_into(position):
        picture = load_image(paths[position], image_size)
        if picture is not None:
            images[position] = picture
            keep[position] = True

    with concurrent.futures.ThreadPoolExecutor(_worker_count(workers)) as pool:
        list(pool.map(decode_into, range(len(paths))))
    if keep.all():
        return images, keep
    return images[keep], keep


def load_image(path, image_size):
    """One image as uint8 RGB of ``image_size`` squared, or None when it cannot be decoded."""
    try:
        with Image.open(path) as picture:
            # Draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale, never below the target.
            picture.draft("RGB", (image_size, image_size))
            picture = picture.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(picture, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None


def _cache_dir(labels, image_size, files, data_dir):
    classes_id = hashlib.sha1(repr(labels).encode()).hexdigest()[:8]
    slug = "-".join(labels) if len(labels) <= 3 else f"{len(labels)}classes"
    digest = hashlib.sha1(f"v{CACHE_VERSION} {image_size} {labels}".encode())
    for part in ("train", "test"):
        for path, index in files[part]:
            status = os.stat(path)
            # Relative to the data folder: the cache stays valid where the folder is mounted elsewhere.
            name = os.path.relpath(path, data_dir)
            digest.update(f"{part} {name} {index} {status.st_size} {status.st_mtime_ns}\n".encode())
    # Caches of one class set and size share a prefix, so a newer one replaces the older.
    return os.path.join(data_dir, "cache", f"{slug}-{classes_id}-{image_size}px-{digest.hexdigest()[:12]}")


def _read_cache(cache_dir):
    if not os.path.isfile(os.path.join(cache_dir, "meta.json")):
        return None
    try:
        # Memory-mapped: the uint8 images are read straight into the float conversion.
        return {name: np.load(os.path.join(cache_dir, f"{name}.npy"), mmap_mode="r")
                for name in ("train_x", "train_y", "test_x", "test_y")}
    except (OSError, ValueError):
        return None


def _write_cache(cache_dir, arrays, skipped):
    """Write the cache beside its final place, then rename: a crash leaves no half cache."""
    parent, name = os.path.split(cache_dir)
    os.makedirs(parent, exist_ok=True)
    temporary = f"{cache_dir}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    for key, array in arrays.items():
        np.save(os.path.join(temporary, f"{key}.npy"), array)
    write_json_atomically(os.path.join(temporary, "meta.json"), {"skipped": skipped})
    stale_prefix = name.rsplit("-", 1)[0] + "-"
    for other in os.listdir(parent):  # same classes and size, older inputs
        if other.startswith(stale_prefix) and other != name and ".tmp-" not in other:
            shutil.rmtree(os.path.join(parent, other), ignore_errors=True)
    shutil.rmtree(cache_dir, ignore_errors=True)
    os.rename(temporary, cache_dir)


# --------------------------------------------------------------------------- shuffle

def shuffle(x, y, seed=None):
    """Shuffle images and labels with one permutation."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} and {len(y)}")
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], y[order]
