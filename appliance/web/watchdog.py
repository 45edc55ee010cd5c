"""The systemd watchdog's ping for ``oncolens serve``: sent only while the model's worker is
healthy.

The server pinged from its accept loop alone, so the ping said only that connections were
still taken: a model hung in inference (a wedged GPU, a deadlock in a backend) left every
request waiting for ``--timeout`` and then answered 503, for ever, and WatchdogSec never
restarted it. Now the ping is withheld while one batch has been running for more than
``stall_after`` seconds (half of WatchdogSec by default), or once the worker thread has ended:
systemd then restarts the unit at most WatchdogSec later. The first withheld ping and the
recovery, if the batch ends after all, are logged.

``oncolens classify`` pings once per frame from the thread that runs the model, so a frame
stuck in inference stops its pings the same way (docs/APPLIANCE.md).
"""
import logging

log = logging.getLogger("oncolens.serve")


def worker_state(queue, stall_after):
    """The model's worker as /health reports it: (status, details). ``status`` is "ok",
    "stalled" (one batch has been in inference for more than ``stall_after`` seconds),
    "shutting_down" (the server closed the queue: a normal stop) or "worker_ended" (the
    worker thread has ended otherwise, by a bug: nothing is classified any more);
    ``details``: ``worker_alive``, ``running_s`` (how long the batch in the model now has
    run, 0 while none runs) and ``stalled_after_s``. ("ok", None) without a queue (a live
    stream without a classifier)."""
    if queue is None:
        return "ok", None
    alive, running = queue.worker_alive, queue.running_for()
    details = {"worker_alive": alive, "running_s": round(running, 3),
               "stalled_after_s": stall_after}
    if queue.closed:
        return "shutting_down", details
    if not alive:
        return "worker_ended", details
    if running > stall_after:
        return "stalled", details
    return "ok", details


class WorkerWatchdog(object):
    """``ping()``: the Notifier's ``watchdog()`` unless ``queue``'s worker is stuck or gone.
    Without a systemd watchdog (no WATCHDOG_USEC, or no notify socket) nothing is checked:
    nobody restarts the process, and a withheld ping would change nothing."""

    def __init__(self, notifier, queue, stall_after=None):
        self.notifier, self.queue = notifier, queue
        self.stall_after = notifier.interval / 2.0 if stall_after is None else stall_after
        self.withheld = False   # pings are withheld now (logged once, as it began)

    @property
    def checking(self):
        return bool(self.queue is not None and self.notifier.enabled and self.notifier.interval)

    def problem(self):
        """Why the worker is not healthy (a sentence), or None when it is."""
        if not self.checking:
            return None
        if not self.queue.worker_alive:
            return "the model's worker thread has ended"
        running = self.queue.running_for()
        if running > self.stall_after:
            return ("one batch has been in inference for {:.1f} s, over {:g} s (half of "
                    "WatchdogSec)".format(running, self.stall_after))
        return None

    def ping(self):
        """WATCHDOG=1 when the worker is healthy (rate-limited by the Notifier); True when
        it was sent."""
        problem = self.problem()
        if problem is not None:
            if not self.withheld:
                self.withheld = True
                log.error("%s: the systemd watchdog is no longer pinged, so systemd restarts "
                          "the server within %g s unless it recovers", problem,
                          self.notifier.interval)
            return False
        if self.withheld:
            self.withheld = False
            log.warning("the model's worker answers again: the systemd watchdog is pinged "
                        "again")
        return self.notifier.watchdog()
