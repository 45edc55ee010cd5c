"""The HTTP layer as clients meet it: Content-Length forms, Expect: 100-continue, headers
that trickle in, and a stop with requests in flight."""
import json

import pytest

from serve_util import metric, raw_http, read, request, running, sample_image


@pytest.fixture(scope="module")
def server(ort_classifier, tmp_path_factory):
    audit = str(tmp_path_factory.mktemp("audit") / "audit.jsonl")
    with running(ort_classifier, audit_log=audit) as (url, app):
        yield url, audit


def test_a_content_length_that_is_not_plain_digits_is_400_bad_length(server, tiny_data):
    """RFC 9112: Content-Length = 1*DIGIT. Python's int() also reads "+2624", "2_624" and
    " 2624" (with a sign or an underscore), so such a length was taken as the number and the
    upload classified, where a proxy in front would read the body's end differently."""
    url, audit = server
    png = read(sample_image(tiny_data))
    size = str(len(png))
    before = request(url, "/metrics").body.decode("utf-8")
    for value in ("+" + size, size[0] + "_" + size[1:], "0x10"):
        status, headers, body = raw_http(url, "POST /classify HTTP/1.0\r\nContent-Length: {}"
                                              "\r\n\r\n".format(value).encode("ascii") + png)
        error = json.loads(body.decode("utf-8"))["error"]
        assert (status, error["code"]) == (400, "bad_length"), (value, body[:200])
        record = json.loads(open(audit).read().splitlines()[-1])
        assert (record["request_id"], record["status"]) == (headers["x-request-id"], 400)
    text = request(url, "/metrics").body.decode("utf-8")
    assert (metric(text, "oncolens_classify_errors_total", reason="bad_length") -
            (metric(before, "oncolens_classify_errors_total", reason="bad_length") or 0)) == 3
    # plain digits, with the blanks around a header value, are read as before
    status, _, body = raw_http(url, "POST /classify HTTP/1.0\r\nContent-Length:  {} \r\n\r\n"
                                    .format(size).encode("ascii") + png)
    assert status == 200 and json.loads(body.decode("utf-8"))["input"]["bytes"] == len(png)


def recv_until(sock, marker):
    """Bytes from ``sock`` until ``marker`` has arrived or the server closed (socket.timeout
    if neither comes)."""
    got = b""
    while marker not in got:
        block = sock.recv(65536)
        if not block:
            break
        got += block
    return got


def test_expect_100_continue_is_answered_before_the_body(server, tiny_data):
    """curl sends 'Expect: 100-continue' with bodies over 1 MB and waits for the interim
    answer; the server never sent it, so every such upload (docs/SERVE.md's own curl line)
    stood still a second before its body went. 100 Continue now comes when the body is
    read; an upload refused from its headers alone (413) is answered without it, and
    the client sends no body."""
    import socket
    url = server[0]
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    png = read(sample_image(tiny_data))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("POST /classify HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     "Content-Length: {}\r\n\r\n".format(len(png)).encode("ascii"))
        interim = recv_until(sock, b"\r\n\r\n")       # no body sent yet
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(png)
        answer = recv_until(sock, b"\x00never")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert json.loads(body.decode("utf-8"))["input"]["bytes"] == len(png)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 999999999\r\n\r\n")
        answer = recv_until(sock, b"\x00never")       # no body sent at all
    assert answer.startswith(b"HTTP/1.0 413 ") and b"too_large" in answer


def port_of(url):
    return int(url.rstrip("/").rsplit(":", 1)[1])


def stderr_until(proc, text, timeout=30):
    """The lines ``proc`` writes to stderr until one holds ``text`` or it closes stderr
    (the process ended)."""
    import threading
    lines = []

    def read():
        for line in iter(proc.stderr.readline, ""):
            lines.append(line)
            if text in line:
                return

    reader = threading.Thread(target=read)
    reader.daemon = True
    reader.start()
    reader.join(timeout)
    return lines


def test_sigterm_answers_the_requests_in_flight_then_exits_0(tiny_bundle, tiny_data, tmp_path):
    """SIGTERM closed the model, queue and audit log at once and the process exited: an
    upload whose body was still arriving got no answer and left no audit line. Now the
    listening socket closes (no new connection), the request in flight is answered and
    audited, and the exit status is 0."""
    import signal
    import socket
    import subprocess
    from conftest import cli_subprocess_cmd, subprocess_env
    audit = str(tmp_path / "audit.jsonl")
    proc = subprocess.Popen(cli_subprocess_cmd("serve", "--model", tiny_bundle, "--port", 0,
                                               "--audit-log", audit),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, env=subprocess_env())
    png = read(sample_image(tiny_data))
    try:
        url = proc.stdout.readline().split("listening on ", 1)[1].split()[0]
        sock = socket.create_connection(("127.0.0.1", port_of(url)), timeout=30)
        sock.sendall("POST /classify HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     "Content-Length: {}\r\n\r\n".format(len(png)).encode("ascii"))
        assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 100")  # the app reads it
        sock.sendall(png[:100])
        proc.send_signal(signal.SIGTERM)
        said = stderr_until(proc, "in flight")   # or the process ended, as it did
        with pytest.raises(OSError):              # no new connection is taken
            socket.create_connection(("127.0.0.1", port_of(url)), timeout=5).close()
        try:
            sock.sendall(png[100:])
            answer = recv_until(sock, b"\x00never")
        except OSError as exc:
            answer = repr(exc).encode("ascii")
        sock.close()
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 "), answer[:200]
    assert "finishing 1 request(s) in flight" in "".join(said)
    result = json.loads(body.decode("utf-8"))
    assert result["input"]["bytes"] == len(png)
    assert code == 0
    record = json.loads(open(audit).read().splitlines()[-1])
    assert (record["request_id"], record["status"]) == (result["request_id"], 200)


def test_headers_that_trickle_in_are_cut_off_with_408(server, monkeypatch):
    """Each read waited up to 60 s, so a client sending a header byte every few seconds
    (slowloris) held its connection thread for ever, before any token check. Now the request
    line and headers must all arrive within ``header_timeout``: 408, counted and audited
    as what the HTTP layer refuses; a connection that sent nothing closes unanswered."""
    import socket
    from oncolens.appliance.web.server import QuietHandler
    monkeypatch.setattr(QuietHandler, "header_timeout", 1.0, raising=False)
    url, audit = server
    before = request(url, "/metrics").body.decode("utf-8")
    answer = b""
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\nX-Slow: ")
        sock.settimeout(0.25)
        for _ in range(60):       # a byte every 0.25 s: 15 s at most
            try:
                sock.sendall(b"a")
            except OSError:       # answered and closed already: read what was sent
                pass
            try:
                answer = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            sock.settimeout(10)
            try:                  # the rest of the answer (its body may come on its own)
                for block in iter(lambda: sock.recv(65536), b""):
                    answer += block
            except OSError:       # reset after the answer: what came is kept
                pass
            break
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 408 "), answer[:200]
    error = json.loads(body.decode("utf-8"))
    assert error["error"]["code"] == "header_timeout"
    record = json.loads(open(audit).read().splitlines()[-1])
    assert (record["request_id"], record["status"], record["path"]) == (
        error["request_id"], 408, None)
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=10) as sock:
        assert sock.recv(65536) == b""          # idle: closed without an answer
    text = request(url, "/metrics").body.decode("utf-8")
    assert (metric(text, "oncolens_http_requests_total", path="other", code="408") -
            (metric(before, "oncolens_http_requests_total", path="other", code="408") or 0)) == 1
