"""``oncolens classify ... --serve`` and ``http://@:PORT`` outputs: the live loop feeds the
web page's MJPEG stream while the same server answers POST /classify."""
import contextlib
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import cli_subprocess_cmd, run_cli, subprocess_env
from serve_util import read, request, sample_image


@contextlib.contextmanager
def _classify_child(*args):
    """A classify process of its own (stderr piped); the body ends it with SIGTERM, to
    which it answers 0; killed if the body failed first."""
    proc = subprocess.Popen(cli_subprocess_cmd("classify", *args), env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            universal_newlines=True)
    try:
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _wait_for_url(proc, deadline):
    """Read the child's log until it says where the stream is."""
    lines = []
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"live stream at (http://\S+/)stream\.mjpg", line)
        if m:
            return m.group(1)
    raise AssertionError("no 'live stream at' line; stderr:\n" + "".join(lines))


def _wait_for_urls(proc, count, deadline):
    """The first ``count`` stream URLs the child's log names, in order."""
    urls = []
    while len(urls) < count:
        urls.append(_wait_for_url(proc, deadline))
    return urls


def _open_files(pid, path):
    """How many of process ``pid``'s file descriptors are open on ``path`` (Linux /proc)."""
    fd_dir = "/proc/{}/fd".format(pid)
    found = 0
    for name in os.listdir(fd_dir):
        try:
            found += os.path.realpath(os.path.join(fd_dir, name)) == os.path.realpath(path)
        except OSError:     # closed meanwhile
            pass
    return found


def _audit(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh.read().splitlines()]


def test_classify_serve_streams_the_loop_and_answers_classify(tiny_bundle, tiny_data,
                                                             tmp_path):
    """The loop's frames are served while /classify answers, and is audited as serve audits
    it, with serve's --audit-log and --trusted-proxy (given twice here: X-Forwarded-For's
    right-most entry that no trusted proxy wrote is recorded)."""
    audit = str(tmp_path / "audit.jsonl")
    with _classify_child("--model", tiny_bundle, "--headless", "--input-loop=-1", "--serve",
                         ":0", "--audit-log", audit, "--trusted-proxy", "10.0.0.0/8",
                         "--trusted-proxy", "127.0.0.1", os.path.join(tiny_data, "test")) as proc:
        url = _wait_for_url(proc, time.time() + 120)
        frame = request(url, "/frame.jpg")
        for _ in range(100):                      # the first annotated frame may lag a little
            if frame.status == 200:
                break
            time.sleep(0.1)
            frame = request(url, "/frame.jpg")
        assert frame.status == 200 and frame.headers["content-type"] == "image/jpeg"
        reply = request(url, "/classify", "POST", read(sample_image(tiny_data)),
                        headers={"X-Forwarded-For": "198.51.100.3, 192.0.2.7, 10.0.0.9"})
        assert reply.status == 200
        body = json.loads(reply.body.decode("utf-8"))
        assert body["label"] in ("benign", "malignant", "normal")
    records = _audit(audit)
    # a /frame.jpg asked before the first frame is a 404 no_frame, audited as refusals are
    assert all((r["path"], r["status"]) == ("/frame.jpg", 404) for r in records[:-1])
    record = records[-1]
    assert (record["request_id"], record["label"]) == (body["request_id"], body["label"])
    assert (record["client"], record["forwarded_for"]) == ("127.0.0.1", "192.0.2.7")


def test_classify_refuses_a_bad_trusted_proxy_before_loading_the_model(tmp_path):
    code, _, err = run_cli(["classify", "--model", str(tmp_path / "missing"), "--headless",
                            "--serve", ":0", "--trusted-proxy", "127.0.0.1",
                            "--trusted-proxy", "proxy.lan", str(tmp_path)])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--trusted-proxy proxy.lan: expected an IP address or network" in err
    assert "not found" not in err


def test_http_output_opens_the_live_sink(tiny_bundle, tiny_data, tmp_path):
    """An http:// output's server takes classify's --audit-log and --trusted-proxy too."""
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.sinks import open_sink
    from oncolens.appliance.web.live import LiveSink
    audit = str(tmp_path / "audit.jsonl")
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        sink = open_sink("http://@:0", classifier=clf, codec=None, bitrate=4000000,
                         audit_log=audit, trusted_proxy=["127.0.0.1"])
        try:
            assert isinstance(sink, LiveSink)
            health = json.loads(request(sink.url, "/health").body.decode("utf-8"))
            assert health["live"] is True and health["model_loaded"] is True
            reply = request(sink.url, "/classify", "POST", read(sample_image(tiny_data)),
                            headers={"X-Forwarded-For": "192.0.2.7"})
            assert reply.status == 200
        finally:
            sink.close()
    (record,) = _audit(audit)
    assert (record["client"], record["forwarded_for"]) == ("127.0.0.1", "192.0.2.7")



def test_classify_serve_refuses_an_audit_log_it_cannot_open_before_the_model(tmp_path):
    """serve opened its --audit-log before the model loaded, classify --serve only when its
    server started, after it: a log that passes the path checks but cannot be opened (a
    link into a missing folder) was reported after the model load. Now both at once, in
    the same line (the model here does not exist: a later check would name it instead)."""
    import cv2
    import numpy as np
    image, model = str(tmp_path / "x.png"), str(tmp_path / "no-model")
    cv2.imwrite(image, np.zeros((8, 8, 3), np.uint8))
    link = str(tmp_path / "audit.jsonl")
    os.symlink(str(tmp_path / "missing" / "audit.jsonl"), link)
    for audit, why in ((link, ": cannot open it for appending (No such file or directory)"),
                       (str(tmp_path), " is a folder: expected a file name")):  # as before
        line = "error: --audit-log {}{}".format(audit, why)
        code, out, err = run_cli(["serve", "--model", model, "--port", 0, "--audit-log", audit])
        assert code == 2 and err.strip() == "oncolens serve: " + line, err
        for served in (["--serve", "127.0.0.1:0", image], [image, "http://127.0.0.1:0/"]):
            code, out, err = run_cli(["classify", "--model", model, "--headless",
                                      "--audit-log", audit] + served)
            assert code == 2 and err.strip() == "oncolens classify: " + line, err
    assert not os.path.exists(str(tmp_path / "missing"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
def test_serve_and_an_http_output_share_one_audit_writer(tiny_bundle, tiny_data, tmp_path):
    """--serve and an http:// output each opened --audit-log for appending: two writers,
    two locks, on one file, whose lines could interleave. They now write through one: the
    file is open once while both answer, and every request to either has its line."""
    audit = str(tmp_path / "audit.jsonl")
    image = read(sample_image(tiny_data))
    with _classify_child("--model", tiny_bundle, "--headless", "--input-loop=-1", "--serve",
                         ":0", "--audit-log", audit, os.path.join(tiny_data, "test"),
                         "http://@:0") as proc:
        urls = _wait_for_urls(proc, 2, time.time() + 120)
        assert urls[0] != urls[1]
        sent = []
        for n in range(6):
            rid = "shared-{}".format(n)
            reply = request(urls[n % 2], "/classify", "POST", image,
                            headers={"X-Request-Id": rid})
            assert reply.status == 200
            sent.append(rid)
        assert _open_files(proc.pid, audit) == 1
    assert sorted(record["request_id"] for record in _audit(audit)) == sent


def test_a_shared_audit_log_outlives_the_first_server_closed(classifier_tiny, tmp_path):
    """A ServeApp closes the audit log it opened, never one it was given: the loop closes
    its sinks one after the other, and the second server's lines must still be written."""
    from oncolens.appliance.web.audit import AuditLog
    from serve_util import running
    audit_path = str(tmp_path / "audit.jsonl")
    audit = AuditLog(audit_path)
    try:
        with running(classifier_tiny, audit_log=audit) as (second, _):
            with running(classifier_tiny, audit_log=audit):
                pass                                  # the first server closed
            reply = request(second, "/classify", "POST", b"", headers={"X-Request-Id": "late"})
            assert reply.status == 400
    finally:
        audit.close()
    assert [record["request_id"] for record in _audit(audit_path)] == ["late"]


@pytest.fixture
def classifier_tiny(tiny_bundle):
    from oncolens.appliance.classifier import Classifier
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        yield clf


def test_classify_refuses_max_connections_below_1_before_loading_the_model(tmp_path):
    code, _, err = run_cli(["classify", "--model", str(tmp_path / "missing"), "--headless",
                            "--serve", ":0", "--max-connections", "0", str(tmp_path)])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--max-connections 0: expected 1 or more" in err


def test_classify_serve_takes_max_connections(tiny_bundle, tiny_data):
    """classify's servers had serve's cap of 32 connections, live viewers included, and no
    flag to change it; its 503 named a --max-connections classify did not have."""
    import socket
    from serve_util import recv_all
    with _classify_child("--model", tiny_bundle, "--headless", "--input-loop=-1", "--serve",
                         ":0", "--max-connections", "1",
                         os.path.join(tiny_data, "test")) as proc:
        url = _wait_for_url(proc, time.time() + 120)
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
            held.sendall(b"GET /health HTTP/1.0\r\n")  # unfinished: its thread stays
            answer = b""
            for _ in range(50):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                    answer = recv_all(sock)
                if b" 503 " in answer.split(b"\r\n", 1)[0]:
                    break
                time.sleep(0.05)
        assert answer.startswith(b"HTTP/1.0 503 ") and b"too_many_connections" in answer
