"""The audit log has a line for every refused request: those refused before /classify's own
handling (a server without a model, the HTTP layer's own refusals) included."""
import json

from serve_util import audit_lines, metric, raw_http, request, running

# the original seven, then who asked for what (test_serve_audit_who.py)
FIELDS = sorted(["confidence", "input_sha256", "label", "model_sha256", "request_id", "status",
                 "time", "method", "path", "client", "forwarded_for"])


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


def test_what_the_http_layer_refuses_is_audited(ort_classifier, tmp_path):
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
    with running(ort_classifier, audit_log=audit) as (url, app):
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


def test_an_audit_log_that_cannot_be_written_still_answers_a_protocol_error(ort_classifier):
    with running(ort_classifier, audit_log="/dev/full") as (url, _):
        got, headers, body = raw_http(url, b"GET / HTTP/9.9\r\n\r\n")
        assert got == 505 and json.loads(body.decode("utf-8"))["error"]["code"] == "bad_version"
        text = request(url, "/metrics").body.decode("utf-8")
    assert metric(text, "oncolens_http_requests_total", path="other", code="505") == 1


def test_unknown_paths_and_wrong_methods_are_audited(ort_classifier, tmp_path):
    """404 and 405 were counted in /metrics but left no audit line: a scan of the server's
    paths, or a POST of an image to the wrong one, left no trace. Each refused request now
    has its line, with the same fields as the others and never its body or query; answered
    reads (the page, /health) are still not audited."""
    audit = str(tmp_path / "audit.jsonl")
    body = b"\x89PNG" + b"\0" * 5000
    cases = [("GET", "/admin/../etc?token=s3cret", None, 404),
             ("POST", "/upload", body, 404),
             ("GET", "/classify", None, 405),
             ("POST", "/health", body, 405),
             ("GET", "/stream.mjpg", None, 404),      # no_live_feed: no live sink here
             ("GET", "/health", None, 200)]
    with running(ort_classifier, audit_log=audit) as (url, app):
        for n, (method, path, data, status) in enumerate(cases):
            headers = {"X-Request-Id": "refused-{}".format(n)}
            reply = request(url, path, method, data, headers=headers)
            assert reply.status == status, path
        page = request(url, "/").body.decode("utf-8")
    lines = audit_lines(audit)
    assert [(r["request_id"], r["status"], r["method"], r["path"]) for r in lines] == [
        ("refused-0", 404, "GET", "/admin/../etc"), ("refused-1", 404, "POST", "/upload"),
        ("refused-2", 405, "GET", "/classify"), ("refused-3", 405, "POST", "/health"),
        ("refused-4", 404, "GET", "/stream.mjpg")]
    for record in lines:
        assert sorted(record) == FIELDS and record["client"] == "127.0.0.1"
        assert record["input_sha256"] is None and record["label"] is None
    with open(audit) as fh:
        assert "s3cret" not in fh.read()
    # the page names an icon of its own: browsers ask no /favicon.ico, a 404 at every visit
    assert '<link rel="icon" href="data:,">' in page
