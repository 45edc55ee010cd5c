"""`oncolens data split`: --overwrite leaves nothing of the earlier split, files in
sub-folders of a class keep distinct names, and bad OUT / --ratios are one-line errors."""
import csv
import os

import cv2
import numpy as np
import pytest

from conftest import run_cli


def _image(rng, path):
    base = rng.integers(0, 255, size=(6, 6)).astype(np.uint8)
    img = cv2.resize(base, (64, 64), interpolation=cv2.INTER_CUBIC)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder)
    assert cv2.imwrite(path, img)


def _flat(root, per_class=10, seed=0):
    rng = np.random.default_rng(seed)
    for cls in ("benign", "malignant"):
        for i in range(per_class):
            _image(rng, os.path.join(root, cls, "{}.png".format(i)))


def _files(out):
    found = set()
    for split in ("train", "val", "test"):
        for parent, _, files in os.walk(os.path.join(out, split)):
            found.update(os.path.relpath(os.path.join(parent, f), out).replace(os.sep, "/")
                         for f in files)
    return found


def _rows(out):
    with open(os.path.join(out, "splits.csv")) as fh:
        return list(csv.DictReader(fh))


def test_overwrite_leaves_nothing_of_the_earlier_split(tmp_path):
    src, out = str(tmp_path / "raw"), str(tmp_path / "out")
    _flat(src, 10)
    code, o, err = run_cli(["data", "split", src, out, "--seed", 1])
    assert code == 0, err
    assert len(_files(out)) == 20
    for cls in ("benign", "malignant"):  # the source shrinks; another seed moves files
        for i in range(4, 10):
            os.remove(os.path.join(src, cls, "{}.png".format(i)))
    code, o, err = run_cli(["data", "split", src, out, "--seed", 2, "--overwrite"])
    assert code == 0, err
    rows = _rows(out)
    assert len(rows) == 8
    assert _files(out) == set(r["dest"] for r in rows)


def test_files_in_sub_folders_keep_distinct_names(tmp_path):
    src, out = str(tmp_path / "raw2"), str(tmp_path / "out")
    rng = np.random.default_rng(3)
    for rel in ("benign/site1/img.png", "benign/site2/img.png", "benign/img.png",
                "benign/site1_img.png", "malignant/a.png", "malignant/b.png",
                "malignant/c.png", "malignant/d.png"):
        _image(rng, os.path.join(src, *rel.split("/")))
    code, o, err = run_cli(["data", "split", src, out, "--ratios", 1, 0, 0])
    assert code == 0, err
    rows = {r["path"].replace(os.sep, "/"): r["dest"] for r in _rows(out)}
    assert rows["benign/img.png"] == "train/benign/img.png"
    # files at the top of a class folder keep their names; a sub-folder's file takes the
    # next free one
    assert rows["benign/site1_img.png"] == "train/benign/site1_img.png"
    assert rows["benign/site1/img.png"] == "train/benign/site1_img_2.png"
    assert rows["benign/site2/img.png"] == "train/benign/site2_img.png"
    assert _files(out) == set(rows.values())  # nothing lost, nothing else
    assert len(os.listdir(os.path.join(out, "train", "benign"))) == 4


@pytest.mark.parametrize("case", ["out-is-a-file", "nan-ratio", "out-inside-src"])
def test_bad_output_or_ratios_are_one_line(tmp_path, case):
    src = str(tmp_path / "raw")
    _flat(src, 3)
    afile = tmp_path / "afile"
    afile.write_text(u"x")
    argv = {"out-is-a-file": [src, str(afile)],
            "nan-ratio": [src, str(tmp_path / "o"), "--ratios", "nan", "1", "1"],
            "out-inside-src": [src, os.path.join(src, "split")]}[case]
    code, o, err = run_cli(["data", "split"] + argv)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert {"out-is-a-file": "is a file", "nan-ratio": "--ratios",
            "out-inside-src": "inside"}[case] in err
    assert not os.path.exists(str(tmp_path / "o"))
    assert not os.path.exists(os.path.join(src, "split"))
