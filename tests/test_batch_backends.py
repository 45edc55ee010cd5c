"""The OpenVINO backend and the dynamic-batch copy give ONNX Runtime's probabilities."""
import os
import shutil

import numpy as np
import pytest


def _batch(tiny_bundle, tiny_data, n):
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.sources import open_source
    clf = Classifier.open(tiny_bundle, backend="onnxruntime")
    images = [f.image for f in open_source(os.path.join(tiny_data, "val"))][:n]
    return clf, clf.preprocessor.batch(images)


def test_dynamic_batch_copy_matches_the_export(tiny_bundle, tiny_data):
    from oncolens.appliance.backends import open_backend
    from oncolens.appliance.variants import dynamic_batch
    clf, batch = _batch(tiny_bundle, tiny_data, 7)
    want = clf.backend.infer(batch).probs  # the batch-1 export, run in chunks of 1
    dyn = dynamic_batch(clf.bundle)
    assert dyn.model_path != clf.bundle.model_path and dyn.model_sha256 == clf.bundle.model_sha256
    with open_backend("onnxruntime", dyn) as backend:
        assert backend.max_batch is None
        np.testing.assert_allclose(backend.infer(batch).probs, want, atol=1e-5)


def test_a_damaged_onnx_is_one_line_and_leaves_no_variants_folder(tiny_bundle, tiny_data,
                                                                   tmp_path):
    """batch's dynamic-batch copy of an ONNX file that is not a model: one line naming the
    file (it was a protobuf DecodeError traceback), no results file, no empty variants/."""
    from conftest import run_cli
    model = str(tmp_path / "model")
    shutil.copytree(tiny_bundle, model, ignore=shutil.ignore_patterns("variants"))
    onnx = [name for name in os.listdir(model) if name.endswith(".onnx")][0]
    with open(os.path.join(model, onnx), "wb") as fh:
        fh.write(b"\x08\x07not a model" * 100)
    from test_export_onnx import _record_as_exported
    _record_as_exported(model, os.path.join(model, onnx))  # else refused as not the export
    results = str(tmp_path / "r.csv")
    code, out, err = run_cli(["batch", "--model", model, "--backend", "onnxruntime",
                              os.path.join(tiny_data, "val"), "--results", results])
    assert code == 1, err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and onnx in lines[0] and "not an ONNX model" in lines[0], err
    assert "Traceback" not in err
    assert not os.path.exists(results)
    assert not os.path.exists(os.path.join(model, "variants"))


def test_a_failed_write_of_the_dynamic_batch_copy_leaves_no_variants_folder(
        tiny_bundle, tmp_path, monkeypatch):
    """A full disk (or a refused permission) while the copy is written left the variants/
    folder made for it behind, empty, as a damaged ONNX did before it was one line."""
    import onnx
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.variants import dynamic_batch
    model = str(tmp_path / "model")
    shutil.copytree(tiny_bundle, model, ignore=shutil.ignore_patterns("variants"))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(onnx, "save", full)
    with pytest.raises(OSError):
        dynamic_batch(load_bundle(model))
    assert not os.path.exists(os.path.join(model, "variants"))


def _read_only_copy(tiny_bundle, tmp_path, with_variants):
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.variants import dynamic_batch
    d = tmp_path / "ro"
    d.mkdir()
    for f in ("model.json", "labels.txt", "resnet18.onnx"):
        shutil.copy(os.path.join(tiny_bundle, f), str(d))
    if with_variants:  # shipped with the model, then the folder is made read-only
        dynamic_batch(load_bundle(str(d)))
        os.chmod(str(d / "variants"), 0o555)
    os.chmod(str(d), 0o555)  # no write bit anywhere: read-only even for root
    return str(d)


def test_variants_of_a_folder_without_write_bits_go_to_the_cache(tiny_bundle, tmp_path,
                                                                 monkeypatch):
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.variants import dynamic_batch
    cache = str(tmp_path / "cache")
    monkeypatch.setenv("ONCOLENS_CACHE_DIR", cache)
    d = _read_only_copy(tiny_bundle, tmp_path, with_variants=False)
    try:
        dyn = dynamic_batch(load_bundle(d))
    finally:
        os.chmod(d, 0o755)
    assert not os.path.exists(os.path.join(d, "variants"))
    assert dyn.model_path.startswith(os.path.join(cache, "variants") + os.sep)


def test_variants_shipped_in_a_read_only_folder_are_used(tiny_bundle, tmp_path, monkeypatch):
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.variants import dynamic_batch
    monkeypatch.setenv("ONCOLENS_CACHE_DIR", str(tmp_path / "cache"))
    d = _read_only_copy(tiny_bundle, tmp_path, with_variants=True)
    try:
        dyn = dynamic_batch(load_bundle(d))
    finally:
        os.chmod(os.path.join(d, "variants"), 0o755)
        os.chmod(d, 0o755)
    assert os.path.dirname(dyn.model_path) == os.path.join(d, "variants")
    assert not os.path.exists(str(tmp_path / "cache"))


@pytest.mark.parametrize("n", [1, 5, 8])
def test_openvino_matches_onnxruntime(tiny_bundle, tiny_data, n):
    pytest.importorskip("openvino")
    from oncolens.appliance.backends import open_backend
    clf, batch = _batch(tiny_bundle, tiny_data, n)
    if batch.shape[0] < n:  # 9 val images: repeat to reach n
        batch = np.concatenate([batch] * (n // batch.shape[0] + 1))[:n]
    want = clf.backend.infer(batch).probs
    with open_backend("openvino", clf.bundle) as backend:  # odd n: split and padded
        got = backend.infer(batch).probs
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_openvino_missing_is_one_clear_error(tiny_bundle, monkeypatch):
    import builtins
    from oncolens.appliance.backends import open_backend
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.errors import MissingDependency
    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(MissingDependency) as err:
        open_backend("openvino", load_bundle(tiny_bundle))
    assert "openvino" in str(err.value) and "oncolens[openvino]" in str(err.value)


def test_openvino_computes_fp32_unless_bf16_is_asked_for(tiny_bundle, tiny_data):
    """OpenVINO's CPU plugin would compute an fp32 model in bf16 on CPUs with AVX512-BF16 or
    AMX; the backend pins fp32, and bf16 only when asked (and where the CPU has it)."""
    ov = pytest.importorskip("openvino")
    from oncolens.appliance.backends import open_backend
    from oncolens.appliance.backends.openvino import precision_config
    from oncolens.appliance.errors import UsageError
    clf, batch = _batch(tiny_bundle, tiny_data, 4)
    want = clf.backend.infer(batch).probs
    with open_backend("openvino", clf.bundle) as backend:
        got = backend.infer(batch).probs
        compiled = backend._compiled(4, "THROUGHPUT")[0]
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
        assert backend.precision == "fp32"
    np.testing.assert_allclose(got, want, atol=1e-4)

    class NoBf16Core(object):
        def get_property(self, device, name):
            return ["FP32", "INT8"]

    with pytest.raises(UsageError) as err:
        precision_config(NoBf16Core(), "bf16")
    assert "no native bf16" in str(err.value) and "\n" not in str(err.value)
    assert precision_config(NoBf16Core(), "fp32") == {"INFERENCE_PRECISION_HINT": "f32"}
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with open_backend("openvino", clf.bundle, precision="bf16") as backend:
            assert backend.precision == "bf16"
            compiled = backend._compiled(1, "LATENCY")[0]
            assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
            half = backend.infer(batch).probs
        np.testing.assert_allclose(half, want, atol=0.05)  # bf16 keeps ~3 significant digits


def test_resume_refuses_rows_of_another_backend(tiny_bundle, tiny_data, tmp_path):
    """Rows name their backend, but the metrics cover the whole file: a --resume with
    another backend (same model file, same precision) would mix two runtimes' figures in
    them without a word, so it is refused in one line and the file is left as it was."""
    from conftest import run_cli
    folder = os.path.join(tiny_data, "test")
    results = str(tmp_path / "r.csv")
    code, _, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                            "--backend", "onnxruntime", "--no-progress"])
    assert code == 0, err
    before = open(results, "rb").read()
    code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                              "--backend", "torch", "--no-progress", "--resume"])
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert "backend onnxruntime" in err and "torch" in err and "--backend onnxruntime" in err
    assert "--overwrite" in err and open(results, "rb").read() == before
    code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                              "--backend", "onnxruntime", "--no-progress", "--resume"])
    assert code == 0 and open(results, "rb").read() == before, err  # all there: skipped


def test_rows_name_the_checksum_of_the_file_the_backend_runs(tiny_bundle, tiny_data, tmp_path):
    """--backend torch on a model folder runs its checkpoint: the rows name the checkpoint's
    SHA-256, not the ONNX's beside it (onnxruntime's rows name the ONNX)."""
    from conftest import run_cli
    from oncolens.appliance.bundle import sha256_file
    from oncolens.appliance.results import read_rows
    want = {"torch": sha256_file(os.path.join(tiny_bundle, "model_best.pth.tar")),
            "onnxruntime": sha256_file(os.path.join(tiny_bundle, "resnet18.onnx"))}
    assert want["torch"] != want["onnxruntime"]
    for backend, sha in want.items():
        out = str(tmp_path / "{}.csv".format(backend))
        code, _, err = run_cli(["batch", "--model", tiny_bundle, "--backend", backend,
                                os.path.join(tiny_data, "val"), "--results", out])
        assert code == 0, err
        rows = read_rows(out)
        assert rows and {r["model_sha256"] for r in rows} == {sha}, backend


def test_torch_rows_name_the_checkpoint_bytes_that_were_loaded(tiny_bundle, tiny_data, tmp_path,
                                                               monkeypatch):
    """The torch backend loaded the checkpoint, and its checksum was taken by reading the
    file again later: a best epoch a running training saved in between was named in every
    row for predictions of the earlier epoch's weights. It is now the loaded bytes' SHA-256."""
    from conftest import run_cli
    from test_export_onnx_folder import _other_checkpoint
    from oncolens.appliance import archs
    from oncolens.appliance.bundle import sha256_file
    from oncolens.appliance.results import read_rows
    folder = str(tmp_path / "model")
    shutil.copytree(tiny_bundle, folder, ignore=shutil.ignore_patterns("variants", "eval-*"))
    path = os.path.join(folder, "model_best.pth.tar")
    loaded = sha256_file(path)
    newer = _other_checkpoint(str(tmp_path / "training"))
    real = archs.model_from_checkpoint

    def best_epoch_saved_meanwhile(ckpt, checkpoint_path=None):
        shutil.copy(newer, path + ".tmp")
        os.replace(path + ".tmp", path)  # as training saves it
        return real(ckpt, checkpoint_path)
    monkeypatch.setattr(archs, "model_from_checkpoint", best_epoch_saved_meanwhile)
    out = str(tmp_path / "r.csv")
    code, _, err = run_cli(["batch", "--model", folder, "--backend", "torch", "--no-progress",
                            os.path.join(tiny_data, "val"), "--results", out])
    assert code == 0, err
    assert {r["model_sha256"] for r in read_rows(out)} == {loaded} != {sha256_file(newer)}
