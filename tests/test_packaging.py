"""setup.cfg's requirements: OpenCV pinned off the Jetson, left to JetPack on it; onnx held
to the last release with wheels on the Nano's Python 3.6."""
import configparser
import os
import re

from packaging.requirements import Requirement
from packaging.version import Version

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _install_requires():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    lines = [line.strip() for line in cfg["options"]["install_requires"].splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


def test_opencv_is_bounded_and_skipped_on_aarch64():
    opencv = [r for r in _install_requires() if r.name.startswith("opencv")]
    assert [r.name for r in opencv] == ["opencv-python-headless"]
    req = opencv[0]
    # the Nano (and any Jetson) keeps JetPack's OpenCV, built with GStreamer: pip asks for none
    assert not req.marker.evaluate({"platform_machine": "aarch64"})
    assert req.marker.evaluate({"platform_machine": "x86_64"})
    assert req.specifier.contains("4.1.2.30") and req.specifier.contains("5.1.0.95")
    assert not req.specifier.contains("4.0.1") and not req.specifier.contains("6.0.0")


def test_the_installed_opencv_is_within_the_bounds():
    """What these tests run on (the wheel here, or JetPack's 4.1.1 on a Nano) is in range."""
    import cv2
    req = [r for r in _install_requires() if r.name == "opencv-python-headless"][0]
    release = ".".join(re.findall(r"\d+", cv2.__version__)[:3])  # a source build: "4.8.0-dev"
    assert req.specifier.contains(Version(release)), cv2.__version__


def _extra(name):
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    lines = [line.strip() for line in cfg["options.extras_require"][name].splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


def _picked(reqs, name, python):
    """The requirements on ``name`` that pip applies under Python ``python``."""
    env = {"python_version": python, "extra": ""}
    return [r for r in reqs if r.name == name and (r.marker is None or r.marker.evaluate(env))]


def test_onnx_on_python_3_6_is_the_last_release_with_wheels():
    """onnx 1.11.0 is the last release with cp36 wheels (x86_64 and aarch64); 1.14.1 is an
    sdist without Requires-Python, so unbounded, pip on the Nano picks it and fails to build."""
    for extra in ("onnx", "all"):
        on36 = _picked(_extra(extra), "onnx", "3.6")
        assert on36, extra
        assert all(r.specifier.contains("1.11.0") for r in on36), extra
        assert not any(r.specifier.contains("1.14.1") for r in on36), extra
        on311 = _picked(_extra(extra), "onnx", "3.11")
        assert on311 and all(r.specifier.contains("1.17.0") for r in on311), extra
