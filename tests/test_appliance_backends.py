"""Backends agree on the same images; the registry picks by file and presence; CAM overlay."""
import importlib.util
import os
import sys
import types

import numpy as np
import pytest

from conftest import copies_in, run_cli


def _val_images(tiny_data):
    from oncolens.appliance.sources import open_source
    return [f.image for f in open_source(os.path.join(tiny_data, "val"))]


def test_torch_and_onnxruntime_backends_agree(tiny_bundle, tiny_data):
    from oncolens.appliance.classifier import Classifier
    images = _val_images(tiny_data)
    with Classifier.open(tiny_bundle, backend="onnxruntime") as a, \
            Classifier.open(tiny_bundle, backend="torch") as b:
        assert a.backend.name == "onnxruntime" and b.backend.name == "torch"
        pa, pb = a.infer_images(images).probs, b.infer_images(images).probs
    assert pa.shape == pb.shape == (9, 3)
    assert np.abs(pa - pb).max() <= 1e-4
    np.testing.assert_allclose(pb.sum(axis=1), 1.0, atol=1e-5)


def test_model_file_suffix_picks_the_backend(tiny_bundle, tiny_data, caplog):
    import logging
    caplog.set_level(logging.INFO)
    src = os.path.join(tiny_data, "test", "benign")
    outs = {}
    for model in ("model_best.pth.tar", "resnet18.onnx"):
        code, out, err = run_cli(["classify", "--model", os.path.join(tiny_bundle, model),
                                  "--headless", src])
        assert code == 0, err
        outs[model] = [line.split("(")[1] for line in out.splitlines()]
    assert "backend auto: using torch" in caplog.text
    assert "backend auto: using onnxruntime" in caplog.text
    assert outs["model_best.pth.tar"] == outs["resnet18.onnx"]      # same classes


def test_auto_skips_backends_that_cannot_be_imported(tiny_bundle, caplog):
    import logging
    from oncolens.appliance import backends
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.errors import MissingDependency
    caplog.set_level(logging.DEBUG)
    bundle = load_bundle(tiny_bundle)
    chosen = backends.open_backend("auto", bundle)
    assert chosen.name == "onnxruntime"
    if importlib.util.find_spec("oncolens.appliance.backends.tensorrt") is None:
        assert "skipping tensorrt" in caplog.text
        with pytest.raises(MissingDependency) as err:
            backends.open_backend("tensorrt", bundle)
        assert "the tensorrt backend" in str(err.value)
    assert backends.backend_for_file("x/y.engine") == "tensorrt"
    assert backends.backend_for_file("x/model_best.pth.tar") == "torch"
    assert backends.backend_for_file("x/y.onnx") is None


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_agrees_with_onnxruntime(tiny_bundle, tiny_data):
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT is not installed")
    from oncolens.appliance.classifier import Classifier
    images = _val_images(tiny_data)
    with Classifier.open(tiny_bundle, backend="onnxruntime") as a, \
            Classifier.open(tiny_bundle, backend="tensorrt", precision="fp32") as b:
        assert np.abs(a.infer_images(images).probs - b.infer_images(images).probs).max() < 1e-3


def _fake_jetson(monkeypatch, new_api=True):
    calls = {"images": []}
    ji, ju = types.ModuleType("jetson_inference"), types.ModuleType("jetson_utils")

    class ImageNet(object):
        def __init__(self, argv):
            calls["argv"] = argv

        def GetNumClasses(self):
            return 3

        def Classify(self, img, **kwargs):
            calls["images"].append(img)
            if not new_api:
                if kwargs:
                    raise TypeError("Classify() takes no keyword arguments")
                return (1, 0.9)
            return [(2, 0.7), (0, 0.2), (1, 0.1)]

    ji.imageNet = ImageNet
    ju.cudaFromNumpy = lambda arr: arr
    monkeypatch.setitem(sys.modules, "jetson_inference", ji)
    monkeypatch.setitem(sys.modules, "jetson_utils", ju)
    return calls


@pytest.mark.parametrize("new_api, row", [(True, [0.2, 0.1, 0.7]), (False, [0.05, 0.9, 0.05])])
def test_jetson_backend_with_a_stand_in_imagenet(tiny_bundle, tiny_data, monkeypatch, new_api,
                                                 row):
    """No Jetson here: a stand-in jetson_inference checks what the backend hands it."""
    from oncolens.appliance.classifier import Classifier
    calls = _fake_jetson(monkeypatch, new_api)
    image = _val_images(tiny_data)[0]
    with Classifier.open(tiny_bundle) as clf:                 # auto: jetson comes first
        assert clf.backend.name == "jetson"
        probs = clf.infer_images([image]).probs
        seen = calls["images"][0]
        expected = clf.preprocessor.resize(image)
    np.testing.assert_allclose(probs[0], row, atol=1e-6)
    assert seen.dtype == np.uint8 and seen.shape == expected.shape
    assert np.abs(seen.astype(int) - expected).max() <= 1    # the crop the model was made for
    argv = calls["argv"]
    assert argv[0] == "--model=" + os.path.join(tiny_bundle, "resnet18.onnx")
    assert "--labels=" + os.path.join(tiny_bundle, "labels.txt") in argv
    assert "--input-blob=input_0" in argv and "--output-blob=output_0" in argv


def test_jetson_backend_is_not_used_for_a_model_with_its_own_normalisation(
        tiny_bundle, tiny_data, tmp_path, monkeypatch):
    """imageNet normalises an ONNX model's input with ImageNet's mean/std whatever model.json
    says: an EfficientNet-Lite model ((x - 127) / 128) run through it saw other numbers than
    training evaluated. auto takes the next runtime; --backend jetson is refused."""
    import json
    import shutil
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.errors import BundleError
    from oncolens.appliance.preprocess import TF_LITE_MEAN, TF_LITE_STD
    model = str(tmp_path / "lite")
    shutil.copytree(tiny_bundle, model)
    path = os.path.join(model, "model.json")
    with open(path) as fh:
        info = json.load(fh)
    info["preprocess"].update(mean=list(TF_LITE_MEAN), std=list(TF_LITE_STD))
    with open(path, "w") as fh:
        json.dump(info, fh)
    calls = _fake_jetson(monkeypatch)
    image = _val_images(tiny_data)[0]
    with Classifier.open(model) as clf, Classifier.open(model, backend="onnxruntime") as ref:
        assert clf.backend.name == "onnxruntime"
        np.testing.assert_array_equal(clf.infer_images([image]).probs,
                                      ref.infer_images([image]).probs)
    assert calls["images"] == []
    with pytest.raises(BundleError) as err:
        Classifier.open(model, backend="jetson")
    message = str(err.value)
    assert "\n" not in message and path in message and "--backend tensorrt" in message
    assert "0.498" in message and "0.485" in message       # the model's mean, and imageNet's


def _cam_bundle(folder):
    """A tiny model with outputs output_0 (probabilities) and cam_0: its CAM is the input's
    brightness pooled to 8x8 and scaled to 0..1, so where it is hot is known."""
    import torch
    from oncolens.appliance.bundle import write_labels, new_model_info, write_model_info
    from oncolens.appliance.preprocess import imagenet_preprocess
    from oncolens.export.onnx_export import torch_onnx_export

    class TinyCam(torch.nn.Module):
        def __init__(self):
            super(TinyCam, self).__init__()
            self.fc = torch.nn.Linear(3, 3)

        def forward(self, x):
            pooled = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 4).flatten(1)
            lo = pooled.min(1, keepdim=True)[0]
            hi = pooled.max(1, keepdim=True)[0]
            cam = ((pooled - lo) / (hi - lo + 1e-6)).reshape(-1, 8, 8)
            return torch.softmax(self.fc(x.mean((2, 3))), 1), cam

    os.makedirs(folder)
    torch.manual_seed(0)
    torch_onnx_export(TinyCam().eval(), torch.zeros(1, 3, 32, 32),
                      os.path.join(folder, "tiny.onnx"), 11, output_names=["output_0", "cam_0"])
    labels = ["benign", "malignant", "normal"]
    write_labels(os.path.join(folder, "labels.txt"), labels)
    write_model_info(os.path.join(folder, "model.json"), new_model_info(
        "tiny", labels, 32, imagenet_preprocess(32), onnx={"file": "tiny.onnx"}))
    return folder


def test_cam_overlay_blends_the_heatmap_where_the_model_looked(tmp_path):
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.imageio import read_image, write_image
    from oncolens.appliance.overlay import layout
    model = _cam_bundle(str(tmp_path / "cam"))
    frame = np.zeros((160, 200, 3), dtype=np.uint8)
    frame[:, :100] = 255                                      # bright left, dark right
    src = str(tmp_path / "in.png")
    write_image(src, frame)
    with Classifier.open(model) as clf:
        cam = clf.infer_images([frame]).cam
    assert cam.shape == (1, 8, 8) and cam.min() >= 0 and cam.max() <= 1
    assert cam[0, :, :3].mean() > 0.9 and cam[0, :, 5:].mean() < 0.1
    for overlay in ("cam", "text"):
        code, out, err = run_cli(["classify", "--model", model, "--headless",
                                  "--overlay=" + overlay, src, str(tmp_path / (overlay + ".png"))])
        assert code == 0, err
    with_cam, text_only = read_image(str(tmp_path / "cam.png")), read_image(
        str(tmp_path / "text.png"))
    below = layout(frame.shape, ["00.00% malignant"])[0] + 2
    left, right = with_cam[below:, 45:80].astype(int), with_cam[below:, 120:155].astype(int)
    assert (left[..., 0] > left[..., 2] + 30).mean() > 0.9     # hot: red over the bright half
    assert (right[..., 2] > right[..., 0] + 30).mean() > 0.9   # cold: blue over the dark half
    # outside the centre crop the model never saw, and without --overlay=cam: no colour
    assert (with_cam[below:, :25] == frame[below:, :25]).all()
    assert (with_cam[below:, 176:] == frame[below:, 176:]).all()
    assert (text_only[below:] == frame[below:]).all()


def test_cam_overlay_without_cam_output_warns_once(tiny_bundle, tiny_data, tmp_path, caplog):
    out_dir = str(tmp_path / "out") + os.sep
    code, out, err = run_cli(["classify", "--model", tiny_bundle, "--overlay=cam", "--headless",
                              os.path.join(tiny_data, "test", "normal"), out_dir])
    assert code == 0, err
    assert len(copies_in(out_dir)) == 3
    assert caplog.text.count("has no cam_0 output") == 1


def test_crop_box_matches_the_preprocessing():
    import cv2
    from oncolens.appliance.overlay import crop_box
    from oncolens.appliance.preprocess import imagenet_preprocess, resize_to_input
    yy, xx = np.mgrid[0:150, 0:220]
    frame = np.stack([xx, yy, (xx + yy) // 2], axis=2).astype(np.uint8)
    for policy in ("center_crop", "stretch"):
        spec = imagenet_preprocess(64, policy=policy)
        top, left, bottom, right = crop_box(frame.shape, spec, (64, 64))
        mine = cv2.resize(np.ascontiguousarray(frame[top:bottom, left:right]), (64, 64),
                          interpolation=cv2.INTER_AREA)
        theirs = resize_to_input(frame, spec, (64, 64))
        assert np.abs(mine.astype(int) - theirs).mean() < 2.0, policy


def test_overlay_text_fits_small_frames():
    """On a frame narrower than the text at its usual size, the text shrinks: not cut off."""
    from oncolens.appliance.overlay import draw_lines, layout
    line = "87.31% malignant"
    for width in (40, 64, 300):
        frame = np.zeros((width, width, 3), dtype=np.uint8)
        box_h, box_w, line_h, pad, scale, thick = layout(frame.shape, [line])
        drawn = draw_lines(frame, [line])
        # the frame is black and its box only darkens, so every bright pixel is text; at the
        # smallest sizes antialiased strokes peak near 120 (OpenCV 5's renderer), not 255
        columns = np.nonzero(drawn.max(axis=(0, 2)) > 64)[0]
        assert columns.size, width  # text was drawn
        assert columns.max() < width - 1 and box_w <= width, width  # and ends inside the frame
        assert box_h < width // 2, width


def test_overlay_text_wraps_where_it_cannot_shrink_enough():
    """Too narrow even at the smallest font: the line wraps at its space, still inside."""
    from oncolens.appliance.overlay import draw_lines, layout
    line, width = "87.31% malignant", 28
    frame = np.zeros((width, width, 3), dtype=np.uint8)
    box_h, box_w, line_h = layout(frame.shape, [line])[:3]
    assert box_w <= width and box_h >= 2 * line_h  # two lines' height in the frame's width
    drawn = draw_lines(frame, [line])
    columns = np.nonzero(drawn.max(axis=(0, 2)) > 64)[0]
    rows = np.nonzero(drawn.max(axis=(1, 2)) > 64)[0]
    assert columns.size and columns.max() < width - 1
    # two bands of text rows with a gap between them
    assert rows.size and np.any(np.diff(rows) > 1), rows


def test_overlay_labels_that_opencv_cannot_draw_stay_told_apart():
    """OpenCV's fonts draw ASCII: '正常' and '异常' were both drawn '??', the same pixels on
    the frame for two classes; 'bénin' was 'b?nin' on the Nano's OpenCV."""
    from oncolens.appliance.overlay import draw_lines
    from oncolens.appliance.postprocess import Prediction, console_line, overlay_text
    normal, abnormal = Prediction(0, u"正常", 0.9), Prediction(1, u"异常", 0.9)
    frame = np.zeros((120, 400, 3), dtype=np.uint8)
    one, other = (draw_lines(frame, [overlay_text(p)]) for p in (normal, abnormal))
    assert one.any() and not np.array_equal(one, other)
    assert overlay_text(normal) == "90.00% ?? (class #0)"
    assert overlay_text(Prediction(2, u"bénin", 0.5)) == "50.00% benin"
    assert overlay_text(Prediction(1, "malignant", 0.9731)) == "97.31% malignant"
    assert console_line(normal) == u"imagenet:  90.00% class #0 (正常)"  # the console: as is
