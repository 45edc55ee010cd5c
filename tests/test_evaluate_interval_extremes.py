"""A split classified without an error (or with no image right) made every bootstrap
resample score the same, and evaluate printed 'accuracy 1.000 (95% CI 1.000-1.000)' on 9
images: an interval of no width, as if the figure could not move on another sample. At
those extremes accuracy now has the exact (Clopper-Pearson) interval, and macro-F1, which
the bootstrap cannot bound there, none (n/a) with the reason said."""
import numpy as np
import pytest

from oncolens.train import metrics

stats = pytest.importorskip("scipy.stats")


def _clopper_pearson(right, n, level=0.95):
    tail = (1 - level) / 2
    low = stats.beta.ppf(tail, right, n - right + 1) if right else 0.0
    high = stats.beta.ppf(1 - tail, right + 1, n - right) if right < n else 1.0
    return [low, high]


@pytest.mark.parametrize("n", [1, 9, 115])
def test_every_image_right_has_the_exact_interval_of_accuracy(n):
    y = np.arange(n) % 3
    ci = metrics.bootstrap_ci(y, y, 3, rounds=200)
    assert ci["accuracy"] == pytest.approx(_clopper_pearson(n, n))
    assert ci["accuracy"][0] < 1.0 and ci["macro_f1"] is None
    assert "every image is classified right" in ci["note"] and "Clopper" in ci["method"]


def test_no_image_right_has_the_exact_interval_of_accuracy():
    y = np.arange(9) % 3
    ci = metrics.bootstrap_ci(y, (y + 1) % 3, 3, rounds=200)
    assert ci["accuracy"] == pytest.approx(_clopper_pearson(0, 9))
    assert ci["macro_f1"] is None and "no image is classified right" in ci["note"]


def test_a_split_with_errors_keeps_the_bootstrap_and_no_note():
    y = np.arange(30) % 3
    pred = y.copy()
    pred[:4] = (pred[:4] + 1) % 3
    ci = metrics.bootstrap_ci(y, pred, 3, rounds=200)
    assert ci["accuracy"][0] < ci["accuracy"][1] < 1.0 and "note" not in ci
    assert ci["macro_f1"][0] < ci["macro_f1"][1]


def test_the_report_and_the_comparison_say_n_a_and_why():
    from oncolens.train.report import comparison_markdown, model_markdown
    y = np.arange(9) % 3
    report = metrics.full_report(y, np.eye(3)[y], ["benign", "malignant", "normal"],
                                 bootstrap=200)
    report.update({"model_dir": "/m", "split_dir": "/s/test", "arch": "resnet18",
                   "resolution": 32, "runner": "torch checkpoint", "failed": [],
                   "training": {}, "absent_classes": []})
    md = model_markdown(report)
    low = 0.025 ** (1 / 9.0)
    assert "accuracy **1.000** (95% CI {:.3f}-1.000)".format(low) in md
    assert "macro-F1 **1.000** (95% CI n/a)" in md and "1.000-1.000" not in md
    assert "every image is classified right" in md
    row = [line for line in comparison_markdown([report]).splitlines()
           if line.startswith("| m |")][0]
    assert row.split(" | ")[5] == "n/a"


def test_evaluate_prints_the_exact_interval_of_a_split_it_gets_all_right(tiny_bundle, tiny_data,
                                                                        tmp_path):
    """One image, put in the folder of the class the model gives it: every image right."""
    import json
    import os
    import shutil
    from conftest import run_cli
    image = os.path.join(tiny_data, "test", "benign", "benign_test_0000.png")
    json_path, split = str(tmp_path / "m.json"), tmp_path / "one"
    (split / "benign").mkdir(parents=True)
    shutil.copy(image, str(split / "benign"))
    argv = ["evaluate", "--model-dir", tiny_bundle, str(split), "--json", json_path, "--out",
            str(tmp_path / "e"), "--overwrite"]
    code, out, err = run_cli(argv)
    assert code == 0, err
    predicted = json.load(open(json_path))["confusion_matrix"][0].index(1)
    label = ["benign", "malignant", "normal"][predicted]
    if label != "benign":
        shutil.move(str(split / "benign"), str(split / label))
    code, out, err = run_cli(argv)
    assert code == 0, err
    ci = json.load(open(json_path))["ci"]
    assert ci["accuracy"] == pytest.approx([0.025, 1.0]) and ci["macro_f1"] is None
    assert "95% CI (exact): accuracy 0.025-1.000  macro-F1 n/a" in out
