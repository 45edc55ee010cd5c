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


@pytest.mark.parametrize("case", ["out-is-a-file", "nan-ratio", "out-inside-src",
                                  "negative-seed", "seed-too-big"])
def test_bad_output_or_ratios_are_one_line(tmp_path, case):
    src = str(tmp_path / "raw")
    _flat(src, 3)
    afile = tmp_path / "afile"
    afile.write_text(u"x")
    argv = {"out-is-a-file": [src, str(afile)],
            "nan-ratio": [src, str(tmp_path / "o"), "--ratios", "nan", "1", "1"],
            "out-inside-src": [src, os.path.join(src, "split")],
            "negative-seed": [src, str(tmp_path / "o"), "--seed", "-1"],
            "seed-too-big": [src, str(tmp_path / "o"), "--seed", str(2 ** 32)]}[case]
    code, o, err = run_cli(["data", "split"] + argv)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert {"out-is-a-file": "is a file", "nan-ratio": "--ratios",
            "out-inside-src": "inside", "negative-seed": "--seed: expected 0 to 4294967295",
            "seed-too-big": "--seed"}[case] in err
    assert not os.path.exists(str(tmp_path / "o"))
    assert not os.path.exists(os.path.join(src, "split"))


def test_overwrite_never_clears_a_dataset_it_did_not_write(tmp_path, tiny_data):
    """--overwrite of synth or split removes an earlier run's train/ val/ test/, and only
    that: a real dataset's folders, or the source itself, are never deleted."""
    import shutil
    real = tmp_path / "real"
    shutil.copytree(tiny_data, str(real))
    os.remove(str(real / "SYNTHETIC.json"))  # a dataset that synth did not make
    before = sorted(os.listdir(str(real / "train" / "benign")))
    code, out, err = run_cli(["data", "synth", str(real), "--overwrite"])
    assert code != 0 and "not written by 'oncolens data synth'" not in err
    assert "not written by 'data synth' (no SYNTHETIC.json of its own)" in err
    raw = tmp_path / "raw"
    shutil.copytree(str(real / "train"), str(raw))
    code, out, err = run_cli(["data", "split", str(raw), str(real), "--overwrite"])
    assert code != 0 and "not written by 'data split' (no splits.csv of its own)" in err
    (real / "splits.csv").write_text(u"patient_id,split\nP001,train\n")  # the user's own
    code, out, err = run_cli(["data", "split", str(raw), str(real), "--overwrite"])
    assert code != 0 and "not written by 'data split'" in err
    assert sorted(os.listdir(str(real / "train" / "benign"))) == before
    proj = tmp_path / "proj"
    shutil.copytree(str(real / "train"), str(proj / "train"))
    code, out, err = run_cli(["data", "split", str(proj / "train"), str(proj), "--overwrite"])
    assert code != 0 and "is inside OUT's train/" in err
    assert sorted(os.listdir(str(proj / "train" / "benign"))) == before


def _other_file_system(path):
    """A writable folder on another file system than ``path`` (/dev/shm), or None."""
    shm = "/dev/shm"
    if not os.path.isdir(shm) or not os.access(shm, os.W_OK) or \
            os.stat(shm).st_dev == os.stat(path).st_dev:
        return None
    return shm


def test_link_across_file_systems_is_refused_before_anything_is_written(tmp_path):
    """os.link failed half-way with a traceback, leaving a split without its splits.csv
    (which --overwrite then refused to clear)."""
    import tempfile
    src = str(tmp_path / "raw")
    _flat(src, 4)
    shm = _other_file_system(str(tmp_path))
    if shm is None:
        pytest.skip("no second file system (/dev/shm) to link across")
    out = os.path.join(tempfile.mkdtemp(dir=shm), "split")
    try:
        code, o, err = run_cli(["data", "split", src, out, "--link"])
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "--link" in err and "another file system" in err
        assert not os.path.exists(out)
        code, o, err = run_cli(["data", "split", src, out])  # copying works
        assert code == 0, err
    finally:
        import shutil
        shutil.rmtree(os.path.dirname(out))


def test_a_failed_link_removes_what_the_split_placed(tmp_path, monkeypatch):
    """A file system without hard links (exFAT) fails on the first os.link, a full disk on
    any copy: one line naming the file, and no half split left in OUT."""
    src, out = str(tmp_path / "raw"), str(tmp_path / "out")
    _flat(src, 4)
    calls = []

    def link(a, b):
        calls.append(b)
        if len(calls) == 3:
            raise OSError(1, "Operation not permitted")
        return real_link(a, b)
    real_link = os.link
    monkeypatch.setattr(os, "link", link)
    code, o, err = run_cli(["data", "split", src, out, "--link"])
    assert code == 2 and "Traceback" not in err, err
    assert "linking" in err and "Operation not permitted" in err and calls[2] in err
    assert os.listdir(out) == []  # the two linked files and their folders are gone
    assert sorted(os.listdir(os.path.join(src, "benign"))) == ["0.png", "1.png", "2.png", "3.png"]


@pytest.mark.parametrize("stop", ["ctrl-c", "full disk"])
def test_a_split_stopped_midway_leaves_nothing_in_out(tmp_path, monkeypatch, stop):
    """Ctrl-C during the copies left the files placed so far in OUT without splits.csv (so
    --overwrite refused to clear them: 'not written by data split'), and a full disk left
    the copy it cut short, half written, under its final name."""
    import errno
    import shutil
    src, out = str(tmp_path / "raw"), str(tmp_path / "out")
    _flat(src, 4)
    calls = []

    def copy2(a, b):
        calls.append(b)
        if len(calls) == 4:
            with open(b, "wb") as fh:
                fh.write(b"\x89PNG half")
            if stop == "ctrl-c":
                raise KeyboardInterrupt()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy2(a, b)
    real_copy2 = shutil.copy2
    monkeypatch.setattr(shutil, "copy2", copy2)
    code, o, err = run_cli(["data", "split", src, out])
    assert code == (130 if stop == "ctrl-c" else 2) and "Traceback" not in err, err
    assert "nothing of this split was left in {}".format(out) in err
    assert os.listdir(out) == []
    monkeypatch.setattr(shutil, "copy2", real_copy2)
    code, o, err = run_cli(["data", "split", src, out])
    assert code == 0, err
    assert len(_files(out)) == 8 and len(_rows(out)) == 8


def test_every_file_dropped_still_writes_why(tmp_path):
    """A --max-distance that groups every image drops them all (one image under two
    labels): splits.csv says so, instead of a traceback on OUT/labels.txt."""
    src, out = str(tmp_path / "raw"), str(tmp_path / "out")
    _flat(src, 3)
    code, o, err = run_cli(["data", "split", src, out, "--max-distance", "64"])
    assert code == 0 and "Traceback" not in err, err
    assert "dropped 6 files" in o
    assert {r["split"] for r in _rows(out)} == {"dropped: same image under labels "
                                                "benign/malignant"}


def test_images_outside_the_class_folders_are_named_not_lost_in_silence(tmp_path, tiny_bundle,
                                                                        tiny_data, caplog):
    """An image lying in SRC (or in a split) beside the class folders was left out with no
    word: data split's splits.csv, which records every file, did not list it; data check and
    evaluate said nothing, and evaluate's image count left it out."""
    import shutil
    src, out = str(tmp_path / "raw"), str(tmp_path / "out")
    _flat(src, 3)
    _image(np.random.default_rng(5), os.path.join(src, "loose.png"))
    code, o, err = run_cli(["data", "check", src, "--max-distance", "0"])
    assert code == 0, err
    assert "warning: {}: 1 image file outside the class folders".format(src) in o
    assert "loose.png" in o
    code, o, err = run_cli(["data", "split", src, out])
    assert code == 0, err
    rows = {r["path"]: r["split"] for r in _rows(out)}
    assert rows["loose.png"] == "dropped: not in a class folder"
    split = str(tmp_path / "test")
    shutil.copytree(os.path.join(tiny_data, "test"), split)
    shutil.copy(os.path.join(src, "loose.png"), os.path.join(split, "loose.png"))
    code, o, err = run_cli(["evaluate", "--model-dir", tiny_bundle, split, "--bootstrap", 0,
                            "--out", str(tmp_path / "e")])
    assert code == 0, err
    assert "(9 images)" in o
    assert any("1 image file outside the class folders" in r.getMessage() and
               "loose.png" in r.getMessage() for r in caplog.records)
