"""``oncolens batch`` and ``classify``: file and folder names that once went wrong (a folder
named with a glob's wildcard characters)."""
import csv
import io
import os
import shutil

from conftest import run_cli


def _csv_rows(path):
    with io.open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _first_image(tiny_data, label):
    folder = os.path.join(tiny_data, "test", label)
    return os.path.join(folder, sorted(os.listdir(folder))[0])


def test_one_file_in_a_folder_named_with_brackets_keeps_its_truth(tiny_bundle, tiny_data,
                                                                 tmp_path):
    """``scans [2024]/benign/x.png`` is a file, not a glob: its truth is its class folder
    (it was taken for a glob whose fixed part is '.', and the row had no truth)."""
    folder = tmp_path / "scans [2024]" / "benign"
    folder.mkdir(parents=True)
    image = str(folder / "x.png")
    shutil.copy(_first_image(tiny_data, "benign"), image)
    results = str(tmp_path / "r.csv")
    code, out, err = run_cli(["batch", image, "--model", tiny_bundle, "--results", results,
                              "--no-progress"])
    assert code == 0, err
    rows = _csv_rows(results)
    assert [(row["relpath"], row["truth"]) for row in rows] == [("x.png", "benign")]
    assert "accuracy" in out
