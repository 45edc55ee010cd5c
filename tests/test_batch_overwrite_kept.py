"""``oncolens batch --overwrite`` emptied the results file as it opened it: a run stopped or
failing at its first batch left a header-only file in place of the earlier rows. The earlier
file now stays as it was until the new run writes its first row; from then on rows are
streamed as before, so a run stopped midway keeps the rows it wrote."""
import os
import shutil

import pytest

from conftest import run_cli


def _files(folder):
    return sorted(os.path.relpath(os.path.join(parent, n), folder)
                  for parent, _, names in os.walk(folder) for n in names)


def _first_run(tiny_bundle, tiny_data, tmp_path, ext):
    folder = str(tmp_path / "in")
    shutil.copytree(os.path.join(tiny_data, "test"), folder)
    results, out = str(tmp_path / ("r" + ext)), str(tmp_path / "out")
    code, _, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                            "--annotate", out, "--no-progress"])
    assert code == 0, err
    return folder, results, out


def _stop_at(monkeypatch, call, exc):
    """Batches before the ``call``-th (from 1) are classified; that one raises ``exc``."""
    import oncolens.appliance.batch as batch
    real, calls = batch._classify, []

    def classify(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise exc
        return real(*args, **kwargs)
    monkeypatch.setattr(batch, "_classify", classify)


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("the backend failed")])
def test_a_run_stopped_before_its_first_row_leaves_the_earlier_results(
        tiny_bundle, tiny_data, tmp_path, monkeypatch, ext, exc):
    folder, results, out = _first_run(tiny_bundle, tiny_data, tmp_path, ext)
    with open(results, "rb") as fh:
        before = fh.read()
    copies = _files(out)
    _stop_at(monkeypatch, 1, exc)
    argv = ["batch", folder, "--model", tiny_bundle, "--results", results, "--annotate", out,
            "--overwrite", "--no-progress"]
    if isinstance(exc, KeyboardInterrupt):
        code, _, err = run_cli(argv)
        assert code == 130
        assert "no row was written, so {} was left as it was".format(results) in err
    else:
        with pytest.raises(RuntimeError):
            run_cli(argv)
    with open(results, "rb") as fh:
        assert fh.read() == before  # not emptied to a header
    assert _files(out) == copies  # nor the copies its rows name removed


def test_a_run_stopped_after_its_first_rows_keeps_them(tiny_bundle, tiny_data, tmp_path,
                                                        monkeypatch):
    folder, results, out = _first_run(tiny_bundle, tiny_data, tmp_path, ".csv")
    _stop_at(monkeypatch, 3, KeyboardInterrupt())
    code, _, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                            "--annotate", out, "--overwrite", "--batch-size", 2,
                            "--workers", 0, "--no-progress"])
    assert code == 130 and "the rows written so far are kept in" in err
    with open(results) as fh:
        lines = fh.read().splitlines()
    assert len(lines) == 1 + 4  # the header and this run's first two batches
    assert len(_files(out)) == 4  # their copies; the earlier run's others are gone
    code, _, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                            "--annotate", out, "--resume", "--no-progress"])
    assert code == 0, err
    with open(results) as fh:
        assert len(fh.read().splitlines()) == 1 + len(_files(folder))


@pytest.mark.parametrize("flag", [[], ["--overwrite"], ["--resume"]])
def test_a_run_stopped_before_its_first_row_into_a_new_file_says_none_was_kept(
        tiny_bundle, tiny_data, tmp_path, monkeypatch, flag):
    """The line was made before the lock let go of the file this run had made: it said the
    rows were kept in it (or that it was left as it was), and then the file was removed."""
    results = str(tmp_path / "r.csv")
    _stop_at(monkeypatch, 1, KeyboardInterrupt())
    code, _, err = run_cli(["batch", os.path.join(tiny_data, "test"), "--model", tiny_bundle,
                            "--results", results, "--no-progress"] + flag)
    assert code == 130 and not os.path.exists(results)
    assert err.splitlines()[-1] == (
        "oncolens batch: interrupted: no row was written, so no --results file was kept: "
        "run the same command again"), err


@pytest.mark.parametrize("mode", ["--overwrite", "--resume"])
def test_a_run_stopped_after_its_first_rows_leaves_no_earlier_metrics(
        tiny_bundle, tiny_data, tmp_path, monkeypatch, caplog, mode):
    """The earlier run's metrics JSON and picture described rows that a stopped --overwrite
    run has replaced (or, with --resume, fewer rows than the file now holds): they go as the
    run stops, and the run that completes the file writes them again."""
    folder, results, out = _first_run(tiny_bundle, tiny_data, tmp_path, ".csv")
    metrics = str(tmp_path / "r.metrics.json")
    picture = str(tmp_path / "r.confusion.png")
    assert os.path.isfile(metrics) and os.path.isfile(picture)
    if mode == "--resume":  # the last four rows to do again
        with open(results) as fh:
            lines = fh.read().splitlines(True)
        with open(results, "w") as fh:
            fh.write("".join(lines[:-4]))
    _stop_at(monkeypatch, 2, KeyboardInterrupt())
    argv = ["batch", folder, "--model", tiny_bundle, "--results", results, "--annotate", out,
            "--batch-size", 2, "--workers", 0, "--no-progress"]
    code, _, err = run_cli(argv + [mode])
    assert code == 130, err
    assert not os.path.exists(metrics) and not os.path.exists(picture), err
    assert "held an earlier run's metrics, and this run, which wrote rows, stopped before it " \
        "could write its own" in caplog.text
    monkeypatch.undo()
    code, _, err = run_cli(argv + ["--resume"])
    assert code == 0, err
    assert os.path.isfile(metrics) and os.path.isfile(picture)


@pytest.mark.parametrize("name,held", [("r.csv", b""), ("r.jsonl", b""), ("r.csv", None)])
def test_a_run_stopped_before_its_first_row_into_an_empty_file_says_it_is_as_it_was(
        tiny_bundle, tiny_data, tmp_path, monkeypatch, name, held):
    """A results file that was there but held no row (empty, or a CSV header alone): the
    line said 'the rows written so far are kept' and to go on with --resume, though no row
    was written and the file was left as it was."""
    from oncolens.appliance.results import columns
    results = str(tmp_path / name)
    if held is None:  # a header alone, as a run stopped before its first row left it once
        held = (",".join(columns(["benign", "malignant", "normal"])) + "\r\n").encode()
    with open(results, "wb") as fh:
        fh.write(held)
    _stop_at(monkeypatch, 1, KeyboardInterrupt())
    code, _, err = run_cli(["batch", os.path.join(tiny_data, "test"), "--model", tiny_bundle,
                            "--results", results, "--resume", "--no-progress"])
    assert code == 130
    assert err.splitlines()[-1] == (
        "oncolens batch: interrupted: no row was written, so {} was left as it was: run the "
        "same command again".format(results)), err
    with open(results, "rb") as fh:
        assert fh.read() == held


def test_the_earlier_metrics_go_while_the_stopped_run_still_holds_the_results_file(
        tiny_bundle, tiny_data, tmp_path, monkeypatch):
    """On Ctrl-C the lock was let go before the earlier metrics were removed: a run started
    in between could write its metrics and see them removed. They go under the lock now."""
    import oncolens.appliance.batch_cli as batch_cli
    from oncolens.appliance.errors import UsageError
    from oncolens.appliance.results import ResultsLock
    folder, results, out = _first_run(tiny_bundle, tiny_data, tmp_path, ".csv")
    real, held = batch_cli._drop_stale_metrics, []

    def drop(*args):
        try:
            ResultsLock(results).probe()
            held.append(False)
        except UsageError:
            held.append(True)
        return real(*args)
    monkeypatch.setattr(batch_cli, "_drop_stale_metrics", drop)
    _stop_at(monkeypatch, 2, KeyboardInterrupt())
    code, _, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                            "--annotate", out, "--batch-size", 2, "--workers", 0,
                            "--no-progress", "--overwrite"])
    assert code == 130, err
    assert held == [True]
    assert not os.path.exists(str(tmp_path / "r.metrics.json"))
