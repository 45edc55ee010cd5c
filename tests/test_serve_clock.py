"""The time limits on a connection's bytes (limits.py's DeadlineReader: the request head's
deadline, the body's pace) are on the monotonic clock: a step of the wall clock (NTP) cuts
nothing off and extends nothing. Real sockets; the wall clock is stepped by a stand-in
for the time module of the modules under test, the monotonic clock is the real one."""
import socket
import time as real_time

from serve_util import read, recv_all, running, sample_image


class SteppedWallClock(object):
    """time's stand-in: ``time()`` is ``offset`` seconds off the real clock (set by the test,
    as an NTP step would), ``monotonic()`` is the real one; ``readings`` counts both."""

    def __init__(self):
        self.offset = 0.0
        self.readings = 0

    def time(self):
        self.readings += 1
        return real_time.time() + self.offset

    def monotonic(self):
        self.readings += 1
        return real_time.monotonic()

    def __getattr__(self, name):
        return getattr(real_time, name)


def _wait_for(condition, tries=400):
    for _ in range(tries):   # 20 s at most: a guard against a hang, not a timing
        if condition():
            return True
        real_time.sleep(0.05)
    return False


def test_a_wall_clock_step_forward_does_not_cut_off_a_request_head(ort_classifier, tiny_data,
                                                                   monkeypatch):
    """The head's deadline was on the wall clock: stepped an hour forward while the head
    arrived, the request was answered 408 header_timeout; it is answered 200 now."""
    from oncolens.appliance.web import limits, server
    clock = SteppedWallClock()
    data = read(sample_image(tiny_data))
    with running(ort_classifier) as (url, app):
        monkeypatch.setattr(limits, "time", clock)
        monkeypatch.setattr(server, "time", clock)
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /classify HTTP/1.1\r\n")
            # the server has set the head's deadline and waits for more of it
            assert _wait_for(lambda: clock.readings >= 2)
            clock.offset = 3600.0                       # NTP steps the wall clock
            sock.sendall(b"Host: localhost\r\n")        # more of the head, not all of it
            real_time.sleep(0.2)                        # so that it is read on its own
            sock.sendall("Content-Length: {}\r\nConnection: close\r\n\r\n".format(
                len(data)).encode("ascii") + data)
            answer = recv_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") or answer.startswith(b"HTTP/1.0 200 "), \
        answer[:300]


def _body_reader(clock, monkeypatch, idle=30.0):
    """(client socket, server socket, the body's stream: a DeadlineReader past the head in
    a BufferedReader, as server.py sets it up), the time module stood in by ``clock``."""
    import io
    from oncolens.appliance.web import limits
    from oncolens.appliance.web.limits import DeadlineReader
    monkeypatch.setattr(limits, "time", clock)
    client, peer = socket.socketpair()
    reader = DeadlineReader(peer, idle)
    reader.headers_read()
    return client, peer, reader, io.BufferedReader(reader)


def test_a_wall_clock_step_forward_does_not_cut_off_a_body_keeping_its_pace(monkeypatch):
    """The body's pace was on the wall clock: stepped an hour forward between two reads,
    a body arriving at full speed was refused (BodyTimeout: 408 body_timeout)."""
    clock = SteppedWallClock()
    client, peer, reader, stream = _body_reader(clock, monkeypatch)
    try:
        client.sendall(b"a" * 1000)
        assert stream.read1(1000) == b"a" * 1000       # the body's pace starts here
        clock.offset = 3600.0
        client.sendall(b"b" * 1000)
        assert stream.read1(1000) == b"b" * 1000
    finally:
        client.close()
        peer.close()


def test_a_wall_clock_step_back_does_not_extend_a_cut_off(monkeypatch):
    """A refused request's body is read until its cut-off (5 s really): on the wall clock,
    set back an hour, the read waited on until the idle timeout (60 s really, 3 s here)
    and ended in a plain socket.timeout; now the cut-off ends it (BodyTimeout)."""
    from oncolens.appliance.web.limits import BodyTimeout
    clock = SteppedWallClock()
    client, peer, reader, stream = _body_reader(clock, monkeypatch, idle=3.0)
    try:
        client.sendall(b"a" * 10)
        assert stream.read1(10) == b"a" * 10
        reader.cut_off(0.5)
        clock.offset = -3600.0
        try:
            stream.read1(10)                            # the client sends no more
        except BodyTimeout:
            pass
        else:
            raise AssertionError("a read of the body returned past its cut-off")
    finally:
        client.close()
        peer.close()
