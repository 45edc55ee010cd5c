"""A video output OpenCV cannot open is refused in one line that names other outputs to try.
It named every type of the other codec (".m4v, .mov, .mp4" for a failed .avi), but an OpenCV
without FFMPEG (or GStreamer) writes only .avi, with its own MJPEG writer: the suggestions
failed too. They now follow the writer backends this OpenCV lists."""
import os
import re

import numpy as np
import pytest

from test_classify_files import _FailingWriter

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


def _opencv_listing(monkeypatch, listed):
    """An OpenCV whose writer backends are ``listed`` (by name) and whose writer fails."""
    import cv2
    codes = {"FFMPEG": cv2.CAP_FFMPEG, "GSTREAMER": cv2.CAP_GSTREAMER,
             "CV_IMAGES": cv2.CAP_IMAGES, "CV_MJPEG": cv2.CAP_OPENCV_MJPEG}
    monkeypatch.setattr(cv2.videoio_registry, "getWriterBackends",
                        lambda: [codes[n] for n in listed])
    monkeypatch.setattr(cv2, "VideoWriter", _FailingWriter)


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
    _opencv_listing(monkeypatch, listed)
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


@pytest.mark.parametrize("listed, name, needs", [
    (["CV_IMAGES", "CV_MJPEG"], "out.mkv", True),
    (["CV_IMAGES", "CV_MJPEG"], "out.mp4", True),
    (["CV_IMAGES"], "out.mov", True),
    (["CV_IMAGES", "CV_MJPEG"], "out.avi", False),  # OpenCV's own writer: not the reason
    (["FFMPEG", "CV_MJPEG"], "out.mkv", False),     # a full writer: the codec failed
    (["GSTREAMER"], "out.mp4", False),
])
def test_the_line_says_a_type_needs_an_ffmpeg_or_gstreamer_opencv(tmp_path, monkeypatch,
                                                                    listed, name, needs):
    """Where OpenCV has no FFMPEG (a build with its own MJPEG writer alone), .mkv, .mp4, .m4v
    and .mov cannot be written: the line named .avi instead but not why .mkv failed."""
    _opencv_listing(monkeypatch, listed)
    message = _refusal(tmp_path, name)
    said = "nothing written (writing {} needs an FFMPEG or GStreamer video writer in OpenCV, " \
        "and this one has neither: ".format(name[4:])
    assert (said in message) == needs, message
