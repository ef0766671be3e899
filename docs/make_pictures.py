"""Remake the pictures under docs/ from a real training run, as the README shows them.

It packs the real photos of ../shared/realpets (300 Oxford-IIIT Pet photos of the two
breeds, CC BY-SA 4.0) into the dataset's two archives, serves them on 127.0.0.1 as the
dataset ($OXFORD_PETS_URL), trains the tutorial's network on them at a stated size, epochs,
seed and learning rate (visualize_convnets.py), and makes from that run, with the project's own commands:

    conv1_1.gif                         conv1_1's filters through training (filter_gif.py)
    photo_conv1_2.gif, photo_conv2_2.gif one test photo's feature maps through training, each frame
                                        on its own scale
    convolution_demo.png                the convolution demo on a real photo (visualize_convnets.py's)
    pooling_demo.png, pooling_photo.png the pooling demo on the article's 4x4 input, and max pooling
                                        of that same photo, twice, as pool1 and pool2 shrink the maps
    explained_shiba_inu.png, explained_samoyed.png  the first test photo of each breed
                                        explained by the default methods (predict.py --explain)
    tensorboard_graph.png, tensorboard_scalars.png  TensorBoard's graph and scalars, screenshots
                                        from headless Chromium (skipped with --no-screenshots)

    python docs/make_pictures.py                         # 96 px, 40 epochs, seed 1: about 10 min on 2 cores
    python docs/make_pictures.py --work /tmp/pictures    # keep the run; a second call reuses it

The run's Loss and Accuracy curves, train and test, come from compare_runs.py (accuracy_curves.png).
--archives serves a folder that already holds images.tar.gz and annotations.tar.gz (the
tests use the generated mirror's). Any command that fails stops the script with its status.
"""
import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

DOCS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(DOCS)
sys.path[1:1] = [REPO, os.path.join(REPO, "tests")]  # the project's modules; the mirror's server serves any folder
import numpy as np  # noqa: E402 -- after the path that finds the project

import cli  # noqa: E402
import drawing  # noqa: E402
import imFunctions as imf  # noqa: E402
import mirror  # noqa: E402
import visualize_convnets as vc  # noqa: E402

BREEDS = ("shiba_inu", "samoyed")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def build_parser():
    parser = cli.OneLineParser(description=__doc__.split("\n")[0],
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--photos", default=os.path.join(REPO, "..", "shared", "realpets"),
                        help="a folder of images/ and annotations/list.txt to serve as the dataset")
    parser.add_argument("--archives", default=None,
                        help="serve this folder's images.tar.gz and annotations.tar.gz instead of packing --photos")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    # 10x the tutorial's 1e-5: at the tutorial's rate 40 epochs on these 300 photos at 96 px stayed at chance
    # (test accuracy 0.48 from epoch 1 to 40), and explanations of a network at chance show nothing.
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--snapshot-every", type=int, default=20, help="steps between the GIFs' frames")
    parser.add_argument("--out", default=DOCS, help="where the pictures go")
    parser.add_argument("--work", default=None, help="the run's folder (default: a temporary one, removed after)")
    parser.add_argument("--no-screenshots", action="store_true", help="no TensorBoard screenshots (no browser needed)")
    return parser


def run(script, *args, env=None, cwd=None):
    """One of the project's scripts, its output shown; a failure stops this one with its status."""
    command = [sys.executable, os.path.join(REPO, script), *map(str, args)]
    print("$", " ".join(command[1:]), flush=True)
    result = subprocess.run(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    if result.returncode:
        sys.exit(result.returncode)


def pack(photos, archives):
    """The dataset's two archives from a folder of photos: images/<name>.jpg and annotations/list.txt."""
    os.makedirs(archives, exist_ok=True)
    with tarfile.open(os.path.join(archives, "images.tar.gz"), "w:gz") as tar:
        for name in sorted(os.listdir(os.path.join(photos, "images"))):
            tar.add(os.path.join(photos, "images", name), f"images/{name}")
    with tarfile.open(os.path.join(archives, "annotations.tar.gz"), "w:gz") as tar:
        tar.add(os.path.join(photos, "annotations", "list.txt"), "annotations/list.txt")
    return archives


def train(args, work, archives):
    with mirror.MirrorServer(archives) as server:
        run("visualize_convnets.py", "--image-size", args.image_size, "--epochs", args.epochs, "--seed", args.seed,
            "--learning-rate", args.learning_rate, "--snapshot-every", args.snapshot_every,
            "--data-dir", f"{work}/data", "--logdir", f"{work}/logs", "--checkpoint-dir", f"{work}/checkpoints",
            "--figures-dir", f"{work}/figures", env=dict(os.environ, OXFORD_PETS_URL=server.url))


def first_test_photo(work, breed, size=64):
    """The first test photo of ``breed`` (in name order) that reads as an image."""
    return next(path for path in sorted(glob.glob(os.path.join(work, "data", "test", breed, "*.jpg")))
                if imf.load_image(path, size) is not None)


def pictures(args, work):
    """Every picture into --out; returns their names."""
    made = os.path.join(work, "made")
    photo = first_test_photo(work, BREEDS[1])
    stem = os.path.splitext(os.path.basename(photo))[0]
    run("filter_gif.py", "--checkpoint-dir", f"{work}/checkpoints", "--out", made, "--layers", "conv1_1")
    # The feature maps each frame on its own scale: on one scale for all frames the first frames' large
    # activations (before training shrinks them) leave the rest of the GIF nearly black.
    run("filter_gif.py", "--checkpoint-dir", f"{work}/checkpoints", "--out", os.path.join(made, "per-frame"),
        "--layers", "conv1_1", "--image", photo, "--per-frame-norm")
    run("predict.py", "--checkpoint-dir", f"{work}/checkpoints", "--explain", "--out", made,
        *(first_test_photo(work, breed) for breed in BREEDS))
    copies = {"conv1_1.gif": "conv1_1.gif", f"per-frame/{stem}_conv1_2.gif": "photo_conv1_2.gif",
              f"per-frame/{stem}_conv2_2.gif": "photo_conv2_2.gif",
              **{f"{os.path.splitext(os.path.basename(first_test_photo(work, breed)))[0]}_explained.png":
                 f"explained_{breed}.png" for breed in BREEDS}}
    os.makedirs(args.out, exist_ok=True)
    for source, name in copies.items():
        shutil.copyfile(os.path.join(made, source), os.path.join(args.out, name))
    for name in ("convolution_demo.png", "pooling_demo.png"):
        shutil.copyfile(os.path.join(work, "figures", name), os.path.join(args.out, name))
    pooling_on_a_photo(work, os.path.join(args.out, "pooling_photo.png"))
    names = [*copies.values(), "convolution_demo.png", "pooling_demo.png", "pooling_photo.png"]
    if not args.no_screenshots:
        names += screenshots(work, args.out)
    # From the run's folder, so the curves are labelled "logs", not with a temporary folder's path.
    run("compare_runs.py", "logs", "--out", os.path.abspath(os.path.join(args.out, "accuracy_curves.png")), cwd=work)
    return names + ["accuracy_curves.png"]


def max_pool(values):
    """2x2 max pooling at stride 2 of an even-sized [h, w] map, as the network's pool1 and pool2 pool."""
    height, width = values.shape
    return values.reshape(height // 2, 2, width // 2, 2).max(axis=(1, 3))


def pooling_on_a_photo(work, path):
    """The convolution demo's photo (the first training image of the first breed) in grey, then max-pooled
    twice: the detail pooling keeps and what it lets go, on something other than the article's 4x4 numbers."""
    grey = np.mean(vc.demo_image(os.path.join(work, "data"), BREEDS[0]), axis=-1)
    pool1 = max_pool(grey)
    drawing.save_panels({"photo in grey, 224 px": grey, "2x2 max pool, stride 2: 112 px": pool1,
                         "and again: 56 px": max_pool(pool1)}, path)


# --------------------------------------------------------------------------- TensorBoard in headless Chromium

def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def screenshots(work, out):
    """TensorBoard's graph and scalars dashboards of the run, as headless Chromium draws them."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("make_pictures.py: error: no chromium to take the screenshots: apt-get install chromium, "
                 "or --no-screenshots")
    port = free_port()
    board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", f"{work}/logs", "--host",
                              "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):  # TensorBoard takes a few seconds to load the event files
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        names = []
        for dashboard, name in (("graphs", "tensorboard_graph.png"), ("scalars", "tensorboard_scalars.png")):
            with tempfile.TemporaryDirectory() as profile:
                subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,900",
                                "--virtual-time-budget=20000", f"--screenshot={os.path.join(out, name)}",
                                f"http://127.0.0.1:{port}/#{dashboard}"], check=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
            names.append(name)
        return names
    finally:
        board.terminate()
        board.wait(timeout=30)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.archives:
        needed = [os.path.join(args.archives, name) for name in ("images.tar.gz", "annotations.tar.gz")]
    else:
        needed = [os.path.join(args.photos, "images"), os.path.join(args.photos, "annotations", "list.txt")]
    missing = [path for path in needed if not os.path.exists(path)]
    if missing:
        parser.error(f"{missing[0]} is missing: --photos needs images/ and annotations/list.txt, --archives the two "
                     f"archives")
    work = args.work or tempfile.mkdtemp(prefix="pictures-")
    try:
        archives = args.archives or pack(args.photos, os.path.join(work, "archives"))
        train(args, work, archives)
        names = pictures(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {', '.join(names)} into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
