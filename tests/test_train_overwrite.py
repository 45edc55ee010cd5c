"""train --overwrite clears what was derived from the model it replaces (ONNX, engines,
variants, reports), and evaluate never scores an ONNX exported from another checkpoint."""
import json
import logging
import os

import pytest

from conftest import FAST_TRAIN, run_cli

FAST = FAST_TRAIN + ["--epochs", 1]


def _touch(path, text="x"):
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder)
    with open(path, "w") as fh:
        fh.write(text)


@pytest.fixture
def exported(tmp_path, tiny_data):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir] + FAST)
    assert code == 0, err
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir])
    assert code == 0, err
    assert os.path.isfile(os.path.join(model_dir, "simple-cnn.onnx"))
    return model_dir


def test_overwrite_removes_the_previous_models_exports(exported, tiny_data, caplog):
    caplog.set_level(logging.INFO)
    engine = "simple-cnn.onnx.1.1.8201.GPU.FP16.engine"
    derived = [engine, "simple-cnn.onnx.1.1.8201.GPU.INT8.calibration",
               "variants/simple-cnn.0123456789ab.dyn.onnx", "eval-test/report.md",
               "eval-test/roc.png", "selftest/selftest.json"]
    # files of the user's: another network, a backup copy of the export, its engine
    kept = ["notes.txt", "eval-mine/my-notes.txt", "variants-backup/x.onnx", "teacher.onnx",
            "simple-cnn-v1-backup.onnx", "teacher.onnx.1.1.8201.GPU.FP16.engine"]
    for name in derived[1:] + kept:
        _touch(os.path.join(exported, name))
    _touch(os.path.join(exported, engine))
    code, out, err = run_cli(["train", tiny_data, "--model-dir", exported, "--overwrite"] + FAST)
    assert code == 0, err
    for name in derived + ["simple-cnn.onnx"]:
        assert not os.path.exists(os.path.join(exported, name)), name
    for name in ("variants", "eval-test", "selftest"):
        assert not os.path.exists(os.path.join(exported, name)), name
    for name in kept + ["model_best.pth.tar", "model.json", "labels.txt"]:
        assert os.path.exists(os.path.join(exported, name)), name
    assert "--overwrite: removed the previous model's" in caplog.text
    assert "simple-cnn.onnx" in caplog.text and engine in caplog.text


def _evaluate(model_dir, split, tmp_path, *extra):
    json_path = str(tmp_path / "e.json")
    code, out, err = run_cli(["evaluate", "--model-dir", model_dir, split, "--json", json_path,
                              "--overwrite", "--bootstrap", 0, "--out", str(tmp_path / "ev")] +
                             list(extra))
    report = json.load(open(json_path)) if code == 0 else None
    return code, err, report


def test_evaluate_does_not_score_an_onnx_of_an_earlier_checkpoint(exported, tiny_data, tmp_path,
                                                                 caplog):
    split = os.path.join(tiny_data, "test")
    code, err, report = _evaluate(exported, split, tmp_path)
    assert code == 0 and "appliance" in report["runner"], err
    ckpt = os.path.join(exported, "checkpoint.pth.tar")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", exported, "--resume", ckpt] +
                             FAST[:-1] + [2])
    assert code == 0, err
    assert "exported from the model before this run" in caplog.text
    caplog.clear()
    code, err, report = _evaluate(exported, split, tmp_path)
    assert code == 0, err
    assert report["runner"] == "torch checkpoint"
    assert "simple-cnn.onnx is stale" in caplog.text and "oncolens export onnx" in caplog.text
    code, err, report = _evaluate(exported, split, tmp_path, "--backend", "onnxruntime")
    assert code == 2 and "stale" in err and len(err.strip().splitlines()) == 1, err
    code, out, err = run_cli(["export", "onnx", "--model-dir", exported, "--overwrite"])
    assert code == 0, err
    code, err, report = _evaluate(exported, split, tmp_path)
    assert code == 0 and "appliance" in report["runner"], err


def test_stale_onnx_is_found_by_the_checkpoints_checksum(exported):
    from oncolens.appliance.bundle import read_model_info, write_model_info
    from oncolens.train.evaluate import stale_onnx
    path = os.path.join(exported, "model.json")
    info = read_model_info(path)
    assert stale_onnx(exported, info) == (os.path.join(exported, "simple-cnn.onnx"), None)
    info["onnx"]["checkpoint_sha256"] = "0" * 64  # another checkpoint was exported
    write_model_info(path, info)
    onnx, why = stale_onnx(exported, read_model_info(path))
    assert "earlier model_best.pth.tar" in why


def test_resume_warns_about_an_onnx_exported_into_a_sub_folder(tmp_path, tiny_data, caplog):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir] + FAST)
    assert code == 0, err
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--output",
                              os.path.join(model_dir, "onnx", "model.onnx")])
    assert code == 0, err
    caplog.set_level(logging.WARNING)
    resume = os.path.join(model_dir, "checkpoint.pth.tar")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--resume", resume]
                             + FAST[:-1] + [2])
    assert code == 0, err
    assert any("onnx/model.onnx" in r.getMessage() and "re-export" in r.getMessage()
               for r in caplog.records)
