"""16-bit images that use only their low bits (a 12-bit microscope camera's, highest value
4095) read as 0..15 (the top 8 of 16 bits): data check and train's image check warn once,
with a count and an example, batch, classify and bench once a run, naming the first; serve
in each such upload's answer and log; decoding itself is unchanged."""
import logging
import os
import shutil

import cv2
import numpy as np

from conftest import FAST_TRAIN, run_cli

FAST = FAST_TRAIN + ["--epochs", 1]


def _twelve_bit(path, peak=4095, channels=1):
    rng = np.random.default_rng(len(path))
    img = rng.integers(0, peak + 1, size=(48, 48)).astype(np.uint16)
    img[0, 0] = peak
    assert cv2.imwrite(path, img if channels == 1 else cv2.merge([img] * channels))


def test_sixteen_bit_peak_reads_the_header_then_the_samples(tmp_path):
    from oncolens.appliance.imageio import read_image
    from oncolens.appliance.lowbits import sixteen_bit, sixteen_bit_peak
    for name, channels in (("a.png", 1), ("b.tif", 1), ("c.png", 3), ("d.tif", 3)):
        path = str(tmp_path / name)
        _twelve_bit(path, channels=channels)
        data = open(path, "rb").read()
        assert sixteen_bit(data) and sixteen_bit_peak(data) == 4095, name
        assert read_image(path).max() in (15, 16)  # decoding is unchanged: what train sees
    eight = str(tmp_path / "e.png")
    assert cv2.imwrite(eight, np.full((8, 8), 200, np.uint8))
    data = open(eight, "rb").read()
    assert not sixteen_bit(data) and sixteen_bit_peak(data) is None


def _dataset(tiny_data, tmp_path):
    data = str(tmp_path / "d")
    shutil.copytree(tiny_data, data)
    _twelve_bit(os.path.join(data, "train", "benign", "cam_0.png"))
    _twelve_bit(os.path.join(data, "train", "benign", "cam_1.tif"), channels=3)
    _twelve_bit(os.path.join(data, "val", "normal", "cam_2.png"))
    _twelve_bit(os.path.join(data, "val", "normal", "full.png"), peak=65535)  # no warning
    return data


def test_data_check_and_train_warn_once_about_low_bit_16_bit_images(tiny_data, tmp_path,
                                                                    caplog):
    data = _dataset(tiny_data, tmp_path)
    code, out, err = run_cli(["data", "check", data, "--max-distance", "0"])
    assert code == 0, out
    lines = [l for l in out.splitlines() if "16-bit" in l and "low bits" in l]
    assert len(lines) == 1, out
    assert lines[0].startswith("warning: 3 16-bit images using only the low bits"), out
    assert "train/benign/cam_0.png: 4095" in lines[0] and "about 16 grey levels" in lines[0]
    assert "rescale" in lines[0] and "8-bit" in lines[0]
    caplog.set_level(logging.WARNING)
    code, out, err = run_cli(["train", data, "--model-dir", str(tmp_path / "m")] + FAST)
    assert code == 0, err
    warned = [r.getMessage() for r in caplog.records if "low bits" in r.getMessage()]
    assert len(warned) == 1, warned
    assert warned[0].startswith("3 16-bit images using only the low bits"), warned
    assert os.path.join(data, "train", "benign", "cam_0.png") in warned[0]


def _folder_with_low_bits(tiny_data, tmp_path):
    """Two low-bit 16-bit images among ordinary ones, one full-range 16-bit image."""
    folder = str(tmp_path / "in")
    os.makedirs(os.path.join(folder, "b"))
    shutil.copytree(os.path.join(tiny_data, "test", "benign"), os.path.join(folder, "a"))
    _twelve_bit(os.path.join(folder, "b", "cam_0.png"))
    _twelve_bit(os.path.join(folder, "b", "cam_1.tif"), channels=3)
    _twelve_bit(os.path.join(folder, "a", "full.png"), peak=65535)  # no warning
    return folder


def _low_bit_warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "only its low bits" in r.getMessage()]


def test_batch_warns_once_a_run_naming_the_first_low_bit_file(tiny_bundle, tiny_data,
                                                               tmp_path, caplog):
    folder = _folder_with_low_bits(tiny_data, tmp_path)
    caplog.set_level(logging.WARNING)
    for n, workers in enumerate((0, 2)):
        caplog.clear()
        code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--no-progress",
                                  "--workers", workers, "--results", tmp_path / "{}.csv".format(n)])
        assert code == 0, err
        warned = _low_bit_warnings(caplog)
        assert len(warned) == 1, warned  # once a run, never once an image
        assert "highest value 4095" in warned[0] and "nearly black" in warned[0]
        assert "rescale" in warned[0] and "once a run" in warned[0]
        if not workers:  # in order: the first such file
            assert warned[0].startswith(os.path.join(folder, "b", "cam_0.png") + ":"), warned


def test_classify_warns_once_a_run_naming_the_first_low_bit_file(tiny_bundle, tiny_data,
                                                                  tmp_path, caplog):
    folder = _folder_with_low_bits(tiny_data, tmp_path)
    caplog.set_level(logging.WARNING)
    code, out, err = run_cli(["classify", "--model", tiny_bundle, "--headless",
                              "--input-loop", 1, folder, str(tmp_path / "out") + os.sep])
    assert code == 0, err
    warned = _low_bit_warnings(caplog)
    assert len(warned) == 1, warned  # two files, two passes: one warning
    assert warned[0].startswith(os.path.join(folder, "b", "cam_0.png") + ":"), warned
    assert "highest value 4095" in warned[0] and "nearly black" in warned[0]


def test_serve_answers_and_logs_a_warning_for_a_low_bit_upload(tiny_bundle, tmp_path, caplog):
    """serve classified such an upload without a word: its answer now says so (also in
    the annotated answer's X-Result), and its log names the request."""
    import json
    from serve_util import read, request, running
    from oncolens.appliance.classifier import Classifier
    low, full = str(tmp_path / "cam.png"), str(tmp_path / "full.tif")
    _twelve_bit(low)
    _twelve_bit(full, peak=65535, channels=3)
    caplog.set_level(logging.WARNING)
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf, \
            running(clf) as (url, app):
        reply = request(url, "/classify", "POST", read(low))
        assert reply.status == 200, reply.body
        result = json.loads(reply.body.decode("utf-8"))
        annotated = request(url, "/classify?annotated=1", "POST", read(low))
        ordinary = json.loads(request(url, "/classify", "POST", read(full)).body.decode("utf-8"))
    assert [w["code"] for w in result["warnings"]] == ["low_bits"]
    message = result["warnings"][0]["message"]
    assert "highest value 4095" in message and "nearly black" in message and "rescale" in message
    assert json.loads(annotated.headers["x-result"])["warnings"] == result["warnings"]
    assert "warnings" not in ordinary
    warned = _low_bit_warnings(caplog)
    assert len(warned) == 2 and warned[0].startswith(result["request_id"]), warned


def test_bench_warns_once_naming_the_first_low_bit_file(tiny_bundle, tiny_data, tmp_path,
                                                         caplog):
    folder = _folder_with_low_bits(tiny_data, tmp_path)
    caplog.set_level(logging.WARNING)
    code, out, err = run_cli(["bench", "--model", tiny_bundle, "--images", folder,
                              "--backends", "onnxruntime", "--batch-sizes", 1, "--no-baseline",
                              "--min-seconds", 0.05, "--warmup", 1,
                              "--json", tmp_path / "b.json"])
    assert code == 0, err
    warned = _low_bit_warnings(caplog)
    assert len(warned) == 1, warned  # once, though the images are read in several loops
    assert warned[0].startswith(os.path.join(folder, "b", "cam_0.png") + ":"), warned
    assert "highest value 4095" in warned[0] and "once a run" in warned[0]


def test_serve_decodes_a_full_range_16_bit_upload_once(tiny_bundle, tmp_path, monkeypatch):
    """The service decoded every 16-bit upload a second time (as 16 bits) for the low-bits
    warning. Now the one decode tells a full-range image (it reads above 16 somewhere) and
    only a nearly black one is read as 16 bits, for the warning's exact highest value."""
    import json
    from serve_util import read, request, running
    from oncolens.appliance import lowbits
    from oncolens.appliance.classifier import Classifier
    low, full = str(tmp_path / "cam.png"), str(tmp_path / "full.png")
    _twelve_bit(low)
    _twelve_bit(full, peak=65535)
    real, peaks = lowbits.sixteen_bit_peak, []
    monkeypatch.setattr(lowbits, "sixteen_bit_peak",
                        lambda data: peaks.append(real(data)) or peaks[-1])
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf, running(clf) as (url, _):
        ordinary = json.loads(request(url, "/classify", "POST", read(full)).body.decode("utf-8"))
        assert peaks == []
        warned = json.loads(request(url, "/classify", "POST", read(low)).body.decode("utf-8"))
    assert "warnings" not in ordinary and ordinary["input"]["format"] == "png"
    assert peaks == [4095]
    assert [w["code"] for w in warned["warnings"]] == ["low_bits"]
    assert "highest value 4095" in warned["warnings"][0]["message"]


def test_low_bits_peak_from_the_decoded_image_keeps_its_threshold(tmp_path):
    """Grey 16-bit images read as their top 8 bits, RGB TIFFs round v / 257: either way a
    peak of 4095 reads as 16 at most (still warned), and 4096..4240 as 16 too, which the
    16-bit reading then tells apart (no warning)."""
    from oncolens.appliance.imageio import decode_image
    from oncolens.appliance.lowbits import low_bits_peak
    for name, peak, channels, expected in [("a.png", 4095, 1, 4095), ("b.tif", 4095, 3, 4095),
                                           ("c.tif", 4240, 3, None), ("d.png", 4096, 3, None),
                                           ("e.tif", 65535, 1, None)]:
        path = str(tmp_path / name)
        _twelve_bit(path, peak=peak, channels=channels)
        with open(path, "rb") as fh:
            data = fh.read()
        decoded = decode_image(data, path)
        assert low_bits_peak(data, decoded) == low_bits_peak(data) == expected, name


def test_batch_and_classify_decode_a_full_range_16_bit_file_once(tiny_bundle, tmp_path,
                                                                  monkeypatch, caplog):
    """batch and classify decoded every 16-bit file a second time (as 16 bits) for the
    low-bits warning. Now their ordinary decoding tells a full-range image (it reads above
    16 somewhere) and only a nearly black one is read as 16 bits; the warning is unchanged."""
    from oncolens.appliance import lowbits
    folder = str(tmp_path / "in")
    os.makedirs(folder)
    _twelve_bit(os.path.join(folder, "a_full.png"), peak=65535)  # read first: no second decode
    _twelve_bit(os.path.join(folder, "b_cam.png"))
    real, peaks = lowbits.sixteen_bit_peak, []
    monkeypatch.setattr(lowbits, "sixteen_bit_peak",
                        lambda data: peaks.append(real(data)) or peaks[-1])
    caplog.set_level(logging.WARNING)
    for argv in (["batch", folder, "--model", tiny_bundle, "--no-progress", "--workers", 0,
                  "--results", tmp_path / "r.csv"],
                 ["classify", "--model", tiny_bundle, "--headless", folder]):
        del peaks[:]
        caplog.clear()
        code, out, err = run_cli(argv)
        assert code == 0, err
        assert peaks == [4095], argv[0]  # the low-bits file alone, decoded as 16 bits
        warned = _low_bit_warnings(caplog)
        assert len(warned) == 1 and warned[0].startswith(os.path.join(folder, "b_cam.png")), \
            warned
        assert "highest value 4095" in warned[0]
