"""results_redo.drop_redone rewrites a results file without the rows a later row replaces:
it must keep every other byte as it was, touch no file of the user's beside it, and leave
the file where and as the user had it (its mode, a link to it)."""
import csv
import io
import os
import stat

import pytest

from oncolens.appliance.results import ResultsLock, columns
from oncolens.appliance.results_redo import drop_redone

LABELS = ["benign", "malignant", "normal"]


def _csv_text(rows):
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=columns(LABELS), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


def _write_results(path, rows):
    with io.open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        fh.write(_csv_text(rows))


def _redone_rows(tmp_path):
    """A row whose copy failed, an unrelated row, and the later row that replaces the first."""
    x = str(tmp_path / "x.png")
    return [{"path": x, "label": "benign", "error": "annotated copy not written: disk full"},
            {"path": str(tmp_path / "y.png"), "label": "normal"},
            {"path": x, "label": "benign", "annotated": "/out/x.png"}]


def _drop(path):
    lock = ResultsLock(path).acquire()
    try:
        return drop_redone(path, lock)
    finally:
        lock.release()


def test_a_file_of_the_users_beside_the_results_is_left_alone(tmp_path):
    """The file was written anew as <results>.tmp: a file of that name (the user's, or
    another run's) was overwritten, then moved over the results or removed."""
    path = str(tmp_path / "r.csv")
    rows = _redone_rows(tmp_path)
    _write_results(path, rows)
    theirs = tmp_path / "r.csv.tmp"
    theirs.write_bytes(b"someone else's notes\n")
    assert _drop(path) == 1
    assert theirs.read_bytes() == b"someone else's notes\n"
    with io.open(path, newline="") as fh:
        assert fh.read() == _csv_text(rows[1:])
    assert sorted(os.listdir(str(tmp_path))) == ["r.csv", "r.csv.tmp"]


def test_the_file_keeps_its_mode(tmp_path):
    """A results file shared with a group (0o660) came back with the umask's mode."""
    path = str(tmp_path / "r.csv")
    _write_results(path, _redone_rows(tmp_path))
    os.chmod(path, 0o640)
    assert _drop(path) == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_a_link_to_the_results_stays_a_link(tmp_path):
    """--results naming a link: the new file took the link's place, and the file it points
    at kept the rows that were meant to go."""
    real = tmp_path / "store"
    real.mkdir()
    target = str(real / "r.csv")
    rows = _redone_rows(tmp_path)
    _write_results(target, rows)
    link = str(tmp_path / "r.csv")
    os.symlink(target, link)
    assert _drop(link) == 1
    assert os.path.islink(link) and os.path.realpath(link) == os.path.realpath(target)
    with io.open(target, newline="") as fh:
        assert fh.read() == _csv_text(rows[1:])
    assert os.listdir(str(real)) == ["r.csv"]
    assert sorted(os.listdir(str(tmp_path))) == ["r.csv", "store"]


@pytest.mark.parametrize("name", [u"a\nb.png", u"caf\udce9.png", u'q"uote, comma.png'])
def test_rows_it_keeps_are_written_back_byte_for_byte(tmp_path, name):
    """Names with a newline, a quote or bytes that are not UTF-8 come back as they were."""
    path = str(tmp_path / "r.csv")
    odd = {"path": str(tmp_path) + "/" + name, "label": "malignant", "relpath": name}
    rows = _redone_rows(tmp_path) + [odd]
    _write_results(path, rows)
    assert _drop(path) == 1
    with io.open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        assert fh.read() == _csv_text(rows[1:])
