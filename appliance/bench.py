"""``oncolens bench``'s measurements: network-only and end-to-end images/s per backend x
precision x batch size, latency percentiles, stage shares, top-1 agreement with fp32, and
the naive PyTorch loop measured in the same run (the timed loops: bench_measure.py).

fp32 reference: ONNX Runtime running the exported model, through the same preprocessing.
Agreement of every run (and of the baseline) is the share of agreement images whose top-1
class equals the reference's.  Nothing here asserts a speed; it measures and reports.
"""
import collections
import logging
import signal
import time

from oncolens.appliance.backends import open_backend
from oncolens.appliance.bench_measure import (Unreadable, agreement, end_to_end, network_only,
                                              not_numbers, predict_all, sample_batch)
from oncolens.appliance.benchstats import gpu_info, loadavg, machine_info
from oncolens.appliance.errors import MissingDependency, OncoLensError, plural
from oncolens.appliance.lowbits import LowBitsWarning
from oncolens.appliance.preprocess import Preprocessor

log = logging.getLogger(__name__)


def _prepare(bundle, backend_name, precision, calib_images, calib_count):
    """The model file a backend x precision runs: the checkpoint for torch (fp32, or fp16
    on a CUDA GPU), else the exported ONNX (fp32, or bf16 computed by OpenVINO) or its int8
    copy."""
    from oncolens.appliance import variants
    if backend_name == "torch":
        if precision not in ("fp32", "fp16"):
            raise OncoLensError("--precisions {}: the torch backend runs fp32, or fp16 on a "
                                "CUDA GPU".format(precision))
        return bundle
    if precision == "bf16" and backend_name != "openvino":
        raise OncoLensError("--precisions bf16: only the openvino backend (on a CPU with "
                            "AVX512-BF16 or AMX)")
    if precision in ("fp32", "bf16"):  # bf16: OpenVINO computes the fp32 file in bf16
        return variants.dynamic_batch(bundle)
    if precision == "int8":
        if not calib_images:
            raise OncoLensError("--precisions int8: needs --calib-images DIR (e.g. the train/ "
                                "split) to calibrate on")
        return variants.quantize_int8(bundle, calib_images, calib_count)
    if precision == "fp16":
        raise OncoLensError("--precisions fp16: only the torch backend on a CUDA GPU here (no "
                            "fp16 arithmetic on this CPU; TensorRT FP16 engines are timed by "
                            "'oncolens selftest' on the device)")
    raise OncoLensError("--precisions: unknown precision '{}' (fp32, bf16, fp16 or int8)".format(
        precision))


def _open(cfg, bundle, backend_name, precision):
    """(model, backend) for one backend x precision; raises OncoLensError to skip it."""
    model = _prepare(bundle, backend_name, precision, cfg["calib_images"], cfg["calib_count"])
    options = dict(cfg["backend_options"])
    if backend_name == "torch":
        if precision == "fp16" and not str(cfg["device"]).startswith("cuda"):
            raise _torch_precision_skip(precision, "fp32", cfg["device"])  # before loading it
        options.update(precision=precision, device=cfg["device"])
    if backend_name in ("openvino", "tensorrt"):  # TensorRT: an engine of that precision
        options.update(precision=precision)
    backend = open_backend(backend_name, model, **options)  # bf16 without it: skipped
    if backend_name in ("torch", "tensorrt") and backend.precision != precision:
        backend.close()  # never figures of one precision under another's name
        if backend_name == "torch":
            raise _torch_precision_skip(precision, backend.precision, cfg["device"])
        raise OncoLensError("--precisions {}: the tensorrt backend runs a {} engine here "
                            "({})".format(precision, backend.precision,
                                          getattr(backend, "engine_path", "?")))
    return model, backend


def _torch_precision_skip(wanted, runs, device):
    return OncoLensError("--precisions {}: the torch backend runs {} on {} (fp16 needs a CUDA "
                         "GPU: --device cuda)".format(wanted, runs, device))


def _preprocessors(cfg, bundle, backend):
    """[(mode, preprocessor)] for cfg['preprocess'], and the modes skipped with why."""
    chosen, skipped = [], []
    for mode in cfg["preprocess"]:
        if mode == "host":
            chosen.append((mode, Preprocessor.from_bundle(bundle)))
        elif hasattr(backend, "device_preprocessor"):
            chosen.append((mode, backend.device_preprocessor()))
        else:
            skipped.append((mode, "--preprocess device: only the torch backend takes its "
                                  "input on its own device"))
    return chosen, skipped


def _measure(cfg, backend, model, pre, run, runs):
    """Network-only and end-to-end figures of every batch size for one preprocessing, each
    appended to ``runs`` as it is measured (a later batch size that fails loses none)."""
    for bs in cfg["batch_sizes"]:
        log.info("bench: %s %s batch %d, %s preprocessing", run["backend"], run["precision"],
                 bs, run["preprocess"])
        # the file that ran: for TensorRT the engine, not the ONNX it was built from
        one = dict(run, batch_size=bs,
                   model_file=getattr(backend, "engine_path", None) or model.model_path)
        batch = sample_batch(pre, cfg["files"], bs, cfg["unreadable"])
        one.update(network_only(backend, batch, cfg["warmup"], cfg["min_seconds"]))
        if run["backend"] == "openvino":
            from oncolens.appliance.bench_ceiling import openvino_throughput
            one["runtime_ceiling"] = openvino_throughput(
                model, batch, cfg["min_seconds"], cfg["backend_options"].get("threads"),
                run["precision"])
        one.update(end_to_end(backend, pre, cfg["bundle"].labels, cfg["files"], bs,
                              cfg["workers"], cfg["warmup"], cfg["unreadable"]))
        runs.append(one)


def device_of(backend):
    """Where a backend runs, as one lower-case word: cpu, cuda or cuda:N."""
    device = getattr(backend, "device", None)
    if isinstance(device, dict):  # TensorRT: the GPU's properties
        return "cuda"
    return str(device or "cpu").lower()


def run_one(cfg, bundle, backend_name, precision, ref, runs):
    """Every preprocessing x batch size of one backend x precision, each row appended to
    ``runs`` as it is measured (a stop midway keeps them): (skips, failed).
    A failure while measuring (a GPU out of memory at a larger batch, a runtime error) ends
    this backend x precision only: the rows measured before it are kept, and ``failed``
    says what failed, so the figures of the other runs are neither lost nor reported as
    complete."""
    skip = {"backend": backend_name, "precision": precision}
    try:
        model, backend = _open(cfg, bundle, backend_name, precision)
    except (MissingDependency, OncoLensError) as exc:
        return [dict(skip, reason=str(exc))], []
    before, skips = len(runs), []
    try:
        _run_opened(cfg, bundle, backend, model, dict(skip, ref=ref), runs, skips)
    except Exception as exc:  # noqa: B902 - any runtime's error; the run goes on without it
        log.debug("bench: %s %s failed", backend_name, precision, exc_info=True)
        return skips, [dict(skip, reason=failure_reason(exc), rows_kept=len(runs) - before)]
    return skips, []


def failure_reason(exc):
    """An error met while measuring, in one line: a runtime's message is its first line,
    after the exception's type (OncoLens' own messages are already one line)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return first if isinstance(exc, OncoLensError) else "{}{}".format(
        type(exc).__name__, ": " + first if first else "")


def _run_opened(cfg, bundle, backend, model, what, runs, skips):
    """run_one's measurements on the opened ``backend``, appended to ``runs`` and
    ``skips`` as they come."""
    backend_name, precision, ref = what["backend"], what["precision"], what["ref"]
    skip = {"backend": backend_name, "precision": precision}
    with backend:
        chosen, skipped = _preprocessors(cfg, bundle, backend)
        skips.extend(dict(skip, preprocess=mode, reason=why) for mode, why in skipped)
        device = device_of(backend)
        for mode, pre in chosen:
            pred = predict_all(backend, pre, cfg["agreement_files"],
                               unreadable=cfg["unreadable"])
            agree = agreement(pred, ref)
            if precision in ("int8", "bf16") and agree is not None:
                from oncolens.appliance.variants import record_agreement
                record_agreement(bundle, agree, len(ref), cfg["agreement_dir"], precision,
                                 single_class=cfg.get("reference_single_class"))
            run = {"backend": backend_name, "precision": precision, "preprocess": mode,
                   "device": device, "agreement_vs_fp32": agree,
                   "agreement_not_a_number": not_numbers(pred)}
            if isinstance(getattr(backend, "device", None), dict):  # TensorRT: the GPU
                run["gpu"] = backend.device.get("name")
            _measure(cfg, backend, model, pre, run, runs)


def reference(bundle, files, unreadable=None):
    from oncolens.appliance import variants
    with open_backend("onnxruntime", variants.dynamic_batch(bundle)) as backend:
        return predict_all(backend, Preprocessor.from_bundle(bundle), files,
                           unreadable=unreadable)


def single_class(bundle, ref):
    """The label the fp32 reference gives every readable agreement image, when it gives only
    one: agreement with such a reference says nothing of a lower precision (a copy that also
    answers that class for everything agrees 100%)."""
    classes = set(r for r in ref if r >= 0)
    if len(classes) != 1:
        return None
    index = classes.pop()
    return bundle.labels[index] if index < len(bundle.labels) else str(index)


def baseline(cfg, bundle, ref, result):
    """The naive loop's figures, into result["baseline"] as they are measured (a stop midway
    keeps the first loop's); one it cannot run (no torch, no checkpoint) is skipped, and an
    error while measuring it (a CUDA out of memory, a runtime's error) is appended to
    result["failed"] as a backend's is, the figures measured before it kept."""
    from oncolens.appliance.bench_naive import NaiveTorch
    failed = result["failed"]
    try:
        naive = NaiveTorch(bundle, cfg.get("device", "cpu"), cfg["unreadable"].add)
        figures = naive.run(cfg["files"], cfg["warmup"])
    except (MissingDependency, OncoLensError) as exc:
        log.warning("bench: the naive PyTorch loop (baseline) skipped: %s", exc)
        result["baseline"] = {"skipped": str(exc), "end_to_end_ips": None}
        return
    except Exception as exc:  # noqa: B902 - torch's error; the backends are measured still
        result["baseline"] = _baseline_failed(exc, {"end_to_end_ips": None}, 0, failed)
        return
    result["baseline"] = figures
    try:
        pred = naive.top1(cfg["agreement_files"])
        figures["agreement_vs_fp32"] = agreement(pred, ref)
        figures["agreement_not_a_number"] = not_numbers(pred)
        figures["single_thread"] = naive.run_single_thread(cfg["files"], cfg["warmup"])
    except Exception as exc:  # noqa: B902 - as above; the first loop's figures are kept
        _baseline_failed(exc, figures, 1, failed)


def _baseline_failed(exc, result, rows_kept, failed):
    log.debug("bench: the naive PyTorch loop failed", exc_info=True)
    failed.append({"backend": "torch-eager", "precision": "fp32",
                   "reason": failure_reason(exc), "rows_kept": rows_kept})
    log.error("bench: the naive PyTorch loop (baseline) failed while measuring, after %s: %s",
              plural(rows_kept, "row"), failed[-1]["reason"])
    result["failed"] = failed[-1]["reason"]
    return result


def speed_class(run):
    """Runs compared for "the fastest runtime": same precision on the same kind of device
    (a GPU's fp32 is not the CPU runtimes' yardstick)."""
    device = run.get("device", "cpu").split(":")[0]  # device_of() made it lower-case
    return run["precision"] if device == "cpu" else "{} {}".format(run["precision"], device)


def summarise(result):
    """Ratios against the baseline and against the fastest runtime at each precision."""
    base = (result.get("baseline") or {}).get("end_to_end_ips")
    single = ((result.get("baseline") or {}).get("single_thread") or {}).get("end_to_end_ips")
    best_naive = max(base or 0.0, single or 0.0)
    best = {}
    for run in result["runs"]:
        key = speed_class(run)
        ceiling = (run.get("runtime_ceiling") or {}).get("network_ips", 0.0)
        best[key] = max(best.get(key, 0.0), run["network_ips"], ceiling)
    for run in result["runs"]:
        run["speedup_vs_baseline"] = round(run["end_to_end_ips"] / base, 3) if base else None
        run["speedup_vs_best_naive"] = (round(run["end_to_end_ips"] / best_naive, 3)
                                        if best_naive else None)
        run["network_vs_fastest_runtime"] = round(run["network_ips"] / best[speed_class(run)], 3)
        run["end_to_end_vs_network"] = round(run["end_to_end_ips"] / run["network_ips"], 3)
    result["fastest_network_ips"] = dict((k, round(v, 2)) for k, v in best.items())


def run_bench(cfg):
    """``cfg``: model bundle, files, agreement_files, backends, precisions, batch_sizes, ...
    On Ctrl-C or SIGTERM (KeyboardInterrupt) the figures measured so far are made whole as
    a finished run's are, marked "interrupted" with what was being measured, and ride on
    the exception as its ``result`` for the command to print and write."""
    bundle = cfg["bundle"]
    result = {"tool": "oncolens bench", "machine": machine_info(), "loadavg_start": loadavg(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "model": {"dir": bundle.dir, "arch": bundle.info.get("arch"),
                        "input_shape": list(bundle.input_shape),
                        "sha256": bundle.model_sha256},
              "images": {"dir": cfg["images_dir"], "count": len(cfg["files"])},
              "agreement_images": {"dir": cfg["agreement_dir"],
                                   "count": len(cfg["agreement_files"])},
              "settings": dict((k, cfg.get(k)) for k in (
                  "backends", "precisions", "batch_sizes", "preprocess", "device", "workers",
                  "warmup", "min_seconds")),
              "runs": [], "skipped": [], "failed": [], "baseline": None, "interrupted": False}
    # --threads changes every figure: recorded (None: the runtime's own choice, all cores)
    result["settings"]["threads"] = cfg["backend_options"].get("threads")
    cfg["unreadable"] = Unreadable()
    doing = {"step": "images"}  # what is being measured, for a stop's record
    try:
        _measure_all(cfg, result, doing)
        doing["step"] = "closing"   # every row is measured: a stop now must not lose them
        _finish(cfg, result)
    except KeyboardInterrupt as exc:
        _interrupted(cfg, result, doing, exc)
        # stopped while closing, the GPU is not asked again (its torch import was cut)
        _finish(cfg, result, ask_gpu=doing["step"] != "closing")
        exc.result = result
        raise
    return result


def _measure_all(cfg, result, doing):
    """run_bench's measurements, into ``result`` as they come; ``doing`` says which."""
    bundle = cfg["bundle"]
    # at least one readable image, or one line now (not after the reference and baseline)
    sample_batch(Preprocessor.from_bundle(bundle), cfg["files"], 1, cfg["unreadable"])
    # near-black 16-bit images: warned once, outside every timed loop
    paths = [path for path, _ in cfg["files"] + cfg["agreement_files"]]
    LowBitsWarning(log).scan(collections.OrderedDict.fromkeys(paths))
    doing["step"] = "reference"
    ref = reference(bundle, cfg["agreement_files"], cfg["unreadable"])
    cfg["reference_single_class"] = only = single_class(bundle, ref)
    result["agreement_images"]["reference_single_class"] = only
    _reference_not_a_number(cfg, result, ref)
    if only is not None:
        log.warning("bench: the fp32 reference predicts '%s' for every one of the %d agreement "
                    "images (%s): agreement with it is no measure, and unlocks no int8 or bf16 "
                    "copy; use a trained model, or --agreement-images with several classes "
                    "in its answers", only, len([r for r in ref if r >= 0]), cfg["agreement_dir"])
    if cfg["baseline"]:
        doing["step"] = "baseline"
        baseline(cfg, bundle, ref, result)
    for backend_name in cfg["backends"]:
        for precision in cfg["precisions"]:
            doing.update(step="backend", backend=backend_name, precision=precision,
                         rows_before=len(result["runs"]))
            skips, failed = run_one(cfg, bundle, backend_name, precision, ref, result["runs"])
            for skip in skips:
                log.warning("bench: %s %s skipped: %s", backend_name, precision, skip["reason"])
            for fail in failed:
                log.error("bench: %s %s failed while measuring, after %s: %s", backend_name,
                          precision, plural(fail["rows_kept"], "row"), fail["reason"])
            result["skipped"].extend(skips)
            result["failed"].extend(failed)
            doing["done"] = doing.get("done", 0) + 1


def _reference_not_a_number(cfg, result, ref):
    """The agreement images whose fp32 reference output is not a number: left out of every
    agreement, counted in the JSON, and said in one warning (not read as a class)."""
    bad = not_numbers(ref)
    result["agreement_images"]["reference_not_a_number"] = bad
    if bad:
        log.warning("bench: the fp32 reference's output is not a number (NaN or infinity) for "
                    "%d of the %d readable agreement images (%s): the model is broken; they "
                    "are left out of every agreement", bad, len([r for r in ref if r != -1]),
                    cfg["agreement_dir"])


STEPS = {"images": "reading the images", "reference": "the fp32 reference",
         "baseline": "the naive torch loop (baseline)",
         "closing": "closing the run (the GPU's name, the load average), every row measured"}


def _interrupted(cfg, result, doing, exc):
    """Mark ``result`` as stopped by ``exc`` (Ctrl-C, or SIGTERM as cliutil.Terminated):
    by which signal, while measuring what, and which backend x precision was not reached."""
    pairs = [{"backend": b, "precision": p} for b in cfg["backends"] for p in cfg["precisions"]]
    step = doing["step"]
    where = {"step": step, "what": STEPS.get(step) or "{} {}".format(
        doing["backend"], doing["precision"])}
    if step == "backend":
        where.update(backend=doing["backend"], precision=doing["precision"],
                     rows_kept=len(result["runs"]) - doing["rows_before"])
    if step == "baseline" and result["baseline"] is None:
        result["baseline"] = {"end_to_end_ips": None}
    if step == "baseline":
        result["baseline"]["interrupted"] = True
    result["interrupted"] = True
    result["interrupted_by"] = "SIGTERM" if getattr(exc, "signum", None) == signal.SIGTERM \
        else "SIGINT"
    result["interrupted_while"] = where
    result["not_measured"] = pairs[doing.get("done", 0) + (step == "backend"):]
    log.warning("bench: interrupted (%s) while %s%s", result["interrupted_by"],
                "" if step == "closing" else "measuring ", where["what"])


def _finish(cfg, result, ask_gpu=True):
    """The ratios, the GPU, the unreadable files and the closing load of ``result``;
    without ``ask_gpu``, a CUDA run's GPU is named by its device alone (torch not asked)."""
    summarise(result)
    cuda = [d for d in [cfg.get("device")] + [r.get("device") for r in result["runs"]]
            if str(d).startswith("cuda")]
    gpu = (gpu_info(cuda[0]) if ask_gpu else
           {"device": cuda[0], "name": None, "cuda": None}) if cuda else None
    named = [r["gpu"] for r in result["runs"] if r.get("gpu")]  # TensorRT's, without torch
    result["machine"]["gpu"] = gpu or ({"device": "cuda", "name": named[0], "cuda": None}
                                       if named else None)
    result["unreadable"] = cfg["unreadable"].report()
    result["loadavg_end"] = loadavg()
