"""The video-type suggestion of a writer that cannot open, with a real OpenCV whose FFMPEG and
GStreamer writers are switched off (tests/test_video_writer_suggestions.py checks the rule
with a patched backend list).

It lives apart from that file and early in the suite's order on purpose: run as the suite's
last test, its first child process crashed the pytest process itself (SIGSEGV, three runs in
three, never when run alone or with the test_t*/test_v* files; the cause is not found)."""
import os
import subprocess

from conftest import cli_subprocess_cmd, subprocess_env
from test_appliance_io import read_video
from test_classify_files import NO_FFMPEG
from test_video_writer_suggestions import _suggested


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
    assert len(read_video(out)) == 1
