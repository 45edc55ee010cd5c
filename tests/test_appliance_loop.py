"""The live loop keeps going (reconnect, timeouts, bad frames) and stops cleanly on signals."""
import os
import queue
import signal
import socket
import subprocess
import tempfile
import threading

import numpy as np
import pytest

from conftest import cli_subprocess_cmd, subprocess_env


class FlakySource(object):
    """A live source that drops after ``drop_at`` frames, refuses ``failed_opens`` reopenings,
    then recovers; one frame timeout; ``total`` frames in all."""

    kind, live, rate = "fake", True, None

    def __init__(self, drop_at=3, failed_opens=4, total=8, timeout_at=5):
        from oncolens.appliance.sources import Frame
        self.Frame = Frame
        self.drop_at, self.failed_opens, self.total = drop_at, failed_opens, total
        self.timeout_at, self.index = timeout_at, 0
        self.dropped = self.timed_out = False
        self.opens = self.closes = 0

    def describe(self):
        return "fake camera"

    def open(self):
        from oncolens.appliance.sources import SourceLost
        self.opens += 1
        if self.dropped and self.failed_opens > 0:
            self.failed_opens -= 1
            raise SourceLost("still unplugged")

    def close(self):
        self.closes += 1

    def read(self):
        from oncolens.appliance.sources import EndOfStream, SourceLost
        if self.index == self.drop_at and not self.dropped:
            self.dropped = True
            raise SourceLost("cable pulled")
        if self.index == self.timeout_at and not self.timed_out:
            self.timed_out = True
            return None
        if self.index >= self.total:
            raise EndOfStream()
        img = np.full((40, 40, 3), 30 * self.index, dtype=np.uint8)
        frame = self.Frame(img, "fake://0", None, self.index, 0.0, None)
        self.index += 1
        return frame


class ListSink(object):
    def __init__(self):
        self.frames, self.closed = [], False

    def write(self, frame, image):
        self.frames.append((frame.index, image.shape))
        return "list"

    def close(self):
        self.closed = True


class FakeNotifier(object):
    def __init__(self):
        self.sent = []

    def ready(self, status=None):
        self.sent.append("READY=1")

    def watchdog(self):
        self.sent.append("WATCHDOG=1")

    def status(self, text):
        self.sent.append("STATUS")

    def stopping(self):
        self.sent.append("STOPPING=1")


def test_source_that_fails_then_recovers_is_reconnected_with_backoff(tiny_bundle):
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.loop import Backoff, LiveLoop
    sleeps, sink, notifier = [], ListSink(), FakeNotifier()
    source = FlakySource(drop_at=3, failed_opens=4, total=8)
    with Classifier.open(tiny_bundle) as clf:
        loop = LiveLoop(clf, source, [sink], notifier=notifier, sleep=sleeps.append,
                        backoff=Backoff(initial=0.5, factor=2.0, maximum=4.0))
        stats = loop.run()
    assert [i for i, _ in sink.frames] == list(range(8))      # nothing lost, nothing repeated
    assert stats.frames == 8 and stats.reconnects == 1 and stats.timeouts == 1
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 4.0]                 # 4 refusals, then back
    assert source.opens == 1 + 5 and sink.closed
    assert notifier.sent[0] == "READY=1" and notifier.sent[-1] == "STOPPING=1"
    assert notifier.sent.count("WATCHDOG=1") == 8


def test_stop_during_backoff_ends_the_loop(tiny_bundle):
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.loop import LiveLoop
    source = FlakySource(drop_at=2, failed_opens=100, total=8)
    sink = ListSink()
    with Classifier.open(tiny_bundle) as clf:
        loop = LiveLoop(clf, source, [sink], notifier=FakeNotifier(),
                        sleep=lambda delay: loop.stop())
        stats = loop.run()
    assert stats.frames == 2 and stats.reconnects == 0 and sink.closed


def test_closing_the_window_stops_the_loop(tiny_bundle):
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.loop import LiveLoop

    class ClosedAfterTwo(ListSink):
        @property
        def stopped(self):
            return len(self.frames) >= 2

    sink = ClosedAfterTwo()
    with Classifier.open(tiny_bundle) as clf:
        stats = LiveLoop(clf, FlakySource(drop_at=99), [sink], notifier=FakeNotifier()).run()
    assert stats.frames == 2 and sink.closed


def test_undecodable_frame_is_logged_and_skipped(tiny_bundle, tiny_data, tmp_path, caplog):
    import shutil
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.loop import LiveLoop
    from oncolens.appliance.sources import open_source
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        shutil.copy(os.path.join(tiny_data, "test", "normal", "normal_test_0000.png"),
                    str(folder / name))
    (folder / "b.png").write_bytes(b"garbage")
    sink = ListSink()
    with Classifier.open(tiny_bundle) as clf:
        stats = LiveLoop(clf, open_source(str(folder)), [sink], notifier=FakeNotifier()).run()
    assert stats.frames == 2 and stats.failed == 1
    assert [i for i, _ in sink.frames] == [0, 2]
    assert "b.png: not a decodable image" in caplog.text


def test_unsupported_format_in_a_folder_is_a_failure_not_skipped(tiny_bundle, tiny_data,
                                                                 tmp_path, caplog):
    """As in batch: a .gif in the folder is named and counted, not skipped in silence."""
    import shutil
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.loop import LiveLoop
    from oncolens.appliance.sources import open_source
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(os.path.join(tiny_data, "test", "normal", "normal_test_0000.png"),
                str(folder / "a.png"))
    (folder / "b.gif").write_bytes(b"GIF89a")
    (folder / "notes.txt").write_text("not an image")
    sink = ListSink()
    with Classifier.open(tiny_bundle) as clf:
        stats = LiveLoop(clf, open_source(str(folder)), [sink], notifier=FakeNotifier()).run()
    assert stats.frames == 1 and stats.failed == 1
    assert "b.gif: unsupported image format .gif" in caplog.text
    assert "notes.txt" not in caplog.text


def test_smoothing_follows_jetson_inference():
    from oncolens.appliance.postprocess import Smoother
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    s = Smoother(0.25)
    s(a)
    np.testing.assert_allclose(s(b), [0.75, 0.25])           # weight 0.25 on the newest
    s = Smoother(4)                                           # 4 frames = weight 1/4
    s(a)
    np.testing.assert_allclose(s(b), [0.75, 0.25])
    np.testing.assert_allclose(Smoother(0)(b), b)


def test_top_k_zero_lists_every_class_at_or_above_the_threshold():
    """imagenet's --topK=0: every class at or above --threshold, best first; the best class
    is kept even below it (a frame is never unlabelled)."""
    from oncolens.appliance.postprocess import top_k
    labels = ["benign", "malignant", "normal", "other"]
    probs = [0.30, 0.45, 0.20, 0.05]
    assert [p.label for p in top_k(probs, labels, 0, 0.1)] == ["malignant", "benign", "normal"]
    assert [p.label for p in top_k(probs, labels, 0, 0.0)] == ["malignant", "benign", "normal",
                                                                "other"]
    assert [p.label for p in top_k(probs, labels, 2, 0.0)] == ["malignant", "benign"]
    assert [p.label for p in top_k(probs, labels, 0, 0.9)] == ["malignant"]


def test_status_line_labels_both_rates():
    from oncolens.appliance.loop import Stats, status_text

    class B(object):
        name, precision = "onnxruntime", "fp32"

    clock = iter([0.0, 2.0]).__next__
    stats = Stats(clock=clock)
    for _ in range(10):
        stats.add(0.05)
    net, e2e = stats.rates()
    assert net == pytest.approx(20.0) and e2e == pytest.approx(5.0)
    text = status_text("busi", B(), net, e2e)
    assert "busi" in text and "onnxruntime fp32" in text
    assert "network 20.0 FPS (inference only)" in text
    assert "end-to-end 5.0 FPS (capture to output)" in text


def _reader(stream, lines):
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


def _start(argv, env=None):
    proc = subprocess.Popen(cli_subprocess_cmd(*argv), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True,
                            env=env or subprocess_env())
    lines = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    return proc, lines


def test_sigterm_while_writing_a_video_leaves_it_playable(tiny_bundle, tiny_data, tmp_path):
    from test_appliance_io import read_video
    out = str(tmp_path / "live.mp4")
    proc, lines = _start(["classify", "--model", tiny_bundle, "--headless", "--input-loop=-1",
                          os.path.join(tiny_data, "test"), out])
    printed = []
    try:
        while len(printed) < 12:
            line = lines.get(timeout=120)
            assert line is not None, proc.stderr.read()
            printed.append(line)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    while True:
        line = lines.get(timeout=30)
        if line is None:
            break
        printed.append(line)
    err = proc.stderr.read()
    assert code == 0, err
    assert "stopped by signal" in err
    frames = read_video(out)
    assert len(frames) == len(printed) >= 12                  # every classified frame is there
    assert frames[0].shape == (48, 48, 3)


# A camera that delivers three frames, then blocks in a read that neither returns nor times
# out (as a V4L2 device, an RTSP stream or a FIFO can): a stand-in for jetson_utils, which
# classify uses for csi:// whenever it is importable.
def test_systemd_notifications(tiny_bundle, tiny_data):
    folder = tempfile.mkdtemp(prefix="olnotify")
    path = os.path.join(folder, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(120)
    env = subprocess_env()
    env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")
    env.pop("WATCHDOG_PID", None)
    proc, lines = _start(["classify", "--model", tiny_bundle, "--headless", "--input-loop=-1",
                          os.path.join(tiny_data, "test")], env)
    try:
        first = sock.recv(4096).decode()
        assert first.startswith("READY=1"), first
        seen = []
        while "WATCHDOG=1" not in seen:
            seen.append(sock.recv(4096).decode())
        assert "STOPPING=1" not in seen
        proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in seen:
            seen.append(sock.recv(4096).decode())
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
        os.unlink(path)
        os.rmdir(folder)


def test_looping_a_folder_of_broken_files_ends(tiny_bundle, tmp_path, caplog):
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.loop import LiveLoop
    from oncolens.appliance.sources import open_source
    (tmp_path / "a.png").write_bytes(b"garbage")
    (tmp_path / "b.png").write_bytes(b"")
    with Classifier.open(tiny_bundle) as clf:
        stats = LiveLoop(clf, open_source(str(tmp_path), loop=-1), [],
                         notifier=FakeNotifier()).run()
    assert stats.frames == 0 and stats.failed == 2
    assert "no readable image in a whole pass" in caplog.text
