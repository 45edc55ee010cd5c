"""The live sink: annotated frames to a multipart/x-mixed-replace stream on the web server."""
import http.client
import json
import urllib.parse

import numpy as np
import pytest

from serve_util import read, request, sample_image


@pytest.mark.parametrize("address,expected", [
    (":8080", ("127.0.0.1", 8080)), ("@:8080", ("127.0.0.1", 8080)),
    ("http://@:8080", ("127.0.0.1", 8080)), ("8080", ("127.0.0.1", 8080)),
    ("0.0.0.0:9000", ("0.0.0.0", 9000)), ("http://127.0.0.2:81/", ("127.0.0.2", 81)),
    ("[::1]:8080", ("::1", 8080)), (":0", ("127.0.0.1", 0)),
])
def test_parse_address(address, expected):
    from oncolens.appliance.web.live import parse_address
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["", "http://", ":99999", "host:port", "rtp://@:1234"])
def test_parse_address_refuses(address):
    from oncolens.appliance.errors import UsageError
    from oncolens.appliance.web.live import parse_address
    with pytest.raises(UsageError):
        parse_address(address)


def read_part(resp, boundary):
    """One part of a multipart/x-mixed-replace body: the JPEG bytes."""
    line = resp.fp.readline()
    while line in (b"\r\n", b"\n"):
        line = resp.fp.readline()
    assert line.strip() == b"--" + boundary.encode("ascii"), line
    headers = {}
    while True:
        line = resp.fp.readline().strip()
        if not line:
            break
        key, _, value = line.decode("ascii").partition(":")
        headers[key.lower()] = value.strip()
    assert headers["content-type"] == "image/jpeg"
    return resp.fp.read(int(headers["content-length"]))


def test_live_sink_streams_annotated_frames(tiny_bundle, tiny_data):
    import cv2
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.web.live import open_live_sink
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        sink = open_live_sink(":0", classifier=clf)
        try:
            url = sink.url
            assert url.startswith("http://127.0.0.1:")
            assert request(url, "/frame.jpg").status == 404          # nothing yet
            health = json.loads(request(url, "/health").body.decode("utf-8"))
            assert health["live"] is True and health["model_loaded"] is True
            red = np.zeros((40, 60, 3), np.uint8)
            red[:, :, 0] = 255
            where = sink.write(None, red)
            assert where == url + "stream.mjpg"
            parts = urllib.parse.urlsplit(url)
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            conn.request("GET", "/stream.mjpg")
            resp = conn.getresponse()
            assert resp.status == 200
            ctype = resp.getheader("Content-Type")
            assert ctype.startswith("multipart/x-mixed-replace")
            boundary = ctype.split("boundary=")[1]
            first = cv2.imdecode(np.frombuffer(read_part(resp, boundary), np.uint8), 1)
            assert first.shape == (40, 60, 3) and first[:, :, 2].mean() > 200   # BGR: red
            blue = np.zeros((40, 60, 3), np.uint8)
            blue[:, :, 2] = 255
            sink.write(None, blue)
            for _ in range(10):      # the last frame is repeated while no new one comes
                second = cv2.imdecode(np.frombuffer(read_part(resp, boundary), np.uint8), 1)
                if second[:, :, 0].mean() > 200:
                    break
            assert second[:, :, 0].mean() > 200 and second[:, :, 2].mean() < 50
            conn.close()
            still = request(url, "/frame.jpg")
            assert still.status == 200 and still.headers["content-type"] == "image/jpeg"
            data = read(sample_image(tiny_data))
            assert request(url, "/classify", "POST", data).status == 200   # same server
        finally:
            sink.close()
    assert sink.closed


def test_live_sink_without_classifier_serves_the_stream_only():
    from oncolens.appliance.web.live import open_live_sink
    sink = open_live_sink("http://@:0")
    try:
        reply = request(sink.url, "/classify", "POST", b"\x89PNG\r\n\x1a\n")
        assert reply.status == 404
        assert json.loads(reply.body.decode("utf-8"))["error"]["code"] == "no_model"
        health = json.loads(request(sink.url, "/health").body.decode("utf-8"))
        assert health["model_loaded"] is False and health["live"] is True
    finally:
        sink.close()
