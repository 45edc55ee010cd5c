"""``oncolens evaluate``: metrics of one or more trained models on a class-folder split.

    oncolens evaluate --model-dir models/busi-lite0 data/busi/test --json results.json
    oncolens evaluate --model-dir models/a --model-dir models/b data/busi/test --out cmp/
"""
import io
import logging
import os
import sys

from oncolens.appliance.cliutil import OneLineParser, cli_entry, normalize_flags, setup_logging
from oncolens.appliance.errors import (OncoLensError, UsageError, not_a_folder, plural,
                                      reason_of)
from oncolens.appliance.outpaths import (check_output_dir, check_output_file,
                                          check_text_file, replace_file)

log = logging.getLogger("oncolens.evaluate")

# Fewer rounds cannot make a 95% percentile interval: with 1 round both ends are that one
# resample, which need not contain the estimate; 100 is the usual floor.
MIN_BOOTSTRAP = 100


def build_parser():
    p = OneLineParser(
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
                        "macro-F1 (1000; at least 100; 0: none)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files: the report folder's files of an "
                        "earlier evaluation (report.md, comparison.md, the figures, every "
                        "model's) are all removed first; nothing else there")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error (info)")
    return p


def _check_free(path, overwrite):
    if path and os.path.exists(path) and not overwrite:
        raise UsageError("{} already exists: pass --overwrite to replace it".format(path))


def _write_text(path, text):
    """A report file, UTF-8 (folder names that are not valid UTF-8 keep their own bytes),
    written beside ``path`` and moved there when whole: Ctrl-C or a full disk midway leaves
    no half-written report under its name."""
    from oncolens.train.data_cli import NAME_ERRORS

    def write(tmp):
        with io.open(tmp, "w", encoding="utf-8", errors=NAME_ERRORS) as fh:
            fh.write(text)
    replace_file(path, write)


def _report_path(out_dir, prefix):
    return os.path.join(out_dir, "{}report.md".format(prefix))


def earlier_outputs(out_dir):
    """The files in ``out_dir`` that an earlier evaluation wrote, sorted: report.md, the
    figures and comparison.md by name, ``<n>-<model folder>-`` ones where the folder's
    record lists them (train/evaluate_record.py). Nothing else in the folder is evaluate's."""
    from oncolens.train.evaluate_record import own_files
    return own_files(out_dir)


def _check_earlier(out_dir, overwrite):
    """An earlier evaluation's files in ``out_dir`` are replaced only with --overwrite, which
    removes all of them (see _clear_earlier), so the folder never mixes two runs."""
    earlier = earlier_outputs(out_dir)
    if earlier and not overwrite:
        raise UsageError("{} already exists{}: pass --overwrite to replace the earlier "
                         "evaluation's files".format(
                             os.path.join(out_dir, earlier[0]), " (and {} of that run)".format(
                                 plural(len(earlier) - 1, "more file")) if earlier[1:] else ""))


def _clear_earlier(out_dir, cleared):
    """--overwrite: before this run's first file in ``out_dir``, remove every file an earlier
    evaluation wrote there (another model's report and figures too); nothing else."""
    if out_dir not in cleared:
        from oncolens.train.evaluate_record import forget
        from oncolens.train.split import clear_owned
        clear_owned(out_dir, earlier_outputs(out_dir))
        forget(out_dir)
        cleared.add(out_dir)


def _write_outputs(report, out_dir, prefix, overwrite, cleared):
    from oncolens.train.plots import all_figures
    from oncolens.train.report import model_markdown
    md_path = _report_path(out_dir, prefix)
    _check_free(md_path, overwrite)
    if overwrite:
        _clear_earlier(out_dir, cleared)
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
    if prefix:  # evaluate's by name only where the record says so (evaluate_record)
        from oncolens.train.evaluate_record import record
        record(out_dir, _own_names(prefix))
    pngs = all_figures(report, out_dir, prefix)
    _write_text(md_path, model_markdown(report, [os.path.basename(p) for p in pngs]))
    return md_path


def plan_outputs(args):
    """(model dir, report folder or None, file prefix) per model, every output checked before
    any model runs: nothing is replaced without --overwrite, and no run fails at its end."""
    split_name = os.path.basename(os.path.abspath(args.split_dir))  # "." is its folder
    several = len(args.model_dir) > 1
    if args.out:
        check_output_dir(args.out, "--out")
        inside = os.path.realpath(args.out)
        split = os.path.realpath(args.split_dir)
        if inside == split or inside.startswith(split + os.sep):
            raise UsageError("--out {}: inside the split {} being evaluated; its figures would "
                             "count as images next time: give a folder outside it".format(
                                 args.out, args.split_dir))
    if several and args.out:
        _check_earlier(args.out, args.overwrite)
        _check_free(os.path.join(args.out, "comparison.md"), args.overwrite)
    plans = []
    for index, model_dir in enumerate(args.model_dir):
        if not os.path.isdir(model_dir):
            raise UsageError("--model-dir {}: {} (expected a model folder)".format(
                model_dir, not_a_folder(model_dir)))
        out = args.out or (None if several else os.path.join(model_dir, "eval-" + split_name))
        prefix = "{}-{}-".format(index + 1, os.path.basename(os.path.abspath(model_dir))) \
            if several else ""
        if out:
            check_output_dir(out, "--out")
            _check_no_folder_at(out, prefix, several)
            _check_earlier(out, args.overwrite)
            for name in _own_names(prefix):  # a file of yours at one of them, too
                _check_free(os.path.join(out, name), args.overwrite)
        plans.append((model_dir, out, prefix))
    return plans


def _own_names(prefix):
    """The names of one model's files in its report folder: report.md and the figures."""
    from oncolens.train.plots import FIGURES
    return ["{}report.md".format(prefix)] + ["{}{}.png".format(prefix, f) for f in FIGURES]


def _check_no_folder_at(out, prefix, several):
    """A folder at the name of a file this run writes in ``out`` (report.md, a figure,
    comparison.md) is one line before any model runs, not an error after the evaluation."""
    for name in _own_names(prefix) + (["comparison.md"] if several else []):
        path = os.path.join(out, name)
        if os.path.isdir(path):
            raise UsageError("--out {}: {} is a folder, where this run writes a file: move "
                             "it or give another --out".format(out, path))


def check_args(args):
    if args.bootstrap < 0 or 0 < args.bootstrap < MIN_BOOTSTRAP:
        raise UsageError("--bootstrap: expected 0 (no intervals) or at least {} rounds for a "
                         "95% interval, got {}".format(MIN_BOOTSTRAP, args.bootstrap))
    if args.bins < 1:
        raise UsageError("--bins: expected 1 or more calibration bins, got {}".format(args.bins))
    if not os.path.isdir(args.split_dir):
        raise UsageError("{}: {} (expected class folders)".format(
            args.split_dir, not_a_folder(args.split_dir)))
    if args.json:
        check_text_file(args.json, "--json", "a .json file name")
        check_output_file(args.json, "--json", args.overwrite)
    plans = plan_outputs(args)
    if args.json:
        _check_json_apart(args.json, plans)
    return plans


def _check_json_apart(path, plans):
    """--json never names a model's own file (model.json, labels.txt, a checkpoint, an ONNX
    or an engine: --overwrite would destroy the model being evaluated) nor a report this run
    writes (the report would be lost under the JSON)."""
    from oncolens.appliance.bundle import MODEL_SUFFIXES
    target = os.path.realpath(path)
    for model_dir, out, prefix in plans:
        if os.path.dirname(target) == os.path.realpath(model_dir) and (
                os.path.basename(target) in ("model.json", "labels.txt") or
                target.lower().endswith(MODEL_SUFFIXES)):
            raise UsageError("--json {}: a file of the model {} being evaluated; expected "
                             "a .json file name of its own".format(path, model_dir))
        ours = [_report_path(out, prefix)] if out else []
        if out and len(plans) > 1:
            ours.append(os.path.join(out, "comparison.md"))
        if target in [os.path.realpath(p) for p in ours]:
            raise UsageError("--json {}: the report this run writes there; expected a .json "
                             "file name of its own".format(path))


def _print_summary(report):
    from oncolens.train.data_cli import echo
    from oncolens.train.evaluate import precision_text, recall_text
    echo("{}: accuracy {:.4f}  balanced accuracy {:.4f}  macro-F1 {:.4f}  ROC-AUC {}  "
         "ECE {:.4f}  ({})".format(
             report["model_dir"], report["accuracy"], report["balanced_accuracy"],
             report["macro_f1"], "n/a" if report["roc_auc_macro"] is None else
             "{:.4f}".format(report["roc_auc_macro"]), report["ece"],
             plural(report["count"], "image")))
    ci = report.get("ci")
    if ci:
        echo("  95% CI ({}): accuracy {:.3f}-{:.3f}  macro-F1 {}".format(
            "exact" if ci.get("note") else "bootstrap", ci["accuracy"][0], ci["accuracy"][1],
            "{:.3f}-{:.3f}".format(*ci["macro_f1"]) if ci["macro_f1"] else "n/a"))
        if ci.get("note"):
            echo("  ({})".format(ci["note"]))
    if "ece_without_temperature" in report:
        echo("  ECE {:.4f} before temperature scaling (T = {:.3f}, fitted on val/ at "
             "training)".format(report["ece_without_temperature"], report["temperature"]))
    for label in report["labels"]:
        row = report["per_class"][label]
        echo("  {:12s} precision {}  recall {}  F1 {:.3f}  support {}".format(
            label, precision_text(report, label), recall_text(row), row["f1"], row["support"]))
    for failure in report["failed"]:
        echo("  {}: {}: {}".format("not scored" if failure.get("scored") is False else
                                   "unreadable", failure["path"],
                                   reason_of(failure["path"], failure["error"])))


def _evaluate_each(plans, args):
    """(reports, models not evaluated): with several --model-dir, a model that cannot be
    evaluated (a broken folder, a class folder it does not know) is recorded and the others
    go on; a single model's error ends the run as before."""
    from oncolens.train.data_cli import echo
    from oncolens.train.evaluate import absent_note, evaluate_dir, not_held_out
    reports, not_evaluated, cleared = [], [], set()
    for model_dir, out, prefix in plans:
        try:
            report = evaluate_dir(model_dir, args.split_dir, args.backend, bins=args.bins,
                                  bootstrap=args.bootstrap)
        except OncoLensError as exc:
            if len(plans) == 1:
                raise
            echo("{}: not evaluated: {}".format(os.path.abspath(model_dir), exc))
            not_evaluated.append({"model_dir": os.path.abspath(model_dir), "error": str(exc)})
            continue
        _print_summary(report)
        for note in (not_held_out(report), absent_note(report)):
            if note:
                log.warning("%s", note)
        if out:
            echo("report: {}".format(_write_outputs(report, out, prefix, args.overwrite,
                                                        cleared)))
        reports.append(report)
    return reports, not_evaluated


@cli_entry("oncolens evaluate")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    from oncolens.train.data_cli import echo, write_json
    from oncolens.train.evaluate import public
    from oncolens.train.report import comparison_markdown
    plans = check_args(args)
    reports, not_evaluated = _evaluate_each(plans, args)
    if len(plans) > 1 and reports:
        table = comparison_markdown(reports, not_evaluated)
        echo("")
        echo(table)
        if args.out:
            _write_text(os.path.join(args.out, "comparison.md"), table)
    if args.json and reports:
        payload = public(reports[0]) if len(plans) == 1 else \
            {"models": [public(r) for r in reports], "not_evaluated": not_evaluated}
        write_json(args.json, payload)
        echo("metrics: {}".format(args.json))
    failed = sum(len(r["failed"]) for r in reports)
    unscored = sum(1 for r in reports for f in r["failed"] if f.get("scored") is False)
    if failed and not unscored:
        sys.stderr.write("oncolens evaluate: error: {} could not be read (listed above as "
                         "'unreadable'); the figures leave them out\n".format(
                             plural(failed, "image")))
    elif failed:
        sys.stderr.write("oncolens evaluate: error: {} could not be read or scored (listed "
                         "above as 'unreadable' or 'not scored'); the figures leave them "
                         "out\n".format(plural(failed, "image")))
    if not_evaluated:
        sys.stderr.write("oncolens evaluate: error: {} of {} could not be evaluated "
                         "(listed above as 'not evaluated'){}\n".format(
                             len(not_evaluated), plural(len(plans), "model"),
                             "" if reports else "; nothing was written"))
    return 1 if failed or not_evaluated else 0
