"""Helpers for the serve tests: a real server on a free loopback port, real HTTP."""
import collections
import contextlib
import http.client
import json
import os
import socket
import threading
import urllib.parse

Reply = collections.namedtuple("Reply", ["status", "headers", "body"])
# README's wording, which the page shows at its top
RESEARCH_NOTICE = ("Research use only. OncoLens is not a medical device and is not cleared or "
                   "approved for diagnosis. Its outputs must not be used to make clinical "
                   "decisions.")


def sample_image(tiny_data, cls="malignant", n=0):
    return os.path.join(tiny_data, "test", cls, "{}_test_{:04d}.png".format(cls, n))


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


@contextlib.contextmanager
def running(classifier=None, max_connections=None, **options):
    """A ServeApp on 127.0.0.1:<free port> in a background thread: yields (url, app)."""
    from oncolens.appliance.web.app import ServeApp
    from oncolens.appliance.web.server import ServerThread
    app = ServeApp(classifier, **options)
    extra = {"max_connections": max_connections} if max_connections else {}
    server = ServerThread(app.wsgi, "127.0.0.1", 0, **extra).start()
    try:
        yield server.url, app
    finally:
        server.stop()
        app.close()


def request(url, path, method="GET", body=None, headers=None, timeout=60):
    """One HTTP request on a new connection; any status comes back (never raises on 4xx)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), data)
    finally:
        conn.close()


def recv_all(sock):
    """Every byte ``sock`` receives until the server closes it."""
    answer = b""
    for block in iter(lambda: sock.recv(65536), b""):
        answer += block
    return answer


def raw_http(url, payload, timeout=10):
    """Send bytes as they are; (status, headers, body) of the answer."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(payload)
        answer = recv_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in
                   (line.partition(":") for line in lines[1:]))
    return int(lines[0].split()[1]), headers, body


def multipart(field, filename, data, content_type="image/png"):
    """(body, headers) of a multipart/form-data upload with one file."""
    boundary = "oncolens-test-boundary-7d1f"
    head = ('--{b}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
            '--{b}\r\nContent-Disposition: form-data; name="{f}"; filename="{n}"\r\n'
            'Content-Type: {t}\r\n\r\n').format(b=boundary, f=field, n=filename, t=content_type)
    body = head.encode("utf-8") + data + "\r\n--{}--\r\n".format(boundary).encode("ascii")
    return body, {"Content-Type": "multipart/form-data; boundary=" + boundary}


def metric(text, name, **labels):
    """The value of one sample in Prometheus text, or None."""
    want = name
    if labels:
        want += "{" + ",".join('{}="{}"'.format(k, v) for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


def hold_inference(clf, gate, ran=None):
    """Make ``clf`` wait for ``gate`` before each inference call (batch sizes into ``ran``)."""
    real = clf.infer_images

    def held(images):
        if ran is not None:
            ran.append(len(images))
        gate.wait(30)
        return real(images)

    clf.infer_images = held


def wait_started(job, tries=50):
    """Wait (up to a second) until the queue's worker holds ``job``."""
    for _ in range(tries):
        if job.started:
            return True
        threading.Event().wait(0.02)
    return False


def audit_lines(path):
    """The audit log's records, in order."""
    with open(path) as fh:
        return [json.loads(line) for line in fh.read().splitlines()]
