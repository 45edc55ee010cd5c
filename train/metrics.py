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
