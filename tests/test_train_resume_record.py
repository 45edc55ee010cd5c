"""What model.json's training record says of a model trained in more than one run
(--resume), and what its train_seconds counts across a stop."""
import json
import os

import pytest

from conftest import FAST_TRAIN, run_cli

FAST = list(FAST_TRAIN)


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


def test_model_json_lists_each_run_with_its_own_recipe(tmp_path, tiny_data):
    """model.json held the last run's flags alone: a model trained at --lr 1e-3, then resumed
    at --lr 5e-4, said --lr 5e-4 throughout."""
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                              "--lr", 0.001] + FAST)
    assert code == 0, err
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 4,
                              "--lr", 0.0005, "--wd", 0.01, "--resume",
                              os.path.join(model_dir, "checkpoint.pth.tar")] + FAST)
    assert code == 0, err
    training = _model_json(model_dir)["training"]
    # the existing keys keep saying what they said: the last run's flags, the model's epochs
    assert (training["lr"], training["weight_decay"], training["epochs"]) == (0.0005, 0.01, 4)
    assert (training["start_epoch"], training["last_epoch"]) == (0, 4)
    first, second = training["runs"]
    assert (first["start_epoch"], first["last_epoch"], first["stopped"]) == (0, 2, "epochs")
    assert (second["start_epoch"], second["last_epoch"], second["stopped"]) == (2, 4, "epochs")
    assert (first["recipe"]["lr"], first["recipe"]["weight_decay"]) == (0.001, 0.05)
    assert (second["recipe"]["lr"], second["recipe"]["weight_decay"]) == (0.0005, 0.01)
    assert first["recipe"]["epochs"] == 2 and second["recipe"]["epochs"] == 4
    for run in (first, second):
        assert run["started"] <= run["ended"] and run["oncolens_version"]
        assert run["runtime"] == training["runtime"]
    assert second["started"] >= first["ended"]
    assert sum(r["train_seconds"] for r in training["runs"]) == \
        pytest.approx(training["train_seconds"], abs=0.11)
    # the checkpoint carries the list on to the next --resume
    assert [r["recipe"] for r in _checkpoint(model_dir)["runs"]] == \
        [r["recipe"] for r in training["runs"]]


def test_a_checkpoint_from_before_the_list_counts_as_one_run_without_a_recipe(tmp_path,
                                                                             tiny_data):
    import torch
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1] +
                             FAST)
    assert code == 0, err
    ckpt = _checkpoint(model_dir)
    del ckpt["runs"]  # as every checkpoint made before 2026-12-07
    path = os.path.join(model_dir, "checkpoint.pth.tar")
    torch.save(ckpt, path)
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                              "--resume", path] + FAST)
    assert code == 0, err
    earlier, this = _model_json(model_dir)["training"]["runs"]
    assert (earlier["last_epoch"], earlier["recipe"], earlier["stopped"]) == (1, None, None)
    assert earlier["train_seconds"] == round(ckpt["clock"]["train_seconds"], 1)
    assert (this["start_epoch"], this["last_epoch"], this["stopped"]) == (1, 2, "epochs")


def test_an_interrupted_run_is_listed_to_its_last_finished_epoch(tmp_path, tiny_data,
                                                                 monkeypatch):
    """The epoch a Ctrl-C cut short kept nothing and is not counted in train_seconds; the
    run it ended is listed up to its last finished epoch, with "stopped": null."""
    clock = _Clock(1000.0)
    _timed(monkeypatch, clock, 10.0, stop_at=2)  # the third epoch: 100 s, then Ctrl-C
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 4] +
                             FAST)
    assert code == 130, err
    saved = _checkpoint(model_dir)
    assert saved["epoch"] == 2 and saved["clock"]["train_seconds"] == pytest.approx(20.0)
    clock.now += 5000.0  # resumed later
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 4,
                              "--resume", os.path.join(model_dir, "checkpoint.pth.tar")] +
                             FAST)
    assert code == 0, err
    training = _model_json(model_dir)["training"]
    assert training["train_seconds"] == 40.0
    assert [(r["start_epoch"], r["last_epoch"], r["train_seconds"], r["stopped"])
            for r in training["runs"]] == [(0, 2, 20.0, None), (2, 4, 20.0, "epochs")]


def test_runs_say_why_each_stopped_and_a_resume_with_no_epoch_left(tmp_path, tiny_data,
                                                                   monkeypatch):
    from oncolens.train import trainer
    model_dir = str(tmp_path / "m")
    with monkeypatch.context() as patch:  # epoch 1 the best, no better one after it
        patch.setattr(trainer, "_better", lambda summary, loss, best: best["epoch"] < 1)
        code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs",
                                  5, "--patience", 1] + FAST)
    assert code == 0, err
    path = os.path.join(model_dir, "checkpoint.pth.tar")
    assert _checkpoint(model_dir)["runs"][-1]["stopped"] == "patience"
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                              "--resume", path] + FAST)
    assert code == 0, err
    training = _model_json(model_dir)["training"]
    assert [(r["start_epoch"], r["last_epoch"], r["stopped"], r["recipe"]["patience"])
            for r in training["runs"]] == [(0, 2, "patience", 1), (2, 2, "epochs", 0)]
    assert training["runs"][1]["train_seconds"] == 0.0
    assert training["stopped"] == "epochs"


def test_a_run_stopped_by_its_time_limit_says_so_in_the_checkpoint(tmp_path, tiny_data,
                                                                   monkeypatch):
    clock = _Clock(1000.0)
    _timed(monkeypatch, clock, 10.0)  # a 30 s budget holds three 10 s epochs
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--time-limit",
                              0.5] + FAST)
    assert code == 0, err
    training = _model_json(model_dir)["training"]
    assert (training["stopped"], training["last_epoch"], training["train_seconds"]) == \
        ("time-limit", 3, 30.0)
    assert [(r["last_epoch"], r["stopped"]) for r in _checkpoint(model_dir)["runs"]] == \
        [(3, "time-limit")]
    assert training["runs"][0]["recipe"]["epochs"] is None  # as many as the budget held
