"""``oncolens demo``: synthetic data -> train -> ONNX -> classify the test split, end to end.

Settings are chosen so it finishes in a few minutes on a 2-core CPU without a GPU.
Everything goes under ``./oncolens-demo/`` (``--out``); an existing one is kept unless
``--overwrite``, which removes only what an earlier demo wrote there and refuses (removing
nothing) when the folder holds anything else. A demo stopped midway (Ctrl-C, SIGTERM, a step
that fails) removes what it wrote there (``Made``), so the same command can be run again.
"""
import logging
import os
import shutil
import time

from oncolens.appliance.cliutil import (OneLineParser, cli_entry, normalize_flags,
                                        setup_logging, sigterm_as_interrupt)
from oncolens.appliance.errors import UsageError, plural

log = logging.getLogger("oncolens.demo")


def build_parser():
    p = OneLineParser(
        prog="oncolens demo",
        description="Run the whole pipeline on the embedded synthetic dataset: synthesise, "
                    "train a ResNet-18, export it to ONNX, classify the test split into "
                    "annotated images, and print the test accuracy.")
    p.add_argument("--out", default="oncolens-demo",
                   help="output folder (./oncolens-demo); a demo stopped midway removes "
                        "what it had written there")
    p.add_argument("--overwrite", action="store_true",
                   help="redo the demo in an existing --out: an earlier demo's outputs are "
                        "removed first, only when the folder holds nothing but what the demo "
                        "wrote; a file or folder of yours anywhere inside (annotated/ "
                        "included) is named and nothing is removed")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (8)")
    p.add_argument("--size", type=int, default=96, help="synthetic image size (96)")
    p.add_argument("--resolution", type=int, default=64, help="network input size (64)")
    p.add_argument("--per-class", type=int, default=40,
                   help="training images per class; val and test get a third each (40)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error (info)")
    return p


def _step(n, text):
    print("[{}/4] {}".format(n, text), flush=True)


def _clear_earlier_demo(out):
    """--overwrite: remove an earlier demo's outputs, and only from a folder that holds
    nothing else, anywhere inside (its data/ made by 'oncolens data synth')."""
    from oncolens.train.demo_files import DEMO_OUTPUTS, check_earlier_demo
    from oncolens.train.split import clear_owned
    check_earlier_demo(out)
    clear_owned(out, DEMO_OUTPUTS)


def check_args(args):
    """Every number checked before anything is written: a bad --seed was numpy's traceback
    after the dataset was made, and a bad --epochs or --resolution train's error after it,
    each leaving an --out that only --overwrite would take again."""
    from oncolens.train.data_cli import check_seed
    check_seed(args.seed)
    for flag, value in (("--epochs", args.epochs), ("--size", args.size),
                        ("--resolution", args.resolution), ("--per-class", args.per_class)):
        if value < 1:
            raise UsageError("{}: expected a positive number, got {}".format(flag, value))


class StepFailed(Exception):
    """A step (train, classify) ended with exit status ``code``; it has said why."""

    def __init__(self, code):
        Exception.__init__(self, code)
        self.code = code


class Made(object):
    """What this demo writes in ``out``, taken back when it stops before it is whole: the
    folder (and the folders above it) when this run makes it, else each entry that was not
    in it before (it is empty then: new, or cleared by --overwrite)."""

    def __init__(self, out):
        from oncolens.appliance.outpaths import first_existing
        self.out = out
        self.above = first_existing(out)  # stays, whatever happens
        self.before = set(os.listdir(out)) if os.path.isdir(out) else None

    def take_back(self):
        try:
            self._remove()
        except OSError as exc:  # the stop (or the error) is the line to show, not this
            log.warning("%s: what this demo wrote could not all be removed (%s)", self.out,
                        exc.strerror or exc)

    def _remove(self):
        from oncolens.appliance.outpaths import drop_empty_folders
        out = os.path.abspath(self.out)
        if not os.path.isdir(out) or os.path.islink(out):
            return
        if self.before is None:
            shutil.rmtree(out)
            drop_empty_folders([os.path.dirname(out)], self.above)
        else:
            for name in sorted(set(os.listdir(out)) - self.before):
                path = os.path.join(out, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
        log.info("removed what this demo had written in %s", self.out)


def run_demo(args):
    if os.path.exists(args.out):
        if not args.overwrite:
            raise UsageError("{} already exists: pass --overwrite to replace it, or --out "
                             "to write elsewhere".format(args.out))
        _clear_earlier_demo(args.out)
    made = Made(args.out)
    try:
        return _pipeline(args)
    except StepFailed as exc:
        made.take_back()
        return exc.code
    except BaseException as exc:
        made.take_back()
        if isinstance(exc, KeyboardInterrupt):
            exc.hint = "what it had written in {} was removed: run the same command " \
                       "again".format(args.out)
        raise


def _pipeline(args):
    from oncolens.appliance.classify_cli import main as classify_main
    from oncolens.export.onnx_export import export_onnx
    from oncolens.train.cli import main as train_main
    from oncolens.train.synth import generate

    data = os.path.join(args.out, "data")
    model_dir = os.path.join(args.out, "model")
    annotated = os.path.join(args.out, "annotated") + os.sep
    start = time.time()
    held_out = max(1, args.per_class // 3)
    _step(1, "synthesising {} px cell images in {}".format(args.size, data))
    generate(data, args.size, (args.per_class, held_out, held_out), args.seed)
    _step(2, "training ResNet-18 at {} px for {} (CPU)".format(
        args.resolution, plural(args.epochs, "epoch")))
    code = train_main([data, "--model-dir", model_dir, "--resolution", str(args.resolution),
                       "--epochs", str(args.epochs), "--batch-size", "16", "--no-pretrained",
                       "--seed", str(args.seed), "--workers", "1",
                       "--log-level", args.log_level])
    if code:  # train said why (Ctrl-C and SIGTERM too: its own line, 130 or 143)
        raise StepFailed(code)
    _step(3, "exporting to ONNX")
    onnx_path, _ = export_onnx(model_dir)
    _step(4, "classifying the test split into {}".format(annotated))
    results = os.path.join(args.out, "test_predictions.txt")
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = classify_main(["--model", model_dir, "--log-level", "warning",
                              os.path.join(data, "test"), annotated])
    lines = buf.getvalue().splitlines()
    truth = _truths(os.path.join(data, "test"))
    if len(lines) < len(truth):  # a line an image: not every one was classified
        if code:  # classify said why (an image that failed is named in its log)
            raise StepFailed(code)
        raise KeyboardInterrupt()  # Ctrl-C or SIGTERM ended classify's loop (exit 0)
    with open(results, "w") as fh:
        fh.write(buf.getvalue())
    correct = sum(1 for line, label in zip(lines, truth) if line.endswith("({})".format(label)))
    print("")
    print("test accuracy: {}/{} = {:.1%} (synthetic data: a demo, not a medical result)".format(
        correct, len(truth), correct / float(len(truth))))
    print("dataset:          {}".format(data))
    print("checkpoint:       {}".format(os.path.join(model_dir, "model_best.pth.tar")))
    print("ONNX model:       {}".format(onnx_path))
    print("model.json:       {}".format(os.path.join(model_dir, "model.json")))
    print("annotated images: {}".format(annotated))
    print("console lines:    {}".format(results))
    print("done in {:.0f} s".format(time.time() - start))
    return code


def _truths(split_dir):
    """Class of each test image, in the order classify visits them (sorted walk)."""
    from oncolens.appliance.sources import list_images
    return [rel.split(os.sep)[0] for _, rel in list_images(split_dir)]


@cli_entry("oncolens demo")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    check_args(args)
    with sigterm_as_interrupt():  # SIGTERM unwinds as Ctrl-C does: what was written goes
        return run_demo(args)
