"""The model bundle contract: every error is one clear line naming both sides."""
import json
import os
import shutil

import pytest

from oncolens.appliance import bundle
from oncolens.appliance.errors import BundleError
from oncolens.appliance.preprocess import imagenet_preprocess


@pytest.fixture
def bundle_dir(tiny_bundle, tmp_path):
    out = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, out)
    return out


def _edit(path, **changes):
    with open(path) as fh:
        info = json.load(fh)
    info.update(changes)
    with open(path, "w") as fh:
        json.dump(info, fh)


def test_roundtrip(tmp_path):
    info = bundle.new_model_info("resnet18", ["a", "b"], 64, imagenet_preprocess(64))
    path = str(tmp_path / "model.json")
    bundle.write_model_info(path, info)
    assert bundle.read_model_info(path) == info
    bundle.write_labels(str(tmp_path / "labels.txt"), ["a", "b"])
    assert bundle.read_labels(str(tmp_path / "labels.txt")) == ["a", "b"]


def test_missing_files(tmp_path):
    with pytest.raises(BundleError, match="model not found: .*nope"):
        bundle.load_bundle(str(tmp_path / "nope"))
    with pytest.raises(BundleError, match="no model.json and no labels file: pass --labels"):
        bundle.load_bundle(str(tmp_path))
    with pytest.raises(BundleError, match="labels file not found"):
        bundle.read_labels(str(tmp_path / "labels.txt"))


def test_unknown_key_from_newer_version(bundle_dir):
    path = os.path.join(bundle_dir, "model.json")
    _edit(path, quantum_flux=1)
    with pytest.raises(BundleError, match=r"unknown key\(s\) 'quantum_flux' \(written by a newer"):
        bundle.load_bundle(bundle_dir)


def test_newer_schema(bundle_dir):
    _edit(os.path.join(bundle_dir, "model.json"), schema=99)
    with pytest.raises(BundleError, match="written by a newer OncoLens .schema 99"):
        bundle.load_bundle(bundle_dir)


def test_labels_count_differs_from_model_outputs(bundle_dir):
    from oncolens.appliance.classifier import Classifier
    os.remove(os.path.join(bundle_dir, "model.json"))
    labels = os.path.join(bundle_dir, "labels.txt")
    with open(labels, "a") as fh:
        fh.write("extra\n")
    with pytest.raises(BundleError) as err:
        Classifier.open(os.path.join(bundle_dir, "resnet18.onnx"), labels=labels,
                        backend="onnxruntime")
    msg = str(err.value)
    assert "lists 4 classes" in msg and "resnet18.onnx has 3 outputs" in msg
    assert "\n" not in msg


def test_labels_file_disagrees_with_model_json(bundle_dir, tmp_path):
    other = str(tmp_path / "labels.txt")
    bundle.write_labels(other, ["x", "y", "z"])
    with pytest.raises(BundleError, match="lists .* but .*model.json lists"):
        bundle.load_bundle(bundle_dir, labels=other)


def test_wrong_blob_name_names_the_alternatives(tiny_bundle):
    from oncolens.appliance.classifier import Classifier
    with pytest.raises(BundleError, match="has no input named 'data' .it has: input_0.: pass "
                                          "--input-blob"):
        Classifier.open(tiny_bundle, input_blob="data", backend="onnxruntime")


def test_invalid_json_and_num_classes(bundle_dir):
    path = os.path.join(bundle_dir, "model.json")
    _edit(path, num_classes=5)
    with pytest.raises(BundleError, match="'num_classes' is 5 but 'labels' has 3"):
        bundle.load_bundle(bundle_dir)
    with open(path, "w") as fh:
        fh.write("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        bundle.load_bundle(bundle_dir)
