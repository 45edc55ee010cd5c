"""``oncolens batch`` against other runs and signals: one run at a time writes a results
file (an flock on it), and SIGTERM ends a run as Ctrl-C does (rows kept, a resume hint)."""
import csv
import io
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import cli_subprocess_cmd, run_cli, subprocess_env

LABELS = ["benign", "malignant", "normal"]
PER_CLASS = 270  # tiny images: a run takes seconds, so a signal sent at its first row lands
MANY = PER_CLASS * len(LABELS)  # mid-run
LOCKED = "another oncolens batch run is writing it"


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    import cv2
    folder = tmp_path_factory.mktemp("many") / "in"
    rng = np.random.RandomState(0)
    for label in LABELS:
        (folder / label).mkdir(parents=True)
        for n in range(PER_CLASS):
            cv2.imwrite(str(folder / label / "{:04d}.png".format(n)),
                        rng.randint(0, 255, (12, 12), np.uint8))
    return str(folder)


def _rows(path):
    with io.open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _start(many_images, bundle, results):
    """A batch run in a child process, once the results file holds its first row."""
    proc = subprocess.Popen(cli_subprocess_cmd(
        "batch", many_images, "--model", bundle, "--results", results, "--batch-size", 1,
        "--workers", 0, "--no-progress"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=subprocess_env())
    deadline = time.time() + 300  # a guard against a hang, not a timing assertion
    while not (os.path.isfile(results) and len(_rows(results)) >= 1):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail("the run ended before its first row: {}".format(err.decode()[-2000:]))
        time.sleep(0.02)
    return proc


def test_a_second_run_into_a_locked_results_file_is_refused_and_changes_nothing(
        tiny_bundle, tiny_data, tmp_path):
    """Two --resume runs into one file interleaved and duplicated rows: while another holds
    the file's lock, a run is refused with one line, before its model is even looked at,
    and the file is left as it is (its unfinished last line is not cut)."""
    from oncolens.appliance.results import ResultsLock
    folder = os.path.join(tiny_data, "test")
    results = str(tmp_path / "r.csv")
    code, _, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                            "--no-progress"])
    assert code == 0, err
    with open(results, "ab") as fh:
        fh.write(b"/half/a/row,")  # as a run that is writing it now would leave it
    with open(results, "rb") as fh:
        before = fh.read()
    with ResultsLock(results):
        for argv in (["--resume"], ["--overwrite"], ["--resume", "--model", str(tmp_path)]):
            cmd = ["batch", folder, "--model", tiny_bundle, "--results", results] + argv
            code, out, err = run_cli(cmd + ["--no-progress"])
            assert code == 2, (argv, err)
            assert err == ("oncolens batch: error: --results {}: {} (the file is locked): wait "
                           "for that run to end, or give another --results file\n".format(
                               results, LOCKED)), argv
            with open(results, "rb") as fh:
                assert fh.read() == before, argv
    code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                              "--resume", "--no-progress"])  # the lock is gone with its holder
    assert code == 0, err
    rows = _rows(results)
    images = sum(len(files) for _, _, files in os.walk(folder))
    assert len(rows) == images and all(r["label"] in LABELS for r in rows)  # half a row: cut


def test_the_writer_takes_the_lock_itself(tmp_path):
    """Two runs that passed the early check together: the second writer is refused before
    it reads or cuts the file, and the lock is free again once the first closes."""
    from oncolens.appliance.errors import UsageError
    from oncolens.appliance.results import ResultsWriter
    results = str(tmp_path / "sub" / "r.jsonl")
    first = ResultsWriter(results, LABELS)
    first.write({"path": "/x.png", "label": "benign"})
    first.flush()
    for resume, overwrite in ((True, False), (False, True)):
        with pytest.raises(UsageError) as info:
            ResultsWriter(results, LABELS, resume=resume, overwrite=overwrite)
        assert LOCKED in str(info.value) and results in str(info.value)
    first.close()
    again = ResultsWriter(results, LABELS, resume=True)
    again.write({"path": "/y.png", "label": "normal"})
    again.close()
    with open(results) as fh:
        assert [line.count('"path"') for line in fh] == [1, 1]


def test_a_run_is_refused_while_another_process_writes_the_file(tiny_bundle, many_images,
                                                                  tmp_path):
    results = str(tmp_path / "r.csv")
    proc = _start(many_images, tiny_bundle, results)
    try:
        code, _, err = run_cli(["batch", many_images, "--model", tiny_bundle, "--results",
                                results, "--resume", "--no-progress"])
        assert proc.poll() is None, "the first run ended: the second one was not concurrent"
    finally:
        proc.kill()
        proc.communicate()
    assert code == 2 and LOCKED in err and results in err, err
    paths = [r["path"] for r in _rows(results)]
    assert len(paths) == len(set(paths))


@pytest.mark.parametrize("signum,status,how", [(signal.SIGTERM, 143, "interrupted by SIGTERM"),
                                               (signal.SIGINT, 130, "interrupted")])
def test_sigterm_keeps_the_rows_and_says_how_to_resume_as_ctrl_c_does(
        tiny_bundle, many_images, tmp_path, signum, status, how):
    """SIGTERM (systemd, timeout) ended a run with status -15 and no word; it now unwinds as
    Ctrl-C does: the rows written are whole and kept, one line says to --resume."""
    results = str(tmp_path / "r.csv")
    proc = _start(many_images, tiny_bundle, results)
    proc.send_signal(signum)
    out, err = proc.communicate()
    assert proc.returncode == status, err.decode()[-2000:]
    assert err.decode().splitlines()[-1] == (
        "oncolens batch: {}: the rows written so far are kept in {}: run the same command "
        "with --resume to continue".format(how, results))
    with open(results, "rb") as fh:
        assert fh.read().endswith(b"\n")
    rows = _rows(results)
    assert 1 <= len(rows) < MANY
    assert all(r["label"] in LABELS and r["model_sha256"] for r in rows)
    if signum != signal.SIGTERM:
        return
    code, _, err = run_cli(["batch", many_images, "--model", tiny_bundle, "--results", results,
                            "--resume", "--no-progress"])
    assert code == 0, err
    paths = [r["path"] for r in _rows(results)]
    assert len(paths) == len(set(paths)) == MANY


@pytest.mark.parametrize("before", ["none", "empty", "rows"])
def test_a_run_refused_after_the_lock_leaves_the_results_file_as_it_found_it(
        tiny_bundle, tiny_data, tmp_path, caplog, before):
    """The results file's lock is taken by opening it, which makes it: a run refused after
    that (here at its first batch: the annotated copy of an input would replace the input,
    through a link in the --annotate folder) left it behind, a header alone, and a corrected
    rerun was refused with 'already exists'. A file the run made with no row written into it
    is now removed; one there before is kept byte for byte (an empty one emptied again)."""
    import logging
    import shutil
    caplog.set_level(logging.INFO, logger="oncolens.appliance.results")
    images = str(tmp_path / "in")
    shutil.copytree(os.path.join(tiny_data, "test"), images)
    results = str(tmp_path / "r.csv")
    flag = "--overwrite"
    if before == "empty":
        open(results, "wb").close()
    elif before == "rows":  # an earlier run over one file; --resume goes on with the others
        code, _, err = run_cli(["batch", os.path.join(images, "benign"), "--model", tiny_bundle,
                                "--results", results, "--no-progress"])
        assert code == 0 and len(_rows(results)) == 3, err
        flag = "--resume"
    kept = open(results, "rb").read() if before != "none" else None
    (tmp_path / "ann").mkdir()
    os.symlink(os.path.join(images, "malignant"), str(tmp_path / "ann" / "malignant"))
    code, out, err = run_cli(["batch", images, "--model", tiny_bundle, "--results", results,
                              "--annotate", str(tmp_path / "ann"), flag, "--no-progress"])
    assert code == 2 and "would replace it: give a folder apart from the input" in err, err
    if kept is None:
        assert not os.path.exists(results), open(results, "rb").read()
        assert "r.csv: removed: this run made it and wrote no row into it" in caplog.text
    else:
        assert open(results, "rb").read() == kept
