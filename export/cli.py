"""``oncolens export``: the export stage's subcommands (onnx, check, engine, verify)."""
import argparse
import logging
import os

from oncolens.appliance.cliutil import OneLineParser, cli_entry, normalize_flags, setup_logging
from oncolens.appliance.errors import UsageError

log = logging.getLogger("oncolens.export")


def str2bool(value):
    """A real boolean: --flag, --flag=true/false/1/0/yes/no."""
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", "y"):
        return True
    if text in ("0", "false", "no", "off", "n"):
        return False
    raise argparse.ArgumentTypeError("expected true or false, got '{}'".format(value))


def add_common(p):
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")


def add_check_flags(p):
    p.add_argument("--images", default="", help="a dataset (its val/ is used) or a folder of "
                   "images for the check (default: the training data model.json records, "
                   "else random images)")
    p.add_argument("--check-count", type=int, default=32, help="images in the check (32)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest |delta p| allowed between torch and ONNX Runtime (1e-3)")


def build_onnx_parser():
    p = OneLineParser(
        prog="oncolens export onnx",
        description="Export a checkpoint to ONNX with Softmax appended, input 'input_0' and "
                    "output 'output_0' (flags as jetson-inference's onnx_export.py), then "
                    "check it against the checkpoint.")
    p.add_argument("--input", default="model_best.pth.tar",
                   help="checkpoint file name inside --model-dir (model_best.pth.tar); one "
                        "recording no classes (jetson-inference's train.py before December "
                        "2022) takes them from a labels.txt beside it or in --model-dir")
    p.add_argument("--output", default="",
                   help="ONNX file ending in .onnx (<arch>.onnx): a bare name goes into "
                        "--model-dir, a path with a folder is taken as given, as "
                        "onnx_export.py does; either way it must lie inside --model-dir")
    p.add_argument("--model-dir", default="", help="the model folder the ONNX, model.json and "
                   "labels.txt go into (default: current folder)")
    p.add_argument("--no-activation", type=str2bool, nargs="?", const=True, default=False,
                   help="leave out the Softmax: the output is logits (a real boolean: "
                        "--no-activation, =true or =false)")
    p.add_argument("--opset", type=int, default=11,
                   help="ONNX opset, 9..13 (11; TensorRT 8.2 parses up to 13)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, help="fixed batch size (1)")
    batch.add_argument("--dynamic-batch", action="store_true",
                       help="a dynamic batch dimension (for engines with --max-batch > 1)")
    p.add_argument("--cam", action="store_true", help="add the output 'cam_0': the class "
                   "activation map of the predicted class (ResNet family)")
    p.add_argument("--no-check", action="store_true", help="skip the export check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing ONNX file, "
                   "and rewrite a model.json of another model (one recording another "
                   "checkpoint, or another arch, classes or resolution)")
    add_check_flags(p)
    add_common(p)
    return p


def build_check_parser():
    p = OneLineParser(
        prog="oncolens export check",
        description="Check an exported ONNX against its checkpoint (onnx.checker, then torch "
                    "vs ONNX Runtime on the same images).")
    p.add_argument("--model-dir", default="", help="the model folder (default: current folder)")
    p.add_argument("--model", default="", help="the ONNX file (default: model.json's)")
    p.add_argument("--input", default="", help="the checkpoint (default: model.json's)")
    add_check_flags(p)
    add_common(p)
    return p


def build_parser():
    p = OneLineParser(prog="oncolens export",
                      description="Export a trained model for the device.")
    sub = p.add_subparsers(dest="target")
    sub.add_parser("onnx", help="checkpoint -> ONNX (+ check)", add_help=False)
    sub.add_parser("check", help="check an ONNX against its checkpoint", add_help=False)
    sub.add_parser("engine", help="ONNX -> TensorRT engine", add_help=False)
    sub.add_parser("verify", help="checkpoint vs ONNX vs engines on real images",
                   add_help=False)
    return p


def check_flags(args):
    """The check's flags, before any work: --check-count, --tolerance, --images."""
    if args.check_count < 1:
        raise UsageError("--check-count: expected a positive number, got {}".format(
            args.check_count))
    if not args.tolerance >= 0:  # also NaN
        raise UsageError("--tolerance: expected the largest |delta p| allowed, a number >= 0, "
                         "got {}".format(args.tolerance))
    if args.images:
        from oncolens.export.images import sample_paths
        sample_paths(args.images, 1)  # a folder with images, or one line saying what it is


def _run_check(model_dir, onnx_path, checkpoint, args, bundle=None, onnx_name=None):
    from oncolens.export.check import check_export, format_stats
    stats = check_export(model_dir, onnx_path, checkpoint, args.images or None,
                         args.check_count, max_delta=args.tolerance, bundle=bundle,
                         onnx_name=onnx_name)
    print(format_stats("check: torch vs ONNX Runtime", stats))
    print("check: {}".format(stats["images"]))
    if "cam_max_abs_diff" in stats:
        print("check: cam_0 max |d| {:.2e}".format(stats["cam_max_abs_diff"]))
    return stats


def _export_onnx(argv):
    args = build_onnx_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    if not args.no_check:
        check_flags(args)
    from oncolens.export.check import ExportCheckError
    from oncolens.export.onnx_export import export_onnx
    model_dir = args.model_dir or "."

    def check(bundle):  # on the new file, before it replaces anything in the bundle
        name = os.path.join(model_dir, bundle.info["onnx"]["file"])  # relative to it
        try:
            _run_check(model_dir, None, args.input, args, bundle=bundle, onnx_name=name)
        except ExportCheckError as exc:
            raise ExportCheckError("{}; nothing was written: {} and {} are as they were"
                                   .format(exc, name, os.path.join(model_dir, "model.json")))

    path, _ = export_onnx(model_dir, args.input, args.output or None, args.opset,
                          activation=not args.no_activation, overwrite=args.overwrite,
                          batch=args.batch, dynamic_batch=args.dynamic_batch, cam=args.cam,
                          check=None if args.no_check else check)
    print("exported {}".format(path))
    return 0


def _check(argv):
    args = build_check_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    check_flags(args)
    _run_check(args.model_dir or ".", args.model or None, args.input or None, args)
    return 0


def _engine(argv):
    from oncolens.export.engine import main as engine_main
    return engine_main(argv)


def _verify(argv):
    from oncolens.export.verify import main as verify_main
    return verify_main(argv)


TARGETS = {"onnx": _export_onnx, "check": _check, "engine": _engine, "verify": _verify}


@cli_entry("oncolens export")
def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0
    if argv[0] not in TARGETS:
        raise UsageError(_unknown_target(argv[0]))
    return TARGETS[argv[0]](argv[1:])


def _unknown_target(name):
    """One line for a subcommand export does not have, with the nearest it or oncolens has."""
    import difflib
    from oncolens.cli import SUBCOMMANDS
    expected = ", ".join(TARGETS)
    if name.startswith("-"):
        return "expected a subcommand ({}) before '{}'".format(expected, name)
    hint = ""
    close = difflib.get_close_matches(name, list(TARGETS), n=1)
    if close:
        hint = "; did you mean 'oncolens export {}'?".format(close[0])
    elif name in [command for command, _, _ in SUBCOMMANDS]:
        hint = "; did you mean 'oncolens {}'?".format(name)
    return "unknown subcommand '{}' (expected {}{})".format(name, expected, hint)
