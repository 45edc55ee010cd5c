"""A seeded run stopped after an epoch and resumed trains as the same run left alone: the
same data order, augmentation and dropout in each epoch (until 2026-12-08 the resumed run
replayed the first epochs' order and augmentation, its random streams started afresh)."""
import csv
import os

import pytest

from conftest import run_cli

FAST = ["--resolution", 32, "-b", 6, "--seed", 3, "--no-pretrained", "--arch", "simple-cnn",
        "--epochs", 3, "--lr", 0.01]


def _history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as fh:
        return [(r["epoch"], r["lr"], r["train_loss"], r["val_loss"]) for r in
                csv.DictReader(fh)]


def _weights(path):
    import torch
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _stop_after_first_epoch(monkeypatch):
    from oncolens.train import trainer
    real = trainer.save_checkpoint

    def save(state, *args, **kwargs):
        real(state, *args, **kwargs)
        if state["epoch"] == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(trainer, "save_checkpoint", save)


@pytest.mark.parametrize("workers,sampler", [(0, "shuffle"), (1, "shuffle"), (0, "weighted")])
def test_a_resumed_seeded_run_is_the_uninterrupted_one(tiny_data, tmp_path, monkeypatch,
                                                       workers, sampler):
    import torch
    argv = FAST + ["-j", workers, "--sampler", sampler]
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", whole] + argv)
    assert code == 0, err
    with monkeypatch.context() as patch:
        _stop_after_first_epoch(patch)
        code, out, err = run_cli(["train", tiny_data, "--model-dir", parts] + argv)
    assert code == 130, err
    code, out, err = run_cli(["train", tiny_data, "--model-dir", parts, "--resume",
                              os.path.join(parts, "checkpoint.pth.tar")] + argv)
    assert code == 0, err
    assert _history(parts) == _history(whole)
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        a, b = _weights(os.path.join(whole, name)), _weights(os.path.join(parts, name))
        assert sorted(a) == sorted(b)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_a_seeded_run_is_the_same_whatever_the_number_of_workers(tiny_data, tmp_path):
    """Each image's augmentation comes from its own stream, not its worker's."""
    runs = []
    for workers in (0, 2):
        model_dir = str(tmp_path / "j{}".format(workers))
        code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "-j", workers]
                                 + FAST)
        assert code == 0, err
        runs.append(_history(model_dir))
    assert runs[0] == runs[1]
