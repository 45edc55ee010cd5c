"""OpenVINO backend (CPU): reads the bundle's ONNX directly, one compiled model a batch size.

OpenVINO runs an int8 QDQ ONNX (variants.quantize_int8) with int8 kernels, so the same
quantised file serves this backend and ONNX Runtime.  It computes in fp32 unless
``precision="bf16"`` is asked for (see ``precision_config``).
"""
import logging
import os
import threading

import numpy as np

from oncolens.appliance.backends.base import Backend
from oncolens.appliance.bundle import check_labels_match
from oncolens.appliance.errors import BundleError, MissingDependency, UsageError

log = logging.getLogger(__name__)


def import_openvino():
    """The OpenVINO API module (``openvino`` since 2023.1, ``openvino.runtime`` before), or
    None when OpenVINO is not installed."""
    try:
        import openvino as ov
        if hasattr(ov, "Core"):
            return ov
        import openvino.runtime as ov_runtime
        return ov_runtime
    except ImportError:
        return None


_CORE = []
_CORE_LOCK = threading.Lock()


def shared_core(ov):
    """The process's one OpenVINO Core, kept until the process exits: every backend and
    bench's ceiling compile through it.

    OpenVINO's CPU plugin (2025 and later) points the thread that compiles a model at an
    alternate signal stack of its own and takes it back, unmapping it, when its Core is
    freed. Two Cores freed out of order, or one freed in another thread, left a thread's
    alternate signal stack pointing at unmapped memory, and the next signal handled there
    (Ctrl-C, SIGTERM, SIGCHLD) killed the process with SIGSEGV instead of running its
    handler (tests/test_openvino_signal_stack.py). One Core, never freed, never does."""
    with _CORE_LOCK:
        if not _CORE:
            _CORE.append(ov.Core())
        return _CORE[0]


def precision_config(core, precision, device="CPU"):
    """The compile setting that makes OpenVINO compute in ``precision``.

    OpenVINO's CPU plugin silently computes an fp32 model in bf16 on CPUs with AVX512-BF16 or
    AMX; here fp32 (and the fp32 parts of an int8 model) stay fp32 unless bf16 is asked for,
    and bf16 is refused where the CPU would only emulate it.
    """
    if precision != "bf16":
        return {"INFERENCE_PRECISION_HINT": "f32"}
    capabilities = core.get_property(device, "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in [str(c).upper() for c in capabilities]:
        raise UsageError("--precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); "
                         "use fp32 or int8")
    return {"INFERENCE_PRECISION_HINT": "bf16"}


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, bundle, threads=None, device="CPU", hint="auto", precision=None,
                 **options):
        super(OpenVinoBackend, self).__init__(bundle, **options)
        ov = import_openvino()
        if ov is None:
            raise MissingDependency("openvino", "the openvino backend",
                                    "pip install 'oncolens[openvino]'")
        self.ov = ov
        path = bundle.model_path or bundle.onnx_path
        if not path.endswith(".onnx"):
            path = bundle.onnx_path
        if not os.path.isfile(path):
            raise BundleError("ONNX model not found: {} (run 'oncolens export onnx' "
                              "first)".format(path))
        self.core = shared_core(ov)
        try:
            self.model = self.core.read_model(path)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise BundleError("{}: OpenVINO cannot read it ({})".format(
                path, str(exc).strip().splitlines()[0]))
        self.path = path
        self.device = device
        self.hint = hint
        self.config = precision_config(self.core, precision, device)
        if precision == "bf16":
            self.precision = "bf16"
        elif any(op.get_type_name() in ("FakeQuantize", "QuantizeLinear")
                 for op in self.model.get_ops()):
            self.precision = "int8"  # a quantised file (variants.quantize_int8)
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self._check_io()
        self.compiled = {}

    @classmethod
    def can_load(cls, bundle):
        path = bundle.model_path or bundle.onnx_path
        return path.endswith(".onnx") or os.path.isfile(bundle.onnx_path)

    def _check_io(self):
        names = [set(p.get_names()) for p in self.model.inputs]
        if not any(self.bundle.input_name in n for n in names):
            raise BundleError("{} has no input named '{}': pass --input-blob".format(
                self.path, self.bundle.input_name))
        outs = [o for o in self.model.outputs if self.bundle.output_name in o.get_names()]
        if not outs:
            raise BundleError("{} has no output named '{}': pass --output-blob".format(
                self.path, self.bundle.output_name))
        width = outs[0].get_partial_shape()[-1]
        check_labels_match(self.bundle.labels, width.get_length() if width.is_static else None,
                           self.bundle.labels_source, self.path)

    def _compiled(self, n, hint):
        """(compiled model, its infer requests) for batch ``n`` under ``hint``."""
        key = (n, hint)
        if key not in self.compiled:
            model = self.model.clone()
            c, h, w = self.bundle.input_shape
            model.reshape({self.bundle.input_name: [n, c, h, w]})
            config = dict(self.config, PERFORMANCE_HINT=hint)
            compiled = self.core.compile_model(model, self.device, config)
            count = 1
            if hint == "THROUGHPUT":
                count = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            self.compiled[key] = (compiled, [compiled.create_infer_request()
                                             for _ in range(count)])
            log.debug("openvino: compiled %s for batch %d (%s, %d requests)", self.path, n,
                      hint, count)
        return self.compiled[key]

    def infer(self, batch):
        """Batch 1 (or hint LATENCY): one request on every core.  Larger batches (hint auto or
        THROUGHPUT): split across the CPU streams OpenVINO chooses, run asynchronously."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        n = batch.shape[0]
        if n == 1 or self.hint == "LATENCY":
            compiled, (request,) = self._compiled(n, "LATENCY")
            request.infer({self.bundle.input_name: batch})
            out = request.get_tensor(compiled.output(self.bundle.output_name)).data
            return self._finish(np.array(out, copy=True))
        streams = len(self._compiled(1, "THROUGHPUT")[1])
        chunk = -(-n // streams)
        if chunk * streams != n:  # pad to equal chunks: one compiled shape serves them all
            pad = np.zeros((chunk * streams - n,) + batch.shape[1:], dtype=np.float32)
            batch = np.concatenate([batch, pad])
        compiled, requests = self._compiled(chunk, "THROUGHPUT")
        for k, request in enumerate(requests[:streams]):
            request.start_async({self.bundle.input_name: batch[k * chunk:(k + 1) * chunk]})
        outs = []
        for request in requests[:streams]:
            request.wait()
            outs.append(np.array(request.get_tensor(
                compiled.output(self.bundle.output_name)).data, copy=True))
        return self._finish(np.concatenate(outs)[:n])

    def describe(self):
        return "openvino {} {} {}".format(self.device, self.precision,
                                          getattr(self.ov, "__version__", ""))

    def close(self):
        self.compiled = {}
