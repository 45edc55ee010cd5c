"""jetson_utils' videoSource / videoOutput behind the source and sink interfaces.

Used only when ``jetson_utils`` is importable (a Jetson with jetson-inference installed):
it captures CSI/V4L2/RTSP/RTP with NVIDIA's zero-copy GStreamer pipelines.  jetson_utils
takes jetson-inference's own flags, so the --input-*/--output-* options are passed on as
they are.
"""
import logging
import time

import numpy as np

from oncolens.appliance.sources import EndOfStream, Frame, Source, SourceLost

log = logging.getLogger(__name__)

INPUT_FLAGS = (("width", "--input-width"), ("height", "--input-height"),
               ("rate", "--input-rate"), ("flip", "--input-flip"), ("codec", "--input-codec"),
               ("loop", "--input-loop"), ("latency", "--input-rtsp-latency"),
               ("save", "--input-save"), ("decoder", "--input-decoder"))
OUTPUT_FLAGS = (("codec", "--output-codec"), ("bitrate", "--bitrate"),
                ("encoder", "--output-encoder"), ("save", "--output-save"))


def jetson_argv(options, table):
    return ["{}={}".format(flag, options[name]) for name, flag in table
            if options.get(name) not in (None, "")]


class JetsonUtilsSource(Source):
    kind = "jetson_utils"

    def __init__(self, uri, options, timeout_ms=1000):
        self.uri = uri
        self.argv = jetson_argv(options, INPUT_FLAGS)
        self.timeout_ms = int(timeout_ms)
        self.live = not uri.startswith("file://")
        self.src = None
        self.index = 0

    def open(self):
        import jetson_utils
        try:
            self.src = jetson_utils.videoSource(self.uri, argv=self.argv)
        except Exception as exc:  # jetson_utils raises plain Exceptions
            raise SourceLost("cannot open {} ({})".format(self.uri, exc))
        self.rate = getattr(self.src, "GetFrameRate", lambda: None)()

    def read(self):
        import jetson_utils
        if self.src is None:
            self.open()
        try:
            img = self.src.Capture(format="rgb8", timeout=self.timeout_ms)
        except Exception as exc:  # older jetson_utils raise on a timeout
            if self.src.IsStreaming():
                log.debug("%s: capture timeout (%s)", self.uri, exc)
                return None
            img = None
        if img is None:
            if self.src.IsStreaming():
                return None  # a frame timeout: skipped
            if self.live:
                raise SourceLost("{}: stream stopped".format(self.uri))
            raise EndOfStream()
        jetson_utils.cudaDeviceSynchronize()
        rgb = np.array(jetson_utils.cudaToNumpy(img), dtype=np.uint8, copy=True)[:, :, :3]
        frame = Frame(rgb, self.uri, "frame_{:06d}.jpg".format(self.index), self.index,
                      time.time(), None)
        self.index += 1
        return frame

    def close(self):
        if self.src is not None:
            self.src.Close()
            self.src = None


class JetsonUtilsSink(object):
    kind = "jetson_utils"

    def __init__(self, uri, options):
        import jetson_utils
        self.uri = uri
        self.out = jetson_utils.videoOutput(uri, argv=jetson_argv(options, OUTPUT_FLAGS))

    def write(self, frame, image):
        import jetson_utils
        self.out.Render(jetson_utils.cudaFromNumpy(np.ascontiguousarray(image)))
        return self.uri

    @property
    def stopped(self):
        """The window was closed (imagenet stops then)."""
        return not self.out.IsStreaming()

    def set_status(self, text):
        self.out.SetStatus(text)

    def close(self):
        self.out.Close()
