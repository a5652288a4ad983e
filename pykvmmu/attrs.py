"""Per-VM memory attributes (``KVM_SET_MEMORY_ATTRIBUTES``) and the MMU invalidation counter.

The kernel keeps ``kvm->mem_attr_array``, an xarray indexed by gfn whose entries are the
attribute bits (NULL when 0).  This model stores maximal runs of equal attributes as three
sorted Python lists (start, end, value), so a 1 TiB guest (2**28 gfns) converted in a few
thousand places costs kilobytes, not one object per page.

:class:`MmuInvalidation` models ``mmu_invalidate_seq`` / ``mmu_invalidate_in_progress`` /
``mmu_invalidate_range_{start,end}`` and ``mmu_invalidate_retry_gfn()``: the counter a page
fault snapshots before faultin and re-checks under mmu_lock, so that a racing attribute
change, punch hole or memslot update turns the fault into a retry instead of a stale install.
"""
from __future__ import annotations

import bisect
import errno as _errno
import sys
from typing import Callable, Optional

import numpy as np

from ._batch import in_array, uint
from ._check import boolean, snapshot, u64
from .errors import InputError

__all__ = ["KVM_MEMORY_ATTRIBUTE_PRIVATE", "KVM_MEMORY_ATTRIBUTES_RESERVED_RWX",
           "MemoryAttributeError", "MemoryAttributes", "MmuInvalidation",
           "check_set_memory_attributes", "kvm_supported_mem_attributes", "INVALID_GPA"]

KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3
#: Bits 0-2 are reserved for future RWX attributes (never supported today).
KVM_MEMORY_ATTRIBUTES_RESERVED_RWX = 0x7
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
U64 = (1 << 64) - 1
INVALID_GPA = U64


class MemoryAttributeError(InputError):
    """A ``KVM_SET_MEMORY_ATTRIBUTES`` argument breaks a rule; ``errno`` is what the ioctl returns."""

    def __init__(self, msg: str, errno: int = _errno.EINVAL):
        super().__init__(msg)
        self.errno = errno


_gfn = u64      # a gfn argument: a u64 (fast path for plain ints)
_bisect_right = bisect.bisect_right


def _gfn_range(start, end) -> tuple:
    s, e = _gfn("start", start), _gfn("end", end)
    if e < s:
        raise InputError(f"start={s:#x} end={e:#x}: end must not be below start")
    return s, e


def kvm_supported_mem_attributes(has_private_mem: bool) -> int:
    """``kvm_supported_mem_attributes()``: PRIVATE for VMs with private memory, else nothing
    (this is also what ``KVM_CAP_MEMORY_ATTRIBUTES`` reports)."""
    return KVM_MEMORY_ATTRIBUTE_PRIVATE if boolean("has_private_mem", has_private_mem) else 0


def check_set_memory_attributes(address: int, size: int, attributes: int, flags: int,
                                supported: int) -> tuple:
    """The argument checks of ``kvm_vm_ioctl_set_mem_attributes()``, in kernel order; each
    failure is -EINVAL.  Returns ``(start_gfn, end_gfn)``."""
    address = uint("address", address, err=MemoryAttributeError)
    size = uint("size", size, err=MemoryAttributeError)
    attributes = uint("attributes", attributes, err=MemoryAttributeError)
    flags = uint("flags", flags, err=MemoryAttributeError)
    supported = uint("supported", supported)
    if flags:
        raise MemoryAttributeError(f"flags={flags:#x}: must be 0 (no flags are defined)")
    if attributes & ~supported:
        raise MemoryAttributeError(
            f"attributes={attributes:#x}: bits {attributes & ~supported:#x} are not supported "
            f"(kvm_supported_mem_attributes={supported:#x})")
    if size == 0:
        raise MemoryAttributeError("size=0: the range must not be empty")
    if address + size > U64:
        raise MemoryAttributeError(f"address={address:#x} size={size:#x}: address + size "
                                   "overflows 64 bits")
    if address & (PAGE_SIZE - 1) or size & (PAGE_SIZE - 1):
        raise MemoryAttributeError(f"address={address:#x} size={size:#x}: both must be 4 KiB "
                                   "aligned (PAGE_ALIGNED)")
    return address >> PAGE_SHIFT, (address + size) >> PAGE_SHIFT


class MmuInvalidation:
    """``kvm->mmu_invalidate_{seq,in_progress,range_start,range_end}`` and their rules."""

    __slots__ = ("seq", "in_progress", "range_start", "range_end")

    def __init__(self):
        self.seq = 0
        self.in_progress = 0
        self.range_start = INVALID_GPA
        self.range_end = INVALID_GPA

    def begin(self) -> None:
        """``kvm_mmu_invalidate_begin()``: count one more invalidation; the first resets the range."""
        self.in_progress += 1
        if self.in_progress == 1:
            self.range_start = self.range_end = INVALID_GPA

    def range_add(self, start: int, end: int) -> None:
        """``kvm_mmu_invalidate_range_add()``: widen the in-progress range to cover [start, end)."""
        start, end = _gfn_range(start, end)
        if not self.in_progress:
            raise InputError(f"kvm_mmu_invalidate_range_add(start={start:#x}, end={end:#x}): no "
                             "invalidation in progress (WARN_ON_ONCE in the kernel)")
        if self.range_start == INVALID_GPA:
            self.range_start, self.range_end = start, end
        else:
            self.range_start = min(self.range_start, start)
            self.range_end = max(self.range_end, end)

    def end(self) -> None:
        """``kvm_mmu_invalidate_end()``: bump the sequence, then drop the in-progress count."""
        if self.in_progress <= 0:
            raise InputError("kvm_mmu_invalidate_end: in_progress would go negative (KVM_BUG_ON)")
        self.seq += 1
        self.in_progress -= 1

    def retry_gfn(self, mmu_seq: int, gfn: int) -> bool:
        """``mmu_invalidate_retry_gfn()``: retry if an invalidation in progress covers gfn (or
        has no range yet), or the sequence moved since the fault's snapshot."""
        return self._retry(_gfn("mmu_seq", mmu_seq), _gfn("gfn", gfn))

    def _retry(self, mmu_seq: int, gfn: int) -> bool:
        """:meth:`retry_gfn` on checked values (the fault path's two checks)."""
        if self.in_progress:
            if self.range_start == INVALID_GPA:
                return True
            if self.range_start <= gfn < self.range_end:
                return True
        return self.seq != mmu_seq

    def snapshot(self) -> tuple:
        """(seq, in_progress, range_start, range_end)."""
        return (self.seq, self.in_progress, self.range_start, self.range_end)

    _snapshot = snapshot


class MemoryAttributes:
    """Range-based ``kvm->mem_attr_array``.  Runs are maximal: adjacent equal runs are merged
    and attribute 0 is never stored (the xarray's NULL).  ``on_store(start, end)``, if set,
    is told of every store (the VM forgets what it derived from those gfns)."""

    def __init__(self, supported: int = KVM_MEMORY_ATTRIBUTE_PRIVATE):
        self.supported = uint("supported", supported)
        self._s: list = []
        self._e: list = []
        self._v: list = []
        self._arrays = None
        self.on_store: Optional[Callable[[int, int], None]] = None

    # ------------------------------------------------------------ queries
    def get(self, gfn: int) -> int:
        """``kvm_get_memory_attributes(kvm, gfn)``."""
        gfn = _gfn("gfn", gfn)
        i = bisect.bisect_right(self._s, gfn) - 1
        if i >= 0 and gfn < self._e[i]:
            return self._v[i]
        return 0

    def is_private(self, gfn: int) -> bool:
        """``kvm_mem_is_private(kvm, gfn)``."""
        if gfn.__class__ is not int or not 0 <= gfn <= U64:     # the fault path's fast path
            gfn = _gfn("gfn", gfn)
        i = _bisect_right(self._s, gfn) - 1
        return i >= 0 and gfn < self._e[i] and self._v[i] & KVM_MEMORY_ATTRIBUTE_PRIVATE != 0

    def range_has(self, start: int, end: int, mask: int, attrs: int) -> bool:
        """``kvm_range_has_memory_attributes(kvm, start, end, mask, attrs)``: every gfn in
        [start, end) has ``attributes & mask == attrs`` (true for an empty range)."""
        start, end = _gfn_range(start, end)
        mask, attrs = uint("mask", mask), uint("attrs", attrs)
        if start >= end:
            return True
        want = attrs & mask
        pos = start
        i = bisect.bisect_right(self._s, start) - 1
        if i < 0 or self._e[i] <= start:
            i += 1
        while pos < end:
            if i < len(self._s) and self._s[i] <= pos:
                if self._v[i] & mask != want:
                    return False
                pos = self._e[i]
                i += 1
            else:
                if want:            # a hole (attributes 0) that is not what is asked for
                    return False
                pos = self._s[i] if i < len(self._s) else end
        return True

    def ranges(self):
        """The stored runs as ``(start_gfn, end_gfn, attributes)`` tuples (attributes != 0)."""
        return list(zip(self._s, self._e, self._v))

    def private_ranges(self):
        """Sorted uint64 arrays ``(start, end)`` of the private runs (merged), cached."""
        if self._arrays is None:
            st, en = [], []
            for s, e, v in zip(self._s, self._e, self._v):
                if v & KVM_MEMORY_ATTRIBUTE_PRIVATE:
                    if en and en[-1] == s:
                        en[-1] = e
                    else:
                        st.append(s)
                        en.append(e)
            self._arrays = (np.array(st, dtype=np.uint64), np.array(en, dtype=np.uint64))
        return self._arrays

    def get_batch(self, gfn: np.ndarray) -> np.ndarray:
        """Attributes of every gfn of a uint64 array (vectorised searchsorted)."""
        in_array("gfn", gfn, np.uint64)
        s = np.array(self._s, dtype=np.uint64)
        e = np.array(self._e, dtype=np.uint64)
        v = np.array(self._v, dtype=np.uint64)
        out = np.zeros(gfn.shape, dtype=np.uint64)
        if s.size:
            i = np.searchsorted(s, gfn, side="right").astype(np.int64) - 1
            ok = (i >= 0)
            ic = np.where(ok, i, 0)
            ok &= gfn < e[ic]
            out[ok] = v[ic[ok]]
        return out

    def nbytes(self) -> int:
        """Approximate memory held by the store (lists, their ints, cached arrays)."""
        n = sum(sys.getsizeof(x) for x in (self._s, self._e, self._v))
        n += sum(sys.getsizeof(x) for lst in (self._s, self._e, self._v) for x in lst)
        if self._arrays is not None:
            n += self._arrays[0].nbytes + self._arrays[1].nbytes
        return n

    def __len__(self) -> int:
        return len(self._s)

    def _snapshot(self):
        """The stored runs and the supported mask, comparable."""
        return snapshot((self.supported, self._s, self._e, self._v))

    def _attrs(self, attrs) -> int:
        a = uint("attrs", attrs)
        if a & ~self.supported:
            raise MemoryAttributeError(f"attrs={a:#x}: bits {a & ~self.supported:#x} are not "
                                       f"supported (kvm_supported_mem_attributes={self.supported:#x})")
        return a

    # ------------------------------------------------------------ updates
    def store(self, start: int, end: int, attrs: int) -> None:
        """``xa_store()`` of ``attrs`` for every gfn in [start, end) (runs kept maximal)."""
        start, end = _gfn_range(start, end)
        attrs = self._attrs(attrs)
        if start >= end:
            return
        s, e, v = self._s, self._e, self._v
        lo = bisect.bisect_right(e, start)        # first run with end > start
        hi = bisect.bisect_left(s, end)           # runs starting at or after end stay
        new_s, new_e, new_v = [], [], []
        if lo < hi:
            if s[lo] < start:
                new_s.append(s[lo]); new_e.append(start); new_v.append(v[lo])  # noqa: E702
        if attrs:
            new_s.append(start); new_e.append(end); new_v.append(attrs)  # noqa: E702
        if lo < hi:
            if e[hi - 1] > end:
                new_s.append(end); new_e.append(e[hi - 1]); new_v.append(v[hi - 1])  # noqa: E702
        # merge equal adjacent pieces, then with the neighbours outside [lo, hi)
        k = 1
        while k < len(new_s):
            if new_e[k - 1] == new_s[k] and new_v[k - 1] == new_v[k]:
                new_e[k - 1] = new_e[k]
                del new_s[k], new_e[k], new_v[k]
            else:
                k += 1
        if lo > 0 and new_s and e[lo - 1] == new_s[0] and v[lo - 1] == new_v[0]:
            lo -= 1
            new_s[0] = s[lo]
        if hi < len(s) and new_s and s[hi] == new_e[-1] and v[hi] == new_v[-1]:
            new_e[-1] = e[hi]
            hi += 1
        s[lo:hi], e[lo:hi], v[lo:hi] = new_s, new_e, new_v
        self._arrays = None
        if self.on_store is not None:
            self.on_store(start, end)

    def set_range(self, start: int, end: int, attrs: int, inval: MmuInvalidation,
                  zap: Optional[Callable[[int, int, int], None]] = None,
                  post_set: Optional[Callable[[int, int, int], None]] = None) -> bool:
        """``kvm_vm_set_mem_attributes(kvm, start, end, attrs)``: nothing if the range already has
        the value; else invalidate-begin, range-add, ``zap(start, end, attrs)`` (x86
        ``kvm_arch_pre_set_memory_attributes``: zap the SPTEs), store every gfn, ``post_set``
        (x86: recompute huge-page eligibility), invalidate-end.  Returns True if anything changed.
        (The kernel does this for each overlapping memslot; ranges outside memslots still
        change the attributes and the counter.)  Every argument is checked first; if ``zap`` or
        ``post_set`` raises, the invalidation still ends (seq bumped), as the kernel's
        callbacks cannot fail."""
        start, end = _gfn_range(start, end)
        attrs = self._attrs(attrs)
        _check_inval(inval, zap, post_set)
        if self.range_has(start, end, ~0 & U64, attrs):
            return False
        inval.begin()
        try:
            inval.range_add(start, end)
            if zap is not None:
                zap(start, end, attrs)
            self.store(start, end, attrs)
            if post_set is not None:
                post_set(start, end, attrs)
        finally:
            inval.end()
        return True

    def check_and_set(self, address: int, size: int, attributes: int, flags: int,
                      inval: MmuInvalidation, zap=None, post_set=None) -> bool:
        """The ``KVM_SET_MEMORY_ATTRIBUTES`` ioctl: argument checks (no change on error), then
        :meth:`set_range`."""
        _check_inval(inval, zap, post_set)
        start, end = check_set_memory_attributes(address, size, attributes, flags, self.supported)
        return self.set_range(start, end, attributes, inval, zap, post_set)


def _check_inval(inval, zap, post_set) -> None:
    if not isinstance(inval, MmuInvalidation):
        raise InputError(f"inval={inval!r}: expected an MmuInvalidation")
    for n, f in (("zap", zap), ("post_set", post_set)):
        if f is not None and not callable(f):
            raise InputError(f"{n}={f!r}: expected a callable (start, end, attrs) or None")
