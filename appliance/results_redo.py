"""``oncolens batch --resume --annotate``: the rows whose annotated copy was not written.

Such a row keeps its prediction, and its error says ``annotated copy not written: ...``.
``--resume`` with ``--annotate`` classifies those files again, writes their copies and
appends their new rows; the earlier row of each then goes (``drop_redone``, when the run's
writer closes), so the file holds one row a file and its metrics count each once. The earlier
row stays until its new row is in the file: a run stopped before it redid a file keeps it,
and a run killed (SIGKILL, power) between the two leaves both, which the next ``--resume``
tidies first.
"""
import csv
import io
import json
import logging
import os
import stat
import tempfile

from oncolens.appliance.results import ERRORS, copy_failed, path_key, results_format

log = logging.getLogger(__name__)


def _csv_records(fh):
    """(path_key or None, copy failed, the record's fields) of each CSV record."""
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
        return []
    records = [(None, False, header)]
    for fields in reader:
        row = dict(zip(header, fields)) if len(fields) == len(header) else {}
        key = path_key(row["path"]) if row.get("path") else None
        records.append((key, copy_failed(row), fields))
    return records


def _jsonl_records(fh):
    """(path_key or None, copy failed, the line as it is) of each JSON line."""
    records = []
    for line in fh:
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not row.get("path"):
            records.append((None, False, line))
        else:
            records.append((path_key(row["path"]), copy_failed(row), line))
    return records


def _superseded(records):
    """Indexes of the rows whose copy failed and that a later row of the same file replaces."""
    later, drop = set(), set()
    for n in range(len(records) - 1, -1, -1):
        key, failed = records[n][0], records[n][1]
        if key is None:
            continue
        if failed and key in later:
            drop.add(n)
        later.add(key)
    return drop


def drop_redone(path, lock):
    """Remove from the results file ``path`` each row whose annotated copy was not written
    and that a later row of the same file replaces. Under ``lock`` (the file's ResultsLock,
    held): the file is written whole beside it and moved into place (``lock.swap``), so a
    stop midway leaves it as it was; a link stays a link to the file rewritten. Returns how many rows went."""
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
    log.info("%s: %d earlier row(s) whose annotated copy was not written removed: a later "
             "row of the same file replaces each", path, len(drop))
    return len(drop)


def _write_beside(path, write):
    """The path of a new file beside ``path``, with its mode, that ``write(fh)`` filled
    (text, no newline translation) and that was flushed to disk. Its name is its own
    (mkstemp), never that of a file the user or another run has there."""
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with io.open(fd, "w", encoding="utf-8", errors=ERRORS, newline="") as fh:
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))  # mkstemp's is 0600
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.remove(tmp)
        raise
    return tmp
