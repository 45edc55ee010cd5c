"""``oncolens batch --resume --annotate``: the rows whose annotated copy was not written.

Such a row keeps its prediction, and its error says ``annotated copy not written: ...``.
``--resume`` with ``--annotate`` classifies those files again, writes their copies and
appends their new rows; the earlier row of each then goes (``drop_redone``, when the run's
writer closes), so the file holds one row a file and its metrics count each once. The earlier
row stays until its new row is in the file: a run stopped before it redid a file keeps it,
and a run killed (SIGKILL, power) between the two leaves both, which the next ``--resume``
tidies first. A file that could not be read this time keeps its earlier row, prediction and
all, and that new row, which holds none, goes instead: the next ``--resume`` tries again.
"""
import csv
import io
import json
import logging
import os

from oncolens.appliance.outpaths import write_temp
from oncolens.appliance.results import ERRORS, copy_failed, path_key, results_format

log = logging.getLogger(__name__)

COPY, NONE, DONE = "copy failed", "no prediction", "done"  # the kinds of row (_kind)


def _kind(row):
    """COPY: classified, its copy not written; NONE: not classified (the file not read);
    DONE: classified, and annotated where the run annotated."""
    if copy_failed(row):
        return COPY
    return DONE if row.get("label") not in (None, "") else NONE


def _csv_records(fh):
    """(path_key or None, kind (_kind) or None, the record's fields) of each CSV record."""
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
        return []
    records = [(None, None, header)]
    for fields in reader:
        row = dict(zip(header, fields)) if len(fields) == len(header) else {}
        if row.get("path"):
            records.append((path_key(row["path"]), _kind(row), fields))
        else:
            records.append((None, None, fields))
    return records


def _jsonl_records(fh):
    """(path_key or None, kind (_kind) or None, the line as it is) of each JSON line."""
    records = []
    for line in fh:
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not row.get("path"):
            records.append((None, None, line))
        else:
            records.append((path_key(row["path"]), _kind(row), line))
    return records


def _superseded(records):
    """Indexes of the rows that go: each row whose copy failed that a later row of the same
    file holding a prediction replaces, and each row holding none (the file not read again)
    that follows a row of the same file whose copy failed, which stays with its prediction."""
    drop, copy_failed_before, predicted_later = set(), set(), set()
    for n, (key, kind, _) in enumerate(records):
        if kind == NONE and key in copy_failed_before:
            drop.add(n)
        elif kind == COPY:
            copy_failed_before.add(key)
    for n in range(len(records) - 1, -1, -1):
        key, kind = records[n][0], records[n][1]
        if kind == COPY and key in predicted_later:
            drop.add(n)
        if kind in (COPY, DONE):
            predicted_later.add(key)
    return drop


def drop_redone(path, lock):
    """Remove from the results file ``path`` each row whose annotated copy was not written
    and that a later row of the same file replaces (``_superseded``). Under ``lock`` (the
    file's ResultsLock, held): the file is written whole beside it and moved into place
    (``lock.swap``), so a stop midway leaves it as it was; a link stays a link to the file
    rewritten. Returns how many rows went."""
    csv_file = results_format(path) == ".csv"
    with io.open(path, "r", encoding="utf-8", errors=ERRORS, newline="") as fh:
        records = _csv_records(fh) if csv_file else _jsonl_records(fh)
    drop = _superseded(records)
    if not drop:
        return 0
    kept = [fields for n, (_, _, fields) in enumerate(records) if n not in drop]
    target = os.path.realpath(path)  # --results naming a link: the file it names
    if csv_file:  # the excel dialect, as csv.DictWriter wrote
        tmp = _write_beside(target, lambda fh: csv.writer(fh).writerows(kept))
    else:
        tmp = _write_beside(target, lambda fh: fh.write(u"".join(kept)))
    try:
        lock.swap(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    log.info("%s: %d row(s) removed: an earlier one whose annotated copy was not written "
             "where a later row of the same file replaces it, or a later one that holds no "
             "prediction (the file not read again) where the earlier one stays", path,
             len(drop))
    return len(drop)


def _write_beside(path, write):
    """The path of a new file beside ``path``, with its mode, that ``write(fh)`` filled
    (text, no newline translation) and that was flushed to disk: outpaths.write_temp's name
    of its own, never that of a file the user or another run has there."""
    def fill(tmp):
        with io.open(tmp, "w", encoding="utf-8", errors=ERRORS, newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    return write_temp(path, fill)
