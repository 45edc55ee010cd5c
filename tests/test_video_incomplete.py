"""A video output whose frames did not all reach the file (a full disk) said 'wrote N frames'
and exited 0: OpenCV's writer reports no error when a write fails (only 'Failed to write
frame' on stderr). The finished file is now read back, and a short one fails the run in one
line naming it; what it holds is kept."""
import logging
import os

import pytest

from conftest import run_cli
from test_appliance_io import read_video, write_video


class _DroppingWriter(object):
    """A real cv2.VideoWriter whose writes after the first ``keep`` are lost, as on a disk
    that fills up mid-run."""

    def __init__(self, writer, keep):
        self.writer, self.keep = writer, keep

    def write(self, image):
        if self.keep > 0:
            self.keep -= 1
            self.writer.write(image)

    def release(self):
        self.writer.release()


@pytest.mark.parametrize("name", ["out.avi", "out.mp4"])
def test_a_video_short_of_frames_fails_the_run_and_is_kept(tiny_bundle, tmp_path, monkeypatch,
                                                           caplog, name):
    from oncolens.appliance import sinks
    caplog.set_level(logging.INFO)
    real = sinks.open_video_writer
    monkeypatch.setattr(sinks, "open_video_writer",
                        lambda *a, **k: _DroppingWriter(real(*a, **k), 2))
    clip = write_video(str(tmp_path / "clip.mp4"), 5)
    out = str(tmp_path / name)
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", clip, out])
    assert code == 1, err
    assert stdout.count("imagenet:  ") == 5
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "output {}: the video is incomplete: OpenCV's writer was given 5 frames but the " \
        "file opens with 2 of them counted in it".format(out) in errors[0]
    assert not any("wrote 5 frames" in r.getMessage() for r in caplog.records)
    assert len(read_video(out)) == 2  # kept as it is


def test_a_video_that_does_not_open_again_fails_the_run(tiny_bundle, tmp_path, monkeypatch,
                                                        caplog):
    """A disk full before the container's header: the file is empty."""
    from oncolens.appliance import sinks

    class Emptied(_DroppingWriter):
        def release(self):
            self.writer.release()
            open(self.path, "wb").close()

    def opened(path, *args, **kwargs):
        writer = Emptied(sinks.open_video_writer.real(path, *args, **kwargs), 0)
        writer.path = path
        return writer

    opened.real = sinks.open_video_writer
    monkeypatch.setattr(sinks, "open_video_writer", opened)
    clip = write_video(str(tmp_path / "clip.mp4"), 3)
    out = str(tmp_path / "out.avi")
    code, _, err = run_cli(["classify", "--model", tiny_bundle, "--headless", clip, out])
    assert code == 1, err
    assert any("output {}: the video is incomplete: OpenCV's writer was given 3 frames but "
               "the file does not open as a video".format(out) in r.getMessage()
               for r in caplog.records)
    assert os.path.exists(out)


def test_a_whole_video_still_passes(tiny_bundle, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    clip = write_video(str(tmp_path / "clip.mp4"), 4)
    for name in ("out.avi", "out.mp4", "out.mkv"):
        out = str(tmp_path / name)
        code, _, err = run_cli(["classify", "--model", tiny_bundle, "--headless", clip, out])
        assert code == 0, err
        assert len(read_video(out)) == 4
        assert any("wrote 4 frames to {}".format(out) in r.getMessage()
                   for r in caplog.records)


def test_a_writer_that_fails_to_open_on_a_full_disk_says_so(tmp_path, monkeypatch):
    """It named other video types to try, which fail as well on a full disk."""
    import cv2
    import numpy as np

    from oncolens.appliance import sinks
    from oncolens.appliance.errors import OncoLensError
    from oncolens.appliance.sources import Frame
    from test_classify_files import _FailingWriter
    monkeypatch.setattr(cv2, "VideoWriter", _FailingWriter)
    monkeypatch.setattr(sinks, "no_space_left", lambda path: True)
    out = str(tmp_path / "out.mp4")
    with pytest.raises(OncoLensError) as err:
        sinks.VideoFileSink(out).write(Frame(None, "x", None, 0, 0, None),
                                       np.zeros((24, 32, 3), np.uint8))
    assert str(err.value) == "output {}: OpenCV cannot open a video writer for it: no space " \
        "is left on its disk: nothing written".format(out)
    assert not os.path.exists(out)
