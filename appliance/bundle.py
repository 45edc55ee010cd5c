"""The model bundle contract: ``model.json`` + ``labels.txt`` + model files in one folder.

    models/busi-resnet18/
      resnet18.onnx     input "input_0" float32 NCHW, output "output_0" probabilities
      labels.txt        one class a line, in output order
      model.json        labels, input size, preprocessing, tensor names, provenance, engines

Every stage writes and checks it; a mismatch is a one-line ``BundleError`` naming both sides.
"""
import codecs
import copy
import hashlib
import io
import json
import os
import re

from oncolens import __version__
from oncolens.appliance.errors import BundleError, plural
# model.json's schema and its check live in modelinfo.py; still importable from here
from oncolens.appliance.modelinfo import (FORMAT, KNOWN_KEYS, MODEL_JSON,  # noqa: F401
                                          REQUIRED_KEYS, SCHEMA_VERSION, validate_model_info)
from oncolens.appliance.onnxinfo import read_onnx_info
from oncolens.appliance.outpaths import replace_file, replace_text, text_writer

LABELS_TXT = "labels.txt"

DEFAULT_INPUT_NAME = "input_0"   # jetson-inference's names
DEFAULT_OUTPUT_NAME = "output_0"
CAM_OUTPUT_NAME = "cam_0"

MODEL_SUFFIXES = (".onnx", ".engine", ".trt", ".plan", ".pth", ".tar", ".pt")


def sha256_file(path, chunk=1 << 20):
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _decode_text(path, data):
    """Text of a labels file: UTF-8 (with or without a BOM), or UTF-16 with its BOM."""
    if data.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise BundleError("labels file {}: not readable as {} text ({} at byte {}): expected "
                          "one class a line, UTF-8".format(path, encoding.upper(), exc.reason,
                                                          exc.start))


# an ImageNet synset ID before the class name, as in jetson-inference's ilsvrc12_synset_words.txt
# ("n01440764 tench, Tinca tinca"): its label loader keeps only the name, and so do we
SYNSET_PREFIX = re.compile(r"^n[0-9]{8}\s+(?=\S)")


def read_labels(path):
    """Labels, one a line; blank lines and surrounding spaces are ignored, and an ImageNet
    synset ID before a name is dropped (jetson-inference reads such files the same way)
    unless two names would then be the same (the lines are kept whole)."""
    if os.path.isdir(path):
        raise BundleError("labels file {} is a folder: expected a text file, one class a "
                          "line".format(path))
    if not os.path.isfile(path):
        raise BundleError("labels file not found: {}".format(path))
    with io.open(path, "rb") as fh:
        text = _decode_text(path, fh.read())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise BundleError("labels file is empty: {}".format(path))
    labels = [SYNSET_PREFIX.sub("", line) for line in lines]
    if len(set(labels)) != len(labels):  # ImageNet's has two 'crane's: the IDs tell them apart
        labels = lines
    if len(set(labels)) != len(labels):
        raise BundleError("labels file has duplicate classes: {}".format(path))
    return labels


def labels_text(labels):
    """labels.txt's text: one class a line, in output order."""
    return u"".join(u"{}\n".format(label) for label in labels)


def write_labels(path, labels):
    """labels.txt, written whole (beside it first, then moved over it): a full disk midway
    leaves the earlier file as it was."""
    replace_text(path, labels_text(labels))


def label_problem(name):
    """Why a class name (a folder's) cannot be a line of labels.txt that reads back as itself,
    else None: not valid UTF-8 (a Latin-1 archive's name, kept as surrogates), a line break
    in it, or white space at either end (which every reader strips)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not a valid UTF-8 name, which labels.txt must be (jetson-inference reads " \
            "it as UTF-8)"
    if len(name.splitlines()) > 1 or name.rstrip("\r\n") != name:
        return "holds a line break, which would split it over two lines of labels.txt"
    if name.strip() != name:
        return "begins or ends with white space, which readers of labels.txt strip"
    return None


def class_name_error(name, where):
    """The one line that refuses class folder ``name`` in ``where``, or None when it can be
    a line of labels.txt (``label_problem``)."""
    why = label_problem(name)
    if why is None:
        return None
    shown = name.encode("utf-8", "surrogateescape") if "UTF-8" in why else name  # printable
    return "{}: class folder {!r} {}: rename the folder".format(where, shown, why)


def new_model_info(arch, labels, input_size, preprocess, **extra):
    """A fresh model.json dictionary with every required key filled in."""
    info = {
        "format": FORMAT,
        "schema": SCHEMA_VERSION,
        "oncolens_version": __version__,
        "arch": arch,
        "labels": list(labels),
        "num_classes": len(labels),
        "input": {"name": DEFAULT_INPUT_NAME, "shape": [3, int(input_size), int(input_size)],
                  "dtype": "float32", "layout": "NCHW"},
        "output": {"name": DEFAULT_OUTPUT_NAME, "activation": "softmax"},
        "preprocess": dict(preprocess),
        "engines": [],
    }
    for key, value in extra.items():
        info[key] = value
    validate_model_info(info, MODEL_JSON)
    return info


def read_model_info(path):
    """Read and validate a model.json file."""
    if not os.path.isfile(path):
        raise BundleError("model.json not found: {}".format(path))
    try:
        with io.open(path, "r", encoding="utf-8") as fh:
            info = json.load(fh)
    except ValueError as exc:
        raise BundleError("{}: not valid JSON ({})".format(path, exc))
    return validate_model_info(info, path)


def model_info_writer(path, info):
    """Validate ``info`` (errors name ``path``); return a function writing it to a file."""
    validate_model_info(info, path)
    return text_writer(json.dumps(info, indent=2, sort_keys=True) + "\n")


def write_model_info(path, info):
    """Validate, then write model.json atomically (a temporary file beside it, then moved)."""
    replace_file(path, model_info_writer(path, info))


def check_labels_match(labels, num_outputs, labels_where, model_where):
    """Labels count must equal the model's output size; say both sides when it does not."""
    if num_outputs is not None and len(labels) != int(num_outputs):
        raise BundleError("{} lists {} but {} has {}: use the labels file the model was "
                          "trained with".format(labels_where, plural(len(labels), "class"),
                                                model_where, plural(int(num_outputs), "output")))


class Bundle(object):
    """A model folder: its model.json (if any), labels and the model file asked for."""

    def __init__(self, directory, info, labels, model_path=None, labels_source=None,
                 inferred=False):
        self.dir = directory
        self.info = info
        self.labels = labels
        self.model_path = model_path
        # where the labels came from, for error messages
        self.labels_source = labels_source or os.path.join(directory, MODEL_JSON)
        # True when there is no model.json: input size and names come from the model file
        self.inferred = inferred
        # why the folder's ONNX must not be used (trained again after its export), or None
        self.stale_onnx = None
        self.file_in_use = None  # set by the Classifier: the file its backend runs
        self._onnx_check = None

    @property
    def input_name(self):
        return self.info["input"].get("name", DEFAULT_INPUT_NAME)

    @property
    def output_name(self):
        return self.info["output"].get("name", DEFAULT_OUTPUT_NAME)

    @property
    def input_shape(self):
        return tuple(self.info["input"]["shape"])

    @property
    def preprocess(self):
        return self.info["preprocess"]

    @property
    def onnx_path(self):
        if self.stale_onnx:
            raise BundleError(self.stale_onnx)
        onnx = self.info.get("onnx") or {}
        if onnx.get("file"):
            return os.path.join(self.dir, onnx["file"])
        return os.path.join(self.dir, "{}.onnx".format(self.info["arch"]))

    def onnx_check(self):
        """engines.OnnxCheck of the ONNX, one a bundle: at most one hash of it a start, at
        load (onnxrecord.py) and by the TensorRT engine picker alike."""
        path = self.onnx_path
        if self._onnx_check is None or os.path.abspath(self._onnx_check.path) != \
                os.path.abspath(path):
            from oncolens.appliance.engines import OnnxCheck
            self._onnx_check = OnnxCheck(path)
        return self._onnx_check

    def set_file_in_use(self, path, sha256=None):
        """The file a backend opened runs the model (a checkpoint for torch, the ONNX beside
        a --model engine or checkpoint for ONNX Runtime and OpenVINO): its checksum is the
        one results and audit lines record; ``sha256``: that of the bytes the backend read,
        where it took it (not read again: the file may have been replaced since)."""
        if path and path not in (self.file_in_use, self.model_path):
            self.file_in_use = path
            self.__dict__.pop("_sha", None)
        if path and sha256:
            self.file_in_use, self._sha = path, sha256

    @property
    def model_sha256(self):
        """Checksum of the model file in use (computed once)."""
        if not hasattr(self, "_sha"):
            path = self.file_in_use or self.model_path or (
                "" if self.stale_onnx else self.onnx_path)
            self._sha = sha256_file(path) if os.path.isfile(path) else None
        return self._sha

    def path(self, name):
        return os.path.join(self.dir, name)

    def save(self):
        write_model_info(self.path(MODEL_JSON), self.info)

    def copy_info(self):
        return copy.deepcopy(self.info)


def find_model_dir(model):
    """``--model`` may name a folder or a file inside one: return (folder, file or None)."""
    if os.path.isdir(model):
        return model, None
    if os.path.isfile(model):
        return os.path.dirname(os.path.abspath(model)), model
    raise BundleError("model not found: {} (expected a model folder, an .onnx, an engine or a "
                      "checkpoint file)".format(model))


def onnx_input_shape(path, input_name):
    """[C, H, W] of the ONNX input ``input_name`` when the file says it, else None (the
    backend then reads it).  Read from the file itself (onnxinfo.py): no model is loaded."""
    info = read_onnx_info(path)
    return info.input_shape(input_name) if info else None


def _missing_labels_message(directory, labels, labels_flag):
    if labels and os.path.isdir(labels):
        return "{} {} is a folder: expected a text file, one class a line".format(
            labels_flag or "labels", labels)
    if labels:
        return "{} {}: labels file not found (expected one class a line, in output order)" \
            .format(labels_flag or "labels", labels)
    if labels_flag:
        return "{} has no model.json and no labels file: pass {}=FILE (one class a line, in " \
            "output order)".format(directory, labels_flag)
    return "{} has no model.json and no labels.txt: expected a model folder (model.json from " \
        "'oncolens export onnx', or labels.txt beside a jetson-inference ONNX)".format(directory)


def _inferred_info(directory, model_file, labels_path):
    from oncolens.appliance.preprocess import imagenet_preprocess
    arch = "resnet18"
    if model_file:
        arch = os.path.basename(model_file).split(".")[0]
    return new_model_info(arch, read_labels(labels_path), 224,
                          imagenet_preprocess(224, policy="stretch"))


def load_bundle(model, labels=None, info_overrides=None, labels_flag="--labels"):
    """Open a bundle from ``--model`` (folder or file) and an optional ``--labels`` file.

    With a model.json the labels and preprocessing come from it; an explicit ``labels``
    file must agree with it.  Without one (a bare jetson-inference export) the labels file
    is required, jetson-inference's defaults are assumed and the input size is the ONNX
    file's.  ``labels_flag`` names the command's labels flag in messages (None: it has none).
    """
    directory, model_file = find_model_dir(model)
    json_path = os.path.join(directory, MODEL_JSON)
    labels_source, inferred = json_path, False
    if os.path.isfile(json_path):
        info = read_model_info(json_path)
        if labels:
            from_file = read_labels(labels)
            if from_file != info["labels"]:
                raise BundleError("{} lists {} ({} classes) but {} lists {} ({} classes)".format(
                    labels, from_file, len(from_file), json_path, info["labels"],
                    len(info["labels"])))
    else:
        labels_path = labels or os.path.join(directory, LABELS_TXT)
        if not os.path.isfile(labels_path):
            raise BundleError(_missing_labels_message(directory, labels, labels_flag))
        info = _inferred_info(directory, model_file, labels_path)
        labels_source, inferred = labels_path, True
    if info_overrides:
        info = copy.deepcopy(info)
        for key, value in info_overrides.items():
            if isinstance(value, dict):
                info.setdefault(key, {}).update(value)
            else:
                info[key] = value
    check = None
    if model_file and not inferred and model_file.endswith(".onnx"):
        from oncolens.appliance.onnxrecord import checked_onnx_file
        info, check = checked_onnx_file(directory, json_path, model_file, info, labels_flag)
    elif not inferred:  # the folder's ONNX: run, or beside the engine or checkpoint named
        return _folder_onnx_bundle(directory, json_path, info, model_file, labels_source,
                                   labels_flag)
    if model_file is None:
        onnx_file = Bundle(directory, info, info["labels"]).onnx_path
        model_file = onnx_file if os.path.isfile(onnx_file) else None
    if inferred and model_file and model_file.endswith(".onnx"):
        shape = onnx_input_shape(model_file, info["input"]["name"])
        if shape:  # every stage (preprocessing, references) sees the model's real input
            info["input"]["shape"] = shape
    return _with_check(Bundle(directory, info, info["labels"], model_file, labels_source,
                              inferred), check)


def _with_check(bundle, check):
    """``bundle`` with the OnnxCheck the load made of its model file (its SHA-256, where
    computed, is model_sha256's: hashed once a start)."""
    if check is not None and bundle.model_path and \
            os.path.abspath(check.path) == os.path.abspath(bundle.model_path):
        if check.known_sha256:
            bundle._sha = check.known_sha256
        bundle._onnx_check = check  # taken by onnx_check() where it is the folder's ONNX
    return bundle


def _folder_onnx_bundle(directory, json_path, info, model_file, labels_source, labels_flag):
    """The bundle of a folder with a model.json, ``model_file`` None (its ONNX is run) or an
    engine or checkpoint: the ONNX backends run the folder's ONNX beside it. That ONNX must
    be the export model.json records; where it is not (trained again after its export, or
    copied in by hand), the ONNX backends refuse it (``stale_onnx``) and a checkpoint still
    runs."""
    from oncolens.appliance.onnxrecord import recorded_onnx_problem
    bundle = Bundle(directory, info, info["labels"], model_file, labels_source)
    onnx_file = bundle.onnx_path
    if not os.path.isfile(onnx_file):
        return bundle
    if not info.get("onnx"):
        if model_file:  # named: used as asked (torch's checkpoint, an engine)
            return bundle
        stale = "{} was exported before the model in {} was trained again ({} records no " \
            "export of it): run 'oncolens export onnx --model-dir {} --overwrite', pass " \
            "the .onnx file itself to use it anyway, or --backend torch for the " \
            "checkpoint".format(onnx_file, directory, MODEL_JSON, directory)
    else:
        stale = recorded_onnx_problem(bundle.onnx_check(), directory, json_path, info,
                                      labels_flag)
    if not (stale or model_file):
        bundle.model_path = onnx_file
        return _with_check(bundle, bundle.onnx_check())
    bundle.stale_onnx = stale  # the ONNX backends refuse; the checkpoint still runs
    return bundle
