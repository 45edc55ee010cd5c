"""TensorRT backend: runs a serialized engine on the GPU (Jetson or desktop NVIDIA).

One code path for TensorRT 8.0-8.6 (bindings, execute_v2) and 10.x (named tensors,
set_tensor_address, execute_async_v3), chosen by version in trt_api.TrtApi.  Memory and
the CUDA context come from pycuda (no pycuda.autoinit).

Options: ``precision`` (fp16/fp32/int8; default: the best engine there is, else fp16 where
fast), ``max_batch`` (default 1 for a new build), ``allow_rebuild``: None (default) builds
an engine when there is none and refuses one built by another TensorRT or GPU; True also
rebuilds those; False never builds.
"""
import logging
import os

import numpy as np

from oncolens.appliance import engines
from oncolens.appliance.backends.base import Backend, InferResult
from oncolens.appliance.bundle import CAM_OUTPUT_NAME, check_labels_match
from oncolens.appliance.errors import BundleError, OncoLensError

log = logging.getLogger(__name__)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, bundle, precision=None, max_batch=None, allow_rebuild=None, device=0,
                 **options):
        super(TensorRTBackend, self).__init__(bundle, **options)
        from oncolens.appliance.backends.trt_api import (CudaContext, TrtApi, import_cuda,
                                                         import_tensorrt)
        self.trt = import_tensorrt()
        self.cuda = import_cuda()
        self.api = TrtApi(self.trt)
        self.ctx = CudaContext(self.cuda, int(device or 0))
        self._buffers = []
        self.engine = self.context = self.runtime = None
        try:
            with self.ctx:
                self.device = self.ctx.info()
                path, entry = self._resolve(precision, max_batch, allow_rebuild)
                self._load(path, entry, max_batch)
        except Exception:
            self.close()
            raise

    @classmethod
    def can_load(cls, bundle):
        path = bundle.model_path or ""
        if path.endswith(engines.ENGINE_SUFFIXES):
            return True
        return os.path.isfile(bundle.onnx_path)

    # -- which engine ---------------------------------------------------------------------
    def _resolve(self, precision, max_batch, allow_rebuild):
        bundle, api = self.bundle, self.api
        path = bundle.model_path or ""
        if path.endswith(engines.ENGINE_SUFFIXES):
            return self._resolve_file(path, precision, max_batch, allow_rebuild)
        entries = engines.known_entries(bundle.info, bundle.dir, bundle.onnx_path)
        entry, stale = engines.pick_fresh(entries, bundle.dir, bundle.onnx_check(),
                                          api.version, self.device["name"], precision,
                                          max_batch)
        if entry:
            return engines.entry_path(entry, bundle.dir), entry
        if stale:  # built from an ONNX since replaced: as 'export engine', built again
            old, why = stale
            if allow_rebuild is False:
                raise engines.EngineMismatch("{}: rebuild it with 'oncolens export engine "
                                             "--model-dir {}'".format(why, bundle.dir))
            log.warning("%s; taking an engine built from the current one, built now if "
                        "there is none", why)
            want = precision or old.get("precision")
            return self._build(None if want == "int8" else want,
                               max_batch or old.get("max_batch") or 1,
                               said=engines.entry_path(old, bundle.dir))
        existing = [e for e in entries if os.path.isfile(engines.entry_path(e, bundle.dir))]
        stale = [e for e in existing if int(e.get("tensorrt_code", -1)) != api.code
                 or e.get("device_name") not in (None, self.device["name"])]
        # only engines from another TensorRT / GPU: say so rather than rebuild unasked
        only_stale = stale and len(stale) == len(existing)
        if allow_rebuild is False or (only_stale and allow_rebuild is not True):
            raise engines.EngineMismatch(self._no_engine_message(stale, precision))
        return self._build(precision, max_batch or 1)

    def _resolve_file(self, path, precision, max_batch, allow_rebuild):
        """An engine file named by --model: refused (or with allow_rebuild, built again) when
        its entry says another TensorRT, GPU or ONNX than the folder's made it."""
        bundle = self.bundle
        entry = engines.entry_for_file(bundle.info, bundle.dir, path, bundle.onnx_path)
        try:
            engines.check_compatible(path, entry, self.api.version, self.device["name"])
            why = entry and bundle.onnx_check().stale_reason(entry, path)
            if why:
                raise engines.EngineMismatch("{}: rebuild it with 'oncolens export engine' (or "
                                             "allow_rebuild)".format(why))
            return path, entry
        except engines.EngineMismatch as exc:
            if allow_rebuild is not True:
                raise
            log.warning("%s; rebuilding from the ONNX (allow_rebuild)", exc)
            want = precision or (entry or engines.parse_engine_name(path) or {}).get(
                "precision")
            batch = max_batch or (entry or {}).get("max_batch") or 1
            return self._build(want, batch, said=path)

    def _no_engine_message(self, stale, precision):
        here = "TensorRT {} on '{}'".format(self.api.version_text, self.device["name"])
        if stale:
            built = ", ".join("{} (TensorRT {}, '{}', {})".format(
                os.path.basename(e["file"]), e.get("tensorrt"), e.get("device_name"),
                e.get("precision")) for e in stale)
            return ("{}: its engines were built elsewhere: {}; none for {}: run 'oncolens "
                    "export engine --model-dir {}' or allow rebuilding".format(
                        self.bundle.dir, built, here, self.bundle.dir))
        return "{}: no {}engine for {}: run 'oncolens export engine --model-dir {}'".format(
            self.bundle.dir, (precision + " ") if precision else "", here, self.bundle.dir)

    def _build(self, precision, max_batch, said=None):
        """build_for_bundle; ``said``: the engine file whose replacement was warned of."""
        from oncolens.appliance.backends.trt_build import BuildOptions, build_for_bundle
        options = BuildOptions(precision or "auto", max_batch, max_batch)
        if options.precision == "int8":
            raise OncoLensError("{}: an INT8 engine needs calibration: build it with 'oncolens "
                                "export engine --precision int8 --calib-images DIR'".format(
                                    self.bundle.dir))
        path, entry, _ = build_for_bundle(self.bundle, self.api, self.device, options,
                                          said=said)
        return path, entry

    # -- loading --------------------------------------------------------------------------
    def _load(self, path, entry, max_batch):
        trt, api = self.trt, self.api
        fields = entry or engines.parse_engine_name(path) or {}
        self.logger = api.logger()   # TensorRT wants its logger to outlive the runtime
        runtime = trt.Runtime(self.logger)
        if str(fields.get("device", "GPU")).startswith("DLA_"):
            runtime.DLA_core = int(fields["device"].split("_")[1])
        with open(path, "rb") as fh:
            self.engine = runtime.deserialize_cuda_engine(fh.read())
        if self.engine is None:
            raise engines.EngineMismatch(
                "{}: TensorRT {} cannot deserialize it (built by another TensorRT version or "
                "for another GPU?): rebuild it with 'oncolens export engine'".format(
                    path, api.version_text))
        self.runtime = runtime
        self.engine_path = path
        self.precision = fields.get("precision", "fp32")
        self.context = self.engine.create_execution_context()
        self._bind(path, max_batch)

    def _tensor(self, tensors, name, what, path, flag):
        for t in tensors:
            if t.name == name:
                return t
        raise BundleError("{} has no {} named '{}' (it has: {}): pass --{}".format(
            path, what, name, ", ".join(t.name for t in tensors), flag))

    def _bind(self, path, max_batch):
        api, bundle = self.api, self.bundle
        io = api.io_tensors(self.engine)
        self.input = self._tensor([t for t in io if t.is_input], bundle.input_name, "input",
                                  path, "input-blob")
        outputs = [t for t in io if not t.is_input]
        self.output = self._tensor(outputs, bundle.output_name, "output", path, "output-blob")
        self.cam = next((t for t in outputs if t.name == CAM_OUTPUT_NAME), None)
        self.dynamic = self.input.shape[0] == -1
        limit = api.profile_max_shape(self.engine, self.input)[0] if self.dynamic \
            else self.input.shape[0]
        if max_batch and int(max_batch) > limit:
            raise BundleError("{} takes batches of at most {}, asked for {}: rebuild it with "
                              "--max-batch {}".format(path, limit, max_batch, max_batch))
        self.max_batch = int(limit)
        chw = tuple(self.input.shape[1:])
        if bundle.inferred:   # no model.json: the engine says its input size
            bundle.info["input"]["shape"] = [int(v) for v in chw]
        elif chw != tuple(bundle.input_shape):
            raise BundleError("{} takes input {} but model.json says {}".format(
                path, list(chw), list(bundle.input_shape)))
        if self.dynamic:
            api.set_input_shape(self.context, self.input, (self.max_batch,) + chw)
        self._allocate(chw)
        check_labels_match(bundle.labels, self.out_shapes[0][-1], bundle.labels_source, path)

    def _allocate(self, chw):
        cuda, api = self.cuda, self.api
        self.out_tensors = [self.output] + ([self.cam] if self.cam is not None else [])
        self.out_shapes = [api.context_shape(self.context, t) for t in self.out_tensors]
        self.d_input = cuda.mem_alloc(int(np.prod((self.max_batch,) + chw)) * 4)
        self.d_outputs = [cuda.mem_alloc(int(np.prod(s)) * t.dtype.itemsize)
                          for s, t in zip(self.out_shapes, self.out_tensors)]
        self._buffers = [self.d_input] + self.d_outputs
        self.stream = cuda.Stream()

    # -- running --------------------------------------------------------------------------
    def _run_chunk(self, chunk):
        n = chunk.shape[0]
        rows = n if self.dynamic else self.max_batch
        if n < rows:  # a fixed-batch engine: pad the last chunk
            pad = np.zeros((rows - n,) + chunk.shape[1:], dtype=np.float32)
            chunk = np.concatenate([chunk, pad])
        if self.dynamic:
            self.api.set_input_shape(self.context, self.input, chunk.shape)
        outs = [np.empty((rows,) + tuple(s[1:]), dtype=t.dtype)
                for s, t in zip(self.out_shapes, self.out_tensors)]
        self.api.execute(self.context, self.cuda, self.stream,
                         [(self.input, self.d_input, np.ascontiguousarray(chunk))],
                         list(zip(self.out_tensors, self.d_outputs, outs)),
                         self.api.num_bindings(self.engine))
        return [o[:n].astype(np.float32) for o in outs]

    def infer(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        probs, cams = [], []
        with self.ctx:
            for start in range(0, batch.shape[0], self.max_batch):
                outs = self._run_chunk(batch[start:start + self.max_batch])
                probs.append(outs[0])
                if len(outs) > 1:
                    cams.append(outs[1])
        result = self._finish(np.concatenate(probs))
        return InferResult(result.probs, np.concatenate(cams) if cams else None)

    def describe(self):
        return "tensorrt {} {} ({}, batch <= {})".format(
            self.api.version_text, self.precision, self.device["name"], self.max_batch)

    def close(self):
        ctx = getattr(self, "ctx", None)
        if ctx is None or ctx.context is None:
            return
        with ctx:
            for buf in self._buffers:
                buf.free()
            self._buffers = []
            self.context = self.engine = self.runtime = None
        ctx.close()
