"""The audit log: one JSON object a line per /classify request (refused ones included), per
request refused for its token (401, on any path) and per request the HTTP layer refused
before a route saw it, for traceability.

Each line: time (UTC, ISO 8601), request_id, status, input_sha256, model_sha256, label,
confidence, and who asked for what: method, path (never the query string, which may carry
?token=; percent-encoded, at most MAX_PATH characters), client (the socket peer's address)
and forwarded_for (X-Forwarded-For, read only from a --trusted-proxy peer).  Never a file
name, never pixels, never a token or header value.  No file is written unless a path is given.
"""
import datetime
import io
import ipaddress
import json
import logging
import os
import threading
from urllib.parse import quote

from oncolens.appliance.errors import UsageError

log = logging.getLogger(__name__)

REQUEST_FIELDS = ("method", "path", "client", "forwarded_for")
FIELDS = ("time", "request_id", "status", "input_sha256", "model_sha256", "label",
          "confidence") + REQUEST_FIELDS
MAX_PATH = 256      # characters of a path kept (an unauthenticated client chooses it)
MAX_METHOD = 16
# kept as they are in a path; anything else (controls, spaces, quotes, non-ASCII) is %XX
PATH_SAFE = "/-._~!$&'()*+,;=:@"


def safe_text(text, limit, safe=PATH_SAFE):
    """``text`` (a WSGI string: the request's bytes as latin-1) percent-encoded to printable
    ASCII, cut to ``limit`` characters (ending in "..." when cut, never inside an %XX)."""
    if text is None:
        return None
    encoded = quote(text.encode("latin-1", "replace"), safe=safe)
    if len(encoded) <= limit:
        return encoded
    cut = encoded[:limit - 3]
    tail = cut.rfind("%")
    if tail >= len(cut) - 2:
        cut = cut[:tail]
    return cut + "..."


def parse_ip(text):
    """An ipaddress object (an IPv4-mapped IPv6 address as its IPv4 one), or None."""
    try:
        ip = ipaddress.ip_address(u"{}".format(text or "").strip().strip("[]"))
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


def trusted_proxy_ip(text):
    """--trusted-proxy's address as ``parse_ip`` gives it; UsageError naming the flag when
    ``text`` is no IP address."""
    ip = parse_ip(text)
    if ip is None:
        raise UsageError("--trusted-proxy {}: expected an IP address (the reverse proxy's, "
                         "e.g. 127.0.0.1)".format(text or '""'))
    return ip


def request_fields(environ, trusted_proxy=None):
    """The audit fields naming the request: method, path (PATH_INFO, never the query),
    client (the socket peer) and forwarded_for (the last X-Forwarded-For entry, the one the
    proxy appended, when the peer is ``trusted_proxy``, an ipaddress object, and it is an IP
    address; else None: from anyone else the header is whatever the client wrote)."""
    client = environ.get("REMOTE_ADDR") or None
    forwarded = None
    if trusted_proxy is not None and parse_ip(client) == trusted_proxy:
        last = parse_ip((environ.get("HTTP_X_FORWARDED_FOR") or "").split(",")[-1])
        forwarded = str(last) if last is not None else None
    return {"method": safe_text(environ.get("REQUEST_METHOD"), MAX_METHOD, safe=""),
            "path": safe_text(environ.get("PATH_INFO") or "/", MAX_PATH),
            "client": safe_text(client, 64, safe=":.%"), "forwarded_for": forwarded}


def utc_now():
    return datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditLog(object):
    def __init__(self, path=None):
        self.path = path
        self._lock = threading.Lock()
        self._fh = None
        if path:
            try:
                parent = os.path.dirname(os.path.abspath(path))
                if not os.path.isdir(parent):
                    os.makedirs(parent)
                self._fh = io.open(path, "a", encoding="utf-8")
            except (OSError, IOError) as exc:
                raise UsageError("--audit-log {}: cannot open it for appending ({})".format(
                    path, exc.strerror or exc))

    def write(self, request_id, status, input_sha256=None, model_sha256=None, label=None,
              confidence=None, request=None):
        """One line; ``request``: ``request_fields`` of the request (None for each of them
        when not given, e.g. a request the HTTP layer refused before it was parsed)."""
        if self._fh is None:
            return None
        record = {"time": utc_now(), "request_id": request_id, "status": int(status),
                  "input_sha256": input_sha256, "model_sha256": model_sha256, "label": label,
                  "confidence": None if confidence is None else round(float(confidence), 6)}
        for name in REQUEST_FIELDS:
            record[name] = (request or {}).get(name)
        line = json.dumps(record, sort_keys=True)
        with self._lock:
            self._fh.write(line + u"\n")
            self._fh.flush()
        return record

    def close(self):
        with self._lock:
            if self._fh is not None:
                fh, self._fh = self._fh, None
                try:
                    fh.close()
                except (OSError, IOError) as exc:  # lines that could not be written (full disk)
                    log.error("audit log %s: lines lost on closing (%s)", self.path,
                              exc.strerror or exc)
