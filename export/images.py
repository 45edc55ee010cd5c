"""Images for checks, verification and calibration: real ones from a dataset, or random.

``--images DIR`` may name a dataset (then its ``val/`` split is used), a split folder with
class sub-folders, or any folder of images.  Without it, the dataset recorded in the
bundle (model.json ``provenance.dataset``) is used when it still exists.
"""
import logging
import os

import numpy as np

from oncolens.appliance.errors import ImageReadError, UsageError, plural
from oncolens.appliance.sources import list_images

log = logging.getLogger(__name__)


def recorded_dataset(info):
    """The training data folder model.json records, when it still exists here."""
    prov = info.get("provenance") or {}
    for key in ("dataset", "data", "path"):
        path = prov.get(key)
        if isinstance(path, str) and os.path.isdir(path):
            return path
    return None


def image_folder(images_dir, split="val", flag="--images"):
    """A dataset's ``split`` folder when it has one, else the folder itself."""
    if not os.path.isdir(images_dir):
        raise UsageError("{}: {} is not a folder".format(flag, images_dir))
    candidate = os.path.join(images_dir, split)
    return candidate if os.path.isdir(candidate) else images_dir


def spread(items, n):
    """At most ``n`` items taken evenly across the sorted list (all classes get a share)."""
    if n is None or n <= 0 or len(items) <= n:
        return list(items)
    step = len(items) / float(n)
    return [items[int(i * step)] for i in range(n)]


def sample_paths(images_dir, n, split="val", flag="--images"):
    """Up to ``n`` image paths from ``images_dir`` (its ``split`` when it is a dataset);
    ``flag`` (the one that named the folder) names it in the error."""
    folder = image_folder(images_dir, split, flag)
    paths = [p for p, _ in list_images(folder)]
    if not paths:
        raise UsageError("{}: no image files under {}".format(flag, folder))
    return spread(paths, n)


def load_batch(paths, preprocessor):
    """Preprocessed float32 NCHW of the readable images, and the paths actually used."""
    from oncolens.appliance.imageio import read_image
    arrays, used = [], []
    for path in paths:
        try:
            rgb = read_image(path)  # its errors name the file
        except ImageReadError as exc:
            log.warning("skipped: %s", exc)
            continue
        try:
            arrays.append(preprocessor(rgb))
            used.append(path)
        except ImageReadError as exc:  # refused by the preprocessing: too elongated
            log.warning("skipped: %s: %s", path, exc)
    if not arrays:
        raise UsageError("none of the {} could be read".format(plural(len(paths), "image")))
    return np.stack(arrays).astype(np.float32), used


def random_batch(n, input_shape, seed=0):
    """``n`` random RGB images, preprocessed like real ones would be (ImageNet statistics)."""
    rng = np.random.RandomState(seed)
    c, h, w = input_shape
    return rng.normal(0.0, 1.0, size=(int(n), c, h, w)).astype(np.float32)


def check_images(info, preprocessor, images_dir=None, n=32, seed=0):
    """(batch, description): real images when a folder is given or recorded, else random."""
    folder = images_dir or recorded_dataset(info)
    if folder:
        batch, used = load_batch(sample_paths(folder, n), preprocessor)
        return batch, "{} from {}".format(plural(len(used), "real image"), image_folder(folder))
    return random_batch(n, preprocessor_shape(preprocessor), seed), \
        "{} (pass --images DIR for real ones)".format(plural(n, "random image"))


def preprocessor_shape(preprocessor):
    return (preprocessor.channels, preprocessor.height, preprocessor.width)
