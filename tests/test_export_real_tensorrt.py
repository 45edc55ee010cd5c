"""Real TensorRT (a Jetson or an NVIDIA GPU host with tensorrt + pycuda): build engines from
the tiny bundle and compare them with ONNX Runtime.  Skipped where TensorRT is absent --
which is every machine this project's CI and development ran on (see docs/EXPORT.md)."""
import os
import shutil

import numpy as np
import pytest

from conftest import run_cli

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu, pytest.mark.jetson]

# at import, so that the session fixtures (training the tiny bundle) are not paid for nothing
TRT = pytest.importorskip("tensorrt", reason="TensorRT is not installed here")
pytest.importorskip("pycuda.driver", reason="pycuda is not installed here")


@pytest.fixture
def real_trt():
    return TRT


@pytest.fixture
def dynamic_copy(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("ONCOLENS_CACHE_DIR", str(tmp_path / "cache"))
    d = str(tmp_path / "m")
    shutil.copytree(tiny_bundle, d)
    code, _, err = run_cli(["export", "onnx", "--model-dir", d, "--dynamic-batch", "--overwrite"])
    assert code == 0, err
    return d


@pytest.mark.parametrize("precision, atol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_real_engine_matches_onnxruntime(real_trt, dynamic_copy, precision, atol):
    from oncolens.appliance.backends.ort import OnnxRuntimeBackend
    from oncolens.appliance.backends.tensorrt import TensorRTBackend
    from oncolens.appliance.bundle import load_bundle
    code, out, err = run_cli(["export", "engine", "--model-dir", dynamic_copy, "--precision",
                              precision, "--max-batch", 4])
    assert code == 0, err
    names = [f for f in os.listdir(dynamic_copy) if f.endswith(".{}.engine".format(
        precision.upper()))]
    assert len(names) == 1 and names[0].startswith("resnet18.onnx.4.1.")
    x = np.random.RandomState(0).normal(0, 1, (7, 3, 32, 32)).astype(np.float32)
    with TensorRTBackend(load_bundle(dynamic_copy), precision=precision) as backend:
        probs = backend.infer(x).probs
    ref = OnnxRuntimeBackend(load_bundle(dynamic_copy)).infer(x).probs
    assert np.abs(probs - ref).max() <= atol


def test_real_selftest_passes(real_trt, dynamic_copy, tiny_data):
    code, out, err = run_cli(["selftest", "--model-dir", dynamic_copy, "--images", tiny_data,
                              "--frames", 20])
    assert code == 0, out + err
