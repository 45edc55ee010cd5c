"""How the server writes its answers: a client on a slow link that keeps reading gets the whole
answer, however long it takes, and one that stops reading is cut off after the idle timeout.
Real sockets against the real server (ServerThread); the idle timeout is shortened through the
class attribute that holds it (limits.py has the real 60 s)."""
import hashlib
import socket
import time

import numpy as np
import pytest

ANSWER = np.random.RandomState(3).randint(0, 256, 3 << 20).astype(np.uint8).tobytes()


def big_answer(environ, start_response):
    """One write of several MB, as an annotated PNG is."""
    start_response("200 OK", [("Content-Type", "image/png"),
                              ("Content-Length", str(len(ANSWER)))])
    return [ANSWER]


@pytest.fixture
def server(monkeypatch):
    from oncolens.appliance.web.server import QuietHandler, ServerThread
    monkeypatch.setattr(QuietHandler, "timeout", 0.5)   # 60 s really
    thread = ServerThread(big_answer, "127.0.0.1", 0).start()
    try:
        yield thread
    finally:
        thread.stop()


def slow_client(server):
    """A connection with a small receive buffer (so the answer waits in the server's
    socket) that has asked for the answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /big HTTP/1.0\r\n\r\n")
    return sock


def body_of(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head[:100]
    return body


def test_a_client_reading_slowly_but_steadily_gets_the_whole_answer(server):
    """About 1 MB/s in small reads: the 3 MB answer takes several idle timeouts in all, each
    64 KiB piece of it far less than one. Written with one sendall, it was cut off."""
    raw = b""
    with slow_client(server) as sock:
        while True:
            try:
                block = sock.recv(8192)
            except ConnectionResetError:
                break
            if not block:
                break
            raw += block
            time.sleep(0.008)
    body = body_of(raw)
    assert len(body) == len(ANSWER)
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(ANSWER).hexdigest()


def test_a_client_that_stops_reading_is_cut_off(server):
    with slow_client(server) as sock:
        raw = sock.recv(8192)
        time.sleep(3.0)   # six idle timeouts without reading a byte
        try:
            while True:
                block = sock.recv(65536)
                if not block:
                    break
                raw += block
        except ConnectionResetError:
            pass
    assert len(body_of(raw)) < len(ANSWER)
    deadline = time.time() + 10   # the server's thread for it ends too
    while server.httpd.connection_counts()[0] and time.time() < deadline:
        time.sleep(0.05)
    assert server.httpd.connection_counts()[0] == 0
