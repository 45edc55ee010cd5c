"""Batch results files: CSV or JSON Lines, appended and flushed row by row, read back for
``--resume`` and for the metrics.

One row a file: path, relpath, predicted label and index, confidence, every class's
probability (``p_<label>``), ground truth (from the parent folder, when it is a label),
the error (empty when it worked), backend, precision and the model file's SHA-256.
"""
import csv
import io
import json
import logging
import os

from oncolens.appliance.errors import UsageError

log = logging.getLogger(__name__)

FORMATS = (".csv", ".jsonl")
BASE_COLUMNS = ["path", "relpath", "label", "index", "confidence"]
TAIL_COLUMNS = ["truth", "correct", "error", "backend", "precision", "model_sha256"]


def columns(labels):
    return BASE_COLUMNS + ["p_{}".format(label) for label in labels] + TAIL_COLUMNS


def results_format(path):
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UsageError("--results {}: expected a .csv or .jsonl file name".format(path))
    return ext


def _drop_partial_line(path):
    """A run killed mid-write can leave half a line: cut it so appending starts clean."""
    with open(path, "rb+") as fh:
        data = fh.read()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        log.warning("%s: dropping an unfinished last line (%d bytes) from an interrupted run",
                    path, len(data) - keep)
        fh.seek(keep)
        fh.truncate()


def read_rows(path):
    """Rows of a results file as dictionaries (strings for CSV, JSON types for JSONL)."""
    if not os.path.isfile(path):
        return
    ext = results_format(path)
    with io.open(path, "r", encoding="utf-8", newline="") as fh:
        if ext == ".csv":
            for row in csv.DictReader(fh):
                if row.get("path") and None not in row:
                    yield row
            return
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                log.warning("%s: skipping an unreadable line", path)
                continue
            if isinstance(row, dict) and row.get("path"):
                yield row


def done_paths(path):
    """The paths already in a results file (what ``--resume`` skips)."""
    return set(row["path"] for row in read_rows(path))


class ResultsWriter(object):
    """Appends rows to a .csv or .jsonl file, flushing after every batch."""

    def __init__(self, path, labels, resume=False, overwrite=False):
        self.path = path
        self.ext = results_format(path)
        self.columns = columns(labels)
        exists = os.path.isfile(path) and os.path.getsize(path) > 0
        if exists and not (resume or overwrite):
            raise UsageError("results file {} already exists: pass --resume to continue it or "
                             "--overwrite to replace it".format(path))
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent)
        append = exists and resume
        if append:
            _drop_partial_line(path)
            self._check_header()
        self.fh = io.open(path, "a" if append else "w", encoding="utf-8", newline="")
        self.csv = None
        if self.ext == ".csv":
            self.csv = csv.DictWriter(self.fh, fieldnames=self.columns, extrasaction="ignore")
            if not append or os.path.getsize(path) == 0:
                self.csv.writeheader()
                self.fh.flush()

    def _check_header(self):
        if self.ext != ".csv":
            return
        with io.open(self.path, "r", encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
        if header and header != self.columns:
            raise UsageError("--resume: {} has columns {} but this model writes {}: use a new "
                             "results file".format(self.path, ",".join(header),
                                                   ",".join(self.columns)))

    def write(self, row):
        if self.csv is not None:
            self.csv.writerow(dict((k, "" if v is None else v) for k, v in row.items()))
        else:
            self.fh.write(json.dumps(row, sort_keys=False) + "\n")

    def flush(self):
        self.fh.flush()
        try:
            os.fsync(self.fh.fileno())
        except OSError:
            pass

    def close(self):
        if not self.fh.closed:
            self.flush()
            self.fh.close()
