"""Reading and writing image files as RGB uint8 arrays (OpenCV underneath), and walking the
folders that hold them."""
import errno
import logging
import os
import stat
import struct

import numpy as np

from oncolens.appliance.cvlog import quiet_opencv, silent_opencv
from oncolens.appliance.errors import (ImageReadError, ImageWriteError, OncoLensError,
                                       os_error_line)
from oncolens.appliance.outpaths import first_existing, replace_file

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")

# Image formats we are asked about but cannot decode: a folder's files in these formats are
# listed and fail with a message naming the format, never skipped in silence.
UNSUPPORTED_EXTENSIONS = (".gif", ".heic", ".heif", ".avif", ".jp2", ".j2k", ".jxl", ".svg",
                          ".ico", ".psd", ".dcm", ".dicom", ".nef", ".cr2", ".dng", ".raw")


# Files every command leaves out of a folder: hidden ones (``.DS_Store``, macOS's ``._x.png``
# resource forks, editors' ``.swp``) and the thumbnail caches and settings Windows writes.
JUNK_FILES = ("thumbs.db", "desktop.ini")


def is_ignored_name(name):
    """Whether a file or folder ``name`` is hidden (starts with '.') or OS junk."""
    return name.startswith(".") or name.lower() in JUNK_FILES


def list_folders(path):
    """The sub-folders of ``path`` (class folders), sorted, hidden ones left out."""
    return sorted(d for d in os.listdir(path)
                  if not is_ignored_name(d) and os.path.isdir(os.path.join(path, d)))


def real_folders(top):
    """Real paths of the folders under ``top`` (itself included) reached without following
    a link: the folders that are read under their own names."""
    return set(os.path.realpath(parent) for parent, _, _ in os.walk(top))


def walk_files(root, skip_dir=None, within=None):
    """Every file under the folder ``root``, as paths, sorted folder by folder (one folder's
    listing at a time); hidden files and folders and OS junk (``is_ignored_name``) are left
    out, and so is the folder whose real path is ``skip_dir``.

    Symbolic links to folders are followed (as torchvision's ImageFolder does), each real
    folder read once and under its own name: a link to a folder inside ``within`` (default
    ``root``: the dataset or input the walk belongs to, e.g. a sibling class folder) is a
    second view of it, and a link to a folder already read through another link, or to one
    that holds the link (a cycle), is skipped; each with a warning. A FIFO, socket or device
    is yielded like a file, for its reader to refuse unopened (``check_format``)."""
    inside = real_folders(within or root)
    walked = set()
    for parent, dirs, files in os.walk(root, followlinks=True):
        here = os.path.realpath(parent)
        keep = []
        for d in sorted(dirs):
            path = os.path.join(parent, d)
            real = os.path.realpath(path)
            if is_ignored_name(d) or (skip_dir and real == skip_dir):
                continue
            if os.path.islink(path):
                why = None
                if here == real or here.startswith(real.rstrip(os.sep) + os.sep):
                    why = "which holds it (a link cycle)"
                elif real in inside:
                    why = "which is read under its own name"
                elif real in walked:
                    why = "read already through another link"
                if why:
                    log.warning("%s: links to %s, %s: not read twice", path, real, why)
                    continue
            elif real in walked:  # a real folder of a linked tree, reached again
                continue
            walked.add(real)
            keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            if not is_ignored_name(name):
                yield os.path.join(parent, name)


def is_image_file(path):
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def is_unsupported_image(path):
    return os.path.splitext(path)[1].lower() in UNSUPPORTED_EXTENSIONS


# what a path is when it is not a regular file (os.stat's mode test, in the words we say)
NOT_REGULAR = (("S_ISFIFO", "a FIFO"), ("S_ISSOCK", "a socket"), ("S_ISCHR", "a character device"),
               ("S_ISBLK", "a block device"), ("S_ISDIR", "a folder"))


def not_regular(path):
    """Why ``path`` cannot be read as a file without opening it: 'not a regular file (a
    FIFO)' for a named pipe, socket or device named like an image (opening a FIFO to read
    waits, forever, for a writer), else None. A symbolic link is judged by what it points
    to; a path that cannot be looked at (missing, a broken link) is left to ``open`` to say."""
    try:
        return mode_problem(os.stat(path).st_mode)
    except (IOError, OSError):
        return None


def mode_problem(mode):
    """'not a regular file (a FIFO)' for a stat mode that is no regular file, else None."""
    if stat.S_ISREG(mode):
        return None
    kind = next((words for test, words in NOT_REGULAR if getattr(stat, test)(mode)), None)
    return "not a regular file{}".format(" ({})".format(kind) if kind else "")


def refusal(path, why):
    """ImageReadError naming ``path``; ``why`` kept as its ``reason`` (data check's words)."""
    exc = ImageReadError("{}: {}: not opened (expected an image file)".format(path, why))
    exc.reason = why
    return exc


def check_format(path):
    """ImageReadError naming the file when it is no image we can read, told without opening
    it: not a regular file (``not_regular``: a FIFO is never opened), or an image format we
    cannot read (by its extension). Every reader of image files calls it before it opens the
    file with ``open_regular``, which checks the opened file again (no wait on a FIFO)."""
    why = not_regular(path)
    if why:
        raise refusal(path, why)
    ext = os.path.splitext(path)[1].lower()
    if ext in UNSUPPORTED_EXTENSIONS:
        raise ImageReadError("{}: unsupported image format {} (expected {})".format(
            path, ext, "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)))


def tiff_tags(data, wanted):
    """{tag: first value} of a TIFF's first IFD's ``wanted`` tags (a value stored elsewhere
    in the file, when it does not fit the entry, is read from there); struct.error when the
    file is too short for what it claims."""
    end = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack(end + "I", data[4:8])[0]
    count = struct.unpack(end + "H", data[offset:offset + 2])[0]
    found = {}
    for n in range(count):
        entry = data[offset + 2 + 12 * n:offset + 14 + 12 * n]
        tag, kind, values = struct.unpack(end + "HHI", entry[:8])
        if tag in wanted:
            fmt = end + ("H" if kind == 3 else "I")
            where = 8
            if values * struct.calcsize(fmt) > 4:
                where = struct.unpack(end + "I", entry[8:12])[0]
                entry = data
            found[tag] = struct.unpack(fmt, entry[where:where + struct.calcsize(fmt)])[0]
    return found


def tiff_float(data):
    """Whether ``data`` is a TIFF whose samples are 32-bit floats (SampleFormat 3), which
    OpenCV cannot turn into an 8-bit image."""
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return False
    try:
        return tiff_tags(data, (339,)).get(339) == 3
    except struct.error:
        return False


def decode_image(data, origin="<bytes>"):
    """Decode encoded bytes to RGB uint8 HxWx3 (greyscale, palette and RGBA become RGB)."""
    import cv2
    if not data:
        raise ImageReadError("{}: empty file".format(origin))
    buf = np.frombuffer(data, dtype=np.uint8)
    with quiet_opencv:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        if tiff_float(data):
            raise ImageReadError("{}: 32-bit float TIFF is not supported (expected 8- or 16-bit "
                                 "integer samples)".format(origin))
        raise ImageReadError("{}: not a decodable image (expected {})".format(
            origin, "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)))
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# opening a FIFO this way returns at once (a plain open waits for a writer); on a regular
# file O_NONBLOCK changes nothing
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def open_regular(path):
    """``path`` opened to read, as a binary file object, from the descriptor its check was
    made on: opened without blocking and refused (``refusal``, as ``check_format`` refuses
    it) unless ``fstat`` says it is a regular file, so that a file swapped for a FIFO after
    ``check_format`` looked at it cannot make the reader wait for ever. IOError/OSError
    when it cannot be opened."""
    fd = os.open(path, OPEN_FLAGS)
    try:
        why = mode_problem(os.fstat(fd).st_mode)
        if why:
            raise refusal(path, why)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path):
    """An image file's encoded bytes; ImageReadError for a format we cannot read, or a file
    that cannot be opened."""
    check_format(path)
    try:
        with open_regular(path) as fh:
            return fh.read()
    except (IOError, OSError) as exc:
        raise ImageReadError("{}: cannot read ({})".format(path, exc.strerror or exc))


def read_image(path):
    """Read an image file as RGB uint8; ImageReadError names the file and the problem."""
    return decode_image(read_bytes(path), path)


# the largest side a format holds (libjpeg, libwebp); a larger image cannot be written in it
MAX_SIDE = {".jpg": ("JPEG", 65500), ".jpeg": ("JPEG", 65500), ".jpe": ("JPEG", 65500),
            ".webp": ("WebP", 16383)}


def encode_image(rgb, ext=".jpg", quality=92):
    import cv2
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = False, None
    with silent_opencv:  # its own ERROR lines would repeat the one below, less clearly
        try:
            ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        except cv2.error:
            ok = False
    if not ok:
        h, w = rgb.shape[:2]
        name, limit = MAX_SIDE.get(ext.lower(), (None, None))
        raise OncoLensError("cannot encode a {}x{} image as {}{}".format(
            w, h, ext, " ({} holds at most {} pixels a side: name a .png output)".format(
                name, limit) if limit and max(w, h) > limit else ""))
    return buf.tobytes()


# formats that hold grey only, and the colour format of the same family that replaces them
GREY_ONLY = {".pgm": ".ppm", ".pbm": ".ppm"}


def colour_path(path, source=None):
    """The name an annotated (colour) copy of ``path`` is written under: the same name,
    except that a grey-only format gets its colour sibling added (``x.pgm`` -> ``x.pgm.ppm``,
    which no ``x.ppm`` beside it can clash with). When the input file ``source`` has an
    ``x.pgm.ppm`` beside it (whose own copy takes that name), the first of ``x.pgm.1.ppm``,
    ``x.pgm.2.ppm`` ... that is not an input beside it: each input its own copy, the same
    name on every run."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in GREY_ONLY:
        return path
    colour = GREY_ONLY[ext]
    n = 0
    while source and os.path.exists(source + ("" if not n else ".{}".format(n)) + colour):
        n += 1
    return path + ("" if not n else ".{}".format(n)) + colour


def write_image(path, rgb, quality=92):
    """Write an RGB uint8 image; the format follows the file's extension."""
    ext = os.path.splitext(path)[1] or ".jpg"
    try:
        data = encode_image(rgb, ext, quality)
    except OncoLensError as exc:  # as a failed write: batch records it on the image's row
        raise ImageWriteError("{}: {}".format(path, exc))
    parent = os.path.dirname(path)

    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(data)
    try:
        if parent and not os.path.isdir(parent):
            os.makedirs(parent)
        replace_file(path, write)  # a write cut short leaves no part of it behind
    except OSError as exc:  # a full disk, a permission refused, a file where a folder goes
        raise ImageWriteError("{}: cannot write it ({})".format(path, _write_reason(exc)))


def _write_reason(exc):
    """Why a write failed, naming the file that stands where a folder must go (makedirs'
    'File exists' or 'Not a directory' say it less plainly)."""
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and exc.filename:
        name = str(exc.filename)
        found = first_existing(name)
        if not os.path.isdir(found):  # named as the path was: relative stays relative
            return "{} is a file, not a folder".format(
                found if os.path.isabs(name) else os.path.relpath(found))
    return os_error_line(exc)
