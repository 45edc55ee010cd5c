"""PNG figures for ``oncolens evaluate`` (matplotlib, imported only here)."""
import logging
import os
import textwrap

import numpy as np

from oncolens.train import metrics

log = logging.getLogger(__name__)


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: no PNG figures (pip install matplotlib)")
        return None
    return plt


def confusion_png(report, path):
    plt = _plt()
    if plt is None:
        return None
    cm = np.asarray(report["confusion_matrix"])
    labels = report["labels"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2.0 else "black")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix")
    return _save(plt, fig, path)


def roc_png(report, path):
    """One-vs-rest ROC curves; a class whose curve is undefined (the split has no image of
    it, or none of any other class) is named in the title instead, and with no curve at all
    there is no legend to draw."""
    plt = _plt()
    if plt is None:
        return None
    probs, targets = report["_probs"], report["_targets"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    drawn = 0
    for i, label in enumerate(report["labels"]):
        auc = report["per_class"][label]["roc_auc"]
        if auc is None:
            continue
        fpr, tpr = metrics.roc_curve(targets == i, probs[:, i])
        ax.plot(fpr, tpr, label="{} (AUC {:.3f})".format(label, auc))
        drawn += 1
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("\n".join(["ROC, one vs rest"] + roc_undefined(report)), fontsize=9)
    if drawn:
        ax.legend(loc="lower right")
    return _save(plt, fig, path)


def roc_undefined(report, width=58):
    """Lines naming the classes without a ROC curve, and why: the split has no image of
    them (no positives), or only images of them (no negatives)."""
    rows = report["per_class"]
    undefined = [l for l in report["labels"] if rows[l]["roc_auc"] is None]
    absent = [l for l in undefined if not rows[l]["support"]]
    only = [l for l in undefined if rows[l]["support"]]
    lines = []
    if absent:
        lines.append("ROC undefined for {}: the split has no image of {}".format(
            ", ".join(absent), "it" if len(absent) == 1 else "them"))
    if only:
        lines.append("ROC undefined for {}: the split has no image of another class".format(
            ", ".join(only)))
    return sum((textwrap.wrap(line, width) for line in lines), [])


def reliability_png(report, path):
    plt = _plt()
    if plt is None:
        return None
    bins = [b for b in report["reliability"] if b["count"]]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    width = report["reliability"][0]["high"] - report["reliability"][0]["low"]
    ax.bar([b["low"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge",
           edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8, label="perfect calibration")
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability (ECE {:.3f})".format(report["ece"]))
    ax.legend(loc="upper left")
    return _save(plt, fig, path)


def _save(plt, fig, path):
    """Saved beside ``path`` and moved there when whole: Ctrl-C midway leaves no half PNG."""
    from oncolens.appliance.outpaths import replace_file
    fig.tight_layout()
    try:
        replace_file(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)
    return path


FIGURES = ("confusion", "roc", "reliability")  # each written as <prefix><name>.png


def all_figures(report, out_dir, prefix=""):
    """confusion, ROC and reliability PNGs in ``out_dir``; the paths written."""
    written = []
    for name, func in zip(FIGURES, (confusion_png, roc_png, reliability_png)):
        path = func(report, os.path.join(out_dir, "{}{}.png".format(prefix, name)))
        if path:
            written.append(path)
    return written
