"""POST /classify: read and check the upload, queue it for the model, answer.

JSON by default; ``?annotated=1`` answers the annotated image (JPEG, or PNG with
``&format=png``) and puts the same JSON, compacted and ASCII-escaped, in its ``X-Result``
header (``X-Label``: the label, percent-encoded UTF-8).
Every outcome is counted in /metrics and written to the audit log (when one is kept).
"""
import hashlib
import json
import logging
import time
from urllib.parse import parse_qs, quote

from oncolens.appliance.imageio import MAX_SIDE, encode_image
from oncolens.appliance.lowbits import low_bits_advice
from oncolens.appliance.overlay import draw_lines
from oncolens.appliance.postprocess import NOT_A_NUMBER, finite_rows, overlay_text
from oncolens.appliance.web.queue import (SHUTDOWN_RETRY_AFTER, SHUTTING_DOWN, WORKER_ENDED,
                                          QueueFull, ShuttingDown, WorkerEnded)
from oncolens.appliance.web.upload import UploadError

log = logging.getLogger(__name__)


# the query's values: anything else is refused (400 bad_query) before the upload is read
ANNOTATED = {"1": True, "true": True, "yes": True, "on": True,
             "": False, "0": False, "false": False, "no": False, "off": False}
FORMATS = {"": ".jpg", "jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}


def _query(environ, name, default=""):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0].lower()


def answer_options(environ):
    """(annotated, image extension) the query asks for; UploadError for a value neither
    knows (``format=gif`` was answered a JPEG, ``annotated=2`` JSON, without a word)."""
    annotated, fmt = _query(environ, "annotated"), _query(environ, "format")
    if annotated not in ANNOTATED:
        raise UploadError(400, "bad_query", "annotated={}: expected 1 (the annotated image) "
                          "or 0 (JSON)".format(annotated[:32]))
    if fmt not in FORMATS:
        raise UploadError(400, "bad_query", "format={}: expected jpeg or png".format(fmt[:32]))
    return ANNOTATED[annotated], FORMATS[fmt]


def refuse(app, environ, exc):
    rid = environ.get("oncolens.request_id", "-")
    reason = "decode_busy" if exc.code == "busy" else exc.code
    app.metrics.observe_error(reason)
    app.audit_write(environ, exc.status)
    log.info("%s refused %d %s", rid, exc.status, reason)
    headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
    return app.error_response(exc.status, exc.code, str(exc), headers=headers)


def busy(app, environ, sha, retry_after):
    rid = environ.get("oncolens.request_id", "-")
    app.metrics.observe_error("queue_full")
    app.audit_write(environ, 503, sha)
    log.info("%s refused 503 queue full (retry after %d s)", rid, retry_after)
    return app.error_response(503, "busy", "the model is busy: try again in {} s".format(
        retry_after), headers={"Retry-After": str(int(retry_after))})


def timed_out(app, environ, sha, retry_after):
    rid = environ.get("oncolens.request_id", "-")
    app.metrics.observe_error("model_timeout")
    app.audit_write(environ, 503, sha)
    log.info("%s refused 503: no answer from the model within %g s", rid, app.timeout)
    return app.error_response(503, "timeout", "the model did not answer within {:g} s "
                              "(--timeout): try again in {} s".format(app.timeout, retry_after),
                              headers={"Retry-After": str(int(retry_after))})


def worker_ended(app, environ, sha=None):
    """503 ``worker_ended`` at once: the model's worker thread has ended (/health says so
    too), so nothing would answer the request; it waited for --timeout, then 503 timeout."""
    rid = environ.get("oncolens.request_id", "-")
    app.metrics.observe_error("worker_ended")
    app.audit_write(environ, 503, sha)
    log.info("%s refused 503: the model's worker has ended", rid)
    return app.error_response(503, "worker_ended", WORKER_ENDED)


def shutting_down(app, environ, sha=None):
    """503 ``shutting_down``: the server closed the queue (a normal stop, after the drain)
    while the image waited (it was answered 500 inference_failed) or before it was queued
    (503 worker_ended, "until the server is restarted"); nothing failed."""
    rid = environ.get("oncolens.request_id", "-")
    app.metrics.observe_error("shutting_down")
    app.audit_write(environ, 503, sha)
    log.info("%s refused 503: the server is shutting down", rid)
    return app.error_response(503, "shutting_down", SHUTTING_DOWN,
                              headers={"Retry-After": str(SHUTDOWN_RETRY_AFTER)})


def warnings_of(rid, sha, low_bits):
    """The answer's ``warnings`` (``code`` and ``message`` each), also logged: an upload that
    is a 16-bit image using only its low bits (``low_bits``: its highest value) reads nearly
    black, and its result means little."""
    if low_bits is None:
        return []
    message = low_bits_advice(low_bits)
    log.warning("%s input sha256=%s: %s", rid, sha[:16], message)
    return [{"code": "low_bits", "message": message}]


def build_result(app, rid, upload, job, started, decoded, warnings=None):
    data, sha, fmt, rgb = upload
    clf = app.classifier
    preds = clf.predictions(job.probs)
    best = preds[0]
    done = time.time()
    result = {
        "request_id": rid,
        "label": best.label, "confidence": best.confidence, "index": best.index,
        "top": [{"label": p.label, "confidence": p.confidence, "index": p.index} for p in preds],
        "probabilities": dict((label, float(p)) for label, p in zip(clf.labels, job.probs)),
        "model": app.describe_model(),
        "input": {"sha256": sha, "format": fmt, "width": int(rgb.shape[1]),
                  "height": int(rgb.shape[0]), "bytes": len(data)},
        "timing_ms": {"read_decode": round((decoded - started) * 1000.0, 3),
                      "queue": round(job.queued_s * 1000.0, 3),
                      "inference": round((job.infer_s or 0.0) * 1000.0, 3),
                      "total": round((done - started) * 1000.0, 3)},
    }
    if warnings:  # only when there is one: an ordinary answer is unchanged
        result["warnings"] = warnings
    return result, preds


def annotated_response(app, result, preds, rgb, fmt):
    if fmt in MAX_SIDE and max(rgb.shape[:2]) > MAX_SIDE[fmt][1]:  # JPEG cannot hold it: PNG
        fmt = ".png"
    image = encode_image(draw_lines(rgb, [overlay_text(p) for p in preds]), fmt)
    compact = json.dumps(result, sort_keys=True, separators=(",", ":"))  # ASCII: header-safe
    return app.bottle.HTTPResponse(body=image, status=200, headers={
        "Content-Type": "image/png" if fmt == ".png" else "image/jpeg",
        "Cache-Control": "no-store", "X-Result": compact, "X-Label": quote(result["label"]),
        "X-Confidence": "{:.6f}".format(result["confidence"])})


def handle_classify(app, environ):
    """The answer to one POST /classify; an unexpected error is answered 500 ``internal``,
    counted and audited like every other outcome."""
    rid = environ.get("oncolens.request_id", "-")
    seen = {}
    try:
        return _classify(app, environ, rid, seen)
    except Exception:
        log.exception("%s: /classify failed", rid)
        app.metrics.observe_error("internal")
        try:
            app.audit_write(environ, 500, seen.get("sha"))
        except Exception:   # the audit log itself may be what failed (a full disk)
            log.exception("%s: cannot write the audit log", rid)
        return app.error_response(500, "internal", "internal error (the server log has the "
                                  "details under request id {})".format(rid))


def _classify(app, environ, rid, seen):
    started = time.time()
    # refused before the upload is read: its body is read and dropped for a few seconds at
    # most (it was read at the body's pace, up to --max-upload-mb: minutes for a slow client)
    if app.queue is None:   # a live stream without a classifier: refused like any upload
        app.drop_body(environ, app.refused_drain)
        return refuse(app, environ, UploadError(404, "no_model", "this server has no model to "
                                            "classify with"))
    try:
        annotated, image_ext = answer_options(environ)
    except UploadError as exc:
        app.drop_body(environ, app.refused_drain)
        return refuse(app, environ, exc)
    if app.queue.closed or not app.queue.worker_alive:   # nothing would take the image: not
        app.drop_body(environ, app.refused_drain)          # read, not decoded
        return shutting_down(app, environ) if app.queue.closed else worker_ended(app, environ)
    try:
        data, fmt, rgb, low_bits = app.read_upload(environ)
    except UploadError as exc:
        return refuse(app, environ, exc)
    sha = seen["sha"] = hashlib.sha256(data).hexdigest()
    decoded = time.time()
    app.save_upload(data, sha, fmt)
    try:
        job = app.submit(rgb)
    except QueueFull as exc:
        return busy(app, environ, sha, exc.retry_after)
    except ShuttingDown:
        return shutting_down(app, environ, sha)
    except WorkerEnded:
        return worker_ended(app, environ, sha)
    if not job.wait(app.timeout):
        job.cancel()
        return timed_out(app, environ, sha, app.queue.retry_after())
    if job.worker_ended:
        return worker_ended(app, environ, sha)
    if job.shutting_down:
        return shutting_down(app, environ, sha)
    error = job.error
    if error is None and not finite_rows([job.probs])[0]:  # no class to answer with
        error = NOT_A_NUMBER
        log.error("%s input sha256=%s: %s", rid, sha[:16], error)
    if error:
        app.metrics.observe_error("inference")
        app.audit_write(environ, 500, sha)
        return app.error_response(500, "inference_failed", error)
    result, preds = build_result(app, rid, (data, sha, fmt, rgb), job, started, decoded,
                                 warnings_of(rid, sha, low_bits))
    # the answer is made before the result is counted and audited: a failure to make it is
    # then audited once, as the 500 it is answered with
    response = (annotated_response(app, result, preds, rgb, image_ext) if annotated
                else app.json_response(result))
    app.metrics.observe_latency(time.time() - started)
    app.audit_write(environ, 200, sha, result["label"], result["confidence"])
    log.info("%s input sha256=%s -> %s %.4f", rid, sha[:16], result["label"],
             result["confidence"])
    return response
