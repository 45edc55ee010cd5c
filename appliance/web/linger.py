"""A lingering close: a connection whose client may still be sending (a refused upload's
body, a request the HTTP layer refused, a connection over --max-connections) is shut down
for writing once its answer is out, and what still arrives is read and dropped for a short,
bounded time before the socket is closed.

Closed at once with bytes unread, a TCP socket sends a reset rather than a FIN, and a reset
may reach the client before it has read the answer (the answer still in the server's send
queue is dropped too): a curl uploading a too-large file then said "connection reset"
instead of showing the 413. Apache and nginx linger for the same reason.

One thread, started when a socket is handed over and ended when none is left, lingers for
every connection at once, so a lingering close never holds a connection's thread (nor the
accepting thread, for the 503 of the connection cap); at most ``max_sockets`` linger at
once, beyond that a socket is closed at once, as before.
"""
import logging
import selectors
import socket
import threading
import time

from oncolens.appliance.web.limits import CHUNK, LINGER_BYTES, LINGER_SECONDS, MAX_LINGERING

log = logging.getLogger(__name__)


def close_now(sock):
    try:
        sock.close()
    except OSError:
        pass


class Lingerer(object):
    """Sockets handed to ``close_softly``: shut down for writing, then read and dropped until
    the client closes, ``seconds`` pass or ``max_bytes`` arrive, whichever comes first. Those
still lingering when the process exits are closed by the system."""
    # class attributes, so tests shorten them (limits.py has the numbers)
    seconds, max_bytes, max_sockets = LINGER_SECONDS, LINGER_BYTES, MAX_LINGERING
    poll = 0.1   # seconds between looks at newly handed sockets while some linger
    # deadlines are on the monotonic clock: the wall clock set back held sockets that long

    def __init__(self):
        self._lock = threading.Lock()
        self._new = []          # (socket, deadline, bytes left) not yet watched
        self._count = 0         # sockets lingering (new ones included)
        self._running = False

    def close_softly(self, sock):
        """Send a FIN (the answer is complete), then linger; closed at once when it cannot
        (the client is gone, the lingerer is closed or full)."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            close_now(sock)
            return
        with self._lock:
            if self._count >= self.max_sockets:
                close_now(sock)
                return
            self._new.append((sock, time.monotonic() + self.seconds, self.max_bytes))
            self._count += 1
            if not self._running:
                self._start()

    def _start(self):
        """The lingering thread (under the lock). When it cannot start (RuntimeError: can't
        start new thread, the process at its limit), what waited for it is closed at once
        and the lingerer is left as it was before: it stayed "running" with no thread, and
        every socket handed over after that stayed open, up to ``max_sockets`` of them."""
        self._running = True
        thread = threading.Thread(target=self._run, name="oncolens-linger")
        thread.daemon = True
        try:
            thread.start()
        except RuntimeError as exc:
            self._running = False
            waiting, self._new = self._new, []
            self._count -= len(waiting)
            for sock, _, _ in waiting:
                close_now(sock)
            log.warning("lingering close: cannot start its thread (%s); %d connection(s) "
                        "closed at once", exc, len(waiting))

    def lingering(self):
        with self._lock:
            return self._count

    def _take_new(self, selector):
        with self._lock:
            new, self._new = self._new, []
            if not new and not selector.get_map():
                self._running = False
                return False
        for sock, deadline, left in new:
            selector.register(sock, selectors.EVENT_READ, [deadline, left])
        return True

    def _done(self, selector, sock):
        selector.unregister(sock)
        close_now(sock)
        with self._lock:
            self._count -= 1

    def _read(self, selector, key):
        sock, state = key.fileobj, key.data
        try:
            block = sock.recv(min(CHUNK, state[1]))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            block = b""
        state[1] -= len(block)
        if not block or state[1] <= 0:
            self._done(selector, sock)

    def _run(self):
        selector = selectors.DefaultSelector()
        try:
            while self._take_new(selector):
                for key, _ in selector.select(self.poll):
                    self._read(selector, key)
                now = time.monotonic()
                for key in list(selector.get_map().values()):
                    if key.data[0] <= now:
                        self._done(selector, key.fileobj)
        except Exception:   # never leave sockets open for a bug here
            log.exception("lingering close failed; closing its sockets")
            for key in list(selector.get_map().values()):
                self._done(selector, key.fileobj)
            with self._lock:
                self._running = False
        finally:
            selector.close()
