"""The runtime's engine picker and an ONNX replaced by hand (copied in, not exported, so
model.json still lists the engines of the earlier one), through the TensorRT stand-in
(tests/trt_standin.py): the listed engine ran the earlier weights, silently. Each entry now
records the ONNX's size and mtime (ns) at the build; at each start they are compared and the
ONNX is hashed only when they differ."""
import json
import logging
import os
import stat

import numpy as np
import pytest

import trt_standin
from test_export_tensorrt_standin import (_backend, _bundle_copy, _ort_probs, cache,  # noqa: F401
                                          dyn_bundle)
from conftest import run_cli

NAME = "resnet18.onnx.1.1.8201.GPU.FP16.engine"
X = np.random.RandomState(0).normal(0, 1, (3, 3, 32, 32)).astype(np.float32)


def _replace_by_hand(d):
    """Another network of the same shape and file size copied over the ONNX: the last
    layer's weights negated (model.json untouched)."""
    import onnx
    from onnx import numpy_helper
    path = os.path.join(d, "resnet18.onnx")
    model = onnx.load(path)
    fc = [t for t in model.graph.initializer if len(t.dims) == 2][-1]
    fc.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(fc), fc.name))
    size = os.path.getsize(path)
    other = path + ".new"
    onnx.save(model, other)
    assert os.path.getsize(other) == size   # only the time tells them apart
    with open(other, "rb") as src, open(path, "wb") as dst:   # cp: the same file rewritten
        dst.write(src.read())
    os.remove(other)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))  # a second later, surely


def _replace_and_record(d):
    """_replace_by_hand, and model.json's export record made to follow the new ONNX (edited
    by hand, or by another tool) while its engines list is left as it was: a hand-replaced
    ONNX whose record still names the earlier one is refused at load (test_onnx_replaced_at_
    load.py), before any engine is picked."""
    from oncolens.appliance.bundle import sha256_file
    _replace_by_hand(d)
    onnx, path = os.path.join(d, "resnet18.onnx"), os.path.join(d, "model.json")
    info = json.load(open(path))
    st = os.stat(onnx)
    info["onnx"].update(sha256=sha256_file(onnx), size=st.st_size, mtime_ns=st.st_mtime_ns)
    with open(path, "w") as fh:
        json.dump(info, fh)


def _built(d, monkeypatch):
    state = trt_standin.install(monkeypatch, version="8.2.1.8")
    code, out, err = run_cli(["export", "engine", "--model-dir", d])
    assert code == 0, err
    return state


def _entries(d):
    return json.load(open(os.path.join(d, "model.json")))["engines"]


def _hashes_of(monkeypatch, path):
    """Count the SHA-256 computations of ``path``."""
    from oncolens.appliance import bundle
    real, seen = bundle.sha256_file, []

    def counted(p, *args, **kwargs):
        if os.path.abspath(p) == os.path.abspath(path):
            seen.append(p)
        return real(p, *args, **kwargs)
    monkeypatch.setattr(bundle, "sha256_file", counted)
    return seen


def test_the_entry_records_the_onnx_size_and_time_and_a_start_hashes_nothing(
        dyn_bundle, tmp_path, cache, monkeypatch):
    d = _bundle_copy(dyn_bundle, tmp_path)
    _built(d, monkeypatch)
    onnx = os.path.join(d, "resnet18.onnx")
    (entry,) = _entries(d)
    st = os.stat(onnx)
    assert (entry["onnx_size"], entry["onnx_mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    hashed = _hashes_of(monkeypatch, onnx)
    backend = _backend(d)
    assert backend.engine_path == os.path.join(d, NAME) and hashed == []
    backend.close()


def test_an_onnx_replaced_by_hand_gets_its_engine_built_again(dyn_bundle, tmp_path, cache,
                                                              monkeypatch, caplog):
    d = _bundle_copy(dyn_bundle, tmp_path)
    state = _built(d, monkeypatch)
    before = _ort_probs(d, X).probs
    _replace_and_record(d)
    now = _ort_probs(d, X).probs
    assert np.abs(now - before).max() > 0.05          # the two networks answer differently
    caplog.set_level(logging.INFO)
    backend = _backend(d)
    probs = backend.infer(X).probs
    backend.close()
    assert state.builds == 2
    np.testing.assert_allclose(probs, now, atol=1e-2)   # the new weights, not the old engine's
    onnx = os.path.join(d, "resnet18.onnx")
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("{} was built from another ONNX than the current {} (SHA-256 "
                            .format(os.path.join(d, NAME), onnx)) for w in warned), warned
    from oncolens.appliance.bundle import sha256_file
    (entry,) = _entries(d)
    assert entry["onnx_sha256"] == sha256_file(onnx)
    assert entry["onnx_mtime_ns"] == os.stat(onnx).st_mtime_ns


def test_without_rebuilding_it_is_refused_in_one_line_naming_both(dyn_bundle, tmp_path, cache,
                                                                  monkeypatch):
    from oncolens.appliance import engines
    d = _bundle_copy(dyn_bundle, tmp_path)
    state = _built(d, monkeypatch)
    _replace_and_record(d)
    with pytest.raises(engines.EngineMismatch) as err:
        _backend(d, allow_rebuild=False)
    msg = str(err.value)
    assert "\n" not in msg and state.builds == 1
    assert msg.startswith("{} was built from another ONNX than the current {}".format(
        os.path.join(d, NAME), os.path.join(d, "resnet18.onnx")))
    assert msg.endswith("rebuild it with 'oncolens export engine --model-dir {}'".format(d))


def test_an_engine_named_by_model_is_refused_too_unless_rebuilding(dyn_bundle, tmp_path, cache,
                                                                   monkeypatch):
    from oncolens.appliance import engines
    d = _bundle_copy(dyn_bundle, tmp_path)
    state = _built(d, monkeypatch)
    _replace_and_record(d)
    with pytest.raises(engines.EngineMismatch, match="was built from another ONNX"):
        _backend(os.path.join(d, NAME))
    assert state.builds == 1
    backend = _backend(os.path.join(d, NAME), allow_rebuild=True)
    probs = backend.infer(X).probs
    backend.close()
    assert state.builds == 2
    np.testing.assert_allclose(probs, _ort_probs(d, X).probs, atol=1e-2)


def test_an_onnx_only_touched_is_hashed_once_and_its_engine_kept(dyn_bundle, tmp_path, cache,
                                                                 monkeypatch):
    d = _bundle_copy(dyn_bundle, tmp_path)
    state = _built(d, monkeypatch)
    onnx = os.path.join(d, "resnet18.onnx")
    st = os.stat(onnx)
    os.utime(onnx, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    hashed = _hashes_of(monkeypatch, onnx)
    backend = _backend(d)
    assert backend.engine_path == os.path.join(d, NAME) and state.builds == 1
    backend.close()
    assert len(hashed) == 1


@pytest.mark.parametrize("replaced", [False, True])
def test_an_entry_from_before_the_size_and_time_is_checked_by_hash(dyn_bundle, tmp_path, cache,
                                                                   monkeypatch, replaced):
    """Entries written by an older OncoLens have no onnx_size / onnx_mtime_ns: the ONNX is
    hashed (once a start) and compared with the entry's onnx_sha256."""
    d = _bundle_copy(dyn_bundle, tmp_path)
    state = _built(d, monkeypatch)
    path = os.path.join(d, "model.json")
    info = json.load(open(path))
    for entry in info["engines"]:
        del entry["onnx_size"], entry["onnx_mtime_ns"]
    with open(path, "w") as fh:
        json.dump(info, fh)
    if replaced:
        _replace_and_record(d)
    hashed = _hashes_of(monkeypatch, os.path.join(d, "resnet18.onnx"))
    backend = _backend(d, allow_rebuild=None if replaced else False)
    backend.close()
    assert state.builds == (2 if replaced else 1)
    assert len(hashed) == 1


@pytest.mark.parametrize("read_only", [False, True])
def test_an_onnx_replaced_by_hand_under_the_same_record_is_refused_at_load(
        dyn_bundle, tmp_path, cache, monkeypatch, read_only):
    """model.json left as it was (its labels, preprocessing and export SHA-256 the earlier
    ONNX's): refused before any engine is picked or built, rebuilding allowed or not, in a
    read-only folder (its engine in the cache's engines.json) as well."""
    from oncolens.appliance.bundle import sha256_file
    from oncolens.appliance.errors import BundleError
    d = _bundle_copy(dyn_bundle, tmp_path)
    recorded = json.load(open(os.path.join(d, "model.json")))["onnx"]["sha256"]
    state = _built(d, monkeypatch)
    _replace_by_hand(d)
    onnx = os.path.join(d, "resnet18.onnx")
    if read_only:
        os.chmod(d, stat.S_IRUSR | stat.S_IXUSR)
    try:
        for model, rebuild in ((d, True), (d, None), (os.path.join(d, NAME), True)):
            with pytest.raises(BundleError) as err:
                _backend(model, allow_rebuild=rebuild)
            assert str(err.value).startswith(
                "{} is not the ONNX {} describes (SHA-256 {}... at its export, {}... now".format(
                    onnx, os.path.join(d, "model.json"), recorded[:12], sha256_file(onnx)[:12]))
    finally:
        os.chmod(d, 0o755)
    assert state.builds == 1


def test_verify_skips_such_an_engine_saying_why(dyn_bundle, tmp_path, cache, monkeypatch):
    from oncolens.appliance.bundle import load_bundle
    from oncolens.export.verify import run_engines
    d = _bundle_copy(dyn_bundle, tmp_path)
    _built(d, monkeypatch)
    _replace_and_record(d)
    ((label, precision, probs, skipped),) = list(run_engines(load_bundle(d), X))
    assert probs is None and "was built from another ONNX than the current" in skipped


def test_the_rebuild_says_why_in_one_warning(dyn_bundle, tmp_path, cache, monkeypatch, caplog):
    """The engine replaced is the one the picker refused: build_for_bundle's 'replacing …'
    warning repeated the picker's reason."""
    d = _bundle_copy(dyn_bundle, tmp_path)
    state = _built(d, monkeypatch)
    _replace_and_record(d)
    caplog.set_level(logging.INFO)
    _backend(d).close()
    assert state.builds == 2
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "was built from another ONNX" in warned[0], warned
    caplog.clear()
    _replace_and_record(d)
    _backend(os.path.join(d, NAME), allow_rebuild=True).close()
    assert state.builds == 3
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "was built from another ONNX" in warned[0], warned
