"""PyTorch backend: runs a training checkpoint (.pth / .pth.tar) directly, no export needed.

The network is rebuilt with ``archs.model_from_checkpoint``, as training and export do, so
its outputs match the ONNX export of the same checkpoint.
"""
import logging
import os

import numpy as np

from oncolens.appliance.archs import CHECKPOINT_SUFFIXES
from oncolens.appliance.backends.base import Backend, InferResult, softmax
from oncolens.appliance.bundle import check_labels_match

log = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("model_best.pth.tar", "checkpoint.pth.tar")


def checkpoint_file(bundle):
    """The bundle's checkpoint: the --model file itself, model.json's, or the usual names."""
    path = bundle.model_path or ""
    if path.lower().endswith(CHECKPOINT_SUFFIXES):
        return path
    names = []
    for key in ("checkpoint", "onnx"):
        entry = bundle.info.get(key) or {}
        names.append(entry.get("file") if key == "checkpoint" else entry.get("checkpoint"))
    for name in [n for n in names if n] + list(CHECKPOINT_NAMES):
        candidate = bundle.path(name)
        if os.path.isfile(candidate):
            return candidate
    return None


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, bundle, precision=None, device=None, **options):
        super(TorchBackend, self).__init__(bundle, **options)
        from oncolens.appliance.archs import load_checkpoint_hashed, model_from_checkpoint
        from oncolens.appliance.errors import BundleError
        from oncolens.appliance.preprocess import checkpoint_preprocess
        path = checkpoint_file(bundle)
        if path is None:
            raise BundleError("{}: no checkpoint for the torch backend (expected a .pth/.pth.tar "
                              "--model or {} in the folder)".format(
                                  bundle.dir, " / ".join(CHECKPOINT_NAMES)))
        # raises MissingDependency without torch; the checksum results record is that of
        # the bytes loaded (a running training may save a best epoch over the file)
        ckpt, self.sha256 = load_checkpoint_hashed(path)
        import torch
        self.torch = torch
        if options.get("threads"):  # --threads, as the other CPU runtimes take it
            torch.set_num_threads(int(options["threads"]))
        self.model = model_from_checkpoint(ckpt, path)
        self.path = path
        num = ckpt.get("num_classes") or len(ckpt.get("classes") or []) or None
        check_labels_match(bundle.labels, num, bundle.labels_source, path)
        if bundle.inferred:  # no model.json: the checkpoint says its input size
            res = int(ckpt.get("resolution") or bundle.input_shape[1])
            bundle.info["input"]["shape"] = [3, res, res]
            bundle.info["preprocess"] = checkpoint_preprocess(ckpt, res)
        want_cuda = device == "cuda" or (device is None and torch.cuda.is_available())
        self.device = torch.device("cuda" if want_cuda else "cpu")
        self.model.to(self.device)
        self.precision = "fp32"
        if (precision or "").lower() == "fp16" and self.device.type == "cuda":
            self.model.half()
            self.precision = "fp16"
        log.info("torch backend: %s on %s (%s)", path, self.device, self.precision)

    @classmethod
    def can_load(cls, bundle):
        return checkpoint_file(bundle) is not None

    def device_preprocessor(self):
        """Preprocessing that runs on this backend's device and hands ``infer`` tensors
        already there, in the model's precision (``appliance.device_preprocess``)."""
        from oncolens.appliance.device_preprocess import DevicePreprocessor
        return DevicePreprocessor(self.bundle.preprocess, self.bundle.input_shape,
                                  self.device, self.precision)

    def infer(self, batch):
        """``batch``: float32 NCHW numpy (host preprocessing) or a torch tensor (from
        ``device_preprocessor``, usually on the device already)."""
        torch = self.torch
        if torch.is_tensor(batch):
            x = batch.to(self.device)
        else:
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        x = x.half() if self.precision == "fp16" else x.float()
        with torch.no_grad():
            logits = self.model(x).float().cpu().numpy()
        return InferResult(softmax(logits).astype(np.float32), None)

    def describe(self):
        return "torch {} {} ({})".format(self.device, self.precision, os.path.basename(self.path))
