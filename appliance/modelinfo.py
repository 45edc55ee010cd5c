"""``model.json``'s schema: the keys and sections a valid one has, and the check every
stage runs on it (appliance/bundle.py reads and writes the file).  A problem is a one-line
``BundleError`` naming the file and the key."""
import numbers

from oncolens import __version__
from oncolens.appliance.errors import BundleError, plural

MODEL_JSON = "model.json"
FORMAT = "oncolens-bundle"
SCHEMA_VERSION = 1

# Top-level keys this version understands.  A key outside this set means the file was
# written by a newer OncoLens (or edited by hand) and is refused rather than ignored.
KNOWN_KEYS = frozenset([
    "format", "schema", "oncolens_version", "arch", "labels", "num_classes",
    "input", "output", "preprocess", "onnx", "checkpoint", "training", "metrics",
    "provenance", "engines", "created",
])
REQUIRED_KEYS = ("format", "schema", "arch", "labels", "input", "output", "preprocess")
# output.activation: what the model's output already is (softmax: probabilities; none: logits,
# which the backends turn into probabilities); missing means softmax
ACTIVATIONS = ("softmax", "none")


def validate_model_info(info, where=MODEL_JSON):
    """Check a model.json dictionary; raise BundleError naming the file and the problem."""
    if not isinstance(info, dict):
        raise BundleError("{}: expected a JSON object at the top level".format(where))
    if info.get("format") != FORMAT:
        raise BundleError("{}: 'format' is {!r}, expected {!r}".format(
            where, info.get("format"), FORMAT))
    schema = info.get("schema")
    if not isinstance(schema, int) or schema < 1:
        raise BundleError("{}: 'schema' must be a positive integer, got {!r}".format(where, schema))
    if schema > SCHEMA_VERSION:
        raise BundleError("{}: written by a newer OncoLens (schema {}, oncolens {}); this is "
                          "oncolens {} (schema {}): upgrade OncoLens".format(
                              where, schema, info.get("oncolens_version", "?"),
                              __version__, SCHEMA_VERSION))
    unknown = sorted(set(info) - KNOWN_KEYS)
    if unknown:
        raise BundleError("{}: unknown key(s) {} (written by a newer OncoLens {}? this is {})".format(
            where, ", ".join(repr(k) for k in unknown), info.get("oncolens_version", "?"),
            __version__))
    missing = [key for key in REQUIRED_KEYS if key not in info]
    if missing:
        raise BundleError("{}: missing key(s) {}".format(where, ", ".join(missing)))
    _check_sections(info, where)
    labels = info["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise BundleError("{}: 'labels' must be a non-empty list of strings".format(where))
    if "num_classes" in info and info["num_classes"] != len(labels):
        raise BundleError("{}: 'num_classes' is {} but 'labels' has {}".format(
            where, info["num_classes"], plural(len(labels), "entry", "entries")))
    shape = info["input"].get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0
                                                                   for v in shape)):
        raise BundleError("{}: 'input.shape' must be [channels, height, width], got {!r}".format(
            where, shape))
    return info


OBJECT_KEYS = ("input", "output", "preprocess", "onnx", "checkpoint", "training", "metrics",
               "provenance")


def _check_sections(info, where):
    """The sections every stage reads with .get(): objects (engines a list of objects), and
    mean / std three numbers, so a hand-edited model.json is one line, not a crash in a backend."""
    for key in OBJECT_KEYS:
        if (key in REQUIRED_KEYS or info.get(key) is not None) and \
                not isinstance(info.get(key), dict):
            raise BundleError("{}: '{}' must be a JSON object, got {!r}".format(
                where, key, info[key]))
    engines = info.get("engines")
    if engines is not None and not (isinstance(engines, list) and
                                    all(isinstance(e, dict) for e in engines)):
        raise BundleError("{}: 'engines' must be a list of objects, got {!r}".format(
            where, engines))
    _check_preprocess(info["preprocess"], where)
    for section, key in (("onnx", "file"), ("onnx", "checkpoint"), ("checkpoint", "file")):
        value = (info.get(section) or {}).get(key)
        if value is not None and not (isinstance(value, str) and value):
            raise BundleError("{}: '{}.{}' must be a file name, got {!r}".format(
                where, section, key, value))
    for section, key in (("input", "name"), ("output", "name"), ("output", "cam")):
        value = info[section].get(key)
        if value is not None and not (isinstance(value, str) and value):
            raise BundleError("{}: '{}.{}' must be a tensor name, got {!r}".format(
                where, section, key, value))
    activation = info["output"].get("activation")
    if activation is not None and activation not in ACTIVATIONS:
        raise BundleError("{}: 'output.activation' must be one of {} (none: the output is "
                          "logits), got {!r}".format(where, ", ".join(ACTIVATIONS), activation))
    for entry in engines or []:
        if not (isinstance(entry.get("file"), str) and entry["file"]):
            raise BundleError("{}: each of 'engines' must name its 'file', got {!r}".format(
                where, entry))


def _number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_preprocess(spec, where):
    """mean / std three numbers (std none zero or below: it divides), a resize policy this
    version knows and a crop ratio in (0, 1]: a hand-edited value is one line, not a division
    by zero deep in preprocessing or a policy silently taken for another."""
    from oncolens.appliance.preprocess import POLICIES
    for key in ("mean", "std"):
        value = spec.get(key)
        if value is not None and not (isinstance(value, (list, tuple)) and len(value) == 3 and
                                      all(_number(v) for v in value)):
            raise BundleError("{}: 'preprocess.{}' must be 3 numbers (R, G, B), got {!r}".format(
                where, key, value))
    std = spec.get("std")
    if std is not None and not all(v > 0 for v in std):
        raise BundleError("{}: 'preprocess.std' must be 3 numbers above 0 (it divides), got "
                          "{!r}".format(where, std))
    if spec.get("resize") is not None and spec["resize"] not in POLICIES:
        raise BundleError("{}: 'preprocess.resize' must be one of {}, got {!r}".format(
            where, ", ".join(POLICIES), spec["resize"]))
    if spec.get("interpolation") is not None and \
            spec["interpolation"] not in ("auto", "area", "linear"):
        raise BundleError("{}: 'preprocess.interpolation' must be one of auto, area, linear, "
                          "got {!r}".format(where, spec["interpolation"]))
    _check_clahe(spec.get("clahe"), where)
    ratio = spec.get("crop_ratio")
    if ratio is not None and not (_number(ratio) and 0 < ratio <= 1):
        raise BundleError("{}: 'preprocess.crop_ratio' must be a number in (0, 1] (the crop "
                          "over the resized shorter side), got {!r}".format(where, ratio))


def _check_clahe(clahe, where):
    """null, or {"clip": a number above 0, "tile": a whole number above 0} (each optional)."""
    if not clahe:
        return
    ok = isinstance(clahe, dict) and \
        all(_number(clahe[k]) and clahe[k] > 0 for k in ("clip", "tile") if k in clahe) and \
        (isinstance(clahe.get("tile", 8), numbers.Integral))
    if not ok:
        raise BundleError("{}: 'preprocess.clahe' must be null or {{\"clip\": a number above "
                          "0, \"tile\": a whole number above 0}}, got {!r}".format(where, clahe))
