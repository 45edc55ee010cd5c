"""Markdown reports for ``oncolens evaluate``: one model, or a comparison of several."""
from urllib.parse import quote

from oncolens.appliance.errors import plural, reason_of
from oncolens.train.evaluate import absent_note, not_held_out, precision_text, recall_text


def _fmt(value, digits=3):
    if value is None:
        return "n/a"
    return "{:.{}f}".format(value, digits)


def _ci_range(report, key):
    """'low-high' of the report's interval for ``key``, or None (no intervals, or none for
    ``key``: macro-F1 where every image is right, or none is)."""
    ci = report.get("ci")
    return "{}-{}".format(_fmt(ci[key][0]), _fmt(ci[key][1])) if ci and ci[key] else None


def _ci(report, key):
    """' (95% CI low-high)', ' (95% CI n/a)' where the intervals have none for ``key``, or
    nothing when the report has no intervals."""
    if not report.get("ci"):
        return ""
    return " (95% CI {})".format(_ci_range(report, key) or "n/a")


def _temperature(report):
    """The ECE before the temperature fitted at training time, where one was."""
    if "ece_without_temperature" not in report:
        return ""
    return " ({} before temperature scaling; T = {:.3f}, fitted on val/ at training)".format(
        _fmt(report["ece_without_temperature"]), report["temperature"])


FAILED_SHOWN = 20  # the images report.md names; the printout and --json name every one


def _failed_lines(failed):
    """The images left out of the figures, as the printout lists them (``unreadable`` or
    ``not scored``, path, reason): the first FAILED_SHOWN, then how many more."""
    lines = ["", "Unreadable images (skipped): {}".format(len(failed)), ""]
    for failure in failed[:FAILED_SHOWN]:
        lines.append("- {}: `{}`: {}".format(
            "not scored" if failure.get("scored") is False else "unreadable",
            failure["path"], reason_of(failure["path"], failure["error"])))
    if len(failed) > FAILED_SHOWN:
        lines.append("- and {} more (the printout and `--json` name every one)".format(
            len(failed) - FAILED_SHOWN))
    return lines


def model_markdown(report, pngs=None):
    labels = report["labels"]
    lines = ["# Evaluation: {}".format(report["model_dir"]), ""]
    warning = not_held_out(report)
    if warning:
        lines += ["**Warning: not held-out.** {}.".format(warning[0].upper() + warning[1:]), ""]
    if absent_note(report):
        lines += ["**Note:** {}.".format(absent_note(report)), ""]
    lines += ["- split: `{}` ({})".format(report["split_dir"], plural(report["count"], "image")),
             "- model: {} at {} px, run by {}".format(report["arch"], report["resolution"],
                                                      report["runner"]),
             "- accuracy **{}**{}, macro-F1 **{}**{}, balanced accuracy {}, macro ROC-AUC "
             "(one-vs-rest) {}, expected calibration error {}".format(
                 _fmt(report["accuracy"]), _ci(report, "accuracy"), _fmt(report["macro_f1"]),
                 _ci(report, "macro_f1"), _fmt(report["balanced_accuracy"]),
                 _fmt(report["roc_auc_macro"]), _fmt(report["ece"])) + _temperature(report),
             "",
             "| class | precision | recall | F1 | ROC-AUC | support |",
             "|---|---|---|---|---|---|"]
    for label in labels:
        row = report["per_class"][label]
        lines.append("| {} | {} | {} | {} | {} | {} |".format(
            label, precision_text(report, label), recall_text(row), _fmt(row["f1"]),
            _fmt(row["roc_auc"]), row["support"]))
    if report.get("ci"):
        lines += ["", "The intervals are percentile bootstrap intervals over the {} "
                  "({} rounds): how far the figure could move on another sample of this "
                  "size.".format(plural(report["count"], "image"), report["ci"]["rounds"])]
        if report["ci"].get("note"):
            lines[-1] += " Here {}.".format(report["ci"]["note"])
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", "",
              "| true \\ predicted | " + " | ".join(labels) + " |",
              "|---" * (len(labels) + 1) + "|"]
    for label, row in zip(labels, report["confusion_matrix"]):
        lines.append("| {} | {} |".format(label, " | ".join(str(v) for v in row)))
    if report.get("failed"):
        lines += _failed_lines(report["failed"])
    for png in pngs or []:  # a link with a space, '(' or ')' in it would not render
        lines += ["", "![{}]({})".format(png, quote(png.encode("utf-8", "surrogateescape")))]
    return "\n".join(lines) + "\n"


def _names(reports):
    """Each model's folder name, or its whole path where two models share a name."""
    names = [r["model_dir"].rstrip("/").split("/")[-1] for r in reports]
    return [r["model_dir"] if names.count(n) > 1 else n for r, n in zip(reports, names)]


def comparison_markdown(reports, not_evaluated=()):
    """One row per model: the table that sets a baseline against transfer learning. A recall
    column for every class of any model (n/a for a model without it); the models that could
    not be evaluated are listed under it."""
    labels = []
    for r in reports:
        labels += [l for l in r["labels"] if l not in labels]
    head = ["model", "arch", "px", "accuracy", "macro-F1", "95% CI", "ROC-AUC", "ECE"] + \
        ["recall {}".format(l) for l in labels] + ["train s"]
    counts = sorted(set(r["count"] for r in reports))
    lines = ["On `{}` ({}):".format(reports[0]["split_dir"], plural(counts[0], "image") if
                                    len(counts) == 1 else "{} images".format(
                                        ", ".join(str(c) for c in counts))), "",
        "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r, name in zip(reports, _names(reports)):
        cells = [name, str(r["arch"]), str(r["resolution"]),
                 _fmt(r["accuracy"]), _fmt(r["macro_f1"]), _ci_range(r, "macro_f1") or "n/a",
                 _fmt(r["roc_auc_macro"]), _fmt(r["ece"])]
        cells += [recall_text(r["per_class"][l]) if l in r["per_class"] else "n/a"
                  for l in labels]
        cells.append(str(r.get("training", {}).get("train_seconds", "n/a")))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [not_held_out(r) for r in reports if not_held_out(r)]
    if notes:
        lines += [""] + ["Warning: not held-out: {}.".format(note) for note in notes]
    absent = sorted(set(sum((r.get("absent_classes") or [] for r in reports), [])))
    if absent:
        lines += ["", "Note: the split has no images of {}: recall n/a.".format(
            ", ".join(absent))]
    if not_evaluated:
        lines += [""] + ["Not evaluated: {} ({}).".format(f["model_dir"], f["error"])
                         for f in not_evaluated]
    return "\n".join(lines) + "\n"
