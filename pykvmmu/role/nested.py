"""Nested-EPT identity and impossible role words: ``is_ept_sp``, ``identify_nested_ept``,
``check_role_word`` and ``find_collisions``."""
from __future__ import annotations

import itertools
from typing import Iterable

from .._batch import uint
from .._check import choice
from .compute import (kvm_calc_shadow_ept_root_page_role, kvm_calc_shadow_npt_root_page_role, _MEMO, _memo_put,
                      shadow_root_sp_roles, VcpuState)
from .eras import EptRule, get_era, _require, RoleEra
from .packing import gpte_bytes


# ---------------------------------------------------------------------------
# Nested-EPT identification and the impossible-word checker
# ---------------------------------------------------------------------------

def is_ept_sp(era, word: int) -> bool:
    """v5.1-v5.13 is_ept_sp(): cr0_wp && smap_andnot_wp (an impossible CPU combination)."""
    era = get_era(era)
    _require(era, era.ept_rule == EptRule.MARKER, "is_ept_sp (v5.1-v5.13 only)")
    f = era.base.unpack(uint("word", word, 32))
    return bool(f["cr0_wp"] and f["smap_andnot_wp"])


def identify_nested_ept(era, word: int) -> tuple:
    """How the era could tell a nested-EPT SP from ``word``: (verdict, reason).

    verdict is "nested-ept", "not-nested-ept" or "ambiguous"."""
    era = get_era(era)
    word = uint("word", word, 32)
    f = era.base.unpack(word)
    if not f.get("guest_mode", 0):
        return ("not-nested-ept", "guest_mode=0 (or the era has no guest_mode bit)")
    if f["direct"]:
        return ("not-nested-ept", "direct page")
    if era.ept_rule == EptRule.MARKER:
        if f["cr0_wp"] and f["smap_andnot_wp"]:
            return ("nested-ept", "is_ept_sp: cr0_wp=1 with smap_andnot_wp=1 (v5.1-v5.13 marker)")
        return ("not-nested-ept", "no cr0_wp+smap_andnot_wp marker")
    if era.ept_rule == EptRule.CLEAN:
        legacy = [n for n in (era.nx, "cr0_wp", "smep_andnot_wp", "smap_andnot_wp") if f[n]]
        if legacy:
            return ("not-nested-ept", f"nested-EPT roles clear {', '.join(legacy)}")
        if gpte_bytes(era, word) == 4:
            return ("not-nested-ept", "4-byte gptes")
        if f.get("passthrough"):
            return ("not-nested-ept", "passthrough (nested NPT only)")
        why = ("guest_mode with all paging bits clear; a nested-NPT SP for an L1 with CR0.WP=0, "
               "EFER.NX=0 has the same bits (VMX and SVM never share a VM)")
        return ("ambiguous", why)
    return ("ambiguous", "no marker in this era: nested-EPT roles inherit L1's TDP paging bits")


_SP_KIND = ("sp", "root", "cpu")


def check_role_word(era, word: int, kind: str = "sp") -> list:
    """Rules a role word breaks, as a list of (code, message); [] when it is possible.

    kind: "sp" (a shadow page's role), "root" (a root role), "cpu" (a kvm_cpu_role base)."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if word.__class__ is int and kind.__class__ is str:       # memoised: compute._memo_put
        key = (era, "check", word, kind)
        r = _MEMO.get(key)
        if r is None:
            r = _memo_put(key, tuple(_check_role_word(era, word, kind)))
        return list(r)
    return _check_role_word(era, word, kind)


def _check_role_word(era, word: int, kind: str = "sp") -> list:
    """The computation of :func:`check_role_word` (full checks, no memo)."""
    era = get_era(era)
    kind = choice("kind", kind, _SP_KIND)
    word = uint("word", word, 32)
    out = []
    extra = word & ~era.base.used_mask
    if extra:
        out.append(("reserved", f"bits {extra:#x} are outside every field of {era.name}"))
    f = era.base.unpack(word)
    lvl = f["level"]
    if lvl > 5 or (lvl == 0 and kind != "cpu"):
        out.append(("level", f"level {lvl}: a shadow page is level 1..5"))
    if kind == "cpu" and lvl == 0 and not f["direct"]:
        out.append(("level", "cpu role with level 0 (CR0.PG=0) must be direct"))
    four = gpte_bytes(era, word) == 4
    if f["quadrant"]:
        if era.bit4 == "has_4_byte_gpte" and not four:
            out.append(("quadrant", "quadrant without has_4_byte_gpte"))
        elif era.bit4 != "has_4_byte_gpte" and not four and not f["direct"]:
            out.append(("quadrant", f"quadrant with 8-byte gptes ({era.bit4}=1)"))
        if lvl == 1 and f["quadrant"] > 1:
            out.append(("quadrant", f"quadrant {f['quadrant']} at level 1 (only 0 or 1)"))
        if lvl > 2:
            out.append(("quadrant", f"quadrant at level {lvl} (only levels 1 and 2)"))
    if era.bit4 == "has_4_byte_gpte" and four and lvl > 2:
        out.append(("gpte", f"4-byte gptes at level {lvl}: 32-bit paging has 2 levels"))
    if kind == "root" and f["direct"] and era.bit4 == "has_4_byte_gpte" and four:
        out.append(("gpte", "direct root with has_4_byte_gpte (mmu_alloc_root WARNs)"))
    if f["direct"] and era.direct_bit4 is not None and f[era.bit4] != era.direct_bit4 and kind == "sp":
        out.append(("direct-bit4", f"direct SP with {era.bit4}={f[era.bit4]}: kvm_mmu_get_page "
                    f"forces {era.direct_bit4}, so no stored SP has this word"))
    if f["cr0_wp"] and f["smep_andnot_wp"]:
        out.append(("impossible", "cr0_wp=1 with smep_andnot_wp=1"))
    if f["cr0_wp"] and f["smap_andnot_wp"]:
        if era.ept_rule == EptRule.MARKER and f.get("guest_mode") and not f["direct"]:
            pass  # the v5.1-v5.13 nested-EPT marker
        else:
            out.append(("impossible", "cr0_wp=1 with smap_andnot_wp=1"
                        + (" (the nested-EPT marker needs guest_mode=1, direct=0)"
                           if era.ept_rule == EptRule.MARKER else
                           " (the v5.1-v5.13 nested-EPT marker; not produced in this era)")))
    if f.get("passthrough") and not f.get("guest_mode"):
        out.append(("passthrough", "passthrough roots exist only for nested NPT (guest_mode=1)"))
    if f.get("passthrough") and kind == "sp" and lvl < 4:
        out.append(("passthrough", f"passthrough at level {lvl}: only a 5-level host root"))
    if f.get("is_mirror") and not f["direct"]:
        out.append(("mirror", "is_mirror on an indirect page (mirror roots are TDP MMU roots)"))
    if f["smm"] > 1:
        out.append(("smm", f"smm={f['smm']}: only address spaces 0 and 1 exist"))
    if f["invalid"] and kind != "sp":
        out.append(("invalid", "invalid is never set in a computed role"))
    return out


def _states(smm_values=(False,)) -> Iterable[VcpuState]:
    for mode, wp, nx, smep, smap, smm in itertools.product(
            ("long", "pae", "32"), (False, True), (False, True), (False, True), (False, True),
            smm_values):
        base = {"long": VcpuState.long_mode, "pae": VcpuState.pae, "32": VcpuState.nonpae32}[mode]
        yield base(cr0_wp=wp, efer_nx=nx, cr4_smep=smep, cr4_smap=smap, smm=smm)


def find_collisions(era) -> dict:
    """Role words that both a nested-EPT root and a non-nested-EPT guest-mode root can have.

    Enumerates L1/L2 register states (paging mode, CR0.WP, EFER.NX, SMEP, SMAP), A/D on/off,
    and compares every nested-EPT root word with every L2 shadow root word (KVM shadowing L2
    because L1 does not use EPT) and, for v5.19+, nested-NPT roots.  Returns
    ``{word: (ept_example, other_example)}``."""
    era = get_era(era)
    _require(era, era.ept_rule is not None, "find_collisions (v4.20+)")
    ept: dict[int, tuple] = {}
    for v in _states():
        for ad in (False, True):
            w = kvm_calc_shadow_ept_root_page_role(era, v, accessed_dirty=ad).base
            ept.setdefault(w, ("nested EPT", v, ad))
    other: dict[int, tuple] = {}
    for v in _states():
        l2 = v.replace(guest_mode=True)
        for w in shadow_root_sp_roles(era, l2):
            other.setdefault(w, ("L2 shadow root", l2))
        if v.efer_lma:
            w = kvm_calc_shadow_npt_root_page_role(era, v)
            # ad_disabled of nested NPT follows the host; compare both values.
            for ad in (False, True):
                f = era.base.unpack(w)
                f["ad_disabled"] = ad
                other.setdefault(era.base.pack(f), ("nested NPT root (SVM)", v))
    return {w: (ept[w], other[w]) for w in sorted(set(ept) & set(other))}
