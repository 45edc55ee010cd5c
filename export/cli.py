"""``oncolens export``: the export stage's subcommands."""
import argparse
import logging

from oncolens.appliance.cliutil import cli_entry, normalize_flags, setup_logging

log = logging.getLogger("oncolens.export")


def build_onnx_parser():
    p = argparse.ArgumentParser(
        prog="oncolens export onnx",
        description="Export a checkpoint to ONNX with Softmax appended, input 'input_0' and "
                    "output 'output_0' (flags as jetson-inference's onnx_export.py).")
    p.add_argument("--input", default="model_best.pth.tar",
                   help="checkpoint file name inside --model-dir (model_best.pth.tar)")
    p.add_argument("--output", default="", help="ONNX file name (<arch>.onnx)")
    p.add_argument("--model-dir", default="", help="the model folder (default: current folder)")
    p.add_argument("--no-activation", action="store_true",
                   help="leave out the Softmax: the output is logits")
    p.add_argument("--opset", type=int, default=11, help="ONNX opset (11; TensorRT 8.2 takes <= 13)")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    return p


def build_parser():
    p = argparse.ArgumentParser(prog="oncolens export",
                                description="Export a trained model for the device.")
    sub = p.add_subparsers(dest="target")
    sub.add_parser("onnx", help="checkpoint -> ONNX", add_help=False)
    return p


def _export_onnx(argv):
    args = build_onnx_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    from oncolens.export.onnx_export import export_onnx
    path, _ = export_onnx(args.model_dir or ".", args.input, args.output or None, args.opset,
                          activation=not args.no_activation)
    print("exported {}".format(path))
    return 0


TARGETS = {"onnx": _export_onnx}


@cli_entry("oncolens export")
def main(argv):
    if not argv or argv[0] not in TARGETS:
        build_parser().print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return TARGETS[argv[0]](argv[1:])
