"""``oncolens classify`` on video files, globs and image outputs: what is refused before the
model loads, with the files read back."""
import os
import subprocess

import pytest

from conftest import cli_subprocess_cmd, copies_in, run_cli, subprocess_env
from test_appliance_io import read_video, write_video


def _bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


def test_a_video_is_not_written_over_itself_even_with_overwrite(tiny_bundle, tmp_path):
    """The output video opened over the input it is reading truncated it: the input was lost
    and the output was a damaged copy with fewer frames (exit 0)."""
    src = write_video(str(tmp_path / "scan.mp4"), 8, w=96, h=72)
    before = _bytes(src)
    os.symlink(src, str(tmp_path / "alias.mp4"))
    for out in (src, "file://" + src, str(tmp_path / "alias.mp4")):
        code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless",
                                     "--overwrite", src, out])
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "is the input video" in err and stdout == ""
        assert _bytes(src) == before and len(read_video(src)) == 8
    out = str(tmp_path / "annotated.mp4")
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", src, out])
    assert code == 0, err
    assert len(read_video(out)) == 8 and stdout.count("imagenet:  ") == 8


def test_a_video_type_we_cannot_write_is_refused_not_made_a_folder(tiny_bundle, tiny_data,
                                                                     tmp_path):
    """out.webm (a type read as input only) became a folder named out.webm full of JPEGs."""
    clip = write_video(str(tmp_path / "clip.mp4"), 3)
    folder = os.path.join(tiny_data, "test", "benign")
    for src in (clip, folder):
        for name in ("out.webm", "out.mpg", "out.h264"):
            out = str(tmp_path / name)
            code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", src,
                                         out])
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert "unsupported video type '{}'".format(os.path.splitext(name)[1]) in err
            assert ".mp4" in err and stdout == "" and not os.path.exists(out)
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", clip,
                                 str(tmp_path / "frames.webm") + os.sep])  # a folder, said so
    assert code == 0 and len(copies_in(str(tmp_path / "frames.webm"))) == 3, err


def test_an_existing_folder_named_like_a_video_is_a_folder_output(tiny_bundle, tmp_path,
                                                                    caplog):
    """An existing folder 'frames.mp4' (made by an earlier 'frames.mp4/') given without its
    / was taken for a video file: refused as 'already exists', and with --overwrite as 'a
    folder: expected a file name'. An existing folder is a folder output (APPLIANCE.md),
    whatever its name: the frames go into it, and a warning says so."""
    clip = write_video(str(tmp_path / "clip.mp4"), 3)
    for name in ("frames.mp4", "frames.avi", "frames.webm"):
        out = str(tmp_path / name)
        os.mkdir(out)
        code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", clip,
                                     out])
        assert code == 0 and len(copies_in(out)) == 3, err
        assert "output {} is an existing folder".format(out) in caplog.text
        code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless",
                                     "--overwrite", clip, out])  # its copies replaced
        assert code == 0 and len(copies_in(out)) == 3, err


def test_a_refused_output_leaves_no_input_video_open(tmp_path, monkeypatch):
    """Guard: the input video is opened once before the output checks (to name a file OpenCV
    cannot read before the model loads) and released at once, so an output refused then
    leaves no capture open (on a camera or stream nothing is opened before the first read)."""
    import cv2
    real, made = cv2.VideoCapture, []

    class Capture(object):
        def __init__(self, *args):
            self.cap, self.released = real(*args), False
            made.append(self)

        def __getattr__(self, name):
            return getattr(self.cap, name)

        def release(self):
            self.released = True
            self.cap.release()
    monkeypatch.setattr(cv2, "VideoCapture", Capture)
    clip = write_video(str(tmp_path / "clip.mp4"), 3)
    (tmp_path / "out.mp4").write_text(u"x")
    for out in ("out.mp4", "out.gif", "out_%q.jpg"):  # exists; an unknown type; a bad pattern
        code, stdout, err = run_cli(["classify", "--model", str(tmp_path / "none"),
                                     "--headless", clip, str(tmp_path / out)])
        assert code == 2 and err.startswith("oncolens classify: error: output "), err
    assert len(made) == 3 and all(c.released for c in made)


def test_bad_input_size_rate_and_encoder_values_are_one_line_before_the_model(tiny_bundle,
                                                                              tmp_path):
    """--input-width=-80 was a cv2.resize traceback; --input-rate=-5 'OpenCV cannot write
    mp4v video here' with an empty out.mp4 left behind (a rerun then needed --overwrite);
    --output-codec and --bitrate were never checked; --input-latency=-5 was taken (rtspsrc
    then failed on it, or it was ignored for a file)."""
    clip = write_video(str(tmp_path / "clip.mp4"), 3)
    out = str(tmp_path / "out.mp4")
    for argv, message in (
            (["--input-width=-80", "--input-height=60"], "--input-width: expected pixels above 0"),
            (["--input-rate=-5"], "--input-rate: expected frames per second above 0"),
            (["--input-rate=nan"], "--input-rate: expected frames per second above 0"),
            (["--bitrate=-5"], "--bitrate: expected bits per second above 0"),
            (["--output-codec=h266"], "--output-codec: unknown codec 'h266'"),
            (["--status-every=-1"], "--status-every: expected seconds, 0 or more"),
            (["--input-latency=-5"], "--input-rtsp-latency (--input-latency): expected "
                                     "milliseconds from 0 to 60000"),
            (["--input-rtsp-latency=90000"], "--input-rtsp-latency (--input-latency): "
                                             "expected milliseconds from 0 to 60000")):
        code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", clip,
                                     out] + argv)
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
        assert message in err and stdout == "" and not os.path.exists(out), (argv, err)


def test_encoder_flags_on_a_video_file_are_named_not_silently_ignored(tiny_bundle, tmp_path,
                                                                       caplog):
    clip = write_video(str(tmp_path / "clip.mp4"), 3)
    out = str(tmp_path / "out.mp4")
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", clip, out,
                                 "--output-codec=h265", "--bitrate=2000000"])
    assert code == 0, err
    assert len(read_video(out)) == 3
    for flag in ("--output-codec", "--bitrate"):
        assert "{} is used by rtp:// outputs only: ignored for {}".format(flag, out) in caplog.text


def test_a_glob_into_a_pattern_in_its_own_folder(tiny_bundle, tiny_data, tmp_path):
    """The pattern's folder was left out of a glob's matches even when it was the glob's own
    folder: 'scans/*.png' 'scans/out_%i.jpg' said 'no image files found' with three there."""
    import shutil
    scans = str(tmp_path / "scans")
    shutil.copytree(os.path.join(tiny_data, "test", "benign"), scans)
    inputs = sorted(os.listdir(scans))
    pattern = os.path.join(scans, "out_%i.jpg")
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless",
                                 os.path.join(scans, "*.png"), pattern])
    assert code == 0, err
    assert stdout.count("imagenet:  ") == len(inputs) == 3
    assert sorted(os.listdir(scans)) == sorted(inputs + ["out_0.jpg", "out_1.jpg", "out_2.jpg"])
    # an output folder inside the glob's folder is still left out of its matches
    os.mkdir(os.path.join(scans, "sub"))
    shutil.copy(os.path.join(scans, "out_0.jpg"), os.path.join(scans, "sub", "a.jpg"))
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless",
                                 os.path.join(scans, "*", "*.jpg"),
                                 os.path.join(scans, "sub") + os.sep, "--overwrite"])
    assert code == 2 and "no image files found" in err and stdout == ""


def test_smoothing_that_is_not_a_number_is_refused(tiny_bundle, tmp_path):
    """--smoothing=nan printed and drew '00nan% benign' on every frame after the first."""
    clip = write_video(str(tmp_path / "clip.mp4"), 3)
    for value in ("nan", "inf", "-1"):
        out = str(tmp_path / "out_{}.mp4".format(value))
        code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", clip, out,
                                     "--smoothing=" + value])
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "--smoothing: expected a weight in [0, 1] or a number of frames" in err
        assert stdout == "" and not os.path.exists(out)
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", clip,
                                 "--smoothing=2"])
    assert code == 0 and stdout.count("imagenet:  ") == 3 and "nan%" not in stdout, err


def test_a_video_opencv_cannot_read_is_named_before_the_model_loads(tiny_bundle, tmp_path,
                                                                    caplog):
    """It was named after the model loaded (minutes for an engine build on a Nano), with a
    camera's advice: 'check the device or address'."""
    bad = tmp_path / "scan.mp4"
    bad.write_bytes(b"not a video")
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", str(bad),
                                 str(tmp_path / "out.mp4")])
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "cannot open {} (video): OpenCV cannot read it as a video".format(bad) in err
    assert "backend auto" not in caplog.text and stdout == ""
    assert not os.path.exists(str(tmp_path / "out.mp4"))


class _FailingWriter(object):
    """A cv2.VideoWriter that cannot open, after creating its file empty (as OpenCV builds do
    that open the file before the encoder; in this one a 1x1 mp4v frame fails without one)."""

    def __init__(self, path, *args):
        open(path, "ab").close()  # made when missing, never truncated

    def isOpened(self):
        return False

    def release(self):
        pass


def test_a_video_writer_that_cannot_open_leaves_no_file_and_no_folder(tiny_bundle, tiny_data,
                                                                       tmp_path, monkeypatch):
    """The failed writer's empty out.mp4 was left behind (a rerun then needed --overwrite),
    and so were the folders made for it; a file that was there before is kept as it was."""
    import cv2
    monkeypatch.setattr(cv2, "VideoWriter", _FailingWriter)
    image = os.path.join(tiny_data, "test", "benign", "benign_test_0000.png")
    out = str(tmp_path / "new" / "sub" / "out.mp4")
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", image, out])
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "output {}: OpenCV cannot open a mp4v video writer for 48x48 frames".format(out) \
        in err and ".avi" in err
    assert not os.path.exists(str(tmp_path / "new"))
    kept = str(tmp_path / "kept.avi")
    with open(kept, "wb") as fh:
        fh.write(b"an earlier run's video")
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless",
                                 "--overwrite", image, kept])
    assert code == 1 and "output {}: OpenCV cannot open a MJPG video writer".format(kept) in err
    assert _bytes(kept) == b"an earlier run's video"


def test_a_bad_latency_is_refused_before_the_stream_is_opened(tiny_bundle, monkeypatch):
    from oncolens.appliance import sources

    def never(*args, **kwargs):
        raise AssertionError("the source was opened")
    monkeypatch.setattr(sources, "open_source", never)
    for value in ("-1", "60001"):
        code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless",
                                     "--no-jetson-utils", "--input-rtsp-latency", value,
                                     "rtsp://127.0.0.1:9/stream"])
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "--input-rtsp-latency (--input-latency): expected milliseconds from 0 to " \
            "60000 (the jitter buffer; 0: none; left out: 200), got {}".format(value) in err


# OpenCV with no FFMPEG (as some builds have): its FFMPEG and GStreamer writers disabled
NO_FFMPEG = {"OPENCV_VIDEOIO_PRIORITY_FFMPEG": "0", "OPENCV_VIDEOIO_PRIORITY_GSTREAMER": "0"}


@pytest.mark.parametrize("name, backends", [("out.avi", {}), ("out.mkv", {}),
                                            ("out.avi", NO_FFMPEG)])
def test_a_video_output_prints_no_image_sequence_warning(tiny_bundle, tiny_data, tmp_path,
                                                         name, backends):
    """OpenCV's own choice of writer tried its image-sequence backend (CV_IMAGES) before the
    one that writes the .avi where it has no FFMPEG, and every run printed a multi-line
    ``[ WARN ... CV_IMAGES ... filename_pattern.empty()]`` block; the video was written."""
    folder = os.path.join(tiny_data, "test", "benign")
    images = sorted(os.listdir(folder))
    out = str(tmp_path / name)
    env = subprocess_env()
    env.update(backends)
    proc = subprocess.run(cli_subprocess_cmd("classify", "--model", tiny_bundle, "--headless",
                                             folder, out),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "CV_IMAGES" not in proc.stderr and "filename_pattern" not in proc.stderr, \
        proc.stderr
    assert "[ WARN" not in proc.stderr and "[ERROR" not in proc.stderr, proc.stderr
    assert "wrote {} frames to {}".format(len(images), out) in proc.stderr
    frames = read_video(out)
    assert len(frames) == len(images) and frames[0].shape == (48, 48, 3)


def test_the_video_writer_skips_only_the_image_sequence_backend(tmp_path, monkeypatch):
    """Each writer backend OpenCV lists is tried in its order but CV_IMAGES; an OpenCV that
    cannot list them makes its own choice, as before."""
    import cv2
    import numpy as np
    from oncolens.appliance.sinks import _writer_backends, open_video_writer
    listed = [int(b) for b in cv2.videoio_registry.getWriterBackends()]
    assert _writer_backends(cv2) == [(b,) for b in listed if b != cv2.CAP_IMAGES]
    monkeypatch.delattr(cv2.videoio_registry, "getWriterBackends")
    assert _writer_backends(cv2) == [()]
    out = str(tmp_path / "plain.avi")
    writer = open_video_writer(out, "MJPG", 5.0, (32, 24))
    assert writer is not None
    writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()
    assert len(read_video(out)) == 1


def test_an_output_of_an_unknown_type_is_refused_not_made_a_folder(tiny_bundle, tiny_data,
                                                                    tmp_path):
    """out.jgp (a typo) or out.gif became a folder of that name holding the copies, exit 0."""
    image = os.path.join(tiny_data, "test", "benign", sorted(os.listdir(
        os.path.join(tiny_data, "test", "benign")))[0])
    for name in ("out.jgp", "out.gif", "scans.v2"):
        out = str(tmp_path / name)
        code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", image,
                                     out])
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "output {}: unknown type '{}'".format(out, os.path.splitext(name)[1]) in err
        assert ".png" in err and ".mp4" in err and "end the name with /" in err
        assert ".pgm" not in err  # a grey-only type is no output for colour copies
        assert stdout == "" and not os.path.exists(out)
    for name in ("scans.v2" + os.sep, "plain"):  # a folder, as before
        code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", image,
                                     os.path.join(str(tmp_path), name)])
        assert code == 0 and copies_in(os.path.join(str(tmp_path), name)) == [
            os.path.basename(image)], err
    code, _, err = run_cli(["classify", "--model", tiny_bundle, "--headless", "--overwrite",
                            image, str(tmp_path / "scans.v2")])  # an existing folder
    assert code == 0, err


def test_an_unknown_output_type_is_refused_before_the_model_loads_for_a_video(
        tiny_bundle, tmp_path, monkeypatch):
    """For a video (or camera) input, whose frames are not known up front, the output was
    only checked when it was opened, after the model had loaded (an engine build on a Nano):
    out.gif, a grey-only out.pgm, a bad pattern or a folder that cannot be made were refused
    only then, where docs/APPLIANCE.md says before the model loads."""
    from oncolens.appliance.classifier import Classifier
    loaded = []

    def no_load(*args, **kwargs):
        loaded.append(args)
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(Classifier, "open", staticmethod(no_load))
    clip = write_video(str(tmp_path / "clip.mp4"), 3)
    (tmp_path / "taken").write_text(u"a file, not a folder")
    for name, expected in (("out.gif", "unknown type '.gif'"), ("out.pgm", "grey images only"),
                           ("out_%i_%i.jpg", "expected one number field"),
                           (os.path.join("taken", "sub") + os.sep, "taken")):
        out = str(tmp_path / name)
        code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", clip,
                                     out])
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert expected in err and stdout == "" and not loaded
        assert not os.path.exists(out)
