"""Which layout a dataset folder is read as: a flat dataset may have a class named train, val
or test (its folder holds images, not class folders); data check, data split and train read
it alike and say which reading they took."""
import os
import shutil

from conftest import FAST_TRAIN, run_cli

FAST = FAST_TRAIN + ["--epochs", 1]


def _flat(tiny_data, tmp_path, names=("benign", "malignant", "test")):
    """A flat dataset whose class folders are ``names`` (the synthetic classes' images)."""
    raw = str(tmp_path / "raw")
    for cls, name in zip(("benign", "malignant", "normal"), names):
        shutil.copytree(os.path.join(tiny_data, "train", cls), os.path.join(raw, name))
    return raw


def test_a_class_named_test_is_a_class_of_a_flat_dataset(tiny_data, tmp_path):
    raw = _flat(tiny_data, tmp_path)
    code, out, err = run_cli(["data", "check", raw, "--max-distance", "0"])
    assert code == 0, out
    assert "classes benign, malignant, test" in out and "(flat) benign 6" in out, out
    assert "test/ holds images and no class folders, so it is a class" in out, out
    out_dir = str(tmp_path / "out")
    code, o, err = run_cli(["data", "split", raw, out_dir])
    assert code == 0, err
    with open(os.path.join(out_dir, "labels.txt")) as fh:
        assert fh.read().split() == ["benign", "malignant", "test"]
    assert os.listdir(os.path.join(out_dir, "train", "test"))


def test_classes_named_train_and_val_read_flat_and_train_refuses_it(tiny_data, tmp_path):
    raw = _flat(tiny_data, tmp_path, ("benign", "train", "val"))
    code, out, err = run_cli(["data", "check", raw, "--max-distance", "0"])
    assert code == 0 and "classes benign, train, val" in out, out
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", raw, "--model-dir", model_dir] + FAST)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "train/, val/ hold images and no class folders" in err, err
    assert "oncolens data split {} OUT".format(raw) in err and not os.path.exists(model_dir)


def test_train_on_a_plain_flat_dataset_says_to_split_it(tiny_data, tmp_path):
    raw = _flat(tiny_data, tmp_path, ("benign", "malignant", "normal"))
    code, out, err = run_cli(["train", raw, "--model-dir", str(tmp_path / "m")] + FAST)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "a flat dataset of class folders (benign/, malignant/, normal/)" in err, err
    assert "oncolens data split" in err, err


def test_images_beside_the_split_folders_are_said_to_be_unread(tiny_data, tmp_path, caplog):
    data = str(tmp_path / "d")
    shutil.copytree(tiny_data, data)
    shutil.copytree(os.path.join(tiny_data, "train", "benign"), os.path.join(data, "extra"))
    code, out, err = run_cli(["data", "check", data, "--max-distance", "0"])
    assert "extra/ holds images but is not train/, val/ or test/: no command reads it" in out
    assert "classes benign, malignant, normal" in out, out
    model_dir = os.path.join(data, "models")  # a model folder inside DATA is not warned about
    code, out, err = run_cli(["train", data, "--model-dir", model_dir] + FAST)
    assert code == 0, err
    assert "extra/ holds images" in caplog.text, caplog.text
    code, out, err = run_cli(["data", "check", data, "--max-distance", "0"])
    assert "models/" not in out, out


def test_empty_split_folders_are_still_a_split_layout(tmp_path):
    from oncolens.train.scan import read_layout
    data = tmp_path / "d"
    (data / "train").mkdir(parents=True)
    (data / "val").mkdir()
    assert read_layout(str(data)) == ("split", ["train", "val"], None)
