"""OSErrors no command expected: a reader of stdout that goes away (``| head``) and a full
disk end the command in at most one line, never a traceback."""
import os
import subprocess

import pytest

from conftest import cli_subprocess_cmd, subprocess_env


def _first_image(folder):
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if name.endswith((".png", ".jpg")):
                return os.path.join(root, name)
    raise AssertionError("no image under {}".format(folder))


def test_closed_stdout_pipe_ends_classify_quietly(tiny_bundle, tiny_data):
    """`oncolens classify IMG --input-loop -1 | head -1`: classify writes a line per frame
    for ever, so it meets the closed pipe; it ends with SIGPIPE's status and says nothing
    (no BrokenPipeError traceback, neither from the loop nor from Python's exit)."""
    cmd = cli_subprocess_cmd("classify", "--model", tiny_bundle, "--log-level", "error",
                             "--input-loop", "-1", _first_image(tiny_data))
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=subprocess_env())
    try:
        first = child.stdout.readline()
        child.stdout.close()  # as head does after its line
        _, err = child.communicate(timeout=120)  # hang guard, not a timing
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert first.startswith(b"imagenet:"), first
    assert child.returncode == 141, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_full_disk_is_one_line(tiny_bundle, tiny_data):
    """stdout on a full device (/dev/full: every write fails with ENOSPC): one line saying
    so and exit 1, not a traceback."""
    cmd = cli_subprocess_cmd("classify", "--model", tiny_bundle, "--log-level", "error",
                             _first_image(tiny_data))
    with open("/dev/full", "wb") as full:
        done = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, env=subprocess_env(),
                              timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert err.strip().splitlines() == ["oncolens classify: error: No space left on device"]


def test_os_error_line_names_the_files():
    from oncolens.appliance.errors import os_error_line
    assert os_error_line(OSError(28, "No space left on device", "out/m.pth")) == \
        "No space left on device: 'out/m.pth'"
    assert os_error_line(PermissionError(13, "Permission denied", "a", None, "b")) == \
        "Permission denied: 'a' -> 'b'"
    assert os_error_line(OSError("plain")) == "plain"
