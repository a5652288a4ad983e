"""CLI and demo for page roles: ``pykvmmu role ...`` and the
prev_roots NPT scene (the v4.20/v5.0 cr4_pae bug of seed 002)."""
from __future__ import annotations

import argparse

from .. import role as R
from ..errors import InputError
from ._args import positive_int as _positive
from ..prevroots import run_switches
from .. import sphash as H

DEMO_ORDER = 40


def l1_l2_switches(era, rounds: int = 10, l1_pgd: int = 0x1000, l2_pgd: int = 0x2000):
    """The seed's sequence on NPT: L1 (TDP root) -> L2 (nested NPT root) -> L1 ...; L1 in
    long mode.  Returns the switch list for prevroots.run_switches."""
    l1 = R.VcpuState.long_mode()
    tdp = R.kvm_calc_tdp_mmu_root_page_role(era, l1)
    npt = R.kvm_calc_shadow_npt_root_page_role(era, l1)
    seq = []
    for _ in range(rounds):
        seq += [(l1_pgd, tdp, "L1"), (l2_pgd, npt, "L2")]
    seq.append((l1_pgd, tdp, "L1"))
    return seq


def l1_return_hits(cache) -> tuple:
    """(hits, returns) over the switches back to L1 (the first load is not a return)."""
    back = [hit for i, (label, _, _, hit) in enumerate(cache.log) if label == "L1" and i > 0]
    return sum(back), len(back)


def demo(emit) -> None:
    emit("== page roles: the prev_roots cache on NPT (seed 002, v4.20/v5.0 cr4_pae bug) ==")
    for era in ("v5.0", "v5.0-fix", "v5.1", "v6.14"):
        e = R.get_era(era)
        seq = l1_l2_switches(e)
        c = run_switches(e, seq)
        h, n = l1_return_hits(c)
        stored = c.pages[c.root.hpa].role if c.root.valid else None
        emit(f"{e.name:9s} TDP new_role {seq[0][1]:#010x} stored root role "
             f"{stored:#010x}  L2->L1 hits {h}/{n} ({100.0 * h / n:.0f}%), "
             f"overall hit rate {100 * c.hit_rate:.0f}%")
    emit("v5.0: kvm_calc_mmu_role_common sets cr4_pae=1 for long-mode L1, kvm_mmu_get_page clears it")
    emit("      on the direct root, so is_root_usable never matches: every return to L1 misses.")
    emit("== nested-EPT identification ==")
    l1 = R.VcpuState.long_mode()
    for era in ("v5.0", "v5.1", "v5.14", "v6.14"):
        w = R.kvm_calc_shadow_ept_root_page_role(era, l1).base
        verdict, why = R.identify_nested_ept(era, w)
        coll = R.find_collisions(era)
        emit(f"{era:6s} nested EPT root {w:#010x}: {verdict} ({why.split(';')[0]}); "
             f"colliding root words: {len(coll)}")
    emit("== worked roles (newest layout) ==")
    for name, w in (("TDP root l4", R.kvm_calc_tdp_mmu_root_page_role("latest", l1)),
                    ("shadow root, 64-bit guest", R.kvm_calc_shadow_mmu_root_page_role("latest", l1)),
                    ("32-bit guest PAE root 3", R.shadow_root_sp_roles("latest", R.VcpuState.nonpae32(
                        cr0_wp=True, efer_nx=False))[3])):
        emit(f"{name:28s} {R.unpack('latest', w)}")


def _cmd_role_decode(args) -> int:
    era = R.get_era(args.era)
    for w in args.words:
        try:
            word = int(w, 0)
        except ValueError:
            raise InputError(f"word={w!r}: not an integer (use 0x... for hex)") from None
        r = R.unpack(era, word)
        print(r)
        for code, msg in R.check_role_word(era, word, args.kind):
            print(f"  ! {code}: {msg}")
        print(f"  nested EPT? {' - '.join(R.identify_nested_ept(era, word))}")
    return 0


def _cmd_role_eras(args) -> int:
    for e in R.ERAS.values():
        print(f"{e.name:9s} {e.kernels:45s} bit4={e.bit4:16s} nx={e.nx:7s} "
              f"mask={e.base.used_mask:#010x}")
    return 0


def _cmd_role_prevroots(args) -> int:
    c = run_switches(args.era, l1_l2_switches(args.era, args.rounds))
    h, n = l1_return_hits(c)
    print(f"era {R.get_era(args.era)}: hits {c.hits} misses {c.misses}; L2->L1 hits {h}/{n}")
    print(c.describe())
    return 0


def _cmd_role_hash(args) -> int:
    gfns = H.realistic_gfns(n_vms=args.vms, seed=args.seed)
    counts = H.bucket_counts(gfns, args.bits, args.variant)
    print(f"mmu_page_hash: {gfns.size} shadow-page gfns ({args.vms} shadow-paged guests), "
          f"{1 << args.bits} buckets, hash_64 variant {args.variant}")
    print(H.format_stats(H.bucket_stats(counts)))
    if args.plot:
        print("wrote", H.plot_bucket_occupancy(counts, args.plot))
    return 0


def register(sub) -> None:
    r = sub.add_parser("role", help="page role words: decode, eras, prev_roots scene")
    rs = r.add_subparsers(dest="role_cmd", metavar="ROLECMD")
    d = rs.add_parser("decode", help="decode role words and check them")
    d.add_argument("words", nargs="+")
    d.add_argument("--era", default=R.DEFAULT_ERA)
    d.add_argument("--kind", default="sp", choices=("sp", "root", "cpu"))
    d.set_defaults(func=_cmd_role_decode)
    e = rs.add_parser("eras", help="list the role eras")
    e.set_defaults(func=_cmd_role_eras)
    p = rs.add_parser("prevroots", help="L1<->L2 switches on NPT through the prev_roots cache")
    p.add_argument("--era", default="v5.0")
    p.add_argument("--rounds", type=_positive, default=10)
    p.set_defaults(func=_cmd_role_prevroots)
    h = rs.add_parser("hash", help="shadow-page hash bucket occupancy for a realistic gfn population")
    h.add_argument("--vms", type=_positive, default=4, help="shadow-paged guests in the population")
    h.add_argument("--bits", type=int, default=H.KVM_MMU_HASH_SHIFT, help="hash bits (KVM_MMU_HASH_SHIFT)")
    h.add_argument("--variant", default=R.HashVariant.X86_64.value,
                   help=f"hash_64 variant ({', '.join(v.value for v in R.HashVariant)})")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--plot", metavar="PNG", help="write the occupancy plot (text table without matplotlib)")
    h.set_defaults(func=_cmd_role_hash)
    r.set_defaults(func=lambda a: (r.print_help(), 2)[1])


__all__ = ["demo", "register", "DEMO_ORDER", "l1_l2_switches", "l1_return_hits"]
_ = argparse
