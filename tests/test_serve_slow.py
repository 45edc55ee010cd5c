"""What a slow or greedy client may take of the server: a body that trickles in, the body of
a request without the token, and more connections than the server takes at once. Real
sockets against a real server; the time limits are shortened through the class attributes
that hold them (limits.py has the real numbers)."""
import json
import socket
import time

import numpy as np
import pytest

from serve_util import metric, read, recv_all, request, running, sample_image


@pytest.fixture(scope="module")
def server(ort_classifier, tmp_path_factory):
    audit = str(tmp_path_factory.mktemp("audit") / "audit.jsonl")
    with running(ort_classifier, audit_log=audit, token="s3cret") as (url, app):
        yield url, app, audit


@pytest.fixture
def short_body_limits(monkeypatch):
    """A body gets 0.3 s of grace, then must average 4 KiB/s (20 s and 64 KiB/s really)."""
    from oncolens.appliance.web.server import QuietHandler
    monkeypatch.setattr(QuietHandler, "body_grace", 0.3)
    monkeypatch.setattr(QuietHandler, "body_rate", 4096)


AUTH = "Authorization: Bearer s3cret\r\n"


def port_of(url):
    return int(url.rstrip("/").rsplit(":", 1)[1])


def last_audit(audit):
    with open(audit) as fh:
        return json.loads(fh.read().splitlines()[-1])


def trickle(url, head, body, every, seconds=15.0):
    """Send ``head``, then ``body`` a piece at a time, ``every`` = (bytes, pause in s),
    reading between pieces; the server's answer as it came (b"" if none came)."""
    step, pause = every
    answer = b""
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(pause)
        stop, sent = time.time() + seconds, 0
        while time.time() < stop:
            if sent < len(body):
                try:
                    sock.sendall(body[sent:sent + step])
                    sent += step
                except OSError:   # the server answered and closed: read what it sent
                    sent = len(body)
            try:
                block = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:       # reset after the answer: what came is kept
                break
            if not block:
                break
            answer += block
            sock.settimeout(10)   # the answer has begun: read the rest of it
    return answer


def answer_of(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, json.loads(body.decode("utf-8")) if body else None


def noise_png(side=100):
    from oncolens.appliance.imageio import encode_image
    rgb = np.random.RandomState(5).randint(0, 256, (side, side, 3)).astype(np.uint8)
    return encode_image(rgb, ".png")


def test_a_body_that_trickles_in_is_cut_off_with_408_body_timeout(server, short_body_limits):
    """Each read of a body waited up to 60 s, so a client sending a body byte every few
    seconds held its connection thread for ever. Now a body must average the minimum rate
    after its grace: 408 body_timeout, counted and audited as /classify's other refusals."""
    url, app, audit = server
    before = request(url, "/metrics", headers={"Authorization": "Bearer s3cret"})
    before = before.body.decode("utf-8")
    head = ("POST /classify HTTP/1.0\r\n" + AUTH + "Content-Length: 100000\r\n\r\n")
    answer = trickle(url, head.encode("ascii"), b"\x89PNG" + b"x" * 99996, (20, 0.1))
    status_line, error = answer_of(answer)
    assert status_line.startswith(b"HTTP/1.0 408 "), answer[:200]
    assert error["error"]["code"] == "body_timeout"
    assert "4 KiB/s" in error["error"]["message"], error
    record = last_audit(audit)
    assert (record["request_id"], record["status"], record["path"]) == (
        error["request_id"], 408, "/classify")
    text = request(url, "/metrics", headers={"Authorization": "Bearer s3cret"})
    text = text.body.decode("utf-8")
    for name, labels in (("oncolens_classify_errors_total", {"reason": "body_timeout"}),
                         ("oncolens_http_requests_total", {"path": "/classify", "code": "408"})):
        assert (metric(text, name, **labels) - (metric(before, name, **labels) or 0)) == 1


def test_a_slow_but_steady_body_is_read_past_its_grace(server, short_body_limits):
    """The limit is a pace, not a fixed time: an upload that keeps above the minimum rate
    is read to its end and classified, however long it takes past the grace."""
    url, app, audit = server
    png = noise_png()
    assert len(png) > 20000     # 0.75 s or more at the pace below, past the 0.3 s grace
    head = ("POST /classify HTTP/1.0\r\n" + AUTH +
            "Content-Length: {}\r\n\r\n".format(len(png))).encode("ascii")
    answer = trickle(url, head, png, (2048, 0.05))   # 40 KiB/s, ten times the minimum
    status_line, result = answer_of(answer)
    assert status_line.startswith(b"HTTP/1.0 200 "), answer[:300]
    assert result["input"]["bytes"] == len(png)


def test_the_body_of_a_request_without_the_token_is_read_for_a_short_time_only(server,
                                                                                 monkeypatch):
    """The 401's drain read a body of up to --max-upload-mb with a 60 s wait for each byte,
    so a client without the token could hold a thread for as long as it liked. Now the drain
    stops after ``unauthorized_drain`` seconds, then the 401 goes out and the connection
    closes; the 401 is audited as before."""
    url, app, audit = server
    monkeypatch.setattr(app, "unauthorized_drain", 0.5)
    head = b"POST /classify HTTP/1.0\r\nContent-Length: 1000000\r\n\r\n"
    answer = trickle(url, head, b"x" * 1000000, (100, 0.2))   # 500 B/s, within the pace
    status_line, error = answer_of(answer)
    assert status_line.startswith(b"HTTP/1.0 401 "), answer[:200]
    assert error["error"]["code"] == "unauthorized"
    record = last_audit(audit)
    assert (record["request_id"], record["status"]) == (error["request_id"], 401)


def test_connections_over_the_limit_are_answered_503_at_once(ort_classifier, tmp_path):
    """One thread a connection with no cap: enough slow clients took threads, and the
    memory their uploads hold, without end. Over --max-connections, a connection is now
    answered 503 too_many_connections at once (Retry-After), counted under path "other" and
    audited; once a connection closes, the next one is served."""
    audit = str(tmp_path / "audit.jsonl")
    with running(ort_classifier, audit_log=audit, max_connections=2) as (url, app):
        held = [socket.create_connection(("127.0.0.1", port_of(url)), timeout=10)
                for _ in range(2)]
        try:
            for sock in held:         # each has a thread of its own, waiting for a request
                sock.sendall(b"GET /health HTTP/1.0\r\n")
            refused = _first_refusal(url)
        finally:
            for sock in held:
                sock.close()
        status_line, error = answer_of(refused)
        assert status_line.startswith(b"HTTP/1.0 503 "), refused[:200]
        assert b"\r\nRetry-After: 1\r\n" in refused
        assert error["error"]["code"] == "too_many_connections"
        assert "--max-connections" in error["error"]["message"]
        record = last_audit(audit)
        assert (record["request_id"], record["status"], record["path"]) == (
            error["request_id"], 503, None)
        for _ in range(100):          # the held connections' threads end: served again
            reply = request(url, "/health")
            if reply.status == 200:
                break
            time.sleep(0.05)
        assert reply.status == 200
        text = request(url, "/metrics").body.decode("utf-8")
        assert metric(text, "oncolens_http_requests_total", path="other", code="503") >= 1


def _held_connection(url, tries=50):
    """A connection that is let in and holds its thread (a request that never ends). The
    previous scrape's connection is counted until its thread has closed it, a moment after
    the client read its answer: a connection made in that moment may be refused (503) for
    the cap; it is then made again."""
    for _ in range(tries):
        sock = socket.create_connection(("127.0.0.1", port_of(url)), timeout=10)
        sock.sendall(b"GET /health HTTP/1.0\r\n")
        sock.settimeout(0.2)
        try:
            answered = sock.recv(64)
        except socket.timeout:
            sock.settimeout(10)
            return sock                        # no answer: it holds a thread
        sock.close()
        assert b" 503 " in answered.split(b"\r\n", 1)[0], answered
        time.sleep(0.05)
    raise AssertionError("no connection was let in")


def _first_refusal(url, tries=50):
    """The answer to a request on a new connection once the server refuses it (the held
    connections' threads may not have been counted the instant they connected)."""
    answer = b""
    for _ in range(tries):
        with socket.create_connection(("127.0.0.1", port_of(url)), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            answer = recv_all(sock)
        if b" 503 " in answer.split(b"\r\n", 1)[0]:
            return answer
        time.sleep(0.05)
    return answer


def test_the_live_sink_takes_max_connections():
    """``open_live_sink`` hands ``max_connections`` to its server (ServeApp would refuse it)."""
    from oncolens.appliance.web.limits import MAX_CONNECTIONS
    from oncolens.appliance.web.live import open_live_sink
    for options, expected in (({"max_connections": 3}, 3), ({}, MAX_CONNECTIONS)):
        sink = open_live_sink("127.0.0.1:0", **options)
        try:
            assert sink.server.httpd.max_connections == expected
        finally:
            sink.close()


def _metrics_when(url, name, expected, tries=100):
    """/metrics once ``name`` reads ``expected`` (a held connection is counted once the
    server has accepted it; a closed one once its thread has ended): its text, else the
    last one read."""
    text = ""
    for _ in range(tries):
        text = request(url, "/metrics").body.decode("utf-8")
        if metric(text, name) == expected:
            break
        time.sleep(0.05)
    return text


def test_metrics_report_open_connections_the_cap_and_connections_refused(ort_classifier):
    """/metrics had no figure for connections, so the --max-connections cap could not be
    seen coming. Now oncolens_http_connections_open (this scrape's own connection
    included), oncolens_http_connections_max and oncolens_http_connections_refused_total
    (connections answered 503 for the cap) follow real held connections."""
    with running(ort_classifier, max_connections=3) as (url, app):
        text = _metrics_when(url, "oncolens_http_connections_open", 1)
        assert "# TYPE oncolens_http_connections_open gauge" in text
        assert "# TYPE oncolens_http_connections_refused_total counter" in text
        assert metric(text, "oncolens_http_connections_open") == 1    # the scrape itself
        assert metric(text, "oncolens_http_connections_max") == 3
        assert metric(text, "oncolens_http_connections_refused_total") == 0
        held = [socket.create_connection(("127.0.0.1", port_of(url)), timeout=10)
                for _ in range(2)]
        try:
            for sock in held:
                sock.sendall(b"GET /health HTTP/1.0\r\n")   # a request that never ends
            text = _metrics_when(url, "oncolens_http_connections_open", 3)
            assert metric(text, "oncolens_http_connections_open") == 3
            held.append(_held_connection(url))   # the third: at the cap
            refused = _first_refusal(url)      # the fourth: over the cap
            assert b" 503 " in refused.split(b"\r\n", 1)[0], refused[:200]
            held.pop().close()
            text = _metrics_when(url, "oncolens_http_connections_open", 3)
            assert metric(text, "oncolens_http_connections_refused_total") >= 1
            assert metric(text, "oncolens_http_connections_refused_total") == metric(
                text, "oncolens_http_requests_total", path="other", code="503")
        finally:
            for sock in held:
                sock.close()
        text = _metrics_when(url, "oncolens_http_connections_open", 1)
        assert metric(text, "oncolens_http_connections_open") == 1


def test_the_answer_is_not_cut_short_by_what_was_left_of_the_bodys_pace(server, monkeypatch):
    """The socket's timeout after the body's last read was what was left of its pace
    (a fraction of a second for a body that came near its limit), and the answer was
    written under it: an annotated image larger than the socket buffers, to a client
    that read it a moment later, was cut off. The answer is written with the idle timeout."""
    from oncolens.appliance.web.server import QuietHandler
    monkeypatch.setattr(QuietHandler, "body_grace", 0.6)
    monkeypatch.setattr(QuietHandler, "body_rate", 1 << 30)   # the grace alone counts
    url, app, audit = server
    png = noise_png(1000)
    head = ("POST /classify?annotated=1&format=png HTTP/1.0\r\n" + AUTH +
            "Content-Length: {}\r\n\r\n".format(len(png))).encode("ascii")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port_of(url)))
        sock.sendall(head + png[:1])
        time.sleep(0.4)             # the body's last read leaves about 0.2 s of its pace
        sock.sendall(png[1:])
        time.sleep(2.0)             # the answer waits for its reader
        answer = recv_all(sock)
    status_line, _, body = answer.partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.0 200 "), answer[:300]
    length = int([line.split(b":")[1] for line in status_line.split(b"\r\n")
                  if line.lower().startswith(b"content-length:")][0])
    assert length > 1 << 20 and len(body) == length
