"""Whether an ONNX in a model folder is the export its model.json describes.

model.json's labels, preprocessing and activation are those of the ONNX ``oncolens export
onnx`` wrote; its ``onnx`` record holds that file's SHA-256, size and mtime (ns). An ONNX
copied over it by hand would be run with them, silently: at load, the size and mtime are
compared with the file's (nothing is hashed while they match: it takes time on a Nano);
when they differ, or model.json records none (written before they were), the file is
hashed once (engines.OnnxCheck) and another SHA-256 is refused. Used by bundle.load_bundle.
"""
import copy
import os

from oncolens.appliance.bundle import DEFAULT_INPUT_NAME, DEFAULT_OUTPUT_NAME
from oncolens.appliance.engines import OnnxCheck
from oncolens.appliance.errors import BundleError
from oncolens.appliance.onnxinfo import read_onnx_info

# model.json's onnx record keys -> onnx_file_stat()'s (those of an engine entry)
STAT_KEYS = (("size", "onnx_size"), ("mtime_ns", "onnx_mtime_ns"))


def record_stat(stat):
    """onnx_file_stat() as model.json's ``onnx`` record keeps it (``size``, ``mtime_ns``)."""
    return dict((ours, stat[theirs]) for ours, theirs in STAT_KEYS if theirs in stat)


def recorded_stat(record):
    """model.json's ``onnx`` record's size and mtime, keyed as onnx_file_stat() keys them."""
    return dict((theirs, record[ours]) for ours, theirs in STAT_KEYS if ours in record)


def replaced_message(path, json_path, recorded_sha, now_sha, directory, labels_flag):
    """The one line refusing ``path``, the recorded export's file, no longer that export."""
    how = "pass it with {} FILE".format(labels_flag) if labels_flag else \
        "put its labels.txt beside it"
    return ("{} is not the ONNX {} describes (SHA-256 {}... at its export, {}... now: "
            "copied in by hand?), so that file's labels and preprocessing may not be this "
            "one's: export it again with 'oncolens export onnx --model-dir {} --overwrite', "
            "or move it to a folder of its own and {} to run it as a bare ONNX".format(
                path, json_path, recorded_sha[:12], now_sha[:12], directory, how))


def recorded_onnx_problem(check, directory, json_path, info, labels_flag):
    """Why the ONNX model.json's ``onnx`` record names (``check``, its engines.OnnxCheck)
    must not be run, or None."""
    record = info.get("onnx") or {}
    now = check.changed(record.get("sha256"), recorded_stat(record),
                        "{}: its 'onnx'".format(json_path))
    if now is None:
        return None
    return replaced_message(check.path, json_path, record["sha256"], now, directory,
                            labels_flag)


def checked_onnx_file(directory, json_path, model_file, info, labels_flag):
    """(info, the file's engines.OnnxCheck or None) for an .onnx named by --model in a
    folder with a model.json: it must be the export model.json records (unchanged since), or
    a byte-identical copy: its activation, input size and labels would otherwise be applied
    to another network (Softmax twice, or a logit shown as a percentage). Where no export
    is recorded (the folder was trained again after one), the file's own graph says whether
    it ends in Softmax, and its input size must match."""
    record = info.get("onnx") or {}
    if record.get("file"):
        recorded = os.path.join(directory, record["file"])
        same = os.path.isfile(recorded) and os.path.samefile(recorded, model_file)
        check = OnnxCheck(model_file)
        if same:
            why = recorded_onnx_problem(check, directory, json_path, info, labels_flag)
            if why:
                raise BundleError(why)
            return info, check
        if record.get("sha256") and check.sha256() == record["sha256"]:
            return info, check
        raise BundleError("{}: {} describes {} (sha256 {}...), not this file: pass --model {} "
                          "to run the recorded export, or move {} to a folder of its own with "
                          "its labels.txt to run it as a bare ONNX".format(
                              model_file, json_path, record["file"],
                              (record.get("sha256") or "?")[:12], directory,
                              os.path.basename(model_file)))
    return _graph_checked(directory, json_path, model_file, info), None


def _graph_checked(directory, json_path, model_file, info):
    """info for an .onnx of a folder whose model.json records no export: the file's input
    size must be model.json's, and its graph says whether it ends in Softmax."""
    info = copy.deepcopy(info)
    onnx_info = read_onnx_info(model_file)  # None: unreadable, the backend will say why
    shape = onnx_info and onnx_info.input_shape(info["input"].get("name", DEFAULT_INPUT_NAME))
    if shape and list(shape) != list(info["input"]["shape"]):
        raise BundleError("{} takes {} input but {} describes {} (the model was trained again "
                          "at another size after this export): export it again with 'oncolens "
                          "export onnx --model-dir {} --overwrite'".format(
                              model_file, "x".join(str(v) for v in shape), json_path,
                              "x".join(str(v) for v in info["input"]["shape"]), directory))
    activation = onnx_info and onnx_info.output_activation(
        info["output"].get("name", DEFAULT_OUTPUT_NAME))
    if activation:
        info["output"]["activation"] = activation
    return info
