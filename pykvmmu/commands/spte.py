"""CLI: ``pykvmmu decode``, ``pykvmmu config``, ``pykvmmu make-spte``; the SPTE demo scene."""
from __future__ import annotations

import argparse
import sys
import warnings

from .. import spte as S
from .. import walk as W
from ..config import ACC_ALL, MmuConfig
from ..errors import InputError
from ..profile import PROFILES, ProfileVersionWarning, describe_version
from ._args import add_config_args, config_from_args, parse_int as _int

DEMO_ORDER = 10


def _hex_word(text: str) -> int:
    """argparse type for decoded words: hex with or without 0x, as the kernel prints them."""
    t = text.replace("_", "").lower()
    try:
        return int(t[2:] if t.startswith("0x") else t, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hex word (e.g. 100000000 or "
                                         f"0x8600000012345b77)") from None


def _cmd_decode(args) -> int:
    if args.arch:
        for v in args.spte:
            print(W.decode_entry(args.arch, v, args.level,
                                 maxphyaddr=52 if args.maxphyaddr is None else args.maxphyaddr))
        return 0
    cfg = config_from_args(args)
    for v in args.spte:
        print(S.decode(cfg, v, args.level))
    return 0


def _cmd_config(args) -> int:
    """Print how ``--profile`` maps to a layout profile (warnings on stderr), then the config."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ProfileVersionWarning)
        cfg = config_from_args(args)
    for w in caught:
        if issubclass(w.category, ProfileVersionWarning):
            print(f"pykvmmu: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(describe_version(args.profile))
    print(cfg)
    return 0


def _cmd_make(args) -> int:
    cfg = config_from_args(args)
    r = S.make_spte(cfg, args.pfn, level=args.level, pte_access=args.access, prefetch=args.prefetch,
                    host_writable=not args.not_host_writable, ad_disabled=args.ad_disabled or None,
                    unsync_fails=args.unsync_fails, memtype=args.memtype)
    print(f"make_spte -> 0x{r.spte:016x} wrprot={r.wrprot}"
          + (f" warnings={', '.join(r.warnings)}" if r.warnings else ""))
    print(S.decode(cfg, r.spte, args.level))
    return 0


def register(sub) -> None:
    d = sub.add_parser("decode", help="decode SPTEs under a configuration and kernel era, or "
                       "raw hardware paging entries (--arch)")
    d.add_argument("spte", nargs="+", type=_hex_word,
                   help="word(s) in hex, 0x optional (a bare 100000000 is hex, as the kernel prints)")
    d.add_argument("--level", type=int, default=1, help="the entry's level (1=4K .. 5)")
    d.add_argument("--arch", choices=W.ARCHES, default=None,
                   help="decode a raw hardware entry of this format instead of a KVM SPTE "
                        "(--maxphyaddr is then the guest's, default 52)")
    add_config_args(d)
    d.set_defaults(func=_cmd_decode)
    c = sub.add_parser("config", help="print a configuration preset (every mask in hex)")
    add_config_args(c)
    c.set_defaults(func=_cmd_config)
    m = sub.add_parser("make-spte", help="run make_spte() once and decode the result")
    m.add_argument("pfn", type=_int)
    m.add_argument("--level", type=int, default=1)
    m.add_argument("--access", type=_int, default=ACC_ALL, help="ACC_* bits (default 7)")
    m.add_argument("--prefetch", action="store_true")
    m.add_argument("--not-host-writable", action="store_true")
    m.add_argument("--ad-disabled", action="store_true")
    m.add_argument("--unsync-fails", action="store_true")
    m.add_argument("--memtype", type=_int, default=None)
    add_config_args(m)
    m.set_defaults(func=_cmd_make)


def demo(emit) -> None:
    """SPTE scene: one leaf and one non-leaf SPTE per default preset, aging, a split, eras."""
    emit("== SPTE engine: the embedded default configurations ==")
    for name in MmuConfig.PRESETS:
        cfg = MmuConfig.preset(name)
        r = S.make_spte(cfg, 0x12345)
        nl = S.make_nonleaf_spte(cfg, 0x1000)
        emit(f"-- preset {name}: make_spte(pfn 0x12345, ACC_ALL, 4K) = 0x{r.spte:016x}"
             f"   make_nonleaf_spte(0x1000) = 0x{nl:016x}")
        for line in str(S.decode(cfg, r.spte)).splitlines()[1:]:
            emit("   " + line)
    cfg = MmuConfig.preset("ept-noad")
    leaf = S.make_spte(cfg, 0x12345).spte
    aged = S.mark_spte_for_access_track(cfg, leaf)
    emit(f"-- access tracking (EPT without A/D): 0x{leaf:016x} -> mark -> 0x{aged:016x}"
         f" -> restore -> 0x{S.restore_acc_track_spte(cfg, aged):016x}")
    ept = MmuConfig.preset("ept", nx_huge_pages=True)
    huge = S.make_spte(ept, 0x200000 >> 12 << 9, level=2).spte
    kids = [S.make_small_spte(ept, huge, 1, i) for i in (0, 1, 511)]
    emit(f"-- eager split of 2M SPTE 0x{huge:016x} (NX huge pages on): children 0/1/511 = "
         + ", ".join(f"0x{k:016x}" for k in kids))
    emit("-- the same make_spte inputs across kernel eras (EPT without A/D, writable 4K leaf):")
    for prof in PROFILES:
        c = MmuConfig.ept(ad=False, profile=prof)
        v = S.make_spte(c, 0x12345).spte
        emit(f"   {prof:9s} ({c.profile.kernels:24s}) 0x{v:016x}")
    try:
        S.make_spte(MmuConfig.ept(), 1 << 40)
    except InputError as e:
        emit(f"-- bad input is refused: {e}")
