"""Scalar calls: every public scalar SPTE / MMIO / role / RMP / private function, called from
Python the way a user calls it, against the pure-Python reference's same function.

Each function is one interleaved group ``scalar <module>.<function>`` (conftest.interleaved):
``core`` (the library call), ``reference`` (pykvmmu.ref's twin, when it has one) and ``call``
(a pure-Python function that does nothing, called the same way in the same loop: the same
arguments, keywords and wrapper, the floor of any Python-level call of that form).  Every
case is a loop over CALLS varied argument tuples (``for a in args: f(*a)``), so ns per
element is the cost of one call including ~30 ns of loop.  The results of core and
reference are checked equal on the same arguments (where they return the same thing).  Targets (issue 14): every scalar SPTE/MMIO/role/RMP call < 0.5 us,
scalar decode < 2 us, make_spte >= 3x the reference.
"""
import numpy as np
import pytest

from conftest import REF_N, interleaved
from pykvmmu import mmio as M
from pykvmmu import private as P
from pykvmmu import rmp as RMP
from pykvmmu import role as R
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.ref import mmio as ref_mmio
from pykvmmu.ref import private as ref_private
from pykvmmu.ref import rmp as ref_rmp
from pykvmmu.ref import role as ref_role
from pykvmmu.ref import spte as ref_spte

CALLS = max(16, min(2000, REF_N))
CFG = MmuConfig.ept()
L1TF = MmuConfig.npt(phys_bits=39, cache_bits=44)
ERA = R.get_era("latest")
REF_ERA = "v6.14"
_rng = np.random.default_rng(99)


def _sptes():
    pfn = _rng.integers(0, 1 << 34, CALLS, dtype=np.uint64)
    level = _rng.integers(1, 4, CALLS, dtype=np.uint8)
    acc = _rng.integers(0, 8, CALLS, dtype=np.uint8)
    flags = (_rng.integers(0, 256, CALLS, dtype=np.uint8) & np.uint8(0x7D)) | np.uint8(S.MK_HOST_WRITABLE)
    return [int(x) for x in S.make_spte_batch(CFG, pfn, level=level, pte_access=acc, flags=flags)]


SPTES = _sptes()
PFNS = [int(x) for x in _rng.integers(0, 1 << 34, CALLS)]
GFNS = [int(x) for x in _rng.integers(0, 1 << 40, CALLS)]


def noop(*a, **k):
    """The ``call`` baseline: a Python function that does nothing."""
    return None


def _kwargs(f):
    """The form ``f(era, **fields)`` of a call given (era, fields dict)."""
    return lambda era, d: f(era, **d)


def _loop(f, args, kw):
    if kw:
        return lambda: [f(*a, **kw) for a in args]
    return lambda: [f(*a) for a in args]


# (group, core fn, core args, reference fn or None, reference args or None, kwargs, compare, max_ns)
# compare: None (results not comparable) or a function (core result) -> reference result form.
CASES = []


def case(group, core, args, ref=None, ref_args=None, kw=None, compare=lambda x: x, max_ns=500.0,
         min_vs_ref=None, ref_kw=None, form=None, floor=None):
    """One scalar group.  ``form``: how a user calls ``core`` when an argument varies per
    call and is a keyword (``form(f)`` is a function of the args tuple calling ``f``); the
    ``call`` baseline goes through the same form, so that the floor includes its cost.
    ``floor``: an optional ``floor`` baseline, the library call without its checks (same
    results)."""
    CASES.append(dict(group=group, core=form(core) if form else core, args=args, ref=ref,
                      ref_args=ref_args or args, kw=kw or {}, ref_kw=kw if ref_kw is None else ref_kw,
                      compare=compare, max_ns=max_ns, min_vs_ref=min_vs_ref,
                      call=form(noop) if form else noop, floor=floor))


# ------------------------------------------------------------------ SPTE
_MAKE_OUT, _make_fast, _ffi_new, _tuple_new = S._MAKE_OUT, S._make_fast, S.ffi.new, S._tuple_new
_MK_PREFETCH, _MK_DEFAULTS, _MakeSpteResult = S._MK_DEFAULTS | S.MK_PREFETCH, S._MK_DEFAULTS, S.MakeSpteResult
_WRPROT, _WARNINGS = S._FAST_WRPROT, S._FAST_WARNINGS


def make_spte_floor(cfg, pfn, *, level=1, pte_access=S.ACC_ALL, old_spte=None, prefetch=False,
                    synchronizing=False, host_writable=True, host_mmio=False, ad_disabled=None,
                    ad_wrprot_only=False, unsync_fails=False, nx_huge_pages=None, memtype=None):
    """make_spte's floor in this binding: its signature, its per-thread out buffer, its one
    cffi call (the real computation) and its result tuple, without one argument check (only
    ``prefetch`` is read: the bench's calls vary nothing else); module globals, as in spte.py."""
    try:
        out = _MAKE_OUT.out
    except AttributeError:
        out = _MAKE_OUT.out = _ffi_new("uint64_t *")
    r = _make_fast(cfg._cptr, pfn, level, pte_access, _MK_PREFETCH if prefetch else _MK_DEFAULTS, out)
    return _tuple_new(_MakeSpteResult, (out[0], _WRPROT[r], _WARNINGS[r]))


_MK = [(CFG, p) for p in PFNS]
_MK_KW = dict(level=2, pte_access=7, prefetch=True)
case("spte.make_spte", S.make_spte, _MK, ref_spte.make_spte, kw=_MK_KW,
     compare=lambda r: (r.spte, r.wrprot) if hasattr(r, "spte") else tuple(r), min_vs_ref=3.0,
     floor=make_spte_floor)
case("spte.make_nonleaf_spte", S.make_nonleaf_spte, [(CFG, p << 12) for p in PFNS],
     ref_spte.make_nonleaf_spte)
_HUGE = [(CFG, s, 1, i % 512) for i, s in enumerate(S.make_spte_batch(
    CFG, np.array(PFNS, np.uint64) & ~np.uint64(511), level=2).tolist())]
case("spte.make_small_spte", S.make_small_spte, _HUGE, ref_spte.make_small_spte)
case("spte.make_huge_spte", S.make_huge_spte, [(CFG, s, 2) for s in SPTES], ref_spte.make_huge_spte)
for _name in ("mark_spte_for_access_track", "restore_acc_track_spte", "spte_to_pfn"):
    case(f"spte.{_name}", getattr(S, _name), [(CFG, s) for s in SPTES], getattr(ref_spte, _name))
case("spte.leaf_spte_change_needs_tlb_flush", S.leaf_spte_change_needs_tlb_flush,
     [(CFG, a, b) for a, b in zip(SPTES, SPTES[1:] + SPTES[:1])], ref_spte.leaf_spte_change_needs_tlb_flush)
case("spte.predicate", S.predicate, [(CFG, "spte_needs_atomic_update", s) for s in SPTES],
     ref_spte.predicate)
for _name, (_num, _needs_level, _feat) in S.PREDICATES.items():
    if _feat and not getattr(CFG.profile, _feat):
        continue
    _args = [(CFG, s, 1) if _needs_level else (CFG, s) for s in SPTES]
    case(f"spte.{_name}", getattr(S, _name), _args, getattr(ref_spte, _name))
_PREDS = [(n, lv) for n, (_, lv, feat) in S.PREDICATES.items() if not feat or getattr(CFG.profile, feat)]


def _ref_decode(cfg, s, level=1):
    """The reference's view of decode(): the pfn and every predicate of the profile."""
    return (ref_spte.spte_to_pfn(cfg, s),
            [getattr(ref_spte, n)(cfg, s, level) if lv else getattr(ref_spte, n)(cfg, s) for n, lv in _PREDS])


case("spte.decode", S.decode, [(CFG, s) for s in SPTES], _ref_decode, compare=None, max_ns=2000.0)

# ------------------------------------------------------------------ MMIO
_MM = [(L1TF, g, 7, i & 0x7FFFF) for i, g in enumerate(GFNS)]
case("mmio.make_mmio_spte", M.make_mmio_spte, _MM, ref_mmio.make_mmio_spte)
_MSPTES = [M.make_mmio_spte(*a) for a in _MM]
for _name in ("get_mmio_spte_gfn", "get_mmio_spte_access", "get_mmio_spte_generation", "is_mmio_spte"):
    case(f"mmio.{_name}", getattr(M, _name), [(L1TF, s) for s in _MSPTES], getattr(ref_mmio, _name))
for _name in ("check_mmio_spte", "mmio_fault_outcome"):
    case(f"mmio.{_name}", getattr(M, _name), [(L1TF, s, i & 0x7FFFF) for i, s in enumerate(_MSPTES)],
         getattr(ref_mmio, _name))
case("mmio.generation_mmio_spte_mask", M.generation_mmio_spte_mask,
     [(L1TF, i & 0x7FFFF) for i in range(CALLS)], ref_mmio.generation_mmio_spte_mask)
for _name in ("mmio_generation_mask", "mmio_generation_bits", "mmio_gfn_lost_bits"):
    case(f"mmio.{_name}", getattr(M, _name), [(L1TF,)] * CALLS)
case("mmio.kvm_mmu_invalidate_mmio_sptes", M.kvm_mmu_invalidate_mmio_sptes,
     [(L1TF, (i * 2) & 0x7FFFF, 2) for i in range(CALLS)], ref_mmio.kvm_mmu_invalidate_mmio_sptes)

# ------------------------------------------------------------------ role
_LAY = ERA.base
_WORDS = [int(w) & _LAY.used_mask for w in _rng.integers(0, 1 << 32, CALLS)]
_WORDS = [R.pack(ERA, **{**_LAY.unpack(w), "level": 1 + _LAY.unpack(w)["level"] % 5}) for w in _WORDS]
_FIELDS = [_LAY.unpack(w) for w in _WORDS]
case("role.pack", R.pack, [(ERA, d) for d in _FIELDS],
     lambda era, d: ref_role.pack_role(era, **d), [(REF_ERA, d) for d in _FIELDS], form=_kwargs)
case("role.pack(era, dict)", R.pack, [(ERA, d) for d in _FIELDS],
     lambda era, d: ref_role.pack_role(era, **d), [(REF_ERA, d) for d in _FIELDS])
case("role.unpack", R.unpack, [(ERA, w) for w in _WORDS],
     ref_role.unpack_role, [(REF_ERA, w) for w in _WORDS], compare=None)
case("role.kvm_page_table_hashfn", R.kvm_page_table_hashfn, [(g,) for g in GFNS],
     ref_role.kvm_page_table_hashfn)
case("role.hash_64", R.hash_64, [(g, 12) for g in GFNS], ref_role.hash_64)
case("role.kvm_mmu_role_as_id", R.kvm_mmu_role_as_id, [(w,) for w in _WORDS])
if ERA.ext is not None:
    _EXT = [ERA.ext.unpack(int(w) & ERA.ext.used_mask) for w in _rng.integers(0, 1 << 32, CALLS)]
    case("role.pack_ext", R.pack_ext, [(ERA, d) for d in _EXT],
         lambda era, d: ref_role.pack(ref_role.ext_fields(era), d), [(REF_ERA, d) for d in _EXT],
         form=_kwargs)
    case("role.pack_ext(era, dict)", R.pack_ext, [(ERA, d) for d in _EXT],
         lambda era, d: ref_role.pack(ref_role.ext_fields(era), d), [(REF_ERA, d) for d in _EXT])
    _EXTW = [R.pack_ext(ERA, **d) for d in _EXT]
    case("role.unpack_ext", R.unpack_ext, [(ERA, w) for w in _EXTW],
         lambda era, w: ref_role.unpack(ref_role.ext_fields(era), w), [(REF_ERA, w) for w in _EXTW],
         compare=dict)
    case("role.pack_cpu_role", R.pack_cpu_role, [(ERA, b, e) for b, e in zip(_FIELDS, _EXT)],
         ref_role.pack_cpu_role, [(REF_ERA, b, e) for b, e in zip(_FIELDS, _EXT)])
    case("role.unpack_cpu_role", R.unpack_cpu_role,
         [(ERA, R.pack_cpu_role(ERA, b, e)) for b, e in zip(_FIELDS, _EXT)])
case("role.gpte_bytes", R.gpte_bytes, [(ERA, w) for w in _WORDS])
_VCPUS = [R.VcpuState.long_mode(), R.VcpuState.pae(), R.VcpuState.nonpae32(), R.VcpuState.long_mode(smm=True)]
_ROOTS = [R.kvm_calc_tdp_mmu_root_page_role(ERA, _VCPUS[i % 2]) for i in range(CALLS)]
case("role.kvm_calc_tdp_mmu_root_page_role", R.kvm_calc_tdp_mmu_root_page_role,
     [(ERA, _VCPUS[i % 4]) for i in range(CALLS)])
case("role.kvm_calc_cpu_role", R.kvm_calc_cpu_role, [(ERA, _VCPUS[i % 4]) for i in range(CALLS)])
case("role.kvm_calc_shadow_mmu_root_page_role", R.kvm_calc_shadow_mmu_root_page_role,
     [(ERA, _VCPUS[i % 4]) for i in range(CALLS)])
case("role.tdp_mmu_child_role", R.tdp_mmu_child_role, [(ERA, w) for w in _ROOTS])
case("role.kvm_mmu_child_role", R.kvm_mmu_child_role, [(ERA, w, i % 512) for i, w in enumerate(_ROOTS)],
     form=lambda f: lambda era, w, i: f(era, w, direct=False, access=7, index=i))
case("role.kvm_calc_mmu_role_ext", R.kvm_calc_mmu_role_ext, [(ERA, _VCPUS[i % 4]) for i in range(CALLS)])
case("role.kvm_calc_shadow_ept_root_page_role", R.kvm_calc_shadow_ept_root_page_role,
     [(ERA, _VCPUS[0])] * CALLS)
case("role.kvm_calc_shadow_npt_root_page_role", R.kvm_calc_shadow_npt_root_page_role,
     [(ERA, _VCPUS[i % 2]) for i in range(CALLS)])
case("role.kvm_mmu_get_page_role", R.kvm_mmu_get_page_role, [(ERA, w) for w in _ROOTS],
     kw=dict(level=3, direct=True))
case("role.shadow_root_sp_roles", R.shadow_root_sp_roles, [(ERA, _VCPUS[i % 4]) for i in range(CALLS)])
case("role.check_role_word", R.check_role_word, [(ERA, w) for w in _ROOTS])
case("role.quadrant_for_gaddr", R.quadrant_for_gaddr, [(g << 12, 1 + (g & 1)) for g in GFNS])

# ------------------------------------------------------------------ RMP
_RMP_PAGES = 8 * 512


def _rmp_pair():
    """A small RMP table and its reference twin with the same 2M and 4K assignments."""
    t = RMP.RmpTable.create(_RMP_PAGES << 12)
    r = ref_rmp.RefRmp(t.nr_pfns)
    for head in range(0, t.nr_pfns - 512, 1024):          # every other 2M block: one 2M page
        t.rmpupdate(head, gpa=head << 12, assigned=True, pagesize=1, asid=3)
        r.rmpupdate(head, head << 12, 1, 1, 0, 3)
    for pfn in range(512, t.nr_pfns, 1024 + 3):           # and a few 4K pages in the others
        t.rmpupdate(pfn, gpa=pfn << 12, assigned=True, pagesize=0, asid=4)
        r.rmpupdate(pfn, pfn << 12, 1, 0, 0, 4)
    return t, r


_T, _REF = _rmp_pair()
_RP = [int(x) for x in _rng.integers(0, _T.nr_pfns, CALLS)]
case("rmp.snp_lookup_rmpentry", _T.snp_lookup_rmpentry, [(p,) for p in _RP], _REF.lookup,
     compare=None)
case("rmp.page_state", _T.page_state, [(p,) for p in _RP], _REF.page_state, compare=int)
case("rmp.entry", _T.entry, [(p,) for p in _RP], lambda p: tuple(_REF.e[p]), compare=tuple)
case("rmp.covered", _T.covered, [(p,) for p in _RP], _REF.covered)
case("rmp.host_check", _T.host_check, [(p, 1) for p in _RP], _REF.host_check, compare=None)
case("rmp.guest_check", _T.guest_check, [(p, p) for p in _RP],
     lambda p, g: _REF.guest_check(p, g, 3, 0, 1, ref_rmp.READ, True, True, False), compare=None,
     kw=dict(asid=3), ref_kw={})
case("rmp.rmpupdate", _T.rmpupdate, [(p,) for p in _RP if p % 1024 >= 512],
     lambda p: _REF.rmpupdate(p, p << 12, 0, 0, 0, 0), compare=int,
     form=lambda f: lambda p: f(p, gpa=p << 12, assigned=False))
case("rmp.pvalidate", _T.pvalidate, [(p,) for p in _RP], lambda p: _REF.pvalidate(p, 3, 0, p, 0, True),
     compare=None, form=lambda f: lambda p: f(p, asid=3, gfn=p))
case("rmp.rmpadjust", _T.rmpadjust, [(p,) for p in _RP], lambda p: _REF.rmpadjust(p, 3, 0, p, 0, 1, 1, False),
     compare=None, form=lambda f: lambda p: f(p, asid=3, gfn=p, target_vmpl=1, perms=1))
case("rmp.sev_private_max_mapping_level", RMP.sev_private_max_mapping_level, [(_T, p) for p in _RP],
     _REF.max_mapping_level, [(p,) for p in _RP])
case("rmp.handle_user_rmp_page_fault", RMP.handle_user_rmp_page_fault, [(p,) for p in _RP],
     lambda p: _REF.user_pf(True, p, 1, p << 12), compare=None,
     form=lambda f: lambda p: f(_T, pte_present=True, pte_pfn=p, level=1, address=p << 12))
case("rmp.page_state_raw", RMP.page_state_raw, [(_REF.e[p][0],) for p in _RP], ref_rmp.state_of,
     compare=int)
case("rmp.dump_rmpentry", _T.dump_rmpentry, [(p,) for p in _RP])
case("rmp.kvm_max_private_mapping_level", RMP.kvm_max_private_mapping_level,
     [(1 + i % 3, (i * 7) % 19, i % 4) for i in range(CALLS)])

case("rmp.psmash", _T.psmash, [(p - p % 512,) for p in _RP], _REF.psmash, compare=int)

# ------------------------------------------------------------------ private
_GPA = [int(x) for x in _rng.integers(0, 1 << 52, CALLS)]
_EC = [int(x) & 0x1F_8000_007F for x in _rng.integers(0, 1 << 37, CALLS)]
_CTX = P.FaultContext(vm_type="snp")


def _pf_compare(c):
    return c.gfn, c.error_code, c.kind == P.KVM_FAULT_PRIVATE


case("private.kvm_mmu_do_page_fault", P.kvm_mmu_do_page_fault,
     [(_CTX, g, e) for g, e in zip(_GPA, _EC)],
     lambda g, e: ref_private.classify(ref_private.SNP, g, e)[:3], [(g, e) for g, e in zip(_GPA, _EC)],
     compare=_pf_compare, max_ns=None)
case("private.upstream_error_code", P.upstream_error_code, [(_CTX, g, e) for g, e in zip(_GPA, _EC)],
     lambda g, e: ref_private.classify(ref_private.SNP, g, e)[1], [(g, e) for g, e in zip(_GPA, _EC)],
     compare=lambda r: r[0], max_ns=None)
case("private.decide", P.decide, [(_CTX, g, e) for g, e in zip(_GPA, _EC)], max_ns=None)
case("private.decode_error_code", P.decode_error_code, [(e,) for e in _EC], max_ns=None)
case("private.gfn_direct_bits", P.gfn_direct_bits, [("tdx", 48 + (i & 1) * 4) for i in range(CALLS)],
     max_ns=None)
case("private.ept_violation_error_code", P.ept_violation_error_code,
     [(e & 0x1FF, g, "tdx") for g, e in zip(_GPA, _EC)], max_ns=None)
case("private.vm_type_number", P.vm_type_number, [("snp",)] * CALLS, max_ns=None)
case("private.has_private_mem", P.has_private_mem, [("tdx",)] * CALLS, max_ns=None)
case("private.prefault_error_code", P.prefault_error_code, [("snp", bool(i & 1)) for i in range(CALLS)],
     max_ns=None)


@pytest.mark.parametrize("c", CASES, ids=[c["group"] for c in CASES])
def test_scalar(benchmark, c):
    core, ref = c["core"], c["ref"]
    cases = {"core": _loop(core, c["args"], c["kw"])}
    if ref is not None:
        cases["reference"] = _loop(ref, c["ref_args"], c["ref_kw"])
    cases["call"] = _loop(c["call"], c["args"], c["kw"])
    if c["floor"] is not None:
        cases["floor"] = _loop(c["floor"], c["args"], c["kw"])
    targets = []
    if c["max_ns"]:
        targets.append({"subject": "core", "max_ns": c["max_ns"]})
    if c["min_vs_ref"]:
        targets.append({"subject": "core", "vs": "reference", "min": c["min_vs_ref"]})

    def check(r):
        if ref is not None and c["compare"] is not None:
            assert [c["compare"](x) for x in r["core"]] == list(r["reference"])
        if "floor" in r:
            assert r["floor"] == r["core"]
    interleaved(benchmark, f"scalar {c['group']}", cases, elements=len(c["args"]), check=check,
                targets=targets, scalar=True)
