"""Temperature scaling: confidences that match how often the model is right.

A network trained with label smoothing, class weights and heavy augmentation on a few
hundred images is rarely calibrated: its top-1 confidence says 0.6 where it is right 0.9 of
the time, or the other way round. Temperature scaling (Guo et al., "On Calibration of Modern
Neural Networks", ICML 2017) divides the logits by one number T, fitted on the validation
split to the lowest negative log-likelihood. Every prediction keeps its class (the order of
the logits does not change); only the confidences move.

With ``oncolens train --calibrate`` (off by default: docs/TRAINING.md says why), OncoLens
folds 1/T into the weights and bias of the network's last linear layer in
model_best.pth.tar, so every consumer of the checkpoint gets the calibrated confidences
with no change to its code or to the model.json contract: the PyTorch backend, the ONNX
export (and the TensorRT engine built from it), jetson-inference's ``imagenet``, and
``oncolens evaluate``. The checkpoint records ``temperature`` and ``temperature_layer`` so
that the raw weights can be had back (``--resume`` does), and model.json's
``training.calibration`` says what was fitted on how many images.
"""
import logging
import math
import os
import time

import numpy as np

from oncolens.appliance.errors import plural
from oncolens.appliance.metrics import calibration
from oncolens.appliance.outpaths import replace_file

log = logging.getLogger(__name__)

LOWEST, HIGHEST = 0.05, 20.0  # the search range of T
TINY = float(np.finfo(np.float32).tiny)


def log_softmax(logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits):
    return np.exp(log_softmax(logits))


def nll(logits, targets, temperature=1.0):
    """Mean negative log-likelihood of ``targets`` under softmax(logits / temperature)."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / float(temperature))
    return float(-logp[np.arange(len(targets)), np.asarray(targets)].mean())


def fit_temperature(logits, targets, iterations=80):
    """The T in [0.05, 20] with the lowest NLL; 1.0 unless another T is strictly better.

    The NLL is convex in 1/T, so a golden-section search over log(1/T) finds its minimum.
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    cost = lambda log_beta: nll(logits, targets, math.exp(-log_beta))  # noqa: E731
    lo, hi = math.log(1.0 / HIGHEST), math.log(1.0 / LOWEST)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = cost(a), cost(b)
    for _ in range(iterations):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = cost(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = cost(b)
    best = math.exp(-(a if fa < fb else b))
    return best if nll(logits, targets, best) < nll(logits, targets, 1.0) else 1.0


def degenerate(logits, targets, temperature):
    """Why a fitted temperature must not be used, or None. Where val/ has no error, the
    NLL falls ever lower as T goes to 0, pushing every confidence to 1: nothing to fit."""
    if (np.asarray(logits).argmax(axis=1) == np.asarray(targets)).all():
        return "val/ is classified without an error, so it cannot say how overconfident " \
               "the model is"
    if not LOWEST * 1.01 < temperature < HIGHEST / 1.01:
        return "the fitted T ({:.3f}) ran to the edge of its range [{}, {}]".format(
            temperature, LOWEST, HIGHEST)
    return None


def without_temperature(probs, temperature):
    """The probabilities before temperature scaling, from those after it (exact up to the
    floor of float32: log p is the scaled logits up to a per-row constant)."""
    if float(temperature) == 1.0:
        return np.asarray(probs, dtype=np.float64)
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), TINY, None))
    return softmax(logp * float(temperature))


def output_layer(model):
    """(name, module) of the network's last linear layer, or (None, None)."""
    import torch
    found = (None, None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            found = (name, module)
    return found


def fold_temperature(layer, temperature):
    """Divide a linear layer's outputs by ``temperature`` (its weights and bias, in place)."""
    import torch
    with torch.no_grad():
        layer.weight.div_(float(temperature))
        if layer.bias is not None:
            layer.bias.div_(float(temperature))


def unscaled_state_dict(ckpt):
    """A checkpoint's ``state_dict`` with any temperature taken back out of it."""
    state = ckpt["state_dict"]
    temperature, layer = float(ckpt.get("temperature", 1.0)), ckpt.get("temperature_layer")
    if temperature == 1.0 or not layer:
        return state
    state = dict(state)
    for key in (layer + ".weight", layer + ".bias"):
        if key in state:
            state[key] = state[key] * temperature
    return state


def remove_temperature(path, why):
    """Take any temperature back out of the checkpoint at ``path`` (a resumed run without
    --calibrate whose best epoch did not change); returns the calibration record."""
    import torch
    from oncolens.appliance.archs import load_checkpoint
    ckpt = load_checkpoint(path)
    if float(ckpt.get("temperature", 1.0)) != 1.0:
        ckpt["state_dict"] = unscaled_state_dict(ckpt)
        ckpt.pop("temperature")
        ckpt.pop("temperature_layer", None)
        replace_file(path, lambda tmp: torch.save(ckpt, tmp))
        log.info("%s: the temperature of an earlier run taken back out (%s)",
                 os.path.basename(path), why)
    return {"temperature": 1.0, "fitted": False, "why": why}


def _logits(model, loader, runtime):
    import torch
    model.eval()
    out, targets = [], []
    with torch.no_grad():
        for images, target in loader:
            out.append(model(runtime.batch(images)).float().cpu().numpy())
            targets.append(target.numpy())
    return np.concatenate(out).astype(np.float64), np.concatenate(targets)


def calibrate_checkpoint(path, arch, num_classes, loader, runtime, bins=15):
    """Fit T on ``loader`` (the val split) for the checkpoint at ``path`` and fold it into
    the checkpoint's last linear layer; returns the ``training.calibration`` record.

    A checkpoint that already holds a temperature (a resumed run whose best epoch did not
    change) is refitted from its raw logits, so temperatures never compound.
    """
    import torch
    from oncolens.appliance.archs import build_model, load_checkpoint
    started = time.time()
    ckpt = load_checkpoint(path)
    previous = float(ckpt.get("temperature", 1.0))
    model = build_model(arch, num_classes)
    model.load_state_dict(ckpt["state_dict"])
    name, layer = output_layer(model)
    if layer is None or layer.out_features != num_classes:
        log.warning("temperature scaling: --arch %s has no final linear layer with %d outputs;"
                    " the confidences are left as they are", arch, num_classes)
        return {"temperature": previous, "fitted": False,
                "why": "no final linear layer to fold a temperature into"}
    model = model.to(runtime.device)
    logits, targets = _logits(model, loader, runtime)
    raw = logits * previous
    temperature = fit_temperature(raw, targets)
    why = degenerate(raw, targets, temperature)
    if why:
        log.info("temperature scaling: %s; the confidences are left as they are", why)
        return {"temperature": previous, "fitted": False, "why": why}
    factor = temperature / previous
    fold_temperature(layer, factor)
    scaled, _ = _logits(model, loader, runtime)
    if not np.allclose(scaled, logits / factor, rtol=1e-3, atol=1e-3 * (1 + np.abs(logits).max())):
        log.warning("temperature scaling: dividing %s by %.3f did not divide the outputs (a "
                    "layer after it is not linear?); the confidences are left as they are",
                    name, factor)
        return {"temperature": previous, "fitted": False,
                "why": "the last linear layer is not the output layer"}
    ckpt["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt["temperature"], ckpt["temperature_layer"] = temperature, name
    replace_file(path, lambda tmp: torch.save(ckpt, tmp))
    before = calibration(targets, softmax(raw), bins)[0]
    after = calibration(targets, softmax(raw / temperature), bins)[0]
    record = {"temperature": round(temperature, 6), "fitted": True, "fitted_on": "val",
              "images": int(len(targets)), "layer": name,
              "val_nll": [round(nll(raw, targets), 4), round(nll(raw, targets, temperature), 4)],
              "val_ece": [round(before, 4), round(after, 4)],
              "seconds": round(time.time() - started, 1)}
    log.info("temperature scaling on val/ (%s): T = %.3f, NLL %.3f -> %.3f, ECE %.3f -> "
             "%.3f; folded into %s of %s", plural(len(targets), "image"), temperature,
             record["val_nll"][0], record["val_nll"][1], before, after, name, os.path.basename(path))
    return record
