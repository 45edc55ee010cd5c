"""A model whose output is not a number (NaN: weights a diverged training run left, an FP16
overflow) for an image: evaluate scored it as the first class (argmax of NaN), wrote
"ece": NaN (not JSON) and ended 0; batch labelled it the first class with confidence nan
and 'correct' 1. Such an image is now a failure named with its reason in both."""
import json
import os

from conftest import run_cli


def _strict_json(path):
    """The file as JSON, refusing NaN and Infinity (which no JSON reader but Python's takes)."""
    def refuse(name):
        raise ValueError("{}: {} is not JSON".format(path, name))
    with open(path) as fh:
        return json.load(fh, parse_constant=refuse)


def test_evaluate_refuses_a_model_whose_output_is_not_a_number(nan_bundle, tiny_data, tmp_path):
    json_path = str(tmp_path / "m.json")
    code, out, err = run_cli(["evaluate", "--model-dir", nan_bundle, "--backend", "torch",
                              os.path.join(tiny_data, "test"), "--json", json_path,
                              "--out", str(tmp_path / "e"), "--bootstrap", 0])
    assert code == 1 and len(err.strip().splitlines()) == 1, (out, err)
    assert "not a number" in err and "9 images" in err and "accuracy" not in out, err
    assert not os.path.exists(json_path) and not os.path.exists(str(tmp_path / "e"))


def test_several_models_the_one_not_a_number_is_not_evaluated(nan_bundle, tiny_bundle,
                                                              tiny_data, tmp_path):
    json_path = str(tmp_path / "m.json")
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, "--model-dir", nan_bundle,
                              "--backend", "torch", os.path.join(tiny_data, "test"),
                              "--json", json_path, "--out", str(tmp_path / "e"),
                              "--bootstrap", 0])
    assert code == 1, err
    doc = _strict_json(json_path)
    assert [m["count"] for m in doc["models"]] == [9]
    assert "not a number" in doc["not_evaluated"][0]["error"]
    table = open(str(tmp_path / "e" / "comparison.md")).read()
    assert "| diverged |" not in table and "Not evaluated: {}".format(nan_bundle) in table


def test_evaluate_lists_an_image_whose_output_is_not_a_number(tiny_bundle, tiny_data, tmp_path,
                                                              monkeypatch):
    """One image's output NaN (an overflow on that image alone): it is listed, with why,
    and the others are scored; the JSON stays JSON."""
    from oncolens.train import evaluate
    opened = evaluate.open_runner

    def one_nan(model_dir, backend="auto"):
        runner, info = opened(model_dir, backend)
        probs = runner.probs

        def patched(batch):
            out = probs(batch)
            out[0, 1] = float("nan")  # the first image of every batch
            return out
        runner.probs = patched
        return runner, info
    monkeypatch.setattr(evaluate, "open_runner", one_nan)
    json_path = str(tmp_path / "m.json")
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, "--backend", "torch",
                              os.path.join(tiny_data, "test"), "--json", json_path,
                              "--out", str(tmp_path / "e"), "--bootstrap", 0])
    assert code == 1 and "1 image could not be read or scored" in err, err
    report = _strict_json(json_path)
    first = os.path.join(tiny_data, "test", "benign", "benign_test_0000.png")
    assert report["count"] == 8 and [f["path"] for f in report["failed"]] == [first]
    assert "not scored: {}: the model's output for this image is not a number".format(
        first) in out


def test_batch_records_an_output_that_is_not_a_number_as_a_failure(nan_bundle, tiny_data,
                                                                   tmp_path, caplog):
    for ext in (".csv", ".jsonl"):
        results = str(tmp_path / ("run" + ext))
        code, out, err = run_cli(["batch", os.path.join(tiny_data, "test"), "--model",
                                  nan_bundle, "--backend", "torch", "--results", results,
                                  "--no-progress"])
        assert code == 1, err
        assert "9 failed" in out, (out, err)
        assert sum("is not a number" in r.getMessage() for r in caplog.records) == 9
        caplog.clear()
        if ext == ".jsonl":
            def refuse(name):
                raise ValueError(name)
            rows = [json.loads(line, parse_constant=refuse) for line in open(results)]
            assert all(r["label"] is None and r["confidence"] is None and r["correct"] is None
                       and r["p_benign"] is None and "not a number" in r["error"]
                       for r in rows) and len(rows) == 9
        else:
            import csv
            rows = list(csv.DictReader(open(results)))
            assert len(rows) == 9 and all(
                r["label"] == r["confidence"] == r["p_benign"] == r["correct"] == ""
                for r in rows)
        assert not os.path.exists(str(tmp_path / ("run.metrics.json")))


def test_batch_where_no_image_was_scored_says_so_not_no_ground_truth(nan_bundle, tiny_data,
                                                                     tmp_path, caplog):
    """Every image of a class folder failed: batch said 'no ground truth (neither a folder
    inside the input nor the input folder is named after a label)', which the folders are."""
    import logging
    caplog.set_level(logging.INFO)
    code, out, err = run_cli(["batch", os.path.join(tiny_data, "test"), "--model", nan_bundle,
                              "--backend", "torch", "--results", str(tmp_path / "run.csv"),
                              "--no-progress"])
    assert code == 1, err
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "no ground truth" not in said
    assert "no image was scored (all 9 failed): no metrics" in said, said


def test_why_there_are_no_metrics_is_told_apart():
    from oncolens.appliance.evaluation import no_metrics_reason
    labels = ["benign", "malignant"]
    failed = {"label": "", "error": "x: cannot decode", "truth": "benign"}
    scored_no_truth = {"label": "benign", "error": "", "truth": ""}
    assert no_metrics_reason(iter([failed]), labels).startswith(
        "no image was scored (1 image failed)")
    assert no_metrics_reason([failed, scored_no_truth], labels).startswith(
        "no image with ground truth was scored (1 image with ground truth failed)")
    assert no_metrics_reason([scored_no_truth], labels).startswith("no ground truth (")
