"""setuptools entry point: only here because cffi_modules needs the setup() keyword."""
from setuptools import setup

setup(cffi_modules=["csrc/build_core.py:ffibuilder"])
