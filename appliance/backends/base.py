"""The backend interface: a batch of preprocessed images in, class probabilities out."""
import collections

import numpy as np

InferResult = collections.namedtuple("InferResult", ["probs", "cam"])


def softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Backend(object):
    """One model loaded on one runtime.

    ``infer(batch)`` takes float32 NCHW (already preprocessed) and returns an InferResult
    whose ``probs`` is float32 (N, num_classes) summing to 1 along axis 1 and whose
    ``cam`` is (N, H, W) class activation maps or None.
    """

    name = "base"
    precision = "fp32"
    path = None  # the model file this backend runs, where it is not the bundle's usual one
    max_batch = None  # None: any batch size

    def __init__(self, bundle, **options):
        self.bundle = bundle
        self.options = options

    @classmethod
    def can_load(cls, bundle):
        """Whether this backend can run the bundle's model file at all."""
        return True

    def infer(self, batch):
        raise NotImplementedError

    def describe(self):
        return "{} {}".format(self.name, self.precision)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _finish(self, raw, cam=None):
        """Apply softmax when the model outputs logits; check the output width."""
        raw = np.asarray(raw, dtype=np.float32)
        if raw.ndim != 2:
            raw = raw.reshape(raw.shape[0], -1)
        if self.bundle.info["output"].get("activation", "softmax") != "softmax":
            raw = softmax(raw)
        return InferResult(raw, cam)
