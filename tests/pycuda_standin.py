"""STAND-IN for ``pycuda.driver`` -- NOT pycuda: the half of tests/trt_standin.py that
mimics the CUDA calls OncoLens makes (contexts, allocations, copies, streams).  "Device
memory" is a bytearray per allocation, found again by its fake address; every call is
recorded in ``trt_standin.STATE.calls`` and copies without a current context fail, as
they would on a real GPU.
"""
import numpy as np


def _state():
    import trt_standin
    return trt_standin.STATE


def _call(name):
    _state().calls.append(name)


class Context(object):
    def __init__(self, device):
        self.device = device
        self.alive = True

    def push(self):
        _call("Context.push")
        _state().ctx_stack.append(self)

    def pop(self):
        _call("Context.pop")
        if not _state().ctx_stack or _state().ctx_stack[-1] is not self:
            raise RuntimeError("stand-in pycuda: popping a context that is not current")
        _state().ctx_stack.pop()

    def detach(self):
        _call("Context.detach")
        self.alive = False


class Device(object):
    @staticmethod
    def count():
        return 1

    def __init__(self, index):
        self.index = index

    def name(self):
        return _state().device_name

    def compute_capability(self):
        return _state().cc

    def total_memory(self):
        return 4 << 30

    def make_context(self):
        _call("Device.make_context")
        ctx = Context(self)
        _state().ctx_stack.append(ctx)
        return ctx


class DeviceAllocation(object):
    def __init__(self, nbytes):
        self.address = _state().next_address
        _state().next_address += max(256, int(nbytes) + 256)
        _state().memory[self.address] = bytearray(int(nbytes))

    def __int__(self):
        return self.address

    def free(self):
        _call("DeviceAllocation.free")
        _state().memory.pop(self.address, None)


class Stream(object):
    handle = 0xABC

    def synchronize(self):
        _call("Stream.synchronize")


def _need_ctx(what):
    _call(what)
    if not _state().ctx_stack:
        raise RuntimeError("stand-in pycuda: {} without a current context".format(what))


def init():
    _call("cuda.init")


def mem_alloc(nbytes):
    _need_ctx("cuda.mem_alloc")
    return DeviceAllocation(nbytes)


def memcpy_htod(dest, src):
    _need_ctx("cuda.memcpy_htod")
    raw = np.ascontiguousarray(src).tobytes()
    _state().memory[int(dest)][:len(raw)] = raw


def memcpy_dtoh(dest, src):
    _need_ctx("cuda.memcpy_dtoh")
    raw = bytes(_state().memory[int(src)][:dest.nbytes])
    dest[...] = np.frombuffer(raw, dtype=dest.dtype).reshape(dest.shape)


def memcpy_htod_async(dest, src, stream=None):
    memcpy_htod(dest, src)


def memcpy_dtoh_async(dest, src, stream=None):
    memcpy_dtoh(dest, src)
