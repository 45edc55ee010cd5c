"""Small helpers for ``oncolens bench``: percentiles, stage shares, the machine's description."""
import os
import platform

import numpy as np

STAGES = ("decode", "preprocess", "inference", "postprocess")


def latency_ms(seconds):
    """p50 / p90 / p99 / mean of a list of durations in seconds, in milliseconds."""
    arr = np.asarray(seconds, dtype=np.float64) * 1000.0
    if arr.size == 0:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3),
            "p99": round(float(p99), 3), "mean": round(float(arr.mean()), 3)}


def shares(stage_seconds):
    """Each stage's share of the summed time of decode, preprocess, inference, postprocess."""
    total = float(sum(stage_seconds))
    return dict((name, round(s / total, 4) if total else 0.0)
                for name, s in zip(STAGES, stage_seconds))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except (IOError, OSError):
        pass
    return platform.processor() or platform.machine()


def cpu_flags():
    """The SIMD features that decide int8/bf16 speed (avx2, avx512*, vnni, amx)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx", "amx", "fma"))
                                  or "vnni" in f)
    except (IOError, OSError):
        pass
    return []


def versions():
    found = {}
    for name in ("onnxruntime", "openvino", "torch", "torchvision", "cv2", "numpy", "PIL"):
        try:
            module = __import__(name)
            found[name] = getattr(module, "__version__", "?")
        except ImportError:
            continue
    return found


def machine_info():
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "simd": cpu_flags(),
            "platform": platform.platform(), "python": platform.python_version(),
            "versions": versions()}


def gpu_info(device):
    """The CUDA GPU a run on ``device`` (cuda or cuda:N) used: its name and torch's CUDA
    version, so a GPU's figures do not go out under the CPU's name alone; None on the CPU."""
    if not str(device or "cpu").startswith("cuda"):
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    index = str(device).partition(":")[2]
    index = int(index) if index.isdigit() else torch.cuda.current_device()
    return {"device": "cuda:{}".format(index), "name": torch.cuda.get_device_name(index),
            "cuda": torch.version.cuda}


def loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None
