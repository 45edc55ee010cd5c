"""INT8 calibration: an entropy calibrator (IInt8EntropyCalibrator2) fed by real images.

``CalibrationBatches`` turns a list of image files into full float32 NCHW batches with
the bundle's own preprocessing (unreadable files are skipped and logged; an incomplete
last batch is dropped, since TensorRT wants every batch full).  ``make_calibrator`` wraps
it in TensorRT's calibrator interface, copying each batch to one device buffer, and reads
/ writes the calibration cache so a rebuild does not calibrate again. Beside the cache,
``<cache>.json`` records the SHA-256 of the ONNX it was made for (``cache_check``): a cache
of another model (the same name after retraining) is never read as this one's.
"""
import io
import json
import logging
import os

import numpy as np

from oncolens.appliance.errors import ImageReadError, UsageError, plural
from oncolens.appliance.outpaths import replace_file, replace_text

log = logging.getLogger(__name__)


class CalibrationBatches(object):
    """Full batches of preprocessed images, in file order."""

    def __init__(self, paths, preprocessor, batch_size):
        self.paths = list(paths)
        self.preprocessor = preprocessor
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise UsageError("--calib-batch: expected a positive number, got {}".format(
                batch_size))
        if len(self.paths) < self.batch_size:
            raise UsageError("calibration needs at least {} (one batch), found {}".format(
                plural(self.batch_size, "image"), len(self.paths)))
        self.skipped = []

    def __len__(self):
        return len(self.paths) // self.batch_size

    @property
    def shape(self):
        p = self.preprocessor
        return (self.batch_size, p.channels, p.height, p.width)

    @property
    def nbytes(self):
        return int(np.prod(self.shape)) * 4

    def __iter__(self):
        from oncolens.appliance.imageio import read_image
        current = []
        for path in self.paths:
            try:
                current.append(self.preprocessor(read_image(path)))
            except ImageReadError as exc:
                self.skipped.append(path)
                log.warning("calibration: skipped %s", exc)
                continue
            if len(current) == self.batch_size:
                yield np.ascontiguousarray(np.stack(current), dtype=np.float32)
                current = []
        if current:
            log.info("calibration: last %s left out (not a full batch of %d)",
                     plural(len(current), "image"), self.batch_size)


def record_path(path):
    """The record beside a calibration cache: the ONNX it was made for."""
    return path + ".json"


def made_for(path):
    """The SHA-256 of the ONNX the cache at ``path`` was made for, or None without a record
    (made by an older OncoLens, jetson-inference or another tool)."""
    try:
        with io.open(record_path(path), encoding="utf-8") as fh:
            return json.load(fh).get("onnx_sha256") or None
    except (IOError, OSError, ValueError, AttributeError):
        return None


def cache_check(path, onnx_sha256, calibrating):
    """Whether the calibration cache at ``path`` may be read for the ONNX ``onnx_sha256``.
    One recorded for another ONNX is not: with images to calibrate on (``calibrating``) it
    is made again (a warning), else one line refuses the build. One with no record is read,
    with a warning that it could not be checked."""
    if not os.path.isfile(path):
        return False
    recorded = made_for(path)
    if recorded is None:
        log.warning("calibration cache %s: no record (%s) of the ONNX it was made for, so it "
                    "is used unchecked: remove it to calibrate this model again",
                    path, os.path.basename(record_path(path)))
        return True
    if recorded == onnx_sha256:
        return True
    what = "calibration cache {} was made for another ONNX (SHA-256 {}..., this one {}...)" \
        .format(path, recorded[:12], (onnx_sha256 or "unknown")[:12])
    if not calibrating:
        raise UsageError(what + ": its scales would be wrong for this model: pass "
                         "--calib-images DIR to calibrate it again")
    log.warning("%s: calibrating again on --calib-images, and replacing it", what)
    return False


def read_cache(path):
    if path and os.path.isfile(path):
        with open(path, "rb") as fh:
            data = fh.read()
        log.info("calibration cache: reusing %s", path)
        return data
    return None


def write_cache(path, data, onnx_sha256=None):
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        os.makedirs(folder)
    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(bytes(data))
    replace_file(path, write)
    if onnx_sha256:
        replace_text(record_path(path), json.dumps({"onnx_sha256": onnx_sha256}) + "\n")
    log.info("calibration cache written: %s", path)


def make_calibrator(trt, cuda, batches, cache_path, onnx_sha256=None, read=True):
    """A TensorRT entropy calibrator over ``batches`` (None: only the cache is used).
    ``read``: whether TensorRT may read the cache (``cache_check``); a cache it writes is
    recorded as made for ``onnx_sha256``.

    Create it while the CUDA context is current (it allocates its device buffer).
    """
    base = trt.IInt8EntropyCalibrator2

    class EntropyCalibrator(base):
        def __init__(self):
            base.__init__(self)
            self.batches = batches
            self.cache_path = cache_path
            self.iterator = iter(batches) if batches is not None else iter(())
            self.device_input = cuda.mem_alloc(batches.nbytes) if batches is not None else None
            self.count = 0

        def get_batch_size(self):
            return self.batches.batch_size if self.batches is not None else 1

        def get_batch(self, names, *unused):
            try:
                batch = next(self.iterator)
            except StopIteration:
                return None
            cuda.memcpy_htod(self.device_input, batch)
            self.count += 1
            log.info("calibration batch %d/%d", self.count, len(self.batches))
            return [int(self.device_input)]

        def read_calibration_cache(self, *unused):
            return read_cache(self.cache_path) if read else None

        def write_calibration_cache(self, cache):
            write_cache(self.cache_path, cache, onnx_sha256)

        def free(self):
            if self.device_input is not None:
                self.device_input.free()
                self.device_input = None

    return EntropyCalibrator()
