"""Frame sinks: where annotated frames go.

Image file, printf pattern (``out_%i.jpg``) and folder (input names and sub-folders kept)
are handled here; the appliance issue adds video files, displays and streams.  Nothing that
exists is overwritten unless ``overwrite`` is set.
"""
import os

from oncolens.appliance.errors import UsageError
from oncolens.appliance.imageio import is_image_file, write_image


def _refuse_existing(path, overwrite):
    if os.path.exists(path) and not overwrite:
        raise UsageError("output {} already exists: pass --overwrite to replace it".format(path))


class ImageFileSink(object):
    """Frames to image files: one file, a numbered pattern, or a folder mirroring the input."""

    def __init__(self, uri, overwrite=False):
        self.uri = uri
        self.overwrite = overwrite
        self.written = []
        if "%" in os.path.basename(uri):
            self.mode = "pattern"
        elif uri.endswith(("/", os.sep)) or os.path.isdir(uri) or not is_image_file(uri):
            self.mode = "dir"
        else:
            self.mode = "file"
            _refuse_existing(uri, overwrite)

    def target(self, frame):
        if self.mode == "pattern":
            return self.uri % frame.index
        if self.mode == "file":
            return self.uri
        rel = frame.relpath or "frame_{:06d}.jpg".format(frame.index)
        if not is_image_file(rel):
            rel += ".jpg"
        return os.path.join(self.uri, rel)

    def write(self, frame, image):
        if self.mode == "file" and self.written:
            raise UsageError("output {} is a single image file but the input has more than "
                             "one frame: give a folder (ending in /) or a pattern like "
                             "out_%i.jpg".format(self.uri))
        path = self.target(frame)
        if self.mode != "file":
            _refuse_existing(path, self.overwrite)
        write_image(path, image)
        self.written.append(path)
        return path

    def close(self):
        pass


def open_sink(uri, overwrite=False, **options):
    if not uri:
        return None
    return ImageFileSink(uri, overwrite=overwrite)
