"""What --resume takes from a checkpoint: -e scores the weights it saved, whatever
--ema-epochs says."""
import os
import re

import pytest

from conftest import FAST_TRAIN, run_cli

FAST = list(FAST_TRAIN)


@pytest.fixture(scope="module")
def averaged(tmp_path_factory, tiny_data):
    """Three epochs with the weight average on: the saved and the live weights differ."""
    model_dir = str(tmp_path_factory.mktemp("resume_weights") / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 3,
                              "--lr", 0.01] + FAST)
    assert code == 0, err
    return model_dir


def _val_loss(caplog, argv):
    caplog.clear()
    with caplog.at_level("INFO"):
        code, out, err = run_cli(argv)
    assert code == 0, err
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("val loss")]
    assert len(lines) == 1, lines
    return re.match(r"val loss (\S+)", lines[0]).group(1), out


def test_evaluate_scores_the_saved_weights_whatever_ema_epochs(averaged, tiny_data, caplog):
    best = os.path.join(averaged, "model_best.pth.tar")
    argv = ["train", tiny_data, "--model-dir", averaged, "-e", "--resume", best] + FAST
    with_average = _val_loss(caplog, argv)
    raw = _val_loss(caplog, argv + ["--ema-epochs", 0])
    assert raw == with_average  # the same loss and the same printed figures


class _Clock(object):
    def __init__(self, now):
        self.now = now

    def time(self):
        return self.now


def _budget_args(**kw):
    import argparse
    values = dict(schedule="cosine", lr=1e-3, warmup_epochs=1, min_lr_ratio=0.01,
                  epochs=100000, time_limit=1.0)
    values.update(kw)
    return argparse.Namespace(**values)


def test_resumed_time_budget_counts_the_time_trained_and_goes_on_down(monkeypatch):
    from oncolens.train import recipe  # Schedule and the clock it reads
    clock = _Clock(1000.0)
    monkeypatch.setattr(recipe, "time", clock)
    args = _budget_args()
    first = recipe.Schedule(args, 10, 0)
    lrs = []
    for epoch in range(4):  # 4 epochs of 10 steps, a second a step: 40 s of the 60
        for _ in range(10):
            lrs.append(first.next_lr())
            clock.now += 1.0
        assert first.epoch_done(10.0)
    saved = first.state()  # the checkpoint's clock
    clock.now += 5000.0  # killed, and resumed much later in a new process
    resumed = recipe.Schedule(args, 10, 4, saved)
    assert resumed.elapsed() == pytest.approx(40.0)
    assert resumed.next_lr() <= lrs[-1] < 0.9e-3  # the cosine goes on from where it was
    assert resumed.room()
    clock.now += 15.0  # 55 s of 60 trained: no room for another 10 s epoch
    assert not recipe.Schedule(args, 10, 5, resumed.state()).room()


def test_resuming_a_run_that_used_its_budget_trains_no_more(tiny_data, tmp_path):
    import json
    import torch
    model_dir = str(tmp_path / "m")
    budget = FAST + ["--time-limit", 0.01]  # 0.6 s: one or a few epochs, no --epochs
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir] + budget)
    assert code == 0, err
    ckpt = os.path.join(model_dir, "checkpoint.pth.tar")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    with open(os.path.join(model_dir, "history.csv")) as fh:
        before = fh.read()
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--resume", ckpt] +
                             budget)
    assert code == 0, err
    with open(os.path.join(model_dir, "history.csv")) as fh:
        assert fh.read() == before  # no epoch, so no rate back up
    with open(os.path.join(model_dir, "model.json")) as fh:
        training = json.load(fh)["training"]
    assert training["stopped"] == "time-limit"
    assert training["train_seconds"] >= round(saved["clock"]["train_seconds"], 1) > 0


def test_model_json_records_where_the_epochs_began_and_ended(tmp_path, tiny_data):
    """model.json said "epochs": 3 for a --start-epoch 2 run that trained one epoch, and
    "epochs": 1 for a --resume of an epoch-3 checkpoint; SGD's --momentum and --min-lr-ratio
    were not recorded at all."""
    import json
    model_dir = str(tmp_path / "m")
    fast = ["--resolution", 32, "-b", 6, "-j", 0, "--seed", 3, "--no-pretrained", "--arch",
            "simple-cnn", "--optimizer", "sgd", "--lr", 0.01, "--momentum", 0.8]
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--start-epoch", 2,
                              "--epochs", 3, "--min-lr-ratio", 0.1] + fast)
    assert code == 0, err

    def training():
        with open(os.path.join(model_dir, "model.json")) as fh:
            return json.load(fh)["training"]
    first = training()
    assert (first["epochs"], first["start_epoch"], first["last_epoch"]) == (3, 2, 3)
    assert first["momentum"] == 0.8 and first["min_lr_ratio"] == 0.1
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--min-lr-ratio", 0.1, "--resume",
                              os.path.join(model_dir, "checkpoint.pth.tar")] + fast)
    assert code == 0, err
    again = training()
    assert (again["epochs"], again["start_epoch"], again["last_epoch"]) == (1, 2, 3)


def test_resume_counts_the_epochs_since_the_best_towards_patience(tmp_path, tiny_data,
                                                                  monkeypatch):
    """--patience restarted from 0 on --resume: a run stopped (or interrupted) long after its
    best epoch trained --patience more epochs when resumed."""
    import json
    import torch
    from oncolens.train import trainer
    model_dir = str(tmp_path / "m")
    with monkeypatch.context() as patch:  # epoch 1 the best: two epochs without a better one
        patch.setattr(trainer, "_better", lambda summary, loss, best: best["epoch"] < 1)
        code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs",
                                  3] + FAST)
    assert code == 0, err
    ckpt_path = os.path.join(model_dir, "checkpoint.pth.tar")
    assert torch.load(ckpt_path, weights_only=False)["best"]["epoch"] == 1
    resume = ["train", tiny_data, "--model-dir", model_dir, "--epochs", 10, "--resume",
              ckpt_path] + FAST
    code, out, err = run_cli(resume + ["--patience", 2])
    assert code == 0, err
    with open(os.path.join(model_dir, "model.json")) as fh:
        training = json.load(fh)["training"]
    assert training["stopped"] == "patience" and training["last_epoch"] == 3
    assert torch.load(ckpt_path, weights_only=False)["epoch"] == 3
    code, out, err = run_cli(resume + ["--patience", 3, "--epochs", 4])
    assert code == 0, err
    assert torch.load(ckpt_path, weights_only=False)["epoch"] == 4  # one epoch of patience left


def test_evaluate_reads_val_alone(averaged, tiny_data, tmp_path, caplog):
    """-e scores val/ but built the training loader too: it needed a train/ folder (its
    precheck did not) and decoded every training image into the cache first."""
    import shutil
    data = str(tmp_path / "val_only")
    os.makedirs(data)
    shutil.copytree(os.path.join(tiny_data, "val"), os.path.join(data, "val"))
    shutil.copy(os.path.join(tiny_data, "labels.txt"), data)
    ckpt = os.path.join(averaged, "checkpoint.pth.tar")
    whole = _val_loss(caplog, ["train", tiny_data, "-e", "--resume", ckpt] + FAST)
    assert not [r for r in caplog.records if "class weights" in r.getMessage()]
    assert _val_loss(caplog, ["train", data, "-e", "--resume", ckpt] + FAST) == whole
