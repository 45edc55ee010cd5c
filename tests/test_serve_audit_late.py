"""Audit lines written after the log was closed (a request answered after a stop's drain
ran out, or one whose write waited for the lock while the log closed) are kept: appended
alone, a warning logged once. A real file."""
import json
import logging
import threading


def _lines(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh.read().splitlines()]


class ClosesFirst(object):
    """The audit's lock, as a write meets it when the log's close() took it just before:
    the first time it is taken, the log is closed (re-entrantly) before the write goes on."""

    def __init__(self, audit):
        self.audit, self.real, self.armed = audit, threading.RLock(), True

    def __enter__(self):
        self.real.acquire()
        if self.armed:
            self.armed = False
            self.audit.close()
        return self

    def __exit__(self, *exc):
        self.real.release()


def test_a_write_that_meets_the_close_keeps_its_line_instead_of_raising(tmp_path):
    """It raised AttributeError ('NoneType' object has no attribute 'write'): /classify
    answered a classified image 500 internal, and the line was lost."""
    from oncolens.appliance.web.audit import AuditLog
    path = str(tmp_path / "audit.jsonl")
    audit = AuditLog(path)
    audit._lock = ClosesFirst(audit)
    record = audit.write("late-1", 200, "ab" * 32, "cd" * 32, "benign", 0.9)
    assert record is not None
    lines = _lines(path)
    assert [(l["request_id"], l["status"], l["label"]) for l in lines] == [
        ("late-1", 200, "benign")]


def test_lines_after_close_are_appended_with_one_warning(tmp_path, caplog):
    """They were dropped without a word."""
    from oncolens.appliance.web.audit import AuditLog
    path = str(tmp_path / "audit.jsonl")
    audit = AuditLog(path)
    audit.write("before", 200)
    audit.close()
    with caplog.at_level(logging.WARNING, logger="oncolens.appliance.web.audit"):
        audit.write("after-1", 500, "ab" * 32)
        audit.write("after-2", 200, "ab" * 32, None, "normal", 0.5)
        for n in range(7):   # refusals: no summary can come after the close, so all kept
            audit.write_limited("refused-{}".format(n), 404,
                                request={"client": "192.0.2.9", "path": "/x"})
    assert [l["request_id"] for l in _lines(path)] == (
        ["before", "after-1", "after-2"] + ["refused-{}".format(n) for n in range(7)])
    warned = [r for r in caplog.records if "after it was closed" in r.getMessage()]
    assert len(warned) == 1


def test_an_audit_log_without_a_file_still_writes_nothing_after_close():
    from oncolens.appliance.web.audit import AuditLog
    audit = AuditLog(None)
    audit.close()
    assert audit.write("x", 200) is None and audit.write_limited("y", 404) is None
