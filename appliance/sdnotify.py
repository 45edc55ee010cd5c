"""systemd's notify protocol with the standard library only (no extra dependency).

The appliance calls ``ready()`` once the model is loaded and the source is open,
``watchdog()`` for every frame (rate-limited here to half the watchdog interval), and
``stopping()`` on shutdown.  ``oncolens serve`` pings from its accept loop and says
``stopping()`` as its drain of the requests in flight begins, pinging on through it; it
pings only while its model's worker is healthy (appliance/web/watchdog.py).
When ``$NOTIFY_SOCKET`` is unset every call does nothing.
"""
import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier(object):
    def __init__(self, env=None):
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        interval = int(usec) / 1e6 if usec and usec.isdigit() else 0.0
        if pid and pid.isdigit() and int(pid) != os.getpid():
            interval = 0.0  # the watchdog is meant for another process
        self.interval = interval  # WatchdogSec in seconds (0.0: no watchdog for this process)
        # ping at half the interval systemd expects; once a second when it is not set
        self.ping_every = interval / 2.0 if interval else 1.0
        self._last_ping = 0.0
        self._sock = None
        if self.address and self.address.startswith("@"):
            self.address = "\0" + self.address[1:]  # abstract namespace socket

    @property
    def enabled(self):
        return self.address is not None

    def send(self, message):
        """Send one datagram; return True when it was sent."""
        if not self.enabled:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto(message.encode("utf-8"), self.address)
            return True
        except (OSError, IOError) as exc:
            log.warning("sd_notify to %s failed: %s", self.address.lstrip("\0"), exc)
            return False

    def ready(self, status=None):
        return self.send("READY=1" + ("\nSTATUS=" + status if status else ""))

    def status(self, text):
        return self.send("STATUS=" + text)

    def watchdog(self, now=None):
        """WATCHDOG=1, at most once every ``ping_every`` seconds."""
        now = time.monotonic() if now is None else now
        if now - self._last_ping < self.ping_every:
            return False
        self._last_ping = now
        return self.send("WATCHDOG=1")

    def stopping(self, status=None):
        """STOPPING=1, with a STATUS= line when ``status`` is given (what the stop waits for)."""
        return self.send("STOPPING=1" + ("\nSTATUS=" + status if status else ""))

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
