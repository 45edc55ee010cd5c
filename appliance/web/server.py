"""A threaded WSGI server from the standard library: wsgiref + ThreadingMixIn.

One thread a connection, so a long-lived MJPEG viewer does not block an upload; the model
itself sits behind the bounded queue (``queue.py``), which is what limits the work. At most
``max_connections`` are open at once (viewers included), and each may take only so long
(``limits.py``).
Access logging goes through ``logging`` without query strings (a ``?token=`` must never
reach a log); the app logs each request with its request id.
"""
import io
import json
import logging
import socket
import socketserver
import threading
import time
import uuid
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from oncolens.appliance.web.limits import (BODY_GRACE, BODY_MIN_RATE, HEADER_TIMEOUT,
                                           IDLE_TIMEOUT, MAX_CONNECTIONS, DeadlineReader,
                                           PieceWriter)
from oncolens.appliance.web.body import DIGITS, ContinueOnRead
from oncolens.appliance.web.linger import Lingerer

log = logging.getLogger(__name__)


# What the HTTP layer itself refuses (before the app sees the request): code and message.
# The request line is never echoed back: it may carry ?token=.
PROTOCOL_ERRORS = {
    400: ("bad_request", "malformed request line or header"),
    414: ("uri_too_long", "the request line is over 64 KiB"),
    431: ("headers_too_large", "a header line is over 64 KiB, or there are over 100 headers"),
    501: ("not_implemented", "unsupported method"),
    505: ("bad_version", "HTTP version not supported"),
}


def _drop_underscore_headers(env, headers):
    """The request's HTTP_* variables again, from its header names without an underscore.
    wsgiref names ``X_Forwarded_For`` and ``X-Forwarded-For`` alike (HTTP_X_FORWARDED_FOR)
    and joins their values, so a client behind a proxy that passes such a header on could
    append an address of its choosing to the one the proxy wrote, and the audit log's
    forwarded_for would name it. As nginx and gunicorn do, those headers are dropped."""
    for key in [key for key in env if key.startswith("HTTP_")]:
        del env[key]
    for name, value in headers.items():
        key = name.replace("-", "_").upper()
        if "_" in name or key in env:  # CONTENT_TYPE and CONTENT_LENGTH are not HTTP_*
            continue
        key, value = "HTTP_" + key, value.strip()
        env[key] = env[key] + "," + value if key in env else value


def expects_continue(version, headers):
    """Whether a request asks for ``100 Continue`` before its body (HTTP/1.1 and later:
    an HTTP/1.0 client's Expect is ignored, RFC 9110 section 10.1.1)."""
    return (version not in ("HTTP/0.9", "HTTP/1.0") and
            (headers.get("Expect") or "").strip().lower() == "100-continue")


def refusal(app, code, name, text, client_address):
    """(request id, JSON body) of a refusal by the HTTP layer, counted in /metrics ("other")
    and audited by the app (its ``refused``), and logged."""
    rid = uuid.uuid4().hex[:16]
    body = json.dumps({"error": {"status": code, "code": name, "message": text},
                       "request_id": rid}, sort_keys=True).encode("utf-8")
    refused = getattr(app, "refused", None)
    if refused is not None:  # counted in /metrics ("other") and audited by the app
        refused(rid, code, client=client_address[0])
    log.info("%s refused %d %s (before the app)", rid, code, name)
    return rid, body


class QuietHandler(WSGIRequestHandler):
    # the time limits (limits.py has the numbers and why): class attributes, so tests shorten them
    timeout = IDLE_TIMEOUT  # seconds a client may stall before its connection is dropped
    header_timeout = HEADER_TIMEOUT  # seconds the request line and headers may take in all
    body_grace, body_rate = BODY_GRACE, BODY_MIN_RATE  # a body's pace: DeadlineReader

    def setup(self):
        WSGIRequestHandler.setup(self)
        self.rfile.close()   # the socket's own reader, replaced by one with a deadline
        self.reader = DeadlineReader(self.connection, self.timeout,
                                     time.monotonic() + self.header_timeout,
                                     self.body_grace, self.body_rate)
        self.rfile = io.BufferedReader(self.reader)
        # every answer (wsgiref's, a refusal's, 100 Continue) in pieces, each under the idle
        # timeout: one sendall of a whole answer got 60 s in all, however steadily it was read
        self.wfile.close()
        self.wfile = PieceWriter(self.connection)

    content_length = None   # the request's one Content-Length value (parse_request)

    def parse_request(self):
        if not (WSGIRequestHandler.parse_request(self) and self._check_content_length()):
            return False
        self.reader.headers_read()
        if expects_continue(self.request_version, self.headers):
            self.rfile = ContinueOnRead(self.rfile, self.wfile)
        self.server.request_began()   # in flight until answered (handle): a stop waits
        self.in_flight = True
        return True

    in_flight = False

    def handle(self):
        try:
            WSGIRequestHandler.handle(self)
        except socket.timeout:
            if self.reader.deadline is None or not self.reader.received:
                raise   # an idle connection (a browser's preconnect) closes unanswered
            self.refuse(408, "header_timeout", "the request line and headers did not arrive "
                        "within {:g} s".format(self.header_timeout))
        finally:
            self.input_left = self._input_left()
            if self.in_flight:
                self.in_flight = False
                self.server.request_ended()

    refused = False      # the HTTP layer answered it (refuse)
    input_left = False   # the client may still be sending (its close lingers): _input_left

    def _input_left(self):
        """The HTTP layer refused it, or its body was not read to its end (401, 413, ...)."""
        if self.refused:
            return True
        headers = getattr(self, "headers", None)
        if headers is None or self.content_length is None:
            return headers is not None and bool(headers.get("Transfer-Encoding"))
        declared = self.content_length.strip()
        return not (DIGITS.match(declared) and int(declared) <= self.reader.body_received)

    def _check_content_length(self):
        """RFC 9112 section 6.3: Content-Length values that differ (two headers, or a list
        such as "12, 13") leave the body's end unknown: 400 ``bad_length``, connection closed.
        Identical ones ("12, 12", or the same header twice) count as one value; wsgiref
        alone would pass the first header on and ignore the rest."""
        values = self.headers.get_all("Content-Length") or []
        members = set(part.strip() for value in values for part in value.split(","))
        members.discard("")
        if len(members) > 1:
            self.refuse(400, "bad_length", "the request has differing Content-Length values")
            return False
        self.content_length = members.pop() if members else None
        return True

    def get_environ(self):
        env = WSGIRequestHandler.get_environ(self)
        if any("_" in name for name in self.headers.keys()):
            _drop_underscore_headers(env, self.headers)
        if self.content_length is not None:
            env["CONTENT_LENGTH"] = self.content_length
        env["oncolens.body_cut_off"] = self.reader.cut_off   # for the body of a refusal
        return env

    def send_error(self, code, message=None, explain=None):
        """http.server's refusals, in the app's JSON error shape (``refuse``)."""
        name, text = PROTOCOL_ERRORS.get(code, ("bad_request", "the request was refused"))
        self.refuse(code, name, text)

    def refuse(self, code, name, text):
        """A protocol error as the app's JSON error shape, counted in /metrics ("other") and
        written to the audit log, as every refused request is."""
        rid, body = refusal(self.server.get_app(), code, name, text, self.client_address)
        self.close_connection = True
        self.refused = True
        if getattr(self, "request_version", None) not in ("HTTP/1.0", "HTTP/1.1"):
            self.request_version = "HTTP/1.0"   # a status line and headers, whatever was sent
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Request-Id", rid)
            self.send_header("Connection", "close")
            self.end_headers()
            if getattr(self, "command", None) != "HEAD":
                self.wfile.write(body)
        except OSError:    # the client went away
            pass

    def log_request(self, code="-", size="-"):
        pass  # the app logs requests (with ids, without query strings)

    def log_message(self, fmt, *args):
        # never the request line: it may hold ?token=
        log.debug("http server: %s", fmt.split("%")[0].strip() or "message")

    def address_string(self):
        return self.client_address[0]


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    max_connections = MAX_CONNECTIONS   # open at once; more are answered 503 at once

    def __init__(self, *args, **kwargs):
        self._in_flight = 0      # requests read (line and headers) and not yet answered
        self._idle = threading.Condition()
        self._connections = 0    # connections with a thread of their own
        self._refused = 0        # connections answered 503 for the cap, since the start
        self._count_lock = threading.Lock()
        self.lingerer = Lingerer()   # the close of a client still sending (linger.py)
        WSGIServer.__init__(self, *args, **kwargs)

    def process_request(self, request, client_address):
        """A thread for the connection, unless ``max_connections`` are open already: each
        holds a thread and may hold an upload in memory, so without a cap, many slow
        clients could take the memory a 4 GB Nano has for its model."""
        with self._count_lock:
            admitted = self._connections < self.max_connections
            if admitted:
                self._connections += 1
            else:
                self._refused += 1
        if not admitted:
            self.refuse_connection(request, client_address)
            return
        try:
            socketserver.ThreadingMixIn.process_request(self, request, client_address)
        except BaseException:   # no thread started: the connection is closed by the caller
            self._connection_ended()
            raise

    def process_request_thread(self, request, client_address):
        """ThreadingMixIn's, but a client that may still be sending (``input_left``) gets a
        lingering close (linger.py): closed at once, its unread bytes made a reset."""
        handler = None
        try:
            handler = self.RequestHandlerClass(request, client_address, self)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            try:
                if handler is not None and handler.input_left:
                    self.lingerer.close_softly(request)
                else:
                    self.shutdown_request(request)
            finally:
                self._connection_ended()

    def _connection_ended(self):
        with self._count_lock:
            self._connections -= 1

    def connection_counts(self):
        """(connections open now, ``max_connections``, connections refused for that cap
        since the start): what /metrics reports (``set_app``)."""
        with self._count_lock:
            return self._connections, self.max_connections, self._refused

    def set_app(self, application):
        WSGIServer.set_app(self, application)
        watch = getattr(application, "watch_connections", None)
        if watch is not None:   # ServeApp: its /metrics reports this server's connections
            watch(self.connection_counts)

    def refuse_connection(self, request, client_address):
        """503 ``too_many_connections`` from the accepting thread, at once and without
        waiting for a byte of the request (no thread is started for it), counted and
        audited as the HTTP layer's other refusals; its close lingers (linger.py), so that
        a client still sending sees the answer rather than a reset."""
        rid, body = refusal(self.get_app(), 503, "too_many_connections", "the server has {} "
                            "connections open, its limit (--max-connections): try again in a "
                            "moment".format(self.max_connections), client_address)
        head = ("HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                "Content-Length: {}\r\nX-Request-Id: {}\r\nRetry-After: 1\r\n"
                "Connection: close\r\n\r\n".format(len(body), rid))
        try:
            request.setblocking(False)     # never wait for this client
            request.send(head.encode("ascii") + body)
        except OSError:                    # the client left (or its window is shut)
            pass
        self.lingerer.close_softly(request)

    def request_began(self):
        with self._idle:
            self._in_flight += 1

    def request_ended(self):
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout, tick=None, step=0.5):
        """Wait until every request read so far is answered, up to ``timeout`` seconds: the
        number still in flight then (0: all answered). A connection still sending its
        request line or headers is no request yet, and is not waited for. ``tick`` (the
        systemd watchdog's ping) is called at least every ``step`` seconds meanwhile. On the
        monotonic clock: a wall clock set forward (an NTP step) cut the drain short."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight and time.monotonic() < deadline:
                if tick is not None:
                    tick()
                self._idle.wait(min(step, max(0.0, deadline - time.monotonic())))
            return self._in_flight

    heartbeat = None   # called from serve_forever's loop (every poll): the watchdog's ping

    def service_actions(self):
        tick = getattr(self.get_app(), "tick", None)   # ServeApp: audit summaries due
        for call in (tick, self.heartbeat):
            if call is not None:
                call()

    def server_bind(self):
        # HTTPServer.server_bind looks the host name up (getfqdn): skip that slow lookup
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port
        self.setup_environ()

    def handle_error(self, request, client_address):
        log.debug("a connection ended with an error", exc_info=True)


class _ThreadingWSGIServer6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class ServerThread(object):
    """``app`` served on ``host:port`` (port 0: a free one) from a background thread."""

    def __init__(self, app, host="127.0.0.1", port=0, max_connections=MAX_CONNECTIONS):
        cls = _ThreadingWSGIServer6 if ":" in host else ThreadingWSGIServer
        self.httpd = cls((host.strip("[]"), int(port)), QuietHandler)
        self.httpd.max_connections = int(max_connections)
        self.httpd.set_app(app)
        self.host = host.strip("[]")  # --host [::1] as well as ::1: the URL adds the brackets
        self.port = self.httpd.server_address[1]
        self._thread = None

    @property
    def url(self):
        host = "[{}]".format(self.host) if ":" in self.host else self.host
        return "http://{}:{}/".format(host, self.port)

    def serve_forever(self):
        self.httpd.serve_forever(poll_interval=0.25)

    def start(self):
        self._thread = threading.Thread(target=self.serve_forever, name="oncolens-http")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self):
        if self._thread is not None:
            self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
