"""``oncolens serve`` under systemd's watchdog: WATCHDOG=1 only while the model's worker is
healthy. A real server process whose model is made to hang (its inference waits while a file
exists), a real datagram socket as $NOTIFY_SOCKET, a real request."""
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

from conftest import subprocess_env
from serve_util import read, sample_image
from test_serve_http import port_of, recv_until

# oncolens serve, with the model's inference held while the file sys.argv[1] exists
HELD_SERVE = (
    "import os, sys, time\n"
    "from oncolens.appliance.classifier import Classifier\n"
    "real = Classifier.infer_images\n"
    "def held(self, images):\n"
    "    while os.path.exists(sys.argv[1]):\n"
    "        time.sleep(0.05)\n"
    "    return real(self, images)\n"
    "Classifier.infer_images = held\n"
    "from oncolens.cli import main\n"
    "sys.exit(main(['serve'] + sys.argv[2:]))\n")


@pytest.fixture
def notify_socket():
    folder = tempfile.mkdtemp(prefix="olnotify")
    path = os.path.join(folder, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    try:
        yield path, sock
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(folder)


def _next(sock, wanted):
    """Datagrams from ``sock`` until one starts with ``wanted`` (socket.timeout if none)."""
    while True:
        message = sock.recv(4096).decode("utf-8")
        if message.startswith(wanted):
            return message


def _drain(sock):
    """Every datagram already waiting on ``sock``."""
    seen = []
    sock.setblocking(False)
    try:
        while True:
            seen.append(sock.recv(4096).decode("utf-8"))
    except OSError:
        pass
    finally:
        sock.settimeout(20)
    return seen


def _lines_of(stream):
    """A queue that the lines of ``stream`` go into, read by a thread of its own."""
    lines = queue.Queue()

    def pump():
        for line in iter(stream.readline, ""):
            lines.put(line)

    thread = threading.Thread(target=pump)
    thread.daemon = True
    thread.start()
    return lines


def _wait_for_line(lines, text, seen, seconds=20):
    """The first line containing ``text`` (AssertionError naming what came if none does)."""
    try:
        while True:
            line = lines.get(timeout=seconds)
            seen.append(line)
            if text in line:
                return line
    except queue.Empty:
        raise AssertionError("no log line with {!r} in {} s; the log: {}".format(
            text, seconds, "".join(seen)))


def test_a_model_hung_in_inference_stops_the_watchdog_pings_until_it_answers(
        tiny_bundle, tiny_data, tmp_path, notify_socket):
    """The watchdog was pinged from the accept loop alone: a model hung in inference left
    every request waiting for --timeout, and the pings went on, so WatchdogSec never
    restarted the server. Now, once one batch has run for more than half of WatchdogSec,
    the pings stop (and the log says why); they resume, with a log line, if the batch ends
    after all."""
    path, notify = notify_socket
    hold = str(tmp_path / "hold")
    env = subprocess_env()
    env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")   # stuck after 0.5 s
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-c", HELD_SERVE, hold, "--model", tiny_bundle,
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, env=env)
    log, png = [], read(sample_image(tiny_data))
    try:
        url = proc.stdout.readline().split("listening on ", 1)[1].split()[0]
        lines = _lines_of(proc.stderr)
        _next(notify, "READY=1")
        _next(notify, "WATCHDOG=1")                       # while it serves, idle
        open(hold, "w").close()                           # the model hangs from now on
        sock = socket.create_connection(("127.0.0.1", port_of(url)), timeout=30)
        sock.sendall("POST /classify HTTP/1.0\r\nContent-Length: {}\r\n\r\n".format(
            len(png)).encode("ascii") + png)
        line = _wait_for_line(lines, "no longer pinged", log)
        assert "one batch has been in inference for" in line, line
        _drain(notify)                                    # pings sent before that line
        notify.settimeout(2.5)                            # five pings' time
        with pytest.raises(socket.timeout):
            print("a ping while the model hangs:", _next(notify, "WATCHDOG=1"))
        notify.settimeout(20)
        os.unlink(hold)                                   # the batch ends after all
        answer = recv_until(sock, b"\x00never")
        sock.close()
        assert answer.startswith(b"HTTP/1.0 200 "), answer[:200]
        _next(notify, "WATCHDOG=1")                       # pinged again
        _wait_for_line(lines, "pinged again", log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_worker_thread_that_ended_stops_the_pings(ort_classifier, notify_socket):
    """A worker thread ended by a bug answers nothing again (every request waits for
    --timeout, then 503): no ping then either."""
    from oncolens.appliance.sdnotify import Notifier
    from oncolens.appliance.web.queue import InferenceQueue
    from oncolens.appliance.web.watchdog import WorkerWatchdog
    path, notify = notify_socket
    notifier = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})

    def broken():
        raise RuntimeError("a bug in the worker")

    jobs = InferenceQueue(ort_classifier)
    try:
        watchdog = WorkerWatchdog(notifier, jobs)
        assert watchdog.ping() and _next(notify, "WATCHDOG=1")
        # a bug outside a batch (one in a batch is answered and the worker goes on:
        # test_serve_worker.py) ends the thread
        jobs._take = broken
        jobs._thread.join(10)                               # the bug ends it
        assert not jobs.worker_alive
        notifier._last_ping = 0.0                           # a ping would be due now
        assert (watchdog.ping(), watchdog.withheld) == (False, True)
        assert _drain(notify) == []
    finally:
        jobs.close()
        notifier.close()
