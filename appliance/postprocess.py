"""From probabilities to the text the user sees: top-K, threshold, overlay and console lines."""
import collections
import unicodedata

import numpy as np

Prediction = collections.namedtuple("Prediction", ["index", "label", "confidence"])

# An output row with NaN or infinity in it has no top class (argmax of NaN is the first
# class): batch, evaluate, classify and serve record such an image as a failure, with this
# reason; classify draws NOT_A_NUMBER_OVERLAY on the frame and prints NOT_A_NUMBER_CONSOLE
# where a class would be.
NOT_A_NUMBER = "the model's output for this image is not a number (NaN or infinity): the " \
    "model is broken (weights a diverged training run left, or an overflow in its runtime)"
NOT_A_NUMBER_OVERLAY = "no class: output not a number"
NOT_A_NUMBER_CONSOLE = "imagenet:  no class: the model's output is not a number (NaN or infinity)"


def finite_rows(probs):
    """Which rows of an (N, C) output are numbers throughout (bool array of N)."""
    return np.isfinite(np.asarray(probs, dtype=np.float64)).all(axis=1)


def top_k(probs, labels, k=1, threshold=0.0):
    """The ``k`` most likely classes of one image at or above ``threshold`` (best first);
    ``k`` 0: every class at or above it, as imagenet's ``--topK=0``.

    The best class is always returned, even under the threshold, so a frame never goes
    unlabelled (imagenet would draw nothing on such a frame).
    """
    probs = np.asarray(probs, dtype=np.float64).ravel()
    order = np.argsort(-probs, kind="stable")
    if int(k) > 0:
        order = order[:int(k)]
    preds = [Prediction(int(i), labels[int(i)], float(probs[i])) for i in order]
    return [p for n, p in enumerate(preds) if n == 0 or p.confidence >= threshold]


def drawable(label):
    """``(text, exact)``: ``label`` as OpenCV's fonts draw it, ASCII (the Hershey fonts of
    the Nano's OpenCV draw a '?' for any other character): accents dropped (``bénin`` is
    ``benin``), any other character a '?'; ``exact`` is False when one was."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", label)
                     if not unicodedata.combining(c))
    text = "".join(c if " " <= c <= "~" else "?" for c in folded)
    return text, text == folded


def overlay_text(pred):
    """The overlay line, as jetson-inference draws it: ``97.53% malignant``. A label that
    cannot be drawn as it is (``正常`` and ``异常`` were both ``??``) gets its class number,
    as the console line gives it: ``97.53% ?? (class #1)``."""
    text, exact = drawable(pred.label)
    if not exact:
        text = "{} (class #{})".format(text, pred.index)
    return "{:05.2f}% {}".format(pred.confidence * 100.0, text)


def console_line(pred):
    """The console line, as jetson-inference prints it."""
    return "imagenet:  {:05.2f}% class #{} ({})".format(pred.confidence * 100.0, pred.index,
                                                       pred.label)


class Smoother(object):
    """Temporal smoothing of probabilities across frames, as jetson-inference's ``--smoothing``:
    a weight in (0, 1] on the newest frame, or (above 1) a number of frames N, i.e. weight 1/N.
    0 (the default) turns it off.
    """

    def __init__(self, factor=0.0):
        factor = float(factor or 0.0)
        if not 0 <= factor < float("inf"):  # NaN made every smoothed frame "00nan%"
            from oncolens.appliance.errors import UsageError
            raise UsageError("--smoothing: expected a weight in [0, 1] or a number of frames, "
                             "got {}".format(factor))
        self.weight = 1.0 / factor if factor > 1.0 else factor
        self.state = None

    def __call__(self, probs):
        probs = np.asarray(probs, dtype=np.float32)
        if self.weight <= 0.0 or self.state is None or self.state.shape != probs.shape:
            self.state = probs.copy()
        else:
            self.state = self.weight * probs + (1.0 - self.weight) * self.state
        return self.state
