"""The export checks with a model whose output is not a number (NaN: weights a diverged
training run left; an FP16 overflow in an engine): argmax of NaN is the first class on both
sides, so top-1 agreement read 100%, and |dp| NaN is never above the tolerance: `export
check`, `export onnx`'s check, `export verify` and selftest's ONNX check all passed such a
model. Each fails now, naming the implementation whose output is not a number."""
import json
import os
import shutil

from conftest import run_cli
from test_export_tensorrt_standin import dyn_bundle  # noqa: F401 (fixture)


def test_export_check_fails_naming_the_checkpoint_and_the_onnx(nan_bundle, tiny_data):
    code, out, err = run_cli(["export", "check", "--model-dir", nan_bundle, "--images",
                              tiny_data])
    assert code == 1 and len(err.strip().splitlines()) == 1, (out, err)
    assert "not a number (NaN or infinity)" in err and "do not deploy it" in err
    assert "model_best.pth.tar (torch) for 9 of 9 images" in err
    assert "resnet18.onnx (ONNX Runtime) for 9 of 9 images" in err


def test_export_onnx_refuses_a_checkpoint_whose_output_is_not_a_number(nan_bundle, tmp_path):
    d = str(tmp_path / "m")
    shutil.copytree(nan_bundle, d, ignore=shutil.ignore_patterns("*.onnx"))
    before = open(os.path.join(d, "model.json")).read()
    code, out, err = run_cli(["export", "onnx", "--model-dir", d, "--overwrite"])
    assert code == 1 and "not a number" in err and "nothing was written" in err, err
    assert not os.path.exists(os.path.join(d, "resnet18.onnx"))
    assert open(os.path.join(d, "model.json")).read() == before


def test_export_verify_fails_naming_each_implementation(nan_bundle, tiny_data):
    code, out, err = run_cli(["export", "verify", "--model-dir", nan_bundle, "--images",
                              tiny_data])
    assert code == 1 and len(err.strip().splitlines()) == 1, (out, err)
    assert "not a number (NaN or infinity)" in err
    assert "torch for 9 of 9 images" in err and "onnxruntime for 9 of 9 images" in err
    assert "agree 100.000%" not in out  # no pair of NaNs compared as agreeing


def _failed_selftest_onnx_check(model_dir, tiny_data, tmp_path):
    """selftest on ``model_dir`` exits 1; its ONNX check step failed: that step's detail."""
    out_dir = str(tmp_path / "report")
    code, out, err = run_cli(["selftest", "--model-dir", model_dir, "--images", tiny_data,
                              "--frames", 2, "--out", out_dir, "--precisions", "fp16"])
    assert code == 1, (out, err)
    with open(os.path.join(out_dir, "selftest.json")) as fh:
        steps = dict((s["step"], s) for s in json.load(fh)["steps"])
    assert steps["onnx check"]["status"] == "failed"
    return steps["onnx check"]["detail"]


def test_selftest_fails_its_onnx_check_and_verifies_nothing_against_it(nan_bundle, tiny_data,
                                                                       tmp_path):
    assert "not a number" in _failed_selftest_onnx_check(nan_bundle, tiny_data, tmp_path)


def test_selftest_without_a_checkpoint_checks_the_onnx_output(nan_bundle, tiny_data, tmp_path):
    d = str(tmp_path / "m")
    shutil.copytree(nan_bundle, d, ignore=shutil.ignore_patterns("*.pth.tar"))
    assert "(ONNX Runtime) for 9 of 9 images" in _failed_selftest_onnx_check(d, tiny_data,
                                                                            tmp_path)


def _nan_bias(path):
    """The ONNX at ``path`` with NaN in its classifier's bias (an engine's overflow)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper
    model = onnx.load(path)
    bias = [t for t in model.graph.initializer if t.name.endswith("fc.bias")][0]
    arr = numpy_helper.to_array(bias).copy()
    arr[:] = np.nan
    bias.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), bias.name))
    onnx.save(model, path)


def test_an_engine_whose_output_is_not_a_number_fails_verify_and_selftest(
        dyn_bundle, tiny_data, tmp_path, monkeypatch):  # noqa: F811
    """torch and ONNX Runtime fine, the fp16 engine NaN (the stand-in runs the ONNX inside
    the engine file): verify keeps their row and fails naming the engine; selftest's verify
    step fails."""
    import trt_standin
    from test_export_verify_selftest import _replace_engine_payload, _with_checkpoint
    monkeypatch.setenv("ONCOLENS_CACHE_DIR", str(tmp_path / "cache"))
    trt_standin.install(monkeypatch, version="8.2.1.8")
    d = _with_checkpoint(dyn_bundle, tmp_path)
    code, out, err = run_cli(["export", "engine", "--model-dir", d, "--precision", "fp16"])
    assert code == 0, err
    bad = str(tmp_path / "nan.onnx")
    shutil.copy(os.path.join(d, "resnet18.onnx"), bad)
    _nan_bias(bad)
    _replace_engine_payload(os.path.join(d, "resnet18.onnx.1.1.8201.GPU.FP16.engine"), bad)
    code, out, err = run_cli(["export", "verify", "--model-dir", d, "--images", tiny_data])
    assert code == 1 and len(err.strip().splitlines()) == 1, (out, err)
    assert "from tensorrt fp16 resnet18.onnx.1.1.8201.GPU.FP16.engine for 9 of 9 images" in err
    (row,) = [line for line in out.splitlines() if " vs " in line]
    assert row.startswith("torch vs onnxruntime") and row.endswith("ok")
    out_dir = str(tmp_path / "report")
    code, out, err = run_cli(["selftest", "--model-dir", d, "--images", tiny_data, "--frames", 2,
                              "--out", out_dir, "--precisions", "fp16"])
    assert code == 1, (out, err)
    with open(os.path.join(out_dir, "selftest.json")) as fh:
        steps = dict((s["step"], s) for s in json.load(fh)["steps"])
    assert steps["onnx check"]["status"] == "passed"
    assert steps["verify fp16"]["status"] == "failed"
    assert "the fp16 engine (TensorRT) for 9 of 9 images" in steps["verify fp16"]["detail"]
