"""jetson-inference's native ``imageNet`` (TensorRT underneath), used when importable.

imageNet does its own resizing and normalisation from an image, so this backend turns each
preprocessed tensor back into the RGB image the model sees (already resized and cropped by
model.json's policy; 8-bit rounding is the only loss) and lets imageNet normalise it.  That
is exact for models trained with ImageNet mean/std, which is what imageNet assumes for ONNX:
a model whose model.json records another normalisation (EfficientNet-Lite's (x - 127) / 128)
would see other numbers than training evaluated, so ``--backend auto`` passes this backend
by for it (with an info line) and ``--backend jetson`` refuses it.
imageNet reports the top classes only; the rest of the probability is spread evenly over
the other classes.
"""
import importlib
import logging

import numpy as np

from oncolens.appliance.backends.base import Backend, InferResult
from oncolens.appliance.bundle import MODEL_JSON
from oncolens.appliance.errors import BundleError, MissingDependency, plural
from oncolens.appliance.preprocess import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


def to_rgb8(chw, mean, std):
    """Undo ``preprocess.normalize``: float32 3xHxW -> uint8 HxWx3."""
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    rgb = (chw * std + mean) * 255.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _numbers(values):
    return "({})".format(", ".join("{:.3f}".format(float(v)) for v in values))


def other_normalisation(bundle):
    """Why imageNet cannot give this bundle's model the input training evaluated, or None:
    jetson-inference normalises an ONNX model's input with ImageNet's mean/std, always."""
    mean = bundle.preprocess.get("mean", IMAGENET_MEAN)
    std = bundle.preprocess.get("std", IMAGENET_STD)
    if np.allclose(mean, IMAGENET_MEAN, rtol=0, atol=1e-6) and \
            np.allclose(std, IMAGENET_STD, rtol=0, atol=1e-6):
        return None
    return ("{}: the model was trained on input normalised with mean {} and std {}, but "
            "jetson-inference's imageNet normalises with ImageNet's, mean {} and std {}".format(
                bundle.path(MODEL_JSON), _numbers(mean), _numbers(std),
                _numbers(IMAGENET_MEAN), _numbers(IMAGENET_STD)))


def spread(num_classes, pairs):
    """A probability row from imageNet's (class, confidence) pairs."""
    probs = np.zeros(num_classes, dtype=np.float32)
    for index, conf in pairs:
        probs[int(index)] = float(conf)
    rest = [i for i in range(num_classes) if i not in set(int(p[0]) for p in pairs)]
    left = max(0.0, 1.0 - float(probs.sum()))
    if rest:
        probs[rest] = left / len(rest)
    return probs


class JetsonBackend(Backend):
    name = "jetson"
    precision = "fp16"  # imageNet picks the fastest precision the GPU has
    max_batch = 1

    def __init__(self, bundle, **options):
        super(JetsonBackend, self).__init__(bundle, **options)
        why = other_normalisation(bundle)
        if why:
            raise BundleError("{}: use --backend tensorrt, which runs the same engine with the "
                              "model's own normalisation".format(why))
        try:
            ji = importlib.import_module("jetson_inference")
            self.ju = importlib.import_module("jetson_utils")
        except ImportError as exc:
            raise MissingDependency(getattr(exc, "name", None) or "jetson_inference",
                                    "the jetson backend",
                                    "install jetson-inference (github.com/dusty-nv/jetson-inference)")
        path = bundle.model_path or bundle.onnx_path
        if not path.endswith(".onnx"):
            raise BundleError("{}: the jetson backend loads .onnx models".format(path))
        labels = bundle.path("labels.txt") if bundle.labels_source.endswith(".json") \
            else bundle.labels_source
        argv = ["--model={}".format(path), "--labels={}".format(labels),
                "--input-blob={}".format(bundle.input_name),
                "--output-blob={}".format(bundle.output_name)]
        self.net = ji.imageNet(argv=argv)
        num = self.net.GetNumClasses()
        if num != len(bundle.labels):
            raise BundleError("{} lists {} but {} has {}".format(
                bundle.labels_source, plural(len(bundle.labels), "class"), path,
                plural(num, "output")))
        self.mean = bundle.preprocess.get("mean")
        self.std = bundle.preprocess.get("std")

    @classmethod
    def can_load(cls, bundle):
        import importlib.util
        import sys
        path = bundle.model_path or bundle.onnx_path
        if not path.endswith(".onnx"):
            return False
        if sys.modules.get("jetson_inference") is None:
            try:
                if importlib.util.find_spec("jetson_inference") is None:
                    return False
            except (ImportError, ValueError):
                return False
        why = other_normalisation(bundle)
        if why:
            log.info("backend auto: not jetson: %s", why)
            return False
        return True

    def _classify(self, rgb):
        img = self.ju.cudaFromNumpy(rgb)
        num = len(self.bundle.labels)
        try:
            result = self.net.Classify(img, topK=num)  # newer releases: a list of pairs
        except TypeError:
            result = self.net.Classify(img)            # JetPack 4.6: (class, confidence)
        if result and isinstance(result[0], (tuple, list)):
            return spread(num, result)
        return spread(num, [result])

    def infer(self, batch):
        rows = [self._classify(to_rgb8(chw, self.mean, self.std)) for chw in batch]
        return InferResult(np.stack(rows).astype(np.float32), None)
