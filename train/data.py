"""Class-folder datasets (``DATA/{train,val,test}/<class>/*``) for training and evaluation.

Evaluation uses the appliance's own preprocessing (``appliance.preprocess``), so the
numbers measured here are what the device will see.
"""
import os

import numpy as np

from oncolens.appliance.bundle import LABELS_TXT, read_labels
from oncolens.appliance.errors import UsageError
from oncolens.appliance.imageio import is_image_file, read_image
from oncolens.appliance.preprocess import normalize


def discover_classes(data_dir, split="train"):
    """The class names: ``labels.txt`` when present, else the split's folders, alphabetical."""
    labels_path = os.path.join(data_dir, LABELS_TXT)
    if os.path.isfile(labels_path):
        return read_labels(labels_path)
    root = os.path.join(data_dir, split)
    if not os.path.isdir(root):
        raise UsageError("{}: no '{}' folder (expected {}/{{train,val[,test]}}/<class>/images)"
                         .format(data_dir, split, data_dir))
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise UsageError("{}: no class folders inside".format(root))
    return classes


def list_samples(split_dir, classes):
    """(path, class index) for every image under ``split_dir/<class>/``, sorted."""
    if not os.path.isdir(split_dir):
        raise UsageError("{}: folder not found (expected one sub-folder per class: {})".format(
            split_dir, ", ".join(classes)))
    samples = []
    for index, cls in enumerate(classes):
        folder = os.path.join(split_dir, cls)
        if not os.path.isdir(folder):
            continue
        for parent, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(parent, name)
                if is_image_file(path):
                    samples.append((path, index))
    if not samples:
        raise UsageError("{}: no images found in its class folders ({})".format(
            split_dir, ", ".join(classes)))
    return samples


def random_resized_crop(rgb, out_hw, rng, scale=(0.5, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
    """torchvision's RandomResizedCrop, on a numpy image with OpenCV."""
    import cv2
    h, w = rgb.shape[:2]
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw = int(round(np.sqrt(target * aspect)))
        ch = int(round(np.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = rng.integers(0, h - ch + 1)
            left = rng.integers(0, w - cw + 1)
            crop = rgb[top:top + ch, left:left + cw]
            break
    else:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = rgb[top:top + side, left:left + side]
    return cv2.resize(crop, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA)


class TrainAugment(object):
    """Random resized crop and flips, then the model's normalisation."""

    def __init__(self, preprocessor, seed=None):
        self.pre = preprocessor
        self.rng = np.random.default_rng(seed)

    def __call__(self, rgb):
        out = random_resized_crop(rgb, (self.pre.height, self.pre.width), self.rng)
        if self.rng.random() < 0.5:
            out = out[:, ::-1]
        if self.rng.random() < 0.5:
            out = out[::-1, :]
        return normalize(np.ascontiguousarray(out), self.pre.mean, self.pre.std)


class FolderDataset(object):
    """A torch-style map dataset: ``ds[i]`` -> (float32 CHW array, class index)."""

    def __init__(self, samples, transform):
        self.samples = samples
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, target = self.samples[i]
        return self.transform(read_image(path)), target

    def targets(self):
        return np.array([t for _, t in self.samples], dtype=np.int64)
