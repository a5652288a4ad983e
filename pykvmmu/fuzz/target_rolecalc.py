"""Fuzz target ``rolecalc``: the role computations (root roles, child roles, quadrants,
nested-EPT collisions).  They have no reference twin, so every check is a property read
through the reference's field layout (``pykvmmu.ref.role.unpack_role``) or a relation to
another routine: what a field must hold, what an input must not change, a geometric
quadrant, the examples find_collisions names."""
from __future__ import annotations

import functools

from .base import FuzzInput, check, expect_same, target

#: fields a derived role (child, get_page) carries over from the role it is derived from
_KEPT = ("nxe", "efer_nx", "cr0_wp", "smep_andnot_wp", "smap_andnot_wp", "smm", "guest_mode",
         "ad_disabled", "is_mirror")


def _vcpu(fi: FuzzInput):
    from ..role import VcpuState
    mode = fi.pick(("long", "la57", "pae", "32", "real"))
    kw = dict(cr0_wp=fi.bool(), efer_nx=fi.bool(), cr4_smep=fi.bool(), cr4_smap=fi.bool(),
              cr4_pke=fi.bool(), cr4_pse=fi.bool(), smm=fi.chance(3), guest_mode=fi.chance(3),
              maxphyaddr=fi.pick((0, 0, 36, 39, 46, 48, 52)))
    if mode == "la57":
        return VcpuState.long_mode(cr4_la57=True, **kw)
    if mode == "real":
        kw.update(cr0_wp=False, efer_nx=False)
        return VcpuState.real_mode(**kw)
    return {"long": VcpuState.long_mode, "pae": VcpuState.pae, "32": VcpuState.nonpae32}[mode](**kw)


def _fields(era: str, w: int) -> dict:
    from ..ref import role as RR
    check(not w & ~RR.used_mask(RR.base_fields(era)), "role word has bits outside the era's fields",
          era, w)
    return RR.unpack_role(era, w)


def _kept(era: str, got: dict, want: dict, what: str, *details) -> None:
    for n in _KEPT:
        if n in got:
            expect_same(f"{what}: field {n} carried over", got[n], want[n], era, *details)


def _quadrant(gaddr: int, level: int) -> int:
    """Which part of a 1024-entry (4-byte gpte) guest table at ``level`` a 512-entry shadow
    page shadows: the guest table spans 2^(12+10*level) bytes, the shadow page 2^(12+9*level)."""
    return (gaddr % (1 << (12 + 10 * level))) >> (12 + 9 * level)


@functools.lru_cache(maxsize=None)
def _collisions(era: str) -> dict:
    from ..role import find_collisions
    return find_collisions(era)


@target("rolecalc")
def fuzz_rolecalc(fi: FuzzInput) -> None:
    """Role computations (no reference twin: properties through pykvmmu.ref.role's layout):
    kvm_calc_tdp_mmu_root_page_role / kvm_calc_shadow_mmu_root_page_role / shadow_root_sp_roles /
    kvm_calc_shadow_ept_root_page_role / kvm_calc_shadow_npt_root_page_role field values and
    the register bits they must ignore, kvm_mmu_get_page_role / kvm_mmu_child_role /
    tdp_mmu_child_role carried-over fields and the geometric quadrant (quadrant_for_gaddr),
    child of a get_page role == get_page one level down, find_collisions' examples reproduce
    their word and every collision of a drawn state is listed."""
    from .. import role as R
    from ..ref import role as RR
    era = fi.pick(list(R.ERAS))
    e = R.get_era(era)
    op = fi.int_in(0, 5)
    v = _vcpu(fi)
    fi.feature("rolecalc", op, era)
    if op == 0:                                     # TDP root
        tdp_level = fi.pick((4, 5))
        ad = fi.bool()
        mirror = e.has("is_mirror") and fi.chance(3)
        w = R.kvm_calc_tdp_mmu_root_page_role(era, v, tdp_level, ad, mirror)
        f = _fields(era, w)
        want = dict(level=tdp_level, direct=1, access=7, smm=int(v.smm), quadrant=0, invalid=0,
                    guest_mode=int(v.guest_mode), ad_disabled=int(not ad), is_mirror=int(mirror),
                    smep_andnot_wp=0, smap_andnot_wp=0)
        for n, x in want.items():
            if n in f:
                expect_same(f"tdp root field {n}", f[n], x, era, v, tdp_level, ad, mirror)
        other = v.replace(cr4_smep=not v.cr4_smep, cr4_smap=not v.cr4_smap, cr4_pke=not v.cr4_pke,
                          cr4_pse=not v.cr4_pse, maxphyaddr=fi.pick((0, 40, 52)))
        expect_same("tdp root depends on SMEP/SMAP/PKE/PSE/MAXPHYADDR",
                    R.kvm_calc_tdp_mmu_root_page_role(era, other, tdp_level, ad, mirror), w, era, v)
        fi.feature("rolecalc.tdp", tdp_level, ad, mirror)
    elif op == 1:                                   # shadow root and its SP roles
        w = R.kvm_calc_shadow_mmu_root_page_role(era, v)
        f = _fields(era, w)
        lvl = v.paging_level
        check(f["level"] >= 3 and (lvl < 3 or f["level"] == lvl), "shadow root level", era, v, w)
        expect_same("shadow root direct", f["direct"], int(not v.cr0_pg), era, v)
        expect_same("shadow root smm", f["smm"], int(v.smm), era, v)
        if "guest_mode" in f:
            expect_same("shadow root guest_mode", f["guest_mode"], int(v.guest_mode), era, v)
        if v.cr0_wp:        # *_andnot_wp: SMEP/SMAP only count with CR0.WP clear
            expect_same("shadow root depends on SMEP/SMAP with CR0.WP set", R.kvm_calc_shadow_mmu_root_page_role(
                era, v.replace(cr4_smep=not v.cr4_smep, cr4_smap=not v.cr4_smap)), w, era, v)
        expect_same("shadow root depends on PKE/MAXPHYADDR", R.kvm_calc_shadow_mmu_root_page_role(
            era, v.replace(cr4_pke=not v.cr4_pke, maxphyaddr=fi.pick((0, 40, 52)))), w, era, v)
        roots = R.shadow_root_sp_roles(era, v)
        if v.cr0_pg and v.efer_lma:
            expect_same("shadow_root_sp_roles (long mode)", roots, [w], era, v)
        else:
            check(len(roots) == 4, "shadow_root_sp_roles: not four PAE roots", era, v, roots)
            g32 = v.cr0_pg and not v.cr4_pae
            for i, r in enumerate(roots):
                fr = _fields(era, r)
                expect_same(f"PAE root {i} level", fr["level"], 2, era, v)
                expect_same(f"PAE root {i} quadrant", fr["quadrant"], _quadrant(i << 30, 2) if g32 else 0,
                            era, v)
                _kept(era, fr, f, f"PAE root {i}", v)
        fi.feature("rolecalc.shadow", lvl, len(roots))
    elif op == 2:                                   # kvm_mmu_get_page_role, quadrant_for_gaddr
        base = fi.pick((R.kvm_calc_shadow_mmu_root_page_role(era, v),
                        R.kvm_calc_tdp_mmu_root_page_role(era, v), fi.uint(32) & e.base.used_mask))
        level, direct, access = fi.int_in(1, 5), fi.bool(), fi.int_in(0, 7)
        gaddr = fi.u64([0, 1 << 21, 1 << 30, 3 << 30, (1 << 32) - 1])
        g32 = fi.pick((None, False, True))
        if g32 is not False and level > 2:
            # 4-byte gptes: SPs of levels 1-2 only (quadrant:2 holds at most level bits)
            g32 = False
        expect_same("quadrant_for_gaddr", R.quadrant_for_gaddr(gaddr, level), _quadrant(gaddr, level),
                    gaddr, level)
        w = R.kvm_mmu_get_page_role(era, base, level=level, direct=direct, access=access, gaddr=gaddr,
                                    guest_32bit=g32)
        f, fb = _fields(era, w), RR.unpack_role(era, base)
        for n, x in dict(level=level, direct=int(direct), access=access, invalid=0).items():
            expect_same(f"get_page role field {n}", f[n], x, era, base, level, direct, access)
        _kept(era, f, fb, "get_page role", base, level, direct)
        if g32 is not None:
            expect_same("get_page role quadrant", f["quadrant"], _quadrant(gaddr, level) if g32 else 0,
                        era, base, level, gaddr, g32)
        else:
            check(w in [R.kvm_mmu_get_page_role(era, base, level=level, direct=direct, access=access,
                                                gaddr=gaddr, guest_32bit=b) for b in (False, True)],
                  "get_page role (guest_32bit=None) is neither the 32-bit nor the 64-bit role", era, base, w)
        if not direct:
            expect_same("get_page role bit 4 of a shadowed page", f[e.bit4], fb[e.bit4], era, base, level)
        if level == 2 and g32 is not None and not fb.get("passthrough"):    # a level-1 child, two ways
            access2, direct2 = fi.int_in(0, 7), direct or fi.bool()     # a direct SP's children are direct
            child = R.kvm_mmu_child_role(era, w, direct=direct2, access=access2,
                                         index=(gaddr >> 21) & 511, guest_32bit=g32)
            down = R.kvm_mmu_get_page_role(era, base, level=1, direct=direct2, access=access2, gaddr=gaddr,
                                           guest_32bit=g32)
            expect_same("kvm_mmu_child_role(get_page role) != get_page role one level down", child, down,
                        era, base, gaddr, g32)
        fi.feature("rolecalc.get_page", level, direct, g32)
    elif op == 3:                                   # kvm_mmu_child_role
        parent = fi.uint(32) & e.base.used_mask if fi.bool() else R.kvm_calc_shadow_mmu_root_page_role(era, v)
        fp = RR.unpack_role(era, parent)
        if fp["level"] <= 1:
            fp["level"] = fi.int_in(2, 5)
            parent = RR.pack_role(era, **fp)
        direct, access, index = fi.bool(), fi.int_in(0, 7), fi.int_in(0, 511)
        g32 = fi.pick((None, False, True))
        w = R.kvm_mmu_child_role(era, parent, direct=direct, access=access, index=index, guest_32bit=g32)
        f = _fields(era, w)
        for n, x in dict(level=fp["level"] - 1, direct=int(direct), access=access, passthrough=0).items():
            if n in f:
                expect_same(f"child role field {n}", f[n], x, era, parent, direct, access)
        _kept(era, f, fp, "child role", parent)
        expect_same("child role invalid", f["invalid"], fp["invalid"], era, parent)
        if g32 is False or g32 and fp["level"] == 2:
            # a 32-bit guest's page table is two level-1 shadow pages; parent entry ``index``
            # maps the 2 MiB at offset index << 21 (the only non-root child of a 32-bit guest)
            expect_same("child role quadrant", f["quadrant"], _quadrant(index << 21, 1) if g32 else fp["quadrant"],
                        era, parent, index, g32)
        if not direct:
            expect_same("child role bit 4 of a shadowed page", f[e.bit4], fp[e.bit4], era, parent)
        fi.feature("rolecalc.child", fp["level"], direct, g32)
    elif op == 4:                                   # tdp_mmu_child_role
        parent = R.kvm_calc_tdp_mmu_root_page_role(era, v, fi.pick((4, 5)), fi.bool())
        fp = RR.unpack_role(era, parent)
        for _ in range(fi.int_in(0, 3)):
            if fp["level"] <= 2:
                break
            parent = R.tdp_mmu_child_role(era, parent)
            fp = RR.unpack_role(era, parent)
        w = R.tdp_mmu_child_role(era, parent)
        f = _fields(era, w)
        expect_same("tdp_mmu_child_role", f, {**fp, "level": fp["level"] - 1}, era, parent)
        fi.feature("rolecalc.tdp_child", fp["level"])
    else:                                           # nested EPT / NPT roots, find_collisions
        if e.ept_rule is None:
            return
        ad, xo, lvl = fi.bool(), fi.bool(), fi.pick((4, 5))
        cr = R.kvm_calc_shadow_ept_root_page_role(era, v, accessed_dirty=ad, execonly=xo, level=lvl)
        f = _fields(era, cr.base)
        for n, x in dict(guest_mode=1, access=7, ad_disabled=int(not ad), direct=0, quadrant=0,
                         invalid=0).items():
            expect_same(f"nested EPT root field {n}", f[n], x, era, v, ad, xo, lvl)
        check(f["level"] in (4, lvl), "nested EPT root level", era, v, lvl, f["level"])
        tdp = fi.pick((4, 5))
        fn = _fields(era, R.kvm_calc_shadow_npt_root_page_role(era, v, tdp))
        for n, x in dict(guest_mode=1, level=tdp, smm=int(v.smm), invalid=0).items():
            expect_same(f"nested NPT root field {n}", fn[n], x, era, v, tdp)
        col = _collisions(era)
        if col:
            w = fi.pick(sorted(col))
            (_, ve, ade), other = col[w]
            expect_same("find_collisions: nested EPT example",
                        R.kvm_calc_shadow_ept_root_page_role(era, ve, accessed_dirty=ade).base, w, era, ve)
            if other[0] == "L2 shadow root":
                check(w in R.shadow_root_sp_roles(era, other[1]), "find_collisions: L2 example", era, w)
            else:
                npt = R.kvm_calc_shadow_npt_root_page_role(era, other[1])
                mask = e.base.field("ad_disabled").mask
                expect_same("find_collisions: nested NPT example", npt & ~mask, w & ~mask, era, other[1])
        # a state of find_collisions' space: its nested-EPT word collides iff listed
        from ..role import VcpuState
        s = fi.pick((VcpuState.long_mode, VcpuState.pae, VcpuState.nonpae32))(
            cr0_wp=fi.bool(), efer_nx=fi.bool(), cr4_smep=fi.bool(), cr4_smap=fi.bool())
        ew = R.kvm_calc_shadow_ept_root_page_role(era, s, accessed_dirty=ad).base
        l2 = R.shadow_root_sp_roles(era, s.replace(guest_mode=True))
        if ew in l2:
            check(ew in col, "find_collisions misses a collision", era, s, ad, ew)
        fi.feature("rolecalc.nested", len(col) > 0, ew in col)
