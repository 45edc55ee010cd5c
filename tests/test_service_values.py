"""`oncolens service install`: values that would write a unit failing at every start are
refused in one line, before anything is written."""
import os
import stat
import sys

import pytest

from conftest import run_cli


def _program(folder):
    os.makedirs(folder)
    path = os.path.join(folder, "oncolens")
    with open(path, "w") as fh:
        fh.write("#!/bin/sh\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def test_an_installation_under_a_path_with_spaces_is_refused(tmp_path, monkeypatch):
    """The oncolens of a virtual environment in '/opt/onco lens/' went into ExecStart= as it
    was: systemd splits it at the space and runs '/opt/onco' (status=203/EXEC)."""
    _program(str(tmp_path / "onco lens" / "bin"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "onco lens" / "bin" / "python3"))
    root = str(tmp_path / "root")
    code, out, err = run_cli(["service", "install", "--root", root])
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "whitespace" in err
    assert str(tmp_path / "onco lens" / "bin" / "oncolens") in err
    assert not os.path.exists(root)


def test_an_exec_with_spaces_in_its_path_is_refused(tmp_path):
    program = _program(str(tmp_path / "my env" / "bin"))
    code, out, err = run_cli(["service", "install", "--print", "--exec", program])
    assert code == 2 and "--exec" in err and program in err and not out, err
    code, out, err = run_cli(["service", "install", "--print", "--exec",
                              "{} -m oncolens".format(sys.executable)])
    assert code == 0 and "ExecStart={} -m oncolens classify".format(sys.executable) in out, err


@pytest.mark.parametrize("flag", ["--model", "--input"])
def test_an_empty_model_or_input_is_refused(tmp_path, flag):
    """--model= wrote ONCOLENS_MODEL= (and --input=, ONCOLENS_INPUT=): the unit passes
    ${...} as one argument even when empty, so classify got '--model=' or '' at every start."""
    root = str(tmp_path / "root")
    code, out, err = run_cli(["service", "install", "--root", root, "--exec",
                              "/usr/local/bin/oncolens", flag + "="])
    assert code == 2 and flag + ": empty" in err and "Traceback" not in err, err
    assert not os.path.exists(root)
