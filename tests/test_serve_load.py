"""Under load the server queues, then answers 503 + Retry-After: no request goes unanswered."""
import concurrent.futures
import json
import threading

import pytest

from serve_util import (hold_inference, metric, read, request, running, sample_image,
                        wait_started)

CLIENTS = 16
REQUESTS = 200


def test_200_requests_from_16_clients_are_all_answered(tiny_bundle, tiny_data):
    from oncolens.appliance.classifier import Classifier
    images = [read(sample_image(tiny_data, cls, n)) for cls in ("benign", "malignant", "normal")
              for n in range(3)]
    outcomes, lock = [], threading.Lock()

    def one(n):
        reply = request(url, "/classify", "POST", images[n % len(images)], timeout=120)
        with lock:
            outcomes.append(reply)
        return reply.status

    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        # a small queue and one image a batch, so that 16 clients overflow it
        with running(clf, queue_size=2, max_batch=1) as (url, app):
            with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
                statuses = list(pool.map(one, range(REQUESTS)))
            text = request(url, "/metrics").body.decode("utf-8")
            health = json.loads(request(url, "/health").body.decode("utf-8"))
    assert len(statuses) == REQUESTS == len(outcomes)
    ok = [r for r in outcomes if r.status == 200]
    busy = [r for r in outcomes if r.status == 503]
    assert len(ok) + len(busy) == REQUESTS, sorted(set(statuses))
    assert len(ok) > 0
    for reply in busy:
        assert int(reply.headers["retry-after"]) >= 1
        assert json.loads(reply.body.decode("utf-8"))["error"]["code"] == "busy"
    for reply in ok:
        assert json.loads(reply.body.decode("utf-8"))["label"] in ("benign", "malignant", "normal")
    ids = set(r.headers["x-request-id"] for r in outcomes)
    assert len(ids) == REQUESTS                      # every answer is its own
    assert metric(text, "oncolens_http_requests_total", path="/classify", code="200") == len(ok)
    assert (metric(text, "oncolens_http_requests_total", path="/classify", code="503") or 0) == len(busy)
    assert (metric(text, "oncolens_classify_errors_total", reason="queue_full") or 0) == len(busy)
    assert metric(text, "oncolens_images_classified_total") == len(ok)
    assert metric(text, "oncolens_classify_latency_seconds_count") == len(ok)
    assert health["queue"]["depth"] == 0


def test_queue_full_raises_with_retry_after():
    """The queue itself: a worker stuck on one job, a full queue refuses at once."""
    import numpy as np
    from oncolens.appliance.web.queue import InferenceQueue, QueueFull
    gate = threading.Event()

    class Slow(object):
        def infer_images(self, images):
            gate.wait(10)
            return type("R", (), {"probs": np.ones((len(images), 3), np.float32) / 3})()

    q = InferenceQueue(Slow(), maxsize=2, max_batch=1)
    try:
        first = q.submit(np.zeros((4, 4, 3), np.uint8))
        wait_started(first)
        waiting = [q.submit(np.zeros((4, 4, 3), np.uint8)) for _ in range(2)]
        with pytest.raises(QueueFull) as info:
            q.submit(np.zeros((4, 4, 3), np.uint8))
        assert info.value.retry_after >= 1
        gate.set()
        for job in [first] + waiting:
            assert job.wait(10) and job.error is None and job.probs.shape == (3,)
    finally:
        gate.set()
        q.close()


def test_full_queue_answers_503_with_retry_after_over_http(tiny_bundle, tiny_data):
    from oncolens.appliance.classifier import Classifier
    data = read(sample_image(tiny_data))
    gate = threading.Event()
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        hold_inference(clf, gate)
        with running(clf, queue_size=2, max_batch=1) as (url, app):
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                held_replies = [pool.submit(request, url, "/classify", "POST", data)]
                for _ in range(100):           # one in the model, then two waiting
                    if app.queue.busy:
                        break
                    threading.Event().wait(0.02)
                held_replies += [pool.submit(request, url, "/classify", "POST", data)
                                 for _ in range(2)]
                for _ in range(100):
                    if app.queue.depth == 2:
                        break
                    threading.Event().wait(0.02)
                refused = request(url, "/classify", "POST", data)
                gate.set()
                statuses = [f.result().status for f in held_replies]
    assert refused.status == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert json.loads(refused.body.decode("utf-8"))["error"]["code"] == "busy"
    assert statuses == [200, 200, 200]


def test_a_failing_image_fails_only_its_own_request():
    """Three images in one batch, one of which the model cannot take: two answers, one error."""
    import numpy as np
    from oncolens.appliance.web.queue import InferenceQueue
    gate = threading.Event()
    calls = []

    class Picky(object):
        def infer_images(self, images):
            calls.append(len(images))
            gate.wait(10)
            if any(img.shape[1] > 100 for img in images):
                raise MemoryError("Failed to allocate 1536000000 bytes in /opt/secret/path")
            return type("R", (), {"probs": np.ones((len(images), 3), np.float32) / 3})()

    q = InferenceQueue(Picky(), maxsize=8, max_batch=4)
    try:
        first = q.submit(np.zeros((4, 4, 3), np.uint8))
        wait_started(first)
        good1 = q.submit(np.zeros((4, 4, 3), np.uint8))
        poison = q.submit(np.zeros((1, 999, 3), np.uint8))
        good2 = q.submit(np.zeros((4, 4, 3), np.uint8))
        gate.set()
        for job in (first, good1, poison, good2):
            assert job.wait(10)
    finally:
        gate.set()
        q.close()
    assert calls[:2] == [1, 3]                        # the three went in one batch
    assert first.error is None and good1.error is None and good2.error is None
    assert good1.probs.shape == (3,) and good2.probs.shape == (3,)
    assert poison.error and "MemoryError" in poison.error and "/opt/secret" not in poison.error


def test_decoding_is_limited_whatever_the_number_of_uploads(tiny_bundle, tiny_data, monkeypatch):
    """Six uploads at once: at most two decode at a time (decoding is where memory goes)."""
    import time
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.web import app as app_module
    real, active, peak, lock = app_module.decode_upload, [0], [0], threading.Lock()

    def slow_decode(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.3)
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(app_module, "decode_upload", slow_decode)
    data = read(sample_image(tiny_data))
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        with running(clf, queue_size=16) as (url, app):
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                statuses = list(pool.map(lambda _: request(url, "/classify", "POST", data).status,
                                         range(6)))
        peak_of_two, peak[0] = peak[0], 0
        with running(clf, queue_size=16, decode_slots=1) as (url, app):   # --decode-slots 1
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                one = list(pool.map(lambda _: request(url, "/classify", "POST", data).status,
                                    range(3)))
        assert one == [200] * 3 and peak[0] == 1
        peak[0] = peak_of_two
        with running(clf, timeout=0.1) as (url, app):     # no slot within --timeout: 503
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                replies = list(pool.map(lambda _: request(url, "/classify", "POST", data),
                                        range(6)))
            text = request(url, "/metrics").body.decode("utf-8")
    assert statuses == [200] * 6
    assert peak[0] == app_module.DECODE_SLOTS == 2
    codes = [json.loads(r.body.decode("utf-8")).get("error", {}).get("code") for r in replies]
    busy = [r for r, code in zip(replies, codes) if code == "busy"]
    assert busy and all(r.status == 503 and int(r.headers["retry-after"]) >= 1 for r in busy)
    assert set(codes) <= {"busy", "timeout", None}    # the two decoded may time out in the model
    assert metric(text, "oncolens_classify_errors_total", reason="decode_busy") == len(busy)


def test_a_model_timeout_is_its_own_answer_and_a_waiting_image_is_dropped(tiny_bundle,
                                                                          tiny_data):
    """--timeout: 503 'timeout' (not 'busy'), reason model_timeout; the image the model was
    already running is counted as classified, the one still waiting is never run."""
    import time
    from oncolens.appliance.classifier import Classifier
    data = read(sample_image(tiny_data))
    gate, ran = threading.Event(), []
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        hold_inference(clf, gate, ran)
        with running(clf, queue_size=4, max_batch=1, timeout=0.5) as (url, app):
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                first = pool.submit(request, url, "/classify", "POST", data)
                for _ in range(100):
                    if app.queue.busy:
                        break
                    time.sleep(0.02)
                second = pool.submit(request, url, "/classify", "POST", data)
                replies = [first.result(), second.result()]
            gate.set()
            for _ in range(100):                      # the worker finishes the first one
                if not app.queue.busy:
                    break
                time.sleep(0.02)
            time.sleep(0.2)
            text = request(url, "/metrics").body.decode("utf-8")
    for reply in replies:
        assert reply.status == 503 and int(reply.headers["retry-after"]) >= 1
        error = json.loads(reply.body.decode("utf-8"))["error"]
        assert error["code"] == "timeout" and "--timeout" in error["message"]
    assert metric(text, "oncolens_classify_errors_total", reason="model_timeout") == 2
    assert metric(text, "oncolens_classify_errors_total", reason="queue_full") is None
    assert ran == [1]                                 # the second image was never run
    assert metric(text, "oncolens_images_classified_total") == 1
