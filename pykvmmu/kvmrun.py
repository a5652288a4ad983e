"""A small guest runner for a real ``/dev/kvm``: build a VM from a JSON-able description and run it.

A :class:`GuestDesc` lists memslots (plain, read-only, dirty-logged, guest_memfd), guest page
tables (4- or 5-level, 4 KiB / 2 MiB pages, per-entry R/W/U/NX/A/D, aliases), control-register
bits (CR0.WP, CR4.SMEP/SMAP/PKE, EFER.NX) and one or more *runs*: memslot changes applied before
the run (move, delete, flags) and a program of guest accesses (reads, writes, fetches, MMIO,
page-table writes followed by INVLPG or a CR3 reload).  The program is compiled to x86-64
machine code by the tiny encoder below (no assembler at run time), entered in 64-bit long mode
and bounded by a timer: every ``KVM_RUN`` returns.

Two kinds of host are handled (:func:`detect_host`): a standard VMX/SVM KVM, and the
``kvm_pvm`` module of the project's machines, where the guest runs at hardware CPL3 on the
shadow MMU, must register its per-vCPU page by ``WRMSR 0x4b564d10`` (see
``../shared/spec/live-kvm.md``) and needs U=1 in every paging entry.  What a host cannot run is
refused with :class:`HostUnsupported` naming the reason.

The ioctl numbers and struct layouts are those of ``include/uapi/linux/kvm.h`` and
``arch/x86/include/uapi/asm/kvm.h`` (kvm_userspace_memory_region(2), kvm_regs, kvm_sregs,
kvm_run, kvm_cpuid2, kvm_dirty_log, kvm_create_guest_memfd).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import signal
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import InputError, PykvmmuError

__all__ = ["Memslot", "Mapping", "PageTables", "Registers", "Op", "SlotChange", "Run", "GuestDesc",
           "RunResult", "HostInfo", "host_refusal", "KvmError", "HostUnsupported", "GuestTimeout", "detect_host", "run_guest",
           "build_page_tables", "compile_program", "Asm", "demo_guest", "load_desc", "PVM_MSR_VIF",
           "PVM_MSR_ID", "OP_KINDS"]


class KvmError(PykvmmuError, OSError):
    """An ioctl on /dev/kvm failed, or the guest stopped in an unexpected way."""


class HostUnsupported(PykvmmuError):
    """This host cannot run the description (no /dev/kvm, not permitted, missing capability)."""


class GuestTimeout(KvmError):
    """The guest did not reach its final HLT within the time limit."""


PAGE = 0x1000
HUGE = 0x200000
PVM_MSR_VIF = 0x4B564D10     # guest WRMSRs its per-vCPU page GPA here (live-kvm.md item 2)
PVM_MSR_ID = 0x4B564D11      # guest RDMSR returns 0x4d5650 "PVM"

# ---------------------------------------------------------------------------------------------
# ioctl numbers (asm-generic/ioctl.h encoding: dir << 30 | size << 16 | type << 8 | nr)
_KVMIO = 0xAE


def _ioc(d: int, nr: int, size: int) -> int:
    return (d << 30) | (size << 16) | (_KVMIO << 8) | nr


KVM_GET_API_VERSION = _ioc(0, 0x00, 0)
KVM_CREATE_VM = _ioc(0, 0x01, 0)
KVM_CHECK_EXTENSION = _ioc(0, 0x03, 0)
KVM_GET_VCPU_MMAP_SIZE = _ioc(0, 0x04, 0)
KVM_GET_SUPPORTED_CPUID = _ioc(3, 0x05, 8)
KVM_CREATE_VCPU = _ioc(0, 0x41, 0)
KVM_GET_DIRTY_LOG = _ioc(1, 0x42, 16)
KVM_SET_USER_MEMORY_REGION = _ioc(1, 0x46, 32)
KVM_SET_USER_MEMORY_REGION2 = _ioc(1, 0x49, 160)
KVM_SET_TSS_ADDR = _ioc(0, 0x47, 0)
KVM_RUN = _ioc(0, 0x80, 0)
KVM_GET_REGS = _ioc(2, 0x81, 144)
KVM_SET_REGS = _ioc(1, 0x82, 144)
KVM_GET_SREGS = _ioc(2, 0x83, 312)
KVM_SET_SREGS = _ioc(1, 0x84, 312)
KVM_SET_CPUID2 = _ioc(1, 0x90, 8)
KVM_CREATE_GUEST_MEMFD = _ioc(3, 0xD4, 64)

KVM_CAP_USER_MEMORY2 = 231
KVM_CAP_GUEST_MEMFD = 234
KVM_CAP_READONLY_MEM = 81
KVM_CAP_GUEST_MEMFD_FLAGS = 244

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2
GUEST_MEMFD_FLAG_MMAP = 1 << 0
GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1

EXIT_NAMES = {0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT", 6: "MMIO",
              7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR", 17: "INTERNAL_ERROR",
              24: "SYSTEM_EVENT", 39: "MEMORY_FAULT"}
EXIT_IO, EXIT_HLT, EXIT_MMIO, EXIT_INTR = 2, 5, 6, 10

# paging-entry bits (SDM vol. 3 4.5)
PT_P, PT_W, PT_U, PT_A, PT_D, PT_PS = 1 << 0, 1 << 1, 1 << 2, 1 << 5, 1 << 6, 1 << 7
PT_NX = 1 << 63
CR0_BASE = 0x80050033        # PG | AM | WP | NE | ET | MP | PE
CR0_WP = 1 << 16
CR4_PAE, CR4_OSFXSR, CR4_OSXMMEXCPT, CR4_LA57 = 1 << 5, 1 << 9, 1 << 10, 1 << 12
CR4_SMEP, CR4_SMAP, CR4_PKE = 1 << 20, 1 << 21, 1 << 22
EFER_SCE, EFER_LME, EFER_LMA, EFER_NX = 1 << 0, 1 << 8, 1 << 10, 1 << 11


def _check_int(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"{name}={v!r}: must be an integer")
    if not lo <= v <= hi:
        raise InputError(f"{name}={v:#x}: must be in [{lo:#x}, {hi:#x}]")
    return v


def _check_levels(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v not in (4, 5):
        raise InputError(f"{name}={v!r}: must be 4 or 5")
    return v


def _check_bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise InputError(f"{name}={v!r}: must be true or false")
    return v


def _aligned(name: str, v: int, align: int) -> None:
    if v % align:
        raise InputError(f"{name}={v:#x}: must be a multiple of {align:#x}")


# ---------------------------------------------------------------------------------------------
# the description

@dataclass
class Memslot:
    """One KVM memslot: ``flags`` from {"readonly", "dirty_log"}; ``guest_memfd`` backs it by a
    guest_memfd (shared, mmap-able) instead of anonymous memory."""
    slot: int
    gpa: int
    size: int
    flags: list = field(default_factory=list)
    guest_memfd: bool = False

    def check(self, where: str) -> None:
        _check_int(f"{where}.slot", self.slot, 0, 0x7FFF)
        _check_int(f"{where}.gpa", self.gpa, 0, (1 << 48) - PAGE)
        _check_int(f"{where}.size", self.size, PAGE, 1 << 32)
        _aligned(f"{where}.gpa", self.gpa, PAGE)
        _aligned(f"{where}.size", self.size, PAGE)
        if not isinstance(self.flags, list) or any(f not in ("readonly", "dirty_log") for f in self.flags):
            raise InputError(f"{where}.flags={self.flags!r}: must be a list of 'readonly', 'dirty_log'")
        _check_bool(f"{where}.guest_memfd", self.guest_memfd)
        if self.guest_memfd and self.flags:
            raise InputError(f"{where}: a guest_memfd memslot cannot be read-only or dirty-logged "
                             f"(check_memory_region_flags refuses both)")

    def kvm_flags(self) -> int:
        return ((KVM_MEM_READONLY if "readonly" in self.flags else 0)
                | (KVM_MEM_LOG_DIRTY_PAGES if "dirty_log" in self.flags else 0))


@dataclass
class Mapping:
    """A guest-virtual range mapped to guest-physical memory by one leaf entry per page.

    ``page`` is "4K" or "2M"; ``count`` pages of that size from (gva, gpa).  ``present``,
    ``w``, ``u``, ``nx``, ``a``, ``d`` are the leaf entry's bits.  Two mappings with the same
    gpa are aliases."""
    gva: int
    gpa: int
    page: str = "4K"
    count: int = 1
    present: bool = True
    w: bool = True
    u: bool = True
    nx: bool = False
    a: bool = False
    d: bool = False

    def size(self) -> int:
        return (PAGE if self.page == "4K" else HUGE) * self.count

    def check(self, where: str, levels: int) -> None:
        if self.page not in ("4K", "2M"):
            raise InputError(f"{where}.page={self.page!r}: must be '4K' or '2M' (1 GiB pages are not "
                             f"supported by the runner)")
        top = 1 << (48 if levels == 4 else 57)
        _check_int(f"{where}.count", self.count, 1, 512)
        _check_int(f"{where}.gva", self.gva, 0, top // 2 - self.size())
        _check_int(f"{where}.gpa", self.gpa, 0, (1 << 48) - self.size())
        align = PAGE if self.page == "4K" else HUGE
        _aligned(f"{where}.gva", self.gva, align)
        _aligned(f"{where}.gpa", self.gpa, align)
        for b in ("present", "w", "u", "nx", "a", "d"):
            _check_bool(f"{where}.{b}", getattr(self, b))


@dataclass
class PageTables:
    """Guest page tables: ``levels`` 4 or 5, built in [base, base + size) (guest-physical,
    inside a writable memslot); ``window_gva``, when set, maps that whole region at this
    guest-virtual address (4 KiB, writable) so the program can write page-table entries."""
    levels: int = 4
    base: int = 0x10000
    size: int = 0x10000
    window_gva: int | None = 0x600000
    mappings: list = field(default_factory=list)


@dataclass
class Registers:
    """Control-register bits the guest is entered with (CR0.PG/PE, CR4.PAE and EFER.LME/LMA
    are always set: the runner enters in long mode)."""
    cr0_wp: bool = True
    cr4_smep: bool = False
    cr4_smap: bool = False
    cr4_pke: bool = False
    efer_nx: bool = True

    def check(self) -> None:
        for k in ("cr0_wp", "cr4_smep", "cr4_smap", "cr4_pke", "efer_nx"):
            _check_bool(f"registers.{k}", getattr(self, k))


OP_KINDS = ("read", "write", "fetch", "invlpg", "cr3_reload", "pte_write", "out", "rdmsr", "spin")


@dataclass
class Op:
    """One guest action.

    - read/write: 8-byte load/store at guest-virtual ``addr`` (``value`` is stored); an address
      whose guest-physical page is in no memslot is MMIO (the runner answers with ``value``).
    - fetch: call ``addr`` (the runner puts a RET at its guest-physical address).
    - invlpg: INVLPG [addr].  cr3_reload: MOV CR3 with the current CR3.
    - pte_write: store ``value`` into the leaf entry that maps ``addr`` (through the page-table
      window), then ``flush`` = "invlpg" (of addr), "cr3" or "none".
    - out: OUT to port ``addr`` (byte ``value``).  rdmsr: RDMSR ``addr``.
    - spin: JMP to itself, forever: the run ends by the time limit (GuestTimeout).
    """
    kind: str
    addr: int = 0
    value: int = 0
    flush: str = "invlpg"

    def check(self, where: str) -> None:
        if self.kind not in OP_KINDS:
            raise InputError(f"{where}.kind={self.kind!r}: must be one of {', '.join(OP_KINDS)}")
        _check_int(f"{where}.addr", self.addr, 0, (1 << 64) - 1)
        _check_int(f"{where}.value", self.value, 0, (1 << 64) - 1)
        if self.flush not in ("invlpg", "cr3", "none"):
            raise InputError(f"{where}.flush={self.flush!r}: must be 'invlpg', 'cr3' or 'none'")
        if self.kind == "out":
            _check_int(f"{where}.addr (port)", self.addr, 0, 0xFFFF)
            _check_int(f"{where}.value (byte)", self.value, 0, 0xFF)
        if self.kind == "rdmsr":
            _check_int(f"{where}.addr (msr)", self.addr, 0, 0xFFFFFFFF)


@dataclass
class SlotChange:
    """A memslot change applied between runs: "delete" the slot, "move" it to ``gpa``, or
    set its ``flags`` (e.g. ["dirty_log"] or [])."""
    action: str
    slot: int
    gpa: int = 0
    flags: list = field(default_factory=list)

    def check(self, where: str) -> None:
        if self.action not in ("delete", "move", "flags"):
            raise InputError(f"{where}.action={self.action!r}: must be 'delete', 'move' or 'flags'")
        _check_int(f"{where}.slot", self.slot, 0, 0x7FFF)
        _check_int(f"{where}.gpa", self.gpa, 0, (1 << 48) - PAGE)
        _aligned(f"{where}.gpa", self.gpa, PAGE)
        if not isinstance(self.flags, list) or any(f not in ("readonly", "dirty_log") for f in self.flags):
            raise InputError(f"{where}.flags={self.flags!r}: must be a list of 'readonly', 'dirty_log'")


@dataclass
class Run:
    """Memslot changes, then a program that ends in HLT."""
    program: list = field(default_factory=list)
    changes: list = field(default_factory=list)


@dataclass
class GuestDesc:
    """A whole guest: memslots, page tables, registers, fixed pages (code, stack, the PVM
    per-vCPU page) and the runs.  JSON round-trips through :meth:`to_json` / :meth:`from_json`."""
    memslots: list = field(default_factory=list)
    page_tables: PageTables = field(default_factory=PageTables)
    registers: Registers = field(default_factory=Registers)
    runs: list = field(default_factory=list)
    code_gpa: int = 0x1000
    code_gva: int = 0x400000
    code_pages: int = 2
    stack_gpa: int = 0x4000
    stack_gva: int = 0x7FF000
    vif_gpa: int = 0x3000
    timeout: float = 5.0

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "GuestDesc":
        if not isinstance(d, dict):
            raise InputError(f"guest description {type(d).__name__}: must be a JSON object")
        try:
            d = dict(d)
            pt = dict(d.pop("page_tables", {}))
            pt["mappings"] = [Mapping(**m) for m in pt.get("mappings", [])]
            desc = cls(memslots=[Memslot(**m) for m in d.pop("memslots", [])],
                       page_tables=PageTables(**pt),
                       registers=Registers(**d.pop("registers", {})),
                       runs=[Run(program=[Op(**o) for o in r.get("program", [])],
                                 changes=[SlotChange(**c) for c in r.get("changes", [])])
                             for r in d.pop("runs", [])],
                       **d)
        except TypeError as e:
            raise InputError(f"guest description: {e} (unknown or missing field)") from None
        except (AttributeError, ValueError) as e:
            raise InputError(f"guest description: {e} (each of memslots, page_tables.mappings, runs, "
                             f"program, changes must hold JSON objects)") from None
        desc.check()
        return desc

    @classmethod
    def from_json(cls, text: str) -> "GuestDesc":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise InputError(f"guest description is not JSON: {e}") from None

    # -- validation ----------------------------------------------------------------------------
    def slot_of(self, gpa: int, slots=None):
        _check_int("gpa", gpa, 0, (1 << 64) - 1)
        for s in (self.memslots if slots is None else slots):
            if s.gpa <= gpa < s.gpa + s.size:
                return s
        return None

    def check(self) -> None:
        """Check every field; raise InputError naming the first bad value and its rule."""
        if not isinstance(self.memslots, list) or not self.memslots:
            raise InputError("memslots: at least one memslot is needed")
        seen = {}
        for i, s in enumerate(self.memslots):
            if not isinstance(s, Memslot):
                raise InputError(f"memslots[{i}]={s!r}: must be a Memslot")
            s.check(f"memslots[{i}]")
            if s.slot in seen:
                raise InputError(f"memslots[{i}].slot={s.slot}: used twice")
            seen[s.slot] = s
        _check_overlap(self.memslots, "memslots")
        pt = self.page_tables
        if not isinstance(pt, PageTables):
            raise InputError(f"page_tables={pt!r}: must be a PageTables")
        _check_levels("page_tables.levels", pt.levels)
        _check_int("page_tables.base", pt.base, 0, (1 << 48) - PAGE)
        _check_int("page_tables.size", pt.size, PAGE, 0x100000)
        _aligned("page_tables.base", pt.base, PAGE)
        _aligned("page_tables.size", pt.size, PAGE)
        self._writable("page_tables", pt.base, pt.size)
        if pt.window_gva is not None:
            _check_int("page_tables.window_gva", pt.window_gva, 0, (1 << 47) - pt.size)
            _aligned("page_tables.window_gva", pt.window_gva, PAGE)
        if not isinstance(pt.mappings, list):
            raise InputError("page_tables.mappings: must be a list")
        for i, m in enumerate(pt.mappings):
            if not isinstance(m, Mapping):
                raise InputError(f"page_tables.mappings[{i}]={m!r}: must be a Mapping")
            m.check(f"page_tables.mappings[{i}]", pt.levels)
        if not isinstance(self.registers, Registers):
            raise InputError(f"registers={self.registers!r}: must be a Registers")
        self.registers.check()
        if not self.registers.efer_nx:
            for i, m in enumerate(pt.mappings):
                if m.nx:
                    raise InputError(f"page_tables.mappings[{i}].nx=True with registers.efer_nx=False: NX is "
                                     f"a reserved bit when EFER.NX=0 (the walk would fault)")
        _check_int("code_pages", self.code_pages, 1, 16)
        for name, size in (("code", self.code_pages * PAGE), ("stack", PAGE), ("vif", PAGE)):
            gpa = getattr(self, f"{name}_gpa")
            _check_int(f"{name}_gpa", gpa, 0, (1 << 48) - size)
            _aligned(f"{name}_gpa", gpa, PAGE)
            self._writable(name, gpa, size)
            if name != "vif":
                gva = getattr(self, f"{name}_gva")
                _check_int(f"{name}_gva", gva, 0, (1 << 47) - size)
                _aligned(f"{name}_gva", gva, PAGE)
        fixed = [("code", self.code_gpa, self.code_pages * PAGE), ("stack", self.stack_gpa, PAGE),
                 ("vif", self.vif_gpa, PAGE), ("page_tables", pt.base, pt.size)]
        for i, (a, lo, n) in enumerate(fixed):
            for b, lo2, n2 in fixed[i + 1:]:
                if lo < lo2 + n2 and lo2 < lo + n:
                    raise InputError(f"{a} [{lo:#x}, {lo + n:#x}) overlaps {b} [{lo2:#x}, {lo2 + n2:#x})")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) \
                or not 0 < self.timeout <= 600:
            raise InputError(f"timeout={self.timeout!r}: must be a number of seconds in (0, 600]")
        if not isinstance(self.runs, list) or not self.runs:
            raise InputError("runs: at least one run is needed")
        for r_i, r in enumerate(self.runs):
            if not isinstance(r, Run):
                raise InputError(f"runs[{r_i}]={r!r}: must be a Run")
            for what in ("changes", "program"):
                if not isinstance(getattr(r, what), list):
                    raise InputError(f"runs[{r_i}].{what}={getattr(r, what)!r}: must be a list")
            for i, c in enumerate(r.changes):
                if not isinstance(c, SlotChange):
                    raise InputError(f"runs[{r_i}].changes[{i}]={c!r}: must be a SlotChange")
                c.check(f"runs[{r_i}].changes[{i}]")
            for i, o in enumerate(r.program):
                if not isinstance(o, Op):
                    raise InputError(f"runs[{r_i}].program[{i}]={o!r}: must be an Op")
                o.check(f"runs[{r_i}].program[{i}]")
                if o.kind == "pte_write" and pt.window_gva is None:
                    raise InputError(f"runs[{r_i}].program[{i}]: pte_write needs page_tables.window_gva")
        # slot changes must name existing slots and keep the fixed pages in place
        slots = {s.slot: Memslot(**asdict(s)) for s in self.memslots}
        for r_i, r in enumerate(self.runs):
            for i, c in enumerate(r.changes):
                where = f"runs[{r_i}].changes[{i}]"
                if c.slot not in slots:
                    raise InputError(f"{where}.slot={c.slot}: no such memslot at that point")
                if c.action == "delete":
                    del slots[c.slot]
                elif c.action == "move":
                    slots[c.slot].gpa = c.gpa
                else:
                    if slots[c.slot].guest_memfd and c.flags:
                        raise InputError(f"{where}: a guest_memfd memslot cannot be read-only or dirty-logged")
                    slots[c.slot].flags = list(c.flags)
                _check_overlap(list(slots.values()), where)
                for name, lo, n in fixed:
                    s = self.slot_of(lo, list(slots.values()))
                    if s is None or lo + n > s.gpa + s.size or "readonly" in s.flags:
                        raise InputError(f"{where}: leaves {name} [{lo:#x}, {lo + n:#x}) outside a "
                                         f"writable memslot")
        self.compile()       # the program must compile (code fits in code_pages, PTE lookups)

    def _writable(self, name: str, gpa: int, size: int) -> None:
        s = self.slot_of(gpa)
        if s is None or gpa + size > s.gpa + s.size or "readonly" in s.flags:
            raise InputError(f"{name} [{gpa:#x}, {gpa + size:#x}) must lie in one writable memslot")

    def all_mappings(self) -> list:
        """The description's mappings plus the runner's own: code, stack, page-table window."""
        pt = self.page_tables
        r = self.registers
        u = not (r.cr4_smep or r.cr4_smap)     # supervisor pages under SMEP/SMAP, user pages otherwise
        extra = [Mapping(gva=self.code_gva, gpa=self.code_gpa, count=self.code_pages, w=False, u=u, a=True),
                 Mapping(gva=self.stack_gva, gpa=self.stack_gpa, u=u, nx=r.efer_nx, a=True, d=True)]
        if pt.window_gva is not None:
            extra.append(Mapping(gva=pt.window_gva, gpa=pt.base, count=pt.size // PAGE, u=u, nx=r.efer_nx))
        return list(pt.mappings) + extra

    def compile(self):
        """Build page tables and machine code: (tables {gpa: bytes}, leaf {gva: (pte_gpa, pte)},
        code bytes, entry offsets per run, fetch targets' gpas)."""
        tables, leaves, root = build_page_tables(self.page_tables.levels, self.page_tables.base,
                                                 self.page_tables.size, self.all_mappings())
        code, entries, fetch = compile_program(self, leaves, root)
        if len(code) > self.code_pages * PAGE:
            raise InputError(f"program: {len(code)} bytes of code do not fit in code_pages="
                             f"{self.code_pages} ({self.code_pages * PAGE} bytes)")
        return tables, leaves, root, code, entries, fetch


def _check_overlap(slots, where: str) -> None:
    ss = sorted(slots, key=lambda s: s.gpa)
    for a, b in zip(ss, ss[1:]):
        if a.gpa + a.size > b.gpa:
            raise InputError(f"{where}: memslot {a.slot} [{a.gpa:#x}, {a.gpa + a.size:#x}) overlaps "
                             f"memslot {b.slot} at {b.gpa:#x}")


def load_desc(path: str) -> GuestDesc:
    """Read a guest description from a JSON file."""
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"path={path!r}: expected a file path")
    try:
        with open(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"guest description {path!r}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return GuestDesc.from_json(text)
    except InputError as e:
        raise InputError(f"guest description {path!r}: {e}") from None


# ---------------------------------------------------------------------------------------------
# page tables

def build_page_tables(levels: int, base: int, size: int, mappings: list):
    """Lay out 4- or 5-level x86-64 page tables for ``mappings`` in [base, base + size).

    Returns ({table gpa: bytearray(4096)}, {page gva: (entry gpa, entry value, level)}, root gpa).
    Non-leaf entries are P|W|U|A (the leaf decides the access); a leaf carries the mapping's
    bits, PS at level 2 for 2 MiB pages.  Two mappings of one page conflict (InputError)."""
    _check_levels("levels", levels)
    _check_int("base", base, 0, (1 << 48) - PAGE)
    _check_int("size", size, PAGE, 0x100000)
    _aligned("base", base, PAGE)
    _aligned("size", size, PAGE)
    if not isinstance(mappings, list) or not all(isinstance(m, Mapping) for m in mappings):
        raise InputError(f"mappings={mappings!r}: must be a list of Mapping")
    tables: dict = {}
    order: list[int] = []

    def alloc():
        gpa = base + len(order) * PAGE
        if gpa + PAGE > base + size:
            raise InputError(f"page tables need more than page_tables.size={size:#x} bytes")
        order.append(gpa)
        tables[gpa] = bytearray(PAGE)
        return gpa

    root = alloc()
    leaves = {}
    for m in mappings:
        step = PAGE if m.page == "4K" else HUGE
        leaf_level = 1 if m.page == "4K" else 2
        for k in range(m.count):
            gva, gpa = m.gva + k * step, m.gpa + k * step
            table = root
            for level in range(levels, leaf_level, -1):
                idx = (gva >> (12 + 9 * (level - 1))) & 0x1FF
                (e,) = struct.unpack_from("<Q", tables[table], idx * 8)
                if e == 0:
                    nxt = alloc()
                    struct.pack_into("<Q", tables[table], idx * 8, nxt | PT_P | PT_W | PT_U | PT_A)
                    table = nxt
                elif e & PT_PS and level <= 3:
                    raise InputError(f"mapping gva {gva:#x}: a 2M page already maps this range")
                else:
                    table = e & 0x000FFFFFFFFFF000
            idx = (gva >> (12 + 9 * (leaf_level - 1))) & 0x1FF
            (e,) = struct.unpack_from("<Q", tables[table], idx * 8)
            if e != 0:
                raise InputError(f"mapping gva {gva:#x}: mapped twice (or under a page table)")
            pte = (gpa | (PT_P if m.present else 0) | (PT_W if m.w else 0) | (PT_U if m.u else 0)
                   | (PT_A if m.a else 0) | (PT_D if m.d else 0) | (PT_NX if m.nx else 0)
                   | (PT_PS if leaf_level == 2 else 0))
            if pte == 0:
                pte = gpa | 1 << 9    # a not-present entry still marks the slot as used (AVL bit)
            struct.pack_into("<Q", tables[table], idx * 8, pte)
            leaves[gva] = (table + idx * 8, pte, leaf_level)
    return tables, leaves, root


# ---------------------------------------------------------------------------------------------
# a tiny x86-64 encoder (Intel SDM vol. 2 encodings, 64-bit operand size)

RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)


class Asm:
    """Append-only x86-64 machine code for the handful of instructions the runner needs."""

    def __init__(self) -> None:
        self.code = bytearray()

    @staticmethod
    def _reg(r: int) -> int:
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= 15:
            raise InputError(f"register {r!r}: must be 0..15")
        return r

    def _modrm_mem(self, reg: int, base: int) -> bytes:
        """ModRM (+SIB/disp8) for [base] with ``reg`` in the reg field."""
        b = base & 7
        if b == RSP:                      # rsp/r12: SIB with no index
            return bytes([(reg & 7) << 3 | 4, 0x24])
        if b == RBP:                      # rbp/r13: mod=00 would be RIP-relative; use disp8 0
            return bytes([0x40 | (reg & 7) << 3 | 5, 0])
        return bytes([(reg & 7) << 3 | b])

    def mov_imm(self, r: int, imm: int) -> "Asm":
        """MOV r64, imm64 (REX.W B8+rd io)."""
        self._reg(r)
        _check_int("imm64", imm, 0, (1 << 64) - 1)
        self.code += bytes([0x48 | (r >> 3), 0xB8 | (r & 7)]) + struct.pack("<Q", imm)
        return self

    def store(self, base: int, src: int) -> "Asm":
        """MOV [base], src (REX.W 89 /r)."""
        self._reg(base), self._reg(src)
        self.code += bytes([0x48 | (src >> 3) << 2 | (base >> 3), 0x89]) + self._modrm_mem(src, base)
        return self

    def load(self, dst: int, base: int) -> "Asm":
        """MOV dst, [base] (REX.W 8B /r)."""
        self._reg(base), self._reg(dst)
        self.code += bytes([0x48 | (dst >> 3) << 2 | (base >> 3), 0x8B]) + self._modrm_mem(dst, base)
        return self

    def _ff(self, ext: int, r: int) -> "Asm":
        self._reg(r)
        self.code += (bytes([0x41]) if r >= 8 else b"") + bytes([0xFF, 0xC0 | ext << 3 | (r & 7)])
        return self

    def call(self, r: int) -> "Asm":
        """CALL r64 (FF /2)."""
        return self._ff(2, r)

    def jmp(self, r: int) -> "Asm":
        """JMP r64 (FF /4)."""
        return self._ff(4, r)

    def invlpg(self, base: int) -> "Asm":
        """INVLPG [base] (0F 01 /7)."""
        self._reg(base)
        self.code += (bytes([0x41]) if base >= 8 else b"") + b"\x0f\x01" + self._modrm_mem(7, base)
        return self

    def mov_to_cr3(self, r: int) -> "Asm":
        """MOV CR3, r64 (0F 22 /r, reg field = 3)."""
        self._reg(r)
        self.code += (bytes([0x41]) if r >= 8 else b"") + bytes([0x0F, 0x22, 0xD8 | (r & 7)])
        return self

    def mov_from_cr3(self, r: int) -> "Asm":
        """MOV r64, CR3 (0F 20 /r, reg field = 3)."""
        self._reg(r)
        self.code += (bytes([0x41]) if r >= 8 else b"") + bytes([0x0F, 0x20, 0xD8 | (r & 7)])
        return self

    def wrmsr(self) -> "Asm":
        self.code += b"\x0f\x30"
        return self

    def rdmsr(self) -> "Asm":
        self.code += b"\x0f\x32"
        return self

    def out_dx_al(self) -> "Asm":
        self.code += b"\xee"
        return self

    def jmp_self(self) -> "Asm":
        """JMP rel8 -2 (EB FE): an endless loop."""
        self.code += b"\xeb\xfe"
        return self

    def hlt(self) -> "Asm":
        self.code += b"\xf4"
        return self

    def ret(self) -> "Asm":
        self.code += b"\xc3"
        return self


def _gpa_of(leaves: dict, gva: int):
    """Translate through the built tables: (gpa, leaf entry address, entry) or None."""
    if gva & ~0xFFF in leaves:
        ea, pte, lvl = leaves[gva & ~0xFFF]
        return (pte & 0x000FFFFFFFFFF000) | (gva & 0xFFF), ea, pte
    if gva & ~(HUGE - 1) in leaves:
        ea, pte, lvl = leaves[gva & ~(HUGE - 1)]
        if lvl == 2:
            return (pte & 0x000FFFFFFFE00000) | (gva & (HUGE - 1)), ea, pte
    return None


def compile_program(desc: GuestDesc, leaves: dict, root: int):
    """Machine code for every run: (code, [entry offset per run], [fetch target gpa...]).

    Run 0 starts by registering the PVM per-vCPU page (``WRMSR 0x4b564d10``) when ``pvm`` code
    is wanted; the runner enters at run 0's second entry on standard KVM (see run_guest)."""
    a = Asm()
    entries = []
    fetch = []
    pt = desc.page_tables
    for r_i, r in enumerate(desc.runs):
        entries.append(len(a.code))
        for i, o in enumerate(r.program):
            where = f"runs[{r_i}].program[{i}]"
            if o.kind == "read":
                a.mov_imm(RBX, o.addr).load(RAX, RBX)
            elif o.kind == "write":
                a.mov_imm(RBX, o.addr).mov_imm(RAX, o.value).store(RBX, RAX)
            elif o.kind == "fetch":
                t = _gpa_of(leaves, o.addr)
                if t is None:
                    raise InputError(f"{where}: fetch target {o.addr:#x} is not mapped")
                if desc.slot_of(t[0]) is None:
                    raise InputError(f"{where}: fetch target {o.addr:#x} -> gpa {t[0]:#x} is in no memslot")
                fetch.append(t[0])
                a.mov_imm(RBX, o.addr).call(RBX)
            elif o.kind == "invlpg":
                a.mov_imm(RBX, o.addr).invlpg(RBX)
            elif o.kind == "cr3_reload":
                a.mov_from_cr3(RAX).mov_to_cr3(RAX)
            elif o.kind == "pte_write":
                t = _gpa_of(leaves, o.addr)
                if t is None:
                    raise InputError(f"{where}: pte_write target {o.addr:#x} is not mapped by a leaf")
                entry_gva = pt.window_gva + (t[1] - pt.base)
                a.mov_imm(RBX, entry_gva).mov_imm(RAX, o.value).store(RBX, RAX)
                if o.flush == "invlpg":
                    a.mov_imm(RBX, o.addr).invlpg(RBX)
                elif o.flush == "cr3":
                    a.mov_from_cr3(RAX).mov_to_cr3(RAX)
            elif o.kind == "out":
                a.mov_imm(RDX, o.addr).mov_imm(RAX, o.value).out_dx_al()
            elif o.kind == "rdmsr":
                a.mov_imm(RCX, o.addr).rdmsr()
            elif o.kind == "spin":
                a.jmp_self()
        a.hlt()
    # the PVM registration prologue sits after every run's code: entered first, then jumps to run 0
    pro = len(a.code)
    a.mov_imm(RCX, PVM_MSR_VIF).mov_imm(RAX, desc.vif_gpa & 0xFFFFFFFF).mov_imm(RDX, desc.vif_gpa >> 32)
    a.wrmsr().mov_imm(RBX, desc.code_gva + entries[0]).jmp(RBX)
    entries.append(pro)
    return bytes(a.code), entries, fetch


# ---------------------------------------------------------------------------------------------
# the host side: ioctls through libc (KVM_RUN must return EINTR to a timer signal)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc.ioctl.restype = ctypes.c_int
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long)
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.munmap.restype = ctypes.c_int
_MAP_FAILED = ctypes.c_void_p(-1).value
PROT_RW = 0x1 | 0x2
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE = 0x01, 0x02, 0x20, 0x4000


def _ioctl(fd: int, req: int, arg=0, what: str = "") -> int:
    if isinstance(arg, int):
        arg = ctypes.c_void_p(arg)
    else:
        arg = ctypes.cast(arg, ctypes.c_void_p)
    rc = _libc.ioctl(fd, req, arg)
    if rc < 0:
        e = ctypes.get_errno()
        raise KvmError(e, f"{what or hex(req)}: {os.strerror(e)}")
    return rc


def _mmap(size: int, fd: int = -1, shared: bool = False) -> int:
    flags = (MAP_SHARED if shared else MAP_PRIVATE | MAP_ANONYMOUS) | MAP_NORESERVE
    p = _libc.mmap(None, size, PROT_RW, flags, fd, 0)
    if p is None or p == _MAP_FAILED:
        e = ctypes.get_errno()
        raise KvmError(e, f"mmap of {size:#x} bytes: {os.strerror(e)}")
    return p


@dataclass
class HostInfo:
    """What kind of KVM this is: kind "pvm" (kvm_pvm module, shadow MMU, CPL3 guest),
    "vmx" or "svm" (standard KVM), "unknown"; plus capabilities the runner uses."""
    kind: str
    api_version: int
    caps: dict
    la57: bool
    modules: list


def _modules() -> list:
    return sorted(m for m in ("kvm", "kvm_intel", "kvm_amd", "kvm_pvm") if os.path.isdir(f"/sys/module/{m}"))


def detect_host(path: str = "/dev/kvm") -> HostInfo:
    """Open /dev/kvm and tell which kind of KVM host this is; HostUnsupported says why not."""
    if not os.path.exists(path):
        raise HostUnsupported(f"{path} does not exist (no KVM on this host)")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise HostUnsupported(f"{path}: {e.strerror} (needs root or the kvm group)") from None
    try:
        api = _ioctl(fd, KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
        caps = {name: _ioctl(fd, KVM_CHECK_EXTENSION, num, "KVM_CHECK_EXTENSION")
                for name, num in (("user_memory2", KVM_CAP_USER_MEMORY2), ("guest_memfd", KVM_CAP_GUEST_MEMFD),
                                  ("readonly_mem", KVM_CAP_READONLY_MEM),
                                  ("guest_memfd_flags", KVM_CAP_GUEST_MEMFD_FLAGS))}
        cpuid = _supported_cpuid(fd)
    finally:
        os.close(fd)
    mods = _modules()
    kind = ("pvm" if "kvm_pvm" in mods else "vmx" if "kvm_intel" in mods else "svm" if "kvm_amd" in mods
            else "unknown")
    la57 = any(f == 7 and i == 0 and (ecx >> 16) & 1 for f, i, _, _, ecx, _ in _cpuid_entries(cpuid))
    return HostInfo(kind=kind, api_version=api, caps=caps, la57=la57, modules=mods)


def _supported_cpuid(kvm_fd: int):
    n = 256
    buf = ctypes.create_string_buffer(8 + 40 * n)
    struct.pack_into("<I", buf, 0, n)
    _ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, buf, "KVM_GET_SUPPORTED_CPUID")
    return buf


def _cpuid_entries(buf):
    (n,) = struct.unpack_from("<I", buf, 0)
    for k in range(n):
        f, i, fl, eax, ebx, ecx, edx = struct.unpack_from("<7I", buf, 8 + 40 * k)
        yield f, i, eax, ebx, ecx, edx


def host_refusal(desc: GuestDesc, host: HostInfo):
    """The reason this host cannot run ``desc``, or None."""
    if not isinstance(desc, GuestDesc):
        raise InputError(f"desc={desc!r}: expected a GuestDesc")
    if not isinstance(host, HostInfo):
        raise InputError(f"host={host!r}: expected a HostInfo (detect_host())")
    if host.kind == "unknown":
        return f"unknown KVM vendor module (loaded: {', '.join(host.modules) or 'none'})"
    if desc.page_tables.levels == 5 and not host.la57:
        return "5-level paging: the host's KVM_GET_SUPPORTED_CPUID has no LA57"
    if any(s.guest_memfd for s in desc.memslots) and not (host.caps["guest_memfd"] and host.caps["user_memory2"]):
        return "guest_memfd memslots: KVM_CAP_GUEST_MEMFD / KVM_CAP_USER_MEMORY2 missing"
    if any(s.guest_memfd for s in desc.memslots) and not host.caps["guest_memfd_flags"] & GUEST_MEMFD_FLAG_MMAP:
        return "guest_memfd memslots: the host's guest_memfd cannot be mmap()ed (no GUEST_MEMFD_FLAG_MMAP)"
    if any("readonly" in s.flags for s in desc.memslots) and not host.caps["readonly_mem"]:
        return "read-only memslots: KVM_CAP_READONLY_MEM missing"
    if host.kind == "pvm" and (desc.registers.cr4_smep or desc.registers.cr4_smap):
        return ("kvm_pvm needs U=1 in every paging entry, so CR4.SMEP/SMAP would fault every supervisor "
                "fetch/access of the guest")
    if host.kind == "pvm":
        bad = [m for m in desc.all_mappings() if not m.u]
        if bad:
            return (f"kvm_pvm runs the guest at CPL3: every paging entry needs U=1 (mapping gva "
                    f"{bad[0].gva:#x} has U=0 and would refault forever)")
    return None


@dataclass
class RunResult:
    """What happened: host kind, per run the exits, MMIO and port accesses, dirty bitmaps,
    and the final RIP/RAX."""
    host: str
    runs: list
    elapsed: float

    def to_dict(self) -> dict:
        return asdict(self)


_SEG = struct.Struct("<QIHBBBBBBBBBx")


def _set_sregs(vcpu: int, desc: GuestDesc, root: int) -> None:
    s = ctypes.create_string_buffer(312)
    _ioctl(vcpu, KVM_GET_SREGS, s, "KVM_GET_SREGS")
    code = (0, 0xFFFFFFFF, 0x08, 0xB, 1, 0, 0, 1, 1, 1, 0, 0)      # 64-bit DPL0 code
    data = (0, 0xFFFFFFFF, 0x10, 0x3, 1, 0, 1, 1, 0, 1, 0, 0)
    tss = (0, 0x67, 0x18, 0xB, 1, 0, 0, 0, 0, 0, 0, 0)
    ldt = (0, 0, 0, 0x2, 0, 0, 0, 0, 0, 0, 0, 1)
    for i, seg in enumerate((code, data, data, data, data, data, tss, ldt)):
        _SEG.pack_into(s, 24 * i, *seg)
    r = desc.registers
    cr0 = CR0_BASE & ~(0 if r.cr0_wp else CR0_WP)
    cr4 = (CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | (CR4_LA57 if desc.page_tables.levels == 5 else 0)
           | (CR4_SMEP if r.cr4_smep else 0) | (CR4_SMAP if r.cr4_smap else 0) | (CR4_PKE if r.cr4_pke else 0))
    efer = EFER_SCE | EFER_LME | EFER_LMA | (EFER_NX if r.efer_nx else 0)
    struct.pack_into("<QQQQQQ", s, 224, cr0, 0, root, cr4, 0, efer)
    _ioctl(vcpu, KVM_SET_SREGS, s, "KVM_SET_SREGS")


def _set_rip(vcpu: int, rip: int, rsp: int | None = None) -> None:
    regs = ctypes.create_string_buffer(144)
    _ioctl(vcpu, KVM_GET_REGS, regs, "KVM_GET_REGS")
    struct.pack_into("<Q", regs, 16 * 8, rip)
    struct.pack_into("<Q", regs, 17 * 8, 0x2)
    if rsp is not None:
        struct.pack_into("<Q", regs, 6 * 8, rsp)
    _ioctl(vcpu, KVM_SET_REGS, regs, "KVM_SET_REGS")


class _Watchdog:
    """Bounds KVM_RUN: after the deadline, SIGALRM is sent to the vCPU thread every 20 ms so the
    ioctl returns EINTR (a no-op handler is installed for the duration)."""

    def __init__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise HostUnsupported("run_guest must run on the main thread (a signal bounds KVM_RUN)")
        self.tid = threading.get_ident()
        self.deadline = float("inf")
        self.stop = threading.Event()
        self.old = signal.signal(signal.SIGALRM, lambda *a: None)
        self.thread = threading.Thread(target=self._loop, daemon=True, name="kvmrun-watchdog")
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(0.02):
            if time.monotonic() > self.deadline:
                signal.pthread_kill(self.tid, signal.SIGALRM)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        signal.signal(signal.SIGALRM, self.old)


class _Vm:
    """The fds and mappings of one VM; close() releases all of them."""

    def __init__(self) -> None:
        self.kvm = self.vm = self.vcpu = -1
        self.run_ptr = 0
        self.run_size = 0
        self.mem: dict = {}          # slot -> (host address, size, gmem fd or -1)
        self.slots: dict = {}        # slot -> Memslot as currently installed

    def close(self) -> None:
        if self.run_ptr:
            _libc.munmap(self.run_ptr, self.run_size)
            self.run_ptr = 0
        for fd in (self.vcpu, self.vm):
            if fd >= 0:
                os.close(fd)
        self.vcpu = self.vm = -1
        for addr, size, gfd in self.mem.values():
            _libc.munmap(addr, size)
            if gfd >= 0:
                os.close(gfd)
        self.mem.clear()
        if self.kvm >= 0:
            os.close(self.kvm)
            self.kvm = -1

    def set_slot(self, s: Memslot, delete: bool = False) -> None:
        addr, _, gfd = self.mem[s.slot]
        size = 0 if delete else s.size
        flags = s.kvm_flags()
        if gfd >= 0:
            buf = ctypes.create_string_buffer(160)
            struct.pack_into("<IIQQQQI", buf, 0, s.slot, flags | KVM_MEM_GUEST_MEMFD, s.gpa, size, addr, 0, gfd)
            _ioctl(self.vm, KVM_SET_USER_MEMORY_REGION2, buf, f"KVM_SET_USER_MEMORY_REGION2 slot {s.slot}")
        else:
            buf = ctypes.create_string_buffer(struct.pack("<IIQQQ", s.slot, flags, s.gpa, size, addr))
            _ioctl(self.vm, KVM_SET_USER_MEMORY_REGION, buf, f"KVM_SET_USER_MEMORY_REGION slot {s.slot}")
        if delete:
            del self.slots[s.slot]
        else:
            self.slots[s.slot] = Memslot(**asdict(s))

    def add_slot(self, s: Memslot) -> None:
        gfd = -1
        if s.guest_memfd:
            req = ctypes.create_string_buffer(struct.pack("<QQ", s.size,
                                                          GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED)
                                              + bytes(48))
            gfd = _ioctl(self.vm, KVM_CREATE_GUEST_MEMFD, req, "KVM_CREATE_GUEST_MEMFD")
        try:
            addr = _mmap(s.size, gfd, shared=gfd >= 0)
        except KvmError:
            if gfd >= 0:
                os.close(gfd)
            raise
        self.mem[s.slot] = (addr, s.size, gfd)
        self.set_slot(s)

    def write_gpa(self, gpa: int, data: bytes) -> None:
        for s in self.slots.values():
            if s.gpa <= gpa and gpa + len(data) <= s.gpa + s.size:
                ctypes.memmove(self.mem[s.slot][0] + gpa - s.gpa, data, len(data))
                return
        raise InputError(f"gpa {gpa:#x}+{len(data)}: not inside one installed memslot")

    def dirty_log(self, s: Memslot) -> str:
        n = (s.size // PAGE + 63) // 64 * 8
        bm = ctypes.create_string_buffer(n)
        arg = ctypes.create_string_buffer(struct.pack("<IIQ", s.slot, 0, ctypes.addressof(bm)))
        _ioctl(self.vm, KVM_GET_DIRTY_LOG, arg, f"KVM_GET_DIRTY_LOG slot {s.slot}")
        return bm.raw.hex()


def run_guest(desc: GuestDesc, host: HostInfo | None = None, kvm_path: str = "/dev/kvm") -> RunResult:
    """Build the VM that ``desc`` describes and run each of its runs to its HLT.

    Raises HostUnsupported when this host cannot run it (with the reason), GuestTimeout when a
    run does not reach its HLT within ``desc.timeout`` seconds, KvmError on any other stop.
    Every fd and mapping is released before returning or raising."""
    if not isinstance(desc, GuestDesc):
        raise InputError(f"desc={desc!r}: must be a GuestDesc")
    desc.check()                                      # every field, before anything is opened
    tables, leaves, root, code, entries, fetch = desc.compile()
    host = host or detect_host(kvm_path)
    why = host_refusal(desc, host)
    if why:
        raise HostUnsupported(why)
    v = _Vm()
    dog = None
    t0 = time.monotonic()
    try:
        v.kvm = os.open(kvm_path, os.O_RDWR | os.O_CLOEXEC)
        v.vm = _ioctl(v.kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM")
        if host.kind == "vmx":
            _ioctl(v.vm, KVM_SET_TSS_ADDR, 0xFFFBD000, "KVM_SET_TSS_ADDR")
        for s in desc.memslots:
            v.add_slot(s)
        for gpa, t in tables.items():
            v.write_gpa(gpa, bytes(t))
        v.write_gpa(desc.code_gpa, code)
        for gpa in fetch:
            v.write_gpa(gpa, b"\xc3")
        v.vcpu = _ioctl(v.vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU")
        v.run_size = _ioctl(v.kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")
        v.run_ptr = _mmap(v.run_size, v.vcpu, shared=True)
        cpuid = _supported_cpuid(v.kvm)
        _ioctl(v.vcpu, KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2")
        _set_sregs(v.vcpu, desc, root)
        first = entries[-1] if host.kind == "pvm" else entries[0]
        _set_rip(v.vcpu, desc.code_gva + first, desc.stack_gva + PAGE)
        dog = _Watchdog()
        runs = []
        for r_i, r in enumerate(desc.runs):
            for c in r.changes:
                _apply_change(v, c)
            if r_i:
                _set_rip(v.vcpu, desc.code_gva + entries[r_i])
            mmio_value = {}
            for o in r.program:
                t = _gpa_of(leaves, o.addr) if o.kind == "read" else None
                if t is not None:
                    mmio_value[t[0]] = o.value      # a read that exits to MMIO gets op.value
            runs.append(_run_one(v, dog, desc, r_i, mmio_value))
        return RunResult(host=host.kind, runs=runs, elapsed=round(time.monotonic() - t0, 6))
    except OSError as e:
        if isinstance(e, PykvmmuError):
            raise
        raise KvmError(e.errno, f"{kvm_path}: {e.strerror}") from None
    finally:
        if dog is not None:
            dog.close()
        v.close()


def _apply_change(v: _Vm, c: SlotChange) -> None:
    s = v.slots[c.slot]
    if c.action == "delete":
        v.set_slot(s, delete=True)
    elif c.action == "move":
        v.set_slot(s, delete=True)            # KVM moves a slot by delete + create (same host memory)
        s.gpa = c.gpa
        v.set_slot(s)
    else:
        if ("readonly" in s.flags) != ("readonly" in c.flags):
            v.set_slot(s, delete=True)        # KVM cannot toggle KVM_MEM_READONLY in place
        s.flags = list(c.flags)
        v.set_slot(s)


def _run_one(v: _Vm, dog: _Watchdog, desc: GuestDesc, r_i: int, mmio_value: dict) -> dict:
    run = v.run_ptr
    exits: dict = {}
    mmio, io = [], []
    dog.deadline = time.monotonic() + desc.timeout
    try:
        while True:
            rc = _libc.ioctl(v.vcpu, KVM_RUN, None)
            if rc < 0:
                e = ctypes.get_errno()
                if e == errno.EINTR:
                    exits["INTR"] = exits.get("INTR", 0) + 1
                    if time.monotonic() > dog.deadline:
                        raise GuestTimeout(errno.ETIME, f"run {r_i}: no HLT within {desc.timeout} s "
                                                        f"(exits so far: {exits}, rip {_rip(v):#x})")
                    continue
                raise KvmError(e, f"run {r_i}: KVM_RUN: {os.strerror(e)}")
            (reason,) = struct.unpack("<I", ctypes.string_at(run + 8, 4))
            name = EXIT_NAMES.get(reason, str(reason))
            exits[name] = exits.get(name, 0) + 1
            if reason == EXIT_HLT:
                break
            if reason == EXIT_MMIO:
                phys, data, ln, wr = struct.unpack("<Q8sIB", ctypes.string_at(run + 32, 21))
                if not wr:
                    val = mmio_value.get(phys, 0)
                    ctypes.memmove(run + 40, struct.pack("<Q", val), 8)
                    data = struct.pack("<Q", val)
                mmio.append({"gpa": phys, "len": ln, "write": bool(wr),
                             "data": int.from_bytes(data[:ln], "little")})
                continue
            if reason == EXIT_IO:
                d, size, port, count, off = struct.unpack("<BBHIQ", ctypes.string_at(run + 32, 16))
                io.append({"port": port, "out": bool(d), "size": size,
                           "data": int.from_bytes(ctypes.string_at(run + off, size * count), "little")})
                continue
            raise KvmError(errno.EIO, f"run {r_i}: unexpected exit {name} at rip {_rip(v):#x} "
                                      f"(exits so far: {exits})")
    finally:
        dog.deadline = float("inf")
    dirty = {str(s.slot): v.dirty_log(s) for s in v.slots.values() if "dirty_log" in s.flags}
    regs = ctypes.create_string_buffer(144)
    _ioctl(v.vcpu, KVM_GET_REGS, regs, "KVM_GET_REGS")
    rax = struct.unpack_from("<Q", regs, 0)[0]
    return {"exits": exits, "mmio": mmio, "io": io, "dirty": dirty, "rip": _rip(v), "rax": rax}


def _rip(v: _Vm) -> int:
    regs = ctypes.create_string_buffer(144)
    try:
        _ioctl(v.vcpu, KVM_GET_REGS, regs, "KVM_GET_REGS")
    except KvmError:
        return -1
    return struct.unpack_from("<Q", regs, 16 * 8)[0]


def demo_guest(guest_memfd: bool = False) -> GuestDesc:
    """The fixture guest: reads, writes, a fetch, 2 MiB pages, aliases, a read-only and a
    dirty-logged memslot, MMIO, page-table writes with INVLPG and CR3 reloads (also four
    unflushed writes to one table, for write flooding), then memslot MOVE and DELETE between
    three runs.  ``guest_memfd`` adds a guest_memfd-backed slot that run 0 reads and writes."""
    _check_bool("guest_memfd", guest_memfd)
    P_W_U_A_D = PT_P | PT_W | PT_U | PT_A | PT_D
    slots = [Memslot(0, 0x0, 0x200000), Memslot(1, 0x400000, 0x400000),
             Memslot(2, 0x800000, 0x10000, ["readonly"]), Memslot(3, 0xA00000, 0x10000, ["dirty_log"]),
             Memslot(4, 0xC00000, 0x10000)]
    maps = [Mapping(0x1000000, 0x20000, count=4),
            Mapping(0x1010000, 0x20000), Mapping(0x1011000, 0x21000, w=False),        # aliases
            Mapping(0x1200000, 0x400000, page="2M", nx=True),
            Mapping(0x1400000, 0x600000, page="2M", w=False, a=True),
            Mapping(0x1600000, 0x800000),                                                # read-only slot
            Mapping(0x1700000, 0xA00000, count=2, a=True, d=True),                       # dirty-logged
            Mapping(0x1800000, 0xC00000),                                                # slot 4 (moved)
            Mapping(0x1900000, 0xF0000000),                                              # MMIO
            Mapping(0x1A00000, 0x25000, w=False),                                        # fetch target
            Mapping(0x1B00000, 0x26000)]                                                 # PTE rewritten
    prog = [Op("write", 0x1000000, 1), Op("read", 0x1000000), Op("write", 0x1001000, 2),
            Op("write", 0x1002000, 3), Op("read", 0x1003000),
            Op("read", 0x1010000), Op("read", 0x1011000),
            Op("write", 0x1200000, 4), Op("read", 0x1201000), Op("write", 0x1300000, 5),
            Op("read", 0x1400000), Op("read", 0x1401000),
            Op("read", 0x1600000), Op("write", 0x1600000, 6),
            Op("write", 0x1700000, 7), Op("write", 0x1701000, 8),
            Op("read", 0x1800000),
            Op("read", 0x1900000, 0x5A5A), Op("write", 0x1900008, 0x77),
            Op("fetch", 0x1A00000),
            Op("pte_write", 0x1B00000, 0x27000 | P_W_U_A_D, "invlpg"), Op("read", 0x1B00000),
            Op("pte_write", 0x1003000, 0x23000 | PT_P | PT_U | PT_A, "cr3"), Op("read", 0x1003000)]
    prog += [Op("pte_write", 0x1701000, 0xA01000 | P_W_U_A_D, "none") for _ in range(4)]
    prog += [Op("cr3_reload"), Op("read", 0x1701000), Op("out", 0x80, 0x42)]
    if guest_memfd:
        slots.append(Memslot(5, 0xE00000, 0x10000, guest_memfd=True))
        maps.append(Mapping(0x1C00000, 0xE00000, count=2))
        prog += [Op("write", 0x1C00000, 9), Op("read", 0x1C01000)]
    runs = [Run(program=prog),
            Run(changes=[SlotChange("move", 4, 0xD00000), SlotChange("flags", 3, flags=[])],
                program=[Op("read", 0x1800000, 0x1111), Op("write", 0x1001000, 10), Op("read", 0x1700000),
                         Op("write", 0x1700000, 11)]),
            Run(changes=[SlotChange("delete", 4)],
                program=[Op("read", 0x1002000), Op("write", 0x1200000, 12), Op("fetch", 0x1A00000),
                         Op("read", 0x1800000, 0x2222)])]
    return GuestDesc(memslots=slots, page_tables=PageTables(mappings=maps), runs=runs)
