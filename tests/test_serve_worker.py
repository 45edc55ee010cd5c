"""The model's worker thread survives a bug after the model call: the batch's requests are
answered at once, and the requests after them too. A real model, real HTTP, a real audit
log; only the step that fails is made to fail."""
import json
import threading

import numpy as np
import pytest

from serve_util import read, request, running, sample_image


class _Rows(object):
    """A result whose rows cannot be read (iterating raises): a bug after the model call."""

    def __iter__(self):
        raise RuntimeError("a bug past the model")

    def __len__(self):
        return 1


def _audit_statuses(path):
    with open(path) as fh:
        return [json.loads(line)["status"] for line in fh]


def test_a_failing_count_callback_answers_the_batch_and_the_worker_goes_on():
    """The image-count callback (the metrics' bookkeeping) raised after the model ran: the
    worker thread ended, the batch's requests waited for --timeout, and so did every later
    one. The results stand now and the worker takes the next batch."""
    from oncolens.appliance.web.queue import InferenceQueue

    class Model(object):
        def infer_images(self, images):
            return type("R", (), {"probs": np.ones((len(images), 3), np.float32) / 3})()

    def broken_count(n):
        raise ValueError("a bug in the bookkeeping")

    q = InferenceQueue(Model(), maxsize=4, max_batch=2, on_classified=broken_count)
    try:
        first = q.submit(np.zeros((4, 4, 3), np.uint8))
        assert first.wait(20), "the batch's request was never answered"
        later = q.submit(np.zeros((4, 4, 3), np.uint8))
        assert later.wait(20), "the worker ended: a later request was never answered"
        assert q.worker_alive and not q.busy and q.running_for() == 0.0
    finally:
        q.close()
    for job in (first, later):
        assert job.error is None and job.probs.shape == (3,)


def test_a_bug_after_the_model_call_is_answered_500_and_audited_and_serving_goes_on(
        tiny_bundle, tiny_data, tmp_path):
    from oncolens.appliance.classifier import Classifier
    data = read(sample_image(tiny_data))
    audit = str(tmp_path / "audit.jsonl")
    broken = threading.Event()
    broken.set()
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        real = clf.infer_images

        def infer(images):
            result = real(images)
            return result._replace(probs=_Rows()) if broken.is_set() else result

        clf.infer_images = infer
        # the timeout bounds a hang in the test (it was the failure: a 503 timeout)
        with running(clf, timeout=10, audit_log=audit) as (url, app):
            failed = request(url, "/classify", "POST", data)
            broken.clear()
            after = request(url, "/classify", "POST", data)
            alive = app.queue.worker_alive
    assert failed.status == 500, failed.body[:300]
    error = json.loads(failed.body.decode("utf-8"))["error"]
    assert error["code"] == "inference_failed" and "RuntimeError" in error["message"]
    assert "a bug past the model" not in error["message"]   # the message stays in the log
    assert after.status == 200, after.body[:300]
    assert alive
    assert _audit_statuses(audit) == [500, 200]


def _health(url):
    reply = request(url, "/health")
    return reply.status, json.loads(reply.body.decode("utf-8"))


def _health_until(url, wanted, tries=400):
    """/health polled (every 50 ms, 20 s at most: a guard, not a timing) until its status
    is ``wanted``; the last (code, body)."""
    for _ in range(tries):
        code, body = _health(url)
        if body["status"] == wanted:
            break
        threading.Event().wait(0.05)
    return code, body


def test_health_says_stalled_with_503_while_the_model_hangs_and_ok_once_it_answers(
        tiny_bundle, tiny_data, tmp_path):
    """/health answered 200 "ok" while one batch hung in the model (every /classify timed
    out); now 503 "stalled" with how long the batch has run, past --timeout, and not
    audited (a read); "ok" again once the model answers."""
    from oncolens.appliance.classifier import Classifier
    from serve_util import hold_inference
    data = read(sample_image(tiny_data))
    audit = str(tmp_path / "audit.jsonl")
    gate = threading.Event()
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        hold_inference(clf, gate)
        with running(clf, timeout=0.5, audit_log=audit) as (url, app):
            idle = _health(url)
            try:
                timed_out = request(url, "/classify", "POST", data)   # held past --timeout
                stalled = _health_until(url, "stalled")
            finally:
                gate.set()
            recovered = _health_until(url, "ok")
    assert idle[0] == 200 and idle[1]["status"] == "ok"
    assert idle[1]["inference"] == {"worker_alive": True, "running_s": 0.0,
                                    "stalled_after_s": 0.5}
    assert timed_out.status == 503
    code, body = stalled
    assert (code, body["status"]) == (503, "stalled")
    assert body["inference"]["running_s"] > 0.5 and body["inference"]["worker_alive"]
    assert body["model_loaded"] is True and body["queue"]["capacity"] == 16
    assert recovered[0] == 200 and recovered[1]["inference"]["running_s"] == 0.0
    assert _audit_statuses(audit) == [503]      # the /classify only, no /health line


def _end_worker(queue):
    """End ``queue``'s worker thread by a bug outside a batch (one in a batch is answered and
    the worker goes on), as test_serve_watchdog.py does: close() is a normal stop, said as
    shutting_down (test_serve_shutdown.py)."""
    def broken():
        raise RuntimeError("a bug in the worker")

    queue._take = broken
    queue._thread.join(10)                      # the bug ends it
    assert not queue.worker_alive and not queue.closed


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_health_says_worker_ended_with_503_once_the_worker_is_gone(ort_classifier):
    with running(ort_classifier) as (url, app):
        assert _health(url)[0] == 200
        _end_worker(app.queue)
        code, body = _health(url)
    assert (code, body["status"]) == (503, "worker_ended")
    assert body["inference"]["worker_alive"] is False


class _WorkerKilled(BaseException):
    """Not an Exception: it gets past the worker's own handler and ends its thread."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_request_after_the_worker_ended_is_answered_503_worker_ended_and_audited(
        ort_classifier, tiny_data, tmp_path):
    """It waited for --timeout (here 20 s) and was then answered 503 timeout, though /health
    already said worker_ended."""
    audit = str(tmp_path / "audit.jsonl")
    data = read(sample_image(tiny_data))
    with running(ort_classifier, timeout=20, audit_log=audit) as (url, app):
        _end_worker(app.queue)
        reply = request(url, "/classify", "POST", data)
        metrics = request(url, "/metrics").body.decode("utf-8")
    assert reply.status == 503, reply.body[:300]
    error = json.loads(reply.body.decode("utf-8"))["error"]
    assert error["code"] == "worker_ended" and "restarted" in error["message"]
    assert 'oncolens_classify_errors_total{reason="worker_ended"} 1' in metrics
    assert _audit_statuses(audit) == [503]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_jobs_waiting_when_the_worker_dies_are_answered_and_later_ones_refused():
    """A worker ended by a bug left its batch and the queued jobs to wait for --timeout."""
    from oncolens.appliance.web.queue import InferenceQueue, WorkerEnded
    release = threading.Event()

    class Model(object):
        def infer_images(self, images):
            release.wait(20)
            raise _WorkerKilled()

    q = InferenceQueue(Model(), maxsize=4, max_batch=1)
    try:
        first = q.submit(np.zeros((4, 4, 3), np.uint8))
        second = q.submit(np.zeros((4, 4, 3), np.uint8))
        release.set()
        for job in (first, second):
            assert job.wait(20), "a job was left waiting after the worker ended"
            assert job.worker_ended and job.probs is None and "restarted" in job.error
        assert not q.worker_alive
        try:
            q.submit(np.zeros((4, 4, 3), np.uint8))
        except WorkerEnded:
            pass
        else:
            raise AssertionError("a job was queued for a worker that has ended")
    finally:
        q.close()


def test_a_request_still_waiting_when_the_server_closes_is_answered_503_shutting_down(
        tiny_bundle, tiny_data, tmp_path):
    """A normal stop (SIGTERM, after the drain) answered the requests still queued "the
    server is shutting down" as 500 inference_failed, counted as an inference failure:
    nothing failed. Now 503 shutting_down with Retry-After, audited, its own reason."""
    from oncolens.appliance.classifier import Classifier
    from serve_util import hold_inference
    data = read(sample_image(tiny_data))
    audit = str(tmp_path / "audit.jsonl")
    gate, replies = threading.Event(), {}

    def post(name):
        replies[name] = request(url, "/classify", "POST", data)

    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        hold_inference(clf, gate)
        with running(clf, timeout=30, max_batch=1, audit_log=audit) as (url, app):
            threads = [threading.Thread(target=post, args=("ran",))]
            threads[0].start()
            for _ in range(400):                 # a guard, not a timing: 20 s at most
                if app.queue.busy:
                    break
                threading.Event().wait(0.05)
            threads.append(threading.Thread(target=post, args=("waited",)))
            threads[1].start()
            for _ in range(400):
                if app.queue.depth == 1:
                    break
                threading.Event().wait(0.05)
            closing = threading.Thread(target=app.queue.close)
            closing.start()
            while not app.queue._stop.is_set():
                threading.Event().wait(0.01)
            gate.set()                           # the batch in the model ends; the worker stops
            closing.join(20)
            for thread in threads:
                thread.join(20)
            metrics = request(url, "/metrics").body.decode("utf-8")
    assert replies["ran"].status == 200, replies["ran"].body[:300]
    waited = replies["waited"]
    assert waited.status == 503, waited.body[:300]
    error = json.loads(waited.body.decode("utf-8"))["error"]
    assert error["code"] == "shutting_down" and "shutting down" in error["message"]
    assert int(waited.headers["retry-after"]) >= 1
    assert 'oncolens_classify_errors_total{reason="shutting_down"} 1' in metrics
    assert 'reason="inference"' not in metrics
    assert sorted(_audit_statuses(audit)) == [200, 503]
