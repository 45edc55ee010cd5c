"""Classify a whole folder: streamed, batched, resumable, with a results file and metrics.

    run_batch(classifier, "archive/", results="out.csv", annotate="annotated/")

Decoding and preprocessing run in a worker pool ahead of inference (pipeline.prefetch);
every result is appended to the results file and flushed as its batch finishes, so a
killed run loses nothing already classified and ``resume=True`` picks up where it stopped.
"""
import collections
import itertools
import logging
import os
import time

from oncolens.appliance.batch_copies import EarlierCopies
from oncolens.appliance.errors import ImageWriteError, UsageError, plural
from oncolens.appliance.evaluation import input_folder, truth_of
from oncolens.appliance.lowbits import LowBitsWarning
from oncolens.appliance.pipeline import batched, iter_image_files, prefetch, window
from oncolens.appliance.results import COPY_FAILED, ResultsWriter, done_paths, path_key

log = logging.getLogger(__name__)

Summary = collections.namedtuple("Summary", ["classified", "failed", "skipped", "ignored",
                                             "seconds"])


class Progress(object):
    """tqdm when it is installed, else a log line every few seconds; shows images/s."""

    def __init__(self, enabled=True, every=5.0):
        self.count = 0
        self.started = time.time()
        self.last = self.started
        self.every = every
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(unit="img", desc="classify", smoothing=0.1)
            except ImportError:
                pass
        self.enabled = enabled

    def update(self, n):
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.time()
        if self.enabled and now - self.last >= self.every:
            self.last = now
            log.info("%s, %.1f images/s", plural(self.count, "image"),
                     self.count / (now - self.started))

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _row(item, labels, probs=None, pred=None, backend="", precision="", sha="",
         input_name=None):
    truth = truth_of(item.relpath, labels, input_name)
    # absolute: a --resume from another folder still recognises the file
    row = collections.OrderedDict([("path", os.path.abspath(item.path)),
                                   ("relpath", item.relpath),
                                   ("label", None), ("index", None), ("confidence", None)])
    for n, label in enumerate(labels):
        row["p_" + label] = round(float(probs[n]), 6) if probs is not None else None
    if pred is not None:
        row["label"], row["index"], row["confidence"] = pred.label, pred.index, round(
            pred.confidence, 6)
    row["truth"] = truth
    row["correct"] = (None if truth is None or pred is None else int(pred.label == truth))
    row["error"] = item.error
    row["backend"], row["precision"], row["model_sha256"] = backend, precision, sha
    row["annotated"] = None  # the copy's absolute path, once written
    return row


class Annotator(object):
    """Writes annotated copies under ``outdir`` with the input's names and sub-folders.
    ``written``: the ``path_key``s of the copies written while ``record()`` asks for them
    (EarlierCopies' ``keep=``, read at the first row), else None: a run of 100k images does
    not hold every copy's name to the end."""

    def __init__(self, outdir, overwrite=False):
        self.outdir = outdir
        self.overwrite = overwrite
        self.written = None

    def record(self):
        """Start recording the copies written; the set they go to."""
        self.written = set()
        return self.written

    def __call__(self, item, preds):
        from oncolens.appliance.imageio import colour_path, write_image
        from oncolens.appliance.overlay import draw_lines
        from oncolens.appliance.postprocess import overlay_text
        target = colour_path(os.path.join(self.outdir, item.relpath), item.path)
        if os.path.realpath(target) == os.path.realpath(item.path):
            raise UsageError("--annotate {}: the copy of {} would replace it: give a folder "
                             "apart from the input".format(self.outdir, item.path))
        if os.path.exists(target) and not self.overwrite:
            raise UsageError("output {} already exists: pass --overwrite to replace it".format(
                target))
        write_image(target, draw_lines(item.image, [overlay_text(p) for p in preds]))
        if self.written is not None:
            self.written.add(path_key(target))
        return target


def image_files(uri, counts, exclude=None):
    """``iter_image_files(uri)``, refused at once when it lists no file (a glob that matches
    nothing, a folder of notes): before anything is written, so a corrected rerun is not
    blocked by a header-only results file, nor an --overwrite'd one emptied."""
    found = iter_image_files(uri, counts, exclude=exclude)
    first = next(found, None)
    if first is None:
        ignored = counts["ignored"]
        raise UsageError("input {}: no image files found{}".format(
            uri, " ({} ignored)".format(plural(ignored, "non-image file")) if ignored else ""))
    return itertools.chain([first], found)


def run_batch(clf, uri, results=None, annotate=None, batch_size=8, workers=2, resume=False,
              overwrite=False, progress=True, on_row=None, outputs=(), lock=None):
    """Classify every image under ``uri``; returns a Summary. ``on_row(row)`` sees each row.
    ``outputs``: image files the run writes (the confusion picture), never classified when
    they lie inside the input (a rerun would take the last run's picture for an input).
    ``lock``: the results file's ResultsLock when the caller holds it beyond the run (for
    the metrics); without one, the results file is locked while the run writes it."""
    labels = clf.labels
    backend = clf.backend.name
    precision = getattr(clf.backend, "precision", "fp32")
    sha = clf.bundle.model_sha256 or ""
    annotator, copies = _annotating(annotate, uri, results, resume, overwrite)
    input_name = os.path.basename(os.path.abspath(input_folder(uri)))
    counts = collections.Counter()
    found = image_files(uri, counts, exclude=annotate)  # before the results file is made
    writer, skip = _open_results(results, labels, resume, overwrite, sha, precision, backend,
                                 lock, copies, redo_copies=annotator is not None)
    if copies is not None and (writer is None or writer.replacing is None):
        copies.warn_unrecorded(results)  # else once the earlier file is read, at the first row
    own = set(path_key(path) for path in outputs)
    files = (f for f in found
             if path_key(f[0]) not in own and not _skipped(f, skip, counts))
    items = prefetch(files, clf.preprocessor, workers=workers, depth=window(batch_size, workers),
                     keep_image=annotator is not None, low_bits=LowBitsWarning(log))
    bar = Progress(progress)
    started = time.time()
    try:
        for good, failed in batched(items, batch_size):
            if annotator is not None and (writer is None or writer.replacing is None):
                annotator.written = None  # no earlier copies left to go: keep= is not read
            rows = [_row(item, labels, backend=backend, precision=precision, sha=sha,
                         input_name=input_name) for item in failed]
            for item in failed:
                log.error("%s", item.error)
            classified = _classify(clf, good, labels, annotator, backend, precision, sha,
                                   input_name) if good else []
            rows.extend(classified)
            for row in rows:
                if writer is not None:
                    writer.write(row)
                if on_row is not None:
                    on_row(row)
            if writer is not None:
                writer.flush()
            # classified, but the annotated copy not written, or an output that is not a
            # number: a failure (its row says so)
            unwritten = sum(1 for row in classified if row["error"])
            counts["classified"] += len(good) - unwritten
            counts["failed"] += len(failed) + unwritten
            bar.update(len(good) + len(failed))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if skip and not counts["skipped"]:
        log.warning("--resume: none of the %s in %s is under %s: was it started on "
                    "another input, or from another folder with relative paths?",
                    plural(len(skip), "file"), results, uri)
    return Summary(counts["classified"], counts["failed"], counts["skipped"], counts["ignored"],
                   time.time() - started)


def _annotating(annotate, uri, results, resume, overwrite):
    """(the Annotator writing copies under ``annotate``, the EarlierCopies that go first),
    each None where it has nothing to do."""
    if not annotate:
        return None, None
    # --resume of a results file that holds nothing yet continues no run: another run's
    # copies in the folder are not this run's to replace
    going_on = resume and bool(results) and os.path.isfile(results) and os.path.getsize(
        results) > 0
    _check_annotate_dir(annotate, going_on, overwrite)
    annotator, copies = Annotator(annotate, overwrite or going_on), None
    if overwrite and not going_on:  # the earlier run's copies go with its results
        copies = EarlierCopies(annotate, input_folder(uri), keep=annotator.record())
    return annotator, copies


def _open_results(results, labels, resume, overwrite, sha, precision, backend, lock=None,
                  on_replace=None, redo_copies=False):
    """The results writer (None without a file) and the files ``--resume`` skips;
    ``on_replace``: see ResultsWriter. ``redo_copies`` (the run annotates): a file whose
    annotated copy was not written is not skipped, but classified and annotated again (its
    new row replaces the earlier one: results_redo)."""
    if not results:
        return None, set()
    writer = ResultsWriter(results, labels, resume, overwrite, lock, on_replace)
    if not resume:
        return writer, set()
    redo = set() if redo_copies else None
    try:  # read after the writer has cut an unfinished last line
        skip = done_paths(results, sha, precision, backend, redo)
    except Exception:
        writer.close()
        raise
    log.info("--resume: skipping %s already in %s", plural(len(skip), "file"), results)
    if redo:
        log.info("--resume: classifying and annotating again %s whose annotated copy was not "
                 "written", plural(len(redo), "file"))
    return writer, skip


def _check_annotate_dir(outdir, resume, overwrite):
    if os.path.isdir(outdir) and os.listdir(outdir) and not (resume or overwrite):
        raise UsageError("--annotate {}: the folder exists and is not empty: pass --resume "
                         "with the --results file of the run that wrote it to continue that "
                         "run, or --overwrite to replace its files".format(outdir))


def _skipped(entry, skip, counts):
    if skip and path_key(entry[0]) in skip:
        counts["skipped"] += 1
        return True
    return False


def _classify(clf, good, labels, annotator, backend, precision, sha, input_name=None):
    import numpy as np
    from oncolens.appliance.postprocess import NOT_A_NUMBER, finite_rows
    result = clf.backend.infer(np.stack([item.tensor for item in good]))
    rows = []
    for item, probs, finite in zip(good, result.probs, finite_rows(result.probs)):
        if not finite:  # no class to give it (argmax of NaN is the first): a failure
            row = _row(item, labels, backend=backend, precision=precision, sha=sha,
                       input_name=input_name)
            row["error"] = "{}: {}".format(item.path, NOT_A_NUMBER)
            log.error("%s", row["error"])
            rows.append(row)
            continue
        preds = clf.predictions(probs)
        row = _row(item, labels, probs, preds[0], backend, precision, sha, input_name)
        if annotator is not None:
            try:
                row["annotated"] = os.path.abspath(annotator(item, preds))
            except ImageWriteError as exc:  # recorded with its classification; the rest goes on
                row["error"] = "{}: {}".format(COPY_FAILED, exc)
                log.error("%s: %s", item.path, row["error"])
        rows.append(row)
    return rows
