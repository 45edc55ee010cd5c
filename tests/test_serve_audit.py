"""The audit log has a line for every refused request: those refused before /classify's own
handling (a server without a model, the HTTP layer's own refusals) included."""
import json

import pytest

from serve_util import metric, raw_http, request, running

# the original seven, then who asked for what (test_serve_audit_who.py)
FIELDS = sorted(["confidence", "input_sha256", "label", "model_sha256", "request_id", "status",
                 "time", "method", "path", "client", "forwarded_for"])


def audit_lines(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh.read().splitlines()]


@pytest.fixture(scope="module")
def classifier(tiny_bundle):
    from oncolens.appliance.classifier import Classifier
    clf = Classifier.open(tiny_bundle, backend="onnxruntime")
    yield clf
    clf.close()


def test_classify_without_a_model_is_404_counted_and_audited(tmp_path):
    """A live-stream server without a classifier answers /classify 404 no_model: it was
    counted in the requests only, and left no audit line."""
    audit = str(tmp_path / "audit.jsonl")
    with running(None, audit_log=audit) as (url, _):
        reply = request(url, "/classify", "POST", b"\x89PNG" + b"\0" * 5000,
                        headers={"X-Request-Id": "no-model-1"})
        text = request(url, "/metrics").body.decode("utf-8")
    assert reply.status == 404
    assert json.loads(reply.body.decode("utf-8"))["error"]["code"] == "no_model"
    assert metric(text, "oncolens_classify_errors_total", reason="no_model") == 1
    lines = audit_lines(audit)
    assert len(lines) == 1 and sorted(lines[0]) == FIELDS
    assert lines[0]["request_id"] == "no-model-1" and lines[0]["status"] == 404
    assert lines[0]["label"] is None and lines[0]["input_sha256"] is None


def test_what_the_http_layer_refuses_is_audited(classifier, tmp_path):
    """431, 505, 414 and http.server's own 400 were counted in /metrics but not audited; a
    line now has the same fields as any other, under the X-Request-Id answered, and never
    the request line (which may carry ?token=)."""
    audit = str(tmp_path / "audit.jsonl")
    cases = [(b"GARBAGE /classify?token=s3cret\r\n\r\n", 400),
             (b"POST /classify?token=s3cret HTTP/9.9\r\n\r\n", 505),
             (b"POST /classify?token=s3cret HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
              431),
             (b"POST /classify?token=s3cret" + b"a" * 70000 + b" HTTP/1.0\r\n\r\n", 414)]
    answered = []
    with running(classifier, audit_log=audit) as (url, app):
        for payload, status in cases:
            got, headers, _ = raw_http(url, payload)
            assert got == status, payload[:30]
            answered.append((headers["x-request-id"], status))
        model_sha256 = app.model_sha256
    lines = audit_lines(audit)
    assert [(r["request_id"], r["status"]) for r in lines] == answered
    for record in lines:
        assert sorted(record) == FIELDS
        assert record["model_sha256"] == model_sha256 and model_sha256
        assert record["input_sha256"] is None and record["label"] is None
        assert record["confidence"] is None
    with open(audit) as fh:
        assert "s3cret" not in fh.read()


def test_an_audit_log_that_cannot_be_written_still_answers_a_protocol_error(classifier):
    with running(classifier, audit_log="/dev/full") as (url, _):
        got, headers, body = raw_http(url, b"GET / HTTP/9.9\r\n\r\n")
        assert got == 505 and json.loads(body.decode("utf-8"))["error"]["code"] == "bad_version"
        text = request(url, "/metrics").body.decode("utf-8")
    assert metric(text, "oncolens_http_requests_total", path="other", code="505") == 1
