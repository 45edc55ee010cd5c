"""An INT8 calibration cache is read only for the ONNX it was made for: its default name does
not depend on the ONNX's contents, so after a retrain and a re-export the earlier model's cache
was read as this one's, the --calib-images never used, and the engine built with the wrong
scales (only an info line said so). Through the TensorRT stand-in (tests/trt_standin.py)."""
import json
import logging
import os

import trt_standin
from conftest import run_cli
from test_export_tensorrt_standin import _bundle_copy, cache, dyn_bundle  # noqa: F401

CALIB = "resnet18.onnx.1.1.8201.GPU.INT8.calibration"


def _onnx_sha(d):
    return json.load(open(os.path.join(d, "model.json")))["onnx"]["sha256"]


def _int8(d, *flags):
    return run_cli(["export", "engine", "--model-dir", d, "--precision", "int8",
                    "--overwrite"] + list(flags))


def test_a_cache_of_another_onnx_is_never_read_as_this_ones(dyn_bundle, tiny_data, tmp_path,
                                                             cache, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    trt_standin.install(monkeypatch, version="8.2.1.8", fast_int8=True)
    d = _bundle_copy(dyn_bundle, tmp_path)
    code, out, err = _int8(d, "--calib-images", tiny_data, "--calib-batch", 4)
    assert code == 0, err
    calib = os.path.join(d, CALIB)
    with open(calib + ".json") as fh:
        assert json.load(fh) == {"onnx_sha256": _onnx_sha(d)}     # recorded beside it
    with open(calib + ".json", "w") as fh:                        # as after a retrain
        json.dump({"onnx_sha256": "0123456789ab" + "0" * 52}, fh)
    code, out, err = _int8(d)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "calibration cache {} was made for another ONNX (SHA-256 0123456789ab...".format(
        calib) in err and "pass --calib-images DIR to calibrate it again" in err
    caplog.clear()
    code, out, err = _int8(d, "--calib-images", tiny_data, "--calib-batch", 4)
    assert code == 0, err
    assert "calibrating again on --calib-images, and replacing it" in caplog.text
    assert "calibration batch 4/4" in caplog.text
    assert "calibration cache: reusing" not in caplog.text
    with open(calib + ".json") as fh:
        assert json.load(fh) == {"onnx_sha256": _onnx_sha(d)}


def test_a_cache_with_no_record_is_used_with_a_warning(dyn_bundle, tiny_data, tmp_path, cache,
                                                       monkeypatch, caplog):
    """A cache from before the record (or from jetson-inference) is used as before, but not
    in silence: nothing can say which model it was made for."""
    caplog.set_level(logging.INFO)
    trt_standin.install(monkeypatch, version="8.2.1.8", fast_int8=True)
    d = _bundle_copy(dyn_bundle, tmp_path)
    assert _int8(d, "--calib-images", tiny_data, "--calib-batch", 4)[0] == 0
    calib = os.path.join(d, CALIB)
    os.remove(calib + ".json")
    caplog.clear()
    code, out, err = _int8(d)
    assert code == 0, err
    assert "calibration cache {}: no record ({}) of the ONNX it was made for, so it is used " \
        "unchecked".format(calib, os.path.basename(calib) + ".json") in caplog.text
    assert "calibration cache: reusing {}".format(calib) in caplog.text
