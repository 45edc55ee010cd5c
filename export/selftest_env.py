"""The steps of ``oncolens selftest``: environment, ONNX check, engines, verification,
speed; and the JSON + Markdown report."""
import io
import json
import logging
import os
import platform
import sys
import time

import numpy as np

from oncolens import __version__
from oncolens.appliance.errors import MissingDependency, OncoLensError
from oncolens.appliance.outpaths import replace_text

log = logging.getLogger(__name__)


class Skip(Exception):
    """A step that cannot run on this machine; the message says why."""


def _version(module):
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "installed")
    except ImportError:
        return "not installed"


def _read_first_line(path):
    try:
        with io.open(path, "r", encoding="utf-8", errors="replace") as fh:
            return fh.readline().strip()
    except (IOError, OSError):
        return None


def jetpack_version():
    """The nvidia-jetpack package's version (JetPack 4.6 and later), or None."""
    import subprocess
    try:
        with open(os.devnull, "w") as null:
            out = subprocess.check_output(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"],
                                          stderr=null, universal_newlines=True, timeout=10)
        return out.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cuda_info():
    try:
        import pycuda.driver as cuda
    except ImportError:
        return {"pycuda": "not installed"}
    info = {"pycuda": "installed"}
    try:
        cuda.init()
        info["cuda_toolkit"] = ".".join(str(v) for v in cuda.get_version())
        info["cuda_driver"] = cuda.get_driver_version()
        info["gpu"] = cuda.Device(0).name()
    except Exception as exc:  # pycuda raises its own types; the report says what happened
        info["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return info


def environment():
    """What a bug report needs to know about this machine."""
    env = {"oncolens": __version__, "python": sys.version.split()[0],
           "platform": platform.platform(), "machine": platform.machine(),
           "l4t": _read_first_line("/etc/nv_tegra_release") or "not a Jetson (no "
                                                                "/etc/nv_tegra_release)",
           "jetpack": jetpack_version() or "not found (nvidia-jetpack package)",
           "tensorrt": _version("tensorrt"), "onnxruntime": _version("onnxruntime"),
           "torch": _version("torch"), "numpy": np.__version__}
    env.update(cuda_info())
    try:
        import onnxruntime
        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    return env


# -- speed ---------------------------------------------------------------------------------
def network_fps(backend, shape, frames):
    """Inference only, batch 1, on a preprocessed tensor (what jetson-inference reports)."""
    x = np.random.RandomState(0).normal(0, 1, (1,) + tuple(shape)).astype(np.float32)
    for _ in range(3):
        backend.infer(x)
    start = time.time()
    for _ in range(frames):
        backend.infer(x)
    elapsed = max(time.time() - start, 1e-9)
    return {"network_fps": round(frames / elapsed, 2),
            "network_ms": round(1000.0 * elapsed / frames, 3)}


def end_to_end_fps(backend, bundle, paths, frames):
    """Read + decode + preprocess + infer + top-1 per image file, batch 1."""
    from oncolens.appliance.imageio import read_image
    from oncolens.appliance.postprocess import top_k
    from oncolens.appliance.preprocess import Preprocessor
    pre = Preprocessor.from_bundle(bundle)
    start = time.time()
    for i in range(frames):
        rgb = read_image(paths[i % len(paths)])
        probs = backend.infer(pre(rgb)[None]).probs
        top_k(probs[0], bundle.labels, 1, 0.0)
    elapsed = max(time.time() - start, 1e-9)
    return {"end_to_end_fps": round(frames / elapsed, 2),
            "end_to_end_ms": round(1000.0 * elapsed / frames, 3)}


def speed(backend, bundle, paths, frames):
    result = network_fps(backend, bundle.input_shape, frames)
    if paths:
        result.update(end_to_end_fps(backend, bundle, paths, frames))
    result["summary"] = "network {} FPS, end-to-end {} FPS (batch 1, {} frames)".format(
        result["network_fps"], result.get("end_to_end_fps", "n/a (no --images)"), frames)
    return result


# -- steps ---------------------------------------------------------------------------------
class Context(object):
    """What the steps share: the bundle, images, the ONNX Runtime reference."""

    def __init__(self, args):
        from oncolens.appliance.bundle import load_bundle
        from oncolens.appliance.preprocess import Preprocessor
        from oncolens.export.images import check_images, image_folder, sample_paths
        self.args = args
        self.bundle = load_bundle(args.model_dir, labels_flag=None)
        self.batch, self.source = check_images(self.bundle.info,
                                               Preprocessor.from_bundle(self.bundle),
                                               args.images or None, args.count)
        self.paths = sample_paths(args.images, args.frames) if args.images else []
        self.val_dir = image_folder(args.images) if args.images else None
        self.reference = None


def step_onnx(ctx):
    from oncolens.export.check import check_export, onnx_full_check, onnx_runtime
    ckpt = os.path.join(ctx.bundle.dir, (ctx.bundle.info.get("onnx") or {}).get(
        "checkpoint", "model_best.pth.tar"))
    if os.path.isfile(ckpt):
        stats = check_export(ctx.bundle.dir, images_dir=ctx.args.images or None,
                             n=min(ctx.args.count, 32))
        stats["summary"] = "torch vs ONNX Runtime: {:.2f}% agreement, max |dp| {:.1e}".format(
            100 * stats["agreement"], stats["max_abs_diff"])
    else:
        onnx_full_check(ctx.bundle.onnx_path)
        stats = {"summary": "onnx.checker passed (no checkpoint here to compare with)"}
    with onnx_runtime(ctx.bundle) as backend:
        reference = backend.infer(ctx.batch).probs
    _check_numbers("{} (ONNX Runtime)".format(ctx.bundle.onnx_path), reference)
    ctx.reference = reference  # the engines are verified against it only when it is numbers
    return stats


def _check_numbers(name, probs):
    """ExportCheckError where ``probs`` has an output that is not a number (NaN, infinity):
    agreement with it would read 100% (argmax of NaN is the first class)."""
    from oncolens.export.check import not_a_number_error, not_finite
    found = not_finite([(name, probs)])
    if found:
        raise not_a_number_error(found)


def step_ort_speed(ctx):
    from oncolens.export.check import onnx_runtime
    with onnx_runtime(ctx.bundle) as backend:
        return speed(backend, ctx.bundle, ctx.paths, ctx.args.frames)


def tensorrt_available():
    from oncolens.appliance.backends.trt_api import import_cuda, import_tensorrt
    try:
        import_tensorrt("building engines")
        import_cuda("building engines")
    except MissingDependency as exc:
        return str(exc)
    return None


def step_engine(ctx, precision, missing):
    if missing:
        raise Skip(missing)
    if precision == "int8" and not ctx.args.images:
        raise Skip("int8 needs real images to calibrate: pass --images DATASET")
    from oncolens.export.engine import build_engine, build_parser
    argv = ["--model-dir", ctx.bundle.dir, "--precision", precision]
    if precision == "int8":
        argv += ["--calib-images", ctx.args.images]
    path, entry, built = build_engine(build_parser().parse_args(argv))
    ctx.engine_paths = getattr(ctx, "engine_paths", {})
    ctx.engine_paths[precision] = path
    return {"engine": path, "built": built, "tensorrt": entry["tensorrt"],
            "gpu": entry["device_name"], "summary": "{} {}".format(
                "built" if built else "up to date:", os.path.basename(path))}


def _open_engine(ctx, precision):
    path = getattr(ctx, "engine_paths", {}).get(precision)
    if not path:
        raise Skip("no {} engine (its build step did not pass)".format(precision))
    from oncolens.appliance.backends.tensorrt import TensorRTBackend
    from oncolens.export.verify import bundle_for_engine
    return TensorRTBackend(bundle_for_engine(ctx.bundle, path), allow_rebuild=False)


def step_verify(ctx, precision):
    from oncolens.export.check import compare
    from oncolens.export.verify import THRESHOLDS
    if ctx.reference is None:
        raise Skip("no ONNX Runtime reference (the ONNX check did not pass)")
    with _open_engine(ctx, precision) as backend:
        probs = backend.infer(ctx.batch).probs
    _check_numbers("the {} engine (TensorRT)".format(precision), probs)
    stats = compare(ctx.reference, probs)
    stats["threshold"] = THRESHOLDS[precision]
    stats["summary"] = "vs ONNX Runtime on {}: {:.2f}% agreement (>= {:.1f}%), max |dp| " \
        "{:.1e}".format(ctx.source, 100 * stats["agreement"], 100 * stats["threshold"],
                        stats["max_abs_diff"])
    if stats["agreement"] < stats["threshold"]:
        raise OncoLensError(stats["summary"])
    return stats


def step_engine_speed(ctx, precision):
    with _open_engine(ctx, precision) as backend:
        return speed(backend, ctx.bundle, ctx.paths, ctx.args.frames)


def run_steps(report, args, precisions):
    ctx = Context(args)
    report.run("onnx check", step_onnx, ctx)
    report.run("speed onnxruntime (CPU/CUDA EP)", step_ort_speed, ctx)
    missing = tensorrt_available()
    for precision in precisions:
        report.run("engine " + precision, step_engine, ctx, precision, missing)
        report.run("verify " + precision, step_verify, ctx, precision)
        report.run("speed tensorrt " + precision, step_engine_speed, ctx, precision)


# -- report --------------------------------------------------------------------------------
def _summary(detail):
    text = detail.get("summary", "") if isinstance(detail, dict) else str(detail)
    return text.replace("|", "\\|")   # a Markdown table cell


def write_reports(json_path, md_path, env, steps, args):
    doc = {"oncolens_selftest": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "model_dir": os.path.abspath(args.model_dir), "images": args.images or None,
           "environment": env, "steps": steps}
    text = json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"
    lines = ["# OncoLens selftest", "", "Created {} for `{}`.".format(doc["created"],
                                                                     doc["model_dir"]), "",
             "## Environment", "", "| item | value |", "|---|---|"]
    for key in sorted(env):
        lines.append("| {} | {} |".format(key, str(env[key]).replace("|", "/")))
    lines += ["", "## Steps", "", "| step | status | seconds | detail |", "|---|---|---|---|"]
    for s in steps:
        lines.append("| {} | {} | {} | {} |".format(s["step"], s["status"], s["seconds"],
                                                    _summary(s["detail"])))
    skipped = [s for s in steps if s["status"] == "skipped"]
    if skipped:
        lines += ["", "Skipped steps did not run on this machine; the reason is in the table."]
    # both made before either is written; each written beside its name and moved there when
    # whole, so Ctrl-C or a full disk midway leaves no half report, and an earlier one whole
    for path, content in ((json_path, text), (md_path, "\n".join(lines) + "\n")):
        replace_text(path, content)
