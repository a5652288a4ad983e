"""Fuzz target ``spte``: the SPTE engine."""
from __future__ import annotations

import numpy as np

from .base import FuzzInput, _BIT, _cid, _configs, _mk_kwargs, _pfn, _spte_word, check, expect_same, target


@target("spte")
def fuzz_spte(fi: FuzzInput) -> None:
    """SPTE engine: make_spte / predicates / decode / access tracking / split / collapse /
    non-leaf / TLB-flush rule, scalar and batch C core vs pykvmmu.ref.spte, plus the
    invariants of spte-mmio.md section 5."""
    from .. import spte as S
    from ..ref import spte as R
    cfgs = _configs()
    cfg = cfgs[fi.int_in(0, len(cfgs) - 1)]
    op = fi.int_in(0, 6)
    fi.feature("spte", op, cfg.profile.name, cfg.mode)
    cid = _cid(cfg)
    if op == 0:                                     # make_spte, scalar and batch
        pfn = _pfn(fi, cfg)
        kw = _mk_kwargs(fi)
        old = _spte_word(fi, cfg) if fi.bool() else None
        r = S.make_spte(cfg, pfn, old_spte=old, **kw)
        want = R.make_spte(cfg, pfn, old_spte=old, **kw)
        expect_same("make_spte", (r.spte, r.wrprot), want, cid, pfn, kw, old)
        expect_same("make_spte warnings", r.warnings,
                    R.make_spte_warnings(cfg, r.spte, kw["level"], kw["pte_access"]), cid)
        s = r.spte
        fi.feature("spte.make", r.wrprot, r.warnings, kw["level"] > 1)
        if cfg.profile.mmu_present_bit11:
            check(s & _BIT(11), "make_spte output lacks MMU-present bit 11", cid, s)
        check(S.check_spte_writable_invariants(cfg, s), "make_spte broke the writable invariants",
              cid, s, kw)
        check(S.spte_to_pfn(cfg, s) == pfn, "spte_to_pfn(make_spte(pfn)) != pfn", cid, pfn, s)
        if cfg.profile.mmu_present_bit11:
            # v5.10-5.12 (no MMU-present bit): an exec-only EPT SPTE with no access, pfn 0
            # and memtype UC is the word 0, which that era's is_shadow_present_pte calls
            # non-present; both the core and the reference reproduce it.
            check(S.is_shadow_present_pte(cfg, s), "make_spte output is not shadow-present", cid, s)
        if r.wrprot:
            check(not s & _BIT(1), "wrprot but W set", cid, s)
        n = fi.int_in(1, 4)
        pfns = [pfn] + [_pfn(fi, cfg) for _ in range(n - 1)]
        mb = S.make_spte_batch(cfg, np.array(pfns, np.uint64), old_spte=old, **kw)
        for i, p in enumerate(pfns):
            expect_same(f"make_spte_batch[{i}]", int(mb[i]),
                        R.make_spte(cfg, p, old_spte=old, **kw)[0], cid, p, kw)
    elif op == 1:                                   # predicates: scalar, batch, decode
        n = fi.int_in(1, 6)
        words = [_spte_word(fi, cfg) for _ in range(n)]
        levels = [fi.int_in(1, 5) for _ in range(n)]
        arr = np.array(words, np.uint64)
        lv = np.array(levels, np.uint8)
        dec = S.decode_batch(cfg, arr, lv)
        for name, (_num, needs_level, feat) in S.PREDICATES.items():
            if feat and not getattr(cfg.profile, feat):
                continue
            got = S.predicate_batch(cfg, name, arr, lv)
            for i, (s, level) in enumerate(zip(words, levels)):
                want = R.predicate(cfg, name, s, level)
                expect_same(f"{name} batch", bool(got[i]), want, cid, s, level)
                if i == 0:
                    expect_same(f"{name} scalar", S.predicate(cfg, name, s, level), want, cid, s, level)
                fld = "p_" + S._FIELD[name]
                if name not in ("is_dirty_spte", "is_ept_ve_possible"):
                    expect_same(f"decode_batch.{fld}", bool(dec[fld][i]), want, cid, s, level)
        for i, (s, level) in enumerate(zip(words, levels)):
            check(S.is_last_spte(cfg, s, level) == (level == 1 or bool(s & _BIT(7))),
                  "is_last_spte rule", cid, s, level)
            expect_same("decode_batch.pfn", int(dec["pfn"][i]), R.spte_to_pfn(cfg, s), cid, s)
            expect_same("spte_to_pfn", S.spte_to_pfn(cfg, s), R.spte_to_pfn(cfg, s), cid, s)
            kind = S.KINDS[int(dec["kind"][i])]
            fi.feature("spte.kind", kind)
            if kind == "present":
                check(dec["p_shadow_present"][i], "kind present but not shadow-present", cid, s)
            if kind == "mmio":
                check(dec["p_mmio"][i], "kind mmio but not is_mmio_spte", cid, s)
        rec = S.decode(cfg, words[0], levels[0])
        check(str(rec), "decode() printed nothing")
        for v in (cfg.profile.nonpresent_value, cfg.profile.frozen_value):
            if v is not None:
                check(not S.is_shadow_present_pte(cfg, v) and not S.is_mmio_spte(cfg, v),
                      "FROZEN_SPTE / SHADOW_NONPRESENT_VALUE is present or MMIO", cid, v)
    elif op == 2:                                   # access tracking
        n = fi.int_in(1, 4)
        words = [_spte_word(fi, cfg) for _ in range(n)]
        arr = np.array(words, np.uint64)
        marked = S.access_track_batch(cfg, arr)
        restored = S.access_track_batch(cfg, arr, restore=True)
        for i, s in enumerate(words):
            m = S.mark_spte_for_access_track(cfg, s)
            expect_same("mark_spte_for_access_track", m, R.mark_spte_for_access_track(cfg, s), cid, s)
            expect_same("access_track_batch(mark)", int(marked[i]), m, cid, s)
            rs = S.restore_acc_track_spte(cfg, s)
            expect_same("restore_acc_track_spte", rs, R.restore_acc_track_spte(cfg, s), cid, s)
            expect_same("access_track_batch(restore)", int(restored[i]), rs, cid, s)
            check(S.mark_spte_for_access_track(cfg, m) == m, "mark is not idempotent", cid, s, m)
            ad_disabled = (s >> 52) & 3 == 1
            fi.feature("spte.mark", ad_disabled, m == s)
            if not ad_disabled:
                check(m == s & ~cfg.accessed_mask, "mark of an AD-enabled SPTE only clears A", cid, s)
            elif cfg.acc_track_mask and s & 7 and S.is_shadow_present_pte(cfg, s) \
                    and not s & (_BIT(54) | _BIT(56)):
                a = cfg.accessed_mask if cfg.profile.ad_always else 0
                check(S.restore_acc_track_spte(cfg, m) == s & ~(_BIT(1) | a),
                      "restore(mark(s)) != s & ~(W|A)", cid, s, m)
                check(S.is_access_track_spte(cfg, m), "mark(s) is not access-tracked", cid, s, m)
    elif op == 3:                                   # split a huge SPTE
        if not cfg.profile.has_make_small_spte:
            return
        child = fi.int_in(1, 4)
        kw = _mk_kwargs(fi)
        kw["level"] = child + 1
        pfn = _pfn(fi, cfg) & ~((1 << (9 * child)) - 1)
        h, _ = R.make_spte(cfg, pfn, **kw)
        if fi.bool():
            h = R.mark_spte_for_access_track(cfg, h)
        h |= _BIT(7) | (_BIT(11) if cfg.profile.mmu_present_bit11 else 0)
        idx = fi.int_in(0, 511)
        ra = fi.int_in(0, 7)
        nx = fi.pick((None, False, True))
        small = S.make_small_spte(cfg, h, child, idx, ra, nx)
        expect_same("make_small_spte", small, R.make_small_spte(cfg, h, child, idx, ra, nx),
                    cid, h, child, idx, ra, nx)
        want_pfn = S.spte_to_pfn(cfg, h) + (idx << (9 * (child - 1)))
        if not (want_pfn << 12) & ~cfg.base_addr_mask:     # the child's PA exists on this host
            check(S.spte_to_pfn(cfg, small) == want_pfn,
                  "spte_to_pfn(make_small_spte(H, i)) != pfn(H) + i * pages", cid, h, child, idx, small)
        kids = S.make_small_spte_batch(cfg, np.array([h], np.uint64), child, None, ra, nx)
        expect_same("make_small_spte_batch[idx]", int(kids[idx]), small, cid, h, idx)
        fi.feature("spte.split", child, bool(small & _BIT(7)))
        if cfg.profile.has_make_huge_spte and child + 1 in (2, 3):
            huge = S.make_huge_spte(cfg, small, child + 1, nx)
            expect_same("make_huge_spte", huge, R.make_huge_spte(cfg, small, child + 1, nx),
                        cid, small, child + 1)
            base = (S.spte_to_pfn(cfg, h)) & ~((1 << (9 * child)) - 1)
            check(S.spte_to_pfn(cfg, huge) == base, "make_huge_spte(make_small_spte(H)) lost H's PA",
                  cid, h, small, huge)
    elif op == 4:                                   # collapse an arbitrary small SPTE
        if not cfg.profile.has_make_huge_spte:
            return
        s, _ = R.make_spte(cfg, _pfn(fi, cfg), **_mk_kwargs(fi))
        level = fi.int_in(2, 3)
        nx = fi.pick((None, False, True))
        huge = S.make_huge_spte(cfg, s, level, nx)
        expect_same("make_huge_spte", huge, R.make_huge_spte(cfg, s, level, nx), cid, s, level)
        hb = S.make_huge_spte_batch(cfg, np.array([s], np.uint64), level, nx)
        expect_same("make_huge_spte_batch", int(hb[0]), huge, cid, s)
    elif op == 5:                                   # non-leaf
        pa = _pfn(fi, cfg) << 12
        ad = fi.pick((None, False, True))
        v = S.make_nonleaf_spte(cfg, pa, ad)
        expect_same("make_nonleaf_spte", v, R.make_nonleaf_spte(cfg, pa, ad), cid, pa, ad)
        nb = S.make_nonleaf_spte_batch(cfg, np.array([pa], np.uint64), ad)
        expect_same("make_nonleaf_spte_batch", int(nb[0]), v, cid, pa)
        check(S.is_shadow_present_pte(cfg, v) and not S.is_large_pte(cfg, v),
              "non-leaf SPTE must be present and not large", cid, v)
    else:                                           # TLB-flush rule
        a, b = _spte_word(fi, cfg), _spte_word(fi, cfg)
        if fi.bool():
            b = a & ~(1 << fi.int_in(0, 63))
        flush = S.leaf_spte_change_needs_tlb_flush(cfg, a, b)
        expect_same("leaf_spte_change_needs_tlb_flush", flush,
                    R.leaf_spte_change_needs_tlb_flush(cfg, a, b), cid, a, b)
        fi.feature("spte.flush", flush)
