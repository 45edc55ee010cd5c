"""``export engine`` finding an engine up to date left an entry from before the ONNX's size
and mtime were recorded (or one whose ONNX was only touched) as it was: the runtime hashed
the ONNX at every start until the engine was rebuilt. The SHA-256 matched, so they are now
recorded then, and so are model.json's export record's (its check at load, too)."""
import json
import os
import stat

import trt_standin
from conftest import run_cli
from test_engine_onnx_replaced import NAME, _hashes_of
from test_export_tensorrt_standin import _backend, _bundle_copy, cache, dyn_bundle  # noqa: F401


def _info(d):
    with open(os.path.join(d, "model.json")) as fh:
        return json.load(fh)


def _forget_times(d):
    """model.json as an OncoLens before the ONNX's size and time were recorded left it."""
    info = _info(d)
    for entry in info["engines"]:
        del entry["onnx_size"], entry["onnx_mtime_ns"]
    del info["onnx"]["size"], info["onnx"]["mtime_ns"]
    with open(os.path.join(d, "model.json"), "w") as fh:
        json.dump(info, fh)


def test_an_up_to_date_engine_gets_the_onnx_size_and_time_recorded(dyn_bundle, tmp_path,
                                                                   cache, monkeypatch):
    d = _bundle_copy(dyn_bundle, tmp_path)
    state = trt_standin.install(monkeypatch, version="8.2.1.8")
    assert run_cli(["export", "engine", "--model-dir", d])[0] == 0
    _forget_times(d)
    onnx = os.path.join(d, "resnet18.onnx")
    st = os.stat(onnx)
    os.utime(onnx, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))  # touched too
    code, out, err = run_cli(["export", "engine", "--model-dir", d])
    assert code == 0 and state.builds == 1, err
    st = os.stat(onnx)
    info = _info(d)
    (entry,) = info["engines"]
    assert (entry["onnx_size"], entry["onnx_mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    assert (info["onnx"]["size"], info["onnx"]["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    hashed = _hashes_of(monkeypatch, onnx)
    backend = _backend(d)
    assert backend.engine_path == os.path.join(d, NAME) and hashed == []
    backend.close()


def test_a_read_only_model_json_is_left_as_it_was(dyn_bundle, tmp_path, cache, monkeypatch):
    d = _bundle_copy(dyn_bundle, tmp_path)
    state = trt_standin.install(monkeypatch, version="8.2.1.8")
    assert run_cli(["export", "engine", "--model-dir", d])[0] == 0
    _forget_times(d)
    path = os.path.join(d, "model.json")
    before = open(path).read()
    os.chmod(path, stat.S_IRUSR)
    try:
        code, out, err = run_cli(["export", "engine", "--model-dir", d])
    finally:
        os.chmod(path, 0o644)
    assert code == 0 and state.builds == 1, err
    assert open(path).read() == before
