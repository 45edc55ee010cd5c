"""A bounded queue and one worker thread in front of the model.

Request threads decode their image and ``submit`` it; one worker takes what is waiting
(up to ``max_batch`` images at once), runs the classifier and wakes each request.  When
``maxsize`` images already wait, ``submit`` raises ``QueueFull`` with a Retry-After
estimate, so the server answers 503 at once instead of piling work up. Once the worker
thread has ended, ``submit`` raises ``WorkerEnded`` and whatever still waited is answered
(``Job.worker_ended``): such a request waited for --timeout before its 503. What still
waits when the server closes the queue (a normal stop) is answered ``Job.shutting_down``,
and ``submit`` raises ``ShuttingDown`` from then on (``closed``): a normal stop is not told
as a worker that ended by a bug.
"""
import logging
import math
import threading
import time

import queue as _queue  # the standard library's (absolute import), not this module

log = logging.getLogger(__name__)


class QueueFull(Exception):
    def __init__(self, retry_after):
        super(QueueFull, self).__init__("the inference queue is full")
        self.retry_after = retry_after


class WorkerEnded(Exception):
    def __init__(self):
        super(WorkerEnded, self).__init__(WORKER_ENDED)


class ShuttingDown(Exception):
    """The server closed the queue (a normal stop): nothing is taken any more."""

    def __init__(self):
        super(ShuttingDown, self).__init__(SHUTTING_DOWN)


WORKER_ENDED = ("the model's worker has ended: nothing is classified any more until the "
                "server is restarted")
SHUTTING_DOWN = "the server is shutting down: this image was not classified; try again later"
SHUTDOWN_RETRY_AFTER = 10   # seconds: the Retry-After of a request answered so


class Job(object):
    """One image waiting for the model; ``probs`` or ``error`` once ``done`` is set."""

    def __init__(self, image):
        self.image = image
        self.done = threading.Event()
        self.probs = None
        self.error = None
        self.submitted = time.time()
        self.started = None
        self.infer_s = None
        self.cancelled = False
        self.worker_ended = False   # answered because the worker thread ended (not run)
        self.shutting_down = False  # answered because the server closed the queue (not run)

    def cancel(self):
        """Nobody waits for this one any more (its request timed out): skip it if not begun."""
        self.cancelled = True

    def wait(self, timeout=None):
        return self.done.wait(timeout)

    @property
    def queued_s(self):
        return (self.started or time.time()) - self.submitted


class InferenceQueue(object):
    def __init__(self, classifier, maxsize=16, max_batch=4, on_classified=None):
        self.classifier = classifier
        self.on_classified = on_classified  # called with the number of images the model ran
        self.capacity = int(maxsize)
        self.max_batch = max(1, int(max_batch))
        self._q = _queue.Queue(self.capacity)
        self._stop = threading.Event()
        self._per_image = None  # moving average, seconds per image
        self.busy = False
        self._running_since = None  # time.monotonic() the batch the model runs now began
        self._ended = False  # set by the worker as it ends, before it answers what waits
        self._thread = threading.Thread(target=self._run, name="oncolens-infer")
        self._thread.daemon = True
        self._thread.start()

    @property
    def depth(self):
        return self._q.qsize()

    def running_for(self, now=None):
        """Seconds the batch the model runs now has been running (0.0 while none runs)."""
        since = self._running_since
        if since is None:
            return 0.0
        return (time.monotonic() if now is None else now) - since

    @property
    def worker_alive(self):
        """Whether the worker thread still takes images (False once it ended: closed, or
        ended by a bug)."""
        return self._thread.is_alive() and not self._ended

    @property
    def closed(self):
        """Whether the server has closed the queue (a normal stop, ``close``): the worker
        then ends without a bug, and ``submit`` raises ShuttingDown, not WorkerEnded."""
        return self._stop.is_set()

    def retry_after(self):
        """Seconds a client should wait before trying again (at least 1)."""
        per_image = self._per_image or 0.1
        return max(1, int(math.ceil((self.depth + 1) * per_image)))

    def submit(self, image):
        """The queued ``Job``; QueueFull when ``capacity`` images wait; ShuttingDown once the
        queue is closed, WorkerEnded once the worker thread has ended otherwise (a bug),
        also when either happened as this one was queued."""
        self._refuse_if_ended()
        job = Job(image)
        try:
            self._q.put_nowait(job)
        except _queue.Full:
            raise QueueFull(self.retry_after())
        if self.closed:   # closed meanwhile: close() may have answered what waited already
            self._answer_waiting(SHUTTING_DOWN, closing=True)
            raise ShuttingDown()
        if not self.worker_alive:   # it ended meanwhile: nobody would take this one
            self._answer_waiting(WORKER_ENDED, ended=True)
            raise WorkerEnded()
        return job

    def _refuse_if_ended(self):
        if self.closed:
            raise ShuttingDown()
        if not self.worker_alive:
            raise WorkerEnded()

    def _answer_waiting(self, message, ended=False, closing=False):
        """Answer every job still queued with ``message`` as its error."""
        while True:
            try:
                job = self._q.get_nowait()
            except _queue.Empty:
                break
            job.error, job.worker_ended, job.image = message, ended, None
            job.shutting_down = closing
            job.done.set()

    def _take(self):
        try:
            jobs = [self._q.get(timeout=0.2)]
        except _queue.Empty:
            return []
        while len(jobs) < self.max_batch:
            try:
                jobs.append(self._q.get_nowait())
            except _queue.Empty:
                break
        return jobs

    def _run(self):
        jobs = []
        try:
            while not self._stop.is_set():
                jobs = self._take()
                if jobs:
                    self._run_batch(jobs)
        finally:
            self._ended = True   # first: a submit from now on answers its own job
            if not self._stop.is_set():   # ended by a bug: nothing waits for --timeout
                log.error("the model's worker thread has ended: requests are answered 503 "
                          "worker_ended until the server is restarted")
                for job in jobs:          # the batch it ended in
                    if not job.done.is_set():
                        job.error, job.worker_ended, job.image = WORKER_ENDED, True, None
                        job.done.set()
                self._answer_waiting(WORKER_ENDED, ended=True)

    def _run_batch(self, jobs):
        """``_process`` one batch. Whatever fails in it (a bug after the model call) is
        logged, each of its requests still waiting is answered (``_fail_unanswered``) and
        the worker goes on: an exception here ended the worker thread, the batch's requests
        then waited for --timeout and were answered 503, and so was every later one."""
        try:
            self._process(jobs)
        except Exception as exc:
            log.exception("the model's worker failed on a batch of %d image(s); their "
                          "requests are answered with an error and the worker goes on",
                          len(jobs))
            self._fail_unanswered(jobs, "inference failed ({}): see the server log".format(
                type(exc).__name__))
        finally:
            self.busy = False
            self._running_since = None

    @staticmethod
    def _fail_unanswered(jobs, message):
        """Wake every job of ``jobs`` not answered yet: one whose row the model gave keeps
        it, any other gets ``message`` as its error (its request: 500 inference_failed)."""
        for job in jobs:
            if job.done.is_set():
                continue
            if job.probs is None and job.error is None:
                job.error = message
            job.image = None
            job.done.set()

    def _infer(self, jobs):
        """Run ``jobs`` through the model; a failure fails only the image that caused it."""
        try:
            probs = self.classifier.infer_images([job.image for job in jobs]).probs
        except Exception as exc:  # any failure answers the requests, never hangs them
            if len(jobs) > 1:     # find out whose it is: one image at a time
                log.warning("a batch of %d failed (%s): running its images one by one",
                            len(jobs), type(exc).__name__)
                for job in jobs:
                    self._infer([job])
                return
            log.exception("inference failed for one image")
            # the message stays in the log: it may describe the server (paths, memory)
            jobs[0].error = "inference failed ({}): see the server log".format(
                type(exc).__name__)
            return
        for job, row in zip(jobs, probs):
            job.probs = row

    def _process(self, jobs):
        for job in [job for job in jobs if job.cancelled]:
            job.error = "cancelled: the request timed out"
            job.image = None
            job.done.set()
        jobs = [job for job in jobs if not job.cancelled]
        if not jobs:
            return
        self.busy = True
        self._running_since = time.monotonic()
        start = time.time()
        for job in jobs:
            job.started = start
        self._infer(jobs)
        ran = sum(1 for job in jobs if job.error is None)
        if ran and self.on_classified is not None:
            try:
                self.on_classified(ran)
            except Exception:   # bookkeeping (the metrics' count): the results stand
                log.exception("counting %d classified image(s) failed; their results are "
                              "answered all the same", ran)
        elapsed = time.time() - start
        per_image = elapsed / len(jobs)
        self._per_image = per_image if self._per_image is None else (
            0.8 * self._per_image + 0.2 * per_image)
        for job in jobs:
            job.infer_s = elapsed
            job.image = None
            job.done.set()

    def close(self):
        """Stop the worker; whatever still waits is answered ``shutting_down`` (not run:
        its request is answered 503 shutting_down, not 500 inference_failed)."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._answer_waiting(SHUTTING_DOWN, closing=True)
