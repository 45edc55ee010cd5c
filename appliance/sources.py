"""Frame sources: one interface, an iterator of Frames with their origin and timestamp.

This module handles image files, folders (recursive, sorted) and quoted globs; the
appliance issue adds video files, cameras and streams behind the same ``open_source``.
"""
import collections
import glob
import os
import time

from oncolens.appliance.errors import ImageReadError, UsageError
from oncolens.appliance.imageio import is_image_file, read_image

# image: RGB uint8 HxWx3 or None when it could not be read (then ``error`` says why);
# origin: the file path or stream URI; relpath: the name to keep for outputs.
Frame = collections.namedtuple("Frame", ["image", "origin", "relpath", "index", "timestamp",
                                         "error"])


def list_images(uri):
    """The image files named by a file, a folder (recursive) or a glob, sorted; relpaths kept."""
    if os.path.isdir(uri):
        found = []
        for parent, dirs, files in os.walk(uri):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(parent, name)
                if is_image_file(path):
                    found.append((path, os.path.relpath(path, uri)))
        return found
    if os.path.isfile(uri):
        return [(uri, os.path.basename(uri))]
    if any(ch in uri for ch in "*?["):
        paths = sorted(p for p in glob.glob(uri, recursive=True) if os.path.isfile(p))
        base = _glob_base(uri)
        return [(p, os.path.relpath(p, base)) for p in paths if is_image_file(p)]
    raise UsageError("input not found: {} (expected an image file, a folder, a quoted glob or "
                     "a stream URI)".format(uri))


def _glob_base(pattern):
    parts = []
    for part in pattern.split(os.sep):
        if any(ch in part for ch in "*?["):
            break
        parts.append(part)
    return os.sep.join(parts) or "."


class ImageFilesSource(object):
    """Images from files; a file that cannot be decoded becomes a Frame with ``error`` set."""

    kind = "images"
    live = False

    def __init__(self, uri, loop=0):
        self.uri = uri
        self.files = list_images(uri)
        if not self.files:
            raise UsageError("input {}: no image files found".format(uri))
        self.loop = int(loop)

    def __len__(self):
        return len(self.files)

    def __iter__(self):
        index = 0
        passes = 0
        while True:
            for path, rel in self.files:
                try:
                    image, error = read_image(path), None
                except ImageReadError as exc:
                    image, error = None, str(exc)
                yield Frame(image, path, rel, index, time.time(), error)
                index += 1
            passes += 1
            if self.loop >= 0 and passes > self.loop:
                break

    def close(self):
        pass


def open_source(uri, **options):
    """Open the frame source that ``uri`` names."""
    return ImageFilesSource(uri, loop=options.get("loop", 0) or 0)
