"""Output paths are checked before any work: one line naming the flag and the path."""
import errno
import os
import stat

import pytest

from oncolens.appliance.errors import UsageError
from oncolens.appliance.outpaths import check_output_dir, check_output_file


def test_file_under_a_missing_folder_is_fine(tmp_path):
    check_output_file(str(tmp_path / "new" / "deeper" / "out.json"), "--json")


def test_file_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(UsageError, match=r"--json .*afile/sub/out.json: .*afile is a file"):
        check_output_file(str(blocker / "sub" / "out.json"), "--json")


def test_existing_file_needs_overwrite(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("kept")
    with pytest.raises(UsageError, match="--results .*out.csv already exists: pass --overwrite"):
        check_output_file(str(out), "--results")
    check_output_file(str(out), "--results", overwrite=True)
    assert out.read_text() == "kept"


def test_folder_given_for_a_file_is_refused(tmp_path):
    with pytest.raises(UsageError, match="is a folder: expected a file name"):
        check_output_file(str(tmp_path), "--metrics", overwrite=True)


def test_dir_checks(tmp_path):
    check_output_dir(str(tmp_path), "--annotate")
    check_output_dir(str(tmp_path / "new" / "sub"), "--annotate")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="--annotate .*afile is a file: expected a folder"):
        check_output_dir(str(blocker), "--annotate")
    with pytest.raises(UsageError, match="afile is a file, not a folder"):
        check_output_dir(str(blocker / "sub"), "--annotate")


def test_replace_file_never_touches_a_users_file_of_the_temporary_name(tmp_path):
    """The temporary file was always '<name>.tmp': a user's file of that name was replaced
    (and then moved over the target), and two writers of one file shared it."""
    from oncolens.appliance.outpaths import replace_file, temp_path, temp_target
    target = tmp_path / "report.json"
    users = tmp_path / "report.json.tmp"
    users.write_text(u"the user's")
    replace_file(str(target), lambda tmp: open(tmp, "w").write("new"))
    assert target.read_text() == "new" and users.read_text() == u"the user's"
    assert sorted(os.listdir(str(tmp_path))) == ["report.json", "report.json.tmp"]
    first, second = temp_path(str(target)), temp_path(str(target))
    assert first != second and os.path.dirname(first) == str(tmp_path)
    assert temp_target(os.path.basename(first)) == "report.json"
    assert temp_target("report.json.tmp") is None


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_replace_file_gives_a_new_file_the_mode_open_would(tmp_path, umask):
    from oncolens.appliance.outpaths import replace_file
    target = tmp_path / "new.csv"
    old = os.umask(umask)
    try:
        replace_file(str(target), lambda tmp: open(tmp, "w").write("x"))
        with open(str(tmp_path / "plain.csv"), "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(str(target)).st_mode) == 0o666 & ~umask
    assert os.stat(str(target)).st_mode == os.stat(str(tmp_path / "plain.csv")).st_mode


def test_replace_file_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    from oncolens.appliance.outpaths import replace_file
    target = tmp_path / "model.json"
    target.write_text(u"old")
    os.chmod(str(target), 0o640)
    replace_file(str(target), lambda tmp: open(tmp, "w").write("new"))
    assert target.read_text() == "new" and stat.S_IMODE(os.stat(str(target)).st_mode) == 0o640


def test_a_failed_write_leaves_the_earlier_file_and_no_temporary_one(tmp_path):
    from oncolens.appliance.outpaths import replace_file
    target = tmp_path / "history.csv"
    target.write_text(u"earlier")

    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise OSError(errno.ENOSPC, "No space left on device", tmp)
    with pytest.raises(OSError):
        replace_file(str(target), write)
    assert os.listdir(str(tmp_path)) == ["history.csv"] and target.read_text() == "earlier"


@pytest.mark.parametrize("failing", [1, 2])
def test_replace_together_is_all_or_none(tmp_path, monkeypatch, failing):
    """The second (or third) move failing puts the files already moved back as they were."""
    from oncolens.appliance import outpaths
    finals = [tmp_path / "a.onnx", tmp_path / "model.json", tmp_path / "labels.txt"]
    finals[0].write_text(u"old onnx")
    finals[1].write_text(u"old json")  # labels.txt is new
    moves = []
    for final in finals:
        moves.append((outpaths.write_temp(str(final), lambda tmp, f=final: open(tmp, "w").write(
            "new " + f.name)), str(final)))
    real = os.replace

    def replace(src, dst):
        if dst == moves[failing][1] and src == moves[failing][0]:
            raise OSError(errno.EIO, "Input/output error", dst)
        real(src, dst)
    monkeypatch.setattr(outpaths.os, "replace", replace)
    with pytest.raises(OSError):
        outpaths.replace_together(moves)
    assert sorted(os.listdir(str(tmp_path))) == ["a.onnx", "model.json"]
    assert finals[0].read_text() == "old onnx" and finals[1].read_text() == "old json"
    monkeypatch.setattr(outpaths.os, "replace", real)
    moves = [(outpaths.write_temp(str(f), lambda tmp, f=f: open(tmp, "w").write("new")), str(f))
             for f in finals]
    outpaths.replace_together(moves)
    assert sorted(os.listdir(str(tmp_path))) == ["a.onnx", "labels.txt", "model.json"]
    assert all(f.read_text() == "new" for f in finals)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("call", range(5))
def test_replace_together_stopped_at_any_rename_leaves_the_files_as_they_were(
        tmp_path, monkeypatch, call, when):
    """Ctrl-C arriving just before or just after any of its renames: a rename done but not
    yet recorded was not undone (the new file stayed beside the earlier others, or the
    earlier file was left under its hidden .old name with nothing in its place), and the
    placeholder made for the earlier file was left behind."""
    from oncolens.appliance import outpaths
    finals = [tmp_path / "a.onnx", tmp_path / "model.json", tmp_path / "labels.txt"]
    finals[0].write_text(u"old onnx")
    finals[1].write_text(u"old json")  # labels.txt is new: 2 + 2 + 1 renames
    moves = [(outpaths.write_temp(str(f), lambda tmp: open(tmp, "w").write("new")), str(f))
             for f in finals]
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) - 1 == call:
            if when == "after":
                real(src, dst)
            raise KeyboardInterrupt
        real(src, dst)
    monkeypatch.setattr(outpaths.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        outpaths.replace_together(moves)
    assert sorted(os.listdir(str(tmp_path))) == ["a.onnx", "model.json"]
    assert finals[0].read_text() == "old onnx" and finals[1].read_text() == "old json"


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_replace_file_never_shows_a_private_file_to_others_while_it_is_written(tmp_path, mode):
    """The temporary file was made 0666 less the umask (0644) and given the earlier file's
    0600 only once written: other users could open it, and read the text, meanwhile."""
    from oncolens.appliance.outpaths import replace_file
    target = tmp_path / "oncolens.env"
    target.write_text(u"ONCOLENS_TOKEN=old")
    os.chmod(str(target), mode)
    seen = []

    def write(tmp):
        with open(tmp, "w") as fh:  # a file the owner can write, whatever the earlier mode
            seen.append(stat.S_IMODE(os.stat(tmp).st_mode))
            fh.write("ONCOLENS_TOKEN=secret")
    old = os.umask(0o022)
    try:
        replace_file(str(target), write)
    finally:
        os.umask(old)
    assert seen == [0o600] and target.read_text() == "ONCOLENS_TOKEN=secret"
    assert stat.S_IMODE(os.stat(str(target)).st_mode) == mode


@pytest.mark.parametrize("name", [u"\u753b" * 80 + u".png", "a" * 251 + ".csv",
                                  os.fsdecode(b"\xff" * 240 + b".png")])
def test_replace_file_writes_a_file_of_a_long_name(tmp_path, name):
    """The temporary name adds 14 bytes to the first 200 characters of the name: a name of
    80 Chinese characters (244 bytes of UTF-8) got one over the 255 bytes a file name may
    have, and every write of it failed (an annotated copy: 'File name too long')."""
    from oncolens.appliance.imageio import write_image
    from oncolens.appliance.outpaths import replace_file
    target = os.path.join(str(tmp_path), name)
    replace_file(target, lambda tmp: open(tmp, "w").write("new"))
    assert open(target).read() == "new" and os.listdir(str(tmp_path)) == [name]
    if name.endswith(".png"):
        import numpy as np
        write_image(target, np.zeros((4, 4, 3), np.uint8))
        assert open(target, "rb").read(4) == b"\x89PNG" and os.listdir(str(tmp_path)) == [name]


@pytest.mark.parametrize("case", ["a folder in its place", "no such folder"])
def test_a_failed_replace_names_the_file_not_its_temporary_name(tmp_path, case):
    """The error of a rename over a folder, or of a temporary file that cannot be made,
    named the hidden '.<name>.<random>.tmp' the user never asked for: it names the file."""
    from oncolens.appliance.errors import os_error_line
    from oncolens.appliance.outpaths import replace_text
    path = tmp_path / "report.json"
    if case == "a folder in its place":
        (path / "inside").mkdir(parents=True)
    else:
        path = tmp_path / "gone" / "report.json"
    with pytest.raises(OSError) as caught:
        replace_text(str(path), u"{}")
    line = os_error_line(caught.value)
    assert line.endswith(": {!r}".format(str(path))) and ".tmp" not in line, line
    assert sorted(os.listdir(str(tmp_path))) == (["report.json"] if case.startswith("a")
                                                 else [])


def _tree(folder):
    return sorted((os.path.relpath(os.path.join(p, n), folder), open(os.path.join(p, n)).read())
                  for p, _, names in os.walk(folder) for n in names)


def test_replace_folder_puts_the_new_folder_in_place_of_the_earlier_one(tmp_path):
    """The demo's folder is built beside --out and replaces it whole, with its mode."""
    from oncolens.appliance.outpaths import replace_folder, temp_folder, temp_target
    out = tmp_path / "demo"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "old.txt").write_text(u"earlier")
    os.chmod(str(out), 0o750)
    tmp = temp_folder(str(out))
    assert temp_target(os.path.basename(tmp)) == "demo" and os.listdir(tmp) == []
    with open(os.path.join(tmp, "new.txt"), "w") as fh:
        fh.write(u"new")
    replace_folder(tmp, str(out))
    assert _tree(str(out)) == [("new.txt", "new")]
    assert stat.S_IMODE(os.stat(str(out)).st_mode) == 0o750
    assert os.listdir(str(tmp_path)) == ["demo"]  # nothing aside, nothing temporary
    tmp = temp_folder(str(tmp_path / "fresh"))  # no earlier folder: it just takes the name
    replace_folder(tmp, str(tmp_path / "fresh"))
    assert sorted(os.listdir(str(tmp_path))) == ["demo", "fresh"]


def test_replace_folder_that_fails_puts_the_earlier_folder_back(tmp_path, monkeypatch):
    """A failing (or stopped) second move leaves the earlier folder as it was, and the new
    one where it was built, for the caller to remove."""
    from oncolens.appliance import outpaths
    out = tmp_path / "demo"
    out.mkdir()
    (out / "old.txt").write_text(u"earlier")
    tmp = outpaths.temp_folder(str(out))
    real = os.replace

    def replace(src, dst):
        if src == tmp:
            raise OSError(errno.EXDEV, "Invalid cross-device link", src)
        return real(src, dst)
    monkeypatch.setattr(outpaths.os, "replace", replace)
    with pytest.raises(OSError):
        outpaths.replace_folder(tmp, str(out))
    assert _tree(str(out)) == [("old.txt", "earlier")]
    assert sorted(os.listdir(str(tmp_path))) == sorted(["demo", os.path.basename(tmp)])


def test_replace_folder_takes_the_place_of_the_current_folder_given_as_dot(tmp_path,
                                                                          monkeypatch):
    """``oncolens demo --out . --overwrite`` from inside an earlier demo: the new folder was
    made beside it (the name resolved), but the moves were given '.', which no rename
    takes (EBUSY): the finished demo was removed and the run ended on the OS's line."""
    from oncolens.appliance.outpaths import replace_folder, temp_folder
    out = tmp_path / "demo"
    out.mkdir()
    (out / "old.txt").write_text(u"earlier")
    monkeypatch.chdir(str(out))
    tmp = temp_folder(".")
    assert os.path.dirname(tmp) == str(tmp_path)
    with open(os.path.join(tmp, "new.txt"), "w") as fh:
        fh.write(u"new")
    replace_folder(tmp, ".")
    assert _tree(str(out)) == [("new.txt", "new")]
    assert os.listdir(str(tmp_path)) == ["demo"]
