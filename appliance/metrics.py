"""Classification metrics in plain numpy (checked against scikit-learn in the tests)."""
import numpy as np


def confusion_matrix(y_true, y_pred, num_classes):
    """Rows are the true class, columns the predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def per_class(cm):
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1, support.astype(np.int64)


def summary(y_true, y_pred, num_classes):
    """accuracy, macro-F1 (over classes present in y_true or y_pred) and the matrix."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    _, _, f1, support = per_class(cm)
    present = (support > 0) | (cm.sum(axis=0) > 0)
    total = cm.sum()
    return {
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "confusion_matrix": cm.tolist(),
    }


def _rankdata(values):
    """Average ranks (1-based), ties sharing their mean rank, as scipy.stats.rankdata."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_vals[end + 1] == sorted_vals[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def binary_auc(positive, scores):
    """ROC-AUC (Mann-Whitney U); None when only one class is present."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc_ovr(y_true, probs):
    """One-vs-rest ROC-AUC per class (None where undefined) and their macro mean."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    per = [binary_auc(y_true == c, probs[:, c]) for c in range(probs.shape[1])]
    defined = [a for a in per if a is not None]
    return per, (float(np.mean(defined)) if defined else None)


def roc_curve(positive, scores):
    """(false positive rates, true positive rates) at every distinct threshold."""
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    scores_sorted = np.asarray(scores, dtype=np.float64)[order]
    hits = positive[order]
    distinct = np.where(np.diff(scores_sorted))[0]
    idx = np.r_[distinct, len(hits) - 1]
    tps = np.cumsum(hits)[idx]
    fps = (idx + 1) - tps
    tpr = np.r_[0.0, tps / max(1, positive.sum())]
    fpr = np.r_[0.0, fps / max(1, (~positive).sum())]
    return fpr, tpr


def calibration(y_true, probs, bins=15):
    """Expected calibration error of the top-1 confidence and the reliability table.

    Equal-width confidence bins; ECE = sum over bins of (n_bin / n) * |accuracy - confidence|.
    """
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        if n:
            acc, mean_conf = float(correct[mask].mean()), float(conf[mask].mean())
            ece += n / float(len(conf)) * abs(acc - mean_conf)
        else:
            acc, mean_conf = None, None
        table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": n,
                      "accuracy": acc, "confidence": mean_conf})
    return float(ece), table


def bootstrap_ci(y_true, y_pred, num_classes, rounds=1000, level=0.95, seed=0):
    """Percentile bootstrap intervals of accuracy and macro-F1 over the images.

    The images are drawn with replacement ``rounds`` times (seeded: the same inputs give the
    same interval) and each draw is scored as ``summary`` scores the whole set; the interval
    is the central ``level`` of those scores. It says how much the figure would move on
    another sample of the same size: on a 115-image split, a lot. Where every image is
    right (or none is) the resamples cannot say it: see _extreme_interval.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    rng = np.random.RandomState(seed)
    scores = {"accuracy": [], "macro_f1": []}
    for _ in range(int(rounds)):
        pick = rng.randint(0, len(y_true), len(y_true))
        head = summary(y_true[pick], y_pred[pick], num_classes)
        scores["accuracy"].append(head["accuracy"])
        scores["macro_f1"].append(head["macro_f1"])
    tail = 100.0 * (1.0 - level) / 2.0
    out = {"method": "percentile bootstrap over images", "rounds": int(rounds),
           "level": float(level), "seed": int(seed)}
    for key, values in scores.items():
        low, high = np.percentile(values, [tail, 100.0 - tail])
        out[key] = [float(low), float(high)]
    right = int((y_true == y_pred).sum())
    if right in (0, len(y_true)):
        out.update(_extreme_interval(right, len(y_true), level))
    return out


def _extreme_interval(right, n, level):
    """Every image right, or none: every resample scores the same, and the percentile
    interval has no width (1.000-1.000 on 9 images), as if the figure could not move. Then
    accuracy gets the exact (Clopper-Pearson) interval of ``right`` in ``n``, which at these
    ends is closed-form, and macro-F1, which a bootstrap over the images cannot bound, none."""
    edge = ((1.0 - level) / 2.0) ** (1.0 / n)
    return {"accuracy": [edge, 1.0] if right else [0.0, 1.0 - edge], "macro_f1": None,
            "method": "exact (Clopper-Pearson) interval of accuracy; none of macro-F1",
            "note": "{} image is classified right, so every resample scores the same: "
                    "accuracy's interval is the exact (Clopper-Pearson) one of {} right in "
                    "{}, and macro-F1 has none (n/a)".format("every" if right else "no",
                                                              right, n)}


def full_report(y_true, probs, labels, bins=15, bootstrap=1000):
    """Everything ``oncolens evaluate`` reports, as a JSON-ready dictionary.

    ``bootstrap``: rounds for the confidence intervals of accuracy and macro-F1 (0: none).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n = len(labels)
    y_pred = probs.argmax(axis=1)
    head = summary(y_true, y_pred, n)
    precision, recall, f1, support = per_class(np.asarray(head["confusion_matrix"]))
    auc, macro_auc = roc_auc_ovr(y_true, probs)
    ece, table = calibration(y_true, probs, bins)
    return {
        "labels": list(labels),
        "count": int(len(y_true)),
        "accuracy": head["accuracy"],
        "macro_f1": head["macro_f1"],
        "balanced_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
        "per_class": {label: {"precision": float(precision[i]), "recall": float(recall[i]),
                              "f1": float(f1[i]), "support": int(support[i]),
                              "roc_auc": auc[i]} for i, label in enumerate(labels)},
        "confusion_matrix": head["confusion_matrix"],
        "roc_auc_macro": macro_auc,
        "ece": ece,
        "reliability": table,
        "ci": bootstrap_ci(y_true, y_pred, n, bootstrap) if bootstrap and len(y_true) else None,
    }
