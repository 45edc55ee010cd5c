"""``oncolens classify``: jetson-inference's ``imagenet`` command line.

    oncolens classify --model=models/x/resnet18.onnx --input_blob=input_0 \
        --output_blob=output_0 --labels=data/x/labels.txt data/x/test/cat out/
    oncolens classify --network=busi-resnet18 csi://0 display://0
    oncolens classify --model=models/busi-resnet18 --overlay=cam video.mp4 out.mp4

Flags are imagenet's (``-`` and ``_`` interchangeable, ``--flag=value`` or ``--flag value``);
a flag it does not know is reported and ignored, as imagenet does.
"""
import contextlib
import logging
import os
import sys

from oncolens.appliance.cliutil import (OneLineParser, check_top, cli_entry, normalize_flags,
                                        setup_logging)
from oncolens.appliance.errors import UsageError
from oncolens.appliance.outpaths import check_output_file, check_text_file
from oncolens.appliance.web.audit import AuditLog, add_audit_flags, check_audit_flags
from oncolens.appliance.web.auth import TOKEN_ENV, resolve_token

log = logging.getLogger("oncolens.classify")

OVERLAYS = ("text", "labels", "cam", "none")
# the longest RTSP/RTP jitter buffer taken (ms): a minute of video held back is a typo
MAX_LATENCY_MS = 60000


def _input_flags(p):
    g = p.add_argument_group("input (videoSource flags)")
    g.add_argument("--input-width", type=int, help="capture width (cameras; resize for videos)")
    g.add_argument("--input-height", type=int, help="capture height")
    g.add_argument("--input-rate", type=float, help="capture frame rate (cameras)")
    g.add_argument("--input-flip", help="none, clockwise, counterclockwise, rotate-180, "
                                        "horizontal, vertical, upper-left/right-diagonal")
    g.add_argument("--input-loop", type=int, default=0,
                   help="files and videos: 0 once, N more passes, -1 forever (0)")
    g.add_argument("--input-codec", help="h264, h265 or mjpeg (streams; mjpeg for V4L2)")
    g.add_argument("--input-rtsp-latency", "--input-latency", dest="input_latency", type=int,
                   help="RTSP/RTP jitter buffer in ms, 0 to {} (left out: 200, or "
                        "jetson_utils' 2000; 0: none, as rtspsrc "
                        "latency=0)".format(MAX_LATENCY_MS))
    g.add_argument("--input-save", help="jetson_utils only: also save the input stream")
    g.add_argument("--input-decoder", help="jetson_utils only: cpu, omx or v4l2")


def _output_flags(p):
    g = p.add_argument_group("output (videoOutput flags)")
    g.add_argument("--output-codec", help="h264 or h265 (rtp:// output)")
    g.add_argument("--output-encoder", help="jetson_utils only: cpu, omx or v4l2")
    g.add_argument("--output-save", help="jetson_utils only: also save the output stream")
    g.add_argument("--bitrate", type=int, help="rtp:// bit rate in bits/s (4000000)")
    g.add_argument("--headless", action="store_true", help="no display window")
    g.add_argument("--overwrite", action="store_true", help="replace existing output files")


def build_parser():
    p = OneLineParser(
        prog="oncolens classify",
        description="Classify frames from an image, folder, quoted glob, video, camera or "
                    "stream and draw the class and confidence on each; flags as "
                    "jetson-inference's imagenet ('-' and '_' are interchangeable).")
    p.add_argument("input", help="image, folder, quoted glob, video file, csi://0, /dev/video0, "
                                 "v4l2:///dev/video0, rtsp://..., rtp://@:1234")
    p.add_argument("output", nargs="?", default=None,
                   help="image file, folder (ending in /, no type, or an existing folder; "
                        "input names kept), out_%%i.jpg, video (.mp4/.avi/.mkv/.mov/.m4v), display://0 (the "
                        "default), rtp://host:port")
    g = p.add_argument_group("model (imageNet flags)")
    g.add_argument("--model", help="model folder, .onnx, engine (.engine/.trt/.plan) or "
                                   "checkpoint (.pth/.pth.tar)")
    g.add_argument("--network", help="a model folder under --models-root (models/NAME/); no "
                                     "default (imagenet's googlenet is not shipped)")
    g.add_argument("--models-root", default="models", help="where --network looks (models)")
    g.add_argument("--labels", help="labels file (optional with a model.json)")
    g.add_argument("--input-blob", help="input tensor (default: model.json, else input_0, "
                                        "as onnx_export.py names it; imagenet's: data)")
    g.add_argument("--output-blob", help="output tensor (default: model.json, else output_0; "
                                         "imagenet's: prob)")
    g.add_argument("--prototxt", help="Caffe models are not supported: ignored")
    g.add_argument("--batch-size", type=int, help="accepted; frames are classified one by one "
                                                  "(oncolens batch batches folders)")
    g.add_argument("--profile", action="store_true", help="accepted; see the status line")
    g.add_argument("--topK", "--topk", dest="topk", type=int, default=1,
                   help="how many classes to show per frame (1; 0: every class at or above "
                        "--threshold)")
    g.add_argument("--threshold", type=float, default=0.01,
                   help="minimum confidence of the 2nd..K-th class shown (0.01)")
    g.add_argument("--smoothing", type=float, default=0.0,
                   help="temporal smoothing: weight of the newest frame (0-1) or a number of "
                        "frames (0: off)")
    g.add_argument("--backend", default="auto",
                   help="auto, jetson, tensorrt, onnxruntime, openvino or torch (auto: fastest "
                        "present)")
    g.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                   help="engine precision (default: the backend's)")
    g.add_argument("--preprocess", choices=("center_crop", "stretch"),
                   help="resize policy (default: model.json's; stretch = imagenet's)")
    _input_flags(p)
    _output_flags(p)
    _appliance_flags(p)
    return p


def _appliance_flags(p):
    g = p.add_argument_group("appliance")
    g.add_argument("--overlay", default="text",
                   help="comma list of: text (or labels), cam (heatmap under the text), none "
                        "(nothing drawn)")
    g.add_argument("--serve", metavar="[HOST]:PORT",
                   help="also serve the web page, the live annotated stream (MJPEG) and "
                        "POST /classify, e.g. :8080 (loopback; another host needs --token)")
    g.add_argument("--token", default=None,
                   help="API token for --serve or an http:// output; default ${} (an empty "
                        "--token is refused: leave it out to use ${})".format(TOKEN_ENV,
                                                                              TOKEN_ENV))
    add_audit_flags(g)  # as oncolens serve's, for the server of --serve or an http:// output
    from oncolens.appliance.web.limits import MAX_CONNECTIONS
    g.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                   help="connections open at once to --serve's or an http:// output's server, "
                        "live-stream viewers included; more are answered 503 at once ({})"
                        .format(MAX_CONNECTIONS))
    g.add_argument("--status-every", type=float, default=5.0,
                   help="seconds between status lines (5)")
    g.add_argument("--no-jetson-utils", action="store_true",
                   help="use OpenCV even where jetson_utils is importable")
    g.add_argument("--log-level", default="info",
                   help="silent, error, warning, success, info, verbose, debug (info)")
    g.add_argument("--verbose", action="store_true", help="same as --log-level=verbose (debug)")
    g.add_argument("--debug", action="store_true", help="same as --log-level=debug")
    g.add_argument("--log-file", help="also write the log to this file")


def resolve_model(args):
    if args.model:
        return args.model
    if args.network:
        return os.path.join(args.models_root, args.network)
    raise UsageError("--model: required (a model folder, .onnx, engine or checkpoint), or "
                     "--network=NAME for models/NAME/")


def overlay_modes(value):
    modes = set()
    for part in (value or "text").lower().split(","):
        part = part.strip()
        if part not in OVERLAYS:
            raise UsageError("--overlay: unknown value '{}' (expected a comma list of: {})".format(
                part, ", ".join(OVERLAYS)))
        if part in ("text", "labels"):
            modes.add("text")
        elif part == "cam":
            modes.update(("cam", "text"))
    return modes


def source_options(args):
    return dict(width=args.input_width, height=args.input_height, rate=args.input_rate,
                flip=args.input_flip, loop=args.input_loop, codec=args.input_codec,
                latency=args.input_latency, save=args.input_save, decoder=args.input_decoder,
                jetson_utils=False if args.no_jetson_utils else None)


def choose_output(args):
    """imagenet shows a window when no output is given; --headless drops display outputs."""
    output = args.output
    if output is None and not args.headless:
        output = "display://0"
    if output and args.headless and output.startswith("display://"):
        log.info("--headless: not opening %s", output)
        return None
    return output


def _setup_logging(args):
    level = "debug" if (args.verbose or args.debug) else args.log_level
    setup_logging(level)
    if args.log_file:
        check_text_file(args.log_file, "--log-file")
        check_output_file(args.log_file, "--log-file", overwrite=True)  # a log is appended to
        parent = os.path.dirname(args.log_file)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent)
        handler = logging.FileHandler(args.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)


def _check_values(args):
    check_top(args.topk, args.threshold)
    if args.input_loop < -1:
        raise UsageError("--input-loop: expected -1 (forever), 0 (once) or a number of more "
                         "passes, got {}".format(args.input_loop))
    _check_numbers(args)
    _check_serving(args)


def _check_numbers(args):
    """Values a source or a sink failed on mid-run (a traceback from cv2.resize, 'OpenCV
    cannot write mp4v video here' and an empty file left): one line naming the flag now."""
    for flag, value, what in (("--input-width", args.input_width, "pixels"),
                              ("--input-height", args.input_height, "pixels"),
                              ("--input-rate", args.input_rate, "frames per second"),
                              ("--bitrate", args.bitrate, "bits per second")):
        if value is not None and not 0 <= value < float("inf"):
            raise UsageError("{}: expected {} above 0 (0: the default), got {}".format(
                flag, what, value))
    if args.input_latency is not None and not 0 <= args.input_latency <= MAX_LATENCY_MS:
        raise UsageError("--input-rtsp-latency (--input-latency): expected milliseconds from 0 "
                         "to {} (the jitter buffer; 0: none; left out: 200), got {}".format(
                             MAX_LATENCY_MS, args.input_latency))
    if not 0 <= args.status_every < float("inf"):
        raise UsageError("--status-every: expected seconds, 0 or more, got {}".format(
            args.status_every))
    from oncolens.appliance.postprocess import Smoother
    Smoother(args.smoothing)  # --smoothing: a weight or a number of frames, checked now
    if args.output_codec:
        from oncolens.appliance.gst import check_codec
        check_codec(args.output_codec, "--output-codec", ("h264", "h265"))


def _warn_output_flags(args, output):
    """--output-codec and --bitrate are the encoder's of a stream: a video file is written
    as mp4v or MJPG whatever they say, so they are named rather than ignored in silence."""
    from oncolens.appliance.sinks import output_scheme
    if output_scheme(output or "") in ("rtp", "rtsp", "webrtc"):
        return
    for flag, value in (("--output-codec", args.output_codec), ("--bitrate", args.bitrate)):
        if value:
            log.warning("%s is used by rtp:// outputs only: ignored for %s", flag,
                        output or "no output")


def _served(args):
    """[(flag, address)] of the servers this run starts: --serve's, an http:// output's."""
    return [(flag, address) for flag, address in (("--serve", args.serve),
                                                  ("output", args.output))
            if address and (flag == "--serve" or address.startswith("http://"))]


@contextlib.contextmanager
def _web_options(args, clf):
    """The options of the servers of --serve and of an http:// output, with one AuditLog
    for both (--audit-log: one open file and one lock, so their lines never interleave),
    closed once the run is over."""
    audit = AuditLog(args.audit_log) if args.audit_log and _served(args) else None
    try:
        yield {"classifier": clf, "token": args.token, "audit_log": audit,
               "trusted_proxy": args.trusted_proxy, "max_connections": args.max_connections}
    finally:
        if audit is not None:
            audit.close()


def _check_serving(args):
    """Serving off loopback without a token is refused before the model loads (an engine
    build on a Nano can take minutes), as is an explicitly empty --token (it turned the
    token off, even with $ONCOLENS_TOKEN set); ``args.token`` becomes the token to use.
    --audit-log and --trusted-proxy are checked as serve checks them, and the log opened
    (when served) as serve opens it, before the model loads."""
    args.token = resolve_token(args.token)
    if args.max_connections < 1:
        raise UsageError("--max-connections {}: expected 1 or more".format(
            args.max_connections))
    served = _served(args)
    if served:
        from oncolens.appliance.web.auth import require_token
        from oncolens.appliance.web.live import parse_address
        for flag, address in served:
            require_token(parse_address(address, flag)[0], args.token, flag=flag)
    check_audit_flags(args, try_open=bool(served))
    if not served and (args.audit_log or args.trusted_proxy):
        log.warning("--audit-log and --trusted-proxy are used by --serve and http:// outputs "
                    "only: ignored")


@cli_entry("oncolens classify")
def main(argv):
    args, unknown = build_parser().parse_known_args(normalize_flags(argv))
    extra = [arg for arg in unknown if not arg.startswith("-")]
    if args.output is None and extra:
        # imagenet finds INPUT and OUTPUT anywhere on the line; argparse gives OUTPUT's slot
        # away when a flag comes between them (in.jpg --topK=2 out.jpg): it is the output
        args.output = extra[0]
        unknown.remove(extra[0])
    _setup_logging(args)
    _check_values(args)
    for flag in unknown:
        if flag.startswith("-"):  # named without its value (--x=VALUE), which may be a secret
            log.warning("%s: not a flag oncolens classify knows: ignored",
                        flag.partition("=")[0])
        else:  # imagenet ignores extra arguments too (parse_known_args)
            log.warning("%s: an extra argument (oncolens classify takes INPUT [OUTPUT]): "
                        "ignored", flag)
    if args.prototxt:
        log.warning("--prototxt: Caffe models are not supported: ignored")
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.loop import LiveLoop
    from oncolens.appliance.sinks import (check_file_output, open_sink, output_folder,
                                          pattern_files)
    from oncolens.appliance.sources import open_source

    model = resolve_model(args)
    modes = overlay_modes(args.overlay)
    output = choose_output(args)
    _warn_output_flags(args, output)
    # the output folder is left out of the input: a rerun does not read its own outputs
    source = open_source(args.input, exclude=output_folder(output), skip=pattern_files(output),
                         **source_options(args))
    check_file_output(output, source, overwrite=args.overwrite)  # before the model loads
    clf = Classifier.open(model, labels=args.labels, input_blob=args.input_blob,
                          output_blob=args.output_blob, backend=args.backend, top=args.topk,
                          threshold=args.threshold, policy=args.preprocess,
                          precision=args.precision)
    with clf, _web_options(args, clf) as web:
        sink = open_sink(output, overwrite=args.overwrite, rate=args.input_rate,
                         codec=args.output_codec, bitrate=args.bitrate,
                         encoder=args.output_encoder, save=args.output_save,
                         jetson_utils=False if args.no_jetson_utils else None,
                         inputs=[path for path, _ in getattr(source, "files", None) or ()],
                         **web)
        sinks = [sink]
        if args.serve:
            from oncolens.appliance.web.live import open_live_sink
            sinks.append(open_live_sink(args.serve, **web))
        if (args.output_encoder or args.output_save) and getattr(sink, "kind", None) != "jetson_utils":
            log.warning("--output-encoder/--output-save are used by jetson_utils outputs only: "
                        "ignored")
        loop = LiveLoop(clf, source, sinks, overlay=modes, smoothing=args.smoothing,
                        status_every=args.status_every, out=sys.stdout,
                        model_name=os.path.basename(os.path.normpath(model)))
        stats = loop.run()
    # an output that failed as it was closed (a video short of frames) fails the run too
    return 1 if (stats.failed and not source.live) or stats.output_errors else 0
