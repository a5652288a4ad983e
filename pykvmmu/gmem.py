"""guest_memfd: fd-based private memory, its memslot bindings, and the hooks between it and KVM.

Models ``virt/kvm/guest_memfd.c`` (create, bind, fallocate, punch hole with the invalidation
flow, release, memory failure, ``kvm_gmem_get_pfn``, ``kvm_gmem_populate``) over a simulated
host memory (:class:`HostMemory`, a pfn allocator).  The arch hooks are methods of a
:class:`GmemHooks` object that users replace: ``prepare`` (``kvm_arch_gmem_prepare``),
``invalidate`` (``kvm_arch_gmem_invalidate``), ``max_mapping_level``
(``kvm_x86_ops.gmem_max_mapping_level``), ``post_populate`` (``kvm_gmem_populate_cb``) and
``migrate``: the page-migration handshake proposed in 2021-2022 and never merged (the backing
store asks the MMU whether and how a private page may move; upstream ``kvm_gmem_migrate_folio``
refuses with -EINVAL, which is the default here).

The ``kvm`` argument of a guest_memfd is anything with the small protocol of
:class:`StubKvm` (``pykvmmu.vm.Vm`` implements it).
"""
from __future__ import annotations

import bisect
import errno as _errno
import functools
import itertools
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

from ._batch import tuple_new, uint
from ._check import boolean, in_range, snapshot, u64
from .attrs import MmuInvalidation
from .errors import InputError

__all__ = ["GUEST_MEMFD_FLAG_MMAP", "GUEST_MEMFD_FLAG_INIT_SHARED", "KVM_CREATE_GUEST_MEMFD",
           "FALLOC_FL_KEEP_SIZE", "FALLOC_FL_PUNCH_HOLE", "KVM_FILTER_SHARED", "KVM_FILTER_PRIVATE",
           "GmemError", "HostMemory", "GmemHooks", "MigrateAnswer", "GuestMemfd", "Binding",
           "GetPfn", "StubKvm", "supported_gmem_flags", "order_to_level", "max_order_at",
           "GmemEra", "GMEM_ERAS", "gmem_era_for_version", "gmem_era_of"]

KVM_CREATE_GUEST_MEMFD = 0xd4
GUEST_MEMFD_FLAG_MMAP = 1 << 0
GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
_bisect_right = bisect.bisect_right
KVM_FILTER_SHARED = 1 << 0
KVM_FILTER_PRIVATE = 1 << 1
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G = 1, 2, 3
#: Linux's EHWPOISON (133 on x86); Python's errno module does not always define it.
EHWPOISON = getattr(_errno, "EHWPOISON", 133)
_ids = itertools.count(3)


class GmemError(InputError):
    """A guest_memfd operation broke a rule; ``errno`` is the kernel's return value."""

    def __init__(self, msg: str, errno: int = _errno.EINVAL):
        name = "EHWPOISON" if errno == EHWPOISON else _errno.errorcode.get(errno, errno)
        super().__init__(f"{msg} (-{name})")
        self.errno = errno


#: The largest folio order modelled: a 1 GiB folio (PUD_ORDER).
MAX_FOLIO_ORDER = 18
#: loff_t is a signed 64-bit file offset.
LOFF_MAX = (1 << 63) - 1


def _order(order, name: str = "order") -> int:
    return in_range(name, order, 0, MAX_FOLIO_ORDER, "a folio order: 0 (4K) .. 18 (1G)")


def order_to_level(order: int) -> int:
    """The largest page level a folio of ``order`` can map (``max_level_for_order``)."""
    if order.__class__ is not int or not 0 <= order <= MAX_FOLIO_ORDER:     # fast path
        order = _order(order)
    return PG_LEVEL_1G if order >= 18 else PG_LEVEL_2M if order >= 9 else PG_LEVEL_4K


@dataclass(frozen=True)
class GmemEra:
    """guest_memfd rules that changed between releases (docs/spte.md, "guest_memfd eras")."""

    name: str
    kernels: str
    #: kvm_gmem_bind on file offsets another binding holds: -EINVAL, -EEXIST from 7ea987a90585.
    overlap_errno: int
    #: KVM_MEM_GUEST_MEMFD valid for every VM (d1e54dd08f16, v6.18), not only private-memory VMs;
    #: VMs without private memory may create MMAP / INIT_SHARED files.
    any_vm_memslot: bool


GMEM_ERAS = {e.name: e for e in (
    GmemEra("v6.8", "v6.8-v6.17", _errno.EINVAL, False),
    GmemEra("v6.18", "v6.18-v7.1", _errno.EINVAL, True),
    GmemEra("v7.2", "v7.2 and later", _errno.EEXIST, True),
)}
GMEM_ERA_LATEST = GMEM_ERAS["v7.2"]


def gmem_era_for_version(version) -> GmemEra:
    """The guest_memfd era of a kernel version ("6.12.30", "v6.18", "latest", a GmemEra),
    parsed by pykvmmu.profile.parse_version like the layout profiles."""
    from .errors import ProfileError
    from .profile import parse_version
    if isinstance(version, GmemEra):
        return version
    key = version.strip().lower() if isinstance(version, str) else None
    if key in ("latest", "newest", "default"):
        return GMEM_ERA_LATEST
    v = parse_version(key) if key else None
    if v is None:
        raise ProfileError(f"gmem_era={version!r}: expected a kernel version such as '6.18' or "
                           f"'latest'; eras: {', '.join(GMEM_ERAS)}")
    mm = v[:2]
    if mm < (6, 8):
        raise ProfileError(f"gmem_era={version!r}: guest_memfd was merged in v6.8")
    return GMEM_ERAS["v7.2" if mm >= (7, 2) else "v6.18" if mm >= (6, 18) else "v6.8"]


def gmem_era_of(kvm) -> GmemEra:
    """The era a VM object models (its ``gmem_era`` attribute; the latest when it has none)."""
    return getattr(kvm, "gmem_era", None) or GMEM_ERA_LATEST


def supported_gmem_flags(has_private_mem: bool, era: Optional[GmemEra] = None) -> int:
    """``kvm_gmem_get_supported_flags()`` on x86: MMAP and INIT_SHARED only for VMs without
    private memory (``kvm_arch_supports_gmem_mmap`` / ``_init_shared`` deny CoCo VM types;
    reported, not verified in source), and only from v6.18 (``era``; default the latest)."""
    if boolean("has_private_mem", has_private_mem) or not (era or GMEM_ERA_LATEST).any_vm_memslot:
        return 0
    return GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED


# ---------------------------------------------------------------------- host memory
class HostMemory:
    """A host physical-page allocator: who owns every allocated pfn, and which were freed.

    ``owner`` tags are free-form ("shared", "gmem3", ...).  Order-n blocks are naturally
    aligned.  Freed pfns go back to per-order free lists (so a stale SPTE would point at
    memory that is reused: the invariant checker looks for exactly that)."""

    def __init__(self, base_pfn: int = 0x1000, nr_pfns: int = 1 << 26):
        self.base_pfn = uint("base_pfn", base_pfn, 40)
        nr_pfns = uint("nr_pfns", nr_pfns, 40)
        if nr_pfns == 0 or self.base_pfn + nr_pfns > 1 << 40:
            raise InputError(f"nr_pfns={nr_pfns:#x}: must be > 0 with base_pfn + nr_pfns within "
                             "the 52-bit physical address space (2**40 pfns)")
        self.limit = self.base_pfn + nr_pfns
        self._next = self.base_pfn
        self._free: dict = {0: [], 9: []}
        self.owner: dict = {}
        self.freed_total = 0

    def _snapshot(self):
        return snapshot(self)

    def alloc(self, owner: str, order: int = 0) -> int:
        """Allocate a naturally aligned block of ``1 << order`` pfns for ``owner``."""
        if not isinstance(owner, str):
            raise InputError(f"owner={owner!r}: expected a str tag")
        if order.__class__ is not int or not 0 <= order <= MAX_FOLIO_ORDER:    # fast path
            order = _order(order)
        n = 1 << order
        fl = self._free.get(order)
        if fl:
            pfn = fl.pop()
        else:
            nxt = self._next
            pfn = (nxt + n - 1) & ~(n - 1)
            if pfn + n > self.limit:
                raise GmemError(f"host memory exhausted allocating order {order}", _errno.ENOMEM)
            if pfn != nxt:          # the alignment gap goes to the 4K free list
                self._free[0].extend(range(nxt, pfn))
            self._next = pfn + n
        if n == 1:
            self.owner[pfn] = owner
        else:
            for p in range(pfn, pfn + n):
                self.owner[p] = owner
        return pfn

    def free(self, pfn: int, order: int = 0) -> None:
        """Free a block allocated by :meth:`alloc` (every pfn must be allocated)."""
        pfn, order = uint("pfn", pfn, 40), _order(order)
        n = 1 << order
        for p in range(pfn, pfn + n):
            if p not in self.owner:
                raise GmemError(f"pfn={p:#x}: freed twice (not allocated)", _errno.EINVAL)
        for p in range(pfn, pfn + n):
            del self.owner[p]
        self._free.setdefault(order, []).append(pfn)
        self.freed_total += n

    def is_allocated(self, pfn: int) -> bool:
        return uint("pfn", pfn) in self.owner

    def max_pfn(self) -> int:
        return self.limit


# ---------------------------------------------------------------------- hooks
@dataclass(frozen=True)
class MigrateAnswer:
    """The MMU's answer to "may this private page move?": ``ok`` and, if not, the errno; ``steps``
    lists what was done (e.g. TDX SEAMCALLs with their arguments), ``zapped`` whether the
    mapping was zapped rather than relocated."""

    ok: bool
    errno: int = 0
    steps: tuple = ()
    zapped: bool = False


class GmemHooks:
    """The generic (no-arch) hooks.  Replace methods, or subclass, to model an architecture.

    Signatures follow the kernel's: ``prepare(kvm, gfn, pfn, max_order) -> 0 | -errno``,
    ``invalidate(start_pfn, end_pfn)`` (no kvm: it runs from ``.free_folio``),
    ``max_mapping_level(kvm, pfn, is_private) -> level`` (0 = no limit),
    ``post_populate(kvm, gfn, pfn, src, opaque) -> 0 | -errno``, and
    ``migrate(kvm, slot, gfn, level, old_pfn, new_pfn) -> MigrateAnswer`` (called by the backing
    store with the MMU lock held)."""

    name = "generic"

    def prepare(self, kvm, gfn: int, pfn: int, max_order: int) -> int:
        return 0

    def invalidate(self, start_pfn: int, end_pfn: int) -> None:
        return None

    def max_mapping_level(self, kvm, pfn: int, is_private: bool) -> int:
        return 0

    def post_populate(self, kvm, gfn: int, pfn: int, src, opaque) -> int:
        return 0

    def migrate(self, kvm, slot, gfn: int, level: int, old_pfn: int, new_pfn: int) -> MigrateAnswer:
        """Upstream: ``kvm_gmem_migrate_folio`` WARNs and returns -EINVAL (guest_memfd is
        unmovable)."""
        return MigrateAnswer(False, _errno.EINVAL, ("kvm_gmem_migrate_folio: WARN_ON_ONCE, -EINVAL",))


# ---------------------------------------------------------------------- the kvm protocol
class MmuLock:
    """``kvm->mmu_lock`` as a depth counter: ``with kvm.mmu_lock():`` holds it, and hooks that
    must run under it can assert ``kvm.mmu_lock_held``."""

    mmu_lock_held = 0

    def mmu_lock(self):
        """``write_lock(&kvm->mmu_lock)`` as a context manager (a plain class: the fault path
        takes it on every fault)."""
        return _MmuLockGuard(self)


class _MmuLockGuard:
    __slots__ = ("kvm",)

    def __init__(self, kvm):
        self.kvm = kvm

    def __enter__(self):
        self.kvm.mmu_lock_held += 1

    def __exit__(self, *exc):
        self.kvm.mmu_lock_held -= 1
        return False


class StubKvm(MmuLock):
    """The smallest ``kvm`` a guest_memfd can be bound to: an invalidation counter, an MMU
    lock, memory attributes (for populate), hooks, and an ``unmap_gfn_range`` that records
    what would be zapped.  ``pykvmmu.vm.Vm`` provides the same methods for real."""

    def __init__(self, has_private_mem: bool = True, hooks: Optional[GmemHooks] = None,
                 is_private: Callable[[int], bool] = lambda gfn: True, gmem_era="latest"):
        if hooks is not None and not isinstance(hooks, GmemHooks):
            raise InputError(f"hooks={hooks!r}: expected a GmemHooks or None")
        if not callable(is_private):
            raise InputError(f"is_private={is_private!r}: expected a callable of gfn")
        self.has_private_mem = boolean("has_private_mem", has_private_mem)
        self.gmem_era = gmem_era_for_version(gmem_era)
        self.invalidation = MmuInvalidation()
        self.gmem_hooks = hooks or GmemHooks()
        self.unmapped: list = []
        self._is_private = is_private

    def is_private(self, gfn: int) -> bool:
        return self._is_private(gfn)

    def unmap_gfn_range(self, slot, start: int, end: int, attr_filter: int) -> bool:
        """``kvm_mmu_unmap_gfn_range``: range_add, then zap (here: recorded)."""
        self.invalidation.range_add(start, end)
        self.unmapped.append((slot, start, end, attr_filter))
        return True


# ---------------------------------------------------------------------- guest_memfd
@dataclass
class Binding:
    """One memslot bound to a guest_memfd range: pgoff ``[pgoff, pgoff + npages)``."""

    slot: Any
    pgoff: int
    npages: int

    @property
    def end(self) -> int:
        return self.pgoff + self.npages


class GetPfn(NamedTuple):
    """``kvm_gmem_get_pfn`` outputs: pfn, max_order, and whether prepare ran now (immutable;
    a named tuple: one is built per fault)."""

    pfn: int
    max_order: int
    prepared_now: bool


#: A GetPfn from its three fields in order (``_batch.tuple_new`` through a C partial: one per fault).
_get_pfn_result = functools.partial(tuple_new, GetPfn)


def _slot(slot):
    """A memslot-like object (``base_gfn``, ``npages``), as bind and get_index need."""
    if not (hasattr(slot, "base_gfn") and hasattr(slot, "npages")):
        raise InputError(f"slot={slot!r}: expected a memslot (base_gfn, npages), got "
                         f"{type(slot).__name__}")
    return slot


def _slot_index(slot, gfn: int) -> int:
    """``kvm_gmem_get_index`` on checked values: the gfn must lie in the slot."""
    base = slot.base_gfn
    if not base <= gfn < base + slot.npages:
        raise InputError(f"gfn={gfn:#x}: outside the slot [{base:#x}, {base + slot.npages:#x})")
    return gfn - base + slot.gmem_pgoff


def max_order_at(gfn: int, index: int, folio_order: int) -> int:
    """The order KVM may map at: the folio's, if gfn and index are equally aligned within it."""
    gfn, index = uint("gfn", gfn), uint("index", index)
    mask = (1 << _order(folio_order, "folio_order")) - 1
    return folio_order if (gfn & mask) == (index & mask) else 0


class GuestMemfd:
    """A guest_memfd file (``KVM_CREATE_GUEST_MEMFD``) bound to one VM.

    ``folio_order`` 0 is upstream (order-0 folios); 9 models 2 MiB folios (the huge-page
    series in flight), allocated when the whole aligned block lies in the file."""

    def __init__(self, kvm, size: int, flags: int = 0, *, host: HostMemory,
                 folio_order: int = 0, supported_flags: Optional[int] = None):
        size = uint("size", size)
        flags = uint("flags", flags)
        if supported_flags is None:
            supported_flags = supported_gmem_flags(getattr(kvm, "has_private_mem", True),
                                                   gmem_era_of(kvm))
        if flags & ~supported_flags:
            raise GmemError(f"KVM_CREATE_GUEST_MEMFD: flags={flags:#x}: bits "
                            f"{flags & ~supported_flags:#x} are not supported for this VM "
                            f"(supported {supported_flags:#x})")
        if size == 0 or size & (PAGE_SIZE - 1):
            raise GmemError(f"KVM_CREATE_GUEST_MEMFD: size={size:#x}: must be > 0 and 4 KiB aligned")
        if isinstance(folio_order, bool) or not isinstance(folio_order, int) or \
                folio_order not in (0, 9):
            raise GmemError(f"folio_order={folio_order!r}: 0 (upstream) or 9 (2 MiB folios)")
        self.kvm = kvm
        self.size = size
        self.npages = size >> PAGE_SHIFT
        self.flags = flags
        self.host = host
        self.folio_order = folio_order
        self.fd = next(_ids)
        self.owner_tag = f"gmem{self.fd}"
        self.released = False
        self._bind_starts: list = []       # sorted pgoffs
        self._binds: list = []             # Binding, same order
        self._folio: dict = {}             # base index -> (base pfn, order)
        self._pfn: dict = {}               # index -> pfn (every page of every folio)
        self.uptodate: set = set()         # base indexes of prepared/populated folios
        self.poisoned: set = set()         # base indexes of hwpoisoned folios
        self.log: list = []                # (operation, details) for demos/tests

    def _snapshot(self):
        """This file's state (bindings, folios, flags), its host memory and its VM's (the
        invalidation counter, the SPTEs...), comparable."""
        return snapshot(self)

    def _open(self) -> None:
        if self.released:
            raise GmemError(f"guest_memfd fd={self.fd}: the file was released", _errno.EBADF)

    def _falloc_args(self, offset, length) -> tuple:
        """``vfs_fallocate`` + ``kvm_gmem_fallocate`` argument rules: the file open (-EBADF),
        ``offset >= 0`` and ``len > 0`` as loff_t (-EINVAL), both 4 KiB aligned (-EINVAL)."""
        self._open()
        offset = in_range("offset", offset, 0, LOFF_MAX, "loff_t, vfs_fallocate", err=GmemError)
        length = in_range("len", length, 1, LOFF_MAX, "vfs_fallocate: len > 0", err=GmemError)
        if offset + length > LOFF_MAX:
            raise GmemError(f"offset={offset:#x} len={length:#x}: offset + len overflows loff_t",
                            _errno.EFBIG)
        if offset & (PAGE_SIZE - 1) or length & (PAGE_SIZE - 1):
            raise GmemError(f"fallocate offset={offset:#x} len={length:#x}: both must be 4 KiB "
                            "aligned")
        return offset, length

    def _index(self, index) -> int:
        return uint("index", index)

    # ------------------------------------------------------------ bindings
    @property
    def bindings(self):
        return list(self._binds)

    def _overlapping(self, start: int, end: int):
        """Bindings overlapping pgoff range [start, end)."""
        i = bisect.bisect_right(self._bind_starts, start) - 1
        if i < 0 or self._binds[i].end <= start:
            i += 1
        out = []
        while i < len(self._binds) and self._binds[i].pgoff < end:
            out.append(self._binds[i])
            i += 1
        return out

    def check_bind(self, kvm, npages: int, offset: int) -> tuple:
        """``kvm_gmem_bind`` checks (all -EINVAL): the file is this VM's and open, offset
        page-aligned, ``offset + size <= i_size``, no overlap with another binding."""
        offset = uint("guest_memfd_offset", offset)
        npages = uint("npages", npages)
        if npages == 0:
            raise GmemError("npages=0: a memslot binding covers at least one page")
        if self.released:
            raise GmemError(f"guest_memfd fd={self.fd}: the file was released", _errno.EBADF)
        if kvm is not self.kvm:
            raise GmemError(f"guest_memfd {self.fd}: bound to another VM (gmem->kvm != kvm)")
        if offset & (PAGE_SIZE - 1):
            raise GmemError(f"guest_memfd_offset={offset:#x}: must be 4 KiB aligned")
        if offset + (npages << PAGE_SHIFT) > self.size:
            raise GmemError(f"guest_memfd_offset={offset:#x} + size {npages << PAGE_SHIFT:#x} "
                            f"exceeds the file size {self.size:#x}")
        start = offset >> PAGE_SHIFT
        ov = self._overlapping(start, start + npages)
        if ov:
            raise GmemError(f"guest_memfd_offset={offset:#x}: pages [{start:#x}, "
                            f"{start + npages:#x}) overlap the binding of slot "
                            f"{getattr(ov[0].slot, 'id', ov[0].slot)} at [{ov[0].pgoff:#x}, "
                            f"{ov[0].end:#x})", gmem_era_of(kvm).overlap_errno)
        return start, npages

    def bind(self, slot, offset: int) -> Binding:
        """``kvm_gmem_bind(kvm, slot, fd, offset)``: records the binding, sets
        ``slot.gmem_pgoff`` / ``slot.gmem_file``.  ``slot`` needs ``npages`` and ``base_gfn``."""
        _slot(slot)
        start, npages = self.check_bind(self.kvm, slot.npages, offset)
        b = Binding(slot, start, npages)
        i = bisect.bisect_left(self._bind_starts, start)
        self._bind_starts.insert(i, start)
        self._binds.insert(i, b)
        slot.gmem_pgoff = start
        slot.gmem_file = self
        slot.gmem_only = bool(self.flags & GUEST_MEMFD_FLAG_MMAP)
        return b

    def unbind(self, slot) -> None:
        """``kvm_gmem_unbind``: drop the binding (memslot deletion)."""
        for i, b in enumerate(self._binds):
            if b.slot is slot:
                del self._binds[i]
                del self._bind_starts[i]
                slot.gmem_file = None
                if hasattr(self.kvm, "_fc_drop"):               # the VM's fault cache (pykvmmu.vm)
                    self.kvm._fc_drop(slot.base_gfn, slot.base_gfn + slot.npages)
                return
        raise GmemError(f"slot {getattr(slot, 'id', slot)} is not bound to guest_memfd {self.fd}")

    @staticmethod
    def index_of(slot, gfn: int) -> int:
        """``kvm_gmem_get_index``: ``gfn - slot->base_gfn + slot->gmem.pgoff`` (gfn in the slot)."""
        return _slot_index(_slot(slot), uint("gfn", gfn))

    def binding_at(self, index: int):
        """The binding covering file page ``index``, or None."""
        index = self._index(index)
        bs = self._overlapping(index, index + 1)
        return bs[0] if bs else None

    # ------------------------------------------------------------ folios
    def folio_of(self, index: int):
        """(base index, base pfn, order) of the allocated folio holding ``index``, or None."""
        return self._folio_at(self._index(index))

    def _folio_at(self, index: int):
        pfn = self._pfn.get(index)
        if pfn is None:
            return None
        if self.folio_order:
            base = index & ~((1 << self.folio_order) - 1)
            f = self._folio.get(base)
            if f is not None and f[1] == self.folio_order:
                return base, f[0], f[1]
        return index, pfn, 0

    def _alloc_folio(self, index: int):
        order = self.folio_order
        if order:
            base = index & ~((1 << order) - 1)
            n = 1 << order
            if base + n <= self.npages and all(i not in self._pfn for i in range(base, base + n)):
                pfn = self.host.alloc(self.owner_tag, order)
                self._folio[base] = (pfn, order)
                for k in range(n):
                    self._pfn[base + k] = pfn + k
                return base, pfn, order
        pfn = self.host.alloc(self.owner_tag, 0)
        self._folio[index] = (pfn, 0)
        self._pfn[index] = pfn
        return index, pfn, 0

    def _free_index(self, index: int) -> None:
        """Truncate one page: split its folio if huge, call the invalidate hook, free it."""
        f = self.folio_of(index)
        if f is None:
            return
        base, bpfn, order = f
        hooks = self.kvm.gmem_hooks
        if order:
            # a partial truncate splits the large folio into order-0 folios
            del self._folio[base]
            for k in range(1 << order):
                self._folio[base + k] = (bpfn + k, 0)
                if base in self.uptodate:
                    self.uptodate.add(base + k)
                if base in self.poisoned:
                    self.poisoned.add(base + k)
        pfn = self._pfn.pop(index)
        self._folio.pop(index, None)
        hooks.invalidate(pfn, pfn + 1)
        self.host.free(pfn, 0)
        self.uptodate.discard(index)
        self.poisoned.discard(index)

    def _truncate(self, start: int, end: int) -> int:
        """``truncate_inode_pages_range`` over indexes [start, end): whole folios are freed with
        one invalidate call; partial large folios are split first.  Returns pages freed."""
        freed = 0
        hooks = self.kvm.gmem_hooks
        # O(min(range, allocated)): probe the range when it is the smaller, else filter the
        # allocated indexes (each freed folio then costs its invalidate hook and free).
        idx = [i for i in range(start, end) if i in self._pfn] if end - start <= len(self._pfn) \
            else sorted(i for i in self._pfn if start <= i < end)
        done = set()
        for i in idx:
            if i in done:
                continue
            f = self.folio_of(i)
            base, bpfn, order = f
            n = 1 << order
            if order and start <= base and base + n <= end:
                del self._folio[base]
                for k in range(n):
                    del self._pfn[base + k]
                    done.add(base + k)
                hooks.invalidate(bpfn, bpfn + n)
                self.host.free(bpfn, order)
                self.uptodate.discard(base)
                self.poisoned.discard(base)
                freed += n
            else:
                self._free_index(i)
                done.add(i)
                freed += 1
        return freed

    # ------------------------------------------------------------ invalidation
    def _invalidate_begin(self, start: int, end: int) -> bool:
        """``kvm_gmem_invalidate_begin``: for each binding overlapping pgoffs [start, end), the
        gfn range ``base_gfn + max(pgoff, start) - pgoff .. base_gfn + min(pgoff + npages, end) -
        pgoff``; invalidate-begin on the first, then unmap each (filter PRIVATE, or SHARED for
        INIT_SHARED files).  Returns whether a binding was found."""
        kvm = self.kvm
        flt = KVM_FILTER_SHARED if self.flags & GUEST_MEMFD_FLAG_INIT_SHARED else KVM_FILTER_PRIVATE
        found = False
        with kvm.mmu_lock():
            for b in self._overlapping(start, end):
                s = b.slot.base_gfn + max(b.pgoff, start) - b.pgoff
                e = b.slot.base_gfn + min(b.end, end) - b.pgoff
                if not found:
                    found = True
                    kvm.invalidation.begin()
                kvm.unmap_gfn_range(b.slot, s, e, flt)
        return found

    def _invalidate_end(self, start: int, end: int, found: bool) -> None:
        if found:
            with self.kvm.mmu_lock():
                self.kvm.invalidation.end()

    # ------------------------------------------------------------ fallocate
    def fallocate(self, mode: int, offset: int, length: int) -> None:
        """``kvm_gmem_fallocate``: KEEP_SIZE required, only PUNCH_HOLE besides it, offset and len
        page-aligned (and within the file)."""
        self._open()
        mode = uint("mode", mode, 32, err=GmemError)
        if not mode & FALLOC_FL_KEEP_SIZE:
            raise GmemError(f"fallocate mode={mode:#x}: FALLOC_FL_KEEP_SIZE is required",
                            _errno.EOPNOTSUPP)
        if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
            raise GmemError(f"fallocate mode={mode:#x}: only FALLOC_FL_PUNCH_HOLE is supported "
                            "besides KEEP_SIZE", _errno.EOPNOTSUPP)
        offset, length = self._falloc_args(offset, length)
        if mode & FALLOC_FL_PUNCH_HOLE:
            self.punch_hole(offset, length)
        else:
            self.allocate(offset, length)

    def allocate(self, offset: int, length: int) -> int:
        """``kvm_gmem_allocate``: allocate (without preparing) every page of [offset, offset +
        len); the fallocate argument rules, and -EINVAL beyond the file size.  Returns pages
        newly allocated.  (Host memory running out part way leaves the pages allocated so far,
        as the kernel's loop does, and raises -ENOMEM.)"""
        offset, length = self._falloc_args(offset, length)
        start, end = offset >> PAGE_SHIFT, (offset + length) >> PAGE_SHIFT
        if end > self.npages:
            raise GmemError(f"allocate offset={offset:#x} len={length:#x}: beyond the file size "
                            f"{self.size:#x}")
        n = 0
        for i in range(start, end):
            if i not in self._pfn:
                _, _, order = self._alloc_folio(i)
                n += 1 << order
        self.log.append(("allocate", start, end))
        return n

    def punch_hole(self, offset: int, length: int) -> int:
        """``kvm_gmem_punch_hole``: invalidate-begin (unmap every bound gfn), truncate (freed
        folios call the invalidate hook), invalidate-end (bumps ``mmu_invalidate_seq``).  The
        fallocate argument rules apply; a range beyond the file size is clipped (truncate)."""
        offset, length = self._falloc_args(offset, length)
        start = offset >> PAGE_SHIFT
        end = min((offset + length) >> PAGE_SHIFT, self.npages)
        found = self._invalidate_begin(start, end)
        try:
            freed = self._truncate(start, end)
        finally:
            self._invalidate_end(start, end, found)
        self.log.append(("punch_hole", start, end, freed))
        return freed

    def release(self) -> None:
        """``kvm_gmem_release``: invalidate the whole file, unbind every slot (``slot->gmem.file
        = NULL``); the inode goes too (its folios are truncated and freed)."""
        if self.released:
            raise GmemError(f"guest_memfd {self.fd}: released twice", _errno.EBADF)
        found = self._invalidate_begin(0, self.npages)
        try:
            for b in list(self._binds):
                b.slot.gmem_file = None
            self._binds.clear()
            self._bind_starts.clear()
            self._truncate(0, self.npages)
        finally:
            self._invalidate_end(0, self.npages, found)
        self.released = True
        self.log.append(("release",))

    def memory_failure(self, index: int) -> str:
        """``kvm_gmem_error_folio``: invalidate begin/end over the folio (no truncate), the folio
        is hwpoisoned, ``MF_DELAYED``; a later ``get_pfn`` fails with -EHWPOISON."""
        index = self._index(index)
        f = self.folio_of(index)
        if f is None:
            raise GmemError(f"memory_failure: index {index:#x} has no folio", _errno.ENOENT)
        base, _, order = f
        found = self._invalidate_begin(base, base + (1 << order))
        self.poisoned.add(base)
        self._invalidate_end(base, base + (1 << order), found)
        self.log.append(("memory_failure", base))
        return "MF_DELAYED"

    def is_poisoned(self, index: int) -> bool:
        """Whether the folio holding ``index`` is hwpoisoned."""
        f = self.folio_of(index)
        return f is not None and f[0] in self.poisoned

    # ------------------------------------------------------------ get_pfn / populate
    def _lookup_for(self, slot, gfn: int) -> int:
        self._check_file(slot, gfn)
        return self._bound_index(slot, gfn)

    def _check_file(self, slot, gfn: int) -> None:
        """-EFAULT unless ``slot``'s guest_memfd file is this one (released or another)."""
        if getattr(slot, "gmem_file", None) is not self:
            raise GmemError(f"gfn {gfn:#x}: slot {getattr(slot, 'id', '?')} has no guest_memfd "
                            "file (released)", _errno.EFAULT)

    def _bound_index(self, slot, gfn: int) -> int:
        """:meth:`_lookup_for` once ``slot.gmem_file is self`` is known: the file index of
        ``gfn``, which must lie in a binding of this file to ``slot`` (-EIO)."""
        base = slot.base_gfn
        index = gfn - base + slot.gmem_pgoff if base <= gfn < base + slot.npages else \
            _slot_index(slot, gfn)                                  # (refuses: outside)
        i = _bisect_right(self._bind_starts, index) - 1             # binding_at(index)
        b = self._binds[i] if i >= 0 else None
        if b is None or b.pgoff + b.npages <= index or b.slot is not slot:     # (b.end)
            raise GmemError(f"gfn {gfn:#x}: index {index:#x} is not bound to this slot", _errno.EIO)
        return index

    def get_pfn(self, slot, gfn: int) -> GetPfn:
        """``kvm_gmem_get_pfn(kvm, slot, gfn, &pfn, &page, &max_order)``: check the binding
        (-EFAULT: no file, -EIO: binding mismatch), allocate on demand, -EHWPOISON if poisoned,
        prepare (zero + ``prepare`` hook with the folio-aligned gfn/pfn and the folio order) if not
        up to date.  ``max_order`` is 0 upstream (order-0 folios)."""
        return self._get_pfn(slot, u64("gfn", gfn))

    def _get_pfn(self, slot, gfn: int) -> GetPfn:
        """:meth:`get_pfn` on a checked gfn."""
        self._check_file(slot, gfn)
        return _get_pfn_result(self._get_pfn_fields(slot, gfn))

    def _get_pfn_fields(self, slot, gfn: int) -> tuple:
        """:meth:`_get_pfn`'s three fields as a plain tuple, for a ``slot`` whose
        ``gmem_file`` the caller read as this file (``pykvmmu.vm.Vm.fault``'s call)."""
        index = self._bound_index(slot, gfn)
        bpfn = self._pfn.get(index)
        if bpfn is None:
            base, bpfn, order = self._alloc_folio(index)
        elif self.folio_order:
            base, bpfn, order = self._folio_at(index)
        else:                           # _folio_at of an order-0 file: the page itself
            base, order = index, 0
        if base in self.poisoned:
            raise GmemError(f"gfn {gfn:#x}: the folio at index {base:#x} is hwpoisoned",
                            EHWPOISON)
        prepared_now = base not in self.uptodate
        if prepared_now:
            gfn_base = slot.base_gfn + base - slot.gmem_pgoff
            rc = self.kvm.gmem_hooks.prepare(self.kvm, gfn_base, bpfn, order)
            if rc:
                raise GmemError(f"gfn {gfn:#x}: prepare hook failed for pfn {bpfn:#x} order "
                                f"{order}", -rc if rc < 0 else rc)
            self.uptodate.add(base)
        pfn = bpfn + (index - base)
        if not order:                   # a 4K folio: max_order_at is 0
            return pfn, 0, prepared_now
        mask = (1 << order) - 1         # max_order_at, with checked values
        return pfn, order if (gfn & mask) == (index & mask) else 0, prepared_now

    def populate(self, slot, start_gfn: int, src, npages: int,
                 post_populate: Optional[Callable] = None, opaque=None) -> int:
        """``kvm_gmem_populate(kvm, start_gfn, src, npages, post_populate, opaque)``: the slot must
        be gmem-backed; ``npages`` is clipped to the slot; per page: get the folio without
        preparing (-EEXIST if already up to date), the gfn must be PRIVATE (-EINVAL), call
        ``post_populate(kvm, gfn, pfn, src_page, opaque)`` and mark up to date.  Returns the pages
        done, or raises if the first page failed (the kernel's ``ret && !i ? ret : i``)."""
        if getattr(slot, "gmem_file", None) is not self:
            raise GmemError(f"populate: slot {getattr(slot, 'id', '?')} is not bound to guest_memfd "
                            f"{self.fd}")
        start_gfn = uint("start_gfn", start_gfn)
        if not slot.base_gfn <= start_gfn < slot.base_gfn + slot.npages:
            raise GmemError(f"start_gfn={start_gfn:#x}: outside slot {getattr(slot, 'id', '?')} "
                            f"[{slot.base_gfn:#x}, {slot.base_gfn + slot.npages:#x})")
        if post_populate is not None and not callable(post_populate):
            raise GmemError(f"post_populate={post_populate!r}: expected a callable or None")
        npages = min(uint("npages", npages), slot.npages - (start_gfn - slot.base_gfn))
        cb = post_populate or self.kvm.gmem_hooks.post_populate
        done = 0
        for k in range(npages):
            gfn = start_gfn + k
            try:
                index = self._lookup_for(slot, gfn)
                f = self.folio_of(index) or self._alloc_folio(index)
                base, bpfn, order = f
                if base in self.poisoned:
                    raise GmemError(f"populate gfn {gfn:#x}: hwpoisoned", EHWPOISON)
                if base in self.uptodate and order == 0:
                    raise GmemError(f"populate gfn {gfn:#x}: already populated/prepared",
                                    _errno.EEXIST)
                if not self.kvm.is_private(gfn):
                    raise GmemError(f"populate gfn {gfn:#x}: the gfn is not PRIVATE in the memory "
                                    "attributes")
                src_page = None if src is None else src[k]
                rc = cb(self.kvm, gfn, bpfn + (index - base), src_page, opaque)
                if rc:
                    raise GmemError(f"populate gfn {gfn:#x}: post_populate returned {rc}",
                                    -rc if rc < 0 else rc)
                if order == 0:
                    self.uptodate.add(base)
                done += 1
            except GmemError:
                if done == 0:
                    raise
                break
        self.log.append(("populate", start_gfn, done))
        return done

    # ------------------------------------------------------------ migration
    def migrate(self, index: int) -> MigrateAnswer:
        """The proposed migration handshake for the page at ``index``: allocate a target page,
        ask the MMU (``migrate`` hook, MMU lock held) for each bound gfn; on success the file
        points at the new page and the old one is freed, otherwise nothing changes."""
        index = self._index(index)
        f = self.folio_of(index)
        if f is None:
            raise GmemError(f"migrate: index {index:#x} has no folio", _errno.ENOENT)
        base, bpfn, order = f
        if order:
            return MigrateAnswer(False, _errno.EOPNOTSUPP,
                                 ("large folios are not migrated in this model",))
        old = bpfn
        b = self.binding_at(index)
        if base in self.poisoned:
            raise GmemError(f"migrate: index {index:#x} is hwpoisoned (a poisoned folio is "
                            "never migrated: its contents are lost)", EHWPOISON)
        new = self.host.alloc(self.owner_tag, 0)
        kvm = self.kvm
        try:
            with kvm.mmu_lock():
                if b is None:
                    ans = MigrateAnswer(True, 0, ("unbound page: plain copy",))
                else:
                    gfn = b.slot.base_gfn + index - b.pgoff
                    ans = kvm.gmem_hooks.migrate(kvm, b.slot, gfn, PG_LEVEL_4K, old, new)
        except BaseException:
            self.host.free(new, 0)
            raise
        if not ans.ok:
            self.host.free(new, 0)
            self.log.append(("migrate-refused", index, ans.errno))
            return ans
        self._pfn[index] = new
        self._folio[index] = (new, 0)
        self.host.free(old, 0)
        if b is not None and hasattr(kvm, "_fc_drop"):      # the VM's fault cache (pykvmmu.vm)
            gfn = b.slot.base_gfn + index - b.pgoff
            kvm._fc_drop(gfn, gfn + 1)
        self.log.append(("migrate", index, old, new))
        return ans

    # ------------------------------------------------------------ views
    def allocated_pfns(self) -> dict:
        """index -> pfn of every allocated page."""
        return dict(self._pfn)

    def foreign_pages(self) -> dict:
        """index -> pfn of the allocated pages that host memory does not record as this file's
        (an invariant: empty)."""
        owner, tag = self.host.owner, self.owner_tag
        return {i: p for i, p in self._pfn.items() if owner.get(p) != tag}

    def __repr__(self) -> str:
        return (f"<GuestMemfd fd={self.fd} size={self.size:#x} flags={self.flags:#x} "
                f"pages={len(self._pfn)} bindings={len(self._binds)}>")
