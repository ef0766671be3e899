"""Classify pet images with the trained network: the class and its probability for each image.

Restores the newest readable full checkpoint of a training run (visualize_convnets.py)
into the tutorial's graph (classifier.py), takes the classes and the image size from the
run, and prepares each image as training did: resized, the training mean
(mean_image.npy) subtracted, no dropout. A lost or damaged run.json or mean_image.npy
is recovered from the checkpoint, which records both.

    python predict.py data/test/samoyed/samoyed_10.jpg
    python predict.py data/test --json            # every .jpg/.jpeg/.png below data/test
    python predict.py data/test --explain         # and explanations/<stem>_explained.png for each image
    python predict.py dog.jpg --explain grad_cam,integrated_gradients --out why

--explain [METHODS] also writes, for each image, one PNG into --out: the photo, titled with
the class and its probability, and one panel per method (a comma list; the bare flag takes
Grad-CAM, SmoothGrad, Integrated Gradients, Blur IG and XRAI), each titled with its method;
explain.py says what each shows. Two images of one stem get <stem>_explained-2.png and so on.
A value after a bare --explain that names an existing file or folder is taken as the first
image, not as methods. An unknown method is one line and exit status 2, before anything loads.

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
import explain
import files
import imFunctions as imf
import progress
import resources
from classifier import Classifier


def build_parser():
    parser = cli.OneLineParser(description=__doc__.split("\n")[0],
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # "*", required in validate: a bare --explain takes the only image as its value, and validate gives it back.
    parser.add_argument("images", nargs="*", metavar="IMAGE_OR_FOLDER",
                        help="images, or folders searched (recursively) for .jpg, .jpeg and .png files")
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="the training run's checkpoint folder")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line: image, class, probability, probabilities")
    parser.add_argument("--batch-size", type=int, default=50, help="images classified in one step")
    parser.add_argument("--explain", nargs="?", const=",".join(explain.DEFAULT_METHODS), default=None,
                        metavar="METHODS",
                        help=f"also write each image's explanations into --out, by these methods (a comma list of "
                             f"{', '.join(explain.TITLES)}; bare: {','.join(explain.DEFAULT_METHODS)})")
    parser.add_argument("--out", default="explanations", help="folder for --explain's PNGs")
    return parser


def validate(args):
    cli.require_at_least_one(args, ("batch_size",))
    if args.explain is not None:
        try:
            args.explain = explain.parse_methods(args.explain)
        except cli.UsageError:
            # A bare --explain before the images takes the first of them as its value: an existing path is an image.
            if not os.path.lexists(args.explain):
                raise
            args.images.insert(0, args.explain)
            args.explain = explain.DEFAULT_METHODS
        resources.check_writable(args.out)
    if not args.images:
        raise cli.UsageError("the following arguments are required: IMAGE_OR_FOLDER")


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


def classify(classifier, paths, batch_size, as_json, explained=None):
    """Print an answer per readable image, in order, a warning per other one; returns the failures.
    ``explained(path, picture)`` is called for each readable image after its batch's answers, with None for the
    picture of each other one."""
    failed = 0
    for start in range(0, len(paths), batch_size):
        read, pictures = [], []
        for path in paths[start:start + batch_size]:
            picture = imf.load_image(path, classifier.image_size)
            if picture is None:
                why = imf.image_problem(path) or "not a readable image"
                print(f"Warning: skipped {cli.shown(path)}: {why}", file=sys.stderr)
                failed += 1
                if explained:
                    explained(path, None)
            else:
                read.append(path)
                pictures.append(picture)
        if pictures:
            for path, probabilities in zip(read, classifier.probabilities(np.stack(pictures))):
                print(answer(path, probabilities, classifier.classes, as_json), flush=True)
            for path, picture in zip(read, pictures) if explained else ():
                explained(path, picture)
    return failed


class Explanations:
    """Writes each image's explanation PNG into ``out``, one name per stem, with a progress line per method."""

    def __init__(self, classifier, methods, out, count):
        self.explainer = explain.Explainer(classifier)
        self.methods, self.out = methods, out
        self.names = set()
        self.progress = progress.Progress(total=count * len(methods), unit="panel", desc="Explaining")

    def __call__(self, path, picture):
        if picture is None:  # skipped: its panels are counted as done, so the bar ends full
            self.progress.update(len(self.methods))
            return
        stem = os.path.splitext(os.path.basename(path))[0]
        name, number = f"{stem}_explained.png", 1
        while name in self.names:
            number += 1
            name = f"{stem}_explained-{number}.png"
        self.names.add(name)
        explain.explanation_png(self.explainer, picture, self.methods, os.path.join(self.out, name), self.progress)


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
    if args.explain is None:
        failed = classify(classifier, paths, args.batch_size, args.json)
    else:
        with files.writing_into(args.out):  # what a killed run left in --out is swept first
            explanations = Explanations(classifier, args.explain, args.out, len(paths))
            try:
                failed = classify(classifier, paths, args.batch_size, args.json, explanations)
            except BaseException:
                explanations.progress.abandon()
                raise
            explanations.progress.close()
    return 1 if failed or empty or unreadable else 0


if __name__ == "__main__":
    # A file name that is not UTF-8 is printed as the bytes it is, as ls prints it, not a UnicodeEncodeError.
    sys.stdout.reconfigure(errors="surrogateescape")
    cli.guard_streams()
    sys.exit(main())
