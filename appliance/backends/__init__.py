"""Inference backends behind one small interface (see base.Backend).

Backends are looked up by name and imported only when asked for, so a missing optional
package (tensorrt, onnxruntime, torch) only matters to the backend that needs it.
"""
import importlib
import logging
import os

from oncolens.appliance.errors import MissingDependency, UsageError

log = logging.getLogger(__name__)

# name -> "module:Class"; "auto" tries them in this order (fastest first).
REGISTRY = [
    ("jetson", "oncolens.appliance.backends.jetson:JetsonBackend"),
    ("tensorrt", "oncolens.appliance.backends.tensorrt:TensorRTBackend"),
    ("onnxruntime", "oncolens.appliance.backends.ort:OnnxRuntimeBackend"),
    ("openvino", "oncolens.appliance.backends.openvino:OpenVinoBackend"),
    ("torch", "oncolens.appliance.backends.torch_backend:TorchBackend"),
]

# a model file's suffix decides the backend under --backend auto
SUFFIX_BACKENDS = [
    ((".engine", ".trt", ".plan"), "tensorrt"),
    ((".pth", ".pth.tar", ".tar", ".pt"), "torch"),
]


def backend_names():
    return [name for name, _ in REGISTRY]


def backend_class(name):
    table = dict(REGISTRY)
    if name not in table:
        raise UsageError("--backend: unknown backend '{}' (expected auto or one of: {})".format(
            name, ", ".join(backend_names())))
    module, _, cls = table[name].partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        if missing == module:  # OncoLens itself was installed without this backend
            raise MissingDependency(name, "the {} backend".format(name),
                                    "this OncoLens has no module {}".format(module))
        raise MissingDependency(missing, "the {} backend".format(name), str(exc))
    return getattr(mod, cls)


def backend_for_file(path):
    """The backend a model file's suffix calls for, or None (.onnx and folders: any)."""
    name = os.path.basename(path or "").lower()
    for suffixes, backend in SUFFIX_BACKENDS:
        if name.endswith(suffixes):
            return backend
    return None


def _check_precision(backend, options):
    wanted = options.get("precision")
    if wanted and str(wanted).lower() != backend.precision:
        log.warning("--precision %s: the %s backend runs %s", wanted, backend.name,
                    backend.precision)


def open_backend(name, bundle, **options):
    """Open backend ``name`` (or the first one that works, for ``auto``) on ``bundle``."""
    if name and name != "auto":
        backend = backend_class(name)(bundle, **options)
        _check_precision(backend, options)
        return backend
    by_file = backend_for_file(bundle.model_path)
    candidates = [by_file] if by_file else backend_names()
    missing = []
    for candidate in candidates:
        try:
            cls = backend_class(candidate)
            if not cls.can_load(bundle):
                log.debug("backend auto: %s cannot load %s", candidate, bundle.model_path)
                continue
            backend = cls(bundle, **options)
        except MissingDependency as exc:
            if by_file:  # the model file needs this backend: its own message says it best
                raise
            log.debug("backend auto: skipping %s (%s)", candidate, exc)
            missing.append(str(exc))
            continue
        log.info("backend auto: using %s (%s)", candidate, backend.describe())
        _check_precision(backend, options)
        return backend
    raise MissingDependency(by_file or "onnxruntime", "inference on {}".format(
        bundle.model_path or bundle.dir), "no backend could open it: {}".format(
            "; ".join(missing) or "no backend handles this model file"))
