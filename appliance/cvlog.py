"""OpenCV's log level lowered while images decode or encode, across threads (imageio, lowbits)."""
import threading


class _QuietOpenCV(object):
    """OpenCV's log level lowered while images decode (to ERROR: a file it cannot read prints
    a WARN line naming no file, and our own error, which names it, follows anyway) or encode
    (to SILENT: our error names the file and the limit). Every instance counts into one shared
    state, so that threads overlapping each other, decoding or encoding, leave the quietest
    level still wanted in force and restore the user's level once, when the last one ends."""

    lock = threading.Lock()
    active = {}   # level name -> how many are inside
    saved = None  # (cv2.utils.logging, the level before the first one entered)

    def __init__(self, level="LOG_LEVEL_ERROR"):
        self.level = level

    @classmethod
    def _apply(cls):
        logging, before = cls.saved
        wanted = [getattr(logging, name) for name, n in cls.active.items() if n > 0]
        logging.setLogLevel(min([before] + wanted) if wanted else before)

    def __enter__(self):
        import cv2
        logging = getattr(getattr(cv2, "utils", None), "logging", None)  # absent in old builds
        if logging is None:
            return self
        cls = _QuietOpenCV
        with cls.lock:
            if cls.saved is None:
                cls.saved = (logging, logging.getLogLevel())
            cls.active[self.level] = cls.active.get(self.level, 0) + 1
            cls._apply()
        return self

    def __exit__(self, *exc):
        cls = _QuietOpenCV
        with cls.lock:
            if cls.saved is None or not cls.active.get(self.level):
                return False
            cls.active[self.level] -= 1
            cls._apply()
            if not any(cls.active.values()):
                cls.saved = None
        return False


quiet_opencv = _QuietOpenCV()
silent_opencv = _QuietOpenCV("LOG_LEVEL_SILENT")  # encoding: its only errors are ours to say
