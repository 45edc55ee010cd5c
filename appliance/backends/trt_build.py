"""ONNX -> TensorRT engine with the Python API (no trtexec), for 8.0-8.6 and 10.x.

Used by ``oncolens export engine`` and by the tensorrt backend when it has to build or
rebuild an engine.  Names, placement and model.json entries come from appliance/engines.py.
"""
import io
import logging
import os
import re

from oncolens.appliance import engines
from oncolens.appliance.bundle import (MODEL_JSON, read_model_info, sha256_file,
                                       write_model_info)
from oncolens.appliance.errors import BundleError, OncoLensError, UsageError
from oncolens.appliance.locks import folder_locked
from oncolens.appliance.onnxrecord import record_stat, recorded_stat
from oncolens.appliance.outpaths import check_not_read_only, replace_file

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_MB = 256   # the Nano has 4 GB shared with the CPU


class BuildOptions(object):
    """What to build: precision ('auto', 'fp16', 'fp32', 'int8'), batch, device and caches."""

    def __init__(self, precision="auto", max_batch=1, opt_batch=1, workspace_mb=None,
                 dla_core=None, gpu_fallback=True, timing_cache=None, calibrator=None,
                 calibration_cache=None, verbose=False):
        self.precision = precision
        self.max_batch = int(max_batch)
        self.opt_batch = max(1, min(int(opt_batch), self.max_batch))
        self.workspace_mb = int(workspace_mb or DEFAULT_WORKSPACE_MB)
        self.dla_core = dla_core
        self.gpu_fallback = bool(gpu_fallback)
        self.timing_cache = timing_cache
        self.calibrator = calibrator            # an IInt8EntropyCalibrator2 (int8 only)
        self.calibration_cache = calibration_cache
        self.verbose = verbose
        if self.max_batch < 1:
            raise UsageError("--max-batch: expected a positive batch size, got {}".format(
                max_batch))


def fast_types(builder, device):
    """(fast fp16?, fast int8?): the builder's answer, or (TensorRT 10.5+ deprecates it)
    the compute capability's: FP16 on 5.3, 6.0, 6.2 and 7.0+; INT8 on 6.1 and 7.0+."""
    fp16 = getattr(builder, "platform_has_fast_fp16", None)
    int8 = getattr(builder, "platform_has_fast_int8", None)
    cc = tuple((device or {}).get("compute_capability") or (0, 0))
    if fp16 is None:
        fp16 = cc in ((5, 3), (6, 0), (6, 2)) or cc >= (7, 0)
    if int8 is None:
        int8 = cc == (6, 1) or cc >= (7, 0)
    return bool(fp16), bool(int8)


def resolve_precision(builder, requested, device=None):
    """'auto' -> fp16 where the GPU has fast FP16, else fp32 with a warning."""
    fast_fp16, fast_int8 = fast_types(builder, device)
    if requested in (None, "auto"):
        if fast_fp16:
            return "fp16"
        log.warning("this GPU has no fast FP16: building FP32 (pass --precision fp16 to force)")
        return "fp32"
    precision = engines.check_precision(requested)
    if precision == "fp16" and not fast_fp16:
        log.warning("this GPU has no fast FP16: the FP16 engine may be slower than FP32")
    if precision == "int8" and not fast_int8:
        log.warning("this GPU has no fast INT8: the INT8 engine may be slower than FP16")
    return precision


def default_timing_cache(api, device_name):
    """One timing cache per TensorRT version and GPU, shared by every build here."""
    tag = re.sub(r"[^A-Za-z0-9]+", "-", device_name or "gpu").strip("-")
    return os.path.join(engines.cache_root(), "timing", "{}-{}.timing".format(api.code, tag))


def parse_onnx(api, builder, logger, onnx_path):
    trt = api.trt
    network = builder.create_network(api.network_flags())
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as fh:
        ok = parser.parse(fh.read())
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BundleError("{}: TensorRT {}'s ONNX parser refused it: {}".format(
            onnx_path, api.version_text, "; ".join(errors) or "no reason given"))
    return network, parser


def network_input(network):
    if network.num_inputs != 1:
        raise BundleError("the ONNX model has {} inputs; OncoLens engines take one".format(
            network.num_inputs))
    return network.get_input(0)


def add_batch_profile(builder, config, tensor, options):
    """Fixed batch: max_batch must equal it.  Dynamic batch: a profile 1..max_batch."""
    shape = tuple(tensor.shape)
    if shape[0] != -1:
        if options.max_batch != shape[0]:
            raise UsageError("--max-batch {}: the ONNX has a fixed batch of {}; export it with "
                             "'oncolens export onnx --dynamic-batch' for other sizes".format(
                                 options.max_batch, shape[0]))
        return False
    rest = shape[1:]
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, (1,) + rest, (options.opt_batch,) + rest,
                      (options.max_batch,) + rest)
    config.add_optimization_profile(profile)
    if options.calibrator is not None:
        calib = builder.create_optimization_profile()
        size = options.calibrator.get_batch_size()
        calib.set_shape(tensor.name, (size,) + rest, (size,) + rest, (size,) + rest)
        config.set_calibration_profile(calib)
    return True


def configure(api, builder, config, precision, options):
    trt = api.trt
    api.set_workspace(config, options.workspace_mb << 20)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        if options.calibrator is None:
            raise UsageError("--precision int8 needs calibration images (--calib-images DIR) "
                             "or a calibration cache")
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)   # layers without INT8 kernels fall back to FP16
        config.int8_calibrator = options.calibrator
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(options.dla_core)
        if options.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def load_timing_cache(config, path):
    data = b""
    if path and os.path.isfile(path):
        with open(path, "rb") as fh:
            data = fh.read()
        log.info("timing cache: reusing %s (%d bytes)", path, len(data))
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)   # ignore_mismatch=False: a stale cache is refused


def save_timing_cache(config, path):
    if not path:
        return
    cache = config.get_timing_cache()
    if cache is None:
        return
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        os.makedirs(folder)
    write_bytes(path, bytes(cache.serialize()))


def build_plan(api, onnx_path, precision, options, device_name):
    """Parse, configure and build: (serialized engine bytes, dynamic batch?)."""
    logger = api.logger(options.verbose)
    builder = api.trt.Builder(logger)
    network, parser = parse_onnx(api, builder, logger, onnx_path)
    config = builder.create_builder_config()
    configure(api, builder, config, precision, options)
    dynamic = add_batch_profile(builder, config, network_input(network), options)
    timing = options.timing_cache or default_timing_cache(api, device_name)
    load_timing_cache(config, timing)
    log.info("building a TensorRT %s %s engine from %s (max batch %d); this takes minutes "
             "on a Jetson", api.version_text, precision.upper(), onnx_path, options.max_batch)
    plan = api.build_serialized(builder, network, config)
    if plan is None:
        raise OncoLensError("TensorRT {} could not build an engine from {} (run with "
                            "--log-level debug for its log)".format(api.version_text, onnx_path))
    save_timing_cache(config, timing)
    del parser
    return plan, dynamic


def write_bytes(path, data):
    """``data`` written beside ``path`` and moved there when whole (outpaths.replace_file)."""
    def write(tmp):
        with io.open(tmp, "wb") as fh:
            fh.write(data)
    replace_file(path, write)


def record(bundle, path, entry, in_cache):
    """List the engine in model.json, or in the cache folder's index when the model folder is
    read-only or has no model.json (a bare jetson-inference export: none is made up)."""
    if in_cache or bundle.inferred:
        engines.write_cache_index(engines.cache_dir_for(entry["onnx_sha256"]),
                                  dict(entry, file=os.path.abspath(path)))
        return
    # model.json as it is now, not as it was when the build began minutes ago, and under
    # the folder's lock from reading it to writing it back: an engine another build lists
    # meanwhile (another precision, at the same time) stays listed
    engine, path = path, os.path.join(bundle.dir, MODEL_JSON)
    with folder_locked(bundle.dir, "{}: another build is adding its engine to it; waiting "
                       "for it to finish".format(path)):
        check_onnx_unchanged(bundle.onnx_path, entry["onnx_sha256"], engine)
        if os.path.isfile(path):
            bundle.info = read_model_info(path)
        onnx = bundle.info.get("onnx")
        if onnx and onnx.get("sha256") == entry.get("onnx_sha256"):  # the load's check
            onnx.update(record_stat(entry))  # (onnxrecord.py) need not hash it either
        engines.add_entry(bundle.info, entry)
        write_model_info(path, bundle.info)


def refresh_listing(bundle, path, entry, stat, in_cache):
    """An up-to-date engine's entry (and model.json's export record) given the ONNX's size
    and mtime (``stat``) where it lacks them (written before they were recorded) or holds
    others (the ONNX touched, or copied without its times): its SHA-256 matched, so the next
    starts need not hash it. A listing that cannot be written stays as it was (debug line)."""
    in_cache = in_cache or bundle.inferred
    fresh = dict(entry, **stat)
    onnx = {} if in_cache else bundle.info.get("onnx") or {}
    if not stat or (fresh == entry and (onnx.get("sha256") != entry["onnx_sha256"] or
                                        recorded_stat(onnx) == stat)):
        return
    try:
        if not in_cache:
            check_not_read_only(os.path.join(bundle.dir, MODEL_JSON), "recording its times")
            if not engines.folder_is_writable(bundle.dir):
                raise UsageError("{} is read-only".format(bundle.dir))
        record(bundle, path, fresh, in_cache)
    except (UsageError, IOError, OSError) as exc:
        log.debug("%s: the ONNX's size and time not recorded (%s)", path, exc)
        return
    log.info("%s: recorded its ONNX's size and time (the SHA-256 matched): a start need "
             "not hash %s", path, bundle.onnx_path)


def check_onnx_unchanged(onnx_path, built_from, engine):
    """Refuse to list ``engine`` (and remove it) when ``onnx_path`` is no longer the ONNX it
    was built from (``built_from``, its SHA-256): 'export onnx' replaced it during the
    build (under the folder's lock, which the caller holds). That engine was listed in the
    new model.json, and the runtime then ran the old model's weights under the new one's
    labels."""
    now = sha256_file(onnx_path) if os.path.isfile(onnx_path) else None
    if not built_from or now == built_from:
        return
    try:
        os.remove(engine)
    except OSError as exc:
        log.warning("%s: could not remove it (%s)", engine, exc.strerror or exc)
    raise OncoLensError("{} was replaced while the engine was built from it (SHA-256 {}... "
                        "then, {} now): the engine {} is not listed and was removed; build "
                        "it again".format(onnx_path, built_from[:12],
                                          now[:12] + "..." if now else "no file",
                                          engine))


def engine_target(bundle, api, precision, options):
    """(ONNX path, its sha256, engine file name, its size and mtime) for this build."""
    onnx_path = bundle.onnx_path
    if not os.path.isfile(onnx_path):
        raise BundleError("ONNX model not found: {} (run 'oncolens export onnx' first)".format(
            onnx_path))
    name = engines.engine_file_name(onnx_path, options.max_batch, api.version, precision,
                                    options.dla_core, options.gpu_fallback)
    check = bundle.onnx_check()  # the bundle's one hash of it (its stat taken before)
    return onnx_path, check.sha256(), name, dict(check.stat)


def up_to_date(entry, sha, device):
    """An engine listed as built from this ONNX for this GPU (the name holds the TensorRT
    version, precision, batch and DLA core, but not the GPU: a folder copied from an Orin
    to a Nano with the same JetPack has engines of the same names)."""
    built_on = (entry or {}).get("device_name")
    return bool(entry) and entry.get("onnx_sha256") == sha and \
        built_on in (None, device.get("name"))


def stale_reason(entry, sha, device, onnx_path, listing):
    """Why an engine file of the right name is built again (for the log): only what is
    known. ``listing`` is the file that would list it (model.json, or engines.json)."""
    if not entry:  # a build stopped before listing it, jetson-inference's, or a copy
        return "no entry in {} records which ONNX and GPU it was built for (a build " \
            "stopped before listing it, or another tool built it), so it cannot be " \
            "called up to date".format(listing)
    if not entry.get("onnx_sha256"):
        return "its entry in {} records no ONNX checksum, so it cannot be called up to " \
            "date".format(listing)
    if entry.get("onnx_sha256") == sha:
        return "it was built for the GPU '{}', this GPU is '{}'".format(
            entry.get("device_name"), device.get("name"))
    return "it was built from another ONNX than the current {} (SHA-256 {}..., now " \
        "{}...)".format(onnx_path, entry["onnx_sha256"][:12], sha[:12])


def build_for_bundle(bundle, api, device, options, overwrite=False, said=None):
    """Build (or reuse) the engine ``options`` describe; returns (path, entry, built?).

    The CUDA context must be current.  ``device`` is CudaContext.info(). ``said``: the
    engine file whose replacement the caller has warned of, saying why (not said again).
    """
    builder = api.trt.Builder(api.logger(options.verbose))
    precision = resolve_precision(builder, options.precision, device)
    del builder
    onnx_path, sha, name, stat = engine_target(bundle, api, precision, options)
    for cached, candidate in enumerate(engines.engine_candidates(bundle.dir, name, sha)):
        entry = engines.entry_for_file(bundle.info, bundle.dir, candidate, onnx_path)
        if os.path.isfile(candidate) and not overwrite and up_to_date(entry, sha, device):
            log.info("engine up to date: %s", candidate)
            refresh_listing(bundle, candidate, entry, stat, bool(cached))
            return candidate, entry, False
    path, in_cache = engines.place_engine(bundle.dir, name, sha)
    if not (in_cache or bundle.inferred):  # before the build of minutes, not after it
        check_not_read_only(os.path.join(bundle.dir, MODEL_JSON),
                            "this build (listing its engine)")
    plan, dynamic = build_plan(api, onnx_path, precision, options, device["name"])
    if os.path.exists(path) and not overwrite:
        entry = engines.entry_for_file(bundle.info, bundle.dir, path, onnx_path)
        listing = os.path.join(engines.cache_dir_for(sha), engines.CACHE_INDEX) if \
            in_cache or bundle.inferred else os.path.join(bundle.dir, MODEL_JSON)
        if said and os.path.abspath(said) == os.path.abspath(path):
            log.debug("replacing %s (the warning above says why)", path)
        else:
            log.warning("replacing %s: %s", path,
                        stale_reason(entry, sha, device, onnx_path, listing))
    write_bytes(path, plan)
    entry = engines.make_entry(path, bundle.dir, api.version, device["name"], precision,
                               options.max_batch, options.dla_core, options.gpu_fallback,
                               dynamic, sha, device.get("compute_capability"),
                               options.calibration_cache if precision == "int8" else None,
                               stat)
    record(bundle, path, entry, in_cache)
    log.info("engine written: %s (%d bytes)", path, len(plan))
    return path, entry, True
