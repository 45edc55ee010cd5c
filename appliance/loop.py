"""The live loop: frames in, classified and annotated frames out, until told to stop.

It keeps going: a camera or stream that drops is reopened with backoff; a frame timeout is
skipped; a frame that cannot be decoded is logged and skipped (the same error line at most
once per 10 s, with a count: repeats.py).  SIGINT and SIGTERM finish
the current frame, close every output (a video being written stays playable) and end the
loop normally, even while a read of the source is blocked (it is read in a thread of its
own: source_thread).  systemd is told READY=1 once the model and source are open, WATCHDOG=1
while frames flow and STOPPING=1 on the way out (nothing when $NOTIFY_SOCKET is unset).
"""
import logging
import signal
import sys
import threading
import time

from oncolens.appliance.errors import ImageReadError, OncoLensError
from oncolens.appliance.overlay import crop_box, render
from oncolens.appliance.postprocess import (NOT_A_NUMBER, NOT_A_NUMBER_CONSOLE,
                                            NOT_A_NUMBER_OVERLAY, Smoother, console_line,
                                            finite_rows, overlay_text)
from oncolens.appliance.repeats import RepeatedErrors
from oncolens.appliance.sdnotify import Notifier
from oncolens.appliance.source_thread import STOPPED, SourceThread
from oncolens.appliance.sources import EndOfStream, SourceLost

log = logging.getLogger(__name__)


class Backoff(object):
    """Delays between reconnection attempts: initial, x factor each time, capped."""

    def __init__(self, initial=0.5, factor=2.0, maximum=30.0):
        self.initial, self.factor, self.maximum = float(initial), float(factor), float(maximum)
        self.reset()

    def reset(self):
        self.current = self.initial

    def next(self):
        delay = self.current
        self.current = min(self.maximum, self.current * self.factor)
        return delay


class Stats(object):
    """Frame counts and the two rates the status line shows, over a sliding window.

    ``frames``: the frames classified (given a class); ``failed``: the frames given none
    (unreadable, refused by the preprocessing, the model's output not a number). No frame is
    in both: the source gave ``frames + failed``. The rates count every frame that went
    through the model (``inferred``: the classified and those whose output was not a
    number)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.frames = self.failed = self.timeouts = self.reconnects = self.inferred = 0
        self.output_errors = 0  # outputs that failed as they were closed (a video cut short)
        self._start = clock()
        self._win_frames, self._win_net = 0, 0.0
        self.began, self.network_seconds = self._start, 0.0

    def add(self, network_seconds):
        """One frame through the model, in ``network_seconds`` of inference."""
        self.inferred += 1
        self.network_seconds += network_seconds
        self._win_frames += 1
        self._win_net += network_seconds

    def totals(self):
        """(network-only FPS, end-to-end FPS) over the whole run."""
        wall = max(self.clock() - self.began, 1e-9)
        net = self.inferred / self.network_seconds if self.network_seconds > 0 else 0.0
        return net, self.inferred / wall

    def rates(self, restart=True):
        """(network-only FPS, end-to-end FPS) since the last call."""
        now = self.clock()
        wall = max(now - self._start, 1e-9)
        net = self._win_frames / self._win_net if self._win_net > 0 else 0.0
        e2e = self._win_frames / wall
        if restart:
            self._start, self._win_frames, self._win_net = now, 0, 0.0
        return net, e2e


def status_text(model, backend, net_fps, e2e_fps):
    return ("OncoLens | {} | {} {} | network {:.1f} FPS (inference only) | "
            "end-to-end {:.1f} FPS (capture to output)".format(
                model, backend.name, backend.precision, net_fps, e2e_fps))


class LiveLoop(object):
    """Run ``classifier`` on every frame of ``source`` and write to ``sinks``.  The source is
    opened, read and closed in a thread of its own (SourceThread): a read that blocks for
    ever does not keep a stop from ending the loop; ``source_grace`` seconds after the stop
    it is given up and the source left unclosed."""

    source_grace = 2.0

    def __init__(self, classifier, source, sinks=(), overlay=("text",), smoothing=0.0,
                 notifier=None, backoff=None, sleep=None, status_every=5.0, out=None,
                 model_name=None):
        self.clf, self.source = classifier, source
        self.sinks = [s for s in sinks if s is not None]
        self.overlay = set(overlay or ())
        self.smoother = Smoother(smoothing)
        self.notifier = notifier if notifier is not None else Notifier()
        self.backoff = backoff or Backoff()
        self.stop_event = threading.Event()
        self.sleep = sleep or self.stop_event.wait  # a signal cuts a backoff wait short
        self.status_every = float(status_every)
        self.out = out
        self.model_name = model_name or classifier.bundle.dir
        self.stats = Stats()
        self.errors = RepeatedErrors(log)  # the same error line at most once per 10 s
        self._cam_warned = False
        self.reader = SourceThread(self.stop_event)

    # -- stopping -------------------------------------------------------------------
    def stop(self, signum=None, _frame=None):
        if signum is not None:
            log.info("signal %d: finishing the current frame, then stopping", signum)
        self.stop_event.set()

    @property
    def stopping(self):
        return self.stop_event.is_set()

    def _install_signals(self):
        old = {}
        if threading.current_thread() is not threading.main_thread():
            return old
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, self.stop)
        return old

    # -- frames ---------------------------------------------------------------------
    def frames(self):
        """The source's frames; reconnects a live source that drops, skips timeouts."""
        while not self.stopping:
            try:
                frame = self.reader.call(self.source.read)
            except EndOfStream:
                return
            except SourceLost as exc:
                if not self.source.live:
                    raise
                self.reconnect(exc)
                continue
            if frame is STOPPED:
                return
            if frame is None:
                self.stats.timeouts += 1
                continue
            yield frame

    def reconnect(self, reason):
        log.warning("%s lost (%s): reconnecting", self.source.describe(), reason)
        self.backoff.reset()
        attempts = 0
        while not self.stopping:
            delay = self.backoff.next()
            self.sleep(delay)
            if self.stopping:
                return False
            attempts += 1
            try:
                if self.reader.call(self._reopen) is STOPPED:
                    return False
            except OncoLensError as exc:
                log.warning("reopening %s failed (attempt %d: %s); next try in %.1fs",
                            self.source.describe(), attempts, exc, self.backoff.current)
                continue
            self.stats.reconnects += 1
            log.info("%s reopened after %d attempt(s)", self.source.describe(), attempts)
            return True
        return False

    def _reopen(self):
        self.source.close()
        self.source.open()

    # -- one frame ------------------------------------------------------------------
    def process(self, frame):
        clf = self.clf
        tensor = clf.preprocessor.batch([frame.image])
        t0 = time.monotonic()
        result = clf.infer_tensor(tensor)
        self.stats.add(time.monotonic() - t0)
        if not finite_rows(result.probs)[0]:
            return self._not_a_number(frame)
        self.stats.frames += 1
        probs = self.smoother(result.probs[0])
        preds = clf.predictions(probs)
        self._print([console_line(pred) for pred in preds])
        lines = [overlay_text(p) for p in preds] if "text" in self.overlay else []
        self._draw(frame, lines, result)
        return preds

    def _print(self, lines):
        if self.out is not None:
            for line in lines:
                self.out.write(line + "\n")
            self.out.flush()

    def _not_a_number(self, frame):
        """A frame whose output is not a number has no class (argmax of NaN is the first):
        a failed frame, logged with why; the console line and the frame say so where the
        class would be, and the smoothing leaves it out. Returns no predictions."""
        self.stats.failed += 1
        self.errors.error("{}: {}".format(frame.origin, NOT_A_NUMBER))
        self._print([NOT_A_NUMBER_CONSOLE])
        self._draw(frame, [NOT_A_NUMBER_OVERLAY] if "text" in self.overlay else [], None)
        return []

    def _draw(self, frame, lines, result):
        """Write the frame to every output with ``lines`` on it (and the CAM of ``result``
        where asked for and there is one)."""
        if not self.sinks:
            return
        clf = self.clf
        cam = None
        if "cam" in self.overlay and result is not None:
            if result.cam is not None:
                cam = result.cam[0]
            elif not self._cam_warned:
                self._cam_warned = True
                log.warning("--overlay=cam: this model has no cam_0 output (export it with "
                            "--cam); drawing the text only")
        box = crop_box(frame.image.shape, clf.preprocessor.spec,
                       (clf.preprocessor.height, clf.preprocessor.width))
        annotated = render(frame.image, lines, cam, box)
        for sink in self.sinks:
            where = sink.write(frame, annotated)
            log.debug("%s -> %s", frame.origin, where)
            if getattr(sink, "stopped", False):
                log.info("%s was closed: stopping", where)
                self.stop()

    def _status(self, last):
        now = time.monotonic()
        if now - last < self.status_every:
            return last
        text = status_text(self.model_name, self.clf.backend, *self.stats.rates())
        log.info("%s", text)
        self.notifier.status(text)
        for sink in self.sinks:
            if hasattr(sink, "set_status"):
                sink.set_status(text)
        return now

    def run(self):
        """Process frames until the source ends or a signal arrives; returns Stats."""
        old = self._install_signals()
        try:
            if self.reader.call(self.source.open) is not STOPPED:
                for sink in self.sinks:
                    if hasattr(sink, "adopt_rate"):
                        sink.adopt_rate(self.source.rate)
                self.notifier.ready("classifying {}".format(self.source.describe()))
                self._run_frames()
        finally:
            self.notifier.stopping()
            self.close()
            for sig, handler in old.items():
                signal.signal(sig, handler)
        self.errors.flush()
        log.info("%d frame(s) read: %d classified, %d failed; %d reconnect(s)%s; %s",
                 self.stats.frames + self.stats.failed, self.stats.frames,
                 self.stats.failed, self.stats.reconnects,
                 " (stopped by signal)" if self.stopping else "",
                 status_text(self.model_name, self.clf.backend, *self.stats.totals()))
        return self.stats

    def _run_frames(self):
        last = time.monotonic()
        for frame in self.frames():
            self.errors.tick()
            if frame.error:
                self.errors.error(frame.error)
                self.stats.failed += 1
                continue
            try:
                self.process(frame)
            except ImageReadError as exc:  # refused by the preprocessing: skip the frame
                self.errors.error("{}: {}".format(frame.origin, exc))
                self.stats.failed += 1
                continue
            self.notifier.watchdog()
            last = self._status(last)

    def close(self):
        for closer in [s.close for s in self.sinks]:
            try:
                closer()
            except Exception as exc:  # one failing output must not keep the others open
                log.error("closing: %s", exc)
                self.stats.output_errors += 1
        if not self.reader.finish(self.source.close, self.source_grace):
            log.warning("%s: a read has not returned %g s after the stop: stopping without "
                        "it (the source is left unclosed)", self.source.describe(),
                        self.source_grace)
        sys.stdout.flush()
