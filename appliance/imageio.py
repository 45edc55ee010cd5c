"""Reading and writing image files as RGB uint8 arrays (OpenCV underneath)."""
import os

import numpy as np

from oncolens.appliance.errors import ImageReadError, OncoLensError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")

# Image formats we are asked about but cannot decode: a folder's files in these formats are
# listed and fail with a message naming the format, never skipped in silence.
UNSUPPORTED_EXTENSIONS = (".gif", ".heic", ".heif", ".avif", ".jp2", ".j2k", ".jxl", ".svg",
                          ".ico", ".psd", ".dcm", ".dicom", ".nef", ".cr2", ".dng", ".raw")


def is_image_file(path):
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def is_unsupported_image(path):
    return os.path.splitext(path)[1].lower() in UNSUPPORTED_EXTENSIONS


def check_format(path):
    """ImageReadError naming the file when its extension is an image format we cannot read."""
    ext = os.path.splitext(path)[1].lower()
    if ext in UNSUPPORTED_EXTENSIONS:
        raise ImageReadError("{}: unsupported image format {} (expected {})".format(
            path, ext, "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)))


def decode_image(data, origin="<bytes>"):
    """Decode encoded bytes to RGB uint8 HxWx3 (greyscale, palette and RGBA become RGB)."""
    import cv2
    if not data:
        raise ImageReadError("{}: empty file".format(origin))
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageReadError("{}: not a decodable image (expected {})".format(
            origin, "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)))
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path):
    """Read an image file as RGB uint8; ImageReadError names the file and the problem."""
    check_format(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (IOError, OSError) as exc:
        raise ImageReadError("{}: cannot read ({})".format(path, exc.strerror or exc))
    return decode_image(data, path)


def encode_image(rgb, ext=".jpg", quality=92):
    import cv2
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OncoLensError("cannot encode an image as {}".format(ext))
    return buf.tobytes()


# formats that hold grey only, and the colour format of the same family that replaces them
GREY_ONLY = {".pgm": ".ppm", ".pbm": ".ppm"}


def colour_path(path):
    """The name an annotated (colour) copy of ``path`` is written under: the same name,
    except that a grey-only format gets its colour sibling added (``x.pgm`` -> ``x.pgm.ppm``,
    which no ``x.ppm`` beside it can clash with)."""
    ext = os.path.splitext(path)[1].lower()
    return path + GREY_ONLY[ext] if ext in GREY_ONLY else path


def write_image(path, rgb, quality=92):
    """Write an RGB uint8 image; the format follows the file's extension."""
    ext = os.path.splitext(path)[1] or ".jpg"
    data = encode_image(rgb, ext, quality)
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent)
    tmp = path + ".part"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
