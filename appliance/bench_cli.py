"""``oncolens bench``: how fast is it, really — network-only and end to end, per backend x
precision x batch size, against the naive per-image PyTorch loop measured in the same run.

    oncolens bench --model models/busi-resnet18 --images data/busi/test --json bench.json \
        --precisions fp32,int8 --calib-images data/busi/train --agreement-images data/busi/val
"""
import itertools
import json
import logging
import os

from oncolens.appliance.batch_cli import add_model_flags, resolve_model
from oncolens.appliance.cliutil import (OneLineParser, cli_entry, normalize_flags,
                                        setup_logging, sigterm_as_interrupt, signals_held)
from oncolens.appliance.errors import UsageError, plural
from oncolens.appliance.outpaths import check_output_file, check_text_file, replace_text

log = logging.getLogger("oncolens.bench")


def build_parser():
    p = OneLineParser(
        prog="oncolens bench",
        description="Measure images/s (network-only and end to end), latency p50/p90/p99 and "
                    "the share of decode, preprocess, inference and post-processing, with the "
                    "naive PyTorch loop as baseline; reduced precision is measured for top-1 "
                    "agreement with fp32.")
    add_model_flags(p)
    p.add_argument("--images", required=True, help="folder of images to time (e.g. test/)")
    p.add_argument("--json", help="write the figures to this JSON file (also those measured "
                                  "before a failure, Ctrl-C or SIGTERM, marked so)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--backends", default="onnxruntime,openvino",
                   help="comma-separated backends: onnxruntime, openvino, torch "
                        "(onnxruntime,openvino)")
    p.add_argument("--precisions", default="fp32",
                   help="comma-separated: fp32, int8, bf16 (openvino on a CPU with AVX512-BF16 "
                        "or AMX), fp16 (torch on a CUDA GPU) (fp32)")
    p.add_argument("--preprocess", default="host",
                   help="comma-separated: host (OpenCV in the worker pool), device (torch on "
                        "the backend's device: resize, crop, normalise on the GPU) (host)")
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda or cuda:N: where the torch backend and the naive baseline "
                        "run (cpu)")
    p.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes (1,8)")
    p.add_argument("--workers", type=int, default=2,
                   help="decode/preprocess threads in the end-to-end loop (2)")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed calls before each timed loop: N calls of the row's batch "
                        "before network-only and before end to end (its first N x batch "
                        "images), N images before the naive loop; 0: none (3)")
    p.add_argument("--min-seconds", type=float, default=3.0,
                   help="time each network-only measurement (and OpenVINO's ceiling) for at "
                        "least this long, and at least 5 calls (3)")
    p.add_argument("--max-images", type=int, default=0,
                   help="time at most this many images end to end (0: all)")
    p.add_argument("--agreement-images", help="folder for top-1 agreement with fp32 "
                                              "(default: --images); use real images, e.g. val/")
    p.add_argument("--calib-images", help="folder to calibrate int8 on (e.g. train/)")
    p.add_argument("--calib-count", type=int, default=100, help="calibration images (100)")
    p.add_argument("--no-baseline", action="store_true", help="leave out the PyTorch loop")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    return p


def _csv(value, flag, cast=str):
    try:
        items = [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UsageError("{}: expected a comma-separated list, got '{}'".format(flag, value))
    if not items:
        raise UsageError("{}: empty".format(flag))
    return items


PRECISIONS = ("fp32", "bf16", "fp16", "int8")
UNREADABLE_SHOWN = 10  # unreadable files named in the console summary, with their reasons
# a row of the printed table: where, batch, net img/s, e2e img/s, e2e p50 and p99 ms,
# x naive (text), agreement (text)
ROW = "{:<30}{:>6}{:>11.1f}{:>11.1f}{:>12.1f}{:>12.1f}{:>9}{:>10}"


def _names(value, flag, known):
    """A comma list of names from ``known``: a typo is one line now, not a run skipped
    after the reference and the baseline were measured (and exit 0 beside another run)."""
    names = _csv(value, flag)
    for name in names:
        if name not in known:
            raise UsageError("{}: unknown '{}' (expected a comma list of: {})".format(
                flag, name, ", ".join(known)))
    return names


def _check_numbers(args):
    """The counts and durations, before anything is measured."""
    for flag, value, least in (("--workers", args.workers, 0), ("--warmup", args.warmup, 0),
                               ("--max-images", args.max_images, 0),
                               ("--calib-count", args.calib_count, 1),
                               ("--threads", args.threads, 0)):
        if value is not None and value < least:
            raise UsageError("{}: expected {}, got {}".format(
                flag, "a positive number" if least else "0 or more", value))
    if not 0 <= args.min_seconds < float("inf"):
        raise UsageError("--min-seconds: expected seconds, 0 or more, got {}".format(
            args.min_seconds))


def _files(folder, flag, limit=0):
    from oncolens.appliance.pipeline import iter_image_files
    if not os.path.isdir(folder):
        raise UsageError("{} {}: not a folder".format(flag, folder))
    files = iter_image_files(folder)
    files = list(itertools.islice(files, limit) if limit > 0 else files)
    if not files:
        raise UsageError("{} {}: no image files found".format(flag, folder))
    return files


def _device(value):
    """--device: cpu, or a CUDA device that torch can see (checked now, not mid-run)."""
    if value == "cpu":
        return value
    if value != "cuda" and not value.startswith("cuda:"):
        raise UsageError("--device: expected cpu, cuda or cuda:N, got '{}'".format(value))
    try:
        import torch
    except ImportError:
        raise UsageError("--device {}: needs torch with CUDA (pip install torch)".format(value))
    if not torch.cuda.is_available():
        raise UsageError("--device {}: torch {} sees no CUDA GPU on this machine".format(
            value, torch.__version__))
    return value


def make_config(args):
    from oncolens.appliance.backends import backend_names
    from oncolens.appliance.bundle import load_bundle
    _check_numbers(args)
    backends = _names(args.backends, "--backends", backend_names())
    precisions = _names(args.precisions, "--precisions", PRECISIONS)
    if args.json:  # checked now: the figures must not be lost after minutes of measuring
        check_text_file(args.json, "--json")
        check_output_file(args.json, "--json", args.overwrite)
    sizes = _csv(args.batch_sizes, "--batch-sizes", int)
    if min(sizes) < 1:
        raise UsageError("--batch-sizes: expected positive integers, got {}".format(
            args.batch_sizes))
    overrides = {}
    if args.input_blob:
        overrides["input"] = {"name": args.input_blob}
    if args.output_blob:
        overrides["output"] = {"name": args.output_blob}
    preprocess = _csv(args.preprocess, "--preprocess")
    bad = [m for m in preprocess if m not in ("host", "device")]
    if bad:
        raise UsageError("--preprocess: expected host and/or device, got '{}'".format(bad[0]))
    device = _device(args.device)
    files = _files(args.images, "--images", args.max_images)
    agreement_dir = args.agreement_images or args.images
    return {"bundle": load_bundle(resolve_model(args), args.labels, overrides or None),
            "files": files, "images_dir": os.path.abspath(args.images),
            "agreement_files": _files(agreement_dir, "--agreement-images"),
            "agreement_dir": os.path.abspath(agreement_dir),
            "backends": backends, "precisions": precisions,
            "batch_sizes": sizes, "preprocess": preprocess, "device": device,
            "workers": args.workers, "warmup": args.warmup,
            "min_seconds": args.min_seconds, "calib_images": args.calib_images,
            "calib_count": args.calib_count, "baseline": not args.no_baseline,
            "backend_options": {"threads": args.threads} if args.threads else {}}


def table(result):
    """The figures as a console table."""
    # the latencies are per image, end to end (from a worker's start on the file to its
    # result: waiting for the batch included), not the network's per-call latency
    lines = ["{:<30}{:>6}{:>11}{:>11}{:>12}{:>12}{:>9}{:>10}".format(
        "backend precision [device]", "batch", "net img/s", "e2e img/s", "e2e p50 ms",
        "e2e p99 ms", "x naive", "agree")]
    base = result.get("baseline") or {}
    if base.get("end_to_end_ips"):
        lines.append(ROW.format(
            _where("torch-eager (naive)", base.get("device", "cpu")), 1, base["network_ips"],
            base["end_to_end_ips"],
            base["latency_ms"]["p50"], base["latency_ms"]["p99"], "1.00",
            _pct(base.get("agreement_vs_fp32"))))
        one = base.get("single_thread") or {}
        if one.get("end_to_end_ips"):
            lines.append(ROW.format(
                "  same, torch 1 thread", 1, one["network_ips"], one["end_to_end_ips"],
                one["latency_ms"]["p50"], one["latency_ms"]["p99"],
                "{:.2f}".format(one["end_to_end_ips"] / base["end_to_end_ips"]), "-"))
    for run in result["runs"]:
        lines.append(ROW.format(
            _where("{} {}".format(run["backend"], run["precision"]), run.get("device", "cpu"),
                   run.get("preprocess", "host")), run["batch_size"],
            run["network_ips"], run["end_to_end_ips"], run["latency_ms"]["p50"],
            run["latency_ms"]["p99"], "{:.2f}".format(run["speedup_vs_baseline"])
            if run["speedup_vs_baseline"] else "-", _pct(run["agreement_vs_fp32"])))
    for run in result["runs"]:
        ceiling = run.get("runtime_ceiling")
        if ceiling:
            lines.append("runtime ceiling {} {} batch {}: {:.1f} img/s network-only ({}, "
                         "{} timed)".format(run["backend"], run["precision"], run["batch_size"],
                                            ceiling["network_ips"], ceiling["runtime"],
                                            plural(ceiling["calls"], "call")))
    for skip in result["skipped"]:
        lines.append("skipped {} {}{}: {}".format(
            skip["backend"], skip["precision"],
            " ({} preprocessing)".format(skip["preprocess"]) if skip.get("preprocess") else "",
            skip["reason"]))
    for fail in result.get("failed") or []:  # its rows above are the ones measured before
        lines.append("FAILED {} {} while measuring, after {} of its rows: {}".format(
            fail["backend"], fail["precision"], fail["rows_kept"], fail["reason"]))
    if result.get("interrupted"):  # the rows above are those measured before the stop
        lines.append(interrupted_line(result))
    if base.get("skipped"):  # without it "x naive" is "-": say why
        lines.append("skipped the naive torch loop (baseline): {}".format(base["skipped"]))
    lines.extend(unreadable_lines(result.get("unreadable") or {}))
    lines.extend(not_a_number_lines(result))
    lines.append(settings_line(result))
    gpu = result["machine"].get("gpu")
    lines.append("machine: {} ({} cores){}, load average {} -> {}".format(
        result["machine"]["cpu"], result["machine"]["cores"],
        ", GPU {}{}".format(gpu["name"] or "{} (name not read)".format(gpu["device"]),
                            " (CUDA {})".format(gpu["cuda"]) if gpu.get("cuda")
                            else "") if gpu else "",
        result["loadavg_start"], result["loadavg_end"]))
    return "\n".join(lines)


def not_a_number_lines(result):
    """The agreement images whose output was not a number (NaN or infinity), for the fp32
    reference (left out of every agreement) and for each run (counted as disagreeing): such
    an output has no class (it was read as the first class, as if the model predicted it)."""
    lines = []
    ref = result["agreement_images"].get("reference_not_a_number")
    if ref:
        lines.append("the fp32 reference's output is not a number (NaN or infinity) for {} of "
                     "{}: the model is broken; they are left out of every agreement".format(
                         ref, plural(result["agreement_images"]["count"], "agreement image")))
    seen = set()
    base = dict(result.get("baseline") or {}, backend="torch-eager", precision="fp32 (baseline)")
    for run in result["runs"] + [base]:
        what = "{} {}".format(run["backend"], run["precision"])
        bad = run.get("agreement_not_a_number")
        if bad and (what, run.get("preprocess")) not in seen:
            seen.add((what, run.get("preprocess")))
            lines.append("{}'s output is not a number (NaN or infinity) for {}: counted as "
                         "disagreeing with fp32".format(what, plural(bad, "agreement image")))
    return lines


def interrupted_line(result):
    """``INTERRUPTED (Ctrl-C) while measuring onnxruntime int8, after 1 of its rows; not
    measured: openvino fp32``: what a stopped bench measured last, and never reached."""
    where = result["interrupted_while"]
    left = ["{} {}".format(p["backend"], p["precision"]) for p in result["not_measured"]]
    return "INTERRUPTED ({}) while {}{}{}{}".format(
        "SIGTERM" if result["interrupted_by"] == "SIGTERM" else "Ctrl-C",
        "" if where["step"] == "closing" else "measuring ", where["what"],
        ", after {} of its rows".format(where["rows_kept"]) if "rows_kept" in where else "",
        "; not measured: {}".format(", ".join(left)) if left else "")


def settings_line(result):
    """What every row was measured on and how often: the model and its input size, the
    images timed end to end, the warm-up and the network-only calls timed (the table gave
    none of them: figures without their counts could not be judged)."""
    model, settings = result["model"], result["settings"]
    shape = model.get("input_shape") or []
    calls = sorted(run["network_calls"] for run in result["runs"] if "network_calls" in run)
    timed = ("{} to {}".format(calls[0], calls[-1]) if calls[0] != calls[-1] else
             str(calls[0])) if calls else "no"
    images = max([run["images"] for run in result["runs"]] or [result["images"]["count"]])
    return ("measured: model {} ({}, input {}); {} timed end to end per row, {}; "
            "network-only: {} timed calls per row (at least {:g} s each) after {}".format(
                model.get("dir"), model.get("arch") or "arch unknown",
                "x".join(str(n) for n in shape[1:]) or "?", plural(images, "image"),
                plural(settings["workers"], "worker"), timed, settings["min_seconds"],
                plural(settings["warmup"], "warm-up call")))


def unreadable_lines(unreadable, limit=UNREADABLE_SHOWN):
    """The skipped files, each with the reader's one-line reason (it named the files only),
    the first ``limit`` of them: a folder of thousands is not listed whole on the console."""
    files = unreadable.get("files") or []
    if not unreadable.get("count"):
        return []
    lines = ["skipped {}, not timed:".format(plural(unreadable["count"], "unreadable file"))]
    for item in files[:limit]:
        path, reason = item["path"], item["reason"] or "unreadable"
        lines.append("  " + (reason if reason.startswith(path + ": ") else
                             "{}: {}".format(path, reason)))
    if len(files) > limit:
        lines.append("  ... and {} more (--json FILE lists every one, with its reason)".format(
            len(files) - limit))
    return lines


def _where(name, device, preprocess="host"):
    """A row's name, with its device and device-side preprocessing when not the defaults."""
    tags = [] if device == "cpu" else [device]
    if preprocess == "device":
        tags.append("pre on device")
    return "{} [{}]".format(name, ", ".join(tags)) if tags else name


def _pct(value):
    return "-" if value is None else "{:.2f}%".format(100.0 * value)


@cli_entry("oncolens bench")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    # SIGTERM (systemd, timeout) stops it as Ctrl-C does: the figures measured so far are
    # printed and written, marked interrupted (exit 143; Ctrl-C 130)
    with sigterm_as_interrupt():
        cfg = make_config(args)
        from oncolens.appliance.bench import run_bench
        from oncolens.appliance.pipeline import opencv_single_threaded
        opencv_single_threaded()
        try:
            result = run_bench(cfg)
        except KeyboardInterrupt as exc:
            if getattr(exc, "result", None) is not None:
                try:
                    with signals_held():  # a second stop waits for the --json, written whole
                        exc.hint = _report(args, exc.result)
                except KeyboardInterrupt:  # ... and changes nothing: the first one ends it
                    pass
            raise exc
        _report_finished(args, result)
    # a run that failed while measuring: the figures are kept, but the bench is incomplete
    return 0 if result["runs"] and not result["failed"] else 1


def measured_any(result):
    """Whether ``result`` holds a figure: a row, or the naive loop's."""
    return bool(result["runs"] or (result.get("baseline") or {}).get("end_to_end_ips"))


def _report_finished(args, result):
    """_report of a finished bench with Ctrl-C and SIGTERM held: a stop that comes while
    the table is printed and --json written (it was the earlier file left and exit 143, the
    figures lost) waits for the file to be whole, then ends the run (130 or 143) with a line
    saying where the figures are."""
    try:
        with signals_held():
            _report(args, result)
    except KeyboardInterrupt as exc:
        exc.hint = "the bench had finished: its figures are in the table above{}".format(
            " and in {}".format(args.json) if args.json else " (no --json file)")
        raise


def _report(args, result):
    """Print the table and write --json (whole, or not at all); for a stopped run, what
    was kept, in the words of the line that ends it."""
    stopped = result.get("interrupted")
    if stopped and not measured_any(result):
        return "nothing was measured yet, so no table{}".format(
            ", and --json {} was not written".format(args.json) if args.json else "")
    print(table(result))
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder):
            os.makedirs(folder)
        replace_text(args.json, json.dumps(result, indent=2, sort_keys=True) + "\n")
        print("figures: {}".format(args.json))
    if stopped:
        return "the figures measured so far are in the table above{}".format(
            " and in {}, marked interrupted".format(args.json) if args.json else
            " (no --json file)")
    return None
