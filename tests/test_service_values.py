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


@pytest.mark.parametrize("user", [
    "onkölens", "\uff4fncolens", "оncolens",       # a non-ASCII letter: isalnum() took them
    "1oncolens", "-oncolens", "a" * 32, "lab$", "lab.x", "", "lab user", "ONKÖLENS",
])
def test_a_user_name_systemd_would_not_take_is_refused(tmp_path, user):
    """--user took any letter str.isalnum() knows (Cyrillic, full-width, accented), a first
    digit or hyphen and any length, for a unit systemd refuses or reads as a uid."""
    root = str(tmp_path / "root")
    code, out, err = run_cli(["service", "install", "--root", root, "--exec",
                              "/usr/local/bin/oncolens", "--user=" + user])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("oncolens service: error: --user: ") and "not a valid user name " \
        "(expected 1 to 31 ASCII letters, digits, _ and -, the first a letter or _)" in err
    assert not os.path.exists(root)


@pytest.mark.parametrize("user", ["oncolens", "_lab-1", "a" * 31, "Lab"])
def test_a_user_name_of_the_strict_rule_is_written(user):
    code, out, err = run_cli(["service", "install", "--print", "--exec",
                              "/usr/local/bin/oncolens", "--user", user])
    assert code == 0 and "\nUser={}\n".format(user) in out, err
    assert ("upper-case" in err) is (user == "Lab")


@pytest.mark.parametrize("seconds,ok", [("2", True), ("86400", True), ("1", False),
                                        ("0", False), ("-5", False), ("86401", False),
                                        ("100000000000", False)])
def test_watchdog_sec_is_two_seconds_to_a_day(tmp_path, seconds, ok):
    """--watchdog-sec had no upper limit: 100000000000 went into WatchdogSec= as it was."""
    root = str(tmp_path / "root")
    code, out, err = run_cli(["service", "install", "--root", root, "--exec",
                              "/usr/local/bin/oncolens", "--watchdog-sec=" + seconds])
    if ok:
        assert code == 0, err
        with open(os.path.join(root, "etc/systemd/system/oncolens.service")) as fh:
            assert "\nWatchdogSec={}\n".format(seconds) in fh.read()
    else:
        assert code == 2 and err.strip() == ("oncolens service: error: --watchdog-sec: "
                                             "expected seconds from 2 to 86400 (a day), "
                                             "got {}".format(seconds)), err
        assert not os.path.exists(root)
