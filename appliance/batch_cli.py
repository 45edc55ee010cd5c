"""``oncolens batch``: classify a whole folder (or glob) into a results file, with metrics.

    oncolens batch archive/ --model models/busi-resnet18 --results out.csv \
        --annotate annotated/ --batch-size 8 --workers 2 [--resume]

Ground truth comes from folder names that are labels (``test/malignant/x.png``, the nearest
such folder inside the input, else the input folder's own name; see evaluation.truth_of): then
accuracy, macro-F1, per-class precision/recall and the confusion matrix are printed and
written beside the results (``.metrics.json`` and ``.confusion.png``).  A file that cannot be
read is recorded with its error and the run goes on; the exit code is 1 when any failed.
"""
import collections
import logging
import os

from oncolens.appliance.classify_cli import resolve_model
from oncolens.appliance.cliutil import (OneLineParser, check_top, cli_entry, normalize_flags,
                                        setup_logging, sigterm_as_interrupt)
from oncolens.appliance.errors import UsageError, os_error_line, plural

log = logging.getLogger("oncolens.batch")


def add_model_flags(p):
    """The model flags of ``oncolens classify`` (jetson-inference's imagenet)."""
    p.add_argument("--model", help="model folder, .onnx, engine or checkpoint")
    p.add_argument("--network", help="a model folder name under --models-root (models/NAME/)")
    p.add_argument("--models-root", default="models", help="where --network looks (models)")
    p.add_argument("--labels", help="labels file (optional when the model has a model.json)")
    p.add_argument("--input-blob", help="input tensor name (default from model.json, else input_0)")
    p.add_argument("--output-blob", help="output tensor name (default from model.json, else output_0)")
    p.add_argument("--threads", type=int, default=None,
                   help="inference threads (default: the runtime's choice, all cores)")


def build_parser():
    p = OneLineParser(
        prog="oncolens batch",
        description="Classify every image in a folder (recursive) or quoted glob: results as "
                    "CSV or JSON Lines, metrics from class-folder names, annotated copies, "
                    "resumable.")
    p.add_argument("input", help="folder, quoted glob or image file")
    add_model_flags(p)
    p.add_argument("--backend", default="auto",
                   help="auto, jetson, tensorrt, onnxruntime, openvino or torch (auto: fastest "
                        "present)")
    p.add_argument("--precision", default="fp32",
                   help="fp32 (default), int8, or bf16 (OpenVINO, on CPUs with AVX512-BF16 or "
                        "AMX); int8 and bf16 only once 'oncolens bench' has measured and "
                        "recorded their agreement with fp32")
    p.add_argument("--results", help="results file, .csv or .jsonl (appended and flushed as "
                                     "results come)")
    p.add_argument("--annotate", metavar="OUTDIR",
                   help="write annotated copies here, input names and sub-folders kept")
    p.add_argument("--metrics", help="metrics JSON (default: beside --results as "
                                     "NAME.metrics.json; a .confusion.png goes with it)")
    p.add_argument("--batch-size", type=int, default=8, help="images per inference call (8)")
    p.add_argument("--workers", type=int, default=2,
                   help="decode/preprocess threads running ahead of inference (2; 0: none)")
    p.add_argument("--resume", action="store_true",
                   help="skip files already in --results and append to it (refused when "
                        "its rows are of another model, precision or backend); with "
                        "--annotate, files whose annotated copy was not written are done "
                        "again, their new rows replacing the earlier ones (a file that "
                        "cannot be read then keeps its earlier row)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing results file and metrics (the results "
                        "file is emptied when this run writes its first row); with "
                        "--annotate, the earlier run's annotated copies that its --results "
                        "rows name are removed then")
    p.add_argument("--topK", "--topk", dest="topk", type=int, default=1,
                   help="classes drawn on annotated copies (1; 0: every class at or above "
                        "--threshold)")
    p.add_argument("--threshold", type=float, default=0.01,
                   help="minimum confidence of the 2nd..K-th class drawn (0.01)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    return p


def open_classifier(args, batch_size=1):
    """A Classifier for the model flags, at ``args.precision`` (int8 never implicitly)."""
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.variants import for_precision
    overrides = {}
    if args.input_blob:
        overrides["input"] = {"name": args.input_blob}
    if args.output_blob:
        overrides["output"] = {"name": args.output_blob}
    bundle = load_bundle(resolve_model(args), args.labels, overrides or None)
    if not (args.backend == "torch" and args.precision == "fp32"):  # torch: the checkpoint
        bundle = for_precision(bundle, args.precision, batch_size)
    options = {"threads": args.threads} if args.threads else {}
    backend = args.backend
    if args.precision == "bf16":  # OpenVINO computes the fp32 file in bf16
        if backend not in ("auto", "openvino"):
            raise UsageError("--precision bf16: runs on --backend openvino only, not "
                             "{}".format(backend))
        backend = "openvino"
        options["precision"] = "bf16"
    clf = Classifier(bundle, backend=backend, top=getattr(args, "topk", 1),
                     threshold=getattr(args, "threshold", 0.0), **options)
    clf.backend.precision = args.precision
    return clf


def _check_args(args):
    if args.batch_size < 1:
        raise UsageError("--batch-size: expected a positive integer, got {}".format(
            args.batch_size))
    if args.workers < 0:
        raise UsageError("--workers: expected 0 or more, got {}".format(args.workers))
    check_top(args.topk, args.threshold)
    if args.resume and not args.results:
        raise UsageError("--resume: needs --results FILE (the file to continue)")
    _check_outputs(args)
    if not os.path.exists(args.input) and not any(ch in args.input for ch in "*?["):
        raise UsageError("input not found: {} (expected a folder, a quoted glob or an image "
                         "file)".format(args.input))
    from oncolens.appliance.batch import image_files
    image_files(args.input, collections.Counter(), exclude=args.annotate)  # before the model


def _check_outputs(args):
    """Every file the run will write can be written, before the first image is read."""
    from oncolens.appliance.outpaths import (check_output_dir, check_output_file,
                                             check_text_file)
    from oncolens.appliance.results import ResultsLock, results_format
    keep = args.overwrite or args.resume
    if args.results:
        results_format(args.results)
        check_output_file(args.results, "--results", overwrite=keep,
                          hint="pass --resume to continue it or --overwrite to replace it")
        ResultsLock(args.results).probe()  # another run writing it: refused before the model
    metrics = metrics_path(args)
    if metrics:
        check_text_file(metrics, "--metrics")
        check_output_file(metrics, "--metrics", overwrite=keep)
        check_output_file(confusion_path(metrics), "--metrics", overwrite=keep)
        if args.results and os.path.realpath(metrics) in (
                os.path.realpath(args.results), os.path.realpath(confusion_path(metrics))):
            raise UsageError("--metrics {}: the same file as --results or its picture: give "
                             "another name".format(metrics))
    if args.annotate:
        check_output_dir(args.annotate, "--annotate")
        _check_annotate_apart(args.input, args.annotate)


def _check_annotate_apart(uri, annotate):
    """Annotated copies keep the input's names under --annotate: that folder must not be
    where the inputs are, or the copies would replace them."""
    from oncolens.appliance.evaluation import input_folder
    base = input_folder(uri)
    if os.path.realpath(annotate) == os.path.realpath(base):
        raise UsageError("--annotate {}: the input folder itself; the annotated copies would "
                         "replace the images: give another folder".format(annotate))


def confusion_path(metrics):
    """The confusion-matrix picture written beside the metrics JSON (r.metrics.json ->
    r.confusion.png)."""
    stem = os.path.splitext(metrics)[0]
    if stem.endswith(".metrics"):
        stem = stem[:-len(".metrics")]
    return stem + ".confusion.png"


def _own_images(args):
    """The image file the run writes (the confusion picture beside the metrics): when it
    lies inside the input, a rerun must not classify the last run's copy."""
    metrics = metrics_path(args)
    return [confusion_path(metrics)] if metrics else []


def metrics_path(args):
    if args.metrics:
        return args.metrics
    if args.results:
        return os.path.splitext(args.results)[0] + ".metrics.json"
    return None


def report_metrics(args, labels, extra_rows):
    """Print the metrics of everything in the results file (or of this run's rows)."""
    from oncolens.appliance.evaluation import (confusion_image, format_metrics,
                                               metrics_from_rows, no_metrics_reason,
                                               write_metrics_json)
    from oncolens.appliance.results import read_rows
    rows = read_rows(args.results) if args.results else extra_rows
    m = metrics_from_rows(rows, labels)
    if m is None:
        log.info("%s", no_metrics_reason(read_rows(args.results) if args.results else
                                         extra_rows, labels))
        _drop_stale_metrics(metrics_path(args))
        return None
    print(format_metrics(m))
    path = metrics_path(args)
    if path:
        from oncolens.appliance.imageio import write_image
        write_metrics_json(path, m)
        png = confusion_path(path)
        write_image(png, confusion_image(m))
        print("metrics: {} and {}".format(path, png))
    return m


def _drop_stale_metrics(path, why="this run has none"):
    """An earlier run's metrics JSON and picture (there only with --overwrite or --resume)
    would be taken for this run's: they go when this run has no metrics to put there, or
    when it stopped after writing rows they do not describe (``why`` says which)."""
    for stale in ([path, confusion_path(path)] if path else []):
        if os.path.isfile(stale):
            os.remove(stale)
            log.warning("%s: removed: it held an earlier run's metrics, and %s", stale, why)


@cli_entry("oncolens batch")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    # SIGTERM (systemd, timeout) unwinds as Ctrl-C does: the rows written are flushed and
    # kept, and the one line says how to go on (exit 143; Ctrl-C 130)
    with sigterm_as_interrupt():
        try:
            return _run(args)
        except KeyboardInterrupt as exc:
            if getattr(exc, "hint", None) is None:  # stopped before _run held the lock
                exc.hint = _resume_hint(args)
            raise


def _resume_hint(args, lock=None):
    """What a stopped run kept; ``lock``: the results file's, which knows whether this run
    wrote a row. A file this run wrote no row into is as it was: the earlier rows an
    --overwrite had not yet replaced, or no row at all (empty, or a CSV header alone)."""
    if not args.results:
        return "no --results file, so nothing was kept"
    if not os.path.isfile(args.results):
        return "no row was written, so no --results file was kept: run the same command " \
               "again"
    if not (lock is not None and lock.wrote_row) and (
            (args.overwrite and not args.resume) or not _holds_rows(args.results)):
        return "no row was written, so {} was left as it was: run the same command " \
               "again".format(args.results)
    return "the rows written so far are kept in {}: run the same command with --resume to " \
           "continue".format(args.results)


def _holds_rows(path):
    """Whether the results file holds a row; True where it cannot be read (it is not
    called empty unread)."""
    from oncolens.appliance.errors import OncoLensError
    from oncolens.appliance.results import holds_rows
    try:
        return holds_rows(path)
    except (OncoLensError, IOError, OSError):
        return True


def _run(args):
    _check_args(args)
    from oncolens.appliance.batch import run_batch
    from oncolens.appliance.pipeline import opencv_single_threaded
    from oncolens.appliance.results import ResultsLock
    opencv_single_threaded()
    rows = []
    keep = None if args.results else rows.append  # without a file, metrics need the rows
    # held from the first row until the metrics are written: one run at a time writes them
    lock = ResultsLock(args.results) if args.results else None
    finished = False
    try:
        with open_classifier(args, args.batch_size) as clf:
            log.info("model %s on %s, batch %d, %d workers", clf.bundle.model_path,
                     clf.backend.describe(), args.batch_size, args.workers)
            summary = run_batch(clf, args.input, results=args.results, annotate=args.annotate,
                                batch_size=args.batch_size, workers=args.workers,
                                resume=args.resume, overwrite=args.overwrite,
                                progress=not args.no_progress, on_row=keep,
                                outputs=_own_images(args), lock=lock)
            labels = clf.labels
        done = summary.classified + summary.failed
        print("classified {} in {:.1f} s ({:.1f} images/s); {} failed; {} skipped "
              "(--resume); {} ignored".format(
                  plural(summary.classified, "image"), summary.seconds, done / summary.seconds
                  if summary.seconds else 0.0, summary.failed, summary.skipped,
                  plural(summary.ignored, "non-image file")))
        if args.results:
            print("results: {}".format(args.results))
        if done == 0 and summary.skipped == 0:  # before the metrics: an --overwrite'd
            raise UsageError("input {}: no image files found".format(  # file is as it was
                args.input))
        report_metrics(args, labels, rows)
        finished = True
    except KeyboardInterrupt as exc:
        if lock is not None:  # first: a file it made and wrote no row into goes now
            _stopped(args, lock)
        exc.hint = _resume_hint(args, lock)
        raise
    finally:
        if lock is not None and not finished:  # ended on an error
            _stopped(args, lock)
        elif lock is not None:
            lock.release()
    return 1 if summary.failed else 0


def _stopped(args, lock):
    """A run that ended before its metrics: a results file it made stays only with rows in
    it, and the earlier run's metrics, which do not describe the rows it wrote, go (under
    the lock, which is let go last). Once: the lock let go, there is nothing left to do."""
    if lock.fd is None:
        return
    if lock.wrote_row:
        try:
            _drop_stale_metrics(metrics_path(args), "this run, which wrote rows, stopped "
                                "before it could write its own")
        except OSError as exc:
            log.warning("%s", os_error_line(exc))
    lock.release(discard=True)
