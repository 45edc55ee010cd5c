"""Video files through cv2.VideoWriter: which writer backends are tried, and what to name
instead when none opens an output (sinks.VideoFileSink)."""
import os

# extension -> OpenCV fourcc that opencv-python writes without extra codecs
VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def _listed_backends(cv2):
    """OpenCV's video writer backends (their CAP_* numbers) in its order of preference;
    None where this OpenCV cannot list them (no videoio_registry, or it fails)."""
    try:
        return [int(b) for b in cv2.videoio_registry.getWriterBackends()]
    except (AttributeError, cv2.error):
        return None


def _writer_backends(cv2):
    """The apiPreference arguments to try, in order: OpenCV's own video writer backends in its
    order of preference, less CV_IMAGES (the image-sequence writer, ``name_%03d.png``: it never
    fits a video file name, and when tried before the one that does, e.g. where OpenCV has no
    FFMPEG, it prints a multi-line CV_IMAGES warning on every run). ``[()]`` (OpenCV's own
    choice, CAP_ANY) where this OpenCV cannot list them."""
    wanted = [(b,) for b in _listed_backends(cv2) or ()
              if b != getattr(cv2, "CAP_IMAGES", 2000)]
    return wanted or [()]


def open_video_writer(path, fourcc, fps, size):
    """An opened cv2.VideoWriter for ``path`` (``fourcc`` four characters, ``size`` (w, h)),
    each writer backend tried in turn as OpenCV's own choice would, but for the image-sequence
    one; None when none opens it."""
    import cv2
    code = cv2.VideoWriter_fourcc(*fourcc)
    for api in _writer_backends(cv2):
        try:
            writer = cv2.VideoWriter(path, *(api + (code, fps, size)))
        except cv2.error:
            continue
        if writer.isOpened():
            return writer
        writer.release()
    return None


def _writable_types(cv2):
    """The video types this OpenCV can write, from its writer backends: every one of
    VIDEO_FOURCC with FFMPEG or GStreamer, only .avi with no more than its own MJPEG writer
    (CV_MJPEG, AVI only), none without either; None where it cannot list them."""
    listed = _listed_backends(cv2)
    if listed is None:
        return None
    backends = set(listed)
    if backends & set([getattr(cv2, "CAP_FFMPEG", 1900), getattr(cv2, "CAP_GSTREAMER", 1800)]):
        return sorted(VIDEO_FOURCC)
    return [".avi"] if getattr(cv2, "CAP_OPENCV_MJPEG", 2200) in backends else []


IMAGES_INSTEAD = "a folder of images (a name ending in /, or a pattern like out_%i.jpg)"
# why a type but .avi failed where OpenCV lists no FFMPEG or GStreamer writer (docs/APPLIANCE.md)
NEEDS_FULL_WRITER = ("writing {} needs an FFMPEG or GStreamer video writer in OpenCV, and this "
                     "one has neither: ")


def other_outputs(uri, fourcc):
    """What to name instead of the video output ``uri`` whose ``fourcc`` writer did not open:
    the video types of the other codec that this OpenCV's writer backends can write (an
    .avi where its own MJPEG writer is all it has), and a folder of images, which any can."""
    import cv2
    ext = os.path.splitext(uri)[1].lower()
    writable = _writable_types(cv2)
    why = ""
    if writable is None or len(writable) > 1:  # a full writer: the codec is what failed
        others = [e for e in sorted(VIDEO_FOURCC) if VIDEO_FOURCC[e] != fourcc and
                  (writable is None or e in writable)]
    else:
        others = [e for e in writable if e != ext]
        why = NEEDS_FULL_WRITER.format(ext.lstrip(".")) if ext != ".avi" else ""
    if not others:
        return why + "this OpenCV writes no other video type: write {} instead".format(
            IMAGES_INSTEAD)
    return why + "name another video type this OpenCV can write: {}; or write {}".format(
        ", ".join(others), IMAGES_INSTEAD)


def no_space_left(path):
    """Whether the file system that holds ``path`` (or the folder it goes in) has no space
    left for this user; False where that cannot be told."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        st = os.statvfs(folder)
    except (AttributeError, OSError):
        return False
    return st.f_bavail == 0


def frames_read_back(path):
    """The frame count a finished video file reports when OpenCV opens it again: None when
    it does not open, -1 when its container does not say."""
    import cv2
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return None
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def check_written(path, frames):
    """None when the video ``path`` reads back with the ``frames`` it was given, else why
    not: OpenCV's writer reports no error when a write fails (a full disk: ``Failed to write
    frame`` on stderr, the file cut short or empty), so a finished file is opened again."""
    found = frames_read_back(path)
    if found is not None and (found < 0 or found >= frames):
        return None
    disk = " (no space is left on its disk)" if no_space_left(path) else ""
    what = ("does not open as a video" if found is None else
            "opens with {} of them counted in it".format(found))
    return ("output {}: the video is incomplete: OpenCV's writer was given {} frames but the "
            "file {}{}; what it holds is kept".format(path, frames, what, disk))
