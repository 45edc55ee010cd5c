"""Reading one request's body, in memory only.

A request body is read only when its declared length is within the limit (413 otherwise);
a multipart form or a raw body is accepted (``upload.py`` then checks the image). Nothing
is written anywhere.
"""
import re
import socket

from oncolens.appliance.web.limits import BodyTimeout
from oncolens.appliance.web.upload import UploadError

DRAIN_CAP = 64 << 20      # read (and drop) at most this much of an oversized body
CHUNK = 1 << 16
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


def read_body(environ, max_bytes):
    """The request body as bytes, read only when its Content-Length is within ``max_bytes``."""
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
        drain(stream, length)
        raise UploadError(413, "too_large", "upload of {} bytes is over the limit of {} bytes "
                          "(--max-upload-mb)".format(length, max_bytes))
    parts, got = [], 0
    try:
        while got < length:
            block = stream.read(min(CHUNK, length - got))
            if not block:
                break
            parts.append(block)
            got += len(block)
    except BodyTimeout as exc:   # it kept arriving, too slowly (limits.py)
        raise UploadError(408, "body_timeout", "the upload arrived too slowly: {}; {} of the "
                          "{} bytes announced were read".format(exc, got, length))
    except (socket.timeout, OSError):
        raise UploadError(408, "timeout", "the upload stopped arriving")
    if got < length:
        raise UploadError(400, "incomplete", "the body ended after {} of the {} bytes "
                          "announced".format(got, length))
    return b"".join(parts)


def _multipart_boundary(content_type):
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.I)  # parameter names: any case
    if not match:
        raise UploadError(400, "bad_multipart", "multipart body without a boundary")
    return match.group(1).encode("latin-1")


# a form field named exactly image or file (not image_id, files, profile, ...)
IMAGE_FIELD = re.compile(r'\bname=(?:"(?:image|file)"|(?:image|file)(?=[\s;]|$))', re.M)


def multipart_file(body, content_type):
    """The content of the first file part (or a part named image/file) of a form."""
    delimiter = b"--" + _multipart_boundary(content_type)
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            continue
        head = head.decode("latin-1").lower()
        if "filename=" in head or IMAGE_FIELD.search(head):
            return content[:-2] if content.endswith(b"\r\n") else content
    raise UploadError(400, "no_file", "the form has no file part (send the image as a field "
                      "named 'image' or as the raw body)")


def image_bytes(environ, body):
    """The image's bytes from a raw body or a multipart/form-data body."""
    content_type = environ.get("CONTENT_TYPE", "")
    if content_type.lower().startswith("multipart/form-data"):
        return multipart_file(body, content_type)
    return body
