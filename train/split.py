"""``oncolens data split``: a flat class-folder dataset into train/ val/ test/.

Stratified per class; near-duplicate groups (same scan saved twice) are kept on one side;
groups whose copies carry different labels are dropped (their label is unknown).  Every
file's fate is written to ``splits.csv``.
"""
import csv
import logging
import os
import shutil

import numpy as np

from oncolens.appliance.bundle import LABELS_TXT, write_labels
from oncolens.appliance.errors import UsageError
from oncolens.train.scan import SPLITS, duplicate_groups, layout, scan

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


def split_dataset(src, out, ratios=(0.7, 0.15, 0.15), seed=0, max_distance=4, link=False,
                  overwrite=False, progress=None):
    """Copy (or hard-link) ``src/<class>/*`` into ``out/<split>/<class>/``; returns counts."""
    kind, _ = layout(src)
    if kind != "flat":
        raise UsageError("{}: already has train/val/test folders; expected <class>/ folders "
                         "only".format(src))
    if len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0:
        raise UsageError("--ratios: expected three non-negative numbers, train > 0, got {}"
                         .format(ratios))
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise UsageError("{} already exists and is not empty: pass --overwrite".format(out))
    records = scan(src, progress)
    if not records:
        raise UsageError("{}: no files in its class folders".format(src))
    fate, group_of = assign(records, ratios, seed, max_distance)
    classes = sorted(set(r["class"] for r in records))
    counts = {s: {c: 0 for c in classes} for s in SPLITS}
    for rec, where in zip(records, fate):
        if where in SPLITS:
            dest = os.path.join(out, where, rec["class"], os.path.basename(rec["path"]))
            _place(os.path.join(src, rec["path"]), dest, link)
            counts[where][rec["class"]] += 1
    write_labels(os.path.join(out, LABELS_TXT), classes)
    _write_csv(os.path.join(out, SPLITS_CSV), records, fate, group_of)
    return counts, fate


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


def _write_csv(path, records, fate, group_of):
    with open(path, "w") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "class", "split", "group", "sha256", "phash"])
        for rec, where, group in zip(records, fate, group_of):
            writer.writerow([rec["path"], rec["class"], where, group, rec.get("sha256", ""),
                             rec.get("phash", "")])
