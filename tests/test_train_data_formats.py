"""Image formats train and evaluate cannot read (.gif, .heic ...) are named like any other
unreadable image, as batch and classify name them: never left out in silence."""
import logging
import os
import shutil

from conftest import FAST_TRAIN, run_cli

FAST = FAST_TRAIN + ["--epochs", 1]


def _copy(tiny_data, tmp_path):
    data = str(tmp_path / "d")
    shutil.copytree(tiny_data, data)
    return data


def _gif(folder, name="scan.gif"):
    first = sorted(os.listdir(folder))[0]
    shutil.copy(os.path.join(folder, first), os.path.join(folder, name))
    return os.path.join(folder, name)


def test_train_refuses_an_unsupported_format_naming_it(tiny_data, tmp_path, caplog):
    data = _copy(tiny_data, tmp_path)
    gif = _gif(os.path.join(data, "train", "benign"))
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", data, "--model-dir", model_dir] + FAST)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and gif in err and ".gif" in err, err
    assert not os.path.exists(model_dir)
    heic = _gif(os.path.join(data, "val", "normal"), "scan.HEIC")
    caplog.set_level(logging.ERROR)
    code, out, err = run_cli(["train", data, "--model-dir", model_dir] + FAST)
    assert code == 2 and "2 of" in err and "cannot be read" in err, err
    for path, ext in ((gif, ".gif"), (heic, ".heic")):
        assert any(path in r.getMessage() and "unsupported image format " + ext in
                   r.getMessage() for r in caplog.records), (path, caplog.text)


def test_evaluate_lists_an_unsupported_format_and_exits_1(tiny_bundle, tiny_data, tmp_path):
    split = str(tmp_path / "test")
    shutil.copytree(os.path.join(tiny_data, "test"), split)
    gif = _gif(os.path.join(split, "benign"))
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, split, "--bootstrap", 0,
                              "--out", str(tmp_path / "ev")])
    assert code == 1, out + err
    assert "unreadable: {}".format(gif) in out and "unsupported image format .gif" in out, out
    assert "(9 images)" in out  # the figures leave it out, and say how many they used


def test_data_check_names_the_unsupported_format(tiny_data, tmp_path):
    data = _copy(tiny_data, tmp_path)
    _gif(os.path.join(data, "train", "benign"))
    code, out, err = run_cli(["data", "check", data, "--max-distance", "0"])
    assert code == 1
    assert "error: train/benign/scan.gif: unsupported image format .gif" in out, out
