"""Audit lines say who asked for what: the method, the path (never its query string) and
the client's address, so a 401 on /health is told from one on /classify, and one client
from another. X-Forwarded-For is read only from a --trusted-proxy peer."""
import json
import logging

import pytest

from serve_util import audit_lines, raw_http, read, request, running, sample_image

TOKEN = "secret"
NEW_FIELDS = ("method", "path", "client", "forwarded_for")


def by_id(lines):
    return dict((r["request_id"], r) for r in lines)


def test_lines_name_method_path_and_client_never_the_query_or_token(ort_classifier, tiny_data,
                                                                   tmp_path):
    audit = str(tmp_path / "audit.jsonl")
    image = read(sample_image(tiny_data))
    with running(ort_classifier, token=TOKEN, audit_log=audit) as (url, _):
        ok = request(url, "/classify?token=secret&annotated=0", "POST", image,
                     headers={"X-Request-Id": "ok-1"})
        empty = request(url, "/classify?token=secret", "POST", b"",
                        headers={"X-Request-Id": "empty-1", "Content-Length": "0"})
        header = request(url, "/classify", "POST", b"not an image",
                         headers={"X-Request-Id": "bearer-1",
                                  "Authorization": "Bearer " + TOKEN})
        health = request(url, "/health?token=secret-but-wrong",
                         headers={"X-Request-Id": "health-401"})
        denied = request(url, "/classify?token=nope", "POST", image,
                         headers={"X-Request-Id": "classify-401"})
    assert (ok.status, empty.status, header.status) == (200, 400, 415)
    assert (health.status, denied.status) == (401, 401)
    lines = by_id(audit_lines(audit))
    assert sorted(lines) == ["bearer-1", "classify-401", "empty-1", "health-401", "ok-1"]
    for rid, method, path, status in [("ok-1", "POST", "/classify", 200),
                                      ("empty-1", "POST", "/classify", 400),
                                      ("bearer-1", "POST", "/classify", 415),
                                      ("health-401", "GET", "/health", 401),
                                      ("classify-401", "POST", "/classify", 401)]:
        record = lines[rid]
        assert (record["method"], record["path"], record["status"]) == (method, path, status)
        assert record["client"] == "127.0.0.1" and record["forwarded_for"] is None
    # the old fields keep their meaning
    assert lines["ok-1"]["label"] == json.loads(ok.body.decode("utf-8"))["label"]
    assert lines["empty-1"]["input_sha256"] is None and lines["empty-1"]["label"] is None
    with open(audit) as fh:
        text = fh.read()
    assert "secret" not in text and "token" not in text and "Bearer" not in text


def test_a_hostile_path_is_percent_encoded_and_capped(ort_classifier, tmp_path, caplog):
    """A path is chosen by whoever connects, token or not: control characters (a newline, a
    terminal escape) and non-ASCII come out as %XX, and it is cut to 256 characters. The
    server log's line still says (other) for a path it does not serve."""
    audit = str(tmp_path / "audit.jsonl")
    caplog.set_level(logging.INFO, logger="oncolens.appliance.web.app")
    with running(ort_classifier, token=TOKEN, audit_log=audit) as (url, _):
        weird, _, _ = raw_http(url, b"GET /a%0Ab\x1b[31m%C3%A9\"x HTTP/1.0\r\n"
                                    b"X-Request-Id: weird-1\r\n\r\n")
        long_, _, _ = raw_http(url, b"GET /" + b"%00" * 300 + b"?token=secret-guess HTTP/1.0\r\n"
                                    b"X-Request-Id: long-1\r\n\r\n")
    assert (weird, long_) == (401, 401)
    with open(audit) as fh:
        raw = fh.read()
    assert len(raw.splitlines()) == 2 and "\x1b" not in raw and "secret" not in raw
    lines = by_id(audit_lines(audit))
    assert lines["weird-1"]["path"] == "/a%0Ab%1B%5B31m%C3%A9%22x"
    path = lines["long-1"]["path"]
    assert len(path) <= 256 and path.endswith("%00...") and path.startswith("/%00%00")
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("weird-1 ")]
    assert logged and "(other)" in logged[0] and "/a" not in logged[0]


def test_http_layer_refusals_name_the_client_but_not_the_request_line(ort_classifier, tmp_path):
    audit = str(tmp_path / "audit.jsonl")
    with running(ort_classifier, audit_log=audit) as (url, _):
        got, headers, _ = raw_http(url, b"GET /health?token=secret HTTP/9.9\r\n\r\n")
    assert got == 505
    (record,) = audit_lines(audit)
    assert record["request_id"] == headers["x-request-id"]
    assert record["client"] == "127.0.0.1"
    assert record["method"] is None and record["path"] is None
    assert record["forwarded_for"] is None


@pytest.mark.parametrize("proxy,expected", [
    (None, None),                 # off: the header is whatever the client wrote
    ("10.1.2.3", None),           # the peer is not the proxy
    ("127.0.0.1", "192.0.2.7"),   # the last entry, the one the proxy appended
    ("::ffff:127.0.0.1", "192.0.2.7"),
])
def test_forwarded_for_only_from_the_trusted_proxy(ort_classifier, tmp_path, proxy, expected):
    audit = str(tmp_path / "audit.jsonl")
    with running(ort_classifier, token=TOKEN, audit_log=audit, trusted_proxy=proxy) as (url, _):
        request(url, "/health", headers={"X-Request-Id": "fwd-1",
                                         "X-Forwarded-For": "203.0.113.9, 192.0.2.7"})
        request(url, "/health", headers={"X-Request-Id": "fwd-2",
                                         "X-Forwarded-For": "not-an-address"})
    lines = by_id(audit_lines(audit))
    assert lines["fwd-1"]["client"] == "127.0.0.1"
    assert lines["fwd-1"]["forwarded_for"] == expected
    assert lines["fwd-2"]["forwarded_for"] is None


def test_a_trusted_proxy_that_is_not_an_address_is_refused():
    from oncolens.appliance.errors import UsageError
    from oncolens.appliance.web.app import ServeApp
    with pytest.raises(UsageError) as info:
        ServeApp(None, trusted_proxy="proxy.lan")
    assert str(info.value).startswith("--trusted-proxy proxy.lan: expected an IP address")
