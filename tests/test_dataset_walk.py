"""How every command walks a folder of images: hidden files (macOS ``._x.png`` resource
forks, ``.DS_Store``) and OS junk (``Thumbs.db``, ``desktop.ini``) are left out alike by
data check, data split, train, evaluate, classify and batch."""
import os
import shutil

from conftest import run_cli

FAST = ["--resolution", 32, "-b", 6, "-j", 0, "--seed", 3, "--no-pretrained",
        "--arch", "simple-cnn", "--epochs", 1]
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "


def _plant_junk(folder):
    with open(os.path.join(folder, "._x.png"), "wb") as fh:
        fh.write(APPLEDOUBLE)
    with open(os.path.join(folder, ".DS_Store"), "wb") as fh:
        fh.write(b"\x00\x00\x00\x01Bud1")
    for name in ("Thumbs.db", "desktop.ini"):
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(b"\xd0\xcf\x11\xe0 junk")
    hidden = os.path.join(folder, ".ipynb_checkpoints")
    os.makedirs(hidden)
    with open(os.path.join(hidden, "x-checkpoint.png"), "wb") as fh:
        fh.write(APPLEDOUBLE)


def _junk_dataset(tiny_data, tmp_path):
    data = str(tmp_path / "d")
    shutil.copytree(tiny_data, data)
    for split in ("train", "val", "test"):
        _plant_junk(os.path.join(data, split, "benign"))
    return data


def _names(paths):
    return set(os.path.basename(p) for p in paths)


def test_every_walker_leaves_out_hidden_files_and_os_junk(tiny_data, tmp_path):
    from oncolens.appliance.pipeline import iter_image_files
    from oncolens.appliance.sources import list_images
    from oncolens.train.data import list_samples
    from oncolens.train.scan import walk
    data = _junk_dataset(tiny_data, tmp_path)
    junk = {"._x.png", ".DS_Store", "Thumbs.db", "desktop.ini", "x-checkpoint.png"}
    test = os.path.join(data, "test")
    walked = {
        "scan": _names(os.path.join(data, rel) for rel, _, _ in walk(data)),
        "list_samples": _names(p for p, _ in list_samples(test, ["benign", "malignant"])),
        "list_images": _names(p for p, _ in list_images(test, unsupported=True)),
        "iter_image_files": _names(p for p, _ in iter_image_files(test)),
    }
    for name, found in walked.items():
        assert found and not found & junk, (name, found & junk)


def test_data_check_and_train_ignore_hidden_files_and_os_junk(tiny_data, tmp_path):
    data = _junk_dataset(tiny_data, tmp_path)
    code, out, err = run_cli(["data", "check", data, "--max-distance", "-1"])
    assert code == 0, out
    assert "Thumbs.db" not in out and "._x.png" not in out
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", data, "--model-dir", model_dir] + FAST)
    assert code == 0, err
    code, out, err = run_cli(["evaluate", "--model-dir", model_dir, os.path.join(data, "test"),
                              "--bootstrap", 0, "--backend", "torch"])
    assert code == 0, out + err
    assert "unreadable" not in out
