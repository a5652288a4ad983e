"""CLI: ``pykvmmu rmp create|update|show|decode``; the SEV-SNP RMP demo scene."""
from __future__ import annotations

import argparse
import re
import sys

from .. import rmp as R
from ..errors import InputError
from ._args import parse_int as _int

DEMO_ORDER = 50

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(text: str) -> int:
    m = re.fullmatch(r"\s*(0x[0-9a-fA-F]+|[0-9]+)\s*([KMGT]?)(i?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: a size like 1T, 64G, 4096 or 0x1000")
    return int(m.group(1), 0) * _UNITS[m.group(2).upper()]


def _flags(names) -> int:
    f = 0
    for n in names or ():
        try:
            f |= R.RmpFlags[n.upper().replace("-", "_")]
        except KeyError:
            raise InputError(f"--flag {n!r}: one of "
                             f"{', '.join(x.name.lower() for x in R.RmpFlags if x and x.name)}") from None
    return f


def _layout_args(p: argparse.ArgumentParser, *, create: bool = False) -> None:
    """Layout options.  ``create`` gives their defaults; for existing files they come from
    the file's header, and an option given must agree with it (or apply to a
    ``--headerless`` file, which has no header)."""
    p.add_argument("--segmented", action="store_true", default=False if create else None,
                   help="segmented RMP (RST after the bookkeeping)")
    dflt = "" if create else "from the file's header, or with --headerless "
    p.add_argument("--seg-shift", type=int, default=36 if create else None,
                   help=f"RMP_CFG segment shift (default: {dflt}36 = 64 GiB)")
    p.add_argument("--rmp-base", type=_int, default=R.DEFAULT_RMP_BASE if create else None,
                   help=f"modelled RMP_BASE; segment bases are absolute (default: {dflt}"
                        "0x100000)")
    p.add_argument("--flag", action="append", metavar="NAME",
                   help="rule switch (host_immutable, overlap_rc7, middle_full, "
                        "pvalidate_vmpl_gp, always_reset); default: the APM reading")
    if not create:
        p.add_argument("--headerless", action="store_true",
                       help="the file is a raw table without a pykvmmu header (the format of "
                            "older versions): give its layout options")
        p.add_argument("--memory", type=_size, default=None,
                       help="with --headerless: host memory the table must cover (checks the "
                            "file size)")


def _open(args, mode="r"):
    if not args.headerless and args.memory is not None:
        raise InputError("--memory: only with --headerless (a table file's header holds it)")
    return R.RmpTable.open(args.table, mode=mode, segmented=args.segmented or None,
                           seg_shift=args.seg_shift, rmp_base=args.rmp_base,
                           flags=_flags(args.flag) if args.flag else None,
                           headerless=args.headerless, mem_bytes=args.memory)


def show_lines(t: R.RmpTable, pfn: int, limit: int = 16) -> list:
    """An entry, its page state and its 2M neighbourhood, like the kernel's RMP dump
    (at most ``limit`` neighbourhood lines; 0 = all)."""
    out = []
    if not t.covered(pfn):
        out.append(f"PFN {pfn:#x}: beyond the RMP (covers {t.nr_pfns:#x} pages): "
                   f"state {R.PageState.DEFAULT.name}, permanently hypervisor-owned")
        return out
    e = t.entry(pfn)
    assigned, level = t.snp_lookup_rmpentry(pfn)
    out.append(f"PFN {pfn:#x}: RMP entry [{e.lo:#018x} - {e.hi:#018x}]")
    out.append(f"  {e.describe()}")
    out.append(f"  snp_lookup_rmpentry: assigned={int(assigned)} level="
               f"{'2M' if level == R.PG_LEVEL_2M else '4K'}")
    out.append(f"  page state: {t.page_state(pfn).name} (raw entry: "
               f"{t.page_state(pfn, effective=False).name})")
    head = pfn & ~511
    h = t.entry(head)
    n = min(512, t.nr_pfns - head) if not t.segmented else 512
    out.append(f"  2M region [{head:#x} - {head + 512:#x}): 2M entry "
               f"{'assigned 2M page' if h.assigned and h.pagesize else 'sub_pages=%d' % h.subpage_count}"
               f", {t.count_assigned(head, n)} of 512 entries assigned")
    dump = t.dump_rmpentry(pfn)
    if limit and len(dump) > limit + 1:
        dump = dump[:limit + 1] + [f"... {len(dump) - limit - 1} more non-zero entries (--all)"]
    out.extend("  " + line for line in dump)
    return out


def _cmd_show(args) -> int:
    with _open(args) as t:
        for pfn in args.pfn:
            for line in show_lines(t, pfn, 0 if args.all else 16):
                print(line)
    return 0


def _cmd_create(args) -> int:
    R.RmpTable.create_file(args.table, args.memory, segmented=args.segmented,
                           seg_shift=args.seg_shift, rmp_base=args.rmp_base,
                           flags=_flags(args.flag), exist_ok=args.force)
    with R.RmpTable.open(args.table, mode="r") as t:
        print(f"{args.table}: {t!r}")
    return 0


def _cmd_update(args) -> int:
    with _open(args, mode="r+") as t:
        rc = t.rmpupdate(args.pfn, gpa=args.gpa, assigned=args.asid != 0 or args.assigned,
                         pagesize=1 if args.level == 2 else 0, immutable=args.immutable,
                         asid=args.asid)
        t.flush()
    print(f"RMPUPDATE pfn={args.pfn:#x}: {rc.name} ({int(rc)})")
    return 0 if rc == R.Rc.SUCCESS else 1


def decode_lines(text: str) -> list:
    """The lines ``pykvmmu rmp decode`` prints for a pasted kernel log."""
    out = []
    recs = R.decode_dump(text)
    for r in recs:
        head = f"line {r.line}: PFN {r.pfn:#x}"
        if r.kind == "region-start":
            out.append(f"{head} unassigned; non-zero entries of its 2M region "
                       f"[{r.lo:#x} - {r.hi:#x}) follow ({r.fmt})")
        elif r.kind == "none":
            out.append(f"{head}: no populated RMP entries in its 2M region ({r.fmt})")
        elif r.kind == "error":
            out.append(f"{head}: the kernel could not read the entry (error {r.lo}; -14 "
                       f"EFAULT = beyond the RMP) ({r.fmt})")
        elif r.kind == "rmpupdate-failed":
            try:
                name = R.Rc(r.lo).name
            except ValueError:
                name = "unknown code"
            out.append(f"{head}: RMPUPDATE at pg_level {r.hi} failed with {r.lo} ({name}) "
                       f"({r.fmt})")
        else:
            e = r.entry
            what = {"entry": "dumped entry", "region": "non-zero entry of the 2M region",
                    "fields": "decoded-fields line"}[r.kind]
            hi = "unknown (not printed)" if r.hi is None else f"{r.hi:#018x}"
            out.append(f"{head}: {what} ({r.fmt}): lo={e.lo:#018x} hi={hi}")
            desc = e.describe()
            if r.hi is None:
                desc = desc.split(" vmpl=")[0] + " (sub-page count, lock and VMPL masks not printed)"
            out.append(f"  {desc}")
            state = R.page_state_raw(e.lo).name
            size = "a 2M page's 2M-aligned entry" if e.assigned and e.pagesize else (
                "inside a 2M page (middle entry) or a 4K page" if e.assigned else "hypervisor-owned")
            out.append(f"  firmware page state: {state}; {size}")
    if not recs:
        out.append("no RMP dump lines found (expected the kernel's dump_rmpentry() output, "
                   "e.g. 'SEV-SNP: PFN 0x..., RMP entry: [0x... - 0x...]')")
    return out


def _cmd_decode(args) -> int:
    if args.file in (None, "-"):
        text = sys.stdin.read()
    else:
        try:
            with open(args.file, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            raise InputError(f"{args.file}: cannot read ({e.strerror or e})") from None
    lines = decode_lines(text)
    for line in lines:
        print(line)
    return 1 if lines[0].startswith("no RMP dump lines found") else 0


def register(sub) -> None:
    p = sub.add_parser("rmp", help="the SEV-SNP Reverse Map Table")
    rs = p.add_subparsers(dest="rmp_command", metavar="ACTION")
    s = rs.add_parser("show", help="print RMP entries, page states and 2M neighbourhoods")
    s.add_argument("--table", required=True, help="RMP table file")
    s.add_argument("pfn", type=_int, nargs="+")
    s.add_argument("--all", action="store_true", help="list every non-zero entry of the 2M region")
    _layout_args(s)
    s.set_defaults(func=_cmd_show)
    c = rs.add_parser("create", help="create a zeroed (sparse) RMP file for an amount of memory")
    c.add_argument("--memory", type=_size, required=True, help="host memory covered, e.g. 1T")
    c.add_argument("table", help="output file (created atomically)")
    c.add_argument("--force", action="store_true", help="replace an existing file")
    _layout_args(c, create=True)
    c.set_defaults(func=_cmd_create)
    u = rs.add_parser("update", help="execute RMPUPDATE on a table file")
    u.add_argument("--table", required=True)
    u.add_argument("--pfn", type=_int, required=True)
    u.add_argument("--gpa", type=_int, default=0, help="guest physical byte address")
    u.add_argument("--asid", type=_int, default=0, help="guest ASID (0: make shared)")
    u.add_argument("--level", type=int, choices=(1, 2), default=1, help="1 = 4K, 2 = 2M")
    u.add_argument("--assigned", action="store_true", help="assign even with ASID 0")
    u.add_argument("--immutable", action="store_true")
    _layout_args(u)
    u.set_defaults(func=_cmd_update)
    d = rs.add_parser("decode", help="decode the RMP entries of a pasted kernel log "
                                     "(dump_rmpentry lines, every kernel format)")
    d.add_argument("file", nargs="?", help="log file (default or '-': standard input)")
    d.set_defaults(func=_cmd_decode)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def demo(emit) -> None:
    """A guest page through RMPUPDATE, PVALIDATE, an NPF, PSMASH and a host fault."""
    emit("== SEV-SNP RMP: a 64 MiB host, guest ASID 5 ==")
    t = R.RmpTable.create(64 << 20)
    emit(f"table: {t.size:#x} bytes = 16 KiB + 16 x {t.nr_pfns:#x} pages")
    emit(f"rmp_make_private(pfn 0x200, gpa 0x400000, 2M, asid 5) -> "
         f"{t.rmp_make_private(0x200, 0x400000, R.PG_LEVEL_2M, 5)}")
    emit(f"snp_lookup_rmpentry(0x2a0) -> assigned, level = {t.snp_lookup_rmpentry(0x2a0)}; "
         f"state {t.page_state(0x2a0).name}")
    r = t.pvalidate(0x201, asid=5, gfn=0x401)
    emit(f"guest PVALIDATE 4K gfn 0x401 -> {r.rc.name} (EXITINFO1 {r.exitinfo:#x}, SIZEM set)")
    o = R.sev_handle_rmp_fault(t, 0x401000, r.exitinfo, pfn=0x201)
    assert o.zap is not None                     # a 2M RMP entry under a 4K validation: zap the range
    emit(f"KVM sev_handle_rmp_fault -> {o.action}, zap gfns {o.zap[0]:#x}..{o.zap[1]:#x}")
    emit(f"guest PVALIDATE 4K gfn 0x401 again -> {t.pvalidate(0x201, asid=5, gfn=0x401).rc.name}")
    emit(f"guest read of gfn 0x401 -> {t.guest_check(0x201, 0x401, asid=5).check.name}; "
         f"of gfn 0x402 -> {t.guest_check(0x202, 0x402, asid=5).check.name} (#VC)")
    emit(f"host write through a 2M mapping of pfn 0x3ff -> "
         f"{t.host_check(0x3ff, R.PG_LEVEL_2M).fault} (RMP bit 31)")
    f = R.handle_user_rmp_page_fault(t, pte_present=True, pte_pfn=0x200, level=R.PG_LEVEL_2M,
                                     address=0x7f0000201000)
    emit(f"user RMP #PF at a 2M host mapping -> {f.action} (pfn {f.pfn:#x})")
    t.rmp_make_shared(0x201, R.PG_LEVEL_4K)
    f = R.handle_user_rmp_page_fault(t, pte_present=True, pte_pfn=0x200, level=R.PG_LEVEL_2M,
                                     address=0x7f0000201000)
    emit(f"after rmp_make_shared(0x201, 4K): same fault -> {f.action} (split the host huge page)")
    emit(f"NPT level allowed for pfn 0x202: {R.sev_private_max_mapping_level(t, 0x202)} (4K)")
    for line in show_lines(t, 0x201, limit=3):
        emit(line)
    pasted = f"[ 4242.000001] SEV-SNP: {t.dump_rmpentry(0x202)[0]}"
    emit(f"rmp decode of a pasted dmesg line: {pasted}")
    for line in decode_lines(pasted):
        emit("  " + line)
