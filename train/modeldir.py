"""What a model folder holds, and what ``oncolens train --overwrite`` clears out of it.

A training run writes the checkpoints, ``labels.txt``, ``model.json``, ``history.csv`` and
``curves.png``. Later commands derive more from that model, and those files describe the
model that is being replaced, so ``--overwrite`` removes them (and says which):

- ``oncolens export onnx``: the ONNX ``model.json`` records (``--output``) and ``<arch>.onnx``
  of the arch it records; any other ``*.onnx`` (a file of the user's) is left, with a warning;
- ``oncolens export engine``: engines of those ONNX files, named
  ``<model>.onnx.<batch>.<fallback>.<TensorRT>.<device>.<precision>.engine``, and their int8
  ``.calibration`` caches;
- ``oncolens bench`` / ``classify``: ``variants/`` (dynamic-batch and int8 copies);
- ``oncolens selftest``: ``selftest/``;
- ``oncolens evaluate``: ``eval-<split>/`` (report.md and its figures).

A folder is only removed when everything in it is what OncoLens writes there; anything else
is left, with a warning.
"""
import io
import json
import logging
import os
import shutil

from oncolens.appliance.bundle import LABELS_TXT, MODEL_JSON
from oncolens.appliance.engines import parse_engine_name

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"
TRAIN_FILES = (CHECKPOINT, BEST, LABELS_TXT, MODEL_JSON, "history.csv", "curves.png")
EVAL_FILES = ("report.md", "confusion.png", "roc.png", "reliability.png")
SELFTEST_FILES = ("selftest.json", "selftest.md")


def _is_engine(name):
    if name.endswith(".calibration"):
        name = name[:-len(".calibration")] + ".engine"
    return parse_engine_name(name) is not None


def _owned_folder(model_dir, name):
    """True for a sub-folder that only holds what OncoLens writes under that name."""
    path = os.path.join(model_dir, name)
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    entries = os.listdir(path)
    if name == "variants":
        return all(e.endswith((".onnx", ".json")) for e in entries)
    if name == "selftest":
        return set(entries) <= set(SELFTEST_FILES)
    if name.startswith("eval-"):
        return set(entries) <= set(EVAL_FILES)
    return False


def model_files(model_dir):
    """The names in ``model_dir`` that make it a model folder (train's files, exports)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(n for n in os.listdir(model_dir)
                  if n in TRAIN_FILES or n.endswith(".onnx") or _is_engine(n))


def recorded_info(model_dir):
    """The folder's model.json as it stands (before training rewrites it), or {} when there
    is none or it cannot be read."""
    try:
        with io.open(os.path.join(model_dir, MODEL_JSON), "r", encoding="utf-8") as fh:
            info = json.load(fh)
    except (IOError, OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _exports(model_dir):
    """The ONNX files of the model in ``model_dir``: the one model.json records and
    ``<arch>.onnx`` of its arch (paths relative to the folder)."""
    info = recorded_info(model_dir)
    names = set()
    if isinstance(info.get("onnx"), dict) and info["onnx"].get("file"):
        name = os.path.normpath(info["onnx"]["file"])
        if not os.path.isabs(name) and not name.startswith(os.pardir):  # inside the folder
            names.add(name)
    if info.get("arch"):
        names.add("{}.onnx".format(info["arch"]))
    return names


def _derived_file(name, exports):
    if name.endswith(".onnx"):
        return name in exports
    if _is_engine(name):
        stem = name[:-len(".calibration")] + ".engine" if name.endswith(".calibration") else name
        return parse_engine_name(stem)["model"] in exports
    return False


def derived_artefacts(model_dir):
    """(files, folders, kept) derived from the model in ``model_dir``; ``kept``: the other
    ONNX files and the folders that hold anything else, with why each is left."""
    files, folders, kept = [], [], []
    exports = _exports(model_dir)
    for name in [n for n in exports if os.sep in n]:  # an --output in a sub-folder
        if os.path.isfile(os.path.join(model_dir, name)):
            files.append(name)
    for name in sorted(os.listdir(model_dir)):
        path = os.path.join(model_dir, name)
        if os.path.isfile(path) and _derived_file(name, exports):
            files.append(name)
        elif os.path.isfile(path) and name.endswith(".onnx"):
            kept.append((path, "model.json does not name it as this model's export"))
        elif name in ("variants", "selftest") or name.startswith("eval-"):
            if _owned_folder(model_dir, name):
                folders.append(name)
            elif os.path.isdir(path):
                kept.append((path, "it holds files OncoLens did not write there"))
    return files, folders, kept


def remove_derived(model_dir):
    """Remove what was derived from the model being replaced; returns the names removed."""
    if not os.path.isdir(model_dir):
        return []
    files, folders, kept = derived_artefacts(model_dir)
    for path, why in kept:
        log.warning("--overwrite: left %s in place: %s", path, why)
    for name in files:
        os.remove(os.path.join(model_dir, name))
    for name in folders:
        shutil.rmtree(os.path.join(model_dir, name))
    removed = files + [n + "/" for n in folders]
    if removed:
        log.info("--overwrite: removed the previous model's %s from %s", ", ".join(removed),
                 model_dir)
    return removed
