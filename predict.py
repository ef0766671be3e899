"""Classify pet images with the trained network: the class and its probability for each image.

Restores the newest readable full checkpoint of a training run (visualize_convnets.py)
into the tutorial's graph (classifier.py), takes the classes and the image size from the
run, and prepares each image as training did: resized, the training mean
(mean_image.npy) subtracted, no dropout. A lost or damaged run.json or mean_image.npy
is recovered from the checkpoint, which records both.

    python predict.py data/test/samoyed/samoyed_10.jpg
    python predict.py data/test --json            # every .jpg/.jpeg/.png below data/test

Prints one line per image: its path, the class and its probability, tab-separated (a
path holding a tab, a newline or a double quote is double-quoted, as CSV quotes, so a
record is always one line); with --json one JSON object per line (image, class,
probability, probabilities). An image that cannot be read (a FIFO or a device among them,
never waited on) is one warning and the rest go on; the exit status is then 1. Ctrl-C or
SIGTERM stops it with one line and exit status 130 or 143.
A checkpoint folder without a checkpoint, or without a readable run.json and
mean_image.npy that no checkpoint records, is one line and exit status 2.
"""
import argparse
import csv
import io
import json
import os
import sys

import numpy as np

import cli
import imFunctions as imf
from classifier import Classifier


def build_parser():
    parser = cli.OneLineParser(description=__doc__.split("\n")[0],
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="images, or folders searched (recursively) for .jpg, .jpeg and .png files")
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="the training run's checkpoint folder")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line: image, class, probability, probabilities")
    parser.add_argument("--batch-size", type=int, default=50, help="images classified in one step")
    return parser


def validate(args):
    cli.require_at_least_one(args, ("batch_size",))


# --------------------------------------------------------------------------- images

def find_images(arguments):
    """``(paths, empty folders, unreadable folders)``: a file as given, a folder as every image below it,
    sorted; a folder that cannot be listed is one warning naming it, not "no images"."""
    paths, empty, unreadable = [], [], []

    def cannot_list(error):
        unreadable.append(error.filename)
        print(f"Warning: cannot read the folder {cli.shown(error.filename)}: {error.strerror.lower()}", file=sys.stderr)

    for argument in arguments:
        if not os.path.isdir(argument):
            paths.append(argument)
            continue
        found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(argument, onerror=cannot_list)
                       for name in names if name.lower().endswith(imf.IMAGE_SUFFIXES))
        paths += found
        if not found and argument not in unreadable:
            empty.append(argument)
    return paths, empty, unreadable


def tab_separated(fields):
    """One record on one line: a field holding a tab, a newline or a quote is double-quoted, as CSV does."""
    line = io.StringIO()
    # The terminator is what makes csv quote a newline in a field; the record's own one is print's.
    csv.writer(line, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL).writerow(fields)
    return line.getvalue()[:-1]


def answer(path, probabilities, classes, as_json):
    best = int(np.argmax(probabilities))
    if as_json:
        return json.dumps({"image": path, "class": classes[best], "probability": float(probabilities[best]),
                           "probabilities": {c: float(p) for c, p in zip(classes, probabilities)}})
    return tab_separated([path, classes[best], f"{probabilities[best]:.4f}"])


def classify(classifier, paths, batch_size, as_json):
    """Print an answer per readable image, in order, a warning per other one; returns the failures."""
    failed = 0
    for start in range(0, len(paths), batch_size):
        read, pictures = [], []
        for path in paths[start:start + batch_size]:
            picture = imf.load_image(path, classifier.image_size)
            if picture is None:
                why = imf.image_problem(path) or "not a readable image"
                print(f"Warning: skipped {cli.shown(path)}: {why}", file=sys.stderr)
                failed += 1
            else:
                read.append(path)
                pictures.append(picture)
        if pictures:
            for path, probabilities in zip(read, classifier.probabilities(np.stack(pictures))):
                print(answer(path, probabilities, classifier.classes, as_json), flush=True)
    return failed


@cli.entry_point
def main(argv=None):
    args = cli.parse_checked(build_parser(), validate, argv)
    with cli.signal_handlers_restored():  # called from a notebook, the kernel keeps its own
        cli.stop_on_signals()
        try:
            return predict(args)
        except cli.Stopped as stop:
            return cli.report_stop(stop)
        except OSError as error:
            return cli.report(cli.os_failure(error))


def predict(args):
    try:
        classifier = Classifier(args.checkpoint_dir)
    except (cli.UsageError, cli.Failure) as error:
        cli.print_error(error)
        return cli.EXIT_USAGE
    paths, empty, unreadable = find_images(args.images)
    for folder in empty:
        print(f"Warning: no .jpg, .jpeg or .png images in {cli.shown(folder)}", file=sys.stderr)
    failed = classify(classifier, paths, args.batch_size, args.json)
    return 1 if failed or empty or unreadable else 0


if __name__ == "__main__":
    # A file name that is not UTF-8 is printed as the bytes it is, as ls prints it, not a UnicodeEncodeError.
    sys.stdout.reconfigure(errors="surrogateescape")
    cli.guard_streams()
    sys.exit(main())
