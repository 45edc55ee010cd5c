"""``batch --resume`` cut a results file's last line whenever it lacked its line ending, so a
whole last row (a file written by hand or by another tool, a stop between the row and its
newline) was dropped and that file classified again. Only a line that is unfinished is cut
now; a whole one gets its line ending."""
import csv
import io
import json
import os

import pytest

from conftest import run_cli

HEADER = (u"path,relpath,label,index,confidence,p_benign,p_malignant,p_normal,truth,correct,"
          u"error,backend,precision,model_sha256,annotated\r\n")
ROW = u"/in/a.png,a.png,benign,0,0.9,0.9,0.05,0.05,,,,onnxruntime,fp32,{},{}"
SHA = "ab" * 32


def _finish(tmp_path, name, data):
    from oncolens.appliance.results_tail import finish_last_line
    path = str(tmp_path / name)
    with open(path, "wb") as fh:
        fh.write(data)
    finish_last_line(path, os.path.splitext(name)[1])
    with open(path, "rb") as fh:
        return fh.read()


def _batch(tiny_bundle, folder, results, *flags):
    code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                              "--no-progress"] + list(flags))
    assert code == 0, err
    return out


def _paths(results):
    with io.open(results, encoding="utf-8", newline="") as fh:
        if results.endswith(".csv"):
            return [r["path"] for r in csv.DictReader(fh)]
        return [json.loads(line)["path"] for line in fh if line.strip()]


@pytest.mark.parametrize("ext,cut", [(".jsonl", b"\n"), (".csv", b"\r\n"), (".csv", b"\n")])
def test_a_whole_last_row_without_its_line_ending_is_kept(tiny_bundle, tiny_data, tmp_path,
                                                          ext, cut):
    folder = os.path.join(tiny_data, "test")
    results = str(tmp_path / ("r" + ext))
    _batch(tiny_bundle, folder, results)
    with open(results, "rb") as fh:
        whole = fh.read()
    with open(results, "wb") as fh:
        fh.write(whole[:-len(cut)])  # no line ending, or (CSV) half of it
    out = _batch(tiny_bundle, folder, results, "--resume")
    assert "classified 0 images" in out, out
    with open(results, "rb") as fh:
        assert fh.read() == whole  # its row kept, the line ending added, nothing after it


def test_a_row_ending_in_an_annotated_copys_name_is_cut(tiny_bundle, tiny_data, tmp_path):
    """The name may have lost its end: that file is classified (and annotated) again."""
    folder = os.path.join(tiny_data, "test")
    results, out = str(tmp_path / "r.csv"), str(tmp_path / "out")
    _batch(tiny_bundle, folder, results, "--annotate", out)
    with open(results, "rb") as fh:
        whole = fh.read()
    with open(results, "wb") as fh:
        fh.write(whole[:-2])
    printed = _batch(tiny_bundle, folder, results, "--annotate", out, "--resume")
    assert "classified 1 image " in printed, printed
    paths = _paths(results)
    assert len(paths) == len(set(paths)) == sum(len(f) for _, _, f in os.walk(folder))


@pytest.mark.parametrize("tail,kept", [
    (ROW.format(SHA, ""), True),  # annotated empty: nothing of the row can be cut off
    (ROW.format(SHA, "/out/a.png") + u"\r", True),  # half its line ending written
    (ROW.format(SHA, "/out/a.png"), False),  # the copy's name may be cut
    (ROW.format(SHA, "")[:-20], False),  # fields missing
    (u'/in/a.png,"a\nb.png,benign', False),  # an open quote, a line break inside it
])
def test_the_last_csv_record(tmp_path, tail, kept):
    data = (HEADER + ROW.format(SHA, "") + u"\r\n" + tail).encode("utf-8")
    got = _finish(tmp_path, "r.csv", data)
    if kept:
        assert got == data + (b"\n" if data.endswith(b"\r") else b"\r\n")
    else:  # cut whole, however many lines it spans
        assert got == (HEADER + ROW.format(SHA, "") + u"\r\n").encode("utf-8")


def test_a_csv_from_before_the_annotated_column_ends_in_its_sha(tmp_path):
    header = HEADER[:-len(u",annotated\r\n")] + u"\n"
    row = ROW.format(SHA, "")[:-1]
    assert _finish(tmp_path, "r.csv", (header + row).encode()) == (header + row + u"\n").encode()
    assert _finish(tmp_path, "r.csv", (header + row[:-3]).encode()) == header.encode()


@pytest.mark.parametrize("tail,kept", [
    (b'{"path": "/in/a.png", "label": "benign"}', True),
    (b'{"path": "/in/a.png", "label": "beni', False),
    (b'{"path": "/in/a.png", "label": "benign"', False),
    (b"   ", False),
])
def test_the_last_json_line(tmp_path, tail, kept):
    first = b'{"path": "/in/b.png"}\n'
    got = _finish(tmp_path, "r.jsonl", first + tail)
    assert got == (first + tail + b"\n" if kept else first)
