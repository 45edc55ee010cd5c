"""A video output OpenCV cannot open is refused in one line that names other outputs to try.
It named every type of the other codec (".m4v, .mov, .mp4" for a failed .avi), but an OpenCV
without FFMPEG (or GStreamer) writes only .avi, with its own MJPEG writer: the suggestions
failed too. They now follow the writer backends this OpenCV lists."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import cli_subprocess_cmd, run_cli, subprocess_env
from test_classify_files import NO_FFMPEG, _FailingWriter

COUNT_FRAMES = ("import sys, cv2\n"
                "cap = cv2.VideoCapture(sys.argv[1])\n"
                "n = 0\n"
                "while cap.read()[0]:\n"
                "    n += 1\n"
                "print(n)\n")
IMAGES = "a folder of images (a name ending in /, or a pattern like out_%i.jpg)"


def _suggested(message):
    """The video types the one line names, after what failed."""
    tail = message.split("nothing written", 1)[1]
    return re.findall(r"\.(?:avi|mkv|mp4|m4v|mov)\b", tail)


def _refusal(tmp_path, name):
    from oncolens.appliance.errors import OncoLensError
    from oncolens.appliance.sinks import VideoFileSink
    from oncolens.appliance.sources import Frame
    out = str(tmp_path / name)
    sink = VideoFileSink(out)
    with pytest.raises(OncoLensError) as err:
        sink.write(Frame(None, "x", None, 0, 0, None), np.zeros((24, 32, 3), np.uint8))
    message = str(err.value)
    assert message.startswith("output {}: OpenCV cannot open a".format(out)), message
    assert "\n" not in message and not os.path.exists(out)
    return message


@pytest.mark.parametrize("listed, name, expected", [
    (["FFMPEG", "CV_IMAGES", "CV_MJPEG"], "out.mp4", [".avi", ".mkv"]),
    (["FFMPEG", "CV_IMAGES", "CV_MJPEG"], "out.avi", [".m4v", ".mov", ".mp4"]),
    (["GSTREAMER", "CV_MJPEG"], "out.mkv", [".m4v", ".mov", ".mp4"]),
    (["CV_IMAGES", "CV_MJPEG"], "out.mp4", [".avi"]),
    (["CV_IMAGES", "CV_MJPEG"], "out.mkv", [".avi"]),
    (["CV_IMAGES", "CV_MJPEG"], "out.avi", []),
    (["CV_IMAGES"], "out.mp4", []),
])
def test_the_suggested_types_are_those_the_writer_backends_can_write(tmp_path, monkeypatch,
                                                                    listed, name, expected):
    import cv2
    codes = {"FFMPEG": cv2.CAP_FFMPEG, "GSTREAMER": cv2.CAP_GSTREAMER,
             "CV_IMAGES": cv2.CAP_IMAGES, "CV_MJPEG": cv2.CAP_OPENCV_MJPEG}
    monkeypatch.setattr(cv2.videoio_registry, "getWriterBackends",
                        lambda: [codes[n] for n in listed])
    monkeypatch.setattr(cv2, "VideoWriter", _FailingWriter)
    message = _refusal(tmp_path, name)
    assert _suggested(message) == expected, message
    assert IMAGES in message  # written by any OpenCV
    if not expected:
        assert "this OpenCV writes no other video type" in message


def test_an_opencv_that_cannot_list_its_writers_gets_the_other_codecs_types(tmp_path,
                                                                            monkeypatch):
    import cv2
    monkeypatch.delattr(cv2.videoio_registry, "getWriterBackends")
    monkeypatch.setattr(cv2, "VideoWriter", _FailingWriter)
    assert _suggested(_refusal(tmp_path, "out.mp4")) == [".avi", ".mkv"]


def test_without_ffmpeg_the_suggestion_is_one_that_writes(tiny_bundle, tiny_data, tmp_path):
    """This OpenCV with its FFMPEG and GStreamer writers disabled: an .mkv cannot be opened,
    and the type the line names instead is written."""
    image = os.path.join(tiny_data, "test", "benign", "benign_test_0000.png")
    env = subprocess_env()
    env.update(NO_FFMPEG)

    def classify(out):
        return subprocess.run(cli_subprocess_cmd("classify", "--model", tiny_bundle,
                                                 "--headless", image, out),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=600)
    proc = classify(str(tmp_path / "out.mkv"))
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "cannot open a MJPG video writer" in line
    suggested = _suggested(line)
    assert suggested == [".avi"], line
    out = str(tmp_path / ("out" + suggested[0]))
    proc = classify(out)
    assert proc.returncode == 0, proc.stderr
    # counted back in a child process too: an in-process cv2.VideoCapture this late in the
    # whole suite crashed the test process (SIGSEGV) here, though never when run alone
    count = subprocess.run([sys.executable, "-c", COUNT_FRAMES, out], env=subprocess_env(),
                           stdout=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert count.returncode == 0 and count.stdout.split() == ["1"], count
