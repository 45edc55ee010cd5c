"""``oncolens batch --resume --annotate``: a row whose annotated copy was not written (its
prediction kept, the error recorded) was skipped like a file that could not be read, so that
copy was never made. Such files are now classified and annotated again; their new rows
replace the earlier ones, so the results file holds one row a file and the metrics count
each once."""
import csv
import io
import json
import os
import shutil

import pytest

from conftest import run_cli


def _rows(path):
    with io.open(path, encoding="utf-8", newline="") as fh:
        if path.endswith(".csv"):
            return list(csv.DictReader(fh))
        return [json.loads(line) for line in fh]


def _failed_copies_run(tiny_bundle, tiny_data, tmp_path, ext):
    """A run whose benign copies were not written (a file where their folder goes)."""
    folder = str(tmp_path / "in")
    shutil.copytree(os.path.join(tiny_data, "test"), folder)
    outdir = tmp_path / "annotated"
    outdir.mkdir()
    (outdir / "benign").write_text(u"a note, not a folder")
    results = str(tmp_path / ("r" + ext))
    code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--annotate",
                              str(outdir), "--overwrite", "--results", results,
                              "--no-progress"])
    assert code == 1 and "3 failed" in out, err
    failed = [r for r in _rows(results) if r["error"]]
    assert len(failed) == 3 and all(r["relpath"].startswith("benign") for r in failed)
    os.remove(str(outdir / "benign"))  # the cause put right
    return folder, str(outdir), results


def _resume(tiny_bundle, folder, outdir, results):
    return run_cli(["batch", folder, "--model", tiny_bundle, "--annotate", outdir,
                    "--results", results, "--resume", "--no-progress"])


def _check_whole(folder, outdir, results):
    rows = _rows(results)
    images = sorted(os.path.join(p, n) for p, _, names in os.walk(folder) for n in names)
    assert sorted(r["path"] for r in rows) == images  # one row a file
    for row in rows:
        assert not row["error"] and os.path.isfile(row["annotated"]), row
        assert os.path.dirname(row["annotated"]).startswith(outdir)
    with io.open(os.path.splitext(results)[0] + ".metrics.json") as fh:
        assert json.load(fh)["images"] == len(images)  # each counted once


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_resume_redoes_the_copies_that_were_not_written(tiny_bundle, tiny_data, tmp_path,
                                                       ext):
    folder, outdir, results = _failed_copies_run(tiny_bundle, tiny_data, tmp_path, ext)
    code, out, err = _resume(tiny_bundle, folder, outdir, results)
    assert code == 0, err
    assert "classified 3 images" in out and "6 skipped" in out
    assert len(os.listdir(os.path.join(outdir, "benign"))) == 3
    _check_whole(folder, outdir, results)


def test_rows_left_twice_by_a_killed_run_are_tidied_by_the_next_resume(
        tiny_bundle, tiny_data, tmp_path, monkeypatch):
    """Killed after the new rows were appended but before the earlier ones went (here: the
    tidying left out, as SIGKILL would): the next --resume removes the earlier ones first,
    and has nothing left to classify."""
    import oncolens.appliance.results_redo as redo
    folder, outdir, results = _failed_copies_run(tiny_bundle, tiny_data, tmp_path, ".csv")
    with monkeypatch.context() as patch:
        patch.setattr(redo, "drop_redone", lambda path, lock: 0)
        code, out, err = _resume(tiny_bundle, folder, outdir, results)
    assert code == 0, err
    assert len(_rows(results)) == 9 + 3
    code, out, err = _resume(tiny_bundle, folder, outdir, results)
    assert code == 0, err
    assert "classified 0 images" in out and "9 skipped" in out
    _check_whole(folder, outdir, results)


def test_resume_without_annotate_keeps_the_rows_as_they_are(tiny_bundle, tiny_data, tmp_path):
    """Without --annotate there is no copy to make: those rows are skipped and kept."""
    folder, outdir, results = _failed_copies_run(tiny_bundle, tiny_data, tmp_path, ".jsonl")
    before = _rows(results)
    code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                              "--resume", "--no-progress"])
    assert code == 0, err
    assert "9 skipped" in out and _rows(results) == before


def test_the_lock_goes_with_the_file_moved_into_place(tmp_path):
    """drop_redone writes the file anew and moves it over the old one: the run's lock must
    hold the new file, or a second run would lock it and write beside the first."""
    from oncolens.appliance.errors import UsageError
    from oncolens.appliance.results import ResultsLock
    path = str(tmp_path / "r.jsonl")
    first = ResultsLock(path).acquire()
    with open(path + ".tmp", "w") as fh:
        fh.write(u'{"path": "/x.png"}\n')
    first.swap(path + ".tmp")
    assert not os.path.exists(path + ".tmp")
    with pytest.raises(UsageError, match="another oncolens batch run is writing it"):
        ResultsLock(path).acquire()
    first.release()
    second = ResultsLock(path).acquire()
    assert not second.created and not second.was_empty
    second.release()


def test_a_run_that_opened_the_file_before_it_was_moved_locks_the_new_one(tmp_path,
                                                                          monkeypatch):
    """A second run opens the file, then the first moves the new one into place and lets go
    of the old: the second's lock on the old file (no longer at the name) must not count."""
    import oncolens.appliance.results as results
    from oncolens.appliance.errors import UsageError
    path = str(tmp_path / "r.jsonl")
    first = results.ResultsLock(path).acquire()
    real = results._open_or_create

    def open_then_swap(name):
        opened = real(name)
        if not os.path.exists(name + ".tmp") and not getattr(first, "swapped", False):
            with open(name + ".tmp", "w") as fh:
                fh.write(u'{"path": "/x.png"}\n')
            first.swap(name + ".tmp")  # the old file, still open here, is unlocked now
            first.swapped = True
        return opened
    monkeypatch.setattr(results, "_open_or_create", open_then_swap)
    with pytest.raises(UsageError, match="another oncolens batch run is writing it"):
        results.ResultsLock(path).acquire()
    first.release()


def test_a_file_that_cannot_be_read_again_keeps_its_earlier_prediction(tiny_bundle, tiny_data,
                                                                       tmp_path):
    """The redo of a file that could not be read this time (a share gone, a file being
    rewritten) wrote a row with no prediction, which replaced the row that held one: the
    classification was lost, and the file was never tried again. The earlier row now stays
    (its copy tried again at the next --resume), and the row of the failed read goes."""
    folder, outdir, results = _failed_copies_run(tiny_bundle, tiny_data, tmp_path, ".csv")
    earlier = [r for r in _rows(results) if r["error"]][0]
    with open(earlier["path"], "rb") as fh:
        image = fh.read()
    with open(earlier["path"], "wb") as fh:
        fh.write(b"not an image now")
    code, out, err = _resume(tiny_bundle, folder, outdir, results)
    assert code == 1 and "classified 2 images" in out and "1 failed" in out, err
    rows = [r for r in _rows(results) if r["path"] == earlier["path"]]
    assert rows == [earlier]  # its prediction kept, the row of the failed read gone
    assert len(_rows(results)) == 9
    with open(earlier["path"], "wb") as fh:  # readable again
        fh.write(image)
    code, out, err = _resume(tiny_bundle, folder, outdir, results)
    assert code == 0 and "classified 1 image" in out, err
    _check_whole(folder, outdir, results)
