"""The TensorRT builder and runtime, driven through tests/trt_standin.py -- a STAND-IN for
tensorrt + pycuda that mimics the calls OncoLens makes (TensorRT itself cannot be
installed here).  What these tests prove: the version choice (8.x bindings vs 10.x named
tensors), names, placement, model.json entries, refusal and rebuild, batching, contexts
and calibration.  They say nothing about real TensorRT numerics or speed."""
import json
import logging
import os
import shutil
import stat

import numpy as np
import pytest

import trt_standin
from conftest import run_cli

VERSIONS = ["8.2.1.8", "8.6.2.3", "10.3.0.30"]


@pytest.fixture(scope="module")
def dyn_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle re-exported with a dynamic batch dimension (ONNX, labels, model.json)."""
    src = str(tmp_path_factory.mktemp("dyn") / "full")
    shutil.copytree(tiny_bundle, src)
    code, out, err = run_cli(["export", "onnx", "--model-dir", src, "--dynamic-batch",
                              "--overwrite", "--no-check"])
    assert code == 0, err
    return src


def _bundle_copy(src, tmp_path, name="m"):
    dst = tmp_path / name
    dst.mkdir()
    for f in ("model.json", "labels.txt", "resnet18.onnx"):
        shutil.copy(os.path.join(src, f), str(dst))
    return str(dst)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONCOLENS_CACHE_DIR", str(tmp_path / "cache"))
    return str(tmp_path / "cache")


def _ort_probs(model_dir, batch):
    from oncolens.appliance.backends.ort import OnnxRuntimeBackend
    from oncolens.appliance.bundle import load_bundle
    return OnnxRuntimeBackend(load_bundle(model_dir)).infer(batch)


def _backend(model, **options):
    from oncolens.appliance.backends.tensorrt import TensorRTBackend
    from oncolens.appliance.bundle import load_bundle
    return TensorRTBackend(load_bundle(model), **options)


@pytest.mark.parametrize("version", VERSIONS)
def test_build_then_run_with_each_api_generation(dyn_bundle, tmp_path, cache, monkeypatch,
                                                 version):
    state = trt_standin.install(monkeypatch, version=version)
    d = _bundle_copy(dyn_bundle, tmp_path)
    code, out, err = run_cli(["export", "engine", "--model-dir", d, "--max-batch", 4,
                              "--precision", "fp32"])
    assert code == 0, err
    code_v = {"8.2.1.8": 8201, "8.6.2.3": 8602, "10.3.0.30": 100300}[version]
    name = "resnet18.onnx.4.1.{}.GPU.FP32.engine".format(code_v)
    assert os.path.isfile(os.path.join(d, name)) and name in out
    (entry,) = json.load(open(os.path.join(d, "model.json")))["engines"]
    assert entry["file"] == name and entry["device_name"] == "NVIDIA Tegra X1"
    assert entry["precision"] == "fp32" and entry["max_batch"] == 4 and entry["dynamic_batch"]
    assert entry["tensorrt"] == ".".join(version.split(".")[:3])
    ws = "IBuilderConfig.max_workspace_size" if version.startswith("8.2") else \
        "IBuilderConfig.set_memory_pool_limit"
    assert ws in state.calls
    x = np.random.RandomState(0).normal(0, 1, (7, 3, 32, 32)).astype(np.float32)
    state.calls[:] = []
    backend = _backend(d)
    assert backend.max_batch == 4 and backend.precision == "fp32" and backend.name == "tensorrt"
    probs = backend.infer(x).probs                     # 7 images: batches of 4 and 3
    backend.close()
    np.testing.assert_allclose(probs, _ort_probs(d, x).probs, atol=1e-5)
    ten = version.startswith("10.")
    assert ("IExecutionContext.execute_async_v3" in state.calls) is ten
    assert ("IExecutionContext.execute_v2" in state.calls) is (not ten)
    assert state.calls.count("IExecutionContext.execute_v2" if not ten
                             else "IExecutionContext.execute_async_v3") == 2
    assert state.ctx_stack == [] and "Context.detach" in state.calls
    assert state.calls.count("Context.push") == state.calls.count("Context.pop") - 1


def test_auto_precision_falls_back_to_fp32_with_a_warning(dyn_bundle, tmp_path, cache,
                                                          monkeypatch, caplog):
    trt_standin.install(monkeypatch, version="8.2.1.8", fast_fp16=False)
    d = _bundle_copy(dyn_bundle, tmp_path)
    code, out, err = run_cli(["export", "engine", "--model-dir", d])
    assert code == 0, err
    assert "resnet18.onnx.1.1.8201.GPU.FP32.engine" in out
    assert "no fast FP16: building FP32" in caplog.text


def test_timing_cache_reused_and_up_to_date_engine_kept(dyn_bundle, tmp_path, cache,
                                                        monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    state = trt_standin.install(monkeypatch, version="10.3.0.30")
    d = _bundle_copy(dyn_bundle, tmp_path)
    assert run_cli(["export", "engine", "--model-dir", d])[0] == 0
    code, out, err = run_cli(["export", "engine", "--model-dir", d])
    assert code == 0 and out.startswith("up to date:") and state.builds == 1
    code, out, err = run_cli(["export", "engine", "--model-dir", d, "--overwrite"])
    assert code == 0 and state.builds == 2
    timing = os.path.join(cache, "timing", "100300-NVIDIA-Tegra-X1.timing")
    assert open(timing, "rb").read() == b"STANDIN-TIMING:2"
    assert "timing cache: reusing {}".format(timing) in caplog.text


def test_read_only_model_folder_uses_the_cache_and_the_runtime_finds_it(
        dyn_bundle, tmp_path, cache, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    state = trt_standin.install(monkeypatch, version="8.2.1.8")
    d = _bundle_copy(dyn_bundle, tmp_path)
    before = open(os.path.join(d, "model.json")).read()
    os.chmod(d, stat.S_IRUSR | stat.S_IXUSR)
    try:
        code, out, err = run_cli(["export", "engine", "--model-dir", d])
        assert code == 0, err
        assert "is read-only: engine goes to {}".format(cache) in caplog.text
        backend = _backend(d)          # found in the cache: not built again
        assert backend.engine_path.startswith(cache) and state.builds == 1
        backend.close()
        code, out, err = run_cli(["export", "verify", "--model-dir", d, "--count", 4])
        assert code == 0, err
        assert "onnxruntime vs tensorrt fp16 resnet18.onnx.1.1.8201.GPU.FP16.engine" in out
    finally:
        os.chmod(d, 0o755)
    assert open(os.path.join(d, "model.json")).read() == before
    assert not [f for f in os.listdir(d) if f.endswith(".engine")]


def test_engine_from_another_tensorrt_or_gpu_is_refused_then_rebuilt(dyn_bundle, tmp_path,
                                                                     cache, monkeypatch):
    from oncolens.appliance.engines import EngineMismatch
    state = trt_standin.install(monkeypatch, version="8.2.1.8")
    d = _bundle_copy(dyn_bundle, tmp_path)
    assert run_cli(["export", "engine", "--model-dir", d])[0] == 0
    old = os.path.join(d, "resnet18.onnx.1.1.8201.GPU.FP16.engine")
    trt_standin.switch(version="8.6.2.3")                 # a JetPack upgrade
    with pytest.raises(EngineMismatch) as err:
        _backend(d)
    assert "built elsewhere" in str(err.value) and "TensorRT 8.2.1" in str(err.value)
    with pytest.raises(EngineMismatch) as err:
        _backend(old)
    assert "built by TensorRT 8.2.1 but this is TensorRT 8.6.2" in str(err.value)
    backend = _backend(old, allow_rebuild=True)
    assert backend.engine_path.endswith("resnet18.onnx.1.1.8602.GPU.FP16.engine")
    backend.close()
    trt_standin.switch(device_name="Orin")
    assert state.builds == 2
    with pytest.raises(EngineMismatch) as err:
        _backend(os.path.join(d, "resnet18.onnx.1.1.8602.GPU.FP16.engine"))
    assert "built for the GPU 'NVIDIA Tegra X1' but this GPU is 'Orin'" in str(err.value)


def test_int8_calibrates_on_real_images_and_reuses_the_cache(dyn_bundle, tiny_data, tmp_path,
                                                             cache, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    state = trt_standin.install(monkeypatch, version="8.2.1.8", fast_int8=True)
    d = _bundle_copy(dyn_bundle, tmp_path)
    code, out, err = run_cli(["export", "engine", "--model-dir", d, "--precision", "int8"])
    assert code == 2 and "--calib-images" in err
    code, out, err = run_cli(["export", "engine", "--model-dir", d, "--precision", "int8",
                              "--calib-images", tiny_data, "--calib-batch", 4])
    assert code == 0, err
    calib = os.path.join(d, "resnet18.onnx.1.1.8201.GPU.INT8.calibration")
    assert open(calib, "rb").read() == b"STANDIN-CALIBRATION batches=4"   # 18 train images
    assert "calibration batch 4/4" in caplog.text and "last 2 images left out" in caplog.text
    assert "IBuilderConfig.set_calibration_profile" in state.calls
    code, out, err = run_cli(["export", "engine", "--model-dir", d, "--precision", "int8",
                              "--overwrite"])
    assert code == 0, err
    assert "calibration cache: reusing {}".format(calib) in caplog.text
    (entry,) = json.load(open(os.path.join(d, "model.json")))["engines"]
    assert entry["precision"] == "int8" and entry["calibration"] == calib


def test_calibration_batches_skip_unreadable_files(tiny_data, tmp_path):
    from oncolens.appliance.preprocess import Preprocessor, imagenet_preprocess
    from oncolens.export.calibrate import CalibrationBatches
    from oncolens.export.images import sample_paths
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    paths = sample_paths(tiny_data, 5, split="val") + [str(bad)]
    batches = CalibrationBatches(paths, Preprocessor(imagenet_preprocess(32), (3, 32, 32)), 2)
    out = list(batches)
    assert len(batches) == 3 and len(out) == 2 and batches.skipped == [str(bad)]
    assert all(b.shape == (2, 3, 32, 32) and b.dtype == np.float32 for b in out)


def test_fixed_batch_onnx_and_missing_tensorrt_are_clear_errors(tiny_bundle, tmp_path, cache,
                                                                monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    code, out, err = run_cli(["export", "engine", "--model-dir", tiny_bundle])
    assert code == 1 and "needs the Python package 'tensorrt'" in err
    trt_standin.install(monkeypatch, version="8.2.1.8")
    d = _bundle_copy(tiny_bundle, tmp_path)
    code, out, err = run_cli(["export", "engine", "--model-dir", d, "--max-batch", 4])
    assert code == 2 and "fixed batch of 1" in err and "--dynamic-batch" in err


def test_cam_output_comes_back_from_the_engine(tmp_path, cache, monkeypatch):
    from test_export_onnx import _random_checkpoint
    d = str(tmp_path / "cam")
    _random_checkpoint(d, "resnet18", 64)
    assert run_cli(["export", "onnx", "--model-dir", d, "--cam", "--dynamic-batch",
                    "--no-check"])[0] == 0
    trt_standin.install(monkeypatch, version="10.3.0.30")
    x = np.random.RandomState(1).normal(0, 1, (3, 3, 64, 64)).astype(np.float32)
    backend = _backend(d, precision="fp32", max_batch=2)   # no engine yet: built on open
    result = backend.infer(x)
    backend.close()
    ref = _ort_probs(d, x)
    assert result.cam.shape == (3, 2, 2)
    np.testing.assert_allclose(result.cam, ref.cam, atol=1e-5)
    np.testing.assert_allclose(result.probs, ref.probs, atol=1e-5)


def test_bare_jetson_inference_folder_gets_no_made_up_model_json(tiny_bundle, tmp_path, cache,
                                                                  monkeypatch):
    state = trt_standin.install(monkeypatch, version="8.2.1.8")
    d = tmp_path / "bare"
    d.mkdir()
    for f in ("resnet18.onnx", "labels.txt"):
        shutil.copy(os.path.join(tiny_bundle, f), str(d))
    code, out, err = run_cli(["export", "engine", "--model-dir", str(d)])
    assert code == 0, err
    assert sorted(os.listdir(str(d))) == ["labels.txt", "resnet18.onnx",
                                          "resnet18.onnx.1.1.8201.GPU.FP16.engine"]
    backend = _backend(str(d))                 # found through the cache index: no rebuild
    x = np.random.RandomState(4).normal(0, 1, (2, 3, 32, 32)).astype(np.float32)
    probs = backend.infer(x).probs
    backend.close()
    assert state.builds == 1 and backend.max_batch == 1
    np.testing.assert_allclose(probs, _ort_probs(str(d), x).probs, atol=1e-2)   # fp16


def test_a_missing_precision_is_built_next_to_a_usable_engine(dyn_bundle, tmp_path, cache,
                                                              monkeypatch):
    state = trt_standin.install(monkeypatch, version="8.6.2.3")
    d = _bundle_copy(dyn_bundle, tmp_path)
    assert run_cli(["export", "engine", "--model-dir", d])[0] == 0          # fp16, batch 1
    backend = _backend(d, precision="fp32", max_batch=2)
    assert backend.engine_path.endswith("resnet18.onnx.2.1.8602.GPU.FP32.engine")
    backend.close()
    backend = _backend(d)                                  # the best one there: fp16
    assert backend.precision == "fp16" and state.builds == 2
    backend.close()
    with pytest.raises(Exception) as err:
        _backend(d, precision="int8")
    assert "needs calibration" in str(err.value)


def test_an_engine_write_cut_short_leaves_the_earlier_engine_and_no_part_file(
        dyn_bundle, tmp_path, cache, monkeypatch):
    """The engine was written through its own '<engine>.part', left behind when the write
    failed (a full disk); it now goes through outpaths.replace_file like every other file."""
    import errno
    import io
    trt_standin.install(monkeypatch, version="8.2.1.8")
    d = _bundle_copy(dyn_bundle, tmp_path)
    assert run_cli(["export", "engine", "--model-dir", d, "--precision", "fp32"])[0] == 0
    before = dict((f, open(os.path.join(d, f), "rb").read()) for f in os.listdir(d))
    real_open = io.open

    def full_disk(path, mode="r", *args, **kwargs):
        fh = real_open(path, mode, *args, **kwargs)
        if "w" in mode and ".engine" in os.path.basename(str(path)):
            fh.close()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return fh
    monkeypatch.setattr(io, "open", full_disk)
    code, out, err = run_cli(["export", "engine", "--model-dir", d, "--precision", "fp32",
                              "--overwrite"])
    assert code == 1 and "No space left on device" in err, err
    assert dict((f, open(os.path.join(d, f), "rb").read()) for f in os.listdir(d)) == before
