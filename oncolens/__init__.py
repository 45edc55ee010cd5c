"""OncoLens: malignant / benign / normal classification at the edge (research use only).

The code lives in the top-level folders ``appliance/``, ``export/`` and ``train/`` of the
repository and is installed as ``oncolens.appliance``, ``oncolens.export`` and
``oncolens.train`` (see setup.cfg).  When this package is imported straight from a source
checkout, the repository root is added to the package path so the same names resolve there.
"""
import os

__version__ = "0.1.0"

_here = os.path.dirname(os.path.abspath(__file__))
_root = os.path.dirname(_here)
if not os.path.isdir(os.path.join(_here, "appliance")) and os.path.isfile(
    os.path.join(_root, "appliance", "bundle.py")
):
    __path__.append(_root)  # noqa: F821 - module attribute of a package
