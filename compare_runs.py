"""Compare training runs side by side, as the article's figures 7 and 8 do: Loss and Accuracy, train and test.

Give it the --logdir of each run (or one folder holding a run per subfolder, as
``tensorboard --logdir`` takes it); it reads their TensorBoard event files and draws one PNG,
a colour per run, each curve smoothed as TensorBoard smooths it over its raw values:

    python visualize_convnets.py --keep-conv 1 --keep-fc 1 --logdir logs/no_dropout --checkpoint-dir checkpoints/no_dropout
    python visualize_convnets.py --logdir logs/dropout --checkpoint-dir checkpoints/dropout
    python visualize_convnets.py --augment --logdir logs/augment --checkpoint-dir checkpoints/augment
    python compare_runs.py logs/no_dropout logs/dropout logs/augment --out figures/comparison.png

A run resumed after a stop is drawn as TensorBoard draws it. A folder without event files is
one line and exit status 2.
"""
import argparse
import os
import sys

import cli
import curves
import resources


def build_parser():
    parser = cli.OneLineParser(description=__doc__.split("\n")[0],
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("logdirs", nargs="+", metavar="LOGDIR",
                        help="a training run's --logdir (with train/ and test/), or a folder of them")
    parser.add_argument("--out", default="figures/comparison.png", help="the PNG to write")
    parser.add_argument("--smoothing", type=float, default=0.6,
                        help="TensorBoard's smoothing weight, 0 (none) to below 1")
    return parser


def validate(args):
    if not 0 <= args.smoothing < 1:
        raise cli.UsageError(f"--smoothing must be at least 0 and below 1, got {args.smoothing}")
    resources.check_writable(os.path.dirname(args.out) or ".")


@cli.entry_point
def main(argv=None):
    args = cli.parse_checked(build_parser(), validate, argv)
    with cli.signal_handlers_restored():  # called from a notebook, the kernel keeps its own
        cli.stop_on_signals()
        runs, failed = cli.said_in_one_line(lambda: compare(args.logdirs, args.out, args.smoothing),
                                            "; the file being written was removed")
    if failed:
        return failed
    print(f"Wrote {args.out}: {', '.join(runs)}")
    return 0


def compare(logdirs, out, smoothing):
    """Draw the runs of ``logdirs`` into ``out``; returns their names."""
    runs = curves.run_folders(logdirs)
    curves.draw({name: curves.read_curves(logdir) for name, logdir in runs.items()}, out, smoothing)
    return runs


if __name__ == "__main__":
    cli.guard_streams()
    sys.exit(main())
