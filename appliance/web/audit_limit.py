"""How many audit lines refusals a client can cause at will may write: each connection the
HTTP layer refused (503 over --max-connections, 408 header_timeout, 400, 414, 431, 501, 505)
wrote a line, and so did each request a route refused for its token (401) or its path or
method (404, 405: ``ROUTE_STATUSES``), so a flood of them grew the audit log without bound.

Per client (the socket peer, and the client a trusted proxy names: a client behind the
proxy does not silence the others) and status, the first ``lines`` refusals of a ``window``
(60 s from the first) are written as before; the rest are counted, and one summary line
says how many when the window ends (written by the server's loop, or by the next refusal)
or when the log is closed: a flood of 401s still leaves its count per client. /metrics
counts every refusal regardless; /classify's lines (once past the token check) and 500s
are never limited.
"""

# class attributes of RefusalLimiter, so tests shorten them
LINES = 5            # refusals of one client and status written in a window
WINDOW = 60.0        # seconds of a window, from its first refusal
MAX_CLIENTS = 1024   # (client, status) pairs followed at once; more share one pair, client null
ROUTE_STATUSES = (401, 404, 405)   # a route's refusals that are limited (the HTTP layer's all are)


class _Window(object):
    __slots__ = ("start", "since", "written", "suppressed", "model_sha256")

    def __init__(self, start, since, model_sha256):
        self.start, self.since, self.model_sha256 = start, since, model_sha256
        self.written, self.suppressed = 0, 0


class RefusalLimiter(object):
    """The decisions alone (which refusal is written, which summaries are due); not
    thread-safe: AuditLog calls it under its lock, and writes what it says."""
    lines, window, max_clients = LINES, WINDOW, MAX_CLIENTS

    def __init__(self):
        self._windows = {}
        self._next_sweep = 0.0

    def admit(self, client, status, now, utc, model_sha256):
        """(whether this refusal's line is written, summaries due first: (client, status,
        window) each). ``client``: any hashable naming the client, None beyond
        ``max_clients``; ``now``: time.monotonic() (a wall clock set back held a window
        open as long); ``utc``: the wall-clock time as the audit writes it."""
        due = []
        key = (client, status)
        found = self._windows.get(key)
        if found is None and len(self._windows) >= self.max_clients:
            due.extend(self.sweep(now, force=True))
            if len(self._windows) >= self.max_clients:   # counted with the others beyond
                key = (None, status)
                found = self._windows.get(key)
        if found is not None and now >= found.start + self.window:
            ended = self._windows.pop(key)
            if ended.suppressed:
                due.append(key + (ended,))
            found = None
        if found is None:
            found = self._windows[key] = _Window(now, utc, model_sha256)
        if found.written < self.lines:
            found.written += 1
            return True, due
        found.suppressed += 1
        return False, due

    def sweep(self, now, force=False):
        """The windows that have ended, forgotten; those with refusals left unwritten are
        returned, to be summed up. At most once a second unless ``force``."""
        if not force and now < self._next_sweep:
            return []
        self._next_sweep = now + 1.0
        ended = [key for key, found in self._windows.items()
                 if now >= found.start + self.window]
        ended = [key + (self._windows.pop(key),) for key in ended]
        return [item for item in ended if item[2].suppressed]

    def flush(self):
        """Every window with refusals left unwritten (the log closes), forgotten."""
        windows, self._windows = self._windows, {}
        return [key + (found,) for key, found in windows.items() if found.suppressed]
