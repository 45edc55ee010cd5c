"""``oncolens serve``: the web page and HTTP API on the appliance.

    oncolens serve --model models/busi-resnet18                  # http://127.0.0.1:8080/
    ONCOLENS_TOKEN=... oncolens serve --model M --host 0.0.0.0   # the lab network, with a token

Binds to loopback unless told otherwise; any other address needs a token.  See docs/SERVE.md.
"""
import logging
import math
import os
import signal
import sys
import threading

from oncolens.appliance.cliutil import (OneLineParser, check_top, cli_entry, normalize_flags,
                                        setup_logging)
from oncolens.appliance.errors import UsageError
from oncolens.appliance.outpaths import check_output_dir
from oncolens.appliance.web.audit import add_audit_flags, check_audit_flags
from oncolens.appliance.web.auth import TOKEN_ENV

log = logging.getLogger("oncolens.serve")
MAX_TIMEOUT = 86400.0  # a day; longer waits overflow threading's timeouts
STOP_GRACE = 20.0  # seconds a SIGTERM leaves requests in flight (systemd allows 30 to stop)


def build_parser():
    p = OneLineParser(
        prog="oncolens serve",
        description="Serve a model over HTTP: POST /classify, GET /health, GET /metrics and a "
                    "web page at /. Loopback only unless --host is given with a token.")
    p.add_argument("--model", help="model folder, .onnx or engine")
    p.add_argument("--network", help="a model folder name under --models-root (models/NAME/)")
    p.add_argument("--models-root", default="models", help="where --network looks (models)")
    p.add_argument("--labels", help="labels file (optional when the model has a model.json)")
    p.add_argument("--input-blob", help="input tensor name (default from model.json, else input_0)")
    p.add_argument("--output-blob",
                   help="output tensor name (default from model.json, else output_0)")
    p.add_argument("--backend", default="auto",
                   help="auto, jetson, tensorrt, onnxruntime, openvino or torch (auto: fastest "
                        "present)")
    p.add_argument("--topK", "--topk", dest="topk", type=int, default=1,
                   help="classes drawn on the annotated image and listed in 'top' (1; 0: all)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (127.0.0.1); any non-loopback one needs a token")
    p.add_argument("--port", type=int, default=8080, help="port (8080; 0 picks a free one)")
    p.add_argument("--token", default=None,
                   help="require this token on every request (Authorization: Bearer T or "
                        "?token=T); default ${} (an empty --token is refused: leave it out "
                        "to use ${})".format(TOKEN_ENV, TOKEN_ENV))
    p.add_argument("--max-upload-mb", type=float, default=20.0,
                   help="larger uploads get 413 (20)")
    from oncolens.appliance.preprocess import MAX_RESIZED_PIXELS
    p.add_argument("--max-pixels", type=int, default=40000000,
                   help="images whose header claims more pixels, or that the model's resize "
                        "would make larger (or larger than the preprocessing's own limit, "
                        "{}), get 400 (40000000)".format(MAX_RESIZED_PIXELS))
    p.add_argument("--queue", type=int, default=16,
                   help="images that may wait for the model; beyond that 503 + Retry-After (16)")
    p.add_argument("--max-batch", type=int, default=4,
                   help="most waiting images run through the model at once (4)")
    from oncolens.appliance.web.app import DECODE_SLOTS
    p.add_argument("--decode-slots", type=int, default=DECODE_SLOTS,
                   help="uploads decoded at once, the rest wait their turn (decoding is where "
                        "an upload's memory goes; {})".format(DECODE_SLOTS))
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds a request waits for the model before 503 (60)")
    from oncolens.appliance.web.limits import MAX_CONNECTIONS
    p.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                   help="connections open at once, live-stream viewers included; more are "
                        "answered 503 at once ({})".format(MAX_CONNECTIONS))
    p.add_argument("--save-uploads", metavar="DIR",
                   help="keep each upload as DIR/<sha256>.<ext> (off: nothing is written)")
    add_audit_flags(p)
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    return p


def _finite(value):
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def check_args(args):
    """Every flag's value, before the model is loaded: one line naming the flag otherwise."""
    if not args.model and not args.network:
        raise UsageError("--model: required (a model folder, .onnx or engine), or --network=NAME")
    if not 0 <= args.port <= 65535:
        raise UsageError("--port {}: expected 0..65535".format(args.port))
    check_top(args.topk)
    for flag, value in (("--max-upload-mb", args.max_upload_mb), ("--max-pixels", args.max_pixels),
                        ("--queue", args.queue), ("--max-batch", args.max_batch),
                        ("--decode-slots", args.decode_slots), ("--timeout", args.timeout),
                        ("--max-connections", args.max_connections)):
        if not _finite(value) or value <= 0:
            raise UsageError("{} {}: expected a positive, finite number".format(flag, value))
    if args.timeout > MAX_TIMEOUT:
        raise UsageError("--timeout {}: expected at most {} seconds".format(
            args.timeout, MAX_TIMEOUT))
    if args.save_uploads:
        check_output_dir(args.save_uploads, "--save-uploads")
    check_audit_flags(args)


def _stop_on_sigterm(server):
    def handler(signum, frame):
        threading.Thread(target=server.httpd.shutdown).start()

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (tests calling main in a thread)
        pass


def _finish_in_flight(server, notifier, ping):
    """After a SIGTERM: no new connection is taken (the listening socket is closed), and the
    requests already read get their answers, for up to STOP_GRACE seconds, before the model,
    the queue and the audit log are closed. Those were closed at once: a request in flight
    was cut off unanswered, its result and audit line lost. systemd hears STOPPING=1 (and
    what is waited for) as the drain begins, and the watchdog's pings go on through it:
    STOPPING=1 came only after the drain, and no ping at all, so a WatchdogSec under the
    drain's length could have the unit killed while it answered. ``ping``: the watchdog's
    ping, withheld while the model's worker is stuck (web/watchdog.py)."""
    server.httpd.server_close()
    busy = server.httpd.wait_idle(0)
    if not busy:
        notifier.stopping("stopping")
        return
    log.info("stopping: finishing %d request(s) in flight (up to %g s)", busy, STOP_GRACE)
    notifier.stopping("stopping: finishing {} request(s) in flight (up to {:g} s)".format(
        busy, STOP_GRACE))
    left = server.httpd.wait_idle(STOP_GRACE, ping, min(0.5, notifier.ping_every / 2.0))
    if left:
        log.warning("stopping with %d request(s) still unanswered after %g s", left,
                    STOP_GRACE)


@cli_entry("oncolens serve")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    from oncolens.appliance.web.auth import require_token, resolve_token
    token = resolve_token(args.token)
    require_token(args.host, token)          # before anything is loaded or bound
    check_args(args)
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.sdnotify import Notifier
    from oncolens.appliance.web.app import ServeApp, bottle_module, prepare_save_dir
    from oncolens.appliance.web.audit import AuditLog
    from oncolens.appliance.web.server import ServerThread
    from oncolens.appliance.web.watchdog import WorkerWatchdog
    bottle_module()                          # a missing framework is said before the model loads
    prepare_save_dir(args.save_uploads)      # the outputs too: made and opened now
    audit = AuditLog(args.audit_log)
    model = args.model or os.path.join(args.models_root, args.network)
    try:
        clf = Classifier.open(model, labels=args.labels, input_blob=args.input_blob,
                              output_blob=args.output_blob, backend=args.backend, top=args.topk)
    except BaseException:
        audit.close()
        raise
    app = ServeApp(clf, token=token, max_upload_mb=args.max_upload_mb,
                   max_pixels=args.max_pixels, queue_size=args.queue, max_batch=args.max_batch,
                   timeout=args.timeout, save_uploads=args.save_uploads, audit_log=audit,
                   decode_slots=args.decode_slots, trusted_proxy=args.trusted_proxy)
    try:
        server = ServerThread(app.wsgi, args.host, args.port, args.max_connections)
    except (OSError, IOError) as exc:
        app.close()
        audit.close()
        clf.close()
        raise UsageError("--host {} --port {}: cannot listen there ({})".format(
            args.host, args.port, exc.strerror or exc))
    _stop_on_sigterm(server)    # before saying it listens: a stop may come at once after
    print("oncolens serve: listening on {} (model sha256 {}, {}{})".format(
        server.url, (app.model_sha256 or "?")[:16], clf.backend.describe(),
        ", token required" if token else ""))
    sys.stdout.flush()
    notifier = Notifier()
    notifier.ready("serving on {}".format(server.url))
    # WATCHDOG=1 while the accept loop runs and the model's worker is not stuck
    watchdog = WorkerWatchdog(notifier, app.queue)
    server.httpd.heartbeat = watchdog.ping
    stopping = False
    try:
        server.serve_forever()
        stopping = True
        _finish_in_flight(server, notifier, watchdog.ping)   # SIGTERM: those read are answered
    finally:
        if not stopping:
            notifier.stopping()
        server.httpd.server_close()
        app.close()
        audit.close()
        clf.close()
    return 0
