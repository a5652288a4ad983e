"""Fuzz target ``rmp``: the SEV-SNP RMP (stateful)."""
from __future__ import annotations

import numpy as np

from .base import FuzzInput, check, expect_same, target


_RMP_NPFN = 2 * 512 + 37


@target("rmp", stateful=True, max_len=512)
def fuzz_rmp(fi: FuzzInput) -> None:
    """SEV-SNP RMP, stateful: a sequence of RMPUPDATE / PSMASH / PVALIDATE / RMPADJUST /
    lock toggles / host and guest checks on a small table, C core vs pykvmmu.ref.rmp after
    every step (return codes, exit info, every entry), failed instructions change nothing,
    and the architectural invariants of the table hold."""
    _rmp_session(fi, _RMP_NPFN, False)


#: table sizes rmpx draws from (tiny, not multiples of 512, a few 2M regions)
_RMPX_SIZES = (1, 2, 7, 100, 511, 512, 513, 600, 1023, 1024, 1025, 1061, 1536, 2048 + 5)


@target("rmpx", stateful=True, max_len=512)
def fuzz_rmpx(fi: FuzzInput) -> None:
    """The rmp target's sequence on a table of a drawn size (1 to 2053 pfns, tiny and not
    multiples of 512), plus the fault handlers and dumps, each vs pykvmmu.ref.rmp:
    page_state_raw vs state_of on raw words, sev_handle_rmp_fault vs npf_rmp (action and the
    table after its PSMASH), handle_user_rmp_page_fault vs user_pf,
    sev_private_max_mapping_level vs max_mapping_level, dump_rmpentry_lines -> decode_dump
    gives back the reference's entries, kvm_max_private_mapping_level is the largest level
    the bounds allow."""
    npfn = fi.pick(_RMPX_SIZES) if fi.bool() else fi.int_in(1, 2100)
    fi.feature("rmpx.size", npfn % 512 == 0, min(npfn // 512, 3))
    _rmp_session(fi, npfn, True)


def _rmp_session(fi: FuzzInput, npfn: int, extended: bool) -> None:
    from ..ref import rmp as ref
    from ..rmp import BOOKKEEPING, Rc, RmpFlags, RmpTable
    flags = fi.uint(8) & int(sum(f for f in RmpFlags))
    t = RmpTable(np.zeros(BOOKKEEPING + 16 * npfn, np.uint8), flags=flags)
    r = ref.RefRmp(npfn, flags)
    special = [0, 1, 2, 300, 511, 512, 513, 777, 1023, 1024, 1025, npfn - 1, npfn, npfn + 3]

    def pfn_any():
        if fi.chance(4):
            return fi.int_in(0, npfn + 8)
        return fi.pick(special)

    def pick_owned(pfn):
        owned = np.nonzero(t.entries[:, 0] & np.uint64(1))[0]
        if not fi.chance(4) and owned.size:
            return int(owned[fi.int_in(0, owned.size - 1)])
        return pfn

    def matched(pfn, size):
        if r.covered(pfn) and r.governing(pfn)[1]:
            return pfn - pfn % 512, 1
        return pfn, 0 if size == 1 else size

    def guest_args(pfn, own_asid, own_gfn, asid, gfn):
        if r.covered(pfn):
            g, in2m = r.governing(pfn)
            lo = r.e[g][0]
            if own_asid:
                asid = ref.field(lo, "asid")
            if own_gfn:
                gfn = ref.field(lo, "gpa") + (pfn % 512 if in2m else 0)
        return asid, gfn

    def compare(rc_c, rc_r, before, what):
        expect_same(f"{what} rc", int(rc_c), rc_r, flags)
        fi.feature("rmp", what, Rc(rc_r).name)
        mine = t.entries
        theirs = np.array(r.e, dtype=np.uint64)
        bad = np.nonzero((mine != theirs).any(axis=1))[0]
        check(bad.size == 0, f"{what}: entry differs from the reference",
              *(() if not bad.size else (int(bad[0]), mine[bad[0]].tolist(), theirs[bad[0]].tolist())))
        if rc_r != ref.SUCCESS:
            check(np.array_equal(before, mine), f"{what}: failed instruction changed the table")

    steps = 0
    while fi.remaining() and steps < 64:
        steps += 1
        op = fi.int_in(0, 9 if extended else 5)
        if op >= 6:
            _rmp_extra(fi, op, t, r, pfn_any, pick_owned, compare)
        elif op == 0:
            pfn = pfn_any()
            gpa = fi.pick([0, 0x1000, 0x200000, 0x400000, 0x401000, 0x123, 1 << 51])
            assigned = fi.pick([0, 1, 1, 2])
            pagesize = fi.pick([0, 1, 1])
            immutable = fi.pick([0, 0, 0, 1])
            asid = fi.pick([0, 1, 2, 0x3FF, 0x400])
            if not fi.chance(4):
                assigned = min(assigned, 1)
                asid = (asid % 2 + 1) if assigned else 0
                gpa = (gpa >> 21 << 21) % (1 << 40)
            before = t.entries.copy()
            rc_c = t.rmpupdate(pfn, gpa=gpa, assigned=assigned, pagesize=pagesize,
                               immutable=immutable, asid=asid)
            compare(rc_c, r.rmpupdate(pfn, gpa, assigned, pagesize, immutable, asid), before, "rmpupdate")
        elif op == 1:
            pfn = pfn_any()
            heads = [h for h in range(0, npfn - 511, 512) if r.is_2m(h)]
            if fi.bool() and heads:
                pfn = fi.pick(heads)
            before = t.entries.copy()
            compare(t.psmash(pfn), r.psmash(pfn), before, "psmash")
        elif op == 2:
            pfn = pick_owned(pfn_any())
            own_asid, own_gfn = not fi.chance(4), not fi.chance(4)
            asid = fi.pick([0, 1, 2, 0x3FF, 0x400])
            gfn = fi.pick([0, 1, 0x200, 0x201])
            vmpl = fi.pick([0, 0, 0, 0, 1])
            size = fi.pick([0, 0, 1, 2])
            validate = fi.pick([0, 1, 1])
            size = size if size < 2 or own_gfn else 0
            if fi.bool():
                pfn, size = matched(pfn, size)
            if fi.chance(4):
                own_asid = own_gfn = True
                vmpl, validate = 0, 1
            asid, gfn = guest_args(pfn, own_asid, own_gfn, asid, gfn)
            before = t.entries.copy()
            c = t.pvalidate(pfn, asid=asid, gfn=gfn, size=size, validate=validate, vmpl=vmpl)
            rc_r, ei_r = r.pvalidate(pfn, asid, vmpl, gfn, size, validate)
            expect_same("pvalidate exitinfo", c.exitinfo, ei_r, pfn)
            compare(c.rc, rc_r, before, "pvalidate")
        elif op == 3:
            pfn = pick_owned(pfn_any())
            valid = np.nonzero(t.entries[:, 0] >> np.uint64(62) & np.uint64(1))[0]
            if fi.bool() and valid.size:
                pfn = int(valid[fi.int_in(0, valid.size - 1)])
            size = fi.pick([0, 1])
            if fi.bool():
                pfn, size = matched(pfn, size)
            own_asid, own_gfn = not fi.chance(4), not fi.chance(4)
            asid, gfn = guest_args(pfn, own_asid, own_gfn, fi.pick([0, 1, 2, 0x3FF, 0x400]),
                                   fi.pick([0, 0x200]))
            vmpl = fi.pick([0, 0, 0, 1, 3])
            tvmpl = fi.pick([0, 1, 1, 2, 3, 4])
            perms = fi.pick([0, 1, 3, 3, 0xF, 0x1F, 0x20])
            vmsa = fi.bool()
            before = t.entries.copy()
            c = t.rmpadjust(pfn, asid=asid, gfn=gfn, target_vmpl=tvmpl, perms=perms, size=size,
                            vmsa=vmsa, vmpl=vmpl)
            rc_r, ei_r = r.rmpadjust(pfn, asid, vmpl, gfn, size, tvmpl, perms, int(vmsa))
            expect_same("rmpadjust exitinfo", c.exitinfo, ei_r, pfn)
            compare(c.rc, rc_r, before, "rmpadjust")
        elif op == 4:
            pfn = pfn_any()
            lock = fi.bool()
            if r.covered(pfn):
                t.set_in_use(pfn, lock)
                r.e[pfn][0] = ref.put(r.e[pfn][0], "lock", int(lock))
        else:
            pfn = pick_owned(pfn_any())
            level, npt = fi.pick([1, 2, 3]), fi.pick([1, 2])
            kind, c_bit, snp = fi.int_in(0, 4), fi.bool(), fi.bool()
            vmpl, user, own = fi.int_in(0, 3), fi.bool(), fi.bool()
            h = t.host_check(pfn, level, user=user)
            expect_same("host_check", (int(h.check), h.error_code), r.host_check(pfn, level, user), pfn, level)
            asid, gfn = guest_args(pfn, own, own, 1, 0)
            g = t.guest_check(pfn, gfn, asid=asid, vmpl=vmpl, npt_level=npt, kind=kind, c_bit=c_bit,
                              snp_active=snp, user=user)
            expect_same("guest_check", (int(g.check), g.fault, g.error_code),
                        r.guest_check(pfn, gfn, asid, vmpl, npt, kind, c_bit, snp, user), pfn, gfn)
            fi.feature("rmp.check", g.check.name)
            if r.covered(pfn):
                expect_same("snp_lookup_rmpentry", t.snp_lookup_rmpentry(pfn), tuple(r.lookup(pfn)[:2]), pfn)
                arr = np.array([pfn], np.uint64)
                lb = t.lookup_batch(arr)
                check(lb is not None, "lookup_batch returned None")
            expect_same("page_state", int(t.page_state(pfn)), r.page_state(pfn), pfn)
    # architectural invariants of the final table
    lo = t.entries[:, 0]
    full = (npfn // 512) * 512
    blocks = lo[:full].reshape(-1, 512)
    assigned = (blocks & 1).astype(bool)
    head_2m = (blocks[:, 0] & 3) == 3
    check(assigned[head_2m, 1:].all(), "2M assigned entry with an unassigned 4K entry under it")
    count = (blocks[:, 0] >> np.uint64(3)) & np.uint64(0x1FF)
    small = ~head_2m
    check(np.array_equal(count[small], assigned[small, 1:].sum(axis=1)),
          "head sub-page count != assigned 4K entries")
    hv = (lo & np.uint64(1)) == 0
    check(not ((lo[hv] >> np.uint64(51)) & np.uint64(0x3FF)).any(), "hypervisor-owned entry with an ASID")
    check(not ((lo[hv] >> np.uint64(62)) & np.uint64(1)).any(), "hypervisor-owned entry validated")


def _rmp_extra(fi: FuzzInput, op: int, t, r, pfn_any, pick_owned, compare) -> None:
    """rmpx's operations beyond the instructions (see :func:`fuzz_rmpx`)."""
    from ..ref import rmp as ref
    from ..rmp import page_state_raw
    from ..rmp.dump import decode_dump, dump_rmpentry_lines
    from ..rmp.faults import (handle_user_rmp_page_fault, kvm_max_private_mapping_level,
                              sev_handle_rmp_fault, sev_private_max_mapping_level)
    if op == 6:
        pfn = pick_owned(pfn_any())
        lo = int(t.entries[pfn, 0]) if r.covered(pfn) and fi.bool() else fi.u64()
        if fi.chance(3):
            lo ^= 1 << fi.int_in(0, 63)
        st = page_state_raw(lo)
        expect_same("page_state_raw", int(st), ref.state_of(lo), lo)
        fi.feature("rmpx.state", st.name)
        snp = not fi.chance(4)
        expect_same("sev_private_max_mapping_level", sev_private_max_mapping_level(t, pfn, snp=snp),
                    r.max_mapping_level(pfn, snp), pfn, snp)
        ml, order, hook = fi.int_in(1, 3), fi.pick((0, 1, 8, 9, 10, 17, 18, 19, 30, 255)), fi.int_in(0, 3)
        # a level-L mapping needs a folio of 512^(L-1) pages; hook 0 sets no bound
        fits = [lv for lv in range(1, ml + 1) if 9 * (lv - 1) <= order and (hook == 0 or lv <= hook)]
        expect_same("kvm_max_private_mapping_level", kvm_max_private_mapping_level(ml, order, hook),
                    max(fits, default=1), ml, order, hook)
    elif op == 7:
        pfn = pick_owned(pfn_any())
        heads = [h for h in range(0, r.n - 511, 512) if r.is_2m(h)]
        if heads and fi.bool():
            pfn = fi.pick(heads) + fi.int_in(0, 511)
        gpa = fi.int_in(0, 1 << 20) << 12 | fi.uint(12)
        private = not fi.chance(4)
        before = t.entries.copy()
        got = sev_handle_rmp_fault(t, gpa, fi.u64(), pfn=pfn, is_private=private)
        want = r.npf_rmp(gpa, pfn, private)
        expect_same("sev_handle_rmp_fault action", got.action, want, gpa, pfn, private)
        compare(0, 0, before, "sev_handle_rmp_fault")
        if got.zap is not None:
            expect_same("sev_handle_rmp_fault zap", got.zap, (gpa >> 12, (gpa >> 12) + 512), gpa)
        fi.feature("rmpx.npf", want)
    elif op == 8:
        present, level = not fi.chance(5), fi.pick((1, 1, 2, 3))
        pfn = pick_owned(pfn_any())
        if level > 1 and fi.bool():
            pfn &= ~((1 << (9 * (level - 1))) - 1)
        address = fi.int_in(0, 1 << 30) << 12 | fi.uint(12) if fi.bool() else fi.u64()
        uf = handle_user_rmp_page_fault(t, pte_present=present, pte_pfn=pfn, level=level, address=address)
        want = r.user_pf(present, pfn, level, address)
        expect_same("handle_user_rmp_page_fault", (uf.action, uf.pfn, uf.rmp_level), want,
                    present, pfn, level, address)
        fi.feature("rmpx.user_pf", want[0])
    else:
        pfn = pick_owned(pfn_any())
        ents = decode_dump("\n".join(dump_rmpentry_lines(t, pfn)))
        if not r.covered(pfn):
            check([(x.kind, x.pfn) for x in ents] == [("error", pfn)], "dump of an uncovered pfn", pfn, ents)
        elif ref.field(r.e[pfn][0], "assigned"):
            expect_same("dump_rmpentry of an assigned pfn", [(x.kind, x.pfn, x.lo, x.hi) for x in ents],
                        [("entry", pfn, *r.e[pfn])], pfn)
        else:
            h = r.head(pfn)
            check(ents and (ents[0].kind, ents[0].pfn, ents[0].lo, ents[0].hi) == ("region-start", pfn, h, h + 512),
                  "dump of an unassigned pfn: region line", pfn, ents[:1])
            expect_same("dump_rmpentry region", [(x.kind, x.pfn, x.lo, x.hi) for x in ents[1:]],
                        [("region", p, *r.e[p]) for p in range(h, min(h + 512, r.n)) if any(r.e[p])], pfn)
        fi.feature("rmpx.dump", ents[0].kind if ents else None)
