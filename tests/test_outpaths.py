"""Output paths are checked before any work: one line naming the flag and the path."""
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
