"""Up-front validation shared by every scalar and batch API.

Scalar inputs are checked to be ints in range (``uint`` is ``pykvmmu._check.uint``); batch
inputs are checked for dtype, shape, C-contiguity and (for outputs) writability and sharing no
memory with an input before any C code runs, so a bad argument never reaches the core.
"""
from __future__ import annotations

import numpy as np

from ._ffi import ffi
from ._check import boolean, disjoint, no_overlap, uint  # noqa: F401 (re-exported)
from .errors import ArrayError, InputError

__all__ = ["uint", "bad_u64", "in_array", "out_array", "same_shape", "ptr", "ptr_at", "tuple_new"]

#: A NamedTuple from a full tuple of its fields, without its ``__new__``'s Python frame: the
#: scalar results' one constructor (``tuple_new(T, fields)``, or a ``functools.partial`` of it
#: per result type).
tuple_new = tuple.__new__


def bad_u64(name: str, value) -> InputError:
    """The error for a scalar that cffi refused as uint64_t (used in fast paths)."""
    try:
        uint(name, value)
    except InputError as e:
        return e
    return InputError(f"{name}={value!r}: not a valid 64-bit unsigned integer")


def in_array(name: str, a, dtype) -> np.ndarray:
    """Check that ``a`` is a C-contiguous ndarray of exactly ``dtype``."""
    dtype = np.dtype(dtype)
    if not isinstance(a, np.ndarray):
        raise ArrayError(f"{name}: expected a numpy.ndarray of {dtype}, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ArrayError(f"{name}: dtype {a.dtype} given, {dtype} required (no implicit conversion)")
    if not a.flags.c_contiguous:
        raise ArrayError(f"{name}: array is not C-contiguous (use numpy.ascontiguousarray)")
    return a


def out_array(name: str, out, dtype, shape, inputs=()) -> np.ndarray:
    """Return ``out`` checked (dtype, shape, contiguous, writable, sharing no memory with any
    of ``inputs``, ``(name, array)`` pairs) or a new array.  The C batch loops declare their
    pointers ``restrict``, so no overlap at all is allowed, not even exact aliasing."""
    dtype = np.dtype(dtype)
    if out is None:
        return np.empty(shape, dtype=dtype)
    in_array(name, out, dtype)
    if out.shape != tuple(shape):
        raise ArrayError(f"{name}: shape {out.shape} given, {tuple(shape)} required")
    if not out.flags.writeable:
        raise ArrayError(f"{name}: array is read-only")
    no_overlap(name, out, inputs)
    return out


def same_shape(names_arrays) -> tuple:
    """Check that every array given has the same shape; return it."""
    shape: tuple | None = None
    first = None
    for name, a in names_arrays:
        if shape is None:
            shape, first = a.shape, name
        elif a.shape != shape:
            raise ArrayError(f"{name}: shape {a.shape} does not match {first} shape {shape}")
    return shape or ()


def ptr(a: np.ndarray, ctype: str):
    """A cffi pointer to the array's data (zero copy)."""
    return ffi.from_buffer(ctype + "[]", a)


def ptr_at(a: np.ndarray | None, ctype: str, lo: int):
    """A cffi pointer to element ``lo`` of the flattened array, or NULL for ``None``."""
    if a is None:
        return ffi.NULL
    return ffi.from_buffer(ctype + "[]", a) + lo
