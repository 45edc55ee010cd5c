"""STAND-IN for ``tensorrt`` and ``pycuda.driver`` -- NOT NVIDIA's TensorRT.

TensorRT cannot be installed on the machines these tests run on, so this module mimics
exactly the calls OncoLens makes (appliance/backends/trt_api.py, trt_build.py,
tensorrt.py, export/calibrate.py), gated by version the way the real API is (TensorRT
8.x: bindings, execute_v2, max_workspace_size before 8.4; 10.x: named tensors,
execute_async_v3, no build_engine), and records every call in ``STATE.calls``.

Its "engine" is the ONNX file plus a header; "executing" it runs ONNX Runtime on the
bytes found at the device addresses it was given (fp16 engines round through float16,
int8 engines quantise the input to 8 bits), so the code around it is exercised for real:
names, shapes, buffers, context push/pop, copies, batching and calibration.  Nothing here
says anything about real TensorRT numerics or speed.

Tests install it with ``install(monkeypatch, version=...)`` (sys.modules injection); the
pycuda.driver half is tests/pycuda_standin.py, the engine / runtime half
tests/trt_standin_runtime.py.
"""
import json
import sys
import types

import numpy as np

import pycuda_standin

MAGIC = b"TRT-STANDIN\n"


class State(object):
    def __init__(self, version, device_name, cc, fast_fp16, fast_int8):
        self.version = tuple(int(v) for v in version.split(".")[:3])
        self.version_text = version
        self.device_name = device_name
        self.cc = cc
        self.fast_fp16 = fast_fp16
        self.fast_int8 = fast_int8
        self.calls = []
        self.ctx_stack = []
        self.memory = {}          # address -> bytearray
        self.next_address = 0x10000
        self.builds = 0


STATE = None


def _call(name):
    STATE.calls.append(name)


def api(since=None, before=None):
    """A method that exists only in TensorRT versions [since, before)."""
    def deco(fn):
        def getter(self):
            v = STATE.version
            if (since and v < since) or (before and v >= before):
                raise AttributeError("stand-in tensorrt {}: '{}' has no attribute '{}'".format(
                    STATE.version_text, type(self).__name__, fn.__name__))
            _call("{}.{}".format(type(self).__name__, fn.__name__))
            return fn.__get__(self, type(self))
        return property(getter)
    return deco


class _Enum(object):
    def __init__(self, name, value):
        self.name, self.value = name, value

    def __int__(self):
        return self.value

    def __repr__(self):
        return self.name


def _enum(cls_name, names):
    return type(cls_name, (object,), {n: _Enum(n, i) for i, n in enumerate(names)})


# ---------------------------------------------------------------------------- tensorrt ---
class Logger(object):
    VERBOSE, INFO, WARNING, ERROR = 4, 3, 2, 1

    def __init__(self, severity=2):
        self.severity = severity


NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH"])
BuilderFlag = _enum("BuilderFlag", ["FP16", "INT8", "DEBUG", "GPU_FALLBACK"])
MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE"])
DeviceType = _enum("DeviceType", ["GPU", "DLA"])
TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
DataType = _enum("DataType", ["FLOAT", "HALF", "INT8", "INT32"])


def nptype(dtype):
    return {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32}[
        dtype.name]


class ITensor(object):
    def __init__(self, name, shape):
        self.name, self.shape = name, tuple(shape)


class INetworkDefinition(object):
    def __init__(self, flags):
        self.flags = flags
        self.inputs, self.outputs = [], []

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]


class OnnxParser(object):
    def __init__(self, network, logger):
        _call("OnnxParser")
        self.network, self.errors = network, []

    def parse(self, data):
        _call("OnnxParser.parse")
        import onnx
        try:
            model = onnx.load_from_string(bytes(data))
        except Exception as exc:  # noqa
            self.errors.append("stand-in parser: not an ONNX model ({})".format(exc))
            return False
        if model.opset_import[0].version > 13 and STATE.version < (8, 4, 0):
            self.errors.append("stand-in parser: opset {} > 13".format(
                model.opset_import[0].version))
            return False
        dims = lambda vi: tuple(d.dim_value if d.dim_value else -1  # noqa: E731
                                for d in vi.type.tensor_type.shape.dim)
        self.network.inputs = [ITensor(i.name, dims(i)) for i in model.graph.input]
        self.network.outputs = [ITensor(o.name, dims(o)) for o in model.graph.output]
        self.network.onnx = bytes(data)
        return True

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, i):
        return self.errors[i]


class IOptimizationProfile(object):
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's parameter names
        _call("IOptimizationProfile.set_shape")
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


class ITimingCache(object):
    def __init__(self, data):
        self.builds = int(data.split(b":")[1]) if data.startswith(b"STANDIN-TIMING:") else 0
        self.loaded = bool(data)

    def serialize(self):
        return b"STANDIN-TIMING:%d" % self.builds


class IBuilderConfig(object):
    def __init__(self):
        self.flags, self.profiles, self.pools = set(), [], {}
        self.int8_calibrator = None
        self.calibration_profile = None
        self.timing_cache = None
        self.default_device_type = DeviceType.GPU
        self.DLA_core = -1
        self._workspace = 0

    def set_flag(self, flag):
        _call("IBuilderConfig.set_flag:" + flag.name)
        self.flags.add(flag.name)

    def _ws_get(self):
        if STATE.version >= (10, 0, 0):
            raise AttributeError("stand-in tensorrt 10: no max_workspace_size")
        return self._workspace

    def _ws_set(self, value):
        self._ws_get()
        _call("IBuilderConfig.max_workspace_size")
        self._workspace = value

    max_workspace_size = property(_ws_get, _ws_set)

    @api(since=(8, 4, 0))
    def set_memory_pool_limit(self, pool, size):
        self.pools[pool.name] = size

    def add_optimization_profile(self, profile):
        _call("IBuilderConfig.add_optimization_profile")
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile):
        _call("IBuilderConfig.set_calibration_profile")
        self.calibration_profile = profile

    def create_timing_cache(self, data):
        _call("IBuilderConfig.create_timing_cache")
        return ITimingCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        _call("IBuilderConfig.set_timing_cache")
        self.timing_cache = cache
        return True

    def get_timing_cache(self):
        return self.timing_cache


class IInt8EntropyCalibrator2(object):
    def __init__(self):
        _call("IInt8EntropyCalibrator2.__init__")


class Builder(object):
    def __init__(self, logger):
        _call("Builder")
        self.platform_has_fast_fp16 = STATE.fast_fp16
        self.platform_has_fast_int8 = STATE.fast_int8

    def create_network(self, flags=0):
        _call("Builder.create_network")
        explicit = 1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        if STATE.version < (10, 0, 0) and not flags & explicit:
            raise RuntimeError("stand-in: ONNX networks need EXPLICIT_BATCH before TensorRT 10")
        return INetworkDefinition(flags)

    def create_builder_config(self):
        return IBuilderConfig()

    def create_optimization_profile(self):
        return IOptimizationProfile()

    @api(before=(10, 0, 0))
    def build_engine(self, network, config):
        raise AssertionError("OncoLens should build with build_serialized_network on 8.x")

    @api(since=(8, 0, 0))
    def build_serialized_network(self, network, config):
        inp = network.inputs[0]
        dynamic = inp.shape[0] == -1
        if dynamic and not config.profiles:
            return None  # TensorRT: dynamic input without an optimisation profile
        shapes = config.profiles[0].shapes[inp.name] if dynamic else (inp.shape,) * 3
        precision = "int8" if "INT8" in config.flags else "fp16" if "FP16" in config.flags \
            else "fp32"
        calib = _calibrate(config, inp) if precision == "int8" else None
        if config.timing_cache is not None:
            config.timing_cache.builds += 1
        STATE.builds += 1
        header = {"version": STATE.version_text, "device_name": STATE.device_name,
                  "precision": precision, "input": inp.name, "profile": shapes,
                  "outputs": [o.name for o in network.outputs], "calibration": calib,
                  "dla": config.DLA_core if config.default_device_type.name == "DLA" else None}
        return MAGIC + json.dumps(header).encode() + b"\n" + network.onnx


def _calibrate(config, inp):
    calib = config.int8_calibrator
    if calib is None:
        raise RuntimeError("stand-in: INT8 without a calibrator")
    cache = calib.read_calibration_cache()
    if cache:
        return {"from_cache": True, "batches": 0}
    size = calib.get_batch_size()
    shape = (size,) + tuple(inp.shape[1:])
    batches = 0
    while True:
        ptrs = calib.get_batch([inp.name])
        if not ptrs:
            break
        data = np.frombuffer(bytes(STATE.memory[int(ptrs[0])][:int(np.prod(shape)) * 4]),
                             dtype=np.float32)
        assert np.isfinite(data).all()
        batches += 1
    calib.write_calibration_cache(b"STANDIN-CALIBRATION batches=%d" % batches)
    return {"from_cache": False, "batches": batches, "batch_size": size}


TRT_NAMES = ["Logger", "NetworkDefinitionCreationFlag", "BuilderFlag", "MemoryPoolType",
             "DeviceType", "TensorIOMode", "DataType", "nptype", "OnnxParser", "Builder",
             "IInt8EntropyCalibrator2", "Runtime"]
CUDA_NAMES = ["init", "Device", "Context", "mem_alloc", "memcpy_htod", "memcpy_dtoh",
              "memcpy_htod_async", "memcpy_dtoh_async", "Stream"]


def install(monkeypatch, version="8.2.1.8", device_name="NVIDIA Tegra X1", cc=(5, 3),
            fast_fp16=True, fast_int8=False):
    """Put the stand-in in sys.modules as tensorrt / pycuda / pycuda.driver; returns STATE."""
    global STATE
    STATE = State(version, device_name, cc, fast_fp16, fast_int8)
    trt = types.ModuleType("tensorrt")
    trt.__doc__ = "OncoLens test STAND-IN for tensorrt (tests/trt_standin.py)"
    trt.__version__ = version
    import trt_standin_runtime
    for name in TRT_NAMES:
        setattr(trt, name, globals().get(name) or getattr(trt_standin_runtime, name))
    driver = types.ModuleType("pycuda.driver")
    for name in CUDA_NAMES:
        setattr(driver, name, getattr(pycuda_standin, name))
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = driver
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setitem(sys.modules, "pycuda.autoinit", None)  # importing it fails: never do
    return STATE


def switch(version=None, device_name=None):
    """Change the pretend TensorRT version or GPU (as after a JetPack upgrade)."""
    if version:
        STATE.version = tuple(int(v) for v in version.split(".")[:3])
        STATE.version_text = version
        sys.modules["tensorrt"].__version__ = version
    if device_name:
        STATE.device_name = device_name
