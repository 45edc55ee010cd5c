"""The thin path end to end through the CLI: synth -> train -> export -> classify."""
import os
import re

import numpy as np
import pytest

from conftest import run_cli

LINE = re.compile(r"^imagenet:  (\d{2,3}\.\d{2})% class #(\d+) \((\w+)\)$")


def test_bundle_files_and_onnx_io(tiny_bundle):
    for name in ("checkpoint.pth.tar", "model_best.pth.tar", "labels.txt", "model.json",
                 "resnet18.onnx"):
        assert os.path.isfile(os.path.join(tiny_bundle, name)), name
    import onnxruntime as ort
    sess = ort.InferenceSession(os.path.join(tiny_bundle, "resnet18.onnx"),
                                providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "input_0" and inp.shape == [1, 3, 32, 32]
    assert out.name == "output_0" and out.shape == [1, 3]
    probs = sess.run(None, {"input_0": np.random.rand(1, 3, 32, 32).astype(np.float32)})[0]
    assert abs(float(probs.sum()) - 1.0) < 1e-5 and (probs >= 0).all()


def test_classify_folder_writes_annotated_copies(tiny_bundle, tiny_data, tmp_path):
    from oncolens.appliance.imageio import read_image
    from oncolens.appliance.overlay import layout
    test_dir = os.path.join(tiny_data, "test")
    out_dir = str(tmp_path / "out") + os.sep
    code, out, err = run_cli(["classify", "--model", tiny_bundle, test_dir, out_dir])
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 9
    labels = ["benign", "malignant", "normal"]
    for line in lines:
        m = LINE.match(line)
        assert m, line
        assert labels[int(m.group(2))] == m.group(3)
        assert 0.0 <= float(m.group(1)) <= 100.0
    for cls in labels:
        for name in os.listdir(os.path.join(test_dir, cls)):
            src = read_image(os.path.join(test_dir, cls, name))
            dst = read_image(os.path.join(out_dir, cls, name))  # names and folders kept
            assert src.shape == dst.shape
            diff = np.abs(src.astype(int) - dst.astype(int)).max(axis=2) > 0
            box_h, box_w = layout(src.shape, ["00.00% malignant"])[:2]
            assert diff[:box_h, :box_w].mean() > 0.3          # the text box is drawn
            outside = diff.copy()
            outside[:box_h + 2, :box_w + 2] = False
            assert not outside.any()                            # nothing else changed


def test_classify_single_file_and_refuses_overwrite(tiny_bundle, tiny_data, tmp_path):
    src = os.path.join(tiny_data, "test", "normal", "normal_test_0000.png")
    dst = str(tmp_path / "one.jpg")
    code, out, err = run_cli(["classify", "--model=" + os.path.join(tiny_bundle, "resnet18.onnx"),
                              "--input_blob=input_0", "--output_blob=output_0",
                              "--labels=" + os.path.join(tiny_bundle, "labels.txt"), src, dst])
    assert code == 0, err
    assert os.path.isfile(dst) and LINE.match(out.strip())
    code, out, err = run_cli(["classify", "--model", tiny_bundle, src, dst])
    assert code != 0 and "already exists" in err and "--overwrite" in err
    code, out, err = run_cli(["classify", "--model", tiny_bundle, "--overwrite", src, dst])
    assert code == 0, err


def test_torch_and_onnxruntime_agree(tiny_bundle, tiny_data):
    import torch
    from oncolens.appliance.archs import load_checkpoint, model_from_checkpoint
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.sources import open_source
    clf = Classifier.open(tiny_bundle, backend="onnxruntime")
    images = [f.image for f in open_source(os.path.join(tiny_data, "val"))]
    batch = clf.preprocessor.batch(images)
    ort_probs = clf.infer_images(images).probs
    model = model_from_checkpoint(load_checkpoint(os.path.join(tiny_bundle, "model_best.pth.tar")))
    with torch.no_grad():
        torch_probs = torch.softmax(model(torch.from_numpy(batch)), 1).numpy()
    assert ort_probs.shape == (9, 3)
    assert np.abs(ort_probs - torch_probs).max() <= 1e-4
    np.testing.assert_allclose(ort_probs.sum(axis=1), 1.0, atol=1e-5)


def test_classify_records_unreadable_file_and_goes_on(tiny_bundle, tiny_data, tmp_path, caplog):
    import shutil
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(os.path.join(tiny_data, "test", "normal", "normal_test_0000.png"), str(folder))
    (folder / "broken.png").write_bytes(b"not a png")
    code, out, err = run_cli(["classify", "--model", tiny_bundle, str(folder)])
    assert code == 1
    assert "broken.png: not a decodable image" in caplog.text
    assert len(out.splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["classify", "nowhere.png", "--model", "x"], "input not found: nowhere.png"),
    (["classify", "."], "--model: required"),
])
def test_classify_bad_input_is_one_line(argv, message):
    code, out, err = run_cli(argv)
    assert code != 0
    assert message in err and len(err.strip().splitlines()) == 1
