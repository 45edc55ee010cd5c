"""folder_locked on a folder this process may write in but not read (mode -wx): opening it
to lock it was refused (EACCES) and the build or export failed with a PermissionError
traceback, where a file system that cannot lock only gets a warning. Real permission
bits: as root (whom they do not stop) the check runs in a forked child that has become
'nobody'."""
import json
import logging
import os
import shutil
import tempfile

import pytest

NOBODY = 65534


def _unprivileged(fn):
    """fn() run where permission bits hold: here when not root, else in a forked child
    that became 'nobody'. Returns what fn returned (JSON), or fails with the child's error."""
    if os.geteuid() != 0:
        return fn()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        os.close(r)
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out = {"ok": fn()}
        except BaseException as exc:  # noqa: B902 - reported to the parent
            out = {"error": "{}: {}".format(type(exc).__name__, exc)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    out = json.loads(data.decode() or '{"error": "the child said nothing"}')
    assert "error" not in out, out["error"]
    return out["ok"]


@pytest.fixture
def write_only_folder():
    """A folder with mode 0333 (write and search, no read) inside one 'nobody' may enter."""
    base = tempfile.mkdtemp(prefix="oncolens-lock-")
    os.chmod(base, 0o711)
    folder = os.path.join(base, "engines")
    os.mkdir(folder)
    os.chmod(folder, 0o333)
    try:
        yield folder
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(base)


def _warnings_while(fn):
    """fn()'s result and the warnings the appliance logged meanwhile."""
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                seen.append(record.getMessage())
    handler = Keep()
    logger = logging.getLogger("oncolens.appliance")
    logger.addHandler(handler)
    try:
        return fn(), seen
    finally:
        logger.removeHandler(handler)


def test_a_write_only_folder_is_written_unlocked_with_a_warning(write_only_folder):
    from oncolens.appliance.locks import folder_locked

    def body():
        with folder_locked(write_only_folder, "waiting"):
            with open(os.path.join(write_only_folder, "x.json"), "w") as fh:
                fh.write("{}\n")
        return True
    ran, warned = _unprivileged(lambda: _warnings_while(body))
    assert ran and os.path.isfile(os.path.join(write_only_folder, "x.json"))
    assert warned == ["{}: cannot open it to lock it (Permission denied; a folder's lock "
                      "needs read permission): a second writer at the same time would not "
                      "be held off".format(write_only_folder)]


def test_an_engine_cache_folder_that_is_write_only_still_gets_its_entry(write_only_folder):
    """The end to end case: engines.json of a read-only model folder's engine, listed in a
    cache folder that is writable but not readable."""
    from oncolens.appliance import engines
    entry = engines.make_entry(os.path.join(write_only_folder, "m.onnx.1.1.8201.GPU.FP16.engine"),
                               "/elsewhere", "8.2.1.8", "NVIDIA Tegra X1", "fp16", 1,
                               onnx_sha256="ab" * 32)
    _unprivileged(lambda: engines.write_cache_index(write_only_folder, entry) or True)
    assert [e["file"] for e in engines.read_cache_index(write_only_folder)] == [entry["file"]]


def test_a_folder_that_is_not_there_is_still_an_error(tmp_path):
    from oncolens.appliance.locks import folder_locked
    with pytest.raises(OSError):
        with folder_locked(str(tmp_path / "missing"), "waiting"):
            pass
