"""GStreamer pipeline strings for cameras and streams (pure functions, tested by table).

OpenCV opens these with ``cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)`` (capture, ending
in ``appsink``) or ``cv2.VideoWriter(pipeline, cv2.CAP_GSTREAMER, ...)`` (output, starting
with ``appsrc``) when it was built with GStreamer (JetPack's OpenCV is; the PyPI wheels are
not).  ``jetson=True`` picks the Jetson's hardware elements (nvarguscamerasrc, nvvidconv,
nvv4l2decoder, nvv4l2h264enc); otherwise the portable software ones.

Flip names follow jetson-inference's ``--input-flip``.
"""
import os

from oncolens.appliance.errors import UsageError

# jetson-inference's --input-flip names -> nvvidconv flip-method number, videoflip method
FLIPS = [
    ("none", 0, "none"),
    ("counterclockwise", 1, "counterclockwise"),
    ("rotate-180", 2, "rotate-180"),
    ("clockwise", 3, "clockwise"),
    ("horizontal", 4, "horizontal-flip"),
    ("upper-right-diagonal", 5, "upper-right-diagonal"),
    ("vertical", 6, "vertical-flip"),
    ("upper-left-diagonal", 7, "upper-left-diagonal"),
]
CODECS = ("h264", "h265", "mjpeg")
APPSINK = "appsink drop=true max-buffers=1 sync=false"
TO_BGR = "videoconvert ! video/x-raw, format=BGR"


def is_jetson():
    """Whether this is an NVIDIA Jetson (L4T writes /etc/nv_tegra_release)."""
    return os.path.exists("/etc/nv_tegra_release")


def flip_entry(flip):
    name = (flip or "none").lower()
    for entry in FLIPS:
        if entry[0] == name:
            return entry
    raise UsageError("--input-flip: unknown value '{}' (expected one of: {})".format(
        flip, ", ".join(e[0] for e in FLIPS)))


def check_codec(codec, flag="--input-codec", allowed=CODECS):
    name = (codec or "h264").lower().replace("-", "")
    if name == "mjpg":
        name = "mjpeg"
    if name not in allowed:
        raise UsageError("{}: unknown codec '{}' (expected one of: {})".format(
            flag, codec, ", ".join(allowed)))
    return name


def _caps(media, width=None, height=None, rate=None):
    parts = [media]
    if width:
        parts.append("width={}".format(int(width)))
    if height:
        parts.append("height={}".format(int(height)))
    if rate:
        parts.append("framerate={}/1".format(int(round(float(rate)))))
    return ", ".join(parts)


def _flip(flip, jetson):
    name, number, method = flip_entry(flip)
    if name == "none":
        return []
    return ["nvvidconv flip-method={}".format(number) if jetson
            else "videoflip method={}".format(method)]


def csi_pipeline(sensor_id=0, width=1280, height=720, rate=30, flip=None):
    """A MIPI CSI camera on a Jetson (nvarguscamerasrc), BGR frames into appsink."""
    _, number, _ = flip_entry(flip)
    return " ! ".join([
        "nvarguscamerasrc sensor-id={}".format(int(sensor_id)),
        _caps("video/x-raw(memory:NVMM)", width or 1280, height or 720, rate or 30)
        + ", format=NV12",
        "nvvidconv flip-method={}".format(number),
        "video/x-raw, format=BGRx",
        TO_BGR,
        APPSINK,
    ])


def v4l2_pipeline(device="/dev/video0", width=None, height=None, rate=None, flip=None,
                  codec=None, jetson=False):
    """A V4L2 (USB) camera; ``codec='mjpeg'`` asks the camera for MJPEG and decodes it."""
    if codec and check_codec(codec) == "mjpeg":
        head = [_caps("image/jpeg", width, height, rate), "jpegdec"]
    elif codec:
        raise UsageError("--input-codec: a V4L2 camera takes raw or mjpeg, not '{}'".format(codec))
    else:
        head = [_caps("video/x-raw", width, height, rate)]
    return " ! ".join(["v4l2src device={}".format(device)] + head + ["videoconvert"]
                      + _flip(flip, False) + [TO_BGR, APPSINK])


def _decoder(codec, jetson):
    codec = check_codec(codec)
    if codec == "mjpeg":
        return ["rtpjpegdepay", "jpegdec"]
    short = codec[1:]  # 264 / 265
    depay = ["rtph{}depay".format(short), "h{}parse".format(short)]
    if jetson:
        return depay + ["nvv4l2decoder", "nvvidconv", "video/x-raw, format=BGRx"]
    return depay + ["avdec_h{}".format(short)]


def rtsp_pipeline(uri, codec="h264", latency=200, flip=None, jetson=False):
    """An RTSP stream (``rtsp://user:pass@host:554/path``)."""
    return " ! ".join(["rtspsrc location={} latency={}".format(uri, int(latency))]
                      + _decoder(codec, jetson) + _flip(flip, jetson) + [TO_BGR, APPSINK])


def rtp_input_pipeline(port, codec="h264", address=None, latency=200, flip=None, jetson=False):
    """An RTP/UDP stream received on ``port`` (``rtp://@:1234``; a multicast ``address``)."""
    name = check_codec(codec)
    encoding = {"h264": "H264", "h265": "H265", "mjpeg": "JPEG"}[name]
    src = "udpsrc port={}".format(int(port))
    if address:
        src = "udpsrc address={} port={} auto-multicast=true".format(address, int(port))
    caps = ('caps="application/x-rtp, media=(string)video, clock-rate=(int)90000, '
            'encoding-name=(string){}, payload=(int)96"'.format(encoding))
    return " ! ".join([src + " " + caps, "rtpjitterbuffer latency={}".format(int(latency))]
                      + _decoder(name, jetson) + _flip(flip, jetson) + [TO_BGR, APPSINK])


def rtp_output_pipeline(host, port, codec="h264", bitrate=4000000, jetson=False):
    """Annotated BGR frames from appsrc, encoded and sent as RTP/UDP to ``host:port``."""
    name = check_codec(codec, "--output-codec", ("h264", "h265"))
    short = name[1:]
    bitrate = int(bitrate or 4000000)
    if jetson:
        encode = ["nvvidconv", "video/x-raw(memory:NVMM), format=I420",
                  "nvv4l2h{}enc bitrate={} insert-sps-pps=true".format(short, bitrate)]
    else:  # x264enc / x265enc take kbit/s
        encode = ["videoconvert", "video/x-raw, format=I420",
                  "x{}enc bitrate={} tune=zerolatency speed-preset=ultrafast".format(
                      short, max(1, bitrate // 1000))]
    return " ! ".join(["appsrc is-live=true"] + encode + [
        "h{}parse".format(short), "rtph{}pay config-interval=1 pt=96".format(short),
        "udpsink host={} port={} sync=false async=false".format(host, int(port))])
