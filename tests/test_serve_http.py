"""The HTTP layer as clients meet it: Content-Length forms, Expect: 100-continue, headers
that trickle in, and a stop with requests in flight."""
import json

import pytest

from serve_util import metric, raw_http, read, request, running, sample_image


@pytest.fixture(scope="module")
def classifier(tiny_bundle):
    from oncolens.appliance.classifier import Classifier
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        yield clf


@pytest.fixture(scope="module")
def server(classifier, tmp_path_factory):
    audit = str(tmp_path_factory.mktemp("audit") / "audit.jsonl")
    with running(classifier, audit_log=audit) as (url, app):
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
