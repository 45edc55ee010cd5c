"""The audit lines of what the HTTP layer refuses are limited per client: a few a window,
the rest summed up in one line; /classify's lines never are, and /metrics counts all."""
import time

from serve_util import audit_lines, metric, raw_http, request, running

GARBAGE = b"GARBAGE /classify\r\n\r\n"   # refused 400 by the HTTP layer


def test_a_flood_of_refusals_writes_a_few_lines_and_a_summary_at_shutdown(ort_classifier,
                                                                           tmp_path):
    """Each connection the HTTP layer refused wrote an audit line, so a flood grew the log
    without bound. Now the first 5 of a client's refusals with one status in a minute are
    written, the rest counted into one summary line (written here as the log closes);
    /metrics still counts every one, and every /classify request is still written."""
    audit = str(tmp_path / "audit.jsonl")
    with running(ort_classifier, audit_log=audit) as (url, app):
        refused = [raw_http(url, GARBAGE)[1]["x-request-id"] for _ in range(20)]
        for _ in range(8):   # failed uploads: never limited
            assert raw_http(url, b"POST /classify HTTP/1.0\r\nContent-Length: 3\r\n\r\n"
                                 b"abc")[0] == 415
        text = request(url, "/metrics").body.decode("utf-8")
        model_sha256 = app.model_sha256
    assert metric(text, "oncolens_http_requests_total", path="other", code="400") == 20
    lines = audit_lines(audit)
    written = [r for r in lines if r["path"] is None and "suppressed" not in r]
    assert [r["request_id"] for r in written] == refused[:5]
    summary = [r for r in lines if "suppressed" in r]
    assert len(summary) == 1, lines
    assert (summary[0]["suppressed"], summary[0]["status"], summary[0]["client"],
            summary[0]["request_id"], summary[0]["method"], summary[0]["model_sha256"]) == (
        15, 400, "127.0.0.1", None, None, model_sha256)
    assert summary[0]["since"] == written[0]["time"]
    assert len([r for r in lines if r["path"] == "/classify" and r["status"] == 415]) == 8


def test_the_summary_is_written_when_the_window_ends(ort_classifier, tmp_path, monkeypatch):
    """While the server runs, the count of a window's unwritten refusals is written once the
    window ends (by the server's loop, with no further request); the next refusal starts a
    new window and is written."""
    from oncolens.appliance.web.audit_limit import RefusalLimiter
    monkeypatch.setattr(RefusalLimiter, "window", 0.5)
    monkeypatch.setattr(RefusalLimiter, "lines", 2)
    audit = str(tmp_path / "audit.jsonl")
    with running(ort_classifier, audit_log=audit) as (url, app):
        for _ in range(6):
            raw_http(url, GARBAGE)
        for _ in range(200):
            summary = [r for r in audit_lines(audit) if "suppressed" in r]
            if summary:
                break
            time.sleep(0.05)
        assert [r["suppressed"] for r in summary] == [4]
        rid = raw_http(url, GARBAGE)[1]["x-request-id"]
        assert audit_lines(audit)[-1]["request_id"] == rid
    assert len(audit_lines(audit)) == 2 + 1 + 1   # nothing left to sum up at the close


def test_the_limiter_follows_so_many_clients_then_counts_the_rest_together():
    """A flood from many addresses cannot grow the limiter's table without bound: beyond
    ``max_clients`` pairs, refusals share one pair whose client is null."""
    from oncolens.appliance.web.audit_limit import RefusalLimiter
    limiter = RefusalLimiter()
    limiter.max_clients, limiter.lines = 3, 1
    verdicts = [limiter.admit("10.0.0.{}".format(n), 503, 100.0, "t", None)[0]
                for n in range(10)]
    assert verdicts == [True, True, True, True] + [False] * 6
    ended = limiter.flush()
    assert [(client, status, window.suppressed) for client, status, window in ended] == [
        (None, 503, 6)]


def test_a_wall_clock_set_back_does_not_hold_the_summary_back(tmp_path, monkeypatch):
    """The windows were on the wall clock: set back an hour (an NTP step) after a client's
    first refusals, its window lasted an hour more, every refusal of it unwritten and its
    count held back all that while. They are on the monotonic clock now."""
    import time as real_time
    from oncolens.appliance.web import audit as audit_module
    from oncolens.appliance.web.audit import AuditLog

    class Clock(object):
        wall, ticks = 1000000.0, 0.0

        def time(self):
            return self.wall

        def monotonic(self):
            return self.ticks

        def __getattr__(self, name):
            return getattr(real_time, name)
    clock = Clock()
    monkeypatch.setattr(audit_module, "time", clock)
    path = str(tmp_path / "audit.jsonl")
    log = AuditLog(path)
    try:
        for _ in range(7):
            log.write_limited("r", 503, request={"client": "192.0.2.9"})
        clock.wall -= 3600.0     # set back an hour
        clock.ticks += 61.0      # while a minute passes
        log.tick()
        assert [r.get("suppressed") for r in audit_lines(path)] == [None] * 5 + [2]
    finally:
        log.close()


def test_a_flood_of_401_404_405_writes_a_few_lines_and_a_count_per_client(ort_classifier,
                                                                           tmp_path):
    """A request refused by a route for its token (401), its path (404) or its method (405)
    wrote a line each, so a client guessing tokens or scanning paths grew the log without
    bound. Now they are limited as the HTTP layer's refusals are: 5 per client and status
    in a minute written in full (method and path), the rest counted into one summary line
    per client and status, which keeps how many 401s that client had."""
    audit = str(tmp_path / "audit.jsonl")
    auth = {"Authorization": "Bearer s3cret"}
    with running(ort_classifier, token="s3cret", audit_log=audit) as (url, app):
        for _ in range(8):
            assert request(url, "/health").status == 401
        for n in range(7):
            assert request(url, "/nope{}".format(n), headers=auth).status == 404
        for _ in range(6):
            assert request(url, "/classify", headers=auth).status == 405
        text = request(url, "/metrics", headers=auth).body.decode("utf-8")
    assert metric(text, "oncolens_http_requests_total", path="/health", code="401") == 8
    lines = audit_lines(audit)
    written = [(r["status"], r["method"], r["path"]) for r in lines if "suppressed" not in r]
    assert written == ([(401, "GET", "/health")] * 5 + [
        (404, "GET", "/nope{}".format(n)) for n in range(5)] + [(405, "GET", "/classify")] * 5)
    summaries = sorted((r["status"], r["suppressed"], r["client"], r["path"])
                       for r in lines if "suppressed" in r)
    assert summaries == [(401, 3, "127.0.0.1", None), (404, 2, "127.0.0.1", None),
                         (405, 1, "127.0.0.1", None)]


def test_clients_behind_a_trusted_proxy_are_limited_each_on_their_own(ort_classifier, tmp_path):
    """Behind a --trusted-proxy every request comes from the proxy's address: the client it
    names (forwarded_for) is part of the limiter's key, so one client's flood of 401s does
    not silence another's, and its summary line names that client."""
    audit = str(tmp_path / "audit.jsonl")
    with running(ort_classifier, token="s3cret", audit_log=audit,
                 trusted_proxy="127.0.0.1") as (url, app):
        for _ in range(7):
            request(url, "/", headers={"X-Forwarded-For": "192.0.2.7"})
        for _ in range(2):
            request(url, "/", headers={"X-Forwarded-For": "192.0.2.8"})
    lines = audit_lines(audit)
    written = [r["forwarded_for"] for r in lines if "suppressed" not in r]
    assert written == ["192.0.2.7"] * 5 + ["192.0.2.8"] * 2
    summaries = [(r["status"], r["suppressed"], r["client"], r["forwarded_for"])
                 for r in lines if "suppressed" in r]
    assert summaries == [(401, 2, "127.0.0.1", "192.0.2.7")]
