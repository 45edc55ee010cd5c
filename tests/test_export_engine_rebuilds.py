"""``oncolens export engine`` deciding whether an engine of the right name is up to date,
and what it records, through the TensorRT stand-in (tests/trt_standin.py)."""
import json
import os

import trt_standin
from conftest import run_cli
from test_export_tensorrt_standin import _backend, _bundle_copy, cache, dyn_bundle  # noqa: F401


def _listed(d):
    return sorted((e["file"], e["device_name"])
                  for e in json.load(open(os.path.join(d, "model.json")))["engines"])


def test_an_engine_built_for_another_gpu_with_the_same_name_is_rebuilt(
        dyn_bundle, tmp_path, cache, monkeypatch):
    """Engine names hold no GPU: a folder copied from an Orin to a Nano with the same
    TensorRT was "up to date" there, and the runtime then refused that engine, naming the
    command that had just called it up to date; it is now built again for this GPU."""
    state = trt_standin.install(monkeypatch, version="8.2.1.8", device_name="Orin")
    d = _bundle_copy(dyn_bundle, tmp_path)
    assert run_cli(["export", "engine", "--model-dir", d])[0] == 0
    trt_standin.switch(device_name="NVIDIA Tegra X1")        # the folder copied to a Nano
    code, out, err = run_cli(["export", "engine", "--model-dir", d])
    assert code == 0, err
    assert out.startswith("built ") and "GPU 'NVIDIA Tegra X1'" in out and state.builds == 2
    name = "resnet18.onnx.1.1.8201.GPU.FP16.engine"
    assert _listed(d) == [(name, "NVIDIA Tegra X1")]
    backend = _backend(d)                                    # the runtime takes it now
    assert backend.engine_path == os.path.join(d, name)
    backend.close()
    code, out, err = run_cli(["export", "engine", "--model-dir", d])
    assert code == 0 and out.startswith("up to date:") and state.builds == 2


def test_an_engine_listed_by_another_build_meanwhile_stays_listed(dyn_bundle, tmp_path, cache,
                                                                   monkeypatch):
    """Two builds at once (FP16 and FP32): each wrote back the model.json it had read when
    it began, so the one that finished last dropped the other's entry, leaving its engine
    unlisted; model.json is now read again just before the entry is added."""
    from oncolens.appliance.backends import trt_build
    trt_standin.install(monkeypatch, version="8.2.1.8")
    d = _bundle_copy(dyn_bundle, tmp_path)
    real = trt_build.build_plan
    others = []

    def meanwhile(*args, **kwargs):      # the FP32 build runs while FP16 is being built
        plan = real(*args, **kwargs)
        if not others:
            others.append(None)
            others[0] = run_cli(["export", "engine", "--model-dir", d, "--precision", "fp32"])
        return plan
    monkeypatch.setattr(trt_build, "build_plan", meanwhile)
    code, out, err = run_cli(["export", "engine", "--model-dir", d, "--precision", "fp16"])
    assert code == 0 and others[0][0] == 0, err
    assert _listed(d) == [("resnet18.onnx.1.1.8201.GPU.FP16.engine", "NVIDIA Tegra X1"),
                          ("resnet18.onnx.1.1.8201.GPU.FP32.engine", "NVIDIA Tegra X1")]


def test_an_engine_no_entry_lists_is_rebuilt_with_a_warning_saying_so(dyn_bundle, tmp_path,
                                                                       cache, monkeypatch,
                                                                       caplog):
    """An engine written by a build stopped before its model.json entry was added was
    rebuilt with a warning that it "was not built from the current ONNX", which nothing
    recorded; the warning now says what is known: no entry records it."""
    from oncolens.appliance.backends import trt_build
    state = trt_standin.install(monkeypatch, version="8.2.1.8")
    d = _bundle_copy(dyn_bundle, tmp_path)

    def stopped(*args):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:              # Ctrl-C after the engine is written
        patch.setattr(trt_build, "record", stopped)
        assert run_cli(["export", "engine", "--model-dir", d])[0] == 130
    name = "resnet18.onnx.1.1.8201.GPU.FP16.engine"
    assert os.path.isfile(os.path.join(d, name)) and _listed(d) == []
    code, out, err = run_cli(["export", "engine", "--model-dir", d])
    assert code == 0 and out.startswith("built ") and state.builds == 2, err
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "replacing {}: no entry in {} records which ONNX and GPU it was built for".format(
        os.path.join(d, name), os.path.join(d, "model.json")) in " ".join(warned)
    assert not any("not built from the current" in w for w in warned)
    assert _listed(d) == [(name, "NVIDIA Tegra X1")]


def test_a_read_only_model_json_is_refused_before_the_build(dyn_bundle, tmp_path, cache,
                                                             monkeypatch):
    """A model.json made read-only (0444) in a writable folder was replaced by the build
    (a new file moved over it, mode kept): now the build is refused in one line, before it
    starts, and nothing is written."""
    state = trt_standin.install(monkeypatch, version="8.2.1.8")
    d = _bundle_copy(dyn_bundle, tmp_path)
    json_path = os.path.join(d, "model.json")
    os.chmod(json_path, 0o444)
    before = sorted(os.listdir(d)), open(json_path, "rb").read()
    code, out, err = run_cli(["export", "engine", "--model-dir", d])
    assert code == 2 and state.builds == 0
    assert err.strip().splitlines() == [
        "oncolens export engine: error: {} is read-only (mode 0444) and this build (listing "
        "its engine) rewrites it: make it writable (chmod u+w {}) to let it; nothing was "
        "written".format(json_path, json_path)]
    assert (sorted(os.listdir(d)), open(json_path, "rb").read()) == before
    os.chmod(json_path, 0o644)
    assert run_cli(["export", "engine", "--model-dir", d])[0] == 0 and state.builds == 1
