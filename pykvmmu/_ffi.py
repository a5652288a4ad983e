"""Loads the compiled C core (``pykvmmu._core``, built by csrc/build_core.py)."""
import os

try:
    from pykvmmu._core import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    def _installed_elsewhere():
        """The installed pykvmmu's directory when it is not this one, else None."""
        try:
            from importlib.metadata import PackageNotFoundError, distribution
            dist = distribution("pykvmmu")
        except (ImportError, PackageNotFoundError):
            return None
        here = os.path.dirname(os.path.abspath(__file__))
        for f in dist.files or ():
            if f.name == "__init__.py" and f.parent.name == "pykvmmu":
                there = os.path.dirname(os.path.abspath(str(dist.locate_file(f))))
                return there if there != here else None
        return None

    _here = os.path.dirname(os.path.abspath(__file__))
    _source_tree = os.path.isdir(os.path.join(os.path.dirname(_here), "csrc"))
    _other = _installed_elsewhere() if _source_tree else None
    if _other:
        _msg = (f"pykvmmu was imported from the source tree {_here}, which shadows the installed "
                f"package in {_other} and has no built C core: run from another directory, or "
                "build the core in place with `python csrc/build_core.py`")
    elif _source_tree:
        _msg = ("the pykvmmu C core is not built in this source tree: run `pip install .` and "
                "import from another directory, or `python csrc/build_core.py` to build in place")
    else:
        _msg = "the pykvmmu C core (pykvmmu._core) is missing: reinstall with `pip install pykvmmu`"
    raise ImportError(_msg) from exc

__all__ = ["ffi", "lib"]
