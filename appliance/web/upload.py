"""Checking one uploaded image, in memory only (``body.py`` reads it from the request).

The bytes must start like an image OpenCV reads (415 otherwise); the header's width x
height must be within the pixel limit and the file complete (400 for a decompression bomb
or a truncated file).  Nothing is written anywhere: the caller decides whether to keep the
bytes (``--save-uploads``).
"""
import re
import struct

from oncolens.appliance.errors import ImageReadError, OncoLensError
from oncolens.appliance.imageio import decode_image, tiff_float, tiff_tags
from oncolens.appliance.preprocess import MAX_RESIZED_PIXELS

JPEG_SOF = frozenset([0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                      0xCE, 0xCF])
# a JPEG marker: 0xFF then neither a stuffed zero, a restart marker nor a fill byte
JPEG_MARKER = re.compile(b"\xff[^\x00\xd0-\xd7\xff]")
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "bmp": ".bmp", "tiff": ".tif", "webp": ".webp",
              "pnm": ".ppm"}
PNM_EXTENSIONS = {b"1": ".pbm", b"4": ".pbm", b"2": ".pgm", b"5": ".pgm", b"3": ".ppm",
                  b"6": ".ppm"}  # by the digit of the magic number


def saved_extension(fmt, data):
    """The file extension an upload of format ``fmt`` is kept under: a PGM or PBM as such
    (the netpbm family shares one format name here), not as .ppm."""
    if fmt == "pnm":
        return PNM_EXTENSIONS.get(bytes(data[1:2]), ".ppm")  # data: bytes or bytearray
    return EXTENSIONS.get(fmt, ".bin")


class UploadError(OncoLensError):
    """An upload that is refused: ``status`` is the HTTP status, ``code`` a short word."""

    def __init__(self, status, code, message, retry_after=None):
        super(UploadError, self).__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


def sniff(data):
    """The image format of ``data`` by its first bytes, or None."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if re.match(br"P[1-6]\s", head):
        return "pnm"
    return None


# image formats a client may send that OpenCV here does not read: named in the 415, as
# batch and classify name them (a GIF or a DICOM file is an image, just not one read here)
HEIF_BRANDS = frozenset([b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1",
                         b"msf1"])


def unsupported_format(data):
    """The name of an image format ``data`` is in that this service does not read, or None."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[4:8] == b"ftyp" and bytes(data[8:12]) in HEIF_BRANDS:  # a bytearray: no hash
        return "HEIC/HEIF"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "AVIF"
    if data[128:132] == b"DICM":
        return "DICOM"
    if data[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or data[:4] == b"\xff\x4f\xff\x51":
        return "JPEG 2000"
    if data[:4] == b"8BPS":
        return "Photoshop (PSD)"
    return None


def _jpeg_size(data):
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in JPEG_SOF:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:
            i += 2
            continue
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def _webp_size(data):
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        w = struct.unpack("<I", data[24:27] + b"\0")[0] + 1
        h = struct.unpack("<I", data[27:30] + b"\0")[0] + 1
        return w, h
    if kind == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L" and len(data) >= 25:
        b0, b1, b2, b3 = bytearray(data[21:25])
        return 1 + (((b1 & 0x3F) << 8) | b0), 1 + (((b3 & 0xF) << 10) | (b2 << 2) | (b1 >> 6))
    return None


def _bmp_size(data):
    """The header's size says its layout: 12 bytes (OS/2 BITMAPCOREHEADER) has 16-bit
    width and height, 40 and more (Windows, OS/2 2.x) 32-bit signed ones."""
    header = struct.unpack("<I", data[14:18])[0]
    if header == 12:
        return struct.unpack("<HH", data[18:22])
    if header >= 40:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    return None


def _tiff_size(data):
    try:
        found = tiff_tags(data, (256, 257))
        return found[256], found[257]
    except (struct.error, KeyError):
        return None


def dimensions(fmt, data):
    """(width, height) that the file's header claims, or None when it cannot be read."""
    try:
        if fmt == "png":
            if data[12:16] != b"IHDR":
                return None
            return struct.unpack(">II", data[16:24])
        if fmt == "jpeg":
            return _jpeg_size(data)
        if fmt == "bmp":
            return _bmp_size(data)
        if fmt == "webp":
            return _webp_size(data)
        if fmt == "tiff":
            return _tiff_size(data)
        tokens = re.sub(br"#[^\n]*", b" ", data[:512]).split()
        return int(tokens[1]), int(tokens[2])
    except (struct.error, IndexError, ValueError):
        return None


# real images have tens of chunks or segments; a file of millions of empty ones would cost
# seconds of Python per request to walk
MAX_PARTS = 100000


def _too_many_parts(fmt):
    return UploadError(400, "bad_header", "the {} file has more than {} chunks or segments: "
                       "not an image this service reads".format(fmt.upper(), MAX_PARTS))


def _png_complete(data):
    """Whether the chunks, followed by their lengths from the signature, reach IEND.

    Bytes after IEND (some phones and editors append data) do not matter."""
    i, parts = 8, 0
    while i + 8 <= len(data):
        parts += 1
        if parts > MAX_PARTS:
            raise _too_many_parts("png")
        length = struct.unpack(">I", data[i:i + 4])[0]
        end = i + 12 + length
        if end > len(data):
            return False
        if data[i + 4:i + 8] == b"IEND":
            return True
        i = end
    return False


def _jpeg_complete(data):
    """Whether the segments and scans, followed from the start, reach the end marker (EOI).

    Segments are skipped by their length (an EXIF thumbnail's own EOI does not count), the
    entropy-coded data up to the next marker; bytes after EOI (the video of a phone's
    "motion photo") do not matter."""
    i, parts = 2, 0
    while True:
        parts += 1
        if parts > MAX_PARTS:
            raise _too_many_parts("jpeg")
        found = JPEG_MARKER.search(data, i)
        if found is None:
            return False
        at = found.start()
        marker = data[at + 1]
        if marker == 0xD9:
            return True
        if marker == 0x01:            # TEM: no length
            i = at + 2
            continue
        if at + 4 > len(data):
            return False
        i = at + 2 + struct.unpack(">H", data[at + 2:at + 4])[0]


def _complete(fmt, data):
    if fmt == "png":
        return _png_complete(data)
    if fmt == "jpeg":
        return _jpeg_complete(data)
    return True


def _check_resize(fmt, width, height, max_pixels, resized):
    """Refuse an image whose resize to the model's input would make over ``max_pixels``
    (or over the preprocessing's own MAX_RESIZED_PIXELS, when that is lower).

    The preprocessing scales the shorter side to the model's size whatever the aspect ratio,
    so a 1x10000 PNG of 89 bytes becomes a 256x2560000 image (gigabytes) before the crop.
    """
    if resized is None:
        return
    new_w, new_h = resized(width, height)
    # the preprocessing refuses more than its own limit whatever --max-pixels says: above
    # it, such an upload passed here and was answered 500 inference_failed
    limit = min(max_pixels, MAX_RESIZED_PIXELS)
    if new_w * new_h > limit:
        raise UploadError(400, "bad_aspect", "the {} image is {}x{} pixels: resized for the "
                          "model's input it would be {}x{}, over the limit of {} pixels "
                          "({}); expected a less extreme aspect ratio".format(
                              fmt.upper(), width, height, new_w, new_h, limit,
                              "--max-pixels" if limit == max_pixels else
                              "the preprocessing's own, whatever --max-pixels says"))


def check_image(data, max_pixels, resized=None):
    """Refuse what is not an image (415), too many pixels or truncated (400): (fmt, w, h).

    ``resized(width, height) -> (width, height)``: the size the model's preprocessing
    resizes such an image to before cropping; over ``max_pixels`` is refused (bad_aspect).
    """
    if not data:
        raise UploadError(400, "empty", "the upload is empty")
    fmt = sniff(data)
    if fmt is None:
        other = unsupported_format(data)
        raise UploadError(415, "not_an_image", "the upload is {} (expected PNG, JPEG, BMP, "
                          "TIFF, WebP or PNM)".format(
                              "in {} format, which this service does not read".format(other)
                              if other else "not an image"))
    size = dimensions(fmt, data)
    if size is None:
        raise UploadError(400, "truncated", "the {} header is truncated or damaged".format(
            fmt.upper()))
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise UploadError(400, "bad_header", "the {} header claims {}x{} pixels".format(
            fmt.upper(), width, height))
    if width * height > max_pixels:
        raise UploadError(400, "too_many_pixels", "the {} header claims {}x{} pixels, over the "
                          "limit of {} (a decompression bomb?)".format(
                              fmt.upper(), width, height, max_pixels))
    _check_resize(fmt, width, height, max_pixels, resized)
    if not _complete(fmt, data):
        raise UploadError(400, "truncated", "the {} file is truncated".format(fmt.upper()))
    return fmt, width, height


def decode_upload(data, max_pixels, origin="upload", resized=None, fmt=None):
    """Check then decode ``data``: (format, RGB uint8 image). ``fmt``: what ``check_image``
    already found, when it has been run (the check is not repeated)."""
    fmt = fmt or check_image(data, max_pixels, resized)[0]
    try:
        return fmt, decode_image(data, origin)
    except ImageReadError:
        if fmt == "tiff" and tiff_float(data):
            raise UploadError(400, "undecodable", "32-bit float TIFF is not supported "
                              "(expected 8- or 16-bit integer samples)")
        raise UploadError(400, "undecodable", "the {} file is damaged: it does not "
                          "decode".format(fmt.upper()))
