"""The one source of the package version (read by pyproject.toml and ``pykvmmu --version``)."""
__version__ = "0.1.0"
