"""The video-type suggestion of a writer that cannot open, with a real OpenCV whose FFMPEG and
GStreamer writers are switched off (tests/test_video_writer_suggestions.py checks the rule
with a patched backend list).

It lives apart from that file because, run as the suite's last test, its first child
process's exit crashed the pytest process itself (SIGSEGV). The cause was OpenVINO's CPU
plugin leaving the main thread's alternate signal stack unmapped, so the SIGCHLD of that
exit could not be delivered: see tests/test_openvino_signal_stack.py, and the one shared
OpenVINO Core that fixed it."""
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
