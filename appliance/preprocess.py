"""Preprocessing, shared by training-time evaluation and inference so the two never drift.

A model's preprocessing lives in its ``model.json`` (``preprocess``):

    {"resize": "center_crop",      # or "stretch" (jetson-inference's whole-frame resize)
     "crop_ratio": 0.875,          # crop / resized shorter side (224 / 256)
     "interpolation": "auto",      # area when shrinking, linear when enlarging; or "linear"
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],   # on the 0..1 scale
     "clahe": null}                # or {"clip": 2.0, "tile": 8}: applied before resizing

Normalisation belongs to the weights: torchvision ImageNet weights want the mean/std above,
EfficientNet-Lite weights converted from TensorFlow want (x - 127) / 128, which is
mean 127/255 and std 128/255 on the 0..1 scale.
"""
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_LITE_MEAN = (127.0 / 255.0,) * 3
TF_LITE_STD = (128.0 / 255.0,) * 3
DEFAULT_CROP_RATIO = 0.875
# the largest image the resize step may make before its crop (1 GB of uint8 RGB would be 3x
# this): a 1x40000 strip would otherwise become 256x10240000 pixels on its way to 224x224
MAX_RESIZED_PIXELS = 100000000
POLICIES = ("center_crop", "stretch")


def imagenet_preprocess(size=224, policy="center_crop", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        clahe=None):
    """A model.json ``preprocess`` block (``size`` is recorded in ``input.shape``)."""
    if policy not in POLICIES:
        raise ValueError("resize policy must be one of {}, got {!r}".format(POLICIES, policy))
    return {"resize": policy, "crop_ratio": DEFAULT_CROP_RATIO, "interpolation": "auto",
            "mean": [float(v) for v in mean], "std": [float(v) for v in std], "clahe": clahe}


def checkpoint_preprocess(ckpt, size):
    """The ``preprocess`` block for a checkpoint: its own record (OncoLens), or else what
    jetson-inference's ``train.py`` evaluated it with (it records none): ImageNet mean/std
    and a centre crop of the shorter side resized to ``size`` px (crop ratio 1.0) for the
    checkpoints that record ``classes`` (its train.py since December 2022); before that it
    resized the shorter side to 256 px whatever ``size`` was, a crop ratio of ``size / 256``
    (0.875 at 224 px; at most 1, for a ``size`` over 256 that torchvision would pad)."""
    recorded = ckpt.get("preprocess")
    if isinstance(recorded, dict) and recorded:
        return dict(recorded)
    spec = imagenet_preprocess(size)
    spec["crop_ratio"] = 1.0 if ckpt.get("classes") else min(1.0, int(size) / 256.0)
    return spec


def _cv2():
    import cv2  # OpenCV is a runtime requirement (JetPack ships it)
    return cv2


def apply_clahe(rgb, clip=2.0, tile=8):
    """Contrast-limited adaptive histogram equalisation on the lightness channel."""
    cv2 = _cv2()
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    eq = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(int(tile), int(tile)))
    lab[:, :, 0] = eq.apply(np.ascontiguousarray(lab[:, :, 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def clahe_if_asked(rgb, clahe):
    """``rgb`` with CLAHE applied when ``clahe`` (model.json's block) asks for it."""
    if not clahe:
        return rgb
    return apply_clahe(rgb, clahe.get("clip", 2.0), clahe.get("tile", 8))


def resize_geometry(spec, src_hw, out_hw):
    """Where a ``src_hw`` image goes: ``(new_h, new_w, top, left)``.

    The image is resized to ``new_h x new_w``, then the ``out_hw`` window at ``(top, left)``
    is kept.  One function for every implementation of the policy (OpenCV here, torch on a
    GPU in ``appliance.device_preprocess``), so they cannot drift apart.
    """
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    src_h, src_w = int(src_hw[0]), int(src_hw[1])
    if spec.get("resize", "center_crop") == "stretch":
        return out_h, out_w, 0, 0
    ratio = float(spec.get("crop_ratio", DEFAULT_CROP_RATIO))
    # scale so that the image covers (out / ratio) on both sides, then cut the centre
    scale = max(out_h / ratio / src_h, out_w / ratio / src_w)
    new_h = max(out_h, int(round(src_h * scale)))
    new_w = max(out_w, int(round(src_w * scale)))
    return new_h, new_w, (new_h - out_h) // 2, (new_w - out_w) // 2


def shrinks(spec, src_hw, dst_hw):
    """Whether the spec's interpolation for this resize is area (anti-aliased) averaging."""
    mode = spec.get("interpolation", "auto")
    return mode == "area" or (mode == "auto" and dst_hw[0] * dst_hw[1] < src_hw[0] * src_hw[1])


def check_resized_size(src_hw, new_hw):
    """ImageReadError when resizing a ``src_hw`` image to ``new_hw`` (before the crop) would
    make more than MAX_RESIZED_PIXELS pixels; every implementation of the policy checks it."""
    if new_hw[0] * new_hw[1] > MAX_RESIZED_PIXELS:
        from oncolens.appliance.errors import ImageReadError
        raise ImageReadError("the image is {}x{} pixels: resized for the model it would be "
                             "{}x{}, over {} pixels: expected a less extreme aspect ratio"
                             .format(src_hw[1], src_hw[0], new_hw[1], new_hw[0],
                                     MAX_RESIZED_PIXELS))


def resize_to_input(rgb, spec, out_hw):
    """Resize an RGB uint8 image to ``out_hw`` by the spec's policy; returns uint8 HxWx3."""
    cv2 = _cv2()
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    rgb = clahe_if_asked(rgb, spec.get("clahe"))
    src_hw = rgb.shape[:2]
    new_h, new_w, top, left = resize_geometry(spec, src_hw, (out_h, out_w))
    check_resized_size(src_hw, (new_h, new_w))
    interp = cv2.INTER_AREA if shrinks(spec, src_hw, (new_h, new_w)) else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=interp)
    return resized[top:top + out_h, left:left + out_w]


def normalize(rgb, mean, std):
    """uint8 HxWx3 RGB -> float32 3xHxW, (x / 255 - mean) / std.

    One multiply straight from the uint8 plane into the output and one subtraction per
    channel (x * a - b, a = 1 / (255 std), b = mean / std): five times faster than a
    transposed float copy followed by a subtraction and a division, and equal to that
    within float32 rounding (a few 1e-7).
    """
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), (3,))
    std = np.broadcast_to(np.asarray(std, dtype=np.float64), (3,))
    gain = (1.0 / (255.0 * std)).astype(np.float32)
    bias = (mean / std).astype(np.float32)
    out = np.empty((3,) + rgb.shape[:2], dtype=np.float32)
    for c in range(3):
        np.multiply(rgb[:, :, c], gain[c], out=out[c], casting="unsafe")
        out[c] -= bias[c]
    return out


class Preprocessor(object):
    """Callable turning RGB uint8 frames into the model's input tensor."""

    def __init__(self, spec, input_shape):
        self.spec = dict(spec)
        self.channels, self.height, self.width = [int(v) for v in input_shape]
        self.mean = self.spec.get("mean", IMAGENET_MEAN)
        self.std = self.spec.get("std", IMAGENET_STD)

    @classmethod
    def from_bundle(cls, bundle, policy=None):
        spec = dict(bundle.preprocess)
        if policy:
            spec["resize"] = policy
        return cls(spec, bundle.input_shape)

    def check(self, src_hw):
        """ImageReadError when this preprocessing refuses an image of ``src_hw`` (height,
        width) pixels (``check_resized_size``: too elongated), without making anything."""
        out_hw = (self.height, self.width)
        check_resized_size(src_hw, resize_geometry(self.spec, src_hw, out_hw)[:2])

    def resize(self, rgb):
        return resize_to_input(rgb, self.spec, (self.height, self.width))

    def __call__(self, rgb):
        return normalize(self.resize(rgb), self.mean, self.std)

    def batch(self, images):
        return np.stack([self(img) for img in images]).astype(np.float32, copy=False)
