"""Reading a dataset folder once: every file's split, class, size, mode and hashes.

Layouts: ``DIR/{train,val,test}/<class>/...`` (split layout) or ``DIR/<class>/...`` (flat; a
class may be named train, val or test when its folder holds images, not class folders).
"""
import hashlib
import logging
import os

import numpy as np

from oncolens.appliance.errors import ImageReadError, UsageError, not_a_folder, plural
from oncolens.appliance.imageio import (check_format, is_ignored_name, is_image_file,
                                        is_unsupported_image, list_folders, not_regular,
                                        open_regular, real_folders, walk_files)
from oncolens.appliance.cvlog import quiet_opencv
from oncolens.appliance.lowbits import LOW_BITS_PEAK
from oncolens.train.phash import UnionFind, near_pairs, phash

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def _holds_images(folder):
    """Whether ``folder`` holds image files itself (as a class folder does; a split folder
    holds class folders). A model folder (its curves.png beside model.json) does not count."""
    names = os.listdir(folder)
    return "model.json" not in names and any(
        not is_ignored_name(n) and (is_image_file(n) or is_unsupported_image(n)) and
        os.path.isfile(os.path.join(folder, n)) for n in names)


def read_layout(root):
    """('split', [splits present], note) or ('flat', [None], note): split only when a folder
    named train, val or test holds class folders. Where such folders hold images themselves
    and no sub-folders, they are classes of a flat dataset; folders holding images beside
    split folders are read by no command. ``note`` is the line that says which reading was
    taken in those two cases (else None)."""
    if not os.path.isdir(root):
        raise UsageError("{}: {} (expected a dataset folder)".format(root, not_a_folder(root)))
    folders = list_folders(root)
    named = [s for s in SPLITS if s in folders]
    if not named:
        return "flat", [None], None
    split_like = [s for s in named if list_folders(os.path.join(root, s))]
    if not split_like:
        as_classes = [s for s in named if _holds_images(os.path.join(root, s))]
        if not as_classes:  # train/, val/ ... with nothing in them yet: still a split layout
            return "split", named, None
        return "flat", [None], (
            "{}: read as a flat dataset of class folders: {} hold{} images and no class "
            "folders, so {} a class (a split dataset has {}/{{train,val,test}}/<class>/)".format(
                root, _folders(as_classes), "s" if len(as_classes) == 1 else "",
                "it is" if len(as_classes) == 1 else "they are", root))
    loose = [f for f in folders if f not in SPLITS and _holds_images(os.path.join(root, f))]
    if not loose:
        return "split", named, None
    return "split", named, (
        "{}: read as a split dataset ({} hold{} class folders); {} hold{} images but {} not "
        "train/, val/ or test/: no command reads {} (if this is a flat dataset with a class "
        "named {}, rename that class)".format(
            root, _folders(split_like), "s" if len(split_like) == 1 else "", _folders(loose),
            "s" if len(loose) == 1 else "", "is" if len(loose) == 1 else "are",
            "it" if len(loose) == 1 else "them", split_like[0]))


def _folders(names):
    return ", ".join(n + "/" for n in names)


def layout(root):
    """('split', [splits present]) or ('flat', [None]), as ``read_layout`` reads it."""
    kind, splits, _ = read_layout(root)
    return kind, splits


def class_folders(root):
    """{split (None when flat): [class folder names]}, the folders as they are, empty or not."""
    kind, splits = layout(root)
    return {split: list_folders(os.path.join(root, split) if split else root)
            for split in splits}


def loose_images(folder):
    """Image files lying directly in ``folder``, outside any class folder (hidden ones left
    out): no command reads them, since a file's class is the folder it is in."""
    return sorted(name for name in os.listdir(folder)
                  if not is_ignored_name(name) and os.path.isfile(os.path.join(folder, name)) and
                  (is_image_file(name) or is_unsupported_image(name)))


def loose_warning(folder, names):
    """The one line that says so, naming the first of them."""
    return ("{}: {} outside the class folders, left out (e.g. {}): move each into the "
            "folder of its class".format(folder, plural(len(names), "image file"), names[0]))


def walk(root):
    """(relative path, split or None, class) for every file under the class folders (hidden
    files and OS junk left out, as every command does)."""
    kind, splits = layout(root)
    entries, inside = [], None
    for split in splits:
        base = os.path.join(root, split) if split else root
        for cls in list_folders(base):
            folder = os.path.join(base, cls)
            if os.path.islink(folder):
                inside = inside if inside is not None else real_folders(root)
                if os.path.realpath(folder) in inside:
                    log.warning("%s: links to %s, which is read under its own name: not read "
                                "twice", folder, os.path.realpath(folder))
                    continue
            for path in walk_files(folder, within=root):
                if not path.lower().endswith((".txt", ".csv", ".md")):
                    entries.append((os.path.relpath(path, root), split, cls))
    return entries


NOT_AN_IMAGE = "not an image file (by its extension)"


def not_images(records):
    """(records of images, records of other files): a class folder's notes.json or case.xml
    is read by no command, so it is neither counted nor an error (a warning names it)."""
    return ([r for r in records if "ignored" not in r],
            [r for r in records if "ignored" in r])


def not_images_warning(others):
    return ("{} in the class folders without an image extension: no command reads such "
            "files (e.g. {})".format(plural(len(others), "file"), others[0]["path"]))


def describe_file(path):
    """Dictionary with sha256, size, mode and phash (and a 16-bit image's highest sample,
    'peak'); 'error' instead when unreadable."""
    import cv2
    why = not_regular(path)  # a FIFO named like an image: opening it would wait forever
    if why:
        return {"bytes": 0, "error": why}
    try:  # read from the descriptor checked again: a file swapped for a FIFO is not waited on
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            data = fh.read() if size else b""
    except ImageReadError as exc:
        return {"bytes": 0, "error": exc.reason}
    info = {"bytes": size}
    if info["bytes"] == 0:
        info["error"] = "empty file"
        return info
    info["sha256"] = hashlib.sha256(data).hexdigest()
    if not is_image_file(path):
        try:
            check_format(path)
            info["ignored"] = NOT_AN_IMAGE  # as train and evaluate leave it out
        except ImageReadError as exc:  # .gif, .heic ...: say which format
            info["error"] = str(exc)[len(path) + 2:]
        return info
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        info["error"] = "cannot be decoded as an image"
        return info
    if img.dtype not in (np.uint8, np.uint16):  # float TIFF: every reader refuses it
        info["error"] = "{} samples are not supported (expected 8- or 16-bit integer " \
            "samples)".format("32-bit float" if img.dtype == np.float32 else img.dtype)
        return info
    channels = 1 if img.ndim == 2 else img.shape[2]
    info["mode"] = MODES.get(channels, "{}ch".format(channels)) + \
        ("16" if img.dtype == np.uint16 else "")
    if img.dtype == np.uint16:  # its highest colour sample (alpha left out)
        colour = img if img.ndim == 2 else img[:, :, :3 if channels >= 3 else 1]
        info["peak"] = int(colour.max())
    img, channels = upright(img, channels, data)
    info["width"], info["height"] = int(img.shape[1]), int(img.shape[0])
    if img.dtype != np.uint8:
        img = (img / 257).astype(np.uint8)
    if channels == 1:
        grey = img if img.ndim == 2 else img[:, :, 0]
    else:
        grey = cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_BGR2GRAY)
    info["phash"] = "{:016x}".format(phash(grey))
    return info


def upright(img, channels, data):
    """(image, channels) as the readers see it: OpenCV turns an image by its EXIF
    orientation tag on every other read (training, evaluate, the appliance), but not with
    IMREAD_UNCHANGED; a file that may carry the tag is decoded again as they decode it, so
    that its size and hash are those of the image trained on (a turned copy of an image
    under another label is found)."""
    import cv2
    if b"Exif" not in data[:65536] and b"eXIf" not in data and \
            data[:4] not in (b"II*\x00", b"MM\x00*"):
        return img, channels
    with quiet_opencv:
        seen = cv2.imdecode(np.frombuffer(data, np.uint8),
                            cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if seen is None or seen.size == 0:
        return img, channels
    return seen, 3


def low_bits_warning(count, example, peak):
    """The one warning line, shared by data check and train's image check, for ``count``
    16-bit images that use only their low bits (``example``: one of them, at ``peak``)."""
    return ("{} using only the low bits (highest value below {}; e.g. {}: {}): "
            "such images read as nearly black, with about {} grey levels, because reading keeps "
            "only the top 8 of 16 bits; rescale them to 8-bit (or to the full 16-bit range) "
            "before training (docs/TRAINING.md, Data)".format(
                plural(count, "16-bit image"), LOW_BITS_PEAK, example, peak,
                LOW_BITS_PEAK // 256))


def scan(root, progress=None):
    """List of records: path, split, class and describe_file's fields."""
    records = []
    entries = walk(root)
    for rel, split, cls in (progress(entries) if progress else entries):
        rec = {"path": rel, "split": split, "class": cls}
        try:
            rec.update(describe_file(os.path.join(root, rel)))
        except (IOError, OSError) as exc:
            rec["error"] = "unreadable ({})".format(exc)
        records.append(rec)
    return records


def duplicate_groups(records, max_distance=4):
    """Groups (lists of record indices) of identical files or near-identical images."""
    uf = UnionFind(len(records))
    first = {}
    for i, rec in enumerate(records):
        if "sha256" in rec:
            j = first.setdefault(rec["sha256"], i)
            if j != i:
                uf.union(j, i)
    hashed = [i for i, rec in enumerate(records) if "phash" in rec]
    if max_distance >= 0 and hashed:
        values = [int(records[i]["phash"], 16) for i in hashed]
        for a, b, _ in near_pairs(values, max_distance):
            uf.union(hashed[a], hashed[b])
    return uf.groups()
