"""The sinks that are not files: a window (display://) and an RTP stream (rtp://), picked
by ``sinks.open_sink`` from its SCHEMES table."""
import logging
import os
import sys

from oncolens.appliance import gst
from oncolens.appliance.errors import MissingDependency, OncoLensError, UsageError

log = logging.getLogger(__name__)


class DisplayUnavailable(OncoLensError):
    """No window can be opened here (no display, or OpenCV without a GUI)."""


def display_problem():
    """Why no window can be opened here, or None when one can."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return "no DISPLAY is set"
    import cv2
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:") and "NONE" in line:
            return "this OpenCV has no GUI (opencv-python-headless)"
    return None


class DisplaySink(object):
    """A window (cv2.imshow); the status line goes in its title."""

    def __init__(self, uri, overwrite=False, **options):
        problem = display_problem()
        if problem:
            raise DisplayUnavailable(problem)
        import cv2
        self.title = "OncoLens"
        self.stopped = False
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise DisplayUnavailable(str(exc).strip().splitlines()[-1])
        self.uri = uri

    def write(self, frame, image):
        import cv2
        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in (27, ord("q")) or cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.stopped = True  # Esc, q or the window closed: the loop stops, as imagenet's
        return self.uri

    def set_status(self, text):
        import cv2
        cv2.setWindowTitle(self.title, text)

    def close(self):
        import cv2
        cv2.destroyAllWindows()


class RtpSink(object):
    """Frames encoded and sent as RTP/UDP (needs OpenCV with GStreamer)."""

    def __init__(self, uri, overwrite=False, rate=None, codec=None, bitrate=None, **options):
        from oncolens.appliance.sources import opencv_has_gstreamer, parse_uri
        host, _, port = parse_uri(uri)[1].rpartition(":")
        if not host or not port.isdigit():
            raise UsageError("output {}: expected rtp://HOST:PORT".format(uri))
        if not opencv_has_gstreamer():
            raise MissingDependency("jetson_utils, or OpenCV built with GStreamer",
                                    "output {}".format(uri),
                                    "JetPack's OpenCV has GStreamer; the PyPI wheels do not")
        self.uri = uri
        self.rate = float(rate or 30.0)
        self.pipeline = gst.rtp_output_pipeline(host, int(port), codec or "h264", bitrate,
                                                gst.is_jetson())
        self.writer = None

    def write(self, frame, image):
        import cv2
        if self.writer is None:
            log.info("GStreamer pipeline: %s", self.pipeline)
            self.writer = cv2.VideoWriter(self.pipeline, cv2.CAP_GSTREAMER, 0, self.rate,
                                          (image.shape[1], image.shape[0]))
        self.writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return self.uri

    def close(self):
        if self.writer is not None:
            self.writer.release()
            self.writer = None
