"""The routes: the page, /classify, /health, /metrics and the live stream.

``ServeApp`` holds the state (classifier, queue, metrics, audit log, live sink) and
``ServeApp.wsgi`` is the WSGI application: a small middleware (request id, token check,
metrics, one log line a request) around a Bottle app with the routes.
"""
import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid

from oncolens import __version__
from oncolens.appliance.errors import MissingDependency, UsageError
from oncolens.appliance.lowbits import low_bits_peak
from oncolens.appliance.preprocess import resize_geometry
from oncolens.appliance.web.audit import AuditLog, client_field, request_fields, trusted_proxies
from oncolens.appliance.web.audit_limit import ROUTE_STATUSES
from oncolens.appliance.web.auth import token_ok
from oncolens.appliance.web.metrics import CONTENT_TYPE as METRICS_TYPE, PATHS, Metrics
from oncolens.appliance.web.classify import handle_classify
from oncolens.appliance.web.limits import REFUSED_DRAIN, TOO_LARGE_DRAIN, UNAUTHORIZED_DRAIN
from oncolens.appliance.web.queue import InferenceQueue
from oncolens.appliance.web.body import DIGITS, drain, image_bytes, read_body
from oncolens.appliance.web.upload import (UploadError, check_image, decode_upload,
                                           saved_extension)
from oncolens.appliance.web.watchdog import worker_state

log = logging.getLogger(__name__)

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "index.html")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
JSON_TYPE = "application/json"
DECODE_SLOTS = 2  # uploads decoded at once (the rest wait, up to --timeout)
# The page may talk to this server only: no CDN, no external URL can load.
CSP = ("default-src 'none'; img-src 'self' blob: data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")


def bottle_module():
    try:
        import bottle
    except ImportError:
        raise MissingDependency("bottle", "oncolens serve", "pip install 'oncolens[serve]'")
    return bottle


def prepare_save_dir(path):
    """Make the --save-uploads folder and check a file can be written there (UsageError)."""
    if not path:
        return
    try:
        if not os.path.isdir(path):
            os.makedirs(path)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".oncolens-probe-"):
            pass
    except (OSError, IOError) as exc:
        raise UsageError("--save-uploads {}: cannot write there ({})".format(
            path, exc.strerror or exc))


class ServeApp(object):
    def __init__(self, classifier=None, token=None, live=None, max_upload_mb=20.0,
                 max_pixels=40000000, queue_size=16, max_batch=4, timeout=60.0,
                 save_uploads=None, audit_log=None, decode_slots=DECODE_SLOTS,
                 trusted_proxy=None):
        self.bottle = bottle_module()
        # X-Forwarded-For is read (for the audit log only) from these peers alone, if any:
        # --trusted-proxy's addresses and networks (one string, or a list of them)
        self.trusted_proxies = trusted_proxies(trusted_proxy) if trusted_proxy else ()
        self.classifier = classifier
        self.token = token or None
        self.live = live
        self.max_bytes = int(float(max_upload_mb) * (1 << 20))
        self.max_pixels = int(max_pixels)
        self.timeout = float(timeout)
        self.save_dir = save_uploads
        prepare_save_dir(save_uploads)
        self.metrics = Metrics()
        # an AuditLog given is shared (classify's --serve and http:// servers write one file
        # through one writer) and closed by whoever opened it; a path is opened here
        self._owns_audit = not isinstance(audit_log, AuditLog)
        self.audit = AuditLog(audit_log) if self._owns_audit else audit_log
        self.queue = InferenceQueue(classifier, queue_size, max_batch,
                                    self.metrics.observe_images) if classifier else None
        # decoding is where an upload's memory is spent (a 300 KB PNG may decode to 300 MB):
        # at most this many at once, whatever the number of connections
        self._decoding = threading.BoundedSemaphore(max(1, int(decode_slots)))
        self.model_sha256 = classifier.bundle.model_sha256 if classifier else None
        self._connection_counts = []   # the servers' (open, cap, refused): watch_connections
        self.wsgi = self._middleware(self._routes())

    # -- plumbing -------------------------------------------------------------------------
    def _routes(self):
        app = self.bottle.Bottle()
        app.route("/", "GET", self.page)
        app.route("/health", "GET", self.health)
        app.route("/metrics", "GET", self.metrics_text)
        app.route("/classify", "POST", self.classify)
        app.route("/stream.mjpg", "GET", self.stream)
        app.route("/frame.jpg", "GET", self.frame)
        for code in (400, 404, 405, 413, 500):
            app.error(code)(self._framework_error)
        return app

    def _middleware(self, inner):
        def application(environ, start_response):
            rid = environ.get("HTTP_X_REQUEST_ID", "")
            rid = rid if REQUEST_ID.match(rid) else uuid.uuid4().hex[:16]
            environ["oncolens.request_id"] = rid
            environ["oncolens.audit"] = request_fields(environ, self.trusted_proxies)
            path = environ.get("PATH_INFO") or "/"
            started, state = time.time(), {"code": 500}

            def start(status, headers, exc_info=None):
                state["code"] = int(status.split(" ", 1)[0])
                return start_response(status, list(headers) + [("X-Request-Id", rid)], exc_info)

            if not token_ok(environ, self.token):
                self.drop_body(environ, self.unauthorized_drain)
                self._refused_unauthorized(environ, path, rid)
                body = self.error_body(rid, 401, "unauthorized", "a valid token is required "
                                       "(Authorization: Bearer T or ?token=T)")
                start("401 Unauthorized", [("Content-Type", JSON_TYPE),
                                           ("WWW-Authenticate", 'Bearer realm="oncolens"')])
                result = [body]
            else:
                result = self._routed(inner, environ, start, rid)
                if state["code"] >= 400 and not environ.get("oncolens.audited"):
                    # refused on any path (404, 405, ...): audited as /classify's refusals
                    # are, 404 and 405 a few a minute per client (audit_limit.py)
                    self.audit_refusal(rid, state["code"], environ.get("oncolens.audit"),
                                       limited=state["code"] in ROUTE_STATUSES)
            self.metrics.observe_request(path, state["code"])
            log.info("%s %s %s %d %.1f ms", rid, environ.get("REQUEST_METHOD"),
                     path if path in PATHS else "(other)", state["code"],
                     (time.time() - started) * 1000.0)
            return result

        # what the HTTP layer refuses before this application sees it (server.py)
        application.refused = self.refused_before_routes
        application.watch_connections = self.watch_connections   # server.py's set_app
        application.tick = self.audit.tick   # server.py's loop: audit summaries that are due
        return application

    def _routed(self, inner, environ, start, rid):
        """The routes' answer to a request that passed the token check."""
        try:
            return inner(environ, start)
        except Exception:  # the framework normally catches these; never leave silent
            log.exception("%s: unhandled error", rid)
            start("500 Internal Server Error", [("Content-Type", JSON_TYPE)])
            return [self.error_body(rid, 500, "internal", "internal error")]

    def refused_before_routes(self, rid, status, client=None):
        """A request the HTTP layer refused itself (a malformed request line or header,
        differing Content-Length values, a request line or header too long, an unknown HTTP
        version): counted under path "other" and audited, every one of them, since what it asked for
        cannot be trusted then (it may have been an upload). Its audit line names the client
        (the socket peer) but no method or path: the request line was not trusted."""
        self.metrics.observe_request("other", status)
        self.audit_refusal(rid, status, {"client": client_field(client)}, limited=True)

    def audit_write(self, environ, status, input_sha256=None, label=None, confidence=None):
        """The audit line of a request the middleware saw (its method, path, client and
        forwarded_for: ``request_fields``); the middleware audits it no more."""
        environ["oncolens.audited"] = True
        self.audit.write(environ.get("oncolens.request_id", "-"), status, input_sha256,
                         self.model_sha256, label, confidence,
                         request=environ.get("oncolens.audit"))

    def audit_refusal(self, rid, status, request=None, limited=False):
        """An audit line for a request refused outside /classify's own handling (``limited``:
        by the HTTP layer, or 401, 404, 405 on a route, so a few a minute per client, the
        rest summed up: audit_limit.py); a failure to write it is logged, never raised (the
        refusal is answered all the same)."""
        try:
            if limited:
                self.audit.write_limited(rid, status, self.model_sha256, request=request)
            else:
                self.audit.write(rid, status, None, self.model_sha256, request=request)
        except Exception:   # the audit log itself may be what failed (a full disk)
            log.exception("%s: cannot write the audit log", rid)

    def _refused_unauthorized(self, environ, path, rid):
        """A request refused for its token is audited whatever its path (a failed attempt to
        get in is what an audit log is for: the page, /health and /metrics were left out),
        a few a minute per client, the rest counted into a summary line that keeps their
        number (audit_limit.py); a POST /classify is counted among /classify's errors too."""
        if path == "/classify" and environ.get("REQUEST_METHOD") == "POST":
            self.metrics.observe_error("unauthorized")
        self.audit_refusal(rid, 401, environ.get("oncolens.audit"), limited=True)

    # seconds the body of a request refused 401 (or 413, or 404 no_model and 400 bad_query
    # on /classify) is read, at most (limits.py)
    unauthorized_drain = UNAUTHORIZED_DRAIN
    too_large_drain = TOO_LARGE_DRAIN
    refused_drain = REFUSED_DRAIN

    def drop_body(self, environ, seconds=None):
        """Read and drop the body of a refused request (up to --max-upload-mb), so that the
        client sees the answer; for ``seconds`` at most when given (a client without the
        token gets little of the server's time), then the answer goes out and the
        connection closes."""
        declared = (environ.get("CONTENT_LENGTH") or "").strip()
        length = int(declared) if DIGITS.match(declared) else 0
        cut_off = environ.get("oncolens.body_cut_off")   # server.py's reader
        if seconds is not None and cut_off is not None:
            cut_off(seconds)
        if 0 < length <= self.max_bytes:
            drain(environ["wsgi.input"], length)

    @staticmethod
    def error_body(rid, status, code, message):
        return json.dumps({"error": {"status": status, "code": code, "message": message},
                           "request_id": rid}, sort_keys=True).encode("utf-8")

    def _rid(self):
        return self.bottle.request.environ.get("oncolens.request_id", "-")

    def json_response(self, obj, status=200, headers=None):
        head = {"Content-Type": JSON_TYPE, "Cache-Control": "no-store"}
        head.update(headers or {})
        body = json.dumps(obj, sort_keys=True).encode("utf-8")
        return self.bottle.HTTPResponse(body=body, status=status, headers=head)

    def error_response(self, status, code, message, headers=None):
        head = {"Content-Type": JSON_TYPE, "Cache-Control": "no-store"}
        head.update(headers or {})
        body = self.error_body(self._rid(), status, code, message)
        return self.bottle.HTTPResponse(body=body, status=status, headers=head)

    def _framework_error(self, error):
        self.bottle.response.content_type = JSON_TYPE
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                413: "too_large", 500: "internal"}.get(error.status_code, "error")
        message = {404: "no such page", 405: "method not allowed here",
                   500: "internal error"}.get(error.status_code, "the request failed")
        return self.error_body(self._rid(), error.status_code, code, message)

    # -- pages ------------------------------------------------------------------------------
    def page(self):
        with open(PAGE, "rb") as fh:
            body = fh.read()
        return self.bottle.HTTPResponse(body=body, status=200, headers={
            "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": CSP,
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer"})

    def describe_model(self):
        clf = self.classifier
        if clf is None:
            return None
        info = clf.bundle.info
        return {"sha256": self.model_sha256, "arch": info.get("arch"), "labels": clf.labels,
                "backend": clf.backend.name, "precision": clf.backend.precision,
                "input_size": list(clf.bundle.input_shape[1:])}

    def health(self):
        """200 while the model's worker answers; 503 with "status" "stalled" (a batch in
        inference for over --timeout: its requests are answered 503 timeout by then),
        "shutting_down" (the server closed the queue: a normal stop) or "worker_ended" (the
        worker thread ended otherwise: a bug) (watchdog.worker_state), so a load balancer or
        a monitor sees a hung model: it answered "ok" while every /classify timed out."""
        model = self.describe_model()
        status, inference = worker_state(self.queue, self.timeout)
        # not a refusal: the middleware writes no audit line for it (reads are not audited)
        self.bottle.request.environ["oncolens.audited"] = True
        return self.json_response({
            "status": status, "inference": inference, "version": __version__,
            "model_loaded": self.classifier is not None,
            "model": model, "backend": (model or {}).get("backend"),
            "precision": (model or {}).get("precision"), "model_sha256": self.model_sha256,
            "uptime_s": round(time.time() - self.metrics.started, 3),
            "queue": {"depth": self.queue.depth if self.queue else 0,
                      "capacity": self.queue.capacity if self.queue else 0},
            "live": self.live is not None, "token_required": self.token is not None},
            status=200 if status == "ok" else 503)

    def watch_connections(self, counts):
        """``counts() -> (open, cap, refused)``: a server's connections (server.py), which
        /metrics then reports (summed, where one app has several servers)."""
        self._connection_counts.append(counts)

    def _connection_metrics(self, gauges, counters):
        if not self._connection_counts:
            return
        open_now, cap, refused = [sum(values) for values in
                                  zip(*[counts() for counts in self._connection_counts])]
        gauges["oncolens_http_connections_open"] = (
            "connections open now (this scrape's own included, live-stream viewers too)",
            open_now)
        gauges["oncolens_http_connections_max"] = ("most connections open at once "
                                                   "(--max-connections)", cap)
        counters["oncolens_http_connections_refused_total"] = (
            "connections answered 503 too_many_connections (over --max-connections)", refused)

    def metrics_text(self):
        gauges, counters = {}, {}
        if self.queue is not None:
            gauges["oncolens_queue_depth"] = ("images waiting for the model", self.queue.depth)
            gauges["oncolens_queue_capacity"] = ("most images that may wait", self.queue.capacity)
        self._connection_metrics(gauges, counters)
        info = None
        model = self.describe_model()
        if model:
            info = {"sha256": model["sha256"] or "", "backend": model["backend"],
                    "precision": model["precision"], "arch": model["arch"] or ""}
        text = self.metrics.render(gauges, info, counters)
        return self.bottle.HTTPResponse(body=text.encode("utf-8"), status=200, headers={
            "Content-Type": METRICS_TYPE, "Cache-Control": "no-store"})

    # -- the live stream ----------------------------------------------------------------------
    def stream(self):
        if self.live is None:
            return self.error_response(404, "no_live_feed", "no live feed on this server (run "
                                       "'oncolens classify ... --serve :PORT')")
        return self.bottle.HTTPResponse(body=self.live.frames(), status=200, headers={
            "Content-Type": "multipart/x-mixed-replace; boundary={}".format(self.live.boundary),
            "Cache-Control": "no-store"})

    def frame(self):
        jpeg = self.live.latest() if self.live is not None else None
        if jpeg is None:
            return self.error_response(404, "no_frame", "no live frame yet")
        return self.bottle.HTTPResponse(body=jpeg, status=200, headers={
            "Content-Type": "image/jpeg", "Cache-Control": "no-store"})

    # -- /classify ---------------------------------------------------------------------------
    def classify(self):
        return handle_classify(self, self.bottle.request.environ)

    def save_upload(self, data, sha, fmt):
        if not self.save_dir:
            return None
        path = os.path.join(self.save_dir, sha + saved_extension(fmt, data))
        if not os.path.exists(path):
            # a temporary name of its own: the same image uploaded twice at once must not
            # have one request move the other's file away (it was answered 500)
            part = "{}.{}.part".format(path, uuid.uuid4().hex[:16])
            try:
                with open(part, "wb") as fh:
                    fh.write(data)
                os.replace(part, path)
            finally:
                if os.path.exists(part):
                    os.remove(part)
        return path

    def resized_size(self, width, height):
        """(width, height) the model's preprocessing resizes such an image to (before the crop)."""
        pre = self.classifier.preprocessor
        new_h, new_w = resize_geometry(pre.spec, (height, width), (pre.height, pre.width))[:2]
        return new_w, new_h

    def read_upload(self, environ):
        """(bytes, format, rgb, low-bits peak) of the request's image (the peak: the highest
        sample of a 16-bit image that uses only its low bits, else None); UploadError when
        refused."""
        data = image_bytes(environ, read_body(environ, self.max_bytes, self.too_large_drain))
        resized = self.resized_size if getattr(self.classifier, "preprocessor", None) else None
        fmt = check_image(data, self.max_pixels, resized)[0]  # before waiting for a slot
        if not self._decoding.acquire(timeout=self.timeout):
            retry = self.queue.retry_after() if self.queue is not None else 1
            raise UploadError(503, "busy", "the server is busy decoding other images: try "
                              "again in {} s".format(retry), retry_after=retry)
        try:
            fmt, rgb = decode_upload(data, self.max_pixels, "upload {}".format(
                environ.get("oncolens.request_id")), resized, fmt)
            # a 16-bit upload is decoded again, in its slot, only when it reads nearly black
            peak = low_bits_peak(data, rgb)
        finally:
            self._decoding.release()
        return data, fmt, rgb, peak

    def submit(self, rgb):
        return self.queue.submit(rgb)

    def close(self):
        if self.queue is not None:
            self.queue.close()
        if self._owns_audit:
            self.audit.close()

