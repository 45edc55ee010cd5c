"""``oncolens batch``: results files, resume, failures, bad flags, streaming (metrics, truth
and annotated copies: test_batch_outputs.py)."""
import csv
import io
import json
import os
import shutil

import numpy as np
import pytest

from conftest import run_cli

LABELS = ["benign", "malignant", "normal"]


def _copy_test_split(tiny_data, dst):
    shutil.copytree(os.path.join(tiny_data, "test"), str(dst))
    return str(dst)


def _all_images(folder):
    found = []
    for parent, _, files in os.walk(folder):
        found.extend(os.path.join(parent, f) for f in files)
    return sorted(found)


def _csv_rows(path):
    with io.open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _jsonl_rows(path):
    with io.open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_results_file_read_back(tiny_bundle, tiny_data, tmp_path, ext):
    folder = os.path.join(tiny_data, "test")
    results = str(tmp_path / ("r" + ext))
    code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                              "--batch-size", 4, "--no-progress"])
    assert code == 0, err
    rows = _csv_rows(results) if ext == ".csv" else _jsonl_rows(results)
    assert sorted(r["path"] for r in rows) == _all_images(folder)
    with io.open(os.path.join(tiny_bundle, "model.json")) as fh:
        sha = json.load(fh)["onnx"]["sha256"]
    for row in rows:
        probs = np.array([float(row["p_" + label]) for label in LABELS])
        assert abs(probs.sum() - 1.0) < 1e-4
        assert row["label"] == LABELS[int(np.argmax(probs))] == LABELS[int(row["index"])]
        assert abs(float(row["confidence"]) - probs.max()) < 1e-6
        assert row["truth"] == os.path.basename(os.path.dirname(row["path"]))
        assert int(row["correct"]) == int(row["label"] == row["truth"])
        assert not row["error"]
        assert row["backend"] == "onnxruntime" and row["precision"] == "fp32"
        assert row["model_sha256"] == sha
    assert "accuracy" in out and "confusion matrix" in out


def test_same_results_with_and_without_batching_and_workers(tiny_bundle, tiny_data, tmp_path):
    folder = os.path.join(tiny_data, "test")
    got = []
    for n, (bs, workers) in enumerate([(1, 0), (5, 2)]):
        results = str(tmp_path / "r{}.jsonl".format(n))
        code, _, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                                "--batch-size", bs, "--workers", workers, "--no-progress"])
        assert code == 0, err
        got.append(dict((r["path"], r["p_benign"]) for r in _jsonl_rows(results)))
    assert got[0].keys() == got[1].keys()
    for path in got[0]:
        assert abs(got[0][path] - got[1][path]) < 1e-5


def test_resume_after_a_killed_run(tiny_bundle, tiny_data, tmp_path):
    folder = _copy_test_split(tiny_data, tmp_path / "in")
    everything = _all_images(folder)
    later = everything[1::2]  # files "not reached yet" when the run was killed
    parked = tmp_path / "parked"
    for path in later:
        dst = parked / os.path.relpath(path, folder)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, str(dst))
    results = str(tmp_path / "r.csv")
    code, _, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                            "--no-progress"])
    assert code == 0, err
    first = _csv_rows(results)
    assert len(first) == len(everything) - len(later)
    with io.open(results, "a", encoding="utf-8") as fh:  # killed in the middle of a line
        fh.write(u"{},half-a-row".format(later[0]))
    shutil.copytree(str(parked), folder, dirs_exist_ok=True)
    code, _, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                            "--no-progress"])
    assert code != 0 and "--resume" in err  # never appends or replaces without being asked
    code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                              "--resume", "--no-progress"])
    assert code == 0, err
    rows = _csv_rows(results)
    assert sorted(r["path"] for r in rows) == everything          # each file exactly once
    assert rows[:len(first)] == first                              # the first run's rows kept
    assert "skipped" in out and "classified {} images".format(len(later)) in out
    # the metrics cover the whole file, not only the resumed part
    with io.open(os.path.splitext(results)[0] + ".metrics.json") as fh:
        assert json.load(fh)["images"] == len(everything)


def test_corrupt_empty_and_unsupported_files_are_recorded(tiny_bundle, tiny_data, tmp_path):
    folder = _copy_test_split(tiny_data, tmp_path / "in")
    good = len(_all_images(folder))
    (tmp_path / "in" / "benign" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "in" / "empty.jpg").write_bytes(b"")
    (tmp_path / "in" / "clip.gif").write_bytes(b"GIF89a")
    (tmp_path / "in" / "notes.txt").write_text(u"not an image, not counted")
    results = str(tmp_path / "r.jsonl")
    code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                              "--no-progress"])
    assert code == 1
    rows = dict((os.path.basename(r["path"]), r) for r in _jsonl_rows(results))
    assert len(rows) == good + 3 and "notes.txt" not in rows
    assert "not a decodable image" in rows["broken.png"]["error"]
    assert "empty file" in rows["empty.jpg"]["error"]
    assert "unsupported image format .gif" in rows["clip.gif"]["error"]
    for name in ("broken.png", "empty.jpg", "clip.gif"):
        assert rows[name]["label"] is None and rows[name]["p_benign"] is None
    assert sum(1 for r in rows.values() if r["label"]) == good
    assert "3 failed" in out and "1 non-image file ignored" in out
    with io.open(str(tmp_path / "r.metrics.json")) as fh:
        metrics = json.load(fh)
    assert metrics["images"] == good and metrics["failed"] == 3


def test_file_list_is_streamed_and_prefetch_is_bounded():
    from oncolens.appliance.pipeline import prefetch
    pulled = []

    def files():
        for n in range(1000):
            pulled.append(n)
            yield "/nonexistent/{}.png".format(n), "{}.png".format(n)

    items = prefetch(files(), preprocessor=None, workers=2, depth=8)
    first = next(items)
    assert first.index == 0 and "cannot read" in first.error
    assert len(pulled) <= 9  # never more than depth (+1) files ahead of the consumer
    assert [item.index for item in items] == list(range(1, 1000))


@pytest.mark.parametrize("argv, message", [
    (["--results", "r.txt"], "expected a .csv or .jsonl"),
    (["--resume"], "--resume: needs --results"),
    (["--batch-size", "0"], "--batch-size"),
    (["--precision", "fp16"], "--precision: expected one of fp32, int8"),
    (["--topK", "-1"], "--topK: expected 0 (every class"),
    (["--threshold", "2"], "--threshold: expected a confidence between 0 and 1"),
    (["--log-level", "loud"], "--log-level: unknown level 'loud'"),
    (["--annotate", "{tmp}/afile"], "--annotate {tmp}/afile is a file: expected a folder"),
    (["--results", "{tmp}/afile/r.csv"], "is a file, not a folder"),
    (["--results", "{tmp}/r.csv", "--metrics", "{tmp}/afile/m.json"],
     "--metrics {tmp}/afile/m.json: {tmp}/afile is a file"),
    (["--results", "{tmp}/r.csv", "--metrics", "{tmp}/kept.json"],
     "--metrics {tmp}/kept.json already exists"),
    (["--results", "{tmp}/r.jsonl", "--metrics", "{tmp}/r.jsonl"],
     "the same file as --results"),
    (["--results", "{tmp}/r.csv", "--metrics", "{tmp}/newdir/"], "is a folder: expected a file"),
    (["--results", "{tmp}/r.csv", "--metrics", "{tmp}/x.png", "--overwrite"],
     "--metrics {tmp}/x.png: an image or video file name"),
])
def test_bad_flags_are_one_line(tiny_bundle, tiny_data, tmp_path, argv, message):
    """Checked before the first image: nothing is classified, nothing written."""
    (tmp_path / "afile").write_text(u"not a folder")
    (tmp_path / "kept.json").write_text(u"{}")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run_cli(["batch", os.path.join(tiny_data, "test"), "--model", tiny_bundle,
                              "--no-progress"] + argv)
    assert code != 0
    assert message.replace("{tmp}", str(tmp_path)) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.csv").exists() and "classified" not in out
    assert (tmp_path / "kept.json").read_text() == u"{}"


def test_resume_matches_a_file_however_its_folder_is_spelled(tiny_bundle, tiny_data, tmp_path,
                                                             monkeypatch):
    folder = _copy_test_split(tiny_data, tmp_path / "in")
    monkeypatch.chdir(str(tmp_path))
    results = str(tmp_path / "r.csv")
    for spelling in ("in", "./in", folder, folder + "/", "../in"):
        if spelling == "../in":  # and from another folder
            (tmp_path / "sub").mkdir()
            monkeypatch.chdir(str(tmp_path / "sub"))
        code, out, err = run_cli(["batch", spelling, "--model", tiny_bundle, "--results",
                                  results, "--no-progress", "--resume"])
        assert code == 0, err
    rows = _csv_rows(results)
    assert len(rows) == len(_all_images(folder))  # each file once, not once a spelling
    assert "classified 0 images" in out and "{} skipped".format(len(rows)) in out


def test_resume_refuses_rows_of_another_model(tiny_bundle, tiny_data, tmp_path):
    folder = os.path.join(tiny_data, "test")
    results = str(tmp_path / "r.jsonl")
    code, _, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                            "--no-progress"])
    assert code == 0, err
    rows = _jsonl_rows(results)
    with io.open(results, "w", encoding="utf-8") as fh:  # as if another model had written it
        for row in rows:
            row["model_sha256"] = "0" * 64
            fh.write(json.dumps(row) + "\n")
    before = open(results, "rb").read()
    code, out, err = run_cli(["batch", folder, "--model", tiny_bundle, "--results", results,
                              "--no-progress", "--resume"])
    assert code != 0 and "holds results of another model" in err
    assert len(err.strip().splitlines()) == 1 and open(results, "rb").read() == before


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_a_file_name_that_is_not_utf8_is_kept(tiny_bundle, tiny_data, tmp_path, ext):
    folder = tmp_path / "in"
    folder.mkdir()
    src = os.path.join(tiny_data, "test", "normal", "normal_test_0000.png")
    odd = os.path.join(os.fsencode(str(folder)), b"caf\xe9.png")  # Latin-1, not UTF-8
    shutil.copy(src, odd)
    results = str(tmp_path / ("r" + ext))
    code, out, err = run_cli(["batch", str(folder), "--model", tiny_bundle, "--results",
                              results, "--no-progress"])
    assert code == 0, err
    from oncolens.appliance.results import read_rows
    rows = list(read_rows(results))
    assert len(rows) == 1 and os.fsencode(rows[0]["path"]) == odd and not rows[0]["error"]
    code, out, err = run_cli(["batch", str(folder), "--model", tiny_bundle, "--results",
                              results, "--no-progress", "--resume"])
    assert code == 0 and "1 skipped" in out and len(list(read_rows(results))) == 1


def test_int8_is_refused_without_a_measured_agreement(tiny_bundle, tiny_data, tmp_path):
    bundle = str(tmp_path / "model")
    shutil.copytree(tiny_bundle, bundle, ignore=shutil.ignore_patterns("variants"))
    code, out, err = run_cli(["batch", os.path.join(tiny_data, "test"), "--model", bundle,
                              "--precision", "int8", "--no-progress"])
    assert code != 0 and "no int8 copy with a measured agreement" in err
    assert "oncolens bench" in err and len(err.strip().splitlines()) == 1


def test_an_extremely_elongated_image_is_a_recorded_failure(tiny_bundle, tiny_data, tmp_path,
                                                            caplog):
    """A 1x200000 strip would be resized to gigabytes on its way to the model's input: it is
    refused on its own and the run goes on, in batch and in the live loop."""
    import cv2
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "strip.png"), np.full((1, 200000, 3), 128, np.uint8))
    shutil.copy(os.path.join(tiny_data, "test", "benign", "benign_test_0000.png"),
                str(folder / "ok.png"))
    results = str(tmp_path / "r.csv")
    code, out, err = run_cli(["batch", str(folder), "--model", tiny_bundle, "--results",
                              results, "--no-progress"])
    assert code == 1 and "classified 1 image in " in out and "1 failed" in out
    rows = {os.path.basename(r["path"]): r for r in _csv_rows(results)}
    assert "less extreme aspect ratio" in rows["strip.png"]["error"]
    assert "strip.png" in rows["strip.png"]["error"] and not rows["ok.png"]["error"]
    caplog.clear()
    code, out, err = run_cli(["classify", "--model", tiny_bundle, "--headless", str(folder)])
    assert code == 1 and out.count("imagenet:") == 1  # ok.png classified, the strip not
    assert any("strip.png" in r.getMessage() and "less extreme aspect ratio" in r.getMessage()
               for r in caplog.records if r.name == "oncolens.appliance.loop")


def test_resume_keeps_a_linked_second_name_apart(tiny_bundle, tiny_data, tmp_path):
    folder = tmp_path / "in" / "benign"
    folder.mkdir(parents=True)
    shutil.copy(os.path.join(tiny_data, "test", "benign", "benign_test_0000.png"),
                str(folder / "a.png"))
    os.symlink("a.png", str(folder / "b.png"))
    results = str(tmp_path / "r.csv")
    code, out, err = run_cli(["batch", str(tmp_path / "in"), "--model", tiny_bundle,
                              "--results", results, "--no-progress"])
    assert code == 0, err
    rows = _csv_rows(results)
    with io.open(results, "w", encoding="utf-8", newline="") as fh:  # b's row never written
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if not r["path"].endswith("b.png"))
    code, out, err = run_cli(["batch", str(tmp_path / "in"), "--model", tiny_bundle,
                              "--results", results, "--no-progress", "--resume"])
    assert code == 0, err
    assert sorted(os.path.basename(r["path"]) for r in _csv_rows(results)) == ["a.png", "b.png"]


def test_an_input_with_no_image_files_writes_nothing(tiny_bundle, tiny_data, tmp_path):
    """Refused before any output is made: the corrected rerun is not blocked by a header-only
    results file, and an --overwrite'd one is not emptied."""
    results, annotate = str(tmp_path / "e.csv"), str(tmp_path / "ann")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text(u"not an image")
    for uri in (str(tmp_path / "nomatch" / "*.png"), str(notes)):
        code, out, err = run_cli(["batch", uri, "--model", tiny_bundle, "--results", results,
                                  "--annotate", annotate, "--no-progress"])
        assert code != 0 and "input {}: no image files found".format(uri) in err
        assert len(err.strip().splitlines()) == 1 and "no metrics" not in err
        assert os.listdir(str(tmp_path)) == ["notes"]
    code, out, err = run_cli(["batch", os.path.join(tiny_data, "test", "*", "*.png"), "--model",
                              tiny_bundle, "--results", results, "--no-progress"])
    assert code == 0, err
    kept = _csv_rows(results)
    code, out, err = run_cli(["batch", str(tmp_path / "nomatch" / "*.png"), "--model",
                              tiny_bundle, "--results", results, "--overwrite", "--no-progress"])
    assert code != 0 and _csv_rows(results) == kept


def test_run_batch_refuses_an_empty_input_before_the_results_file(tiny_bundle, tmp_path):
    from oncolens.appliance.batch import run_batch
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.errors import UsageError
    results = str(tmp_path / "r.csv")
    with Classifier.open(tiny_bundle) as clf:
        with pytest.raises(UsageError, match="no image files found"):
            run_batch(clf, str(tmp_path / "*.png"), results=results, progress=False)
    assert not os.path.exists(results)
