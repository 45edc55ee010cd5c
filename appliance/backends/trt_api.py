"""TensorRT and pycuda behind one small layer, for TensorRT 8.0-8.6 and 10.x.

The two APIs differ (the TensorRT 8.x -> 10.x migration guide lists it):

- 8.x: I/O by binding index (``num_bindings``, ``get_binding_name``, ``binding_is_input``,
  ``get_binding_shape``, ``set_binding_shape``), ``execute_v2(bindings)``, dynamic batch
  limits from ``get_profile_shape``; workspace by ``max_workspace_size`` before 8.4 and
  ``set_memory_pool_limit`` from 8.4; networks need the EXPLICIT_BATCH flag.
- 10.x: named tensors (``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``,
  ``get_tensor_shape``, ``set_input_shape``, ``set_tensor_address``),
  ``execute_async_v3(stream)``, ``get_tensor_profile_shape``; explicit batch is the only
  mode; no ``build_engine``, no ``max_workspace_size``.

``TrtApi`` picks one by ``tensorrt.__version__``.  CUDA memory and contexts come from
pycuda; ``pycuda.autoinit`` is never imported: ``CudaContext`` makes a context on the
chosen device, pops it at once, and pushes/pops it around each use.
"""
import collections
import logging

import numpy as np

from oncolens.appliance.engines import version_code, version_tuple
from oncolens.appliance.errors import MissingDependency, OncoLensError

log = logging.getLogger(__name__)

IoTensor = collections.namedtuple("IoTensor", ["name", "index", "is_input", "shape", "dtype"])

TRT_HINT = ("JetPack ships it on a Jetson (python3-libnvinfer); on an x86 GPU host "
            "'pip install tensorrt' from NVIDIA's index")


def import_tensorrt(feature="the tensorrt backend"):
    try:
        import tensorrt
    except ImportError:
        raise MissingDependency("tensorrt", feature, TRT_HINT)
    return tensorrt


def import_cuda(feature="the tensorrt backend"):
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise MissingDependency("pycuda", feature, "pip install pycuda (needs the CUDA toolkit)")
    return cuda


class CudaContext(object):
    """A CUDA context on one device, made explicitly (no pycuda.autoinit).

    ``with ctx:`` makes it current for the block; ``close()`` releases it.
    """

    def __init__(self, cuda, device_index=0):
        self.cuda = cuda
        cuda.init()
        if device_index >= cuda.Device.count():
            raise OncoLensError("CUDA device {} not found ({} present)".format(
                device_index, cuda.Device.count()))
        self.device = cuda.Device(int(device_index))
        self.context = self.device.make_context()   # made current ...
        self.context.pop()                          # ... and popped: pushed on use only
        self.depth = 0

    def __enter__(self):
        self.context.push()
        self.depth += 1
        return self

    def __exit__(self, *exc):
        self.depth -= 1
        self.context.pop()

    def info(self):
        cc = self.device.compute_capability()
        return {"name": self.device.name(), "compute_capability": [int(cc[0]), int(cc[1])],
                "total_memory": int(self.device.total_memory())}

    def close(self):
        if self.context is not None:
            self.context.detach()
            self.context = None


class TrtApi(object):
    """The version-dependent TensorRT calls, chosen once by version."""

    def __init__(self, trt):
        self.trt = trt
        self.version = version_tuple(trt.__version__)
        self.code = version_code(self.version)
        if self.version[0] < 8:
            raise MissingDependency("tensorrt>=8.0", "OncoLens engines",
                                    "this is TensorRT {}".format(trt.__version__))
        self.named_tensors = self.version[0] >= 10
        if self.version[0] > 10:
            log.warning("TensorRT %s is newer than the 8.x / 10.x OncoLens was written for",
                        trt.__version__)

    @property
    def version_text(self):
        return ".".join(str(v) for v in self.version)

    def logger(self, verbose=False):
        return self.trt.Logger(self.trt.Logger.VERBOSE if verbose else self.trt.Logger.WARNING)

    # -- building -------------------------------------------------------------------------
    def network_flags(self):
        if self.named_tensors:
            return 0  # explicit batch is the only mode (the flag is deprecated)
        return 1 << int(self.trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)

    def set_workspace(self, config, nbytes):
        if self.version >= (8, 4, 0):
            config.set_memory_pool_limit(self.trt.MemoryPoolType.WORKSPACE, int(nbytes))
        else:
            config.max_workspace_size = int(nbytes)

    def build_serialized(self, builder, network, config):
        """Serialized engine bytes, or None when the build failed."""
        if hasattr(builder, "build_serialized_network"):   # 8.0 and later
            plan = builder.build_serialized_network(network, config)
        else:                                              # older: build_engine
            engine = builder.build_engine(network, config)
            plan = engine.serialize() if engine is not None else None
        return None if plan is None else bytes(plan)

    # -- running --------------------------------------------------------------------------
    def io_tensors(self, engine):
        trt = self.trt
        found = []
        if self.named_tensors:
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                found.append(IoTensor(name, i, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                                      tuple(engine.get_tensor_shape(name)),
                                      np.dtype(trt.nptype(engine.get_tensor_dtype(name)))))
        else:
            for i in range(engine.num_bindings):
                found.append(IoTensor(engine.get_binding_name(i), i, engine.binding_is_input(i),
                                      tuple(engine.get_binding_shape(i)),
                                      np.dtype(trt.nptype(engine.get_binding_dtype(i)))))
        return found

    def profile_max_shape(self, engine, tensor, profile=0):
        if self.named_tensors:
            return tuple(engine.get_tensor_profile_shape(tensor.name, profile)[2])
        return tuple(engine.get_profile_shape(profile, tensor.index)[2])

    def set_input_shape(self, context, tensor, shape):
        if self.named_tensors:
            ok = context.set_input_shape(tensor.name, tuple(shape))
        else:
            ok = context.set_binding_shape(tensor.index, tuple(shape))
        if ok is False:
            raise OncoLensError("TensorRT refused input shape {} for '{}'".format(
                tuple(shape), tensor.name))

    def context_shape(self, context, tensor):
        if self.named_tensors:
            return tuple(context.get_tensor_shape(tensor.name))
        return tuple(context.get_binding_shape(tensor.index))

    def execute(self, context, cuda, stream, inputs, outputs, num_bindings):
        """Copy ``inputs`` in, run, copy ``outputs`` back.

        ``inputs`` / ``outputs``: lists of (IoTensor, device allocation, host array).
        """
        if self.named_tensors:
            for tensor, dev, _ in inputs + outputs:
                context.set_tensor_address(tensor.name, int(dev))
            for _, dev, host in inputs:
                cuda.memcpy_htod_async(dev, host, stream)
            ok = context.execute_async_v3(stream.handle)
            for _, dev, host in outputs:
                cuda.memcpy_dtoh_async(host, dev, stream)
            stream.synchronize()
        else:
            bindings = [0] * int(num_bindings)
            for tensor, dev, _ in inputs + outputs:
                bindings[tensor.index] = int(dev)
            for _, dev, host in inputs:
                cuda.memcpy_htod(dev, host)
            ok = context.execute_v2(bindings)
            for _, dev, host in outputs:
                cuda.memcpy_dtoh(host, dev)
        if ok is False:
            raise OncoLensError("TensorRT {} failed to run the engine".format(self.version_text))

    def num_bindings(self, engine):
        return engine.num_io_tensors if self.named_tensors else engine.num_bindings
