"""Batch results files: CSV or JSON Lines, appended and flushed row by row, read back for
``--resume`` and for the metrics.

One row a file: path, relpath, predicted label and index, confidence, every class's
probability (``p_<label>``), ground truth (from a folder named after a label),
the error (empty when it worked), backend, precision, the model file's SHA-256 and the
annotated copy written for it (absolute; empty without one), which ``--overwrite`` of
``--annotate`` goes by (batch_copies).
A row whose annotated copy was not written is done again by ``--resume`` with ``--annotate``,
its new row replacing it (results_redo).

Paths are written as the file system names them: a name that is not valid UTF-8 keeps its
bytes (``surrogateescape``), so it is read back, and skipped by ``--resume``, as the same name.
"""
import csv
import errno
import functools
import io
import json
import logging
import os

from oncolens.appliance.errors import UsageError
from oncolens.appliance.locks import take_lock

log = logging.getLogger(__name__)

FORMATS = (".csv", ".jsonl")
BASE_COLUMNS = ["path", "relpath", "label", "index", "confidence"]
TAIL_COLUMNS = ["truth", "correct", "error", "backend", "precision", "model_sha256",
                "annotated"]
ERRORS = "surrogateescape"  # file names that are not UTF-8 keep their bytes
COPY_FAILED = "annotated copy not written"  # how a row's error starts when only its copy failed


def columns(labels):
    return BASE_COLUMNS + ["p_{}".format(label) for label in labels] + TAIL_COLUMNS


def results_format(path):
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UsageError("--results {}: expected a .csv or .jsonl file name".format(path))
    return ext


def read_rows(path):
    """Rows of a results file as dictionaries (strings for CSV, JSON types for JSONL)."""
    if not os.path.isfile(path):
        return
    ext = results_format(path)
    with io.open(path, "r", encoding="utf-8", errors=ERRORS, newline="") as fh:
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


@functools.lru_cache(maxsize=256)
def _real_folder(folder):
    return os.path.realpath(folder)  # once per folder, not once per file


def path_key(path):
    """One spelling of a path: ``in/x``, ``./in/x`` and ``/abs/in/x`` (or through a link to
    the folder) are one file; two names of one file (a link beside it) stay two."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.normcase(os.path.join(_real_folder(folder), name))


def copy_failed(row):
    """Whether a row is a classification whose annotated copy was not written."""
    return str(row.get("error") or "").startswith(COPY_FAILED)


def done_paths(path, sha="", precision="", backend="", redo=None):
    """The files already in a results file (what ``--resume`` skips), as ``path_key``s.
    ``redo``: a set, for a run that annotates, to which the files whose annotated copy was
    not written go instead (unless another row of the same file is done): their copies are
    made again.

    Appending happens only to rows of the same model file at the same precision on the same
    backend: one results file (and its metrics) never mixes two models, or two runtimes'
    figures, so another's rows are refused."""
    done = set()
    for row in read_rows(path):
        _check_same_backend(path, row, backend)  # first: its model file may differ too
        _check_same_model(path, row, sha, precision)
        key = path_key(row["path"])
        (redo if redo is not None and copy_failed(row) else done).add(key)
    if redo is not None:
        redo -= done
    return done


def _check_same_backend(path, row, backend):
    theirs = row.get("backend") or ""
    if theirs and backend and theirs != backend:
        raise UsageError("--resume: {} holds results from backend {}, this run uses {}: pass "
                         "--backend {} to continue it, or give a new --results file (or "
                         "--overwrite to replace it)".format(path, theirs, backend, theirs))


def _check_same_model(path, row, sha, precision):
    theirs = (row.get("model_sha256") or "", row.get("precision") or "")
    if theirs[0] and sha and theirs[0] != sha:
        raise UsageError("--resume: {} holds results of another model (SHA-256 {}...; this "
                         "model {}...): use a new results file".format(
                             path, theirs[0][:12], sha[:12]))
    if theirs[1] and precision and theirs[1] != precision:
        raise UsageError("--resume: {} holds results at precision {}, this run is {}: use "
                         "a new results file".format(path, theirs[1], precision))


class ResultsLock(object):
    """An exclusive advisory lock (``flock``) on a results file, so that one run at a time
    writes it: two ``--resume`` runs into one file interleaved and duplicated rows.  The
    second run is refused at once (UsageError naming the file); the lock goes with the file
    descriptor, so a run that dies, however, leaves none behind.

    ``acquire()`` creates the file when it is not there (a run is about to write it);
    ``probe()`` only checks an existing one, before the model is loaded. ``release(discard=
    True)``, for a run that ends on an error or is stopped, takes back the file it made
    (or the header it wrote into an empty one) when no row was written into it."""

    def __init__(self, path):
        self.path = path
        self.fd = None
        self.created = False  # this run made the file (acquire)
        self.was_empty = False  # it was empty when locked: made now, or left empty before
        self.wrote_row = False  # set by the ResultsWriter at its first row

    def acquire(self):
        while self.fd is None:
            fd, created = _open_or_create(self.path)
            if not self._lock(fd):
                os.close(fd)
                raise self.busy()
            if not _still_at(fd, self.path):  # replaced (swap) or removed meanwhile: again
                os.close(fd)
                continue
            self.fd, self.created = fd, created
            self.was_empty = os.fstat(fd).st_size == 0
        return self

    def swap(self, tmp):
        """Move ``tmp`` (written whole beside the file) over the locked file, locked first:
        the lock goes with the new file (a run that locked the old one meanwhile sees that
        it is no longer at the name, and locks the new one, or is refused). A path that is
        a link stays one: the file it names is the one replaced."""
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)
        try:
            if not self._lock(fd):
                raise self.busy()
            os.replace(tmp, os.path.realpath(self.path))
        except BaseException:
            os.close(fd)
            raise
        old, self.fd = self.fd, fd
        if old is not None:
            os.close(old)

    def release(self, discard=False):
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                if discard and self.was_empty:
                    self._take_back(fd)
            finally:
                os.close(fd)  # closing the descriptor releases the lock

    def _take_back(self, fd):
        """Under the lock: the file this run made, holding no row, is removed; one that was
        empty before the run is emptied again (a header-only file blocks a plain rerun)."""
        try:
            if holds_rows(self.path):
                return
            if self.created:
                os.remove(self.path)
                log.info("%s: removed: this run made it and wrote no row into it", self.path)
            else:
                os.ftruncate(fd, 0)
        except (IOError, OSError) as exc:
            log.warning("%s: this run wrote no row into it, but it cannot be taken back (%s)",
                        self.path, exc.strerror or exc)

    def probe(self):
        """Refuse at once when another run holds the lock of an existing file."""
        if self.fd is not None or not os.path.isfile(self.path):
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return  # unreadable: the writer says why when it opens the file
        try:
            if not self._lock(fd):
                raise self.busy()
        finally:
            os.close(fd)

    def busy(self):
        return UsageError("--results {}: another oncolens batch run is writing it (the file "
                          "is locked): wait for that run to end, or give another --results "
                          "file".format(self.path))

    def _lock(self, fd):
        """False when another open file holds the lock; True when taken (or when this file
        system cannot lock: a warning says so, and the run goes on)."""
        return take_lock(fd, self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _open_or_create(path):
    """(a descriptor of ``path`` to append to, whether this call created the file)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    try:
        return os.open(path, flags | os.O_EXCL, 0o666), True
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
    return os.open(path, flags, 0o666), False  # there before: never removed by this run


def _still_at(fd, path):
    """Whether the open file ``fd`` is still the one named ``path``."""
    try:
        there = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def holds_rows(path):
    """Whether a results file holds a row (a line after a CSV's header; any JSON line)."""
    with io.open(path, "rb") as fh:
        first = fh.readline()
        if results_format(path) != ".csv":
            return bool(first.strip())
        return bool(fh.readline().strip())


class ResultsWriter(object):
    """Appends rows to a .csv or .jsonl file, flushing after every batch.  It holds the
    file's ResultsLock from before it looks at the file until ``close()``; given a ``lock``
    (held longer by the caller, e.g. while the metrics are written), it takes that one and
    leaves releasing it to the caller.

    ``overwrite`` of a file that holds anything empties it only when the first row is
    written (``replacing`` until then): a run refused or stopped before that (its first
    batch failed, Ctrl-C) leaves the earlier rows as they were. ``on_replace(path)`` is
    called under the lock just before that, while the earlier rows are still there."""

    def __init__(self, path, labels, resume=False, overwrite=False, lock=None,
                 on_replace=None):
        self.path = path
        self.ext = results_format(path)
        self.columns = columns(labels)
        self.fh = self.csv = None
        self.appended = False  # continued an existing file (--resume)
        self.replacing = None  # the on_replace call still to make before the first row
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent)
        self._own_lock = lock is None
        self.lock = (lock or ResultsLock(path)).acquire()  # before the file is read or cut
        try:
            self._open(resume, overwrite, on_replace)
        except BaseException:
            if self._own_lock:
                self.lock.release(discard=True)
            raise

    def _open(self, resume, overwrite, on_replace=None):
        path = self.path
        exists = os.path.getsize(path) > 0  # the lock made it: empty is new
        if exists and not (resume or overwrite):
            raise UsageError("results file {} already exists: pass --resume to continue it or "
                             "--overwrite to replace it".format(path))
        if exists and resume:
            from oncolens.appliance.results_redo import drop_redone
            from oncolens.appliance.results_tail import finish_last_line
            finish_last_line(path, self.ext)  # an unfinished last line cut, a whole one ended
            self._check_header()
            drop_redone(path, self.lock)  # left by a run killed before it could
            self._start("a")
            self.appended = True
        elif exists:  # emptied at the first row (write)
            self.replacing = on_replace or (lambda path: None)
        else:
            self._start("w")

    def _start(self, mode):
        """Open the file to append (``a``) or to write from empty (``w``), with the CSV
        header when it has none."""
        self.fh = io.open(self.path, mode, encoding="utf-8", errors=ERRORS, newline="")
        if self.ext == ".csv":
            self.csv = csv.DictWriter(self.fh, fieldnames=self.columns, extrasaction="ignore")
            if mode == "w" or os.path.getsize(self.path) == 0:
                self.csv.writeheader()
                self.fh.flush()

    def _check_header(self):
        if self.ext != ".csv":
            return
        with io.open(self.path, "r", encoding="utf-8", errors=ERRORS, newline="") as fh:
            header = next(csv.reader(fh), [])
        if header == self.columns[:-1]:  # written before rows named their annotated copy
            self.columns = header
        elif header and header != self.columns:
            raise UsageError("--resume: {} has columns {} but this model writes {}: use a new "
                             "results file".format(self.path, ",".join(header),
                                                   ",".join(self.columns)))

    def write(self, row):
        if self.replacing is not None:  # --overwrite: the earlier rows go now, not before
            replacing, self.replacing = self.replacing, None
            replacing(self.path)
            self._start("w")
        if self.csv is not None:
            self.csv.writerow(dict((k, "" if v is None else v) for k, v in row.items()))
        else:
            self.fh.write(json.dumps(row, sort_keys=False) + "\n")
        self.lock.wrote_row = True

    def flush(self):
        if self.fh is None:
            return
        self.fh.flush()
        try:
            os.fsync(self.fh.fileno())
        except OSError:
            pass

    def close(self):
        try:
            if self.fh is not None and not self.fh.closed:
                self.flush()
                self.fh.close()
                # the rows --resume made again replace the earlier ones (a run that wrote
                # none has none to put in their place: the file was tidied when it opened)
                if self.appended and self.lock.wrote_row:
                    from oncolens.appliance.results_redo import drop_redone
                    drop_redone(self.path, self.lock)
        finally:
            if self._own_lock:
                self.lock.release()
