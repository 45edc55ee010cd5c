"""Shared fixtures: tiny synthetic datasets and bundles made through the real CLI."""
import contextlib
import io
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSI = os.path.normpath(os.path.join(REPO, "..", "shared", "datasets", "busi"))

# a training run of seconds on tiny_data: small, repeatable, never a download attempt
FAST_TRAIN = ["--resolution", 32, "-b", 6, "-j", 0, "--seed", 3, "--no-pretrained",
              "--arch", "simple-cnn"]


def run_cli(argv):
    """Run ``oncolens ARGV`` in-process: (exit code, stdout, stderr)."""
    from oncolens.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def copies_in(folder):
    """The names in a classify output folder, sorted, less its record of the copies it
    wrote (.oncolens-classify.jsonl, which --overwrite goes by)."""
    from oncolens.appliance.classify_copies import RECORD
    return sorted(name for name in os.listdir(folder) if name != RECORD)


def count_copies(folder):
    """The files under a classify output folder, its sub-folders included, less its record."""
    from oncolens.appliance.classify_copies import RECORD
    return sum(len([name for name in files if name != RECORD]) for _, _, files in os.walk(folder))


def cli_subprocess_cmd(*args):
    """The command line that runs oncolens from this checkout in a child process."""
    return [sys.executable, "-m", "oncolens"] + [str(a) for a in args]


def subprocess_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small synthetic dataset: 48 px images, 6/3/3 per class."""
    from oncolens.train.synth import generate
    out = str(tmp_path_factory.mktemp("synth") / "data")
    generate(out, size=48, counts=(6, 3, 3), seed=7)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_data):
    """A ResNet-18 bundle trained one epoch at 32 px through the CLI, exported to ONNX."""
    model_dir = str(tmp_path_factory.mktemp("bundle") / "model")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--resolution", 32,
                              "--epochs", 1, "-b", 6, "-j", 0, "--seed", 3, "--lr", 0.01,
                              "--no-pretrained"])  # never a download attempt in the tests
    assert code == 0, err
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir])
    assert code == 0, err
    return model_dir


@pytest.fixture(scope="module")
def ort_classifier(tiny_bundle):
    """The tiny bundle opened with ONNX Runtime, shared by one module's tests (its server's)."""
    from oncolens.appliance.classifier import Classifier
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        yield clf


@pytest.fixture(scope="session")
def busi():
    """The real BUSI dataset; skipped (visibly) where absent, an error under CI=true."""
    if not os.path.isdir(os.path.join(BUSI, "test")):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but the BUSI dataset is missing at {}".format(BUSI))
        pytest.skip("BUSI dataset not found at {} (see README: Data)".format(BUSI))
    return BUSI


@pytest.fixture(scope="session")
def nan_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with NaN in its output layer's bias: every output is NaN, from its
    checkpoint (torch) and from its ONNX (exported without the check, which refuses it)."""
    import shutil
    import torch
    model_dir = str(tmp_path_factory.mktemp("nan") / "diverged")
    shutil.copytree(tiny_bundle, model_dir, ignore=shutil.ignore_patterns("eval-*", "*.onnx"))
    path = os.path.join(model_dir, "model_best.pth.tar")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    bias = [k for k in ckpt["state_dict"] if k.endswith("fc.bias")][0]
    ckpt["state_dict"][bias].fill_(float("nan"))
    torch.save(ckpt, path)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--no-check",
                              "--overwrite"])
    assert code == 0, err
    return model_dir
