"""``oncolens batch`` and ``classify``: file and folder names that once went wrong (a folder
named with a glob's wildcard characters, annotated copies whose names could clash)."""
import csv
import io
import os
import shutil

import numpy as np

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


def test_annotated_copies_of_x_pgm_and_x_pgm_ppm_do_not_clash(tiny_bundle, tiny_data,
                                                              tmp_path):
    """A grey-only ``x.pgm``'s colour copy was named ``x.pgm.ppm`` even beside an input of
    that name: batch then stopped half-way ('already exists'), or with --overwrite the one
    copy replaced the other. Each input now gets its own copy, and classify agrees."""
    import cv2
    from oncolens.appliance.imageio import read_image
    folder = tmp_path / "in" / "benign"
    folder.mkdir(parents=True)
    rgb = read_image(_first_image(tiny_data, "benign"))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(folder / "x.pgm"), grey)
    cv2.imwrite(str(folder / "x.pgm.ppm"), cv2.cvtColor(255 - rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "y.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    for overwrite in ([], ["--overwrite"]):
        ann = tmp_path / "ann"
        code, out, err = run_cli(["batch", str(tmp_path / "in"), "--model", tiny_bundle,
                                  "--annotate", str(ann), "--results", str(tmp_path / "r.csv"),
                                  "--batch-size", 1, "--no-progress"] + overwrite)
        assert code == 0, err
        assert len(_csv_rows(str(tmp_path / "r.csv"))) == 3
        names = sorted(os.listdir(str(ann / "benign")))
        assert names == ["x.pgm.1.ppm", "x.pgm.ppm", "y.png"], names
        # each copy is of its own input: the inverted image's copy stays bright where the
        # grey one is dark (outside the text box in the top-left corner)
        copy_of_ppm = read_image(str(ann / "benign" / "x.pgm.ppm"))[-8:, -8:].astype(int)
        copy_of_pgm = read_image(str(ann / "benign" / "x.pgm.1.ppm"))[-8:, -8:].astype(int)
        assert np.abs(copy_of_ppm - (255 - rgb[-8:, -8:].astype(int))).mean() < 3
        assert np.abs(copy_of_pgm - grey[-8:, -8:, None].astype(int)).mean() < 3
    out_dir = tmp_path / "cls"
    code, out, err = run_cli(["classify", "--model=" + tiny_bundle, str(tmp_path / "in"),
                              str(out_dir) + os.sep, "--headless"])
    assert code == 0, err
    assert sorted(os.listdir(str(out_dir / "benign"))) == ["x.pgm.1.ppm", "x.pgm.ppm", "y.png"]


def test_the_confusion_picture_inside_the_input_is_not_classified(tiny_bundle, tiny_data,
                                                                   tmp_path):
    """``--results IN/r.csv`` writes ``IN/r.confusion.png``: a rerun (--resume, or
    --overwrite) classified that picture as one more input image."""
    folder = str(tmp_path / "in")
    shutil.copytree(os.path.join(tiny_data, "test"), folder)
    results = os.path.join(folder, "r.csv")
    for extra in ([], ["--resume"], ["--overwrite"]):
        code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results",
                                  results, "--no-progress"] + extra)
        assert code == 0, err
        assert os.path.exists(os.path.join(folder, "r.confusion.png"))
        rows = _csv_rows(results)
        assert "r.confusion.png" not in [row["relpath"] for row in rows], extra
        assert len(rows) == len(set(row["path"] for row in rows))


def test_overwrite_without_truth_leaves_no_earlier_metrics(tiny_bundle, tiny_data, tmp_path):
    """--overwrite on an input with no ground truth replaced the results file but left the
    earlier run's r.metrics.json and r.confusion.png beside it, as if they were its own."""
    results = str(tmp_path / "r.csv")
    code, out, err = run_cli(["batch", os.path.join(tiny_data, "test"), "--model", tiny_bundle,
                              "--results", results, "--no-progress"])
    assert code == 0 and os.path.exists(str(tmp_path / "r.metrics.json")), err
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(_first_image(tiny_data, "benign"), str(plain / "x.png"))
    code, out, err = run_cli(["batch", str(plain), "--model", tiny_bundle, "--results", results,
                              "--overwrite", "--no-progress"])
    assert code == 0, err
    assert [row["relpath"] for row in _csv_rows(results)] == ["x.png"]
    assert not os.path.exists(str(tmp_path / "r.metrics.json"))
    assert not os.path.exists(str(tmp_path / "r.confusion.png"))


def test_resume_of_a_new_results_file_keeps_another_runs_annotated_copies(tiny_bundle,
                                                                           tiny_data, tmp_path):
    """--resume with a results file that does not exist yet continues nothing: the
    --annotate folder of another run is refused as without --resume (its same-named copies
    were silently replaced by this run's)."""
    first, second = tmp_path / "a" / "benign", tmp_path / "b" / "benign"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    shutil.copy(_first_image(tiny_data, "benign"), str(first / "x.png"))
    shutil.copy(_first_image(tiny_data, "malignant"), str(second / "x.png"))
    ann = tmp_path / "ann"
    code, out, err = run_cli(["batch", str(first), "--model", tiny_bundle, "--annotate",
                              str(ann), "--results", str(tmp_path / "r1.csv"), "--no-progress"])
    assert code == 0, err
    before = (ann / "x.png").read_bytes()
    code, out, err = run_cli(["batch", str(second), "--model", tiny_bundle, "--annotate",
                              str(ann), "--results", str(tmp_path / "r2.csv"), "--resume",
                              "--no-progress"])
    assert code == 2 and "--annotate" in err and "not empty" in err, err
    assert (ann / "x.png").read_bytes() == before
    code, out, err = run_cli(["batch", str(first), "--model", tiny_bundle, "--annotate",
                              str(ann), "--results", str(tmp_path / "r1.csv"), "--resume",
                              "--no-progress"])
    assert code == 0, err  # continuing the run that wrote the folder is still allowed


def test_a_numbered_output_in_the_input_folder_is_not_read_back(tiny_bundle, tiny_data,
                                                                 tmp_path):
    """classify IN IN/o_%i.jpg, then again with --overwrite: the second run read the first
    run's o_0.jpg ... as inputs (twice the frames, copies of copies written as o_3.jpg ...)."""
    src = str(tmp_path / "in")
    shutil.copytree(os.path.join(tiny_data, "test", "benign"), src)
    originals = sorted(os.listdir(src))
    for extra in ([], ["--overwrite"]):
        code, out, err = run_cli(["classify", "--model", tiny_bundle, "--headless", src,
                                  os.path.join(src, "o_%i.jpg")] + extra)
        assert code == 0, err
        assert len(out.splitlines()) == len(originals), out
    numbered = ["o_{}.jpg".format(n) for n in range(len(originals))]
    assert sorted(os.listdir(src)) == sorted(originals + numbered)
