"""Memslots: the ``kvm_memory_slot`` records of a VM and their generation life cycle.

:class:`Memslot` and :class:`MemslotSet` are the slots themselves (``include/linux/kvm_host.h``:
gfn range, userspace address, flags, guest_memfd binding; ``__gfn_to_memslot`` lookup;
``check_memory_region_flags``), as :class:`pykvmmu.vm.Vm` keeps them.

The generation life cycle, as far as MMIO SPTEs see it:

Model of virt/kvm/kvm_main.c (``kvm_create_vm``, ``kvm_swap_active_memslots``) and
x86's ``kvm_arch_memslots_updated`` -> ``kvm_mmu_invalidate_mmio_sptes``:

- address space ``i`` starts at generation ``i``;
- while an update is in flight the new slots carry ``old | BIT63`` (update in progress);
- when it completes the generation becomes ``(gen & ~BIT63) + nr_as_ids``, where
  ``kvm_arch_nr_memslot_as_ids()`` is 1 for a VM with private memory and 2 otherwise
  (SMM), so with 2 the address spaces use the even and the odd generations;
- the new generation is passed to ``kvm_mmu_invalidate_mmio_sptes``, which zaps every
  root when the masked generation (address-space modifier stripped) reaches 0.
"""
from __future__ import annotations

import errno as _errno
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ._batch import uint
from ._check import boolean, snapshot
from .config import ACC_ALL, MmuConfig
from .errors import InputError
from .mmio import (KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS, check_mmio_spte,
                   kvm_mmu_invalidate_mmio_sptes, kvm_mmu_invalidate_mmio_sptes_batch,
                   make_mmio_spte, mmio_fault_outcome)

__all__ = ["kvm_arch_nr_memslot_as_ids", "MemslotGenerations", "generation_sequence",
           "KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS", "KVM_MEM_LOG_DIRTY_PAGES", "KVM_MEM_READONLY",
           "KVM_MEM_GUEST_MEMFD", "KVM_USER_MEM_SLOTS", "VmError", "Memslot", "MemslotSet",
           "check_memory_region_flags"]

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2
KVM_USER_MEM_SLOTS = 32764


class VmError(InputError):
    """A VM operation (memslot update, ioctl) broke a rule; ``errno`` is the kernel's."""

    def __init__(self, msg: str, errno: int = _errno.EINVAL):
        super().__init__(f"{msg} (-{_errno.errorcode.get(errno, errno)})")
        self.errno = errno


#: The Memslot fields :meth:`Memslot.kind` reads.
_KIND_INPUTS = frozenset(("flags", "gmem_only"))


@dataclass
class Memslot:
    """A ``kvm_memory_slot``: gfn range, userspace address, flags, guest_memfd binding
    (``gmem_file`` a :class:`pykvmmu.gmem.GuestMemfd`, set by its ``bind``)."""

    id: int
    base_gfn: int
    npages: int
    userspace_addr: int
    flags: int = 0
    gmem_file: Optional[Any] = None
    gmem_pgoff: int = 0
    gmem_only: bool = False
    _kind: str = field(init=False, repr=False, compare=False)   # kind(), kept current

    def __post_init__(self):
        self.id = uint("id", self.id, 32, err=VmError)
        self.base_gfn = uint("base_gfn", self.base_gfn, err=VmError)
        self.npages = uint("npages", self.npages, err=VmError)
        if self.npages == 0:
            raise VmError("npages=0: a memslot has at least one page")
        self.userspace_addr = uint("userspace_addr", self.userspace_addr, err=VmError)
        self.flags = uint("flags", self.flags, 32, err=VmError)
        self._kind = self.kind()

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in _KIND_INPUTS and "_kind" in self.__dict__:
            object.__setattr__(self, "_kind", self.kind())

    @property
    def end_gfn(self) -> int:
        return self.base_gfn + self.npages

    def contains(self, gfn: int) -> bool:
        return self.base_gfn <= gfn < self.base_gfn + self.npages

    def kind(self) -> str:
        """``"plain"``, ``"gmem"`` or ``"gmem_only"`` (an mmap-able guest_memfd, v6.18+): the
        memslot kinds of :func:`pykvmmu.private.faultin_action`.  ``_kind`` holds the answer,
        recomputed whenever ``flags`` or ``gmem_only`` is set (the fault path reads it)."""
        if self.flags & KVM_MEM_GUEST_MEMFD:
            return "gmem_only" if self.gmem_only else "gmem"
        return "plain"


def check_memory_region_flags(flags: int, *, has_private_mem: bool, has_protected_state: bool,
                              any_vm_gmem: bool) -> int:
    """``check_memory_region_flags()``: the flag bits valid for this VM and these flags
    (LOG_DIRTY_PAGES always but not with GUEST_MEMFD; GUEST_MEMFD with private memory, or
    for any VM from v6.18 (``any_vm_gmem``, d1e54dd08f16); READONLY without protected state,
    not with GUEST_MEMFD)."""
    valid = KVM_MEM_LOG_DIRTY_PAGES
    if has_private_mem or any_vm_gmem:
        valid |= KVM_MEM_GUEST_MEMFD
    if flags & KVM_MEM_GUEST_MEMFD:
        valid &= ~KVM_MEM_LOG_DIRTY_PAGES
    if not has_protected_state and not flags & KVM_MEM_GUEST_MEMFD:
        valid |= KVM_MEM_READONLY
    return valid


class MemslotSet:
    """One address space's memslots, sorted by base gfn: ``__gfn_to_memslot`` (bisect), the id
    lookup and the overlap rule of ``kvm_set_memory_region``.  ``slots`` is the sorted list."""

    def __init__(self) -> None:
        self.slots: list = []
        self._bases: list = []

    def at(self, gfn: int) -> Optional[Memslot]:
        """The slot holding ``gfn`` (a checked int), or None."""
        i = bisect_right(self._bases, gfn) - 1
        if i >= 0:
            s = self.slots[i]
            if gfn < s.base_gfn + s.npages:
                return s
        return None

    def by_id(self, slot_id: int) -> Optional[Memslot]:
        return next((s for s in self.slots if s.id == slot_id), None)

    def overlapping(self, base: int, npages: int, skip=None) -> Optional[Memslot]:
        """A slot other than ``skip`` intersecting gfns [base, base + npages), or None."""
        return next((s for s in self.slots if s is not skip and s.base_gfn < base + npages
                     and base < s.end_gfn), None)

    def add(self, slot: Memslot) -> None:
        self.slots.append(slot)
        self.resort()

    def remove(self, slot: Memslot) -> None:
        self.slots.remove(slot)
        self.resort()

    def resort(self) -> None:
        """Re-sort after a slot was added, removed or moved."""
        self.slots.sort(key=lambda s: s.base_gfn)
        self._bases = [s.base_gfn for s in self.slots]

    def __len__(self) -> int:
        return len(self.slots)


def kvm_arch_nr_memslot_as_ids(private_mem: bool) -> int:
    """x86 ``kvm_arch_nr_memslot_as_ids()``: 1 with private memory (no SMM), else 2."""
    return 1 if boolean("private_mem", private_mem) else 2


class MemslotGenerations:
    """The memslots generation of every address space of one VM, and its MMIO SPTEs' fate.

    ``update(as_id)`` is a whole memslot update; ``begin_update``/``end_update`` split it
    to look at the in-progress window.  ``zaps`` counts ``kvm_mmu_zap_all_fast`` calls.
    """

    def __init__(self, cfg: MmuConfig, private_mem: bool = False):
        if not isinstance(cfg, MmuConfig):
            raise InputError(f"cfg={cfg!r}: expected an MmuConfig")
        self.cfg = cfg
        self.nr_as_ids = kvm_arch_nr_memslot_as_ids(private_mem)
        self._gen = list(range(self.nr_as_ids))
        self.zaps = 0

    def _as(self, as_id) -> int:
        a = uint("as_id", as_id, 8)
        if a >= self.nr_as_ids:
            raise InputError(f"as_id={a}: this VM has {self.nr_as_ids} memslot address space(s)")
        return a

    def _snapshot(self):
        return snapshot((self.nr_as_ids, self._gen, self.zaps))

    def generation(self, as_id: int = 0) -> int:
        """``kvm_memslots(kvm, as_id)->generation`` (bit 63 set during an update)."""
        return self._gen[self._as(as_id)]

    def in_progress(self, as_id: int = 0) -> bool:
        return bool(self.generation(as_id) & KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS)

    def begin_update(self, as_id: int = 0) -> int:
        """The new slots are published with ``gen | KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS``."""
        a = self._as(as_id)
        if self._gen[a] & KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS:
            raise InputError(f"as_id={a}: a memslot update is already in progress "
                             "(WARN in kvm_swap_active_memslots; updates hold slots_lock)")
        self._gen[a] |= KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS
        return self._gen[a]

    def end_update(self, as_id: int = 0) -> bool:
        """After SRCU sync: drop bit 63, add nr_as_ids, call kvm_mmu_invalidate_mmio_sptes.
        Returns True when that zapped every root (the MMIO generation wrapped)."""
        a = self._as(as_id)
        if not self._gen[a] & KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS:
            raise InputError(f"as_id={a}: no memslot update in progress")
        gen = (self._gen[a] & ~KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS) + self.nr_as_ids
        zap = kvm_mmu_invalidate_mmio_sptes(self.cfg, gen, self.nr_as_ids)
        self._gen[a] = gen
        self.zaps += zap
        return zap

    def update(self, as_id: int = 0) -> bool:
        """One complete memslot update of ``as_id``; True if it zapped all roots."""
        self.begin_update(as_id)
        return self.end_update(as_id)

    def make_mmio_spte(self, gfn: int, access: int = ACC_ALL, as_id: int = 0) -> int:
        """``make_mmio_spte`` as a vCPU in ``as_id`` builds it now (the in-progress bit is
        masked away, so during an update the SPTE carries the pre-update generation)."""
        return make_mmio_spte(self.cfg, gfn, access, self.generation(as_id))

    def check(self, spte: int, as_id: int = 0) -> bool:
        """``check_mmio_spte`` for a vCPU in ``as_id``."""
        return check_mmio_spte(self.cfg, spte, self.generation(as_id))

    def fault(self, spte: int, as_id: int = 0) -> str:
        """The outcome of a fault on ``spte`` (one of FAULT_OUTCOMES)."""
        return mmio_fault_outcome(self.cfg, spte, self.generation(as_id))

    def __repr__(self) -> str:
        gens = ", ".join(f"as{i}={g:#x}" for i, g in enumerate(self._gen))
        return f"MemslotGenerations({gens}, nr_as_ids={self.nr_as_ids}, zaps={self.zaps})"


def generation_sequence(cfg: MmuConfig, n_updates: int, *, as_id: int = 0, private_mem: bool = False,
                        start: int | None = None):
    """``n_updates`` consecutive memslot updates of one address space, in batch.

    Returns ``(gen, zap)``: ``gen[k]`` is the generation after k updates (``gen[0]`` the
    start, default ``as_id``), ``zap[k]`` whether update k made kvm_mmu_invalidate_mmio_sptes
    zap every root (``zap[0]`` is False).
    """
    n = uint("n_updates", n_updates)
    nr = kvm_arch_nr_memslot_as_ids(private_mem)
    a = uint("as_id", as_id, 8)
    if a >= nr:
        raise InputError(f"as_id={a}: this VM has {nr} memslot address space(s)")
    s = a if start is None else uint("start", start)
    if s % nr != a:
        raise InputError(f"start={s:#x}: address space {a} uses generations congruent to {a} mod {nr}")
    if s + nr * n >= KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS:
        raise InputError("generation_sequence: the generation would reach bit 63")
    gen = np.arange(n + 1, dtype=np.uint64) * np.uint64(nr) + np.uint64(s)
    zap = kvm_mmu_invalidate_mmio_sptes_batch(cfg, gen, nr)
    zap[0] = False
    return gen, zap

