"""Engine bookkeeping without TensorRT: jetson-inference names, the cache folder when the
model folder is read-only, model.json entries and the version / device refusal."""
import os
import stat

import pytest

from oncolens.appliance import engines


@pytest.mark.parametrize("version, code", [("8.2.1.8", 8201), ("8.0.1", 8001),
                                           ("8.6.2.3", 8602), ("10.3.0.30", 100300),
                                           ((10, 7, 0), 100700)])
def test_version_code_is_nv_tensorrt_version(version, code):
    assert engines.version_code(version) == code


def test_engine_name_matches_jetson_inference():
    name = engines.engine_file_name("models/x/resnet18.onnx", 1, "8.2.1.8", "fp16")
    assert name == "resnet18.onnx.1.1.8201.GPU.FP16.engine"
    assert engines.engine_file_name("a.onnx", 8, "10.3.0", "int8", dla_core=1,
                                    gpu_fallback=False) == "a.onnx.8.0.100300.DLA_1.INT8.engine"
    assert engines.parse_engine_name("/m/" + name) == {
        "model": "resnet18.onnx", "max_batch": 1, "gpu_fallback": True, "trt_code": 8201,
        "device": "GPU", "precision": "fp16"}
    assert engines.parse_engine_name("resnet18.onnx") is None
    with pytest.raises(Exception) as err:
        engines.engine_file_name("a.onnx", 1, "8.2.1", "fp8")
    assert "--precision" in str(err.value)


def test_read_only_model_folder_sends_engines_to_the_cache(tmp_path, monkeypatch, caplog):
    import logging
    caplog.set_level(logging.INFO)
    model_dir = tmp_path / "ro"
    model_dir.mkdir()
    monkeypatch.setenv("ONCOLENS_CACHE_DIR", str(tmp_path / "cache"))
    path, in_cache = engines.place_engine(str(model_dir), "m.onnx.1.1.8201.GPU.FP16.engine",
                                          "ab" * 32)
    assert (path, in_cache) == (str(model_dir / "m.onnx.1.1.8201.GPU.FP16.engine"), False)
    os.chmod(str(model_dir), stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        path, in_cache = engines.place_engine(str(model_dir), "m.onnx.1.1.8201.GPU.FP16.engine",
                                              "ab" * 32)
    finally:
        os.chmod(str(model_dir), 0o755)
    want = os.path.join(str(tmp_path / "cache"), "engines", "ab" * 8,
                        "m.onnx.1.1.8201.GPU.FP16.engine")
    assert (path, in_cache) == (want, True)
    assert os.path.isdir(os.path.dirname(want))
    assert "is read-only: engine goes to {}".format(want) in caplog.text


def test_cache_root_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.delenv("ONCOLENS_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert engines.cache_root() == os.path.join(str(tmp_path), ".cache", "oncolens")


def _entry(tmp_path, version="8.2.1.8", device="NVIDIA Tegra X1", precision="fp16", batch=1):
    name = engines.engine_file_name("m.onnx", batch, version, precision)
    path = tmp_path / name
    path.write_bytes(b"plan")
    return engines.make_entry(str(path), str(tmp_path), version, device, precision, batch,
                              onnx_sha256="00" * 32, compute_capability=(5, 3))


def test_entries_record_version_device_and_precision(tmp_path):
    entry = _entry(tmp_path)
    assert entry["file"] == "m.onnx.1.1.8201.GPU.FP16.engine"
    assert (entry["tensorrt"], entry["tensorrt_code"]) == ("8.2.1", 8201)
    assert entry["device_name"] == "NVIDIA Tegra X1" and entry["precision"] == "fp16"
    info = engines.add_entry({"engines": []}, entry)
    info = engines.add_entry(info, dict(entry, built="later"))
    assert len(info["engines"]) == 1 and info["engines"][0]["built"] == "later"


def test_an_engine_from_another_tensorrt_or_gpu_is_refused(tmp_path):
    entry = _entry(tmp_path)
    path = engines.entry_path(entry, str(tmp_path))
    engines.check_compatible(path, entry, "8.2.1.8", "NVIDIA Tegra X1")   # same: fine
    with pytest.raises(engines.EngineMismatch) as err:
        engines.check_compatible(path, entry, "8.6.2", "NVIDIA Tegra X1")
    assert "built by TensorRT 8.2.1 but this is TensorRT 8.6.2" in str(err.value)
    with pytest.raises(engines.EngineMismatch) as err:
        engines.check_compatible(path, entry, "8.2.1", "Orin")
    assert "built for the GPU 'NVIDIA Tegra X1' but this GPU is 'Orin'" in str(err.value)
    # no entry: the version in a jetson-inference style name still counts
    with pytest.raises(engines.EngineMismatch) as err:
        engines.check_compatible(path, None, "10.3.0", "Orin")
    assert "(from its name)" in str(err.value)


def test_pick_entry_prefers_fp16_and_skips_stale(tmp_path):
    fp32 = _entry(tmp_path, precision="fp32")
    fp16 = _entry(tmp_path, precision="fp16")
    old = _entry(tmp_path, version="8.0.1", precision="fp16")
    entries = [fp32, old, fp16]
    pick = engines.pick_entry(entries, str(tmp_path), "8.2.1", "NVIDIA Tegra X1")
    assert pick is fp16
    assert engines.pick_entry(entries, str(tmp_path), "8.2.1", "NVIDIA Tegra X1", "fp32") is fp32
    assert engines.pick_entry(entries, str(tmp_path), "8.2.1", "NVIDIA Tegra X1",
                              max_batch=4) is None
    assert engines.pick_entry(entries, str(tmp_path), "10.3.0", "NVIDIA Tegra X1") is None


def test_cache_flags_are_checked_before_tensorrt_is_needed(tmp_path):
    """--calib-cache / --timing-cache naming a folder, an image or a path under a file are
    one-line errors before anything is built (here without TensorRT at all)."""
    from conftest import run_cli
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    (tmp_path / "afile").write_text("x")
    cases = [("--timing-cache", str(tmp_path), "is a folder: expected a file name"),
             ("--calib-cache", str(tmp_path / "scan.png"), "an image or video file name; "
              "expected a cache file name"),
             ("--timing-cache", str(tmp_path / "afile" / "t.timing"), "is a file, not a folder")]
    for flag, path, message in cases:
        code, out, err = run_cli(["export", "engine", "--model-dir", str(tmp_path), flag, path])
        assert code == 2, (flag, err)
        assert flag in err and message in err
        assert len(err.strip().splitlines()) == 1
    assert (tmp_path / "scan.png").read_bytes() == b"\x89PNG"


@pytest.mark.parametrize("extra, message", [
    (["--max-batch", "0"], "--max-batch 0: expected a positive number"),
    (["--workspace", "-5"], "--workspace -5: expected a positive number"),
    (["--calib-count", "0"], "--calib-count 0: expected a positive number"),
    (["--calib-batch", "0"], "--calib-batch 0: expected a positive number"),
    (["--dla-core", "-1"], "--dla-core -1: expected 0 or more"),
    (["--device", "-1"], "--device -1: expected 0 or more"),
    (["--max-batch", "4", "--opt-batch", "8"], "--opt-batch 8: expected at most --max-batch (4)"),
])
def test_engine_numbers_are_checked_before_tensorrt_is_needed(tmp_path, extra, message):
    from conftest import run_cli
    code, out, err = run_cli(["export", "engine", "--model-dir", str(tmp_path)] + extra)
    assert code == 2 and err.strip() == "oncolens export engine: error: " + message, err


@pytest.mark.parametrize("what, message", [("missing", "is not a folder"),
                                           ("empty", "no image files under")])
def test_calib_images_are_checked_before_tensorrt_is_needed(tmp_path, what, message):
    """A --calib-images that is no folder of images was found only once TensorRT had loaded
    and CUDA had started (here: 'needs the Python package tensorrt' instead), and then named
    '--images', a flag export engine does not have."""
    from conftest import run_cli
    folder = tmp_path / "calib"
    if what == "empty":
        folder.mkdir()
    code, out, err = run_cli(["export", "engine", "--model-dir", str(tmp_path), "--precision",
                              "int8", "--calib-images", str(folder)])
    assert code == 2 and err.startswith("oncolens export engine: error: --calib-images: "), err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_calibration_flags_without_int8_are_said_to_be_ignored(tmp_path, caplog):
    """--calib-images and --calib-cache with another precision were ignored in silence (and
    a bad --calib-images folder refused although it would not have been read)."""
    import logging
    from conftest import run_cli
    with caplog.at_level(logging.WARNING):
        code, out, err = run_cli(["export", "engine", "--model-dir", str(tmp_path),
                                  "--precision", "fp16", "--calib-images",
                                  str(tmp_path / "missing"), "--calib-cache",
                                  str(tmp_path / "c.calibration")])
    assert "--calib-images and --calib-cache: used by --precision int8 only; ignored for " \
        "--precision fp16" in caplog.text
    assert "--calib-images: " not in err  # the folder is not checked: it is not read
