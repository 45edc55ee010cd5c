"""Per-epoch history: ``history.csv`` and PNG curves of loss and metrics (matplotlib, lazily)."""
import csv
import logging
import os

from oncolens.appliance.outpaths import replace_file

log = logging.getLogger(__name__)

HISTORY_CSV = "history.csv"
CURVES_PNG = "curves.png"
FIELDS = ["epoch", "lr", "train_loss", "val_loss", "val_accuracy", "val_macro_f1",
          "epoch_seconds", "images_per_second", "best"]


def read_history(model_dir):
    path = os.path.join(model_dir, HISTORY_CSV)
    if not os.path.isfile(path):
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh))


def write_history(model_dir, rows):
    """Rewrite history.csv (rows are dicts with FIELDS)."""
    path = os.path.join(model_dir, HISTORY_CSV)

    def write(tmp):
        with open(tmp, "w") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow(row)
    replace_file(path, write)  # Ctrl-C, a full disk: the earlier history.csv stays, alone
    return path


def _cell(value):
    """A history.csv cell: five decimals, or empty where nothing was measured."""
    return "" if value is None else "{:.5f}".format(value)


def val_text(loss, summary):
    """The validation part of an epoch's log line."""
    if loss is None:
        return "no val (--final-fit)"
    return "val loss {:.4f}  acc {:.4f}  macro-F1 {:.4f}".format(
        loss, summary["accuracy"], summary["macro_f1"])


def history_row(epoch, lr, train_loss, val_loss, summary, seconds, ips, is_best):
    """One epoch's row of history.csv."""
    return {"epoch": epoch, "lr": "{:.6g}".format(lr), "train_loss": "{:.5f}".format(train_loss),
            "val_loss": _cell(val_loss), "val_accuracy": _cell(summary["accuracy"]),
            "val_macro_f1": _cell(summary["macro_f1"]), "epoch_seconds": "{:.1f}".format(seconds),
            "images_per_second": "{:.1f}".format(ips), "best": int(is_best)}


def plot_history(model_dir, rows):
    """curves.png: loss (train, val) and val accuracy / macro-F1 per epoch (the learning rate
    when nothing was validated); None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed: no %s (pip install matplotlib)", CURVES_PNG)
        return None
    if not rows:
        return None
    epochs = [int(r["epoch"]) for r in rows]

    def col(name):
        return [float(r[name]) if r.get(name) else float("nan") for r in rows]

    validated = any(r.get("val_loss") for r in rows)  # none under --final-fit
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, col("train_loss"), label="train loss")
    if validated:
        ax1.plot(epochs, col("val_loss"), label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_title("loss")
    ax1.legend()
    if validated:
        ax2.plot(epochs, col("val_accuracy"), label="val accuracy")
        ax2.plot(epochs, col("val_macro_f1"), label="val macro-F1")
        ax2.set_ylim(0, 1)
        ax2.set_title("validation")
    else:
        ax2.plot(epochs, col("lr"), label="learning rate")
        ax2.set_title("no validation (--final-fit): learning rate")
    ax2.set_xlabel("epoch")
    ax2.legend()
    fig.tight_layout()
    path = os.path.join(model_dir, CURVES_PNG)
    try:  # beside it, then moved there whole: a stop midway leaves the earlier curves.png
        replace_file(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)
    return path
