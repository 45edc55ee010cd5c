"""--resume with no epoch left to train (the checkpoint's epoch is already --epochs) only
writes the bundle, from model_best.pth.tar: where that file was missing, the run failed at
the bundle step with "checkpoint not found", after writing history.csv and the rest. Now a
checkpoint whose own epoch is its best stands in for it, and one that cannot is refused up
front, in one line, with nothing written."""
import json
import os
import shutil

import pytest

from conftest import FAST_TRAIN, run_cli

FAST = list(FAST_TRAIN)


def _load(path):
    import torch
    return torch.load(path, map_location="cpu", weights_only=False)


def _snapshot(folder):
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                found[os.path.relpath(path, folder)] = fh.read()
    return found


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, tiny_data):
    """A run of two epochs whose best is epoch 1 (epoch 2 was no better)."""
    from oncolens.train import trainer
    model_dir = str(tmp_path_factory.mktemp("no_best") / "m")
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(trainer, "_better", lambda summary, loss, best: best["epoch"] < 1)
        code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2]
                                 + FAST)
    finally:
        mp.undo()
    assert code == 0, err
    saved = _load(os.path.join(model_dir, "checkpoint.pth.tar"))
    assert saved["epoch"] == 2 and saved["best"]["epoch"] == 1
    return model_dir


def test_a_checkpoint_whose_epoch_is_its_best_completes_the_bundle(tmp_path, tiny_data):
    """The checkpoint alone, resumed into another folder: it holds its best epoch's weights,
    so model_best.pth.tar is copied from it and the bundle is written."""
    import torch
    first = str(tmp_path / "first")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", first, "--epochs", 1] + FAST)
    assert code == 0, err
    alone = tmp_path / "alone"
    alone.mkdir()
    ckpt = str(alone / "checkpoint.pth.tar")
    shutil.copyfile(os.path.join(first, "checkpoint.pth.tar"), ckpt)
    saved = _load(ckpt)
    assert saved["epoch"] == saved["best"]["epoch"] == 1
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--resume", ckpt] + FAST)
    assert code == 0, err
    kept = _load(os.path.join(model_dir, "model_best.pth.tar"))
    assert kept["epoch"] == 1
    for name, tensor in saved["state_dict"].items():
        assert torch.equal(kept["state_dict"][name], tensor), name
    with open(os.path.join(model_dir, "model.json")) as fh:
        info = json.load(fh)
    assert info["training"]["best_epoch"] == 1
    assert info["metrics"]["val"]["macro_f1"] == pytest.approx(saved["macro_f1"])


@pytest.mark.parametrize("record", ["earlier best", "no best"])
def test_no_model_best_and_no_epoch_left_is_refused_before_anything_is_written(
        tmp_path, tiny_data, two_epochs, record):
    import torch
    model_dir = str(tmp_path / "m")
    shutil.copytree(two_epochs, model_dir)
    best = os.path.join(model_dir, "model_best.pth.tar")
    os.remove(best)
    ckpt = os.path.join(model_dir, "checkpoint.pth.tar")
    if record == "no best":  # as a checkpoint that names no best epoch (jetson-inference's)
        saved = _load(ckpt)
        del saved["best"]
        torch.save(saved, ckpt)
    before = _snapshot(model_dir)
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                              "--resume", ckpt] + FAST)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("oncolens train: error: --resume {}: {} is missing".format(
        ckpt, best)), err
    assert ("its best epoch was 1" if record == "earlier best" else
            "it names no best epoch") in err
    assert "a larger --epochs" in err
    assert _snapshot(model_dir) == before
    # what the line says to do: with an epoch to train, the run chooses its best afresh
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 3,
                              "--resume", ckpt] + FAST)
    assert code == 0, err
    assert _load(best)["epoch"] == 3
    with open(os.path.join(model_dir, "model.json")) as fh:
        assert json.load(fh)["training"]["best_epoch"] == 3


def _spent(tmp_path, two_epochs):
    """two_epochs' folder without its model_best, its checkpoint's clock at 120 s."""
    import torch
    model_dir = str(tmp_path / "m")
    shutil.copytree(two_epochs, model_dir)
    os.remove(os.path.join(model_dir, "model_best.pth.tar"))
    ckpt = os.path.join(model_dir, "checkpoint.pth.tar")
    saved = _load(ckpt)
    saved["clock"] = dict(saved["clock"], train_seconds=120.0)
    torch.save(saved, ckpt)
    return model_dir, ckpt


@pytest.mark.parametrize("flag, spent, enough, said", [
    ("--time-limit", 1, 10, "it has trained 120.0 s, so --time-limit 1 min leaves no room"),
    ("--patience", 1, 2, "it is at epoch 2, 1 epoch after its best, so --patience 1 leaves")])
def test_a_spent_time_limit_or_patience_with_no_model_best_is_refused_up_front(
        tmp_path, tiny_data, two_epochs, flag, spent, enough, said):
    """The stop rule had no epoch left for it, like --epochs: the run trained nothing, then
    failed at the bundle step ("checkpoint not found") after rewriting history.csv (with
    --time-limit), or (with --patience) dropped the best and trained on as if it had
    none. Now refused in one line, naming the flag, before anything is written."""
    model_dir, ckpt = _spent(tmp_path, two_epochs)
    before = _snapshot(model_dir)
    resume = ["train", tiny_data, "--model-dir", model_dir, "--epochs", 3, "--resume",
              ckpt] + FAST
    code, out, err = run_cli(resume + [flag, spent])
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("oncolens train: error: --resume {}: {} is missing".format(
        ckpt, os.path.join(model_dir, "model_best.pth.tar"))), err
    assert said in err and "pass a larger {} to train on".format(flag) in err
    assert _snapshot(model_dir) == before
    code, out, err = run_cli(resume + [flag, enough])  # what the line says to do
    assert code == 0, err
    assert _load(os.path.join(model_dir, "model_best.pth.tar"))["epoch"] == 3


def test_a_spent_time_limit_completes_the_bundle_from_a_checkpoint_at_its_best(
        tmp_path, tiny_data):
    """As with no epoch left by --epochs: the checkpoint holds its best epoch's weights, so
    it stands in for the missing model_best, and no epoch is trained."""
    import torch
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1]
                             + FAST)
    assert code == 0, err
    os.remove(os.path.join(model_dir, "model_best.pth.tar"))
    ckpt = os.path.join(model_dir, "checkpoint.pth.tar")
    saved = _load(ckpt)
    saved["clock"] = dict(saved["clock"], train_seconds=120.0)
    torch.save(saved, ckpt)
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 3,
                              "--resume", ckpt, "--time-limit", 1] + FAST)
    assert code == 0, err
    assert _load(os.path.join(model_dir, "model_best.pth.tar"))["epoch"] == 1
    with open(os.path.join(model_dir, "model.json")) as fh:
        training = json.load(fh)["training"]
    assert (training["best_epoch"], training["last_epoch"], training["stopped"]) == \
        (1, 1, "time-limit")
