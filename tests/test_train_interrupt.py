"""SIGTERM (systemd's stop, ``timeout``, ``kill``) stops a training run as Ctrl-C does: one
line, exit 143, no half-written file; until 2026-12-07 it killed the run where it stood (a
checkpoint.pth.tar.tmp as big as the model left behind), and sent to the whole process group
(systemd) it killed the data-loader workers too, which ended in torch's traceback."""
import os
import signal
import subprocess
import sys

import pytest

from conftest import subprocess_env

# in a process of its own: SIGTERM to its whole group (main process and data-loader workers)
# while the second epoch's checkpoint.pth.tar is being written ("write": held until the epoch
# is saved whole; until 2026-12-08 that epoch was lost), or in the middle of the second epoch
# ("step": its fifth training step, of 3 an epoch)
CHILD = """
import os, subprocess, sys, time
from oncolens.train import outputs, trainer
real_replace, real_loss, writes, steps = outputs._replace, trainer._mixed_loss, [], []

def stop(wait=True):
    try:
        # from another process, as systemd's is (a worker sent it by its own main process
        # exits quietly)
        subprocess.call(["kill", "-TERM", "--", "-{}".format(os.getpgrp())])
        if wait:
            time.sleep(60)
    finally:  # unwinding takes a while (a large model's backward pass): by its end, what
        time.sleep(2)  # the stop did to the workers is known

def replace(path, write):
    if path.endswith("checkpoint.pth.tar"):
        writes.append(path)
        if len(writes) == 2 and sys.argv[1] == "write":
            def stopped_midway(tmp):
                with open(tmp, "wb") as fh:
                    fh.write(b"half a checkpoint")
                stop(wait=False)  # held until the epoch is saved whole
                write(tmp)
            return real_replace(path, stopped_midway)
    return real_replace(path, write)

def loss(*args):
    steps.append(1)
    if len(steps) == 5 and sys.argv[1] == "step":
        stop()
    return real_loss(*args)
outputs._replace, trainer._mixed_loss = replace, loss
from oncolens.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("when", ["write", "step"])
def test_sigterm_to_the_group_stops_in_one_line_and_keeps_the_last_epoch(tiny_data, tmp_path,
                                                                         when):
    import torch
    model_dir = str(tmp_path / "m")
    argv = ["train", tiny_data, "--model-dir", model_dir, "--epochs", 3, "--resolution", 32,
            "-b", 6, "-j", 1, "--seed", 3, "--no-pretrained", "--arch", "simple-cnn"]
    proc = subprocess.run([sys.executable, "-c", CHILD, when] + [str(a) for a in argv],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env(),
                          universal_newlines=True, timeout=300, start_new_session=True)
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, proc.stderr)
    assert proc.stderr.strip().splitlines()[-1] == "oncolens train: interrupted by SIGTERM"
    assert "Traceback" not in proc.stderr, proc.stderr
    # model.json and labels.txt follow model_best.pth.tar (epoch 1, or 2 if it was better)
    assert sorted(os.listdir(model_dir)) == ["checkpoint.pth.tar", "history.csv", "labels.txt",
                                             "model.json", "model_best.pth.tar"]
    saved = torch.load(os.path.join(model_dir, "checkpoint.pth.tar"), weights_only=False)
    # the last finished epoch, whole: a stop while its checkpoint is written waits for it
    assert saved["epoch"] == (2 if when == "write" else 1)
