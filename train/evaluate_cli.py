"""``oncolens evaluate``: metrics of one or more trained models on a class-folder split.

    oncolens evaluate --model-dir models/busi-lite0 data/busi/test --json results.json
    oncolens evaluate --model-dir models/a --model-dir models/b data/busi/test --out cmp/
"""
import argparse
import json
import logging
import os

from oncolens.appliance.cliutil import cli_entry, normalize_flags, setup_logging
from oncolens.appliance.errors import UsageError

log = logging.getLogger("oncolens.evaluate")


def build_parser():
    p = argparse.ArgumentParser(
        prog="oncolens evaluate",
        description="Accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix, "
                    "one-vs-rest ROC-AUC and expected calibration error of trained model "
                    "folders on SPLIT_DIR/<class>/ images, with the model's own preprocessing. "
                    "Several --model-dir give a comparison table.")
    p.add_argument("split_dir", help="class folders to evaluate on (e.g. data/busi/test)")
    p.add_argument("--model-dir", action="append", required=True,
                   help="trained model folder (repeat to compare several)")
    p.add_argument("--json", default=None, help="write the metrics to this JSON file")
    p.add_argument("--out", default=None,
                   help="folder for the Markdown report and PNG figures (default: "
                        "<model-dir>/eval-<split name> for one model; none for several)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime"),
                   help="auto: the exported ONNX model when present, else the checkpoint")
    p.add_argument("--bins", type=int, default=15, help="calibration bins (15)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap rounds for the 95%% confidence intervals of accuracy and "
                        "macro-F1 (1000; 0: none)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--log-level", default="info")
    return p


def _check_free(path, overwrite):
    if path and os.path.exists(path) and not overwrite:
        raise UsageError("{} already exists: pass --overwrite to replace it".format(path))


def _write_outputs(report, out_dir, prefix, overwrite):
    from oncolens.train.plots import all_figures
    from oncolens.train.report import model_markdown
    md_path = os.path.join(out_dir, "{}report.md".format(prefix))
    _check_free(md_path, overwrite)
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
    pngs = all_figures(report, out_dir, prefix)
    with open(md_path, "w") as fh:
        fh.write(model_markdown(report, [os.path.basename(p) for p in pngs]))
    return md_path


def _print_summary(report):
    print("{}: accuracy {:.4f}  macro-F1 {:.4f}  ROC-AUC {}  ECE {:.4f}  ({} images)".format(
        report["model_dir"], report["accuracy"], report["macro_f1"],
        "n/a" if report["roc_auc_macro"] is None else "{:.4f}".format(report["roc_auc_macro"]),
        report["ece"], report["count"]))
    if report.get("ci"):
        print("  95% CI (bootstrap): accuracy {:.3f}-{:.3f}  macro-F1 {:.3f}-{:.3f}".format(
            *(report["ci"]["accuracy"] + report["ci"]["macro_f1"])))
    if "ece_without_temperature" in report:
        print("  ECE {:.4f} before temperature scaling (T = {:.3f}, fitted on val/ at "
              "training)".format(report["ece_without_temperature"], report["temperature"]))
    for label in report["labels"]:
        row = report["per_class"][label]
        print("  {:12s} precision {:.3f}  recall {:.3f}  F1 {:.3f}  support {}".format(
            label, row["precision"], row["recall"], row["f1"], row["support"]))
    for failure in report["failed"]:
        print("  unreadable: {} ({})".format(failure["path"], failure["error"]))


@cli_entry("oncolens evaluate")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    from oncolens.train.evaluate import evaluate_dir, public
    from oncolens.train.report import comparison_markdown
    _check_free(args.json, args.overwrite)
    if args.bootstrap < 0:
        raise UsageError("--bootstrap: expected 0 or more rounds, got {}".format(args.bootstrap))
    if not os.path.isdir(args.split_dir):
        raise UsageError("{}: folder not found (expected class folders)".format(args.split_dir))
    split_name = os.path.basename(os.path.normpath(args.split_dir))
    reports = []
    for index, model_dir in enumerate(args.model_dir):
        report = evaluate_dir(model_dir, args.split_dir, args.backend, bins=args.bins,
                              bootstrap=args.bootstrap)
        _print_summary(report)
        out = args.out or (os.path.join(model_dir, "eval-" + split_name)
                           if len(args.model_dir) == 1 else None)
        if out:
            prefix = "" if len(args.model_dir) == 1 else "{}-{}-".format(
                index + 1, os.path.basename(os.path.normpath(model_dir)))
            print("report: {}".format(_write_outputs(report, out, prefix, args.overwrite)))
        reports.append(report)
    if len(reports) > 1:
        table = comparison_markdown(reports)
        print("")
        print(table)
        if args.out:
            with open(os.path.join(args.out, "comparison.md"), "w") as fh:
                fh.write(table)
    if args.json:
        payload = public(reports[0]) if len(reports) == 1 else \
            {"models": [public(r) for r in reports]}
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True)
        print("metrics: {}".format(args.json))
    return 0
