"""Which files in an ``oncolens evaluate --out`` folder are evaluate's own.

report.md, comparison.md and the figures (confusion.png, roc.png, reliability.png) are
evaluate's by name. A ``<n>-<model folder>-`` one (``1-busi-lite0-report.md``) is evaluate's
only where the folder's record (``.oncolens-evaluate``, one name a line, written before the
files it names) lists it: by its name alone a file of yours such as ``2024-03-report.md``
was taken for one, refused as an earlier evaluation's and removed by --overwrite. A folder
written before the record existed has none: there a prefixed name counts only beside a
comparison.md, which every run of several models writes.
"""
import io
import os
import re

from oncolens.appliance.outpaths import replace_file

RECORD = ".oncolens-evaluate"


def _pattern():
    from oncolens.train.plots import FIGURES
    ends = "|".join(re.escape(end) for end in ["report.md"] + [f + ".png" for f in FIGURES])
    return re.compile(r"(comparison\.md|([1-9][0-9]*-.+-)?({}))\Z".format(ends))


def recorded(out_dir):
    """The names the folder's record lists, or None where it has no record."""
    try:
        with io.open(os.path.join(out_dir, RECORD), encoding="utf-8",
                     errors="surrogateescape") as fh:
            return set(line.rstrip("\n") for line in fh if line.strip())
    except (IOError, OSError):
        return None


def own_files(out_dir):
    """The files in ``out_dir`` that an earlier evaluation wrote (see above), sorted."""
    try:
        names = os.listdir(out_dir)
    except OSError:  # not there yet
        return []
    record, own = recorded(out_dir), _pattern()
    legacy = record is None and "comparison.md" in names
    found = []
    for name in names:
        match = own.match(name)
        if not match or os.path.isdir(os.path.join(out_dir, name)):
            continue
        if match.group(2) and not (legacy or name in (record or ())):
            continue  # a prefixed name evaluate has no record of writing: yours
        found.append(name)
    return sorted(found)


def record(out_dir, names):
    """Add ``names`` to the folder's record (before they are written: a run cut short
    still has its files known)."""
    names = sorted((recorded(out_dir) or set()) | set(names))

    def write(tmp):
        with io.open(tmp, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(u"".join(n + u"\n" for n in names))
    replace_file(os.path.join(out_dir, RECORD), write)


def forget(out_dir):
    """--overwrite: the earlier run's record goes with its files."""
    path = os.path.join(out_dir, RECORD)
    if os.path.isfile(path):
        os.remove(path)
