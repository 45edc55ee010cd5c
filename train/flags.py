"""The numeric flags of ``oncolens train``, checked before anything is read or written: each
value out of its range is one line naming the flag, what it expects and what it got."""
import math

from oncolens.appliance.errors import UsageError, plural

MAX_SEED = 2 ** 32 - 1  # numpy's seeds (a negative one is its traceback)


def _at_least(low):
    return lambda v: v >= low


def _fraction(low_open, high_open):
    """A number in [0, 1], (0, 1], [0, 1) ... (NaN fails every comparison)."""
    def ok(v):
        return (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
    return ok


# (flag as shown, attribute, test, what is expected); None values (unset) are not tested
RULES = (
    ("--resolution", "resolution", _at_least(1), "a positive number of pixels"),
    ("-j/--workers", "workers", _at_least(0), "0 or more data-loading processes"),
    ("-b/--batch-size", "batch_size", _at_least(1), "1 or more images"),
    ("--accum-steps", "accum_steps", _at_least(1), "1 or more micro-batches"),
    ("--lr", "lr", _at_least(0), "0 or more"),
    ("--momentum", "momentum", _fraction(False, True), "0 <= momentum < 1"),
    ("--wd/--weight-decay", "weight_decay", _at_least(0), "0 or more"),
    ("--label-smoothing", "label_smoothing", _fraction(False, True), "0 <= smoothing < 1"),
    ("--crop-scale", "crop_scale", _fraction(True, False),
     "a fraction of the image area, 0 < scale <= 1"),
    ("--colour-jitter", "colour_jitter", _fraction(False, True), "0 <= strength < 1"),
    ("--stain-jitter", "stain_jitter", _fraction(False, True), "0 <= strength < 1"),
    ("--clahe-clip", "clahe_clip", lambda v: v > 0, "a positive clip limit"),
    ("--warmup-epochs", "warmup_epochs", _at_least(0), "0 or more epochs"),
    ("--min-lr-ratio", "min_lr_ratio", _fraction(False, False), "0 <= ratio <= 1"),
    ("--ema-epochs", "ema_epochs", _at_least(0), "0 or more epochs"),
    ("--mixup", "mixup", _at_least(0), "0 (off) or a positive alpha"),
    ("--patience", "patience", _at_least(0), "0 (never stop early) or more epochs"),
    ("--time-limit", "time_limit", _at_least(0), "0 (no limit) or more minutes"),
    ("--start-epoch", "start_epoch", _at_least(0), "0 or more"),
    ("--threads", "threads", _at_least(0), "0 (torch's choice) or more"),
    ("-p/--print-freq", "print_freq", _at_least(0), "0 (never) or more batches"),
    ("--seed", "seed", lambda v: 0 <= v <= MAX_SEED, "0 to {}".format(MAX_SEED)),
    ("--gpu", "gpu", _at_least(0), "a GPU index, 0 or more"),
)


def check_numbers(args):
    """Every numeric flag in its range, then the ones that depend on each other."""
    for flag, attr, ok, expected in RULES:
        value = getattr(args, attr, None)
        if value is None:
            continue
        if isinstance(value, float) and math.isinf(value) or not ok(value):
            raise UsageError("{}: expected {}, got {}".format(flag, expected, value))
    if args.batch_size % args.accum_steps:
        raise UsageError("-b/--batch-size {} is not a multiple of --accum-steps {}: each step "
                         "would see {}; give a -b that --accum-steps divides".format(
                             args.batch_size, args.accum_steps, plural(
                                 args.batch_size // args.accum_steps * args.accum_steps, "image")))
    if not args.resume and args.start_epoch >= args.epochs:
        raise UsageError("--start-epoch {} is not before --epochs {}: no epoch left to train"
                         .format(args.start_epoch, args.epochs))


def low_memory_accum(batch_size, micro=8):
    """--low-memory: the fewest micro-batches of at most ``micro`` images that split
    ``batch_size`` evenly (so every step still sees ``batch_size`` images)."""
    steps = max(1, int(math.ceil(batch_size / float(micro))))
    while batch_size % steps:
        steps += 1
    return steps
