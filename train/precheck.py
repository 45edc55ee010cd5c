"""What ``oncolens train`` checks in the dataset before it writes anything: at least two
classes, training images for every class, class folders that labels.txt leaves out (a
warning: their images are not used), and every train/val image decodes and is one the
model's preprocessing takes (all bad files, files in formats we cannot read such as .gif and
images too elongated to resize included, are listed, one line each, before a one-line error;
not an exception from a data-loader worker, or from validation, after an epoch)."""
import logging
import os

from oncolens.appliance.bundle import LABELS_TXT, class_name_error
from oncolens.appliance.errors import ImageReadError, UsageError, plural, reason_of
from oncolens.appliance.imageio import decode_image, list_folders, read_bytes
from oncolens.appliance.lowbits import sixteen_bit_peak
from oncolens.train.data import class_counts, list_samples
from oncolens.train.scan import LOW_BITS_PEAK, low_bits_warning

log = logging.getLogger(__name__)


def _source(data_dir):
    return "labels.txt" if os.path.isfile(os.path.join(data_dir, LABELS_TXT)) else \
        "the class folders of train/"


def unlisted_folders(split_dir, classes):
    """Class folders in ``split_dir`` that are not among ``classes`` (their images unused)."""
    if not os.path.isdir(split_dir):
        return []
    return [d for d in list_folders(split_dir) if d not in classes]


def check_classes(data_dir, classes, splits=("train", "val")):
    """Errors: fewer than two classes, a class with no training images. Warnings: folders
    not among the classes, a class with no val images. Returns {split: samples}."""
    if len(classes) < 2:
        raise UsageError("{}: {} lists {} ({}): a classifier needs at least 2".format(
            data_dir, _source(data_dir), plural(len(classes), "class"), ", ".join(classes)))
    for name in classes:  # a folder's name labels.txt cannot hold: refused before training
        error = class_name_error(name, os.path.join(data_dir, splits[0]))
        if error:
            raise UsageError(error)
    samples = {}
    for split in splits:
        split_dir = os.path.join(data_dir, split)
        extra = unlisted_folders(split_dir, classes)
        if extra:
            log.warning("%s: folder(s) %s are not in %s (%s): their images are not used",
                        split_dir, ", ".join(extra), _source(data_dir), ", ".join(classes))
        samples[split] = list_samples(split_dir, classes)
        counts = class_counts(samples[split], len(classes))
        missing = [c for c, n in zip(classes, counts) if n == 0]
        if missing and split == "train":
            fix = "remove the class from labels.txt" if _source(data_dir) == "labels.txt" \
                else "remove the empty folder(s) {}".format(", ".join(
                    os.path.join(split_dir, c) for c in missing))
            raise UsageError("{}: no images of {} ({} lists {}): every class needs training "
                             "images; add them, or {}".format(
                                 split_dir, ", ".join(missing), _source(data_dir),
                                 ", ".join(classes), fix))
        if missing:
            log.warning("%s: no images of %s: its recall cannot be measured there", split_dir,
                        ", ".join(missing))
    return samples


def _verdict(path, refuse=None):
    """(None, a 16-bit image's highest sample or None) when ``path`` decodes (and
    ``refuse(height_width)``, the model's preprocessing check, raises nothing), else (the
    ImageReadError's message, naming the file, None); images are dropped at once: only the
    verdict is kept. Only the files whose header says 16-bit are decoded a second time, as
    stored."""
    try:
        data = read_bytes(path)
        rgb = decode_image(data, path)
        if refuse is not None:
            try:
                refuse(rgb.shape[:2])
            except ImageReadError as exc:
                raise ImageReadError("{}: {}".format(path, exc))
    except ImageReadError as exc:
        return str(exc), None
    return None, sixteen_bit_peak(data)


def check_images(samples, progress=None, threads=None, refuse=None):
    """Decode every image once, on ``threads`` threads (OpenCV decodes outside the GIL; by
    default one per core, at most 8), and put its size to ``refuse`` (the model's
    ``Preprocessor.check``) when given; log each that fails, in the dataset's order, then
    raise one line for them all. 16-bit images that use only their low bits (they read as
    nearly black) are warned about once, with a count and an example."""
    from concurrent.futures import ThreadPoolExecutor
    threads = threads or min(8, os.cpu_count() or 1)
    paths = [path for path, _ in samples]
    bad, low = [], []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        verdicts = pool.map(lambda path: _verdict(path, refuse), paths)
        for path, (error, peak) in zip(paths, progress(verdicts) if progress else verdicts):
            if error is not None:
                log.error("%s", error)
                bad.append((path, error))
            elif peak is not None and peak < LOW_BITS_PEAK:
                low.append((path, peak))
    if low:
        log.warning("%s", low_bits_warning(len(low), low[0][0], low[0][1]))
    if len(bad) == 1:
        path, error = bad[0]
        raise UsageError("{} cannot be used as an image: {}; remove or replace it".format(
            path, reason_of(path, error)))
    if bad:
        raise UsageError("{} of {} cannot be read or used (listed above): remove or replace "
                         "them ('oncolens data check' audits a dataset)".format(
                             len(bad), plural(len(samples), "image")))


def worker_error_line(exc):
    """An error re-raised from a data-loader worker carries the worker's whole traceback;
    its last line is the error itself (``module.Class: message``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) <= 1:
        return str(exc)
    last = lines[-1]
    head, sep, rest = last.partition(": ")
    return rest if sep and head.rsplit(".", 1)[-1] == type(exc).__name__ else last
