"""evaluate's metrics equal scikit-learn's on a fixed set of predictions."""
import numpy as np
import pytest

from oncolens.train import metrics

sk = pytest.importorskip("sklearn.metrics")


def _fixed_predictions():
    rng = np.random.default_rng(11)
    y = np.array([0] * 40 + [1] * 25 + [2] * 15)
    logits = rng.normal(size=(len(y), 3))
    logits[np.arange(len(y)), y] += 1.2
    logits[:5] = np.round(logits[:5], 1)  # some ties
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def test_metrics_equal_scikit_learn():
    y, probs = _fixed_predictions()
    report = metrics.full_report(y, probs, ["benign", "malignant", "normal"])
    pred = probs.argmax(1)
    assert report["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert report["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"))
    assert report["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred))
    assert report["confusion_matrix"] == sk.confusion_matrix(y, pred).tolist()
    p, r, f, s = sk.precision_recall_fscore_support(y, pred)
    for i, name in enumerate(["benign", "malignant", "normal"]):
        row = report["per_class"][name]
        assert row["precision"] == pytest.approx(p[i])
        assert row["recall"] == pytest.approx(r[i])
        assert row["f1"] == pytest.approx(f[i])
        assert row["support"] == s[i]
        assert row["roc_auc"] == pytest.approx(sk.roc_auc_score(y == i, probs[:, i]))
    assert report["roc_auc_macro"] == pytest.approx(
        sk.roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def test_roc_curve_matches_scikit_learn():
    y, probs = _fixed_predictions()
    fpr, tpr = metrics.roc_curve(y == 1, probs[:, 1])
    skf, skt, _ = sk.roc_curve(y == 1, probs[:, 1], drop_intermediate=False)
    assert np.allclose(fpr, skf) and np.allclose(tpr, skt)


def test_expected_calibration_error_by_hand():
    # two bins used: 0.9-confident (1 of 2 right) and 0.6-confident (2 of 2 right)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    ece, table = metrics.calibration(y, probs, bins=10)
    assert ece == pytest.approx(0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6))
    assert sum(b["count"] for b in table) == 4


def test_auc_undefined_for_absent_class():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    per, macro = metrics.roc_auc_ovr(np.array([0, 1]), probs)
    assert per[2] is None and macro == pytest.approx(1.0)


def test_bootstrap_interval_of_accuracy_matches_the_binomial():
    # 400 images, 300 right: the 95% interval of a proportion is 0.75 +- 1.96 * sqrt(pq/n)
    y = np.zeros(400, dtype=np.int64)
    pred = np.where(np.arange(400) < 300, 0, 1)
    ci = metrics.bootstrap_ci(y, pred, 2, rounds=2000)
    half = 1.96 * np.sqrt(0.75 * 0.25 / 400)
    assert ci["accuracy"][0] == pytest.approx(0.75 - half, abs=0.01)
    assert ci["accuracy"][1] == pytest.approx(0.75 + half, abs=0.01)
    assert ci == metrics.bootstrap_ci(y, pred, 2, rounds=2000)  # seeded: repeatable


def test_bootstrap_interval_brackets_macro_f1_and_narrows_with_more_images():
    y, probs = _fixed_predictions()
    report = metrics.full_report(y, probs, ["benign", "malignant", "normal"])
    low, high = report["ci"]["macro_f1"]
    assert low < report["macro_f1"] < high and report["ci"]["level"] == 0.95
    pred = probs.argmax(1)
    more = metrics.bootstrap_ci(np.tile(y, 9), np.tile(pred, 9), 3)["macro_f1"]
    assert more[1] - more[0] < 0.5 * (high - low)  # 9x the images: about a third as wide
    perfect = metrics.bootstrap_ci(y, y, 3)
    # every image right: no bootstrap width; the exact interval (test_evaluate_interval_extremes)
    assert 0.9 < perfect["accuracy"][0] < 1.0 and perfect["macro_f1"] is None
    assert metrics.full_report(y, probs, ["b", "m", "n"], bootstrap=0)["ci"] is None
