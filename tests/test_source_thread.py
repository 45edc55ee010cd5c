"""The live loop's source in a thread of its own (appliance/source_thread.py): a stop ends
classify while a read of the source blocks, a slow close at the end of an ordinary run is
waited for, and the thread answers calls after it finished."""
import os
import queue
import signal
import subprocess
import threading

import pytest

from conftest import cli_subprocess_cmd, subprocess_env
from test_appliance_loop import FakeNotifier, FlakySource, ListSink, _reader

BLOCKING_CAMERA = """
import os, sys
import numpy as np
_never = os.pipe()[0]  # its write end stays open: a read of it waits for ever

class videoSource(object):
    def __init__(self, uri, argv=None):
        self.n = 0
    def GetFrameRate(self):
        return 10.0
    def Capture(self, format="rgb8", timeout=1000):
        self.n += 1
        if self.n <= 3:
            return np.full((48, 48, 3), 60 * self.n, np.uint8)
        sys.stderr.write("stand-in camera: blocked\\n")
        sys.stderr.flush()
        os.read(_never, 1)  # retried after a signal's handler (PEP 475): never returns
    def IsStreaming(self):
        return True
    def Close(self):
        pass

def cudaDeviceSynchronize():
    pass

def cudaToNumpy(img):
    return img
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_ends_classify_while_a_read_of_the_source_blocks(tiny_bundle, tmp_path, signum):
    """classify read its source in the main thread: a read that never returned kept SIGTERM
    (systemctl stop, timeout) and Ctrl-C from ending it, until systemd's SIGKILL, which left
    the video unfinished. Now the read blocks a thread of its own: the run stops, closes
    its outputs and says so."""
    from test_appliance_io import read_video
    (tmp_path / "stand_in").mkdir()
    (tmp_path / "stand_in" / "jetson_utils.py").write_text(BLOCKING_CAMERA)
    env = subprocess_env()
    env["PYTHONPATH"] = str(tmp_path / "stand_in") + os.pathsep + env["PYTHONPATH"]
    out = str(tmp_path / "live.avi")
    proc = subprocess.Popen(cli_subprocess_cmd("classify", "--model", tiny_bundle, "--headless",
                                               "csi://0", out),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, env=env)
    lines = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stderr, lines), daemon=True).start()
    err = []
    try:
        while not err or "stand-in camera: blocked" not in err[-1]:
            err.append(lines.get(timeout=120))  # a guard against a hang, not a timing test
            assert err[-1] is not None, "".join(err[:-1])
        proc.send_signal(signum)
        try:
            code = proc.wait(timeout=60)  # a guard against a hang, as above
        except subprocess.TimeoutExpired:
            pytest.fail("classify did not end on signal {}: it waits for the read".format(
                int(signum)))
    finally:
        if proc.poll() is None:
            proc.kill()
    while err[-1] is not None:
        err.append(lines.get(timeout=30))
    text = "".join(err[:-1])
    assert code == 0, text
    assert "(stopped by signal)" in text and "a read has not returned" in text
    assert "Traceback" not in text
    assert len(read_video(out)) == 3  # the frames written before the stop, in a closed file


def test_a_slow_close_after_the_source_ends_is_waited_for(tiny_bundle, caplog):
    """The 2 s given to a source after a stop was given to every close: a camera or stream
    whose close takes longer (a GStreamer pipeline's teardown) was left half closed at the
    end of an ordinary run, with a warning of a read blocked 'after the stop' there never
    was. With no stop, the close is waited for, as it was before the source had a thread."""
    import logging
    import time
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.loop import LiveLoop

    class SlowClose(FlakySource):
        closed = False

        def close(self):
            time.sleep(0.3)  # far past the grace below, not a timing of anything
            self.closed = True

    source = SlowClose(drop_at=99, total=3, timeout_at=99)
    with Classifier.open(tiny_bundle) as clf:
        loop = LiveLoop(clf, source, [ListSink()], notifier=FakeNotifier())
        loop.source_grace = 0.0
        with caplog.at_level(logging.WARNING):
            stats = loop.run()
    assert stats.frames == 3 and not loop.stopping
    assert source.closed
    assert "has not returned" not in caplog.text


def test_a_source_thread_answers_calls_after_it_finished():
    """finish() ended the thread but left it named as running, and the close's answer in
    the queue: a later call (the same LiveLoop run again) took that answer (None) for its
    own, and the next was queued for no one and waited for ever, or until a stop. A call
    after finish() now starts a thread of its own, and a second finish closes again."""
    from oncolens.appliance.source_thread import STOPPED, SourceThread
    stop, closes = threading.Event(), []
    reader = SourceThread(stop, poll=0.05)
    assert reader.call(lambda: 1) == 1
    assert reader.finish(lambda: closes.append(1), 5.0) and closes == [1]
    guard = threading.Timer(30.0, stop.set)  # a guard against a hang, not a timing
    guard.daemon = True
    guard.start()
    try:
        assert reader.call(lambda: 2) == 2
        assert reader.finish(lambda: closes.append(2), 5.0) and closes == [1, 2]
    finally:
        guard.cancel()
    stop.set()
    assert reader.call(lambda: 3) is STOPPED
