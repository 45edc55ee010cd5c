"""Reading a request's body (appliance/web/body.py): into one buffer of the announced length,
however the body arrives. Real sockets: the server's own reader stack, and a real server."""
import hashlib
import io
import json
import socket
import threading
import tracemalloc

import numpy as np
import pytest

from serve_util import multipart, recv_all, running


@pytest.fixture(scope="module")
def server(ort_classifier):
    with running(ort_classifier) as (url, app):
        yield url, app


def noise_png(side=100):
    from oncolens.appliance.imageio import encode_image
    rgb = np.random.RandomState(11).randint(0, 256, (side, side, 3)).astype(np.uint8)
    return encode_image(rgb, ".png")


def send_in_pieces(sock, data, seed=0):
    """``data`` in pieces of 1 to 97 bytes, each its own TCP segment (Nagle off)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sizes = np.random.RandomState(seed).randint(1, 98, len(data))
    view, at = memoryview(data), 0
    for size in sizes:
        if at >= len(data):
            break
        sock.sendall(view[at:at + int(size)])
        at += int(size)


@pytest.mark.parametrize("form", [False, True], ids=["raw", "multipart"])
def test_a_body_arriving_in_many_small_pieces_is_read_whole(server, form):
    """The body is read into one buffer of its Content-Length, a read at a time: a body
    arriving in hundreds of small pieces (each read returns a few bytes) is put together
    byte for byte, raw or as a form, and classified."""
    url, app = server
    png = noise_png()
    body, headers = multipart("image", "scan.png", png) if form else (png, {})
    head = "POST /classify HTTP/1.0\r\nContent-Length: {}\r\n".format(len(body))
    head += "".join("{}: {}\r\n".format(k, v) for k, v in headers.items()) + "\r\n"
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode("ascii"))
        send_in_pieces(sock, body, seed=len(body))
        answer = recv_all(sock)
    status_line, _, payload = answer.partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.0 200 "), answer[:300]
    result = json.loads(payload.decode("utf-8"))
    assert result["input"]["sha256"] == hashlib.sha256(png).hexdigest()
    assert result["input"]["bytes"] == len(png)


def _reader_pair():
    """(client socket, the server's body stream over its peer: DeadlineReader in a
    BufferedReader, as server.py sets it up, past the headers)."""
    from oncolens.appliance.web.limits import DeadlineReader
    client, peer = socket.socketpair()
    reader = DeadlineReader(peer, 30.0)
    reader.headers_read()
    return client, peer, io.BufferedReader(reader)


def _peak_reading(body, content_type):
    """(image bytes, peak of Python's traced memory while the request's body is read and
    its image taken out of it), the body sent from another thread."""
    from oncolens.appliance.web.body import image_bytes, read_body
    client, peer, stream = _reader_pair()
    environ = {"CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": content_type,
               "wsgi.input": stream}
    sender = threading.Thread(target=client.sendall, args=(memoryview(body),))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sender.start()
        data = image_bytes(environ, read_body(environ, len(body)))
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
        sender.join()
        client.close()
        peer.close()
    return data, peak


def test_a_body_is_held_once_not_twice_while_it_is_read():
    """A body was gathered in pieces and joined (twice its size at the end; a form was then
    split, four times its size); now it is read into one buffer of its Content-Length and
    a form's file is cut out of it in place: about its size at the peak."""
    size = 4 << 20
    png = b"\x89PNG\r\n\x1a\n" + b"\x5a" * (size - 8)
    data, peak = _peak_reading(png, "image/png")
    assert bytes(data) == png
    assert peak < 1.25 * size, peak
    form, headers = multipart("image", "scan.png", png)
    data, peak = _peak_reading(form, headers["Content-Type"])
    assert bytes(data) == png
    assert peak < 1.25 * size, peak


class ReadOnly(object):
    """A WSGI input with read() alone (PEP 3333 asks no readinto), a few bytes a read."""

    def __init__(self, data, most=7):
        self._data, self._at, self._most = data, 0, most

    def read(self, size=-1):
        size = min(size, self._most)
        block = self._data[self._at:self._at + size]
        self._at += len(block)
        return block


def test_an_input_without_readinto_is_read_whole_and_a_short_one_is_incomplete():
    from oncolens.appliance.web.body import read_body
    from oncolens.appliance.web.upload import UploadError
    data = bytes(bytearray(range(256))) * 40
    environ = {"CONTENT_LENGTH": str(len(data)), "wsgi.input": ReadOnly(data)}
    assert read_body(environ, len(data)) == data
    environ = {"CONTENT_LENGTH": str(len(data) + 5), "wsgi.input": ReadOnly(data)}
    with pytest.raises(UploadError) as info:
        read_body(environ, len(data) + 5)
    assert (info.value.status, info.value.code) == (400, "incomplete")
    assert "after {} of the {} bytes".format(len(data), len(data) + 5) in str(info.value)


def test_a_forms_file_is_the_same_from_bytes_and_from_a_bytearray():
    """multipart_file cuts a bytearray to the file in place, and copies it out of bytes."""
    from oncolens.appliance.web.body import multipart_file
    png = noise_png(20)
    form, headers = multipart("image", "scan.png", png)
    buffer = bytearray(form)
    assert multipart_file(form, headers["Content-Type"]) == png
    assert multipart_file(buffer, headers["Content-Type"]) is buffer
    assert buffer == png
