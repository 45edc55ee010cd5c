"""Bad uploads get their documented status with a JSON error, and nothing is kept."""
import json
import os
import struct
import zlib

import numpy as np
import pytest

from serve_util import metric, multipart, raw_http, read, request, running, sample_image


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    from oncolens.appliance.classifier import Classifier
    audit = str(tmp_path_factory.mktemp("audit") / "audit.jsonl")
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        with running(clf, max_upload_mb=0.25, max_pixels=4000000, audit_log=audit) as (url, app):
            yield url, audit


def png_chunk(kind, payload):
    return (struct.pack(">I", len(payload)) + kind + payload +
            struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def bomb_png(width=50000, height=50000):
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x00" * 3 * 64
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(row * 64, 9)) + png_chunk(b"IEND", b""))


def error_of(reply):
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    error = json.loads(reply.body.decode("utf-8"))["error"]
    assert error["status"] == reply.status and error["message"]
    return error


def test_too_large_is_413(server):
    url = server[0]
    reply = request(url, "/classify", "POST", b"\x89PNG\r\n\x1a\n" + os.urandom(300 * 1024))
    assert reply.status == 413
    assert error_of(reply)["code"] == "too_large"


def test_not_an_image_is_415(server):
    url = server[0]
    for body in (b"%PDF-1.4 not an image at all", b"GIF89a" + b"\0" * 40, b"{\"a\": 1}"):
        reply = request(url, "/classify", "POST", body)
        assert reply.status == 415, body
        assert error_of(reply)["code"] == "not_an_image"
    form, headers = multipart("image", "notes.txt", b"plain text notes", "text/plain")
    assert request(url, "/classify", "POST", form, headers).status == 415


def test_an_image_format_not_read_here_is_named_in_the_415(server):
    """A GIF, HEIC or DICOM upload was told it is 'not an image'."""
    url = server[0]
    for body, name in ((b"GIF89a" + b"\0" * 40, "GIF"),
                       (b"\0\0\0\x18ftypheic" + b"\0" * 30, "HEIC/HEIF"),
                       (b"\0" * 128 + b"DICM" + b"\0" * 64, "DICOM")):
        error = error_of(request(url, "/classify", "POST", body))
        assert error["code"] == "not_an_image", name
        assert error["message"].startswith("the upload is in {} format, which this service "
                                           "does not read".format(name)), error
    error = error_of(request(url, "/classify", "POST", b"%PDF-1.4 not an image at all"))
    assert error["message"].startswith("the upload is not an image"), error


def test_truncated_png_and_jpeg_are_400(server, tiny_data):
    from oncolens.appliance.imageio import encode_image, read_image
    url = server[0]
    png = read(sample_image(tiny_data))
    for cut in (len(png) // 2, 20):
        reply = request(url, "/classify", "POST", png[:cut])
        assert reply.status == 400, cut
        assert error_of(reply)["code"] == "truncated"
    jpeg = encode_image(read_image(sample_image(tiny_data)), ".jpg")
    reply = request(url, "/classify", "POST", jpeg[:len(jpeg) * 2 // 3])
    assert reply.status == 400 and error_of(reply)["code"] == "truncated"


def test_decompression_bomb_is_400(server):
    url = server[0]
    reply = request(url, "/classify", "POST", bomb_png())
    assert reply.status == 400
    error = error_of(reply)
    assert error["code"] == "too_many_pixels" and "50000x50000" in error["message"]
    reply = request(url, "/classify", "POST", bomb_png(2100, 2000))   # over this server's 4 MP
    assert reply.status == 400 and error_of(reply)["code"] == "too_many_pixels"


def test_damaged_pixels_are_400(server, tiny_data):
    url = server[0]
    png = bytearray(read(sample_image(tiny_data)))
    start = png.find(b"IDAT") + 4
    png[start:start + 200] = b"\xAB" * 200                    # garbage where the pixels are
    reply = request(url, "/classify", "POST", bytes(png))
    assert reply.status == 400 and error_of(reply)["code"] == "undecodable"


def test_empty_and_formless_bodies(server):
    url = server[0]
    reply = request(url, "/classify", "POST", b"")
    assert reply.status == 400 and error_of(reply)["code"] == "empty"
    form, headers = multipart("note2", "", b"x")
    body = form.replace(b'filename=""', b"")
    reply = request(url, "/classify", "POST", body, headers)
    assert reply.status == 400 and error_of(reply)["code"] == "no_file"


def test_query_values_the_server_does_not_know_are_400_bad_query(server, tiny_data):
    """format=gif was answered a JPEG and annotated=2 JSON, as if they had been asked for."""
    url = server[0]
    data = read(sample_image(tiny_data))
    for query, name in (("annotated=1&format=gif", "format=gif"), ("annotated=2", "annotated=2"),
                        ("annotated=1&format=tiff", "format=tiff")):
        reply = request(url, "/classify?" + query, "POST", data)
        assert reply.status == 400, query
        error = error_of(reply)
        assert error["code"] == "bad_query" and error["message"].startswith(name), error
    png = request(url, "/classify?annotated=TRUE&format=PNG", "POST", data)
    assert png.status == 200 and png.headers["content-type"] == "image/png"
    for query in ("annotated=0&format=png", "annotated=", "annotated=1&format=jpg"):
        assert request(url, "/classify?" + query, "POST", data).status == 200, query


def test_refusals_are_counted_and_audited(server, tiny_data):
    url, audit = server
    before = request(url, "/metrics").body.decode("utf-8")
    request(url, "/classify", "POST", bomb_png())
    text = request(url, "/metrics").body.decode("utf-8")
    assert (metric(text, "oncolens_http_requests_total", path="/classify", code="400") -
            (metric(before, "oncolens_http_requests_total", path="/classify", code="400") or 0)) == 1
    last = json.loads(open(audit).read().splitlines()[-1])
    assert last["status"] == 400 and last["label"] is None


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tif", ".ppm"])
def test_header_sizes_are_read_for_every_format(ext):
    import cv2
    from oncolens.appliance.web.upload import check_image, decode_upload
    rgb = (np.arange(37 * 53 * 3) % 251).astype(np.uint8).reshape(37, 53, 3)
    ok, buf = cv2.imencode(ext, rgb)
    assert ok
    data = buf.tobytes()
    fmt, width, height = check_image(data, 10 ** 6)
    assert (width, height) == (53, 37), fmt
    assert decode_upload(data, 10 ** 6)[1].shape == (37, 53, 3)
    from oncolens.appliance.web.upload import UploadError
    with pytest.raises(UploadError) as info:
        check_image(data, 53 * 37 - 1)
    assert info.value.status == 400 and info.value.code == "too_many_pixels"


def test_extreme_aspect_ratio_is_400_before_resizing(server):
    """A 1x30000 PNG is a few bytes, but resized for the model it would be 37x1097143."""
    import cv2
    url, audit = server
    wide = cv2.imencode(".png", np.zeros((1, 30000, 3), np.uint8))[1].tobytes()
    assert len(wide) < 1000
    for body in (wide, cv2.imencode(".png", np.zeros((30000, 1, 3), np.uint8))[1].tobytes()):
        reply = request(url, "/classify", "POST", body)
        assert reply.status == 400
        error = error_of(reply)
        assert error["code"] == "bad_aspect" and "--max-pixels" in error["message"]
    # a long strip that resizes within the limit (37 x 3700 for this 32 px model) is classified
    strip = cv2.imencode(".png", np.full((10, 1000, 3), 128, np.uint8))[1].tobytes()
    assert request(url, "/classify", "POST", strip).status == 200


def test_max_pixels_above_the_preprocessing_limit_still_refuses_400_bad_aspect(
        ort_classifier, tmp_path):
    """--max-pixels over the preprocessing's own limit (MAX_RESIZED_PIXELS, 1e8): a strip
    whose resize lies between the two passed the header check, then the preprocessing
    refused it: 500 inference_failed. It is refused 400 bad_aspect from its header now,
    naming the limit that applies."""
    import cv2
    from oncolens.appliance.preprocess import MAX_RESIZED_PIXELS
    strip = cv2.imencode(".png", np.zeros((80000, 1, 3), np.uint8))[1].tobytes()
    audit = str(tmp_path / "audit.jsonl")
    with running(ort_classifier, max_pixels=5 * MAX_RESIZED_PIXELS, audit_log=audit) as (
            url, app):
        new_w, new_h = app.resized_size(1, 80000)
        assert MAX_RESIZED_PIXELS < new_w * new_h <= 5 * MAX_RESIZED_PIXELS
        reply = request(url, "/classify", "POST", strip)
    assert reply.status == 400, reply.body[:300]
    error = error_of(reply)
    assert error["code"] == "bad_aspect"
    assert str(MAX_RESIZED_PIXELS) in error["message"]
    assert "preprocessing" in error["message"]
    with open(audit) as fh:
        assert [json.loads(line)["status"] for line in fh] == [400]


def test_resize_check_uses_the_preprocessing_geometry():
    import cv2
    from oncolens.appliance.preprocess import resize_geometry
    from oncolens.appliance.web.upload import UploadError, check_image
    spec = {"resize": "center_crop", "crop_ratio": 0.875}

    def resized(width, height):
        new_h, new_w = resize_geometry(spec, (height, width), (224, 224))[:2]
        return new_w, new_h

    data = cv2.imencode(".png", np.zeros((1, 10000, 3), np.uint8))[1].tobytes()
    with pytest.raises(UploadError) as info:
        check_image(data, 40000000, resized)
    assert info.value.code == "bad_aspect" and "10000x1" in str(info.value)
    assert "2560000x256" in str(info.value)
    assert check_image(data, 40000000) == ("png", 10000, 1)      # without a model: no check
    photo = cv2.imencode(".png", np.zeros((3000, 4000, 3), np.uint8))[1].tobytes()
    assert check_image(photo, 40000000, resized) == ("png", 4000, 3000)


def _jpeg_with_thumbnail(rgb):
    """A JPEG whose APP1 segment carries a whole small JPEG (an EXIF-style thumbnail)."""
    import cv2
    main = cv2.imencode(".jpg", rgb)[1].tobytes()
    thumb = cv2.imencode(".jpg", rgb[::4, ::4])[1].tobytes()
    payload = b"Exif\0\0" + thumb
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return main[:2] + app1 + main[2:]


def test_bytes_after_the_end_marker_are_accepted(server, tiny_data):
    """Phones append data after EOI/IEND (motion photos): the image itself is complete."""
    import cv2
    url = server[0]
    png = read(sample_image(tiny_data))
    rgb = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    tail = b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000) + b"IEND\xff\xd9" + os.urandom(500)
    jpeg = cv2.imencode(".jpg", rgb)[1].tobytes()
    progressive = cv2.imencode(".jpg", rgb, [int(cv2.IMWRITE_JPEG_PROGRESSIVE), 1])[1].tobytes()
    for image in (png, jpeg, progressive, _jpeg_with_thumbnail(rgb)):
        plain = json.loads(request(url, "/classify", "POST", image).body.decode("utf-8"))
        reply = request(url, "/classify", "POST", image + tail)
        assert reply.status == 200, reply.body
        assert json.loads(reply.body.decode("utf-8"))["probabilities"] == plain["probabilities"]


def test_truncated_jpeg_is_400_even_with_a_thumbnail_or_progressive(server, tiny_data):
    import cv2
    url = server[0]
    rgb = cv2.imdecode(np.frombuffer(read(sample_image(tiny_data)), np.uint8), cv2.IMREAD_COLOR)
    rgb = cv2.resize(rgb, (256, 256))
    progressive = cv2.imencode(".jpg", rgb, [int(cv2.IMWRITE_JPEG_PROGRESSIVE), 1])[1].tobytes()
    for image in (_jpeg_with_thumbnail(rgb), progressive):
        for cut in (len(image) * 2 // 3, len(image) - 2):
            reply = request(url, "/classify", "POST", image[:cut])
            assert reply.status == 400, cut
            assert error_of(reply)["code"] == "truncated"


def os2_bmp(rgb):
    """An OS/2 1.x BMP (12-byte BITMAPCOREHEADER, 16-bit width and height), 24 bits a pixel."""
    height, width = rgb.shape[:2]
    stride = (width * 3 + 3) // 4 * 4
    rows = b"".join(rgb[y, :, ::-1].tobytes().ljust(stride, b"\0")
                    for y in range(height - 1, -1, -1))
    core = struct.pack("<IHHHH", 12, width, height, 1, 24)
    return (b"BM" + struct.pack("<IHHI", 26 + len(rows), 0, 0, 26) + core + rows)


def test_os2_bmp_is_read_with_its_own_header_layout(server):
    from oncolens.appliance.web.upload import UploadError, check_image, decode_upload
    rgb = (np.arange(30 * 41 * 3) % 253).astype(np.uint8).reshape(30, 41, 3)
    data = os2_bmp(rgb)
    assert check_image(data, 10 ** 6) == ("bmp", 41, 30)
    assert np.array_equal(decode_upload(data, 10 ** 6)[1], rgb)
    assert request(server[0], "/classify", "POST", data).status == 200
    damaged = data[:14] + struct.pack("<I", 20) + data[18:]      # no such header size
    with pytest.raises(UploadError) as info:
        check_image(damaged, 10 ** 6)
    assert info.value.status == 400 and "header" in str(info.value)


def test_protocol_errors_are_json_and_counted(server):
    url = server[0]
    before = request(url, "/metrics").body.decode("utf-8")
    cases = [(b"GARBAGE\r\n\r\n", 400, "bad_request"),
             (b"GET /?token=s3cret HTTP/9.9\r\n\r\n", 505, "bad_version"),
             (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431,
              "headers_too_large"),
             (b"GET /" + b"a" * 70000 + b" HTTP/1.0\r\n\r\n", 414, "uri_too_long")]
    for payload, status, code in cases:
        got, headers, body = raw_http(url, payload)
        assert got == status, payload[:30]
        assert headers["content-type"] == "application/json" and headers["x-request-id"]
        error = json.loads(body.decode("utf-8"))["error"]
        assert error == {"status": status, "code": code, "message": error["message"]}
        assert "s3cret" not in body.decode("utf-8")              # the request line is not echoed
    text = request(url, "/metrics").body.decode("utf-8")
    for _, status, _ in cases:
        assert (metric(text, "oncolens_http_requests_total", path="other", code=str(status)) -
                (metric(before, "oncolens_http_requests_total", path="other",
                        code=str(status)) or 0)) == 1


def test_negative_content_length_is_400_bad_length(server):
    status, _, body = raw_http(server[0], b"POST /classify HTTP/1.0\r\nContent-Length: -5\r\n"
                                          b"\r\n")
    error = json.loads(body.decode("utf-8"))["error"]
    assert status == 400 and error["code"] == "bad_length" and "-5" in error["message"]
    status, _, body = raw_http(server[0], b"POST /classify HTTP/1.0\r\n\r\n")
    assert status == 411 and json.loads(body.decode("utf-8"))["error"]["code"] == "length_required"


def test_differing_content_lengths_are_400_bad_length(server, tiny_data):
    """RFC 9112 section 6.3: two Content-Length headers that differ, or a list of differing
    values, leave the body's end unknown and are refused (wsgiref used the first header);
    identical values, repeated or listed, count as one."""
    url, audit = server
    png = read(sample_image(tiny_data))
    size = str(len(png)).encode("ascii")
    before = request(url, "/metrics").body.decode("utf-8")
    for lengths in ([size, size + b"0"], [size + b", 7"], [b"7", b"7, 8"]):
        head = b"".join(b"Content-Length: " + value + b"\r\n" for value in lengths)
        status, headers, body = raw_http(url, b"POST /classify HTTP/1.0\r\n" + head + b"\r\n")
        error = json.loads(body.decode("utf-8"))["error"]
        assert status == 400 and error["code"] == "bad_length", lengths
        assert "differing" in error["message"]
        assert json.loads(open(audit).read().splitlines()[-1])["request_id"] == \
            headers["x-request-id"]
    text = request(url, "/metrics").body.decode("utf-8")
    assert (metric(text, "oncolens_http_requests_total", path="other", code="400") -
            (metric(before, "oncolens_http_requests_total", path="other", code="400") or 0)) == 3
    for lengths in ([size, size], [size + b", " + size], [size + b"," + size, size]):
        head = b"".join(b"Content-Length: " + value + b"\r\n" for value in lengths)
        status, _, body = raw_http(url, b"POST /classify HTTP/1.0\r\n" + head + b"\r\n" + png)
        assert status == 200, (lengths, body[:200])
        assert json.loads(body.decode("utf-8"))["input"]["bytes"] == len(png)


def test_float_tiff_is_named_as_unsupported(server):
    import cv2
    for shape in ((20, 30, 3), (20, 30)):
        data = cv2.imencode(".tif", np.random.RandomState(0).rand(*shape).astype(np.float32))[1]
        reply = request(server[0], "/classify", "POST", data.tobytes())
        assert reply.status == 400
        error = error_of(reply)
        assert error["code"] == "undecodable"
        assert error["message"].startswith("32-bit float TIFF is not supported")
    damaged = bytearray(cv2.imencode(".tif", np.zeros((20, 30, 3), np.uint8))[1].tobytes())
    damaged[8:200] = b"\xAB" * 192                 # pixels of an 8-bit TIFF gone
    reply = request(server[0], "/classify", "POST", bytes(damaged))
    if reply.status == 400:                          # where OpenCV notices
        assert "float" not in error_of(reply)["message"]


def test_a_file_of_millions_of_empty_parts_is_refused_quickly():
    """Walking a JPEG's segments or a PNG's chunks is bounded: a 20 MB file of empty
    markers is refused as a bad header, not walked for seconds per request."""
    import struct
    from oncolens.appliance.web.upload import MAX_PARTS, UploadError, check_image
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 8, 8, 1) + b"\x01\x11\x00"
    jpeg = b"\xff\xd8" + sof + b"\xff\x01" * (MAX_PARTS + 10)
    png = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" +
           struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0) + b"\x00" * 4 +
           (struct.pack(">I", 0) + b"tEXt" + b"\x00" * 4) * (MAX_PARTS + 10))
    for data in (jpeg, png):
        with pytest.raises(UploadError) as info:
            check_image(data, 40000000)
        assert info.value.code == "bad_header" and "more than" in str(info.value)
