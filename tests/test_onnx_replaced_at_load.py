"""An ONNX copied by hand over a model folder's export: model.json (labels, preprocessing, the
export's SHA-256) still describes the earlier one, and ONNX Runtime and OpenVINO ran the new
file with them, silently. The export now records the ONNX's size and mtime (ns) beside its
SHA-256; at load they are compared with the file's (no hashing while they match) and, when
they differ, the file is hashed once: another SHA-256 is refused in one line naming both."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import run_cli
from test_engine_onnx_replaced import _hashes_of, _replace_by_hand

X = np.random.RandomState(1).normal(0, 1, (2, 3, 32, 32)).astype(np.float32)


@pytest.fixture
def exported(tiny_bundle, tmp_path):
    """A copy of the tiny bundle exported again in place (so its times are its own)."""
    folder = str(tmp_path / "model")
    shutil.copytree(tiny_bundle, folder, ignore=shutil.ignore_patterns("variants", "*.engine"))
    code, out, err = run_cli(["export", "onnx", "--model-dir", folder, "--overwrite",
                              "--no-check"])
    assert code == 0, err
    return folder


def _record(folder):
    with open(os.path.join(folder, "model.json")) as fh:
        return json.load(fh)["onnx"]


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_export_records_the_onnx_size_and_time_and_a_load_hashes_nothing(
        exported, monkeypatch):
    from oncolens.appliance.bundle import load_bundle
    onnx = os.path.join(exported, "resnet18.onnx")
    record, st = _record(exported), os.stat(onnx)
    assert (record["size"], record["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    hashed = _hashes_of(monkeypatch, onnx)
    bundle = load_bundle(exported)
    assert bundle.model_path == onnx and hashed == []


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_an_onnx_replaced_by_hand_is_refused_naming_both_checksums(exported, tiny_data,
                                                                   backend):
    from oncolens.appliance.bundle import sha256_file
    recorded = _record(exported)["sha256"]
    _replace_by_hand(exported)
    onnx = os.path.join(exported, "resnet18.onnx")
    now = sha256_file(onnx)
    src = os.path.join(tiny_data, "test", "normal")
    for model in (exported, onnx):
        code, out, err = run_cli(["batch", src, "--model", model, "--backend", backend,
                                  "--no-progress", "--results", os.path.join(exported, "r.csv")])
        line = _one_line(err)
        assert code == 1, err
        assert "{} is not the ONNX {} describes (SHA-256 {}... at its export, {}... now" \
            .format(onnx, os.path.join(exported, "model.json"), recorded[:12], now[:12]) \
            in line, line
        assert "'oncolens export onnx --model-dir {} --overwrite'".format(exported) in line
        assert "--labels FILE" in line
        assert not os.path.exists(os.path.join(exported, "r.csv"))
    # the checkpoint model.json describes still runs
    code, out, err = run_cli(["batch", src, "--model", exported, "--backend", "torch",
                              "--no-progress", "--results", os.path.join(exported, "r.csv")])
    assert code == 0, err


def test_an_onnx_only_touched_is_hashed_once_and_used(exported, monkeypatch):
    from oncolens.appliance.bundle import load_bundle, sha256_file
    onnx = os.path.join(exported, "resnet18.onnx")
    st = os.stat(onnx)
    os.utime(onnx, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    hashed = _hashes_of(monkeypatch, onnx)
    bundle = load_bundle(exported)
    assert bundle.model_sha256 == sha256_file(onnx)   # (the real one: not counted)
    assert len(hashed) == 1 and bundle.model_path == onnx  # the load's: results reuse it


@pytest.mark.parametrize("replaced", [False, True])
def test_a_model_json_from_before_is_checked_by_hash(exported, monkeypatch, replaced):
    """A model.json written before the size and time were recorded: its ONNX is hashed once
    a start and compared with the recorded SHA-256."""
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.errors import BundleError
    path = os.path.join(exported, "model.json")
    with open(path) as fh:
        info = json.load(fh)
    del info["onnx"]["size"], info["onnx"]["mtime_ns"]
    with open(path, "w") as fh:
        json.dump(info, fh)
    if replaced:
        _replace_by_hand(exported)
    onnx = os.path.join(exported, "resnet18.onnx")
    hashed = _hashes_of(monkeypatch, onnx)
    bundle = load_bundle(exported)
    assert len(hashed) == 1
    if replaced:
        with pytest.raises(BundleError, match="is not the ONNX .* describes"):
            bundle.onnx_path
    else:
        assert bundle.model_path == onnx


def test_an_engine_or_checkpoint_named_by_model_does_not_let_onnx_runtime_past(exported):
    """ONNX Runtime given --model CHECKPOINT runs the folder's ONNX: checked as well."""
    from oncolens.appliance.backends.ort import OnnxRuntimeBackend
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.errors import BundleError
    _replace_by_hand(exported)
    bundle = load_bundle(os.path.join(exported, "model_best.pth.tar"))
    with pytest.raises(BundleError, match="is not the ONNX .* describes"):
        OnnxRuntimeBackend(bundle)
