"""``oncolens service install``: the systemd unit and its environment file.

    sudo oncolens service install --model=/var/lib/oncolens/models/busi-resnet18 \
        --input=csi://0 --flags='--topK=2'
    oncolens service install --print            # show both files, write nothing
    oncolens service install --root=pkgroot/    # stage them under a folder (packaging, tests)

Writes ``/etc/systemd/system/oncolens.service`` and ``/etc/default/oncolens`` (under
``--root`` when given) and prints the commands that create the user and start the service;
it never overwrites an existing file without ``--overwrite``.
"""
import os
import shutil
import sys

from oncolens.appliance.cliutil import OneLineParser, cli_entry, normalize_flags
from oncolens.appliance.errors import UsageError
from oncolens.appliance.service_units import (CACHE_DIR, ENV_MODE, ENV_PATH, ENV_VARS, STATE_DIR,
                                              UNIT_MODE, UNIT_PATH, render_env, render_unit)


def build_parser():
    p = OneLineParser(
        prog="oncolens service",
        description="Run OncoLens as a systemd device service (docs/JETSON.md).")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    inst = sub.add_parser(
        "install", help="write the systemd unit and /etc/default/oncolens",
        description="Write {} and {} (or print them with --print). Values with spaces need "
                    "'=': --flags='--topK=3 --threshold=0.05'.".format(UNIT_PATH, ENV_PATH))
    inst.add_argument("--print", dest="print_only", action="store_true",
                      help="print the unit and the environment file; write nothing")
    inst.add_argument("--root", "--prefix", dest="root", default="/",
                      help="write under this folder instead of / (packaging, containers, tests)")
    inst.add_argument("--user", default="oncolens",
                      help="the system user the service runs as (oncolens), in group video: "
                           "1 to 31 ASCII letters, digits, _ and -, the first a letter or _ "
                           "(systemd's strict rule; lower case for useradd on Ubuntu 18.04)")
    defaults = {name: default for name, default, _ in ENV_VARS}
    inst.add_argument("--model", help="model bundle folder or model file ({})".format(
        defaults["ONCOLENS_MODEL"]))
    inst.add_argument("--input", help="frame source ({})".format(defaults["ONCOLENS_INPUT"]))
    inst.add_argument("--output", help="where annotated frames go (none)")
    inst.add_argument("--flags", help="more imagenet-style flags for 'oncolens classify'")
    inst.add_argument("--cache-dir", help="engine cache folder ({})".format(CACHE_DIR))
    inst.add_argument("--exec", dest="exec_cmd",
                      help="the oncolens command in ExecStart (default: the one running now)")
    inst.add_argument("--watchdog-sec", type=int, default=30,
                      help="WatchdogSec: restart when no frame went through for this long, "
                           "2 to 86400 seconds (30)")
    inst.add_argument("--overwrite", action="store_true", help="replace existing files (the environment file's ONCOLENS_TOKEN is kept)")
    return p


def default_exec():
    """The absolute oncolens command of this installation, for ExecStart; one installed
    under a path with whitespace is refused (ExecStart= splits there)."""
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "oncolens")
    found = shutil.which("oncolens")
    if os.access(beside, os.X_OK):
        program, cmd = beside, "{}"
    elif found:
        program, cmd = os.path.abspath(found), "{}"
    else:
        program, cmd = os.path.abspath(sys.executable), "{} -m oncolens"
    _check_program(program, "the oncolens command of this installation")
    return cmd.format(program)


def _check_program(program, what):
    if any(ch.isspace() for ch in program):
        raise UsageError("--exec: {}, {}, has whitespace in its path, where the unit's "
                         "ExecStart= would split it: pass --exec with a path without spaces "
                         "(a link to it)".format(what, program))


def _check_values(args):
    """An empty --model or --input would reach classify as an empty argument (a service
    failing at every start); the --exec given is a program path with whitespace when that
    whole path exists (ExecStart= splits it; '/usr/bin/python3 -m oncolens' is fine)."""
    for flag, value in (("--model", args.model), ("--input", args.input)):
        if value is not None and not value.strip():
            raise UsageError("{}: empty; expected {} (leave the flag out for the default)"
                             .format(flag, "a model folder or file" if flag == "--model"
                                     else "a frame source"))
    if args.exec_cmd and len(args.exec_cmd.split()) > 1 and os.path.exists(args.exec_cmd):
        _check_program(args.exec_cmd, "the program given")


def _under_root(root, path):
    return os.path.join(os.path.abspath(root), path.lstrip("/"))


def render_files(args, token=None):
    """[(absolute target path, text, mode)] for the unit (0644) and the environment file
    (0600: it may hold ONCOLENS_TOKEN, ``token``)."""
    _check_values(args)
    exec_cmd = args.exec_cmd or default_exec()
    if exec_cmd.startswith(("/home/", "/root/")):
        sys.stderr.write("oncolens service: warning: {} is under /home or /root, which the "
                         "unit hides (ProtectHome=yes); install OncoLens system-wide (sudo pip3 "
                         "install .) or pass --exec\n".format(exec_cmd))
    values = {"ONCOLENS_MODEL": args.model, "ONCOLENS_INPUT": args.input,
              "ONCOLENS_OUTPUT": args.output, "ONCOLENS_FLAGS": args.flags,
              "ONCOLENS_CACHE_DIR": args.cache_dir, "ONCOLENS_TOKEN": token}
    # the unit first: its checks name the flags (--output), the file's the variables
    unit_text = render_unit(exec_cmd=exec_cmd, user=args.user, watchdog_sec=args.watchdog_sec,
                            cache_dir=args.cache_dir or CACHE_DIR, output=args.output or "")
    env_text = render_env(values)
    if args.user != args.user.lower():   # a valid name by now (render_unit)
        sys.stderr.write("oncolens service: warning: --user {}: useradd refuses upper-case "
                         "letters on older systems (Ubuntu 18.04, JetPack 4), so the command "
                         "printed may fail there; a lower-case name works everywhere\n".format(
                             args.user))
    return [(_under_root(args.root, UNIT_PATH), unit_text, UNIT_MODE),
            (_under_root(args.root, ENV_PATH), env_text, ENV_MODE)]


def existing_token(path):
    """The ONCOLENS_TOKEN of the environment file in place, or None. A re-install with
    --overwrite keeps it: install takes no token (a flag would show in ps and the shell's
    history), so replacing the files must not lock the lab out of the page."""
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except (OSError, IOError, UnicodeDecodeError):
        return None
    token = None
    for line in lines:  # the last assignment wins, as for systemd and docker
        name, sep, value = line.partition("=")
        if sep and name == "ONCOLENS_TOKEN":
            token = value.strip() or None
    if token and any(ch in token for ch in "\"'\\"):
        raise UsageError("{}: its ONCOLENS_TOKEN holds a quote or a backslash, which systemd "
                         "and docker read differently; edit it before re-installing (the "
                         "token is kept across --overwrite)".format(path))
    return token


def write_files(files, overwrite):
    """Write every file or none: each target is checked first (not a folder, a folder above
    it that exists or can be made and is writable), then each is written to a temporary file
    of its own beside its target (outpaths.temp_path) and only then all are moved into place
    together (outpaths.replace_together); a failure removes what was staged and puts back
    what was already moved. Each file is created with its mode (the environment file is
    never readable by others, not even while it is written)."""
    from oncolens.appliance.outpaths import check_output_file, replace_together, temp_path
    existing = [path for path, _, _ in files if os.path.exists(path)]
    if existing and not overwrite:
        raise UsageError("{} already exist{} (pass --overwrite to replace {})".format(
            " and ".join(existing), "s" if len(existing) == 1 else "",
            "it" if len(existing) == 1 else "them"))
    hint = "(run it with sudo, or pass --root DIR or --print)"
    for path, _, _ in files:
        if os.path.isdir(path):
            raise UsageError("cannot write {}: a folder of that name is in the way (expected "
                             "the file itself)".format(path))
        try:
            check_output_file(path, "cannot write", overwrite=True)
        except UsageError as exc:  # a file where a folder should be, or one not writable
            raise UsageError("{} {}".format(exc, hint))
    staged = []
    try:
        for path, text, mode in files:
            folder = os.path.dirname(path)
            if not os.path.isdir(folder):
                os.makedirs(folder)
            tmp = temp_path(path, mode=mode)  # made with its mode: never more open than that
            staged.append((tmp, path))
            _write_text(tmp, text, mode)
        replace_together(staged)
    except (OSError, IOError) as exc:
        for tmp, _ in staged:
            if os.path.isfile(tmp):
                os.remove(tmp)
        failed = getattr(exc, "filename", None)
        failed = dict(staged).get(failed, failed)  # a temporary file's: name its target
        raise UsageError("cannot write {}: {} {}".format(
            failed or path, exc.strerror or exc, hint))


def _write_text(path, text, mode):
    """``text`` to the file ``path`` (temp_path made it, with ``mode`` less the umask), then
    its mode set to ``mode`` exactly, whatever the umask."""
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


NEXT_STEPS = """\
Next, as root:
  id -u {user} >/dev/null 2>&1 || useradd --system --user-group --groups video \\
      --home-dir {state} --no-create-home --shell /usr/sbin/nologin {user}
  systemctl daemon-reload
  systemctl enable --now oncolens
  journalctl -u oncolens -f
"""


@cli_entry("oncolens service")
def main(argv):
    parser = build_parser()
    args = parser.parse_args(normalize_flags(argv))
    if args.action != "install":
        parser.print_help()
        return 2
    token = None
    if args.overwrite and not args.print_only:  # --print never shows a token
        token = existing_token(_under_root(args.root, ENV_PATH))
    files = render_files(args, token)
    if args.print_only:
        for path, text, _ in files:
            print("# ---- {} ----".format(path))
            print(text)
        return 0
    write_files(files, args.overwrite)
    for path, _, mode in files:
        print("wrote {} (mode {:o})".format(path, mode))
    if token:
        print("kept ONCOLENS_TOKEN from the environment file it replaced")
    print(NEXT_STEPS.format(user=args.user, state=STATE_DIR))
    return 0
