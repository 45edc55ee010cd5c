"""``oncolens serve`` as a real process, and the benchmark script against it."""
import json

from conftest import run_cli
from serve_util import read, request, running, sample_image


def test_serve_process_answers_and_stops_on_sigterm(tiny_bundle, tiny_data, tmp_path):
    from oncolens.appliance.web.bench import start_server, stop_server
    audit = str(tmp_path / "logs" / "audit.jsonl")
    proc, url = start_server(tiny_bundle, queue=4, extra=["--audit-log", audit,
                                                          "--trusted-proxy", "10.0.0.0/8",
                                                          "--trusted-proxy", "127.0.0.1"])
    try:
        assert url.startswith("http://127.0.0.1:")
        health = json.loads(request(url, "/health").body.decode("utf-8"))
        assert health["model_loaded"] and health["queue"]["capacity"] == 4
        reply = request(url, "/classify", "POST", read(sample_image(tiny_data)),
                        headers={"X-Forwarded-For": "198.51.100.3, 192.0.2.7, 10.0.0.9"})
        assert reply.status == 200
    finally:
        code = stop_server(proc)
    assert code == 0
    record = json.loads(open(audit).read().splitlines()[-1])
    assert record["request_id"] == reply.headers["x-request-id"]
    assert (record["method"], record["path"], record["client"]) == ("POST", "/classify",
                                                                    "127.0.0.1")
    # the right-most entry no trusted proxy wrote (10.0.0.9 is the inner proxy's peer)
    assert record["forwarded_for"] == "192.0.2.7"


def test_serve_cli_flag_errors(tiny_bundle, tmp_path):
    code, _, err = run_cli(["serve"])
    assert code == 2 and "--model" in err
    code, _, err = run_cli(["serve", "--model", tiny_bundle, "--queue", 0])
    assert code == 2 and "--queue" in err
    code, _, err = run_cli(["serve", "--model", str(tmp_path / "nothing")])
    assert code != 0 and "model not found" in err


def test_bench_prints_figures(tiny_bundle, capsys):
    from oncolens.appliance.web import bench
    from oncolens.appliance.classifier import Classifier
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        with running(clf) as (url, _):
            code = bench.main(["--url", url, "--clients", "4", "--requests", "12",
                               "--warmup", "2", "--size", "64", "--json"])
            assert code == 0
            figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            assert bench.main(["--url", url, "--clients", "2", "--requests", "2",
                               "--warmup", "0", "--size", "64"]) == 0
            line = capsys.readouterr().out.strip().splitlines()[-1]
    assert figures["requests"] == 12 and figures["statuses"] == {"200": 12}
    assert figures["requests_per_s"] > 0 and figures["p99_ms"] >= figures["p50_ms"] > 0
    # the machine named is where the clients ran, not the server measured through --url
    assert figures["server"] == url
    assert line.endswith("; server {}, clients on {}, Python {}".format(
        url, figures["machine"], figures["python"])), line


def test_serve_cli_refuses_bad_values_before_loading_the_model(tmp_path):
    """One line naming the flag, exit 2, and the (missing) model is never looked at."""
    missing = str(tmp_path / "no-model")
    folder = tmp_path / "afolder"
    folder.mkdir()
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    cases = [
        (["--max-upload-mb", "nan"], "--max-upload-mb"),
        (["--max-upload-mb", "inf"], "--max-upload-mb"),
        (["--timeout", "inf"], "--timeout"),
        (["--timeout", "nan"], "--timeout"),
        (["--timeout", "1e12"], "--timeout"),
        (["--max-pixels", "1" + "0" * 400], "--max-pixels"),
        # it spoke of a --threshold that serve does not have
        (["--topK", "-1"], "--topK: expected 0 (every class) or more classes, got -1"),
        (["--decode-slots", "0"], "--decode-slots"),
        (["--max-connections", "0"], "--max-connections"),
        (["--topK", "-3"], "--topK"),
        (["--audit-log", str(folder)], "--audit-log"),
        (["--audit-log", str(blocker / "a.jsonl")], "--audit-log"),
        (["--audit-log", "/proc/nope/a.jsonl"], "--audit-log"),
        (["--save-uploads", str(blocker)], "--save-uploads"),
        (["--save-uploads", "/proc/nope/x"], "--save-uploads"),
        (["--trusted-proxy", "proxy.lan"], "--trusted-proxy"),
        (["--trusted-proxy", ""], "--trusted-proxy"),
    ]
    for extra, flag in cases:
        code, out, err = run_cli(["serve", "--model", missing, "--port", 0] + extra)
        assert code == 2, (extra, err)
        assert err.startswith("oncolens serve: error: " + flag), (extra, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "not found" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "afolder"]


def test_bench_refuses_bad_values_in_one_line(tmp_path, capsys, monkeypatch):
    """A missing --image, a --url that is not http://HOST:PORT, --size 0: one line naming the
    flag, exit 2, before any request (they were tracebacks). An empty --token fell back to
    $ONCOLENS_TOKEN in silence; a GIF --image was sent to be refused by every request."""
    from oncolens.appliance.web import bench
    monkeypatch.setenv("ONCOLENS_TOKEN", "from-the-environment")
    gif = tmp_path / "anim.gif"
    gif.write_bytes(b"GIF89a")
    cases = [
        (["--url", "http://127.0.0.1:9/", "--image", str(tmp_path / "none.png")], "--image"),
        (["--url", "http://127.0.0.1:9/", "--image", str(tmp_path)], "--image"),
        (["--url", "http://127.0.0.1:9/", "--image", str(gif)], "--image"),
        (["--url", "http://127.0.0.1:9/", "--token", ""], "--token: expected a token"),
        (["--url", "http://127.0.0.1:9/", "--token", " "], "--token: expected a token"),
        (["--url", "127.0.0.1:8080"], "--url"),
        (["--url", "garbage"], "--url"),
        (["--url", "http://127.0.0.1:99999/"], "--url"),
        (["--url", "http://127.0.0.1:9/", "--size", "0"], "--size"),
    ]
    for argv, flag in cases:
        code = bench.main(argv + ["--requests", "1", "--warmup", "0"])
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.startswith("oncolens serve bench: error: " + flag), (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_an_ipv6_host_in_brackets_gives_a_url_with_one_pair():
    """--host [::1] printed http://[[::1]]:PORT/ (the brackets added twice)."""
    import socket
    import pytest
    from oncolens.appliance.web.server import ServerThread
    try:
        server = ServerThread(lambda environ, start: [], "[::1]", 0)
    except (OSError, socket.error) as exc:
        pytest.skip("no IPv6 loopback here ({})".format(exc))
    try:
        assert server.url == "http://[::1]:{}/".format(server.port)
    finally:
        server.stop()


def test_bench_keeps_a_server_that_took_long_to_start(tiny_bundle, monkeypatch):
    """start_server read the clock after the 'listening on' line came and killed a server
    slower than its timeout (a Nano's first start builds its engine for minutes)."""
    from oncolens.appliance.web import bench
    import time as real_time

    class SlowClock(object):
        """Each reading is 10 minutes after the last one."""
        def __init__(self):
            self.now = real_time.time()

        def time(self):
            self.now += 600.0
            return self.now

    monkeypatch.setattr(bench, "time", SlowClock())
    proc, url = bench.start_server(tiny_bundle, queue=2)
    try:
        assert proc.poll() is None and url.startswith("http://127.0.0.1:")
    finally:
        assert bench.stop_server(proc) == 0


def test_sigterm_is_handled_once_the_server_says_it_listens(tiny_bundle, monkeypatch):
    """The 'listening on' line (and READY=1) came before the SIGTERM handler was set: a
    stop sent as soon as the line was read killed the server (exit -15, not 0)."""
    import contextlib
    import io
    import signal
    from oncolens.appliance.web.server import ServerThread
    from oncolens.cli import main
    seen = []

    class Out(io.StringIO):
        def write(self, text):
            if "listening on" in text:
                seen.append(signal.getsignal(signal.SIGTERM))
            return io.StringIO.write(self, text)

    monkeypatch.setattr(ServerThread, "serve_forever", lambda self: None)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.redirect_stdout(Out()):
            code = main(["serve", "--model", tiny_bundle, "--port", "0"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 0 and len(seen) == 1
    assert callable(seen[0]) and seen[0] is not previous


def test_bench_passes_its_token_to_the_server_it_starts(tiny_bundle, capsys, monkeypatch):
    """--model with --token started a server without one: the bench measured the
    unauthenticated path. The server started now requires the token (given in its
    environment, not on its command line, which ps shows): a request without it gets 401
    while every bench request succeeds."""
    from oncolens.appliance.web import bench
    monkeypatch.delenv("ONCOLENS_TOKEN", raising=False)
    real, seen = bench.start_server, []

    def watched(*args, **kwargs):
        proc, url = real(*args, **kwargs)
        seen.append((proc.args, request(url, "/health").status,
                     request(url, "/health", headers={
                         "Authorization": "Bearer bench-secret"}).status))
        return proc, url

    monkeypatch.setattr(bench, "start_server", watched)
    code = bench.main(["--model", tiny_bundle, "--token", "bench-secret", "--clients", "2",
                       "--requests", "4", "--warmup", "1", "--size", "64", "--json"])
    assert code == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["statuses"] == {"200": 4} and figures["server_exit"] == 0
    (args, anonymous, authorised), = seen
    assert (anonymous, authorised) == (401, 200)
    assert "bench-secret" not in " ".join(args)
