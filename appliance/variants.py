"""Derived model files: a dynamic-batch copy of a batch-1 ONNX export, and an int8 copy
quantised statically on calibration images.

They live beside the bundle in ``variants/`` (or under ``$ONCOLENS_CACHE_DIR/variants``,
by default ``~/.cache/oncolens/variants``, when the bundle folder is read-only: a folder
with no write bit counts as read-only even for root) and carry the first 12 hex digits of
the source model's SHA-256 in their names, so a re-exported model never picks up a stale copy.

An int8 copy is only ever used when asked for (``--precision int8``) and only once its top-1
agreement with fp32 has been measured on real images and recorded in its ``.json`` sidecar
(``oncolens bench --precisions fp32,int8`` does both); it is never swapped in silently.
bf16 (OpenVINO computing the fp32 file in bf16, on CPUs with AVX512-BF16 or AMX) follows the
same rule; its agreement is recorded in ``<model>.<sha>.bf16.json``.
"""
import io
import json
import logging
import os
import time

from oncolens.appliance.bundle import Bundle
from oncolens.appliance.errors import BundleError, MissingDependency, UsageError, plural
from oncolens.appliance.outpaths import drop_empty_folders, replace_file, replace_text

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8", "bf16")


def _onnx():
    try:
        import onnx
    except ImportError:
        raise MissingDependency("onnx", "making a dynamic-batch or int8 model copy",
                                "pip install 'oncolens[onnx]'")
    return onnx


def _writable_here(here, model_dir):
    """variants/ beside the model can take a new file: it exists and is writable, or the
    model folder is (a folder with no write bit counts as read-only even for root, a probe
    file decides for read-only mounts: as for engines, docs/EXPORT.md)."""
    from oncolens.appliance.engines import folder_is_writable
    if os.path.isdir(here):
        return folder_is_writable(here)
    return not os.path.exists(here) and folder_is_writable(model_dir)


def variants_dir(bundle):
    """Where this bundle's derived models are written (created when missing): ``variants/``
    beside the model, or ``$ONCOLENS_CACHE_DIR/variants/<sha>`` when that is read-only."""
    from oncolens.appliance.engines import cache_root
    here = os.path.join(bundle.dir, "variants")
    if _writable_here(here, bundle.dir):
        if not os.path.isdir(here):
            os.makedirs(here)
        return here
    sha = (bundle.model_sha256 or "unknown")[:12]
    there = os.path.join(cache_root(), "variants", sha)
    if not os.path.isdir(there):
        os.makedirs(there)
    log.debug("model folder %s is read-only: derived models go to %s", bundle.dir, there)
    return there


def source_onnx(bundle):
    path = bundle.model_path or bundle.onnx_path
    if not path.endswith(".onnx") or not os.path.isfile(path):
        path = bundle.onnx_path
    if not os.path.isfile(path):
        raise UsageError("--model {}: no ONNX file to derive from".format(bundle.dir))
    return path


def variant_path(bundle, kind):
    """The copy of ``kind`` (dyn, int8, bf16): one shipped in the bundle's read-only
    ``variants/`` when it is there (or its sidecar is), else where new ones are written."""
    src = source_onnx(bundle)
    from oncolens.appliance.bundle import sha256_file
    stem = os.path.splitext(os.path.basename(src))[0]
    name = "{}.{}.{}.onnx".format(stem, sha256_file(src)[:12], kind)
    shipped = os.path.join(bundle.dir, "variants", name)
    if os.path.isfile(shipped) or os.path.isfile(sidecar_path(shipped)):
        return shipped
    return os.path.join(variants_dir(bundle), name)


def with_model(bundle, path):
    """A copy of ``bundle`` that runs ``path`` instead of its own model file."""
    return Bundle(bundle.dir, bundle.copy_info(), list(bundle.labels), path,
                  bundle.labels_source, bundle.inferred)


def dynamic_batch(bundle):
    """A bundle whose ONNX takes any batch size (the export's batch-1 file, rewritten once)."""
    src = source_onnx(bundle)
    dst = variant_path(bundle, "dyn")
    if not os.path.isfile(dst):
        try:
            model = _dynamic_batch_model(src)
            replace_file(dst, lambda tmp: _onnx().save(model, tmp))
        except BaseException:  # not a model, a full disk: leave no empty variants/ behind
            folder = os.path.dirname(dst)
            drop_empty_folders([folder], os.path.dirname(folder))
            raise
        log.info("wrote a dynamic-batch copy %s", dst)
    copy = with_model(bundle, dst)
    copy._sha = bundle.model_sha256  # same weights: results name the exported file's checksum
    return copy


def _dynamic_batch_model(src):
    """``src`` loaded with its inputs' and outputs' first dimension named "batch"; a file
    that is not a model onnx can read is a BundleError naming it, not a protobuf traceback."""
    onnx = _onnx()
    try:
        model = onnx.load(src)
        for value in list(model.graph.input) + list(model.graph.output):
            dims = value.type.tensor_type.shape.dim
            if len(dims):
                dims[0].ClearField("dim_value")
                dims[0].dim_param = "batch"
        del model.graph.value_info[:]  # shapes inferred for batch 1 no longer hold
        onnx.checker.check_model(model)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # protobuf's DecodeError, onnx's ValidationError
        raise BundleError("{}: not an ONNX model onnx can read ({}: {})".format(
            src, type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip()
            else "no detail"))
    return model


class _Calibration(object):
    """onnxruntime.quantization.CalibrationDataReader over preprocessed image files."""

    def __init__(self, files, preprocessor, input_name):
        self.files = iter(files)
        self.preprocessor = preprocessor
        self.input_name = input_name

    def get_next(self):
        from oncolens.appliance.imageio import read_image
        for path, _ in self.files:
            try:
                tensor = self.preprocessor(read_image(path))
            except Exception as exc:  # a bad calibration file is skipped, not fatal
                log.warning("calibration: skipping %s (%s)", path, exc)
                continue
            return {self.input_name: tensor[None]}
        return None


# x86 flags (/proc/cpuinfo) of an int8 dot product that cannot overflow: VNNI and AMX
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def int8_reduce_range(flags=None):
    """(reduce_range, why) for an int8 copy made on this CPU. Without VNNI or AMX (AVX2 only,
    or not x86: no "flags" line) the u8s8 multiply-add can saturate, and 7-bit weights
    (reduce_range) avoid it; with them the full 8 bits are kept."""
    if flags is None:
        from oncolens.appliance.benchstats import cpu_flags
        flags = cpu_flags()
    found = [f for f in INT8_DOT_FLAGS if f in flags]
    if found:
        return False, "8-bit weights: this CPU has {}".format(", ".join(found))
    return True, "7-bit weights: this CPU has none of {}".format(", ".join(INT8_DOT_FLAGS))


def quantize_int8(bundle, calib_dir, count=100, overwrite=False):
    """Write the bundle's int8 copy (QDQ, per-channel weights) calibrated on ``calib_dir``."""
    try:
        from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
    except ImportError:
        raise MissingDependency("onnxruntime", "int8 quantisation", "pip install onnxruntime")
    from oncolens.appliance.pipeline import iter_image_files
    from oncolens.appliance.preprocess import Preprocessor
    fp32 = dynamic_batch(bundle)
    dst = variant_path(bundle, "int8")
    if os.path.isfile(dst) and not overwrite:
        return with_model(bundle, dst)
    files = [f for f in iter_image_files(calib_dir)][:]
    step = max(1, len(files) // max(1, int(count)))
    files = files[::step][:int(count)]  # spread over every class folder
    if not files:
        raise UsageError("--calib-images {}: no images to calibrate on".format(calib_dir))
    reader = _Calibration(files, Preprocessor.from_bundle(bundle), bundle.input_name)
    started = time.time()
    reduce_range, why = int8_reduce_range()

    def quantize(tmp):
        _at_least_opset(fp32.model_path, tmp, 13)  # per-channel QDQ needs opset 13
        quantize_static(tmp, tmp, reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, reduce_range=reduce_range,
                        calibrate_method=CalibrationMethod.MinMax)
    replace_file(dst, quantize)
    method = "minmax, per-channel weights" + (", reduce_range" if reduce_range else "")
    write_sidecar(dst, {"precision": "int8", "source": os.path.basename(source_onnx(bundle)),
                        "calibration": {"dir": os.path.abspath(calib_dir), "images": len(files),
                                        "method": method, "reduce_range": reduce_range,
                                        "reduce_range_why": why},
                        "seconds": round(time.time() - started, 1)})
    log.info("wrote int8 copy %s (calibrated on %s of %s)", dst, plural(len(files), "image"),
             calib_dir)
    return with_model(bundle, dst)


def _at_least_opset(src, dst, opset):
    onnx = _onnx()
    model = onnx.load(src)
    current = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if current < opset:
        from onnx import version_converter
        model = version_converter.convert_version(model, opset)
    onnx.save(model, dst)


def sidecar_path(path):
    return os.path.splitext(path)[0] + ".json"


def read_sidecar(path):
    side = sidecar_path(path)
    if not os.path.isfile(side):
        return {}
    with io.open(side, "r", encoding="utf-8") as fh:
        return json.load(fh)


def write_sidecar(path, info):
    merged = read_sidecar(path)
    merged.update(info)
    replace_text(sidecar_path(path), json.dumps(merged, indent=2, sort_keys=True) + "\n")


def agreement_record(bundle, precision):
    """The file whose sidecar holds ``precision``'s measured agreement for ``bundle`` (as
    exported): the int8 copy, or for bf16 (the fp32 file computed in bf16 by OpenVINO) a
    ``.bf16`` name beside it."""
    return variant_path(bundle, precision)


def record_agreement(bundle, agreement, images, folder, precision="int8", single_class=None):
    """Write the agreement measured at ``precision`` for ``bundle`` (as exported).
    ``single_class``: the one label the fp32 reference gave every image, if so; such an
    agreement is recorded but unlocks nothing (``for_precision`` refuses it)."""
    extra = {}
    if precision == "bf16":
        from oncolens.appliance.benchstats import cpu_model
        extra = {"precision": "bf16", "cpu": cpu_model(),
                 "runtime": "openvino INFERENCE_PRECISION_HINT bf16"}
    write_sidecar(agreement_record(bundle, precision), dict(extra, agreement_vs_fp32={
        "top1": agreement, "images": images, "dir": os.path.abspath(folder),
        "reference_single_class": single_class,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))


# what to run when a reduced precision has no recorded agreement yet
_UNMEASURED = {
    "int8": "--precision int8: {0} has no int8 copy with a measured agreement; make one with "
            "'oncolens bench --model {0} --images DIR --precisions fp32,int8 --calib-images "
            "TRAIN_DIR --agreement-images VAL_DIR'",
    "bf16": "--precision bf16: no measured agreement with fp32 for {0}; measure it with "
            "'oncolens bench --model {0} --images DIR --backends openvino --precisions "
            "fp32,bf16 --agreement-images VAL_DIR'",
}


def _fp32(bundle, batch_size):
    if int(batch_size) <= 1:
        return bundle
    try:
        return dynamic_batch(bundle)
    except MissingDependency as exc:  # a device with onnxruntime but not onnx
        log.warning("%s: running the batch-1 model one image at a time", exc)
        return bundle


def for_precision(bundle, precision, batch_size=1):
    """The bundle to run for ``precision``: fp32 as exported (dynamic batch when batching);
    int8 or bf16 only once its agreement with fp32 has been measured and recorded."""
    if precision not in PRECISIONS:
        raise UsageError("--precision: expected one of {}, got '{}'".format(
            ", ".join(PRECISIONS), precision))
    if precision == "fp32":
        return _fp32(bundle, batch_size)
    path = agreement_record(bundle, precision)
    runs_fp32_file = precision == "bf16"  # OpenVINO computes the exported file in bf16
    record = read_sidecar(path) if runs_fp32_file or os.path.isfile(path) else {}
    agreement = record.get("agreement_vs_fp32")
    if not agreement:
        raise UsageError(_UNMEASURED[precision].format(bundle.dir))
    if agreement.get("reference_single_class") is not None:
        raise UsageError("--precision {}: the agreement recorded for {} is no measure: the fp32 "
                         "reference predicted '{}' for every image of {}; measure it again "
                         "with 'oncolens bench --precisions fp32,{}' on a trained model or on "
                         "--agreement-images it tells apart".format(
                             precision, bundle.dir, agreement["reference_single_class"],
                             agreement["dir"], precision))
    log.warning("precision %s: %s (top-1 agreement with fp32 %.2f%% on %s of %s%s)",
                precision, bundle.dir if runs_fp32_file else path, 100.0 * agreement["top1"],
                plural(agreement["images"], "image"), agreement["dir"],
                ", measured on " + record["cpu"] if record.get("cpu") else "")
    if (record.get("calibration") or {}).get("reduce_range") is False and int8_reduce_range()[0]:
        log.warning("precision int8: %s was made with 8-bit weights on a CPU with VNNI or AMX; "
                    "this one has neither, and they can saturate here: delete it and run "
                    "'oncolens bench --precisions fp32,int8' here to remake it", path)
    return _fp32(bundle, batch_size) if runs_fp32_file else with_model(bundle, path)
