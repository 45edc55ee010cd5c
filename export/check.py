"""The export check: is the ONNX file the checkpoint, and nothing else?

1. ``onnx.checker`` full check (structure and shape inference);
2. the checkpoint in torch against the ONNX in ONNX Runtime on the same images (real
   ones from a dataset's ``val/`` when given, random otherwise): top-1 agreement and
   max / mean |delta p|, failing beyond tolerance; the CAM output too when there is one.

No CUDA needed.
"""
import logging
import os

import numpy as np

from oncolens.appliance.errors import BundleError, MissingDependency, OncoLensError, plural

log = logging.getLogger(__name__)

MAX_DELTA = 1e-3        # largest |delta p| allowed between torch and ONNX Runtime (fp32)
MIN_AGREEMENT = 0.999   # smallest top-1 agreement allowed
CAM_MAX_DELTA = 1e-3


class ExportCheckError(OncoLensError):
    """The exported model does not compute what the checkpoint computes."""


def onnx_full_check(path, name=None):
    """onnx.checker with full_check (shape inference too); BundleError names the file (or
    ``name``, what it will be called)."""
    try:
        import onnx
    except ImportError:
        raise MissingDependency("onnx", "the export check", "pip install 'oncolens[onnx]'")
    if not os.path.isfile(path):
        raise BundleError("ONNX model not found: {} (run 'oncolens export onnx' first)".format(
            name or path))
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as exc:  # onnx raises ValidationError and friends
        raise BundleError("{}: onnx.checker failed ({})".format(
            name or path, str(exc).strip().splitlines()[0]))


def compare(ref, test):
    """Top-1 agreement and |delta p| between two (N, C) probability arrays."""
    ref = np.asarray(ref, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if ref.shape != test.shape:
        raise ExportCheckError("outputs differ in shape: {} vs {}".format(ref.shape, test.shape))
    delta = np.abs(ref - test)
    return {"n": int(ref.shape[0]),
            "agreement": float((ref.argmax(1) == test.argmax(1)).mean()),
            "max_abs_diff": float(delta.max()) if delta.size else 0.0,
            "mean_abs_diff": float(delta.mean()) if delta.size else 0.0}


def not_finite(outputs):
    """[(name, images whose output is not a number, images)] for each of ``outputs`` ((name,
    (N, C) probabilities) pairs) with NaN or infinity in a row (postprocess.finite_rows, as
    batch and evaluate check). compare() cannot see it: argmax of NaN is the first class on
    both sides (agreement 100%) and |dp| NaN is never above a tolerance."""
    from oncolens.appliance.postprocess import finite_rows
    found = []
    for name, probs in outputs:
        bad = int((~finite_rows(probs)).sum())
        if bad:
            found.append((name, bad, len(probs)))
    return found


def not_a_number_error(found):
    """The one-line error for not_finite's findings."""
    return ExportCheckError(
        "the model's output is not a number (NaN or infinity) from {}: the model is broken "
        "(weights a diverged training run left, or an overflow in its runtime); do not "
        "deploy it".format("; ".join("{} for {} of {}".format(name, bad, plural(n, "image"))
                                     for name, bad, n in found)))


def format_stats(name, stats):
    return "{}: top-1 agreement {:.2f}% ({}), max |dp| {:.2e}, mean |dp| {:.2e}".format(
        name, 100.0 * stats["agreement"], plural(stats["n"], "image"), stats["max_abs_diff"],
        stats["mean_abs_diff"])


class TorchReference(object):
    """The checkpoint in torch: probabilities (and the ResNet CAM) for a batch."""

    def __init__(self, checkpoint_path):
        from oncolens.appliance.archs import load_checkpoint, model_from_checkpoint
        self.ckpt = load_checkpoint(checkpoint_path)
        self.model = model_from_checkpoint(self.ckpt, checkpoint_path)
        self.arch = self.ckpt["arch"]

    def run(self, batch, cam=False, chunk=16):
        import torch
        probs, cams = [], []
        with torch.no_grad():
            for start in range(0, len(batch), chunk):
                x = torch.from_numpy(np.ascontiguousarray(batch[start:start + chunk]))
                if cam:
                    from oncolens.export.cam import with_cam
                    p, c = with_cam(self.model, activation=True)(x)
                    cams.append(c.numpy())
                else:
                    p = torch.softmax(self.model(x), dim=1)
                probs.append(p.numpy())
        return np.concatenate(probs), (np.concatenate(cams) if cam else None)


def onnx_runtime(bundle):
    from oncolens.appliance.backends.ort import OnnxRuntimeBackend
    return OnnxRuntimeBackend(bundle, providers=["CPUExecutionProvider"])


def verdict(stats, max_delta, min_agreement):
    """Why these stats fail the thresholds, or None when they pass."""
    if stats["agreement"] < min_agreement:
        return "top-1 agreement {:.2f}% < {:.2f}%".format(100 * stats["agreement"],
                                                          100 * min_agreement)
    if max_delta is not None and stats["max_abs_diff"] > max_delta:
        return "max |dp| {:.2e} > {:.0e}".format(stats["max_abs_diff"], max_delta)
    return None


def check_export(model_dir, onnx_path=None, checkpoint=None, images_dir=None, n=32,
                 max_delta=MAX_DELTA, min_agreement=MIN_AGREEMENT, seed=0, bundle=None,
                 onnx_name=None):
    """Run the export check on a bundle; returns the stats, raises ExportCheckError.

    ``bundle`` (instead of reading ``model_dir``) is an export not yet in its bundle;
    ``onnx_name`` is what messages call its file (the name it will have)."""
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.preprocess import Preprocessor
    from oncolens.export.images import check_images
    bundle = bundle or load_bundle(onnx_path or model_dir, labels_flag=None)
    onnx_file = bundle.model_path or bundle.onnx_path
    onnx_name = onnx_name or onnx_file
    onnx_full_check(onnx_file, onnx_name)
    ckpt_name = checkpoint or (bundle.info.get("onnx") or {}).get("checkpoint") \
        or "model_best.pth.tar"
    ckpt_path = ckpt_name if os.path.isabs(ckpt_name) else os.path.join(bundle.dir, ckpt_name)
    if checkpoint:  # --input: a folder or a missing file named in one line, before any work
        from oncolens.appliance.archs import check_checkpoint_file
        check_checkpoint_file(ckpt_path, "--input", checkpoint)
    batch, source = check_images(bundle.info, Preprocessor.from_bundle(bundle), images_dir,
                                 n, seed)
    with onnx_runtime(bundle) as backend:
        result = backend.infer(batch)
    has_cam = result.cam is not None
    ref_probs, ref_cam = TorchReference(ckpt_path).run(batch, cam=has_cam)
    found = not_finite([("{} (torch)".format(ckpt_path), ref_probs),
                        ("{} (ONNX Runtime)".format(onnx_name), result.probs)])
    if found:
        raise not_a_number_error(found)
    stats = compare(ref_probs, result.probs)
    stats.update(images=source, onnx=onnx_name, checkpoint=ckpt_path)
    log.info("%s", format_stats("torch vs ONNX Runtime", stats))
    problem = verdict(stats, max_delta, min_agreement)
    if has_cam:
        stats["cam_max_abs_diff"] = float(np.abs(ref_cam - result.cam).max())
        if problem is None and stats["cam_max_abs_diff"] > CAM_MAX_DELTA:
            problem = "cam_0 max |d| {:.2e} > {:.0e}".format(stats["cam_max_abs_diff"],
                                                             CAM_MAX_DELTA)
    if problem:
        raise ExportCheckError("{} does not match {} on {}: {} (the export is wrong; do not "
                               "deploy it)".format(onnx_name, ckpt_path, source, problem))
    return stats
