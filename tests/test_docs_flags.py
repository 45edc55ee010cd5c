"""Every long flag of every command's parser is named in the docs.

A flag added to a ``build_parser()`` without a word in README.md, models/README.md or
docs/*.md fails here, naming the command and the flag. Only the flag's name is looked for
(``-`` and ``_`` alike, as the commands accept both), not any sentence about it.
"""
import argparse
import glob
import importlib
import os
import re

from oncolens.cli import SUBCOMMANDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# command -> (module, parser function); subparsers (service install) are walked
PARSERS = {
    "demo": ("oncolens.train.demo", "build_parser"),
    "data synth": ("oncolens.train.data_cli", "build_synth_parser"),
    "data check": ("oncolens.train.data_cli", "build_check_parser"),
    "data split": ("oncolens.train.data_cli", "build_split_parser"),
    "train": ("oncolens.train.cli", "build_parser"),
    "evaluate": ("oncolens.train.evaluate_cli", "build_parser"),
    "export onnx": ("oncolens.export.cli", "build_onnx_parser"),
    "export check": ("oncolens.export.cli", "build_check_parser"),
    "export engine": ("oncolens.export.engine", "build_parser"),
    "export verify": ("oncolens.export.verify", "build_parser"),
    "selftest": ("oncolens.export.selftest", "build_parser"),
    "classify": ("oncolens.appliance.classify_cli", "build_parser"),
    "batch": ("oncolens.appliance.batch_cli", "build_parser"),
    "bench": ("oncolens.appliance.bench_cli", "build_parser"),
    "serve": ("oncolens.appliance.serve_cli", "build_parser"),
    "service": ("oncolens.appliance.service_cli", "build_parser"),
    # the measuring tools the docs show as python -m ...
    "python -m oncolens.train.speed": ("oncolens.train.speed", "build_parser"),
    "python -m oncolens.appliance.web.bench": ("oncolens.appliance.web.bench", "build_parser"),
}


def _docs_text():
    paths = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "models", "README.md")]
    paths += sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    texts = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            texts.append(fh.read())
    return "\n".join(texts)


def _long_flags(parser, command):
    """(command, flag) for every long option, subcommands' parsers included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for item in _long_flags(sub, "{} {}".format(command, name)):
                    yield item
        elif not isinstance(action, argparse._HelpAction):
            for flag in action.option_strings:
                if flag.startswith("--"):
                    yield command, flag


def test_the_table_covers_every_subcommand():
    """A new subcommand needs its row in PARSERS, or the test below would not see it."""
    from oncolens.export.cli import TARGETS
    from oncolens.train.data_cli import COMMANDS
    rows = [name.split() for name in PARSERS if not name.startswith("python")]
    commands = {name for name, _, _ in SUBCOMMANDS}
    commands |= {"export " + t for t in TARGETS} | {"data " + c for c in COMMANDS}
    commands -= {"export", "data"}
    covered = {" ".join(row) for row in rows}
    assert not commands - covered, "add to PARSERS: {}".format(sorted(commands - covered))


def test_every_long_flag_is_in_the_docs():
    text = _docs_text()
    missing = []
    for command, (module, function) in sorted(PARSERS.items()):
        parser = getattr(importlib.import_module(module), function)()
        for cmd, flag in _long_flags(parser, command):
            spellings = {flag, "--" + flag[2:].replace("-", "_")}
            if not any(re.search(r"(?<![\w-])" + re.escape(s) + r"(?![\w-])", text)
                       for s in spellings):
                missing.append("{} {}".format(cmd, flag))
    assert not missing, "flags that no doc names (README.md, models/README.md, docs/*.md): " \
        + ", ".join(missing)
