"""File names that are not valid UTF-8 (a Latin-1 'café.png' from an old scanner PC): data
split, data check and evaluate keep them with their own bytes in what they write and print
(surrogateescape, as batch's results do), under a strict UTF-8 stdout, with no traceback."""
import csv
import io
import os
import shutil
import subprocess

from conftest import cli_subprocess_cmd, subprocess_env

CAFE = b"caf\xe9.png"


def _run(*args):
    env = subprocess_env()
    env["PYTHONIOENCODING"] = "utf-8"  # strict, as under en_US.UTF-8 (C.UTF-8 is lenient)
    proc = subprocess.run(cli_subprocess_cmd(*args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode("utf-8", "replace")
    return proc


def _raw_with_latin1_name(tiny_data, tmp_path):
    raw = str(tmp_path / "raw")
    for cls in ("benign", "normal"):
        shutil.copytree(os.path.join(tiny_data, "train", cls), os.path.join(raw, cls))
    first = sorted(os.listdir(os.path.join(raw, "benign")))[0]
    os.rename(os.path.join(raw, "benign", first).encode(), os.path.join(raw, "benign").encode()
              + b"/" + CAFE)
    return raw


def test_split_and_check_keep_a_non_utf8_name(tiny_data, tmp_path):
    raw = _raw_with_latin1_name(tiny_data, tmp_path)
    out = str(tmp_path / "out")
    proc = _run("data", "split", raw, out)
    assert proc.returncode == 0, proc.stderr
    with io.open(os.path.join(out, "splits.csv"), encoding="utf-8", errors="surrogateescape",
                 newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    row = [r for r in rows if r["path"].startswith("benign/caf")][0]
    assert os.fsencode(row["path"]) == b"benign/" + CAFE
    assert os.path.isfile(os.path.join(out, *row["dest"].split("/")))
    shutil.copy(os.path.join(raw.encode(), b"benign", CAFE),
                os.path.join(raw.encode(), b"benign", b"copy_of_" + CAFE))
    proc = _run("data", "check", raw, "--json", str(tmp_path / "check.json"))
    assert proc.returncode == 0, proc.stderr
    assert b"copy_of_" + CAFE in proc.stdout  # the duplicate warning names it, bytes kept


def test_evaluate_names_an_unreadable_non_utf8_file(tiny_bundle, tiny_data, tmp_path):
    split = os.fsdecode(str(tmp_path).encode() + b"/t\xe9st")  # in report.md's header too
    shutil.copytree(os.path.join(tiny_data, "test"), split)
    with open(os.path.join(os.fsencode(split), b"benign", CAFE), "wb") as fh:
        fh.write(b"not an image")
    out = str(tmp_path / "ev")
    proc = _run("evaluate", "--model-dir", tiny_bundle, split, "--bootstrap", 0, "--out", out,
                "--json", str(tmp_path / "ev.json"))
    assert proc.returncode == 1, proc.stderr
    assert b"unreadable: " in proc.stdout and CAFE in proc.stdout
    with open(os.path.join(out, "report.md"), "rb") as fh:
        assert b"t\xe9st" in fh.read()


def test_split_refuses_a_class_folder_name_that_labels_txt_cannot_hold(tiny_data, tmp_path):
    """labels.txt is UTF-8 (jetson-inference reads it so): a Latin-1 class folder name is
    one line naming it, before anything is copied."""
    raw = str(tmp_path / "raw")
    for cls in ("benign", "normal"):
        shutil.copytree(os.path.join(tiny_data, "train", cls), os.path.join(raw, cls))
    os.rename(os.path.join(raw, "benign").encode(), raw.encode() + b"/b\xe9nin")
    out = str(tmp_path / "out")
    proc = _run("data", "split", raw, out)
    assert proc.returncode == 2
    err = proc.stderr.decode("utf-8", "replace").strip()
    assert "is not a valid UTF-8 name" in err and "rename the folder" in err
    assert len(err.splitlines()) == 1 and not os.path.exists(out)
