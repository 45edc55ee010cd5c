"""How long and how many: the numbers that bound what a client may take of the server, in
one place (docs/SERVE.md, "Under load", explains each), the reader that enforces the
time limits on a connection's bytes, and the writer that lets a slow reader have its answer.

The rate is chosen for a slow but honest uplink: 64 KiB/s is 512 kbit/s, a weak Wi-Fi link
or a VPN over a mobile connection; a 1.4 MB PNG then gets 20 s + 22 s, a 20 MB upload (the
default --max-upload-mb) 20 s + 320 s. A client that trickles its body slower than that held
its connection thread for as long as it liked (each pause could last 60 s, the whole body
for ever).
"""
import io
import socket
import time

IDLE_TIMEOUT = 60.0        # seconds any one read of a connection may wait for a byte
HEADER_TIMEOUT = 20.0      # seconds the request line and headers may take, all together
BODY_GRACE = 20.0          # seconds a body may lag behind BODY_MIN_RATE ...
BODY_MIN_RATE = 64 << 10   # ... bytes a second, on average, from its first read
UNAUTHORIZED_DRAIN = 5.0   # seconds the body of a request refused 401 is read (and dropped)
TOO_LARGE_DRAIN = 5.0      # ... and of one refused 413 (over --max-upload-mb)
REFUSED_DRAIN = 5.0        # ... and of a /classify refused before its upload is read (404
                           # no_model, 400 bad_query)
LINGER_SECONDS = 2.0       # a refused client still sending: seconds its bytes are read and
LINGER_BYTES = 16 << 20    # dropped after the answer, at most, and bytes (linger.py) ...
MAX_LINGERING = 64         # ... on this many connections at once (more are closed at once)
MAX_CONNECTIONS = 32       # connections open at once (--max-connections); more get 503
WRITE_PIECE = 64 << 10     # bytes of an answer sent at a time (one BODY_MIN_RATE second)
CHUNK = 64 << 10           # bytes of a request read (or dropped) at a time


class BodyTimeout(socket.timeout):
    """A request body that arrived slower than its pace allows (``DeadlineReader``), or
    the body of a refused request read past its cut-off."""


class DeadlineReader(io.RawIOBase):
    """The connection's bytes for ``rfile``. While ``deadline`` is set (the request line and
    headers are being read), no read waits past it (``socket.timeout`` then). Once the head
    has arrived (``headers_read``), the body must keep pace: from its first read, it may
    lag at most ``grace`` seconds behind ``rate`` bytes a second, so N bytes take at most
    grace + N / rate seconds (``BodyTimeout`` otherwise); ``cut_off`` sets an earlier end.
    ``idle`` is the longest any one read waits, and the socket's timeout after a body's
    read (the answer is written under it, not under what was left of the pace). With the
    idle timeout alone, a client that trickled a byte every 59 s held its connection thread
    for ever (slowloris). ``deadline`` and every time here are ``time.monotonic()``: on the
    wall clock, a step forward (NTP) cut off a request's head or a body keeping its pace
    (408), and a step back let one trickle on for as long as the clock went back."""

    def __init__(self, sock, idle, deadline=None, grace=BODY_GRACE, rate=BODY_MIN_RATE):
        io.RawIOBase.__init__(self)
        self._sock, self._idle = sock, idle
        self.deadline = deadline
        self.received = 0
        self._grace, self._rate = float(grace), float(rate)
        self._body = False            # the head has arrived: the body's pace applies
        self._body_started = None     # time of the body's first read
        self._body_received = 0
        self._cutoff = None

    def readable(self):
        return True

    def _body_left(self, now):
        if self._body_started is None:
            self._body_started = now
        end = self._body_started + self._grace + self._body_received / self._rate
        if self._cutoff is not None:
            end = min(end, self._cutoff)
        return end - now

    def _body_timeout(self, now):
        return BodyTimeout("{} bytes of the body arrived in {:.1f} s (expected at least {:g} "
                           "KiB/s after the first {:g} s)".format(
                               self._body_received, now - self._body_started,
                               self._rate / 1024.0, self._grace))

    def readinto(self, buf):
        now = time.monotonic()
        if self.deadline is not None:
            left = self.deadline - now
            if left <= 0:
                raise socket.timeout("the request line and headers took too long")
            self._sock.settimeout(min(self._idle, left))
            count = self._sock.recv_into(buf)
        elif self._body:
            left = self._body_left(now)
            if left <= 0:
                raise self._body_timeout(now)
            self._sock.settimeout(min(self._idle, left))
            try:
                count = self._sock.recv_into(buf)
            except socket.timeout:
                if left < self._idle:   # the pace's end came first, not the idle timeout
                    raise self._body_timeout(time.monotonic())
                raise
            finally:   # the answer is written on this socket: the idle timeout, not the pace's
                self._sock.settimeout(self._idle)
            self._body_received += count
        else:
            count = self._sock.recv_into(buf)
        self.received += count
        return count

    @property
    def body_received(self):
        """Bytes of the body received so far (read by the app or buffered for it)."""
        return self._body_received

    def headers_read(self):
        """The request's head has arrived: from now on the body's pace applies."""
        self.deadline = None
        self._body = True
        self._sock.settimeout(self._idle)

    def cut_off(self, seconds):
        """No read of the body waits past ``seconds`` from now (the body of a refused
        request, read only so that the client sees the answer)."""
        self._cutoff = time.monotonic() + seconds


class PieceWriter(io.BufferedIOBase):
    """The connection's ``wfile``: every write goes out ``piece`` bytes at a time, each
    under the socket's own timeout (the idle timeout). Since Python 3.5 that timeout bounds
    a whole ``sendall``, so an answer written at once (a PNG of several MB with
    ``?annotated=1``) to a client reading steadily at BODY_MIN_RATE was cut off after 60 s;
    now only a client that reads nothing for the idle timeout is. Unbuffered, as the
    ``wfile`` it replaces (socketserver's ``_SocketWriter``)."""

    def __init__(self, sock, piece=WRITE_PIECE):
        io.BufferedIOBase.__init__(self)
        self._sock, self._piece = sock, int(piece)

    def writable(self):
        return True

    def write(self, data):
        with memoryview(data) as view, view.cast("B") as flat:
            for start in range(0, len(flat), self._piece):
                self._sock.sendall(flat[start:start + self._piece])
            return len(flat)

    def fileno(self):
        return self._sock.fileno()
