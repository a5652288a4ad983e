"""The pykvmmu exception hierarchy: every error the library raises is a PykvmmuError."""


class PykvmmuError(Exception):
    """Base class of every error raised by pykvmmu."""


class InputError(PykvmmuError, ValueError):
    """A value breaks a rule (out of range, wider than its field, unknown name...)."""


class ArrayError(PykvmmuError, TypeError):
    """A numpy array has the wrong dtype, shape, layout or writability."""


class ConfigError(PykvmmuError, ValueError):
    """An MmuConfig (or a mask set) breaks a kernel invariant."""


class ProfileError(PykvmmuError, ValueError):
    """Unknown kernel-era layout profile, or a routine that did not exist in the chosen era."""
