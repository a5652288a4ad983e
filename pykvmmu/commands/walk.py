"""CLI: ``pykvmmu walk`` (replay a guest page-table walk from observed gptes); the walk demo."""
from __future__ import annotations

import argparse

from .. import role as R
from .. import walk as W
from ..vcpu import (CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PSE, EFER_LMA, EFER_LME, EFER_NX,
                    EptContext, Vcpu)

DEMO_ORDER = 35


def _hex(text: str) -> int:
    t = text.replace("_", "").lower()
    try:
        return int(t[2:] if t.startswith("0x") else t, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hex number") from None


def _gpte(text: str):
    """``PTE`` or ``PTE:LEVEL`` (hex pte, decimal level), as kvm_mmu_paging_element prints."""
    pte, _, level = text.partition(":")
    if not level:
        return _hex(pte)
    try:
        return (_hex(pte), int(level, 10))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PTE or PTE:LEVEL") from None


def _mmu_from_args(args) -> W.GuestMmu:
    if args.ept is not None:
        ctx = EptContext(args.ept, execonly=args.execonly, maxphyaddr=args.maxphyaddr,
                         huge_page_level=2 if args.no_gbpages else 3)
        return W.GuestMmu.for_ept(ctx, args.era)
    v = Vcpu(cr0=args.cr0, cr4=args.cr4, efer=args.efer, cr3=args.cr3,
             maxphyaddr=args.maxphyaddr, gbpages=not args.no_gbpages, amd=args.amd,
             smm=args.smm, guest_mode=args.mmu == "nested-npt")
    return W.GuestMmu.for_vcpu(v, args.era, args.mmu, tdp_level=args.tdp_level)


def _cmd_walk(args) -> int:
    mmu = _mmu_from_args(args)
    w = W.walk_observed(mmu, args.addr, args.pferr, args.gptes, walker_error=args.walker_error)
    print(w)
    if w.ok and mmu.root_role is not None:
        for sp in W.shadow_pages(mmu, w, goal_level=args.goal_level):
            print(f"  sp l{sp.level} gfn {sp.gfn:#x} {sp.kind:6s} {R.unpack(mmu.era, sp.role)}")
    if args.events:
        for name, fields in w.events:
            print("  " + name + ": " + " ".join(f"{k} {v:x}" for k, v in fields.items()))
    return 0


def register(sub) -> None:
    p = sub.add_parser("walk", help="replay a guest page-table walk from observed gptes "
                       "(kvm_mmu_pagetable_walk + kvm_mmu_paging_element): access, A/D, fault, "
                       "shadow-page roles")
    p.add_argument("addr", type=_hex, help="the walked address (hex, as the trace prints it)")
    p.add_argument("pferr", type=_hex, help="the walk's pferr (hex)")
    p.add_argument("gptes", nargs="*", type=_gpte, help="observed gptes in walk order: PTE or "
                   "PTE:LEVEL (hex pte)")
    p.add_argument("--cr0", type=_hex, default=CR0_PE | CR0_WP | CR0_PG | 0x33,
                   help="raw CR0 (hex, default 80050033)")
    p.add_argument("--cr4", type=_hex, default=CR4_PAE, help="raw CR4 (hex, default 20)")
    p.add_argument("--efer", type=_hex, default=EFER_LME | EFER_LMA | EFER_NX | 1,
                   help="raw EFER (hex, default d01)")
    p.add_argument("--cr3", type=_hex, default=0, help="raw CR3 / nCR3 (hex)")
    p.add_argument("--ept", type=_hex, default=None, help="nested EPT: L1's EPTP (hex)")
    p.add_argument("--execonly", action="store_true", help="nested EPT: execute-only allowed")
    p.add_argument("--mmu", choices=("shadow", "tdp", "nested-npt"), default="shadow")
    p.add_argument("--tdp-level", type=int, default=4, help="host TDP level (nested NPT)")
    p.add_argument("--era", default=R.DEFAULT_ERA, help="role era for the shadow-page roles")
    p.add_argument("--maxphyaddr", type=int, default=48, help="guest MAXPHYADDR (default 48)")
    p.add_argument("--no-gbpages", action="store_true", help="no 1G pages (guest CPUID)")
    p.add_argument("--amd", action="store_true", help="AMD guest: bit 8 of PML4E/PML5E reserved")
    p.add_argument("--smm", action="store_true")
    p.add_argument("--goal-level", type=int, default=None,
                   help="host mapping level: split a huge gpte into direct SPs down to it")
    p.add_argument("--walker-error", type=_hex, default=None,
                   help="the observed kvm_mmu_walker_error pferr (hex): checked against the "
                        "model; elements missing before it mean a table outside every memslot")
    p.add_argument("--events", action="store_true", help="print the predicted tracepoints")
    p.set_defaults(func=_cmd_walk)


def demo(emit) -> None:
    """Walk scene: a 4-level write walk with A/D updates, a 32-bit 4M page split into direct
    4K shadow pages, a nested-EPT execute-only page, and a replay of observed gptes."""
    emit("== Guest page-table walks (paging_tmpl.h) ==")
    mem = W.GuestMemory()
    for gpa, gpte in ((0x1000, 0x2007), (0x2000, 0x3007), (0x3000, 0x4007),
                      (0x4000 + 8 * 5, 0x8000000000009007)):
        mem.write(gpa, gpte)
    mmu = W.GuestMmu.for_vcpu(Vcpu(cr3=0x1000))
    w = W.walk_addr(mmu, 0x5123, 2, mem)
    for line in str(w).splitlines():
        emit("   " + line)
    emit("   shadow pages: " + ", ".join(f"l{s.level} gfn {s.gfn:#x} role {s.role:#x}"
                                        for s in W.shadow_pages(mmu, w)))
    v32 = Vcpu.legacy32(cr3=0x1000, cr4=CR4_PSE)
    mem32 = W.GuestMemory()
    mem32.write(0x1000 + 4 * 1, 0x00400000 | 0x87, 4)
    m32 = W.GuestMmu.for_vcpu(v32)
    w = W.walk_addr(m32, 0x00601000, 0, mem32)
    assert w.pte_access is not None, w.fault          # a present 4M page: the walk succeeds
    emit(f"-- 32-bit guest, 4M page read at 0x601000 -> gpa {w.gpa:#x}, pte_access "
         f"{R._ACCESS_STR[w.pte_access]}; split to 4K: "
         + ", ".join(f"{s.kind} l{s.level} gfn {s.gfn:#x} {s.role:#x}"
                     for s in W.shadow_pages(m32, w, goal_level=1)))
    ctx = EptContext(0x1000 | (3 << 3) | 0x40, execonly=True)
    ept = W.GuestMmu.for_ept(ctx)
    memx = W.GuestMemory()
    for gpa, gpte in ((0x1000, 0x2007), (0x2000, 0x3007), (0x3000, 0x4007),
                      (0x4000, 0x9000 | 4 | (6 << 3))):
        memx.write(gpa, gpte)
    ok = W.walk_addr(ept, 0, 0x10, memx)
    bad = W.walk_addr(ept, 0, 0x4, memx)
    assert bad.fault is not None                      # a read of an execute-only page faults
    emit(f"-- nested EPT, execute-only leaf: fetch -> gfn {ok.gfn:#x}; read -> {bad.fault} "
         f"(exit qualification {bad.fault.ept_exit_qualification:#x})")
    w = W.walk_observed(mmu, 0xffffffff810551b8, 0x10,
                        [(0x2929067, 4), (0x292a063, 3), (0x8000000002a000e3, 2)])
    emit(f"-- replay of observed gptes (addr ffffffff810551b8 pferr 10 F): {w.fault}")
