"""Class-folder datasets (``DATA/{train,val,test}/<class>/*``) for training and evaluation.

Evaluation uses the appliance's own preprocessing (``appliance.preprocess``), so the
numbers measured here are what the device will see.
"""
import logging
import os

import numpy as np

from oncolens.appliance.bundle import LABELS_TXT, read_labels
from oncolens.appliance.errors import UsageError, not_a_folder
from oncolens.appliance.imageio import (is_image_file, is_unsupported_image, list_folders,
                                        read_image, walk_files)

log = logging.getLogger(__name__)


def discover_classes(data_dir, split="train"):
    """The class names: ``labels.txt`` when present, else the split's folders, alphabetical."""
    if not os.path.isdir(data_dir):
        raise UsageError("{}: {} (expected {}/{{train,val[,test]}}/<class>/images)".format(
            data_dir, not_a_folder(data_dir), data_dir))
    check_split_layout(data_dir)
    labels_path = os.path.join(data_dir, LABELS_TXT)
    if os.path.isfile(labels_path):
        return read_labels(labels_path)
    root = os.path.join(data_dir, split)
    if not os.path.isdir(root):
        raise UsageError("{}: no '{}' folder (expected {}/{{train,val[,test]}}/<class>/images)"
                         .format(data_dir, split, data_dir))
    classes = list_folders(root)
    if not classes:
        raise UsageError("{}: no class folders inside".format(root))
    return classes


def check_split_layout(data_dir):
    """Training reads DATA/train/<class>/ and DATA/val/<class>/: a flat dataset of class
    folders (one of them perhaps named train or val: scan.read_layout) is refused in one line
    that says how to split it; folders beside the splits that no command reads, a warning."""
    from oncolens.train.scan import read_layout
    kind, _, note = read_layout(data_dir)
    if kind == "split":
        if note:
            log.warning("%s", note)
        return
    folders = list_folders(data_dir)
    if not folders:
        return  # nothing there: the errors below say what is missing
    raise UsageError("{}: {}; oncolens train reads {}/train/<class>/ and {}/val/<class>/: "
                     "make them with 'oncolens data split {} OUT' and train on OUT".format(
                         data_dir, note[len(data_dir) + 2:] if note else
                         "a flat dataset of class folders ({})".format(
                             ", ".join(f + "/" for f in folders)),
                         data_dir, data_dir, data_dir))


def list_samples(split_dir, classes):
    """(path, class index) for every image under ``split_dir/<class>/``, sorted (hidden files
    and OS junk left out, as every command does). Files in an image format we cannot read
    (.gif, .heic ...) are listed too, so that train's image check and evaluate name them
    as unreadable instead of leaving them out in silence."""
    if not os.path.isdir(split_dir):
        raise UsageError("{}: {} (expected one sub-folder per class: {})".format(
            split_dir, not_a_folder(split_dir), ", ".join(classes)))
    samples = []
    for index, cls in enumerate(classes):
        folder = os.path.join(split_dir, cls)
        if not os.path.isdir(folder):
            continue
        samples += [(path, index) for path in walk_files(folder, within=split_dir)
                    if is_image_file(path) or is_unsupported_image(path)]
    if not samples:
        raise UsageError("{}: no images found in its class folders ({})".format(
            split_dir, ", ".join(classes)))
    return samples


def class_counts(samples, num_classes):
    """Images per class index."""
    return np.bincount(np.array([t for _, t in samples], dtype=np.int64),
                       minlength=num_classes)


def balanced_class_weights(samples, num_classes):
    """Loss weights n / (k * n_c) (scikit-learn's 'balanced'); 0 for an absent class."""
    counts = class_counts(samples, num_classes).astype(np.float64)
    weights = np.zeros(num_classes)
    present = counts > 0
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def cache_side(resolution, crop_ratio):
    """Shorter side that training images are kept at in memory (what the crop sees)."""
    return int(np.ceil(resolution / float(crop_ratio)))


def load_resized(path, side, clahe=None):
    """Read an image as RGB, apply CLAHE when asked, shrink its shorter side to ``side``."""
    import cv2
    from oncolens.appliance.preprocess import clahe_if_asked
    rgb = clahe_if_asked(read_image(path), clahe)
    h, w = rgb.shape[:2]
    scale = side / float(min(h, w))
    if scale < 1.0:
        size = (max(side, int(round(w * scale))), max(side, int(round(h * scale))))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def looks_greyscale(samples, limit=32, tolerance=8):
    """True when (a spread of up to ``limit``) training images are greyscale in content.

    Greyscale content (ultrasound, X-ray, CT, stored as RGB or as one channel) means a scanner
    image with a physical up and down; colour means stained microscopy. An image counts as
    greyscale when under 5% of its pixels have channels more than ``tolerance`` apart (a few
    coloured calipers or annotations do not make it colour); the set, when 90% of them are.
    """
    grey = seen = 0
    step = max(1, len(samples) // limit)
    for path, _ in samples[::step][:limit]:
        try:
            rgb = read_image(path).astype(np.int16)
        except Exception:  # unreadable files are data check's business, not this guess's
            continue
        spread = rgb.max(axis=2) - rgb.min(axis=2)
        seen += 1
        grey += int((spread > tolerance).mean() < 0.05)
    return seen > 0 and grey >= 0.9 * seen


class FolderDataset(object):
    """A torch-style map dataset: ``ds[i]`` -> (float32 CHW array, class index)."""

    def __init__(self, samples, transform, loader=read_image):
        self.samples = samples
        self.transform = transform
        self.loader = loader

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, target = self.samples[i]
        return self.transform(self.loader(path)), target

    def targets(self):
        return np.array([t for _, t in self.samples], dtype=np.int64)


class CachedDataset(FolderDataset):
    """Training images decoded once and kept in memory at the size the crop needs."""

    def __init__(self, samples, transform, side, clahe=None, progress=None):
        FolderDataset.__init__(self, samples, transform)
        self.images = []
        for path, _ in (progress(samples) if progress else samples):
            self.images.append(load_resized(path, side, clahe))

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.samples[i][1]
