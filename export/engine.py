"""``oncolens export engine``: ONNX -> TensorRT engine with the Python API (no trtexec).

The build itself (TensorRT 8.0-8.6 and 10.x) is appliance/backends/trt_build.py, shared
with the runtime; this module adds the command line, INT8 calibration from real images
and the report of what was built where.
"""
import logging
import os

from oncolens.appliance import engines
from oncolens.appliance.cliutil import OneLineParser, cli_entry, normalize_flags, setup_logging
from oncolens.appliance.errors import UsageError, plural

log = logging.getLogger(__name__)


def build_parser():
    p = OneLineParser(
        prog="oncolens export engine",
        description="Build a TensorRT engine from a bundle's ONNX (needs TensorRT + pycuda: "
                    "a Jetson or an NVIDIA GPU host).  The engine is named as jetson-inference "
                    "names its cache and listed in model.json.")
    p.add_argument("--model-dir", default="", help="the model folder (default: current folder)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp16", "fp32", "int8"],
                   help="auto: fp16 where the GPU has fast FP16, else fp32")
    p.add_argument("--max-batch", type=int, default=1,
                   help="largest batch (> 1 needs an ONNX exported with --dynamic-batch)")
    p.add_argument("--opt-batch", type=int, default=1, help="batch size to tune for (1)")
    p.add_argument("--workspace", type=int, default=256, help="builder workspace in MiB (256)")
    p.add_argument("--calib-images", default="", help="int8: a dataset (its train/ is used) "
                   "or a folder of representative images")
    p.add_argument("--calib-count", type=int, default=256, help="int8: images used (256)")
    p.add_argument("--calib-batch", type=int, default=8, help="int8: calibration batch (8)")
    p.add_argument("--calib-cache", default="", help="int8: calibration cache file (default: "
                   "beside the engine, <engine name>.calibration)")
    p.add_argument("--dla-core", type=int, default=None, help="build for this DLA core (Xavier/Orin)")
    p.add_argument("--no-gpu-fallback", action="store_true",
                   help="DLA: fail instead of running unsupported layers on the GPU")
    p.add_argument("--timing-cache", default="", help="timing cache file (default: one per "
                   "TensorRT version and GPU under $ONCOLENS_CACHE_DIR/timing)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (0)")
    p.add_argument("--overwrite", action="store_true", help="rebuild an up-to-date engine")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    return p


def calibration_cache_path(bundle, api, args, onnx_sha256):
    """jetson-inference's name: <engine name without .engine>.calibration, beside the engine
    (for a read-only model folder, in the cache folder of the ONNX ``onnx_sha256``)."""
    if args.calib_cache:
        return args.calib_cache
    name = engines.engine_file_name(bundle.onnx_path, args.max_batch, api.version, "int8",
                                    args.dla_core, not args.no_gpu_fallback)
    name = name[:-len(".engine")] + ".calibration"
    if engines.folder_is_writable(bundle.dir):
        return os.path.join(bundle.dir, name)
    return os.path.join(engines.cache_dir_for(onnx_sha256), name)


def calibration_batch_size(bundle, args):
    """A fixed-batch ONNX calibrates at its own batch size; a dynamic one at --calib-batch."""
    batch = (bundle.info.get("onnx") or {}).get("batch", 1)
    return args.calib_batch if batch == "dynamic" else int(batch)


def make_int8_calibrator(bundle, api, cuda, args):
    from oncolens.appliance.preprocess import Preprocessor
    from oncolens.export.calibrate import CalibrationBatches, cache_check, make_calibrator
    from oncolens.export.images import sample_paths
    sha = bundle.onnx_check().sha256()  # the ONNX the engine is built from, hashed once
    cache = calibration_cache_path(bundle, api, args, sha)
    batches = None
    if args.calib_images:
        paths = sample_paths(args.calib_images, args.calib_count, split="train",
                             flag="--calib-images")
        batches = CalibrationBatches(paths, Preprocessor.from_bundle(bundle),
                                     calibration_batch_size(bundle, args))
        log.info("int8: calibrating on %s of %s from %s", plural(len(batches), "batch", "batches"),
                 plural(batches.batch_size, "image"), args.calib_images)
    elif not os.path.isfile(cache):
        raise UsageError("--precision int8 needs --calib-images DIR (real images, e.g. the "
                         "dataset) or an existing calibration cache ({} not found)".format(cache))
    read = cache_check(cache, sha, calibrating=batches is not None)
    return make_calibrator(api.trt, cuda, batches, cache, onnx_sha256=sha, read=read), cache


def build_engine(args):
    """Build as ``args`` say; returns (path, entry, built?)."""
    from oncolens.appliance.backends.trt_api import (CudaContext, TrtApi, import_cuda,
                                                     import_tensorrt)
    from oncolens.appliance.backends.trt_build import BuildOptions, build_for_bundle
    from oncolens.appliance.bundle import load_bundle
    trt = import_tensorrt("oncolens export engine")
    cuda = import_cuda("oncolens export engine")
    api = TrtApi(trt)
    bundle = load_bundle(args.model_dir or ".", labels_flag=None)
    ctx = CudaContext(cuda, args.device)
    calibrator = None
    try:
        with ctx:
            device = ctx.info()
            log.info("TensorRT %s, GPU '%s' (compute %d.%d)", api.version_text, device["name"],
                     device["compute_capability"][0], device["compute_capability"][1])
            cache = None
            if args.precision == "int8":
                calibrator, cache = make_int8_calibrator(bundle, api, cuda, args)
            options = BuildOptions(args.precision, args.max_batch, args.opt_batch,
                                   args.workspace, args.dla_core, not args.no_gpu_fallback,
                                   args.timing_cache or None, calibrator, cache,
                                   verbose=args.log_level == "debug")
            try:
                return build_for_bundle(bundle, api, device, options, args.overwrite)
            finally:
                if calibrator is not None:
                    calibrator.free()
    finally:
        ctx.close()


def check_numbers(args):
    """The numeric flags, before TensorRT loads: one line naming the flag otherwise."""
    for flag, value, least in (("--max-batch", args.max_batch, 1),
                               ("--opt-batch", args.opt_batch, 1),
                               ("--workspace", args.workspace, 1),
                               ("--calib-count", args.calib_count, 1),
                               ("--calib-batch", args.calib_batch, 1),
                               ("--dla-core", args.dla_core, 0), ("--device", args.device, 0)):
        if value is not None and value < least:
            raise UsageError("{} {}: expected {}".format(
                flag, value, "a positive number" if least else "0 or more"))
    if args.opt_batch > args.max_batch:
        raise UsageError("--opt-batch {}: expected at most --max-batch ({})".format(
            args.opt_batch, args.max_batch))


def check_cache_paths(args):
    """--calib-cache and --timing-cache are read when present and written after the build:
    checked before TensorRT is loaded, so a folder or an image's name given by mistake is a
    one-line error, not a failure at the end of a build of minutes (or an image written over)."""
    from oncolens.appliance.outpaths import check_output_file, check_text_file
    for flag, path in (("--calib-cache", args.calib_cache), ("--timing-cache", args.timing_cache)):
        if path:
            check_output_file(path, flag, overwrite=True)   # a cache is meant to be reused
            check_text_file(path, flag, expected="a cache file name (.calibration, .timing)")


@cli_entry("oncolens export engine")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    check_numbers(args)
    check_cache_paths(args)
    calib = [flag for flag, value in (("--calib-images", args.calib_images),
                                      ("--calib-cache", args.calib_cache)) if value]
    if calib and args.precision != "int8":  # said, not silently dropped
        log.warning("%s: used by --precision int8 only; ignored for --precision %s",
                    " and ".join(calib), args.precision)
    elif args.calib_images:  # a folder with images, before TensorRT loads and CUDA starts
        from oncolens.export.images import sample_paths
        sample_paths(args.calib_images, 1, split="train", flag="--calib-images")
    path, entry, built = build_engine(args)
    print("{} {}".format("built" if built else "up to date:", path))
    print("engine: TensorRT {}, {}, {}, max batch {}, GPU '{}'".format(
        entry["tensorrt"], entry["precision"].upper(), entry["device"], entry["max_batch"],
        entry["device_name"]))
    return 0
