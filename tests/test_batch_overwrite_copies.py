"""``oncolens batch --annotate OUT --overwrite`` on fewer images than the run before it kept the
copies of the images no longer in the input: OUT mixed two runs. The earlier run's copies,
as its results rows name them, now go first, and nothing else in OUT; where no results file
records them, a warning says that earlier copies may remain."""
import csv
import io
import json
import os
import shutil

import pytest

from conftest import run_cli


def _files(folder):
    found = []
    for parent, _, names in os.walk(folder):
        found.extend(os.path.relpath(os.path.join(parent, n), folder) for n in names)
    return sorted(found)


def _input(tiny_data, dst):
    """test/ (benign, malignant, normal) with a grey-only .pgm, whose copy is x.pgm.ppm."""
    import cv2
    shutil.copytree(os.path.join(tiny_data, "test"), str(dst))
    first = os.path.join(str(dst), "benign", sorted(os.listdir(str(dst / "benign")))[0])
    cv2.imwrite(str(dst / "benign" / "grey.pgm"), cv2.imread(first, cv2.IMREAD_GRAYSCALE))
    return str(dst)


def _batch(tiny_bundle, folder, *flags):
    code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--no-progress"] +
                             [str(f) for f in flags])
    assert code == 0, err
    return out


def _expected_copies(folder):
    return sorted(n + ".ppm" if n.endswith(".pgm") else n for n in _files(folder))


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_overwrite_removes_the_earlier_runs_copies_and_nothing_else(tiny_bundle, tiny_data,
                                                                    tmp_path, ext):
    folder = _input(tiny_data, tmp_path / "in")
    out, results = tmp_path / "out", str(tmp_path / ("r" + ext))
    _batch(tiny_bundle, folder, "--results", results, "--annotate", out)
    assert _files(str(out)) == _expected_copies(folder)
    if ext == ".csv":
        with io.open(results, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        with io.open(results, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
    assert sorted(os.path.relpath(r["annotated"], str(out)) for r in rows) == \
        _expected_copies(folder)
    # the user's own files in OUT, beside and among the copies
    (out / "notes.txt").write_text(u"mine")
    shutil.copyfile(str(out / "benign" / "grey.pgm.ppm"), str(out / "benign" / "mine.png"))
    # fewer images: a whole class and the .pgm gone
    shutil.rmtree(os.path.join(folder, "normal"))
    os.remove(os.path.join(folder, "benign", "grey.pgm"))
    _batch(tiny_bundle, folder, "--results", results, "--annotate", out, "--overwrite")
    assert _files(str(out)) == sorted(_expected_copies(folder) + ["benign/mine.png",
                                                                  "notes.txt"])
    assert not os.path.exists(str(out / "normal"))  # emptied by the removal


def test_without_a_record_earlier_copies_stay_and_a_warning_says_so(tiny_bundle, tiny_data,
                                                                    tmp_path, caplog):
    folder = _input(tiny_data, tmp_path / "in")
    out, results = tmp_path / "out", str(tmp_path / "r.csv")
    _batch(tiny_bundle, folder, "--annotate", out)  # no --results: nothing records them
    earlier = _files(str(out))
    shutil.rmtree(os.path.join(folder, "normal"))
    for flags in ([], ["--results", results]):  # none given, and none there yet
        caplog.clear()
        with caplog.at_level("WARNING"):
            _batch(tiny_bundle, folder, "--annotate", out, "--overwrite", *flags)
        assert _files(str(out)) == earlier  # nothing guessed at
        warned = [r.getMessage() for r in caplog.records
                  if "copies an earlier run wrote there may remain" in r.getMessage()]
        assert len(warned) == 1 and "--annotate {} --overwrite".format(out) in warned[0]


def test_rows_from_before_the_column_are_continued_and_warned_about(tiny_bundle, tiny_data,
                                                                    tmp_path, caplog):
    """A results file written before rows named their copy: --resume continues it, and
    --overwrite, with no record to go by, removes nothing and says so."""
    folder = _input(tiny_data, tmp_path / "in")
    out, results = tmp_path / "out", str(tmp_path / "r.csv")
    _batch(tiny_bundle, folder, "--results", results, "--annotate", out)
    with io.open(results, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][-1] == "annotated"
    kept = rows[:1] + rows[1:4]  # as an older run, stopped after three rows, left it
    with io.open(results, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([r[:-1] for r in kept])
    _batch(tiny_bundle, folder, "--results", results, "--annotate", out, "--resume")
    with io.open(results, encoding="utf-8", newline="") as fh:
        resumed = list(csv.reader(fh))
    assert resumed[0] == rows[0][:-1] and len(resumed) == len(rows)
    earlier = _files(str(out))
    shutil.rmtree(os.path.join(folder, "normal"))
    with caplog.at_level("WARNING"):
        _batch(tiny_bundle, folder, "--results", results, "--annotate", out, "--overwrite")
    assert _files(str(out)) == earlier
    assert "{} does not name the copies its rows came with".format(results) in caplog.text


def test_a_row_naming_a_file_outside_out_or_an_input_removes_neither(tiny_bundle, tiny_data,
                                                                      tmp_path):
    folder = _input(tiny_data, tmp_path / "in")
    out, results = tmp_path / "out", str(tmp_path / "r.jsonl")
    _batch(tiny_bundle, folder, "--results", results, "--annotate", out)
    elsewhere = tmp_path / "elsewhere.png"
    shutil.copyfile(str(out / "benign" / "grey.pgm.ppm"), str(elsewhere))
    link = out / "link.png"
    os.symlink(str(elsewhere), str(link))
    with io.open(results, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    an_input = rows[0]["path"]
    rows[0]["annotated"], rows[1]["annotated"] = an_input, str(elsewhere)
    rows[2]["annotated"] = str(out / ".." / "elsewhere.png")
    rows[3]["annotated"] = str(link)
    with io.open(results, "w", encoding="utf-8") as fh:
        fh.write(u"".join(json.dumps(r) + "\n" for r in rows))
    _batch(tiny_bundle, folder, "--results", results, "--annotate", out, "--overwrite")
    assert os.path.isfile(an_input) and elsewhere.exists() and os.path.islink(str(link))


def test_an_unfinished_last_row_removes_nothing(tiny_bundle, tiny_data, tmp_path):
    """A run killed mid-row leaves its last CSV line cut short: the name in it may be cut
    too (``mine.png.ppm`` -> ``mine.png``, another file), so that row goes by nothing."""
    folder = _input(tiny_data, tmp_path / "in")
    out, results = tmp_path / "out", str(tmp_path / "r.csv")
    _batch(tiny_bundle, folder, "--results", results, "--annotate", out)
    mine = out / "benign" / "mine.png"
    shutil.copyfile(str(out / "benign" / "grey.pgm.ppm"), str(mine))
    with io.open(results, encoding="utf-8", newline="") as fh:
        last = list(csv.reader(fh))[-1]
    last[-1] = str(mine) + ".ppm"
    line = u",".join(last)
    with io.open(results, "a", encoding="utf-8", newline="") as fh:
        fh.write(line[:-len(".ppm")])  # no newline: cut where the name is still a name
    _batch(tiny_bundle, folder, "--results", results, "--annotate", out, "--overwrite")
    assert mine.exists()
    assert _files(str(out)) == sorted(_expected_copies(folder) + ["benign/mine.png"])


def test_copies_are_recorded_only_until_the_earlier_ones_are_dealt_with(
        tiny_bundle, tiny_data, tmp_path, monkeypatch):
    """Every copy's name was held for the whole run (tens of MB at 100k+ images on a 4 GB
    Nano), though only the first batch's, written before the first row, are kept from the
    earlier copies' removal: recording now stops once that removal is done, or from the
    start where there is none."""
    from oncolens.appliance import batch
    seen = []

    class Spy(batch.Annotator):
        def __call__(self, item, preds):
            target = super(Spy, self).__call__(item, preds)
            seen.append(None if self.written is None else len(self.written))
            return target

    monkeypatch.setattr(batch, "Annotator", Spy)
    folder = _input(tiny_data, tmp_path / "in")
    images = len(_files(folder))
    out, results = tmp_path / "out", str(tmp_path / "r.jsonl")
    _batch(tiny_bundle, folder, "--results", results, "--annotate", out, "--batch-size", 2)
    assert seen == [None] * images  # nothing to remove: nothing recorded
    del seen[:]
    _batch(tiny_bundle, folder, "--results", results, "--annotate", out, "--batch-size", 2,
           "--overwrite")
    assert seen == [1, 2] + [None] * (images - 2)  # the first batch's, kept from removal
    assert _files(str(out)) == _expected_copies(folder)
    del seen[:]
    os.remove(results)  # no record of the earlier copies: none to keep
    _batch(tiny_bundle, folder, "--results", results, "--annotate", out, "--batch-size", 2,
           "--overwrite")
    assert seen == [None] * images
