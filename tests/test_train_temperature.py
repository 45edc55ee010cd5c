"""Temperature scaling (--calibrate): fitted on val/, folded into model_best's last layer."""
import json
import os

import numpy as np
import pytest

from conftest import FAST_TRAIN, run_cli

torch = pytest.importorskip("torch")

from oncolens.appliance.archs import build_model  # noqa: E402
from oncolens.train.temperature import (  # noqa: E402
    degenerate, fit_temperature, fold_temperature, nll, output_layer, softmax,
    unscaled_state_dict, without_temperature)

FAST = list(FAST_TRAIN)


def _draw(true_temperature, n=4000, seed=0):
    """Logits, and labels drawn from softmax(logits / true_temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, 3))
    probs = softmax(logits / true_temperature)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_finds_the_temperature_the_labels_were_drawn_with(true_temperature):
    logits, labels = _draw(true_temperature)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    for other in (fitted * 0.9, fitted * 1.1, 1.0):  # a minimum, and better than no scaling
        assert nll(logits, labels, fitted) <= nll(logits, labels, other)


def test_fit_keeps_one_when_no_temperature_helps():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    labels = np.array([0, 1, 2, 1])  # three right, one wrong: some T beats 1 ...
    assert fit_temperature(logits, labels) != 1.0
    logits, labels = _draw(1.0, n=20000, seed=1)  # ... but not when T = 1 drew the labels
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.05)


def test_a_flawless_val_split_fits_no_temperature():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    labels = np.array([0, 1, 2])
    fitted = fit_temperature(logits, labels)  # every confidence pushed towards 1
    assert fitted < 0.06
    assert "without an error" in degenerate(logits, labels, fitted)
    logits, labels = _draw(2.5)
    assert degenerate(logits, labels, fit_temperature(logits, labels)) is None


def test_the_raw_probabilities_come_back_from_the_scaled_ones():
    logits, _ = _draw(1.0, n=50)
    scaled = softmax(logits / 1.7).astype(np.float32)  # as an fp32 ONNX output gives them
    np.testing.assert_allclose(without_temperature(scaled, 1.7), softmax(logits), atol=1e-5)
    assert np.array_equal(without_temperature(scaled, 1.0), scaled.astype(np.float64))


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_lite0", "simple-cnn"])
def test_folding_divides_the_outputs_and_the_checkpoint_gives_them_back(arch):
    torch.manual_seed(0)
    model = build_model(arch, 3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    name, layer = output_layer(model)
    assert layer.out_features == 3
    fold_temperature(layer, 2.0)
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after, before / 2.0, rtol=1e-4, atol=1e-5)
    assert torch.equal(after.argmax(1), before.argmax(1))
    ckpt = {"state_dict": model.state_dict(), "temperature": 2.0, "temperature_layer": name}
    fresh = build_model(arch, 3).eval()
    fresh.load_state_dict(unscaled_state_dict(ckpt))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), before, rtol=1e-4, atol=1e-5)


def _load(model_dir, name):
    return torch.load(os.path.join(model_dir, name), weights_only=False)


def test_training_folds_the_val_temperature_into_model_best(tmp_path, tiny_data):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--calibrate"] + FAST)
    assert code == 0, err
    with open(os.path.join(model_dir, "model.json")) as fh:
        record = json.load(fh)["training"]["calibration"]
    assert record["fitted"] is True and record["fitted_on"] == "val" and record["images"] == 9
    assert record["layer"] == "fc" and record["val_nll"][1] <= record["val_nll"][0]
    temperature = record["temperature"]
    # one epoch: the best is the last, so model_best is checkpoint.pth.tar with fc / T
    last, best = _load(model_dir, "checkpoint.pth.tar"), _load(model_dir, "model_best.pth.tar")
    assert best["temperature"] == pytest.approx(temperature, rel=1e-3)
    for key, value in last["state_dict"].items():
        expected = value / best["temperature"] if key.startswith("fc.") else value
        torch.testing.assert_close(best["state_dict"][key], expected, msg=key)
    # what evaluate reports: the deployed ECE, and the ECE before the temperature
    report = str(tmp_path / "val.json")
    code, out, err = run_cli(["evaluate", "--model-dir", model_dir, os.path.join(tiny_data, "val"),
                              "--out", str(tmp_path / "ev"), "--json", report])
    assert code == 0, err
    with open(report) as fh:
        scored = json.load(fh)
    assert scored["temperature"] == temperature
    if temperature != 1.0:
        assert "before temperature scaling" in out
        assert scored["ece_without_temperature"] == pytest.approx(record["val_ece"][0], abs=0.02)
    # exported, the ONNX model gives the calibrated confidences too
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir])
    assert code == 0, err
    code, out, err = run_cli(["evaluate", "--model-dir", model_dir, os.path.join(tiny_data, "val"),
                              "--out", str(tmp_path / "ev_onnx"), "--json", report, "--overwrite"])
    assert code == 0, err
    with open(report) as fh:
        onnx_scored = json.load(fh)
    assert "appliance" in onnx_scored["runner"]
    assert onnx_scored["ece"] == pytest.approx(scored["ece"], abs=1e-4)


def test_without_calibrate_model_best_stays_as_trained(tmp_path, tiny_data):
    model_dir = str(tmp_path / "raw")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1] + FAST)
    assert code == 0, err
    with open(os.path.join(model_dir, "model.json")) as fh:
        record = json.load(fh)["training"]["calibration"]
    assert record == {"temperature": 1.0, "fitted": False, "why": "off (no --calibrate)"}
    last, best = _load(model_dir, "checkpoint.pth.tar"), _load(model_dir, "model_best.pth.tar")
    assert "temperature" not in best
    for key, value in last["state_dict"].items():
        assert torch.equal(best["state_dict"][key], value), key
    code, out, err = run_cli(["train", tiny_data, "--model-dir", str(tmp_path / "ff"),
                              "--epochs", 1, "--final-fit", "--calibrate"] + FAST)
    assert code == 2 and "--calibrate" in err and "--final-fit" in err


def test_a_resume_without_calibrate_takes_an_earlier_temperature_back_out(tmp_path, tiny_data):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--calibrate"] + FAST)
    assert code == 0, err
    best = _load(model_dir, "model_best.pth.tar")
    assert best["temperature"] != 1.0
    # nothing left to train: the best epoch stays, and without --calibrate it is raw again
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--resume", os.path.join(model_dir, "checkpoint.pth.tar")] + FAST)
    assert code == 0, err
    last, best = _load(model_dir, "checkpoint.pth.tar"), _load(model_dir, "model_best.pth.tar")
    assert "temperature" not in best
    for key, value in last["state_dict"].items():
        torch.testing.assert_close(best["state_dict"][key], value, msg=key)
    with open(os.path.join(model_dir, "model.json")) as fh:
        assert json.load(fh)["training"]["calibration"]["why"] == "off (no --calibrate)"


@pytest.mark.parametrize("calibrate", [["--calibrate"], []])
def test_a_failed_write_of_model_best_leaves_it_whole_and_no_temporary_file(
        tmp_path, tiny_data, monkeypatch, calibrate):
    """--calibrate's refit and the temperature taken back out without it saved
    model_best.pth.tar.tmp and moved it over model_best.pth.tar: a move that failed (a full
    disk, a folder in the way) left the .tmp behind. Now removed; model_best stays as it was."""
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--calibrate"] + FAST)
    assert code == 0, err
    best = os.path.join(model_dir, "model_best.pth.tar")
    with open(best, "rb") as fh:
        before = fh.read()
    real = os.replace
    from oncolens.appliance.outpaths import temp_target

    def failing(src, dst):
        if temp_target(os.path.basename(src)) == "model_best.pth.tar":
            raise OSError(28, "No space left on device")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", failing)
    # nothing left to train: the bundle step alone rewrites model_best (T refitted or removed)
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--resume", os.path.join(model_dir, "checkpoint.pth.tar")] +
                             calibrate + FAST)
    assert code == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "oncolens train: error: No space left on device"
    assert not [n for n in os.listdir(model_dir) if temp_target(n)]
    with open(best, "rb") as fh:
        assert fh.read() == before
