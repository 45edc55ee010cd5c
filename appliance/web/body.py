"""Reading one request's body, in memory only.

A request body is read only when its declared length is within the limit (413 otherwise);
a multipart form or a raw body is accepted (``upload.py`` then checks the image). Nothing
is written anywhere.
"""
import re
import socket

from oncolens.appliance.web.limits import CHUNK, BodyTimeout
from oncolens.appliance.web.upload import UploadError

DRAIN_CAP = 64 << 20      # read (and drop) at most this much of an oversized body
DIGITS = re.compile(r"[0-9]+\Z")  # a Content-Length: ASCII digits and nothing else


def drain(stream, remaining):
    """Read and drop up to ``remaining`` bytes, so the client can read our answer; none
    from a client still waiting for ``100 Continue`` (it sends no body: server.py). A
    body that arrives too slowly (``BodyTimeout``, a socket.timeout) ends the drain."""
    if getattr(stream, "continue_pending", False):
        return
    remaining = min(remaining, DRAIN_CAP)
    try:
        while remaining > 0:
            block = stream.read(min(CHUNK, remaining))
            if not block:
                break
            remaining -= len(block)
    except (socket.timeout, OSError, ValueError):
        pass


def read_body(environ, max_bytes, too_large_drain=None):
    """The request body (a bytearray of its Content-Length, allocated once and read into:
    a body gathered in pieces and joined took twice its size at the end), read only when
    its Content-Length is within ``max_bytes``. Over it, the body is read and dropped for
    ``too_large_drain`` seconds at most (when given: the server's reader is cut off then),
    and 413: that drain was bounded by the body's pace alone, so a slow client held its
    thread for up to 17 minutes (64 MiB at 64 KiB/s)."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        raise UploadError(411, "length_required",
                          "send the image with a Content-Length (chunked bodies are refused)")
    declared = (environ.get("CONTENT_LENGTH") or "").strip()
    if not declared:
        raise UploadError(411, "length_required", "send the image with a Content-Length")
    if re.match(r"-[0-9]+\Z", declared):
        raise UploadError(400, "bad_length", "Content-Length {} is negative".format(declared))
    if not DIGITS.match(declared):  # int() also takes "+12" and "1_2": RFC 9112 says 1*DIGIT
        raise UploadError(400, "bad_length", "Content-Length is not a number (expected "
                          "digits only)")
    length = int(declared)
    stream = environ["wsgi.input"]
    if length > max_bytes:
        cut_off = environ.get("oncolens.body_cut_off")   # server.py's reader
        if too_large_drain is not None and cut_off is not None:
            cut_off(too_large_drain)
        drain(stream, length)
        raise UploadError(413, "too_large", "upload of {} bytes is over the limit of {} bytes "
                          "(--max-upload-mb)".format(length, max_bytes))
    body = bytearray(length)   # one buffer, filled in place: no pieces to join
    got = _read_into(stream, body)
    if got < length:
        raise UploadError(400, "incomplete", "the body ended after {} of the {} bytes "
                          "announced".format(got, length))
    return body


def _read_block(stream, view):
    """Read into ``view`` (up to its length; fewer only at the end of the body): the count."""
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        return readinto(view) or 0
    block = stream.read(len(view))   # a WSGI input need not have readinto
    view[:len(block)] = block
    return len(block)


def _read_into(stream, body):
    """Fill ``body`` from ``stream``, CHUNK bytes a read: how many bytes were read (fewer
    than ``len(body)`` when the body ended early); UploadError 408 when it came too slowly."""
    got, length = 0, len(body)
    view = memoryview(body)
    try:
        while got < length:
            count = _read_block(stream, view[got:got + CHUNK])
            if not count:
                break
            got += count
    except BodyTimeout as exc:   # it kept arriving, too slowly (limits.py)
        raise UploadError(408, "body_timeout", "the upload arrived too slowly: {}; {} of the "
                          "{} bytes announced were read".format(exc, got, length))
    except (socket.timeout, OSError):
        raise UploadError(408, "timeout", "the upload stopped arriving")
    finally:
        view.release()   # the buffer can be cut to the image in place (multipart_file)
    return got


def _multipart_boundary(content_type):
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.I)  # parameter names: any case
    if not match:
        raise UploadError(400, "bad_multipart", "multipart body without a boundary")
    return match.group(1).encode("latin-1")


# a form field named exactly image or file (not image_id, files, profile, ...)
IMAGE_FIELD = re.compile(r'\bname=(?:"(?:image|file)"|(?:image|file)(?=[\s;]|$))', re.M)


def multipart_file(body, content_type):
    """The content of the first file part (or a part named image/file) of a form: ``body``
    itself, cut to it in place, when it is a bytearray (splitting the form copied it
    three times over), else a copy of it."""
    delimiter = b"--" + _multipart_boundary(content_type)
    at = body.find(delimiter)
    while at >= 0:
        start = at + len(delimiter)
        at = body.find(delimiter, start)
        end = len(body) if at < 0 else at
        if body.startswith(b"--", start, end):   # the closing delimiter
            break
        while start < end and body[start] in b"\r\n":
            start += 1
        sep = body.find(b"\r\n\r\n", start, end)
        if sep < 0:
            continue
        head = bytes(body[start:sep]).decode("latin-1").lower()
        if "filename=" in head or IMAGE_FIELD.search(head):
            if body.endswith(b"\r\n", sep + 4, end):
                end -= 2
            return _cut(body, sep + 4, end)
    raise UploadError(400, "no_file", "the form has no file part (send the image as a field "
                      "named 'image' or as the raw body)")


def _cut(body, start, end):
    """``body[start:end]``: in place for a bytearray (its end first, then its start, which
    CPython drops without moving the rest), a copy otherwise."""
    if not isinstance(body, bytearray):
        return body[start:end]
    del body[end:]
    del body[:start]
    return body


def image_bytes(environ, body):
    """The image's bytes from a raw body or a multipart/form-data body."""
    content_type = environ.get("CONTENT_TYPE", "")
    if content_type.lower().startswith("multipart/form-data"):
        return multipart_file(body, content_type)
    return body


class ContinueOnRead(object):
    """``wsgi.input`` of an HTTP/1.1 request that asked ``Expect: 100-continue``: the interim
    ``100 Continue`` goes out when the app first reads the body. Never sent, the client (curl
    does so for bodies over 1 MB) waited a second before sending the body anyway. A request
    refused before its body is read (401, 413, ...) is answered without it, so the client
    sends no body at all (``continue_pending``: nothing was asked for yet, nothing to drop)."""

    def __init__(self, rfile, wfile):
        self._rfile, self._wfile = rfile, wfile
        self.continue_pending = True

    def _go_on(self):
        if self.continue_pending:
            self.continue_pending = False
            try:
                self._wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self._wfile.flush()
            except OSError:   # the client went away: the read that follows says so
                pass

    def read(self, *args):
        self._go_on()
        return self._rfile.read(*args)

    def readinto(self, buf):
        self._go_on()
        return self._rfile.readinto(buf)

    def readline(self, *args):
        self._go_on()
        return self._rfile.readline(*args)

    def readlines(self, *args):
        self._go_on()
        return self._rfile.readlines(*args)

    def __iter__(self):
        self._go_on()
        return iter(self._rfile)

    def close(self):
        self._rfile.close()
