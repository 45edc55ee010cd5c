"""The audit log: one JSON object a line per /classify request (refused ones included), per
request refused for its token (401, on any path) and per request the HTTP layer refused
before a route saw it, for traceability.

Each line: time (UTC, ISO 8601), request_id, status, input_sha256, model_sha256, label,
confidence.  Never a file name, never pixels.  No file is written unless a path is given.
"""
import datetime
import io
import json
import logging
import os
import threading

from oncolens.appliance.errors import UsageError

log = logging.getLogger(__name__)

FIELDS = ("time", "request_id", "status", "input_sha256", "model_sha256", "label", "confidence")


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
              confidence=None):
        if self._fh is None:
            return None
        record = {"time": utc_now(), "request_id": request_id, "status": int(status),
                  "input_sha256": input_sha256, "model_sha256": model_sha256, "label": label,
                  "confidence": None if confidence is None else round(float(confidence), 6)}
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
