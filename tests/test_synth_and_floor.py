"""The synthetic dataset is deterministic and its classes differ as documented; the
device code stays within Python 3.6 syntax."""
import hashlib
import os
import subprocess
import sys

import numpy as np

from conftest import REPO, cli_subprocess_cmd, run_cli, subprocess_env


def _digest(folder):
    h = hashlib.sha256()
    for parent, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            with open(os.path.join(parent, name), "rb") as fh:
                h.update(name.encode() + fh.read())
    return h.hexdigest()


def test_synth_is_deterministic_and_labelled_synthetic(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for out in (a, b):
        code, _, err = run_cli(["data", "synth", out, "--size", 40, "--train", 2, "--val", 1,
                                "--test", 1, "--seed", 5])
        assert code == 0, err
    assert _digest(a) == _digest(b)
    assert open(os.path.join(a, "labels.txt")).read().split() == ["benign", "malignant", "normal"]
    assert "SYNTHETIC" in open(os.path.join(a, "README.md")).read()
    code, _, err = run_cli(["data", "synth", a])
    assert code != 0 and "already exists" in err


def test_synth_summary_is_printed_once_on_a_shared_terminal(tmp_path):
    """stdout carries the result line; the log on stderr does not repeat it, so a terminal
    showing both (2>&1) shows it once."""
    out = str(tmp_path / "s")
    proc = subprocess.run(cli_subprocess_cmd("data", "synth", out, "--size", 32, "--train", 1,
                                             "--val", 1, "--test", 1),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=subprocess_env(), universal_newlines=True)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.count("synthetic images to") == 1, proc.stdout
    assert proc.stdout.strip() == "wrote 9 synthetic images to {}".format(out)


def test_synth_classes_look_as_documented():
    from oncolens.train.synth import render
    stained = {}
    for cls in ("normal", "benign", "malignant"):
        fractions, darkness = [], []
        for n in range(6):
            img = render(cls, 128, np.random.default_rng(n)).astype(float)
            nuclei = img[:, :, 1] < 120            # haematoxylin is low in green
            fractions.append(nuclei.mean())
            darkness.append(img[nuclei].mean() if nuclei.any() else 255)
        stained[cls] = (np.mean(fractions), np.mean(darkness))
    assert stained["normal"][0] < stained["benign"][0] < stained["malignant"][0]
    assert stained["malignant"][1] < stained["normal"][1]


def test_provenance_reaches_model_json(tiny_bundle, tiny_data):
    import json
    from oncolens.export.images import recorded_dataset
    info = json.load(open(os.path.join(tiny_bundle, "model.json")))
    assert info["provenance"]["synthetic"] is True
    assert "demos and tests only" in info["provenance"]["note"]
    # the export check finds the synthetic set's real images, not random ones
    assert recorded_dataset(info) == os.path.abspath(tiny_data)


def test_syntax_floor_is_python_3_6():
    dirs = [os.path.join(REPO, d) for d in ("appliance", "export", "train", "oncolens")]
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    proc = subprocess.run([vermin, "-q", "--no-tips", "--violations",
                           "--eval-annotations", "-t=3.6-"] + dirs,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    assert proc.returncode == 0, proc.stdout
