"""--final-fit: train/ and val/ trained on together, the last epoch kept, no val figures."""
import csv
import json
import os

import pytest

from conftest import FAST_TRAIN, run_cli

torch = pytest.importorskip("torch")

FAST = list(FAST_TRAIN)


def _read(model_dir):
    with open(os.path.join(model_dir, "model.json")) as fh:
        info = json.load(fh)
    with open(os.path.join(model_dir, "history.csv")) as fh:
        rows = list(csv.DictReader(fh))
    return info, rows


def test_final_fit_trains_on_train_and_val_and_keeps_the_last_epoch(tmp_path, tiny_data):
    held = str(tmp_path / "held")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", held, "--epochs", 2] + FAST)
    assert code == 0, err
    info, rows = _read(held)
    assert info["training"]["train_images"] == 18 and not info["training"]["final_fit"]
    assert info["metrics"]["val"]["macro_f1"] == pytest.approx(
        max(float(r["val_macro_f1"]) for r in rows), abs=1e-5)

    model_dir = str(tmp_path / "final")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 3,
                              "--final-fit"] + FAST)
    assert code == 0, err
    assert "trained on train/ and val/ for 3 epochs" in out
    info, rows = _read(model_dir)
    assert info["training"]["train_images"] == 27  # 18 train + 9 val images
    assert info["training"]["final_fit"] is True and info["training"]["best_epoch"] == 3
    assert info["metrics"] == {"val": None, "fit_on": ["train", "val"]}
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert all(r["val_loss"] == r["val_macro_f1"] == "" and r["best"] == "1" for r in rows)
    assert os.path.isfile(os.path.join(model_dir, "curves.png"))
    last = torch.load(os.path.join(model_dir, "checkpoint.pth.tar"), weights_only=False)
    best = torch.load(os.path.join(model_dir, "model_best.pth.tar"), weights_only=False)
    assert last["epoch"] == best["epoch"] == 3 and last["final_fit"] is True
    for key, value in last["state_dict"].items():
        assert torch.equal(value, best["state_dict"][key]), key
    # the model is scored on the split it has not seen, and exports like any other
    report = str(tmp_path / "test.json")
    code, out, err = run_cli(["evaluate", "--model-dir", model_dir,
                              os.path.join(tiny_data, "test"), "--out", str(tmp_path / "ev"),
                              "--json", report])
    assert code == 0, err
    with open(report) as fh:
        scored = json.load(fh)
    assert sum(sum(row) for row in scored["confusion_matrix"]) == 9
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir])
    assert code == 0, err
    # -e of it says why it cannot score val/ (it said "resume it the same way", which -e
    # with --final-fit then refused)
    code, out, err = run_cli(["train", tiny_data, "-e", "--resume",
                              os.path.join(model_dir, "checkpoint.pth.tar")] + FAST)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "-e/--evaluate scores val/" in err and "oncolens evaluate" in err


@pytest.mark.parametrize("extra,flag", [(["--patience", 2], "--patience"),
                                        (["--evaluate"], "--evaluate")])
def test_final_fit_refuses_what_needs_val(tmp_path, tiny_data, extra, flag):
    code, out, err = run_cli(["train", tiny_data, "--model-dir", str(tmp_path / "m"),
                              "--epochs", 2, "--final-fit"] + extra + FAST)
    assert code == 2
    assert err.strip().startswith("oncolens train: error: " + flag) and "--final-fit" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not os.path.exists(str(tmp_path / "m" / "model_best.pth.tar"))


def test_resume_keeps_the_mode_of_the_run(tmp_path, tiny_data):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1] +
                             FAST)
    assert code == 0, err
    ckpt = os.path.join(model_dir, "checkpoint.pth.tar")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                              "--resume", ckpt, "--final-fit"] + FAST)
    assert code == 2 and "not made with --final-fit" in err
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                              "--resume", ckpt] + FAST)
    assert code == 0, err
