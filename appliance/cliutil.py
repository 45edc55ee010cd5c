"""Small helpers shared by every subcommand's ``main``."""
import argparse
import contextlib
import functools
import logging
import os
import signal
import sys

from oncolens.appliance.errors import OncoLensError, UsageError, os_error_line

log = logging.getLogger(__name__)


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser, whose errors (a flag it does not know, a value of the wrong type,
    an argument missing) are one line naming the flag and what was wrong, and exit 2,
    without the usage summary (30 lines for classify) above it."""

    def error(self, message):
        self.exit(2, "{}: error: {} (see '{} --help')\n".format(self.prog, message, self.prog))


def normalize_flags(argv):
    """jetson-inference accepts ``--input_blob`` and ``--input-blob`` alike: so do we.

    Underscores in a long flag's name (before any ``=``) become dashes; values and
    positional arguments are left alone.
    """
    out = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            name, sep, value = arg[2:].partition("=")
            arg = "--" + name.replace("_", "-") + sep + value
        out.append(arg)
    return out


# jetson-inference's --log-level names, and Python's
# jetson-utils' levels: silent, error, warning, success, info, verbose, debug ("success"
# shows warnings and errors but not info lines: it sits between them)
LOG_LEVELS = {"silent": logging.CRITICAL + 10, "critical": logging.CRITICAL,
              "error": logging.ERROR, "warning": logging.WARNING, "warn": logging.WARNING,
              "success": (logging.WARNING + logging.INFO) // 2, "info": logging.INFO,
              "verbose": logging.DEBUG, "debug": logging.DEBUG}


def setup_logging(level="info"):
    name = str(level).lower()
    if name not in LOG_LEVELS:
        raise UsageError("--log-level: unknown level '{}' (expected one of: silent, error, "
                         "warning, success, info, verbose, debug)".format(level))
    logging.basicConfig(
        level=LOG_LEVELS[name],
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def check_top(topk, threshold=None):
    """imagenet's --topK (0: every class at or above --threshold, or 1 or more) and
    --threshold (a confidence) in range; without a threshold (serve has no --threshold
    flag), 0 is every class."""
    if topk < 0:
        every = "every class" if threshold is None else "every class at or above --threshold"
        raise UsageError("--topK: expected 0 ({}) or more classes, got {}".format(every, topk))
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UsageError("--threshold: expected a confidence between 0 and 1, got {}".format(
            threshold))


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd's stop, ``timeout``, ``kill``) raised in the main thread as Ctrl-C's
    KeyboardInterrupt is, so that it unwinds the same way (``finally`` blocks flush and
    close files) and ``cli_entry`` says so in one line; the exit status is 128 + 15."""

    signum = signal.SIGTERM


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While inside: SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread; the
    previous handler comes back after.  Outside the main thread (tests calling a main in a
    thread) nothing changes."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        installed = True
    except ValueError:  # not the main thread
        installed = False
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_held():
    """While inside: SIGINT and SIGTERM wait, so that the body (a file written, a folder put
    in place) is done whole; the first that came is then raised as it would have been
    (KeyboardInterrupt, or Terminated for SIGTERM), unless the body raised. A signal the
    process ignores (SIG_IGN: a background job of a script) stays ignored. Outside the main
    thread nothing changes."""
    held = []

    def hold(signum, frame):
        held.append(signum)
    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) != signal.SIG_IGN:
                previous[signum] = signal.signal(signum, hold)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if held:
        raise Terminated() if held[0] == signal.SIGTERM else KeyboardInterrupt()


def _stdout_gone():
    """After stdout's reader went away (``| head``): point stdout at /dev/null, so that
    Python's own flush at exit does not print a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout already closed or not a file
        pass


def cli_entry(prog):
    """Decorate a ``main(argv)``: OncoLensError becomes one line on stderr and an exit code;
    Ctrl-C (and SIGTERM, where the command raises Terminated for it) one line and 128 +
    the signal's number, with the ``hint`` the command attached to the exception, if any.
    A reader of stdout that went away (``| head``) ends the command quietly, as SIGPIPE
    ends other tools (exit 141, ``finally`` blocks run: results written are kept); any
    other OSError (a full disk, a permission refused) is one line naming its file, exit 1,
    with the traceback at --log-level debug."""

    def wrap(func):
        @functools.wraps(func)
        def main(argv=None):
            try:
                status = func(list(sys.argv[1:] if argv is None else argv))
                sys.stdout.flush()  # a closed pipe shows here, not in Python's exit
                return status
            except OncoLensError as exc:
                sys.stderr.write("{}: error: {}\n".format(prog, exc))
                return exc.exit_code
            except KeyboardInterrupt as exc:
                signum = int(getattr(exc, "signum", signal.SIGINT))
                hint = getattr(exc, "hint", None)
                sys.stderr.write("{}: interrupted{}{}\n".format(
                    prog, " by SIGTERM" if signum == signal.SIGTERM else "",
                    ": " + hint if hint else ""))
                return 128 + signum
            except BrokenPipeError:
                _stdout_gone()
                return 128 + int(getattr(signal, "SIGPIPE", 13))
            except OSError as exc:
                log.debug("%s failed", prog, exc_info=True)
                sys.stderr.write("{}: error: {}\n".format(prog, os_error_line(exc)))
                return 1

        return main

    return wrap
