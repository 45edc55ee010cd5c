"""``oncolens data``: make, check and split datasets."""
import argparse
import logging
import os

from oncolens.appliance.cliutil import cli_entry, normalize_flags, setup_logging
from oncolens.appliance.errors import UsageError

log = logging.getLogger("oncolens.data")


def build_synth_parser():
    p = argparse.ArgumentParser(
        prog="oncolens data synth",
        description="Write a deterministic synthetic dataset of microscopy-like cell images "
                    "(normal / benign / malignant) to OUT/{train,val,test}/<class>/. For demos "
                    "and tests only: it is not real tissue.")
    p.add_argument("out", help="output folder (must not exist, unless --overwrite)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (128)")
    p.add_argument("--train", type=int, default=60, help="training images per class (60)")
    p.add_argument("--val", type=int, default=20, help="validation images per class (20)")
    p.add_argument("--test", type=int, default=20, help="test images per class (20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing folder")
    p.add_argument("--log-level", default="info")
    return p


def _synth(argv):
    args = build_synth_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    if args.size < 32:
        raise UsageError("--size: expected at least 32 pixels, got {}".format(args.size))
    if min(args.train, args.val, args.test) < 1:
        raise UsageError("--train/--val/--test: expected at least 1 image per class")
    if os.path.exists(args.out) and os.listdir(args.out) and not args.overwrite:
        raise UsageError("{} already exists and is not empty: pass --overwrite".format(args.out))
    from oncolens.train.synth import generate
    n = generate(args.out, args.size, (args.train, args.val, args.test), args.seed)
    print("wrote {} synthetic images to {}".format(n, args.out))
    return 0


COMMANDS = {"synth": (_synth, "write the synthetic demo dataset")}


@cli_entry("oncolens data")
def main(argv):
    if not argv or argv[0] not in COMMANDS:
        print("usage: oncolens data <command> [options]\n\ncommands:")
        for name, (_, helptext) in sorted(COMMANDS.items()):
            print("  {:8s} {}".format(name, helptext))
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]][0](argv[1:])
