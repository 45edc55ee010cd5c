"""``export onnx`` of a checkpoint from jetson-inference's train.py before December 2022 (no
``classes``, only ``num_classes``) into a folder without model.json: refused whatever lay
beside it; now a labels.txt beside the checkpoint or in the model folder, with as many
classes as the checkpoint has outputs, gives them (an info line says so), and the refusal
names the fix where there is none."""
import json
import logging
import os

from conftest import run_cli
from test_jetson_checkpoint_preprocess import RES, _jetson_checkpoint

CLASSES = ["benign", "malignant", "normal"]


def _labels(folder, classes):
    path = os.path.join(folder, "labels.txt")
    with open(path, "w") as fh:
        fh.write("".join(c + "\n" for c in classes))
    return path


def _one_line_error(code, err):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    return lines[0]


def test_without_a_labels_file_the_refusal_names_the_fix(tmp_path):
    folder = str(tmp_path / "m")
    ckpt = _jetson_checkpoint(folder, with_classes=False)
    line = _one_line_error(*run_cli(["export", "onnx", "--model-dir", folder])[::2])
    assert line == (
        "oncolens export: error: {}: the checkpoint has no 'classes' (jetson-inference's "
        "train.py before December 2022 recorded none) and {} has no model.json: put a "
        "labels.txt in {}, one class a line, in output order (the dataset's, as imagenet "
        "--labels takes it)".format(ckpt, folder, folder))
    assert os.listdir(folder) == ["model_best.pth.tar"]


def test_a_labels_file_in_the_model_folder_gives_the_classes(tmp_path, caplog):
    folder = str(tmp_path / "m")
    ckpt = _jetson_checkpoint(folder, with_classes=False)
    labels = _labels(folder, CLASSES)
    caplog.set_level(logging.INFO)
    code, out, err = run_cli(["export", "onnx", "--model-dir", folder])
    assert code == 0, err
    assert "{} records no 'classes' (jetson-inference's train.py before December 2022): " \
        "taking its 3 classes from {}".format(ckpt, labels) in caplog.messages
    with open(os.path.join(folder, "model.json")) as fh:
        info = json.load(fh)
    assert info["labels"] == CLASSES and info["input"]["shape"] == [3, RES, RES]
    assert info["preprocess"]["crop_ratio"] == RES / 256.0   # that train.py's 256 px resize
    assert os.path.isfile(os.path.join(folder, "resnet18.onnx"))


def test_a_labels_file_beside_a_checkpoint_elsewhere_gives_the_classes(tmp_path):
    ckpt = _jetson_checkpoint(str(tmp_path / "run"), with_classes=False)
    _labels(str(tmp_path / "run"), CLASSES)
    folder = str(tmp_path / "m")
    os.makedirs(folder)
    code, out, err = run_cli(["export", "onnx", "--model-dir", folder, "--input", ckpt])
    assert code == 0, err
    with open(os.path.join(folder, "model.json")) as fh:
        assert json.load(fh)["labels"] == CLASSES
    with open(os.path.join(folder, "labels.txt")) as fh:
        assert fh.read().split() == CLASSES


def test_a_labels_file_with_another_count_is_refused_naming_both(tmp_path):
    folder = str(tmp_path / "m")
    ckpt = _jetson_checkpoint(folder, with_classes=False)
    labels = _labels(folder, CLASSES[:2])
    line = _one_line_error(*run_cli(["export", "onnx", "--model-dir", folder])[::2])
    assert line == ("oncolens export: error: {} lists 2 classes (benign, malignant) but "
                    "{} has 3 outputs: expected one class a line, in output order".format(
                        labels, ckpt))
    assert sorted(os.listdir(folder)) == ["labels.txt", "model_best.pth.tar"]


def test_two_labels_files_that_differ_are_refused(tmp_path):
    ckpt = _jetson_checkpoint(str(tmp_path / "run"), with_classes=False)
    beside = _labels(str(tmp_path / "run"), CLASSES)
    folder = str(tmp_path / "m")
    os.makedirs(folder)
    there = _labels(folder, list(reversed(CLASSES)))
    line = _one_line_error(*run_cli(["export", "onnx", "--model-dir", folder, "--input",
                                     ckpt])[::2])
    assert line.startswith("oncolens export: error: {} and {} list different classes"
                           .format(beside, there))
    assert os.listdir(folder) == ["labels.txt"]


def test_the_export_check_names_the_labels_file_the_classes_came_from(tmp_path):
    """The check's bundle named model.json (not yet written) as the source of the labels of
    a checkpoint that records none, in any message about them: the labels.txt it is."""
    from oncolens.export.onnx_export import export_onnx
    folder = str(tmp_path / "m")
    _jetson_checkpoint(folder, with_classes=False)
    labels = _labels(folder, CLASSES)
    seen = []
    export_onnx(folder, check=lambda bundle: seen.append(bundle.labels_source))
    assert seen == [labels]
