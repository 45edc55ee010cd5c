"""Class folders against labels.txt, and unreadable images: train refuses in one line before
it writes anything (warns for folders labels.txt leaves out); data check reports the same."""
import glob
import logging
import os
import shutil

import pytest

from conftest import FAST_TRAIN, run_cli

FAST = FAST_TRAIN + ["--epochs", 1]


def _copy(tiny_data, tmp_path, name):
    data = str(tmp_path / name)
    shutil.copytree(tiny_data, data)
    return data


def _labels(data, names):
    with open(os.path.join(data, "labels.txt"), "w") as fh:
        fh.write("".join(n + "\n" for n in names))


def _refused(code, err, model_dir):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not os.path.exists(model_dir)


def _train(data, tmp_path, *extra):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", data, "--model-dir", model_dir] + FAST + list(extra))
    return code, err, model_dir


@pytest.mark.parametrize("case", ["empty-class", "label-without-folder", "one-class"])
def test_classes_train_cannot_learn_are_refused(tiny_data, tmp_path, case):
    data = _copy(tiny_data, tmp_path, "d")
    if case == "empty-class":
        for path in glob.glob(os.path.join(data, "train", "normal", "*")):
            os.remove(path)
        word = "no images of normal"
    elif case == "label-without-folder":
        _labels(data, ["benign", "malignant", "normal", "zebra"])
        word = "no images of zebra"
    else:
        os.remove(os.path.join(data, "labels.txt"))
        for split in ("train", "val", "test"):
            for cls in ("malignant", "normal"):
                shutil.rmtree(os.path.join(data, split, cls))
        word = "at least 2"
    code, err, model_dir = _train(data, tmp_path)
    _refused(code, err, model_dir)
    assert word in err
    code, out, err = run_cli(["data", "check", data])
    assert code == 1 and word in out, out


def test_folders_not_in_labels_are_a_warning(tiny_data, tmp_path, caplog):
    data = _copy(tiny_data, tmp_path, "d")
    for split in ("train", "val"):
        shutil.copytree(os.path.join(data, split, "normal"), os.path.join(data, split, "other"))
    caplog.set_level(logging.WARNING)
    code, err, model_dir = _train(data, tmp_path)
    assert code == 0, err
    assert "folder(s) other are not in labels.txt" in caplog.text
    code, out, err = run_cli(["data", "check", data, "--max-distance", "0"])
    assert "warning: train: folder(s) other not in labels.txt" in out, out


def test_data_check_of_an_empty_folder_fails(tmp_path):
    empty = tmp_path / "emptydir"
    empty.mkdir()
    code, out, err = run_cli(["data", "check", str(empty)])
    assert code == 1 and "no files found" in out


def test_every_unreadable_image_is_listed_before_one_error(tiny_data, tmp_path, caplog):
    data = _copy(tiny_data, tmp_path, "d")
    open(os.path.join(data, "train", "benign", "zero.png"), "wb").close()
    with open(os.path.join(data, "train", "normal", "garbage.jpg"), "wb") as fh:
        fh.write(b"not an image at all")
    open(os.path.join(data, "val", "malignant", "empty.png"), "wb").close()
    caplog.set_level(logging.ERROR)
    code, err, model_dir = _train(data, tmp_path)
    _refused(code, err, model_dir)
    assert "3 of" in err and "cannot be read" in err
    for name in ("zero.png", "garbage.jpg", "empty.png"):
        assert sum(name in r.getMessage() for r in caplog.records) == 1, name


def test_a_data_loader_workers_error_is_one_line(tiny_data, tmp_path, monkeypatch):
    """An image that goes bad after the check (or a check that is skipped) still ends in
    one line naming the file, not the worker's traceback."""
    from oncolens.train import trainer
    data = _copy(tiny_data, tmp_path, "d")
    bad = os.path.join(data, "val", "benign", "zero.png")
    open(bad, "wb").close()
    monkeypatch.setattr(trainer, "check_images", lambda *a, **k: None)
    model_dir = str(tmp_path / "m")
    workers = [a for a in FAST if a not in ("-j", 0)] + ["-j", 1]
    assert workers.count("-j") == 1
    code, out, err = run_cli(["train", data, "--model-dir", model_dir] + workers)
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert bad in err and "empty file" in err


def test_worker_error_line():
    from oncolens.appliance.errors import ImageReadError
    from oncolens.train.precheck import worker_error_line
    exc = ImageReadError("Caught ImageReadError in DataLoader worker process 0.\n"
                         "Original Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                         "oncolens.appliance.errors.ImageReadError: /d/val/a.png: empty file\n")
    assert worker_error_line(exc) == "/d/val/a.png: empty file"
    assert worker_error_line(ImageReadError("a.png: empty file")) == "a.png: empty file"


def test_image_check_on_threads_lists_bad_files_in_dataset_order(tiny_data, tmp_path, caplog):
    """The decode check runs on several threads; its error lines still follow the dataset's
    order, and every file is decoded (counted here)."""
    import glob
    from oncolens.train import precheck
    from oncolens.appliance.errors import UsageError
    good = sorted(glob.glob(os.path.join(tiny_data, "train", "*", "*.png")))
    bad = []
    for n in range(5):
        path = tmp_path / "bad{}.png".format(n)
        path.write_bytes(b"not a png" * n)
        bad.append(str(path))
    samples = [(p, 0) for p in good[:3] + [bad[0]] + good[3:6] + bad[1:] + good[6:]]
    seen = []
    caplog.set_level(logging.ERROR)
    with pytest.raises(UsageError, match="5 of {} images cannot be read".format(len(samples))):
        precheck.check_images(samples, lambda it: (seen.append(1) or v for v in it), threads=3)
    assert len(seen) == len(samples)          # every verdict went through the progress bar
    named = [r.getMessage().split(":")[0] for r in caplog.records]
    assert named == bad


def _strip(path, width=80000):
    """A real 1 x ``width`` PNG: at 32 px the preprocessing would resize it to 37 x 2.9
    million pixels before its crop, over MAX_RESIZED_PIXELS, so every path refuses it."""
    import numpy as np
    from oncolens.appliance.imageio import write_image
    write_image(path, np.full((1, width, 3), 90, dtype=np.uint8))


def test_an_image_the_models_preprocessing_refuses_is_refused_before_training(
        tiny_data, tmp_path, caplog):
    """A val/ image too elongated for the model's preprocessing (which evaluation and the
    appliance refuse) passed the decode check; the run trained a whole epoch, then ended on
    the validation read with a line that named no file. The image check now refuses it."""
    data = _copy(tiny_data, tmp_path, "d")
    strip = os.path.join(data, "val", "benign", "strip.png")
    _strip(strip)
    caplog.set_level(logging.ERROR)
    code, err, model_dir = _train(data, tmp_path)
    _refused(code, err, model_dir)
    assert strip in err and "less extreme aspect ratio" in err and "2925714x37" in err
