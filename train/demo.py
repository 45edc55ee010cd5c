"""``oncolens demo``: synthetic data -> train -> ONNX -> classify the test split, end to end.

Settings are chosen so it finishes in a few minutes on a 2-core CPU without a GPU.
Everything goes under ``./oncolens-demo/`` (``--out``). The demo is built in a new hidden
folder beside it (``.oncolens-demo.<random>.tmp``, ``Staging``), which takes ``--out``'s name
only once the demo is complete. An existing ``--out`` is kept unless ``--overwrite``, which
takes only an earlier demo's folder holding nothing but what the demo wrote (anything else is
named and nothing replaced); it is replaced whole once the new demo is complete, so a demo
stopped or failing midway (Ctrl-C, SIGTERM, a step that fails) leaves it as it was and
removes the folder it was building: the same command can be run again.
"""
import functools
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
                   help="output folder (./oncolens-demo); the demo is built in a hidden "
                        "folder beside it that takes its name once complete (a demo stopped "
                        "midway removes it)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo the demo in an existing --out, only an earlier demo's folder "
                        "holding nothing but what the demo wrote (a file or folder of yours "
                        "anywhere inside, annotated/ included, is named and nothing is "
                        "replaced): it is replaced whole once the new demo is complete, and "
                        "kept as it was when the new one is stopped or fails (a mount point "
                        "cannot be replaced so, and is refused)")
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


class Staging(object):
    """Where this demo is built: a new hidden folder beside ``out`` (``.<name>.<random>.tmp``,
    on the same filesystem), which takes ``out``'s place, an earlier demo there going whole,
    only once the demo is complete. A demo stopped or failing before that removes it (and the
    folders made above it for it): ``out`` is as it was, an earlier demo in it whole."""

    def __init__(self, out):
        from oncolens.appliance.outpaths import first_existing, temp_folder
        self.out = out
        self.above = first_existing(out)  # stays, whatever happens
        self.parent = os.path.dirname(os.path.abspath(out))
        self.path = None
        try:
            if not os.path.isdir(self.parent):
                os.makedirs(self.parent)
            self.path = temp_folder(out)
        except OSError as exc:
            self.take_back()
            raise UsageError("--out {}: the demo is built in a new folder beside it, which "
                             "cannot be made in {} ({})".format(
                                 out, self.parent, exc.strerror or exc))

    def finish(self, args):
        """The complete demo in ``out``'s place, with Ctrl-C and SIGTERM held over the moves.
        ``out`` is checked again first: a file of the user's put in it (or a folder made at
        its name) while the demo ran is never removed with it."""
        from oncolens.appliance.cliutil import signals_held
        from oncolens.appliance.outpaths import replace_folder
        check_out(args)
        with signals_held():
            replace_folder(self.path, self.out)

    def take_back(self):
        """Remove the folder being built, if it has not taken ``out``'s place: True if so."""
        from oncolens.appliance.outpaths import drop_empty_folders
        if self.path is not None and not os.path.isdir(self.path):
            return False
        try:
            if self.path is not None:
                shutil.rmtree(self.path)
            drop_empty_folders([self.parent], self.above)
        except OSError as exc:  # the stop (or the error) is the line to show, not this
            log.warning("%s: the demo being built there could not all be removed (%s)",
                        self.path, exc.strerror or exc)
        return True


def check_out(args):
    """--out is new, or (--overwrite) an earlier demo's folder holding only what it wrote."""
    from oncolens.train.demo_files import check_earlier_demo
    if os.path.lexists(args.out):
        if not args.overwrite:
            raise UsageError("{} already exists: pass --overwrite to replace it, or --out "
                             "to write elsewhere".format(args.out))
        if os.path.ismount(args.out):  # renamed at the end: EBUSY, after the whole demo
            raise UsageError("--out {}: a mount point, which the finished demo cannot take "
                             "the place of (it is built beside it, then renamed): give a "
                             "folder inside it, e.g. --out {}".format(
                                 args.out, os.path.join(args.out, "oncolens-demo")))
        check_earlier_demo(args.out)


def run_demo(args):
    check_out(args)
    staging = Staging(args.out)
    print("building the demo in {}: it {} once complete".format(
        staging.path, "replaces the earlier demo in " + args.out if os.path.lexists(args.out)
        else "becomes " + args.out), flush=True)
    try:
        code, summary = _pipeline(args, staging.path)
        staging.finish(args)
    except StepFailed as exc:
        staging.take_back()
        return exc.code
    except BaseException as exc:
        if staging.take_back():
            hint = "the demo being built beside {} was removed{}: run the same command " \
                   "again".format(args.out, ", and the earlier demo in it is as it was"
                                  if os.path.lexists(args.out) else "")
        else:  # held over the moves: the demo was complete and is in --out
            hint = "the demo had finished: it is in {}".format(args.out)
        if isinstance(exc, KeyboardInterrupt):
            exc.hint = hint
        raise
    print(summary)
    return code  # 1: classify could not write every annotated copy (its log names them)


def _pipeline(args, work):
    """Build the demo in ``work``; (classify's exit status, the summary to print, naming
    the files in ``args.out``, where they will be)."""
    from oncolens.appliance.classify_cli import main as classify_main
    from oncolens.export.onnx_export import export_onnx
    from oncolens.train.cli import main as train_main
    from oncolens.train.synth import generate

    data = os.path.join(work, "data")
    model_dir = os.path.join(work, "model")
    start = time.time()
    held_out = max(1, args.per_class // 3)
    _step(1, "synthesising {} px cell images in data/".format(args.size))
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
    _step(4, "classifying the test split into annotated/")
    code, lines, truth = _classify(classify_main, data, model_dir, work)
    _name_final_dataset(model_dir, os.path.join(args.out, "data"))
    correct = sum(1 for line, label in zip(lines, truth) if line.endswith("({})".format(label)))
    final = functools.partial(os.path.join, args.out)
    return code, "\n".join([
        "",
        "test accuracy: {}/{} = {:.1%} (synthetic data: a demo, not a medical result)".format(
            correct, len(truth), correct / float(len(truth))),
        "dataset:          {}".format(final("data")),
        "checkpoint:       {}".format(final("model", "model_best.pth.tar")),
        "ONNX model:       {}".format(final("model", os.path.basename(onnx_path))),
        "model.json:       {}".format(final("model", "model.json")),
        "annotated images: {}".format(final("annotated") + os.sep),
        "console lines:    {}".format(final("test_predictions.txt")),
        "done in {:.0f} s".format(time.time() - start)])


def _classify(classify_main, data, model_dir, work):
    """Classify the test split into ``work``/annotated/ and write its console lines to
    test_predictions.txt; (its exit status, those lines, each image's class)."""
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = classify_main(["--model", model_dir, "--log-level", "warning",
                              os.path.join(data, "test"),
                              os.path.join(work, "annotated") + os.sep])
    lines = buf.getvalue().splitlines()
    truth = _truths(os.path.join(data, "test"))
    if len(lines) < len(truth):  # a line an image: not every one was classified
        if code:  # classify said why (an image that failed is named in its log)
            raise StepFailed(code)
        raise KeyboardInterrupt()  # Ctrl-C or SIGTERM ended classify's loop (exit 0)
    with open(os.path.join(work, "test_predictions.txt"), "w") as fh:
        fh.write(buf.getvalue())
    return code, lines, truth


def _name_final_dataset(model_dir, data):
    """model.json records the dataset's folder (provenance.dataset, where export and evaluate
    look for real images): the folder it will be in, not the one it was built in."""
    from oncolens.appliance.bundle import read_model_info, write_model_info
    path = os.path.join(model_dir, "model.json")
    info = read_model_info(path)
    if isinstance(info.get("provenance"), dict):
        info["provenance"]["dataset"] = os.path.abspath(data)
        write_model_info(path, info)


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
