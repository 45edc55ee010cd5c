"""Checks on output paths, made before any work starts.

A run that measures or classifies for minutes must not fail at its end because the file it
was told to write cannot be created: each command checks its output flags first, with one
line naming the flag, the path and what was expected.
"""
import binascii
import contextlib
import errno
import io
import logging
import os
import re
import shutil
import stat

from oncolens.appliance.errors import UsageError

log = logging.getLogger(__name__)


def first_existing(path):
    """The nearest ancestor of ``path`` (or ``path`` itself) that exists."""
    here = os.path.abspath(path)
    while not os.path.exists(here):
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return here


def _check_parent(path, flag):
    parent = os.path.dirname(os.path.abspath(path))
    found = first_existing(parent)
    if not os.path.isdir(found):
        raise UsageError("{} {}: {} is a file, not a folder: expected a path inside a folder"
                         .format(flag, path, found))
    if not os.access(found, os.W_OK | os.X_OK):
        raise UsageError("{} {}: folder {} is not writable".format(flag, path, found))


def check_text_file(path, flag, expected="a report or log file name (.json, .csv, .log, ...)"):
    """A report or log (JSON, CSV, text) is never written under an image's or a video's
    name: with --overwrite that name could be an input being classified."""
    from oncolens.appliance.imageio import IMAGE_EXTENSIONS
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS or ext in (".mp4", ".avi", ".mkv", ".mov", ".m4v"):
        raise UsageError("{} {}: an image or video file name; expected {}".format(
            flag, path, expected))


def check_output_file(path, flag, overwrite=False, hint="pass --overwrite to replace it"):
    """``path`` can be written as a file: its folder exists or can be made, and unless
    ``overwrite`` nothing is there yet."""
    if os.path.isdir(path) or not os.path.basename(path):
        raise UsageError("{} {} is a folder: expected a file name".format(flag, path))
    if os.path.exists(path) and not overwrite:
        raise UsageError("{} {} already exists: {}".format(flag, path, hint))
    _check_parent(path, flag)


def check_not_read_only(path, writer):
    """Refuse, in one line, to replace the file ``path`` when it was made read-only: its
    mode has no write bit (which holds for root too: whoever made it so meant it, as for a
    folder in engines.folder_is_writable), or this user may not write it. A file in a
    writable folder can be replaced all the same (a new file moved over it), so it is asked
    here, before ``writer`` (what would rewrite it: "this build") does any work."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode) or (mode & 0o222 and os.access(path, os.W_OK)):
        return
    raise UsageError("{} is read-only (mode {:04o}) and {} rewrites it: make it writable "
                     "(chmod u+w {}) to let it; nothing was written".format(
                         path, stat.S_IMODE(mode), writer, path))


def check_output_dir(path, flag):
    """``path`` is a folder or can be made as one."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UsageError("{} {} is a file: expected a folder".format(flag, path))
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError("{} {}: folder is not writable".format(flag, path))
        return
    _check_parent(path, flag)


def numbered_files(pattern):
    """Whether a path is one of the files the numbered output ``pattern`` (``out_%i.jpg``)
    writes (``out_0.jpg``, ``out_17.jpg`` in its folder): an input walk leaves them out, so
    a rerun into the input's own folder does not read its earlier outputs as inputs."""
    regex = re.compile(_pattern_regex(os.path.basename(pattern)) + r"\Z")
    folder = os.path.realpath(os.path.dirname(pattern) or ".")

    def written(path):
        return (regex.match(os.path.basename(path)) is not None and
                os.path.realpath(os.path.dirname(path) or ".") == folder)
    return written


def _pattern_regex(name):
    parts = re.split(r"(%%|%[#0\- +]*\d*(?:\.\d+)?[a-zA-Z])", name)
    out = []
    for n, part in enumerate(parts):
        if n % 2 == 0:
            out.append(re.escape(part))
        elif part == "%%":
            out.append("%")
        else:  # the number field: digits for %i/%d/%u, anything for the rest
            out.append(r"[-+ ]?\d+" if part[-1] in "diu" else ".+")
    return "".join(out)


def inside(path, folder):
    """Whether ``path`` lies under ``folder`` (both as given: resolve links first)."""
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def drop_empty_folders(folders, root):
    """Remove each of ``folders`` (inside ``root``) that is empty, and then each parent that
    this leaves empty, up to ``root`` itself, which stays: what removing copies left."""
    for folder in sorted(set(folders), key=len, reverse=True):
        while inside(folder, root) and os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
            folder = os.path.dirname(folder)


# temp_path's names: ".<name>.<8 hex digits>.tmp" (or another of these suffixes) beside the
# file, the name cut to its first 200 bytes; ".unchecked.onnx": the ONNX export, checked
# under that name before it takes its own
TEMP_SUFFIXES = (".tmp", ".old", ".unchecked.onnx")
TEMP_NAME = re.compile(r"\.(.+)\.[0-9a-f]{8}(" + "|".join(re.escape(s) for s in TEMP_SUFFIXES) +
                       r")\Z", re.DOTALL)


def temp_path(path, suffix=".tmp", mode=0o666):
    """A new empty file beside ``path``, named ``.<name>.<random>.tmp`` (``suffix``, one of
    TEMP_SUFFIXES): no file of the user's is replaced and two writers of one file each have
    their own. Its mode is what ``open`` gives a new file (0666 less the umask), not mkstemp's
    0600; or ``mode`` less the umask: a file that must never be readable by others (0600)
    is made so, not changed after it was made."""
    return _new_beside(path, suffix, lambda tmp: os.close(
        os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)))


def temp_folder(path, suffix=".tmp"):
    """A new empty folder beside ``path``, named as temp_path names a file
    (``.<name>.<random>.tmp``), on the same filesystem: what is built there takes ``path``'s
    place whole (replace_folder). Its mode is what ``os.makedirs`` gives a new folder."""
    return _new_beside(path, suffix, os.mkdir)


def _new_beside(path, suffix, make):
    """``make(name)`` at an unused temp_path name beside ``path``; that name."""
    if suffix not in TEMP_SUFFIXES:
        raise ValueError("temp_path: suffix {!r}, expected one of {}".format(
            suffix, ", ".join(TEMP_SUFFIXES)))
    folder, name = os.path.split(os.path.abspath(path))
    name = _cut(name, 200)
    for _ in range(100):
        tmp = os.path.join(folder, ".{}.{}{}".format(
            name, binascii.hexlify(os.urandom(4)).decode("ascii"), suffix))
        try:
            make(tmp)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name beside it", path)


def _cut(name, limit):
    """``name`` cut to at most ``limit`` bytes on disk (a file name may have 255; the
    temporary name adds 14), whole characters only."""
    name = name[:limit]
    while len(os.fsencode(name)) > limit:
        name = name[:-1]
    return name


def temp_target(name):
    """The file name that ``name`` is temp_path's temporary file of, else None."""
    found = TEMP_NAME.match(name)
    return found.group(1) if found else None


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def write_temp(path, write):
    """``write`` a temporary file beside ``path`` and return its name (removed when ``write``
    fails). It takes the mode of the file at ``path`` if there is one, as writing that file
    in place would have kept it; the temporary file is made with no more access for others
    than that (a 0600 file's text is never readable by others while it is written), and
    writable by its owner until it is whole."""
    mode = stat.S_IMODE(os.stat(path).st_mode) if os.path.isfile(path) else None
    tmp = None
    try:
        tmp = temp_path(path, mode=0o666 if mode is None else (mode & 0o777) | 0o600)
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
    except BaseException as exc:
        if tmp is not None:
            _remove(tmp)
        _name_the_file(exc, path)
        raise
    return tmp


def _name_the_file(exc, path):
    """An OSError about a temporary file of ``path``'s (a full disk, a folder that refuses
    new files) names ``path``: the user never asked for the hidden name."""
    if isinstance(exc, OSError) and exc.filename is not None and \
            temp_target(os.path.basename(str(exc.filename))) is not None:
        exc.filename, exc.filename2 = path, None


def replace_file(path, write):
    """``write`` a temporary file beside ``path``, then move it over ``path``: a run stopped
    midway (Ctrl-C, a full disk) leaves the earlier file whole and no temporary one."""
    tmp = write_temp(path, write)
    try:
        os.replace(tmp, path)
    except BaseException as exc:
        _remove(tmp)
        _name_the_file(exc, path)
        raise


def text_writer(text):
    """A function writing ``text`` in UTF-8 to the file it is given (for write_temp and
    replace_file)."""
    def write(target):
        with io.open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
    return write


def replace_text(path, text):
    """``text`` written whole to ``path`` in UTF-8 (replace_file: beside it first, then
    moved over it)."""
    replace_file(path, text_writer(text))


@contextlib.contextmanager
def folder_made_for(path):
    """Make the folder ``path`` (and the missing ones above it) for what the body writes
    there; when the body fails or is stopped, the folders made here that are still empty go
    again: a command that wrote nothing leaves nothing."""
    top = first_existing(path)
    made = not os.path.isdir(path)
    if made:
        os.makedirs(path)
    try:
        yield
    except BaseException:
        if made:
            drop_empty_folders([os.path.abspath(path)], top)
        raise


def replace_together(moves):
    """Move each (temporary file, final path) of ``moves`` into place, all or none: when a
    move fails (or Ctrl-C comes), the files already moved are put back as they were (each
    earlier file waits beside its place until the last move), and the temporary files are
    removed. For files that must agree, such as an ONNX and the model.json describing it.
    Each step is recorded before its renames, so one stopped just after a rename is undone
    too."""
    steps = []  # (the earlier file's place aside or None, temporary file, final path)
    try:
        for tmp, final in moves:
            step = [None, tmp, final]
            steps.append(step)
            if os.path.lexists(final):
                step[0] = temp_path(final, ".old")
                os.replace(final, step[0])
            os.replace(tmp, final)
    except BaseException:
        for old, tmp, final in reversed(steps):
            _undo_step(old, tmp, final)
        for tmp, _ in moves:
            _remove(tmp)
        raise
    for old, _, _ in steps:
        if old is not None:
            _remove(old)


def _undo_step(old, tmp, final):
    """Put ``final`` back as it was before replace_together's step, wherever the step
    stopped: the new file is there when ``tmp`` is gone; the earlier one is aside at ``old``
    once ``final`` was moved (before that ``old`` is an empty placeholder)."""
    moved = not os.path.lexists(tmp)
    try:
        if old is None:
            if moved and os.path.lexists(final):
                os.remove(final)
        elif moved or not os.path.lexists(final):
            os.replace(old, final)
        else:
            os.remove(old)
    except OSError:  # the earlier file stays beside its place, under its .old name
        log.warning("could not put %s back as it was", final)


def replace_folder(tmp, path):
    """Put the folder ``tmp`` (temp_folder's, beside ``path``) in ``path``'s place: an
    earlier folder there is moved aside (``.<name>.<random>.old``), ``tmp`` takes its name
    with its mode, and the earlier one is then removed. A move that fails puts the earlier
    folder back as it was, and ``tmp`` is left to the caller; hold Ctrl-C and SIGTERM over
    it (cliutil.signals_held) so that a stop cannot come between the two moves. ``path``
    is taken by its absolute name: '.' (the current folder) is one no rename takes."""
    path = os.path.abspath(path)
    aside = temp_folder(path, ".old") if os.path.lexists(path) else None
    try:
        if aside is not None:
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
            os.replace(path, aside)  # over the empty placeholder: a folder replaces one
        os.replace(tmp, path)
    except BaseException:
        if aside is not None:
            _put_back(aside, path)
        raise
    if aside is not None:
        try:
            shutil.rmtree(aside)
        except OSError as exc:
            log.warning("%s: the earlier folder, replaced, could not all be removed from %s "
                        "(%s)", path, aside, exc.strerror or exc)


def _put_back(aside, path):
    """replace_folder stopped: the earlier folder goes back to ``path`` from ``aside`` (or,
    not moved yet, the empty placeholder ``aside`` goes)."""
    try:
        if os.path.lexists(path):
            os.rmdir(aside)
        else:
            os.replace(aside, path)
    except OSError:
        log.warning("could not put %s back as it was: it is at %s", path, aside)
