"""``oncolens batch`` metrics for a class that has no image with ground truth: recall n/a and
``absent_classes``, as ``oncolens evaluate`` reports them; macro-F1 as before."""
import json
import os
import shutil

import pytest

from conftest import run_cli

LABELS = ["benign", "malignant", "normal"]


def _rows(pairs):
    return [{"path": str(n), "truth": t, "label": p, "error": None}
            for n, (t, p) in enumerate(pairs)]


def _line(text, label):
    return [l for l in text.splitlines() if l.startswith(label + " ")][-1]


def test_an_absent_class_never_predicted_has_recall_na_and_leaves_macro_f1_alone():
    from oncolens.appliance.evaluation import format_metrics, metrics_from_rows
    pairs = [("benign", "benign")] * 3 + [("benign", "malignant")] + \
        [("malignant", "malignant")] * 2
    m = metrics_from_rows(_rows(pairs), LABELS)
    assert m["absent_classes"] == ["normal"]
    assert m["per_class"]["normal"]["support"] == 0
    f1_b, f1_m = 2 * 1.0 * 0.75 / 1.75, 2 * (2 / 3.0) * 1.0 / (2 / 3.0 + 1.0)
    assert m["macro_f1"] == pytest.approx((f1_b + f1_m) / 2)  # normal left out
    text = format_metrics(m)
    assert _line(text, "normal").split()[2] == "n/a", text
    assert _line(text, "benign").split()[2] == "0.7500", text
    assert "none of the images with ground truth is normal" in text


def test_a_class_never_predicted_prints_no_precision():
    """Malignant has images but was never predicted: its precision printed 0.0000 (0/0 by
    scikit-learn's convention); the JSON keeps 0.0, the table says n/a and why."""
    from oncolens.appliance.evaluation import format_metrics, metrics_from_rows
    pairs = [("benign", "benign")] * 2 + [("malignant", "benign"), ("normal", "normal")]
    m = metrics_from_rows(_rows(pairs), LABELS)
    assert m["per_class"]["malignant"]["precision"] == 0.0
    text = format_metrics(m)
    assert _line(text, "malignant").split()[1:3] == ["n/a", "0.0000"], text
    assert _line(text, "benign").split()[1] == "0.6667", text
    assert "the model predicted none of the images as malignant: precision is undefined" in text


def test_an_absent_class_that_was_predicted_counts_in_macro_f1_with_f1_zero():
    from oncolens.appliance.evaluation import format_metrics, metrics_from_rows
    pairs = [("benign", "benign")] * 2 + [("benign", "normal")] + [("malignant", "malignant")]
    m = metrics_from_rows(_rows(pairs), LABELS)
    assert m["absent_classes"] == ["normal"]
    assert m["per_class"]["normal"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.8 + 1.0 + 0.0) / 3)
    assert _line(format_metrics(m), "normal").split()[2] == "n/a"


def test_no_absent_class_no_note():
    from oncolens.appliance.evaluation import format_metrics, metrics_from_rows
    m = metrics_from_rows(_rows([(l, l) for l in LABELS]), LABELS)
    assert m["absent_classes"] == []
    assert "n/a" not in format_metrics(m) and "note:" not in format_metrics(m)


def test_batch_on_a_split_without_a_class(tiny_bundle, tiny_data, tmp_path):
    split = tmp_path / "no normal"
    for cls in ("benign", "malignant"):
        shutil.copytree(os.path.join(tiny_data, "test", cls), str(split / cls))
    results = str(tmp_path / "run.csv")
    code, out, err = run_cli(["batch", str(split), "--model", tiny_bundle, "--results", results,
                              "--no-progress"])
    assert code == 0, err
    with open(str(tmp_path / "run.metrics.json")) as fh:
        m = json.load(fh)
    assert m["absent_classes"] == ["normal"] and m["per_class"]["normal"]["support"] == 0
    line = _line(out, "normal")
    assert line.split()[2] == "n/a" and "0.0000" not in line.split()[2], out
