"""The SEV-SNP Reverse Map Table (RMP): a table you can build for a whole host.

``RmpTable`` wraps a numpy buffer laid out as the hardware does at RMP_BASE:
16 KiB of processor bookkeeping, then one 16-byte entry (two little-endian
uint64) per 4 KiB page, entry address = base + 16 KiB + pfn * 16 (the
contiguous RMP), or the 4 KiB RMP segment table followed by the segments (the
segmented RMP).  Everything that touches many entries runs in the C core
(``csrc/rmp.c``); the rules are in docs/rmp.md, the fact sheet is
``shared/spec/rmp-private-memory.md`` sections 1-3.

Readings: where the sources disagree the APM reading is the default and the
alternative is a flag (``RmpFlags``).

The package: this module holds the entry, the table and the instructions; ``tablefile``
the file format, atomic writes and page-cache control; ``faults`` the kernel's fault
handlers and mapping-level rules; ``dump`` dump_rmpentry() and the decoder of its log
lines.  Every public name is re-exported here.
"""
from __future__ import annotations

import enum
import errno
import mmap
import operator
import os
import stat
from builtins import open as builtins_open
from typing import Literal, NamedTuple, Optional, cast

import numpy as np

from .. import _batch, _par
from .._batch import tuple_new as _tuple_new
from .._ffi import ffi, lib
from .._memo import bounded_put
from ..errors import InputError, rule_texts

__all__ = [
    "RmpError", "RmpBatchError", "RmpFlags", "TableFileHeader", "HEADER_SIZE", "FILE_MAGIC",
    "decode_dump", "DumpEntry", "Rc", "Check", "Access", "PageState", "RmpEntry", "RmpTable",
    "InsnResult", "AccessResult", "LookupResult", "UserFault", "NpfOutcome",
    "FIELDS_DTYPE", "PG_LEVEL_4K", "PG_LEVEL_2M", "PG_LEVEL_1G", "table_bytes", "decode",
    "page_state_raw", "handle_user_rmp_page_fault", "sev_handle_rmp_fault",
    "sev_private_max_mapping_level", "kvm_max_private_mapping_level", "RMP_PF_SPLIT",
    "RMP_PF_RETRY", "RMP_PF_UNMAP", "make_lo", "rmp_cfg_decode", "rst_entry", "ENTRY_LAYOUT", "dump_rmpentry_lines",
    "FieldLayout",
]

BOOKKEEPING = lib.KVMMU_RMP_BOOKKEEPING          # 16 KiB
ENTRY_SIZE = lib.KVMMU_RMP_ENTRY_SIZE            # 16 bytes
RST_SIZE = lib.KVMMU_RMP_RST_SIZE                # 4 KiB segment table
MAX_SEGMENTS = lib.KVMMU_RMP_MAX_SEGMENTS        # 512 RST entries
NONSEG_SHIFT = lib.KVMMU_RMP_NONSEG_SHIFT        # 52: a contiguous RMP as one segment
DEFAULT_RMP_BASE = 0x10_0000                     # the APM example's RMP_BASE (1 MiB)
PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G = 1, 2, 3
EFAULT, EINVAL = 14, 22
PTRS_PER_PMD = 512


class FieldLayout(NamedTuple):
    """One field of the raw entry: bits [shift, shift + width) of quadword ``word`` (0 lo, 1 hi)."""
    word: int
    shift: int
    width: int


def _entry_layout() -> dict:
    """The entry layout rows KVMMU_RMP_FLD_<NAME>_{WORD,SHIFT,WIDTH} of csrc/pykvmmu.h (the
    one description the C masks derive from), by field name, in bit order."""
    pre, suf = "KVMMU_RMP_FLD_", "_WORD"
    names = [k[len(pre):-len(suf)] for k in dir(lib) if k.startswith(pre) and k.endswith(suf)]
    rows = {n.lower(): FieldLayout(*(int(getattr(lib, f"{pre}{n}_{c}")) for c in ("WORD", "SHIFT", "WIDTH")))
            for n in names}
    return dict(sorted(rows.items(), key=lambda kv: (kv[1].word, kv[1].shift)))


#: The raw entry's fields (name -> FieldLayout), read from the C core's layout table.
ENTRY_LAYOUT = _entry_layout()
_FIELD = {n: (f.word, f.shift, (1 << f.width) - 1) for n, f in ENTRY_LAYOUT.items()}
GPA_FRAME_BITS = ENTRY_LAYOUT["gpa"].width
PTE_PFN_BITS = lib.KVMMU_RMP_PTE_PFN_BITS        # a 52-bit physical address's frame

RMP_PF_SPLIT: int = 0       # enum rmp_pf_ret of the v7/v8 patch
RMP_PF_RETRY: int = 1
RMP_PF_UNMAP: int = 2
FAULT_FLAG_PAGE_SPLIT = 1 << 12                      # set by the v7/v8 caller on SPLIT
X86_PF_RMP = 1 << 31                                 # host #PF error code bit
PFERR_GUEST_RMP, PFERR_GUEST_ENC = 1 << 31, 1 << 34  # NPF EXITINFO1 bits
PFERR_GUEST_SIZEM, PFERR_GUEST_VMPL = 1 << 35, 1 << 36
SVM_EXIT_VC_NOT_VALIDATED = 0x404
MSR_AMD64_RMP_BASE, MSR_AMD64_RMP_END, MSR_AMD64_RMP_CFG = 0xC0010132, 0xC0010133, 0xC0010136
MSR_AMD64_SYSCFG = 0xC0010010
SYSCFG_MFDM, SYSCFG_MEM_ENCRYPT, SYSCFG_SNP_EN, SYSCFG_SNP_VMPL_EN = 1 << 19, 1 << 23, 1 << 24, 1 << 25


class RmpError(InputError):
    """A value breaks an RMP rule (pfn beyond the table, bad layout, read-only table...)."""


class RmpBatchError(RmpError):
    """A batch of RMP instructions stopped part-way on the entries' state (the hardware
    applies each instruction on its own): ``done`` instructions were applied, the next
    one failed with ``rc``."""

    def __init__(self, message: str, *, done: int, rc: "Rc"):
        super().__init__(message)
        self.done = done
        self.rc = rc


def _level(name: str, level) -> int:
    """A page level argument: an int 1 (4K), 2 (2M) or 3 (1G); bools are refused."""
    if isinstance(level, (bool, np.bool_)):
        raise RmpError(f"{name}={level!r}: a page level is the int 1 (4K), 2 (2M) or 3 (1G)")
    v = _batch.uint(name, level, 32)
    if v not in (PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G):
        raise RmpError(f"{name}={level!r}: a page level is 1 (4K), 2 (2M) or 3 (1G)")
    return v


def _table(table) -> "RmpTable":
    if not isinstance(table, RmpTable):
        raise RmpError(f"table: expected an RmpTable, got {type(table).__name__}")
    table._t
    return table


class RmpFlags(enum.IntFlag):
    """Rule switches; 0 is the APM reading everywhere (see docs/rmp.md)."""
    APM = 0
    HOST_IMMUTABLE = lib.KVMMU_RMP_F_HOST_IMMUTABLE          # v7-v9 changelog: host writes need Immutable=0
    OVERLAP_RC7 = lib.KVMMU_RMP_F_OVERLAP_RC7                # RFC v5-v7: FAIL_OVERLAP = 7
    MIDDLE_FULL = lib.KVMMU_RMP_F_MIDDLE_FULL                # middle entries carry ASID/GPA/size too
    PVALIDATE_VMPL_GP = lib.KVMMU_RMP_F_PVALIDATE_VMPL_GP    # PVALIDATE at VMPL>0 -> #GP
    ALWAYS_RESET = lib.KVMMU_RMP_F_ALWAYS_RESET              # RMPUPDATE always clears Validated


class Rc(enum.IntEnum):
    """Instruction results: EAX codes, CF=1 no-update, and the faults a guest instruction raises."""
    SUCCESS = 0
    FAIL_INPUT = 1
    FAIL_PERMISSION = 2
    FAIL_INUSE = 3
    FAIL_OVERLAP = 4
    FAIL_SIZEMISMATCH = 6
    FAIL_BADADDR = 7          # PSMASH on an entry that is not a 2M page (7 observed); RFC OVERLAP too
    NOUPDATE = 255            # PVALIDATE CF=1 (Linux PVALIDATE_FAIL_NOUPDATE)
    NPF = 256                 # #VMEXIT(NPF), EXITINFO1 returned alongside
    VC = 257                  # #VC, exit code 0x404 (PAGE_NOT_VALIDATED)
    GP = 258                  # #GP (only with RmpFlags.PVALIDATE_VMPL_GP)


class Check(enum.IntEnum):
    """The RMP access check that failed (APM Table 15-39); OK = every check passed."""
    OK = 0
    COVERED = 1
    HV_OWNED = 2
    GUEST_OWNED = 3
    REVERSE_MAP = 4
    MUTABLE = 5
    PAGE_SIZE = 6
    VALIDATED = 7
    VMPL = 8


class Access(enum.IntEnum):
    READ = 0
    WRITE = 1
    FETCH = 2
    PT_READ = 3
    PT_WRITE = 4


class PageState(enum.IntEnum):
    """Firmware (SNP ABI) page states, numbered as the AMD SEV firmware's snp_page_state."""
    INVALID = 0
    DEFAULT = 1
    HYPERVISOR = 2
    HV_FIXED = 3
    FIRMWARE = 4
    FIRMWARE_IOMMU = 5
    RECLAIM = 6
    CONTEXT = 7
    METADATA = 8
    PRE_GUEST = 9
    PRE_SWAP = 10
    GUEST_INVALID = 11
    GUEST_VALID = 12


FIELDS_DTYPE = np.dtype([
    ("lo", "<u8"), ("hi", "<u8"), ("gpa", "<u8"), ("asid", "<u2"), ("subpage_count", "<u2"),
    ("assigned", "u1"), ("pagesize", "u1"), ("immutable", "u1"), ("vmsa", "u1"),
    ("validated", "u1"), ("lock", "u1"), ("vmpl", "u1", (4,)), ("state", "u1"), ("pad", "u1"),
])
assert FIELDS_DTYPE.itemsize == ffi.sizeof("struct kvmmu_rmp_fields")


_FAULT_NAMES: dict[int, str] = {Rc.NPF: "NPF", Rc.VC: "#VC", Rc.GP: "#GP"}
_RC: list = [None] * (max(Rc) + 1)               # return code -> Rc, one index per call
for _rc in Rc:
    _RC[_rc] = _rc
_CHECKS = tuple(Check)                           # check code -> Check
_STATES = tuple(PageState)                       # page state code -> PageState
assert [int(c) for c in _CHECKS] == list(range(len(_CHECKS)))
assert [int(c) for c in _STATES] == list(range(len(_STATES)))
#: kvmmu_rmp_lookup_word's word (assigned | level << 1) -> snp_lookup_rmpentry's tuple
_LOOKUP: tuple = (None, None, (False, PG_LEVEL_4K), (True, PG_LEVEL_4K), (False, PG_LEVEL_2M),
           (True, PG_LEVEL_2M))
_KINDS = {**{a.name.lower(): int(a) for a in Access}, **{a.name: int(a) for a in Access}}
_INT_OR_BOOL = (int, bool)
_kind_code = _KINDS.get
# The scalar entry points, bound once (a lib attribute lookup per call costs more than the call's checks).
_covered_c = lib.kvmmu_rmp_covered
_lookup_c = lib.kvmmu_rmp_lookup_word
_page_state_c = lib.kvmmu_rmp_page_state
_rmpupdate_c = lib.kvmmu_rmp_rmpupdate_fields
_psmash_c = lib.kvmmu_rmp_psmash
_pvalidate_c = lib.kvmmu_rmp_pvalidate_word
_rmpadjust_c = lib.kvmmu_rmp_rmpadjust_word
_host_check_c = lib.kvmmu_rmp_host_check_word
_guest_check_c = lib.kvmmu_rmp_guest_check_word
_guest_check_read_c = lib.kvmmu_rmp_guest_check_read
_rmpadjust_vmpl0_c = lib.kvmmu_rmp_rmpadjust_vmpl0
_entry_index_c = lib.kvmmu_rmp_entry_index
# Result memos, one per word layout: the words carry no pfn/gfn, only codes and exit info (a
# few dozen distinct values), so each result object is built once.  Capped all the same.
_MEMO_MAX = 4096
_INSN_MEMO: dict = {}             # rc | exit info << 12 -> InsnResult
_HOST_MEMO: dict = {}             # check | #PF error code << 8 -> AccessResult
_GUEST_MEMO: dict = {}            # check | fault << 8 | exit info << 20 -> AccessResult
# The default operands of guest_check() / rmpadjust(), compared by identity in their fast
# paths (a small int, an interned str and True/False are single objects: ``vmpl is _ZERO``
# holds for the int 0 itself only); C functions with those operands built in take the call.
_ZERO, _READ = 0, "read"
_NO_QUADS = memoryview(b"").cast("Q")   # a closed table's entry() views


def _fault_name(rc: int) -> Optional[str]:
    return _FAULT_NAMES.get(rc)


class RmpEntry(NamedTuple):
    """One raw RMP entry (kernel rmpentry_raw / firmware rmp_fields_t + quadword 2)."""
    lo: int
    hi: int

    def field(self, name: str) -> int:
        """The value of field ``name`` of ENTRY_LAYOUT (e.g. ``"asid"``, ``"vmpl2"``)."""
        word, shift, mask = _FIELD[name]
        return (self[word] >> shift) & mask

    @property
    def assigned(self) -> int:
        return self.field("assigned")

    @property
    def pagesize(self) -> int:
        return self.field("pagesize")

    @property
    def immutable(self) -> int:
        return self.field("immutable")

    @property
    def subpage_count(self) -> int:
        return self.field("subpage_count")

    @property
    def gpa(self) -> int:  # a frame number
        return self.field("gpa")

    @property
    def asid(self) -> int:
        return self.field("asid")

    @property
    def vmsa(self) -> int:
        return self.field("vmsa")

    @property
    def validated(self) -> int:
        return self.field("validated")

    @property
    def lock(self) -> int:
        return self.field("lock")

    @property
    def vmpl(self) -> tuple:
        """The four VMPL permission masks (bit0 R, bit1 W, bit2 X-user, bit3 X-super, bit4 SSS)."""
        return tuple(self.field(f"vmpl{v}") for v in range(4))

    @property
    def state(self) -> PageState:
        return page_state_raw(self.lo)

    def describe(self) -> str:
        return (f"assigned={self.assigned} pagesize={'2M' if self.pagesize else '4K'} "
                f"immutable={self.immutable} subpage_count={self.subpage_count} "
                f"gpa={self.gpa << 12:#x} asid={self.asid} vmsa={self.vmsa} "
                f"validated={self.validated} lock={self.lock} "
                f"vmpl=[{', '.join(f'{p:#04x}' for p in self.vmpl)}]")


def make_lo(*, assigned=0, pagesize=0, immutable=0, subpage_count=0, gpa=0, asid=0, vmsa=0,
            validated=0, lock=0) -> int:
    """Pack the first quadword of a raw entry (gpa is a frame number); ranges are checked."""
    values = {"assigned": assigned, "pagesize": pagesize, "immutable": immutable,
              "subpage_count": subpage_count, "gpa": gpa, "asid": asid, "vmsa": vmsa,
              "validated": validated, "lock": lock}
    lo = 0
    for name, f in ENTRY_LAYOUT.items():
        if f.word == 0:
            lo |= _batch.uint(name, values[name], f.width) << f.shift
    return lo


def page_state_raw(lo: int) -> PageState:
    """rmp_entry_get_state() of the AMD firmware for one raw first quadword."""
    try:
        if lo.__class__ is int:
            return _STATES[lib.kvmmu_rmp_state_raw(lo)]
        return _STATES[lib.kvmmu_rmp_state_raw(_batch.uint("lo", lo))]
    except (OverflowError, TypeError):
        raise _batch.bad_u64("lo", lo) from None


def decode(lo: np.ndarray, hi: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Batch field extraction from raw quadword arrays into a FIELDS_DTYPE array."""
    _batch.in_array("lo", lo, np.uint64)
    _batch.in_array("hi", hi, np.uint64)
    shape = _batch.same_shape([("lo", lo), ("hi", hi)])
    out = _batch.out_array("out", out, FIELDS_DTYPE, shape)
    _batch.disjoint([("out", out)], [("lo", lo), ("hi", hi)])
    lib.kvmmu_rmp_decode_batch(_batch.ptr(lo, "uint64_t"), _batch.ptr(hi, "uint64_t"),
                               ffi.from_buffer("struct kvmmu_rmp_fields[]", out), lo.size)
    return out


def rmp_cfg_decode(value: int) -> tuple:
    """MSR_AMD64_RMP_CFG: (segmented RMP enabled (bit 0), segment shift (bits 13:8))."""
    value = _batch.uint("rmp_cfg", value)
    return bool(value & 1), (value >> 8) & 0x3F


def rst_entry(segment_base: int, mapped_gib: int) -> int:
    """An RMP segment table entry: bits 51:20 the segment base, bits 19:0 the mapped GiB."""
    segment_base = _batch.uint("segment_base", segment_base, 52)
    if segment_base % (1 << 20):
        raise RmpError(f"segment_base={segment_base:#x}: must be 1 MiB aligned (bits 51:20)")
    return segment_base | _batch.uint("mapped_gib", mapped_gib, 20)


def table_bytes(mem_bytes: int) -> int:
    """Size of a contiguous RMP covering ``mem_bytes`` of memory: 16 KiB + 16 * ceil(N / 4 KiB)."""
    mem_bytes = _batch.uint("mem_bytes", mem_bytes)
    return BOOKKEEPING + ENTRY_SIZE * -(-mem_bytes // 4096)


MAX_PHYS_BITS = 52                               # x86 physical addresses are at most 52 bits
MAX_MEM_BYTES = 1 << MAX_PHYS_BITS


def _anon_zeros(nbytes: int, what: str) -> np.ndarray:
    """A zero-filled, lazily allocated byte buffer (anonymous mmap, transparent huge pages)."""
    try:
        m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, OverflowError, ValueError) as e:
        reason = errno.errorcode.get(getattr(e, "errno", None) or 0, type(e).__name__)
        raise RmpError(f"{what}: the table needs {nbytes:#x} bytes ({nbytes / 2**30:.1f} GiB) of "
                       f"address space and the kernel refused the anonymous mapping ({reason}: "
                       f"{e}); the table must fit in virtual memory (see vm.overcommit_memory)"
                       ) from None
    try:
        m.madvise(mmap.MADV_HUGEPAGE)
    except (AttributeError, OSError, ValueError):   # pragma: no cover - platform dependent
        pass
    return np.frombuffer(m, dtype=np.uint8)


class InsnResult(NamedTuple):
    rc: Rc
    exitinfo: int          # NPF EXITINFO1, or the #VC exit code (0x404), else 0

    @property
    def fault(self) -> Optional[str]:
        return _fault_name(self.rc)


class AccessResult(NamedTuple):
    check: Check
    fault: Optional[str]   # "#PF" (host), "NPF", "#VC" or None
    error_code: int        # #PF error code / NPF EXITINFO1 / #VC exit code


def _insn_result(w: int) -> InsnResult:
    """kvmmu_rmp_pvalidate_word / _rmpadjust_word's word (rc | exit info << 12) as an InsnResult."""
    r = _tuple_new(InsnResult, (_RC[w & 0xFFF], w >> 12))
    return bounded_put(_INSN_MEMO, _MEMO_MAX, w, r)


def _host_result(w: int) -> AccessResult:
    """kvmmu_rmp_host_check_word's word (check | #PF error code << 8) as an AccessResult."""
    chk = _CHECKS[w & 0xFF]
    r = _tuple_new(AccessResult, (chk, "#PF" if chk else None, w >> 8))
    return bounded_put(_HOST_MEMO, _MEMO_MAX, w, r)


def _guest_result(w: int) -> AccessResult:
    """kvmmu_rmp_guest_check_word's word (check | fault << 8 | exit info << 20) as an AccessResult."""
    r = _tuple_new(AccessResult, (_CHECKS[w & 0xFF], _FAULT_NAMES.get((w >> 8) & 0xFFF), w >> 20))
    return bounded_put(_GUEST_MEMO, _MEMO_MAX, w, r)


#: result code (kvmmu_rmp_insn_code_word) -> InsnResult, for the codes there are
_INSN_CODES = tuple(_insn_result(w) if w >= 0 and w & 0xFFF in set(Rc) else None
                    for w in map(lib.kvmmu_rmp_insn_code_word, range(2 * lib.KVMMU_RMP_INSN_SIZEM)))
#: check code -> guest_check()'s result for the default access (kvmmu_rmp_guest_check_read)
_GUEST_READ = tuple(_guest_result(lib.kvmmu_rmp_guest_check_read_word(c)) for c in _CHECKS)


class LookupResult(NamedTuple):
    assigned: np.ndarray   # uint8
    level: np.ndarray      # uint8 (PG_LEVEL_4K / PG_LEVEL_2M)
    asid: np.ndarray       # uint16
    gpa: np.ndarray        # uint64 byte address (raw.gpa << 12)


class RmpTable:
    """An RMP over a numpy uint8 buffer laid out as at RMP_BASE.

    Create one with :meth:`create` (lazily zeroed: a 1 TiB host costs 4 GiB +
    16 KiB of address space and only the pages written become resident) or
    :meth:`create_file`, open one over an existing buffer or a table file with
    :meth:`open`, write it with :meth:`save` (atomically: a temporary file renamed into
    place).  ``flush()`` writes a file-backed table's changes back, ``close()`` (or a
    ``with`` block) ends its use; a closed table refuses every operation.
    """

    last_rc: Optional[int]      # the RMPUPDATE code of the last rmpupdate_kernel() call

    def __init__(self, buffer: np.ndarray, *, segmented: bool = False, seg_shift: int = 36,
                 rmp_base: int = DEFAULT_RMP_BASE, flags: int = 0):
        if not isinstance(buffer, np.ndarray):
            raise RmpError(f"buffer: expected a numpy.ndarray, got {type(buffer).__name__}")
        if buffer.dtype not in (np.uint8, np.uint64) or not buffer.flags.c_contiguous:
            raise RmpError(f"buffer: dtype {buffer.dtype}: a C-contiguous uint8 or uint64 array "
                           "is required (the RMP is raw little-endian memory)")
        segmented = _batch.boolean("segmented", segmented)
        _batch.uint("seg_shift", seg_shift, 8)      # checked even where a layout ignores it
        buf = buffer.reshape(-1).view(np.uint8)
        if buf.ctypes.data % 16:
            raise RmpError("buffer: not 16-byte aligned (RMP entries are 16-byte records)")
        flags = _batch.uint("flags", flags, 32)
        if flags & ~lib.KVMMU_RMP_F_ALL:
            raise RmpError(f"flags={int(flags):#x}: unknown RMP flag bits")
        self.flags = RmpFlags(flags)
        self.rmp_base = _batch.uint("rmp_base", rmp_base, 52)
        if buf.size < BOOKKEEPING:
            raise RmpError(f"buffer: {buf.size} bytes, smaller than the 16 KiB bookkeeping area")
        self._buf: Optional[np.ndarray] = buf
        self._ro: Optional[np.ndarray] = None    # read-only view while the level index is on
        self._lvl: Optional[np.ndarray] = None   # the level index bitmap
        self._writable = bool(buf.flags.writeable)
        self.segmented = segmented
        self.path: Optional[str] = None          # the table file, when opened from one
        self.mode: Optional[str] = None
        self.headerless = False                  # that file has no header (the old format)
        self._t_ = ffi.new("struct kvmmu_rmp *")
        self._cbuf = ffi.from_buffer("uint8_t[]", buf)
        self._t_.base = self._cbuf
        self._tw_ = self._t_ if self._writable else None   # the table when instructions may write
        n8 = buf.size // 8         # entry(): quadword i and i + 1 of the buffer (i from the C core)
        self._qlo: memoryview = buf[:n8 * 8].data.cast("Q")
        self._qhi: memoryview = buf[8:n8 * 8].data.cast("Q")
        self._t_.size = buf.size
        self._t_.flags = int(self.flags)
        if not segmented:
            if (buf.size - BOOKKEEPING) % ENTRY_SIZE:
                raise RmpError(f"buffer: {buf.size} bytes: size - 16 KiB must be a multiple of "
                               "16 (one entry per 4 KiB page)")
            self.seg_shift = NONSEG_SHIFT
            self._t_.seg_shift = NONSEG_SHIFT
            self._t_.nr_segs = 1
            self._t_.seg_off[0] = BOOKKEEPING
            self._t_.seg_count[0] = (buf.size - BOOKKEEPING) // ENTRY_SIZE
            self.nr_pfns = int(self._t_.seg_count[0])
        else:
            self._load_segments(seg_shift)
        self.mem_bytes = self.nr_pfns << 12      # host memory covered (exact when created here)

    @property
    def buffer(self) -> np.ndarray:
        """The table bytes (read-only while the level index is on: write through the API)."""
        self._t
        return self._ro if self._ro is not None else self._data

    @property
    def writable(self) -> bool:
        """Whether the buffer may be written (RMP instructions, write_raw...)."""
        return self._writable

    @property
    def _t(self):
        t = self._t_
        if t is None:
            raise RmpError("the table is closed (close() was called or its with-block ended)")
        return t

    @property
    def _data(self) -> np.ndarray:
        """The table bytes (writable); refused once the table is closed."""
        buf = self._buf
        if buf is None:
            raise RmpError("the table is closed (close() was called or its with-block ended)")
        return buf

    @property
    def closed(self) -> bool:
        return self._t_ is None

    # -------------------------------------------------------------- layout
    def _load_segments(self, seg_shift: int) -> None:
        seg_shift = _batch.uint("seg_shift", seg_shift, 8)
        if not 21 <= seg_shift <= 51:
            raise RmpError(f"seg_shift={seg_shift}: RMP_CFG[13:8] must give segments of 2 MiB "
                           "to 2^51 bytes (21..51)")
        if self.rmp_base % (1 << 20):
            raise RmpError(f"rmp_base={self.rmp_base:#x}: a segmented RMP_BASE must be 1 MiB aligned")
        if self._data.size < BOOKKEEPING + RST_SIZE:
            raise RmpError("buffer: too small for the bookkeeping area and the segment table")
        rst = self._data[BOOKKEEPING:BOOKKEEPING + RST_SIZE].view("<u8")
        self.seg_shift = seg_shift
        self._t_.seg_shift = seg_shift
        self._t_.nr_segs = MAX_SEGMENTS
        per_seg = 1 << (seg_shift - 12)
        top = 0
        for i in range(MAX_SEGMENTS):
            v = int(rst[i])
            gib = v & 0xFFFFF
            seg_base = v & (((1 << 52) - 1) & ~((1 << 20) - 1))
            count = min(gib << 18, per_seg)
            if count:
                off = seg_base - self.rmp_base
                if off < BOOKKEEPING + RST_SIZE or off + count * ENTRY_SIZE > self._data.size:
                    raise RmpError(f"RST[{i}]={v:#x}: segment base {seg_base:#x} + {count} entries "
                                   f"is outside the buffer at rmp_base={self.rmp_base:#x}")
                self._t_.seg_off[i] = off
                top = (i * per_seg) + count
            self._t_.seg_count[i] = count
        self.nr_pfns = top

    @staticmethod
    def _segmented_layout(mem_bytes: int, seg_shift: int, rmp_base: int) -> tuple:
        """(table bytes, RST values) of create()'s segmented layout."""
        seg_shift = _batch.uint("seg_shift", seg_shift, 8)
        if not 30 <= seg_shift <= 51:
            raise RmpError(f"seg_shift={seg_shift}: create() builds segments of 1 GiB..2^51 bytes")
        if rmp_base % (1 << 20):
            raise RmpError(f"rmp_base={rmp_base:#x}: a segmented RMP_BASE must be 1 MiB aligned")
        seg_size = 1 << seg_shift
        nseg = -(-mem_bytes // seg_size)
        if nseg > MAX_SEGMENTS:
            raise RmpError(f"mem_bytes={mem_bytes:#x}: needs {nseg} segments of 2^{seg_shift} "
                           f"bytes, more than the {MAX_SEGMENTS} RST entries")
        off = -(-(BOOKKEEPING + RST_SIZE) // (1 << 20)) << 20
        rst = [0] * MAX_SEGMENTS
        for i in range(nseg):
            gib = -(-min(seg_size, mem_bytes - i * seg_size) // (1 << 30))
            rst[i] = rst_entry(rmp_base + off, gib)
            off += gib << 22          # 4 MiB of entries per GiB covered
        if rmp_base + off > MAX_MEM_BYTES:
            raise RmpError(f"rmp_base={rmp_base:#x}: the table's {off:#x} bytes would end beyond "
                           "the 52-bit physical address space")
        return off, tuple(rst)

    @staticmethod
    def _create_args(mem_bytes, segmented, rmp_base, flags, seg_shift) -> tuple:
        mem_bytes = _batch.uint("mem_bytes", mem_bytes)
        if mem_bytes == 0:
            raise RmpError("mem_bytes=0: an RMP must cover at least one page")
        if mem_bytes > MAX_MEM_BYTES:
            raise RmpError(f"mem_bytes={mem_bytes:#x}: more than 2^52 bytes, the x86 physical "
                           "address space (an RMP covers system physical addresses)")
        segmented = _batch.boolean("segmented", segmented)
        _batch.uint("seg_shift", seg_shift, 8)      # checked even where a layout ignores it
        rmp_base = _batch.uint("rmp_base", rmp_base, 52)
        flags = _batch.uint("flags", flags, 32)
        if flags & ~lib.KVMMU_RMP_F_ALL:
            raise RmpError(f"flags={flags:#x}: unknown RMP flag bits")
        return mem_bytes, segmented, rmp_base, flags

    @classmethod
    def create(cls, mem_bytes: int, *, segmented: bool = False, seg_shift: int = 36,
               rmp_base: int = DEFAULT_RMP_BASE, flags: int = 0) -> "RmpTable":
        """A zeroed RMP covering ``mem_bytes`` (1..2^52) of host memory (lazily allocated).

        Contiguous: exactly 16 KiB + 16 bytes per 4 KiB page (1 TiB -> 4 GiB + 16 KiB).
        Segmented: bookkeeping, the 4 KiB RST, then 1 MiB-aligned segments of
        ``mapped_GiB * 4 MiB`` each (segment size ``1 << seg_shift``).  A table larger than
        the address space the kernel grants raises RmpError naming the size.
        """
        mem_bytes, segmented, rmp_base, flags = cls._create_args(mem_bytes, segmented, rmp_base,
                                                                 flags, seg_shift)
        what = f"mem_bytes={mem_bytes:#x}"
        if not segmented:
            t = cls(_anon_zeros(table_bytes(mem_bytes), what), flags=flags, rmp_base=rmp_base)
        else:
            size, rst = cls._segmented_layout(mem_bytes, seg_shift, rmp_base)
            buf = _anon_zeros(size, what)
            buf[BOOKKEEPING:BOOKKEEPING + RST_SIZE].view("<u8")[:] = rst
            t = cls(buf, segmented=True, seg_shift=seg_shift, rmp_base=rmp_base, flags=flags)
        t.mem_bytes = mem_bytes
        return t

    @classmethod
    def create_file(cls, path, mem_bytes: int, *, segmented: bool = False, seg_shift: int = 36,
                    rmp_base: int = DEFAULT_RMP_BASE, flags: int = 0,
                    exist_ok: bool = False) -> None:
        """Create a zeroed table file (header + sparse table) atomically: the file appears
        complete or not at all, and an existing ``path`` is refused unless ``exist_ok``."""
        mem_bytes, segmented, rmp_base, flags = cls._create_args(mem_bytes, segmented, rmp_base,
                                                                 flags, seg_shift)
        exist_ok = _batch.boolean("exist_ok", exist_ok)
        if segmented:
            size, rst = cls._segmented_layout(mem_bytes, seg_shift, rmp_base)
            hdr = TableFileHeader(FILE_VERSION, LAYOUT_SEGMENTED, seg_shift, flags, rmp_base,
                                  mem_bytes, size, 0, rst)
            nr_pfns = max(((i << (seg_shift - 12)) + min((v & 0xFFFFF) << 18, 1 << (seg_shift - 12))
                           for i, v in enumerate(rst) if v & 0xFFFFF), default=0)
            hdr = hdr._replace(nr_pfns=nr_pfns)
        else:
            size, rst = table_bytes(mem_bytes), ()
            hdr = TableFileHeader(FILE_VERSION, LAYOUT_CONTIGUOUS, NONSEG_SHIFT, flags, rmp_base,
                                  mem_bytes, size, (size - BOOKKEEPING) // ENTRY_SIZE, ())
        raw = hdr.pack()

        def writer(fd):
            tablefile._write_all(fd, raw)
            if rst:
                os.lseek(fd, HEADER_SIZE + BOOKKEEPING, os.SEEK_SET)
                tablefile._write_all(fd, np.array(rst, dtype="<u8").tobytes())
        _atomic_write(path, HEADER_SIZE + size, writer, exist_ok=exist_ok)

    @classmethod
    def open(cls, source, *, mode: str = "r+", segmented: Optional[bool] = None,
             seg_shift: Optional[int] = None, rmp_base: Optional[int] = None,
             flags: Optional[int] = None, headerless: bool = False,
             mem_bytes: Optional[int] = None) -> "RmpTable":
        """An RMP over an existing buffer (ndarray, no copy) or a table file (numpy.memmap).

        ``mode``: 'r' read-only, 'r+' read-write (changes go to the file; ``flush()``),
        'c' copy-on-write (changes stay in memory).  A table file carries its layout, flags
        and size in its header; layout arguments given here must agree with it, and a file
        whose size does not match its header is refused.  ``headerless=True`` reads the old
        raw format (the table bytes only): the layout then comes from the arguments
        (defaults: contiguous, seg_shift 36, RMP_BASE 1 MiB, APM flags), and ``mem_bytes``,
        when given, must match the file's size.  An ndarray is always raw.
        """
        if mode not in ("r", "r+", "c"):
            raise RmpError(f"mode={mode!r}: use 'r' (read-only), 'r+' or 'c' (copy-on-write)")
        headerless = _batch.boolean("headerless", headerless)
        if segmented is not None:
            segmented = _batch.boolean("segmented", segmented)
        if isinstance(source, np.ndarray):
            buf = source
            if mode == "r":
                buf = buf.view()
                buf.flags.writeable = False
            elif mode == "c":
                buf = buf.copy()
            return cls._raw(buf, segmented, seg_shift, rmp_base, flags, mem_bytes, "buffer")
        if not isinstance(source, (str, bytes, os.PathLike)):
            raise RmpError(f"source: expected a numpy.ndarray or a path, got "
                           f"{type(source).__name__}")
        path = os.fsdecode(os.fspath(source))
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):    # a FIFO would block in open()
                raise RmpError(f"table={path!r}: not a regular file")
            with builtins_open(path, "rb") as f:
                st = os.fstat(f.fileno())
                head = f.read(HEADER_SIZE)
        except OSError as e:
            raise RmpError(f"table={path!r}: cannot open the file ({e.strerror or e})") from None
        if st.st_size == 0:
            raise RmpError(f"table={path!r}: empty file (0 bytes), not an RMP table")
        has_magic = head[:len(FILE_MAGIC)] == FILE_MAGIC
        if headerless:
            if has_magic:
                raise RmpError(f"table={path!r}: has a pykvmmu table header; open it without "
                               "headerless (--headerless)")
            offset, size = 0, st.st_size
        else:
            if not has_magic:
                raise RmpError(f"table={path!r}: no pykvmmu table header (magic {FILE_MAGIC!r}); "
                               "a header-less table needs headerless=True (--headerless) and "
                               "its layout options")
            hdr = TableFileHeader.unpack(head, f"table={path!r}")
            if st.st_size != HEADER_SIZE + hdr.table_bytes:
                raise RmpError(f"table={path!r}: {st.st_size:#x} bytes, but its header says "
                               f"{HEADER_SIZE:#x} + {hdr.table_bytes:#x} (truncated or "
                               "extended file)")
            for name, given, have in (("segmented", segmented, hdr.segmented),
                                      ("seg_shift", seg_shift,
                                       hdr.seg_shift if hdr.segmented else None),
                                      ("rmp_base", rmp_base, hdr.rmp_base),
                                      ("flags", flags, hdr.flags),
                                      ("mem_bytes", mem_bytes, hdr.mem_bytes)):
                if given is not None and (have is None or
                                          _batch.uint(name, given) != int(have)):
                    what = "none (a contiguous table)" if have is None else f"{have!r}"
                    raise RmpError(f"{name}={given!r}: the table file {path!r} says {name} = "
                                   f"{what} (the header describes the file; omit the option)")
            offset, size = HEADER_SIZE, hdr.table_bytes
        try:
            buf = np.memmap(path, dtype=np.uint8, mode=cast(Literal["r", "r+", "c"], mode), offset=offset,
                            shape=(size,))              # mode was checked above
        except (OSError, ValueError) as e:
            raise RmpError(f"table={path!r}: cannot map the file ({e})") from None
        if headerless:
            t = cls._raw(buf, segmented, seg_shift, rmp_base, flags, mem_bytes, f"table={path!r}")
        else:
            t = cls(buf, segmented=hdr.segmented, seg_shift=hdr.seg_shift, rmp_base=hdr.rmp_base,
                    flags=hdr.flags)
            if hdr.segmented and tuple(int(v) for v in
                                       buf[BOOKKEEPING:BOOKKEEPING + RST_SIZE].view("<u8")) != hdr.rst:
                raise RmpError(f"table={path!r}: the RST in the table differs from the header's "
                               "segment table (corrupt file)")
            if t.nr_pfns != hdr.nr_pfns or t.nr_pfns < -(-hdr.mem_bytes // 4096):
                raise RmpError(f"table={path!r}: covers {t.nr_pfns:#x} pages, the header says "
                               f"{hdr.nr_pfns:#x} pages for {hdr.mem_bytes:#x} bytes of memory")
            t.mem_bytes = hdr.mem_bytes
        t.path, t.mode, t.headerless = path, mode, headerless
        return t

    @classmethod
    def _raw(cls, buf, segmented, seg_shift, rmp_base, flags, mem_bytes, where) -> "RmpTable":
        """A header-less table: layout from the arguments, size checked against mem_bytes."""
        segmented = bool(segmented)
        t = cls(buf, segmented=segmented, seg_shift=36 if seg_shift is None else seg_shift,
                rmp_base=DEFAULT_RMP_BASE if rmp_base is None else rmp_base,
                flags=0 if flags is None else flags)
        if segmented and t.nr_pfns == 0:
            raise RmpError(f"{where}: segmented=True but its segment table is empty (covers no "
                           "page): not a segmented RMP (a contiguous one?)")
        if mem_bytes is not None:
            mem_bytes = _batch.uint("mem_bytes", mem_bytes)
            if not segmented and buf.size != table_bytes(mem_bytes):
                raise RmpError(f"{where}: {buf.size:#x} bytes, but mem_bytes={mem_bytes:#x} "
                               f"needs {table_bytes(mem_bytes):#x} (truncated or wrong table)")
            if segmented and t.nr_pfns < -(-mem_bytes // 4096):
                raise RmpError(f"{where}: covers {t.nr_pfns:#x} pages, mem_bytes={mem_bytes:#x} "
                               f"needs {-(-mem_bytes // 4096):#x}")
            t.mem_bytes = mem_bytes
        return t

    def header(self) -> TableFileHeader:
        """The file header that describes this table (what :meth:`save` writes)."""
        rst: tuple = ()
        if self.segmented:
            rst = tuple(int(v) for v in self._view()[BOOKKEEPING:BOOKKEEPING + RST_SIZE].view("<u8"))
        return TableFileHeader(FILE_VERSION, int(self.segmented), self.seg_shift, int(self.flags),
                               self.rmp_base, self.mem_bytes, self.size, self.nr_pfns, rst)

    def _view(self) -> np.ndarray:
        return self.buffer

    def save(self, path, *, exist_ok: bool = True, headerless: bool = False) -> None:
        """Write the table to ``path`` atomically (:func:`save_table`)."""
        save_table(self, path, exist_ok=exist_ok, headerless=headerless)

    def flush(self) -> None:
        """Write a read-write file-backed table's changes to its file (msync); a no-op for
        in-memory, read-only and copy-on-write tables (use :meth:`save` for those)."""
        self._t
        buf = self._buf
        if isinstance(buf, np.memmap) and self.mode == "r+":
            try:
                buf.flush()
            except OSError as e:
                raise RmpError(f"table={self.path!r}: flush failed ({e.strerror or e})") from None

    def close(self) -> None:
        """Flush (read-write files) and end the table's use: every later call raises
        RmpError.  The mapping itself goes when the last array viewing it is gone."""
        if self._t_ is None:
            return
        try:
            self.flush()
        finally:
            self._t_ = self._tw_ = None
            try:
                ffi.release(self._cbuf)
            except (AttributeError, ValueError):     # pragma: no cover - old cffi
                pass
            self._cbuf = None
            for q in (self._qlo, self._qhi):
                q.release()
            self._qlo = self._qhi = _NO_QUADS      # never read: entry() refuses a closed table first
            self._buf = self._ro = self._lvl = None

    # -------------------------------------------------------------- level index, page cache
    @property
    def level_index(self) -> bool:
        """Whether batch lookups take the level from the level index."""
        return self._t.lvl_bits != ffi.NULL

    def enable_level_index(self) -> None:
        """Keep the Page_Size bit of every 2M-aligned entry in a bitmap (64 KiB per TiB of
        host memory) so that ``lookup_batch`` reads one entry (one cache line) per pfn
        instead of two.  Every write through this object keeps the bitmap exact, and
        ``buffer``/``entries`` become read-only views meanwhile; an array or file written
        behind the table's back (the ndarray given to the constructor, another process)
        needs :meth:`enable_level_index` again (it rebuilds; :meth:`check_level_index`
        finds a stale bit).  Building reads every 2M-aligned entry once."""
        t = self._t
        nbits = -(-self.nr_pfns // PTRS_PER_PMD)
        self._lvl = np.zeros(max(1, -(-nbits // 64)), np.uint64)
        t.lvl_bits = ffi.from_buffer("uint64_t[]", self._lvl)
        t.lvl_nbits = nbits
        lib.kvmmu_rmp_level_index_build(t)
        ro = self._data.view()
        ro.flags.writeable = False
        self._ro = ro

    def disable_level_index(self) -> None:
        """Batch lookups read the 2M-aligned entry again; ``buffer`` is writable again."""
        t = self._t
        t.lvl_bits, t.lvl_nbits = ffi.NULL, 0
        self._lvl = self._ro = None

    def check_level_index(self) -> None:
        """Raise RmpError naming the first 2M block whose index bit differs from its entry."""
        r = lib.kvmmu_rmp_level_index_check(self._t)
        if r:
            raise RmpError(f"level index: the bit of the 2M block at pfn {(r - 1) * 512:#x} "
                           "differs from its entry's Page_Size (the table was written behind "
                           "the index's back; call enable_level_index() to rebuild it)")

    def advise(self, pattern: str) -> None:
        """madvise() the table's file mapping (:func:`advise_mapping`)."""
        advise_mapping(self, pattern)

    def drop_cache(self) -> None:
        """Bound the page cache a file-backed table holds (:func:`drop_page_cache`)."""
        drop_page_cache(self)

    def _mapping(self) -> Optional[mmap.mmap]:
        return _file_mapping(self)

    def __enter__(self) -> "RmpTable":
        self._t
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def size(self) -> int:
        return int(self._view().size)

    @property
    def rmp_end(self) -> int:
        """RMP_END: the last byte of a contiguous table (0 for a segmented one, as the kernel wants)."""
        return 0 if self.segmented else self.rmp_base + self.size - 1

    @property
    def entries(self) -> np.ndarray:
        """The contiguous table's entries as an (nr_pfns, 2) uint64 view [lo, hi]."""
        if self.segmented:
            raise RmpError("entries: a segmented RMP has no single entry array (use fields())")
        return self._view()[BOOKKEEPING:].view("<u8").reshape(-1, 2)

    # -------------------------------------------------------------- entries
    def _pfn(self, pfn) -> int:
        v = _batch.uint("pfn", pfn)
        if not lib.kvmmu_rmp_covered(self._t, v):
            raise RmpError(f"pfn={v:#x}: beyond the RMP (covers {self.nr_pfns:#x} pages); "
                           "get_raw_rmpentry() returns -EFAULT")
        return v

    def _need_writable(self, what: str) -> None:
        if not self.writable:
            raise RmpError(f"{what}: the table is read-only (opened with mode='r')")

    def covered(self, pfn) -> bool:
        """RMP-Covered: the pfn's entry lies inside the table."""
        if pfn.__class__ is int:
            try:
                return _covered_c(self._t_, pfn)
            except (OverflowError, TypeError):   # pfn beyond 64 bits / the table closed
                pass
        return _covered_c(self._t, _batch.uint("pfn", pfn))

    def entry(self, pfn) -> RmpEntry:
        """The raw entry of one pfn (one C call locates it, the quadwords are read from the
        buffer's memoryview)."""
        if pfn.__class__ is int:
            try:
                i = _entry_index_c(self._t_, pfn)
                if i >= 0:
                    return _tuple_new(RmpEntry, (self._qlo[i], self._qhi[i]))
            except (OverflowError, TypeError):    # pfn beyond 64 bits / the table closed
                pass
        i = _entry_index_c(self._t, self._pfn(pfn))
        return _tuple_new(RmpEntry, (self._qlo[i], self._qhi[i]))

    def write_raw(self, pfn, lo: int, hi: int = 0) -> None:
        """Store raw quadwords (what firmware or set-up code does; no instruction rules)."""
        self._need_writable("write_raw")
        v = self._pfn(pfn)
        lib.kvmmu_rmp_write(self._t, v, _batch.uint("lo", lo), _batch.uint("hi", hi))

    def set_in_use(self, pfn, in_use: bool = True) -> None:
        """Set or clear the hardware lock bit (an entry in use: RMPUPDATE/PSMASH fail INUSE)."""
        in_use = _batch.boolean("in_use", in_use)
        self._need_writable("set_in_use")
        e = self.entry(pfn)
        lo = (e.lo | (1 << 63)) if in_use else (e.lo & ~(1 << 63))
        self.write_raw(pfn, lo, e.hi)

    def _pfn_array(self, pfns) -> np.ndarray:
        self._t
        return _batch.in_array("pfns", pfns, np.uint64)

    def _disjoint(self, outs, ins) -> None:
        """Outputs may overlap neither an input, another output, nor the table itself."""
        _batch.disjoint(outs, list(ins) + [("the RMP table buffer", self.buffer)])

    def _range_error(self, pfns, idx: int) -> RmpError:
        return RmpError(f"pfns[{idx}]={int(pfns.reshape(-1)[idx]):#x}: beyond the RMP "
                        f"(covers {self.nr_pfns:#x} pages)")

    def fields(self, pfns: np.ndarray, out: Optional[np.ndarray] = None, *,
               threads: Optional[int] = None) -> np.ndarray:
        """Batch field extraction for pfns into a FIELDS_DTYPE array."""
        pfns = self._pfn_array(pfns)
        out = _batch.out_array("out", out, FIELDS_DTYPE, pfns.shape)
        self._disjoint([("out", out)], [("pfns", pfns)])
        t = self._t

        def part(lo, hi):
            err = ffi.new("int *")
            return (lib.kvmmu_rmp_fields_batch(t, _batch.ptr_at(pfns, "uint64_t", lo),
                                               _batch.ptr_at(out, "struct kvmmu_rmp_fields", lo),
                                               hi - lo, err),)
        r = _par.run(pfns.size, threads, part)[0]
        if r:
            raise self._range_error(pfns, r - 1)
        return out

    # -------------------------------------------------------------- lookups
    def snp_lookup_rmpentry(self, pfn) -> tuple[bool, int]:
        """snp_lookup_rmpentry(): (assigned, level) -- assigned from the pfn's own entry,
        level from the 2M-aligned entry's page size.  Out-of-range pfns raise RmpError."""
        if pfn.__class__ is int:
            try:
                w = _lookup_c(self._t_, pfn)
                if w >= 0:
                    return _LOOKUP[w]
            except (OverflowError, TypeError):
                pass
        v = self._pfn(pfn)
        return _LOOKUP[_lookup_c(self._t, v)]

    lookup = snp_lookup_rmpentry

    def lookup_batch(self, pfns: np.ndarray, *, assigned=None, level=None, asid=None, gpa=None,
                     with_owner: bool = True, threads: Optional[int] = None) -> LookupResult:
        """snp_lookup_rmpentry() over a pfn array: assigned/level (and ASID/GPA of the pfn's
        own entry unless ``with_owner=False``).  Out-of-range pfns raise RmpError.  No output
        may overlap ``pfns``, another output or the table.  Batches of 1M pfns and more run
        as parts on threads (``threads``, see pykvmmu._par); errors are those of one pass."""
        with_owner = _batch.boolean("with_owner", with_owner)
        pfns = self._pfn_array(pfns)
        shape = pfns.shape
        assigned = _batch.out_array("assigned", assigned, np.uint8, shape)
        level = _batch.out_array("level", level, np.uint8, shape)
        if with_owner:
            asid = _batch.out_array("asid", asid, np.uint16, shape)
            gpa = _batch.out_array("gpa", gpa, np.uint64, shape)
        else:
            for name, a in (("asid", asid), ("gpa", gpa)):
                if a is not None:
                    raise RmpError(f"{name}=: an output array given with with_owner=False "
                                   "(it would not be written)")
        self._disjoint([("assigned", assigned), ("level", level), ("asid", asid), ("gpa", gpa)],
                       [("pfns", pfns)])
        t = self._t
        owner = with_owner
        bits = self._batch_level_bits(pfns.size, threads)

        def part(lo, hi):
            err = ffi.new("int *")
            return (lib.kvmmu_rmp_lookup_batch_lvl(
                t, _batch.ptr_at(pfns, "uint64_t", lo), _batch.ptr_at(assigned, "uint8_t", lo),
                _batch.ptr_at(level, "uint8_t", lo),
                _batch.ptr_at(asid if owner else None, "uint16_t", lo),
                _batch.ptr_at(gpa if owner else None, "uint64_t", lo), hi - lo, err, bits),)
        r = _par.run(pfns.size, threads, part)[0]
        if r:
            raise self._range_error(pfns, r - 1)
        return LookupResult(assigned, level, asid, gpa)

    #: a batch of at least this many lookups per 2M block of the table builds a level index
    #: for itself (see _batch_level_bits)
    BATCH_INDEX_RATIO = 4

    def _batch_level_bits(self, n: int, threads: Optional[int] = None):
        """The level index a lookup batch of ``n`` pfns reads: the table's own (with
        enable_level_index), else, for an in-memory contiguous table and a batch of at least
        BATCH_INDEX_RATIO lookups per 2M block, one built for this batch (64 KiB per TiB of
        host memory, one read of each 2M-aligned entry: a random batch that large reads
        nearly all of them anyway, and each lookup then reads one entry, not two), else NULL
        (each lookup reads its 2M-aligned entry).  A file-backed table never builds one: it
        would pull every 2M-aligned entry's page into the page cache (docs/rmp.md).  A
        batch index is built in parts on as many threads as the batch runs on (``threads``),
        each part whole 64-bit words of it."""
        t = self._t
        if t.lvl_bits != ffi.NULL:
            return t.lvl_bits
        nblocks = -(-self.nr_pfns // PTRS_PER_PMD)
        if (self.segmented or isinstance(self._buf, np.memmap)
                or n < self.BATCH_INDEX_RATIO * nblocks):
            return ffi.NULL
        bits = ffi.new("uint64_t[]", max(1, -(-nblocks // 64)))
        assert _par.ALIGN % 64 == 0             # parts cut on whole words of the index
        _par.map_parts(nblocks, _par.threads_for(n, threads),
                       lambda lo, hi: lib.kvmmu_rmp_level_bits(t, bits, lo, hi))
        return bits

    def page_state(self, pfn, *, effective: bool = True) -> PageState:
        """The firmware page state of a pfn (DEFAULT beyond the table).  ``effective``: for a
        pfn inside an assigned 2M page, the state of the 2M entry that governs it; otherwise
        the raw entry's own state, as the firmware's rmp_entry_get_state() sees it."""
        if pfn.__class__ is int and (effective is True or effective is False):
            try:
                return _STATES[_page_state_c(self._t_, pfn, effective)]
            except (OverflowError, TypeError):
                pass
        v = _batch.uint("pfn", pfn)
        effective = _batch.boolean("effective", effective)
        return _STATES[_page_state_c(self._t, v, effective)]

    def page_states(self, pfns: np.ndarray, *, effective: bool = True,
                    out: Optional[np.ndarray] = None, threads: Optional[int] = None) -> np.ndarray:
        """page_state() over a pfn array (DEFAULT beyond the table)."""
        effective = _batch.boolean("effective", effective)
        pfns = self._pfn_array(pfns)
        out = _batch.out_array("out", out, np.uint8, pfns.shape)
        self._disjoint([("out", out)], [("pfns", pfns)])
        t = self._t
        _par.map_parts(pfns.size, threads, lambda lo, hi: lib.kvmmu_rmp_page_state_batch(
            t, _batch.ptr_at(pfns, "uint64_t", lo), effective, _batch.ptr_at(out, "uint8_t", lo),
            hi - lo))
        return out

    def count_assigned(self, start: int, count: int) -> int:
        """Number of entries with Assigned=1 among pfns [start, start + count) (pfns beyond
        the table count as unassigned: they are hypervisor-owned)."""
        start, count = _batch.uint("start", start), _batch.uint("count", count)
        end = min(start + count, self.nr_pfns)
        if end <= start:
            self._t
            return 0
        return int(lib.kvmmu_rmp_count_assigned(self._t, start, end - start))

    # -------------------------------------------------------------- instructions
    def rmpupdate(self, pfn, *, gpa: int = 0, assigned=False, pagesize: int = 0,
                  immutable=False, asid: int = 0) -> Rc:
        """RMPUPDATE (hypervisor): write GPA/Assigned/Page_Size/Immutable/ASID of an entry.
        ``gpa`` is a byte address (struct rmp_state).  Returns the EAX code."""
        if (pfn.__class__ is gpa.__class__ is asid.__class__ is int
                and (assigned is False or assigned is True or assigned.__class__ is int)
                and pagesize.__class__ in _INT_OR_BOOL
                and (immutable is False or immutable is True or immutable.__class__ is int)):
            try:     # _tw_ is None (TypeError) when the table is read-only or closed
                return _RC[_rmpupdate_c(self._tw_, pfn, gpa, assigned, pagesize, immutable, asid)]
            except (OverflowError, TypeError):
                pass
        self._need_writable("rmpupdate")
        st = (_batch.uint("gpa", gpa), _batch.uint("assigned", assigned, 8),
              _batch.uint("pagesize", pagesize, 8), _batch.uint("immutable", immutable, 8),
              _batch.uint("asid", asid, 32))
        return _RC[lib.kvmmu_rmp_rmpupdate_fields(self._t, _batch.uint("pfn", pfn), *st)]

    def rmpupdate_batch(self, pfns: np.ndarray, gpas: Optional[np.ndarray] = None, *,
                        assigned=True, pagesize: int = 0, immutable=False, asid: int = 0) -> int:
        """RMPUPDATE for each pfn in order (same state, per-pfn GPA byte address).

        Every input rule (RMPUPDATE's FAIL_INPUT cases: pfn covered, field widths, ASID,
        GPA alignment and width, 2M alignment and coverage) is checked for the whole batch
        first; a bad element raises RmpError naming it and nothing is changed.  The
        instructions then run in order, as the kernel issues them one at a time: one that
        fails on the entries' state (FAIL_PERMISSION, FAIL_INUSE, FAIL_OVERLAP) stops the
        batch and raises :class:`RmpBatchError`, whose ``done`` says how many updates were
        applied (RMPUPDATE is not transactional).  Returns the number of updates done."""
        self._need_writable("rmpupdate_batch")
        pfns = self._pfn_array(pfns)
        gp = ffi.NULL
        if gpas is not None:
            _batch.in_array("gpas", gpas, np.uint64)
            _batch.same_shape([("pfns", pfns), ("gpas", gpas)])
            gp = _batch.ptr(gpas, "uint64_t")
        for name, a in (("pfns", pfns), ("gpas", gpas)):    # inputs the updates would change
            _batch.disjoint([(name, a)], [("the RMP table buffer", self.buffer)])
        st = (_batch.uint("assigned", assigned, 8), _batch.uint("pagesize", pagesize, 8),
              _batch.uint("immutable", immutable, 8), _batch.uint("asid", asid, 32))
        pp = _batch.ptr(pfns, "uint64_t")
        err = ffi.new("int *")
        r = lib.kvmmu_rmp_rmpupdate_batch_check(self._t, pp, gp, *st, pfns.size, err)
        if r:
            i = r - 1
            p = int(pfns.reshape(-1)[i])
            g = int(gpas.reshape(-1)[i]) if gpas is not None else 0
            rule = rule_texts("rmp")[err[0]].format(pfn=p, gpa=g, nr_pfns=self.nr_pfns, assigned=st[0],
                                                    pagesize=st[1], immutable=st[2], asid=st[3])
            raise RmpError(f"pfns[{i}]={p:#x}: {rule} (RMPUPDATE FAIL_INPUT); nothing was "
                           "updated")
        r = lib.kvmmu_rmp_rmpupdate_batch(self._t, pp, gp, *st, pfns.size, err)
        if r:
            i = r - 1
            raise RmpBatchError(f"pfns[{i}]={int(pfns.reshape(-1)[i]):#x}: RMPUPDATE failed "
                                f"with {Rc(err[0]).name} ({err[0]}); the {i} earlier updates "
                                "were done (RMPUPDATE is not transactional)", done=i,
                                rc=Rc(err[0]))
        return pfns.size

    def psmash(self, pfn) -> Rc:
        """PSMASH (hypervisor): split a 2M RMP page into 512 4K entries."""
        if pfn.__class__ is int:
            try:
                return _RC[_psmash_c(self._tw_, pfn)]
            except (OverflowError, TypeError):
                pass
        self._need_writable("psmash")
        return _RC[lib.kvmmu_rmp_psmash(self._t, _batch.uint("pfn", pfn))]

    def pvalidate(self, pfn, *, asid: int, gfn: int, size: int = 0, validate=True,
                  vmpl: int = 0) -> InsnResult:
        """PVALIDATE (guest): set or clear Validated of the page at ``gfn`` backed by ``pfn``.
        ``size`` (RCX) and ``validate`` (RDX) are register operands: values other than 0/1
        give FAIL_INPUT, as on the hardware."""
        if (pfn.__class__ is asid.__class__ is gfn.__class__ is size.__class__ is vmpl.__class__ is int
                and (validate is True or validate is False or validate.__class__ is int)):
            try:
                w = _pvalidate_c(self._tw_, pfn, asid, vmpl, gfn, size, validate)
            except (OverflowError, TypeError):
                w = -1
            if w >= 0:
                return _INSN_MEMO.get(w) or _insn_result(w)
        self._need_writable("pvalidate")
        w = _pvalidate_c(self._t, _batch.uint("pfn", pfn), _batch.uint("asid", asid, 32),
                                         _batch.uint("vmpl", vmpl, 32), _batch.uint("gfn", gfn),
                                         _batch.uint("size", size, 32),
                                         _batch.uint("validate", validate, 32))
        return _INSN_MEMO.get(w) or _insn_result(w)

    def rmpadjust(self, pfn, *, asid: int, gfn: int, target_vmpl: int, perms: int,
                  size: int = 0, vmsa=False, vmpl: int = 0) -> InsnResult:
        """RMPADJUST (guest): set the permission mask of a higher VMPL (and VMSA at VMPL0)."""
        if (size is _ZERO and vmsa is False and vmpl is _ZERO and pfn.__class__ is asid.__class__
                is gfn.__class__ is target_vmpl.__class__ is perms.__class__ is int):
            try:        # the defaults (VMPL 0, 4K, VMSA 0): three operands fewer, a result code back
                c = _rmpadjust_vmpl0_c(self._tw_, pfn, asid, gfn, target_vmpl, perms)
                if c >= 0:
                    return _INSN_CODES[c]
            except (OverflowError, TypeError):
                pass
        if (pfn.__class__ is asid.__class__ is gfn.__class__ is target_vmpl.__class__ is perms.__class__
                is size.__class__ is vmpl.__class__ is int
                and (vmsa is False or vmsa is True or vmsa.__class__ is int)):
            try:
                w = _rmpadjust_c(self._tw_, pfn, asid, vmpl, gfn, size, target_vmpl, perms, vmsa)
            except (OverflowError, TypeError):
                w = -1
            if w >= 0:
                return _INSN_MEMO.get(w) or _insn_result(w)
        self._need_writable("rmpadjust")
        w = _rmpadjust_c(self._t, _batch.uint("pfn", pfn),
                                         _batch.uint("asid", asid, 32), _batch.uint("vmpl", vmpl, 32),
                                         _batch.uint("gfn", gfn), _batch.uint("size", size, 32),
                                         _batch.uint("target_vmpl", target_vmpl, 32),
                                         _batch.uint("perms", perms, 32), _batch.uint("vmsa", vmsa, 32))
        return _INSN_MEMO.get(w) or _insn_result(w)

    # -------------------------------------------------------------- kernel helpers
    def rmpupdate_kernel(self, pfn, *, gpa: int, assigned: bool, level: int, immutable: bool,
                         asid: int) -> int:
        """The kernel's rmpupdate() (:func:`rmpupdate_kernel`); the RMPUPDATE code goes to ``last_rc``."""
        return rmpupdate_kernel(self, pfn, gpa=gpa, assigned=assigned, level=level,
                                immutable=immutable, asid=asid)

    def rmp_make_private(self, pfn, gpa: int, level: int, asid: int, immutable: bool = False) -> int:
        """rmp_make_private(): state {gpa, assigned=1, pagesize=level, immutable, asid}."""
        return self.rmpupdate_kernel(pfn, gpa=gpa, assigned=True, level=level,
                                     immutable=immutable, asid=asid)

    def rmp_make_shared(self, pfn, level: int) -> int:
        """rmp_make_shared(): state all zero except the page size."""
        return self.rmpupdate_kernel(pfn, gpa=0, assigned=False, level=level, immutable=False,
                                     asid=0)

    def dump_rmpentry(self, pfn) -> list:
        """The kernel's dump_rmpentry(): see :func:`dump_rmpentry_lines`."""
        return dump_rmpentry_lines(self, pfn)

    # -------------------------------------------------------------- access checks
    def host_check(self, pfn, level: int = PG_LEVEL_4K, *, user: bool = False) -> AccessResult:
        """The RMP check of a host data write / page-table access through a mapping of
        ``level`` (1G checked as 2M: all 512 entries need Assigned=0).  Reads are not checked."""
        if pfn.__class__ is level.__class__ is int and (user is False or user is True):
            try:
                w = _host_check_c(self._t_, pfn, level, user)
            except (OverflowError, TypeError):
                w = -1
            if w >= 0:
                return _HOST_MEMO.get(w) or _host_result(w)
        level = _level("level", level)
        user = _batch.boolean("user", user)
        w = _host_check_c(self._t, _batch.uint("pfn", pfn), level, user)
        return _HOST_MEMO.get(w) or _host_result(w)

    def host_check_batch(self, pfns: np.ndarray, level: int = PG_LEVEL_4K,
                         out: Optional[np.ndarray] = None, *,
                         threads: Optional[int] = None) -> np.ndarray:
        """host_check() over a pfn array: the Check code per pfn (0 = OK)."""
        level = _level("level", level)
        pfns = self._pfn_array(pfns)
        out = _batch.out_array("out", out, np.uint8, pfns.shape)
        self._disjoint([("out", out)], [("pfns", pfns)])
        t = self._t
        _par.map_parts(pfns.size, threads, lambda lo, hi: lib.kvmmu_rmp_host_check_batch(
            t, _batch.ptr_at(pfns, "uint64_t", lo), level, _batch.ptr_at(out, "uint8_t", lo),
            hi - lo))
        return out

    def _access(self, asid, vmpl, npt_level, kind, c_bit, snp_active, user):
        """The checked access operands as a struct kvmmu_rmp_access (pfn/gfn not set)."""
        args = self._access_args(asid, vmpl, npt_level, kind, c_bit, snp_active, user)
        a = ffi.new("struct kvmmu_rmp_access *")
        a.asid, a.vmpl, a.npt_level, a.kind, a.c_bit, a.snp_active, a.user = args
        return a

    @staticmethod
    def _access_args(asid, vmpl, npt_level, kind, c_bit, snp_active, user) -> tuple:
        """(asid, vmpl, npt_level, kind, c_bit, snp_active, user), each checked."""
        npt_level = _level("npt_level", npt_level)
        if not 0 <= _batch.uint("vmpl", vmpl, 8) <= 3:
            raise RmpError(f"vmpl={vmpl}: VMPLs are 0..3")
        try:
            if isinstance(kind, (bool, np.bool_)):
                raise ValueError
            kind = Access[kind.upper()] if isinstance(kind, str) else Access(operator.index(kind))
        except (KeyError, ValueError, TypeError):
            raise RmpError(f"kind={kind!r}: one of {[a.name.lower() for a in Access]}") from None
        asid = _batch.uint("asid", asid, 32)
        return (asid, vmpl, npt_level, int(kind), _batch.boolean("c_bit", c_bit),
                _batch.boolean("snp_active", snp_active), _batch.boolean("user", user))

    def guest_check(self, pfn, gfn, *, asid: int, vmpl: int = 0, npt_level: int = PG_LEVEL_4K,
                    kind="read", c_bit: bool = True, snp_active: bool = True,
                    user: bool = False) -> AccessResult:
        """The RMP checks of a guest access (APM Table 15-39), in priority order: covered,
        guest-owned, reverse-map, mutable, page-size (NPF), validated (#VC), VMPL (NPF)."""
        if (c_bit is True and snp_active is True and user is False and vmpl is _ZERO
                and npt_level is PG_LEVEL_4K and kind is _READ and pfn.__class__ is gfn.__class__
                is asid.__class__ is int):
            try:        # the default access operands: six operands fewer, the check code back
                c = _guest_check_read_c(self._t_, pfn, gfn, asid)
                return _GUEST_READ[c]
            except (OverflowError, TypeError):
                pass
        k = _kind_code(kind) if kind.__class__ is str else kind
        if (pfn.__class__ is gfn.__class__ is asid.__class__ is vmpl.__class__ is npt_level.__class__
                is k.__class__ is int and c_bit.__class__ is snp_active.__class__ is user.__class__ is bool):
            try:
                w = _guest_check_c(self._t_, pfn, gfn, asid, vmpl, npt_level, k, c_bit, snp_active, user)
            except (OverflowError, TypeError):
                w = -1
            if w >= 0:
                return _GUEST_MEMO.get(w) or _guest_result(w)
        args = self._access_args(asid, vmpl, npt_level, kind, c_bit, snp_active, user)
        w = _guest_check_c(self._t, _batch.uint("pfn", pfn), _batch.uint("gfn", gfn), *args)
        return _GUEST_MEMO.get(w) or _guest_result(w)

    def guest_check_batch(self, pfns: np.ndarray, gfns: np.ndarray, *, asid: int, vmpl: int = 0,
                          npt_level: int = PG_LEVEL_4K, kind="read", c_bit: bool = True,
                          snp_active: bool = True, user: bool = False,
                          out: Optional[np.ndarray] = None,
                          threads: Optional[int] = None) -> np.ndarray:
        """guest_check() over pfn/gfn arrays: the Check code per access (0 = OK)."""
        pfns = self._pfn_array(pfns)
        _batch.in_array("gfns", gfns, np.uint64)
        _batch.same_shape([("pfns", pfns), ("gfns", gfns)])
        out = _batch.out_array("out", out, np.uint8, pfns.shape)
        self._disjoint([("out", out)], [("pfns", pfns), ("gfns", gfns)])
        a = self._access(asid, vmpl, npt_level, kind, c_bit, snp_active, user)
        t = self._t
        _par.map_parts(pfns.size, threads, lambda lo, hi: lib.kvmmu_rmp_guest_check_batch(
            t, _batch.ptr_at(pfns, "uint64_t", lo), _batch.ptr_at(gfns, "uint64_t", lo), a,
            _batch.ptr_at(out, "uint8_t", lo), hi - lo))
        return out

    def __repr__(self) -> str:
        if self.closed:
            return "RmpTable(closed)"
        kind = f"segmented shift={self.seg_shift}" if self.segmented else "contiguous"
        return (f"RmpTable({kind}, {self.size:#x} bytes, covers {self.nr_pfns:#x} pages, "
                f"flags={self.flags!r})")


# ------------------------------------------------------------------ kernel helpers

def rmpupdate_kernel(table: "RmpTable", pfn, *, gpa: int, assigned: bool, level: int, immutable: bool,
                     asid: int) -> int:
    """The kernel's rmpupdate(): adjust_direct_map() rules, then RMPUPDATE.  Returns 0 or
    -EFAULT; the RMPUPDATE code is kept in ``table.last_rc``.  (The kernel retries while
    FAIL_OVERLAP, a transient firmware lock there; in the model it is persistent, so it
    is reported once as -EFAULT.)"""
    pfn = _batch.uint("pfn", pfn)
    if isinstance(level, (bool, np.bool_)):
        raise RmpError(f"level={level!r}: enum pg_level is an int (1 = 4K, 2 = 2M)")
    level = _batch.uint("level", level, 32)        # enum pg_level; > 2M gives -EFAULT
    _batch.uint("gpa", gpa)
    _batch.uint("asid", asid, 32)                  # u32 asid
    assigned = _batch.boolean("assigned", assigned)
    immutable = _batch.boolean("immutable", immutable)
    table._need_writable("rmpupdate_kernel")
    table.last_rc = None
    if level not in (PG_LEVEL_4K, PG_LEVEL_2M) or not table.covered(pfn):
        return -EFAULT                       # adjust_direct_map: -EINVAL -> -EFAULT
    if level == PG_LEVEL_2M and (pfn % PTRS_PER_PMD or not table.covered(pfn + 511)):
        return -EFAULT
    rc = table.rmpupdate(pfn, gpa=gpa, assigned=assigned,
                        pagesize=0 if level == PG_LEVEL_4K else 1,
                        immutable=immutable, asid=asid)
    table.last_rc = rc
    return 0 if rc == Rc.SUCCESS else -EFAULT


def _rmp_make_private_4k(table: "RmpTable", pfn: int, gpa: int, asid: int) -> int:
    """``table.rmp_make_private(pfn, gpa, PG_LEVEL_4K, asid, False)`` (:func:`rmpupdate_kernel`)
    for a caller that holds plain in-range ints (``pykvmmu.vm``'s SNP prepare hook): the same
    result and ``last_rc`` without the operand checks.  A read-only or closed table, or an
    operand the C call refuses, takes the public call (which raises what it raises)."""
    tw = table._tw_
    if tw is not None and pfn.__class__ is gpa.__class__ is asid.__class__ is int:
        try:
            rc = _RC[_rmpupdate_c(tw, pfn, gpa, True, 0, False, asid)]
            # RMPUPDATE validates first: an uncovered pfn (FAIL_INPUT) wrote nothing, and
            # rmpupdate_kernel refuses it before the instruction (last_rc None)
            covered = rc != Rc.FAIL_INPUT or _covered_c(tw, pfn)
        except (OverflowError, TypeError):
            pass
        else:
            table.last_rc = rc if covered else None
            return 0 if rc == Rc.SUCCESS else -EFAULT
    return table.rmp_make_private(pfn, gpa, PG_LEVEL_4K, asid, False)


# ------------------------------------------------------------------ the concept's other modules
from . import tablefile  # noqa: E402,F401 (create_file writes through tablefile._write_all)
from .dump import DumpEntry, decode_dump, dump_rmpentry_lines  # noqa: E402
from .faults import (NpfOutcome, UserFault, handle_user_rmp_page_fault,  # noqa: E402
                     kvm_max_private_mapping_level, sev_handle_rmp_fault,
                     sev_private_max_mapping_level)
from .tablefile import (FILE_MAGIC, FILE_VERSION, HEADER_SIZE, LAYOUT_CONTIGUOUS,  # noqa: E402
                        LAYOUT_SEGMENTED, TableFileHeader, _atomic_write, _file_mapping,
                        advise_mapping, drop_page_cache, save_table)
