"""Frame sources: one interface, an iterator of Frames with their origin and timestamp.

    image file, folder (recursive, sorted), quoted glob      ImageFilesSource
    video file (.mp4 .avi .mkv .mov ...)                     VideoFileSource
    csi://0, v4l2:///dev/video0, /dev/video0, rtsp://, rtp://  CaptureSource (OpenCV), or
                                                  jetson_utils.videoSource when importable

Every source has ``open()``, ``read()`` and ``close()``: ``read`` returns a Frame, None on a
frame timeout (skipped), raises ``EndOfStream`` when a finite source is done and
``SourceLost`` when a live one drops (the live loop reopens it with backoff).  Iterating a
source opens it and yields its frames until the end.
"""
import collections
import glob
import logging
import os
import time

from oncolens.appliance import gst
from oncolens.appliance.errors import ImageReadError, MissingDependency, OncoLensError, UsageError
from oncolens.appliance.imageio import (decode_image, is_image_file, is_unsupported_image,
                                        read_bytes, walk_files)
from oncolens.appliance.lowbits import LowBitsWarning
from oncolens.appliance.outpaths import inside

log = logging.getLogger(__name__)

# image: RGB uint8 HxWx3 or None when it could not be read (then ``error`` says why);
# origin: the file path or stream URI; relpath: the name to keep for outputs.
Frame = collections.namedtuple("Frame", ["image", "origin", "relpath", "index", "timestamp",
                                         "error"])

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".h264")
LIVE_SCHEMES = ("csi", "v4l2", "rtsp", "rtsps", "rtp")
OPTION_FLAGS = {"width": "--input-width", "height": "--input-height", "rate": "--input-rate",
                "flip": "--input-flip", "codec": "--input-codec", "loop": "--input-loop",
                "latency": "--input-latency", "save": "--input-save",
                "decoder": "--input-decoder"}
JETSON_UTILS_ONLY = ("save", "decoder")
DEFAULT_LATENCY_MS = 200   # the RTSP/RTP jitter buffer without --input-rtsp-latency


class EndOfStream(Exception):
    """A finite source (files, a video without --input-loop) has no more frames."""


class SourceLost(OncoLensError):
    """A camera or stream could not be opened or stopped delivering frames."""


def list_images(uri, unsupported=False, exclude=None, skip=None):
    """The image files named by a file, a folder (recursive) or a glob, sorted; relpaths kept.
    Hidden files and OS junk in a folder are left out (``imageio.walk_files``), and so is
    the folder ``exclude`` (where outputs go); a file a glob reaches by several paths (a
    link cycle under ``**``) is listed once. A FIFO, socket or device named like an image is
    listed like a file: its reader refuses it unopened (``imageio.check_format``).

    With ``unsupported``, files in image formats we cannot read (.gif, .heic ...) are listed
    too, so that the caller reports each as a failure instead of skipping it in silence.
    """
    def wanted(path):
        if skip is not None and skip(path):  # a numbered output's files (out_%i.jpg)
            return False
        return is_image_file(path) or (unsupported and is_unsupported_image(path))

    skip_dir = os.path.realpath(exclude) if exclude else None
    if os.path.isdir(uri):
        return [(path, os.path.relpath(path, uri)) for path in walk_files(uri, skip_dir)
                if wanted(path)]
    if os.path.exists(uri):  # a file; a FIFO or device too, which its reader refuses by name
        return [(uri, os.path.basename(uri))]
    if any(ch in uri for ch in "*?["):
        base = glob_base(uri)
        if skip_dir and not inside(skip_dir, os.path.realpath(base)):
            skip_dir = None  # the glob's own folder or one above it is kept, as for a folder
        found, seen = [], set()
        for path in sorted(p for p in glob.glob(uri, recursive=True)
                           if os.path.exists(p) and not os.path.isdir(p)):  # FIFOs: refused
            real = os.path.realpath(path)
            if wanted(path) and real not in seen and not (skip_dir and inside(real, skip_dir)):
                seen.add(real)
                found.append((path, os.path.relpath(path, base)))
        return found
    raise UsageError("input not found: {} (expected an image file, a folder, a quoted glob or "
                     "a stream URI)".format(uri))


def glob_base(pattern):
    """The folder a glob's relative names start from: its parts before the first wildcard."""
    parts = []
    for part in pattern.split(os.sep):
        if any(ch in part for ch in "*?["):
            break
        parts.append(part)
    return os.sep.join(parts) or "."


def flip_image(rgb, flip):
    """Apply a jetson-inference ``--input-flip`` in software (files and OpenCV captures)."""
    import cv2
    name = gst.flip_entry(flip)[0]
    ops = {
        "none": lambda a: a,
        "counterclockwise": lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
        "rotate-180": lambda a: cv2.rotate(a, cv2.ROTATE_180),
        "clockwise": lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
        "horizontal": lambda a: cv2.flip(a, 1),
        "vertical": lambda a: cv2.flip(a, 0),
        "upper-left-diagonal": lambda a: cv2.transpose(a),  # transpose: the main diagonal
        "upper-right-diagonal": lambda a: cv2.rotate(cv2.transpose(a), cv2.ROTATE_180),
    }
    return ops[name](rgb)


def warn_unsupported(kind, options, names):
    """One warning per flag this source cannot honour (a latency of 0 too: it is 0 ms)."""
    for name in names:
        value = options.get(name)
        if (value is not None) if name == "latency" else value not in (None, "", 0, "none"):
            log.warning("%s is not supported for %s: ignored", OPTION_FLAGS.get(name, name), kind)


class Source(object):
    kind = "source"
    live = False
    rate = None  # frames per second when known (a video sink uses it)

    def open(self):
        pass

    def read(self):
        raise NotImplementedError

    def close(self):
        pass

    def describe(self):
        return "{} {}".format(self.kind, getattr(self, "uri", ""))

    def __iter__(self):
        self.open()
        try:
            while True:
                try:
                    frame = self.read()
                except EndOfStream:
                    return
                if frame is not None:
                    yield frame
        finally:
            self.close()


class ImageFilesSource(Source):
    """Images from files; a file that cannot be decoded becomes a Frame with ``error`` set."""

    kind = "images"

    def __init__(self, uri, loop=0, flip=None, exclude=None, skip=None):
        self.uri = uri
        self.files = list_images(uri, unsupported=True, exclude=exclude, skip=skip)
        if not self.files:
            raise UsageError("input {}: no image files found".format(uri))
        self.loop = int(loop or 0)
        self.flip = gst.flip_entry(flip)[0]
        self._index = 0
        self._good = False  # a pass gave at least one image: looping makes sense
        self.low_bits = LowBitsWarning(log)  # once for the whole input, every pass included

    def __len__(self):
        return len(self.files)

    def open(self):
        self._index = 0

    def read(self):
        passes, pos = divmod(self._index, len(self.files))
        if self.loop >= 0 and passes > self.loop:
            raise EndOfStream()
        if passes and pos == 0 and not self._good:
            log.error("input %s: no readable image in a whole pass: not looping", self.uri)
            raise EndOfStream()
        path, rel = self.files[pos]
        try:
            data = read_bytes(path)
            image, error = decode_image(data, path), None
            self.low_bits.check(path, data, image)
            if self.flip != "none":
                image = flip_image(image, self.flip)
        except ImageReadError as exc:
            image, error = None, str(exc)
        self._good = self._good or image is not None
        if passes:  # --input-loop: a later pass's outputs do not replace the first's
            root, ext = os.path.splitext(rel)
            rel = "{}_loop{}{}".format(root, passes, ext)
        frame = Frame(image, path, rel, self._index, time.time(), error)
        self._index += 1
        return frame


class CaptureSource(Source):
    """Frames from a ``cv2.VideoCapture`` made by ``opener()`` (video file, camera, stream)."""

    def __init__(self, uri, kind, opener, live, loop=0, flip=None, size=None):
        self.uri, self.kind, self.opener, self.live = uri, kind, opener, live
        self.loop = int(loop or 0)
        self.flip = gst.flip_entry(flip)[0]
        self.size = size  # (width, height) to resize to in software, or None
        self.cap = None
        self.index = 0
        self.passes = 0
        stem = kind if live else os.path.splitext(os.path.basename(uri.rstrip("/")))[0] or kind
        self.stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)

    def open(self):
        self.close()
        cap = self.opener()
        if cap is None or not cap.isOpened():
            raise SourceLost("cannot open {} ({}): {}".format(
                self.uri, self.kind, "check the device or address" if self.live else
                "OpenCV cannot read it as a video (a damaged file, or a codec it lacks)"))
        self.cap = cap
        fps = cap.get(5)  # cv2.CAP_PROP_FPS
        self.rate = fps if fps and 0 < fps < 1000 else self.rate

    def read(self):
        import cv2
        if self.cap is None:
            self.open()
        ok, bgr = self.cap.read()
        if not ok or bgr is None:
            if self.live:
                raise SourceLost("{}: no frame (stream dropped)".format(self.uri))
            self.passes += 1
            if self.loop >= 0 and self.passes > self.loop:
                raise EndOfStream()
            self.open()  # rewind: reopening works for every container
            ok, bgr = self.cap.read()
            if not ok:
                raise EndOfStream()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        if self.flip != "none":
            rgb = flip_image(rgb, self.flip)
        rel = "{}_{:06d}.jpg".format(self.stem, self.index)
        frame = Frame(rgb, self.uri, rel, self.index, time.time(), None)
        self.index += 1
        return frame

    def close(self):
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def parse_uri(uri):
    """(scheme, location) of an input or output URI; plain paths get scheme 'file'."""
    if "://" in uri:
        scheme, _, rest = uri.partition("://")
        return scheme.lower(), rest
    if uri.startswith("/dev/video"):
        return "v4l2", uri
    return "file", uri


def opencv_has_gstreamer():
    import cv2
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


def _need_gstreamer(uri):
    raise MissingDependency("jetson_utils, or OpenCV built with GStreamer",
                            "input {}".format(uri),
                            "JetPack's OpenCV has GStreamer; the PyPI opencv wheels do not")


def _gst_capture(pipeline):
    import cv2
    log.info("GStreamer pipeline: %s", pipeline)
    return lambda: cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)


def _v4l2_capture(device, options):
    """A V4L2 camera through OpenCV's own V4L2 backend (no GStreamer needed)."""
    import cv2

    def opener():
        index = device[len("/dev/video"):] if device.startswith("/dev/video") else device
        cap = cv2.VideoCapture(int(index) if index.isdigit() else device, cv2.CAP_V4L2)
        if options.get("codec"):
            if gst.check_codec(options["codec"]) != "mjpeg":
                raise UsageError("--input-codec: a V4L2 camera takes raw or mjpeg")
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        for name, prop in (("width", cv2.CAP_PROP_FRAME_WIDTH),
                           ("height", cv2.CAP_PROP_FRAME_HEIGHT), ("rate", cv2.CAP_PROP_FPS)):
            if options.get(name):
                cap.set(prop, float(options[name]))
        return cap

    return opener


def open_live(scheme, location, uri, options):
    """A camera or stream: through GStreamer when OpenCV has it, else OpenCV's own backends."""
    import cv2
    has_gst = opencv_has_gstreamer()
    jetson = gst.is_jetson()
    flip, codec = options.get("flip"), options.get("codec")
    # as jetson_utils' --input-rtsp-latency: 0 is 0 ms (rtspsrc latency=0), absent the default
    latency = DEFAULT_LATENCY_MS if options.get("latency") is None else options["latency"]
    sw_flip = flip
    if scheme in ("rtsp", "rtsps", "rtp"):  # a stream's size and rate are the sender's
        warn_unsupported(scheme + " streams", options, ("width", "height", "rate"))
    if scheme == "csi":
        if not has_gst:
            _need_gstreamer(uri)
        sw_flip = None
        opener = _gst_capture(gst.csi_pipeline(int(location or 0), options.get("width"),
                                               options.get("height"), options.get("rate"), flip))
    elif scheme == "v4l2":
        device = location if location.startswith("/") else "/dev/" + location
        if has_gst:
            opener = _gst_capture(gst.v4l2_pipeline(device, options.get("width"),
                                                    options.get("height"), options.get("rate"),
                                                    None, codec, jetson))
        else:
            opener = _v4l2_capture(device, options)
    elif scheme in ("rtsp", "rtsps"):
        if has_gst:
            sw_flip = None
            opener = _gst_capture(gst.rtsp_pipeline(uri, codec or "h264", latency, flip, jetson))
        else:
            warn_unsupported("rtsp through OpenCV's FFmpeg", options, ("codec", "latency"))
            opener = lambda: cv2.VideoCapture(uri, cv2.CAP_FFMPEG)  # noqa: E731
    else:  # rtp://@:1234 or rtp://239.0.0.1:1234
        if not has_gst:
            _need_gstreamer(uri)
        host, _, port = location.rpartition(":")
        if not port.isdigit():
            raise UsageError("input {}: expected rtp://@:PORT or rtp://GROUP:PORT".format(uri))
        host = host.lstrip("@")
        sw_flip = None
        opener = _gst_capture(gst.rtp_input_pipeline(int(port), codec or "h264", host or None,
                                                     latency, flip, jetson))
    return CaptureSource(uri, scheme, opener, live=True, flip=sw_flip)


def open_jetson_utils(uri, options):
    """jetson_utils.videoSource (the Jetson's zero-copy path), or None when not importable."""
    try:
        import jetson_utils  # noqa: F401
    except ImportError:
        return None
    from oncolens.appliance.jetson_io import JetsonUtilsSource
    return JetsonUtilsSource(uri, options)


def open_source(uri, **options):
    """Open the frame source that ``uri`` names; ``options`` are the --input-* flags
    (width, height, rate, flip, loop, codec, latency) and ``jetson_utils`` (auto: True/None).
    """
    if not uri:
        raise UsageError("input: missing (an image, folder, glob, video, camera or stream URI)")
    scheme, location = parse_uri(uri)
    if scheme in LIVE_SCHEMES:
        if options.get("jetson_utils", True) is not False:
            source = open_jetson_utils(uri, options)
            if source is not None:
                return source
        warn_unsupported("sources without jetson_utils", options, JETSON_UTILS_ONLY)
        warn_unsupported(scheme, options, ("loop",))
        return open_live(scheme, location, uri, options)
    if scheme != "file":
        raise UsageError("input {}: unknown scheme '{}://' (expected a file, folder, glob, "
                         "csi://, v4l2://, /dev/videoN, rtsp:// or rtp://)".format(uri, scheme))
    path = location
    warn_unsupported("files", options, JETSON_UTILS_ONLY)
    if os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS:
        if not os.path.isfile(path):
            raise UsageError("input not found: {} (a video file)".format(path))
        import cv2
        warn_unsupported("video files", options, ("codec", "latency"))
        size = None
        if options.get("width") and options.get("height"):
            size = (int(options["width"]), int(options["height"]))
        elif options.get("width") or options.get("height"):
            log.warning("--input-width and --input-height must be given together: ignored")
        source = CaptureSource(path, "video", lambda: cv2.VideoCapture(path), live=False,
                               loop=options.get("loop"), flip=options.get("flip"), size=size)
        source.open()  # a file OpenCV cannot read is named now, before a model loads
        source.close()
        return source
    warn_unsupported("image files", options, ("width", "height", "codec", "latency"))
    return ImageFilesSource(path, loop=options.get("loop", 0) or 0, flip=options.get("flip"),
                            exclude=options.get("exclude"), skip=options.get("skip"))
