"""A refused upload's body: read and dropped for a bounded time, and a client still sending
when the answer goes out gets the answer, not a reset (the close lingers: linger.py). Real
sockets against a real server; the limits are shortened through their class attributes."""
import socket
import time

import pytest

from serve_util import request, running
from test_serve_slow import answer_of, last_audit, port_of, trickle


@pytest.fixture
def server(ort_classifier, tmp_path, monkeypatch):
    """A server taking uploads of 10 KiB at most; a refused body is read for 0.5 s."""
    from oncolens.appliance.web.app import ServeApp
    monkeypatch.setattr(ServeApp, "too_large_drain", 0.5)
    audit = str(tmp_path / "audit.jsonl")
    with running(ort_classifier, audit_log=audit, max_upload_mb=10.0 / 1024,
                 max_connections=2) as (url, app):
        yield url, app, audit


def test_the_body_of_a_too_large_upload_is_read_for_a_short_time_only(server, monkeypatch):
    """A body over --max-upload-mb was read and dropped (up to 64 MiB) for as long as its
    pace allowed: 17 minutes for a client at 64 KiB/s. Now, as for a 401, the drain stops
    after ``too_large_drain`` seconds, then the 413 goes out (audited as before) and the
    connection closes."""
    from oncolens.appliance.web.server import QuietHandler
    monkeypatch.setattr(QuietHandler, "body_grace", 0.3)
    monkeypatch.setattr(QuietHandler, "body_rate", 4096)
    url, app, audit = server
    head = b"POST /classify HTTP/1.0\r\nContent-Length: 10000000\r\n\r\n"
    # 40 KiB/s, ten times the pace: the pace alone would read it for over 4 minutes
    answer = trickle(url, head, b"x" * 10000000, (2048, 0.05))
    status_line, error = answer_of(answer)
    assert status_line.startswith(b"HTTP/1.0 413 "), answer[:200]
    assert error["error"]["code"] == "too_large"
    record = last_audit(audit)
    assert (record["request_id"], record["status"]) == (error["request_id"], 413)


@pytest.mark.parametrize("model, query, status, code", [
    (True, "?format=gif", 400, "bad_query"), (False, "", 404, "no_model")])
def test_the_body_of_a_classify_refused_before_its_upload_is_read_is_read_briefly(
        ort_classifier, tmp_path, monkeypatch, model, query, status, code):
    """A /classify refused from its query (400 bad_query) or on a server without a model
    (404 no_model) read and dropped its body (up to --max-upload-mb) at the body's pace
    alone: over 5 minutes for 20 MB at 64 KiB/s. Now, as for a 401 or 413, the drain stops
    after ``refused_drain`` seconds; the answer goes out (audited) to a client still
    sending, and the connection's close lingers."""
    from oncolens.appliance.web.app import ServeApp
    from oncolens.appliance.web.server import QuietHandler
    monkeypatch.setattr(ServeApp, "refused_drain", 0.5)
    monkeypatch.setattr(QuietHandler, "body_grace", 0.3)
    monkeypatch.setattr(QuietHandler, "body_rate", 4096)
    audit = str(tmp_path / "audit.jsonl")
    with running(ort_classifier if model else None, audit_log=audit,
                 max_upload_mb=20.0) as (url, app):
        head = "POST /classify{} HTTP/1.0\r\nContent-Length: 10000000\r\n\r\n".format(query)
        # 40 KiB/s, ten times the pace: the pace alone would read it for over 4 minutes
        answer = trickle(url, head.encode("ascii"), b"x" * 10000000, (2048, 0.05))
        assert request(url, "/health").status == 200
    status_line, error = answer_of(answer)
    assert status_line.startswith("HTTP/1.0 {} ".format(status).encode("ascii")), answer[:200]
    assert error["error"]["code"] == code
    record = last_audit(audit)
    assert (record["request_id"], record["status"]) == (error["request_id"], status)


def upload_then_read(port, head, total):
    """Send ``head`` and ``total`` bytes of body, then read the answer, as Python's
    http.client (and requests) do: (the answer, the error that ended it or None). A reset
    met while sending ends it, the answer unread."""
    block = b"x" * (1 << 16)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head)
            for _ in range(total // len(block)):
                sock.sendall(block)
            answer = b""
            for data in iter(lambda: sock.recv(65536), b""):
                answer += data
            return answer, None
        except OSError as exc:
            return b"", exc


def test_a_client_still_sending_a_too_large_upload_reads_the_413(server):
    """The connection of a refused upload was closed with the client's bytes unread (past
    the 64 MiB the 413 reads and drops), so the system reset it, and a client still
    sending got "connection reset" instead of the 413's JSON. The close now lingers: the
    answer, a FIN, and what still arrives read and dropped for a moment (2 s, 16 MiB), so
    a client that sends its whole upload before reading gets the answer when the rest
    of its upload fits that."""
    url, app, audit = server
    total = 72 << 20   # 8 MiB past the drain's 64
    head = "POST /classify HTTP/1.0\r\nContent-Length: {}\r\n\r\n".format(total)
    app.too_large_drain = 30.0   # the drain ends at its 64 MiB, not in time
    answer, error = upload_then_read(port_of(url), head.encode("ascii"), total)
    status_line, body = answer_of(answer)
    assert status_line.startswith(b"HTTP/1.0 413 "), (answer[:200], error)
    assert body["error"]["code"] == "too_large"
    assert request(url, "/health").status == 200


def test_a_client_over_the_connection_cap_still_sending_reads_the_503(server):
    """The 503 of --max-connections read what had arrived (1 MiB at most) and closed: a
    client sending an upload of a few MB was reset before it read the answer."""
    url, app, audit = server
    port = port_of(url)
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        for sock in held:
            sock.sendall(b"GET /health HTTP/1.0\r\n")
        time.sleep(0.2)   # their threads are counted (the assertion below says if not)
        total = 8 << 20
        head = "POST /classify HTTP/1.0\r\nContent-Length: {}\r\n\r\n".format(total)
        answer, error = upload_then_read(port, head.encode("ascii"), total)
    finally:
        for sock in held:
            sock.close()
    status_line, body = answer_of(answer)
    assert status_line.startswith(b"HTTP/1.0 503 "), (answer[:200], error)
    assert body["error"]["code"] == "too_many_connections"


def test_lingering_is_bounded_in_sockets_and_time():
    """At most ``max_sockets`` linger at once (more are closed at once) and each for
    ``seconds`` at most, even if its client keeps sending."""
    from oncolens.appliance.web.linger import Lingerer
    lingerer = Lingerer()
    lingerer.seconds, lingerer.max_sockets = 0.3, 2
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        for ours, _ in pairs:
            lingerer.close_softly(ours)
        assert lingerer.lingering() == 2
        assert pairs[2][1].recv(10) == b""           # the third: closed at once
        pairs[0][1].sendall(b"more of the body")      # read and dropped, still lingering
        for _ in range(100):
            if not lingerer.lingering():
                break
            time.sleep(0.05)
        assert lingerer.lingering() == 0
        assert pairs[0][1].recv(10) == b""
        with pytest.raises(OSError):                  # closed: no more taken
            for _ in range(100):
                pairs[0][1].sendall(b"x" * 65536)
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def test_a_wall_clock_set_back_does_not_hold_a_lingering_socket(monkeypatch):
    """The lingering's deadlines were on the wall clock: set back an hour (an NTP step)
    just after a socket was handed over, it lingered an hour, one of the 64 places taken
    by a client that kept its side open. The monotonic clock decides now."""
    import time as real_time
    from oncolens.appliance.web import linger
    from oncolens.appliance.web.linger import Lingerer

    class SetBack(object):
        readings = 0

        def time(self):
            self.readings += 1
            return real_time.time() - (3600.0 if self.readings > 1 else 0.0)

        def __getattr__(self, name):
            return getattr(real_time, name)
    monkeypatch.setattr(linger, "time", SetBack())
    lingerer = Lingerer()
    lingerer.seconds = 0.3
    ours, theirs = socket.socketpair()
    try:
        lingerer.close_softly(ours)
        for _ in range(100):
            if not lingerer.lingering():
                break
            time.sleep(0.05)
        assert lingerer.lingering() == 0
    finally:
        ours.close()
        theirs.close()


def test_a_lingering_thread_that_cannot_start_closes_at_once_and_the_next_one_starts(
        monkeypatch):
    """threading's "can't start new thread" (the process at its thread limit) left the
    lingerer "running" with no thread: the socket, and every one handed over after it,
    stayed open (up to 64), and the error went up to the server's connection. Now those
    waiting are closed at once and the next socket handed over starts a thread again."""
    import threading as real_threading
    from oncolens.appliance.web import linger
    from oncolens.appliance.web.linger import Lingerer

    class NoThreads(object):
        Lock = real_threading.Lock

        class Thread(real_threading.Thread):
            def start(self):
                raise RuntimeError("can't start new thread")

    monkeypatch.setattr(linger, "threading", NoThreads)
    lingerer = Lingerer()
    first, first_peer = socket.socketpair()
    second, second_peer = socket.socketpair()
    try:
        lingerer.close_softly(first)
        assert lingerer.lingering() == 0
        assert first.fileno() == -1                    # closed, not left open
        first_peer.settimeout(10)
        assert first_peer.recv(10) == b""
        monkeypatch.setattr(linger, "threading", real_threading)   # threads again
        lingerer.seconds = 0.3
        lingerer.close_softly(second)
        for _ in range(100):
            if not lingerer.lingering():
                break
            time.sleep(0.05)
        assert lingerer.lingering() == 0               # a thread lingered and closed it
        assert second.fileno() == -1
    finally:
        for sock in (first, first_peer, second, second_peer):
            sock.close()
