"""Two builds adding their engine entries at once: model.json (and a read-only folder's
engines.json in the cache) is read and written back under the folder's lock, so the second
waits, says so, and neither entry is dropped. Threads race through the real files."""
import json
import logging
import os
import threading

from test_export_tensorrt_standin import _bundle_copy, cache, dyn_bundle  # noqa: F401


def _entry(d, precision, where=None):
    """An entry for an engine built from ``d``'s ONNX (as it is now)."""
    from oncolens.appliance import engines
    from oncolens.appliance.bundle import sha256_file
    onnx = os.path.join(d, "resnet18.onnx")
    name = "resnet18.onnx.1.1.8201.GPU.{}.engine".format(precision.upper())
    return engines.make_entry(os.path.join(where or d, name), d, "8.2.1.8", "NVIDIA Tegra X1",
                              precision, 1, onnx_sha256=sha256_file(onnx)
                              if os.path.isfile(onnx) else "ab" * 32)


def _race(monkeypatch, caplog, module, reader, first, second):
    """Run ``first`` in a thread that stops just after it read the file (``module.reader``),
    then ``second``; the first goes on when the second has finished (unlocked, it wrote the
    file meanwhile) or has said that it waits for the lock."""
    real = getattr(module, reader)
    read, go = threading.Event(), threading.Event()

    def read_then_stop(*args):
        found = real(*args)
        if threading.current_thread().name == "first":
            read.set()
            go.wait(60)  # a guard against a hang, never reached when the test works
        return found
    monkeypatch.setattr(module, reader, read_then_stop)
    caplog.set_level(logging.INFO)
    threads = [threading.Thread(target=first, name="first"),
               threading.Thread(target=second, name="second")]
    threads[0].start()
    assert read.wait(60)
    threads[1].start()
    while threads[1].is_alive() and "waiting for it to finish" not in caplog.text:
        threads[1].join(0.01)
    go.set()
    for thread in threads:
        thread.join(60)
    return caplog.text


def test_two_builds_listing_their_engines_at_once_both_stay_listed(dyn_bundle, tmp_path, cache,
                                                                    monkeypatch, caplog):
    """Each build re-read model.json before adding its entry, but with no lock the second
    could read and write it in the moment between the first's read and write, and the
    first then wrote back its copy without the second's entry."""
    from oncolens.appliance.backends import trt_build
    from oncolens.appliance.bundle import load_bundle
    d = _bundle_copy(dyn_bundle, tmp_path)
    fp16, fp32 = _entry(d, "fp16"), _entry(d, "fp32")
    said = _race(monkeypatch, caplog, trt_build, "read_model_info",
                 lambda: trt_build.record(load_bundle(d), fp16["file"], fp16, False),
                 lambda: trt_build.record(load_bundle(d), fp32["file"], fp32, False))
    listed = json.load(open(os.path.join(d, "model.json")))["engines"]
    assert sorted(e["file"] for e in listed) == sorted([fp16["file"], fp32["file"]])
    assert "{}: another build is adding its engine to it; waiting".format(
        os.path.join(d, "model.json")) in said


def test_two_builds_listing_their_engines_in_the_cache_at_once_both_stay_listed(
        tmp_path, monkeypatch, caplog):
    """The same for engines.json, the cache folder's list of a read-only model folder."""
    from oncolens.appliance import engines
    folder = str(tmp_path / "cache")
    fp16, fp32 = (dict(_entry(str(tmp_path), p, folder)) for p in ("fp16", "fp32"))
    _race(monkeypatch, caplog, engines, "read_cache_index",
          lambda: engines.write_cache_index(folder, fp16),
          lambda: engines.write_cache_index(folder, fp32))
    listed = sorted(e["file"] for e in engines.read_cache_index(folder))
    assert listed == sorted([fp16["file"], fp32["file"]])


def test_an_export_while_a_build_lists_its_engine_keeps_its_model_json(dyn_bundle, tmp_path,
                                                                        cache, monkeypatch,
                                                                        caplog):
    """A build that read model.json just before 'export onnx' replaced it wrote back the
    old model.json (with its entry) over the new one: the folder then held the new ONNX
    with the old ONNX's record. The export now moves its files in under the same lock."""
    import shutil
    from oncolens.appliance.backends import trt_build
    from oncolens.appliance.bundle import load_bundle, read_model_info, sha256_file
    from oncolens.export.onnx_export import export_onnx
    d = _bundle_copy(dyn_bundle, tmp_path)
    shutil.copy(os.path.join(dyn_bundle, "model_best.pth.tar"), d)
    fp16 = _entry(d, "fp16")
    _race(monkeypatch, caplog, trt_build, "read_model_info",
          lambda: trt_build.record(load_bundle(d), fp16["file"], fp16, False),
          lambda: export_onnx(d, overwrite=True, batch=1))   # was --dynamic-batch
    info = read_model_info(os.path.join(d, "model.json"))
    assert info["onnx"]["batch"] == 1
    assert info["onnx"]["sha256"] == sha256_file(os.path.join(d, "resnet18.onnx"))


def test_an_engine_built_from_an_onnx_replaced_during_its_build_is_not_picked(
        dyn_bundle, tmp_path, cache, monkeypatch, caplog):
    """'export onnx' replaced the ONNX (and emptied model.json's engines) while a build of
    minutes ran from the old one; the build then re-read model.json and listed its engine
    there, and the runtime picked that engine, the old model's weights under the new one's
    labels. It is now left unlisted, with a warning, and the runtime builds one anew."""
    import shutil
    import trt_standin
    from conftest import run_cli
    from oncolens.appliance.backends import trt_build
    from oncolens.appliance.backends.tensorrt import TensorRTBackend
    from oncolens.appliance.bundle import load_bundle, read_model_info, sha256_file
    from oncolens.export.onnx_export import export_onnx
    state = trt_standin.install(monkeypatch, version="8.2.1.8")
    d = _bundle_copy(dyn_bundle, tmp_path)
    shutil.copy(os.path.join(dyn_bundle, "model_best.pth.tar"), d)
    real = trt_build.build_plan

    def build_then_export(*args, **kwargs):
        built = real(*args, **kwargs)
        export_onnx(d, overwrite=True, batch=1)   # was --dynamic-batch: another ONNX
        return built
    monkeypatch.setattr(trt_build, "build_plan", build_then_export)
    caplog.set_level(logging.INFO)
    code, out, err = run_cli(["export", "engine", "--model-dir", d])
    monkeypatch.setattr(trt_build, "build_plan", real)
    assert code == 1 and "resnet18.onnx was replaced while the engine was built" in err
    assert len(err.strip().splitlines()) == 1
    info = read_model_info(os.path.join(d, "model.json"))
    now = sha256_file(os.path.join(d, "resnet18.onnx"))
    assert info["onnx"]["sha256"] == now
    assert all(e.get("onnx_sha256") == now for e in info.get("engines") or [])
    assert not [f for f in os.listdir(d) if f.endswith(".engine")]
    builds = state.builds
    backend = TensorRTBackend(load_bundle(d))
    try:
        assert state.builds == builds + 1   # built for the ONNX the folder now holds
    finally:
        backend.close()

