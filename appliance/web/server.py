"""A threaded WSGI server from the standard library: wsgiref + ThreadingMixIn.

One thread a connection, so a long-lived MJPEG viewer never blocks an upload; the model
itself sits behind the bounded queue (``queue.py``), which is what limits the work.
Access logging goes through ``logging`` without query strings (a ``?token=`` must never
reach a log); the app logs each request with its request id.
"""
import logging
import socket
import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

log = logging.getLogger(__name__)


class QuietHandler(WSGIRequestHandler):
    timeout = 60  # seconds a client may stall before its connection is dropped

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

    def __init__(self, app, host="127.0.0.1", port=0):
        cls = _ThreadingWSGIServer6 if ":" in host else ThreadingWSGIServer
        self.httpd = cls((host.strip("[]"), int(port)), QuietHandler)
        self.httpd.set_app(app)
        self.host = host
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
