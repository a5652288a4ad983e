"""The kernel's dump_rmpentry(): the log lines a table would print, and the decoder of such
lines pasted from a kernel log, in every known kernel format (docs/rmp.md, "Decoding")."""
from __future__ import annotations

import re
import threading
from typing import NamedTuple, Optional

from .. import _batch
from .._ffi import ffi, lib
from ..errors import InputError
from . import EFAULT, RmpEntry, RmpError, RmpTable, _table, make_lo


def dump_rmpentry_lines(table: RmpTable, pfn) -> list:
    """The kernel's dump_rmpentry() as log lines: the raw entry if assigned, otherwise every
    non-zero entry of the pfn's 2M region (those can fault a 2M host mapping); one C call
    (kvmmu_rmp_dump_text) finds them and prints the lines."""
    v = pfn if pfn.__class__ is int and pfn >= 0 else _batch.uint("pfn", pfn)
    _table(table)
    try:
        buf = _TLS.text
    except AttributeError:
        buf = _TLS.text = ffi.new("char[]", lib.KVMMU_RMP_DUMP_TEXT_MAX)
    try:
        n = _dump_text_c(table._t, v, buf)
    except OverflowError:
        raise _batch.bad_u64("pfn", pfn) from None
    if n < 0:
        return [f"Failed to read RMP entry for PFN {v:#x}, error -{EFAULT}"]
    return _unpack(buf, n).decode("ascii").split("\n")


_TLS = threading.local()          # per thread: the text buffer (the C call releases the GIL)
_dump_text_c = lib.kvmmu_rmp_dump_text
_unpack = ffi.unpack


# ------------------------------------------------------------------ kernel RMP dumps

class DumpEntry(NamedTuple):
    """One RMP line found in a kernel log (see :func:`decode_dump`).

    ``kind``: "entry" (the dumped pfn's raw entry), "region" (a non-zero entry of the
    2M region dumped for an unassigned pfn), "fields" (an early RFC line that printed
    decoded fields only: ``lo`` is rebuilt from them, sub-page count and lock unknown,
    ``hi`` None), "region-start" (the unassigned pfn and its 2M region ``[lo, hi)``),
    "none" (no populated entry in the region), "error" (the lookup failed, ``lo`` = the
    errno printed) or "rmpupdate-failed" (``lo`` = the RMPUPDATE return code, ``hi`` =
    the pg_level)."""
    line: int              # 1-based line number in the text
    kind: str
    fmt: str               # which kernel's format the line is in
    pfn: int
    lo: Optional[int]
    hi: Optional[int]

    @property
    def entry(self) -> Optional[RmpEntry]:
        if self.kind in ("entry", "region", "fields") and self.lo is not None:
            return RmpEntry(self.lo, self.hi or 0)
        return None


_X = r"0x([0-9a-fA-F]{1,16})"        # a hex number that fits 64 bits
# (regex, kind, format, how the groups map to (pfn, lo, hi)).  Formats, from the kernel
# sources read (docs/rmp.md lists them): mainline dump_rmpentry() since v6.9 (and in
# v6.14's rmpentry_raw shape); the v10/v11 SNP host patches' sev_dump_rmpentry()
# ("high=... low=...", pfn); the RFC v6-v9 patches ("RMPEntry paddr", physical address).
_DUMP_PATTERNS = [
    (rf"PFN {_X}, RMP entry: \[{_X} - {_X}\]", "entry", "v6.9+", "p,lo,hi"),
    (rf"PFN: {_X}, \[{_X} - {_X}\]", "region", "v6.9+", "p,lo,hi"),
    (rf"PFN {_X} unassigned, dumping non-zero entries in 2M PFN region: \[{_X} - {_X}\]",
     "region-start", "v6.9+", "p,lo,hi"),
    (rf"RMP entry for PFN {_X}: \[high={_X} low={_X}\]", "entry", "v10-v11 patches", "p,hi,lo"),
    (rf"e\.g\.: PFN {_X}: \[high={_X} low={_X}\]", "region", "v10-v11 patches", "p,hi,lo"),
    (rf"No populated RMP entries in the 2MB region containing PFN {_X}", "none",
     "v10-v11 patches", "p"),
    (rf"RMPEntry paddr {_X}: \[high={_X} low={_X}\]", "entry", "RFC patches", "pa,hi,lo"),
    (rf"RMPEntry paddr {_X} ([0-9a-fA-F]{{16}}) ([0-9a-fA-F]{{16}})", "entry", "RFC patches",
     "pa,hi,lo"),
    (rf"RMPEntry paddr {_X} \[assigned=(\d) immutable=(\d) pagesize=(\d) gpa={_X} "
     r"asid=(\d+) vmsa=(\d) validated=(\d)\]", "fields", "RFC patches", "fields"),
    (rf"Failed to read RMP (?:entry|contents) for PFN {_X}, error (-?\d+)", "error", "v6.9+",
     "p,err"),
    (rf"Error (-?\d+) reading RMP (?:entry|contents) for PFN {_X}", "error", "v6.9+", "err,p"),
    (r"RMPUPDATE failed for PFN ([0-9a-fA-F]{1,16}), pg_level: (\d+), ret: (-?\d+)",
     "rmpupdate-failed", "v6.9+", "p,level,ret"),
]
_DUMP_RES = [(re.compile(r), k, f, m) for r, k, f, m in _DUMP_PATTERNS]


def decode_dump(text: str) -> list:
    """Find the RMP lines of the kernel's dump_rmpentry() (every known format) in a pasted
    log (dmesg or journal prefixes, any other lines are skipped) and return them as
    :class:`DumpEntry` records, in order.  Numbers that do not fit their field raise
    RmpError naming the line."""
    if not isinstance(text, str):
        raise RmpError(f"text: expected a str, got {type(text).__name__}")
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        for rx, kind, fmt, how in _DUMP_RES:
            m = rx.search(line)
            if not m:
                continue
            g = m.groups()
            if how == "p,lo,hi":
                pfn, lo, hi = (int(x, 16) for x in g)
            elif how == "p,hi,lo":
                pfn, hi, lo = (int(x, 16) for x in g)
            elif how == "pa,hi,lo":
                pa, hi, lo = (int(x, 16) for x in g)
                pfn = pa >> 12
            elif how == "p":
                pfn, lo, hi = int(g[0], 16), None, None
            elif how == "p,err":
                pfn, lo, hi = int(g[0], 16), int(g[1]), None
            elif how == "err,p":
                pfn, lo, hi = int(g[1], 16), int(g[0]), None
            elif how == "p,level,ret":
                pfn, hi, lo = int(g[0], 16), int(g[1]), int(g[2])
            else:                                    # fields
                pfn = int(g[0], 16) >> 12
                try:
                    lo = make_lo(assigned=int(g[1]), immutable=int(g[2]), pagesize=int(g[3]),
                                 gpa=int(g[4], 16), asid=int(g[5]), vmsa=int(g[6]),
                                 validated=int(g[7]))
                except InputError as e:
                    raise RmpError(f"line {n}: {e}") from None
                hi = None
            out.append(DumpEntry(n, kind, fmt, pfn, lo, hi))
            break
    return out
