"""oncolens export onnx and the folder it writes into: a model.json of another model (the
current folder, when --model-dir is left out, can be any bundle) is rewritten only with
--overwrite, a read-only model.json or labels.txt never, and a fresh folder takes
jetson-inference's onnx_export.py command line as it is."""
import os
import stat

import pytest

from conftest import run_cli
from test_export_onnx import _copy_bundle, _random_checkpoint
from test_export_onnx_bundle import _snapshot


def _other_checkpoint(folder):
    """Another model of the same arch, classes and resolution (the defaults every
    OncoLens model shares), as a second training run would leave it."""
    import torch
    _random_checkpoint(folder, "resnet18", 32)
    path = os.path.join(folder, "model_best.pth.tar")
    ckpt = torch.load(path)
    ckpt["epoch"] = 7
    torch.save(ckpt, path)
    return path


def test_export_in_another_models_folder_is_refused_without_overwrite(tiny_bundle, tmp_path,
                                                                      monkeypatch):
    """Run in a bundle's folder without --model-dir, with --input naming another model's
    checkpoint, the export rewrote that bundle's model.json and labels.txt (with a warning
    at most): the bundle then described the other model's ONNX with its own training
    record. It is now refused in one line, and done with --overwrite."""
    from oncolens.appliance.bundle import read_model_info, sha256_file
    bundle = _copy_bundle(tiny_bundle, tmp_path)
    other = _other_checkpoint(str(tmp_path / "other"))
    monkeypatch.chdir(bundle)
    before = _snapshot(".")
    code, out, err = run_cli(["export", "onnx", "--input", other, "--output", "x.onnx",
                              "--no-check"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "model.json records another checkpoint (model_best.pth.tar, SHA-256 " in err
    assert "than {} (SHA-256 {}...)".format(other, sha256_file(other)[:12]) in err
    assert "pass --overwrite" in err
    assert _snapshot(".") == before
    code, out, err = run_cli(["export", "onnx", "--input", other, "--output", "x.onnx",
                              "--no-check", "--overwrite"])
    assert code == 0, err
    assert read_model_info("model.json")["onnx"]["checkpoint_sha256"] == sha256_file(other)


def test_export_of_the_folders_own_checkpoint_needs_no_overwrite(tiny_bundle, tmp_path,
                                                                  monkeypatch):
    """A model.json that records this very checkpoint (training's, or the last export's)
    is this model's: a second export under another name goes ahead without --overwrite."""
    from oncolens.appliance.bundle import read_model_info
    bundle = _copy_bundle(tiny_bundle, tmp_path)
    monkeypatch.chdir(bundle)
    for name in ("a.onnx", "b.onnx"):
        code, out, err = run_cli(["export", "onnx", "--output", name, "--no-check"])
        assert code == 0, err
    assert read_model_info("model.json")["onnx"]["file"] == "b.onnx"


def test_onnx_export_py_command_line_on_a_fresh_folder(tmp_path, monkeypatch):
    """jetson-inference's 'python3 onnx_export.py' in a folder train.py filled (its
    checkpoint, no model.json) writes the bundle there, as before."""
    from oncolens.appliance.bundle import read_labels, read_model_info
    _random_checkpoint(str(tmp_path / "cat_dog"), "resnet18", 32, classes=("cat", "dog"))
    monkeypatch.chdir(str(tmp_path / "cat_dog"))
    code, out, err = run_cli(["export", "onnx", "--no-check"])
    assert code == 0, err
    assert os.path.isfile("resnet18.onnx") and read_labels("labels.txt") == ["cat", "dog"]
    assert read_model_info("model.json")["onnx"]["file"] == "resnet18.onnx"


@pytest.mark.parametrize("name", ["model.json", "labels.txt"])
def test_a_read_only_bundle_file_is_never_rewritten(tmp_path, name):
    """A model.json (or a labels.txt the export would change) made read-only in a writable
    folder was replaced by the export, its mode kept: now one line, before the export,
    also with --overwrite."""
    folder = str(tmp_path / "m")
    _random_checkpoint(folder, "resnet18", 32, classes=("cat", "dog"))
    assert run_cli(["export", "onnx", "--model-dir", folder, "--no-check"])[0] == 0
    if name == "labels.txt":
        with open(os.path.join(folder, name), "w") as fh:
            fh.write("dog\ncat\n")               # not the checkpoint's: the export rewrites it
    path = os.path.join(folder, name)
    os.chmod(path, 0o444)
    before = _snapshot(folder)
    code, out, err = run_cli(["export", "onnx", "--model-dir", folder, "--no-check",
                              "--overwrite"])
    assert code == 2 and err.strip().splitlines() == [
        "oncolens export: error: {} is read-only (mode 0444) and this export rewrites it: "
        "make it writable (chmod u+w {}) to let it; nothing was written".format(path, path)]
    assert _snapshot(folder) == before and stat.S_IMODE(os.stat(path).st_mode) == 0o444


def test_the_checkpoint_sha256_recorded_is_that_of_the_weights_exported(tiny_bundle, tmp_path,
                                                                        monkeypatch):
    """The export loaded model_best.pth.tar, then hashed the file again: a best epoch that a
    running training saved in between (checkpoint and model.json's record of it) had its
    SHA-256 recorded for the earlier epoch's weights, which the ONNX holds. The bytes that
    were loaded are now the bytes hashed."""
    import json
    import shutil
    import numpy as np
    import onnxruntime as ort
    from oncolens.appliance.bundle import read_model_info, sha256_file
    from oncolens.export import onnx_export
    bundle = _copy_bundle(tiny_bundle, tmp_path)
    path = os.path.join(bundle, "model_best.pth.tar")
    loaded = sha256_file(path)
    newer = _other_checkpoint(str(tmp_path / "training"))
    real = onnx_export.model_from_checkpoint

    def best_epoch_saved_meanwhile(ckpt, checkpoint_path):
        shutil.copy(newer, path + ".tmp")
        os.replace(path + ".tmp", path)  # as training saves it
        json_path = os.path.join(bundle, "model.json")
        info = read_model_info(json_path)
        info["checkpoint"]["sha256"] = sha256_file(path)
        with open(json_path, "w") as fh:
            json.dump(info, fh)
        return real(ckpt, checkpoint_path)
    monkeypatch.setattr(onnx_export, "model_from_checkpoint", best_epoch_saved_meanwhile)
    code, out, err = run_cli(["export", "onnx", "--model-dir", bundle, "--output", "x.onnx",
                              "--no-check"])
    assert code == 0, err
    record = read_model_info(os.path.join(bundle, "model.json"))["onnx"]
    assert record["checkpoint_sha256"] == loaded != sha256_file(newer)
    x = np.random.RandomState(0).rand(1, 3, 32, 32).astype(np.float32)

    def run(onnx):
        return ort.InferenceSession(onnx, providers=["CPUExecutionProvider"]).run(
            None, {"input_0": x})[0]
    np.testing.assert_allclose(run(os.path.join(bundle, "x.onnx")),
                               run(os.path.join(tiny_bundle, "resnet18.onnx")), atol=1e-6)
