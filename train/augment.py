"""Training-time augmentation on numpy RGB images (OpenCV, no torchvision needed).

Random resized crop, horizontal and vertical flips, 90 degree rotations, colour jitter and,
for stained histology, a perturbation in haematoxylin-eosin colour space
(``--stain-jitter``), and TrivialAugment (``--trivial-augment``: one operation drawn at
random per image, at a random strength).  Evaluation never augments: it uses
``appliance.preprocess``.
"""
import numpy as np

from oncolens.appliance.preprocess import normalize

# Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, residual) in optical density
_HED_FROM_RGB = None


def _hed_matrices():
    global _HED_FROM_RGB
    if _HED_FROM_RGB is None:
        rgb_from_hed = np.array([[0.65, 0.70, 0.29],
                                 [0.07, 0.99, 0.11],
                                 [0.27, 0.57, 0.78]], dtype=np.float64)
        rgb_from_hed /= np.linalg.norm(rgb_from_hed, axis=1, keepdims=True)
        _HED_FROM_RGB = (np.linalg.inv(rgb_from_hed), rgb_from_hed)
    return _HED_FROM_RGB


def stain_jitter(rgb, rng, sigma=0.05, bias=0.05):
    """Scale and shift each stain's concentration: H, E, residual ~ a*c + b, a ~ 1 +- sigma."""
    hed_from_rgb, rgb_from_hed = _hed_matrices()
    od = -np.log(np.maximum(rgb.astype(np.float64), 1.0) / 255.0)
    conc = od.reshape(-1, 3).dot(hed_from_rgb)
    alpha = rng.uniform(1.0 - sigma, 1.0 + sigma, size=3)
    beta = rng.uniform(-bias, bias, size=3)
    od = (conc * alpha + beta).dot(rgb_from_hed)
    out = 255.0 * np.exp(-np.maximum(od, 0.0))
    return np.clip(out, 0, 255).reshape(rgb.shape).astype(np.uint8)


def colour_jitter(rgb, rng, brightness=0.2, contrast=0.2, saturation=0.1):
    """Random brightness, contrast and saturation, each a factor in [1 - x, 1 + x]."""
    img = rgb.astype(np.float32)
    if brightness:
        img *= rng.uniform(1.0 - brightness, 1.0 + brightness)
    if contrast:
        mean = img.mean()
        img = (img - mean) * rng.uniform(1.0 - contrast, 1.0 + contrast) + mean
    if saturation:
        grey = img.mean(axis=2, keepdims=True)
        img = (img - grey) * rng.uniform(1.0 - saturation, 1.0 + saturation) + grey
    return np.clip(img, 0, 255).astype(np.uint8)


def random_resized_crop(rgb, out_hw, rng, scale=(0.35, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
    """torchvision's RandomResizedCrop, on a numpy image with OpenCV."""
    import cv2
    h, w = rgb.shape[:2]
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw = int(round(np.sqrt(target * aspect)))
        ch = int(round(np.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = rng.integers(0, h - ch + 1)
            left = rng.integers(0, w - cw + 1)
            crop = rgb[top:top + ch, left:left + cw]
            break
    else:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = rgb[top:top + side, left:left + side]
    interp = cv2.INTER_AREA if crop.shape[0] > out_hw[0] else cv2.INTER_LINEAR
    return cv2.resize(crop, (out_hw[1], out_hw[0]), interpolation=interp)


def _affine(rgb, matrix):
    import cv2
    h, w = rgb.shape[:2]
    return cv2.warpAffine(rgb, matrix, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _centred(h, w, linear):
    """A 2x3 affine matrix applying the 2x2 ``linear`` part about the image centre."""
    linear = np.asarray(linear, dtype=np.float64)
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    return np.hstack([linear, (centre - linear.dot(centre))[:, None]])


def _blend(rgb, other, factor):
    """PIL ImageEnhance's rule: other + factor * (image - other), clipped to uint8."""
    out = other + factor * (rgb.astype(np.float32) - other)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _rotate(rgb, m):
    h, w = rgb.shape[:2]
    a = np.deg2rad(30.0 * m)
    c, s = np.cos(a), np.sin(a)
    return _affine(rgb, _centred(h, w, [[c, s], [-s, c]]))  # counter-clockwise, as OpenCV's


def _shear_x(rgb, m):
    h, w = rgb.shape[:2]
    return _affine(rgb, _centred(h, w, [[1.0, 0.3 * m], [0.0, 1.0]]))


def _shear_y(rgb, m):
    h, w = rgb.shape[:2]
    return _affine(rgb, _centred(h, w, [[1.0, 0.0], [0.3 * m, 1.0]]))


def _translate_x(rgb, m):
    return _affine(rgb, np.array([[1.0, 0.0, 0.25 * m * rgb.shape[1]], [0.0, 1.0, 0.0]]))


def _translate_y(rgb, m):
    return _affine(rgb, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.25 * m * rgb.shape[0]]]))


def _brightness(rgb, m):
    return _blend(rgb, np.zeros((), np.float32), 1.0 + 0.5 * m)


def _contrast(rgb, m):
    grey = rgb.astype(np.float32).mean(axis=2).mean()
    return _blend(rgb, np.float32(grey), 1.0 + 0.5 * m)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13.0  # PIL's


def _sharpness(rgb, m):
    import cv2
    smooth = cv2.filter2D(rgb, -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE)
    return _blend(rgb, smooth.astype(np.float32), 1.0 + 0.9 * m)


def _gamma(rgb, m):
    lut = 255.0 * (np.arange(256) / 255.0) ** (2.0 ** (0.6 * m))
    return np.clip(np.round(lut), 0, 255).astype(np.uint8)[rgb]


def _autocontrast(rgb, m):
    """Stretch each channel to 0-255 (a flat channel stays as it is)."""
    out = np.empty_like(rgb)
    ramp = np.arange(256, dtype=np.float32)
    for c in range(3):
        lo, hi = int(rgb[:, :, c].min()), int(rgb[:, :, c].max())
        lut = ramp if hi <= lo else (ramp - lo) * (255.0 / (hi - lo))
        out[:, :, c] = np.clip(np.round(lut), 0, 255).astype(np.uint8)[rgb[:, :, c]]
    return out


def _equalize(rgb, m):
    import cv2
    return np.dstack([cv2.equalizeHist(np.ascontiguousarray(rgb[:, :, c])) for c in range(3)])


def _posterize(rgb, m):
    bits = 8 - int(round(4 * abs(m)))  # 4 to 8 bits
    mask = np.uint8((0xFF << (8 - bits)) & 0xFF)
    return rgb & mask


# name -> op(rgb, m), m in [-1, 1] the signed strength; a greyscale scan stays greyscale
TRIVIAL_OPS = {
    "identity": lambda rgb, m: rgb,
    "rotate": _rotate,            # up to 30 degrees either way
    "shear_x": _shear_x,          # up to 0.3
    "shear_y": _shear_y,
    "translate_x": _translate_x,  # up to a quarter of the width
    "translate_y": _translate_y,
    "brightness": _brightness,    # factor 0.5 to 1.5
    "contrast": _contrast,        # factor 0.5 to 1.5
    "sharpness": _sharpness,      # factor 0.1 to 1.9
    "gamma": _gamma,              # exponent 0.66 to 1.5
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "posterize": _posterize,      # 4 to 8 bits
}
_TRIVIAL_NAMES = sorted(TRIVIAL_OPS)  # a fixed order, so a seed draws the same operations


def trivial_augment(rgb, rng):
    """TrivialAugment (Muller & Hutter, 2021): one operation of ``TRIVIAL_OPS``, drawn
    uniformly, at a strength drawn uniformly (either sign); ``(image, name)``."""
    name = _TRIVIAL_NAMES[int(rng.integers(0, len(_TRIVIAL_NAMES)))]
    m = float(rng.uniform(-1.0, 1.0))
    return np.ascontiguousarray(TRIVIAL_OPS[name](rgb, m)), name


class TrainAugment(object):
    """Crop, flips, 90 degree turns, colour (and stain) jitter, then the model's normalisation.

    ``options``: ``scale`` (crop area range), ``flip`` (bool), ``vflip`` (upside-down flips
    too, bool), ``rot90`` (bool),
    ``colour`` (jitter strength, 0 for none), ``stain`` (H&E jitter strength, 0 for none),
    ``trivial`` (bool: one TrivialAugment operation per image, after the flips and turns).
    """

    def __init__(self, preprocessor, seed=None, options=None):
        self.pre = preprocessor
        self.rng = np.random.default_rng(seed)
        opts = {"scale": (0.35, 1.0), "flip": True, "vflip": True, "rot90": True,
                "colour": 0.2, "stain": 0.0, "trivial": False}
        opts.update(options or {})
        self.opts = opts

    def __call__(self, rgb):
        rng, opts = self.rng, self.opts
        out = random_resized_crop(rgb, (self.pre.height, self.pre.width), rng,
                                  scale=tuple(opts["scale"]))
        if opts["flip"]:
            if rng.random() < 0.5:
                out = out[:, ::-1]
            if opts["vflip"] and rng.random() < 0.5:
                out = out[::-1, :]
        if opts["rot90"] and self.pre.height == self.pre.width:
            out = np.rot90(out, int(rng.integers(0, 4)))
        out = np.ascontiguousarray(out)
        if opts["trivial"]:
            out = trivial_augment(out, rng)[0]
        if opts["stain"]:
            out = stain_jitter(out, rng, sigma=opts["stain"], bias=opts["stain"])
        if opts["colour"]:
            out = colour_jitter(out, rng, opts["colour"], opts["colour"], opts["colour"] / 2.0)
        return normalize(out, self.pre.mean, self.pre.std)
