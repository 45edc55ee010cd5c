"""The live annotated stream: a frame sink that keeps the latest JPEG for MJPEG viewers.

``oncolens classify CAMERA --serve :8080`` (or an ``http://@:8080`` output) calls
``open_live_sink(address, classifier, token)``: the web server starts in a background
thread and the returned ``LiveSink`` takes annotated frames (``write(frame, rgb)``); the
page at ``/`` shows them as ``multipart/x-mixed-replace`` from ``/stream.mjpg``, the latest
one alone is at ``/frame.jpg``.  With a classifier the same server answers /classify too.
"""
import logging
import re
import threading

from oncolens.appliance.errors import UsageError
from oncolens.appliance.imageio import encode_image
from oncolens.appliance.web.auth import require_token

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"


def parse_address(address, flag="--serve"):
    """``:8080``, ``@:8080``, ``http://@:8080``, ``HOST:8080`` or ``8080`` -> (host, port).

    No host (or ``@``) means loopback: listening on the network is asked for with an
    explicit host (``0.0.0.0:8080``) and needs a token.
    """
    text = str(address).strip()
    text = re.sub(r"^https?://", "", text).rstrip("/").lstrip("@")
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) > 65535 or "://" in text or "/" in text or (
            ":" in host and not text.startswith("[")):
        raise UsageError("{} {}: expected [HOST]:PORT, e.g. :8080 or http://@:8080".format(
            flag, address))
    return host or DEFAULT_HOST, int(port)


class LiveSink(object):
    """The sink interface (``write(frame, rgb_image) -> where``, ``close()``) for the web."""

    boundary = "oncolensframe"

    def __init__(self, quality=80, wait=1.0):
        self.quality = int(quality)
        self.wait = float(wait)
        self.url = None
        self.server = None
        self.app = None
        self.frames_written = 0
        self.closed = False
        self._jpeg = None
        self._cond = threading.Condition()

    def write(self, frame, rgb_image):
        jpeg = encode_image(rgb_image, ".jpg", self.quality)
        with self._cond:
            self._jpeg = jpeg
            self.frames_written += 1
            self._cond.notify_all()
        return self.stream_url

    @property
    def stream_url(self):
        return (self.url + "stream.mjpg") if self.url else None

    def latest(self):
        with self._cond:
            return self._jpeg

    def _next(self, seen):
        """The next JPEG after frame number ``seen``: (number, jpeg), or None once closed.

        When no new frame comes within ``wait`` seconds the last one is sent again: a
        browser shows an MJPEG part only once more data follows it, and a client that
        went away is noticed on that write.
        """
        with self._cond:
            if not self.closed and (self._jpeg is None or self.frames_written == seen):
                self._cond.wait(self.wait)
            while not self.closed and self._jpeg is None:
                self._cond.wait(self.wait)
            if self.closed:
                return None
            return self.frames_written, self._jpeg

    def frames(self):
        """The MJPEG body, until the sink closes.

        Each part is followed at once by the next boundary: browsers show a part only once
        they see the boundary after it, so a still camera's last frame shows too.
        """
        boundary = "--{}\r\n".format(self.boundary).encode("ascii")
        yield boundary
        seen = -1
        while True:
            item = self._next(seen)
            if item is None:
                return
            seen, jpeg = item
            head = "Content-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n".format(len(jpeg))
            yield head.encode("ascii") + jpeg + b"\r\n" + boundary

    def close(self):
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.app is not None:
            self.app.close()
            self.app = None


def open_live_sink(address, classifier=None, token=None, **options):
    """Start the web server on ``address`` in a background thread; return its LiveSink.

    ``options`` go to ``ServeApp`` (max_upload_mb, queue_size, audit_log, ...) except
    ``quality`` (JPEG quality of the stream, 80) and ``max_connections`` (the server's,
    ``limits.MAX_CONNECTIONS``).
    """
    from oncolens.appliance.web.app import ServeApp
    from oncolens.appliance.web.limits import MAX_CONNECTIONS
    from oncolens.appliance.web.server import ServerThread
    host, port = parse_address(address)
    require_token(host, token, flag="--serve")
    sink = LiveSink(quality=options.pop("quality", 80))
    connections = options.pop("max_connections", MAX_CONNECTIONS)
    sink.app = ServeApp(classifier, token=token, live=sink, **options)
    try:
        sink.server = ServerThread(sink.app.wsgi, host, port, connections).start()
    except (OSError, IOError) as exc:
        sink.app.close()
        raise UsageError("--serve {}: cannot listen there ({})".format(address, exc))
    sink.url = sink.server.url
    log.info("live stream at %sstream.mjpg", sink.url)
    return sink


def http_sink(uri, overwrite=False, classifier=None, token=None, audit_log=None,
              trusted_proxy=None, **_options):
    """``open_sink``'s factory for ``http://@:PORT`` outputs (the other sink options, such as
    codec or bitrate, do not apply to a browser stream)."""
    return open_live_sink(uri, classifier=classifier, token=token, audit_log=audit_log,
                          trusted_proxy=trusted_proxy)
