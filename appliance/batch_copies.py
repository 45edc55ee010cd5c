"""``oncolens batch --annotate OUTDIR --overwrite``: the earlier run's annotated copies go.

A rerun with ``--overwrite`` replaced only the copies of the images it classified again: the
copies of images no longer in the input stayed, so OUTDIR mixed two runs. Each results row
names the copy its run wrote (the ``annotated`` column, an absolute path; empty where none
was written), so before ``--overwrite`` empties the results file, the copies it records
inside OUTDIR are removed, and nothing else: a file no row names (one of the user's, or a
copy that no results file records) stays, and where there is no record to go by (no
``--results``, a file not there, or one written before rows named their copies) a warning
says that earlier copies may remain.
"""
import logging
import os

from oncolens.appliance.errors import plural
from oncolens.appliance.imageio import is_image_file
from oncolens.appliance.outpaths import drop_empty_folders, inside as _inside
from oncolens.appliance.results import path_key, read_rows

log = logging.getLogger(__name__)

COLUMN = "annotated"


def recorded_copies(results):
    """The copies the run recorded in ``results`` wrote, as absolute paths; None when its
    rows record none at all (no row, or rows from before the ``annotated`` column)."""
    rows = list(read_rows(results))
    if rows and results.lower().endswith(".csv") and not _ends_a_line(results):
        # a killed run's unfinished last row (JSON Lines leave it unread): its path may be cut
        rows.pop()
    if not rows or any(COLUMN not in row for row in rows):
        return None
    return [row[COLUMN] for row in rows if row.get(COLUMN)]


def _ends_a_line(path):
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if not fh.tell():
            return True
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


class EarlierCopies(object):
    """Removes the copies an earlier run recorded in its results file from ``outdir``: called
    with the results file's path just before ``--overwrite`` empties it (``ResultsWriter``'s
    ``on_replace``, at this run's first row). ``input_root``: the input's folder, whose files
    are never removed (an input inside OUTDIR is not a copy, whatever a row says). ``keep``:
    the ``path_key``s of the copies this run has written by then (its first batch's, which
    replaced earlier ones of the same name), never removed."""

    def __init__(self, outdir, input_root, keep=()):
        self.outdir = outdir
        self.keep = keep
        self.root = os.path.realpath(outdir)
        self.inputs = os.path.realpath(input_root)
        self.held = os.path.isdir(outdir) and bool(os.listdir(outdir))  # before this run
        self.recorded = False
        self.unrecorded = None

    def __call__(self, results):
        copies = recorded_copies(results)
        if copies is None:
            self.unrecorded = "{} does not name the copies its rows came with".format(results)
            self.warn_unrecorded(results)
            return
        self.recorded = True
        removed = [path for path in (self._remove(p) for p in copies) if path]
        drop_empty_folders((os.path.dirname(p) for p in removed), self.root)
        if removed:
            log.info("--overwrite: removed the earlier run's %s from %s (as %s named them)",
                     plural(len(removed), "annotated copy", "annotated copies"), self.outdir,
                     results)

    def _remove(self, path):
        """Remove the copy ``path`` names; its real path when removed, else None."""
        folder, name = os.path.split(os.path.abspath(path))
        real = os.path.join(os.path.realpath(folder), name)  # the copy itself, not a link's
        if not _inside(real, self.root) or not is_image_file(real):
            return None
        if _inside(real, self.inputs) and not _inside(self.root, self.inputs):
            return None  # OUTDIR holds the input: an input is never taken for a copy
        if os.path.islink(real) or not os.path.isfile(real) or path_key(real) in self.keep:
            return None
        os.remove(real)
        return real

    def warn_unrecorded(self, results):
        """Once the earlier results file is read (or found not there): where no record of
        the earlier copies was read and OUTDIR held files, say that those may remain."""
        if self.recorded or not self.held:
            return
        why = self.unrecorded or ("no --results file records the copies of an earlier run"
                                  if not results else "there was no earlier {} to record "
                                  "them".format(results))
        log.warning("--annotate %s --overwrite: copies an earlier run wrote there may remain "
                    "beside this run's (%s); only the ones this run writes are replaced",
                    self.outdir, why)
