"""From probabilities to the text the user sees: top-K, threshold, overlay and console lines."""
import collections

import numpy as np

Prediction = collections.namedtuple("Prediction", ["index", "label", "confidence"])


def top_k(probs, labels, k=1, threshold=0.0):
    """The ``k`` most likely classes of one image at or above ``threshold`` (best first).

    The best class is always returned, even under the threshold, so a frame never goes
    unlabelled (jetson-inference does the same for top-1).
    """
    probs = np.asarray(probs, dtype=np.float64).ravel()
    order = np.argsort(-probs, kind="stable")[:max(1, int(k))]
    preds = [Prediction(int(i), labels[int(i)], float(probs[i])) for i in order]
    return [p for n, p in enumerate(preds) if n == 0 or p.confidence >= threshold]


def overlay_text(pred):
    """The overlay line, as jetson-inference draws it: ``97.53% malignant``."""
    return "{:05.2f}% {}".format(pred.confidence * 100.0, pred.label)


def console_line(pred):
    """The console line, as jetson-inference prints it."""
    return "imagenet:  {:05.2f}% class #{} ({})".format(pred.confidence * 100.0, pred.index,
                                                       pred.label)


class Smoother(object):
    """Exponential moving average of probabilities across frames (``--smoothing``)."""

    def __init__(self, factor=0.0):
        self.factor = float(factor)
        self.state = None

    def __call__(self, probs):
        probs = np.asarray(probs, dtype=np.float32)
        if self.factor <= 0.0 or self.state is None or self.state.shape != probs.shape:
            self.state = probs.copy()
        else:
            self.state = self.factor * self.state + (1.0 - self.factor) * probs
        return self.state
