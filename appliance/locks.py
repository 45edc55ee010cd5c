"""Advisory locks (``flock``, Linux and the Nano) for files two commands must not rewrite at
once: a batch results file (results.ResultsLock, which refuses a second run) and a model
folder's model.json or an engine cache's engines.json (``folder_locked``, which makes the
second writer wait). A lock goes with its open file: a process that dies leaves none."""
import contextlib
import errno
import logging
import os

try:
    import fcntl
except ImportError:  # not on Linux: writers go unlocked
    fcntl = None

log = logging.getLogger(__name__)

BUSY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)


def take_lock(fd, path, wait=False):
    """Take the exclusive lock of the open file ``fd`` (``path``, for messages). False when
    another open file holds it and ``wait`` is not set; otherwise True once taken (after
    waiting for the holder, with ``wait``), or at once when this file system cannot lock:
    a warning naming ``path`` says so, and the caller goes on unlocked."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except (IOError, OSError) as exc:
        if exc.errno in BUSY and not wait:
            return False
        log.warning("%s: cannot lock it (%s): a second writer at the same time would not be "
                    "held off", path, exc.strerror or exc)
    return True


@contextlib.contextmanager
def folder_locked(folder, waiting):
    """Hold the exclusive lock of ``folder`` itself (no lock file is left in it) while the
    body reads a file there and writes it back: a second holder waits, after logging
    ``waiting`` (a line saying what for), until the first is done. A folder this process
    may write in but not read (mode -wx) cannot be opened to lock it: a warning says so and
    the body runs unlocked, as on a file system that cannot lock."""
    if fcntl is None:
        yield
        return
    try:  # a folder is opened to lock it, which needs read permission
        fd = os.open(folder, os.O_RDONLY)
    except (IOError, OSError) as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM):
            raise
        log.warning("%s: cannot open it to lock it (%s; a folder's lock needs read "
                    "permission): a second writer at the same time would not be held off",
                    folder, exc.strerror or exc)
        fd = None
    if fd is None:
        yield
        return
    try:
        if not take_lock(fd, folder):
            log.info("%s", waiting)
            take_lock(fd, folder, wait=True)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
