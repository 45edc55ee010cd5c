"""Requests/s and latency percentiles of ``oncolens serve`` under concurrent clients.

    python -m oncolens.appliance.web.bench --model models/busi-resnet18 --clients 8
    python -m oncolens.appliance.web.bench --url http://127.0.0.1:8080/ --token T

Without ``--url`` it starts ``oncolens serve --port 0`` on loopback in a child process,
measures, and stops it.  Every request is a real HTTP POST /classify on a new connection.
"""
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import numpy as np

from oncolens.appliance.cliutil import OneLineParser, cli_entry, normalize_flags
from oncolens.appliance.errors import OncoLensError, UsageError
from oncolens.appliance.web.auth import TOKEN_ENV, resolve_token


def build_parser():
    p = OneLineParser(
        prog="python -m oncolens.appliance.web.bench",
        description="Measure requests/s and p50/p99 latency of POST /classify with N clients.")
    p.add_argument("--model", help="start 'oncolens serve --model MODEL' on loopback for the run")
    p.add_argument("--url", help="measure a server already running at URL instead")
    p.add_argument("--token", default=None,
                   help="token sent with every request (default ${0}; an empty --token is "
                        "refused: leave it out to use ${0}); with --model the server started "
                        "requires it too (given in its ${0}, never on its command "
                        "line)".format(TOKEN_ENV))
    p.add_argument("--backend", default="auto", help="--backend for the server started (auto)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    p.add_argument("--requests", type=int, default=400, help="requests measured (400)")
    p.add_argument("--warmup", type=int, default=16, help="requests before measuring (16)")
    p.add_argument("--queue", type=int, default=64, help="--queue of the server started (64)")
    p.add_argument("--image", help="image file to send (default: a synthetic PNG)")
    p.add_argument("--size", type=int, default=500, help="side of the synthetic PNG (500)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    return p


def synthetic_png(size, seed=0):
    from oncolens.appliance.imageio import encode_image
    rng = np.random.RandomState(seed)
    base = rng.randint(0, 255, (size // 8 + 1, size // 8 + 1, 3)).astype(np.uint8)
    img = np.kron(base, np.ones((8, 8, 1), np.uint8))[:size, :size]  # blocky: compresses like a scan
    return encode_image(img, ".png")


def start_server(model, queue=64, backend="auto", extra=None, timeout=1200, token=None):
    """``oncolens serve --port 0`` in a child process: (process, url).

    ``timeout``: seconds it may take to say it listens (a Nano's first start builds the
    TensorRT engine for minutes; the device unit allows 20). ``token``: the token the server
    requires, passed in its environment ($ONCOLENS_TOKEN), where ``ps`` does not show it;
    None: the server resolves its own ($ONCOLENS_TOKEN as inherited)."""
    cmd = [sys.executable, "-m", "oncolens", "serve", "--model", model, "--port", "0",
           "--queue", str(queue), "--backend", backend, "--log-level", "warning"] + (extra or [])
    env = dict(os.environ)
    if token:
        env[TOKEN_ENV] = token
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.isfile(os.path.join(root, "oncolens", "__init__.py")):  # a source checkout
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, universal_newlines=True)
    first = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()))
    reader.daemon = True
    reader.start()
    reader.join(timeout)    # (the clock was read after the line came: a slow start that
    line = first[0] if first else ""  # did say it listens was killed and called failed)
    if "listening on" not in line:
        proc.kill()
        raise OncoLensError("oncolens serve did not start: {}".format(
            line.strip() or ("no output" if first else "nothing within {:g} s".format(timeout))))
    return proc, line.split("listening on ", 1)[1].split()[0]


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def post(url, body, token=None):
    parts = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/octet-stream"}
    if token:
        headers["Authorization"] = "Bearer " + token
    started = time.time()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        conn.request("POST", parts.path.rstrip("/") + "/classify", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    except (OSError, http.client.HTTPException):
        status = 0
    finally:
        conn.close()
    return status, time.time() - started


def run_clients(url, body, clients, count, token=None):
    """``count`` requests from ``clients`` threads: (wall seconds, [(status, seconds)])."""
    results, lock, counter = [], threading.Lock(), [0]

    def client():
        while True:
            with lock:
                if counter[0] >= count:
                    return
                counter[0] += 1
            outcome = post(url, body, token)
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.time() - started, results


def percentile(values, pct):
    ordered = sorted(values)
    rank = max(1, int(np.ceil(pct / 100.0 * len(ordered))))
    return ordered[rank - 1]


def machine():
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except (IOError, OSError):
        pass
    return "{}, {} cores".format(name, os.cpu_count())


def summarise(wall, results, clients):
    ok = [s for status, s in results if status == 200]
    statuses = {}
    for status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    if not ok:
        raise OncoLensError("no request succeeded: statuses {}".format(statuses))
    ms = [s * 1000.0 for s in ok]
    return {"clients": clients, "requests": len(results), "statuses": statuses,
            "requests_per_s": round(len(ok) / wall, 2), "p50_ms": round(percentile(ms, 50), 2),
            "p90_ms": round(percentile(ms, 90), 2), "p99_ms": round(percentile(ms, 99), 2),
            "max_ms": round(max(ms), 2), "machine": machine(),
            "python": platform.python_version()}


def check_url(url):
    """--url must be http://HOST[:PORT][/] (a bare host:port, or https://, was a traceback)."""
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port
    except ValueError:
        parts = None
    if parts is None or parts.scheme != "http" or not parts.hostname:
        raise UsageError("--url {}: expected http://HOST[:PORT]/, e.g. "
                         "http://127.0.0.1:8080/".format(url))
    return url


def check_size(size):
    if size < 1:
        raise UsageError("--size {}: expected a side of 1 pixel or more".format(size))
    return size


def read_image_file(path):
    """The bytes of --image; one line naming it when it is no image file we read: a FIFO
    (a plain open waited for a writer, for ever), a socket, a device, a folder, a format
    that cannot be read (imageio.check_format, told without opening it), or unreadable."""
    from oncolens.appliance.errors import ImageReadError
    from oncolens.appliance.imageio import check_format, open_regular
    try:
        check_format(path)
        with open_regular(path) as fh:  # a FIFO by now: refused, without waiting
            return fh.read()
    except ImageReadError as exc:
        raise UsageError("--image {}".format(exc))
    except (OSError, IOError) as exc:
        raise UsageError("--image {}: cannot read it ({})".format(path, exc.strerror or exc))


def where(figures):
    """What ran where: with --url the server's machine is not the one measured from."""
    here = "{machine}, Python {python}".format(**figures)
    if figures["server"] == "started here":
        return here
    return "server {}, clients on {}".format(figures["server"], here)


@cli_entry("oncolens serve bench")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    if bool(args.model) == bool(args.url):
        raise UsageError("give --model (a server is started) or --url (a running server)")
    if args.clients < 1 or args.requests < 1:
        raise UsageError("--clients and --requests: expected positive numbers")
    if args.url:
        check_url(args.url)
    body = read_image_file(args.image) if args.image else synthetic_png(check_size(args.size))
    token = resolve_token(args.token)  # as serve and classify: an empty --token is refused
    proc, url = (None, args.url)
    if args.model:
        proc, url = start_server(args.model, args.queue, args.backend, token=token)
    try:
        run_clients(url, body, args.clients, args.warmup, token)
        wall, results = run_clients(url, body, args.clients, args.requests, token)
    finally:
        code = stop_server(proc) if proc is not None else 0
    figures = summarise(wall, results, args.clients)
    figures["server_exit"] = code
    # machine and python describe where the clients ran: the server too only when started here
    figures["server"] = "started here" if proc is not None else url
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        print("serve bench: {requests} requests, {clients} clients: {requests_per_s} requests/s, "
              "latency p50 {p50_ms} ms, p90 {p90_ms} ms, p99 {p99_ms} ms, max {max_ms} ms; "
              "statuses {statuses}; {where}".format(where=where(figures), **figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
