"""What model.json's training record says of a model trained in more than one run
(--resume), and what its train_seconds counts across a stop."""
import json
import os

import pytest

from conftest import run_cli

FAST = ["--resolution", 32, "-b", 6, "-j", 0, "--seed", 3, "--no-pretrained",
        "--arch", "simple-cnn"]


def _model_json(model_dir):
    with open(os.path.join(model_dir, "model.json")) as fh:
        return json.load(fh)


def _checkpoint(model_dir):
    import torch
    return torch.load(os.path.join(model_dir, "checkpoint.pth.tar"), map_location="cpu",
                      weights_only=False)


class _Clock(object):
    """The training clock (Schedule's), moved only by the test."""

    def __init__(self, now):
        self.now = now

    def time(self):
        return self.now


def _timed(monkeypatch, clock, epoch_seconds, stop_at=None, save_seconds=0.0):
    """Each epoch takes ``epoch_seconds`` and each checkpoint write ``save_seconds`` on
    ``clock``; the epoch (0-based) ``stop_at`` is cut short by Ctrl-C, once."""
    from oncolens.train import recipe, trainer
    monkeypatch.setattr(recipe, "time", clock)
    train_epoch, save, stops = trainer._train_epoch, trainer.save_checkpoint, [stop_at]

    def epoch(*args):
        result = train_epoch(*args)
        clock.now += epoch_seconds
        if args[7] in stops:
            stops.remove(args[7])
            clock.now += 90.0
            raise KeyboardInterrupt
        return result

    def saved(*args, **kw):
        save(*args, **kw)
        clock.now += save_seconds
    monkeypatch.setattr(trainer, "_train_epoch", epoch)
    monkeypatch.setattr(trainer, "save_checkpoint", saved)


def test_train_seconds_is_the_clock_the_last_checkpoint_saved(tmp_path, tiny_data,
                                                              monkeypatch):
    """train_seconds went on to the end of the loop, the last checkpoint's write included,
    where the checkpoint's clock (what a --resume goes on from) stops before it."""
    clock = _Clock(1000.0)
    _timed(monkeypatch, clock, 10.0, save_seconds=5.0)
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2] +
                             FAST)
    assert code == 0, err
    # epoch 1, its checkpoint, epoch 2 (its validation included); not epoch 2's checkpoint
    assert _model_json(model_dir)["training"]["train_seconds"] == 25.0
    assert _checkpoint(model_dir)["clock"]["train_seconds"] == pytest.approx(25.0)
