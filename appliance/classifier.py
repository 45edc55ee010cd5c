"""Bundle + backend + preprocessing + post-processing: images in, predictions out."""
import logging
import threading

from oncolens.appliance.backends import open_backend
from oncolens.appliance.bundle import load_bundle
from oncolens.appliance.postprocess import top_k
from oncolens.appliance.preprocess import Preprocessor

log = logging.getLogger(__name__)


class Classifier(object):
    """What every front end (classify, batch, bench, serve) uses to run a model."""

    def __init__(self, bundle, backend="auto", policy=None, top=1, threshold=0.0, **options):
        self.bundle = bundle
        self.backend = open_backend(backend, bundle, **options)
        # what model_sha256 is the checksum of (the torch backend's: of the bytes it read)
        bundle.set_file_in_use(self.backend.path, getattr(self.backend, "sha256", None))
        self.preprocessor = Preprocessor.from_bundle(bundle, policy)
        self.top = int(top)
        self.threshold = float(threshold)
        # one inference at a time: the live loop and the web server (classify --serve) may
        # share this classifier, and a TensorRT execution context is not thread-safe
        self._lock = threading.Lock()

    @classmethod
    def open(cls, model, labels=None, input_blob=None, output_blob=None, **kwargs):
        overrides = {}
        if input_blob:
            overrides["input"] = {"name": input_blob}
        if output_blob:
            overrides["output"] = {"name": output_blob}
        return cls(load_bundle(model, labels, overrides or None), **kwargs)

    @property
    def labels(self):
        return self.bundle.labels

    def infer_tensor(self, batch):
        """A preprocessed float32 NCHW batch -> InferResult (thread-safe)."""
        with self._lock:
            return self.backend.infer(batch)

    def infer_images(self, images):
        """RGB uint8 images -> InferResult (probabilities (N, C), cam or None)."""
        return self.infer_tensor(self.preprocessor.batch(images))

    def predictions(self, probs_row):
        return top_k(probs_row, self.labels, self.top, self.threshold)

    def close(self):
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
