"""Fuzz target ``mmio``: MMIO SPTEs."""
from __future__ import annotations

import numpy as np

from .base import (Disagreement, FuzzInput, _BIT, _cid, _configs, _mk_kwargs, _pfn, _spte_word, check,
                   expect_same, target)


@target("mmio")
def fuzz_mmio(fi: FuzzInput) -> None:
    """MMIO SPTEs: make / decode (gfn, access, generation) / is_mmio / check / fault outcome /
    invalidation, scalar and batch vs pykvmmu.ref.mmio; round-trip invariants; the strict
    mask validator never crashes."""
    cfgs = _configs()
    cfg = cfgs[fi.int_in(0, len(cfgs) - 1)]
    _mmio_ops(fi, cfg)
    _mmio_masks(fi, cfg)


def _mmio_ops(fi: FuzzInput, cfg) -> None:
    from .. import mmio as M
    from .. import spte as S
    from ..ref import mmio as RM
    cid = _cid(cfg)
    gmask = M.mmio_generation_mask(cfg)
    op = fi.int_in(0, 3)
    fi.feature("mmio", op, cfg.profile.name, cfg.mode, cfg.mmio_caching)
    if op == 0:
        n = fi.int_in(1, 5)
        rows = [(fi.bits_below(40), fi.int_in(0, 7), fi.u64([0, gmask, gmask + 1]) if fi.bool()
                 else fi.bits_below(20)) for _ in range(n)]
        sp = M.make_mmio_spte_batch(cfg, np.array([r[0] for r in rows], np.uint64),
                                    np.array([r[1] for r in rows], np.uint64),
                                    np.array([r[2] for r in rows], np.uint64))
        memgen = fi.u64([0, rows[0][2], rows[0][2] | _BIT(63)])
        for i, (gfn, acc, gen) in enumerate(rows):
            s = M.make_mmio_spte(cfg, gfn, acc, gen)
            expect_same("make_mmio_spte", s, RM.make_mmio_spte(cfg, gfn, acc, gen), cid, gfn, acc, gen)
            expect_same("make_mmio_spte_batch", int(sp[i]), s, cid, gfn, acc, gen)
            if cfg.mmio_caching:
                check(S.is_mmio_spte(cfg, s), "make_mmio_spte output is not MMIO", cid, s)
                check(not S.is_shadow_present_pte(cfg, s), "MMIO SPTE is shadow-present", cid, s)
            check(M.get_mmio_spte_generation(cfg, s) == gen & gmask, "generation round trip",
                  cid, gen, s)
            check(M.get_mmio_spte_access(cfg, s) == acc & cfg.mmio_access_mask, "access round trip",
                  cid, acc, s)
            lower = cfg.nonpresent_or_rsvd_lower_gfn_mask or (((1 << 52) - 1) & ~0xFFF)
            keep = (lower | cfg.nonpresent_or_rsvd_mask) >> 12
            if not (gfn << 12) & ~(lower | cfg.nonpresent_or_rsvd_mask):
                check(M.get_mmio_spte_gfn(cfg, s) == gfn & keep, "gfn round trip", cid, gfn, s)
            ok = M.check_mmio_spte(cfg, s, memgen)
            expect_same("check_mmio_spte", ok, RM.check_mmio_spte(cfg, s, memgen), cid, s, memgen)
            out = M.mmio_fault_outcome(cfg, s, memgen)
            expect_same("mmio_fault_outcome", out, RM.mmio_fault_outcome(cfg, s, memgen), cid, s, memgen)
            fi.feature("mmio.outcome", out)
    elif op == 1:
        n = fi.int_in(1, 6)
        words = [_spte_word(fi, cfg) if fi.bool() else fi.u64([cfg.mmio_value]) for _ in range(n)]
        g = fi.u64([0, gmask, _BIT(63)])
        arr = np.array(words, np.uint64)
        gfn_b = M.get_mmio_spte_gfn_batch(cfg, arr)
        acc_b = M.get_mmio_spte_access_batch(cfg, arr)
        gen_b = M.get_mmio_spte_generation_batch(cfg, arr)
        is_b = M.is_mmio_spte_batch(cfg, arr)
        chk_b = M.check_mmio_spte_batch(cfg, arr, g)
        out_b = M.mmio_fault_outcome_batch(cfg, arr, g)
        for i, s in enumerate(words):
            for what, got, want in (
                    ("get_mmio_spte_gfn", M.get_mmio_spte_gfn(cfg, s), RM.get_mmio_spte_gfn(cfg, s)),
                    ("get_mmio_spte_gfn_batch", int(gfn_b[i]), RM.get_mmio_spte_gfn(cfg, s)),
                    ("get_mmio_spte_access", M.get_mmio_spte_access(cfg, s), RM.get_mmio_spte_access(cfg, s)),
                    ("get_mmio_spte_access_batch", int(acc_b[i]), RM.get_mmio_spte_access(cfg, s)),
                    ("get_mmio_spte_generation", M.get_mmio_spte_generation(cfg, s),
                     RM.get_mmio_spte_generation(cfg, s)),
                    ("get_mmio_spte_generation_batch", int(gen_b[i]), RM.get_mmio_spte_generation(cfg, s)),
                    ("is_mmio_spte", S.is_mmio_spte(cfg, s), RM.is_mmio_spte(cfg, s)),
                    ("is_mmio_spte_batch", bool(is_b[i]), RM.is_mmio_spte(cfg, s)),
                    ("check_mmio_spte", M.check_mmio_spte(cfg, s, g), RM.check_mmio_spte(cfg, s, g)),
                    ("check_mmio_spte_batch", bool(chk_b[i]), RM.check_mmio_spte(cfg, s, g)),
                    ("mmio_fault_outcome", M.mmio_fault_outcome(cfg, s, g), RM.mmio_fault_outcome(cfg, s, g))):
                expect_same(what, got, want, cid, s, g)
            fi.feature("mmio.decode", RM.is_mmio_spte(cfg, s), RM.mmio_fault_outcome(cfg, s, g))
            expect_same("mmio_fault_outcome_batch", M.FAULT_OUTCOMES[int(out_b[i])],
                        RM.mmio_fault_outcome(cfg, s, g), cid, s, g)
    elif op == 2:
        nr = fi.pick((1, 2))
        gen = fi.u64([0, gmask, gmask + 1, gmask - 1]) & ~_BIT(63)
        got = M.kvm_mmu_invalidate_mmio_sptes(cfg, gen, nr)
        expect_same("kvm_mmu_invalidate_mmio_sptes", got, RM.kvm_mmu_invalidate_mmio_sptes(cfg, gen, nr),
                    cid, gen, nr)
        b = M.kvm_mmu_invalidate_mmio_sptes_batch(cfg, np.array([gen], np.uint64), nr)
        expect_same("kvm_mmu_invalidate_mmio_sptes_batch", bool(b[0]), got, cid, gen)
        fi.feature("mmio.inval", got)
    else:
        from ..errors import PykvmmuError
        value = fi.u64([cfg.mmio_value, 6, 1 | _BIT(51)])
        mask = value | fi.u64() if fi.bool() else fi.u64([cfg.mmio_mask])
        try:
            v = M.mmio_mask_violations(cfg, value, mask)
        except PykvmmuError as e:
            fi.feature("mmio.validator.error", type(e).__name__)
            return
        fi.feature("mmio.validator", tuple(sorted({x.rule for x in v}))[:3])
        str(M.mmio_caching_off_reasons(cfg))


def _mmio_masks(fi: FuzzInput, cfg) -> None:
    """Drawn after the operation's draws: generation_mmio_spte_mask vs pykvmmu.ref.mmio (and
    its refusal of a generation wider than the mask); validate_mmio_masks: a pair it accepts
    never matches a present SPTE the reference builds (nor FROZEN / the non-present value),
    a refusal names rules with bits; the TD's MMIO value (tdx_vm_mmio_value) passes the TDX
    rules under the newest EPT mask and matches no present EPT SPTE either."""
    from .. import mmio as M
    from ..config import MmuConfig
    from ..errors import InputError
    from ..ref import mmio as RM
    from ..ref import spte as R
    cid = _cid(cfg)
    gmask = M.mmio_generation_mask(cfg)
    gen = fi.u64([0, gmask, gmask >> 1]) & gmask
    expect_same("generation_mmio_spte_mask", M.generation_mmio_spte_mask(cfg, gen),
                RM.generation_mmio_spte_mask(cfg, gen), cid, gen)
    wide = gen | 1 << fi.int_in(gmask.bit_length(), 63)
    try:
        M.generation_mmio_spte_mask(cfg, wide)
    except InputError:
        pass
    else:
        raise Disagreement(f"generation_mmio_spte_mask accepted {wide:#x} wider than {gmask:#x} ({cid})")
    k = fi.uint(8) % 4
    if k == 0:
        value, mask = cfg.mmio_value, cfg.mmio_mask
    elif k == 1:
        value, mask = cfg.mmio_value ^ 1 << fi.int_in(0, 63), cfg.mmio_mask
    elif k == 2:
        value, mask = cfg.mmio_value, cfg.mmio_mask ^ 1 << fi.int_in(0, 63)
    else:
        mask = fi.u64([cfg.mmio_mask, 7, 7 | _BIT(63), _BIT(51) | 1])
        value = mask & fi.u64() if fi.bool() else fi.u64([6, 1 | _BIT(51), 0])
    mode = None if fi.bool() else ("ept" if cfg.is_ept else "npt")
    try:
        ok = M.validate_mmio_masks(cfg, value, mask, mode=mode) is cfg
    except M.MmioMaskError as e:
        check(e.violations, "MmioMaskError without rules", cid, e)
        ok = False
    presents = []
    for _ in range(3):
        kw = _mk_kwargs(fi)
        kw["host_mmio"] = False
        # a host page: its PA below x86_phys_bits (MAXPHYADDR less the SME reduction)
        s, _ = R.make_spte(cfg, _pfn(fi, cfg) & ((1 << (min(cfg.phys_bits, cfg.maxphyaddr) - 12)) - 1), **kw)
        # what a guest can map: readable, or execute-only (EPT: W without R is a misconfiguration)
        if kw["pte_access"] & 4 or kw["pte_access"] == 1:
            presents.append((s, kw))
    if ok and not cfg.profile.mmio_special_tag:
        fi.feature("mmio.masks.accepted", k, cfg.mode)
        for s, kw in presents:
            check(s & mask != value, "validated MMIO value matches a present SPTE", cid, value, mask, s, kw)
        for v in (cfg.profile.nonpresent_value, cfg.profile.frozen_value):
            if v is not None:
                check(v & mask != value, "validated MMIO value matches FROZEN/non-present", cid, value, mask, v)
    if cfg.is_ept:
        tmask = 7 | _BIT(63)
        tv = M.tdx_vm_mmio_value()
        check(M.validate_mmio_masks(MmuConfig.ept(), tv, tmask, mode="tdx") is not None, "TD value refused")
        for s, kw in presents:
            if not s & 7:
                continue        # access-tracked, or exec stripped (NX huge pages) on an exec-only host
            check(s & tmask != tv, "the TD's MMIO value matches a present EPT SPTE", cid, s, kw)
