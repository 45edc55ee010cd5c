"""Frame sinks: where annotated frames go.

A sink has ``write(frame, rgb_image) -> where`` and ``close()`` (and may have
``set_status(text)``, e.g. a window title).  ``open_sink(uri, overwrite=..., **options)``
picks one by URI scheme (the SCHEMES table: one row a scheme) or, for plain paths, by
extension:

    out.jpg / out_%i.jpg / folder/          ImageFileSink (input file names kept;
                                            image_sinks.py)
    out.mp4 (mp4v) / out.avi (MJPG)         VideoFileSink
    display://0                             DisplaySink (no display: one notice, headless)
    rtp://host:port                         RtpSink (GStreamer)
                                            (those two in stream_sinks.py)
    http://@:8080                           the web page's live MJPEG stream (appliance/web)

When ``jetson_utils`` is importable, display:// and rtp:// go through its videoOutput.
Nothing that exists is overwritten unless ``overwrite`` is set.
"""
import importlib
import logging
import os

from oncolens.appliance.errors import OncoLensError, UsageError
from oncolens.appliance.image_sinks import (ImageFileSink, planned_frames,  # noqa: F401
                                            refuse_existing)
from oncolens.appliance.outpaths import check_output_file, numbered_files
from oncolens.appliance.stream_sinks import DisplayUnavailable
from oncolens.appliance.video_writer import (VIDEO_FOURCC, _writer_backends,  # noqa: F401
                                             check_written, no_space_left, open_video_writer,
                                             other_outputs)

log = logging.getLogger(__name__)


def is_video_output(path):
    """A video file output: a type we write, or one read as input only (.webm, .mpg ...),
    which VideoFileSink refuses by name rather than make a folder called ``x.webm``. A name
    ending in / and an existing folder (``x.mp4`` made by an earlier ``x.mp4/``) are folder
    outputs whatever their type: an existing ``x.mp4`` folder was taken for a video file and
    refused ('already exists', then 'is a folder' with --overwrite)."""
    from oncolens.appliance.sources import VIDEO_EXTENSIONS
    ext = os.path.splitext(path)[1].lower()
    return (ext in VIDEO_FOURCC or ext in VIDEO_EXTENSIONS) and \
        not path.endswith(("/", os.sep)) and not os.path.isdir(path)


def _say_folder(uri):
    """An existing folder named like a video or an image file is written into as a folder
    (as any existing folder is): said once, for whoever expected a file of that type."""
    from oncolens.appliance.imageio import IMAGE_EXTENSIONS
    from oncolens.appliance.sources import VIDEO_EXTENSIONS
    ext = os.path.splitext(uri)[1].lower()
    if os.path.isdir(uri) and not uri.endswith(("/", os.sep)) and (
            ext in VIDEO_FOURCC or ext in VIDEO_EXTENSIONS or ext in IMAGE_EXTENSIONS):
        log.warning("output %s is an existing folder: the annotated frames are written into "
                    "it as images (for a %s file, give a name that is not a folder)", uri, ext)


def _missing_folders(folder):
    """The folders that do not exist yet on the way to ``folder``, outermost first."""
    missing = []
    while folder and not os.path.exists(folder):
        missing.insert(0, folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing


def _remove_made(path, existed, folders):
    """Remove the file ``path`` if it was not there before (``existed``), then ``folders``
    (made for it, outermost first) where they are still empty; never anything else."""
    try:
        if not existed and os.path.isfile(path):
            os.remove(path)
        for folder in reversed(folders):
            os.rmdir(folder)
    except OSError:  # something else was put there meanwhile: left as it is
        pass


class VideoFileSink(object):
    """Frames to a video file (cv2.VideoWriter), opened at the first frame's size.

    ``close()`` releases the writer, which finishes the container (an mp4 killed before
    that has no index and does not open): the live loop closes sinks on SIGINT/SIGTERM.
    """

    def __init__(self, uri, overwrite=False, rate=None, **options):
        self.uri = uri
        ext = os.path.splitext(uri)[1].lower()
        if ext not in VIDEO_FOURCC:
            raise UsageError("output {}: unsupported video type '{}' (expected one of: {})".format(
                uri, ext, ", ".join(sorted(VIDEO_FOURCC))))
        refuse_existing(uri, overwrite)
        check_output_file(uri, "output", overwrite=True)
        self.fourcc = VIDEO_FOURCC[ext]
        self.rate = float(rate or 30.0)
        self.rate_given = bool(rate)
        self.writer = None
        self.size = None
        self.frames = 0

    def adopt_rate(self, rate):
        """The source's frame rate, when no rate was given and nothing is written yet."""
        if rate and not self.rate_given and self.writer is None:
            self.rate = float(rate)

    def _open(self, image):
        """The writer, at ``image``'s size. When OpenCV cannot open it, what this made (the
        file, when it was not there before, and the folders made for it) is removed and one
        line names the output: no empty file is left for a rerun to trip over."""
        made = _missing_folders(os.path.dirname(self.uri))
        if made:
            os.makedirs(made[-1])
        existed = os.path.lexists(self.uri)
        self.size = (image.shape[1], image.shape[0])
        writer = open_video_writer(self.uri, self.fourcc, self.rate, self.size)
        if writer is None:
            _remove_made(self.uri, existed, made)
            if no_space_left(self.uri):  # not the codec's fault: another type fails too
                raise OncoLensError("output {}: OpenCV cannot open a video writer for it: no "
                                    "space is left on its disk: nothing written".format(self.uri))
            raise OncoLensError(
                "output {}: OpenCV cannot open a {} video writer for {}x{} frames at {:g} fps: "
                "nothing written ({})".format(self.uri, self.fourcc, self.size[0], self.size[1],
                                              self.rate, other_outputs(self.uri, self.fourcc)))
        self.writer = writer

    def write(self, frame, image):
        import cv2
        if self.writer is None:
            self._open(image)
        if (image.shape[1], image.shape[0]) != self.size:  # a folder of mixed sizes
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames += 1
        return "{}#{}".format(self.uri, self.frames - 1)

    def close(self):
        """Finish the file and read it back: a write that failed (a full disk) is not
        reported by OpenCV, so a file short of frames raises OncoLensError naming it."""
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        problem = check_written(self.uri, self.frames)
        if problem:
            raise OncoLensError(problem)
        log.info("wrote %d frames to %s", self.frames, self.uri)


# scheme -> "module:factory"; a factory takes (uri, overwrite=..., **options).
SCHEMES = [
    ("display", "oncolens.appliance.stream_sinks:DisplaySink"),
    ("rtp", "oncolens.appliance.stream_sinks:RtpSink"),
    ("http", "oncolens.appliance.web.live:http_sink"),
]
JETSON_UTILS_SCHEMES = ("display", "rtp", "rtsp", "webrtc")


def _factory(spec):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _open_jetson_utils(uri, scheme, options):
    """jetson_utils.videoOutput; False when jetson_utils is not importable."""
    try:
        import jetson_utils  # noqa: F401
    except ImportError:
        return False
    from oncolens.appliance.jetson_io import JetsonUtilsSink
    try:
        return JetsonUtilsSink(uri, options)
    except Exception as exc:  # jetson_utils raises plain Exceptions
        if scheme == "display":
            log.warning("%s: cannot open a window (%s): running headless", uri, exc)
            return None
        raise OncoLensError("output {}: jetson_utils cannot open it ({})".format(uri, exc))


def output_scheme(uri):
    """An output URI's scheme, lower case; "file" for a path (file:// or none)."""
    return uri.partition("://")[0].lower() if "://" in uri else "file"


def file_path(uri):
    """The path of a file output: jetson-inference's ``file://out.jpg`` names ``out.jpg``."""
    return uri[len("file://"):] if uri[:len("file://")].lower() == "file://" else uri


def pattern_files(uri):
    """For a numbered output (``out_%i.jpg``): whether a path is one of the files it writes,
    so that an input walk leaves them out (``outpaths.numbered_files``); else None."""
    folder = output_folder(uri)
    path = file_path(uri) if folder is not None else ""
    return numbered_files(path) if "%" in os.path.basename(path) else None


def output_folder(uri):
    """The folder a file output writes its images into (a folder, or a pattern's folder),
    or None (one file, a video, a display, a stream): an input walk leaves it out, so a
    rerun with --overwrite does not read its own earlier outputs as inputs."""
    if not uri or output_scheme(uri) != "file":
        return None
    path = file_path(uri)
    if is_video_output(path):
        return None
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        return path
    if "%" in os.path.basename(path):
        return os.path.dirname(path) or "."
    return None


def check_file_output(uri, source, overwrite=False):
    """The checks a file output makes when opened, plus, for image files, every name an
    image-file ``source`` will give: made before the model loads, so nothing is written and
    no input is classified when one of them would be refused on the way."""
    if not uri or output_scheme(uri) != "file":
        return
    uri = file_path(uri)
    if is_video_output(uri):
        if getattr(source, "kind", None) == "video" and os.path.exists(uri) \
                and os.path.samefile(uri, source.uri):  # written while read: both lost
            raise UsageError("output {}: it is the input video {}: give another name (even "
                             "--overwrite cannot replace a video while reading it)".format(
                                 uri, source.uri))
        VideoFileSink(uri, overwrite=overwrite)
        return
    sink = ImageFileSink(uri, overwrite=overwrite)  # its type, pattern, folder: any source
    frames, endless = planned_frames(source)
    if frames is not None:
        sink.check_frames(frames, endless)


def open_sink(uri, overwrite=False, **options):
    """The sink ``uri`` names, or None for no output (or a display that cannot open)."""
    if not uri:
        return None
    scheme = output_scheme(uri)
    if scheme in JETSON_UTILS_SCHEMES and options.get("jetson_utils", True) is not False:
        sink = _open_jetson_utils(uri, scheme, options)
        if sink is not False:
            return sink
    table = dict(SCHEMES)
    if scheme in table:
        try:
            return _factory(table[scheme])(uri, overwrite=overwrite, **options)
        except DisplayUnavailable as exc:
            log.warning("%s: cannot open a window (%s): running headless", uri, exc)
            return None
    if scheme != "file":
        raise UsageError("output {}: unknown scheme '{}://' (expected a file, folder, pattern, "
                         "video file, {})".format(uri, scheme, ", ".join(
                             s + "://" for s in sorted(table))))
    uri = file_path(uri)
    if is_video_output(uri):
        return VideoFileSink(uri, overwrite=overwrite, **options)
    _say_folder(uri)
    sink = ImageFileSink(uri, overwrite=overwrite, **options)
    sink.start()  # with overwrite, a folder's earlier copies go now, after the model loaded
    return sink
