"""Argument helpers shared by the CLI commands (integers in any base, MmuConfig options)."""
from __future__ import annotations

import argparse

from ..config import MmuConfig
from ..profile import DEFAULT_PROFILE, PROFILES


def parse_int(text: str) -> int:
    """argparse type: an integer written in any base (0x..., 0b..., underscores allowed)."""
    try:
        return int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (use 0x... for hex)") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (counts such as --vms, --rounds)."""
    v = parse_int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return v


def add_config_args(p: argparse.ArgumentParser, default_mode: str | None = "ept") -> None:
    """The options that select an MmuConfig (shared by every command that needs one)."""
    p.add_argument("--mode", default=default_mode, choices=MmuConfig.PRESETS,
                   help=f"configuration preset (default: {default_mode})")
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"kernel-era layout profile: {', '.join(PROFILES)}, an alias like v6.11, "
                        f"or any kernel version (6.6.75, a uname -r) (default: {DEFAULT_PROFILE})")
    p.add_argument("--maxphyaddr", type=int, default=None, help="host MAXPHYADDR")
    p.add_argument("--phys-bits", type=int, default=None, help="x86_phys_bits (default: MAXPHYADDR)")
    p.add_argument("--cache-bits", type=int, default=None,
                   help="L1TF host: x86_cache_bits (enables the L1TF masks)")
    p.add_argument("--sme-cbit", type=int, default=None,
                   help="npt/shadow: SME/SEV host with this C-bit (svm_adjust_mmio_mask)")
    p.add_argument("--nx-huge-pages", action="store_true", help="NX huge pages mitigation on")
    p.add_argument("--no-mmio-caching", action="store_true", help="kvm.mmio_caching=0")


def config_from_args(args) -> MmuConfig:
    """Build the MmuConfig that add_config_args' options describe."""
    kw = {"profile": args.profile}
    if args.nx_huge_pages:
        kw["nx_huge_pages"] = True
    if args.no_mmio_caching:
        kw["mmio_caching"] = False
    for name in ("maxphyaddr", "phys_bits", "cache_bits", "sme_cbit"):
        v = getattr(args, name)
        if v is not None:
            kw[name] = v
    return MmuConfig.preset(args.mode, **kw)
