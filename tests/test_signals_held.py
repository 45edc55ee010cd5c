"""cliutil.signals_held: Ctrl-C and SIGTERM wait while a file is written whole (bench's
--json) or a folder put in place (the demo's swap), then end the run as they would have.
Real signals sent to this process."""
import os
import signal

import pytest

from oncolens.appliance.cliutil import Terminated, signals_held


def test_a_held_signal_ends_the_run_after_the_body_and_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    done = []
    with pytest.raises(Terminated):
        with signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append(True)
    assert done == [True] and signal.getsignal(signal.SIGTERM) is before


def test_an_ignored_signal_stays_ignored(monkeypatch):
    """A process started with SIGINT ignored (a background job of a script, 'nohup'-like
    service wrappers) took a Ctrl-C sent to its group while it was held as its own: the
    bench whose --json was written whole then ended 130, the demo that had finished said
    it was stopped. A signal ignored before is ignored while held too."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
