"""What train may write into --model-dir: never a folder that holds another model (a
trained one, or an exported bundle) without --overwrite; a --resume of a checkpoint from
another folder neither replaces that folder's model nor splices its history."""
import csv
import os
import shutil

import pytest

from conftest import FAST_TRAIN, run_cli
from oncolens.appliance.bundle import sha256_file as _sha

FAST = list(FAST_TRAIN)


def _epochs(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as fh:
        return [r["epoch"] for r in csv.DictReader(fh)]


def _one_line(code, err):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("two")
    dirs = []
    for name, seed in (("x1", 3), ("x2", 4)):
        model_dir = str(root / name)
        code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1] +
                                 FAST + ["--seed", seed])
        assert code == 0, err
        dirs.append(model_dir)
    return dirs


def test_an_exported_bundle_without_checkpoints_is_not_replaced(two_models, tiny_data,
                                                                tmp_path):
    bundle = str(tmp_path / "deploy")
    os.makedirs(bundle)
    for name in ("model.json", "labels.txt"):
        shutil.copy(os.path.join(two_models[0], name), bundle)
    open(os.path.join(bundle, "simple-cnn.onnx"), "wb").write(b"onnx")
    before = _sha(os.path.join(bundle, "model.json"))
    code, out, err = run_cli(["train", tiny_data, "--model-dir", bundle, "--epochs", 1] + FAST)
    _one_line(code, err)
    assert "already holds model files" in err and "model.json" in err and "--overwrite" in err
    assert _sha(os.path.join(bundle, "model.json")) == before
    assert sorted(os.listdir(bundle)) == ["labels.txt", "model.json", "simple-cnn.onnx"]


def test_resume_from_another_folder(two_models, tiny_data, tmp_path):
    x1, x2 = two_models
    foreign = os.path.join(x2, "checkpoint.pth.tar")
    before = _sha(os.path.join(x1, "model_best.pth.tar"))
    code, out, err = run_cli(["train", tiny_data, "--model-dir", x1, "--epochs", 2,
                              "--resume", foreign] + FAST)
    _one_line(code, err)
    assert "holds another model" in err and x2 in err
    assert _sha(os.path.join(x1, "model_best.pth.tar")) == before
    # into a new folder: allowed, and history.csv goes on from the checkpoint's own run
    x3 = str(tmp_path / "x3")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", x3, "--epochs", 2,
                              "--resume", foreign] + FAST)
    assert code == 0, err
    assert _epochs(x3) == ["1", "2"]
    with open(os.path.join(x2, "history.csv")) as fh:
        first = fh.read().splitlines()[1]
    with open(os.path.join(x3, "history.csv")) as fh:
        assert fh.read().splitlines()[1] == first
    # with --overwrite into x1: x2's run replaces x1's, model_best and history included
    code, out, err = run_cli(["train", tiny_data, "--model-dir", x1, "--epochs", 2,
                              "--resume", foreign, "--overwrite"] + FAST)
    assert code == 0, err
    assert _epochs(x1) == ["1", "2"]
    with open(os.path.join(x1, "history.csv")) as fh:
        assert fh.read().splitlines()[1] == first


def test_model_dir_that_is_a_file(tiny_data, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text(u"x")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", str(afile), "--epochs", 1] +
                             FAST)
    _one_line(code, err)
    assert "--model-dir" in err and "is a file" in err


def test_resume_with_no_epoch_left_brings_the_whole_run_along(tmp_path, tiny_data):
    source, target = str(tmp_path / "m1"), str(tmp_path / "m5")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", source, "--epochs", 2] + FAST)
    assert code == 0, err
    code, out, err = run_cli(["train", tiny_data, "--model-dir", target, "--epochs", 2,
                              "--resume", os.path.join(source, "checkpoint.pth.tar")] + FAST)
    assert code == 0, err
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        assert _sha(os.path.join(target, name)) == _sha(os.path.join(source, name))
    assert _epochs(target) == ["1", "2"]


def test_resume_with_no_better_epoch_keeps_a_current_export(tmp_path, tiny_data):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2] + FAST)
    assert code == 0, err
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir])
    assert code == 0, err
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                              "--resume", os.path.join(model_dir, "checkpoint.pth.tar")] + FAST)
    assert code == 0, err  # no epoch left: model_best is the exported one
    src = os.path.join(tiny_data, "test", "normal")
    code, out, err = run_cli(["classify", "--model", model_dir, "--headless", src])
    assert code == 0, err


def test_evaluate_only_ignores_the_model_dir(tmp_path, tiny_data, monkeypatch):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1] + FAST)
    assert code == 0, err
    monkeypatch.chdir(str(tmp_path))
    (tmp_path / "models").write_text(u"a file where the default --model-dir would go")
    code, out, err = run_cli(["train", tiny_data, "-e", "--resume",
                              os.path.join(model_dir, "checkpoint.pth.tar")] + FAST)
    assert code == 0, err


def test_a_model_dir_inside_the_splits_is_refused(tiny_data, tmp_path):
    """--model-dir DATA/train/benign used to be written: its curves.png then trained as a
    benign image on the next run (and a new folder in train/ reads as a class)."""
    data = str(tmp_path / "data")
    shutil.copytree(tiny_data, data)
    os.remove(os.path.join(data, "labels.txt"))  # DATA's classes: its train/ folders
    listing = {s: sorted(os.listdir(os.path.join(data, s))) for s in ("train", "val", "test")}
    benign = sorted(os.listdir(os.path.join(data, "train", "benign")))
    for inside in (data, os.path.join(data, "train", "benign"), os.path.join(data, "val"),
                   os.path.join(data, "test", "models", "m")):
        code, out, err = run_cli(["train", data, "--model-dir", inside, "--epochs", 1] + FAST)
        _one_line(code, err)
        assert inside in err and "--model-dir" in err
    assert sorted(os.listdir(os.path.join(data, "train", "benign"))) == benign
    assert {s: sorted(os.listdir(os.path.join(data, s))) for s in listing} == listing
    assert "model.json" not in os.listdir(data) and "labels.txt" not in os.listdir(data)
    # beside the splits is fine: nothing reads DATA/models
    code, out, err = run_cli(["train", data, "--model-dir", os.path.join(data, "models"),
                              "--epochs", 1] + FAST)
    assert code == 0, err


def test_a_checkpoint_write_stopped_midway_leaves_the_earlier_files(tmp_path, monkeypatch):
    """Ctrl-C while model_best.pth.tar was being copied left it truncated (the previous best
    lost), and one during torch.save left a checkpoint.pth.tar.tmp as big as the model."""
    import torch
    from oncolens.train import outputs
    model_dir = str(tmp_path)
    outputs.save_checkpoint({"epoch": 1}, model_dir, True)
    before = {"model_best.pth.tar": _sha(os.path.join(model_dir, "model_best.pth.tar"))}

    def half_then_interrupt(data, dst):
        with open(dst, "wb") as fh:
            fh.write(data[:len(data) // 2])
        raise KeyboardInterrupt
    monkeypatch.setattr(outputs.shutil, "copyfile",
                        lambda src, dst: half_then_interrupt(open(src, "rb").read(), dst))
    with pytest.raises(KeyboardInterrupt):
        outputs.save_checkpoint({"epoch": 2}, model_dir, True)
    assert _sha(os.path.join(model_dir, "model_best.pth.tar")) == before["model_best.pth.tar"]
    assert torch.load(os.path.join(model_dir, "checkpoint.pth.tar"))["epoch"] == 2
    monkeypatch.setattr(outputs.torch_module(), "save",
                        lambda state, dst: half_then_interrupt(b"x" * 4096, dst))
    with pytest.raises(KeyboardInterrupt):
        outputs.save_checkpoint({"epoch": 3}, model_dir, False)
    assert torch.load(os.path.join(model_dir, "checkpoint.pth.tar"))["epoch"] == 2
    assert sorted(os.listdir(model_dir)) == ["checkpoint.pth.tar", "model_best.pth.tar"]

