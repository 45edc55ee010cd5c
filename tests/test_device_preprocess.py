"""Preprocessing on the inference device (torch): the same tensors as the OpenCV path, the
torch backend taking them, and ``oncolens bench --preprocess device``.

Here the device is the CPU; the same code on a CUDA GPU is the ``gpu``-marked test.
"""
import glob
import io
import json
import os

import numpy as np
import pytest

from conftest import run_cli

torch = pytest.importorskip("torch")


def _images(tiny_data):
    """Real decoded files plus sizes that make every path run: shrink, enlarge, as is."""
    from oncolens.appliance.imageio import read_image
    paths = sorted(glob.glob(os.path.join(tiny_data, "val", "*", "*")))[:3]
    images = [read_image(p) for p in paths]
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, size=(12, 16, 3)).astype(np.uint8)
    import cv2
    images.append(cv2.resize(smooth, (160, 120), interpolation=cv2.INTER_LINEAR))
    images.append(cv2.resize(smooth, (50, 90), interpolation=cv2.INTER_LINEAR))
    return images


@pytest.mark.parametrize("policy", ["center_crop", "stretch"])
def test_device_preprocessing_matches_opencv(tiny_data, policy):
    from oncolens.appliance.device_preprocess import DevicePreprocessor
    from oncolens.appliance.preprocess import Preprocessor, imagenet_preprocess
    spec = imagenet_preprocess(64, policy)
    host = Preprocessor(spec, (3, 64, 64))
    dev = DevicePreprocessor(spec, (3, 64, 64), device="cpu")
    for rgb in _images(tiny_data):
        a = host(rgb)
        b = dev(rgb)
        assert torch.is_tensor(b) and b.dtype == torch.float32 and tuple(b.shape) == (3, 64, 64)
        grey_levels = np.abs(a - b.numpy()) * 0.229 * 255.0  # back to pixel units (about)
        assert grey_levels.mean() < 1.5, (rgb.shape, grey_levels.mean())
    # an image already at the crop's size is not resampled: exactly the host's tensor
    exact = np.random.default_rng(1).integers(0, 256, size=(73, 80, 3)).astype(np.uint8)
    if policy == "center_crop":
        same = host(exact), dev(exact).numpy()
        assert np.abs(same[0] - same[1]).max() < 1e-4


def _strip(tmp_path, name, shape):
    """A real file of a smooth image of ``shape`` (h, w), decoded again."""
    import cv2
    from oncolens.appliance.imageio import read_image, write_image
    seed = np.random.default_rng(2).integers(0, 256, size=(4, 6, 3)).astype(np.uint8)
    path = str(tmp_path / name)
    write_image(path, cv2.resize(seed, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC))
    return read_image(path)


def test_device_preprocessing_follows_opencv_where_one_side_grows(tmp_path):
    """A stretch to the model's size that enlarges one side and shrinks the other (a 12x600
    strip to 33x33) is OpenCV's area filter, which then samples instead of averaging: torch's
    anti-aliased filter gave other pixels (up to 29 grey levels apart here, 97 on a sharper
    strip). The device path now resizes such an image on the host, as training's evaluation did."""
    from oncolens.appliance.device_preprocess import DevicePreprocessor
    from oncolens.appliance.preprocess import Preprocessor, imagenet_preprocess
    spec = imagenet_preprocess(33, "stretch")
    host = Preprocessor(spec, (3, 33, 33))
    dev = DevicePreprocessor(spec, (3, 33, 33), device="cpu")
    for name, shape in (("wide.png", (12, 600)), ("tall.png", (700, 9))):
        rgb = _strip(tmp_path, name, shape)
        assert np.abs(host(rgb) - dev(rgb).numpy()).max() < 1e-4, name


def test_device_preprocessing_refuses_what_the_host_refuses(tmp_path, monkeypatch):
    """An image whose resize before the crop would pass MAX_RESIZED_PIXELS is refused on the
    device as on the host (one ImageReadError), instead of being made there in full."""
    from oncolens.appliance import preprocess
    from oncolens.appliance.device_preprocess import DevicePreprocessor
    from oncolens.appliance.errors import ImageReadError
    monkeypatch.setattr(preprocess, "MAX_RESIZED_PIXELS", 5000)  # a strip of 4x400 is over it
    spec = preprocess.imagenet_preprocess(16)
    rgb = _strip(tmp_path, "strip.png", (4, 400))
    with pytest.raises(ImageReadError) as host:
        preprocess.Preprocessor(spec, (3, 16, 16))(rgb)
    with pytest.raises(ImageReadError) as dev:
        DevicePreprocessor(spec, (3, 16, 16), device="cpu")(rgb)
    assert str(dev.value) == str(host.value)


def test_device_preprocessing_precision_and_batch(tiny_data):
    from oncolens.appliance.device_preprocess import DevicePreprocessor, stack_inputs
    from oncolens.appliance.errors import UsageError
    from oncolens.appliance.preprocess import imagenet_preprocess
    images = _images(tiny_data)
    half = DevicePreprocessor(imagenet_preprocess(32), (3, 32, 32), "cpu", "fp16")
    batch = half.batch(images)
    assert batch.dtype == torch.float16 and tuple(batch.shape) == (len(images), 3, 32, 32)
    assert torch.equal(stack_inputs([half(i) for i in images]), batch)
    assert stack_inputs([np.zeros((3, 2, 2), np.float32)] * 2).shape == (2, 3, 2, 2)
    with pytest.raises(UsageError) as err:
        DevicePreprocessor(imagenet_preprocess(32), (3, 32, 32), "cpu", "int8")
    assert "precision" in str(err.value)


def test_torch_backend_takes_device_tensors(tiny_bundle, tiny_data):
    from oncolens.appliance.backends import open_backend
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.preprocess import Preprocessor
    bundle = load_bundle(tiny_bundle)
    images = _images(tiny_data)
    with open_backend("torch", bundle, device="cpu") as backend:
        on_host = backend.infer(Preprocessor.from_bundle(bundle).batch(images)).probs
        on_device = backend.infer(backend.device_preprocessor().batch(images)).probs
    assert on_device.shape == on_host.shape == (len(images), len(bundle.labels))
    np.testing.assert_allclose(on_device.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(on_device - on_host).max() < 0.05
    assert (on_device.argmax(axis=1) == on_host.argmax(axis=1)).mean() >= 0.8


def _bench(tiny_bundle, tiny_data, out, *extra):
    return run_cli([
        "bench", "--model", tiny_bundle, "--images", os.path.join(tiny_data, "test"),
        "--agreement-images", os.path.join(tiny_data, "val"), "--batch-sizes", "1,3",
        "--min-seconds", 0.05, "--warmup", 1, "--no-baseline", "--threads", 1,
        "--json", out] + list(extra))


def test_bench_times_host_and_device_preprocessing(tiny_bundle, tiny_data, tmp_path, caplog):
    out = str(tmp_path / "bench.json")
    code, stdout, err = _bench(tiny_bundle, tiny_data, out, "--backends", "torch,onnxruntime",
                               "--precisions", "fp32,fp16", "--preprocess", "host,device")
    assert code == 0, err
    assert "torch fp32 [pre on device]" in stdout
    with io.open(out, encoding="utf-8") as fh:
        result = json.load(fh)
    got = sorted((r["backend"], r["preprocess"], r["batch_size"]) for r in result["runs"])
    assert got == [("onnxruntime", "host", 1), ("onnxruntime", "host", 3),
                   ("torch", "device", 1), ("torch", "device", 3),
                   ("torch", "host", 1), ("torch", "host", 3)]
    for run in result["runs"]:
        assert run["device"] == "cpu" and run["precision"] == "fp32"
        assert run["network_ips"] > 0 and run["end_to_end_ips"] > 0 and run["images"] == 9
        assert 0.5 <= run["agreement_vs_fp32"] <= 1.0
    assert result["settings"]["preprocess"] == ["host", "device"]
    reasons = dict(((s["backend"], s["precision"], s.get("preprocess")), s["reason"])
                   for s in result["skipped"])
    assert "CUDA" in reasons[("torch", "fp16", None)]
    assert "fp16" in reasons[("onnxruntime", "fp16", None)]
    assert "only the torch backend" in reasons[("onnxruntime", "fp32", "device")]
    # fp16 on the CPU is skipped before the model is loaded: one reason, no second warning
    assert not [r for r in caplog.records if "--precision fp16" in r.getMessage()]


def test_bench_device_flags_are_checked(tiny_bundle, tiny_data, tmp_path):
    cases = [(["--preprocess", "gpu"], "--preprocess"), (["--device", "tpu"], "--device")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "sees no CUDA GPU"))
    for extra, message in cases:
        code, _, err = _bench(tiny_bundle, tiny_data, str(tmp_path / "x.json"), *extra)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.gpu
def test_bench_fp16_with_preprocessing_on_the_gpu(tiny_bundle, tiny_data, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    out = str(tmp_path / "gpu.json")
    code, stdout, err = run_cli([
        "bench", "--model", tiny_bundle, "--images", os.path.join(tiny_data, "test"),
        "--backends", "torch", "--precisions", "fp32,fp16", "--preprocess", "host,device",
        "--device", "cuda", "--batch-sizes", "1,8", "--min-seconds", 0.2, "--json", out])
    assert code == 0, err
    with io.open(out, encoding="utf-8") as fh:
        result = json.load(fh)
    assert result["baseline"]["device"].startswith("cuda")
    runs = [(r["precision"], r["preprocess"], r["batch_size"]) for r in result["runs"]]
    assert sorted(runs) == sorted((p, m, b) for p in ("fp16", "fp32")
                                  for m in ("device", "host") for b in (1, 8))
    assert all(r["device"].startswith("cuda") and r["agreement_vs_fp32"] >= 0.8
               for r in result["runs"])


@pytest.mark.parametrize("stats", ["imagenet", "tf_lite"])
def test_host_normalize_is_the_formula(tiny_data, stats):
    """normalize() on a cropped (strided) decoded image is (x / 255 - mean) / std in CHW."""
    from oncolens.appliance import preprocess as pp
    mean, std = {"imagenet": (pp.IMAGENET_MEAN, pp.IMAGENET_STD),
                 "tf_lite": (pp.TF_LITE_MEAN, pp.TF_LITE_STD)}[stats]
    rgb = _images(tiny_data)[0][3:40, 5:50]
    out = pp.normalize(rgb, mean, std)
    want = (np.transpose(rgb, (2, 0, 1)) / 255.0 - np.asarray(mean)[:, None, None]) \
        / np.asarray(std)[:, None, None]
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"] and out.shape == want.shape
    assert np.abs(out - want).max() < 1e-6
    # one value for all channels, as (x - 127) / 128 can be written
    one = pp.normalize(rgb, [127.0 / 255.0], [128.0 / 255.0])
    assert np.abs(one - (np.transpose(rgb, (2, 0, 1)) - 127.0) / 128.0).max() < 1e-6
