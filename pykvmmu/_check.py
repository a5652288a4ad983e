"""Argument checks shared by every public entry point, and state snapshots.

One helper per kind of rule, each returning the checked (normalised) value or raising a
:class:`~pykvmmu.errors.PykvmmuError` subclass (``InputError`` by default, or the ``err``
class given, e.g. one carrying the kernel's ``errno``) whose message names the argument,
its value and the rule: ``name=value: rule``.  Stateful objects check every argument with
these before they change anything.
"""
from __future__ import annotations

import hashlib
import operator

import numpy as np

from .errors import ArrayError, InputError

__all__ = ["integer", "uint", "u64", "sint", "in_range", "boolean", "opt_boolean", "choice",
           "mmu_config", "aligned", "page_aligned", "no_overlap", "disjoint", "snapshot", "fmt"]


def fmt(value) -> str:
    """A value as messages show it: small ints in decimal, large ones (addresses, masks) in
    hex, others by repr."""
    if isinstance(value, bool) or not isinstance(value, int):
        return repr(value)
    if -4096 < value < 4096:
        return str(value)
    return f"{value:#x}" if value >= 0 else f"-{-value:#x}"


def _raise(err, name: str, value, rule: str, **kw):
    raise err(f"{name}={fmt(value)}: {rule}", **kw)


def integer(name: str, value, *, err=InputError, **kw) -> int:
    """``value`` as a Python int: ints, numpy integers and bools (0/1); not floats or strings."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        raise err(f"{name}={value!r}: expected an integer, got {type(value).__name__}", **kw) from None


def uint(name: str, value, bits: int = 64, *, err=InputError, **kw) -> int:
    """An integer in [0, 2**bits) (the width of the kernel's field)."""
    if value.__class__ is int and value >= 0 and not value >> bits:     # fast path
        return value
    v = integer(name, value, err=err, **kw)
    if v < 0:
        _raise(err, name, v, f"must not be negative (an unsigned {bits}-bit value)", **kw)
    if v >> bits:
        _raise(err, name, v, f"does not fit in {bits} unsigned bits", **kw)
    return v


_U64_END = 1 << 64


def u64(name: str, value, *, err=InputError, **kw) -> int:
    """:func:`uint` with 64 bits and a fast path for plain in-range ints (hot scalar paths)."""
    if value.__class__ is int and 0 <= value < _U64_END:
        return value
    return uint(name, value, 64, err=err, **kw)


def sint(name: str, value, bits: int = 64, *, err=InputError, **kw) -> int:
    """An integer in [-2**(bits-1), 2**(bits-1)) (a signed kernel field)."""
    v = integer(name, value, err=err, **kw)
    if not -(1 << (bits - 1)) <= v < (1 << (bits - 1)):
        _raise(err, name, v, f"does not fit in {bits} signed bits", **kw)
    return v


def in_range(name: str, value, lo: int, hi: int, rule: str = "", *, err=InputError, **kw) -> int:
    """An integer with ``lo <= value <= hi``; ``rule`` says where the bounds come from."""
    v = integer(name, value, err=err, **kw)
    if not lo <= v <= hi:
        shown = str(v) if max(abs(lo), abs(hi)) < 65536 and abs(v) < 1 << 32 else fmt(v)
        raise err(f"{name}={shown}: must be in {fmt(lo)}..{fmt(hi)}" + (f" ({rule})" if rule else ""),
                  **kw)
    return v


def boolean(name: str, value, *, err=InputError, **kw) -> bool:
    """A real bool: True/False (numpy bools too); no truthiness, and no ints, not even 0/1."""
    if value is True or value is False:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise err(f"{name}={value!r}: expected a bool (True or False), got "
              f"{type(value).__name__}", **kw)


def opt_boolean(name: str, value, *, err=InputError, **kw):
    """None (meaning "the configuration's default") or a bool as :func:`boolean`."""
    return None if value is None else boolean(name, value, err=err, **kw)


def choice(name: str, value, options, *, err=InputError, **kw):
    """One of ``options`` (compared by equality; the message lists them)."""
    try:
        ok = value in options
    except TypeError:
        ok = False
    if not ok or isinstance(value, bool):
        raise err(f"{name}={value!r}: must be one of {', '.join(map(repr, options))}", **kw)
    return value


_MMU_CONFIG = None      # pykvmmu.config.MmuConfig, imported on first use (config imports us)


def mmu_config(value, name: str = "cfg"):
    """An :class:`~pykvmmu.config.MmuConfig` (scalar fast paths call this only on failure)."""
    cls = _MMU_CONFIG
    if cls is None or not isinstance(value, cls):
        from .config import MmuConfig
        globals()["_MMU_CONFIG"] = cls = MmuConfig
    if not isinstance(value, cls):
        raise InputError(f"{name}={value!r}: expected an MmuConfig, got {type(value).__name__}")
    return value


def aligned(name: str, value: int, align: int, what: str = "", *, err=InputError, **kw) -> int:
    """An (already checked) integer that is a multiple of ``align``."""
    if value % align:
        _raise(err, name, value, f"must be {what or fmt(align)}-aligned", **kw)
    return value


def page_aligned(name: str, value: int, *, err=InputError, **kw) -> int:
    """An (already checked) integer that is a multiple of 4 KiB (PAGE_ALIGNED)."""
    return aligned(name, value, 4096, "4 KiB (PAGE_SIZE)", err=err, **kw)


def no_overlap(out_name: str, out: np.ndarray, inputs) -> None:
    """Refuse an ``out=`` array that shares memory with an input (``(name, array)`` pairs).

    The C batch loops declare their array pointers ``restrict`` (``csrc/*.c``), so partial
    overlap gives wrong values and exact aliasing (in place) is undefined: both are refused."""
    for name, a in inputs:
        if not isinstance(a, np.ndarray) or a.size == 0 or out.size == 0:
            continue
        if np.may_share_memory(out, a):
            same = (out.__array_interface__["data"][0] == a.__array_interface__["data"][0]
                    and out.strides == a.strides and out.nbytes == a.nbytes)
            how = "is the same memory as" if same else "partly overlaps"
            raise ArrayError(f"{out_name}: {how} the input {name} (out= must not share memory "
                             "with an input: the C loop's pointers are restrict; pass a "
                             "separate array)")


def disjoint(outs, ins) -> None:
    """Refuse an output array that shares memory with an input or another output.

    ``outs`` and ``ins`` are ``(name, array)`` pairs (``None`` arrays are skipped). Every
    array here is C-contiguous, so overlapping byte ranges mean shared elements.
    """
    outs = [(n, a) for n, a in outs if a is not None]
    ins = [(n, a) for n, a in ins if a is not None]
    for i, (name, a) in enumerate(outs):
        for other, b in outs[i + 1:] + ins:
            if np.may_share_memory(a, b):
                raise ArrayError(f"{name}: shares memory with {other} (an output may not "
                                 "overlap an input or another output)")


# ---------------------------------------------------------------------- snapshots
def snapshot(obj, _memo=None):
    """A comparable, deep value of an object's state (attributes, lists, dicts, sets, numpy
    arrays by content digest), for "a refused call changed nothing" checks.  Functions,
    cffi objects and modules are opaque (compared by identity only when they are the same)."""
    if _memo is None:
        _memo = {}
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, complex)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    oid = id(obj)
    if oid in _memo:
        return ("ref", _memo[oid])
    _memo[oid] = len(_memo)
    if isinstance(obj, np.ndarray):
        return ("nd", str(obj.dtype), obj.shape,
                hashlib.sha1(np.ascontiguousarray(obj).view(np.uint8)).hexdigest())
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(snapshot(x, _memo) for x in obj))
    if isinstance(obj, (set, frozenset)):
        return ("set", tuple(sorted((snapshot(x, _memo) for x in obj), key=repr)))
    if isinstance(obj, dict):
        return ("dict", tuple((snapshot(k, _memo), snapshot(v, _memo)) for k, v in obj.items()))
    if callable(obj) and not hasattr(obj, "__dict__") or type(obj).__module__.startswith("_cffi") \
            or type(obj).__name__ in ("function", "method", "module", "builtin_function_or_method"):
        return ("opaque", type(obj).__name__)
    state = {}
    d = getattr(obj, "__dict__", None)
    if d is not None:
        state.update(d)
    for cls in type(obj).__mro__:
        for s in getattr(cls, "__slots__", ()):
            if hasattr(obj, s) and s not in state:
                state[s] = getattr(obj, s)
    for k in ("_cptr", "_c", "_cbuf", "_t", "__weakref__"):
        state.pop(k, None)
    return (type(obj).__name__, tuple((k, snapshot(v, _memo)) for k, v in sorted(state.items())
                                      if not k.startswith("__")))
