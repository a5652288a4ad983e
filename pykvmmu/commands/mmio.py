"""CLI: ``pykvmmu mmio check`` and ``pykvmmu mmio make``; the MMIO demo scene."""
from __future__ import annotations

from .. import mmio as M
from ..config import ACC_ALL, MmuConfig
from ..memslots import MemslotGenerations
from ..spte import decode, is_mmio_spte
from ._args import add_config_args, config_from_args as _config, parse_int as _int

DEMO_ORDER = 20


def _cmd_check(args) -> int:
    cfg = _config(args)
    print(f"mode={cfg.mode} profile={cfg.profile} maxphyaddr={cfg.maxphyaddr} "
          f"phys_bits={cfg.phys_bits} cache_bits={cfg.cache_bits}")
    explicit = any(v is not None for v in (args.value, args.mask, args.access_mask))
    if explicit:
        value = cfg.mmio_value if args.value is None else args.value
        mask = cfg.mmio_mask if args.mask is None else args.mask
        access = cfg.mmio_access_mask if args.access_mask is None else args.access_mask
        rep = M.set_mmio_spte_mask(cfg, value, mask, access)
        print("kvm_mmu_set_mmio_spte_mask:")
        for line in str(rep).splitlines():
            print("  " + line)
        host = cfg
        # The strict validator judges what was asked for (a TD keeps its per-VM value 0).
        strict: list | None = M.mmio_mask_violations(host, 0 if host.mode == "tdx" else value, mask, access)
        cfg = rep.config if rep.config is not None else host.replace(mmio_caching=False, mmio_value=0)
    else:
        print(f"effective   value=0x{cfg.mmio_value:016x} mask=0x{cfg.mmio_mask:016x} "
              f"access_mask={cfg.mmio_access_mask:#x}")
        print(f"caching     {'on' if cfg.mmio_caching else 'off'}")
        print("fired       " + (", ".join(cfg.mmio_fired) if cfg.mmio_fired else "(none)"))
        strict = M.mmio_mask_violations(cfg) if cfg.mmio_caching else None
    for reason in M.mmio_caching_off_reasons(cfg):
        print(f"caching off because: {reason}")
    if strict is None:
        print("strict validator: not applicable (caching off: no SPTE is ever recognised as MMIO)")
    elif strict:
        print("strict validator:")
        for v in strict:
            print(f"  {v.detail}")
    else:
        print("strict validator: every rule holds")
    return 1 if strict else 0


def _cmd_make(args) -> int:
    cfg = _config(args)
    s = M.make_mmio_spte(cfg, args.gfn, args.access, args.generation)
    print(f"make_mmio_spte(gfn={args.gfn:#x}, access={args.access:#x}, generation={args.generation:#x})"
          f" = 0x{s:016x}")
    print(decode(cfg, s))
    if not cfg.mmio_caching:
        print("  (MMIO caching is off: is_mmio_spte is false, the kernel would not install it)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("mmio", help="MMIO SPTEs: mask validation and encoding")
    msub = p.add_subparsers(dest="mmio_command", metavar="SUBCOMMAND")
    c = msub.add_parser("check", help="effective MMIO value/mask/access mask, caching, rules that fired")
    add_config_args(c, default_mode="npt")
    c.add_argument("--value", type=_int, default=None, help="pass this value to kvm_mmu_set_mmio_spte_mask")
    c.add_argument("--mask", type=_int, default=None, help="... and this mask")
    c.add_argument("--access-mask", type=_int, default=None, help="... and this access mask")
    c.set_defaults(func=_cmd_check)
    m = msub.add_parser("make", help="make_mmio_spte() once and decode it")
    add_config_args(m, default_mode="npt")
    m.add_argument("gfn", type=_int)
    m.add_argument("--access", type=_int, default=ACC_ALL)
    m.add_argument("--generation", type=_int, default=0, help="memslots generation")
    m.set_defaults(func=_cmd_make)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def demo(emit) -> None:
    """MMIO scene: one MMIO SPTE per default preset, caching off, a generation wrap."""
    emit("== MMIO SPTEs: make_mmio_spte(gfn 0xfee00, ACC_ALL, generation 0x12345) ==")
    for name in MmuConfig.PRESETS:
        cfg = MmuConfig.preset(name)
        s = M.make_mmio_spte(cfg, 0xFEE00, ACC_ALL, 0x12345)
        emit(f"-- {name:8s} value=0x{cfg.mmio_value:016x} mask=0x{cfg.mmio_mask:016x} -> "
             f"0x{s:016x}  is_mmio={is_mmio_spte(cfg, s)} gfn={M.get_mmio_spte_gfn(cfg, s):#x} "
             f"access={M.get_mmio_spte_access(cfg, s):#x} gen={M.get_mmio_spte_generation(cfg, s):#x}")
    l1 = MmuConfig.npt(phys_bits=39, cache_bits=44)
    s = M.make_mmio_spte(l1, 0x1000_0ABC, 6, 1)
    emit(f"-- L1TF host (phys 39, cache 44): gfn 0x10000abc -> 0x{s:016x} -> gfn "
         f"{M.get_mmio_spte_gfn(l1, s):#x}")
    off = MmuConfig.npt(maxphyaddr=52)
    emit(f"-- npt with MAXPHYADDR 52: caching {'on' if off.mmio_caching else 'off'} ("
         + "; ".join(M.mmio_caching_off_reasons(off)) + ")")
    emit("-- memslot generation wrap (VM without private memory: 2 address spaces, step 2):")
    cfg = MmuConfig.ept()
    vm = MemslotGenerations(cfg)
    vm._gen[0] = (1 << 19) - 4                      # fast-forward close to the wrap
    old = vm.make_mmio_spte(0xFEE00)
    emit(f"   AS0 generation {vm.generation(0):#x}: MMIO SPTE 0x{old:016x} -> {vm.fault(old)}")
    gone = False
    for _ in range(3):
        vm.begin_update(0)
        if not gone:
            emit(f"   update in progress ({vm.generation(0):#x}): fault -> {vm.fault(old)}")
        gone |= vm.end_update(0)
        fate = "zapped (kvm_mmu_zap_all_fast)" if gone else f"fault -> {vm.fault(old)}"
        emit(f"   generation {vm.generation(0):#x} (MMIO generation "
             f"{vm.generation(0) & M.mmio_generation_mask(cfg):#x}): old SPTE {fate}")
    new = vm.make_mmio_spte(0xFEE00)
    emit(f"   rebuilt MMIO SPTE 0x{new:016x} -> {vm.fault(new)}; had the old one survived the "
         f"wrap, {(1 << 18) - 3} more updates would make it look current again")
    try:
        M.validate_mmio_masks(cfg, value=6, mask=7 | (1 << 11))
    except M.MmioMaskError as e:
        emit(f"-- strict validator: {e}")
