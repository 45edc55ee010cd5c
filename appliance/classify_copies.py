"""``oncolens classify IN OUT/ --overwrite``: the copies earlier runs wrote into OUT go.

A rerun with ``--overwrite`` replaced only the copies of the images it classified again: the
copies of images no longer in the input stayed, so OUT mixed two runs. A folder output now
keeps a record of what classify wrote there, ``OUT/.oncolens-classify.jsonl`` (hidden, so no
input walk reads it): one JSON line a copy, appended as it is written, with its path inside
OUT, its size and its modification time. Before ``--overwrite`` writes the first frame, the
copies it records are removed, and nothing else: a path outside OUT or through a link, a
file that is not an image, an input of this run, and a file whose size or modification time
is no longer the one recorded (someone wrote over it since: it is theirs now) stay, as does
every file no line names. A file's own naming cannot tell a copy from a user's file of the
same name, so nothing is removed by its name alone; where OUT held files but no record (a
folder of earlier versions' copies), a warning says that earlier copies may remain.
"""
import io
import json
import logging
import os

from oncolens.appliance.errors import plural
from oncolens.appliance.imageio import is_image_file
from oncolens.appliance.outpaths import drop_empty_folders, inside as _inside, numbered_files

log = logging.getLogger(__name__)

RECORD = ".oncolens-classify.jsonl"


def read_record(path):
    """The entries a record file holds (a line a killed run cut, or any other line that is
    not an entry, is skipped); None when there is no record to trust (none there, a link,
    not a regular file, unreadable)."""
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    entries = []
    try:
        with io.open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                    entries.append(entry)
    except (IOError, OSError, UnicodeDecodeError) as exc:
        log.warning("%s: cannot read it (%s): taken as no record", path, exc)
        return None
    return entries


class CopyRecord(object):
    """The record of a folder output's copies. ``start()`` before the first frame (with
    ``overwrite``: removes the copies the record names, then the record); ``add(path)``
    after each copy is written; ``close()`` at the end. ``inputs``: this run's input files,
    never removed whatever a line says."""

    def __init__(self, folder, overwrite=False, inputs=()):
        self.folder = folder
        self.root = os.path.realpath(folder)
        self.path = os.path.join(folder, RECORD)
        self.overwrite = overwrite
        self.inputs = set(os.path.realpath(p) for p in inputs)
        self.fh = None
        self.usable = True

    def start(self):
        if not os.path.isdir(self.folder):
            return
        if os.path.lexists(self.path) and (os.path.islink(self.path) or
                                           not os.path.isfile(self.path)):
            self.usable = False  # never written through a link, nor read from one
            log.warning("output %s: %s is not a regular file: this run's copies are not "
                        "recorded%s", self.folder, self.path,
                        ", and earlier copies may remain" if self.overwrite else "")
            return
        if not self.overwrite:
            return
        entries = read_record(self.path)
        if entries is None:
            if any(name != RECORD for name in os.listdir(self.folder)):
                log.warning("output %s --overwrite: copies an earlier run wrote there may "
                            "remain beside this run's (no %s records them); only the ones "
                            "this run writes are replaced", self.folder, RECORD)
            return
        removed = [path for path in (self._remove(e) for e in entries) if path]
        drop_empty_folders((os.path.dirname(p) for p in removed), self.root)
        os.remove(self.path)
        if removed:
            log.info("--overwrite: removed the earlier run's %s from %s (as %s named them)",
                     plural(len(removed), "copy", "copies"), self.folder, RECORD)

    def _remove(self, entry):
        rel = entry["path"]
        path = os.path.normpath(os.path.join(self.root, rel))
        if os.path.isabs(rel) or not _inside(path, self.root) or \
                os.path.realpath(path) != path:  # outside OUT, or a link on the way
            return None
        if not is_image_file(path) or not os.path.isfile(path) or path in self.inputs:
            return None
        st = os.stat(path)
        if st.st_size != entry.get("size") or st.st_mtime_ns != entry.get("mtime_ns"):
            return None  # written over since: not the copy recorded
        os.remove(path)
        return path

    def add(self, path):
        """Record the copy just written at ``path`` (a path inside the folder)."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.folder))
        if not self.usable or rel.startswith(os.pardir + os.sep):
            return
        if self.fh is None:
            self.fh = io.open(self.path, "a", encoding="utf-8")
        st = os.stat(path)
        self.fh.write(json.dumps({"path": rel, "size": st.st_size,
                                  "mtime_ns": st.st_mtime_ns}) + "\n")
        self.fh.flush()  # a killed run's copies are recorded up to its last one

    def close(self):
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def warn_pattern_leftovers(pattern, written):
    """A numbered output (``out_%i.jpg``) keeps no record (its folder may be the input's,
    and its names may be a user's): after the run, the files there that the pattern names
    but this run did not write are counted in a warning, the first one named."""
    folder = os.path.dirname(pattern) or "."
    named = numbered_files(pattern)
    ours = set(os.path.realpath(p) for p in written)
    try:
        names = sorted(os.listdir(folder))
    except (IOError, OSError):
        return
    others = [os.path.join(folder, n) for n in names
              if named(os.path.join(folder, n)) and
              os.path.realpath(os.path.join(folder, n)) not in ours]
    if others:
        log.warning("output %s: %s it names that this run did not write remain%s (%s%s): "
                    "an earlier run's or yours, left as they are", pattern,
                    plural(len(others), "file"), " beside this run's" if written else "",
                    others[0], " ..." if others[1:] else "")
