"""Inference backends behind one small interface (see base.Backend).

Backends are looked up by name and imported only when asked for, so a missing optional
package (tensorrt, onnxruntime, torch) only matters to the backend that needs it.
"""
import importlib
import logging

from oncolens.appliance.errors import MissingDependency, UsageError

log = logging.getLogger(__name__)

# name -> "module:Class"; "auto" tries them in this order (fastest first).
REGISTRY = [
    ("onnxruntime", "oncolens.appliance.backends.ort:OnnxRuntimeBackend"),
    ("openvino", "oncolens.appliance.backends.openvino:OpenVinoBackend"),
]


def backend_names():
    return [name for name, _ in REGISTRY]


def backend_class(name):
    table = dict(REGISTRY)
    if name not in table:
        raise UsageError("--backend: unknown backend '{}' (expected auto or one of: {})".format(
            name, ", ".join(backend_names())))
    module, _, cls = table[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def open_backend(name, bundle, **options):
    """Open backend ``name`` (or the first one that works, for ``auto``) on ``bundle``."""
    if name and name != "auto":
        return backend_class(name)(bundle, **options)
    missing = []
    for candidate in backend_names():
        cls = backend_class(candidate)
        if not cls.can_load(bundle):
            continue
        try:
            backend = cls(bundle, **options)
        except MissingDependency as exc:
            missing.append(str(exc))
            continue
        log.info("backend auto: using %s (%s)", candidate, backend.describe())
        return backend
    raise MissingDependency("onnxruntime", "inference on {}".format(
        bundle.model_path or bundle.dir), "no backend could open it: {}".format(
            "; ".join(missing) or "no backend handles this model file"))
