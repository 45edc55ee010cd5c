"""A frame source's calls (open, read, close) made in a thread of their own, one at a time,
while the live loop's main thread waits for each answer and still sees a stop.

A camera, stream or pipe can block a read in C for ever (no frame, no timeout): made in the
main thread, such a read kept SIGTERM and Ctrl-C from ending the loop (the signal's handler
only runs once the read returns).  In a daemon thread it blocks that thread alone: the loop
stops, closes its outputs, and the process exits without waiting for it."""
import logging
import queue
import threading

log = logging.getLogger(__name__)

STOPPED = object()  # what ``call`` returns when the stop came before the answer


class SourceThread(object):
    """Runs the functions it is given in one daemon thread, in order; ``call`` waits for
    each one's answer, looking at ``stop`` (a threading.Event) every ``poll`` seconds."""

    def __init__(self, stop, poll=0.2):
        self.stop, self.poll = stop, float(poll)
        self.requests = self.answers = None  # the running thread's (_start)
        self.thread = None
        self.waiting = 0  # calls whose answer was not waited for (the stop came first)

    @staticmethod
    def _run(requests, answers):
        while True:
            func = requests.get()
            if func is None:
                return
            try:
                answer = (True, func())
            except BaseException as exc:  # raised again in the caller's thread
                answer = (False, exc)
            answers.put(answer)

    def _start(self):
        if self.thread is None:  # queues of its own: none of an earlier thread's answers
            self.requests, self.answers = queue.Queue(), queue.Queue()
            self.thread = threading.Thread(target=self._run, name="oncolens-source",
                                           args=(self.requests, self.answers))
            self.thread.daemon = True  # a read blocked for ever does not keep the process
            self.thread.start()

    def call(self, func):
        """``func()``'s value, made in the thread (its exception raised here); STOPPED when
        the stop is set before it answers, or was set while an earlier call still runs."""
        if self.waiting or self.stop.is_set():
            return STOPPED
        self._start()
        self.requests.put(func)
        while True:
            try:
                ok, value = self.answers.get(timeout=self.poll)
            except queue.Empty:
                if self.stop.is_set():
                    self.waiting += 1
                    return STOPPED
                continue
            if not ok:
                raise value
            return value

    def finish(self, close, grace):
        """``close()`` in the thread once it is free, then the thread ends; True when that
        happened, False when a call still blocks it ``grace`` seconds after the stop (the
        source is left as it is: closing it under a read could crash the process). Without
        a stop the close is waited for, however long it takes, until a stop comes."""
        def closing():
            try:
                close()
            except Exception as exc:  # the outputs are closed already: say it, go on
                log.error("closing: %s", exc)

        if self.thread is None:  # never opened through it (or finished already)
            closing()
            return True
        thread, self.thread = self.thread, None  # a later call starts a thread of its own
        self.requests.put(closing)
        self.requests.put(None)
        while thread.is_alive() and not self.stop.is_set():
            thread.join(self.poll)  # a slow close of a source that ended: waited for
        thread.join(grace)  # bounded: a read that never returns is not waited for
        return not thread.is_alive()
