"""``oncolens selftest``: prove the device path on this machine and write one report.

Steps: environment (JetPack / L4T, TensorRT, CUDA, GPU), the ONNX check, an engine per
precision, verification of each engine against ONNX Runtime on real images, and the
speed of each runtime: network-only FPS (inference on a preprocessed batch) and
end-to-end FPS (read + preprocess + infer + top-1, per image file).  Steps that cannot run
here are reported as skipped with the reason.  Writes ``selftest.json`` and
``selftest.md`` to attach to a bug report.
"""
import logging
import os
import time

from oncolens.appliance import engines
from oncolens.appliance.cliutil import OneLineParser, cli_entry, normalize_flags, setup_logging
from oncolens.appliance.errors import OncoLensError, UsageError
from oncolens.appliance.outpaths import check_output_dir, check_output_file, folder_made_for
from oncolens.export import selftest_env

log = logging.getLogger(__name__)


class Report(object):
    def __init__(self):
        self.steps = []

    def run(self, name, func, *args):
        """Run one step; an OncoLensError fails it, a Skip skips it; the rest goes on."""
        start = time.time()
        try:
            detail = func(*args)
            status = "passed"
        except selftest_env.Skip as exc:
            status, detail = "skipped", str(exc)
        except OncoLensError as exc:
            status, detail = "failed", str(exc)
        except Exception as exc:  # a selftest reports every failure and goes on
            status, detail = "failed", "{}: {}".format(type(exc).__name__, exc)
            log.debug("%s failed", name, exc_info=True)
        self.steps.append({"step": name, "status": status, "detail": detail,
                           "seconds": round(time.time() - start, 2)})
        log.info("%s: %s", name, status)
        return status == "passed"


def build_parser():
    p = OneLineParser(
        prog="oncolens selftest",
        description="Build engines at each precision, verify them against ONNX Runtime on real "
                    "images, measure FPS, and write selftest.json + selftest.md.")
    p.add_argument("--model-dir", required=True, help="the model folder (with its ONNX)")
    p.add_argument("--images", default="", help="a dataset (val/ is used; train/ calibrates "
                   "int8) or a folder of images; without it, random images and no int8")
    p.add_argument("--count", type=int, default=100, help="images verified (100)")
    p.add_argument("--precisions", default="fp32,fp16,int8",
                   help="engine precisions to build (fp32,fp16,int8)")
    p.add_argument("--frames", type=int, default=100, help="frames per speed measurement (100)")
    p.add_argument("--out", default="", help="report folder, made when the report is "
                   "written (default: <model-dir>/selftest; for a read-only model folder "
                   "$ONCOLENS_CACHE_DIR/selftest/<its name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    return p


def _paths(args):
    out = args.out or os.path.join(args.model_dir, "selftest")
    if not args.out and not engines.folder_is_writable(args.model_dir):
        out = os.path.join(engines.cache_root(), "selftest",
                           os.path.basename(os.path.abspath(args.model_dir)))
        log.info("model folder %s is read-only: the report goes to %s", args.model_dir, out)
    json_path, md_path = os.path.join(out, "selftest.json"), os.path.join(out, "selftest.md")
    check_output_dir(out, "--out")  # before any step runs: the report must not be lost
    for path in (json_path, md_path):
        check_output_file(path, "--out", args.overwrite)
    return json_path, md_path  # the folder is made when the report is written


def _precisions(text):
    """--precisions as a list; none at all (an empty value ran no engine step and passed)
    or one named twice (built, verified and timed twice) is refused."""
    precisions = [p.strip() for p in text.split(",") if p.strip()]
    for p in precisions:
        if p not in ("fp32", "fp16", "int8"):
            raise UsageError("--precisions: unknown precision '{}' (fp32, fp16, int8)".format(p))
        if precisions.count(p) > 1:
            raise UsageError("--precisions: {} is named twice in {!r}".format(p, text))
    if not precisions:
        raise UsageError("--precisions: expected one or more of fp32, fp16, int8, comma-"
                         "separated, got {!r}".format(text))
    return precisions


@cli_entry("oncolens selftest")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    for flag, value in (("--count", args.count), ("--frames", args.frames)):
        if value < 1:
            raise UsageError("{}: expected a positive number, got {}".format(flag, value))
    precisions = _precisions(args.precisions)
    json_path, md_path = _paths(args)
    report = Report()
    env = selftest_env.environment()
    selftest_env.run_steps(report, args, precisions)
    with folder_made_for(os.path.dirname(json_path)):  # stopped before: no empty folder
        selftest_env.write_reports(json_path, md_path, env, report.steps, args)
    failed = [s["step"] for s in report.steps if s["status"] == "failed"]
    for s in report.steps:
        print("{:<34} {:<8} {}".format(s["step"], s["status"], s["detail"] if isinstance(
            s["detail"], str) else ""))
    print("report: {} and {}".format(json_path, md_path))
    return 1 if failed else 0
