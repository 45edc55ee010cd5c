"""A jetson-inference checkpoint (no ``preprocess`` record) is run on the images its train.py
evaluated it on: the shorter side resized to the resolution and the centre kept (crop ratio
1.0) for the checkpoints that record ``classes``; the shorter side resized to 256 px and the
centre ``resolution`` px kept for the earlier ones."""
import json
import os

import numpy as np
import pytest

from conftest import run_cli

RES = 64


def _jetson_checkpoint(folder, with_classes):
    """A random ResNet-18 saved with the keys of jetson-inference's train.py: the current one
    (classes, accuracy) or the one before December 2022 (best_acc1, no classes)."""
    import torch
    from oncolens.appliance.archs import build_model
    torch.manual_seed(0)
    model = build_model("resnet18", 3)
    keys = {"epoch": 1, "arch": "resnet18", "resolution": RES, "num_classes": 3,
            "state_dict": model.state_dict()}
    if with_classes:
        keys.update(classes=["benign", "malignant", "normal"],
                    accuracy={"train": 50.0, "val": 40.0})
    else:
        keys["best_acc1"] = torch.tensor(40.0)
    os.makedirs(folder)
    path = os.path.join(folder, "model_best.pth.tar")
    torch.save(keys, path)
    return path


def _scan(width=200, height=120):
    """A structured picture whose border differs from its centre, so crops tell apart."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([(xx * 255 // width), (yy * 255 // height),
                    ((xx // 40 + yy // 40) % 2) * 200], axis=-1).astype(np.uint8)
    rgb[:, :30] = 250   # a bright band at the left that a 1.0 crop of the centre cuts off
    return rgb


def _torchvision_val(rgb, resize):
    """What train.py's val transform feeds the network (before normalisation), as 0..1."""
    from PIL import Image
    from torchvision import transforms
    pipe = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(RES),
                               transforms.ToTensor()])
    return pipe(Image.fromarray(rgb)).numpy()


def _ours(spec, rgb):
    """What the appliance feeds the network for ``spec`` (before normalisation), as 0..1."""
    from oncolens.appliance.preprocess import Preprocessor
    out = Preprocessor(spec, (3, RES, RES)).resize(rgb)
    assert out.shape == (RES, RES, 3)
    return out.astype(np.float32).transpose(2, 0, 1) / 255.0


def _check_window(spec, resize):
    """``spec`` cuts the window torchvision's val transform cuts, and a crop ratio off by
    the difference between the two train.py versions would not."""
    rgb = _scan()
    want = _torchvision_val(rgb, resize)
    assert np.abs(_ours(spec, rgb) - want).mean() < 0.02   # the same window, up to the filter
    other = dict(spec, crop_ratio=RES / 256.0 if spec["crop_ratio"] == 1.0 else 1.0)
    assert np.abs(_ours(other, rgb) - want).mean() > 0.05  # the other window is told apart


def test_export_records_the_crop_of_the_current_train_py(tmp_path):
    folder = str(tmp_path / "m")
    _jetson_checkpoint(folder, with_classes=True)
    code, out, err = run_cli(["export", "onnx", "--model-dir", folder])
    assert code == 0, err
    with open(os.path.join(folder, "model.json")) as f:
        spec = json.load(f)["preprocess"]
    assert spec["resize"] == "center_crop" and spec["crop_ratio"] == 1.0
    _check_window(spec, RES)


@pytest.mark.parametrize("with_classes, ratio, resize", [(True, 1.0, RES),
                                                         (False, RES / 256.0, 256)])
def test_the_torch_backend_runs_a_bare_checkpoint_on_its_validation_crop(
        tmp_path, with_classes, ratio, resize):
    from oncolens.appliance.classifier import Classifier
    path = _jetson_checkpoint(str(tmp_path / "m"), with_classes)
    labels = str(tmp_path / "labels.txt")
    with open(labels, "w") as f:
        f.write("benign\nmalignant\nnormal\n")
    with Classifier.open(path, labels) as clf:
        assert clf.backend.name == "torch" and list(clf.bundle.input_shape) == [3, RES, RES]
        spec = clf.preprocessor.spec
        probs = clf.infer_images([_scan()]).probs
    assert spec["resize"] == "center_crop" and spec["crop_ratio"] == pytest.approx(ratio)
    assert probs.shape == (1, 3)
    _check_window(spec, resize)


def test_an_oncolens_checkpoint_keeps_its_own_record():
    from oncolens.appliance.preprocess import checkpoint_preprocess
    own = {"resize": "stretch", "crop_ratio": 0.875, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert checkpoint_preprocess({"classes": ["a"], "preprocess": own}, RES) == own
