"""Fuzz target ``config``: MmuConfig and the MMIO mask."""
from __future__ import annotations

from .base import Disagreement, FuzzInput, _BIT, _cid, check, expect_same, target


@target("config")
def fuzz_config(fi: FuzzInput) -> None:
    """MmuConfig: presets with random host facts either raise ConfigError or give a
    configuration whose invariants hold; kvm_mmu_set_mmio_spte_mask vs pykvmmu.ref.mmio; then
    an SME/SEV host (any C-bit and phys-bit reduction, NPT and shadow paging): make_spte,
    spte_to_pfn, make_mmio_spte and is_mmio_spte vs the references."""
    _config_ops(fi)
    _config_sme(fi)


def _config_ops(fi: FuzzInput) -> None:
    from .. import mmio as M
    from .. import spte as S
    from ..config import MmuConfig
    from ..errors import ConfigError, ProfileError
    from ..profile import PROFILES
    from ..ref import mmio as RM
    prof = fi.pick(list(PROFILES))
    name = fi.pick(MmuConfig.PRESETS)
    kw: dict = {"profile": prof}
    if fi.bool():
        kw["maxphyaddr"] = fi.int_in(30, 53)
    if fi.chance(3):
        kw["phys_bits"] = fi.int_in(30, 53)
    if fi.chance(3):
        kw["cache_bits"] = fi.int_in(30, 53)
    if fi.chance(4):
        kw["mmio_caching"] = False
    if fi.chance(4):
        kw["nx_huge_pages"] = True
    if name in ("npt", "npt-sme") and fi.chance(3):
        kw["sme_cbit"] = fi.int_in(30, 52)
    try:
        cfg = MmuConfig.preset(name, **kw)
    except (ConfigError, ProfileError) as e:
        fi.feature("config.refused", name, type(e).__name__, str(e).split(":")[0][:40])
        return
    fi.feature("config.ok", name, prof, cfg.mmio_caching, bool(cfg.nonpresent_or_rsvd_mask))
    cid = _cid(cfg)
    check(str(cfg), "str(MmuConfig) is empty")
    check(cfg.replace() == cfg, "replace() with no change is not equal", cid)
    check(not cfg.me_value & ~cfg.me_mask, "me_value outside me_mask", cid)
    check(not cfg.base_addr_mask & ~(((1 << 52) - 1) & ~0xFFF), "base_addr_mask outside bits 51:12", cid)
    if cfg.mmio_caching and not cfg.profile.mmio_special_tag and cfg.mode != "tdx":
        check(cfg.mmio_value & ~cfg.mmio_mask == 0, "mmio_value outside mmio_mask", cid)
    for v in (cfg.profile.nonpresent_value, cfg.profile.frozen_value):
        if v is not None:
            check(not S.is_shadow_present_pte(cfg, v) and not S.is_mmio_spte(cfg, v),
                  "FROZEN/NONPRESENT value is present or MMIO", cid, v)
    # kvm_mmu_set_mmio_spte_mask on this host: the library vs the reference
    value = fi.u64([cfg.mmio_value, 1 | _BIT(51), 6, 0])
    mask = value | (fi.u64() if fi.chance(2) else 0) if fi.bool() else fi.u64([0x7, _BIT(63) | 7])
    access = fi.uint(3) if not fi.chance(16) else fi.uint(33)
    allow = fi.pick((None, True, False))
    if cfg.profile.mmio_special_tag and allow is False:
        try:
            M.set_mmio_spte_mask(cfg, value, mask, access, allow_mmio_caching=allow)
        except ProfileError:
            fi.feature("config.setmask.v510-param-refused")
            return
        raise Disagreement("v5.10-era set_mmio_spte_mask accepted the mmio_caching parameter")
    try:
        rep = M.set_mmio_spte_mask(cfg, value, mask, access, allow_mmio_caching=allow)
    except ConfigError as e:
        check(access >> 32, "set_mmio_spte_mask refused a 32-bit access mask", cid, str(e))
        return
    check(not access >> 32, "access_mask wider than 32 bits accepted (BUG_ON)", cid, access)
    a = ("mmio_caching_disabled_by_parameter" not in cfg.mmio_fired) if allow is None else allow
    if cfg.profile.mmio_special_tag:
        a = True if allow is None else allow
    rv, rmask, rcaching, _ = RM.set_mmio_spte_mask(
        cfg.profile, value, mask, access, allow=a, r=cfg.nonpresent_or_rsvd_mask,
        lower=cfg.nonpresent_or_rsvd_lower_gfn_mask, allowed_check=cfg.profile.me_value_split)
    fi.feature("config.setmask", rcaching, tuple(rep.fired)[:2])
    if cfg.profile.mmio_special_tag and allow is False:
        return                                   # v5.10: the parameter is handled elsewhere
    expect_same("set_mmio_spte_mask (value, mask, caching)",
                (rep.value, rep.mask, rep.caching), (rv, rmask, rcaching), cid, value, mask, access)


def _config_sme(fi: FuzzInput) -> None:
    """Drawn after the preset's draws: an SME/SEV host (C-bit 30-52, phys-bit reduction
    0-8, npt / npt-sme / shadow) refused with ConfigError or held to the references."""
    from .. import mmio as M
    from .. import spte as S
    from ..config import MmuConfig
    from ..errors import ConfigError, ProfileError
    from ..profile import PROFILES
    from ..ref import mmio as RM
    from ..ref import spte as R
    from .base import _mk_kwargs, _pfn, _spte_word
    name = fi.pick(("npt", "npt-sme", "shadow"))
    kw = dict(profile=fi.pick(list(PROFILES)), sme_cbit=fi.int_in(30, 52), sme_phys_reduction=fi.int_in(0, 8))
    if fi.bool():
        kw["maxphyaddr"] = fi.int_in(36, 52)
    try:
        cfg = MmuConfig.preset(name, **kw)
    except (ConfigError, ProfileError) as e:
        fi.feature("config.sme.refused", name, str(e).split(":")[0][:30])
        return
    cid = _cid(cfg) + f"-c{kw['sme_cbit']}"
    check(cfg.me_mask == cfg.me_value == _BIT(kw["sme_cbit"]), "SME host: me_mask/me_value is not the C-bit",
          cid, cfg.me_mask)
    fi.feature("config.sme", name, cfg.mmio_caching)
    for _ in range(2):
        pfn, mk = _pfn(fi, cfg), _mk_kwargs(fi)
        r = S.make_spte(cfg, pfn, **mk)
        expect_same("make_spte (SME host)", (r.spte, r.wrprot), R.make_spte(cfg, pfn, **mk), cid, pfn, mk)
        expect_same("spte_to_pfn (SME host)", S.spte_to_pfn(cfg, r.spte), R.spte_to_pfn(cfg, r.spte), cid, r.spte)
        w = _spte_word(fi, cfg)
        expect_same("is_mmio_spte (SME host)", S.is_mmio_spte(cfg, w), RM.is_mmio_spte(cfg, w), cid, w)
        gfn, acc, gen = fi.bits_below(40), fi.int_in(0, 7), fi.bits_below(20)
        expect_same("make_mmio_spte (SME host)", M.make_mmio_spte(cfg, gfn, acc, gen),
                    RM.make_mmio_spte(cfg, gfn, acc, gen), cid, gfn, acc, gen)
