"""Image-file sinks: annotated frames to one image file, a numbered pattern
(``out_%i.jpg``) or a folder mirroring the input's names (``folder/``), with the checks
made before the first frame (sinks.open_sink picks the sink; sinks.py has the others).
Nothing that exists is overwritten unless ``overwrite`` is set.
"""
import os

from oncolens.appliance.classify_copies import CopyRecord, warn_pattern_leftovers
from oncolens.appliance.errors import UsageError
from oncolens.appliance.imageio import (GREY_ONLY, IMAGE_EXTENSIONS, colour_path,
                                        is_image_file, is_unsupported_image, write_image)
from oncolens.appliance.outpaths import check_output_dir, check_output_file
from oncolens.appliance.video_writer import VIDEO_FOURCC


def _check_pattern(uri):
    """``out_%i.jpg`` takes one frame number; anything else is named before the first frame."""
    try:
        uri % 0
    except (TypeError, ValueError) as exc:
        raise UsageError("output {}: expected one number field such as %i or %04d in the file "
                         "name ({})".format(uri, exc))


def _refuse_unknown_type(uri):
    """A name with a type that is neither an image's nor a video's (``out.jgp``, ``out.gif``)
    became a folder of that name, full of copies: it is refused, as imagenet refuses it; a
    name with no type, an existing folder or one ending in / is a folder."""
    ext = os.path.splitext(uri.rstrip("/" + os.sep))[1]
    if ext and not uri.endswith(("/", os.sep)) and not os.path.isdir(uri):
        raise UsageError("output {}: unknown type '{}' (expected an image: {}; a video: {}; "
                         "or a folder: end the name with /)".format(
                             uri, ext, " ".join(e for e in IMAGE_EXTENSIONS if e not in GREY_ONLY),
                             " ".join(sorted(VIDEO_FOURCC))))


def refuse_existing(path, overwrite):
    if os.path.exists(path) and not overwrite:
        raise UsageError("output {} already exists: pass --overwrite to replace it".format(path))


def _refuse_input(path, origin):
    if origin and os.path.realpath(path) == os.path.realpath(origin):
        raise UsageError("output {}: it would replace the input image {}: give another "
                         "folder or name".format(path, origin))


def planned_frames(source):
    """``(frames, endless)``: the frames an image-file source will give that can be written
    (no image: the names only), in order, or ``(None, False)`` when they are not known up
    front (a video, a camera, a stream).  Names follow ``ImageFilesSource.read``: with
    ``--input-loop N`` pass p's copies are ``<name>_loop<p>.<ext>``; a forever loop (-1)
    lists its first pass and says it is ``endless``.  Files in formats that cannot be read
    (.gif, .heic ...) give no frame to write and are left out."""
    from oncolens.appliance.sources import Frame
    files = getattr(source, "files", None)
    if files is None:
        return None, False
    loop = int(getattr(source, "loop", 0) or 0)
    frames = []
    for n in range(1 if loop < 0 else loop + 1):
        for pos, (path, rel) in enumerate(files):
            if is_unsupported_image(path):
                continue
            if n:
                root, ext = os.path.splitext(rel)
                rel = "{}_loop{}{}".format(root, n, ext)
            frames.append(Frame(None, path, rel, n * len(files) + pos, None, None))
    return frames, loop < 0


class ImageFileSink(object):
    """Frames to image files: one file, a numbered pattern, or a folder mirroring the input.
    A folder's copies are recorded in it (``classify_copies``): ``start()``, before the first
    frame, removes the ones an earlier run recorded when ``overwrite`` is set. ``inputs``:
    the input files, never removed."""

    def __init__(self, uri, overwrite=False, inputs=(), **options):
        self.uri = uri
        self.overwrite = overwrite
        self.written = []
        self.record = None
        if "%" in os.path.basename(uri):
            self.mode = "pattern"
            _check_pattern(uri)
        elif uri.endswith(("/", os.sep)) or os.path.isdir(uri) or not is_image_file(uri):
            _refuse_unknown_type(uri)
            self.mode = "dir"
        else:
            self.mode = "file"
            refuse_existing(uri, overwrite)
        if self.mode != "dir" and os.path.splitext(uri)[1].lower() in GREY_ONLY:
            raise UsageError("output {}: {} holds grey images only and annotated frames are "
                             "colour: name a .ppm, .png or .jpg".format(
                                 uri, os.path.splitext(uri)[1]))
        if self.mode == "dir":
            check_output_dir(uri, "output")
            self.record = CopyRecord(uri, overwrite, inputs)
        else:  # an existing file is refused when it is written (or above), not here
            check_output_file(uri % 0 if self.mode == "pattern" else uri, "output",
                              overwrite=True)

    def target(self, frame):
        if self.mode == "pattern":
            return self.uri % frame.index
        if self.mode == "file":
            return self.uri
        rel = frame.relpath or "frame_{:06d}.jpg".format(frame.index)
        if not is_image_file(rel):
            rel += ".jpg"
        return os.path.join(self.uri, colour_path(rel, frame.origin))

    def _single_file_only(self):
        return UsageError("output {} is a single image file but the input has more than one "
                          "frame: give a folder (ending in /) or a pattern like "
                          "out_%i.jpg".format(self.uri))

    def check_frames(self, frames, endless=False):
        """Refuse, before the first frame, what ``write`` would refuse on the way: more than
        one frame into a single image file, a name that exists (without overwrite) or is an
        input, two frames with the same name."""
        if self.mode == "file" and (len(frames) > 1 or (endless and frames)):
            raise self._single_file_only()
        seen = {}
        for frame in frames:
            path = self.target(frame)
            key = os.path.normpath(os.path.abspath(path))
            if key in seen:
                raise UsageError("output {}: both {} and {} would be written to it: rename one "
                                 "or give a pattern like out_%i.jpg".format(
                                     path, seen[key], frame.origin))
            seen[key] = frame.origin
            if os.path.exists(path):
                _refuse_input(path, frame.origin)
                refuse_existing(path, self.overwrite)

    def write(self, frame, image):
        if self.mode == "file" and self.written:
            raise self._single_file_only()
        path = self.target(frame)
        _refuse_input(path, frame.origin)
        if self.mode != "file":  # a video's or a camera's names are only known as they come
            refuse_existing(path, self.overwrite)
        write_image(path, image)
        self.written.append(path)
        if self.record is not None:
            self.record.add(path)
        return path

    def start(self):
        if self.record is not None:
            self.record.start()

    def close(self):
        if self.record is not None:
            self.record.close()
        if self.mode == "pattern":
            warn_pattern_leftovers(self.uri, self.written)
