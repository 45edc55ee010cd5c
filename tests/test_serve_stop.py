"""``oncolens serve`` under systemd: what it tells the notify socket while it serves and while
a SIGTERM's drain of the requests in flight runs. A real process, a real datagram socket in
a temporary folder as $NOTIFY_SOCKET, a real request held in flight."""
import json
import os
import signal
import socket
import subprocess
import tempfile

from conftest import cli_subprocess_cmd, subprocess_env
from serve_util import read, sample_image
from test_serve_http import port_of, recv_until


def _next(sock, seen, wanted):
    """Datagrams from ``sock`` into ``seen`` until one starts with ``wanted`` (socket.timeout
    if none comes): that one."""
    while True:
        message = sock.recv(4096).decode("utf-8")
        seen.append(message)
        if message.startswith(wanted):
            return message


def test_stopping_is_said_as_the_drain_begins_and_the_watchdog_is_pinged_through_it(
        tiny_bundle, tiny_data, tmp_path):
    """serve never pinged the watchdog (a unit with WatchdogSec killed it however well it
    served), and said STOPPING=1 only after the drain of the requests in flight (up to
    20 s). Now WATCHDOG=1 comes while it serves; on SIGTERM, STOPPING=1 with a STATUS= line
    naming the request in flight comes while that request is still unanswered, and the
    pings go on until it is answered."""
    folder = tempfile.mkdtemp(prefix="olnotify")
    path = os.path.join(folder, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(path)
    notify.settimeout(20)
    env = subprocess_env()
    env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")   # a ping every 0.2 s at least
    env.pop("WATCHDOG_PID", None)
    audit = str(tmp_path / "audit.jsonl")
    proc = subprocess.Popen(cli_subprocess_cmd("serve", "--model", tiny_bundle, "--port", 0,
                                               "--audit-log", audit),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            universal_newlines=True, env=env)
    png = read(sample_image(tiny_data))
    seen = []
    try:
        url = proc.stdout.readline().split("listening on ", 1)[1].split()[0]
        assert _next(notify, seen, "READY=1").startswith("READY=1\nSTATUS=serving on ")
        _next(notify, seen, "WATCHDOG=1")                      # while it serves
        sock = socket.create_connection(("127.0.0.1", port_of(url)), timeout=30)
        sock.sendall("POST /classify HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     "Content-Length: {}\r\n\r\n".format(len(png)).encode("ascii"))
        assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 100")  # in flight now
        sock.sendall(png[:100])
        proc.send_signal(signal.SIGTERM)
        stopping = _next(notify, seen, "STOPPING=1")          # the request is still held
        assert stopping == ("STOPPING=1\nSTATUS=stopping: finishing 1 request(s) in flight "
                            "(up to 20 s)"), stopping
        for _ in range(3):                                     # the drain goes on pinging
            _next(notify, seen, "WATCHDOG=1")
        sock.sendall(png[100:])
        answer = recv_until(sock, b"\x00never")
        sock.close()
        assert proc.wait(30) == 0
        notify.setblocking(False)                              # what it said on the way out
        while True:
            try:
                seen.append(notify.recv(4096).decode("utf-8"))
            except OSError:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        os.unlink(path)
        os.rmdir(folder)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 "), answer[:200]
    result = json.loads(body.decode("utf-8"))
    record = json.loads(open(audit).read().splitlines()[-1])
    assert (record["request_id"], record["status"]) == (result["request_id"], 200)
    assert sum(m.split("\n")[0] == "STOPPING=1" for m in seen) == 1   # said once


class _SteppedClock(object):
    """``time`` with a wall clock set forward an hour after its first reading (NTP on a
    Nano without an RTC battery), the rest of the module as it is."""

    def __init__(self, real):
        self._real, self._readings = real, 0

    def time(self):
        self._readings += 1
        return self._real.time() + (3600.0 if self._readings > 1 else 0.0)

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_a_wall_clock_set_forward_does_not_cut_the_drain_short(monkeypatch):
    """The drain's deadline was on the wall clock: set forward during it (an NTP step), the
    drain ended at once, and the requests in flight were cut off unanswered, their results
    and audit lines lost. It is on the monotonic clock now."""
    import threading
    import time as real_time
    from oncolens.appliance.web import server as server_module
    from oncolens.appliance.web.server import QuietHandler, ThreadingWSGIServer
    httpd = ThreadingWSGIServer(("127.0.0.1", 0), QuietHandler)
    try:
        httpd.request_began()
        monkeypatch.setattr(server_module, "time", _SteppedClock(real_time))
        answered = threading.Timer(0.3, httpd.request_ended)
        answered.start()
        assert httpd.wait_idle(30) == 0
        answered.join()
    finally:
        httpd.server_close()
