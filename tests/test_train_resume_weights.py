"""What --resume takes from a checkpoint: -e scores the weights it saved, whatever
--ema-epochs says."""
import os
import re

import pytest

from conftest import run_cli

FAST = ["--resolution", 32, "-b", 6, "-j", 0, "--seed", 3, "--no-pretrained",
        "--arch", "simple-cnn"]


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
