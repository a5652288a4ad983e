"""Private vs shared fault classification for confidential VMs (SNP, TDX, software-protected).

Models what KVM x86 does between a guest page fault (an #NPF / EPT violation) and the
choice of backing store: the vendor exit handler and ``kvm_mmu_page_fault()`` set the
synthetic ``PFERR_PRIVATE_ACCESS`` bit (49), ``kvm_mmu_do_page_fault()`` derives
``fault->is_private`` and strips the TDX shared bit from the gfn, and
``kvm_mmu_faultin_pfn()`` (after snapshotting ``mmu_invalidate_seq``) compares the fault with
the gfn's memory attributes and turns a mismatch into a ``KVM_EXIT_MEMORY_FAULT``.

The upstream rule (v6.10+) is :class:`UpstreamPolicy`; the designs argued in the 2023
thread are selectable policy objects (:data:`POLICIES`) so that the inputs on which they
disagree can be listed (:func:`policy_table`, docs/private.md).  Batch classification of
numpy arrays runs in the C core (:func:`classify_batch`).
"""
from __future__ import annotations

import enum
import errno as _errno
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import numpy as np

from . import _par
from . import isa as _isa
from ._batch import in_array, out_array, ptr, ptr_at, same_shape, uint
from ._batch import tuple_new as _tuple_new
from ._check import boolean, u64
from ._ffi import ffi, lib
from .errors import InputError, rule_texts

__all__ = [
    "PFERR", "PFERR_PRESENT_MASK", "PFERR_WRITE_MASK", "PFERR_USER_MASK", "PFERR_RSVD_MASK",
    "PFERR_FETCH_MASK", "PFERR_PK_MASK", "PFERR_SS_MASK", "PFERR_SGX_MASK", "PFERR_GUEST_RMP_MASK",
    "PFERR_GUEST_FINAL_MASK", "PFERR_GUEST_PAGE_MASK", "PFERR_GUEST_ENC_MASK",
    "PFERR_GUEST_SIZEM_MASK", "PFERR_GUEST_VMPL_MASK", "PFERR_IMPLICIT_ACCESS",
    "PFERR_PRIVATE_ACCESS", "PFERR_SYNTHETIC_MASK", "PferrRecord", "decode_error_code",
    "VM_TYPES", "KVM_X86_DEFAULT_VM", "KVM_X86_SW_PROTECTED_VM", "KVM_X86_SEV_VM",
    "KVM_X86_SEV_ES_VM", "KVM_X86_SNP_VM", "KVM_X86_TDX_VM", "vm_type_number", "vm_type_name",
    "has_private_mem", "has_protected_state", "tdx_shared_gpa_bit", "gfn_direct_bits",
    "KVM_EXIT_MEMORY_FAULT", "KVM_MEMORY_EXIT_FLAG_PRIVATE", "MemoryFaultExit", "FaultContext",
    "Classification", "FaultDecision", "FaultPolicy", "UpstreamPolicy", "RfcV9MaskPolicy",
    "MaskPolicy", "ThreeWayPolicy", "SoftwarePferrPolicy", "POLICIES", "get_policy",
    "KVM_FAULT_VMM_DEFINED", "KVM_FAULT_SHARED", "KVM_FAULT_PRIVATE", "upstream_error_code",
    "kvm_mmu_do_page_fault", "vendor_says_private", "faultin_action",
    "FAULTIN_ACTIONS", "SlotKind", "FaultAction", "faultin_decision", "EXIT_NOSLOT_PRIVATE",
    "EXIT_NO_GMEM", "decide", "policy_table", "format_policy_table",
    "classify_batch", "ept_violation_error_code", "prefault_error_code", "PrivateFaultError",
]


class PrivateFaultError(InputError):
    """A fault-classification input breaks a rule (unknown VM type, bad GPA width...)."""


# ------------------------------------------------------------------ error code bits
def _bit(n: int) -> int:
    return 1 << n


PFERR_PRESENT_MASK = _bit(0)
PFERR_WRITE_MASK = _bit(1)
PFERR_USER_MASK = _bit(2)
PFERR_RSVD_MASK = _bit(3)
PFERR_FETCH_MASK = _bit(4)
PFERR_PK_MASK = _bit(5)
PFERR_SS_MASK = _bit(6)
PFERR_SGX_MASK = _bit(15)
PFERR_GUEST_RMP_MASK = _bit(31)
PFERR_GUEST_FINAL_MASK = _bit(32)
PFERR_GUEST_PAGE_MASK = _bit(33)
PFERR_GUEST_ENC_MASK = _bit(34)
PFERR_GUEST_SIZEM_MASK = _bit(35)
PFERR_GUEST_VMPL_MASK = _bit(36)
PFERR_IMPLICIT_ACCESS = _bit(48)
PFERR_PRIVATE_ACCESS = _bit(49)
PFERR_SYNTHETIC_MASK = PFERR_IMPLICIT_ACCESS | PFERR_PRIVATE_ACCESS
#: Proposed, not merged (Intel MBEC, 2025): decoded as "proposed" when set.
PFERR_USER_FETCH_PROPOSED = _bit(50)

#: name -> (bit, origin, meaning); every bit of the fact sheet (hardware and synthetic).
PFERR = {
    "PRESENT": (0, "hw", "the translation was present (protection violation)"),
    "WRITE": (1, "hw", "write access"),
    "USER": (2, "hw", "user-mode access (VMX: EPT read, see __vmx_handle_ept_violation)"),
    "RSVD": (3, "hw", "reserved bit set in a paging entry (MMIO SPTE / misconfig)"),
    "FETCH": (4, "hw", "instruction fetch"),
    "PK": (5, "hw", "protection-key violation"),
    "SS": (6, "hw", "shadow-stack access"),
    "SGX": (15, "hw", "SGX EPCM violation"),
    "GUEST_RMP": (31, "hw-npf", "AMD: RMP check failed"),
    "GUEST_FINAL": (32, "hw-npf", "fault on the final guest physical address (VMX synthesizes it)"),
    "GUEST_PAGE": (33, "hw-npf", "fault during the guest page-table walk (VMX synthesizes it)"),
    "GUEST_ENC": (34, "hw-npf", "AMD: effective C-bit was 1 (encrypted access)"),
    "GUEST_SIZEM": (35, "hw-npf", "AMD: PVALIDATE/RMPADJUST page-size mismatch"),
    "GUEST_VMPL": (36, "hw-npf", "AMD: VMPL permission violation"),
    "IMPLICIT_ACCESS": (48, "synthetic", "KVM: implicit supervisor access (SMAP emulation)"),
    "PRIVATE_ACCESS": (49, "synthetic", "KVM: private fault (is_private)"),
}
_PFERR_KNOWN = sum(1 << b for b, _, _ in PFERR.values())


@dataclass(frozen=True)
class PferrRecord:
    """A page-fault error code decoded bit by bit; ``str()`` prints it readably."""

    error_code: int
    bits: dict                 # name -> bool, every bit of PFERR
    hardware: tuple            # names of set hardware bits
    synthetic: tuple           # names of set KVM-synthetic bits
    proposed: tuple            # set bits that were only proposed upstream
    unknown: int               # set bits with no meaning in the fact sheet

    @property
    def is_private(self) -> bool:
        return self.bits["PRIVATE_ACCESS"]

    def __getattr__(self, name):
        b = self.__dict__.get("bits", {})
        key = name.upper()
        if key in b:
            return b[key]
        raise AttributeError(name)

    def __str__(self) -> str:
        lines = [f"error code 0x{self.error_code:016x}"]
        for name, (bit, origin, meaning) in PFERR.items():
            if self.bits[name]:
                lines.append(f"  bit {bit:2d} {name:15s} [{origin}] {meaning}")
        if self.proposed:
            lines.append("  bit 50 USER_FETCH      [proposed, not merged] Intel MBEC user fetch")
        if self.unknown:
            lines.append(f"  unknown bits    0x{self.unknown:x}")
        if len(lines) == 1:
            lines.append("  (no bits set: a not-present supervisor read)")
        return "\n".join(lines)


def decode_error_code(error_code: int) -> PferrRecord:
    """Decode a 64-bit page-fault error code (hardware and KVM-synthetic bits)."""
    ec = uint("error_code", error_code)
    bits = {name: bool(ec >> b & 1) for name, (b, _, _) in PFERR.items()}
    hw = tuple(n for n, (b, o, _) in PFERR.items() if o != "synthetic" and bits[n])
    syn = tuple(n for n, (b, o, _) in PFERR.items() if o == "synthetic" and bits[n])
    prop = ("USER_FETCH",) if ec & PFERR_USER_FETCH_PROPOSED else ()
    unknown = ec & ~_PFERR_KNOWN & ~PFERR_USER_FETCH_PROPOSED
    return PferrRecord(ec, bits, hw, syn, prop, unknown)


# ------------------------------------------------------------------ VM types
KVM_X86_DEFAULT_VM = 0
KVM_X86_SW_PROTECTED_VM = 1
KVM_X86_SEV_VM = 2
KVM_X86_SEV_ES_VM = 3
KVM_X86_SNP_VM = 4
KVM_X86_TDX_VM = 5
#: uapi numbers (arch/x86/include/uapi/asm/kvm.h); out-of-tree drafts used TDX=2, SNP=3.
VM_TYPES = {"default": 0, "sw_protected": 1, "sev": 2, "sev_es": 3, "snp": 4, "tdx": 5}
_VM_NAMES = {v: k for k, v in VM_TYPES.items()}


def vm_type_number(vm_type) -> int:
    """The uapi number of a VM type given by number or name ('snp', 'tdx', ...)."""
    if isinstance(vm_type, str):
        key = vm_type.lower().replace("-", "_")
        if key not in VM_TYPES:
            raise PrivateFaultError(f"vm_type={vm_type!r}: unknown; known: {', '.join(VM_TYPES)}")
        return VM_TYPES[key]
    v = uint("vm_type", vm_type, 32)
    if v not in _VM_NAMES:
        raise PrivateFaultError(f"vm_type={v}: not a KVM_X86_*_VM number (0..5: "
                                + ", ".join(f"{n}={k}" for k, n in VM_TYPES.items()) + ")")
    return v


def vm_type_name(vm_type) -> str:
    return _VM_NAMES[vm_type_number(vm_type)]


def has_private_mem(vm_type) -> bool:
    """``kvm->arch.has_private_mem``: SW_PROTECTED, SNP and TDX."""
    return vm_type_number(vm_type) in (KVM_X86_SW_PROTECTED_VM, KVM_X86_SNP_VM, KVM_X86_TDX_VM)


def has_protected_state(vm_type) -> bool:
    """``kvm->arch.has_protected_state``: SEV_ES, SNP and TDX."""
    return vm_type_number(vm_type) in (KVM_X86_SEV_ES_VM, KVM_X86_SNP_VM, KVM_X86_TDX_VM)


def tdx_shared_gpa_bit(gpaw: int) -> int:
    """The TDX shared-GPA bit: 51 with GPAW 52 (TDX_CONFIG_FLAGS_MAX_GPAW), else 47 (GPAW 48)."""
    if isinstance(gpaw, bool) or not isinstance(gpaw, int):
        raise PrivateFaultError(f"gpaw={gpaw!r}: expected the integer 48 or 52")
    if gpaw == 52:
        return 51
    if gpaw == 48:
        return 47
    raise PrivateFaultError(f"gpaw={gpaw!r}: a TD's guest physical address width is 48 or 52 "
                            "(KVM_TDX_INIT_VM: MAX_GPAW selects 52)")


def gfn_direct_bits(vm_type, gpaw: int = 52) -> int:
    """``kvm_gfn_direct_bits()``: the TDX shared bit as a gfn mask (0 for every other VM type;
    ``gpaw`` must still be 48 or 52)."""
    bit = tdx_shared_gpa_bit(gpaw)
    if vm_type_number(vm_type) != KVM_X86_TDX_VM:
        return 0
    return 1 << (bit - 12)


# ------------------------------------------------------------------ exits
KVM_EXIT_MEMORY_FAULT = 39
KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3
PAGE_SIZE = 4096


@dataclass(frozen=True)
class MemoryFaultExit:
    """``kvm_mmu_prepare_memory_fault_exit()``: exit 39 with gpa, size 4 KiB and the private flag.

    The KVM_RUN ioctl returns -1 with errno EFAULT (unlike other exits)."""

    gpa: int
    size: int
    flags: int
    reason: str
    exit_reason: int = KVM_EXIT_MEMORY_FAULT
    errno: int = _errno.EFAULT

    @classmethod
    def for_fault(cls, gfn: int, is_private: bool, reason: str) -> "MemoryFaultExit":
        """The exit for a fault on ``gfn`` (a 52-bit frame number)."""
        gfn = uint("gfn", gfn, 52)
        is_private = boolean("is_private", is_private)
        return cls(gpa=gfn << 12, size=PAGE_SIZE,
                   flags=KVM_MEMORY_EXIT_FLAG_PRIVATE if is_private else 0, reason=reason)

    @property
    def private(self) -> bool:
        return bool(self.flags & KVM_MEMORY_EXIT_FLAG_PRIVATE)

    def __str__(self) -> str:
        return (f"KVM_EXIT_MEMORY_FAULT gpa={self.gpa:#x} size={self.size:#x} flags={self.flags:#x}"
                f"{' (PRIVATE)' if self.private else ''} errno=EFAULT: {self.reason}")


# ------------------------------------------------------------------ context and policies
KVM_FAULT_VMM_DEFINED, KVM_FAULT_SHARED, KVM_FAULT_PRIVATE = "vmm_defined", "shared", "private"


def _never_private(gfn: int) -> bool:
    return False


def _constant(value):
    """A callable of gfn that returns ``value`` (a FaultContext's is_private / slot_kind)."""
    return lambda gfn: value


class SlotKind(str, enum.Enum):
    """What a context's ``slot_kind(gfn)`` returns for a memslot (None: no memslot); the plain
    strings work too."""
    PLAIN = "plain"              # userspace memory only
    GMEM = "gmem"                # guest_memfd-backed (KVM_MEM_GUEST_MEMFD)
    GMEM_ONLY = "gmem_only"      # mmap-able guest_memfd (v6.18+): shared faults use it too


class FaultAction(str, enum.Enum):
    """``FaultDecision.action``: where :func:`faultin_action` sends a fault (the decision
    holds the plain string, which compares equal to its member)."""
    PRIVATE = "private"          # guest_memfd faultin
    SHARED = "shared"            # host memory faultin
    GMEM_SHARED = "gmem_shared"  # a shared fault served by a gmem-only slot
    NOSLOT = "noslot"            # emulated MMIO: an MMIO SPTE may be installed
    EXIT = "exit"                # KVM_EXIT_MEMORY_FAULT


_SLOT_KINDS = frozenset(k.value for k in SlotKind)
_SLOT_PLAIN, _SLOT_GMEM_ONLY = SlotKind.PLAIN.value, SlotKind.GMEM_ONLY.value
_A_PRIVATE, _A_SHARED, _A_GMEM_SHARED, _A_NOSLOT, _A_EXIT = (a.value for a in FaultAction)


@dataclass
class FaultContext:
    """What a classification policy may look at: the VM's type, its TDX shared bit, its
    memory attributes and its memslots.  ``pykvmmu.vm.Vm`` provides the same attributes.

    ``is_private(gfn)`` is ``kvm_mem_is_private()``; ``slot_kind(gfn)`` returns None (no
    memslot), ``"plain"`` (userspace memory only), ``"gmem"`` (guest_memfd-backed) or
    ``"gmem_only"`` (mmap-able guest_memfd, v6.18+).
    """

    vm_type: int = KVM_X86_DEFAULT_VM
    gpaw: int = 52
    is_private: Callable[[int], bool] = _never_private
    slot_kind: Callable[[int], Optional[str]] = lambda gfn: "plain"
    sw_protected_enabled: bool = True   # CONFIG_KVM_SW_PROTECTED_VM

    def __post_init__(self):
        self.vm_type = vm_type_number(self.vm_type)
        self.sw_protected_enabled = boolean("sw_protected_enabled", self.sw_protected_enabled)
        for n in ("is_private", "slot_kind"):
            if not callable(getattr(self, n)):
                raise PrivateFaultError(f"{n}={getattr(self, n)!r}: expected a callable of gfn")
        self.gfn_direct_bits = gfn_direct_bits(self.vm_type, self.gpaw)


class Classification(NamedTuple):
    """A policy's verdict at ``kvm_mmu_do_page_fault()`` time."""

    gfn: int
    error_code: int
    kind: str                   # KVM_FAULT_PRIVATE / KVM_FAULT_SHARED / KVM_FAULT_VMM_DEFINED
    warnings: tuple = ()


@dataclass(frozen=True)
class FaultDecision:
    """Where a fault goes after classification, the mismatch rule and the slot checks.

    ``action``: ``"private"`` (guest_memfd faultin), ``"shared"`` (host memory faultin),
    ``"gmem_shared"`` (shared fault served by a gmem-only slot), ``"noslot"`` (emulated
    MMIO: an MMIO SPTE may be installed) or ``"exit"`` (``exit`` holds the memory fault).
    """

    action: str
    gfn: int
    is_private: bool
    error_code: int
    exit: Optional[MemoryFaultExit] = None
    warnings: tuple = ()

    @property
    def outcome(self) -> str:
        """A short label: private / shared / gmem_shared / mmio / exit:P / exit:S."""
        if self.action == _A_EXIT:
            assert self.exit is not None            # faultin_action: an exit carries its fault
            return "exit:P" if self.exit.private else "exit:S"
        return "mmio" if self.action == _A_NOSLOT else self.action


_CTX_ATTRS = ("vm_type", "gfn_direct_bits", "is_private", "slot_kind")
_CTX_OK: set = set()         # classes already seen to provide the FaultContext protocol


def _ctx(ctx):
    """A fault context: a FaultContext, a Vm, or anything with the same attributes."""
    if ctx.__class__ not in _CTX_OK:
        missing = [a for a in _CTX_ATTRS if not hasattr(ctx, a)]
        if missing:
            raise PrivateFaultError(f"ctx={ctx!r}: not a fault context (a FaultContext or a Vm); "
                                    f"missing {', '.join(missing)}")
        if isinstance(ctx, FaultContext) or type(ctx).__name__ == "Vm":
            _CTX_OK.add(ctx.__class__)
    return ctx


def _classification(c):
    if not isinstance(c, Classification):
        raise PrivateFaultError(f"c={c!r}: expected a Classification (what classify() returns)")
    return c


def upstream_error_code(ctx, gpa: int, error_code: int):
    """The error code as ``kvm_mmu_do_page_fault()`` sees it (upstream, v6.10+), and warnings.

    1. ``npf_interception()`` WARNs on and clears hardware bits that collide with KVM's
       synthetic flags (VMX builds its error code from the exit qualification, so it never
       carries them); 2. SNP: ENC (34) -> PRIVATE_ACCESS; TDX: ``vt_is_tdx_private_gpa`` (shared
       bit clear) -> PRIVATE_ACCESS; 3. ``kvm_mmu_page_fault()``: SW-protected VMs take it from
       the attributes of ``gpa_to_gfn(gpa)`` unless the fault is a reserved-bit (MMIO) fault.
    """
    warnings: tuple[str, ...] = ()
    _ctx(ctx)
    gpa = u64("gpa", gpa)
    ec = error_code = u64("error_code", error_code)
    if ec & PFERR_SYNTHETIC_MASK:
        warnings = (f"WARN: hardware error code {ec:#x} collides with synthetic bits "
                    f"{ec & PFERR_SYNTHETIC_MASK:#x} (cleared)",)
        ec &= ~PFERR_SYNTHETIC_MASK
    if vendor_says_private(ctx, gpa, ec):
        ec |= PFERR_PRIVATE_ACCESS
    return ec, warnings


def _snp_private(ctx, gpa: int, ec: int, upstream: bool) -> bool:
    """SNP: the NPF ENC bit (34)."""
    return ec & PFERR_GUEST_ENC_MASK != 0


def _tdx_private(ctx, gpa: int, ec: int, upstream: bool) -> bool:
    """TDX: the GPA's shared bit clear (``vt_is_tdx_private_gpa``)."""
    return not gpa & (ctx.gfn_direct_bits << 12)


def _sw_protected_private(ctx, gpa: int, ec: int, upstream: bool) -> bool:
    """SW-protected: the gfn's attributes say PRIVATE; upstream, only with
    ``CONFIG_KVM_SW_PROTECTED_VM`` and never for a reserved-bit (MMIO) fault."""
    if upstream and (not ctx.sw_protected_enabled or ec & PFERR_RSVD_MASK):
        return False
    return bool(ctx.is_private(gpa >> 12))


def _shared_only(ctx, gpa: int, ec: int, upstream: bool) -> bool:
    """Any other VM type: shared."""
    return False


#: The vendor private/shared source rule per VM type (:func:`vendor_says_private`).
_VENDOR_RULES = {KVM_X86_SNP_VM: _snp_private, KVM_X86_TDX_VM: _tdx_private,
                 KVM_X86_SW_PROTECTED_VM: _sw_protected_private}


def vendor_says_private(ctx, gpa: int, ec: int, *, upstream: bool = True) -> bool:
    """The one private/shared source rule (checked arguments; ``csrc/private.c`` is its batch
    twin), one function per VM type in ``_VENDOR_RULES``: SNP: the NPF ENC bit (34); TDX: the
    GPA's shared bit clear (``vt_is_tdx_private_gpa``); SW-protected: the gfn's attributes say
    PRIVATE (``kvm_mem_is_private(gpa_to_gfn(gpa))``).  ``upstream`` (``kvm_mmu_page_fault``,
    v6.10+) adds: only with ``CONFIG_KVM_SW_PROTECTED_VM`` and never for a reserved-bit (MMIO)
    fault; the 2023 software-PFERR design (:class:`SoftwarePferrPolicy`) had neither exception."""
    return _VENDOR_RULES.get(ctx.vm_type, _shared_only)(ctx, gpa, ec, upstream)


def kvm_mmu_do_page_fault(ctx, gpa: int, error_code: int) -> Classification:
    """Upstream ``kvm_mmu_do_page_fault()``: ``is_private = err & PFERR_PRIVATE_ACCESS`` and
    ``gfn = gpa_to_gfn(gpa) & ~kvm_gfn_direct_bits(kvm)`` (after :func:`upstream_error_code`)."""
    ec, w = upstream_error_code(ctx, gpa, error_code)
    kind = KVM_FAULT_PRIVATE if ec & PFERR_PRIVATE_ACCESS else KVM_FAULT_SHARED
    return _tuple_new(Classification, ((gpa >> 12) & ~ctx.gfn_direct_bits, ec, kind, w))


def _upstream_fault_fn(ctx, is_private: Callable[[int], bool]) -> Callable[[int, int], Optional[tuple]]:
    """:class:`UpstreamPolicy`'s classify() then the :meth:`FaultPolicy.resolve` mismatch rule
    for one fault context, bound once (``pykvmmu.vm.Vm`` binds it when its policy is set; the
    vendor rule reads the context's other settings at each call): a function of u64 ``gpa`` / ``error_code`` the caller has
    already checked, returning ``(gfn, is_private)`` of a fault that neither warns nor exits,
    else None (synthetic bits set, or a mismatch: the caller takes the two public steps, which
    build the warning or the exit).  ``is_private`` is ``kvm_mem_is_private`` on a checked gfn.
    The vendor rule is the VM type's function of :func:`vendor_says_private`, picked here once;
    the gfn rule (``kvm_mmu_do_page_fault``'s) and the mismatch test are restated on purpose
    (``tests/test_vm_fastpath.py`` holds this equal to classify() then resolve())."""
    if not callable(is_private):
        raise PrivateFaultError(f"is_private={is_private!r}: expected a callable of gfn")
    rule = _VENDOR_RULES.get(vm_type_number(ctx.vm_type), _shared_only)
    keep, synthetic = ~uint("gfn_direct_bits", ctx.gfn_direct_bits), PFERR_SYNTHETIC_MASK

    def upstream_fault(gpa: int, ec: int) -> Optional[tuple]:
        if ec & synthetic:
            return None
        private = rule(ctx, gpa, ec, True)
        gfn = (gpa >> 12) & keep
        return (gfn, private) if private is is_private(gfn) else None     # (a non-bool: None)
    return upstream_fault


class FaultPolicy:
    """A private/shared classification design.  Subclasses override :meth:`classify` (at
    ``kvm_mmu_do_page_fault`` time) and may override :meth:`resolve` (at faultin time, after
    the ``mmu_invalidate_seq`` snapshot, where the attributes are compared)."""

    name = "abstract"
    source = ""
    summary = ""

    def classify(self, ctx, gpa: int, error_code: int) -> Classification:
        raise NotImplementedError

    def resolve(self, ctx, c: Classification):
        """Return ``(is_private, exit_or_None)``: the mismatch rule of ``kvm_mmu_faultin_pfn``."""
        _ctx(ctx)
        _classification(c)
        attr_private = bool(ctx.is_private(c.gfn))
        is_private = c.kind == KVM_FAULT_PRIVATE
        if is_private != attr_private:
            return is_private, MemoryFaultExit.for_fault(
                c.gfn, is_private, f"{'private' if is_private else 'shared'} fault but the gfn's "
                f"attributes say {'private' if attr_private else 'shared'} (mismatch)")
        return is_private, None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class UpstreamPolicy(FaultPolicy):
    """v6.10+: the synthetic PFERR_PRIVATE_ACCESS bit, set per VM type."""

    name = "upstream"
    source = "lkml 20240228024147.41573-6-seanjc@google.com (merged v6.10)"
    summary = "bit 49 set by the vendor code per VM type; attributes for SW-protected, never for RSVD"

    classify = staticmethod(kvm_mmu_do_page_fault)


class RfcV9MaskPolicy(FaultPolicy):
    """RFC v9 04/51 (2023-06-11): ``kvm_mmu_fault_is_private()`` -- no slot or a slot that
    cannot be private means shared; if ``mmu_private_fault_mask`` is set, ``err & mask``; else
    ``kvm_mem_is_private()`` (UPM selftests)."""

    name = "rfc-v9"
    source = "lkml 20230612042559.375660-5-michael.roth@amd.com"
    summary = "slot gate, then err & mmu_private_fault_mask (SNP), else attributes"

    def classify(self, ctx, gpa, error_code):
        _ctx(ctx)
        gpa, error_code = u64("gpa", gpa), u64("error_code", error_code)
        # The RFC is SNP-only; with TDX the gfn loses the shared bit as in KVM's TDX series.
        gfn = (gpa >> 12) & ~ctx.gfn_direct_bits
        kind = KVM_FAULT_SHARED
        slot = ctx.slot_kind(gfn)
        if slot is not None and slot.startswith("gmem"):
            mask = PFERR_GUEST_ENC_MASK if ctx.vm_type == KVM_X86_SNP_VM else 0
            if mask:
                private = bool(error_code & mask)
            else:
                private = bool(ctx.is_private(gfn))
            kind = KVM_FAULT_PRIVATE if private else KVM_FAULT_SHARED
        return Classification(gfn, error_code, kind)


class MaskPolicy(FaultPolicy):
    """Michael Roth, 2023-06-21, first sketch: per-VM ``mmu_private_fault_mask`` (SNP: ENC)
    then per-VM ``gfn_shared_mask`` (TDX: the shared bit), else shared.  The sketch's TDX line
    reads ``!!(gpa & gfn_shared_mask)``, i.e. private when the *shared* bit is set; the enum
    version of the same mail has it the right way round, which is what this models
    (``literal=True`` models the sketch as written)."""

    name = "mask"
    source = "seed 000 (Michael Roth, 2023-06-21), bool kvm_fault_is_private()"
    summary = "err & mmu_private_fault_mask, else shared-bit test, else shared"

    def __init__(self, literal: bool = False):
        self.literal = literal

    def _masks(self, ctx):
        fault_mask = PFERR_GUEST_ENC_MASK if ctx.vm_type == KVM_X86_SNP_VM else 0
        return fault_mask, ctx.gfn_direct_bits << 12

    def classify(self, ctx, gpa, error_code):
        _ctx(ctx)
        gpa, error_code = u64("gpa", gpa), u64("error_code", error_code)
        fault_mask, shared_mask = self._masks(ctx)
        if fault_mask:
            private = bool(error_code & fault_mask)
        elif shared_mask:
            private = bool(gpa & shared_mask) if self.literal else not gpa & shared_mask
        else:
            private = False
        # The sketch does not strip the shared bit from the gfn; KVM's TDX series of the time did.
        return Classification((gpa >> 12) & ~ctx.gfn_direct_bits, error_code,
                              KVM_FAULT_PRIVATE if private else KVM_FAULT_SHARED)


class ThreeWayPolicy(MaskPolicy):
    """Michael Roth, 2023-06-21, enum version: VMM_DEFINED / SHARED / PRIVATE; VMM_DEFINED is
    resolved in ``__kvm_faultin_pfn`` from ``kvm_mem_is_private()`` (never a mismatch)."""

    name = "three-way"
    source = "seed 000 (Michael Roth, 2023-06-21), enum {KVM_FAULT_VMM_DEFINED, SHARED, PRIVATE}"
    summary = "mask / shared bit decide, otherwise VMM_DEFINED resolved from attributes at faultin"

    def classify(self, ctx, gpa, error_code):
        _ctx(ctx)
        gpa, error_code = u64("gpa", gpa), u64("error_code", error_code)
        fault_mask, shared_mask = self._masks(ctx)
        gfn = (gpa >> 12) & ~ctx.gfn_direct_bits
        if fault_mask:
            kind = KVM_FAULT_PRIVATE if error_code & fault_mask else KVM_FAULT_SHARED
        elif shared_mask:
            kind = KVM_FAULT_SHARED if gpa & shared_mask else KVM_FAULT_PRIVATE
        else:
            kind = KVM_FAULT_VMM_DEFINED
        return Classification(gfn, error_code, kind)

    def resolve(self, ctx, c):
        _ctx(ctx)
        _classification(c)
        if c.kind == KVM_FAULT_VMM_DEFINED:
            return bool(ctx.is_private(c.gfn)), None
        return super().resolve(ctx, c)


class SoftwarePferrPolicy(FaultPolicy):
    """Isaku Yamahata, 2023-06-14/20: a software-defined ``PFERR_PRIVATE_MASK`` that the caller
    (the vendor exit handler) sets from its own hardware information; the MMU only tests
    ``err & PFERR_PRIVATE_MASK``.  Self-test (protected) VMs set it from attributes via a
    ``kvm_arch`` flag.  Unlike upstream, a caller-set bit is trusted (no synthetic-collision
    clearing) and reserved-bit faults are not excluded.  ``bit`` is the position (the thread
    did not fix one; 49 is what was merged)."""

    name = "sw-pferr"
    source = "lkml 20230614164709.GT2244082@ls.amr.corp.intel.com and seed 000"
    summary = "caller sets a software PFERR bit; err & bit, trusted as given"

    def __init__(self, bit: int = 49):
        self.mask = 1 << uint("bit", bit, 6)

    def caller_error_code(self, ctx, gpa, error_code):
        gpa, ec = u64("gpa", gpa), u64("error_code", error_code)
        if vendor_says_private(ctx, gpa, ec, upstream=False):
            ec |= self.mask
        return ec

    def classify(self, ctx, gpa, error_code):
        _ctx(ctx)
        gpa = u64("gpa", gpa)
        ec = self.caller_error_code(ctx, gpa, error_code)
        return Classification((gpa >> 12) & ~ctx.gfn_direct_bits, ec,
                              KVM_FAULT_PRIVATE if ec & self.mask else KVM_FAULT_SHARED)


POLICIES = {p.name: p for p in (UpstreamPolicy(), RfcV9MaskPolicy(), MaskPolicy(),
                                 ThreeWayPolicy(), SoftwarePferrPolicy())}


def get_policy(policy) -> FaultPolicy:
    """A policy object from a name (``upstream``, ``rfc-v9``, ``mask``, ``three-way``,
    ``sw-pferr``) or an object with ``classify``/``resolve`` (user policies)."""
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise PrivateFaultError(f"policy={policy!r}: unknown; known: {', '.join(POLICIES)}")
        return POLICIES[policy]
    if policy is None:
        return POLICIES["upstream"]
    if not (hasattr(policy, "classify") and hasattr(policy, "resolve")):
        raise PrivateFaultError(f"policy={policy!r}: needs classify(ctx, gpa, ec) and resolve(ctx, c)")
    return policy


#: The exit reasons of the decision tree (one definition; ``Vm.fault`` uses them too).
EXIT_NOSLOT_PRIVATE = "private fault with no memslot (kvm_handle_noslot_fault)"
EXIT_NO_GMEM = "private fault on a memslot without guest_memfd"


def faultin_action(gfn: int, is_private: bool, ex: Optional[MemoryFaultExit],
                   slot_kind: Optional[str]) -> tuple:
    """The decision tree of ``kvm_mmu_faultin_pfn`` after classification and the mismatch rule
    (``ex``: the policy's resolve() exit), given the memslot kind of ``gfn`` (None: no slot),
    as ``(action, exit)``: no memslot -> private: exit, shared: ``noslot`` (MMIO); private
    fault on a slot without guest_memfd -> exit; private -> guest_memfd; shared on a gmem-only
    slot -> guest_memfd (``gmem_shared``); else host memory (``shared``).  The one tree:
    :func:`decide` (through :func:`faultin_decision`) and ``pykvmmu.vm.Vm.fault`` use it."""
    if ex is not None:
        return _A_EXIT, ex
    if slot_kind is None:
        if is_private:
            return _A_EXIT, MemoryFaultExit.for_fault(gfn, True, EXIT_NOSLOT_PRIVATE)
        return _A_NOSLOT, None
    if slot_kind not in _SLOT_KINDS:
        raise PrivateFaultError(f"slot_kind={slot_kind!r}: a memslot kind is one of "
                                f"{', '.join(sorted(_SLOT_KINDS))} (None: no memslot)")
    if is_private:
        if slot_kind == _SLOT_PLAIN:
            return _A_EXIT, MemoryFaultExit.for_fault(gfn, True, EXIT_NO_GMEM)
        return _A_PRIVATE, None
    return (_A_GMEM_SHARED if slot_kind == _SLOT_GMEM_ONLY else _A_SHARED), None


#: memslot kind -> :func:`faultin_action`'s verdict for a (shared, private) fault, None where
#: it exits, derived from the function itself: ``pykvmmu.vm.Vm.fault`` looks its action up here
#: (indexed by ``is_private``) and calls the function for the rest (exits name their gfn).
FAULTIN_ACTIONS = {kind: tuple(action if ex is None else None
                               for action, ex in (faultin_action(0, private, None, kind)
                                                  for private in (False, True)))
                   for kind in sorted(_SLOT_KINDS)}


def faultin_decision(c: Classification, is_private: bool, ex: Optional[MemoryFaultExit],
                     slot_kind: Optional[str]) -> FaultDecision:
    """:func:`faultin_action` as a :class:`FaultDecision` for classification ``c``."""
    action, ex = faultin_action(c.gfn, is_private, ex, slot_kind)
    return FaultDecision(action, c.gfn, is_private,
                         c.error_code, ex, tuple(c.warnings))


def decide(ctx, gpa: int, error_code: int, policy=None) -> FaultDecision:
    """Classification, mismatch rule and slot checks of one fault (``kvm_mmu_faultin_pfn``):
    the policy's classify() and resolve(), then :func:`faultin_decision`."""
    _ctx(ctx)
    gpa = uint("gpa", gpa)
    error_code = uint("error_code", error_code)
    pol = get_policy(policy)
    c = pol.classify(ctx, gpa, error_code)
    is_private, ex = pol.resolve(ctx, c)
    return faultin_decision(c, is_private, ex, None if ex is not None else ctx.slot_kind(c.gfn))


def prefault_error_code(vm_type, is_private_gfn: bool) -> int:
    """``KVM_PRE_FAULT_MEMORY``: ``PFERR_GUEST_FINAL_MASK``, plus PRIVATE_ACCESS when the VM has
    private memory and the gfn is private."""
    ec = PFERR_GUEST_FINAL_MASK
    if has_private_mem(vm_type) and boolean("is_private_gfn", is_private_gfn):
        ec |= PFERR_PRIVATE_ACCESS
    return ec


# EPT violation exit qualification bits (SDM 28.3.3.2).
EPT_VIOLATION_ACC_READ = _bit(0)
EPT_VIOLATION_ACC_WRITE = _bit(1)
EPT_VIOLATION_ACC_INSTR = _bit(2)
EPT_VIOLATION_PROT_MASK = _bit(3) | _bit(4) | _bit(5)
EPT_VIOLATION_GVA_IS_VALID = _bit(7)
EPT_VIOLATION_GVA_TRANSLATED = _bit(8)


def ept_violation_error_code(exit_qualification: int, gpa: int, vm_type=KVM_X86_DEFAULT_VM,
                             gpaw: int = 52) -> int:
    """``__vmx_handle_ept_violation()``: the PFERR error code VMX synthesizes (a read maps to
    PFERR_USER_MASK; FINAL/PAGE from GVA_TRANSLATED when the GVA is valid; PRIVATE_ACCESS for a
    TDX private GPA)."""
    q = uint("exit_qualification", exit_qualification)
    gpa = uint("gpa", gpa)
    ec = PFERR_USER_MASK if q & EPT_VIOLATION_ACC_READ else 0
    ec |= PFERR_WRITE_MASK if q & EPT_VIOLATION_ACC_WRITE else 0
    ec |= PFERR_FETCH_MASK if q & EPT_VIOLATION_ACC_INSTR else 0
    ec |= PFERR_PRESENT_MASK if q & EPT_VIOLATION_PROT_MASK else 0
    if q & EPT_VIOLATION_GVA_IS_VALID:
        ec |= PFERR_GUEST_FINAL_MASK if q & EPT_VIOLATION_GVA_TRANSLATED else PFERR_GUEST_PAGE_MASK
    direct = gfn_direct_bits(vm_type, gpaw) << 12
    if direct and not gpa & direct:
        ec |= PFERR_PRIVATE_ACCESS
    return ec


# ------------------------------------------------------------------ agreement table
_TABLE_EC = {
    "read": 0,
    "ENC": PFERR_GUEST_ENC_MASK,
    "RSVD": PFERR_RSVD_MASK | PFERR_PRESENT_MASK,
    "ENC|RSVD": PFERR_GUEST_ENC_MASK | PFERR_RSVD_MASK | PFERR_PRESENT_MASK,
    "hw bit49": PFERR_PRIVATE_ACCESS,
}


def policy_table(policies=None, only_disagreements: bool = True, error_codes=None):
    """Every combination of VM type x memslot x attribute x error code x TDX shared bit, with
    each policy's outcome (:attr:`FaultDecision.outcome`).  Rows where all policies agree are
    dropped unless ``only_disagreements`` is False."""
    only_disagreements = boolean("only_disagreements", only_disagreements)
    for n, v in (("policies", policies), ("error_codes", error_codes)):
        if v is not None and (isinstance(v, (str, bytes)) or not hasattr(v, "__iter__")):
            raise PrivateFaultError(f"{n}={v!r}: expected a list of names or None")
    pols = [get_policy(p) for p in (policies or list(POLICIES))]
    for k in (error_codes or ()):
        if k not in _TABLE_EC:
            raise PrivateFaultError(f"error_codes: {k!r}: unknown; known: {', '.join(_TABLE_EC)}")
    ecs = {k: _TABLE_EC[k] for k in (error_codes or _TABLE_EC)}
    rows = []
    for vt_name in ("default", "sw_protected", "sev", "sev_es", "snp", "tdx"):
        vt = VM_TYPES[vt_name]
        attrs_choices = (False, True) if has_private_mem(vt) else (False,)
        for slot in (None, "plain", "gmem"):
            if slot == "gmem" and not has_private_mem(vt):
                continue
            for attr in attrs_choices:
                for ec_name, ec in ecs.items():
                    for shared_bit in ((False, True) if vt == KVM_X86_TDX_VM else (False,)):
                        ctx = FaultContext(vm_type=vt, is_private=_constant(attr),
                                           slot_kind=_constant(slot))
                        gpa = 0x1000 | ((1 << 51) if shared_bit else 0)
                        outs = {p.name: decide(ctx, gpa, ec, p).outcome for p in pols}
                        if only_disagreements and len(set(outs.values())) == 1:
                            continue
                        rows.append(dict(vm_type=vt_name, slot=slot or "none",
                                         attr="private" if attr else "shared", error_code=ec_name,
                                         gpa="shared-bit" if shared_bit else "-", **outs))
    return rows


def format_policy_table(rows=None) -> str:
    """The table of :func:`policy_table` as markdown (docs/private.md embeds it)."""
    rows = policy_table() if rows is None else rows
    if not rows:
        return "(all policies agree)"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------ batch path
def classify_batch(vm_type, gpa: np.ndarray, error_code: np.ndarray, *, gpaw: int = 52,
                   attrs=None, sw_protected_enabled: bool = True, out_gfn=None, out_ec=None,
                   out_private=None, threads: int | None = None, isa: str | None = None):
    """Upstream classification (:func:`kvm_mmu_do_page_fault`) of arrays of faults, in C.

    ``gpa`` and ``error_code`` are uint64 arrays of one shape; ``attrs`` (SW-protected VMs) is
    a :class:`pykvmmu.attrs.MemoryAttributes` or a pair of sorted uint64 arrays
    ``(start_gfn, end_gfn)`` of the private ranges.  Returns ``(gfn, error_code, is_private,
    n_synthetic_collisions)``: the stripped gfns, the error codes with bit 49 set/cleared, a
    bool array, and how many inputs carried synthetic bits (WARNed and cleared).
    ``threads``: see :mod:`pykvmmu._par` (None: automatic); ``isa`` caps the hand-written
    kernels (:mod:`pykvmmu.isa`; None: PYKVMMU_ISA).
    """
    vt = vm_type_number(vm_type)
    cap = _isa.DEFAULT if isa is None else _isa.level(isa)
    in_array("gpa", gpa, np.uint64)
    in_array("error_code", error_code, np.uint64)
    ins = [("gpa", gpa), ("error_code", error_code)]
    shape = same_shape(ins)
    og = out_array("out_gfn", out_gfn, np.uint64, shape, ins)
    oe = out_array("out_ec", out_ec, np.uint64, shape, ins + [("out_gfn", og)])
    op = out_array("out_private", out_private, np.bool_, shape, ins + [("out_gfn", og), ("out_ec", oe)])
    if attrs is None:
        starts = ends = np.zeros(0, dtype=np.uint64)
    elif hasattr(attrs, "private_ranges"):
        starts, ends = attrs.private_ranges()
    else:
        try:
            starts, ends = attrs
        except (TypeError, ValueError):
            raise InputError("attrs: a MemoryAttributes or a (start_gfn, end_gfn) pair of "
                             "uint64 arrays") from None
        in_array("attrs start", starts, np.uint64)
        in_array("attrs end", ends, np.uint64)
        same_shape([("attrs start", starts), ("attrs end", ends)])
        rc = lib.kvmmu_private_ranges_check(ptr(starts, "uint64_t"), ptr(ends, "uint64_t"),
                                            starts.size)
        if rc:
            raise InputError("attrs: private ranges must be non-empty [start, end) pairs, sorted "
                             f"and disjoint ({rule_texts('private')[rc]})")
    pol = ffi.new("struct kvmmu_pf_policy *")
    pol.vm_type = vt
    pol.flags = lib.KVMMU_PF_F_SW_PROTECTED if boolean("sw_protected_enabled",
                                                       sw_protected_enabled) else 0
    pol.gfn_direct_bits = gfn_direct_bits(vt, gpaw)
    pol.isa = cap
    ps, pe = ptr(starts, "uint64_t"), ptr(ends, "uint64_t")

    def part(lo, hi):
        nsyn = ffi.new("uint64_t *")
        lib.kvmmu_private_classify_batch(pol, ptr_at(gpa, "uint64_t", lo),
                                         ptr_at(error_code, "uint64_t", lo), ps, pe, starts.size,
                                         ptr_at(og, "uint64_t", lo), ptr_at(oe, "uint64_t", lo),
                                         ptr_at(op, "uint8_t", lo), hi - lo, nsyn)
        return int(nsyn[0])
    return og, oe, op, sum(_par.map_parts(gpa.size, threads, part))


if __name__ == "__main__":  # pragma: no cover - regenerates the docs table
    print(format_policy_table(policy_table(error_codes=("read", "ENC", "RSVD", "ENC|RSVD"))))
    print()
    print(format_policy_table(policy_table(error_codes=("hw bit49",))))
