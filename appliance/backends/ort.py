"""ONNX Runtime backend: runs anywhere, CPU by default (CUDA provider when present)."""
import logging
import os

import numpy as np

from oncolens.appliance.backends.base import Backend, InferResult
from oncolens.appliance.bundle import CAM_OUTPUT_NAME, check_labels_match
from oncolens.appliance.errors import BundleError, MissingDependency

log = logging.getLogger(__name__)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, bundle, threads=None, providers=None, **options):
        super(OnnxRuntimeBackend, self).__init__(bundle, **options)
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependency("onnxruntime", "the onnxruntime backend",
                                    "pip install onnxruntime")
        path = self.path = self.model_file(bundle)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        available = ort.get_available_providers()
        chosen = [p for p in (providers or ["CUDAExecutionProvider", "CPUExecutionProvider"])
                  if p in available] or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError("{}: ONNX Runtime cannot load it ({})".format(
                path, str(exc).splitlines()[0]))
        self._check_io(path)
        self.providers = self.session.get_providers()

    @staticmethod
    def model_file(bundle):
        path = bundle.model_path or bundle.onnx_path
        if not path.endswith(".onnx"):
            path = bundle.onnx_path
        if not os.path.isfile(path):
            raise BundleError("ONNX model not found: {} (run 'oncolens export onnx' "
                              "first)".format(path))
        return path

    @classmethod
    def can_load(cls, bundle):
        path = bundle.model_path or bundle.onnx_path
        return path.endswith(".onnx") or os.path.isfile(bundle.onnx_path)

    def _check_io(self, path):
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        want_in, want_out = self.bundle.input_name, self.bundle.output_name
        if want_in not in inputs:
            raise BundleError("{} has no input named '{}' (it has: {}): pass --input-blob".format(
                path, want_in, ", ".join(inputs)))
        if want_out not in outputs:
            raise BundleError("{} has no output named '{}' (it has: {}): pass --output-blob".format(
                path, want_out, ", ".join(outputs)))
        shape = inputs[want_in].shape
        if len(shape) == 4 and all(isinstance(v, int) for v in shape[1:]):
            if self.bundle.inferred:  # no model.json: the model file says its input size
                self.bundle.info["input"]["shape"] = [int(v) for v in shape[1:]]
            elif tuple(shape[1:]) != tuple(self.bundle.input_shape):
                raise BundleError("{} takes input {} but model.json says {}".format(
                    path, list(shape[1:]), list(self.bundle.input_shape)))
        batch = shape[0] if shape else None
        self.max_batch = batch if isinstance(batch, int) else None
        width = outputs[want_out].shape[-1]
        check_labels_match(self.bundle.labels, width if isinstance(width, int) else None,
                           self.bundle.labels_source, path)
        self.output_names = [want_out]
        if CAM_OUTPUT_NAME in outputs:
            self.output_names.append(CAM_OUTPUT_NAME)

    def infer(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        n = batch.shape[0]
        if not self.max_batch or n == self.max_batch:
            outs = self.session.run(self.output_names, {self.bundle.input_name: batch})
            return self._finish(outs[0], outs[1] if len(outs) > 1 else None)
        # a fixed-batch export: run in chunks of its size, padding the last one
        size = self.max_batch
        probs, cams = [], []
        for start in range(0, n, size):
            chunk = batch[start:start + size]
            real = chunk.shape[0]
            if real < size:
                pad = np.zeros((size - real,) + chunk.shape[1:], dtype=np.float32)
                chunk = np.concatenate([chunk, pad])
            result = self.infer(chunk)
            probs.append(result.probs[:real])
            if result.cam is not None:
                cams.append(result.cam[:real])
        return InferResult(np.concatenate(probs), np.concatenate(cams) if cams else None)
