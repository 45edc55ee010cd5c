"""The device service: the systemd unit and /etc/default/oncolens, ``oncolens service install``.

The unit is checked by systemd itself (``systemd-analyze verify``) and its command line by the
real ``oncolens classify`` parser and run; the sd_notify messages of the live loop are tested
with the appliance.
"""
import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO, count_copies, run_cli

UNIT = os.path.join(REPO, "systemd", "oncolens.service")
ENV_FILE = os.path.join(REPO, "systemd", "oncolens.default")


def read(path):
    with open(path) as fh:
        return fh.read()


def unit_settings(text):
    """{key: [values]} of a unit file (keys may repeat; comments and sections skipped)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def env_values(text):
    """VAR=value lines as docker's --env-file reads them (systemd reads unquoted ones alike)."""
    values = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def systemd_argv(exec_start, env):
    """ExecStart= expanded as systemd.service(5) says: '${X}' is replaced by X's value within
    its word (always one argument); a word that is exactly '$X' becomes X's value split at
    whitespace (no argument when empty).  Our unit quotes nothing, so splitting at spaces
    first is exact for it."""
    argv = []
    for word in exec_start.split():
        whole = re.match(r"^\$([A-Za-z_][A-Za-z0-9_]*)$", word)
        if whole:
            argv.extend(env.get(whole.group(1), "").split())
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                               lambda m: env.get(m.group(1), ""), word))
    return argv


def unit_env(unit_text, env_text):
    """The environment the service gets: the unit's Environment=, overridden by the file."""
    env = {}
    for item in unit_settings(unit_text).get("Environment", []):
        name, _, value = item.partition("=")
        env[name] = value
    env.update(env_values(env_text))
    return env


# ---- the files in the repository --------------------------------------------------------

def test_repo_files_are_what_install_writes():
    from oncolens.appliance.service_units import render_env, render_unit
    assert read(UNIT) == render_unit(), "systemd/oncolens.service is stale: re-render it"
    assert read(ENV_FILE) == render_env(), "systemd/oncolens.default is stale: re-render it"


def test_unit_is_a_hardened_notify_service():
    s = unit_settings(read(UNIT))
    one = {key: values[-1] for key, values in s.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert int(one["WatchdogSec"]) > 0
    assert one["Restart"] == "on-failure" and int(one["RestartSec"]) > 0
    assert int(one["StartLimitBurst"]) > 1 and int(one["StartLimitIntervalSec"]) > 0
    assert one["User"] == "oncolens" and one["SupplementaryGroups"] == "video"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert one[key] == "yes", key
    assert one["ProtectSystem"] == "strict"
    rw = one["ReadWritePaths"].split()
    assert "/var/cache/oncolens" in rw and "/var/lib/oncolens" in rw
    assert one["CacheDirectory"] == "oncolens" and one["StateDirectory"] == "oncolens"
    assert one["StandardOutput"] == "journal" and one["StandardError"] == "journal"
    assert one["EnvironmentFile"] == "-/etc/default/oncolens"
    assert one["WantedBy"] == "multi-user.target"


def _systemd_analyze():
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but systemd-analyze is missing (.ci/run installs Debian's "
                        "systemd package)")
        pytest.skip("systemd-analyze not found (apt-get install systemd)")
    return tool


def _verify(tool, root):
    proc = subprocess.run([tool, "verify", "--man=no", "--root=" + root, "oncolens.service"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    # systemd-analyze exits 0 on unknown keys and bad values (it only warns): any line about
    # our unit counts as a failure.
    ours = [line for line in proc.stdout.splitlines() if "oncolens" in line]
    return proc.returncode, ours


def _fake_root(tmp_path, unit_text):
    """A file system root for 'systemd-analyze verify --root': the host's own unit folder
    (sysinit.target and friends), our unit, and an executable at ExecStart's path.  That
    executable is a stub, and that is honest: verify checks only that the command exists and
    is executable there; what it runs is tested below with the real oncolens."""
    host_units = next((d for d in ("/usr/lib/systemd/system", "/lib/systemd/system")
                       if os.path.isfile(os.path.join(d, "sysinit.target"))), None)
    if host_units is None:
        pytest.skip("no systemd unit folder with sysinit.target on this host")
    root = str(tmp_path / "root")
    shutil.copytree(host_units, os.path.join(root, "usr", "lib", "systemd", "system"),
                    symlinks=True)
    os.makedirs(os.path.join(root, "etc", "systemd", "system"))
    with open(os.path.join(root, "etc", "systemd", "system", "oncolens.service"), "w") as fh:
        fh.write(unit_text)
    exec_path = unit_settings(unit_text)["ExecStart"][0].split()[0]
    stub = os.path.join(root, exec_path.lstrip("/"))
    os.makedirs(os.path.dirname(stub))
    with open(stub, "w") as fh:
        fh.write("#!/bin/sh\nexit 0\n")
    os.chmod(stub, 0o755)
    return root, stub


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    tool = _systemd_analyze()
    root, stub = _fake_root(tmp_path, read(UNIT))
    code, ours = _verify(tool, root)
    assert code == 0 and not ours, "\n".join(ours)
    # and the check is real: a missing command and a bad setting are both reported
    os.remove(stub)
    code, ours = _verify(tool, root)
    assert code != 0 and any("not executable" in line for line in ours)
    root2, _ = _fake_root(tmp_path / "broken", read(UNIT).replace("Type=notify", "Type=notyfy"))
    code, ours = _verify(tool, root2)
    assert any("notyfy" in line for line in ours), ours


def test_systemd_analyze_verify_accepts_extra_folders(tmp_path):
    from oncolens.appliance.service_units import render_unit
    tool = _systemd_analyze()
    unit = render_unit(output="/data/out-1/", cache_dir="/data/cache_2")
    assert unit_settings(unit)["ReadWritePaths"][0].split()[2:] == ["/data/cache_2",
                                                                     "/data/out-1"]
    root, _ = _fake_root(tmp_path, unit)
    code, ours = _verify(tool, root)
    assert code == 0 and not ours, "\n".join(ours)


# ---- oncolens service install -------------------------------------------------------------

def test_install_writes_refuses_then_overwrites(tmp_path):
    root = str(tmp_path / "r")
    args = ["service", "install", "--root", root, "--exec", "/usr/local/bin/oncolens"]
    code, out, err = run_cli(args + ["--model", "/var/lib/oncolens/models/busi-resnet18",
                                     "--input", "csi://0", "--flags=--topK=3 --threshold=0.05"])
    assert code == 0, err
    unit = os.path.join(root, "etc", "systemd", "system", "oncolens.service")
    env = os.path.join(root, "etc", "default", "oncolens")
    assert read(unit) == read(UNIT)           # the defaults but for the environment file
    values = env_values(read(env))
    assert values["ONCOLENS_MODEL"] == "/var/lib/oncolens/models/busi-resnet18"
    assert values["ONCOLENS_INPUT"] == "csi://0"
    assert values["ONCOLENS_FLAGS"] == "--topK=3 --threshold=0.05"
    assert values["ONCOLENS_OUTPUT"] == ""
    assert "useradd --system" in out and "systemctl enable --now oncolens" in out

    before = read(env)
    code, out, err = run_cli(args + ["--input", "/dev/video1"])
    assert code != 0 and "oncolens already exist (pass --overwrite to replace them)" in err
    assert read(env) == before

    code, out, err = run_cli(args + ["--input", "/dev/video1", "--overwrite"])
    assert code == 0, err
    assert env_values(read(env))["ONCOLENS_INPUT"] == "/dev/video1"


def test_print_shows_both_files_and_writes_nothing(tmp_path):
    root = str(tmp_path / "r")
    code, out, err = run_cli(["service", "install", "--print", "--root", root, "--exec",
                              "/opt/x/bin/oncolens", "--user", "lab", "--output",
                              "/srv/oncolens/out/", "--cache-dir", "/data/engines"])
    assert code == 0, err
    assert not os.path.exists(root)
    unit_part, env_part = out.split("# ---- ")[1:]
    assert unit_part.startswith(os.path.join(root, "etc/systemd/system/oncolens.service"))
    s = unit_settings(unit_part)
    assert s["ExecStart"][0].startswith("/opt/x/bin/oncolens classify ")
    assert s["User"] == ["lab"] and s["Group"] == ["lab"]
    assert s["ReadWritePaths"][0].split() == ["/var/cache/oncolens", "/var/lib/oncolens",
                                              "/data/engines", "/srv/oncolens/out"]
    values = env_values(env_part)
    assert values["ONCOLENS_OUTPUT"] == "/srv/oncolens/out/"
    assert values["ONCOLENS_CACHE_DIR"] == "/data/engines"


@pytest.mark.parametrize("extra, message", [
    (["--model", "/models/it's"], "without quotes"),
    (["--output", "out/"], "absolute path"),
    (["--user", "bad user"], "not a valid user name"),
    (["--exec", "oncolens"], "not an absolute path"),
    (["--watchdog-sec", "1"], "--watchdog-sec: expected seconds from 2 to 86400 (a day), got 1"),
    (["--output=/data/my out/"], "--output '/data/my out/': contains whitespace"),
    (["--output=/data/out/\tx"], "--output '/data/out/\\tx': contains whitespace"),
    (["--cache-dir=/data/my cache"], "--cache-dir '/data/my cache': contains whitespace"),
])
def test_install_rejects_values_it_cannot_write(tmp_path, extra, message):
    code, out, err = run_cli(["service", "install", "--print", "--exec",
                              "/usr/local/bin/oncolens"] + extra)
    assert code == 2 and message in err and err.startswith("oncolens service: error:"), err
    assert len(err.strip().splitlines()) == 1 and not out


def test_environment_file_refuses_values_the_unit_would_split():
    from oncolens.appliance.errors import UsageError
    from oncolens.appliance.service_units import render_env
    render_env({"ONCOLENS_MODEL": "/var/lib/oncolens/models/my model"})   # ${...}: one word
    for name in ("ONCOLENS_OUTPUT", "ONCOLENS_CACHE_DIR"):
        with pytest.raises(UsageError, match=name + " .*contains whitespace"):
            render_env({name: "/data/my out/"})


def test_install_reports_a_folder_it_cannot_write(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = run_cli(["service", "install", "--root", str(blocker), "--exec",
                              "/usr/local/bin/oncolens"])
    assert code != 0 and err.startswith("oncolens service: error: cannot write ")
    assert "--root DIR or --print" in err and "Traceback" not in err


def test_install_writes_both_files_or_neither(tmp_path):
    """A target that cannot be written (here the environment file's name is a folder) is
    refused before anything is written: no unit without its file, no stray .tmp."""
    root = tmp_path / "r"
    (root / "etc" / "default" / "oncolens").mkdir(parents=True)
    code, out, err = run_cli(["service", "install", "--root", str(root), "--exec",
                              "/usr/local/bin/oncolens", "--overwrite"])
    assert code == 2 and "etc/default/oncolens: a folder of that name is in the way" in err, err
    assert len(err.strip().splitlines()) == 1
    written = sorted(os.path.relpath(os.path.join(d, f), str(root))
                     for d, _, files in os.walk(str(root)) for f in files)
    assert written == [] and not (root / "etc" / "systemd").exists()


def _mode(path):
    return os.stat(path).st_mode & 0o777


def test_environment_file_is_readable_by_root_only(tmp_path):
    """The file may hold ONCOLENS_TOKEN: it is written 0600 (systemd reads it as PID 1, docker
    under sudo), whatever the umask or a file it replaces; the unit stays 0644. A file named
    'oncolens.tmp' beside it is not its own (its temporary files are '.oncolens.<random>.tmp')
    and is left as it was."""
    root = str(tmp_path / "r")
    args = ["service", "install", "--root", root, "--exec", "/usr/local/bin/oncolens"]
    env = os.path.join(root, "etc", "default", "oncolens")
    unit = os.path.join(root, "etc", "systemd", "system", "oncolens.service")
    old_umask = os.umask(0)
    try:
        code, out, err = run_cli(args)
        assert code == 0, err
        assert _mode(env) == 0o600 and _mode(unit) == 0o644
        assert "{} (mode 600)".format(env) in out
        assert env_values(read(env))["ONCOLENS_TOKEN"] == ""
        os.chmod(env, 0o644)                                  # a file made by hand, say
        with open(env + ".tmp", "w") as fh:                   # and one of the user's
            fh.write("ONCOLENS_TOKEN=old\n")
        os.chmod(env + ".tmp", 0o666)
        code, out, err = run_cli(args + ["--overwrite"])
        assert code == 0, err
        assert _mode(env) == 0o600 and _mode(env + ".tmp") == 0o666
        assert read(env + ".tmp") == "ONCOLENS_TOKEN=old\n"
        assert sorted(os.listdir(os.path.dirname(env))) == ["oncolens", "oncolens.tmp"]
    finally:
        os.umask(old_umask)


def test_reinstall_keeps_the_token_and_print_never_shows_it(tmp_path):
    """install takes no token; --overwrite keeps the one set by hand (the other variables go
    back to what the options say), and --print shows none."""
    root = str(tmp_path / "r")
    args = ["service", "install", "--root", root, "--exec", "/usr/local/bin/oncolens"]
    env = os.path.join(root, "etc", "default", "oncolens")
    assert run_cli(args + ["--flags=--serve=0.0.0.0:8080"])[0] == 0
    with open(env) as fh:
        text = fh.read().replace("ONCOLENS_TOKEN=\n", "ONCOLENS_TOKEN=s3cret-tok_1\n")
    with open(env, "w") as fh:
        fh.write(text)
    code, out, err = run_cli(args + ["--print", "--overwrite"])
    assert code == 0 and "s3cret" not in out + err
    code, out, err = run_cli(args + ["--input", "csi://0", "--overwrite"])
    assert code == 0, err
    values = env_values(read(env))
    assert values["ONCOLENS_TOKEN"] == "s3cret-tok_1" and values["ONCOLENS_INPUT"] == "csi://0"
    assert values["ONCOLENS_FLAGS"] == "" and "kept ONCOLENS_TOKEN" in out
    assert "s3cret" not in out + err and _mode(env) == 0o600
    with open(env, "a") as fh:                   # a quote systemd and docker read apart
        fh.write("ONCOLENS_TOKEN='q'\n")
    code, out, err = run_cli(args + ["--overwrite"])
    assert code != 0 and "ONCOLENS_TOKEN holds a quote" in err and "'q'" not in err


def test_the_token_reaches_the_appliance_from_the_file_not_its_command_line(monkeypatch):
    """ONCOLENS_TOKEN set in the environment file is the token of --serve (never in the
    command line ps shows); left empty it is no token: serving off loopback is refused."""
    from oncolens.appliance.classify_cli import _check_serving, build_parser
    from oncolens.appliance.cliutil import normalize_flags
    from oncolens.appliance.errors import UsageError
    unit = read(UNIT)
    for token in ("s3cret-Tok_en", ""):
        env_text = read(ENV_FILE).replace("ONCOLENS_FLAGS=", "ONCOLENS_FLAGS=--serve=0.0.0.0:8080")
        env_text = env_text.replace("ONCOLENS_TOKEN=", "ONCOLENS_TOKEN=" + token)
        env = unit_env(unit, env_text)
        argv = systemd_argv(unit_settings(unit)["ExecStart"][0], env)
        assert not token or token not in " ".join(argv)
        monkeypatch.setenv("ONCOLENS_TOKEN", env["ONCOLENS_TOKEN"])
        args = build_parser().parse_args(normalize_flags(argv[2:]))
        assert args.token is None and args.serve == "0.0.0.0:8080"  # --token left out
        if token:
            _check_serving(args)
            assert args.token == token  # $ONCOLENS_TOKEN's, resolved before the model loads
        else:
            with pytest.raises(UsageError, match="token is required"):
                _check_serving(args)


def test_service_without_an_action_shows_its_usage():
    code, out, err = run_cli(["service"])
    assert code == 2 and "install" in out


def test_default_exec_is_this_installation():
    from oncolens.appliance.service_cli import default_exec
    cmd = default_exec()
    first = cmd.split()[0]
    assert os.path.isabs(first) and os.access(first, os.X_OK)


# ---- the unit's command line is the appliance's --------------------------------------------

def test_exec_start_parses_as_oncolens_classify():
    from oncolens.appliance.classify_cli import build_parser
    from oncolens.appliance.cliutil import normalize_flags
    env_text = read(ENV_FILE).replace("ONCOLENS_FLAGS=", "ONCOLENS_FLAGS=--topK=3 --log-level=debug")
    env_text = env_text.replace("ONCOLENS_OUTPUT=", "ONCOLENS_OUTPUT=/var/lib/oncolens/out/")
    unit = read(UNIT)
    argv = systemd_argv(unit_settings(unit)["ExecStart"][0], unit_env(unit, env_text))
    assert argv[:2] == ["/usr/local/bin/oncolens", "classify"]
    args = build_parser().parse_args(normalize_flags(argv[2:]))
    assert args.model == "/var/lib/oncolens/models/default"
    assert args.input == "/dev/video0" and args.output == "/var/lib/oncolens/out/"
    assert args.headless and args.topk == 3 and args.log_level == "debug"
    # empty FLAGS and OUTPUT give no argument at all
    argv = systemd_argv(unit_settings(unit)["ExecStart"][0], unit_env(unit, read(ENV_FILE)))
    assert argv[2:] == ["--model=/var/lib/oncolens/models/default", "--headless", "/dev/video0"]


def test_exec_start_classifies_with_the_real_appliance(tmp_path, tiny_bundle, tiny_data):
    """The unit's command line, with an environment file written by 'service install', run
    in-process on real images: outputs are written and each image gets a console line."""
    out_dir = str(tmp_path / "out") + "/"
    test_dir = os.path.join(tiny_data, "test")
    code, text, err = run_cli(["service", "install", "--print", "--exec",
                               "/usr/local/bin/oncolens", "--model", tiny_bundle, "--input",
                               test_dir, "--output", out_dir, "--flags=--topK=2"])
    assert code == 0, err
    unit_part, env_part = text.split("# ---- ")[1:]
    argv = systemd_argv(unit_settings(unit_part)["ExecStart"][0], unit_env(unit_part, env_part))
    code, out, err = run_cli(argv[1:])
    assert code == 0, err
    n_images = sum(len(files) for _, _, files in os.walk(test_dir))
    written = count_copies(out_dir)
    assert n_images > 0 and written == n_images
    assert len([line for line in out.splitlines() if line.startswith("imagenet:")]) >= n_images
