"""Sources and sinks this machine can run, with their outputs read back."""
import os
import shutil

import numpy as np
import pytest

from conftest import copies_in, run_cli


def _coded_frame(n, w=64, h=48):
    """A frame whose brightness encodes its number (survives lossy codecs)."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:, :, 0] = 10 + 20 * n
    img[:, :, 1] = 120
    img[:, w // 2:, 1] = 200
    return img


def write_video(path, count, fourcc="mp4v", fps=10.0, w=64, h=48):
    import cv2
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for n in range(count):
        writer.write(cv2.cvtColor(_coded_frame(n, w, h), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def read_video(path):
    import cv2
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def test_video_source_frames_names_loop_and_resize(tmp_path):
    from oncolens.appliance.sources import open_source
    path = write_video(str(tmp_path / "clip.mp4"), 12)
    source = open_source(path)
    frames = list(source)
    assert len(frames) == 12 and not source.live
    assert frames[0].relpath == "clip_000000.jpg" and frames[11].relpath == "clip_000011.jpg"
    assert source.rate == pytest.approx(10.0)
    red = [int(f.image[:, :, 0].mean()) for f in frames]
    assert all(abs(r - (10 + 20 * n)) < 12 for n, r in enumerate(red)), red
    looped = list(open_source(path, loop=1))
    assert len(looped) == 24 and [f.index for f in looped] == list(range(24))
    small = next(iter(open_source(path, width=32, height=24)))
    assert small.image.shape == (24, 32, 3)


def test_image_sources_glob_flip_and_unsupported_flags(tiny_data, caplog):
    from oncolens.appliance.imageio import read_image
    from oncolens.appliance.sources import open_source
    pattern = os.path.join(tiny_data, "test", "*", "*_000[01].png")
    frames = list(open_source(pattern))
    assert [f.relpath for f in frames] == [
        os.path.join(c, "{}_test_000{}.png".format(c, n))
        for c in ("benign", "malignant", "normal") for n in (0, 1)]
    flipped = list(open_source(frames[0].origin, flip="horizontal", codec="h264"))[0].image
    assert (flipped == read_image(frames[0].origin)[:, ::-1]).all()
    assert "--input-codec is not supported for image files: ignored" in caplog.text
    assert len(list(open_source(frames[0].origin, loop=2))) == 3


def test_classify_video_to_avi_and_mp4(tiny_bundle, tmp_path):
    from oncolens.appliance.overlay import layout
    src = write_video(str(tmp_path / "in.mp4"), 9, w=160, h=120)
    originals = read_video(src)
    for name in ("out.avi", "out.mp4"):
        dst = str(tmp_path / name)
        code, out, err = run_cli(["classify", "--model", tiny_bundle, "--headless", src, dst])
        assert code == 0, err
        assert len(out.splitlines()) == 9
        written = read_video(dst)
        assert len(written) == 9
        box_h, box_w = layout(written[0].shape, ["00.00% malignant"])[:2]
        for before, after in zip(originals, written):
            box = slice(2, box_h - 2), slice(2, box_w - 2)
            # the translucent box darkens most of the corner (white text on the rest);
            # the frame below it is as it was (up to the codec)
            darker = after[box].astype(int).sum(2) < before[box].astype(int).sum(2) * 0.7
            assert darker.mean() > 0.5
            assert np.abs(after[box_h + 4:].astype(int) - before[box_h + 4:]).mean() < 8
    code, out, err = run_cli(["classify", "--model", tiny_bundle, "--headless", src,
                              str(tmp_path / "out.mp4")])
    assert code != 0 and "already exists" in err


def test_pattern_output_and_folder_names(tiny_bundle, tiny_data, tmp_path):
    src = os.path.join(tiny_data, "test", "benign")
    pattern = str(tmp_path / "out_%i.jpg")
    code, out, err = run_cli(["classify", "--model", tiny_bundle, "--headless", src, pattern])
    assert code == 0, err
    assert sorted(os.listdir(str(tmp_path))) == ["out_0.jpg", "out_1.jpg", "out_2.jpg"]
    video = write_video(str(tmp_path / "v.avi"), 3, fourcc="MJPG")
    folder = str(tmp_path / "frames") + os.sep
    code, out, err = run_cli(["classify", "--model", tiny_bundle, "--headless", video, folder])
    assert code == 0, err
    assert copies_in(folder) == ["v_000000.jpg", "v_000001.jpg", "v_000002.jpg"]


def test_file_uri_outputs_name_the_path(tiny_bundle, tiny_data, tmp_path, monkeypatch):
    """jetson-inference's file:// outputs (file:///abs/out.jpg, file://dir/, a pattern)
    write to the path, not to a folder literally named 'file:'."""
    image = os.path.join(tiny_data, "test", "benign", sorted(os.listdir(
        os.path.join(tiny_data, "test", "benign")))[0])
    monkeypatch.chdir(str(tmp_path))
    code, out, err = run_cli(["classify", "--model", tiny_bundle, "--headless", image,
                              "file://" + str(tmp_path / "one.jpg")])
    assert code == 0, err
    code, out, err = run_cli(["classify", "--model", tiny_bundle, "--headless",
                              os.path.join(tiny_data, "test", "normal"), "file://outdir/"])
    assert code == 0, err
    assert os.path.isfile(str(tmp_path / "one.jpg"))
    assert len(copies_in(str(tmp_path / "outdir"))) == 3
    assert not os.path.exists(str(tmp_path / "file:"))


def test_sink_table_and_rtp_needs_gstreamer(tmp_path):
    from oncolens.appliance import sinks
    from oncolens.appliance.errors import MissingDependency, UsageError
    from oncolens.appliance.sources import opencv_has_gstreamer
    assert isinstance(sinks.open_sink(str(tmp_path / "a.mp4")), sinks.VideoFileSink)
    assert isinstance(sinks.open_sink(str(tmp_path / "d") + "/"), sinks.ImageFileSink)
    assert sinks.open_sink(None) is None
    with pytest.raises(UsageError):
        sinks.open_sink("rtp://nohost", jetson_utils=False)
    with pytest.raises(UsageError) as err:
        sinks.open_sink("gopher://x")
    assert "display://" in str(err.value) and "rtp://" in str(err.value)
    if not opencv_has_gstreamer():
        with pytest.raises(MissingDependency) as err:
            sinks.open_sink("rtp://127.0.0.1:5004", jetson_utils=False)
        assert "GStreamer" in str(err.value)


def test_video_sink_keeps_first_size_and_adopts_source_rate(tmp_path):
    from oncolens.appliance.sinks import VideoFileSink
    from oncolens.appliance.sources import Frame
    sink = VideoFileSink(str(tmp_path / "m.avi"))
    sink.adopt_rate(12.0)
    for n, size in enumerate([(48, 64), (30, 40), (48, 64)]):
        sink.write(Frame(None, "x", None, n, 0, None), _coded_frame(n, size[1], size[0]))
    sink.close()
    import cv2
    cap = cv2.VideoCapture(str(tmp_path / "m.avi"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    cap.release()
    frames = read_video(str(tmp_path / "m.avi"))
    assert len(frames) == 3 and all(f.shape == (48, 64, 3) for f in frames)


def test_busi_glob_keeps_names_and_mixed_sizes_make_one_video(tiny_bundle, busi, tmp_path):
    """Real ultrasound files: greyscale PNGs of different sizes, names with spaces."""
    from oncolens.appliance.imageio import read_image
    pattern = os.path.join(busi, "test", "*", "* (1*).png")
    import glob
    expected = sorted(glob.glob(pattern))
    assert len(expected) >= 5
    out_dir = str(tmp_path / "annotated") + os.sep
    code, out, err = run_cli(["classify", "--model", tiny_bundle, "--headless", pattern,
                              out_dir])
    assert code == 0, err
    assert len(out.splitlines()) == len(expected)
    for path in expected:
        rel = os.path.relpath(path, os.path.join(busi, "test"))     # e.g. benign/benign (12).png
        written = read_image(os.path.join(out_dir, rel))
        assert written.shape == read_image(path).shape
    video = str(tmp_path / "busi.avi")
    code, out, err = run_cli(["classify", "--model", tiny_bundle, "--headless", pattern, video])
    assert code == 0, err
    frames = read_video(video)
    assert len(frames) == len(expected)
    assert len(set(f.shape for f in frames)) == 1


def _stand_in_jetson_utils(monkeypatch):
    import sys
    import types
    made = {}
    ju = types.ModuleType("jetson_utils")

    class VideoSource(object):
        def __init__(self, uri, argv):
            made["source"] = (uri, argv)
            self.script = [np.full((4, 6, 4), n, np.uint8) for n in (1, 2)]
            self.script.insert(1, None)                       # one frame timeout

        def Capture(self, format, timeout):
            return self.script.pop(0) if self.script else None

        def IsStreaming(self):
            return bool(self.script)

        def Close(self):
            made["closed"] = True

    class VideoOutput(object):
        def __init__(self, uri, argv):
            made["output"] = (uri, argv)
            self.rendered = []

        def Render(self, img):
            self.rendered.append(img)

        def IsStreaming(self):
            return True

        def SetStatus(self, text):
            made["status"] = text

        def Close(self):
            pass

    ju.videoSource, ju.videoOutput = VideoSource, VideoOutput
    ju.cudaToNumpy = ju.cudaFromNumpy = lambda a: a
    ju.cudaDeviceSynchronize = lambda: None
    monkeypatch.setitem(sys.modules, "jetson_utils", ju)
    return made


def test_jetson_utils_source_and_sink_with_a_stand_in(monkeypatch):
    """No Jetson here: a stand-in jetson_utils checks the flags and the frame hand-over."""
    from oncolens.appliance.sinks import open_sink
    from oncolens.appliance.sources import SourceLost, open_source
    made = _stand_in_jetson_utils(monkeypatch)
    source = open_source("csi://0", width=1280, height=720, flip="rotate-180")
    source.open()
    assert made["source"] == ("csi://0", ["--input-width=1280", "--input-height=720",
                                          "--input-flip=rotate-180"])
    first = source.read()
    assert first.image.shape == (4, 6, 3) and first.image[0, 0, 0] == 1
    assert source.read() is None                              # a timeout is skipped
    assert source.read().image[0, 0, 0] == 2
    with pytest.raises(SourceLost):                           # the camera went away
        source.read()
    source.close()
    assert made["closed"]
    sink = open_sink("rtp://10.0.0.2:5000", codec="h265", bitrate=2000000)
    sink.write(first, first.image)
    sink.set_status("status")
    assert made["output"] == ("rtp://10.0.0.2:5000", ["--output-codec=h265",
                                                     "--bitrate=2000000"])
    assert len(sink.out.rendered) == 1 and made["status"] == "status" and not sink.stopped


def test_float_tiff_is_named_and_opencv_stays_quiet(tmp_path, capfd):
    """A 32-bit float TIFF (from a microscope's analysis software) fails with a message that
    says why, and OpenCV's own WARN line, which names no file, is not printed."""
    import cv2
    from oncolens.appliance.errors import ImageReadError
    from oncolens.appliance.imageio import read_image
    path = tmp_path / "stack.tif"
    cv2.imwrite(str(path), np.random.RandomState(0).rand(20, 30).astype(np.float32))
    level = cv2.utils.logging.getLogLevel()
    with pytest.raises(ImageReadError) as err:
        read_image(str(path))
    assert str(err.value) == "{}: 32-bit float TIFF is not supported (expected 8- or 16-bit " \
                             "integer samples)".format(path)
    assert "WARN" not in capfd.readouterr().err
    assert cv2.utils.logging.getLogLevel() == level          # put back afterwards
    cv2.imwrite(str(tmp_path / "deep.tif"), np.full((20, 30), 40000, np.uint16))
    assert read_image(str(tmp_path / "deep.tif")).shape == (20, 30, 3)


def test_existing_outputs_are_refused_before_the_first_frame(tiny_bundle, tiny_data, tmp_path):
    """A folder's output names are known from its file list: an existing one is named at the
    start, and nothing is written or classified (not two copies, then an error)."""
    import shutil
    src = os.path.join(tiny_data, "test", "benign")
    third = sorted(os.listdir(src))[2]
    out = tmp_path / "o8"
    out.mkdir()
    shutil.copy(os.path.join(src, third), str(out))
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", src,
                                 str(out) + os.sep])
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert os.path.join(str(out), third) in err and "--overwrite" in err
    assert stdout == "" and os.listdir(str(out)) == [third]


def test_many_images_into_one_image_file_are_refused_at_start(tiny_bundle, tiny_data, tmp_path):
    one = str(tmp_path / "one.jpg")
    image = os.path.join(tiny_data, "test", "benign", "benign_test_0000.png")
    for argv in ([os.path.join(tiny_data, "test", "benign")], ["--input-loop=1", image]):
        code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless"] + argv +
                                    [one])
        assert code != 0 and "one.jpg is a single image file" in err
        assert stdout == "" and not os.path.exists(one)
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless", image, one])
    assert code == 0 and os.path.exists(one), err


def test_planned_names_are_the_written_names_and_clashes_are_refused(tiny_bundle, tiny_data,
                                                                     tmp_path):
    """The names checked at the start are those the run writes, later passes included; a
    later pass's name that an input already has is refused at the start too."""
    import shutil
    from oncolens.appliance.sinks import ImageFileSink, planned_frames
    from oncolens.appliance.sources import open_source
    src = os.path.join(tiny_data, "test", "normal")
    out = str(tmp_path / "out") + os.sep
    frames, endless = planned_frames(open_source(src, loop=1))
    assert not endless
    planned = sorted(ImageFileSink(out).target(f) for f in frames)
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless",
                                 "--input-loop=1", src, out])
    assert code == 0, err
    assert planned == sorted(os.path.join(out, name) for name in copies_in(out))
    clash = tmp_path / "clash"
    shutil.copytree(src, str(clash))
    first = sorted(os.listdir(str(clash)))[0]
    root, ext = os.path.splitext(first)
    shutil.copy(str(clash / first), str(clash / (root + "_loop1" + ext)))
    out2 = str(tmp_path / "out2") + os.sep
    code, stdout, err = run_cli(["classify", "--model", tiny_bundle, "--headless",
                                 "--input-loop=1", str(clash), out2])
    assert code != 0 and "would be written to it" in err and not os.path.exists(out2)


def test_an_output_folder_inside_the_input_is_left_out_of_it(tiny_bundle, tiny_data, tmp_path):
    """classify IN IN/out/ twice (--overwrite): the second run reads the same 3 images, not
    its own earlier outputs as well (and writes no IN/out/out/)."""
    src = str(tmp_path / "in")
    shutil.copytree(os.path.join(tiny_data, "test", "benign"), src)
    for extra in ([], ["--overwrite"]):
        code, out, err = run_cli(["classify", "--model", tiny_bundle, "--headless", src,
                                  os.path.join(src, "out") + os.sep] + extra)
        assert code == 0, err
        assert len(out.splitlines()) == 3
    assert copies_in(os.path.join(src, "out")) == sorted(
        os.listdir(os.path.join(tiny_data, "test", "benign")))
    shutil.rmtree(os.path.join(src, "out"))
    for extra in ([], ["--overwrite"]):                 # a pattern's folder too
        code, out, err = run_cli(["classify", "--model", tiny_bundle, "--headless", src,
                                  os.path.join(src, "num", "o_%i.jpg")] + extra)
        assert code == 0 and len(out.splitlines()) == 3, err


def test_opencv_log_level_is_restored_when_decoding_and_encoding_overlap():
    """A decode (ERROR) and an encode (SILENT) overlapping in two threads, the decode ending
    first: the quietest level wanted holds while both run, and the user's level comes back
    after the last one (each used to restore its own saved level: WARN stayed silenced)."""
    import cv2
    from oncolens.appliance.cvlog import quiet_opencv, silent_opencv
    logging = cv2.utils.logging
    before = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_INFO)
    try:
        quiet_opencv.__enter__()
        assert logging.getLogLevel() == logging.LOG_LEVEL_ERROR
        silent_opencv.__enter__()
        assert logging.getLogLevel() == logging.LOG_LEVEL_SILENT
        quiet_opencv.__exit__(None, None, None)
        assert logging.getLogLevel() == logging.LOG_LEVEL_SILENT
        silent_opencv.__exit__(None, None, None)
        assert logging.getLogLevel() == logging.LOG_LEVEL_INFO
    finally:
        logging.setLogLevel(before)
