"""TensorRT engine files: their names, where they go, how model.json lists them, and
whether one may be loaded here.  Used by the builder (``oncolens export engine``) and by
the runtime (the tensorrt backend).  No TensorRT import here: this is bookkeeping only.

Names follow jetson-inference's engine cache (``tensorNet.cpp``)::

    <model file>.<maxBatch>.<gpuFallback 0|1>.<TensorRT version>.<GPU|DLA_n>.<FP16|FP32|INT8>.engine
    resnet18.onnx.1.1.8201.GPU.FP16.engine

where the TensorRT version is ``NV_TENSORRT_VERSION``: major*1000 + minor*100 + patch
before TensorRT 10 (8.2.1 -> 8201), major*10000 + minor*100 + patch from 10 on
(10.3.0 -> 100300).

An engine goes beside its model; when that folder is read-only it goes to
``$ONCOLENS_CACHE_DIR/engines/<first 16 hex of the ONNX sha256>/`` (ONCOLENS_CACHE_DIR
defaults to ``~/.cache/oncolens``), with an ``engines.json`` there listing it, since
model.json cannot be updated either.
"""
import io
import json
import logging
import os
import re
import tempfile
import time

from oncolens.appliance.errors import BundleError, UsageError
from oncolens.appliance.locks import folder_locked
from oncolens.appliance.outpaths import replace_text

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32", "int8")
ENGINE_SUFFIXES = (".engine", ".trt", ".plan")
CACHE_ENV = "ONCOLENS_CACHE_DIR"
CACHE_INDEX = "engines.json"
_NAME = re.compile(r"^(?P<model>.+)\.(?P<batch>\d+)\.(?P<fallback>[01])\.(?P<code>\d+)\."
                   r"(?P<device>GPU|DLA_\d+)\.(?P<precision>FP16|FP32|INT8)\.engine$")


class EngineMismatch(BundleError):
    """An engine was built by another TensorRT version or for another device."""


def version_tuple(version):
    """'8.2.1.8' -> (8, 2, 1); a tuple or list passes through (padded to 3)."""
    if isinstance(version, (tuple, list)):
        parts = [int(v) for v in version]
    else:
        parts = [int(p) for p in re.findall(r"\d+", str(version))]
    if not parts:
        raise UsageError("not a TensorRT version: {!r}".format(version))
    parts = (parts + [0, 0, 0])[:3]
    return tuple(parts)


def version_code(version):
    """NV_TENSORRT_VERSION as jetson-inference puts it in engine names: 8.2.1 -> 8201."""
    major, minor, patch = version_tuple(version)
    if major >= 10:
        return major * 10000 + minor * 100 + patch
    return major * 1000 + minor * 100 + patch


def device_tag(dla_core=None):
    """'GPU', or 'DLA_0' / 'DLA_1' when building for a DLA core."""
    return "GPU" if dla_core is None else "DLA_{}".format(int(dla_core))


def check_precision(precision):
    precision = str(precision).lower()
    if precision not in PRECISIONS:
        raise UsageError("--precision: expected one of {}, got '{}'".format(
            ", ".join(PRECISIONS), precision))
    return precision


def engine_file_name(model_file, max_batch, trt_version, precision, dla_core=None,
                     gpu_fallback=True):
    """jetson-inference's engine cache name for ``model_file`` (its base name is used)."""
    return "{}.{}.{}.{}.{}.{}.engine".format(
        os.path.basename(model_file), int(max_batch), 1 if gpu_fallback else 0,
        version_code(trt_version), device_tag(dla_core), check_precision(precision).upper())


def parse_engine_name(name):
    """The fields of an engine file name made by engine_file_name, or None."""
    m = _NAME.match(os.path.basename(name))
    if not m:
        return None
    return {"model": m.group("model"), "max_batch": int(m.group("batch")),
            "gpu_fallback": m.group("fallback") == "1", "trt_code": int(m.group("code")),
            "device": m.group("device"), "precision": m.group("precision").lower()}


def cache_root():
    """$ONCOLENS_CACHE_DIR, or ~/.cache/oncolens."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "oncolens")


def cache_dir_for(onnx_sha256):
    """The fallback engine folder of one ONNX model (its checksum keeps models apart)."""
    return os.path.join(cache_root(), "engines", (onnx_sha256 or "unknown")[:16])


def folder_is_writable(path):
    """Whether new files may go in ``path``.

    A folder whose mode has no write bit at all counts as read-only even for root (an
    administrator marked it so); otherwise a real probe file decides (read-only mounts).
    """
    if not os.path.isdir(path):
        return False
    if not os.stat(path).st_mode & 0o222 or not os.access(path, os.W_OK):
        return False
    try:
        fd, probe = tempfile.mkstemp(prefix=".oncolens-probe-", dir=path)
    except (IOError, OSError):
        return False
    os.close(fd)
    os.remove(probe)
    return True


def place_engine(model_dir, file_name, onnx_sha256):
    """Where to write an engine: (path, in_cache).  Logs the choice when it is the cache."""
    if folder_is_writable(model_dir):
        return os.path.join(model_dir, file_name), False
    folder = cache_dir_for(onnx_sha256)
    if not os.path.isdir(folder):
        os.makedirs(folder)
    path = os.path.join(folder, file_name)
    log.info("model folder %s is read-only: engine goes to %s (set %s to move it)",
             model_dir, path, CACHE_ENV)
    return path, True


def engine_candidates(model_dir, file_name, onnx_sha256):
    """Where an engine of that name may already be: beside the model, then in the cache."""
    return [os.path.join(model_dir, file_name),
            os.path.join(cache_dir_for(onnx_sha256), file_name)]


def make_entry(path, model_dir, trt_version, device_name, precision, max_batch,
               dla_core=None, gpu_fallback=True, dynamic_batch=False, onnx_sha256=None,
               compute_capability=None, calibration=None, onnx_stat=None):
    """The model.json ``engines`` entry describing one engine file; ``onnx_stat`` is
    onnx_file_stat() of the ONNX it was built from, taken before its ``onnx_sha256``."""
    inside = os.path.dirname(os.path.abspath(path)) == os.path.abspath(model_dir)
    return dict(onnx_stat or {}, **{
        "file": os.path.basename(path) if inside else os.path.abspath(path),
        "tensorrt": ".".join(str(v) for v in version_tuple(trt_version)),
        "tensorrt_code": version_code(trt_version),
        "device_name": device_name,
        "compute_capability": list(compute_capability) if compute_capability else None,
        "device": device_tag(dla_core),
        "precision": check_precision(precision),
        "max_batch": int(max_batch),
        "dynamic_batch": bool(dynamic_batch),
        "gpu_fallback": bool(gpu_fallback),
        "onnx_sha256": onnx_sha256,
        "calibration": calibration,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


def onnx_file_stat(path):
    """The ONNX's size and modification time (ns) as an entry records them ({} without it)."""
    try:
        st = os.stat(path)
    except OSError:
        return {}
    return {"onnx_size": st.st_size, "onnx_mtime_ns": st.st_mtime_ns}


class OnnxCheck(object):
    """Whether the ONNX at ``path`` is still the file whose SHA-256 a record took: an engine
    entry (``onnx_sha256``) or model.json's export record (``onnx.sha256``).

    The size and mtime (ns) recorded with the checksum decide when the file still has them
    (no hashing at each start: it takes time on a Nano); when they differ (an ONNX copied in
    by hand, or only touched) or the record has none (written before they were recorded),
    the file's SHA-256, computed at most once, is compared with the recorded one.
    A record with no checksum, or a folder without its ONNX, cannot be checked: trusted.
    """

    def __init__(self, path):
        self.path = path
        self.stat = onnx_file_stat(path)
        self._sha = None

    def sha256(self):
        if self._sha is None:
            from oncolens.appliance.bundle import sha256_file
            self._sha = sha256_file(self.path)
        return self._sha

    @property
    def known_sha256(self):
        """The file's SHA-256 where a check computed it, else None."""
        return self._sha

    def changed(self, recorded_sha, recorded_stat, what):
        """None while the file is the one ``recorded_sha`` was taken of (``recorded_stat``:
        onnx_file_stat() then, with fewer keys or none where it was not recorded), else its
        SHA-256 now. ``what`` names the record in the debug line."""
        if not self.stat or not recorded_sha:
            return None
        if all(recorded_stat.get(key) == value for key, value in self.stat.items()):
            return None
        if not any(key in recorded_stat for key in self.stat):
            log.debug("%s records no ONNX size and time (written by an older OncoLens): "
                      "checking %s by its SHA-256", what, self.path)
        return None if self.sha256() == recorded_sha else self.sha256()

    def stale_reason(self, entry, engine):
        """None when ``engine`` (its path, for the message) was built from this ONNX, else
        one line saying it was not."""
        built_from = entry.get("onnx_sha256")
        now = self.changed(built_from, entry, "{}: its entry".format(engine))
        if now is None:
            return None
        return "{} was built from another ONNX than the current {} (SHA-256 {}... then, " \
            "{}... now)".format(engine, self.path, built_from[:12], now[:12])


def entry_path(entry, model_dir):
    return entry["file"] if os.path.isabs(entry["file"]) else os.path.join(model_dir,
                                                                          entry["file"])


def add_entry(info, entry):
    """Put ``entry`` in model.json's ``engines`` list, replacing one for the same file."""
    engines = [e for e in info.get("engines") or [] if e.get("file") != entry["file"]]
    engines.append(entry)
    info["engines"] = engines
    return info


def read_cache_index(folder):
    path = os.path.join(folder, CACHE_INDEX)
    if not os.path.isfile(path):
        return []
    try:
        with io.open(path, "r", encoding="utf-8") as fh:
            return list(json.load(fh).get("engines", []))
    except (ValueError, AttributeError):
        log.warning("%s: not valid JSON, ignored", path)
        return []


def write_cache_index(folder, entry):
    """Record an engine built into the cache folder (model.json is read-only then)."""
    if not os.path.isdir(folder):
        os.makedirs(folder)
    path = os.path.join(folder, CACHE_INDEX)
    with folder_locked(folder, "{}: another build is adding its engine to it; waiting for "
                       "it to finish".format(path)):  # read and written back under the lock
        entries = [e for e in read_cache_index(folder) if e.get("file") != entry["file"]]
        entries.append(entry)
        replace_text(path, json.dumps({"engines": entries}, indent=2, sort_keys=True) + "\n")


def onnx_sha(info, onnx_path=None):
    """The ONNX checksum model.json records, else the file's own (a bundle without one)."""
    sha = (info.get("onnx") or {}).get("sha256")
    if not sha and onnx_path and os.path.isfile(onnx_path):
        from oncolens.appliance.bundle import sha256_file
        sha = sha256_file(onnx_path)
    return sha


def known_entries(info, model_dir, onnx_path=None):
    """Every engine entry: model.json's, then the cache folder's index for this ONNX."""
    entries = list(info.get("engines") or [])
    sha = onnx_sha(info, onnx_path)
    if sha:
        seen = set(e.get("file") for e in entries)
        entries += [e for e in read_cache_index(cache_dir_for(sha)) if e.get("file") not in seen]
    return entries


def entry_for_file(info, model_dir, path, onnx_path=None):
    """The entry describing engine file ``path`` (by absolute path), or None."""
    want = os.path.abspath(path)
    for entry in known_entries(info, model_dir, onnx_path):
        if os.path.abspath(entry_path(entry, model_dir)) == want:
            return entry
    return None


def check_compatible(path, entry, trt_version, device_name):
    """Refuse an engine built by another TensorRT version or for another GPU.

    ``entry`` is its model.json record or None (an engine from elsewhere); then the
    TensorRT version in its jetson-inference style name is checked when it has one.
    """
    here_code = version_code(trt_version)
    here = ".".join(str(v) for v in version_tuple(trt_version))
    if entry is None:
        fields = parse_engine_name(path)
        if fields and fields["trt_code"] != here_code:
            raise EngineMismatch("{} was built by TensorRT {} (from its name) but this is "
                                 "TensorRT {} ({}): rebuild it with 'oncolens export engine'"
                                 .format(path, fields["trt_code"], here, here_code))
        if not fields:
            log.warning("%s: no model.json entry and no jetson-inference style name; "
                        "its TensorRT version and device cannot be checked", path)
        return
    if int(entry.get("tensorrt_code", -1)) != here_code:
        raise EngineMismatch("{} was built by TensorRT {} but this is TensorRT {}: rebuild it "
                             "with 'oncolens export engine' (or allow_rebuild)".format(
                                 path, entry.get("tensorrt"), here))
    built_on = entry.get("device_name")
    if built_on and device_name and built_on != device_name:
        raise EngineMismatch("{} was built for the GPU '{}' but this GPU is '{}': rebuild it "
                             "with 'oncolens export engine' (or allow_rebuild)".format(
                                 path, built_on, device_name))


def pick_entry(entries, model_dir, trt_version, device_name, precision=None, max_batch=None):
    """The best usable engine entry for this TensorRT and GPU (files that exist only).

    ``precision`` None prefers fp16, then fp32, then int8; ``max_batch`` None takes any.
    """
    code = version_code(trt_version)
    order = [check_precision(precision)] if precision else ["fp16", "fp32", "int8"]
    usable = []
    for entry in entries:
        if int(entry.get("tensorrt_code", -1)) != code:
            continue
        if device_name and entry.get("device_name") not in (None, device_name):
            continue
        if entry.get("precision") not in order:
            continue
        if max_batch and int(entry.get("max_batch", 1)) < int(max_batch):
            continue
        if os.path.isfile(entry_path(entry, model_dir)):
            usable.append(entry)
    usable.sort(key=lambda e: (order.index(e["precision"]), e.get("device") != "GPU"))
    return usable[0] if usable else None


def pick_fresh(entries, model_dir, onnx, trt_version, device_name, precision=None,
               max_batch=None):
    """pick_entry among the engines built from the current ONNX (``onnx``, an OnnxCheck):
    (entry, None); or (None, (entry, why)) when the best one was built from another ONNX
    and no other will do; or (None, None)."""
    remaining, stale = list(entries), None
    while True:
        entry = pick_entry(remaining, model_dir, trt_version, device_name, precision,
                           max_batch)
        if entry is None:
            return None, stale
        why = onnx.stale_reason(entry, entry_path(entry, model_dir))
        if why is None:
            return entry, None
        stale = stale or (entry, why)
        remaining.remove(entry)
