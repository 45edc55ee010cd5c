"""STAND-IN for TensorRT's runtime side -- NOT NVIDIA's code: the engine, execution
context and Runtime of tests/trt_standin.py (see there).  "Executing" an engine runs its
embedded ONNX with ONNX Runtime on the bytes at the device addresses it was given.
"""
import json

import numpy as np

import trt_standin
from trt_standin import MAGIC, DataType, TensorIOMode, _call, api


def _state():
    return trt_standin.STATE


class Runtime(object):
    def __init__(self, logger):
        _call("Runtime")
        self.DLA_core = -1

    def deserialize_cuda_engine(self, data):
        _call("Runtime.deserialize_cuda_engine")
        data = bytes(data)
        if not data.startswith(MAGIC):
            return None
        head, _, onnx_bytes = data[len(MAGIC):].partition(b"\n")
        header = json.loads(head.decode())
        if header["version"] != _state().version_text or header["device_name"] != _state().device_name:
            return None  # TensorRT refuses plans from another version or device
        return ICudaEngine(header, onnx_bytes)


class ICudaEngine(object):
    def __init__(self, header, onnx_bytes):
        import onnxruntime as ort
        self.header = header
        self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.names = [inp.name] + [o.name for o in self.session.get_outputs()]
        fix = lambda s: tuple(v if isinstance(v, int) else -1 for v in s)  # noqa: E731
        self.shapes = [fix(inp.shape)] + [fix(o.shape) for o in self.session.get_outputs()]

    # 8.x bindings (num_bindings: see below)
    @api(before=(10, 0, 0))
    def get_binding_name(self, i):
        return self.names[i]

    @api(before=(10, 0, 0))
    def binding_is_input(self, i):
        return i == 0

    @api(before=(10, 0, 0))
    def get_binding_shape(self, i):
        return self.shapes[i]

    @api(before=(10, 0, 0))
    def get_binding_dtype(self, i):
        return DataType.FLOAT

    @api(before=(10, 0, 0))
    def get_profile_shape(self, profile, i):
        return [tuple(s) for s in self.header["profile"]]

    # 8.5+ / 10.x named tensors
    @api(since=(8, 5, 0))
    def get_tensor_name(self, i):
        return self.names[i]

    @api(since=(8, 5, 0))
    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name == self.names[0] else TensorIOMode.OUTPUT

    @api(since=(8, 5, 0))
    def get_tensor_shape(self, name):
        return self.shapes[self.names.index(name)]

    @api(since=(8, 5, 0))
    def get_tensor_dtype(self, name):
        return DataType.FLOAT

    @api(since=(8, 5, 0))
    def get_tensor_profile_shape(self, name, profile):
        return [tuple(s) for s in self.header["profile"]]

    def create_execution_context(self):
        _call("ICudaEngine.create_execution_context")
        return IExecutionContext(self)


def _num_io(self):
    if _state().version < (8, 5, 0):
        raise AttributeError("stand-in tensorrt: no num_io_tensors before 8.5")
    _call("ICudaEngine.num_io_tensors")
    return len(self.names)


def _num_bindings(self):
    if _state().version >= (10, 0, 0):
        raise AttributeError("stand-in tensorrt 10: no num_bindings")
    _call("ICudaEngine.num_bindings")
    return len(self.names)


ICudaEngine.num_io_tensors = property(_num_io)
ICudaEngine.num_bindings = property(_num_bindings)


class IExecutionContext(object):
    def __init__(self, engine):
        self.engine = engine
        self.input_shape = engine.shapes[0]
        self.addresses = {}

    def _shape_of(self, i):
        shape = self.engine.shapes[i]
        return (self.input_shape[0],) + shape[1:] if shape[0] == -1 else shape

    def _set(self, shape):
        lo, _, hi = self.engine.header["profile"]
        if not all(a <= b <= c for a, b, c in zip(lo, shape, hi)):
            return False
        self.input_shape = tuple(shape)
        return True

    @api(before=(10, 0, 0))
    def set_binding_shape(self, i, shape):
        return self._set(shape)

    @api(before=(10, 0, 0))
    def get_binding_shape(self, i):
        return self._shape_of(i)

    @api(before=(10, 0, 0))
    def execute_v2(self, bindings):
        return self._run([int(b) for b in bindings])

    @api(since=(8, 5, 0))
    def set_input_shape(self, name, shape):
        return self._set(shape)

    @api(since=(8, 5, 0))
    def get_tensor_shape(self, name):
        return self._shape_of(self.engine.names.index(name))

    @api(since=(8, 5, 0))
    def set_tensor_address(self, name, address):
        self.addresses[name] = int(address)
        return True

    @api(since=(8, 5, 0))
    def execute_async_v3(self, stream_handle):
        return self._run([self.addresses[n] for n in self.engine.names])

    def _run(self, addresses):
        if not _state().ctx_stack:
            raise RuntimeError("stand-in: no current CUDA context")
        shape = self.input_shape
        x = np.frombuffer(bytes(_state().memory[addresses[0]][:int(np.prod(shape)) * 4]),
                          dtype=np.float32).reshape(shape)
        precision = self.engine.header["precision"]
        if precision == "fp16":
            x = x.astype(np.float16).astype(np.float32)
        elif precision == "int8":
            scale = np.abs(x).max() / 127.0 or 1.0
            x = (np.round(x / scale) * scale).astype(np.float32)
        outs = self.engine.session.run(None, {self.engine.names[0]: x})
        for addr, out in zip(addresses[1:], outs):
            out = out.astype(np.float16).astype(np.float32) if precision != "fp32" else out
            raw = np.ascontiguousarray(out, dtype=np.float32).tobytes()
            _state().memory[addr][:len(raw)] = raw
        return True
