"""16-bit PNG and TIFF images that use only their low bits (a 12-bit camera's): found from
the header and the samples as stored, and warned about once a run, since reading keeps the
top 8 of the 16 bits and such an image reads as nearly black."""
import logging
import struct
import threading

import numpy as np

from oncolens.appliance.cvlog import quiet_opencv
from oncolens.appliance.errors import ImageReadError
from oncolens.appliance.imageio import not_regular, open_regular, tiff_tags

log = logging.getLogger(__name__)


def sixteen_bit(data):
    """Whether encoded bytes are a 16-bit PNG (IHDR bit depth) or TIFF (BitsPerSample), from
    the header alone, without decoding."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) > 24:
        return bytearray(data[24:25])[0] == 16
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        try:
            return tiff_tags(data, (258,)).get(258) == 16
        except struct.error:
            return False
    return False


def sixteen_bit_peak(data):
    """The highest colour sample (alpha left out) of a 16-bit PNG or TIFF, decoded as it is
    stored; None for any other image. ``decode_image`` keeps the top 8 of the 16 bits, so a
    12-bit camera's image (peak 4095) decodes as 0..15, nearly black."""
    if not sixteen_bit(data):
        return None
    import cv2
    with quiet_opencv:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16 or img.size == 0:
        return None
    if img.ndim == 3:
        img = img[:, :, :3] if img.shape[2] >= 3 else img[:, :, :1]
    return int(img.max())


# 16-bit images whose highest sample is below this use 12 bits or fewer: reading keeps the
# top 8 of the 16 bits (OpenCV's IMREAD_COLOR), so they become 0..15, nearly black.
LOW_BITS_PEAK = 4096


def low_bits_peak(data, decoded=None):
    """The highest sample of encoded bytes that are a 16-bit PNG or TIFF using only its low
    bits (below LOW_BITS_PEAK), else None: any other image, or one that does not decode.
    Only a file whose header says 16-bit is decoded as such, and, when ``decoded`` (what
    ``decode_image`` made of it) is given, only if that reads nearly black: a sample below
    LOW_BITS_PEAK reads as at most 16 (its top 8 bits, or libtiff's rounding of v / 257)."""
    if not sixteen_bit(data):
        return None
    if decoded is not None and decoded.size and int(decoded.max()) > LOW_BITS_PEAK // 256:
        return None
    try:
        peak = sixteen_bit_peak(data)
    except Exception:  # cv2.error on a file IMREAD_COLOR read: the warning is advice only
        return None
    return peak if peak is not None and peak < LOW_BITS_PEAK else None


def low_bits_advice(peak):
    """What a low-bits image means for its result, and what to do: one sentence."""
    return ("a 16-bit image that uses only its low bits (highest value {}, below {}, as a "
            "12-bit camera's): reading keeps the top 8 of its 16 bits, so it reads as nearly "
            "black, with about {} grey levels, and its result means little; rescale such images "
            "to 8-bit (or to the full 16-bit range) first".format(
                peak, LOW_BITS_PEAK, LOW_BITS_PEAK // 256))


class LowBitsWarning(object):
    """One warning a run (one instance a run) for the first 16-bit PNG or TIFF read that uses
    only its low bits, as ``data check`` and train's image check detect them (a 12-bit
    camera's image: it decodes nearly black). Only files whose header says 16-bit are decoded
    a second time, and none once it has warned, nor one whose ordinary decoding (``decoded``,
    when the caller has it) already reads brighter than a low-bits image can (``low_bits_peak``);
    safe to call from several reading threads."""

    def __init__(self, logger=None):
        self.log = logger or log
        self.lock = threading.Lock()
        self.warned = False

    def check(self, path, data, decoded=None):
        """Warn (once) when ``data``, the file ``path``'s bytes (``decoded``: decode_image's
        RGB of them, when at hand), is a low-bits 16-bit image."""
        if self.warned:
            return
        peak = low_bits_peak(data, decoded)
        if peak is None:
            return
        with self.lock:
            if self.warned:
                return
            self.warned = True
        self.log.warning("%s: %s (docs/TRAINING.md, Data). Warned once a run: other such files "
                         "are not named", path, low_bits_advice(peak))

    def scan(self, paths):
        """``check`` the image files ``paths`` in order until it has warned, reading a file
        whole only when its header may say 16-bit (a TIFF's may be at its end); a file that
        cannot be read, or is no regular file (a FIFO: opening it waited for a writer, and
        ``oncolens bench`` hung), is left to the caller's own report."""
        for path in paths:
            if self.warned:
                return
            if not_regular(path):
                continue
            try:
                with open_regular(path) as fh:
                    head = fh.read(32)
                    if head[:4] not in (b"II*\x00", b"MM\x00*") and not sixteen_bit(head):
                        continue
                    data = head + fh.read()
            except (IOError, OSError, ImageReadError):
                continue
            self.check(path, data)
