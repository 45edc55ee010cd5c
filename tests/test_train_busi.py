"""A short real run on BUSI: a few epochs at low resolution, fixed seed, better than chance."""
import json
import os

from conftest import run_cli


def test_short_busi_run_beats_chance(tmp_path, busi):
    model_dir = str(tmp_path / "busi-simple")
    code, out, err = run_cli(["train", busi, "--model-dir", model_dir, "--arch", "simple-cnn",
                              "--resolution", 64, "--epochs", 4, "-b", 32, "-j", 0,
                              "--seed", 0, "--lr", 3e-3])
    assert code == 0, err
    with open(os.path.join(model_dir, "model.json")) as fh:
        info = json.load(fh)
    val = info["metrics"]["val"]
    assert val["macro_f1"] > 1.0 / 3.0, val  # chance for three classes
    assert info["training"]["class_weights"] == "balanced"
    json_path = str(tmp_path / "val.json")
    code, out, err = run_cli(["evaluate", "--model-dir", model_dir,
                              os.path.join(busi, "val"), "--json", json_path])
    assert code == 0, err
    with open(json_path) as fh:
        report = json.load(fh)
    assert report["count"] == 115
    assert abs(report["macro_f1"] - val["macro_f1"]) < 1e-6  # same preprocessing as training
