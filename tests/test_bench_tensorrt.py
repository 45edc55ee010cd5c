"""``oncolens bench --backends tensorrt`` through the tensorrt/pycuda STAND-IN
(tests/trt_standin.py): each row's figures come from an engine of the row's precision."""
import io
import json
import os

import trt_standin
from conftest import run_cli
from test_export_tensorrt_standin import dyn_bundle  # noqa: F401 (fixture)
from test_export_verify_selftest import _with_checkpoint, cache  # noqa: F401 (fixture)


def test_a_tensorrt_row_runs_an_engine_of_its_own_precision(dyn_bundle, tiny_data,  # noqa: F811
                                                            tmp_path, cache, monkeypatch):
    """With an FP16 engine listed, 'tensorrt fp32' timed that FP16 engine under the fp32
    label, and its model_file named the ONNX."""
    trt_standin.install(monkeypatch, version="8.2.1.8", fast_int8=True)
    d = _with_checkpoint(dyn_bundle, tmp_path)
    code, out, err = run_cli(["export", "engine", "--model-dir", d, "--precision", "fp16"])
    assert code == 0, err
    out_json = str(tmp_path / "bench.json")
    code, out, err = run_cli(["bench", "--model", d, "--images", os.path.join(tiny_data, "test"),
                              "--backends", "tensorrt", "--precisions", "fp32,int8",
                              "--calib-images", os.path.join(tiny_data, "train"),
                              "--calib-count", 6, "--batch-sizes", "1", "--min-seconds", 0.05,
                              "--warmup", 1, "--no-baseline", "--json", out_json])
    assert code == 0, err
    with io.open(out_json, encoding="utf-8") as fh:
        result = json.load(fh)
    rows = [(r["backend"], r["precision"], os.path.basename(r["model_file"]))
            for r in result["runs"]]
    assert rows == [("tensorrt", "fp32", "resnet18.onnx.1.1.8201.GPU.FP32.engine")], rows
    # the GPU is named from TensorRT's device where torch sees no CUDA (as here)
    assert result["machine"]["gpu"]["name"] == "NVIDIA Tegra X1"
    assert result["runs"][0]["gpu"] == "NVIDIA Tegra X1"
    assert ", GPU NVIDIA Tegra X1, load average" in out
    # no int8 engine (it needs 'oncolens export engine --calib-images'): skipped, said why
    (skip,) = result["skipped"]
    assert skip["precision"] == "int8" and "INT8 engine needs calibration" in skip["reason"]
    assert "skipped tensorrt int8" in out
