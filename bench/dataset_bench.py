"""Benchmark: building the dataset with imFunctions against a plain serial Pillow loop.

Generates photo-like JPEGs of the real dataset's size (500x375) in the sorted layout,
then, in one process and alternating run after run, times:

  plain   a serial loop: open, convert to RGB, resize, float32, stack, subtract the mean
  ours    imFunctions.loadDataset with no cache (draft mode, thread pool, uint8 until the end)
  cached  imFunctions.loadDataset a second time (reads the on-disk cache)

and reports images/s and peak traced memory (tracemalloc: every numpy allocation) as a
multiple of the uint8 dataset size, both for the whole call and for what it allocates
beyond the float32 arrays it returns. Ends with one JSON line.

    python bench/dataset_bench.py [--images 600] [--image-size 224] [--repeats 3]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import imFunctions as imf  # noqa: E402
import mirror  # noqa: E402

BREEDS = ("shiba_inu", "samoyed")


def photo_like(breed, number, size=(500, 375)):
    """A drawn pet plus sensor-like noise, so the JPEG costs about what a photo costs to decode."""
    picture = np.asarray(mirror.draw_pet(breed, number, size), dtype=np.int16)
    noise = np.random.default_rng(number).normal(0, 12, picture.shape)
    return Image.fromarray(np.clip(picture + noise, 0, 255).astype(np.uint8))


def make_sorted_dataset(data_dir, count):
    for position in range(count):
        breed = BREEDS[position % 2]
        part = "test" if position % 7 == 0 else "train"
        folder = os.path.join(data_dir, part, breed)
        os.makedirs(folder, exist_ok=True)
        photo_like(breed, position).save(os.path.join(folder, f"{breed}_{position}.jpg"), "JPEG", quality=90)


def plain_loop(data_dir, image_size):
    """What the original did, minus scipy.misc: serial decode, float32 from the start."""
    sets = {}
    for part in ("train", "test"):
        images, labels = [], []
        for index, breed in enumerate(BREEDS):
            folder = os.path.join(data_dir, part, breed)
            for name in sorted(os.listdir(folder)):
                with Image.open(os.path.join(folder, name)) as picture:
                    resized = picture.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
                images.append(np.asarray(resized, dtype=np.float32))
                labels.append(index)
        sets[part] = (np.stack(images), np.eye(len(BREEDS), dtype=np.float32)[labels])
    mean = sets["train"][0].mean(axis=0)
    return sets["train"][0] - mean, sets["train"][1], sets["test"][0] - mean, sets["test"][1]


def ours(data_dir, image_size):
    return imf.loadDataset(list(BREEDS), image_size, data_dir)[:4]


def measure(function, data_dir, image_size):
    tracemalloc.start()
    started = time.perf_counter()
    result = function(data_dir, image_size)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    returned = sum(array.nbytes for array in result)
    return seconds, peak, returned


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600, help="images to generate")
    parser.add_argument("--image-size", type=int, default=224, help="side of the square images built")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each method; best is kept")
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="dataset-bench-")
    try:
        make_sorted_dataset(data_dir, args.images)
        uint8_bytes = args.images * args.image_size ** 2 * 3
        best = {}
        for _ in range(args.repeats):
            for name, function in (("plain", plain_loop), ("ours", ours), ("cached", ours)):
                if name == "ours":
                    shutil.rmtree(os.path.join(data_dir, "cache"), ignore_errors=True)
                seconds, peak, returned = measure(function, data_dir, args.image_size)
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, peak, returned)
        report = {"images": args.images, "image_size": args.image_size, "uint8_mb": round(uint8_bytes / 1e6, 1)}
        for name, (seconds, peak, returned) in best.items():
            report[f"{name}_img_per_s"] = round(args.images / seconds, 1)
            report[f"{name}_peak_x_uint8"] = round(peak / uint8_bytes, 2)
            report[f"{name}_extra_peak_x_uint8"] = round((peak - returned) / uint8_bytes, 2)
            print(f"{name:7s} {args.images / seconds:8.1f} images/s   peak {peak / 1e6:7.1f} MB "
                  f"= {peak / uint8_bytes:4.2f}x uint8, beyond the returned arrays {(peak - returned) / uint8_bytes:4.2f}x")
        report["speedup_vs_plain"] = round(best["plain"][0] / best["ours"][0], 2)
        report["cached_speedup_vs_plain"] = round(best["plain"][0] / best["cached"][0], 2)
        report["cpu_count"] = os.cpu_count()
        print(json.dumps(report))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
