"""Error lines of the live loop, the same one repeated at most once per interval.

A model that gives NaN for every frame, or a camera whose every frame is refused, failed
~30 times a second: one error line each wore a Jetson's SD card and buried the log.  Each
distinct message (its text: a folder's lines name their file, so each file keeps its own
line) is logged the first time; the same message again within ``every`` seconds is counted,
and once ``every`` seconds have passed a line gives the count ("the last 299 frames failed
the same way in 10 s: ...").  ``flush()`` (at the end of the run) gives the counts not yet
told.
"""
import time

REPEAT_SECONDS = 10.0


class RepeatedErrors(object):
    """log.error(message) the first time, then a count of repeats at most every ``every`` s."""

    def __init__(self, log, every=REPEAT_SECONDS, clock=time.monotonic):
        self.log, self.every, self.clock = log, float(every), clock
        self._open = {}  # message -> [when its last line was logged, repeats since]

    def error(self, message):
        now = self.clock()
        self._sweep(now)
        seen = self._open.get(message)
        if seen is None:
            self._open[message] = [now, 0]
            self.log.error("%s", message)
        else:
            seen[1] += 1

    def tick(self):
        """Called once a frame: the counts whose interval has passed are told even when the
        errors have stopped (a camera that recovered)."""
        self._sweep(self.clock())

    def _sweep(self, now):
        """Tell the counts whose interval has passed; forget messages not repeated in it."""
        for message, seen in list(self._open.items()):
            if now - seen[0] < self.every:
                continue
            if seen[1]:
                self._count(message, seen[1], now - seen[0])
                self._open[message] = [now, 0]
            else:
                del self._open[message]

    def _count(self, message, repeats, seconds):
        self.log.error("the last %d frame(s) failed the same way in %.0f s: %s", repeats,
                       seconds, message)

    def flush(self):
        """The counts not yet told (the end of the run); forgets every message."""
        now = self.clock()
        for message, seen in sorted(self._open.items(), key=lambda item: item[1][0]):
            if seen[1]:
                self._count(message, seen[1], now - seen[0])
        self._open = {}
