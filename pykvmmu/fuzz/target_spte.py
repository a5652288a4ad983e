"""Fuzz target ``spte``: the SPTE engine."""
from __future__ import annotations

import numpy as np

from .base import (FuzzInput, _BIT, _cid, _configs, _mk_kwargs, _pfn, _spte_word, batch_len, check,
                   expect_same, expect_same_batch, isa_cfg, rep, target)


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
        if fi.chance(3):        # level and access arrays: the general path, from 16384 the table
            lvls, accs = [fi.int_in(1, 5) for _ in pfns], [fi.int_in(0, 7) for _ in pfns]
            m = 16384 + fi.int_in(0, 70) if fi.int_in(0, 15) == 15 else n
            rest = {k: v for k, v in kw.items() if k not in ("level", "pte_access")}
            mb = S.make_spte_batch(isa_cfg(fi, cfg), np.resize(np.array(pfns, np.uint64), m), old_spte=old,
                                   level=np.resize(np.array(lvls, np.uint8), m),
                                   pte_access=np.resize(np.array(accs, np.uint8), m), **rest)
            expect_same_batch("make_spte_batch (level and access arrays)", mb,
                              [R.make_spte(cfg, p, level=lv, pte_access=a, old_spte=old, **rest)[0]
                               for p, lv, a in zip(pfns, lvls, accs)], cid, pfns, lvls, accs, rest, old)
        if fi.chance(2):        # flags and memtype arrays, split over threads (drawn after the above)
            _make_batch_flags(fi, cfg, pfns, kw, old)
    elif op == 1:                                   # predicates: scalar, batch, decode
        n = fi.int_in(1, 6)
        words = [_spte_word(fi, cfg) for _ in range(n)]
        levels = [fi.int_in(1, 5) for _ in range(n)]
        m = batch_len(fi, n)
        arr = np.resize(np.array(words, np.uint64), m)
        lv = levels[0] if fi.chance(3) else np.resize(np.array(levels, np.uint8), m)
        if not isinstance(lv, np.ndarray):
            levels = [lv] * n
        bcfg = isa_cfg(fi, cfg)
        dec = S.decode_batch(bcfg, arr, lv)
        for name, (_num, needs_level, feat) in S.PREDICATES.items():
            if feat and not getattr(cfg.profile, feat):
                continue
            want = [R.predicate(cfg, name, s, level) for s, level in zip(words, levels)]
            expect_same_batch(f"{name} batch", S.predicate_batch(bcfg, name, arr, lv), want, cid, words, levels)
            expect_same(f"{name} scalar", S.predicate(cfg, name, words[0], levels[0]), want[0], cid,
                        words[0], levels[0])
            if name not in ("is_dirty_spte", "is_ept_ve_possible"):
                fld = "p_" + S._FIELD[name]
                expect_same_batch(f"decode_batch.{fld}", dec[fld], want, cid, words, levels)
        pfns = [R.spte_to_pfn(cfg, s) for s in words]
        expect_same_batch("decode_batch.pfn", dec["pfn"], pfns, cid, words)
        expect_same_batch("spte_to_pfn_batch", S.spte_to_pfn_batch(bcfg, arr), pfns, cid, words)
        for i, (s, level) in enumerate(zip(words, levels)):
            check(S.is_last_spte(cfg, s, level) == (level == 1 or bool(s & _BIT(7))),
                  "is_last_spte rule", cid, s, level)
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
        for name, (_num, needs_level, feat) in S.PREDICATES.items():     # the scalar functions
            if feat and not getattr(cfg.profile, feat):
                continue
            fn = getattr(S, name)
            for w, level in zip(words, levels):
                expect_same(name, fn(cfg, w, level) if needs_level else fn(cfg, w),
                            R.predicate(cfg, name, w, level), cid, w, level)
    elif op == 2:                                   # access tracking
        n = fi.int_in(1, 4)
        words = [_spte_word(fi, cfg) for _ in range(n)]
        arr = np.resize(np.array(words, np.uint64), batch_len(fi, n))
        bcfg = isa_cfg(fi, cfg)
        want_m = [R.mark_spte_for_access_track(cfg, s) for s in words]
        want_r = [R.restore_acc_track_spte(cfg, s) for s in words]
        expect_same_batch("access_track_batch(mark)", S.access_track_batch(bcfg, arr), want_m, cid, words)
        expect_same_batch("access_track_batch(restore)", S.access_track_batch(bcfg, arr, restore=True),
                          want_r, cid, words)
        for s, wm, wr in zip(words, want_m, want_r):
            m = S.mark_spte_for_access_track(cfg, s)
            expect_same("mark_spte_for_access_track", m, wm, cid, s)
            expect_same("restore_acc_track_spte", S.restore_acc_track_spte(cfg, s), wr, cid, s)
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
        flush = R.leaf_spte_change_needs_tlb_flush(cfg, a, b)
        expect_same("leaf_spte_change_needs_tlb_flush", S.leaf_spte_change_needs_tlb_flush(cfg, a, b),
                    flush, cid, a, b)
        m = batch_len(fi, 1)
        expect_same_batch("leaf_spte_change_needs_tlb_flush_batch", S.leaf_spte_change_needs_tlb_flush_batch(
            cfg, np.full(m, a, np.uint64), np.full(m, b, np.uint64)), [flush], cid, a, b)
        fi.feature("spte.flush", flush)


_MK = ("prefetch", "synchronizing", "host_writable", "host_mmio", "ad_disabled", "ad_wrprot_only",
       "unsync_fails", "nx_huge_pages")


def _make_batch_flags(fi: FuzzInput, cfg, pfns: list, kw: dict, old) -> None:
    """make_spte_batch with a per-element ``flags`` array (MK_* bits ORed with the scalar
    booleans) and ``memtype`` array (MEMTYPE_AUTO: the automatic memtype), ``threads`` 1-4,
    each element vs pykvmmu.ref.spte.make_spte with the booleans the bits select."""
    from .. import spte as S
    from ..ref import spte as R
    bits = {n: getattr(S, "MK_" + m) for n, m in zip(_MK, ("PREFETCH", "SYNCHRONIZING", "HOST_WRITABLE",
                                                           "HOST_MMIO", "AD_DISABLED", "WRPROT_ONLY",
                                                           "UNSYNC_FAILS", "NX_HUGE"))}
    allb = sum(bits.values())
    fl = [fi.uint(8) & allb for _ in pfns]
    mts = [fi.pick((None, 0x00, 0x30, 0x70, 0x08, 0x78)) for _ in pfns]
    if fi.chance(3):                # no memtype array: from 16384 elements the table path
        mts = [None] * len(pfns)
    m = 16384 + fi.int_in(0, 70) if fi.int_in(0, 15) == 15 else batch_len(fi, len(pfns))
    threads = fi.pick((None, 1, 2, 3, 4))
    if threads and fi.int_in(0, 7) == 7:    # enough elements for ``threads`` parts (pykvmmu._par)
        from .._par import MIN_PART
        m = threads * MIN_PART + fi.int_in(0, 70)
    rest = {k: v for k, v in kw.items() if k != "memtype"}
    scalar = {k: (v if v is not None else (not cfg.ad_enabled if k == "ad_disabled" else cfg.nx_huge_pages))
              for k, v in rest.items() if k in bits}
    mt_arr = np.array([S.MEMTYPE_AUTO if t is None else t for t in mts], np.uint8)
    got = S.make_spte_batch(isa_cfg(fi, cfg), rep(np.array(pfns, np.uint64), m), old_spte=old,
                            flags=rep(np.array(fl, np.uint8), m),
                            memtype=None if all(t is None for t in mts) else rep(mt_arr, m),
                            threads=threads, **rest)
    want = []
    for p, f, t in zip(pfns, fl, mts):
        eff = {**rest, **{k: scalar[k] or bool(f & b) for k, b in bits.items()}}
        want.append(R.make_spte(cfg, p, old_spte=old, memtype=t, **eff)[0])
    expect_same_batch("make_spte_batch (flags and memtype arrays)", got, want, _cid(cfg), pfns, fl, mts, rest,
                      threads)
    fi.feature("spte.make_flags", threads, m > 200, m > 200 and threads, all(t is None for t in mts))
