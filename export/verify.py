"""``oncolens export verify``: the checkpoint (torch), the ONNX (ONNX Runtime) and each
engine (TensorRT, where installed) on the same N real images.

For each pair: top-1 agreement and max / mean |delta p|.  A pair fails below its
agreement threshold, chosen by the lower precision of the two: fp32 >= 99.9%,
fp16 >= 99%, int8 >= 97% (all configurable).  Exit status 1 when any pair fails.
"""
import logging
import os

from oncolens.appliance.cliutil import OneLineParser, cli_entry, normalize_flags, setup_logging
from oncolens.appliance.errors import MissingDependency, OncoLensError, UsageError

log = logging.getLogger(__name__)

THRESHOLDS = {"fp32": 0.999, "fp16": 0.99, "int8": 0.97}
RANK = {"fp32": 0, "fp16": 1, "int8": 2}


class VerifyFailed(OncoLensError):
    """At least one pair of models disagrees beyond its threshold."""


class NothingCompared(OncoLensError):
    """Only one implementation could run: there was no pair to compare (exit status 3)."""

    exit_code = 3


def run_models(bundle, batch, engine_precisions=None):
    """{label: (precision, probs)} for torch, ONNX Runtime and each usable engine, and
    [(label, reason)] for what was skipped."""
    from oncolens.export.check import TorchReference, onnx_runtime
    results, skipped = {}, []
    ckpt = os.path.join(bundle.dir, (bundle.info.get("onnx") or {}).get(
        "checkpoint", "model_best.pth.tar"))
    if os.path.isfile(ckpt):
        try:
            results["torch"] = ("fp32", TorchReference(ckpt).run(batch)[0])
        except MissingDependency as exc:
            skipped.append(("torch", str(exc)))
    else:
        skipped.append(("torch", "no checkpoint {}".format(ckpt)))
    with onnx_runtime(bundle) as ort:
        results["onnxruntime"] = ("fp32", ort.infer(batch).probs)
    for label, precision, probs, reason in run_engines(bundle, batch, engine_precisions):
        if reason:
            skipped.append((label, reason))
        else:
            results[label] = (precision, probs)
    return results, skipped


def bundle_for_engine(bundle, path):
    """The bundle with ``path`` as its model file (the engine may sit in the cache folder)."""
    from oncolens.appliance.bundle import load_bundle
    engine_bundle = load_bundle(bundle.dir, labels_flag=None)
    engine_bundle.model_path = path
    return engine_bundle


def run_engines(bundle, batch, precisions=None):
    """Yield (label, precision, probs, skip reason) for each engine model.json lists."""
    from oncolens.appliance import engines
    listed = engines.known_entries(bundle.info, bundle.dir, bundle.onnx_path)
    entries = [e for e in listed if not precisions or e.get("precision") in precisions]
    if not entries:
        others = sorted(set(str(e.get("precision")) for e in listed))
        yield "tensorrt", None, None, "no {}engine listed in model.json{} (oncolens export " \
            "engine{})".format("/".join(precisions) + " " if precisions else "",
                               "; it lists {} only".format(", ".join(others)) if others else "",
                               " --precision " + precisions[0] if precisions else "")
        return
    for entry in entries:
        path = engines.entry_path(entry, bundle.dir)
        label = "tensorrt {} {}".format(entry.get("precision"), os.path.basename(path))
        if not os.path.isfile(path):  # was a FileNotFoundError traceback
            yield label, None, None, "listed in model.json, but {} is missing: build it again " \
                "with 'oncolens export engine --model-dir {} --precision {}'".format(
                    path, bundle.dir, entry.get("precision"))
            continue
        try:
            from oncolens.appliance.backends.tensorrt import TensorRTBackend
            with TensorRTBackend(bundle_for_engine(bundle, path), allow_rebuild=False) as backend:
                yield label, backend.precision, backend.infer(batch).probs, None
        except MissingDependency as exc:
            yield label, None, None, str(exc)
        except engines.EngineMismatch as exc:
            yield label, None, None, str(exc)


def compare_all(results, thresholds):
    """Rows for every pair: the reference first (torch, then onnxruntime)."""
    from oncolens.export.check import compare
    labels = list(results)
    rows = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            precision = max(results[a][0], results[b][0], key=lambda p: RANK.get(p, 0))
            stats = compare(results[a][1], results[b][1])
            need = thresholds[precision]
            stats.update(pair="{} vs {}".format(a, b), precision=precision, threshold=need,
                         passed=stats["agreement"] >= need)
            rows.append(stats)
    return rows


def verify_bundle(model_dir, images_dir=None, count=100, thresholds=None, precisions=None,
                  seed=0):
    """Run the verification; returns a dict (images, rows, skipped, passed)."""
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.preprocess import Preprocessor
    from oncolens.export.images import check_images
    bundle = load_bundle(model_dir, labels_flag=None)
    batch, source = check_images(bundle.info, Preprocessor.from_bundle(bundle), images_dir,
                                 count, seed)
    from oncolens.export.check import not_finite
    results, skipped = run_models(bundle, batch, precisions)
    # an output that is not a number agrees with any other (argmax of NaN is the first
    # class): it is no pair's member, and fails the run (main)
    found = not_finite([(label, probs) for label, (_, probs) in results.items()])
    broken = set(name for name, _, _ in found)
    rows = compare_all(dict((label, result) for label, result in results.items()
                            if label not in broken), dict(THRESHOLDS, **(thresholds or {})))
    return {"images": source, "rows": rows, "skipped": skipped, "ran": list(results),
            "not_a_number": found,
            "passed": bool(rows) and not found and all(r["passed"] for r in rows)}


def format_row(row):
    return "{:<58} {:>5}  agree {:7.3f}% (>= {:.1f}%)  max|dp| {:.2e}  mean|dp| {:.2e}  {}".format(
        row["pair"], row["precision"], 100 * row["agreement"], 100 * row["threshold"],
        row["max_abs_diff"], row["mean_abs_diff"], "ok" if row["passed"] else "FAIL")


def build_parser():
    p = OneLineParser(
        prog="oncolens export verify",
        description="Compare the checkpoint (torch), the ONNX (ONNX Runtime) and each engine "
                    "(TensorRT) on the same real images; non-zero exit below thresholds.")
    p.add_argument("--model-dir", default="", help="the model folder (default: current folder)")
    p.add_argument("--images", default="", help="a dataset (its val/ is used) or a folder of "
                   "images (default: the training data model.json records, else random)")
    p.add_argument("--count", type=int, default=100, help="images to compare (100)")
    p.add_argument("--precision", action="append", choices=sorted(THRESHOLDS),
                   help="only engines of this precision (repeatable)")
    for prec, value in sorted(THRESHOLDS.items()):
        p.add_argument("--min-agreement-" + prec, type=float, default=value,
                       help="{} pairs: smallest top-1 agreement ({})".format(prec, value))
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    return p


def check_flags(args):
    if args.count < 1:
        raise UsageError("--count: expected a positive number of images, got {}".format(
            args.count))
    for prec in sorted(THRESHOLDS):
        value = getattr(args, "min_agreement_" + prec)
        if not 0.0 <= value <= 1.0:
            raise UsageError("--min-agreement-{}: expected a share between 0 and 1, got "
                             "{}".format(prec, value))


def nothing_compared(report):
    """The one line saying that verify had no pair to compare, and why."""
    why = "; ".join("{}: {}".format(label, reason) for label, reason in report["skipped"])
    return ("nothing was compared: only {} ran ({}); verify needs a second implementation: "
            "the checkpoint (model_best.pth.tar) or a TensorRT engine ('oncolens export "
            "engine')".format(" and ".join(report["ran"]) or "nothing", why))


def engine_not_compared(report, precisions):
    """The one line saying that --precision asked for engines and none of them ran: the rows
    printed compare the checkpoint and the ONNX only, which is not what was asked."""
    why = "; ".join(reason for label, reason in report["skipped"] if label.startswith("tensorrt"))
    return ("--precision {}: no {} engine was compared ({}); the rows above are {} only, not "
            "the engine asked for".format(" --precision ".join(precisions), "/".join(precisions),
                                          why or "none ran", " and ".join(report["ran"])))


@cli_entry("oncolens export verify")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    check_flags(args)
    thresholds = {p: getattr(args, "min_agreement_" + p) for p in THRESHOLDS}
    report = verify_bundle(args.model_dir or ".", args.images or None, args.count, thresholds,
                           args.precision)
    print("verify: {}".format(report["images"]))
    for row in report["rows"]:
        print(format_row(row))
    for label, reason in report["skipped"]:
        print("skipped {}: {}".format(label, reason))
    if report["not_a_number"]:
        from oncolens.export.check import not_a_number_error
        raise VerifyFailed(str(not_a_number_error(report["not_a_number"])))
    if not report["rows"]:
        raise NothingCompared(nothing_compared(report))
    if args.precision and not any(label.startswith("tensorrt") for label in report["ran"]):
        raise NothingCompared(engine_not_compared(report, args.precision))
    if not report["passed"]:
        failed = [r["pair"] for r in report["rows"] if not r["passed"]]
        raise VerifyFailed("below threshold: {}".format("; ".join(failed)))
    return 0
