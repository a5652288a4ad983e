"""Loads the compiled C core (``pykvmmu._core``, built by csrc/build_core.py)."""
try:
    from pykvmmu._core import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "the pykvmmu C core is not built: run `pip install .` or "
        "`python csrc/build_core.py` in the source tree") from exc

__all__ = ["ffi", "lib"]
