# Kept for the Jetson Nano's setuptools 59 (Python 3.6), which reads setup.cfg but not
# a [project] table; all metadata is in setup.cfg.
from setuptools import setup

setup()
