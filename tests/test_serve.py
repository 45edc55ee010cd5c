"""oncolens serve: a real server on a loopback port answering real HTTP requests."""
import hashlib
import json
import os

import numpy as np
import pytest

from serve_util import RESEARCH_NOTICE, metric, multipart, read, request, running, sample_image


@pytest.fixture(scope="module")
def classifier(tiny_bundle):
    from oncolens.appliance.classifier import Classifier
    clf = Classifier.open(tiny_bundle, backend="onnxruntime")
    yield clf
    clf.close()


@pytest.fixture(scope="module")
def server(classifier, tmp_path_factory):
    audit = str(tmp_path_factory.mktemp("audit") / "audit.jsonl")
    with running(classifier, audit_log=audit) as (url, app):
        yield url, app, audit


def test_classify_json_matches_the_classifier(server, classifier, tiny_data):
    url, app, _ = server
    from oncolens.appliance.bundle import sha256_file
    from oncolens.appliance.imageio import read_image
    path = sample_image(tiny_data, "benign", 1)
    reply = request(url, "/classify", "POST", read(path), {"Content-Type": "image/png"})
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    result = json.loads(reply.body.decode("utf-8"))
    assert result["request_id"] == reply.headers["x-request-id"]
    expected = classifier.infer_images([read_image(path)]).probs[0]
    labels = classifier.labels
    assert sorted(result["probabilities"]) == sorted(labels)
    got = np.array([result["probabilities"][label] for label in labels])
    assert np.allclose(got, expected, atol=1e-6)
    assert result["label"] == labels[int(np.argmax(expected))]
    assert result["confidence"] == pytest.approx(float(expected.max()), abs=1e-6)
    onnx = os.path.join(os.path.dirname(classifier.bundle.onnx_path), "resnet18.onnx")
    assert result["model"]["sha256"] == sha256_file(onnx)
    assert result["model"]["backend"] == "onnxruntime"
    assert result["input"]["sha256"] == hashlib.sha256(read(path)).hexdigest()
    assert (result["input"]["width"], result["input"]["height"]) == (48, 48)
    assert set(result["timing_ms"]) == {"read_decode", "queue", "inference", "total"}
    assert result["timing_ms"]["total"] >= result["timing_ms"]["inference"] > 0


def test_multipart_upload_gives_the_same_answer_as_a_raw_body(server, tiny_data):
    url = server[0]
    data = read(sample_image(tiny_data, "normal", 2))
    raw = json.loads(request(url, "/classify", "POST", data).body.decode("utf-8"))
    body, headers = multipart("image", "Patient Name.png", data)
    reply = request(url, "/classify", "POST", body, headers)
    assert reply.status == 200, reply.body
    form = json.loads(reply.body.decode("utf-8"))
    assert form["input"]["sha256"] == raw["input"]["sha256"]
    assert form["probabilities"] == raw["probabilities"]


def test_a_form_field_whose_name_starts_with_image_is_not_the_file(server, tiny_data):
    """A text field image_id=42 before the file part was taken for the image (415)."""
    url = server[0]
    data = read(sample_image(tiny_data, "normal", 2))
    body, headers = multipart("image", "scan.png", data)
    body = body.replace(b'name="note"', b'name="image_id"').replace(b"hello", b"42")
    reply = request(url, "/classify", "POST", body, headers)
    assert reply.status == 200, reply.body
    assert json.loads(reply.body.decode("utf-8"))["input"]["bytes"] == len(data)
    headers = {"Content-Type": headers["Content-Type"].replace("boundary=", "Boundary=")}
    assert request(url, "/classify", "POST", body, headers).status == 200  # any case


def test_annotated_image_decodes_and_carries_the_result(server, tiny_data):
    import cv2
    url = server[0]
    data = read(sample_image(tiny_data, "malignant", 0))
    reply = request(url, "/classify?annotated=1", "POST", data)
    assert reply.status == 200
    assert reply.headers["content-type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(reply.body, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (48, 48, 3)
    result = json.loads(reply.headers["x-result"])
    assert reply.headers["x-label"] == result["label"]
    original = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    diff = np.abs(img.astype(int) - original.astype(int)).max(axis=2)
    assert diff[:8, :20].mean() > 20      # the text box is drawn top-left
    png = request(url, "/classify?annotated=1&format=png", "POST", data)
    assert png.headers["content-type"] == "image/png"
    assert cv2.imdecode(np.frombuffer(png.body, np.uint8), cv2.IMREAD_COLOR).shape == (48, 48, 3)


def test_an_image_wider_than_jpeg_allows_is_annotated_as_png(server):
    """A 65501 px wide image was classified, audited 200, then answered 500 internal: JPEG
    holds at most 65500 px a side."""
    from oncolens.appliance.imageio import encode_image
    url, _, audit = server
    data = encode_image(np.full((40, 65501, 3), 90, np.uint8), ".png")
    reply = request(url, "/classify?annotated=1", "POST", data, {"X-Request-Id": "wide-1"})
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "image/png" and reply.body[:4] == b"\x89PNG"
    assert json.loads(reply.headers["x-result"])["input"]["width"] == 65501
    lines = [json.loads(line) for line in open(audit).read().splitlines()]
    assert [r["status"] for r in lines if r["request_id"] == "wide-1"] == [200]


def test_an_answer_that_cannot_be_made_is_audited_once_as_500(classifier, tiny_data, tmp_path,
                                                              monkeypatch):
    import oncolens.appliance.web.classify as classify_module

    def fails(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(classify_module, "encode_image", fails)
    audit = str(tmp_path / "audit.jsonl")
    with running(classifier, audit_log=audit) as (url, _):
        reply = request(url, "/classify?annotated=1", "POST",
                        read(sample_image(tiny_data)), {"X-Request-Id": "enc-1"})
        text = request(url, "/metrics").body.decode("utf-8")
    assert reply.status == 500
    assert [json.loads(line)["status"] for line in open(audit).read().splitlines()] == [500]
    assert metric(text, "oncolens_classify_latency_seconds_count") == 0


def test_health(server):
    url, app, _ = server
    reply = request(url, "/health")
    assert reply.status == 200
    health = json.loads(reply.body.decode("utf-8"))
    assert health["status"] == "ok" and health["model_loaded"] is True
    assert health["backend"] == "onnxruntime" and health["precision"] == "fp32"
    assert health["model_sha256"] == app.model_sha256 and len(app.model_sha256) == 64
    assert health["uptime_s"] > 0
    assert health["live"] is False and health["token_required"] is False
    assert health["model"]["labels"] == ["benign", "malignant", "normal"]


def test_metrics_count_requests_and_latency(server, tiny_data):
    url = server[0]
    before = request(url, "/metrics").body.decode("utf-8")
    data = read(sample_image(tiny_data, "benign", 0))
    for _ in range(3):
        assert request(url, "/classify", "POST", data).status == 200
    assert request(url, "/classify", "POST", b"hello, not an image").status == 415
    reply = request(url, "/metrics")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    text = reply.body.decode("utf-8")

    def delta(name, **labels):
        return (metric(text, name, **labels) or 0) - (metric(before, name, **labels) or 0)

    assert delta("oncolens_http_requests_total", path="/classify", code="200") == 3
    assert delta("oncolens_http_requests_total", path="/classify", code="415") == 1
    assert delta("oncolens_classify_errors_total", reason="not_an_image") == 1
    assert delta("oncolens_classify_latency_seconds_count") == 3
    assert delta("oncolens_images_classified_total") == 3
    assert metric(text, "oncolens_classify_latency_seconds_bucket", le="+Inf") == metric(
        text, "oncolens_classify_latency_seconds_count")
    assert metric(text, "oncolens_images_per_second") > 0
    assert metric(text, "oncolens_queue_capacity") == 16
    assert "# TYPE oncolens_classify_latency_seconds histogram" in text


def test_page_is_self_contained(server):
    url = server[0]
    reply = request(url, "/")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
    page = reply.body.decode("utf-8")
    assert 'id="file"' in page and "classify?annotated=1" in page
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert "default-src 'none'" in reply.headers["content-security-policy"]
    text = " ".join(page.replace("<strong>", "").replace("</strong>", "").split())
    assert RESEARCH_NOTICE in text                    # README's wording, on the page itself


def test_unknown_paths_and_methods_get_json_errors(server):
    url = server[0]
    for path, method, status in (("/nope", "GET", 404), ("/classify", "GET", 405),
                                 ("/stream.mjpg", "GET", 404)):
        reply = request(url, path, method)
        assert reply.status == status, path
        error = json.loads(reply.body.decode("utf-8"))["error"]
        assert error["status"] == status
        assert reply.headers["x-request-id"]


def test_audit_log_has_checksums_and_no_names(server, tiny_data):
    url, app, audit = server
    data = read(sample_image(tiny_data, "normal", 0))
    body, headers = multipart("file", "SecretPatient_0042.png", data)
    headers["X-Request-Id"] = "audit-check-1"
    reply = request(url, "/classify", "POST", body, headers)
    assert reply.status == 200 and reply.headers["x-request-id"] == "audit-check-1"
    text = open(audit).read()
    assert "SecretPatient" not in text
    records = [json.loads(line) for line in text.splitlines()]
    mine = [r for r in records if r["request_id"] == "audit-check-1"]
    assert len(mine) == 1
    record = mine[0]
    assert set(record) == {"time", "request_id", "status", "input_sha256", "model_sha256",
                           "label", "confidence", "method", "path", "client", "forwarded_for"}
    result = json.loads(reply.body.decode("utf-8"))
    assert record["input_sha256"] == result["input"]["sha256"]
    assert record["model_sha256"] == app.model_sha256
    assert record["label"] == result["label"] and record["status"] == 200
    assert record["confidence"] == pytest.approx(result["confidence"], abs=1e-6)


def test_uploads_are_kept_only_with_save_uploads(classifier, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = read(sample_image(tiny_data, "benign", 2))
    with running(classifier) as (url, _):
        assert request(url, "/classify", "POST", data).status == 200
    assert os.listdir(str(tmp_path)) == []
    keep = str(tmp_path / "kept")
    with running(classifier, save_uploads=keep) as (url, _):
        result = json.loads(request(url, "/classify", "POST", data).body.decode("utf-8"))
        assert request(url, "/classify", "POST", data[:len(data) // 2]).status == 400
        assert request(url, "/classify", "POST", b"not an image").status == 415
    assert os.listdir(keep) == [result["input"]["sha256"] + ".png"]   # refused ones are not kept
    assert read(os.path.join(keep, os.listdir(keep)[0])) == data


def test_kept_netpbm_uploads_are_named_by_their_kind(classifier, tiny_data, tmp_path):
    """A PGM upload is kept as .pgm and a PPM as .ppm (both were kept as .ppm)."""
    import cv2
    rgb = cv2.imread(sample_image(tiny_data, "benign", 2))
    pgm = cv2.imencode(".pgm", cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY))[1].tobytes()
    ppm = cv2.imencode(".ppm", rgb)[1].tobytes()
    keep = str(tmp_path / "kept")
    with running(classifier, save_uploads=keep) as (url, _):
        for data in (pgm, ppm):
            assert request(url, "/classify", "POST", data).status == 200
    assert sorted(os.listdir(keep)) == sorted([hashlib.sha256(pgm).hexdigest() + ".pgm",
                                               hashlib.sha256(ppm).hexdigest() + ".ppm"])
    assert cv2.imread(os.path.join(keep, hashlib.sha256(pgm).hexdigest() + ".pgm"),
                      cv2.IMREAD_UNCHANGED).ndim == 2


def test_the_same_upload_twice_at_once_is_kept_once_and_both_answered(classifier, tiny_data,
                                                                     tmp_path, monkeypatch):
    """A second upload of the same image saved while the first one is being moved into place
    (the first request's rename runs the second request to its end) is answered 200 too."""
    import oncolens.appliance.web.app as app_module
    keep = str(tmp_path / "kept")
    data = read(sample_image(tiny_data, "normal", 1))
    real_replace, inner = os.replace, []

    def replace_after_another_upload(src, dst):
        if not inner:
            inner.append(None)
            inner[0] = request(url, "/classify", "POST", data).status
        return real_replace(src, dst)

    monkeypatch.setattr(app_module.os, "replace", replace_after_another_upload)
    with running(classifier, save_uploads=keep) as (url, _):
        outer = request(url, "/classify", "POST", data).status
    assert (outer, inner) == (200, [200])
    assert os.listdir(keep) == [hashlib.sha256(data).hexdigest() + ".png"]
    assert read(os.path.join(keep, os.listdir(keep)[0])) == data


def test_labels_outside_latin1_survive_the_headers(tiny_bundle, tiny_data):
    from urllib.parse import unquote
    from oncolens.appliance.classifier import Classifier
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        clf.bundle.labels = [u"良性", u"恶性", u"正常"]
        with running(clf) as (url, _):
            data = read(sample_image(tiny_data))
            reply = request(url, "/classify?annotated=1", "POST", data)
            plain = json.loads(request(url, "/classify", "POST", data).body.decode("utf-8"))
    assert reply.status == 200
    result = json.loads(reply.headers["x-result"])
    assert unquote(reply.headers["x-label"]) == result["label"] == plain["label"]
    assert sorted(result["probabilities"]) == sorted([u"良性", u"恶性", u"正常"])


def test_an_unexpected_error_is_500_internal_counted_and_audited(classifier, tiny_data,
                                                                  tmp_path):
    import shutil
    keep, audit = str(tmp_path / "kept"), str(tmp_path / "audit.jsonl")
    data = read(sample_image(tiny_data, "benign", 0))
    with running(classifier, save_uploads=keep, audit_log=audit) as (url, _):
        assert request(url, "/classify", "POST", data).status == 200
        shutil.rmtree(keep)                       # the folder goes away while serving
        reply = request(url, "/classify", "POST", data, {"X-Request-Id": "gone-1"})
        text = request(url, "/metrics").body.decode("utf-8")
    assert reply.status == 500
    error = json.loads(reply.body.decode("utf-8"))["error"]
    assert error["code"] == "internal" and "gone-1" in error["message"]
    assert keep not in error["message"]            # no server paths in the answer
    assert metric(text, "oncolens_classify_errors_total", reason="internal") == 1
    assert metric(text, "oncolens_http_requests_total", path="/classify", code="500") == 1
    record = json.loads(open(audit).read().splitlines()[-1])
    assert record["request_id"] == "gone-1" and record["status"] == 500
    assert record["input_sha256"] == hashlib.sha256(data).hexdigest()
    assert record["label"] is None


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a full disk)")
def test_a_full_disk_under_the_audit_log_is_500_internal(classifier, tiny_data):
    data = read(sample_image(tiny_data, "benign", 0))
    with running(classifier, audit_log="/dev/full") as (url, _):
        reply = request(url, "/classify", "POST", data)
        text = request(url, "/metrics").body.decode("utf-8")
    assert reply.status == 500
    assert json.loads(reply.body.decode("utf-8"))["error"]["code"] == "internal"
    assert metric(text, "oncolens_classify_errors_total", reason="internal") == 1
