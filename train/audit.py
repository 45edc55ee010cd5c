"""``oncolens data check``: what is in a dataset folder and what is wrong with it.

Errors (non-zero exit): unreadable or empty files, the same image in two splits (leakage),
the same image under two labels, no files at all, a split dataset without readable images in
train/ or val/, fewer than two classes, a class in labels.txt with no training images.
Warnings: duplicates within one split and class, images not stored as RGB (they are converted
on reading), classes missing from a split, class folders that labels.txt leaves out, files
that are not images, images beside the class folders.
"""
import collections
import logging
import os

import numpy as np

from oncolens.appliance.bundle import LABELS_TXT, class_name_error, read_labels
from oncolens.appliance.errors import BundleError, plural
from oncolens.appliance.imageio import is_image_file, is_unsupported_image
from oncolens.train.scan import (LOW_BITS_PEAK, class_folders, duplicate_groups, read_layout,
                                 loose_images, loose_warning, low_bits_warning, not_images,
                                 not_images_warning, scan)

log = logging.getLogger(__name__)


def _sizes(records):
    ok = [r for r in records if "width" in r]
    if not ok:
        return {}
    w = np.array([r["width"] for r in ok])
    h = np.array([r["height"] for r in ok])
    return {"min": [int(w.min()), int(h.min())], "max": [int(w.max()), int(h.max())],
            "median": [int(np.median(w)), int(np.median(h))]}


def _group_issue(records, group):
    members = [records[i] for i in group]
    splits = sorted(set(str(r["split"]) for r in members))
    classes = sorted(set(r["class"] for r in members))
    exact = len(set(r.get("sha256") for r in members)) == 1
    entry = {"paths": [r["path"] for r in members], "splits": splits, "classes": classes,
             "exact": exact}
    if len(classes) > 1:
        entry["kind"] = "conflicting-labels"
    elif len(splits) > 1:
        entry["kind"] = "leakage"
    else:
        entry["kind"] = "duplicate"
    return entry


def _empty_folders(root, records, folders):
    """Without labels.txt, the classes are train/'s folders (a flat dataset's, for data
    split): one that holds no images is an error (train refuses it) or, flat, a warning."""
    imaged = set(r["class"] for r in records if r["split"] in ("train", None) and
                 (is_image_file(r["path"]) or is_unsupported_image(r["path"])))
    kind = "split" if any(r["split"] for r in records) else "flat"
    empty = [c for c in folders.get("train" if kind == "split" else None, []) if c not in imaged]
    if not empty:
        return [], []
    if kind == "flat":
        return [], ["{}: class folder(s) {} hold no images: data split leaves them out".format(
            root, ", ".join(empty))]
    return ["train/: no images in class folder(s) {}: train refuses a class with no training "
            "images; add images or remove the empty folder(s)".format(", ".join(empty))], []


def missing_splits(root, records):
    """``oncolens train`` reads train/ and val/ of a split dataset and refuses one without
    readable images in either: one error each."""
    if not any(r["split"] for r in records):
        return []
    have = set(r["split"] for r in records if "error" not in r)
    return ["{}/: no readable images (the folder is missing or empty): train needs images in "
            "train/ and val/".format(os.path.join(root, split))
            for split in ("train", "val") if split not in have]


def class_issues(root, records, classes, folders=None):
    """What ``oncolens train`` would refuse or warn about in the classes: (errors, warnings).

    With ``labels.txt``, a class it lists with no training images is an error and a folder it
    leaves out a warning (train does not use its images); without it, a class folder of
    train/ with no images is an error; fewer than two classes is an error."""
    errors, warnings = [], []
    if not records:
        errors.append("{}: no files found (expected {}/{{train,val[,test]}}/<class>/ or "
                      "{}/<class>/ image folders)".format(root, root, root))
        return errors, warnings
    if not os.path.isfile(os.path.join(root, LABELS_TXT)):
        errors, warnings = _empty_folders(root, records, folders or {})
    listed = None
    if os.path.isfile(os.path.join(root, LABELS_TXT)):
        try:
            listed = read_labels(os.path.join(root, LABELS_TXT))
        except BundleError as exc:
            return [str(exc)], warnings
        flat = not any(r["split"] for r in records)  # train reads only a split layout
        for split in sorted(set(str(r["split"]) for r in records)):
            extra = sorted(set(r["class"] for r in records if str(r["split"]) == split) -
                           set(listed))
            if extra:
                warnings.append("{}: folder(s) {} not in labels.txt: {}".format(
                    root if flat else split, ", ".join(extra),
                    "data split leaves them out" if flat else "train does not use their images"))
        trained = set(r["class"] for r in records if r["split"] in ("train", None))
        missing = [c for c in listed if c not in trained]
        if missing:
            errors.append("{}: no images of {} (labels.txt lists {}): {}".format(
                root if flat else "train/", ", ".join(missing),
                "it" if len(missing) == 1 else "them",
                "data split refuses a class with no files" if flat else
                "train refuses a class with no training images"))
    # a name labels.txt cannot hold: train refuses a folder it reads, data split any
    flat = not any(r["split"] for r in records)
    errors += [e for e in (class_name_error(c, root) for c in
                           (classes if listed is None or flat else [])) if e]
    used = listed if listed is not None else classes
    if len(used) < 2:
        errors.append("{} ({}): a classifier needs at least 2".format(
            plural(len(used), "class"), ", ".join(used)))
    return errors, warnings


def check(root, max_distance=4, progress=None):
    """The whole audit as a JSON-ready dictionary (``errors`` lists what fails the check)."""
    records, others = not_images(scan(root, progress))
    folders = class_folders(root)
    counts = collections.OrderedDict()
    for r in records:
        counts.setdefault(str(r["split"]), collections.Counter())[r["class"]] += 1
    classes = sorted(set(r["class"] for r in records) | set(
        sum(folders.values(), []) if records else []))
    groups = [_group_issue(records, g) for g in duplicate_groups(records, max_distance)]
    errors, warnings = [], []
    for r in records:
        if "error" in r:
            errors.append("{}: {}".format(r["path"], r["error"]))
    for g in groups:
        what = "identical files" if g["exact"] else "near-duplicates"
        if g["kind"] == "conflicting-labels":
            errors.append("same image under labels {} ({}): {}".format(
                "/".join(g["classes"]), what, ", ".join(g["paths"])))
        elif g["kind"] == "leakage":
            errors.append("leakage across splits {} ({}): {}".format(
                "/".join(g["splits"]), what, ", ".join(g["paths"])))
        else:
            where = g["classes"][0] if g["splits"] == ["None"] else "/".join(
                (g["splits"][0], g["classes"][0]))  # a flat dataset has no split
            warnings.append("duplicates in {} ({}): {}".format(where, what, ", ".join(g["paths"])))
    for split, counter in counts.items():
        missing = [c for c in classes if not counter.get(c)]
        if missing and split != "None":
            warnings.append("split {} has no images of {}".format(split, ", ".join(missing)))
    more_errors, more_warnings = class_issues(root, records, classes, folders)
    errors += missing_splits(root, records) + more_errors
    warnings += more_warnings
    note = read_layout(root)[2]  # train/ (val/, test/) read as a class: say so
    if note:
        warnings.insert(0, note)
    if others:
        warnings.append(not_images_warning(others))
    for split in folders:
        folder = os.path.join(root, split) if split else root
        loose = loose_images(folder)
        if loose:
            warnings.append(loose_warning(folder, loose))
    low = [r for r in records if r.get("peak", LOW_BITS_PEAK) < LOW_BITS_PEAK]
    if low:
        warnings.append(low_bits_warning(len(low), low[0]["path"], low[0]["peak"]))
    modes = collections.Counter(r.get("mode") for r in records if "mode" in r)
    converted = sum(n for m, n in modes.items() if m != "RGB")
    if converted:
        warnings.append("{} not stored as 8-bit RGB ({}): converted to RGB on "
                        "reading".format(plural(converted, "image"), ", ".join(
                            "{} {}".format(n, m) for m, n in sorted(modes.items()) if m != "RGB")))
    return {"root": root, "images": len(records), "classes": classes,
            "counts": {s: dict(c) for s, c in counts.items()}, "modes": dict(modes),
            "sizes": _sizes(records), "duplicate_groups": groups, "errors": errors,
            "warnings": warnings, "max_distance": max_distance, "records": records,
            "not_images": [r["path"] for r in others]}


def format_report(result):
    """Human-readable lines for the terminal."""
    lines = ["{}: {}, classes {}".format(result["root"], plural(result["images"], "file"),
                                              ", ".join(result["classes"]))]
    for split, counter in result["counts"].items():
        name = "(flat)" if split == "None" else split
        lines.append("  {:6s} ".format(name) + "  ".join(
            "{} {}".format(c, counter.get(c, 0)) for c in result["classes"]) +
            "  (total {})".format(sum(counter.values())))
    sizes = result["sizes"]
    if sizes:
        lines.append("  sizes (w x h): min {}x{}, median {}x{}, max {}x{}".format(
            *(sizes["min"] + sizes["median"] + sizes["max"])))
    lines.append("  modes: " + ", ".join("{} {}".format(m, n)
                                         for m, n in sorted(result["modes"].items())))
    kinds = collections.Counter(g["kind"] for g in result["duplicate_groups"])
    lines.append("  duplicate groups (phash distance <= {}): {} ({})".format(
        result["max_distance"], len(result["duplicate_groups"]),
        ", ".join("{} {}".format(n, k) for k, n in sorted(kinds.items())) or "none"))
    for w in result["warnings"]:
        lines.append("warning: " + w)
    for e in result["errors"]:
        lines.append("error: " + e)
    lines.append("{}, {}".format(plural(len(result["errors"]), "error"),
                                 plural(len(result["warnings"]), "warning")))
    return lines
