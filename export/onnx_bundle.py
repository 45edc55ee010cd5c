"""The model.json (and labels.txt) an ONNX export writes into its model folder.

The checkpoint is the truth for the architecture, classes and resolution where it records
them; a model.json already in the folder gives the rest. That model.json must be this
model's: one that records another checkpoint, or disagrees with this one, is another
model's bundle (``export onnx`` run in the wrong folder) and is only rewritten with
--overwrite. A model.json or labels.txt made read-only is never rewritten.
"""
import logging
import os

from oncolens.appliance.bundle import (LABELS_TXT, MODEL_JSON, new_model_info, read_labels,
                                       read_model_info)
from oncolens.appliance.errors import BundleError, UsageError, plural
from oncolens.appliance.outpaths import check_not_read_only
from oncolens.appliance.preprocess import checkpoint_preprocess

log = logging.getLogger(__name__)


def bundle_info_for(model_dir, ckpt, checkpoint_path, checkpoint_sha, overwrite=False):
    """(the model.json to write, where its labels came from: the checkpoint, model.json or a
    labels.txt). It is checked, before any work, to be this model's unless ``overwrite``,
    and writable; a disagreement it is rewritten for is a warning naming both sides."""
    json_path = os.path.join(model_dir, MODEL_JSON)
    source = checkpoint_path if ckpt.get("classes") else json_path
    if os.path.isfile(json_path):
        check_not_read_only(json_path, "this export")
        info = read_model_info(json_path)
        if not overwrite:
            check_same_model(info, ckpt, checkpoint_path, checkpoint_sha, json_path)
        info = _reconcile(info, ckpt, checkpoint_path, json_path)
    else:
        classes, source = checkpoint_classes(ckpt, checkpoint_path, model_dir)
        res = int(ckpt.get("resolution") or 224)
        info = new_model_info(ckpt["arch"], classes, res,
                              checkpoint_preprocess(ckpt, res))
    labels_path = os.path.join(model_dir, LABELS_TXT)
    if labels_or_none(labels_path) != info["labels"]:  # rewritten by the export
        check_not_read_only(labels_path, "this export")
    return info, source


def checkpoint_classes(ckpt, checkpoint_path, model_dir):
    """The classes of a checkpoint exported into a folder without model.json: its own, or,
    where it records none (jetson-inference's train.py before December 2022), those of a
    labels.txt beside it or in the model folder, one a line in output order, as many as
    its ``num_classes``; with the file they came from."""
    if ckpt.get("classes"):
        return list(ckpt["classes"]), checkpoint_path
    places = []
    for folder in (os.path.dirname(os.path.abspath(checkpoint_path)), model_dir):
        path = os.path.join(folder, LABELS_TXT)
        if os.path.isfile(path) and not any(os.path.samefile(path, p) for p in places):
            places.append(path)
    if not places:
        folders = [os.path.normpath(os.path.dirname(checkpoint_path) or "."),
                   os.path.normpath(model_dir)]
        where = folders[0] if folders[0] == folders[1] else " or ".join(folders)
        raise UsageError("{}: the checkpoint has no 'classes' (jetson-inference's train.py "
                         "before December 2022 recorded none) and {} has no model.json: put a "
                         "labels.txt in {}, one class a line, in output order (the dataset's, "
                         "as imagenet --labels takes it)".format(checkpoint_path, model_dir,
                                                                 where))
    found = [read_labels(path) for path in places]
    if len(found) > 1 and found[0] != found[1]:
        raise UsageError("{} and {} list different classes ({}; {}) for {}, which records "
                         "none: expected one labels.txt, in output order".format(
                             places[0], places[1], ", ".join(found[0]), ", ".join(found[1]),
                             checkpoint_path))
    outputs = int(ckpt.get("num_classes") or len(found[0]))
    if len(found[0]) != outputs:
        raise UsageError("{} lists {} ({}) but {} has {}: expected one class a line, in "
                         "output order".format(places[0], plural(len(found[0]), "class"),
                                               ", ".join(found[0]), checkpoint_path,
                                               plural(outputs, "output")))
    log.info("%s records no 'classes' (jetson-inference's train.py before December 2022): "
             "taking its %s from %s", checkpoint_path, plural(outputs, "class"), places[0])
    return found[0], places[0]


def recorded_checkpoints(info):
    """(file, SHA-256) of each checkpoint model.json records: the training run's
    (``checkpoint``) and the last export's (``onnx.checkpoint``)."""
    training, onnx = info.get("checkpoint") or {}, info.get("onnx") or {}
    return [(name, sha) for name, sha in ((training.get("file"), training.get("sha256")),
                                          (onnx.get("checkpoint"), onnx.get("checkpoint_sha256")))
            if sha]


def differences(info, ckpt):
    """(what, model.json's, the checkpoint's) for the arch, classes and resolution where the
    checkpoint records another than model.json."""
    found = []
    classes = ckpt.get("classes")
    if classes and list(classes) != info["labels"]:
        found.append(("classes", info["labels"], list(classes)))
    res = ckpt.get("resolution")
    shape = info["input"]["shape"]
    if res and [int(res), int(res)] != list(shape[1:]):
        found.append(("resolution", "{}x{}".format(shape[1], shape[2]),
                      "{0}x{0}".format(int(res))))
    if ckpt["arch"] != info["arch"]:
        found.append(("arch", info["arch"], ckpt["arch"]))
    return found


def check_same_model(info, ckpt, checkpoint_path, checkpoint_sha, json_path):
    """Refuse (one line) a model.json that is not this checkpoint's: it records other
    checkpoints only, or (recording none) another arch, classes or resolution."""
    recorded = recorded_checkpoints(info)
    if checkpoint_sha in [sha for _, sha in recorded]:
        return
    if recorded:
        name, sha = recorded[0]
        why = "records another checkpoint ({}, SHA-256 {}...) than {} (SHA-256 {}...)".format(
            name or "?", sha[:12], checkpoint_path, checkpoint_sha[:12])
    else:
        found = differences(info, ckpt)
        if not found:
            return
        why = "describes another model than {}: {}".format(checkpoint_path, "; ".join(
            "{} {} (the checkpoint's: {})".format(what, ours, theirs)
            for what, ours, theirs in found))
    raise UsageError("{} {}: another model's bundle, or this folder's before it was trained "
                     "again; pass --overwrite to rewrite it (and labels.txt) for this "
                     "export, or give --model-dir a folder of its own".format(json_path, why))


def _reconcile(info, ckpt, checkpoint_path, json_path):
    """model.json's ``info`` with the checkpoint's arch, classes and resolution."""
    classes = ckpt.get("classes")
    if not classes and ckpt.get("num_classes") and \
            int(ckpt["num_classes"]) != len(info["labels"]):
        raise UsageError("{} has {} but {} lists {} ({}): the model.json of "
                         "another model?".format(checkpoint_path,
                                                 plural(int(ckpt["num_classes"]), "output"),
                                                 json_path, plural(len(info["labels"]), "class"),
                                                 ", ".join(info["labels"])))
    for what, ours, theirs in differences(info, ckpt):
        log.warning("%s: %s %s, but %s says %s: exporting with the checkpoint's (model.json "
                    "is rewritten to match)", checkpoint_path, what, theirs, json_path, ours)
    if classes:
        info["labels"], info["num_classes"] = list(classes), len(classes)
    res = ckpt.get("resolution")
    if res:
        info["input"]["shape"] = [info["input"]["shape"][0], int(res), int(res)]
    info["arch"] = ckpt["arch"]
    return info


def labels_or_none(path):
    """The labels of ``path``, or None when there is none or it cannot be read."""
    if not os.path.isfile(path):
        return None
    try:
        return read_labels(path)
    except BundleError:
        return None
