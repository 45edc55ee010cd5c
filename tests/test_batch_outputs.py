"""``oncolens batch``'s outputs beside the results file: metrics (confusion matrix, the
confusion picture), the truth it finds in folder names, and annotated copies. The results
file itself, resume and recorded failures are in test_batch.py."""
import io
import json
import os
import shutil

import numpy as np
import pytest

from conftest import run_cli
from test_batch import LABELS, _all_images, _copy_test_split, _csv_rows


def test_metrics_against_a_hand_computed_confusion_matrix():
    from oncolens.appliance.evaluation import format_metrics, metrics_from_rows
    pairs = [("benign", "benign")] * 3 + [("benign", "malignant")] + \
        [("malignant", "malignant")] * 2 + [("malignant", "normal")] + \
        [("normal", "normal")] + [("normal", "benign")] * 2
    rows = [{"path": str(n), "truth": t, "label": p, "error": None}
            for n, (t, p) in enumerate(pairs)]
    rows.append({"path": "x", "truth": "benign", "label": None, "error": "x: empty file"})
    rows.append({"path": "y", "truth": None, "label": "normal", "error": None})  # no truth
    m = metrics_from_rows(rows, LABELS)
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 2, 1], [2, 0, 1]]
    assert m["images"] == 10 and m["failed"] == 1
    assert m["accuracy"] == pytest.approx(6 / 10.0)
    # benign: tp 3, predicted 5, true 4; malignant: tp 2, 3, 3; normal: tp 1, 2, 3
    expect = {"benign": (3 / 5.0, 3 / 4.0), "malignant": (2 / 3.0, 2 / 3.0),
              "normal": (1 / 2.0, 1 / 3.0)}
    f1s = []
    for label, (precision, recall) in expect.items():
        assert m["per_class"][label]["precision"] == pytest.approx(precision)
        assert m["per_class"][label]["recall"] == pytest.approx(recall)
        f1s.append(2 * precision * recall / (precision + recall))
    assert m["macro_f1"] == pytest.approx(sum(f1s) / 3)
    text = format_metrics(m)
    assert "accuracy 0.6000" in text and "benign" in text


def test_metrics_files_match_the_results(tiny_bundle, tiny_data, tmp_path):
    from oncolens.appliance.imageio import read_image
    results = str(tmp_path / "run.csv")
    code, out, err = run_cli(["batch", os.path.join(tiny_data, "val"), "--model", tiny_bundle,
                              "--results", results, "--no-progress"])
    assert code == 0, err
    cm = np.zeros((3, 3), dtype=int)
    for row in _csv_rows(results):
        cm[LABELS.index(row["truth"]), LABELS.index(row["label"])] += 1
    with io.open(str(tmp_path / "run.metrics.json")) as fh:
        metrics = json.load(fh)
    assert metrics["confusion_matrix"] == cm.tolist()
    assert metrics["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    png = read_image(str(tmp_path / "run.confusion.png"))
    assert png.shape[0] > 100 and png.std() > 10
    code, _, err = run_cli(["batch", os.path.join(tiny_data, "val"), "--model", tiny_bundle,
                            "--results", str(tmp_path / "other.csv"), "--metrics",
                            str(tmp_path / "run.metrics.json"), "--no-progress"])
    assert code != 0 and "already exists" in err


def test_annotated_copies_keep_names_and_folders(tiny_bundle, tiny_data, tmp_path):
    from oncolens.appliance.imageio import read_image
    folder = os.path.join(tiny_data, "test")
    outdir = str(tmp_path / "annotated")
    code, _, err = run_cli(["batch", folder, "--model", tiny_bundle, "--annotate", outdir,
                            "--no-progress"])
    assert code == 0, err
    for path in _all_images(folder):
        copy = os.path.join(outdir, os.path.relpath(path, folder))
        src, dst = read_image(path), read_image(copy)
        assert src.shape == dst.shape and (src != dst).any()
    code, _, err = run_cli(["batch", folder, "--model", tiny_bundle, "--annotate", outdir,
                            "--no-progress"])
    assert code != 0 and "--overwrite" in err


def test_an_annotated_copy_that_cannot_be_written_is_a_recorded_failure(tiny_bundle, tiny_data,
                                                                         tmp_path):
    """A file named like a class folder in the --annotate folder: each copy that would go
    under it is recorded as that row's error (the prediction kept, and counted in the
    metrics), the other copies are written, the run goes on and exits 1 (it was a
    FileExistsError traceback that ended the run)."""
    folder = os.path.join(tiny_data, "test")
    outdir = tmp_path / "annotated"
    outdir.mkdir()
    (outdir / "benign").write_text(u"a note, not a folder")
    results = str(tmp_path / "r.csv")
    code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--annotate",
                              str(outdir), "--overwrite", "--results", results,
                              "--no-progress"])
    assert code == 1, err
    assert "Traceback" not in err
    rows = _csv_rows(results)
    assert len(rows) == len(_all_images(folder))
    for row in rows:
        assert row["label"] in LABELS  # every image is classified
        if row["relpath"].startswith("benign"):
            assert row["annotated"] == ""
            assert row["error"].startswith("annotated copy not written: ")
            assert "{} is a file, not a folder".format(outdir / "benign") in row["error"]
        else:
            assert row["error"] == "" and os.path.isfile(row["annotated"])
    failed = sum(1 for row in rows if row["error"])
    assert "{} failed".format(failed) in out and failed == 3
    assert (outdir / "benign").read_text() == u"a note, not a folder"
    with io.open(str(tmp_path / "r.metrics.json")) as fh:
        assert json.load(fh)["images"] == len(rows)


def test_write_image_names_what_stands_where_a_folder_goes(tmp_path, monkeypatch):
    from oncolens.appliance.errors import ImageWriteError
    from oncolens.appliance.imageio import write_image
    (tmp_path / "a").write_text(u"x")
    target = tmp_path / "a" / "b" / "c.png"
    with pytest.raises(ImageWriteError) as err:
        write_image(str(target), np.zeros((4, 4, 3), np.uint8))
    assert str(err.value) == "{}: cannot write it ({} is a file, not a folder)".format(
        target, tmp_path / "a")
    assert sorted(os.listdir(str(tmp_path))) == ["a"]
    monkeypatch.chdir(str(tmp_path))  # a relative path is named as it was given
    with pytest.raises(ImageWriteError) as err:
        write_image(os.path.join("a", "b", "c.png"), np.zeros((4, 4, 3), np.uint8))
    assert str(err.value) == "{}: cannot write it (a is a file, not a folder)".format(
        os.path.join("a", "b", "c.png"))
    wide = str(tmp_path / "wide.jpg")  # a JPEG holds 65500 pixels a side at most
    with pytest.raises(ImageWriteError) as err:
        write_image(wide, np.zeros((1, 65501, 3), np.uint8))
    assert str(err.value).startswith(wide + ": cannot encode a 65501x1 image as .jpg")
    assert not os.path.exists(wide)


def test_annotated_copies_inside_the_input_are_not_classified(tiny_bundle, tiny_data, tmp_path):
    folder = _copy_test_split(tiny_data, tmp_path / "in")
    images = _all_images(folder)
    results = str(tmp_path / "r.csv")
    code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                              "--annotate", os.path.join(folder, "zz_annotated"),
                              "--batch-size", "2", "--no-progress"])
    assert code == 0, err
    assert sorted(r["path"] for r in _csv_rows(results)) == images
    assert len(_all_images(os.path.join(folder, "zz_annotated"))) == len(images)


def test_a_grey_only_format_gets_a_colour_annotated_copy(tiny_bundle, tiny_data, tmp_path):
    from oncolens.appliance.imageio import read_image
    import cv2
    folder = tmp_path / "in"
    folder.mkdir()
    grey = cv2.imread(os.path.join(tiny_data, "test", "normal", "normal_test_0000.png"),
                      cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(folder / "slide.pgm"), grey)
    shutil.copy(os.path.join(tiny_data, "test", "benign", "benign_test_0000.png"),
                str(folder / "other.png"))
    cv2.imwrite(str(folder / "slide.ppm"), cv2.imread(str(folder / "other.png")))
    results, outdir = str(tmp_path / "r.csv"), tmp_path / "ann"
    code, out, err = run_cli(["batch", str(folder), "--model", tiny_bundle, "--results",
                              results, "--annotate", str(outdir), "--no-progress"])
    assert code == 0, err
    assert len(_csv_rows(results)) == 3
    copy = read_image(str(outdir / "slide.pgm.ppm"))
    assert copy.shape == grey.shape + (3,)
    assert (copy != grey[..., None]).any()  # the verdict is drawn on it
    assert (outdir / "other.png").exists() and (outdir / "slide.ppm").exists()


def test_annotating_into_the_input_folder_is_refused(tiny_bundle, tiny_data, tmp_path):
    folder = _copy_test_split(tiny_data, tmp_path / "in")
    before = {p: open(p, "rb").read() for p in _all_images(folder)}
    for extra in (["--resume"], ["--overwrite"]):
        code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--annotate",
                                  folder + "/", "--results", str(tmp_path / "r.csv"),
                                  "--no-progress"] + extra)
        assert code != 0 and "the input folder itself" in err
    one = _all_images(folder)[0]  # a single file, annotated into its own folder
    code, out, err = run_cli(["batch", one, "--model", tiny_bundle, "--annotate",
                              os.path.dirname(one), "--overwrite", "--no-progress"])
    assert code != 0 and "the input folder itself" in err
    assert {p: open(p, "rb").read() for p in _all_images(folder)} == before


def test_confusion_picture_goes_beside_the_metrics(tiny_bundle, tiny_data, tmp_path):
    results = str(tmp_path / "run.metrics" / "r.csv")
    code, out, err = run_cli(["batch", os.path.join(tiny_data, "test"), "--model", tiny_bundle,
                              "--results", results, "--no-progress"])
    assert code == 0, err
    assert sorted(os.listdir(str(tmp_path))) == ["run.metrics"]
    assert sorted(os.listdir(str(tmp_path / "run.metrics"))) == [
        "r.confusion.png", "r.csv", "r.metrics.json"]


def test_truth_is_the_nearest_label_folder_else_the_input_folder():
    from oncolens.appliance.evaluation import input_folder, truth_of
    j = os.path.join
    assert truth_of(j("Benign", "x.png"), LABELS) == "benign"
    assert truth_of(j("benign", "p1", "x.png"), LABELS) == "benign"
    assert truth_of(j("benign", "normal", "x.png"), LABELS) == "normal"  # the nearest
    assert truth_of(j("p1", "x.png"), LABELS, input_name="malignant") == "malignant"
    assert truth_of(j("benign", "x.png"), LABELS, input_name="malignant") == "benign"
    assert truth_of("x.png", LABELS, input_name="test") is None
    assert input_folder(j("a", "benign", "*.png")) == j("a", "benign")
    assert input_folder(j("a", "benign", "x.png")) == j("a", "benign")


def test_batch_finds_truth_in_a_class_folder_and_a_nested_layout(tiny_bundle, tiny_data,
                                                                 tmp_path):
    """The same truth ``oncolens evaluate`` finds: a class folder as the input, and class
    folders with a folder per patient inside."""
    test = os.path.join(tiny_data, "test")
    nest = tmp_path / "nest"
    for label in LABELS:
        shutil.copytree(os.path.join(test, label), str(nest / label / ("p_" + label)))
    for n, uri in enumerate([os.path.join(test, "benign"), str(nest),
                             os.path.join(test, "malignant", "*.png")]):
        results = str(tmp_path / "t{}.csv".format(n))
        code, out, err = run_cli(["batch", uri, "--model", tiny_bundle, "--results", results,
                                  "--no-progress"])
        assert code == 0, err
        rows = _csv_rows(results)
        assert rows and all(row["truth"] == os.path.basename(os.path.dirname(row["path"]))
                            .replace("p_", "") for row in rows)
        assert "accuracy" in out and os.path.exists(str(tmp_path / "t{}.metrics.json".format(n)))
