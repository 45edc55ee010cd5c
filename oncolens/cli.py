"""The ``oncolens`` command: one entry point, one module a subcommand.

Each subcommand module has ``build_parser()`` and ``main(argv=None)``; nothing is
imported until its subcommand is asked for, so ``oncolens classify`` on a Nano never
imports torch.
"""
import importlib
import sys

from oncolens import __version__

# name -> (module, one-line help).  Later issues add their rows here.
SUBCOMMANDS = [
    ("demo", "oncolens.train.demo", "synthesise data, train, export and classify, end to end"),
    ("data", "oncolens.train.data_cli", "make, check and split datasets (synth, check, split)"),
    ("train", "oncolens.train.cli", "train a classifier on class folders (jetson-inference train.py flags)"),
    ("export", "oncolens.export.cli", "export to ONNX (onnx_export.py flags), build TensorRT engines, verify them"),
    ("classify", "oncolens.appliance.classify_cli", "classify images, folders or streams (imagenet flags)"),
    ("service", "oncolens.appliance.service_cli", "install the systemd unit and /etc/default/oncolens (device service)"),
    ("serve", "oncolens.appliance.serve_cli", "web page and HTTP API: POST /classify, /health, /metrics"),
    ("selftest", "oncolens.export.selftest", "build, verify and time engines here; write a JSON + Markdown report"),
    ("batch", "oncolens.appliance.batch_cli", "classify a whole folder: results CSV/JSONL, metrics, resume"),
    ("bench", "oncolens.appliance.bench_cli", "measure images/s: network-only, end to end, naive baseline"),
    ("evaluate", "oncolens.train.evaluate_cli", "metrics, figures and a report of trained models on a split"),
]


def _usage():
    lines = ["usage: oncolens [--version] <command> [options]", "", "commands:"]
    width = max(len(name) for name, _, _ in SUBCOMMANDS)
    for name, _, helptext in SUBCOMMANDS:
        lines.append("  {}  {}".format(name.ljust(width), helptext))
    lines.append("")
    lines.append("'oncolens <command> --help' shows a command's options.")
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print("oncolens {}".format(__version__))
        return 0
    table = {name: module for name, module, _ in SUBCOMMANDS}
    if argv[0] not in table:
        sys.stderr.write("oncolens: unknown command '{}' (expected one of: {})\n".format(
            argv[0], ", ".join(sorted(table))))
        return 2
    module = importlib.import_module(table[argv[0]])
    return module.main(argv[1:])
