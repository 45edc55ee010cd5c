"""The last line of a results file that ``--resume`` is about to continue.

A run killed mid-write (or a power cut) can leave half a row at the end: it is cut, so that
appending starts clean and that file is classified again. A row that is whole but lacks its
line ending (a file written by hand or by another tool, or a stop between the row and its
newline) is kept, and its line ending is added:

- JSON Lines: the last line is whole when it parses as JSON (half an object never does).
- CSV: the last record is whole when it parses as one record with no open quote, has the
  header's field count, and its last field is taken as whole: the line ending was
  begun (``\\r``), or it is a whole SHA-256 (``model_sha256``, the last column of files
  from before the ``annotated`` one), or it is empty (a run without ``--annotate``, a copy
  not written; a row cut just before its copy's name keeps its prediction and loses only
  that name, the copy staying unrecorded). An annotated copy's path may have lost its end
  (``x.pgm.ppm`` -> ``x.pgm``, another file), so a row ending in one is cut.
"""
import csv
import io
import json
import logging
import os

from oncolens.appliance.results import ERRORS

log = logging.getLogger(__name__)

SHA256_CHARS = 64


def finish_last_line(path, ext):
    """Cut the unfinished last line of the results file ``path`` (``ext``: .csv or .jsonl),
    or end a whole one with its line ending."""
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if not size:
            return
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        start, ending = (_csv_tail if ext == ".csv" else _jsonl_tail)(fh, size)
        if ending is not None:
            fh.seek(0, os.SEEK_END)
            fh.write(ending)
            log.info("%s: its last row was whole but had no line ending: added", path)
            return
        log.warning("%s: dropping an unfinished last line (%d bytes) from an interrupted run",
                    path, size - start)
        fh.seek(start)
        fh.truncate()


def _line_start(fh, size, block=1 << 16):
    """Where the last line of the open file starts (after its last b'\\n'), read backwards."""
    end = size
    while end > 0:
        begin = max(0, end - block)
        fh.seek(begin)
        found = fh.read(end - begin).rfind(b"\n")
        if found >= 0:
            return begin + found + 1
        end = begin
    return 0


def _jsonl_tail(fh, size):
    """(where the last line starts, b'\\n' when it is whole, else None)."""
    start = _line_start(fh, size)
    fh.seek(start)
    try:
        json.loads(fh.read().decode("utf-8", ERRORS))
    except ValueError:
        return start, None
    return start, b"\n"


def _csv_tail(fh, size):
    """(where the last record starts, the line ending that makes it whole, else None). The
    file is read from its start, a line at a time: a quoted name may hold a line break, so
    the last record need not start after the last b'\\n'."""
    fh.seek(0)
    read = [0, None]  # bytes read so far, the first line's ending

    def lines():
        for raw in fh:
            read[0] += len(raw)
            if read[1] is None:
                read[1] = b"\r\n" if raw.endswith(b"\r\n") else b"\n"
            yield raw.decode("utf-8", ERRORS)

    header, start, end = None, 0, 0
    try:
        for record in csv.reader(lines()):
            if header is None:
                header = record
            start, end = end, read[0]
    except csv.Error:  # not a file this writer made: the last physical line goes, as before
        return _line_start(fh, size), None
    fh.seek(start)
    text = fh.read().decode("utf-8", ERRORS)
    if header is None or not _whole_record(text, header):
        return start, None
    return start, b"\n" if text.endswith("\r") else (read[1] or b"\r\n")


def _whole_record(text, header):
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error:  # an open quote
        return False
    if len(records) != 1 or len(records[0]) != len(header):
        return False
    last = records[0][-1]
    return text.endswith("\r") or not last or (
        header[-1] == "model_sha256" and len(last) == SHA256_CHARS)
