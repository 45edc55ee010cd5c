"""``oncolens classify`` takes jetson-inference's imagenet command lines."""
import importlib.util
import os
import re
import shutil

import pytest

from conftest import copies_in, run_cli

LINE = re.compile(r"^imagenet:  (\d{2,3}\.\d{2})% class #(\d+) \((\w+)\)$")

# imagenet command lines as jetson-inference's docs write them -> the settings they mean
TABLE = [
    (["--model=models/cat_dog/resnet18.onnx", "--input_blob=input_0", "--output_blob=output_0",
      "--labels=data/cat_dog/labels.txt", "data/cat_dog/test/cat", "cat/"],
     dict(model="models/cat_dog/resnet18.onnx", input_blob="input_0", output_blob="output_0",
          labels="data/cat_dog/labels.txt", input="data/cat_dog/test/cat", output="cat/",
          topk=1, threshold=0.01)),
    (["--network=busi-resnet18", "--topK=3", "--threshold", "0.05", "--smoothing=0.5",
      "csi://0", "display://0"],
     dict(network="busi-resnet18", topk=3, threshold=0.05, smoothing=0.5, input="csi://0",
          output="display://0")),
    (["--input-width=1280", "--input_height=720", "--input-flip=rotate-180", "/dev/video0",
      "rtp://192.168.1.2:1234", "--output-codec=h265", "--bitrate=2000000", "--headless"],
     dict(input_width=1280, input_height=720, input_flip="rotate-180", input="/dev/video0",
          output="rtp://192.168.1.2:1234", output_codec="h265", bitrate=2000000, headless=True)),
    (["--input-codec=h264", "rtp://@:1234", "--input_loop=-1", "--log-level=verbose"],
     dict(input_codec="h264", input="rtp://@:1234", input_loop=-1, log_level="verbose")),
    (["--model", "x.onnx", "--labels", "l.txt", "images/*.jpg", "out_%i.jpg"],
     dict(model="x.onnx", labels="l.txt", input="images/*.jpg", output="out_%i.jpg")),
    (["--input-rtsp-latency=100", "--input-rate=15", "rtsp://user:pw@cam:554/s", "out.mp4"],
     dict(input_latency=100, input_rate=15.0, input="rtsp://user:pw@cam:554/s", output="out.mp4")),
]


@pytest.mark.parametrize("argv, expected", TABLE)
def test_jetson_inference_command_lines_parse(argv, expected):
    from oncolens.appliance.classify_cli import build_parser
    from oncolens.appliance.cliutil import normalize_flags
    args, unknown = build_parser().parse_known_args(normalize_flags(argv))
    assert unknown == []
    got = {key: getattr(args, key) for key in expected}
    assert got == expected


def test_network_resolves_models_folder_and_options_reach_the_source():
    from oncolens.appliance.classify_cli import (build_parser, choose_output, overlay_modes,
                                                  resolve_model, source_options)
    args = build_parser().parse_args(["--network", "busi", "--models-root", "/m", "--input-flip",
                                      "vertical", "--input-loop", "2", "in.mp4"])
    assert resolve_model(args) == os.path.join("/m", "busi")
    opts = source_options(args)
    assert opts["flip"] == "vertical" and opts["loop"] == 2
    assert choose_output(args) == "display://0"             # imagenet's default output
    args = build_parser().parse_args(["--headless", "x", "display://0"])
    assert choose_output(args) is None
    assert overlay_modes("cam") == {"cam", "text"} and overlay_modes("none") == set()
    from oncolens.appliance.errors import UsageError
    with pytest.raises(UsageError):
        overlay_modes("sparkles")


def test_copied_command_line_runs_with_unknown_flag_reported(tiny_bundle, tiny_data, tmp_path,
                                                             caplog):
    """The docs' line with the bundle's files, plus a flag oncolens does not know."""
    out = str(tmp_path / "cat") + os.sep
    code, stdout, err = run_cli([
        "classify", "--model=" + os.path.join(tiny_bundle, "resnet18.onnx"),
        "--input_blob=input_0", "--output_blob=output_0",
        "--labels=" + os.path.join(tiny_bundle, "labels.txt"), "--headless", "--topK=2",
        "--threshold=0", "--some-future-flag=s3cret", os.path.join(tiny_data, "test", "benign"), out,
        "extra.jpg"])
    assert code == 0, err
    lines = stdout.splitlines()
    assert len(lines) == 6 and all(LINE.match(l) for l in lines)   # 3 images x top-2
    assert copies_in(out) == sorted(os.listdir(os.path.join(tiny_data, "test",
                                                                     "benign")))
    # named without its value (it may be a secret), as docs/APPLIANCE.md shows it
    assert "--some-future-flag: not a flag oncolens classify knows: ignored" in caplog.text
    assert "s3cret" not in caplog.text + err
    assert "extra.jpg: an extra argument (oncolens classify takes INPUT [OUTPUT]): ignored" \
        in caplog.text


def test_output_after_a_flag_is_still_the_output(tiny_bundle, tiny_data, tmp_path, caplog):
    """imagenet takes INPUT and OUTPUT anywhere on the line: a flag between them (here one
    that takes no value and one it does not know) must not turn OUTPUT into an ignored extra
    argument (the run went headless and wrote nothing)."""
    src = os.path.join(tiny_data, "test", "benign")
    out = str(tmp_path / "out") + os.sep
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, src, "--headless",
                                 "--input-loop=1", "--some-future-flag=1", out, "extra.jpg"])
    assert code == 0, err
    assert copies_in(out) == sorted(
        [n for f in os.listdir(src) for n in (f, "{}_loop1{}".format(*os.path.splitext(f)))])
    assert "--some-future-flag: not a flag oncolens classify knows: ignored" in caplog.text
    assert "extra.jpg: an extra argument" in caplog.text
    assert "out" + os.sep + ": an extra argument" not in caplog.text


def test_jetson_utils_only_flags_are_reported_elsewhere(tiny_bundle, tiny_data, caplog):
    src = os.path.join(tiny_data, "test", "normal", "normal_test_0000.png")
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless",
                                 "--input-decoder=v4l2", "--output-encoder=cpu", src])
    assert code == 0, err
    assert "--input-decoder is not supported for files: ignored" in caplog.text
    assert "--output-encoder/--output-save are used by jetson_utils outputs only" in caplog.text


def test_no_display_falls_back_to_headless_with_one_notice(tiny_bundle, tiny_data, monkeypatch,
                                                           caplog):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle,
                                 os.path.join(tiny_data, "test", "normal")])
    assert code == 0, err
    assert len(stdout.splitlines()) == 3
    notices = [r for r in caplog.records if "cannot open a window" in r.getMessage()]
    assert len(notices) == 1 and "running headless" in notices[0].getMessage()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="TensorRT is installed here")
def test_missing_backend_package_is_one_line(tiny_bundle, tiny_data, tmp_path):
    src = os.path.join(tiny_data, "test", "normal", "normal_test_0000.png")
    engine = tmp_path / "resnet18.engine"              # an engine file asks for TensorRT
    shutil.copy(os.path.join(tiny_bundle, "resnet18.onnx"), str(engine))
    shutil.copy(os.path.join(tiny_bundle, "labels.txt"), str(tmp_path))
    for model in (["--model", tiny_bundle, "--backend=tensorrt"], ["--model", str(engine)]):
        code, stdout, err = run_cli(["classify", "--headless", src] + model)
        assert code != 0
        # (the wording is the tensorrt module's once it is installed; the package it names too)
        assert "not installed" in err and ("'tensorrt'" in err or "'pycuda'" in err), err
        assert len(err.strip().splitlines()) == 1


def test_torch_missing_names_the_package(tiny_bundle, tiny_data, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a Nano without torch
    src = os.path.join(tiny_data, "test", "normal", "normal_test_0000.png")
    code, stdout, err = run_cli(["classify", "--model",
                                 os.path.join(tiny_bundle, "model_best.pth.tar"), "--headless",
                                 src])
    assert code != 0 and "'torch'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--backend=tpu"], "--backend: unknown backend 'tpu'"),
    (["--input-flip=sideways"], "--input-flip: unknown value 'sideways'"),
    (["--overlay=sparkles"], "--overlay: unknown value 'sparkles'"),
    (["--topK=-1"], "--topK: expected 0 (every class at or above --threshold) or more"),
    (["--input-loop=-5"], "--input-loop: expected -1 (forever), 0 (once)"),
    (["--log-level=loud"], "--log-level: unknown level 'loud'"),
    (["--log-file={tmp}/afile/x.log"], "--log-file {tmp}/afile/x.log: {tmp}/afile is a file"),
    (["{tmp}/out_%q.jpg"], "expected one number field such as %i"),
    (["{tmp}/out_%s_%i.jpg"], "expected one number field such as %i"),
    (["{tmp}/out.pgm"], ".pgm holds grey images only"),
    (["{tmp}/afile/out/"], "output {tmp}/afile/out/: {tmp}/afile is a file"),
    (["{tmp}/afile/out.mp4"], "{tmp}/afile is a file, not a folder"),
    (["--log-file={tmp}/logs/"], "--log-file {tmp}/logs/ is a folder: expected a file name"),
    (["--log-file={tmp}/a.png"], "an image or video file name; expected a report or log"),
    (["http://localhost:80a"], "output http://localhost:80a: expected [HOST]:PORT"),
])
def test_bad_flags_are_one_line(tiny_bundle, tiny_data, tmp_path, argv, message):
    (tmp_path / "afile").write_text(u"not a folder")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    src = os.path.join(tiny_data, "test", "normal")
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", src] + argv)
    message = message.replace("{tmp}", str(tmp_path))
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1


def test_jetson_log_levels_order():
    """jetson-utils' order: success sits between warning and info (info lines hidden)."""
    import logging
    from oncolens.appliance.cliutil import LOG_LEVELS
    order = ["debug", "verbose", "info", "success", "warning", "error", "silent"]
    values = [LOG_LEVELS[name] for name in order]
    assert values == sorted(values) and LOG_LEVELS["info"] < LOG_LEVELS["success"]
    assert LOG_LEVELS["success"] < logging.WARNING


def test_silent_log_level_and_looping_into_a_folder(tiny_bundle, tiny_data, tmp_path):
    src = os.path.join(tiny_data, "test", "normal")
    names = sorted(os.listdir(src))
    out = str(tmp_path / "out") + "/"
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless",
                                 "--log-level=silent", "--input-loop=1", src, out])
    assert code == 0 and err.strip() == ""
    root, ext = os.path.splitext(names[0])
    written = copies_in(out)
    assert len(written) == 2 * len(names)  # the second pass keeps the first pass's files
    assert names[0] in written and root + "_loop1" + ext in written


@pytest.mark.parametrize("uri, message", [
    ("csi://0", "OpenCV built with GStreamer"),
    ("rtp://@:1234", "OpenCV built with GStreamer"),
    ("v4l2:///dev/video99", "cannot open v4l2:///dev/video99"),
    ("ftp://x/y", "unknown scheme 'ftp://'"),
])
def test_live_inputs_that_cannot_run_here_fail_clearly(tiny_bundle, uri, message):
    from oncolens.appliance.sources import opencv_has_gstreamer
    if "GStreamer" in message and opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless",
                                 "--no-jetson-utils", uri])
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1


def test_network_flag_runs_a_models_folder(tiny_bundle, tiny_data, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(tiny_bundle, str(root / "tiny"))
    src = os.path.join(tiny_data, "test", "malignant", "malignant_test_0000.png")
    code, stdout, err = run_cli(["classify", "--network=tiny", "--models-root", str(root),
                                 "--headless", src])
    assert code == 0, err
    assert LINE.match(stdout.strip())


@pytest.mark.parametrize("argv, flag", [
    (["--serve", "0.0.0.0:18431"], "--serve 0.0.0.0"),
    (["http://0.0.0.0:18432"], "output 0.0.0.0"),
])
def test_serving_off_loopback_without_a_token_is_refused_before_the_model(tiny_data, argv,
                                                                          flag, monkeypatch):
    monkeypatch.delenv("ONCOLENS_TOKEN", raising=False)
    src = os.path.join(tiny_data, "test", "normal")
    code, stdout, err = run_cli(["classify", "--model", "/nonexistent/model", "--headless",
                                 src] + argv)  # a model that would fail to load
    assert code != 0 and flag in err and "token is required" in err
    assert len(err.strip().splitlines()) == 1


def test_log_file_in_a_new_folder(tiny_bundle, tiny_data, tmp_path):
    import subprocess
    import sys
    log_file = tmp_path / "logs" / "run.log"
    src = os.path.join(tiny_data, "test", "normal")
    done = subprocess.run([sys.executable, "-m", "oncolens", "classify", "--model", tiny_bundle,
                           "--headless", src, "--log-file", str(log_file)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    assert done.returncode == 0, done.stderr
    assert "frame(s)" in log_file.read_text()


def test_an_output_format_too_small_for_the_image_is_one_line_naming_it(tiny_bundle, tmp_path):
    """A 70000 px wide PNG classified into a .jpg: JPEG holds 65500 px a side. One line naming
    the output file and the limit, none of OpenCV's own ERROR lines; a .png output works."""
    import subprocess
    import sys
    import cv2
    import numpy as np
    src = str(tmp_path / "wide.png")
    cv2.imwrite(src, np.random.RandomState(0).randint(0, 255, (8, 70000, 3), np.uint8))
    runs = {}
    for name in ("wide_out.jpg", "wide_out.png"):
        runs[name] = subprocess.run(
            [sys.executable, "-m", "oncolens", "classify", "--model", tiny_bundle, "--headless",
             "--log-level", "warning", src, str(tmp_path / name)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    bad = runs["wide_out.jpg"]
    assert bad.returncode == 1, bad.stderr
    assert bad.stderr.strip() == ("oncolens classify: error: {}: cannot encode a 70000x8 image as "
                                  ".jpg (JPEG holds at most 65500 pixels a side: name a .png "
                                  "output)".format(tmp_path / "wide_out.jpg"))
    assert not (tmp_path / "wide_out.jpg").exists()
    good = runs["wide_out.png"]
    assert good.returncode == 0, good.stderr
    assert cv2.imread(str(tmp_path / "wide_out.png")).shape == (8, 70000, 3)


@pytest.mark.parametrize("argv, names", [
    (["classify", "--smoothing=abc", "in.jpg"], "argument --smoothing: invalid float value"),
    (["train", "--epochs", "many", "data"], "argument --epochs: invalid int value"),
    (["export", "onnx", "--bogus"], "unrecognized arguments: --bogus"),
    (["data", "split"], "the following arguments are required: src, out"),
    (["batch", "--backend"], "argument --backend: expected one argument"),
])
def test_a_parse_error_is_one_line_without_the_usage(argv, names):
    """A bad flag is one line naming it (and where the flags are listed), exit 2: not
    argparse's usage summary, 30 lines for classify, above it."""
    import subprocess
    from conftest import cli_subprocess_cmd, subprocess_env
    proc = subprocess.run(cli_subprocess_cmd(*argv), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=subprocess_env(), universal_newlines=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    prog = "oncolens " + " ".join(argv[:2] if argv[0] in ("export", "data") else argv[:1])
    assert lines[0].startswith("{}: error: {}".format(prog, names))
    assert lines[0].endswith("(see '{} --help')".format(prog))
