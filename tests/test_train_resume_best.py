"""A run stopped between the two checkpoint writes (checkpoint.pth.tar, then
model_best.pth.tar) left a checkpoint whose best epoch was not the model_best on disk; a
--resume believed the checkpoint, and model.json then gave the figures of one epoch for the
weights of another (or the run crashed on the missing model_best)."""
import json
import os

import pytest

from conftest import FAST_TRAIN, run_cli

FAST = list(FAST_TRAIN)


def _load(path):
    import torch
    return torch.load(path, map_location="cpu", weights_only=False)


def _interrupted_at_best_write(monkeypatch, tiny_data, model_dir, nth, epochs):
    """Train with every epoch the best, stopped (Ctrl-C) during the ``nth`` model_best write,
    after that epoch's checkpoint.pth.tar was in place."""
    from oncolens.train import outputs, trainer
    real, writes = outputs._replace, []

    def replace(path, write):
        if path.endswith("model_best.pth.tar"):
            writes.append(path)
            if len(writes) == nth:
                raise KeyboardInterrupt
        return real(path, write)
    with monkeypatch.context() as patch:
        patch.setattr(outputs, "_replace", replace)
        patch.setattr(trainer, "_better", lambda summary, loss, best: True)
        code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs",
                                  epochs] + FAST)
    assert code == 130, err
    return os.path.join(model_dir, "checkpoint.pth.tar"), os.path.join(model_dir,
                                                                       "model_best.pth.tar")


@pytest.mark.parametrize("nth", [1, 2])
def test_resume_finishes_the_model_best_write_a_stop_cut_off(tmp_path, tiny_data, monkeypatch,
                                                            caplog, nth):
    import torch
    model_dir = str(tmp_path / "m")
    ckpt, best = _interrupted_at_best_write(monkeypatch, tiny_data, model_dir, nth, 3)
    saved = _load(ckpt)
    assert saved["epoch"] == nth and saved["best"]["epoch"] == nth
    # the pair as the stop left it: no model_best yet, or the previous epoch's
    assert (_load(best)["epoch"] if os.path.isfile(best) else None) == (nth - 1 or None)
    with caplog.at_level("WARNING"):  # no epoch left: only the bundle is written
        code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", nth,
                                  "--resume", ckpt] + FAST)
    assert code == 0, err
    assert any("model_best.pth.tar" in r.getMessage() and "copied from the checkpoint" in
               r.getMessage() for r in caplog.records), caplog.text
    kept = _load(best)
    assert kept["epoch"] == nth
    for name, tensor in saved["state_dict"].items():
        assert torch.equal(kept["state_dict"][name], tensor), name
    with open(os.path.join(model_dir, "model.json")) as fh:
        info = json.load(fh)
    assert info["training"]["best_epoch"] == nth
    assert info["metrics"]["val"]["macro_f1"] == pytest.approx(kept["macro_f1"])


def test_resume_believes_the_model_best_on_disk_over_the_checkpoints_word(
        tmp_path, tiny_data, monkeypatch, caplog):
    """A model_best of another epoch than the checkpoint's best, which the write order cannot
    leave (one put back by hand): said, and its own epoch and figures go on."""
    from oncolens.train import trainer
    model_dir = str(tmp_path / "m")
    with monkeypatch.context() as patch:  # epoch 1 the best, epochs 2 and 3 not
        patch.setattr(trainer, "_better", lambda summary, loss, best: best["epoch"] < 1)
        code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 3] +
                                 FAST)
    assert code == 0, err
    ckpt = os.path.join(model_dir, "checkpoint.pth.tar")
    import torch
    saved = _load(ckpt)
    saved["best"]["epoch"] = 2
    torch.save(saved, ckpt)
    with caplog.at_level("WARNING"):
        code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 3,
                                  "--resume", ckpt] + FAST)
    assert code == 0, err
    assert "model_best.pth.tar holds epoch 1, not epoch 2" in caplog.text
    with open(os.path.join(model_dir, "model.json")) as fh:
        info = json.load(fh)
    best = _load(os.path.join(model_dir, "model_best.pth.tar"))
    assert info["training"]["best_epoch"] == best["epoch"] == 1
    assert info["metrics"]["val"]["loss"] == pytest.approx(best["loss"])
