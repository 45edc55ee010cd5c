"""A normal stop (SIGTERM: after the drain the server closes the model's queue) is told apart
from a worker thread that died of a bug: a request that comes to the closed queue, or was
still reading its upload as it closed, is answered 503 shutting_down with Retry-After, and
/health says "shutting_down". Both were "worker_ended" ("until the server is restarted").
A real model, real HTTP, a real audit log."""
import http.client
import json
import threading
import urllib.parse

import numpy as np
import pytest

from serve_util import Reply, read, request, running, sample_image


def _audit_statuses(path):
    with open(path) as fh:
        return [json.loads(line)["status"] for line in fh]


def _assert_shutting_down(reply):
    assert reply.status == 503, reply.body[:300]
    error = json.loads(reply.body.decode("utf-8"))["error"]
    assert error["code"] == "shutting_down" and "shutting down" in error["message"]
    assert "restarted" not in error["message"]
    assert int(reply.headers["retry-after"]) >= 1


def test_the_queue_refuses_a_job_after_close_as_shutting_down_not_worker_ended():
    from oncolens.appliance.web.queue import InferenceQueue, ShuttingDown

    class Model(object):
        def infer_images(self, images):
            return None

    q = InferenceQueue(Model(), maxsize=4, max_batch=1)
    q.close()
    assert q.closed and not q.worker_alive
    with pytest.raises(ShuttingDown):
        q.submit(np.zeros((4, 4, 3), np.uint8))


def test_health_and_classify_say_shutting_down_after_a_normal_close(
        ort_classifier, tiny_data, tmp_path):
    audit = str(tmp_path / "audit.jsonl")
    data = read(sample_image(tiny_data))
    with running(ort_classifier, audit_log=audit) as (url, app):
        app.queue.close()                       # what serve does after its drain
        health = request(url, "/health")
        reply = request(url, "/classify", "POST", data)
        metrics = request(url, "/metrics").body.decode("utf-8")
    body = json.loads(health.body.decode("utf-8"))
    assert (health.status, body["status"]) == (503, "shutting_down")
    assert body["inference"]["worker_alive"] is False
    _assert_shutting_down(reply)
    assert 'oncolens_classify_errors_total{reason="shutting_down"} 1' in metrics
    assert 'reason="worker_ended"' not in metrics
    assert _audit_statuses(audit) == [503]      # the /classify only


def test_a_request_still_reading_its_upload_as_the_queue_closes_is_answered_shutting_down(
        ort_classifier, tiny_data, tmp_path):
    """It passed the check before its upload was read, then its submit found the worker gone:
    503 worker_ended, as if the worker had died of a bug."""
    audit = str(tmp_path / "audit.jsonl")
    data = read(sample_image(tiny_data))
    reading = threading.Event()
    with running(ort_classifier, timeout=20, audit_log=audit) as (url, app):
        real = app.read_upload

        def read_upload(environ):
            reading.set()
            return real(environ)

        app.read_upload = read_upload
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            conn.putrequest("POST", "/classify")
            conn.putheader("Content-Length", str(len(data)))
            conn.endheaders()
            conn.send(data[:len(data) // 2])
            assert reading.wait(20), "the request never began to read its upload"
            app.queue.close()                   # the drain is over: the queue closes
            conn.send(data[len(data) // 2:])
            resp = conn.getresponse()
            reply = Reply(resp.status, dict((k.lower(), v) for k, v in resp.getheaders()),
                          resp.read())
        finally:
            conn.close()
        metrics = request(url, "/metrics").body.decode("utf-8")
    _assert_shutting_down(reply)
    assert 'oncolens_classify_errors_total{reason="shutting_down"} 1' in metrics
    assert 'reason="worker_ended"' not in metrics
    assert _audit_statuses(audit) == [503]
