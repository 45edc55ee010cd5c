"""fp16 on CUDA: the GradScaler's state is saved in each checkpoint and a --resume goes on
from it (it started the scale over). No GPU here: a scaler that keeps a state of its own
stands in for torch's (the same calls: scale, step, update, state_dict, load_state_dict)."""
import os

import pytest

from conftest import FAST_TRAIN, run_cli

FAST = FAST_TRAIN + ["--lr", 0.01]


class _Scaler(object):
    made = []

    def __init__(self):
        self.state = {"scale": 1024.0, "_growth_tracker": 0}
        self.loaded = []
        _Scaler.made.append(self)

    def scale(self, loss):
        return loss

    def step(self, optimizer):
        optimizer.step()

    def update(self):
        self.state["_growth_tracker"] += 1

    def get_scale(self):
        return self.state["scale"]

    def state_dict(self):
        return dict(self.state)

    def load_state_dict(self, state):
        self.loaded.append(dict(state))
        self.state = dict(state)


@pytest.fixture
def scaled(monkeypatch):
    from oncolens.train import trainer
    real = trainer.make_runtime

    def make_runtime(*args):
        runtime = real(*args)
        runtime.scaler = _Scaler()
        return runtime
    del _Scaler.made[:]
    monkeypatch.setattr(trainer, "make_runtime", make_runtime)
    return _Scaler.made


def _checkpoint(model_dir):
    import torch
    path = os.path.join(model_dir, "checkpoint.pth.tar")
    return path, torch.load(path, map_location="cpu", weights_only=False)


def test_the_scaler_state_is_saved_and_a_resume_goes_on_from_it(tmp_path, tiny_data, scaled):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1]
                             + FAST)
    assert code == 0, err
    path, ckpt = _checkpoint(model_dir)
    saved = ckpt["scaler"]
    assert saved["scale"] == 1024.0 and saved["_growth_tracker"] == 3  # 18 images, -b 6
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                              "--resume", path] + FAST)
    assert code == 0, err
    assert scaled[-1].loaded == [saved]
    assert _checkpoint(model_dir)[1]["scaler"]["_growth_tracker"] == 6


def test_a_checkpoint_without_a_scaler_state_starts_it_afresh(tmp_path, tiny_data, scaled):
    import torch
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1]
                             + FAST)
    assert code == 0, err
    path, ckpt = _checkpoint(model_dir)
    del ckpt["scaler"]          # as a checkpoint made before it was saved
    torch.save(ckpt, path)
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                              "--resume", path] + FAST)
    assert code == 0, err
    assert scaled[-1].loaded == []
    assert _checkpoint(model_dir)[1]["scaler"]["_growth_tracker"] == 3


def test_a_run_without_a_scaler_saves_none(tmp_path, tiny_data):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1]
                             + FAST)
    assert code == 0, err
    assert "scaler" not in _checkpoint(model_dir)[1]
