"""Class folders and labels.txt: data check reports what train refuses, train's message fits
the dataset (no labels.txt named where there is none), data split honours SRC/labels.txt and
says what it leaves out."""
import logging
import os
import shutil

import pytest

from conftest import FAST_TRAIN, run_cli

FAST = FAST_TRAIN + ["--epochs", 1]


def _copy(tiny_data, tmp_path, name="d"):
    data = str(tmp_path / name)
    shutil.copytree(tiny_data, data)
    return data


def _flat(tiny_data, tmp_path, name="raw"):
    raw = str(tmp_path / name)
    for cls in ("benign", "malignant", "normal"):
        shutil.copytree(os.path.join(tiny_data, "train", cls), os.path.join(raw, cls))
    return raw


def test_an_empty_class_folder_is_an_error_in_check_and_train(tiny_data, tmp_path):
    data = _copy(tiny_data, tmp_path)
    os.remove(os.path.join(data, "labels.txt"))
    os.makedirs(os.path.join(data, "train", "atypical"))
    code, out, err = run_cli(["data", "check", data, "--max-distance", "0"])
    assert code == 1, out
    assert "error: train/: no images in class folder(s) atypical" in out, out
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", data, "--model-dir", model_dir] + FAST)
    assert code == 2 and "no images of atypical" in err, err
    assert "labels.txt" not in err and "remove the empty folder" in err, err
    assert os.path.join(data, "train", "atypical") in err


def test_split_warns_about_an_empty_class_folder(tiny_data, tmp_path, caplog):
    raw = _flat(tiny_data, tmp_path)
    os.makedirs(os.path.join(raw, "atypical"))
    caplog.set_level(logging.WARNING)
    code, out, err = run_cli(["data", "check", raw, "--max-distance", "0"])
    assert "warning: {}: class folder(s) atypical hold no images".format(raw) in out, out
    code, out, err = run_cli(["data", "split", raw, str(tmp_path / "out")])
    assert code == 0, err
    assert "class folder(s) atypical hold no files" in caplog.text


def _labels(folder, names):
    with open(os.path.join(folder, "labels.txt"), "w") as fh:
        fh.write("".join(n + "\n" for n in names))


def test_split_honours_the_sources_labels_txt(tiny_data, tmp_path, caplog):
    import csv
    raw = _flat(tiny_data, tmp_path)
    _labels(raw, ["normal", "malignant"])
    out = str(tmp_path / "out")
    caplog.set_level(logging.WARNING)
    code, o, err = run_cli(["data", "split", raw, out])
    assert code == 0, err
    with open(os.path.join(out, "labels.txt")) as fh:
        assert fh.read().split() == ["normal", "malignant"]
    assert "folder(s) benign not in labels.txt" in caplog.text
    assert not os.path.exists(os.path.join(out, "train", "benign"))
    with open(os.path.join(out, "splits.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 18
    assert set(r["split"] for r in rows if r["class"] == "benign") == \
        {"dropped: folder not in labels.txt"}
    assert o.splitlines()[0].split() == ["train", "normal", "4", "malignant", "4"], o
    code, out2, err = run_cli(["data", "check", out, "--max-distance", "0"])
    assert code == 0, out2


def test_split_refuses_a_listed_class_with_no_files(tiny_data, tmp_path):
    raw = _flat(tiny_data, tmp_path)
    _labels(raw, ["benign", "malignant", "normal", "zebra"])
    out = str(tmp_path / "out")
    code, o, err = run_cli(["data", "split", raw, out])
    assert code == 2 and "zebra" in err and "labels.txt" in err, err
    assert len(err.strip().splitlines()) == 1 and not os.path.exists(out)


def test_check_words_a_flat_dataset_for_its_layout(tiny_data, tmp_path):
    raw = _flat(tiny_data, tmp_path)
    first = sorted(os.listdir(os.path.join(raw, "benign")))[0]
    shutil.copy(os.path.join(raw, "benign", first), os.path.join(raw, "benign", "again.png"))
    _labels(raw, ["normal", "malignant", "zebra"])
    code, out, err = run_cli(["data", "check", raw])
    assert "warning: duplicates in benign (identical files): benign/" in out, out
    assert "None" not in out
    assert "folder(s) benign not in labels.txt: data split leaves them out" in out, out
    assert "no images of zebra (labels.txt lists it): data split refuses" in out, out
    assert "train does not use" not in out and "train refuses" not in out, out
    data = _copy(tiny_data, tmp_path)
    shutil.copytree(os.path.join(data, "train", "normal"), os.path.join(data, "train", "other"))
    code, out, err = run_cli(["data", "check", data, "--max-distance", "0"])
    assert "train: folder(s) other not in labels.txt: train does not use their images" in out


@pytest.mark.parametrize("name", [b"caf\xe9", b"nor\nmal", b"normal "])
def test_a_class_folder_name_labels_txt_cannot_hold_is_refused_before_training(
        tiny_data, tmp_path, name):
    """Until 2026-12-07 train ran every epoch, then wrote labels.txt: a Latin-1 name ended in
    a traceback with labels.txt half written and no model.json, a line break split the class
    over two lines, and a trailing space was stripped by every reader of the file."""
    data = _copy(tiny_data, tmp_path)
    os.remove(os.path.join(data, "labels.txt"))
    for split in ("train", "val", "test"):
        os.rename(os.path.join(data, split, "normal").encode(),
                  os.path.join(data, split).encode() + b"/" + name)
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", data, "--model-dir", model_dir] + FAST)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "rename the folder" in err and not os.path.exists(model_dir), err
    code, out, err = run_cli(["data", "check", data, "--max-distance", "0"])
    assert code == 1 and "class folder" in out and "rename the folder" in out, out
    raw = _flat(tiny_data, tmp_path)
    os.rename(os.path.join(raw, "normal").encode(), raw.encode() + b"/" + name)
    code, o, err = run_cli(["data", "split", raw, str(tmp_path / "out")])
    assert code == 2 and "rename the folder" in err and not os.path.exists(str(tmp_path / "out"))
