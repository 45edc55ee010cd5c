"""The audit log: one JSON object a line per /classify request (refused ones included), per
request refused on any other path (401 for its token, 404, 405, 500) and per request the HTTP
layer refused before a route saw it, for traceability (those last and the 401, 404 and 405
limited per client: audit_limit.py).

Each line: time (UTC, ISO 8601), request_id, status, input_sha256, model_sha256, label,
confidence, and who asked for what: method, path (never the query string, which may carry
?token=; percent-encoded, at most MAX_PATH characters), client (the socket peer's address;
an IPv4 client of a dual-stack listener, ::ffff:a.b.c.d, by its IPv4 address) and
forwarded_for (the client X-Forwarded-For names, read only from a --trusted-proxy peer).
Never a file name, never pixels, never a token or header value.  No file is written unless
a path is given.
"""
import datetime
import io
import ipaddress
import json
import logging
import os
import threading
import time
from urllib.parse import quote

from oncolens.appliance.errors import UsageError
from oncolens.appliance.outpaths import check_output_file
from oncolens.appliance.web.audit_limit import RefusalLimiter

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


def plain_address(text):
    """A socket peer's address as the audit names it: an IPv4 client of a dual-stack (IPv6)
    listener, ``::ffff:a.b.c.d``, as a.b.c.d; anything else as it is."""
    ip = parse_ip(text)
    return str(ip) if ip is not None else (text or None)


def client_field(address):
    """The audit's ``client``: ``plain_address``, percent-encoded and capped."""
    return safe_text(plain_address(address), 64, safe=":.%")


def _proxy_network(text):
    """One --trusted-proxy value as an ipaddress network (an address: a network of one; an
    IPv4-mapped one as IPv4), or None when it is neither."""
    text = u"{}".format(text or "").strip()
    ip = parse_ip(text)
    if ip is not None:
        return ipaddress.ip_network(u"{}".format(ip))
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        return None
    mapped = getattr(net.network_address, "ipv4_mapped", None)
    if mapped is not None and net.prefixlen >= 96:
        return ipaddress.ip_network(u"{}/{}".format(mapped, net.prefixlen - 96))
    return net


def _loose_network(text):
    try:
        return ipaddress.ip_network(u"{}".format(text or "").strip(), strict=False)
    except ValueError:
        return None


def trusted_proxies(values):
    """--trusted-proxy's values (one string or several; None: none) as a tuple of ipaddress
    networks; UsageError naming the flag for a value that is no IP address or network."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    networks = []
    for text in values:
        net = _proxy_network(text)
        loose = _loose_network(text) if net is None else None
        if loose is not None:
            raise UsageError("--trusted-proxy {}: expected a network with its host bits zero, "
                             "e.g. {}".format(text, loose))
        if net is None:
            raise UsageError("--trusted-proxy {}: expected an IP address or network (a reverse "
                             "proxy's, e.g. 127.0.0.1 or 10.0.0.0/8; give the flag once per "
                             "proxy)".format(text or '""'))
        networks.append(net)
    return tuple(networks)


def add_audit_flags(parser):
    """--audit-log and --trusted-proxy, as ``oncolens serve`` and ``oncolens classify``
    (for its --serve and http:// outputs) take them; ``check_audit_flags`` checks them."""
    parser.add_argument("--audit-log", metavar="FILE",
                        help="append one JSON line per /classify request (and per request "
                             "refused on any path: 401, 404, 405, or by the HTTP layer; those "
                             "lines are 5 a minute per client and status, the rest summed "
                             "up in one) to FILE; each names the method, path and client "
                             "address")
    parser.add_argument("--trusted-proxy", metavar="ADDR", action="append",
                        help="a reverse proxy's IP address or network (10.0.0.0/8); may be "
                             "given more than once: on requests from one, the audit log also "
                             "records the client X-Forwarded-For names, its right-most entry "
                             "that is not a trusted proxy (off: the header is never trusted)")


def check_audit_flags(args, try_open=False):
    """--audit-log (a file that can be appended to) and --trusted-proxy (``trusted_proxies``):
    UsageError naming the flag, before anything is loaded. ``try_open``: the log is also
    opened for appending (and closed), as serve opens it before its model loads, so that a
    path no check above tells (a link into a missing folder) fails as early, in serve's line."""
    if args.audit_log:
        check_output_file(args.audit_log, "--audit-log", overwrite=True)
        if try_open:
            open_audit_file(args.audit_log).close()
    trusted_proxies(args.trusted_proxy)


def open_audit_file(path):
    """``path`` opened for appending, its folder made if need be; UsageError naming
    --audit-log when it cannot be."""
    try:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            os.makedirs(parent)
        return io.open(path, "a", encoding="utf-8")
    except (OSError, IOError) as exc:
        raise UsageError("--audit-log {}: cannot open it for appending ({})".format(
            path, exc.strerror or exc))


def address_forms(ip):
    """``ip`` (``parse_ip``'s answer) and, for an IPv4 address, its IPv4-mapped IPv6 form
    (::ffff:a.b.c.d): the address a dual-stack listener saw it as."""
    if ip is None:
        return ()
    if ip.version == 4:
        return (ip, ipaddress.IPv6Address(u"::ffff:{}".format(ip)))
    return (ip,)


def is_trusted(ip, proxies):
    """Whether ``ip`` (``parse_ip``'s answer) lies in one of ``proxies``, in either form
    (``address_forms``): an IPv4 client lies in ::/0 and in ::ffff:0:0/96 too, as it does
    on a dual-stack listener; an IPv4-mapped one lies in the IPv4 networks (``parse_ip``)."""
    return any(form in net for form in address_forms(ip) for net in proxies)


def forwarded_ip(entry):
    """One X-Forwarded-For entry as ``parse_ip`` reads it, a port and brackets stripped, as
    some proxies send them (``1.2.3.4:5678``, ``[2001:db8::1]:443``, ``[2001:db8::1]``); a
    bare IPv6 address (``2001:db8::1``) is an address, never host:port. None when no IP."""
    host, port = entry, None
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    elif entry.count(":") == 1:  # an IPv6 address has two colons at least
        host, port = entry.split(":")
    if port is not None and not (port.isdigit() and len(port) <= 5 and int(port) <= 65535):
        return None
    return parse_ip(host)


def forwarded_client(header, proxies):
    """The client X-Forwarded-For names behind ``proxies``: its right-most entry that is not
    a trusted proxy (each proxy appends its own peer; the entries left of the first one no
    trusted proxy appended were written by the client, and may be forged), the left-most one
    when every entry is a trusted proxy; None when that entry is no IP address (with or
    without a port: ``forwarded_ip``) or there is no header."""
    entries = [part.strip() for part in (header or "").split(",")]
    if entries == [""]:
        return None
    for entry in reversed(entries):
        ip = forwarded_ip(entry)
        if ip is None:
            return None
        if not is_trusted(ip, proxies):
            return str(ip)
    return str(ip)


def request_fields(environ, proxies=()):
    """The audit fields naming the request: method, path (PATH_INFO, never the query),
    client (the socket peer, ``plain_address``) and forwarded_for (``forwarded_client`` of
    X-Forwarded-For when the peer is one of ``proxies``, ``trusted_proxies``'s networks;
    else None: from anyone else the header is whatever the client wrote)."""
    client = environ.get("REMOTE_ADDR")
    forwarded = None
    if proxies and is_trusted(parse_ip(client), proxies):
        forwarded = forwarded_client(environ.get("HTTP_X_FORWARDED_FOR"), proxies)
    return {"method": safe_text(environ.get("REQUEST_METHOD"), MAX_METHOD, safe=""),
            "path": safe_text(environ.get("PATH_INFO") or "/", MAX_PATH),
            "client": client_field(client), "forwarded_for": forwarded}


def utc_now():
    return datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditLog(object):
    def __init__(self, path=None):
        self.path = path
        self._lock = threading.Lock()
        self._fh = open_audit_file(path) if path else None
        self.limiter = RefusalLimiter()   # refusals a client causes at will: write_limited
        self._closed = False              # close() ran: a later line is appended alone
        self._late_said = False           # ... which is logged once

    @staticmethod
    def _record(request_id, status, input_sha256, model_sha256, label, confidence, request):
        record = {"time": utc_now(), "request_id": request_id, "status": int(status),
                  "input_sha256": input_sha256, "model_sha256": model_sha256, "label": label,
                  "confidence": None if confidence is None else round(float(confidence), 6)}
        for name in REQUEST_FIELDS:
            record[name] = (request or {}).get(name)
        return record

    def _emit(self, record):
        """One line (under the lock)."""
        line = json.dumps(record, sort_keys=True) + u"\n"
        if self._fh is None:
            self._emit_late(line)
            return
        self._fh.write(line)
        self._fh.flush()

    def _emit_late(self, line):
        """A line written after ``close`` (a request answered after a stop's drain ran out,
        or one whose write waited for the lock while the log closed): appended to the file
        opened for it alone, so it is kept; a warning once. Its write raised AttributeError
        (the request answered 500 internal, or a traceback in the server's log) or, checked
        before the lock, the line was dropped without a word."""
        if not self._late_said:
            self._late_said = True
            log.warning("audit log %s: written after it was closed (a request finished "
                        "late); its lines are appended one at a time", self.path)
        try:
            with open_audit_file(self.path) as fh:
                fh.write(line)
        except (UsageError, OSError, IOError, ValueError) as exc:
            log.error("audit log %s: a line written after closing is lost (%s)", self.path,
                      exc)

    def write(self, request_id, status, input_sha256=None, model_sha256=None, label=None,
              confidence=None, request=None):
        """One line; ``request``: ``request_fields`` of the request (None for each of them
        when not given, e.g. a request the HTTP layer refused before it was parsed)."""
        if self.path is None:
            return None
        record = self._record(request_id, status, input_sha256, model_sha256, label,
                              confidence, request)
        with self._lock:
            self._emit(record)
        return record

    def write_limited(self, request_id, status, model_sha256=None, request=None):
        """The line of a refusal by the HTTP layer (or a 401, 404, 405 on a route), unless
        its client (``client`` and ``forwarded_for``) had ``limiter.lines`` of that status
        written within the window already: then it is counted, and a summary line
        (``suppressed``: the count, ``since``: the window's start) written when the window
        ends (``tick``) or the log closes; after ``close``, no summary would come: every
        one is written. The record, or None."""
        if self.path is None:
            return None
        record = self._record(request_id, status, None, model_sha256, None, None, request)
        who = (record["client"], record["forwarded_for"])
        with self._lock:
            written, due = True, ()
            if not self._closed:
                written, due = self.limiter.admit(who, record["status"], time.monotonic(),
                                                  record["time"], model_sha256)
            self._summaries(due)
            if written:
                self._emit(record)
        return record if written else None

    def _summaries(self, due):
        for who, status, window in due:
            client, forwarded_for = who or (None, None)   # None: the clients beyond the cap
            record = self._record(None, status, None, window.model_sha256, None, None,
                                  {"client": client, "forwarded_for": forwarded_for})
            record.update(suppressed=window.suppressed, since=window.since)
            self._emit(record)

    def tick(self):
        """The summaries of the windows that have ended (the server's loop calls it); a
        failure to write them is logged, never raised."""
        with self._lock:
            if self._fh is None:
                return
            try:
                self._summaries(self.limiter.sweep(time.monotonic()))
            except (OSError, IOError, ValueError) as exc:
                log.error("audit log %s: a summary line lost (%s)", self.path,
                          getattr(exc, "strerror", None) or exc)

    def close(self):
        with self._lock:
            if self._fh is not None:
                fh = self._fh
                try:
                    self._summaries(self.limiter.flush())
                except (OSError, IOError, ValueError) as exc:
                    log.error("audit log %s: summary lines lost on closing (%s)", self.path,
                              getattr(exc, "strerror", None) or exc)
                self._fh, self._closed = None, True
                try:
                    fh.close()
                except (OSError, IOError) as exc:  # lines that could not be written (full disk)
                    log.error("audit log %s: lines lost on closing (%s)", self.path,
                              exc.strerror or exc)
