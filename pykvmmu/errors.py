"""The pykvmmu exception hierarchy: every error the library raises is a PykvmmuError; and the
rule texts of the C core's error codes (one table, csrc/errors.h)."""
import functools


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



def rule_texts(domain: str) -> dict[int, str]:
    """``{code: rule text}`` of one C-core domain (``spte``, ``mmio``, ``role``, ``rmp``,
    ``private``, ``vm``): the rows of the core's one table (csrc/errors.h).  A text may hold
    ``str.format`` fields that the caller fills in."""
    return {code: text for d, _, code, text in error_rows() if d == domain}


@functools.lru_cache(maxsize=None)
def error_rows() -> tuple[tuple[str, str, int, str], ...]:
    """(domain, code name, code, text) of every row of the core's rule-text table."""
    from pykvmmu._ffi import ffi, lib   # late: the reference model imports this module
    n = ffi.new("size_t *")
    rows = lib.kvmmu_error_texts(n)
    return tuple((ffi.string(r.domain).decode(), ffi.string(r.name).decode(), int(r.code),
                  ffi.string(r.text).decode()) for r in (rows[i] for i in range(n[0])))
