"""model.json follows model_best.pth.tar through a run: a run stopped after a new best epoch
leaves a model.json that describes that epoch's weights (until 2026-12-08 model.json was
written only when a run ended, so a --resume or --overwrite run stopped after a new best left
the earlier model's model.json beside the new model_best, and `export onnx --overwrite`
shipped the new weights under the old epoch's figures)."""
import csv
import json
import os
import signal

from conftest import FAST_TRAIN, run_cli
from oncolens.appliance.bundle import sha256_file as _sha

FAST = list(FAST_TRAIN)


def _model_json(model_dir):
    with open(os.path.join(model_dir, "model.json")) as fh:
        return json.load(fh)


def _history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as fh:
        return {int(r["epoch"]): r for r in csv.DictReader(fh)}


def _every_epoch_best_and_stop_after(monkeypatch, stop_at):
    """Each epoch a new best (so model_best.pth.tar is replaced), Ctrl-C (SIGINT) right
    after epoch ``stop_at``'s checkpoint is written, before model.json is."""
    from oncolens.train import trainer
    real = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "_better", lambda summary, loss, best: True)

    def save(state, *args, **kwargs):
        real(state, *args, **kwargs)
        if state["epoch"] == stop_at:
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(trainer, "save_checkpoint", save)


def _describes_model_best(model_dir, epoch):
    info = _model_json(model_dir)
    best = os.path.join(model_dir, "model_best.pth.tar")
    assert info["checkpoint"]["sha256"] == _sha(best)
    training, row = info["training"], _history(model_dir)[epoch]
    assert training["best_epoch"] == training["last_epoch"] == epoch
    assert training["stopped"] is None and training["runs"][-1]["stopped"] is None
    assert "{:.5f}".format(info["metrics"]["val"]["macro_f1"]) == row["val_macro_f1"]
    assert "{:.5f}".format(info["metrics"]["val"]["loss"]) == row["val_loss"]
    return info


def test_a_resumed_run_stopped_after_a_new_best_leaves_model_json_in_step(
        tiny_data, tmp_path, monkeypatch):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1]
                             + FAST)
    assert code == 0, err
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir])
    assert code == 0, err
    with monkeypatch.context() as patch:
        _every_epoch_best_and_stop_after(patch, 2)
        code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 4,
                                  "--resume", os.path.join(model_dir, "checkpoint.pth.tar")]
                                 + FAST)
    assert code == 130, err
    info = _describes_model_best(model_dir, 2)
    assert "onnx" not in info  # exported from epoch 1's weights: no longer this model's
    assert [run["last_epoch"] for run in info["training"]["runs"]] == [1, 2]
    # the export of the new weights carries their own figures
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--overwrite"])
    assert code == 0, err
    assert _model_json(model_dir)["metrics"] == info["metrics"]


def test_an_overwriting_run_stopped_after_its_first_epoch_leaves_its_own_model_json(
        tiny_data, tmp_path, monkeypatch):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                              "--lr", 0.01] + FAST)
    assert code == 0, err
    with monkeypatch.context() as patch:
        _every_epoch_best_and_stop_after(patch, 1)
        code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 3,
                                  "--overwrite"] + FAST)
    assert code == 130, err
    info = _describes_model_best(model_dir, 1)
    assert info["training"]["lr"] == 1e-3 and info["training"]["epochs"] == 3
    assert len(info["training"]["runs"]) == 1
