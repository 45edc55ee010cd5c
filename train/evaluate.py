"""Evaluate a trained model folder on a class-folder split, as the appliance would see it.

The images go through the bundle's own preprocessing (model.json), and through the
appliance's ONNX backend when the folder holds an exported model; otherwise the PyTorch
checkpoint is run (``backend="torch"``).
"""
import logging
import os

import numpy as np

from oncolens.appliance.bundle import (LABELS_TXT, MODEL_JSON, read_labels, read_model_info,
                                       sha256_file)
from oncolens.appliance.errors import (BundleError, ImageReadError, UsageError, not_a_folder,
                                      plural)
from oncolens.appliance.evaluation import never_predicted, undefined_recall
from oncolens.appliance.imageio import list_folders, read_image
from oncolens.train import metrics
from oncolens.train.data import list_samples
from oncolens.train.scan import loose_images, loose_warning
from oncolens.train.temperature import without_temperature

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime")


class TorchRunner(object):
    """model_best.pth.tar + model.json preprocessing, on the CPU."""

    def __init__(self, model_dir, info):
        from oncolens.appliance.archs import load_checkpoint, model_from_checkpoint
        from oncolens.appliance.preprocess import Preprocessor
        ckpt_name = (info.get("checkpoint") or {}).get("file", "model_best.pth.tar")
        self.model = model_from_checkpoint(load_checkpoint(os.path.join(model_dir, ckpt_name)))
        self.pre = Preprocessor(info["preprocess"], info["input"]["shape"])

    def describe(self):
        return "torch checkpoint"

    def probs(self, batch):
        """Probabilities of a preprocessed float32 NCHW batch (``self.pre``'s)."""
        import torch
        with torch.no_grad():
            return torch.softmax(self.model(torch.from_numpy(batch)).float(), 1).numpy()

    def close(self):
        pass


class ApplianceRunner(object):
    """The appliance's Classifier (ONNX Runtime) on the exported model."""

    def __init__(self, model_dir, backend):
        from oncolens.appliance.classifier import Classifier
        self.clf = Classifier.open(model_dir, backend="auto" if backend == "auto" else backend)
        self.pre = self.clf.preprocessor

    def describe(self):
        return "appliance ({})".format(self.clf.backend.describe())

    def probs(self, batch):
        """Probabilities of a preprocessed float32 NCHW batch (``self.pre``'s)."""
        return np.asarray(self.clf.infer_tensor(batch).probs, dtype=np.float64)

    def close(self):
        self.clf.close()


def _recorded_checkpoint(model_dir, info):
    """(path, sha256 it had at export) of the checkpoint the ONNX was exported from."""
    onnx, trained = info.get("onnx") or {}, info.get("checkpoint") or {}
    name = onnx.get("checkpoint") or trained.get("file") or "model_best.pth.tar"
    expected = onnx.get("checkpoint_sha256")
    if expected is None and name == trained.get("file"):  # exports before the record existed
        expected = trained.get("sha256")
    return os.path.join(model_dir, name), expected


def stale_onnx(model_dir, info):
    """(ONNX path, why it does not come from the current checkpoint, or None); (None, None)
    when the folder holds no ONNX. A training run rewrites model.json without an ``onnx``
    record, so an ONNX that model.json does not list was exported from an earlier model."""
    onnx = info.get("onnx") or {}
    name = onnx.get("file") if isinstance(onnx, dict) else None
    path = os.path.join(model_dir, name) if name else None
    if path is None or not os.path.isfile(path):
        found = sorted(f for f in os.listdir(model_dir) if f.endswith(".onnx"))
        if not found:
            return None, None
        return os.path.join(model_dir, found[0]), "model.json records no export of the " \
            "current checkpoint (it was trained again after the export)"
    if onnx.get("sha256") and sha256_file(path) != onnx["sha256"]:
        return path, "the file is not the one model.json recorded at export"
    ckpt, expected = _recorded_checkpoint(model_dir, info)
    if expected and os.path.isfile(ckpt) and sha256_file(ckpt) != expected:
        return path, "it was exported from an earlier {}".format(os.path.basename(ckpt))
    return path, None


def open_runner(model_dir, backend="auto"):
    """The ONNX export through the appliance when it comes from the current checkpoint (or
    ``--backend onnxruntime``), else the checkpoint. A stale ONNX is never scored: ``auto``
    warns and runs the checkpoint, ``onnxruntime`` refuses."""
    if backend not in BACKENDS:
        raise UsageError("--backend: expected one of {}, got {!r}".format(", ".join(BACKENDS),
                                                                         backend))
    info = read_model_info(os.path.join(model_dir, MODEL_JSON))
    onnx, why = (None, None) if backend == "torch" else stale_onnx(model_dir, info)
    ckpt = os.path.join(model_dir, (info.get("checkpoint") or {}).get("file", "model_best.pth.tar"))
    if why and os.path.isfile(ckpt):
        fix = "re-export it with 'oncolens export onnx --model-dir {} --overwrite'".format(model_dir)
        if backend == "onnxruntime":
            raise UsageError("--backend onnxruntime: {} is stale ({}); {} or pass --backend "
                             "torch".format(onnx, why, fix))
        log.warning("%s is stale (%s): evaluating %s instead; %s", onnx, why, ckpt, fix)
        return TorchRunner(model_dir, info), info
    if backend == "torch" or (backend == "auto" and onnx is None):
        return TorchRunner(model_dir, info), info
    return ApplianceRunner(model_dir, backend), info


def trained_on(info, split_dir):
    """The name of the training split ``split_dir`` is ("train", or "val" after --final-fit),
    per model.json's dataset record; None when it is not one of them (or there is no record).
    Figures on such a split are not held-out."""
    dataset = (info.get("provenance") or {}).get("dataset")
    if not dataset:
        return None
    fit_on = (info.get("metrics") or {}).get("fit_on") or ["train"]
    here = os.path.realpath(split_dir)
    for name in fit_on:
        if os.path.realpath(os.path.join(dataset, name)) == here:
            return name
    return None


def not_held_out(report):
    """One sentence when the report's split was part of training, else None."""
    name = report.get("trained_on_split")
    if not name:
        return None
    how = "--final-fit trained it on train/ and val/" if \
        (report.get("training") or {}).get("final_fit") else "it was trained on train/"
    return ("{} is the model's {}/ and was part of training ({}): these figures are not "
            "held-out; evaluate on a split it never saw, such as test/".format(
                report["split_dir"], name, how))


def _check_unique(labels, model_dir):
    """Class folders are matched to outputs by name: two outputs of one name cannot be told
    apart (the figures came out for a split the model was never scored on correctly)."""
    twice = sorted(set(x for x in labels if labels.count(x) > 1))
    if twice:
        raise BundleError("{}: the labels ({}) name {} more than once: a class folder cannot "
                          "be matched to one output; give each output its own name".format(
                              os.path.join(model_dir, "model.json"), ", ".join(labels),
                              ", ".join(twice)))


def data_labels_file(split_dir):
    """The labels.txt that describes the split: its own, else its dataset's (the folder
    above it, where train and jetson-inference's datasets keep it); None when neither."""
    for folder in (split_dir, os.path.dirname(os.path.abspath(split_dir))):
        path = os.path.join(folder, LABELS_TXT)
        if os.path.isfile(path):
            return path
    return None


def check_data_labels(split_dir, labels, json_path):
    """A labels.txt in the data that disagrees with the model's labels (model.json) is said,
    as a warning: class folders are matched to the model's classes by name (a folder the
    model does not know is an error in _samples), so the figures are right, but a dataset
    of other classes, or of another order, may not be the one the model was made for."""
    path = data_labels_file(split_dir)
    if path is None:
        return
    try:
        theirs = read_labels(path)
    except BundleError as exc:
        log.warning("%s; not compared with %s", exc, json_path)
        return
    if theirs == list(labels):
        return
    if sorted(theirs) == sorted(labels):
        log.warning("%s lists the model's classes in another order (%s; %s: %s): class "
                    "folders are matched to the model's classes by name, so the figures are "
                    "by name too", path, ", ".join(theirs), json_path, ", ".join(labels))
        return
    unknown = [x for x in theirs if x not in labels]
    log.warning("%s lists %s but %s has %s%s: class folders are matched to the model's "
                "classes by name", path, ", ".join(theirs), json_path, ", ".join(labels),
                " (the model does not know {})".format(", ".join(unknown)) if unknown else "")


def _samples(split_dir, labels, json_path):
    """(path, class index) of the split's images; a class folder the model does not know is
    an error, images beside the class folders a warning."""
    folders = list_folders(split_dir) if os.path.isdir(split_dir) else []
    unknown = [d for d in folders if d not in labels]
    if unknown:
        raise UsageError("{}: class folder(s) {} are not among the model's labels ({}: {})"
                         .format(split_dir, ", ".join(unknown), json_path, ", ".join(labels)))
    samples = list_samples(split_dir, labels)
    loose = loose_images(split_dir)
    if loose:
        log.warning("%s", loose_warning(split_dir, loose))
    return samples


def _score(runner, samples, batch):
    """(probabilities, targets, paths, failed files) over the samples, in batches. A file
    that does not decode, or an image the model's preprocessing refuses (too elongated, as
    oncolens batch records it), is an unreadable file named in its error; an image whose
    output is not a number (NaN: argmax would make it the first class) is a failure marked
    ``"scored": False``."""
    from oncolens.appliance.postprocess import NOT_A_NUMBER, finite_rows
    probs, targets, paths, failed = [], [], [], []
    for start in range(0, len(samples), batch):
        chunk, inputs, read = samples[start:start + batch], [], []
        for path, target in chunk:
            try:
                rgb = read_image(path)
                try:
                    inputs.append(runner.pre(rgb))
                except ImageReadError as exc:
                    raise ImageReadError("{}: {}".format(path, exc))
            except ImageReadError as exc:
                failed.append({"path": path, "error": str(exc)})
                continue
            read.append((path, target))
        if not inputs:
            continue
        out = runner.probs(np.stack(inputs).astype(np.float32, copy=False))
        finite = finite_rows(out)
        for (path, target), ok in zip(read, finite):
            if ok:
                targets.append(target)
                paths.append(path)
            else:
                failed.append({"path": path, "error": "{}: {}".format(path, NOT_A_NUMBER),
                               "scored": False})
        probs.append(np.asarray(out)[finite])
    return probs, targets, paths, failed


def _none_scored(split_dir, model_dir, failed):
    """The error when no image of the split has figures: none could be read, or the model's
    output was not a number (a broken model) for those that could."""
    unscored = sum(1 for f in failed if f.get("scored") is False)
    if not unscored:
        return UsageError("{}: no readable images".format(split_dir))
    return BundleError("{}: the model's output is not a number (NaN or infinity) for {} of "
                       "{}: the model is broken (weights a diverged training run left, or an "
                       "overflow in its runtime); no figures".format(
                           model_dir, plural(unscored, "image"), split_dir))


def evaluate_dir(model_dir, split_dir, backend="auto", batch=16, bins=15, bootstrap=1000):
    """Run the model on every image of ``split_dir/<class>/``; returns the report dictionary.

    Class folders are matched to the model's labels by name; a folder the model does not
    know is an error, an unreadable image is recorded and skipped.
    """
    if not os.path.isdir(model_dir):
        raise BundleError("--model-dir {}: {}".format(model_dir, not_a_folder(model_dir)))
    runner, info = open_runner(model_dir, backend)
    labels = info["labels"]
    try:  # closed also when the split does not suit this model (several are evaluated)
        _check_unique(labels, model_dir)
        json_path = os.path.join(model_dir, MODEL_JSON)
        check_data_labels(split_dir, labels, json_path)
        probs, targets, paths, failed = _score(runner, _samples(split_dir, labels, json_path),
                                               batch)
    finally:
        runner.close()
    if not targets:
        raise _none_scored(split_dir, model_dir, failed)
    probs = np.concatenate(probs)
    report = metrics.full_report(np.array(targets), probs, labels, bins, bootstrap)
    temperature = float(((info.get("training") or {}).get("calibration") or {}).get(
        "temperature", 1.0))
    report["temperature"] = temperature  # folded into the model at training time
    if temperature != 1.0:
        report["ece_without_temperature"] = metrics.calibration(
            np.array(targets), without_temperature(probs, temperature), bins)[0]
    report.update({"model_dir": os.path.abspath(model_dir), "split_dir": os.path.abspath(split_dir),
                   "arch": info.get("arch"), "resolution": info["input"]["shape"][-1],
                   "runner": runner.describe(), "failed": failed,
                   "training": info.get("training", {}),
                   "trained_on_split": trained_on(info, split_dir),
                   "absent_classes": [l for l in labels if not report["per_class"][l]["support"]]})
    report["_probs"], report["_targets"], report["_paths"] = probs, np.array(targets), paths
    return report


def absent_note(report):
    """One sentence when the split has no images of some of the model's classes, else None:
    their recall is undefined (shown as n/a), and the averages leave them out."""
    absent = report.get("absent_classes")
    if not absent:
        return None
    return "{} has no images of {}: {}, balanced accuracy and ROC-AUC never".format(
        report["split_dir"], ", ".join(absent), undefined_recall(absent))


def recall_text(row, digits=3):
    """A class's recall, or n/a where the split has none of its images."""
    return "{:.{}f}".format(row["recall"], digits) if row["support"] else "n/a"


def precision_text(report, label, digits=3):
    """A class's precision, or n/a where the model predicted none of the images as it."""
    if label in never_predicted(report):
        return "n/a (never predicted)"
    return "{:.{}f}".format(report["per_class"][label]["precision"], digits)


def public(report):
    """The report without its raw arrays (for JSON)."""
    return {k: v for k, v in report.items() if not k.startswith("_")}
