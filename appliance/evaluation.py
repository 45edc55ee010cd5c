"""Ground truth from folder names, and the metrics of a batch run (table, JSON, PNG).

A file's ground truth is the nearest of its folders inside the input that is named after one
of the model's labels (compared without regard to case): ``test/malignant/x.png`` and
``test/malignant/patient7/x.png`` under ``test`` are malignant.  When none is, the input
folder's own name counts (a class folder given as the input, ``test/malignant``, or a glob
inside one).
"""
import json
import os

import numpy as np

from oncolens.appliance.errors import plural
from oncolens.appliance.outpaths import replace_text


def input_folder(uri):
    """The folder an input's relative names start from: a folder itself, a file's folder
    (also when a folder above it is named with a wildcard character, ``scans [2024]/x.png``:
    it is a file, not a glob), a glob's part before its first wildcard."""
    from oncolens.appliance.sources import glob_base
    if os.path.isdir(uri):
        return uri
    if not os.path.isfile(uri) and any(ch in uri for ch in "*?["):
        return glob_base(uri)
    return os.path.dirname(uri) or "."


def truth_of(relpath, labels, input_name=None):
    """The label named by the nearest of ``relpath``'s folders, else by ``input_name`` (the
    input folder's own name), or None."""
    lowered = dict((label.lower(), label) for label in labels)
    folder = os.path.dirname(relpath)
    while folder:
        folder, name = os.path.split(folder)
        if name.lower() in lowered:
            return lowered[name.lower()]
    return lowered.get((input_name or "").lower())


def metrics_from_rows(rows, labels):
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix of
    the rows that have ground truth and a prediction (an image that could not be read has
    none: it counts as ``failed``; one whose annotated copy alone could not be written keeps
    its prediction and counts); None when there are none.

    ``absent_classes``: the labels no such row has as its truth (support 0), as ``oncolens
    evaluate`` lists them. Their recall is undefined (kept as 0.0 in the JSON, printed n/a);
    macro-F1 counts such a class only where it was predicted (F1 0), as evaluate does."""
    from oncolens.appliance.metrics import confusion_matrix, per_class, summary
    index = dict((label, n) for n, label in enumerate(labels))
    y_true, y_pred = [], []
    failed = 0
    for row in rows:
        if row.get("error") and not row.get("label"):
            failed += 1
            continue
        truth = row.get("truth")
        if truth in index and row.get("label") in index:
            y_true.append(index[truth])
            y_pred.append(index[row["label"]])
    if not y_true:
        return None
    result = summary(y_true, y_pred, len(labels))
    precision, recall, f1, support = per_class(confusion_matrix(y_true, y_pred, len(labels)))
    result["labels"] = list(labels)
    result["images"] = len(y_true)
    result["failed"] = failed
    result["per_class"] = dict((label, {"precision": float(precision[n]),
                                        "recall": float(recall[n]), "f1": float(f1[n]),
                                        "support": int(support[n])})
                               for n, label in enumerate(labels))
    result["absent_classes"] = [label for n, label in enumerate(labels) if not support[n]]
    return result


def no_metrics_reason(rows, labels):
    """Why ``rows`` (which metrics_from_rows found none in; read once, as they come) have no
    metrics: no image was scored (every one failed: unreadable, or the model's output not a
    number), none with ground truth was, or no image has ground truth at all."""
    known = set(label.lower() for label in labels)
    scored = failed = failed_with_truth = 0
    for row in rows:
        if row.get("label"):
            scored += 1
            continue
        failed += 1
        failed_with_truth += (row.get("truth") or "").lower() in known
    if not scored:
        return "no image was scored ({} failed): no metrics".format(
            "all {}".format(failed) if failed > 1 else plural(failed, "image"))
    if failed_with_truth:
        return "no image with ground truth was scored ({} with ground truth failed): no " \
            "metrics".format(plural(failed_with_truth, "image"))
    return "no ground truth (neither a folder inside the input nor the input folder is named " \
        "after a label): no metrics"


def undefined_recall(absent):
    """What batch and evaluate both say of the classes ``absent`` from the truth."""
    it, its = ("it", "its") if len(absent) == 1 else ("them", "their")
    return "{} recall is undefined (n/a); macro-F1 counts {} only where the model predicted " \
        "{} (F1 0)".format(its, it, it)


def never_predicted(m):
    """The labels the model predicted for no image (a confusion-matrix column of zeros): their
    precision is 0/0, undefined. The JSON keeps scikit-learn's 0.0; tables print n/a."""
    cm = m["confusion_matrix"]
    return [label for k, label in enumerate(m["labels"]) if not any(row[k] for row in cm)]


def absent_note(m):
    """One line when some of the model's classes have no image with ground truth, else None."""
    absent = m.get("absent_classes")
    if not absent:
        return None
    return "note: none of the images with ground truth is {}: {}".format(
        " or ".join(absent), undefined_recall(absent))


def format_metrics(m):
    """The metrics as a few lines of text for the console."""
    labels = m["labels"]
    width = max(8, max(len(label) for label in labels) + 1)
    lines = ["accuracy {:.4f}   macro-F1 {:.4f}   ({} with ground truth)".format(
        m["accuracy"], m["macro_f1"], plural(m["images"], "image")), "",
        "confusion matrix (rows: true class, columns: predicted)",
        " " * width + "".join(label[:width - 1].rjust(width) for label in labels)]
    for label, row in zip(labels, m["confusion_matrix"]):
        lines.append(label[:width - 1].ljust(width) + "".join(str(v).rjust(width) for v in row))
    lines.append("")
    lines.append("class".ljust(width) + "precision".rjust(11) + "recall".rjust(9) +
                 "F1".rjust(9) + "support".rjust(9))
    unpredicted = never_predicted(m)
    for label in labels:
        pc = m["per_class"][label]
        recall = "{:9.4f}".format(pc["recall"]) if pc["support"] else "n/a".rjust(9)
        precision = "n/a" if label in unpredicted else "{:.4f}".format(pc["precision"])
        lines.append(label[:width - 1].ljust(width) + "{:>11}{}{:9.4f}{:9d}".format(
            precision, recall, pc["f1"], pc["support"]))
    note = absent_note(m)
    if note:
        lines += ["", note]
    if unpredicted:
        lines += ["note: the model predicted none of the images as {}: precision is undefined "
                  "(n/a)".format(" or ".join(unpredicted))]
    return "\n".join(lines)


def write_metrics_json(path, m):
    replace_text(path, json.dumps(m, indent=2, sort_keys=True) + "\n")


def confusion_image(m, cell=84):
    """An RGB picture of the confusion matrix: row-normalised shading, counts written in."""
    import cv2
    labels = m["labels"]
    cm = np.asarray(m["confusion_matrix"], dtype=np.float64)
    n = len(labels)
    margin = 16 + 9 * max(len(label) for label in labels)
    h, w = margin + n * cell + 10, margin + n * cell + 10
    img = np.full((h, w, 3), 255, dtype=np.uint8)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    for r in range(n):
        for c in range(n):
            y, x = margin + r * cell, margin + c * cell
            shade = int(255 - 200 * share[r, c])
            cv2.rectangle(img, (x, y), (x + cell - 1, y + cell - 1), (shade, shade, 255), -1)
            cv2.rectangle(img, (x, y), (x + cell - 1, y + cell - 1), (120, 120, 120), 1)
            colour = (255, 255, 255) if share[r, c] > 0.6 else (0, 0, 0)
            cv2.putText(img, str(int(cm[r, c])), (x + 8, y + cell // 2 + 6), 0, 0.6, colour, 1,
                        cv2.LINE_AA)
    for k, label in enumerate(labels):
        cv2.putText(img, label, (4, margin + k * cell + cell // 2 + 5), 0, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cv2.putText(img, label[:int(cell / 9)], (margin + k * cell + 2, margin - 6), 0, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "true \\ predicted", (4, 14), 0, 0.4, (80, 80, 80), 1, cv2.LINE_AA)
    return img
