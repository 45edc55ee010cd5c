"""The systemd unit and the environment file of the OncoLens device service, as text.

They are built here, in Python, so that ``pip install .`` carries them with no package data
(the Nano's setuptools then has nothing to get wrong); ``systemd/oncolens.service`` and
``systemd/oncolens.default`` in the repository are these renderings with the defaults, and a
test keeps them identical.

The environment file (``/etc/default/oncolens``) is read both by the unit
(``EnvironmentFile=``) and by ``docker run --env-file``: one ``VAR=value`` a line, no quotes
(docker would keep them), so values may not contain quotes, backslashes or newlines.
"""
import os
import re

from oncolens.appliance.errors import UsageError

UNIT_PATH = "/etc/systemd/system/oncolens.service"
ENV_PATH = "/etc/default/oncolens"
STATE_DIR = "/var/lib/oncolens"
CACHE_DIR = "/var/cache/oncolens"
DEFAULT_EXEC = "/usr/local/bin/oncolens"
# systemd's strict user name rule (systemd.io/USER_NAMES), the one it applies to users it
# creates itself: ASCII letters, digits, _ and -, not first a digit or -, at most 31 characters
# (utmp's field). No trailing $ (shadow's allowance for Samba machine accounts) and no dot.
USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,30}\Z")
WATCHDOG_RANGE = (2, 86400)  # seconds: a frame at least every day (systemd takes far more)

# The variables of the environment file, in order, with their defaults and comments.
ENV_VARS = [
    ("ONCOLENS_MODEL", STATE_DIR + "/models/default",
     "The model bundle the service runs: a folder with model.json, labels.txt and the ONNX\n"
     "(models/README.md), or an .onnx / .engine file."),
    ("ONCOLENS_INPUT", "/dev/video0",
     "Where frames come from: /dev/video0 (USB camera), csi://0 (CSI camera), rtsp://...,\n"
     "rtp://@:1234, a video file, an image folder."),
    ("ONCOLENS_OUTPUT", "",
     "Where annotated frames go: empty for none (the console lines go to the journal),\n"
     "rtp://HOST:PORT, a video file, or a folder ending in / (it grows: mind the disk)."),
    ("ONCOLENS_FLAGS", "",
     "More imagenet-style flags, split at spaces, e.g. --topK=3 --input-width=1280."),
    ("ONCOLENS_TOKEN", "",
     "The token of the web page and API when serving (--serve in ONCOLENS_FLAGS, or an\n"
     "http:// ONCOLENS_OUTPUT): set it here, not as --token in ONCOLENS_FLAGS, where ps\n"
     "shows it to every user (this file is readable by root only). Empty: no token, so\n"
     "loopback only. Letters, digits, - and _, e.g. from\n"
     "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"),
    ("ONCOLENS_CACHE_DIR", CACHE_DIR,
     "Engine cache: TensorRT engines go to $ONCOLENS_CACHE_DIR/engines when the model\n"
     "folder is read-only. Outside /var/cache/oncolens, re-run 'oncolens service install'\n"
     "with --cache-dir so the unit may write there."),
]

ENV_HEADER = """\
# /etc/default/oncolens: what the OncoLens service runs.  Read by oncolens.service and by
# 'docker run --env-file /etc/default/oncolens' alike: one VAR=value a line, no quotes.
# The service runs:
#   oncolens classify --model=$ONCOLENS_MODEL --headless $ONCOLENS_FLAGS $ONCOLENS_INPUT $ONCOLENS_OUTPUT
# Readable by root only (mode 0600): it may hold ONCOLENS_TOKEN.
# After a change: sudo systemctl restart oncolens
"""
ENV_MODE = 0o600   # the environment file: root only (systemd's PID 1 and 'sudo docker' read it)
UNIT_MODE = 0o644

# @NAME@ placeholders (systemd's own ${VAR} syntax stays as it is).
UNIT_TEMPLATE = """\
# OncoLens edge classifier as a device service (written by 'oncolens service install').
# What it runs is set in @ENV_PATH@; after editing that: sudo systemctl restart oncolens.
# Keeps to systemd 237 (Ubuntu 18.04, JetPack 4.6): no directive newer than that.
# Guide: docs/JETSON.md in the OncoLens source.
[Unit]
Description=OncoLens edge classifier appliance (research use only)
Wants=network-online.target
After=network-online.target nvargus-daemon.service
# Back-off: a failing start is retried every RestartSec; after StartLimitBurst failures
# within StartLimitIntervalSec the unit stays failed (systemctl reset-failed oncolens).
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
# The appliance sends READY=1 once the model is loaded and the source open, WATCHDOG=1
# while frames flow, STOPPING=1 on SIGTERM (appliance/sdnotify.py).
Type=notify
NotifyAccess=main
WatchdogSec=@WATCHDOG_SEC@
# The first start on a Nano builds the TensorRT engine (minutes) before READY=1.
TimeoutStartSec=20min
TimeoutStopSec=30
Restart=on-failure
RestartSec=10

# Defaults; the environment file overrides them.
Environment=ONCOLENS_MODEL=@STATE_DIR@/models/default
Environment=ONCOLENS_INPUT=/dev/video0
Environment=ONCOLENS_OUTPUT=
Environment=ONCOLENS_FLAGS=
Environment=ONCOLENS_CACHE_DIR=@CACHE_DIR@
# ONCOLENS_TOKEN, the token for --serve and http:// outputs, belongs in the environment
# file, which only root reads: never here, since any user may read a unit (systemctl show).
Environment=CUDA_CACHE_PATH=@CACHE_DIR@/cuda
Environment=PYTHONUNBUFFERED=1
EnvironmentFile=-@ENV_PATH@
# ${X} is one argument, $X is split at whitespace (none when empty): systemd.service(5).
ExecStart=@EXEC@ classify --model=${ONCOLENS_MODEL} --headless $ONCOLENS_FLAGS ${ONCOLENS_INPUT} $ONCOLENS_OUTPUT
WorkingDirectory=@STATE_DIR@

# A dedicated system user; group video opens the cameras and the GPU (on L4T the
# /dev/nvhost-* and /dev/nvmap nodes belong to group video).
User=@USER@
Group=@USER@
SupplementaryGroups=video
# /var/lib/oncolens (models, outputs) and /var/cache/oncolens (engines), owned by the user.
StateDirectory=oncolens
CacheDirectory=oncolens
UMask=0027

# Hardening: the whole file system is read-only but for these paths.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=@RW_PATHS@
ProtectHome=yes
PrivateTmp=yes
# A CSI camera (csi://0) talks to nvargus-daemon through /tmp/argus_socket: share that one
# socket into the private /tmp ('-': ignored where there is none).
BindPaths=-/tmp/argus_socket
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictRealtime=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# Devices stay open (no PrivateDevices=, no DevicePolicy=): the Tegra GPU nodes
# (/dev/nvhost-*, /dev/nvmap, /dev/nvidia* on other L4T releases) change between releases and
# a wrong allow-list fails inside CUDA with no clear message.  Access is limited by the user
# and group video instead.  MemoryDenyWriteExecute= is left out: untested with NVIDIA's
# user-space libraries.

# Logs: stdout (one line a result) and stderr go to the journal: journalctl -u oncolens
StandardOutput=journal
StandardError=journal
SyslogIdentifier=oncolens

[Install]
WantedBy=multi-user.target
"""


def _check_value(name, value):
    """Values must survive both systemd's and docker's environment-file parsers unchanged."""
    bad = [ch for ch in ("\n", "\r", '"', "'", "\\") if ch in value]
    if bad:
        raise UsageError("{}: {!r} contains {!r}; expected a value without quotes, backslashes "
                         "or newlines (the environment file is read by systemd and docker "
                         "alike)".format(name, value, bad[0]))
    if value != value.strip():
        raise UsageError("{}: {!r} has leading or trailing spaces".format(name, value))
    return value


# Values the unit splits at whitespace: $ONCOLENS_OUTPUT in ExecStart= and ReadWritePaths=.
SPLIT_AT_SPACES = {
    "ONCOLENS_OUTPUT": "the unit passes it as $ONCOLENS_OUTPUT and lists its folder in "
                       "ReadWritePaths=, both split at spaces",
    "ONCOLENS_CACHE_DIR": "the unit lists it in ReadWritePaths=, which is split at spaces",
}


def _check_no_space(name, value, why):
    if any(ch.isspace() for ch in value):
        raise UsageError("{} {!r}: contains whitespace; expected a path without spaces "
                         "({})".format(name, value, why))
    return value


def render_env(values=None):
    """The environment file's text; ``values`` overrides the defaults of ENV_VARS."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(name for name, _, _ in ENV_VARS))
    if unknown:
        raise UsageError("unknown environment variable(s): {}".format(", ".join(unknown)))
    lines = [ENV_HEADER]
    for name, default, comment in ENV_VARS:
        value = values.get(name)
        value = default if value is None else _check_value(name, str(value))
        if name in SPLIT_AT_SPACES:
            _check_no_space(name, value, SPLIT_AT_SPACES[name])
        lines.append("\n".join("# " + line for line in comment.splitlines()))
        lines.append("{}={}\n".format(name, value))
    return "\n".join(lines)


def _local_dir(value):
    """The folder an output or cache path writes to, or None for a URI (rtp://, display://)."""
    if not value or "://" in value:
        return None
    if value.endswith("/"):
        return value.rstrip("/") or "/"
    return os.path.dirname(value) or None


def _inside(path, parent):
    path, parent = os.path.normpath(path), os.path.normpath(parent)
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def read_write_paths(cache_dir=CACHE_DIR, output=""):
    """ReadWritePaths=: the cache and state folders, plus a cache or output folder elsewhere."""
    paths = [CACHE_DIR, STATE_DIR]
    for extra in (_local_dir(cache_dir + "/"), _local_dir(output)):
        if extra is None:
            continue
        if not os.path.isabs(extra):
            raise UsageError("{}: expected an absolute path (the service runs in {})".format(
                extra, STATE_DIR))
        if not any(_inside(extra, p) for p in paths):
            paths.append(os.path.normpath(extra))
    return paths


def _escape(value):
    """systemd expands %-specifiers in unit files: a literal % is written %%."""
    return value.replace("%", "%%")


def check_user(user):
    """UsageError naming --user unless ``user`` meets systemd's strict rule (``USER_NAME``)."""
    if not USER_NAME.match(user or ""):
        raise UsageError("--user: {!r} is not a valid user name (expected 1 to 31 ASCII "
                         "letters, digits, _ and -, the first a letter or _)".format(user))


def check_watchdog(seconds):
    """UsageError naming --watchdog-sec unless ``seconds`` lies in WATCHDOG_RANGE."""
    low, high = WATCHDOG_RANGE
    if not low <= int(seconds) <= high:
        raise UsageError("--watchdog-sec: expected seconds from {} to {} (a day), got {}".format(
            low, high, seconds))


def render_unit(exec_cmd=DEFAULT_EXEC, user="oncolens", watchdog_sec=30, cache_dir=CACHE_DIR,
                output="", env_path=ENV_PATH):
    """The unit's text.  ``exec_cmd`` is the oncolens command (a path, or 'python3 -m oncolens')."""
    check_user(user)
    check_watchdog(watchdog_sec)
    for name, value in (("exec", exec_cmd), ("cache-dir", cache_dir), ("output", output)):
        _check_value("--" + name, value)
    _check_no_space("--output", output, SPLIT_AT_SPACES["ONCOLENS_OUTPUT"])
    _check_no_space("--cache-dir", cache_dir, SPLIT_AT_SPACES["ONCOLENS_CACHE_DIR"])
    if not os.path.isabs(exec_cmd.split()[0]):
        raise UsageError("--exec: {} is not an absolute path (systemd needs one)".format(
            exec_cmd.split()[0]))
    text = UNIT_TEMPLATE
    for key, value in (("@EXEC@", _escape(exec_cmd)),
                       ("@USER@", user),
                       ("@WATCHDOG_SEC@", str(int(watchdog_sec))),
                       ("@RW_PATHS@", " ".join(_escape(p) for p in read_write_paths(cache_dir,
                                                                                     output))),
                       ("@ENV_PATH@", env_path),
                       ("@STATE_DIR@", STATE_DIR),
                       ("@CACHE_DIR@", CACHE_DIR)):
        text = text.replace(key, value)
    return text
