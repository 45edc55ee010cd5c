"""Preprocessing on the inference device (a CUDA GPU, or the CPU for tests) with torch.

The decoded uint8 frame is copied to the device as it is (a 1280x720 camera frame is 2.7 MB,
a quarter of its float tensor), and the resize, centre crop, normalisation and cast to the
model's precision run there, so the host's cores only decode.  The geometry is
``appliance.preprocess.resize_geometry``, the same function the OpenCV path uses;
shrinking uses torch's anti-aliased bilinear filter (OpenCV's area filter on the CPU: on BUSI
images the two differ by about one grey level on average), enlarging plain bilinear, as
OpenCV does.  CLAHE, when the model has it, runs on the host first (OpenCV only).

Where OpenCV's area filter enlarges a side (a stretch of a 12x600 strip to 33x33 shrinks the
whole image but grows its height), it samples instead of averaging, by a rule torch has no
filter for (anti-aliased bilinear was tens of grey levels away): such a frame is resized and
cropped on the host by the OpenCV path itself (``preprocess.resize_to_input``) and only the
crop is copied to the device.  An image the host path refuses as too elongated
(``preprocess.check_resized_size``) is refused here too, before anything is made of it.

torch is imported when a DevicePreprocessor is made, never when this module is imported.
"""
import logging

import numpy as np

from oncolens.appliance.errors import MissingDependency, UsageError
from oncolens.appliance.preprocess import (IMAGENET_MEAN, IMAGENET_STD, check_resized_size,
                                           clahe_if_asked, resize_geometry, resize_to_input,
                                           shrinks)

log = logging.getLogger(__name__)

DTYPES = {"fp32": "float32", "fp16": "float16"}


def _torch():
    try:
        import torch
        import torch.nn.functional as functional
    except ImportError:
        raise MissingDependency("torch", "preprocessing on the device",
                                "pip install 'oncolens[train]' (or use CPU preprocessing)")
    return torch, functional


def _has_antialias(functional, torch):
    """torch >= 1.11 has anti-aliased bilinear; the Nano's torch 1.10 does not."""
    try:
        functional.interpolate(torch.zeros(1, 1, 4, 4), size=(2, 2), mode="bilinear",
                               align_corners=False, antialias=True)
        return True
    except TypeError:
        return False


def area_enlarges(spec, src_hw, new_hw):
    """Whether OpenCV resizes ``src_hw`` to ``new_hw`` with its area filter while a side
    grows: it then samples by a rule of its own, which no torch filter reproduces."""
    return shrinks(spec, src_hw, new_hw) and (new_hw[0] > src_hw[0] or new_hw[1] > src_hw[1])


class DevicePreprocessor(object):
    """Callable: RGB uint8 HxWx3 (numpy) -> the model's 3xHxW input as a torch tensor on
    ``device``, in ``precision`` (fp32 or fp16).  ``batch(images)`` stacks them."""

    def __init__(self, spec, input_shape, device="cuda", precision="fp32"):
        torch, functional = _torch()
        if precision not in DTYPES:
            raise UsageError("device preprocessing: precision must be one of {}, got {!r}"
                             .format(", ".join(sorted(DTYPES)), precision))
        self.torch, self.F = torch, functional
        self.spec = dict(spec)
        self.channels, self.height, self.width = [int(v) for v in input_shape]
        self.device = torch.device(device)
        self.dtype = getattr(torch, DTYPES[precision])
        mean = np.asarray(self.spec.get("mean", IMAGENET_MEAN), dtype=np.float32) * 255.0
        std = np.asarray(self.spec.get("std", IMAGENET_STD), dtype=np.float32) * 255.0
        self.offset = torch.from_numpy(mean).view(3, 1, 1).to(self.device)
        self.scale = torch.from_numpy(1.0 / std).view(3, 1, 1).to(self.device)
        self.antialias = _has_antialias(functional, torch)
        if not self.antialias:
            log.info("device preprocessing: torch %s has no anti-aliased resize; shrinking "
                     "with area averaging", torch.__version__)

    def _resize(self, x, src_hw, new_hw):
        if tuple(new_hw) == tuple(src_hw):
            return x
        if shrinks(self.spec, src_hw, new_hw):
            if self.antialias:
                return self.F.interpolate(x, size=new_hw, mode="bilinear", align_corners=False,
                                          antialias=True)
            return self.F.interpolate(x, size=new_hw, mode="area")
        return self.F.interpolate(x, size=new_hw, mode="bilinear", align_corners=False)

    def _upload(self, rgb):
        """uint8 HxWx3 (numpy) -> float 1x3xHxW on the device."""
        frame = self.torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device)
        return frame.permute(2, 0, 1).unsqueeze(0).float()

    def __call__(self, rgb):
        src_hw = rgb.shape[:2]
        new_hw = resize_geometry(self.spec, src_hw, (self.height, self.width))
        check_resized_size(src_hw, new_hw[:2])
        if area_enlarges(self.spec, src_hw, new_hw[:2]):
            x = self._upload(resize_to_input(rgb, self.spec, (self.height, self.width)))[0]
        else:
            top, left = new_hw[2:]
            x = self._upload(clahe_if_asked(rgb, self.spec.get("clahe")))
            x = self._resize(x, src_hw, new_hw[:2])[0]
            x = x[:, top:top + self.height, left:left + self.width]
            # OpenCV rounds its resized pixels to uint8: do the same so both paths agree
            x = x.round_().clamp_(0.0, 255.0)
        return ((x - self.offset) * self.scale).to(self.dtype).contiguous()

    def batch(self, images):
        return self.torch.stack([self(img) for img in images])


def stack_inputs(tensors):
    """One batch from preprocessed inputs: numpy arrays (host) or torch tensors (device)."""
    first = tensors[0]
    if isinstance(first, np.ndarray):
        return np.stack(tensors)
    import torch
    return torch.stack(list(tensors))
