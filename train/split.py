"""``oncolens data split``: a flat class-folder dataset into train/ val/ test/.

Stratified per class; near-duplicate groups (same scan saved twice) are kept on one side;
groups whose copies carry different labels are dropped (their label is unknown).  Every
file's fate, and where it went, is written to ``splits.csv``.
"""
import csv
import io
import json
import logging
import os
import shutil

import numpy as np

from oncolens.appliance.bundle import LABELS_TXT, class_name_error, read_labels, write_labels
from oncolens.appliance.errors import UsageError
from oncolens.appliance.outpaths import (check_output_dir, drop_empty_folders, inside,
                                          replace_file)
from oncolens.train.scan import (SPLITS, class_folders, duplicate_groups, read_layout,
                                 loose_images, loose_warning, not_images, not_images_warning,
                                 scan)

log = logging.getLogger(__name__)

SPLITS_CSV = "splits.csv"


def _units(records, max_distance):
    """Units of records that must stay together: duplicate groups and single images."""
    grouped, units = set(), []
    for g in duplicate_groups(records, max_distance):
        units.append(g)
        grouped.update(g)
    units += [[i] for i in range(len(records)) if i not in grouped]
    return sorted(units)


def assign(records, ratios, seed=0, max_distance=4):
    """Split name ('train', 'val', 'test', or 'dropped: ...') and group id per record."""
    rng = np.random.default_rng(seed)
    fate = [None] * len(records)
    group_of = [""] * len(records)
    by_class = {}
    for n, unit in enumerate(_units(records, max_distance)):
        if len(unit) > 1:
            for i in unit:
                group_of[i] = "g{}".format(n)
        bad = [i for i in unit if "error" in records[i]]
        labels = set(records[i]["class"] for i in unit)
        if bad:
            for i in unit:
                fate[i] = "dropped: unreadable" if i in bad else None
            unit = [i for i in unit if i not in bad]
            if not unit:
                continue
        if len(labels) > 1:
            for i in unit:
                fate[i] = "dropped: same image under labels {}".format("/".join(sorted(labels)))
            continue
        by_class.setdefault(labels.pop(), []).append(unit)
    ratios = np.asarray(ratios, dtype=np.float64) / float(sum(ratios))
    for cls in sorted(by_class):
        units = by_class[cls]
        order = rng.permutation(len(units))
        # big groups first, so that they land where there is room; ties keep the random order
        order = sorted(order, key=lambda k: -len(units[k]))
        total = sum(len(u) for u in units)
        have = np.zeros(len(ratios))
        for k in order:
            deficit = ratios * (total) - have
            target = int(np.argmax(deficit))
            have[target] += len(units[k])
            for i in units[k]:
                fate[i] = SPLITS[target]
    return fate, group_of


def _check_split_args(src, out, ratios, overwrite):
    kind, _, note = read_layout(src)
    if note:
        log.info("%s", note)
    if kind != "flat":
        raise UsageError("{}: already has train/val/test folders; expected <class>/ folders "
                         "only".format(src))
    if len(ratios) != 3 or not all(np.isfinite(r) and r >= 0 for r in ratios) or \
            not ratios[0] > 0:
        raise UsageError("--ratios: expected three non-negative numbers, train > 0, got {}"
                         .format(" ".join("{:g}".format(r) for r in ratios)))
    check_output_dir(out, "OUT")
    here, there = os.path.realpath(src), os.path.realpath(out)
    if there == here or inside(there, here):
        raise UsageError("OUT {}: is {} SRC {}; expected a folder outside it".format(
            out, "the same folder as" if there == here else "inside", src))
    for name in SPLITS:  # SRC inside the folders a split writes (and --overwrite clears)
        owned = os.path.realpath(os.path.join(out, name))
        if here == owned or inside(here, owned):
            raise UsageError("SRC {}: is inside OUT's {}/, which the split writes; copy the "
                             "source elsewhere first".format(src, name))
    if os.path.exists(out) and os.listdir(out):
        if not overwrite:
            raise UsageError("{} already exists and is not empty: pass --overwrite".format(out))
        require_marker(out, SPLITS_CSV, "data split")


CSV_HEAD = "path,class,split,group,sha256,phash"  # the columns data split writes first


def made_by(out, marker):
    """Whether ``out/marker`` is the record the command writes there: splits.csv with the
    split's columns, SYNTHETIC.json naming 'oncolens data synth'."""
    path = os.path.join(out, marker)
    try:
        with io.open(path, "r", encoding="utf-8") as fh:
            if marker.endswith(".csv"):
                return fh.readline().strip().startswith(CSV_HEAD)
            record = json.load(fh)
            return isinstance(record, dict) and record.get("generator") == "oncolens data synth"
    except (IOError, OSError, ValueError):
        return False


def require_marker(out, marker, command):
    """--overwrite clears only a folder an earlier ``command`` wrote (its ``marker`` record):
    never the train/ val/ test/ of a dataset it did not make."""
    if not made_by(out, marker):
        raise UsageError("OUT {}: not written by '{}' (no {} of its own), so --overwrite will "
                         "not remove its contents: give an empty or new folder".format(
                             out, command, marker))


def clear_owned(out, names):
    """--overwrite: remove what an earlier run wrote into ``out`` (``names`` at its top), so
    no file of the earlier run is left mixed with the new one; returns what was removed."""
    removed = []
    for name in names:
        path = os.path.join(out, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        else:
            continue
        removed.append(name)
    if removed:
        log.info("--overwrite: removed the earlier %s from %s", ", ".join(removed), out)
    return removed


def destinations(records, fate):
    """Where each placed file goes, relative to OUT: ``<split>/<class>/<name>``, where a file in
    a sub-folder of its class folder gets the sub-path joined with '_' (``site1/img.png`` ->
    ``site1_img.png``), and a name taken already gets ``_2``, ``_3``... (so no file is lost).
    Class folders stay flat: the appliance reads the truth from a file's parent folder."""
    taken, dests = set(), []
    for rec, where in zip(records, fate):
        if where not in SPLITS:
            dests.append("")
            continue
        inner = rec["path"].replace(os.sep, "/").split("/", 1)[1]
        stem, ext = os.path.splitext(inner.replace("/", "_"))
        dest, n = "/".join((where, rec["class"], stem + ext)), 1
        while dest.lower() in taken:  # case-insensitive file systems too
            n += 1
            dest = "/".join((where, rec["class"], "{}_{}{}".format(stem, n, ext)))
        taken.add(dest.lower())
        dests.append(dest)
    return dests


def split_dataset(src, out, ratios=(0.7, 0.15, 0.15), seed=0, max_distance=4, link=False,
                  overwrite=False, progress=None):
    """Copy (or hard-link) ``src/<class>/*`` into ``out/<split>/<class>/``; returns counts.
    The classes are ``src/labels.txt``'s when there is one (``source_classes``)."""
    _check_split_args(src, out, ratios, overwrite)
    records, others = not_images(scan(src, progress))
    if not records:
        raise UsageError("{}: no files in its class folders".format(src))
    classes = source_classes(src, records, out)
    kept = [i for i, rec in enumerate(records) if rec["class"] in classes]
    fate, group_of = ["dropped: folder not in labels.txt"] * len(records), [""] * len(records)
    for i, where, group in zip(kept, *assign([records[i] for i in kept], ratios, seed,
                                             max_distance)):
        fate[i], group_of[i] = where, group
    records = records + _left_out(src, others, fate, group_of)
    counts = {s: {c: 0 for c in classes} for s in SPLITS}
    dests = destinations(records, fate)
    moves = [(os.path.join(src, rec["path"]), os.path.join(out, *dest.split("/")))
             for rec, where, dest in zip(records, fate, dests) if where in SPLITS]
    if link:
        _check_links(moves, out)
    if overwrite:
        clear_owned(out, list(SPLITS) + [SPLITS_CSV, LABELS_TXT])
    placed = []
    try:
        _place_all(moves, out, link, placed)
        if not os.path.isdir(out):  # every file dropped: still say why, in splits.csv
            os.makedirs(out)
        write_labels(os.path.join(out, LABELS_TXT), classes)
        replace_file(os.path.join(out, SPLITS_CSV),
                     lambda tmp: _write_csv(tmp, records, fate, group_of, dests))
    except BaseException as exc:  # Ctrl-C, a full disk: no split without its splits.csv
        _unplace(placed + [os.path.join(out, LABELS_TXT)], out)
        if isinstance(exc, KeyboardInterrupt):
            exc.hint = "nothing of this split was left in {}".format(out)
        raise
    for rec, where in zip(records, fate):
        if where in SPLITS:
            counts[where][rec["class"]] += 1
    return counts, fate


def _unplace(paths, out):
    """Remove what this run wrote into OUT (which held none of it before: it was empty, or
    --overwrite cleared the earlier split), and the folders this leaves empty."""
    for path in paths:
        if os.path.lexists(path):
            os.remove(path)
    drop_empty_folders((os.path.dirname(p) for p in paths), out)


def _left_out(src, others, fate, group_of):
    """Records of the files no command reads, which splits.csv lists too: files that are not
    images, and images beside the class folders; their fates are appended to ``fate``."""
    loose = [{"path": name, "class": ""} for name in loose_images(src)]
    if others:
        log.warning("%s", not_images_warning(others))
    if loose:
        log.warning("%s", loose_warning(src, [r["path"] for r in loose]))
    fate += ["dropped: not an image file"] * len(others) + \
        ["dropped: not in a class folder"] * len(loose)
    group_of += [""] * (len(others) + len(loose))
    return others + loose


def source_classes(src, records, out):
    """The classes OUT/labels.txt will list: SRC/labels.txt's, in its order, when there is one
    (a folder it leaves out is warned about and left out, as data check and train do; a class
    it lists with no files is an error, before anything is copied); else the class folders
    that hold files, alphabetical (an empty one is warned about)."""
    found = sorted(set(r["class"] for r in records))
    for name in found:  # a Latin-1 archive's name, a line break: labels.txt cannot hold it
        error = class_name_error(name, src)
        if error:
            raise UsageError(error)
    labels_path = os.path.join(src, LABELS_TXT)
    if not os.path.isfile(labels_path):
        empty = [c for c in class_folders(src)[None] if c not in found]
        if empty:
            log.warning("%s: class folder(s) %s hold no files: left out of %s", src,
                        ", ".join(empty), os.path.join(out, LABELS_TXT))
        return found
    classes = read_labels(labels_path)
    missing = [c for c in classes if c not in found]
    if missing:
        raise UsageError("{}: lists {}, but {} has no files of {}: add them, or remove {} "
                         "from labels.txt".format(labels_path, ", ".join(missing), src,
                                                  "it" if len(missing) == 1 else "them",
                                                  "it" if len(missing) == 1 else "them"))
    extra = [c for c in found if c not in classes]
    if extra:
        log.warning("%s: folder(s) %s not in labels.txt (%s): left out (splits.csv records "
                    "their files as dropped)", src, ", ".join(extra), ", ".join(classes))
    return classes


def _check_links(moves, out):
    """--link: hard links cannot leave their file system; say so before anything is written
    (os.link failed half-way, leaving a split without its splits.csv)."""
    from oncolens.appliance.outpaths import first_existing
    device = os.stat(first_existing(out)).st_dev
    for source, _ in moves:
        if os.stat(source).st_dev != device:
            raise UsageError("--link: {} is on another file system than OUT {}, and hard links "
                             "cannot cross file systems: leave out --link to copy the files"
                             .format(source, out))


def _place_all(moves, out, link, placed):
    """Copy (or link) every file, adding each destination to ``placed`` before it is written
    (so that a copy cut short is removed too); when one fails, say which file, in one line
    (the caller removes what this run placed)."""
    for source, dest in moves:
        placed.append(dest)
        try:
            _place(source, dest, link)
        except (IOError, OSError) as exc:
            raise UsageError("{} {} -> {}: {}; nothing of this split was left in {}".format(
                "linking" if link else "copying", source, dest, exc.strerror or exc, out))


def _place(source, dest, link):
    folder = os.path.dirname(dest)
    if not os.path.isdir(folder):
        os.makedirs(folder)
    if os.path.exists(dest):
        os.remove(dest)
    if link:
        os.link(source, dest)
    else:
        shutil.copy2(source, dest)


def _write_csv(path, records, fate, group_of, dests):
    """splits.csv, UTF-8; a file name that is not valid UTF-8 keeps its own bytes."""
    with io.open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "class", "split", "group", "sha256", "phash", "dest"])
        for rec, where, group, dest in zip(records, fate, group_of, dests):
            writer.writerow([rec["path"], rec["class"], where, group, rec.get("sha256", ""),
                             rec.get("phash", ""), dest])
