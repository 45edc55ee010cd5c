"""OpenVINO's CPU plugin points the thread that compiles a model at an alternate signal
stack of its own, and takes it back when its Core is freed. Two Cores freed out of order
(bench opens a backend per precision, and one more for OpenVINO's own ceiling), or one freed
in another thread, left that thread's alternate signal stack pointing at unmapped memory:
the next signal handled there (Ctrl-C, SIGTERM, or SIGCHLD once torch's DataLoader has set a
handler for it) killed the process with SIGSEGV. This was the test suite's unexplained
crash: a subprocess ending after the OpenVINO and training tests. The backends now share one
Core, kept for the life of the process."""
import subprocess
import sys
import textwrap

import pytest

from conftest import subprocess_env

CHILD = textwrap.dedent("""
    import gc, signal, subprocess, sys, threading
    import numpy as np
    from oncolens.appliance.backends import open_backend
    from oncolens.appliance.bench_ceiling import openvino_throughput
    from oncolens.appliance.bundle import load_bundle

    bundle = load_bundle(sys.argv[1])
    batch = np.zeros((1,) + tuple(bundle.input_shape), np.float32)
    first = open_backend("openvino", bundle)
    first.infer(batch)
    second = open_backend("openvino", bundle)
    second.infer(batch)
    openvino_throughput(bundle, batch, min_seconds=0.1)
    first.close()
    del first  # freed before the later one, as bench's list of backends is
    gc.collect()
    third = [open_backend("openvino", bundle)]
    third[0].infer(batch)
    worker = threading.Thread(target=lambda: (third.pop().close(), gc.collect()))
    worker.start()  # the last one freed in another thread
    worker.join()
    second.close()
    del second
    gc.collect()
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # as torch's DataLoader does
    signal.signal(signal.SIGUSR1, lambda signum, frame: print("handled SIGUSR1"))
    for _ in range(3):
        subprocess.run([sys.executable, "-c", "pass"])
    signal.raise_signal(signal.SIGUSR1) if hasattr(signal, "raise_signal") else None
    print("survived")
""")


def test_freeing_openvino_backends_leaves_signals_deliverable(tiny_bundle):
    pytest.importorskip("openvino")
    done = subprocess.run([sys.executable, "-c", CHILD, tiny_bundle], env=subprocess_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split() == ["handled", "SIGUSR1", "survived"], done.stdout
