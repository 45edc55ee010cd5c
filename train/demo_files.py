"""What an earlier ``oncolens demo`` wrote in its folder, and what else that folder holds.

``oncolens demo --overwrite`` replaces an earlier demo's folder only when it holds nothing
but what the demo wrote: a file or folder of the user's anywhere inside (``annotated/``,
``model/``, ``data/`` or beside them) is named and nothing at all is removed.
"""
import io
import json
import os

from oncolens.appliance.bundle import read_labels
from oncolens.appliance.classify_copies import RECORD
from oncolens.appliance.errors import BundleError, UsageError
from oncolens.appliance.outpaths import temp_target
from oncolens.train.modeldir import TRAIN_FILES
from oncolens.train.split import made_by
from oncolens.train.synth import CLASSES, SPLITS

DEMO_OUTPUTS = ("data", "model", "annotated", "test_predictions.txt")
DEMO_ARCH = "resnet18"  # what the demo trains and exports
SYNTH_FILES = ("labels.txt", "README.md", "SYNTHETIC.json")
# A run stopped midway leaves only outpaths.temp_path's files beside the file it was writing,
# which others_in counts as the demo's by their name (temp_target): .<name>.<random>.tmp
# (train, model.json, the annotated images) and the export's ONNX,
# .<arch>.onnx.<random>.unchecked.onnx until it is checked. Nothing the demo runs writes a
# fixed '<name>.tmp' or '<name>.part' any more: a file of those names is the user's.


def _synth_record(data):
    try:
        with io.open(os.path.join(data, "SYNTHETIC.json"), "r", encoding="utf-8") as fh:
            record = json.load(fh)
    except (IOError, OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _classes(data):
    try:
        return read_labels(os.path.join(data, "labels.txt"))
    except (BundleError, IOError, OSError):
        return list(CLASSES)


def _count(value):
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def demo_files(out):
    """Paths (relative to ``out``) of every file the demo writes there, for the dataset that
    ``out/data/SYNTHETIC.json`` records."""
    data = os.path.join(out, "data")
    counts = _synth_record(data).get("counts")
    counts = counts if isinstance(counts, dict) else {}
    files = {"test_predictions.txt", os.path.join("annotated", RECORD)}  # classify's record
    files.update(os.path.join("data", name) for name in SYNTH_FILES)
    for split in SPLITS:
        for cls in _classes(data):
            for n in range(_count(counts.get(split))):
                rel = os.path.join(cls, "{}_{}_{:04d}.png".format(cls, split, n))
                files.add(os.path.join("data", split, rel))
                if split == "test":  # classify keeps the input's name and sub-folder
                    files.add(os.path.join("annotated", rel))
    model = TRAIN_FILES + ("{}.onnx".format(DEMO_ARCH),)
    files.update(os.path.join("model", name) for name in model)
    return files


def _folders(files):
    folders = set(DEMO_OUTPUTS)
    for rel in files:
        parent = os.path.dirname(rel)
        while parent:
            folders.add(parent)
            parent = os.path.dirname(parent)
    return folders


def others_in(out):
    """What ``out`` holds that the demo did not write (relative paths, sorted): files,
    folders it does not make, and links of any kind (the demo writes none)."""
    files = demo_files(out)
    folders = _folders(files)
    others = []
    for parent, dirs, names in os.walk(out):
        base = os.path.relpath(parent, out)

        def rel(name):
            return os.path.normpath(os.path.join(base, name))

        links = [n for n in dirs + names if os.path.islink(os.path.join(parent, n))]
        others.extend(rel(n) for n in links)
        others.extend(rel(d) for d in dirs if d not in links and rel(d) not in folders)
        others.extend(rel(n) for n in names if n not in links and rel(n) not in files and
                      rel(temp_target(n) or n) not in files)
        dirs[:] = [d for d in dirs if d not in links and rel(d) in folders]
    return sorted(others)


def check_earlier_demo(out):
    """--overwrite: raise UsageError (naming what is not the demo's) unless ``out`` is an
    earlier demo's folder holding only what the demo wrote there."""
    if os.path.islink(out) or not os.path.isdir(out) or (
            os.listdir(out) and not made_by(os.path.join(out, "data"), "SYNTHETIC.json")):
        raise UsageError("--out {}: not an earlier demo's folder, so --overwrite will not "
                         "delete anything there: give another --out".format(out))
    others = others_in(out)
    if others:
        raise UsageError("--out {}: {}{} was not written by the demo, so --overwrite deletes "
                         "nothing: move it out of the folder, or give another --out".format(
                             out, os.path.join(out, others[0]),
                             " (and {} more)".format(len(others) - 1) if others[1:] else ""))
