"""Building the classifier networks from their names (torch imported only when called).

Shared by training, export and the PyTorch backend, so a checkpoint is always rebuilt the
way it was trained.  Any torchvision classifier name works too.
"""
import hashlib
import importlib
import io
import os

from oncolens.appliance.errors import BundleError, MissingDependency, UsageError, plural


def _torchvision():
    try:
        importlib.import_module("torch")
        import torchvision
    except ImportError as exc:
        raise MissingDependency(str(exc).split("'")[1] if "'" in str(exc) else "torch",
                                "this step", "pip install 'oncolens[train]'")
    return torchvision


# Inception v3 and GoogLeNet train with auxiliary classifiers that return a tuple of outputs
# in training mode: built without them they return one tensor, as every other network does
# (their ImageNet weights still load, the auxiliary heads' tensors are skipped), with the
# input transform that torchvision turns on with those weights.
NO_AUX_ARCHS = ("inception_v3", "googlenet")
NO_AUX = (("aux_logits", False), ("transform_input", True), ("init_weights", True))


def _torchvision_classifier(arch, num_classes):
    tv = _torchvision()
    ctor = getattr(tv.models, arch, None)
    if ctor is None or not callable(ctor):
        raise UsageError("--arch: unknown architecture '{}' (expected one of: {})".format(
            arch, ", ".join(arch_names())))
    extra = dict(NO_AUX) if arch in NO_AUX_ARCHS else {}
    try:
        return ctor(weights=None, num_classes=num_classes, **extra)
    except TypeError:  # torchvision < 0.13 (the Nano's 0.11)
        return ctor(pretrained=False, num_classes=num_classes, **extra)


def _net(name, num_classes):
    try:
        importlib.import_module("torch")
    except ImportError:
        raise MissingDependency("torch", "this step", "pip install 'oncolens[train]'")
    from oncolens.appliance import nets
    return nets.get(name)(num_classes=num_classes)


# name -> builder(num_classes) -> torch.nn.Module with freshly initialised weights
ARCHS = {
    "resnet18": lambda n: _torchvision_classifier("resnet18", n),
    "resnet34": lambda n: _torchvision_classifier("resnet34", n),
    "resnet50": lambda n: _torchvision_classifier("resnet50", n),
    "efficientnet_lite0": lambda n: _net("EfficientNetLite0", n),
    "simple-cnn": lambda n: _net("SimpleCNN", n),
}
# networks that export to ONNX only from a later opset than the export's default (11), and
# that opset: maxvit_t's einsum (ONNX Einsum is opset 12)
EXPORT_OPSETS = {"maxvit_t": 12}
# spellings accepted on the command line for the same network
ALIASES = {"simple_cnn": "simple-cnn", "simplecnn": "simple-cnn",
           "efficientnet-lite0": "efficientnet_lite0"}

# where a network's output layer lives (replaced when ImageNet weights are loaded)
HEADS = {"efficientnet_lite0": "_fc", "simple-cnn": "fc"}


def canonical_arch(arch):
    """The name an architecture is recorded under (``simple_cnn`` -> ``simple-cnn``)."""
    return ALIASES.get(str(arch).lower(), str(arch))


def arch_names():
    return sorted(ARCHS)


def build_model(arch, num_classes):
    """A freshly initialised ``arch`` with ``num_classes`` outputs (logits)."""
    arch = canonical_arch(arch)
    if arch not in ARCHS:
        return _torchvision_classifier(arch, num_classes)
    return ARCHS[arch](int(num_classes))


CHECKPOINT_NAMES = ("checkpoint.pth.tar", "model_best.pth.tar")  # jetson-inference's
CHECKPOINT_SUFFIXES = (".pth", ".pth.tar", ".tar", ".pt")  # a file of torch.save's


def check_checkpoint_file(path, flag, shown=None):
    """Refuse in one line naming ``flag`` a checkpoint ``path`` that is not a file: a folder
    (suggesting the checkpoints it holds) or nothing at all. ``shown`` is the flag's value as
    given, where ``path`` was made from it (export's --input is inside --model-dir)."""
    shown = path if shown is None else shown
    if os.path.isfile(path):
        return
    if not os.path.isdir(path):
        raise UsageError("{} {}: checkpoint not found{}".format(
            flag, shown, "" if shown == path else " ({})".format(path)))
    found = [os.path.join(shown, name) for name in CHECKPOINT_NAMES
             if os.path.isfile(os.path.join(path, name))]
    hint = "give {}".format(" or ".join(found)) if found else \
        "it holds no {}".format(" or ".join(CHECKPOINT_NAMES))
    raise UsageError("{} {}: is a folder, not a checkpoint file; {}".format(flag, shown, hint))


def load_checkpoint(path, flag=None, shown=None):
    """Read a checkpoint file on the CPU (jetson-inference's keys plus OncoLens's); with
    ``flag``, a path that is not a file is refused naming it (``check_checkpoint_file``)."""
    return _load_checkpoint(path, flag, shown, None)


def load_checkpoint_hashed(path, flag=None, shown=None):
    """(load_checkpoint, the SHA-256 of the very bytes it was read from): the file is read
    once, so one replaced in between (a best epoch a running training saves) is not hashed
    in place of the weights loaded."""
    digest = hashlib.sha256()
    ckpt = _load_checkpoint(path, flag, shown, digest)
    return ckpt, digest.hexdigest()


def _load_checkpoint(path, flag, shown, digest):
    """load_checkpoint; with ``digest`` (a hashlib object), the bytes are read whole, fed to
    it and loaded from memory."""
    try:
        import torch
    except ImportError:
        raise MissingDependency("torch", "reading a checkpoint", "pip install 'oncolens[train]'")
    if flag:
        check_checkpoint_file(path, flag, shown)
    if not os.path.isfile(path):
        raise BundleError("checkpoint not found: {}".format(path))
    try:
        source = path
        if digest is not None:
            with open(path, "rb") as fh:
                data = fh.read()
            digest.update(data)
            source = io.BytesIO(data)
        try:
            ckpt = torch.load(source, map_location="cpu", weights_only=False)
        except TypeError:  # torch < 1.13 has no weights_only
            if digest is not None:
                source.seek(0)
            ckpt = torch.load(source, map_location="cpu")
    except Exception as exc:  # pickle and zip errors come in many types
        raise BundleError("{}: not a readable checkpoint ({})".format(path, exc))
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "arch" not in ckpt:
        raise BundleError("{}: not an OncoLens/jetson-inference checkpoint (expected keys "
                          "'arch' and 'state_dict')".format(path))
    _check_recorded(ckpt, path)
    return ckpt


def _check_recorded(ckpt, path):
    """The resolution and classes a checkpoint records (the truth for an export) are of a
    usable kind: a hand-edited or foreign one is one line, not a traceback inside torch."""
    import numbers
    res = ckpt.get("resolution")
    if res is not None and not (isinstance(res, numbers.Integral) and
                                not isinstance(res, bool) and res > 0):
        raise BundleError("{}: 'resolution' must be a positive whole number of pixels, got "
                          "{!r}".format(path, res))
    classes = ckpt.get("classes")
    if classes is not None and not (isinstance(classes, (list, tuple)) and
                                    all(isinstance(c, str) and c for c in classes)):
        raise BundleError("{}: 'classes' must be a list of class names, got {!r}".format(
            path, classes))


def model_from_checkpoint(ckpt, where="the checkpoint"):
    """Rebuild the network of a loaded checkpoint, weights restored, in eval mode.

    ``where`` (the checkpoint's path) names it in the one-line error for weights that are
    not those of its ``arch`` (a checkpoint of another network, or edited by hand)."""
    state = ckpt["state_dict"]
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    classes = ckpt.get("classes") or []
    num_classes = ckpt.get("num_classes") or len(classes) or None
    if num_classes is None:
        raise BundleError("{}: records neither 'classes' nor 'num_classes': its number of "
                          "outputs is unknown".format(where))
    if classes and len(classes) != int(num_classes):
        raise BundleError("{}: lists {} ({}) but records num_classes {}".format(
            where, plural(len(classes), "class"), ", ".join(str(c) for c in classes), num_classes))
    try:
        model = build_model(ckpt["arch"], num_classes)
    except UsageError as exc:  # an arch this OncoLens does not build: no --arch flag here
        raise BundleError("{}: {}".format(where, str(exc).replace("--arch: ", "", 1)))
    try:
        model.load_state_dict(state)
    except RuntimeError:  # keys or shapes of another network
        raise BundleError("{}: its weights are not those of arch '{}' with {} classes ({}): "
                          "a checkpoint of another network?".format(
                              where, ckpt["arch"], num_classes, _mismatch(model, state)))
    model.eval()
    return model


def _mismatch(model, state):
    """What differs between a network's own weights and ``state``, in a few words."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = ["{} is {}, not {}".format(k, list(getattr(state[k], "shape", [])),
                                        list(own[k].shape))
              for k in own if k in state and
              tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]
    parts = []
    for what, names in (("missing", missing), ("unexpected", unexpected)):
        if names:
            parts.append("{} {}{}".format(what, names[0], " and {} more".format(
                len(names) - 1) if len(names) > 1 else ""))
    return "; ".join(parts + shapes[:2]) or "load_state_dict refused them"
