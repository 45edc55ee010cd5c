"""`oncolens data`: output paths checked before the work (one line, nothing replaced without
--overwrite), synth --overwrite leaves nothing of the earlier set, unknown sub-commands say so,
a subcommand's errors name it."""
import glob
import json
import os

import pytest

from conftest import run_cli


def _one_line(code, err, word):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert word in err, err


@pytest.mark.parametrize("case", ["under-a-file", "a-folder", "exists"])
def test_check_json_is_checked_first(tiny_data, tmp_path, case):
    afile = tmp_path / "afile"
    afile.write_text(u"x")
    target = {"under-a-file": afile / "x.json", "a-folder": tmp_path,
              "exists": tmp_path / "keep.json"}[case]
    if case == "exists":
        target.write_text(u"{\"keep\": true}")
    code, out, err = run_cli(["data", "check", tiny_data, "--json", str(target)])
    _one_line(code, err, "--json")
    assert out == ""  # refused before the audit
    if case == "exists":
        assert json.load(open(str(target))) == {"keep": True}
        code, out, err = run_cli(["data", "check", tiny_data, "--json", str(target),
                                  "--overwrite"])
        assert code == 0 and "counts" in json.load(open(str(target))), err


def test_check_json_never_takes_an_image_name(tiny_data, tmp_path):
    """With --overwrite, --json train/benign/x.png would replace an image of the dataset."""
    image = sorted(glob.glob(os.path.join(tiny_data, "train", "benign", "*.png")))[0]
    before = open(image, "rb").read()
    code, out, err = run_cli(["data", "check", tiny_data, "--json", image, "--overwrite"])
    _one_line(code, err, "--json")
    assert "an image or video file name" in err and open(image, "rb").read() == before


def test_check_json_into_a_new_folder(tiny_data, tmp_path):
    target = tmp_path / "new" / "x.json"
    code, out, err = run_cli(["data", "check", tiny_data, "--json", str(target)])
    assert code == 0, err  # a missing folder on the way is made
    assert "counts" in json.load(open(str(target)))


def test_synth_into_a_file_is_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text(u"x")
    code, out, err = run_cli(["data", "synth", str(afile), "--size", 32])
    _one_line(code, err, "is a file")


def test_synth_negative_seed_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "syn"  # numpy refused it with a traceback, after train/ was made
    code, o, err = run_cli(["data", "synth", str(out), "--size", 32, "--seed", "-1"])
    _one_line(code, err, "--seed: expected 0 to 4294967295, got -1")
    assert not out.exists()


def test_synth_overwrite_leaves_nothing_of_the_earlier_set(tmp_path):
    out = str(tmp_path / "syn")
    code, o, err = run_cli(["data", "synth", out, "--size", 32, "--train", 4, "--val", 2,
                            "--test", 2])
    assert code == 0, err
    os.makedirs(os.path.join(out, "train", "stale_class"))
    code, o, err = run_cli(["data", "synth", out, "--size", 32, "--train", 2, "--val", 1,
                            "--test", 1, "--overwrite"])
    assert code == 0, err
    assert len(glob.glob(os.path.join(out, "*", "*", "*.png"))) == 12
    assert not os.path.exists(os.path.join(out, "train", "stale_class"))


def test_unknown_data_command(capsys):
    code, out, err = run_cli(["data", "bogus"])
    _one_line(code, err, "unknown command 'bogus'")
    assert "check" in err and "split" in err and "synth" in err


@pytest.mark.parametrize("command", ["synth", "check", "split"])
def test_a_subcommand_error_names_the_subcommand(tiny_data, tmp_path, command):
    """Its errors began 'oncolens data: error:', whichever subcommand it was, where every
    other command (and these subcommands' own flag errors) name the command."""
    out = str(tmp_path / "out")
    args = {"synth": [out, "--seed", "-1"],
            "check": [tiny_data, "--max-distance", "65"],
            "split": [os.path.join(tiny_data, "train"), out, "--seed", "-1"]}[command]
    code, o, err = run_cli(["data", command] + args)
    _one_line(code, err, "")
    assert err.startswith("oncolens data {}: error: --".format(command)), err
    assert not os.path.exists(out)


def test_a_json_that_cannot_be_written_is_one_line(tiny_data, tmp_path):
    """/proc takes no new files, even from root, for whom the check before the run (write
    permission) always passes: the audit's end was a traceback."""
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    code, out, err = run_cli(["data", "check", tiny_data, "--json", "/proc/oncolens.json"])
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "--json /proc/oncolens.json" in err, err


def test_a_json_cut_short_keeps_the_earlier_one_whole(tiny_data, tmp_path, monkeypatch):
    """--json --overwrite wrote over the earlier file in place: a full disk midway left half
    a JSON file under its name, and the earlier audit lost."""
    import errno
    import json
    path = str(tmp_path / "audit.json")
    with open(path, "w") as fh:
        fh.write('{"earlier": true}')

    def dump(payload, fh, **kw):
        fh.write('{"records": [')
        fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(json, "dump", dump)
    code, out, err = run_cli(["data", "check", tiny_data, "--json", path, "--overwrite"])
    assert code == 2 and "No space left on device" in err and "Traceback" not in err, err
    assert os.listdir(str(tmp_path)) == ["audit.json"]
    with open(path) as fh:
        assert json.load(fh) == {"earlier": True}
