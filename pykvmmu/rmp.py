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
"""
from __future__ import annotations

import enum
import mmap
import os
from typing import NamedTuple, Optional

import numpy as np

from . import _batch
from ._ffi import ffi, lib
from .errors import InputError

__all__ = [
    "RmpError", "RmpFlags", "Rc", "Check", "Access", "PageState", "RmpEntry", "RmpTable",
    "InsnResult", "AccessResult", "LookupResult", "UserFault", "NpfOutcome",
    "FIELDS_DTYPE", "PG_LEVEL_4K", "PG_LEVEL_2M", "PG_LEVEL_1G", "table_bytes", "decode",
    "page_state_raw", "handle_user_rmp_page_fault", "sev_handle_rmp_fault",
    "sev_private_max_mapping_level", "kvm_max_private_mapping_level", "RMP_PF_SPLIT",
    "RMP_PF_RETRY", "RMP_PF_UNMAP", "make_lo", "rmp_cfg_decode", "rst_entry",
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
GPA_FRAME_BITS = 39

RMP_PF_SPLIT, RMP_PF_RETRY, RMP_PF_UNMAP = 0, 1, 2   # enum rmp_pf_ret of the v7/v8 patch
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


def _fault_name(rc: int) -> Optional[str]:
    return {Rc.NPF: "NPF", Rc.VC: "#VC", Rc.GP: "#GP"}.get(rc)


class RmpEntry(NamedTuple):
    """One raw RMP entry (kernel rmpentry_raw / firmware rmp_fields_t + quadword 2)."""
    lo: int
    hi: int

    assigned = property(lambda s: s.lo & 1)
    pagesize = property(lambda s: (s.lo >> 1) & 1)
    immutable = property(lambda s: (s.lo >> 2) & 1)
    subpage_count = property(lambda s: (s.lo >> 3) & 0x1FF)
    gpa = property(lambda s: (s.lo >> 12) & ((1 << GPA_FRAME_BITS) - 1))   # a frame number
    asid = property(lambda s: (s.lo >> 51) & 0x3FF)
    vmsa = property(lambda s: (s.lo >> 61) & 1)
    validated = property(lambda s: (s.lo >> 62) & 1)
    lock = property(lambda s: (s.lo >> 63) & 1)

    @property
    def vmpl(self) -> tuple:
        """The four VMPL permission masks (bit0 R, bit1 W, bit2 X-user, bit3 X-super, bit4 SSS)."""
        return tuple((self.hi >> (8 * v)) & 0xFF for v in range(4))

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
    for name, v, bits in (("assigned", assigned, 1), ("pagesize", pagesize, 1),
                          ("immutable", immutable, 1), ("subpage_count", subpage_count, 9),
                          ("gpa", gpa, GPA_FRAME_BITS), ("asid", asid, 10), ("vmsa", vmsa, 1),
                          ("validated", validated, 1), ("lock", lock, 1)):
        _batch.uint(name, v, bits)
    return (int(assigned) | int(pagesize) << 1 | int(immutable) << 2 | subpage_count << 3 |
            gpa << 12 | asid << 51 | int(vmsa) << 61 | int(validated) << 62 | int(lock) << 63)


def page_state_raw(lo: int) -> PageState:
    """rmp_entry_get_state() of the AMD firmware for one raw first quadword."""
    try:
        return PageState(lib.kvmmu_rmp_state_raw(lo))
    except (OverflowError, TypeError):
        raise _batch.bad_u64("lo", lo) from None


def decode(lo: np.ndarray, hi: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Batch field extraction from raw quadword arrays into a FIELDS_DTYPE array."""
    _batch.in_array("lo", lo, np.uint64)
    _batch.in_array("hi", hi, np.uint64)
    shape = _batch.same_shape([("lo", lo), ("hi", hi)])
    out = _batch.out_array("out", out, FIELDS_DTYPE, shape)
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


def _anon_zeros(nbytes: int) -> np.ndarray:
    """A zero-filled, lazily allocated byte buffer (anonymous mmap, transparent huge pages)."""
    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
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


class LookupResult(NamedTuple):
    assigned: np.ndarray   # uint8
    level: np.ndarray      # uint8 (PG_LEVEL_4K / PG_LEVEL_2M)
    asid: np.ndarray       # uint16
    gpa: np.ndarray        # uint64 byte address (raw.gpa << 12)


class RmpTable:
    """An RMP over a numpy uint8 buffer laid out as at RMP_BASE.

    Create one with :meth:`create` (lazily zeroed: a 1 TiB host costs 4 GiB +
    16 KiB of address space and only the pages written become resident), open
    one over an existing buffer or a file with :meth:`open`, write it with
    :meth:`save`.
    """

    def __init__(self, buffer: np.ndarray, *, segmented: bool = False, seg_shift: int = 36,
                 rmp_base: int = DEFAULT_RMP_BASE, flags: int = 0):
        if not isinstance(buffer, np.ndarray):
            raise RmpError(f"buffer: expected a numpy.ndarray, got {type(buffer).__name__}")
        if buffer.dtype not in (np.uint8, np.uint64) or not buffer.flags.c_contiguous:
            raise RmpError(f"buffer: dtype {buffer.dtype}: a C-contiguous uint8 or uint64 array "
                           "is required (the RMP is raw little-endian memory)")
        buf = buffer.reshape(-1).view(np.uint8)
        if buf.ctypes.data % 16:
            raise RmpError("buffer: not 16-byte aligned (RMP entries are 16-byte records)")
        self.flags = RmpFlags(_batch.uint("flags", flags, 32))
        if self.flags & ~lib.KVMMU_RMP_F_ALL:
            raise RmpError(f"flags={int(flags):#x}: unknown RMP flag bits")
        self.buffer = buf
        self.writable = bool(buf.flags.writeable)
        self.segmented = bool(segmented)
        self.rmp_base = _batch.uint("rmp_base", rmp_base, 52)
        self._t = ffi.new("struct kvmmu_rmp *")
        self._cbuf = ffi.from_buffer("uint8_t[]", buf)
        self._t.base = self._cbuf
        self._t.size = buf.size
        self._t.flags = int(self.flags)
        if buf.size < BOOKKEEPING:
            raise RmpError(f"buffer: {buf.size} bytes, smaller than the 16 KiB bookkeeping area")
        if not segmented:
            if (buf.size - BOOKKEEPING) % ENTRY_SIZE:
                raise RmpError(f"buffer: {buf.size} bytes: size - 16 KiB must be a multiple of "
                               "16 (one entry per 4 KiB page)")
            self.seg_shift = NONSEG_SHIFT
            self._t.seg_shift = NONSEG_SHIFT
            self._t.nr_segs = 1
            self._t.seg_off[0] = BOOKKEEPING
            self._t.seg_count[0] = (buf.size - BOOKKEEPING) // ENTRY_SIZE
            self.nr_pfns = int(self._t.seg_count[0])
        else:
            self._load_segments(seg_shift)

    # -------------------------------------------------------------- layout
    def _load_segments(self, seg_shift: int) -> None:
        seg_shift = _batch.uint("seg_shift", seg_shift, 8)
        if not 21 <= seg_shift <= 51:
            raise RmpError(f"seg_shift={seg_shift}: RMP_CFG[13:8] must give segments of 2 MiB "
                           "to 2^51 bytes (21..51)")
        if self.rmp_base % (1 << 20):
            raise RmpError(f"rmp_base={self.rmp_base:#x}: a segmented RMP_BASE must be 1 MiB aligned")
        if self.buffer.size < BOOKKEEPING + RST_SIZE:
            raise RmpError("buffer: too small for the bookkeeping area and the segment table")
        rst = self.buffer[BOOKKEEPING:BOOKKEEPING + RST_SIZE].view("<u8")
        self.seg_shift = seg_shift
        self._t.seg_shift = seg_shift
        self._t.nr_segs = MAX_SEGMENTS
        per_seg = 1 << (seg_shift - 12)
        top = 0
        for i in range(MAX_SEGMENTS):
            v = int(rst[i])
            gib = v & 0xFFFFF
            seg_base = v & (((1 << 52) - 1) & ~((1 << 20) - 1))
            count = min(gib << 18, per_seg)
            if count:
                off = seg_base - self.rmp_base
                if off < BOOKKEEPING + RST_SIZE or off + count * ENTRY_SIZE > self.buffer.size:
                    raise RmpError(f"RST[{i}]={v:#x}: segment base {seg_base:#x} + {count} entries "
                                   f"is outside the buffer at rmp_base={self.rmp_base:#x}")
                self._t.seg_off[i] = off
                top = (i * per_seg) + count
            self._t.seg_count[i] = count
        self.nr_pfns = top

    @classmethod
    def create(cls, mem_bytes: int, *, segmented: bool = False, seg_shift: int = 36,
               rmp_base: int = DEFAULT_RMP_BASE, flags: int = 0) -> "RmpTable":
        """A zeroed RMP covering ``mem_bytes`` of host memory (lazily allocated, no copy).

        Contiguous: exactly 16 KiB + 16 bytes per 4 KiB page (1 TiB -> 4 GiB + 16 KiB).
        Segmented: bookkeeping, the 4 KiB RST, then 1 MiB-aligned segments of
        ``mapped_GiB * 4 MiB`` each (segment size ``1 << seg_shift``).
        """
        mem_bytes = _batch.uint("mem_bytes", mem_bytes)
        if mem_bytes == 0:
            raise RmpError("mem_bytes=0: an RMP must cover at least one page")
        if not segmented:
            return cls(_anon_zeros(table_bytes(mem_bytes)), flags=flags, rmp_base=rmp_base)
        seg_shift = _batch.uint("seg_shift", seg_shift, 8)
        if not 30 <= seg_shift <= 51:
            raise RmpError(f"seg_shift={seg_shift}: create() builds segments of 1 GiB..2^51 bytes")
        seg_size = 1 << seg_shift
        nseg = -(-mem_bytes // seg_size)
        if nseg > MAX_SEGMENTS:
            raise RmpError(f"mem_bytes={mem_bytes:#x}: needs {nseg} segments of 2^{seg_shift} "
                           f"bytes, more than the {MAX_SEGMENTS} RST entries")
        first = -(-(BOOKKEEPING + RST_SIZE) // (1 << 20)) << 20
        layout, off = [], first
        for i in range(nseg):
            gib = -(-min(seg_size, mem_bytes - i * seg_size) // (1 << 30))
            layout.append((off, gib))
            off += gib << 22          # 4 MiB of entries per GiB covered
        buf = _anon_zeros(off)
        rst = buf[BOOKKEEPING:BOOKKEEPING + RST_SIZE].view("<u8")
        for i, (o, gib) in enumerate(layout):
            rst[i] = rst_entry(rmp_base + o, gib)
        return cls(buf, segmented=True, seg_shift=seg_shift, rmp_base=rmp_base, flags=flags)

    @classmethod
    def open(cls, source, *, mode: str = "r+", segmented: bool = False, seg_shift: int = 36,
             rmp_base: int = DEFAULT_RMP_BASE, flags: int = 0) -> "RmpTable":
        """An RMP over an existing buffer (ndarray, no copy) or a file (numpy.memmap)."""
        if isinstance(source, np.ndarray):
            buf = source
        else:
            path = os.fspath(source)
            if mode not in ("r", "r+", "c"):
                raise RmpError(f"mode={mode!r}: use 'r' (read-only), 'r+' or 'c' (copy-on-write)")
            try:
                buf = np.memmap(path, dtype=np.uint8, mode=mode)
            except (OSError, ValueError) as e:
                raise RmpError(f"table={path!r}: cannot map the file ({e})") from None
        return cls(buf, segmented=segmented, seg_shift=seg_shift, rmp_base=rmp_base, flags=flags)

    def save(self, path) -> None:
        """Write the raw table (bookkeeping + entries) to ``path``, skipping zero holes."""
        chunk = 64 << 20
        with open(os.fspath(path), "wb") as f:
            size = self.buffer.size
            for start in range(0, size, chunk):
                part = self.buffer[start:start + chunk]
                if not part.any():
                    f.seek(start + part.size)      # sparse: leave holes for zero chunks
                    continue
                f.seek(start)
                f.write(memoryview(part))
            f.truncate(size)

    @property
    def size(self) -> int:
        return int(self.buffer.size)

    @property
    def rmp_end(self) -> int:
        """RMP_END: the last byte of a contiguous table (0 for a segmented one, as the kernel wants)."""
        return 0 if self.segmented else self.rmp_base + self.size - 1

    @property
    def entries(self) -> np.ndarray:
        """The contiguous table's entries as an (nr_pfns, 2) uint64 view [lo, hi]."""
        if self.segmented:
            raise RmpError("entries: a segmented RMP has no single entry array (use fields())")
        return self.buffer[BOOKKEEPING:].view("<u8").reshape(-1, 2)

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
        return bool(lib.kvmmu_rmp_covered(self._t, _batch.uint("pfn", pfn)))

    def entry(self, pfn) -> RmpEntry:
        """The raw entry of one pfn."""
        v = self._pfn(pfn)
        lo, hi = ffi.new("uint64_t *"), ffi.new("uint64_t *")
        lib.kvmmu_rmp_read(self._t, v, lo, hi)
        return RmpEntry(int(lo[0]), int(hi[0]))

    def write_raw(self, pfn, lo: int, hi: int = 0) -> None:
        """Store raw quadwords (what firmware or set-up code does; no instruction rules)."""
        self._need_writable("write_raw")
        v = self._pfn(pfn)
        lib.kvmmu_rmp_write(self._t, v, _batch.uint("lo", lo), _batch.uint("hi", hi))

    def set_in_use(self, pfn, in_use: bool = True) -> None:
        """Set or clear the hardware lock bit (an entry in use: RMPUPDATE/PSMASH fail INUSE)."""
        e = self.entry(pfn)
        lo = (e.lo | (1 << 63)) if in_use else (e.lo & ~(1 << 63))
        self.write_raw(pfn, lo, e.hi)

    def _pfn_array(self, pfns) -> np.ndarray:
        return _batch.in_array("pfns", pfns, np.uint64)

    def _range_error(self, pfns, idx: int) -> RmpError:
        return RmpError(f"pfns[{idx}]={int(pfns.reshape(-1)[idx]):#x}: beyond the RMP "
                        f"(covers {self.nr_pfns:#x} pages)")

    def fields(self, pfns: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Batch field extraction for pfns into a FIELDS_DTYPE array."""
        pfns = self._pfn_array(pfns)
        out = _batch.out_array("out", out, FIELDS_DTYPE, pfns.shape)
        err = ffi.new("int *")
        r = lib.kvmmu_rmp_fields_batch(self._t, _batch.ptr(pfns, "uint64_t"),
                                       ffi.from_buffer("struct kvmmu_rmp_fields[]", out),
                                       pfns.size, err)
        if r:
            raise self._range_error(pfns, r - 1)
        return out

    # -------------------------------------------------------------- lookups
    def snp_lookup_rmpentry(self, pfn) -> tuple:
        """snp_lookup_rmpentry(): (assigned, level) -- assigned from the pfn's own entry,
        level from the 2M-aligned entry's page size.  Out-of-range pfns raise RmpError."""
        v = self._pfn(pfn)
        a, lv = ffi.new("bool *"), ffi.new("int *")
        lib.kvmmu_rmp_lookup(self._t, v, a, lv)
        return bool(a[0]), int(lv[0])

    lookup = snp_lookup_rmpentry

    def lookup_batch(self, pfns: np.ndarray, *, assigned=None, level=None, asid=None, gpa=None,
                     with_owner: bool = True) -> LookupResult:
        """snp_lookup_rmpentry() over a pfn array: assigned/level (and ASID/GPA of the pfn's
        own entry unless ``with_owner=False``).  Out-of-range pfns raise RmpError."""
        pfns = self._pfn_array(pfns)
        shape = pfns.shape
        assigned = _batch.out_array("assigned", assigned, np.uint8, shape)
        level = _batch.out_array("level", level, np.uint8, shape)
        asid_p = gpa_p = ffi.NULL
        if with_owner:
            asid = _batch.out_array("asid", asid, np.uint16, shape)
            gpa = _batch.out_array("gpa", gpa, np.uint64, shape)
            asid_p, gpa_p = _batch.ptr(asid, "uint16_t"), _batch.ptr(gpa, "uint64_t")
        err = ffi.new("int *")
        r = lib.kvmmu_rmp_lookup_batch(self._t, _batch.ptr(pfns, "uint64_t"),
                                       _batch.ptr(assigned, "uint8_t"),
                                       _batch.ptr(level, "uint8_t"), asid_p, gpa_p,
                                       pfns.size, err)
        if r:
            raise self._range_error(pfns, r - 1)
        return LookupResult(assigned, level, asid, gpa)

    def page_state(self, pfn, *, effective: bool = True) -> PageState:
        """The firmware page state of a pfn (DEFAULT beyond the table).  ``effective``: for a
        pfn inside an assigned 2M page, the state of the 2M entry that governs it; otherwise
        the raw entry's own state, as the firmware's rmp_entry_get_state() sees it."""
        v = _batch.uint("pfn", pfn)
        return PageState(lib.kvmmu_rmp_page_state(self._t, v, bool(effective)))

    def page_states(self, pfns: np.ndarray, *, effective: bool = True,
                    out: Optional[np.ndarray] = None) -> np.ndarray:
        pfns = self._pfn_array(pfns)
        out = _batch.out_array("out", out, np.uint8, pfns.shape)
        lib.kvmmu_rmp_page_state_batch(self._t, _batch.ptr(pfns, "uint64_t"), bool(effective),
                                       _batch.ptr(out, "uint8_t"), pfns.size)
        return out

    def count_assigned(self, start: int, count: int) -> int:
        """Number of entries with Assigned=1 among pfns [start, start + count)."""
        return int(lib.kvmmu_rmp_count_assigned(self._t, _batch.uint("start", start),
                                                _batch.uint("count", count)))

    # -------------------------------------------------------------- instructions
    def rmpupdate(self, pfn, *, gpa: int = 0, assigned=False, pagesize: int = 0,
                  immutable=False, asid: int = 0) -> Rc:
        """RMPUPDATE (hypervisor): write GPA/Assigned/Page_Size/Immutable/ASID of an entry.
        ``gpa`` is a byte address (struct rmp_state).  Returns the EAX code."""
        self._need_writable("rmpupdate")
        st = ffi.new("struct kvmmu_rmp_state *")
        st.gpa = _batch.uint("gpa", gpa)
        st.assigned = _batch.uint("assigned", assigned, 8)
        st.pagesize = _batch.uint("pagesize", pagesize, 8)
        st.immutable = _batch.uint("immutable", immutable, 8)
        st.asid = _batch.uint("asid", asid, 32)
        return Rc(lib.kvmmu_rmp_rmpupdate(self._t, _batch.uint("pfn", pfn), st))

    def rmpupdate_batch(self, pfns: np.ndarray, gpas: Optional[np.ndarray] = None, *,
                        assigned=True, pagesize: int = 0, immutable=False, asid: int = 0) -> int:
        """RMPUPDATE for each pfn in order (same state, per-pfn GPA byte address).  Stops at the
        first failure and raises RmpError naming it; instructions before it stay done."""
        self._need_writable("rmpupdate_batch")
        pfns = self._pfn_array(pfns)
        gp = ffi.NULL
        if gpas is not None:
            _batch.in_array("gpas", gpas, np.uint64)
            _batch.same_shape([("pfns", pfns), ("gpas", gpas)])
            gp = _batch.ptr(gpas, "uint64_t")
        err = ffi.new("int *")
        r = lib.kvmmu_rmp_rmpupdate_batch(
            self._t, _batch.ptr(pfns, "uint64_t"), gp, _batch.uint("assigned", assigned, 32),
            _batch.uint("pagesize", pagesize, 32), _batch.uint("immutable", immutable, 32),
            _batch.uint("asid", asid, 32), pfns.size, err)
        if r:
            i = r - 1
            p = int(pfns.reshape(-1)[i]) if i < pfns.size else 0
            raise RmpError(f"pfns[{i}]={p:#x}: RMPUPDATE failed with {Rc(err[0]).name} "
                           f"({err[0]}); {i} earlier updates were done")
        return pfns.size

    def psmash(self, pfn) -> Rc:
        """PSMASH (hypervisor): split a 2M RMP page into 512 4K entries."""
        self._need_writable("psmash")
        return Rc(lib.kvmmu_rmp_psmash(self._t, _batch.uint("pfn", pfn)))

    def pvalidate(self, pfn, *, asid: int, gfn: int, size: int = 0, validate=True,
                  vmpl: int = 0) -> InsnResult:
        """PVALIDATE (guest): set or clear Validated of the page at ``gfn`` backed by ``pfn``."""
        self._need_writable("pvalidate")
        ei = ffi.new("uint64_t *")
        rc = lib.kvmmu_rmp_pvalidate(self._t, _batch.uint("pfn", pfn), _batch.uint("asid", asid, 32),
                                     _batch.uint("vmpl", vmpl, 32), _batch.uint("gfn", gfn),
                                     _batch.uint("size", size, 32),
                                     _batch.uint("validate", validate, 32), ei)
        return InsnResult(Rc(rc), int(ei[0]))

    def rmpadjust(self, pfn, *, asid: int, gfn: int, target_vmpl: int, perms: int,
                  size: int = 0, vmsa=False, vmpl: int = 0) -> InsnResult:
        """RMPADJUST (guest): set the permission mask of a higher VMPL (and VMSA at VMPL0)."""
        self._need_writable("rmpadjust")
        ei = ffi.new("uint64_t *")
        rc = lib.kvmmu_rmp_rmpadjust(self._t, _batch.uint("pfn", pfn),
                                     _batch.uint("asid", asid, 32), _batch.uint("vmpl", vmpl, 32),
                                     _batch.uint("gfn", gfn), _batch.uint("size", size, 32),
                                     _batch.uint("target_vmpl", target_vmpl, 32),
                                     _batch.uint("perms", perms, 32), _batch.uint("vmsa", vmsa, 32),
                                     ei)
        return InsnResult(Rc(rc), int(ei[0]))

    # -------------------------------------------------------------- kernel helpers
    def rmpupdate_kernel(self, pfn, *, gpa: int, assigned: bool, level: int, immutable: bool,
                         asid: int) -> int:
        """The kernel's rmpupdate(): adjust_direct_map() rules, then RMPUPDATE.  Returns 0 or
        -EFAULT; the RMPUPDATE code is kept in ``self.last_rc``.  (The kernel retries while
        FAIL_OVERLAP, a transient firmware lock there; in the model it is persistent, so it
        is reported once as -EFAULT.)"""
        pfn = _batch.uint("pfn", pfn)
        self.last_rc = None
        if level not in (PG_LEVEL_4K, PG_LEVEL_2M) or not self.covered(pfn):
            return -EFAULT                       # adjust_direct_map: -EINVAL -> -EFAULT
        if level == PG_LEVEL_2M and (pfn % PTRS_PER_PMD or not self.covered(pfn + 511)):
            return -EFAULT
        rc = self.rmpupdate(pfn, gpa=gpa, assigned=assigned,
                            pagesize=0 if level == PG_LEVEL_4K else 1,
                            immutable=immutable, asid=asid)
        self.last_rc = rc
        return 0 if rc == Rc.SUCCESS else -EFAULT

    def rmp_make_private(self, pfn, gpa: int, level: int, asid: int, immutable: bool = False) -> int:
        """rmp_make_private(): state {gpa, assigned=1, pagesize=level, immutable, asid}."""
        return self.rmpupdate_kernel(pfn, gpa=gpa, assigned=True, level=level,
                                     immutable=immutable, asid=asid)

    def rmp_make_shared(self, pfn, level: int) -> int:
        """rmp_make_shared(): state all zero except the page size."""
        return self.rmpupdate_kernel(pfn, gpa=0, assigned=False, level=level, immutable=False,
                                     asid=0)

    def dump_rmpentry(self, pfn) -> list:
        """The kernel's dump_rmpentry(): the raw entry if assigned, otherwise every non-zero
        entry of the pfn's 2M region (those can fault a 2M host mapping)."""
        v = _batch.uint("pfn", pfn)
        if not self.covered(v):
            return [f"Failed to read RMP entry for PFN {v:#x}, error -{EFAULT}"]
        e = self.entry(v)
        if e.assigned:
            return [f"PFN {v:#x}, RMP entry: [{e.lo:#018x} - {e.hi:#018x}]"]
        start = v & ~(PTRS_PER_PMD - 1)
        lines = [f"PFN {v:#x} unassigned, dumping non-zero entries in 2M PFN region: "
                 f"[{start:#x} - {start + PTRS_PER_PMD:#x}]"]
        for p in range(start, start + PTRS_PER_PMD):
            if not self.covered(p):
                break
            x = self.entry(p)
            if x.lo or x.hi:
                lines.append(f"PFN: {p:#x}, [{x.lo:#018x} - {x.hi:#018x}]")
        return lines

    # -------------------------------------------------------------- access checks
    def host_check(self, pfn, level: int = PG_LEVEL_4K, *, user: bool = False) -> AccessResult:
        """The RMP check of a host data write / page-table access through a mapping of
        ``level`` (1G checked as 2M: all 512 entries need Assigned=0).  Reads are not checked."""
        if level not in (PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G):
            raise RmpError(f"level={level!r}: a host mapping level is 1 (4K), 2 (2M) or 3 (1G)")
        ec = ffi.new("uint64_t *")
        chk = Check(lib.kvmmu_rmp_host_check(self._t, _batch.uint("pfn", pfn), level,
                                             bool(user), ec))
        return AccessResult(chk, "#PF" if chk else None, int(ec[0]))

    def host_check_batch(self, pfns: np.ndarray, level: int = PG_LEVEL_4K,
                         out: Optional[np.ndarray] = None) -> np.ndarray:
        if level not in (PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G):
            raise RmpError(f"level={level!r}: a host mapping level is 1 (4K), 2 (2M) or 3 (1G)")
        pfns = self._pfn_array(pfns)
        out = _batch.out_array("out", out, np.uint8, pfns.shape)
        lib.kvmmu_rmp_host_check_batch(self._t, _batch.ptr(pfns, "uint64_t"), level,
                                       _batch.ptr(out, "uint8_t"), pfns.size)
        return out

    def _access(self, asid, vmpl, npt_level, kind, c_bit, snp_active, user):
        if npt_level not in (PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G):
            raise RmpError(f"npt_level={npt_level!r}: 1 (4K), 2 (2M) or 3 (1G)")
        if not 0 <= _batch.uint("vmpl", vmpl, 8) <= 3:
            raise RmpError(f"vmpl={vmpl}: VMPLs are 0..3")
        try:
            kind = Access[kind.upper()] if isinstance(kind, str) else Access(kind)
        except (KeyError, ValueError):
            raise RmpError(f"kind={kind!r}: one of {[a.name.lower() for a in Access]}") from None
        a = ffi.new("struct kvmmu_rmp_access *")
        a.asid = _batch.uint("asid", asid, 32)
        a.vmpl, a.npt_level, a.kind = vmpl, npt_level, int(kind)
        a.c_bit, a.snp_active, a.user = bool(c_bit), bool(snp_active), bool(user)
        return a

    def guest_check(self, pfn, gfn, *, asid: int, vmpl: int = 0, npt_level: int = PG_LEVEL_4K,
                    kind="read", c_bit: bool = True, snp_active: bool = True,
                    user: bool = False) -> AccessResult:
        """The RMP checks of a guest access (APM Table 15-39), in priority order: covered,
        guest-owned, reverse-map, mutable, page-size (NPF), validated (#VC), VMPL (NPF)."""
        a = self._access(asid, vmpl, npt_level, kind, c_bit, snp_active, user)
        a.pfn, a.gfn = _batch.uint("pfn", pfn), _batch.uint("gfn", gfn)
        fault, ei = ffi.new("int *"), ffi.new("uint64_t *")
        chk = Check(lib.kvmmu_rmp_guest_check(self._t, a, fault, ei))
        return AccessResult(chk, _fault_name(fault[0]), int(ei[0]))

    def guest_check_batch(self, pfns: np.ndarray, gfns: np.ndarray, *, asid: int, vmpl: int = 0,
                          npt_level: int = PG_LEVEL_4K, kind="read", c_bit: bool = True,
                          snp_active: bool = True, user: bool = False,
                          out: Optional[np.ndarray] = None) -> np.ndarray:
        pfns = self._pfn_array(pfns)
        _batch.in_array("gfns", gfns, np.uint64)
        _batch.same_shape([("pfns", pfns), ("gfns", gfns)])
        out = _batch.out_array("out", out, np.uint8, pfns.shape)
        a = self._access(asid, vmpl, npt_level, kind, c_bit, snp_active, user)
        lib.kvmmu_rmp_guest_check_batch(self._t, _batch.ptr(pfns, "uint64_t"),
                                        _batch.ptr(gfns, "uint64_t"), a,
                                        _batch.ptr(out, "uint8_t"), pfns.size)
        return out

    def __repr__(self) -> str:
        kind = f"segmented shift={self.seg_shift}" if self.segmented else "contiguous"
        return (f"RmpTable({kind}, {self.size:#x} bytes, covers {self.nr_pfns:#x} pages, "
                f"flags={self.flags!r})")


# ------------------------------------------------------------------ fault handlers

class UserFault(NamedTuple):
    action: str            # "UNMAP", "SIGBUS", "SPLIT" or "RETRY"
    ret: int               # enum rmp_pf_ret value the handler returns (SIGBUS returns RETRY)
    pfn: Optional[int]
    rmp_level: Optional[int]


def handle_user_rmp_page_fault(table: RmpTable, *, pte_present: bool, pte_pfn: int, level: int,
                               address: int) -> UserFault:
    """The v7/v8 patch's handle_user_rmp_page_fault() given the host mapping found for
    ``address``: UNMAP (PTE gone), SIGBUS (4K entry assigned, or the lookup failed),
    SPLIT (host level above the RMP level), else RETRY."""
    if not pte_present:
        return UserFault("UNMAP", RMP_PF_UNMAP, None, None)
    if level not in (PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G):
        raise RmpError(f"level={level!r}: a host mapping level is 1 (4K), 2 (2M) or 3 (1G)")
    pfn = _batch.uint("pte_pfn", pte_pfn)
    address = _batch.uint("address", address)
    if level > PG_LEVEL_4K:
        size = 1 << (12 + 9 * (level - 1))
        pfn |= (address & (size - 1)) >> 12
    if not table.covered(pfn):
        # snp_lookup_rmpentry() < 0 is non-zero too: the v7 code takes the SIGBUS branch.
        return UserFault("SIGBUS", RMP_PF_RETRY, pfn, None)
    assigned, rmp_level = table.snp_lookup_rmpentry(pfn)
    if assigned:
        return UserFault("SIGBUS", RMP_PF_RETRY, pfn, rmp_level)
    if level > rmp_level:
        return UserFault("SPLIT", RMP_PF_SPLIT, pfn, rmp_level)
    return UserFault("RETRY", RMP_PF_RETRY, pfn, rmp_level)


class NpfOutcome(NamedTuple):
    action: str            # see sev_handle_rmp_fault
    rmp_level: Optional[int]
    psmash_rc: Optional[int]
    zap: Optional[tuple]   # (gfn_start, gfn_end) passed to kvm_zap_gfn_range


def sev_handle_rmp_fault(table: RmpTable, gpa: int, error_code: int = 0, *,
                         pfn: Optional[int], is_private: bool = True,
                         has_gmem: bool = True) -> NpfOutcome:
    """KVM's sev_handle_rmp_fault() for an NPF with the RMP bit set.

    Actions: "not-private" / "non-gmem-slot" / "no-backing-page" / "no-assigned-entry"
    (warn and return), "spurious" (the entry is already 4K), "psmash" (split, zap the
    GFN range), "psmash-raced" (PSMASH failed but the entry is now 4K and assigned),
    "psmash-failed" (warn, zap anyway).  ``pfn=None``: kvm_gmem_get_pfn() failed."""
    gfn = _batch.uint("gpa", gpa) >> 12
    _batch.uint("error_code", error_code)
    if not is_private:
        return NpfOutcome("not-private", None, None, None)
    if not has_gmem:
        return NpfOutcome("non-gmem-slot", None, None, None)
    if pfn is None:
        return NpfOutcome("no-backing-page", None, None, None)
    pfn = _batch.uint("pfn", pfn)
    if not table.covered(pfn):
        return NpfOutcome("no-assigned-entry", None, None, None)
    assigned, rmp_level = table.snp_lookup_rmpentry(pfn)
    if not assigned:
        return NpfOutcome("no-assigned-entry", rmp_level, None, None)
    if rmp_level == PG_LEVEL_4K:
        return NpfOutcome("spurious", rmp_level, None, None)
    # snp_rmptable_psmash() aligns down and retries while FAIL_INUSE; a lock is persistent
    # in the model, so one attempt stands for the loop.
    rc = table.psmash(pfn & ~(PTRS_PER_PMD - 1))
    if rc != Rc.SUCCESS:
        a2, l2 = table.snp_lookup_rmpentry(pfn)
        if a2 and l2 == PG_LEVEL_4K:
            return NpfOutcome("psmash-raced", rmp_level, int(rc), None)
        return NpfOutcome("psmash-failed", rmp_level, int(rc), (gfn, gfn + PTRS_PER_PMD))
    return NpfOutcome("psmash", rmp_level, int(rc), (gfn, gfn + PTRS_PER_PMD))


def sev_private_max_mapping_level(table: RmpTable, pfn: int, *, snp: bool = True) -> int:
    """The gmem max-mapping-level hook: 0 (no limit) for non-SNP VMs, 4K if the lookup
    fails or the entry is unassigned, otherwise the RMP level (NPT level <= RMP level)."""
    if not snp:
        return 0
    pfn = _batch.uint("pfn", pfn)
    if not table.covered(pfn):
        return PG_LEVEL_4K
    assigned, level = table.snp_lookup_rmpentry(pfn)
    return level if assigned else PG_LEVEL_4K


def kvm_max_private_mapping_level(max_level: int, max_order: int, hook_level: int = 0) -> int:
    """kvm_max_private_mapping_level(): min(max_level, the level the gmem folio order
    allows, the vendor hook's level when it is non-zero)."""
    max_level = _batch.uint("max_level", max_level, 8)
    order = _batch.uint("max_order", max_order, 8)
    if max_level not in (PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G):
        raise RmpError(f"max_level={max_level}: 1 (4K), 2 (2M) or 3 (1G)")
    order_level = PG_LEVEL_1G if order >= 18 else PG_LEVEL_2M if order >= 9 else PG_LEVEL_4K
    level = min(max_level, order_level)
    hook = _batch.uint("hook_level", hook_level, 8)
    if hook:
        level = min(level, hook)
    return level
