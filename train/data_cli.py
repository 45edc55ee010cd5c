"""``oncolens data``: make, check and split datasets."""
import io
import logging
import os
import sys

from oncolens.appliance.cliutil import OneLineParser, cli_entry, normalize_flags, setup_logging
from oncolens.appliance.errors import UsageError, plural
from oncolens.train.flags import MAX_SEED
from oncolens.appliance.outpaths import (check_output_dir, check_output_file,
                                          check_text_file, replace_file)

log = logging.getLogger("oncolens.data")

# File names that are not valid UTF-8 reach Python as surrogates; they are written back
# with their own bytes (as batch's results do), never a UnicodeEncodeError.
NAME_ERRORS = "surrogateescape"


def echo(line=""):
    """print() a line that may hold such a file name: a strict stdout (a UTF-8 locale other
    than C.UTF-8) gets the name's own bytes instead of raising UnicodeEncodeError."""
    try:
        print(line)
        return
    except UnicodeEncodeError:
        pass
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        data = (line + "\n").encode(encoding, NAME_ERRORS)
    except UnicodeEncodeError:
        data = (line + "\n").encode(encoding, "backslashreplace")
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        print(data.decode(encoding, "replace"), end="")
        return
    sys.stdout.flush()
    buffer.write(data)
    buffer.flush()


def check_seed(seed):
    """--seed in train's range: numpy refuses a negative seed with a traceback."""
    if not 0 <= seed <= MAX_SEED:
        raise UsageError("--seed: expected 0 to {}, got {}".format(MAX_SEED, seed))


def check_max_distance(value):
    """--max-distance within the hash's bits: a negative one matched no pair in silence, one
    past 64 every pair; refused before any image is read."""
    from oncolens.train.phash import BITS
    if not 0 <= value <= BITS:
        raise UsageError("--max-distance: expected a Hamming distance of 0 to {} bits, got "
                         "{}".format(BITS, value))


def build_synth_parser():
    p = OneLineParser(
        prog="oncolens data synth",
        description="Write a deterministic synthetic dataset of microscopy-like cell images "
                    "(normal / benign / malignant) to OUT/{train,val,test}/<class>/. For demos "
                    "and tests only: it is not real tissue.")
    p.add_argument("out", help="output folder (must not exist, unless --overwrite)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (128)")
    p.add_argument("--train", type=int, default=60, help="training images per class (60)")
    p.add_argument("--val", type=int, default=20, help="validation images per class (20)")
    p.add_argument("--test", type=int, default=20, help="test images per class (20)")
    p.add_argument("--seed", type=int, default=0, help="random seed, 0 to 4294967295 (0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what an earlier synth wrote in OUT (its train/ val/ test/, "
                        "labels.txt, README.md and SYNTHETIC.json are removed first)")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error (info)")
    return p


@cli_entry("oncolens data synth")
def _synth(argv):
    args = build_synth_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    if args.size < 32:
        raise UsageError("--size: expected at least 32 pixels, got {}".format(args.size))
    if min(args.train, args.val, args.test) < 1:
        raise UsageError("--train/--val/--test: expected at least 1 image per class")
    check_seed(args.seed)
    check_output_dir(args.out, "OUT")
    if os.path.exists(args.out) and os.listdir(args.out) and not args.overwrite:
        raise UsageError("{} already exists and is not empty: pass --overwrite".format(args.out))
    from oncolens.train.split import clear_owned, require_marker
    from oncolens.train.synth import OWNED, generate
    if args.overwrite and os.path.exists(args.out) and os.listdir(args.out):
        require_marker(args.out, "SYNTHETIC.json", "data synth")
        clear_owned(args.out, OWNED)
    n = generate(args.out, args.size, (args.train, args.val, args.test), args.seed)
    print("wrote {} to {}".format(plural(n, "synthetic image"), args.out))
    return 0


def build_check_parser():
    p = OneLineParser(
        prog="oncolens data check",
        description="Audit a dataset folder (DIR/{train,val,test}/<class>/ or DIR/<class>/): "
                    "counts per class and split, unreadable or empty files, image sizes and "
                    "modes, exact and near-duplicate images (perceptual hash). Leakage across "
                    "splits and the same image under two labels are errors (exit code 1).")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--max-distance", type=int, default=4,
                   help="perceptual-hash distance, 0 to 64 bits, that counts as the same image (4)")
    p.add_argument("--json", default=None, help="write the full audit to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error (info)")
    return p


def _progress(desc):
    def wrap(items):
        from oncolens.train.recipe import progress
        return progress(items, desc)
    return wrap


@cli_entry("oncolens data check")
def _check(argv):
    args = build_check_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    check_max_distance(args.max_distance)
    from oncolens.train.audit import check, format_report
    if args.json:
        check_text_file(args.json, "--json", "a .json file name")
        check_output_file(args.json, "--json", args.overwrite)
    result = check(args.dir, args.max_distance, progress=_progress("reading images"))
    for line in format_report(result):
        echo(line)
    if args.json:
        write_json(args.json, result)
    return 1 if result["errors"] else 0


def write_json(path, payload):
    """Write ``payload`` to ``path`` (checked beforehand), making its folder when missing;
    a write cut short (Ctrl-C, a full disk) leaves no half file, and --overwrite's earlier
    file whole."""
    try:
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent)
        replace_file(path, lambda tmp: _dump_json(tmp, payload))  # the earlier one kept whole
    except (IOError, OSError) as exc:  # what the check before the run could not foresee
        raise UsageError("--json {}: cannot be written ({}); what was printed above is all "
                         "there is of it".format(path, exc.strerror or exc))


def _dump_json(path, payload):
    import json
    with io.open(path, "w", encoding="utf-8", errors=NAME_ERRORS) as fh:
        json.dump(payload, fh, indent=2, sort_keys=True)  # ASCII: names as \udcxx


def build_split_parser():
    p = OneLineParser(
        prog="oncolens data split",
        description="Split a flat class-folder dataset SRC/<class>/ into OUT/{train,val,test}/"
                    "<class>/, stratified by class, near-duplicates kept on one side, images "
                    "under two labels dropped; writes OUT/labels.txt and OUT/splits.csv.")
    p.add_argument("src", help="folder of class folders")
    p.add_argument("out", help="output folder (must not exist, unless --overwrite)")
    p.add_argument("--ratios", type=float, nargs=3, default=[0.7, 0.15, 0.15],
                   metavar=("TRAIN", "VAL", "TEST"), help="split shares, divided by their sum (0.7 0.15 0.15)")
    p.add_argument("--seed", type=int, default=0, help="random seed, 0 to 4294967295 (0)")
    p.add_argument("--max-distance", type=int, default=4,
                   help="perceptual-hash distance, 0 to 64 bits, that counts as the same image (4)")
    p.add_argument("--link", action="store_true", help="hard-link instead of copying")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier split in OUT (its train/ val/ test/, splits.csv and "
                        "labels.txt are removed first)")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error (info)")
    return p


@cli_entry("oncolens data split")
def _split(argv):
    args = build_split_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    check_seed(args.seed)
    check_max_distance(args.max_distance)
    from oncolens.train.split import split_dataset
    counts, fate = split_dataset(args.src, args.out, args.ratios, args.seed, args.max_distance,
                                 args.link, args.overwrite, progress=_progress("reading images"))
    for split in ("train", "val", "test"):
        echo("{:6s} ".format(split) + "  ".join(
            "{} {}".format(c, n) for c, n in counts[split].items()))  # labels.txt's order
    if not sum(counts["val"].values()):
        log.warning("%s: no image went to val/, which train needs (it chooses the best epoch "
                    "there): give --ratios a larger val share", os.path.join(args.out, "val"))
    dropped = [f for f in fate if f and f.startswith("dropped")]
    if dropped:
        echo("dropped {} (see splits.csv)".format(plural(len(dropped), "file")))
    echo("wrote {}".format(args.out))
    return 0


COMMANDS = {"synth": (_synth, "write the synthetic demo dataset"),
            "check": (_check, "audit a dataset: counts, sizes, modes, duplicates, leakage"),
            "split": (_split, "split class folders into train/val/test, duplicates together")}


@cli_entry("oncolens data")
def main(argv):
    """Runs the subcommand, whose own cli_entry names it in its one-line errors ('oncolens
    data check: error: ...'), as every other command's do."""
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        raise UsageError("unknown command '{}' (expected one of: {})".format(
            argv[0], ", ".join(sorted(COMMANDS))))
    if not argv or argv[0] not in COMMANDS:
        print("usage: oncolens data <command> [options]\n\ncommands:")
        for name, (_, helptext) in sorted(COMMANDS.items()):
            print("  {:8s} {}".format(name, helptext))
        return 0
    return COMMANDS[argv[0]][0](argv[1:])
