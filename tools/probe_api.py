"""Probe the public API with bad inputs and classify every outcome (issue 11).

    python tools/probe_api.py            # counts per outcome and per module
    python tools/probe_api.py -v         # also every case that is not a clear error

Entry points that would start a guest or a recording run with those replaced by a refusal
(``_no_guests``), so an unchecked argument shows as "other" and nothing is started.

Each case calls one public function or method with one argument made bad (wrong type,
outside the kernel's width or range, a bool that is not a bool, an array that is not the
right kind or that partly overlaps ``out=``), everything else valid.  Outcomes:

  clear    a PykvmmuError whose message names the argument (or the value)
  unclear  a PykvmmuError that names neither
  other    any other exception (TypeError, OverflowError, list.remove, ...)
  silent   no exception: the bad input was accepted
  crash    the interpreter died (cases run in a child process that is restarted)
  half     an exception, but the stateful object changed (snapshot before != after)
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
try:                                  # the pykvmmu on sys.path (an installed one, or PYTHONPATH)
    import pykvmmu._core  # noqa: F401
except ImportError:                   # else this checkout, built in place
    sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

U64 = 1 << 64
BAD_U = [-1, U64, "1", 1.5, None]         # a required integer argument
BAD_OPTU = [-1, U64, "1", 1.5]            # an optional integer argument (None is valid)
BAD_B = ("no", 2, 1.5, None)               # a bool argument
BAD_OB = ("no", 2, 1.5)                    # an optional bool (None: the default)
BAD_THREADS = (0, -1, "2", 1.5, 10 ** 6)


def bad_int(lo=None, hi=None, optional=False):
    """Bad values for an integer argument with an optional kernel range [lo, hi]."""
    v = list(BAD_OPTU if optional else BAD_U)
    if lo is not None and lo > 0:
        v.append(lo - 1)
    if hi is not None:
        v.append(hi + 1)
    return v


# ---------------------------------------------------------------------- case table
CASES = []     # (module, label, param, value, thunk) ; thunk() -> (state_obj | None, call)


def add(module, label, param, values, make):
    """``make(value)`` returns (state object or None, a zero-argument call)."""
    for v in values:
        CASES.append((module, label, param, v, (lambda v=v: make(v))))


def call_with(fn, args, kw, param, value):
    kw = dict(kw)
    if isinstance(param, int) and param >= len(args):
        param = pname(fn, param)
    if isinstance(param, int):
        args = list(args)
        args[param] = value
    else:
        kw[param] = value
    return lambda: fn(*args, **kw)


def pname(fn, p):
    """The name of positional parameter ``p`` of ``fn`` (or ``p`` itself)."""
    if not isinstance(p, int):
        return p
    try:
        names = [n for n, q in inspect.signature(fn).parameters.items()
                 if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return p
    return names[p] if p < len(names) else p


def scalar(module, label, fn, args, kw, params):
    """Probe ``fn(*args, **kw)`` with each param (name or positional index) made bad."""
    for p, values in params.items():
        add(module, f"{label}({pname(fn, p)})", pname(fn, p), values,
            lambda v, p=p: (None, call_with(fn, args, kw, p, v)))


def stateful(module, label, factory, method, args, kw, params):
    """Probe a method on a fresh object from ``factory()``; the object is snapshotted."""
    meth = getattr(factory(), method)
    for p, values in params.items():
        def make(v, p=p):
            obj = factory()
            return obj, call_with(getattr(obj, method), args, kw, p, v)
        add(module, f"{label}.{method}({pname(meth, p)})", pname(meth, p), values, make)


def build():
    from pykvmmu.config import MmuConfig
    from pykvmmu import spte as S, mmio as M, role as R, memslots as MS, private as P
    from pykvmmu import attrs as A, gmem as G, vm as V, prevroots as PR, sphash as SH
    from pykvmmu import wflood as W

    cfg = MmuConfig.ept()
    npt = MmuConfig.npt()
    u64 = np.arange(16, dtype=np.uint64)
    bad_arrays = [list(range(4)), np.arange(4, dtype=np.int64), np.arange(8, dtype=np.uint64)[::2]]

    # ------------------------------------------------------------------ config
    scalar("config", "MmuConfig.ept", MmuConfig.ept, (), {}, {
        "maxphyaddr": bad_int(32, 52) + [99], "huge_level": bad_int(1, 3) + [9],
        "ad": BAD_B, "exec_only": BAD_B, "nx_huge_pages": BAD_B, "mmio_caching": BAD_B,
        "ignore_guest_pat": BAD_B, "phys_bits": bad_int(32, 46, True) + [60],
        "cache_bits": bad_int(46, 46, True), "profile": ("v1.0", 3, None)})
    scalar("config", "MmuConfig.npt", MmuConfig.npt, (), {}, {
        "maxphyaddr": bad_int(32, 52), "tdp_level": bad_int(4, 5) + [7, 3],
        "sme_cbit": bad_int(32, 51, True) + [47.0], "nx_huge_pages": BAD_B,
        "gbpages": BAD_B, "mmio_caching": BAD_B})
    scalar("config", "MmuConfig.npt(sme)", MmuConfig.npt, (), {"sme_cbit": 47, "maxphyaddr": 48}, {
        "sme_phys_reduction": (-1, 60, 1.5, "5", None, 17)})
    scalar("config", "MmuConfig.shadow", MmuConfig.shadow, (), {}, {
        "guest_nx": BAD_B, "guest_amd": BAD_B, "maxphyaddr": ("46", 31, 53)})
    scalar("config", "MmuConfig.tdx", MmuConfig.tdx, (), {}, {
        "maxphyaddr": (0, 99, "52", None), "phys_bits": (-1, 53, "46")})
    scalar("config", "MmuConfig.preset", MmuConfig.preset, ("ept",), {}, {0: ("bogus", None, 3)})

    # ------------------------------------------------------------------ spte scalar
    scalar("spte", "make_spte", S.make_spte, (cfg, 0x1234), {}, {
        1: BAD_U, "level": bad_int(1, 5) + [0], "pte_access": bad_int(0, 7),
        "old_spte": BAD_OPTU, "prefetch": BAD_B, "synchronizing": BAD_B, "host_writable": BAD_B,
        "host_mmio": BAD_B, "ad_disabled": BAD_OB, "ad_wrprot_only": BAD_B,
        "unsync_fails": BAD_B, "nx_huge_pages": BAD_OB, "memtype": (-1, 256, "6", 1.5)})
    scalar("spte", "make_nonleaf_spte", S.make_nonleaf_spte, (cfg, 0x5000), {}, {
        1: BAD_U, "ad_disabled": BAD_OB})
    scalar("spte", "make_small_spte", S.make_small_spte, (cfg, 0x8000000000200ef7 & (U64 - 1), 1, 3), {}, {
        1: BAD_U, 2: bad_int(1, 4) + [0], 3: bad_int(0, 511), "role_access": bad_int(0, 7),
        "nx_huge_pages": BAD_OB})
    scalar("spte", "make_huge_spte", S.make_huge_spte, (cfg, 0x12345b77, 2), {}, {
        1: BAD_U, 2: bad_int(2, 3) + [0, 1], "nx_huge_pages": BAD_OB})
    for fn in ("mark_spte_for_access_track", "restore_acc_track_spte", "spte_to_pfn",
               "is_shadow_present_pte", "is_mmio_spte", "is_large_pte", "is_writable_pte",
               "is_accessed_spte", "is_dirty_spte", "spte_ad_enabled", "is_access_track_spte"):
        scalar("spte", fn, getattr(S, fn), (cfg, 0x12345b77), {}, {1: BAD_U})
    scalar("spte", "is_last_spte", S.is_last_spte, (cfg, 0x12345b77, 1), {}, {
        1: BAD_U, 2: bad_int(1, 5) + [0]})
    scalar("spte", "is_rsvd_spte", S.is_rsvd_spte, (cfg, 0x12345b77, 1), {}, {
        2: bad_int(1, 5) + [0]})
    scalar("spte", "predicate", S.predicate, (cfg, "is_large_pte", 0x12345b77), {}, {
        1: ("bogus", None, 3), 2: BAD_U, "level": bad_int(1, 5) + [0]})
    scalar("spte", "decode", S.decode, (cfg, 0x12345b77), {}, {1: BAD_U, "level": bad_int(1, 5) + [0]})
    scalar("spte", "leaf_spte_change_needs_tlb_flush", S.leaf_spte_change_needs_tlb_flush,
           (cfg, 0x12345b77, 0x12345b75), {}, {1: BAD_U, 2: BAD_U})

    # ------------------------------------------------------------------ spte batch
    def overlap_cases(module, label, fn, make_in, extra=()):
        """out= partly overlapping the input, and bad arrays."""
        def partial(v):
            buf = make_in(17)
            return None, lambda: fn(cfg, buf[:-1], *extra, out=buf[1:])
        add(module, f"{label}(out overlaps in)", "out", ["partial"], partial)
        scalar(module, label, fn, (cfg, make_in(4)) + tuple(extra), {}, {1: bad_arrays})
    overlap_cases("spte", "make_spte_batch", S.make_spte_batch, lambda n: np.arange(n, dtype=np.uint64))
    overlap_cases("spte", "spte_to_pfn_batch", S.spte_to_pfn_batch,
                  lambda n: np.full(n, 0x12345b77, dtype=np.uint64))
    overlap_cases("spte", "access_track_batch", S.access_track_batch,
                  lambda n: np.full(n, 0x12345b77, dtype=np.uint64))
    overlap_cases("spte", "make_nonleaf_spte_batch", S.make_nonleaf_spte_batch,
                  lambda n: np.arange(n, dtype=np.uint64) << np.uint64(12))
    overlap_cases("spte", "make_huge_spte_batch", S.make_huge_spte_batch,
                  lambda n: np.full(n, 0x12345b77, dtype=np.uint64), (2,))
    overlap_cases("mmio", "get_mmio_spte_gfn_batch", M.get_mmio_spte_gfn_batch,
                  lambda n: np.zeros(n, dtype=np.uint64))
    overlap_cases("mmio", "make_mmio_spte_batch", M.make_mmio_spte_batch,
                  lambda n: np.arange(n, dtype=np.uint64))
    scalar("spte", "make_spte_batch", S.make_spte_batch, (cfg, u64), {}, {
        "level": (0, 6, -1, "1", 1.5), "pte_access": (8, -1, "7"), "prefetch": BAD_B,
        "ad_disabled": BAD_OB, "threads": BAD_THREADS, "with_wrprot": BAD_B})
    scalar("spte", "predicate_batch", S.predicate_batch, (cfg, "is_large_pte", u64), {}, {
        1: ("bogus", None), "level": (0, 6, -1, "1"), "threads": BAD_THREADS})
    scalar("spte", "access_track_batch", S.access_track_batch, (cfg, u64), {}, {"restore": BAD_B})

    # ------------------------------------------------------------------ mmio
    scalar("mmio", "make_mmio_spte", M.make_mmio_spte, (cfg, 0x1000), {}, {
        1: BAD_U, "access": bad_int(0, 7), "generation": BAD_U})
    scalar("mmio", "check_mmio_spte", M.check_mmio_spte, (cfg, 0x6, 0), {}, {1: BAD_U, 2: BAD_U})
    scalar("mmio", "mmio_fault_outcome", M.mmio_fault_outcome, (cfg, 0x6, 0), {}, {1: BAD_U, 2: BAD_U})
    scalar("mmio", "default_mmio_masks", M.default_mmio_masks, (46,), {}, {0: bad_int(32, 52) + [0]})
    scalar("mmio", "svm_adjust_mmio_mask", M.svm_adjust_mmio_mask, (43, 47), {}, {
        0: bad_int(32, 52) + [0], 1: bad_int(32, 51, True), "mem_encrypt": BAD_B})
    scalar("mmio", "kvm_mmu_invalidate_mmio_sptes", M.kvm_mmu_invalidate_mmio_sptes, (cfg, 2), {}, {
        1: BAD_U, "nr_as_ids": bad_int(1, 2) + [0]})
    scalar("mmio", "generation_mmio_spte_mask", M.generation_mmio_spte_mask, (cfg, 2), {}, {1: BAD_U})
    scalar("mmio", "set_mmio_spte_mask", M.set_mmio_spte_mask, (npt, 0x6, 0x7, 6), {}, {
        1: BAD_U, 2: BAD_U, 3: (-1, 1 << 32, "6"), "allow_mmio_caching": BAD_OB})
    scalar("mmio", "validate_mmio_masks", M.validate_mmio_masks, (npt,), {}, {
        1: BAD_OPTU, "mode": ("bogus", 3)})

    # ------------------------------------------------------------------ memslots
    def mkgen():
        return MS.MemslotGenerations(cfg)
    for m in ("generation", "in_progress", "begin_update", "update"):
        stateful("memslots", "MemslotGenerations", mkgen, m, (), {}, {"as_id": bad_int(0, 1)})
    stateful("memslots", "MemslotGenerations", mkgen, "make_mmio_spte", (0x10,), {}, {
        0: BAD_U, "access": bad_int(0, 7), "as_id": (2, -1)})
    stateful("memslots", "MemslotGenerations", mkgen, "check", (0x6,), {}, {0: BAD_U})
    scalar("memslots", "MemslotGenerations", MS.MemslotGenerations, (cfg,), {}, {
        "private_mem": BAD_B, 0: ("ept", None)})
    scalar("memslots", "generation_sequence", MS.generation_sequence, (cfg, 4), {}, {
        1: BAD_U, "as_id": (2, -1, "0"), "private_mem": BAD_B, "start": (-1, 1, "0")})

    # ------------------------------------------------------------------ role
    scalar("role", "pack", R.pack, ("v6.19",), {"level": 4}, {
        "level": (6, 9, 16, -1, "4", 1.5, None), "access": (8, -1), "quadrant": (4, -1),
        "direct": (2, "no", -1), "gpte_bytes": (2, "8", 16)})
    scalar("role", "unpack", R.unpack, ("v6.19", 0x24), {}, {1: BAD_U + [1 << 32], "strict": BAD_B})
    scalar("role", "kvm_mmu_get_page_role", R.kvm_mmu_get_page_role, ("v5.4", 0x24),
           {"level": 1, "direct": False}, {
               1: BAD_U + [1 << 32], "level": (0, 6, -1, "1", None), "direct": BAD_B,
               "access": (8, -1), "gaddr": BAD_U, "guest_32bit": BAD_OB})
    scalar("role", "kvm_mmu_child_role", R.kvm_mmu_child_role, ("v6.19", 0x24),
           {"direct": False, "access": 7, "index": 3}, {
               1: BAD_U + [1 << 32], "direct": BAD_B, "access": (8, -1, "7", None),
               "index": (512, -1, "1"), "guest_32bit": BAD_OB})
    scalar("role", "tdp_mmu_child_role", R.tdp_mmu_child_role, ("v6.19", 0x84), {}, {
        1: BAD_U + [1 << 32]})
    scalar("role", "quadrant_for_gaddr", R.quadrant_for_gaddr, (0x1000, 1), {}, {
        0: BAD_U, 1: bad_int(1, 5) + [0]})
    scalar("role", "kvm_mmu_role_as_id", R.kvm_mmu_role_as_id, (0x24,), {}, {0: BAD_U + [1 << 32]})
    scalar("role", "gpte_bytes", R.gpte_bytes, ("v6.19", 0x24), {}, {1: BAD_U + [1 << 32]})
    scalar("role", "is_ept_sp", R.is_ept_sp, ("v5.4", 0x24), {}, {1: BAD_U + [1 << 32]})
    scalar("role", "identify_nested_ept", R.identify_nested_ept, ("v6.19", 0x24), {}, {1: BAD_U})
    scalar("role", "check_role_word", R.check_role_word, ("v6.19", 0x24), {}, {
        1: BAD_U, "kind": ("bogus", None)})
    scalar("role", "hash_64", R.hash_64, (5,), {}, {0: BAD_U, "bits": (0, 33, -1, "12"),
                                                   "variant": ("bogus", None)})
    scalar("role", "kvm_page_table_hashfn", R.kvm_page_table_hashfn, (5,), {}, {0: BAD_U})
    scalar("role", "hash_batch", R.hash_batch, (u64,), {}, {0: bad_arrays, "bits": (0, 33),
                                                           "threads": BAD_THREADS})
    scalar("role", "get_era", R.get_era, ("v6.19",), {}, {0: ("v1.0", None, 3)})
    vs = R.VcpuState()
    scalar("role", "kvm_calc_tdp_mmu_root_page_role", R.kvm_calc_tdp_mmu_root_page_role,
           ("v6.19", vs), {}, {"tdp_level": (3, 6, "4"), "ad_enabled": BAD_B, "mirror": BAD_B,
                               1: ("state", None)})
    scalar("role", "kvm_calc_shadow_ept_root_page_role", R.kvm_calc_shadow_ept_root_page_role,
           ("v6.19", vs), {}, {"accessed_dirty": BAD_B, "execonly": BAD_B,
                               "level": (3, 6, 0, "4"), "tdp_ad_enabled": BAD_B})
    scalar("role", "kvm_calc_shadow_npt_root_page_role", R.kvm_calc_shadow_npt_root_page_role,
           ("v6.19", vs), {}, {"tdp_level": (3, 6, 7, "4")})
    scalar("role", "kvm_calc_mmu_role_ext", R.kvm_calc_mmu_role_ext, ("v6.19", vs), {}, {
        "execonly": BAD_B})
    scalar("role", "VcpuState", R.VcpuState, (), {}, {
        "cr0_pg": ("no", 2), "maxphyaddr": (-1, 53, "46"), "smm": ("yes", 2)})
    scalar("role", "pack_ext", R.pack_ext, ("v5.4",), {"cr4_smep": 1}, {"cr4_smep": (2, -1, "1")})
    scalar("role", "unpack_cpu_role", R.unpack_cpu_role, ("v5.4", 0), {}, {1: BAD_U})

    # ------------------------------------------------------------------ sphash / wflood
    def mkhash():
        h = SH.MmuPageHash()
        h.alloc(5, 0x24)
        return h
    stateful("sphash", "MmuPageHash", mkhash, "alloc", (6, 0x24), {}, {
        0: BAD_U, 1: BAD_U + [1 << 32], "tdp_mmu_page": BAD_B})
    stateful("sphash", "MmuPageHash", mkhash, "find", (5, 0x24), {}, {0: BAD_U, 1: BAD_U + [1 << 32]})
    stateful("sphash", "MmuPageHash", mkhash, "get", (6, 0x24), {}, {0: BAD_U, 1: BAD_U + [1 << 32]})
    stateful("sphash", "MmuPageHash", mkhash, "bucket_of", (6,), {}, {0: BAD_U})
    add("sphash", "MmuPageHash.zap(foreign)", "sp", ["foreign"],
        lambda v: (lambda h: (h, lambda: h.zap(SH.ShadowPage(9, 0x24))))(mkhash()))
    add("sphash", "MmuPageHash.zap(type)", "sp", [None, 5],
        lambda v: (lambda h: (h, lambda: h.zap(v)))(mkhash()))
    add("sphash", "MmuPageHash.alloc(dup)", "gfn", ["dup"],
        lambda v: (lambda h: (h, lambda: h.alloc(5, 0x24)))(mkhash()))
    scalar("sphash", "MmuPageHash", SH.MmuPageHash, (), {}, {"shift": (0, 21, -1, "12", 1.5)})
    scalar("sphash", "bucket_counts", SH.bucket_counts, (u64,), {}, {0: bad_arrays, "bits": (0, 33)})
    scalar("sphash", "realistic_gfns", SH.realistic_gfns, (), {}, {"n_vms": (-1, "4", 1.5)})
    sp = SH.ShadowPage(5, 0x1024 | 2)
    scalar("wflood", "detect_write_misaligned", W.detect_write_misaligned, ("v6.19", 0x22, 0x1000, 4),
           {}, {1: BAD_U + [1 << 32], 2: BAD_U, 3: (0, 9, -1, "4")})
    scalar("wflood", "get_written_sptes", W.get_written_sptes, ("v6.19", 0x22, 0x1000), {}, {
        1: BAD_U + [1 << 32], 2: BAD_U})
    scalar("wflood", "mmu_pte_write_fetch_gpte", W.mmu_pte_write_fetch_gpte, (0x1000, 4, True), {}, {
        0: BAD_U, 1: (0, 9, -1, "4"), 2: BAD_B})
    scalar("wflood", "detect_write_flooding", W.detect_write_flooding, (sp,), {}, {0: (None, 5)})

    def mkwf():
        h = SH.MmuPageHash()
        h.alloc(1, 0x22)
        return h
    for p, vals in {2: BAD_U, 3: (0, 9, -1, "4"), "is_pae": BAD_B, "passthrough_bit": (-1, 32, "18")}.items():
        add("wflood", f"kvm_mmu_track_write({p})", p, vals,
            lambda v, p=p: (lambda h: (h, call_with(W.kvm_mmu_track_write, ("v6.19", h, 0x1008, 8),
                                                    {}, p, v)))(mkwf()))

    # ------------------------------------------------------------------ prevroots
    def mkpr():
        c = PR.PrevRootsCache("v6.19")
        c.new_pgd(0x1000, 0x24)
        c.new_pgd(0x2000, 0x24)
        return c
    stateful("prevroots", "PrevRootsCache", mkpr, "new_pgd", (0x3000, 0x24), {}, {
        0: BAD_U, 1: BAD_U + [1 << 32, 1 << 40], "label": (None, 5)})
    stateful("prevroots", "PrevRootsCache", mkpr, "free_roots", (1,), {}, {0: BAD_U + [16]})
    stateful("prevroots", "PrevRootsCache", mkpr, "alloc_root", (0x3000, 0x24), {}, {
        0: BAD_U, 1: BAD_U + [1 << 32]})
    stateful("prevroots", "PrevRootsCache", mkpr, "fast_pgd_switch", (0x3000, 0x24), {}, {
        0: BAD_U, 1: BAD_U + [1 << 32]})
    scalar("prevroots", "PrevRootsCache", PR.PrevRootsCache, ("v6.19",), {}, {0: ("v1.0", None, 3)})
    scalar("prevroots", "run_switches", PR.run_switches, ("v6.19", [(0x1000, 0x24, "a")]), {}, {
        1: ([(0x1000, 1 << 40, "a")], [(-1, 0x24, "a")], [(0x1000,)], None)})
    scalar("prevroots", "KVM_MMU_ROOT_PREVIOUS", PR.KVM_MMU_ROOT_PREVIOUS, (0,), {}, {0: (-1, 3, "0")})

    # ------------------------------------------------------------------ private
    scalar("private", "decode_error_code", P.decode_error_code, (0,), {}, {0: BAD_U})
    scalar("private", "vm_type_number", P.vm_type_number, ("snp",), {}, {0: ("bogus", 6, -1, None, 1.5)})
    scalar("private", "tdx_shared_gpa_bit", P.tdx_shared_gpa_bit, (52,), {}, {0: (50, "52", None)})
    scalar("private", "gfn_direct_bits", P.gfn_direct_bits, ("tdx",), {}, {"gpaw": (50, "52")})
    scalar("private", "prefault_error_code", P.prefault_error_code, ("snp", True), {}, {
        0: ("bogus", 9), 1: BAD_B})
    scalar("private", "ept_violation_error_code", P.ept_violation_error_code, (0x1, 0x1000), {}, {
        0: BAD_U, 1: BAD_U, "vm_type": ("bogus", 9), "gpaw": (50, "52")})
    ctx = P.FaultContext(vm_type=P.KVM_X86_SNP_VM)
    scalar("private", "decide", P.decide, (ctx, 0x1000, 0), {}, {1: BAD_U, 2: BAD_U,
                                                               "policy": ("bogus", 3)})
    scalar("private", "kvm_mmu_do_page_fault", P.kvm_mmu_do_page_fault, (ctx, 0x1000, 0), {}, {
        1: BAD_U, 2: BAD_U})
    scalar("private", "upstream_error_code", P.upstream_error_code, (ctx, 0x1000, 0), {}, {
        1: BAD_U, 2: BAD_U})
    scalar("private", "FaultContext", P.FaultContext, (), {}, {
        "vm_type": ("bogus", 9), "gpaw": (50, "52"), "sw_protected_enabled": BAD_B})
    scalar("private", "get_policy", P.get_policy, ("upstream",), {}, {0: ("bogus", 3)})
    scalar("private", "classify_batch", P.classify_batch,
           ("snp", u64 << np.uint64(12), np.zeros(16, dtype=np.uint64)), {}, {
               1: bad_arrays, 2: bad_arrays, "gpaw": (50, "52"), "threads": BAD_THREADS,
               "sw_protected_enabled": BAD_B})

    # ------------------------------------------------------------------ attrs
    def mkattrs():
        a = A.MemoryAttributes()
        a.store(0x10, 0x20, 8)
        return a
    stateful("attrs", "MemoryAttributes", mkattrs, "store", (0x30, 0x40, 8), {}, {
        0: BAD_U, 1: BAD_U, 2: BAD_U})
    stateful("attrs", "MemoryAttributes", mkattrs, "store", (0x30, 0x40, 8), {}, {
        0: (0x50,)})
    stateful("attrs", "MemoryAttributes", mkattrs, "get", (0x10,), {}, {0: BAD_U})
    stateful("attrs", "MemoryAttributes", mkattrs, "is_private", (0x10,), {}, {0: BAD_U})
    stateful("attrs", "MemoryAttributes", mkattrs, "range_has", (0x10, 0x20, 8, 8), {}, {
        0: BAD_U, 1: BAD_U, 2: BAD_U, 3: BAD_U})
    stateful("attrs", "MemoryAttributes", mkattrs, "get_batch", (u64,), {}, {0: bad_arrays})
    inv = A.MmuInvalidation
    stateful("attrs", "MemoryAttributes", mkattrs, "set_range", (0x30, 0x40, 8, None), {}, {
        0: BAD_U, 1: BAD_U, 2: BAD_U, 3: (None, 5)})
    stateful("attrs", "MemoryAttributes", mkattrs, "check_and_set", (0x30000, 0x1000, 8, 0, inv()), {}, {
        0: BAD_U + [0x30001], 1: BAD_U + [0], 2: BAD_U + [1], 3: BAD_U + [1], 4: (None, 5)})
    scalar("attrs", "MemoryAttributes", A.MemoryAttributes, (), {}, {"supported": BAD_U})
    scalar("attrs", "check_set_memory_attributes", A.check_set_memory_attributes,
           (0x1000, 0x1000, 8, 0, 8), {}, {0: BAD_U, 1: BAD_U, 2: BAD_U, 3: BAD_U, 4: BAD_U})

    def mkinv():
        i = inv()
        i.begin()
        return i
    stateful("attrs", "MmuInvalidation", mkinv, "range_add", (1, 2), {}, {0: BAD_U, 1: BAD_U + [0]})
    stateful("attrs", "MmuInvalidation", mkinv, "retry_gfn", (0, 1), {}, {0: BAD_U, 1: BAD_U})
    scalar("attrs", "kvm_supported_mem_attributes", A.kvm_supported_mem_attributes, (True,), {}, {
        0: BAD_B})

    # ------------------------------------------------------------------ gmem
    def mkhost():
        return G.HostMemory(nr_pfns=1 << 16)
    stateful("gmem", "HostMemory", mkhost, "alloc", ("x",), {}, {"order": (-1, 19, "0", 1.5, None)})
    stateful("gmem", "HostMemory", mkhost, "free", (0x1000,), {}, {0: BAD_U, "order": (-1, "0")})
    scalar("gmem", "HostMemory", G.HostMemory, (), {}, {"base_pfn": BAD_U, "nr_pfns": BAD_U + [0]})

    def mkgm(release=False):
        k = G.StubKvm()
        g = G.GuestMemfd(k, 0x100000, host=mkhost())
        g.allocate(0, 0x4000)
        if release:
            g.release()
        return g
    stateful("gmem", "GuestMemfd", mkgm, "allocate", (0, 0x1000), {}, {
        0: BAD_U + [1, -4096], 1: BAD_U + [0, 0x1001]})
    stateful("gmem", "GuestMemfd", mkgm, "punch_hole", (0, 0x1000), {}, {
        0: BAD_U + [1, -4096], 1: BAD_U + [0, 0x1001]})
    stateful("gmem", "GuestMemfd", mkgm, "fallocate", (3, 0, 0x1000), {}, {
        0: BAD_U + [0, 4, 1 << 32], 1: BAD_U + [1], 2: BAD_U + [0x1001]})
    stateful("gmem", "GuestMemfd", mkgm, "memory_failure", (0,), {}, {0: BAD_U + [0x5000]})
    stateful("gmem", "GuestMemfd", mkgm, "migrate", (0,), {}, {0: BAD_U})
    stateful("gmem", "GuestMemfd", mkgm, "folio_of", (0,), {}, {0: BAD_U})
    stateful("gmem", "GuestMemfd", mkgm, "is_poisoned", (0,), {}, {0: BAD_U})
    stateful("gmem", "GuestMemfd", mkgm, "binding_at", (0,), {}, {0: BAD_U})
    stateful("gmem", "GuestMemfd", mkgm, "check_bind", (None, 1, 0), {}, {1: BAD_U, 2: BAD_U + [1]})
    stateful("gmem", "GuestMemfd", mkgm, "unbind", (None,), {}, {0: (None, 5)})
    for m, a in (("allocate", (0, 0x1000)), ("punch_hole", (0, 0x1000)),
                 ("fallocate", (3, 0, 0x1000))):
        add("gmem", f"GuestMemfd(released).{m}", "fd", ["released"],
            lambda v, m=m, a=a: (lambda g: (g, lambda: getattr(g, m)(*a)))(mkgm(True)))
    scalar("gmem", "GuestMemfd", lambda *a, **k: G.GuestMemfd(G.StubKvm(), *a, host=mkhost(), **k),
           (0x10000,), {}, {0: BAD_U + [0, 0x1001], "flags": BAD_U + [8], "folio_order": (1, -1, "0", 9.0)})
    scalar("gmem", "order_to_level", G.order_to_level, (0,), {}, {0: (-1, "0", None, 1.5, 64)})
    scalar("gmem", "max_order_at", G.max_order_at, (0, 0, 9), {}, {0: BAD_U, 1: BAD_U, 2: (-1, "9")})
    scalar("gmem", "supported_gmem_flags", G.supported_gmem_flags, (True,), {}, {0: BAD_B})

    # ------------------------------------------------------------------ vm
    def mkvm(kind="tdx"):
        vm = V.Vm(kind, host=G.HostMemory(nr_pfns=1 << 16))
        g = vm.create_guest_memfd(0x400000)
        vm.set_memory_region(0, 0, 0x200000, flags=V.KVM_MEM_GUEST_MEMFD, guest_memfd=g)
        vm.set_memory_region(1, 0x200000, 0x200000)
        vm.convert(0, 16)
        vm.fault(0x1000)
        vm.fault(0x201000 | (1 << 51))
        vm._probe_gmem = g
        return vm
    for kind in ("tdx", "sw_protected"):
        stateful("vm", f"Vm[{kind}]", lambda k=kind: mkvm(k), "fault", (0x2000,), {}, {
            0: BAD_U + [(1 << 64) + 0x1000], 1: BAD_U + [1 << 64], "race": (5,)})
        stateful("vm", f"Vm[{kind}]", lambda k=kind: mkvm(k), "set_memory_region",
                 (2, 0x400000, 0x1000), {}, {
                     0: BAD_U + [1 << 32, 32764], 1: BAD_U + [0x400001], 2: BAD_U + [0x1001],
                     "userspace_addr": BAD_OPTU + [0x7f0000000001], "flags": BAD_U + [8, 1 << 32],
                     "guest_memfd": (5, "g"), "guest_memfd_offset": BAD_U + [1]})
        stateful("vm", f"Vm[{kind}]", lambda k=kind: mkvm(k), "set_memory_attributes",
                 (0x10000, 0x1000, 8), {}, {0: BAD_U + [1], 1: BAD_U + [0], 2: BAD_U + [1],
                                            "flags": BAD_U + [1]})
        stateful("vm", f"Vm[{kind}]", lambda k=kind: mkvm(k), "convert", (0x10,), {}, {
            0: BAD_U, 1: BAD_U + [0], "private": BAD_B})
        stateful("vm", f"Vm[{kind}]", lambda k=kind: mkvm(k), "create_guest_memfd", (0x1000,), {}, {
            0: BAD_U + [0], 1: BAD_U + [4], "folio_order": (1, -1, "0")})
        stateful("vm", f"Vm[{kind}]", lambda k=kind: mkvm(k), "migrate_gfn", (1,), {}, {
            0: BAD_U + [0x300]})
        stateful("vm", f"Vm[{kind}]", lambda k=kind: mkvm(k), "slot_of", (1,), {}, {0: BAD_U})
        stateful("vm", f"Vm[{kind}]", lambda k=kind: mkvm(k), "is_private", (1,), {}, {0: BAD_U})
        stateful("vm", f"Vm[{kind}]", lambda k=kind: mkvm(k), "unmap_gfn_range", (None, 1, 2, 3), {}, {
            1: BAD_U, 2: BAD_U, 3: (-1, 4, "3")})

    def vm_gmem_flag(v):
        vm = mkvm("tdx")
        g = vm.create_guest_memfd(0x100000)
        return vm, lambda: vm.set_memory_region(5, 0x800000, 0x1000, guest_memfd=g)
    add("vm", "Vm.set_memory_region(guest_memfd without flag)", "guest_memfd", ["G"], vm_gmem_flag)

    def vm_poison(v):
        vm = mkvm("tdx")
        vm._probe_gmem.memory_failure(1)
        return vm, lambda: vm.migrate_gfn(1)
    add("vm", "Vm.migrate_gfn(hwpoisoned)", "gfn", [1], vm_poison)

    def vm_punch(v):
        vm = mkvm("tdx")
        return vm, lambda: vm.punch_hole(vm._probe_gmem, v, 0x1000)
    add("vm", "Vm.punch_hole(offset)", "offset", [-4096, 1, "0", None], vm_punch)
    # ------------------------------------------------------------------ wider sweep
    from pykvmmu import profile as PF, config as C
    for fn in ("is_frozen_spte", "is_executable_pte", "is_mmu_writable_spte", "is_host_writable_spte",
               "spte_ad_need_write_protect", "spte_needs_atomic_update",
               "check_spte_writable_invariants", "is_ept_ve_possible"):
        scalar("spte", fn, getattr(S, fn), (cfg, 0x12345b77), {}, {1: BAD_U})
    scalar("spte", "make_small_spte_batch", S.make_small_spte_batch,
           (cfg, np.array([0x200ef7], dtype=np.uint64), 1), {}, {
               1: bad_arrays, 2: (0, 5, -1, "1"), "index": (512, -1, "3", np.arange(4, dtype=np.int64)),
               "role_access": (8, -1), "nx_huge_pages": BAD_OB})
    overlap_cases("spte", "decode_batch", S.decode_batch, lambda n: np.zeros(n, dtype=np.uint64))
    scalar("spte", "decode_batch", S.decode_batch, (cfg, u64), {}, {"level": (0, 6, "1"),
                                                                  "threads": BAD_THREADS})
    def exact_alias(fn, *extra):
        def make(v):
            buf = np.full(8, 0x12345b77, dtype=np.uint64)
            return None, lambda: fn(cfg, buf, *extra, out=buf)
        return make
    for name, fn in (("spte_to_pfn_batch", S.spte_to_pfn_batch), ("access_track_batch", S.access_track_batch),
                     ("make_spte_batch", S.make_spte_batch),
                     ("get_mmio_spte_gfn_batch", M.get_mmio_spte_gfn_batch)):
        add("spte", f"{name}(out is in)", "out", ["alias"], exact_alias(fn))
    scalar("spte", "leaf_spte_change_needs_tlb_flush_batch", S.leaf_spte_change_needs_tlb_flush_batch,
           (cfg, u64, u64.copy()), {}, {1: bad_arrays, 2: bad_arrays + [np.zeros(3, dtype=np.uint64)],
                                        "threads": BAD_THREADS})
    for fn in ("get_mmio_spte_gfn", "get_mmio_spte_access", "get_mmio_spte_generation", "is_mmio_spte"):
        scalar("mmio", fn, getattr(M, fn), (cfg, 0x6), {}, {1: BAD_U})
    for fn in ("check_mmio_spte_batch", "mmio_fault_outcome_batch"):
        scalar("mmio", fn, getattr(M, fn), (cfg, u64, 0), {}, {1: bad_arrays, 2: BAD_U + [np.zeros(3, np.uint64)],
                                                              "threads": BAD_THREADS})
    scalar("mmio", "kvm_mmu_invalidate_mmio_sptes_batch", M.kvm_mmu_invalidate_mmio_sptes_batch,
           (cfg, u64 * np.uint64(2)), {}, {1: bad_arrays, "nr_as_ids": (0, 3, "2")})
    scalar("mmio", "make_mmio_spte_batch", M.make_mmio_spte_batch, (cfg, u64), {}, {
        "access": (8, -1, "7", np.zeros(3, np.uint64)), "generation": (-1, "0", 1.5),
        "threads": BAD_THREADS})
    scalar("mmio", "mmio_mask_violations", M.mmio_mask_violations, (npt,), {}, {
        1: BAD_OPTU, 2: BAD_OPTU, 3: BAD_OPTU, "mode": ("bogus", 3), 0: (None, "npt")})
    scalar("mmio", "ept_mmio_masks", M.ept_mmio_masks, (), {}, {"profile": ("v1.0", 3)})
    for fn in ("mmio_generation_mask", "mmio_generation_bits", "mmio_gfn_lost_bits",
               "mmio_caching_off_reasons"):
        scalar("mmio", fn, getattr(M, fn), (cfg,), {}, {0: (None, "ept", 3)})
    scalar("role", "pack_batch", R.pack_batch, ("v6.19", np.zeros(4, R.get_era("v6.19").base.dtype)), {}, {
        1: bad_arrays + [np.zeros((4, 3), np.uint8)], "threads": BAD_THREADS})
    scalar("role", "unpack_batch", R.unpack_batch, ("v6.19", np.zeros(4, np.uint32)), {}, {
        1: bad_arrays + [np.zeros(4, np.uint64)], "strict": BAD_B})
    scalar("role", "unpack_ext", R.unpack_ext, ("v5.4", 0), {}, {1: BAD_U + [1 << 32], "strict": BAD_B})
    scalar("role", "pack_cpu_role", R.pack_cpu_role, ("v5.4", {"level": 4}, {"valid": 1}), {}, {
        1: ({"level": 99}, None, 5), 2: ({"valid": 2}, None)})
    scalar("role", "cpu_role_unpack_batch", R.cpu_role_unpack_batch, ("v5.4", np.zeros(4, np.uint64)), {}, {
        1: bad_arrays + [np.zeros(4, np.uint32)], "strict": BAD_B})
    scalar("role", "kvm_calc_cpu_role", R.kvm_calc_cpu_role, ("v6.19", vs), {}, {1: (None, 5)})
    scalar("role", "kvm_calc_shadow_mmu_root_page_role", R.kvm_calc_shadow_mmu_root_page_role,
           ("v6.19", vs), {}, {1: (None, 5)})
    scalar("role", "shadow_root_sp_roles", R.shadow_root_sp_roles, ("v6.19", vs), {}, {1: (None, 5)})
    scalar("role", "find_collisions", R.find_collisions, ("v6.19",), {}, {0: ("v1.0", 5)})
    scalar("role", "VcpuState.replace", vs.replace, (), {}, {"cr4_pae": ("no", 2), "maxphyaddr": (60, -1)})
    scalar("sphash", "bucket_stats", SH.bucket_stats, (np.ones(8, np.uint64),), {}, {0: (None, "x", [[1, 2], [3]])})
    scalar("sphash", "format_stats", SH.format_stats, (SH.bucket_stats(np.ones(8, np.uint64)),), {}, {
        0: (None, {}, 5)})
    scalar("sphash", "ShadowPage", SH.ShadowPage, (1, 0x24), {}, {0: BAD_U, 1: BAD_U + [1 << 32]})
    scalar("private", "vm_type_name", P.vm_type_name, ("snp",), {}, {0: ("bogus", 9, None)})
    scalar("private", "has_private_mem", P.has_private_mem, ("snp",), {}, {0: ("bogus", 9, None)})
    scalar("private", "has_protected_state", P.has_protected_state, ("snp",), {}, {0: ("bogus", 9, None)})
    scalar("private", "MemoryFaultExit.for_fault", P.MemoryFaultExit.for_fault, (1, True, "r"), {}, {
        0: BAD_U + [1 << 52], 1: BAD_B})
    scalar("private", "policy_table", P.policy_table, (), {}, {
        "policies": (["bogus"], 5), "only_disagreements": BAD_B, "error_codes": (["bogus"], 5)})
    for pname_ in ("upstream", "rfc-v9", "mask", "three-way", "sw-pferr"):
        pol = P.get_policy(pname_)
        scalar("private", f"{pname_}.classify", pol.classify, (ctx, 0x1000, 0), {}, {1: BAD_U, 2: BAD_U})
    scalar("profile", "get_profile", PF.get_profile, ("v6.19",), {}, {0: ("v1.0", 3, 6.19)})
    scalar("config", "GENMASK", C.GENMASK, (51, 12), {}, {0: (64, -1, "51"), 1: (-1, 64, "12")})
    scalar("config", "rsvd_bits", C.rsvd_bits, (12, 51), {}, {0: (-1, 64, "12"), 1: (-1, 64, "51")})
    scalar("config", "ept_rsvd_table", C.ept_rsvd_table, (46, False, 3), {}, {
        0: (31, 53, "46"), 1: BAD_B, 2: (0, 4, "3"), "me_mask": BAD_U})
    scalar("config", "legacy_rsvd_table", C.legacy_rsvd_table, (46, 4, True, True, True), {}, {
        0: (31, 53, "46"), 1: (3, 6, "4"), 2: BAD_B, 3: BAD_B, 4: BAD_B})
    scalar("config", "kvm_mmu_set_mmio_spte_mask", C.kvm_mmu_set_mmio_spte_mask,
           (PF.get_profile("v6.19"), 0x6, 0x7, 6), {}, {
               0: (None, "v1.0"), 1: BAD_U, 2: BAD_U, 3: (-1, 1 << 32, "6"),
               "allow_mmio_caching": BAD_B, "strict_allowed_mask": BAD_OB})
    scalar("config", "MmuConfig.replace", cfg.replace, (), {}, {
        "maxphyaddr": (99, -1, "46"), "ad_enabled": ("no", 2), "nosuch": (1,)})
    scalar("config", "MmuConfig.all_presets", MmuConfig.all_presets, (), {}, {"profiles": (["v1.0"], 5)})

    def gm_bound():
        vm = mkvm("tdx")
        return vm
    stateful("gmem", "GuestMemfd", lambda: mkvm("tdx")._probe_gmem, "get_pfn", (None, 1), {}, {
        0: (None, 5)})
    def populate(v, p):
        vm = mkvm("sw_protected")
        g = vm._probe_gmem
        slot = vm.slot_of(0)
        args = {"slot": slot, "start_gfn": 0x20, "src": None, "npages": 2}
        args[p] = v
        return vm, lambda: g.populate(**args)
    for p, vals in {"start_gfn": BAD_U + [0x400], "npages": BAD_U, "post_populate": (5,),
                    "slot": (None, 5)}.items():
        add("gmem", f"GuestMemfd.populate({p})", p, vals, lambda v, p=p: populate(v, p))
    add("gmem", "GuestMemfd.release(twice)", "fd", ["released"],
        lambda v: (lambda g: (g, g.release))(mkgm(True)))
    scalar("gmem", "StubKvm", G.StubKvm, (), {}, {"has_private_mem": BAD_B, "hooks": (5,),
                                                 "is_private": (5,)})
    stateful("vm", "Vm[tdx]", lambda: mkvm("tdx"), "punch_hole", (None, 0, 0x1000), {}, {0: (None, 5)})
    add("vm", "Vm.punch_hole(len)", "len", [0, -4096, 0x1001],
        lambda v: (lambda vm: (vm, lambda: vm.punch_hole(vm._probe_gmem, 0, v)))(mkvm("tdx")))
    stateful("vm", "Vm[tdx]", lambda: mkvm("tdx"), "slot_kind", (1,), {}, {0: BAD_U})

    # every spte / mmio entry point with a configuration that is not an MmuConfig
    for mod, names in ((S, S.__all__), (M, M.__all__)):
        for fname in names:
            fn = getattr(mod, fname)
            if not callable(fn) or isinstance(fn, type):
                continue
            try:
                params = list(inspect.signature(fn).parameters)
            except (TypeError, ValueError):
                continue
            if not params or params[0] not in ("cfg", "config"):
                continue
            rest = {"make_spte": (1,), "make_nonleaf_spte": (0x5000,), "make_small_spte": (0x200ef7, 1, 3),
                    "make_huge_spte": (0x12345b77, 2), "predicate": ("is_large_pte", 1),
                    "is_last_spte": (1, 1), "is_rsvd_spte": (1, 1), "leaf_spte_change_needs_tlb_flush": (1, 2),
                    "decode": (1,), "make_mmio_spte": (1,), "check_mmio_spte": (1, 0),
                    "mmio_fault_outcome": (1, 0), "kvm_mmu_invalidate_mmio_sptes": (2,),
                    "generation_mmio_spte_mask": (2,), "set_mmio_spte_mask": (6, 7, 6),
                    "make_spte_batch": (u64,), "make_nonleaf_spte_batch": (u64 << np.uint64(12),),
                    "make_small_spte_batch": (np.zeros(1, np.uint64), 1),
                    "make_huge_spte_batch": (u64, 2), "access_track_batch": (u64,),
                    "predicate_batch": ("is_large_pte", u64), "spte_to_pfn_batch": (u64,),
                    "leaf_spte_change_needs_tlb_flush_batch": (u64, u64.copy()), "decode_batch": (u64,),
                    "make_mmio_spte_batch": (u64,), "check_mmio_spte_batch": (u64, 0),
                    "mmio_fault_outcome_batch": (u64, 0),
                    "kvm_mmu_invalidate_mmio_sptes_batch": (u64 * np.uint64(2),)}.get(fname)
            if rest is None:
                rest = (u64,) if fname.endswith("_batch") else (1,) if len(params) > 1 else ()
            scalar(mod.__name__.split(".")[-1], f"{fname}[cfg]", fn, (cfg,) + tuple(rest), {},
                   {0: (None, "ept")})

    def gm_vm():
        vm = mkvm("tdx")
        return vm._probe_gmem
    stateful("gmem", "GuestMemfd", gm_vm, "bind", (V.Memslot(7, 0x900, 4, 0x7f0000900000), 0x300000), {}, {
        0: (None, 5), 1: BAD_U + [1, 0x400000]})
    scalar("gmem", "GuestMemfd.index_of", G.GuestMemfd.index_of, (V.Memslot(7, 0x900, 4, 0), 0x901), {}, {
        0: (None, 5), 1: BAD_U + [0x800]})
    stateful("gmem", "HostMemory", mkhost, "is_allocated", (0x1000,), {}, {0: BAD_U})
    stateful("vm", "Vm[tdx]", lambda: mkvm("tdx"), "create_guest_memfd", (0x1000,), {}, {
        "folio_order": (1, -1, "0", 9.0)})
    scalar("vm", "Memslot", V.Memslot, (7, 0x900, 4, 0), {}, {
        0: BAD_U + [1 << 32], 1: BAD_U, 2: BAD_U + [0], 3: BAD_U, "flags": BAD_U + [1 << 32]})

    if os.environ.get("PYKVMMU_PROBE_SELFTEST"):
        _selftest_cases()
    for fn in (P.decide, P.kvm_mmu_do_page_fault, P.upstream_error_code):
        scalar("private", fn.__name__ + "[ctx]", fn, (ctx, 0x1000, 0), {}, {0: (None, 5, "snp")})
    scalar("private", "classify_batch[attrs]", P.classify_batch,
           ("snp", u64 << np.uint64(12), np.zeros(16, dtype=np.uint64)), {}, {
               "attrs": (5, "x", (np.zeros(2, np.uint64), np.zeros(3, np.uint64)))})
    scalar("vm", "Vm[objects]", V.Vm, ("tdx",), {"host": G.HostMemory(nr_pfns=1 << 12)}, {
        "hooks": (5, "snp"), "rmp": (5,), "cfg": (5, "ept"), "host": (5,), "policy": (5, object())})
    scalar("wflood", "kvm_mmu_track_write[page_hash]", W.kvm_mmu_track_write, ("v6.19", SH.MmuPageHash(), 0x1008, 8),
           {}, {1: (None, 5)})
    scalar("role", "get_page_role[era]", R.kvm_mmu_get_page_role, (None, 0x24), {"level": 1, "direct": False},
           {0: ("v1.0", 5, 4.2)})

    for preset in MmuConfig.PRESETS:
        scalar("config", f"preset({preset}, **kw)", MmuConfig.preset, (preset,), {}, {"bogus_option": (1,)})
    scalar("role", "RoleLayout.pack", R.get_era("v6.19").base.pack, ({"level": 1},), {}, {
        0: (None, 5, {"level": "x"}, {"level": 99})})
    for pname_ in ("upstream", "three-way"):
        pol = P.get_policy(pname_)
        scalar("private", f"{pname_}.resolve", pol.resolve, (ctx, pol.classify(ctx, 0x1000, 0)), {}, {
            0: (None, 5), 1: (None, (1, 2))})
    from pykvmmu import fuzz as FZ
    scalar("fuzz", "fuzz_random", FZ.fuzz_random, ("spte",), {"max_execs": 1, "quiet": True}, {
        0: ("bogus", None, 5), "seconds": (-1, float("nan"), "1"), "max_execs": (0, -1, 1.5)})
    scalar("fuzz", "fuzz_hypothesis", FZ.fuzz_hypothesis, ("spte",), {"max_execs": 1, "quiet": True}, {
        0: ("bogus", None), "seconds": (-1, float("inf"))})
    scalar("fuzz", "corpus_dir", FZ.corpus_dir, ("spte",), {}, {0: ("bogus", 5)})
    scalar("fuzz", "load_corpus", FZ.load_corpus, ("spte",), {}, {0: ("bogus", None)})
    scalar("fuzz", "replay", FZ.replay, (__file__, "spte"), {"emit": lambda s: None}, {1: ("bogus",)})
    scalar("fuzz", "FuzzInput", FZ.FuzzInput, (b"",), {}, {0: (5, None, "text")})

    scalar("vm", "Vm", V.Vm, ("snp",), {"host": G.HostMemory(nr_pfns=1 << 12)}, {
        "asid": (0, 5000, -1, "1", None, 1.5), "max_level": (0, 4, 7, "3"), "gpaw": (50, "52"),
        "folio_order": (1, "0"), 0: ("bogus", 9, None), "log": ("no", 2), "policy": ("bogus",)})
    build_new()


# ---------------------------------------------------------------------- modules of this session
def _kv_setattr(path, v):
    """A demo guest description with the field at ``path`` (dotted, [i] indexes) set to ``v``."""
    from pykvmmu import kvmrun as K
    d = K.demo_guest()
    obj = d
    parts = path.split(".")
    for p in parts[:-1]:
        name, _, idx = p.partition("[")
        obj = getattr(obj, name)
        if idx:
            obj = obj[int(idx[:-1])]
    setattr(obj, parts[-1], v)
    return d


def build_new():
    """Cases for rmp, walk, vcpu, perm, shadow, audit, trace, kvmrun, record, isa, profile,
    kfuzz (issue 11, second pass)."""
    import random
    from pykvmmu.config import MmuConfig
    from pykvmmu import rmp as RM, walk as WK, vcpu as VC, perm as PM, shadow as SD
    from pykvmmu import audit as AU, trace as TR, kvmrun as K, record as RC, isa as IS
    from pykvmmu import profile as PF, kfuzz as KF

    u64 = np.arange(4, dtype=np.uint64)
    bad_arrays = [list(range(4)), np.arange(4, dtype=np.int64), np.arange(8, dtype=np.uint64)[::2]]

    # ------------------------------------------------------------------ rmp
    npfn = 3 * 512 + 37

    def tab():
        return RM.RmpTable(np.zeros(RM.BOOKKEEPING + 16 * npfn, np.uint8))
    scalar("rmp", "RmpTable", RM.RmpTable, (np.zeros(RM.BOOKKEEPING + 16 * npfn, np.uint8),), {}, {
        0: (None, b"x", np.zeros(100, np.uint64)), "segmented": BAD_B, "seg_shift": BAD_U,
        "rmp_base": BAD_U, "flags": BAD_U})
    for m in ("covered", "entry", "snp_lookup_rmpentry", "lookup", "psmash", "dump_rmpentry"):
        stateful("rmp", "RmpTable", tab, m, (3,), {}, {0: BAD_U})
    stateful("rmp", "RmpTable", tab, "write_raw", (3, 1, 0), {}, {0: BAD_U, 1: BAD_U, 2: BAD_U})
    stateful("rmp", "RmpTable", tab, "set_in_use", (3,), {}, {0: BAD_U, 1: BAD_B})
    stateful("rmp", "RmpTable", tab, "page_state", (3,), {}, {0: BAD_U, "effective": BAD_B})
    stateful("rmp", "RmpTable", tab, "count_assigned", (0, 4), {}, {0: BAD_U, 1: BAD_U})
    stateful("rmp", "RmpTable", tab, "rmpupdate", (3,), {"gpa": 0x3000, "assigned": True, "asid": 1}, {
        0: BAD_U, "gpa": BAD_U, "assigned": ("no", None), "pagesize": (-1, "0", None),
        "immutable": ("no",), "asid": BAD_U + [1 << 32]})
    stateful("rmp", "RmpTable", tab, "rmpupdate_batch", (u64,), {"asid": 1}, {
        0: bad_arrays, 1: (5, np.arange(3, dtype=np.uint64)), "assigned": ("no", 2),
        "pagesize": (-1, 2, "0"), "asid": BAD_U})
    stateful("rmp", "RmpTable", tab, "pvalidate", (3,), {"asid": 1, "gfn": 3}, {
        0: BAD_U, "asid": BAD_U, "gfn": BAD_U, "size": (-1, "0"), "validate": ("no",),
        "vmpl": (-1, "0")})
    stateful("rmp", "RmpTable", tab, "rmpadjust", (3,), {"asid": 1, "gfn": 3, "target_vmpl": 1, "perms": 0}, {
        0: BAD_U, "target_vmpl": (-1, "1", None), "perms": BAD_U, "size": (-1,),
        "vmsa": ("no",), "vmpl": (-1,)})
    stateful("rmp", "RmpTable", tab, "rmp_make_private", (3, 0x3000, 1, 1), {}, {
        0: BAD_U, 1: BAD_U, 2: ("1", None), 3: BAD_U, "immutable": BAD_B})
    stateful("rmp", "RmpTable", tab, "rmp_make_shared", (3, 1), {}, {0: BAD_U, 1: ("1", None)})
    stateful("rmp", "RmpTable", tab, "host_check", (3,), {}, {0: BAD_U, 1: (0, 4, "1"), "user": BAD_B})
    stateful("rmp", "RmpTable", tab, "guest_check", (3, 3), {"asid": 1}, {
        0: BAD_U, 1: BAD_U, "asid": BAD_U, "vmpl": (-1, 4), "npt_level": (0, 4, "1"),
        "kind": ("bogus", None, 9), "c_bit": BAD_B, "snp_active": BAD_B, "user": BAD_B})
    stateful("rmp", "RmpTable", tab, "fields", (u64,), {}, {0: bad_arrays, "threads": BAD_THREADS})
    stateful("rmp", "RmpTable", tab, "page_states", (u64,), {}, {0: bad_arrays, "effective": BAD_B})
    stateful("rmp", "RmpTable", tab, "lookup_batch", (u64,), {}, {0: bad_arrays, "with_owner": BAD_B})
    stateful("rmp", "RmpTable", tab, "host_check_batch", (u64,), {}, {0: bad_arrays, 1: (0, 4, "1")})
    stateful("rmp", "RmpTable", tab, "guest_check_batch", (u64, u64.copy()), {"asid": 1}, {
        0: bad_arrays, 1: bad_arrays, "kind": ("bogus",), "user": BAD_B, "asid": BAD_U})
    stateful("rmp", "RmpTable", tab, "advise", ("normal",), {}, {0: ("bogus", None, 3)})
    scalar("rmp", "table_bytes", RM.table_bytes, (1 << 30,), {}, {0: BAD_U})
    scalar("rmp", "page_state_raw", RM.page_state_raw, (0,), {}, {0: BAD_U})
    scalar("rmp", "rmp_cfg_decode", RM.rmp_cfg_decode, (0,), {}, {0: BAD_U})
    scalar("rmp", "rst_entry", RM.rst_entry, (0, 1), {}, {0: BAD_U, 1: BAD_U})
    scalar("rmp", "make_lo", RM.make_lo, (), {}, {"assigned": (2, -1, "1"), "pagesize": (2, -1),
                                                 "gpa": BAD_U, "asid": BAD_U + [1 << 32], "vmsa": (2, "1")})
    scalar("rmp", "decode", RM.decode, (u64, u64.copy()), {}, {0: bad_arrays, 1: bad_arrays})
    scalar("rmp", "decode_dump", RM.decode_dump, ("",), {}, {0: (None, 5, b"x")})
    scalar("rmp", "kvm_max_private_mapping_level", RM.kvm_max_private_mapping_level, (3, 9), {}, {
        0: (0, 4, "3", None), 1: BAD_U, 2: (-1, 4, "1")})
    add("rmp", "sev_private_max_mapping_level", "pfn", BAD_U,
        lambda v: (lambda t: (t, lambda: RM.sev_private_max_mapping_level(t, v)))(tab()))
    add("rmp", "sev_private_max_mapping_level", "snp", BAD_B,
        lambda v: (lambda t: (t, lambda: RM.sev_private_max_mapping_level(t, 3, snp=v)))(tab()))
    for p, vals in {"gpa": BAD_U, "error_code": BAD_U, "pfn": BAD_OPTU, "is_private": BAD_B,
                    "has_gmem": BAD_B}.items():
        def mk(v, p=p):
            t = tab()
            kw = {"pfn": 3, "error_code": 0}
            kw[p] = v
            return t, lambda: RM.sev_handle_rmp_fault(t, kw.pop("gpa", 0x3000), **kw)
        add("rmp", f"sev_handle_rmp_fault({p})", p, vals, mk)
    for p, vals in {"pte_present": BAD_B, "pte_pfn": BAD_U, "level": (0, 4, "1", None),
                    "address": BAD_U}.items():
        def mk(v, p=p):
            t = tab()
            kw = {"pte_present": True, "pte_pfn": 3, "level": 1, "address": 0x1000}
            kw[p] = v
            return t, lambda: RM.handle_user_rmp_page_fault(t, **kw)
        add("rmp", f"handle_user_rmp_page_fault({p})", p, vals, mk)
    scalar("rmp", "sev_private_max_mapping_level[table]", RM.sev_private_max_mapping_level, (None, 3), {},
           {0: (5, "t")})
    scalar("rmp", "handle_user_rmp_page_fault[table]", RM.handle_user_rmp_page_fault, (None,),
           {"pte_present": True, "pte_pfn": 3, "level": 1, "address": 0x1000}, {0: (5, "t")})

    # ------------------------------------------------------------------ vcpu
    scalar("vcpu", "Vcpu", VC.Vcpu, (), {}, {
        "cr0": BAD_U + [1 << 32], "cr4": BAD_U + [1 << 32], "efer": BAD_U, "cr3": BAD_U,
        "rflags": BAD_U, "pkru": BAD_U + [1 << 32], "pkrs": BAD_U + [1 << 32],
        "maxphyaddr": bad_int(32, 52), "gbpages": BAD_B, "amd": BAD_B, "smm": BAD_B,
        "guest_mode": BAD_B, "pdptrs": (5, "x", (1, 2), (1, 2, 3, "4"))})
    stateful("vcpu", "Vcpu", VC.Vcpu, "replace", (), {}, {"cr0": ("1", -1), "nosuch": (1,)})
    stateful("vcpu", "Vcpu", VC.Vcpu, "cpu_role", (), {}, {0: ("v1.0", None, 3)})
    stateful("vcpu", "Vcpu", VC.Vcpu, "root_role", (), {}, {
        0: ("v1.0", None), 1: ("bogus", None, 3), "tdp_level": (3, 6, "4"), "ad_enabled": BAD_B})
    stateful("vcpu", "Vcpu", VC.Vcpu, "shadow_root_sp_roles", (), {}, {0: ("v1.0", None)})
    scalar("vcpu", "EptContext", VC.EptContext, (0x5e,), {}, {
        0: BAD_U, "execonly": BAD_B, "huge_page_level": (0, 4, "3", None), "maxphyaddr": bad_int(32, 52),
        "smm": BAD_B})
    ctx = VC.EptContext(0x5e)
    scalar("vcpu", "EptContext.cpu_role", ctx.cpu_role, (), {}, {0: ("v1.0", None), 1: (5, "x")})
    scalar("vcpu", "EptContext.root_role", ctx.root_role, (), {}, {0: ("v1.0", None), 1: (5, "x")})
    for cm in ("long_mode", "pae", "legacy32", "real_mode"):
        scalar("vcpu", f"Vcpu.{cm}", getattr(VC.Vcpu, cm), (), {}, {"cr3": ("0", -1), "bogus": (1,)})

    # ------------------------------------------------------------------ perm
    model = PM.PermissionModel.build(cr0_wp=True, cr4_smep=True, cr4_smap=True, efer_nx=True,
                                     cr4_pke=True)
    scalar("perm", "update_permission_bitmask", PM.update_permission_bitmask, (True, True, True, True), {}, {
        0: BAD_B, 1: BAD_B, 2: BAD_B, 3: BAD_B, "ept": BAD_B})
    scalar("perm", "update_pkru_bitmask", PM.update_pkru_bitmask, (True, True), {}, {
        0: BAD_B, 1: BAD_B, "cr4_pks": BAD_B})
    scalar("perm", "PermissionModel.build", PM.PermissionModel.build, (),
           {"cr0_wp": True, "cr4_smep": True, "cr4_smap": True, "efer_nx": True}, {
               "cr0_wp": BAD_B, "cr4_pke": BAD_B, "ept": BAD_B})
    scalar("perm", "PermissionModel", PM.PermissionModel, (bytes(16), 0), {}, {
        0: (None, 5, b"x"), 1: BAD_U + [1 << 32], "ept": BAD_B})
    scalar("perm", "permission_fault", PM.permission_fault, (model, 7, 2), {}, {
        0: (None, 5), 1: bad_int(0, 7), 2: BAD_U, "pte_pkey": bad_int(0, 15), "rflags": BAD_U,
        "pkru": BAD_U + [1 << 32], "pkrs": BAD_U + [1 << 32]})
    scalar("perm", "PermissionModel.fault", model.fault, (7, 2), {}, {0: bad_int(0, 7), 1: BAD_U})
    a8 = np.zeros(4, np.uint8)
    scalar("perm", "permission_fault_batch", PM.permission_fault_batch, (model, a8 + 7, np.full(4, 2, np.uint64)), {}, {
        0: (None, 5), 1: (list(range(4)), np.full(4, 8, np.uint8), np.zeros(3, np.uint8), None),
        2: (list(range(4)), np.zeros(5, np.uint8), None), "pte_pkey": (np.full(4, 16, np.uint8), [0] * 4),
        "rflags_ac": ([1] * 4, np.zeros(2, np.uint8)), "pkru": BAD_U + [1 << 32], "pkrs": BAD_U})
    scalar("perm", "pfec_str", PM.pfec_str, (3,), {}, {0: BAD_U})

    # ------------------------------------------------------------------ walk
    vc = VC.Vcpu.long_mode()

    def mem():
        m = WK.GuestMemory()
        m.write(0x1000, 0x2003)
        return m
    mmu = WK.GuestMmu.for_vcpu(vc)
    scalar("walk", "GuestMmu.for_vcpu", WK.GuestMmu.for_vcpu, (vc,), {}, {
        0: (None, 5), 1: ("v1.0", None), 2: ("bogus", None, 3), "tdp_level": (3, 6, "4", None)})
    scalar("walk", "GuestMmu.for_ept", WK.GuestMmu.for_ept, (ctx,), {}, {0: (None, vc), 1: ("v1.0", None)})
    for m in ("index", "gpte_to_gfn_lvl", "lvl_offset_gfn", "is_rsvd", "is_last"):
        scalar("walk", f"GuestMmu.{m}", getattr(mmu, m), (0x1000, 1), {}, {0: BAD_U, 1: bad_int(1, 4) + [0]})
    scalar("walk", "GuestMmu.is_present", mmu.is_present, (3,), {}, {0: BAD_U})
    scalar("walk", "GuestMemory", WK.GuestMemory, (), {}, {0: bad_int(32, 52)})
    stateful("walk", "GuestMemory", mem, "read", (0x1000,), {}, {0: BAD_U + [1 << 52], 1: (0, 3, 16, -1, "8", None)})
    stateful("walk", "GuestMemory", mem, "write", (0x1000, 5), {}, {
        0: BAD_U + [1 << 52, 0x1ffc], 1: BAD_U, 2: (0, 3, 16, -1, "8", None)})
    stateful("walk", "GuestMemory", mem, "write", (0x1000, 5, 4), {}, {1: (1 << 32,)})
    for p, vals in {"mmu": (None, 5), "addr": BAD_U, "access": BAD_U + [1 << 3], "mem": (None, 5),
                    "write_back": BAD_B, "pte_writable": (5, "x"), "visible": (5,)}.items():
        def mk(v, p=p):
            m = mem()
            kw = {"mmu": mmu, "addr": 0x1000, "access": 2, "mem": m}
            kw[p] = v
            return m, lambda: WK.walk_addr(**kw)
        add("walk", f"walk_addr({p})", p, vals, mk)
    scalar("walk", "walk_observed", WK.walk_observed, (mmu, 0x1000, 2, [0x2003]), {}, {
        0: (None, 5), 1: BAD_U, 2: BAD_U, 3: (None, 5, ["x"], [-1], [1 << 64]), "walker_error": BAD_OPTU})
    w = WK.walk_observed(mmu, 0x1000, 2, [0x2003, 0x3003, 0x4003, 0x5003])
    scalar("walk", "shadow_pages", WK.shadow_pages, (mmu, w), {}, {
        0: (None, 5), 1: (None, 5), "goal_level": (0, 6, "1", -1)})
    scalar("walk", "rsvd_bits_mask", WK.rsvd_bits_mask, (4, 0, True, True, True, False), {}, {
        0: (1, 6, 0, "4", None), 1: BAD_U, 2: BAD_B, 3: BAD_B, 4: BAD_B, 5: BAD_B})
    scalar("walk", "ept_bad_mt_xwr", WK.ept_bad_mt_xwr, (True,), {}, {0: BAD_B})
    scalar("walk", "gpte_access", WK.gpte_access, ("64", 7), {}, {0: ("bogus", None, 64), 1: BAD_U})
    scalar("walk", "decode_entry", WK.decode_entry, ("x86-64", 0x1003), {}, {
        0: ("bogus", None, 5), 1: BAD_U, 2: (0, 6, "1", None), "maxphyaddr": bad_int(32, 52),
        "execonly": BAD_B, "gbpages": BAD_B})
    scalar("walk", "replay_records", WK.replay_records, (mmu, []), {}, {0: (5, "x"), 1: (None, 5, [5])})
    scalar("walk", "Walk.fault_pte_access", w.fault_pte_access, (mmu,), {}, {0: (None, 5)})

    # ------------------------------------------------------------------ shadow
    cfg = MmuConfig.shadow()
    role = 0x24

    def smmu():
        s = SD.ShadowMmu()
        s.get(0x10, role)
        return s
    for m in ("lookup", "alloc", "get"):
        stateful("shadow", "ShadowMmu", smmu, m, (0x20, role), {}, {0: BAD_U, 1: BAD_U + [1 << 32]})
    stateful("shadow", "ShadowMmu", smmu, "any_page", (0x20, role), {}, {0: BAD_U, 1: BAD_U, 2: BAD_OPTU})
    for m in ("valid_pages_with_gptes", "is_write_tracked"):
        stateful("shadow", "ShadowMmu", smmu, m, (0x20,), {}, {0: BAD_U})
    stateful("shadow", "ShadowMmu", smmu, "prepare_zap", (None,), {}, {0: (None, 5, "sp")})
    stateful("shadow", "ShadowMmu", smmu, "mmu_try_to_unsync_pages", (0x10,), {}, {
        0: BAD_U, 1: BAD_B, 2: BAD_B, 3: BAD_B})
    scalar("shadow", "ShadowMmu", SD.ShadowMmu, (), {}, {
        "page_hash": (5, None), "write_track": (5, None), "indirect_shadow_pages": BAD_U,
        "used_pages": BAD_U})
    for p, vals in {"cfg": (None, "ept"), "mmu": (5, "x"), "sp_role": BAD_U + [1 << 32], "gfn": BAD_U,
                    "pfn": BAD_U, "pte_access": bad_int(0, 7), "old_spte": BAD_OPTU, "prefetch": BAD_B,
                    "synchronizing": BAD_B, "host_writable": BAD_B, "dirty_tracked": BAD_B,
                    "host_mmio": BAD_B, "ad_wrprot_only": BAD_B, "apply": BAD_B}.items():
        def mk(v, p=p):
            s = smmu()
            kw = {"cfg": cfg, "mmu": s, "sp_role": role, "gfn": 0x10, "pfn": 0x99, "pte_access": 7}
            kw[p] = v
            return s, lambda: SD.make_spte_outcome(**kw)
        add("shadow", f"make_spte_outcome({p})", p, vals, mk)
    scalar("shadow", "is_access_allowed", SD.is_access_allowed, (cfg, 0x12345b77, "read"), {}, {
        0: (None, "ept"), 1: BAD_U, 2: ("bogus", None, 2)})
    scalar("shadow", "mark_spte_for_access_track_warnings", SD.mark_spte_for_access_track_warnings,
           (cfg, 0x12345b77), {}, {0: (None, "ept"), 1: BAD_U})
    scalar("shadow", "modify_spte_protections", SD.modify_spte_protections, (cfg, 0x12345b77, 0, 2), {}, {
        0: (None, "ept"), 1: BAD_U, 2: BAD_U, 3: BAD_U, 4: BAD_B})

    # ------------------------------------------------------------------ audit
    scalar("audit", "Auditor", AU.Auditor, (), {}, {
        0: (5, "ept", MmuConfig.ept()), 1: ("v1.0", None, 3), "host_writable": (5, "x"),
        "zero_page_min_gfns": (1, 0, "2", 2.5, None, True), "keep_agreed": BAD_B,
        "guest_gbpages": BAD_B, "guest_amd": BAD_B, "memslots": (5, [5], [{"gpa": 1, "size": 4096}]),
        "slot_changes": (5, [5], [{"action": "bogus"}]), "host_zero_pfn": (0, -1, "1", 1.5, True, U64),
        "dirty_log": (5, {"a": [1]}, {0: 5}), "mmio_exits": (5, [-1], ["x"]),
        "runs_done": (-1, "1", 1.5, True)})
    scalar("audit", "audit_records", AU.audit_records, ([],), {}, {
        0: (None, 5), 1: (5, "ept"), 2: ("v1.0", None), "keep_agreed": BAD_B, "bogus": (1,)})
    scalar("audit", "audit", AU.audit, (os.path.join(os.path.dirname(HERE), "tests", "data", "live",
                                                       "demo.kvmcap"),), {}, {
        0: (None, 5), 1: (5, "ept"), 2: ("v1.0", 5), "profile": ("v1.0", 5), "maxphyaddr": bad_int(32, 52),
        "mmio_caching": BAD_B, "nx_huge_pages": BAD_B, "bogus": (1,)})
    scalar("audit", "live_config", AU.live_config, (), {}, {
        0: bad_int(32, 52), 1: ("v1.0", None, 5), 2: BAD_B, 3: BAD_B})
    scalar("audit", "vcpu_from_root", AU.vcpu_from_root, ("v6.18", 0x24), {}, {
        0: ("v1.0", None), 1: BAD_U + [1 << 32], 2: BAD_U, "maxphyaddr": bad_int(32, 52), "gbpages": BAD_B,
        "amd": BAD_B})
    scalar("audit", "spte_bit_names", AU.spte_bit_names, (cfg, 3), {}, {0: (None, "ept"), 1: BAD_U})
    scalar("audit", "role_bit_names", AU.role_bit_names, ("v6.18", 3), {}, {0: ("v1.0", None), 1: BAD_U})
    rep = AU.AuditReport()
    scalar("audit", "AuditReport.add", rep.add, (None,), {}, {0: (None, 5)})
    scalar("audit", "AuditReport.total", rep.total, ("agree",), {}, {0: (None, 5, "bogus")})
    scalar("audit", "AuditReport.format_table", rep.format_table, (), {}, {0: (-1, "5", 1.5, None)})

    # ------------------------------------------------------------------ trace
    data = os.path.join(os.path.dirname(HERE), "tests", "data")
    txt = os.path.join(data, "trace_ftrace_v6.txt")
    line = "      qemu-1234  [001] ....  100.000001: kvm_mmu_get_page: sp gfn 0 l4 4-byte q0 direct wux !nxe !ad root 0 sync"
    scalar("trace", "open_trace", TR.open_trace, (txt,), {"era": "v6.14"}, {
        0: (None, 5, os.path.join(data, "nosuch.txt")), 1: ("v1.0", 5), "mode": ("bogus", 5),
        "spte_decoder": (5, "x"), "all_events": BAD_B, "check_era": BAD_B,
        "max_errors": (-1, "5", 1.5, None), "on_error": (5, "x")})
    scalar("trace", "parse", TR.parse, ([line],), {}, {0: (None, 5, [5]), 1: ("v1.0", 5, None),
                                                       2: (5, "x")})
    scalar("trace", "parse_file", TR.parse_file, (txt, "v6.14"), {}, {0: (None, 5), 1: ("v1.0", 5), 2: (5,)})
    scalar("trace", "parse_line", TR.parse_line, (line,), {}, {
        0: (None, 5, b"x"), 1: (-1, "1", 1.5, None), 2: ("v1.0", 5, None), 3: (5, "x"), 4: BAD_B})
    scalar("trace", "summary", TR.summary, (TR.parse([line]),), {}, {0: (None, 5)})
    scalar("trace", "to_numpy", TR.to_numpy, (TR.parse([line]),), {}, {0: (None, 5)})
    scalar("trace", "default_spte_decoder", TR.default_spte_decoder, (), {}, {
        0: ("bogus", 5), 1: (5,), 2: ("v1.0", 5), 3: ("x.y", 5), 4: (5, "ept")})
    scalar("trace", "spte_profile_for", TR.spte_profile_for, ("latest",), {}, {0: ("bogus", 5), 1: (5, "x.y")})
    scalar("trace", "era_for_release", TR.era_for_release, ("6.8.0",), {}, {0: (None, 5, "x.y")})
    scalar("trace", "era_arg", TR.era_arg, ("latest",), {}, {0: ("v1.0", 5)})
    scalar("trace", "detect_format", TR.detect_format, (b"# tracer",), {}, {0: (None, 5, "text")})
    scalar("trace", "format_record", TR.format_record, (TR.parse([line]).records[0],), {}, {0: (None, 5)})
    scalar("trace", "zap_reason", TR.zap_reason, (TR.parse([line]).records[0],), {}, {0: (None, 5)})
    scalar("trace", "Summary", TR.Summary, ("latest",), {}, {0: ("v1.0", 5)})
    scalar("trace", "TraceStream", TR.TraceStream, ("x",), {}, {0: (None, 5), 1: (-1, "5", None)})

    # ------------------------------------------------------------------ kvmrun (descriptions only)
    def desc_case(path, vals):
        add("kvmrun", f"GuestDesc.check({path})", path.split(".")[-1], vals,
            lambda v: (lambda d: (d, d.check))(_kv_setattr(path, v)))
    for path, vals in {
            "memslots[0].slot": BAD_U + [0x8000], "memslots[0].gpa": BAD_U + [0x1001, 1 << 48],
            "memslots[0].size": BAD_U + [0, 0x1001, (1 << 32) + 4096], "memslots[0].flags": ("readonly", [5], None),
            "memslots[0].guest_memfd": BAD_B,
            "page_tables.levels": (3, 6, "4", None, 4.0), "page_tables.base": BAD_U + [0x10001],
            "page_tables.size": BAD_U + [0, 0x1001], "page_tables.window_gva": BAD_OPTU + [0x1001],
            "page_tables.mappings": (None, 5, [5]),
            "page_tables.mappings[0].gva": BAD_U + [0x1001], "page_tables.mappings[0].gpa": BAD_U + [0x1001],
            "page_tables.mappings[0].page": ("1G", None, 4096), "page_tables.mappings[0].count": BAD_U + [0],
            "page_tables.mappings[0].present": BAD_B, "page_tables.mappings[0].w": BAD_B,
            "page_tables.mappings[0].nx": BAD_B, "page_tables.mappings[0].d": BAD_B,
            "registers.cr0_wp": BAD_B, "registers.cr4_smep": BAD_B, "registers.efer_nx": BAD_B,
            "registers.cr4_pke": BAD_B,
            "runs[0].program[0].kind": ("bogus", None, 5), "runs[0].program[0].addr": BAD_U,
            "runs[0].program[0].value": BAD_U, "runs[0].program[0].flush": ("bogus", None, 5),
            "runs[0].program": (None, 5, [5]), "runs[0].changes": (None, 5, [5]), "runs": (None, 5, [5]),
            "memslots": (None, 5, [5], []),
            "code_gpa": BAD_U + [0x1001], "code_gva": BAD_U + [0x1001], "code_pages": BAD_U + [0],
            "stack_gpa": BAD_U + [0x1001], "stack_gva": BAD_U + [0x1001], "vif_gpa": BAD_U + [0x1001],
            "timeout": (0, -1, "5", None, float("nan"), float("inf"), True)}.items():
        desc_case(path, vals)
    sc = K.SlotChange("delete", 1)
    for f, vals in {"action": ("bogus", None, 5), "slot": BAD_U + [0x8000], "gpa": BAD_U + [0x1001],
                    "flags": ("readonly", [5], None)}.items():
        def mk(v, f=f):
            c = K.SlotChange("move" if f == "gpa" else "delete", 1, 0x400000)
            setattr(c, f, v)
            return c, lambda: c.check("c")
        add("kvmrun", f"SlotChange.check({f})", f, vals, mk)
    del sc
    scalar("kvmrun", "load_desc", K.load_desc, ("x",), {}, {0: (None, 5, os.path.join(data, "nosuch.json"),
                                                              os.path.join(data, "trace_v5_0.txt"))})
    scalar("kvmrun", "demo_guest", K.demo_guest, (), {}, {0: BAD_B})
    scalar("kvmrun", "build_page_tables", K.build_page_tables, (4, 0x10000, 0x10000, []), {}, {
        0: (3, 6, "4", None), 1: BAD_U + [0x10001], 2: BAD_U + [0], 3: (None, 5, [5])})
    d0 = K.demo_guest()
    scalar("kvmrun", "GuestDesc.slot_of", d0.slot_of, (0x1000,), {}, {0: BAD_U})
    hi = K.HostInfo("pvm", 12, {"guest_memfd": 0, "user_memory2": 0, "guest_memfd_flags": 0}, False,
                    ["kvm_pvm"])
    scalar("kvmrun", "host_refusal", K.host_refusal, (d0, hi), {}, {0: (None, 5), 1: (None, 5, "x")})
    scalar("kvmrun", "run_guest[desc]", K.run_guest, (None,), {}, {0: (None, 5, {"memslots": []})})
    for m, n in (("mov_imm", 2), ("store", 2), ("load", 2), ("call", 1), ("jmp", 1), ("invlpg", 1),
                 ("mov_to_cr3", 1), ("mov_from_cr3", 1)):
        args = (0, 0)[:n]
        params = {0: (-1, 16, "0", None, 1.5)}
        if n == 2:
            params[1] = ((1 << 64), -1, "0", None) if m == "mov_imm" else (-1, 16, "0", None)
        scalar("kvmrun", f"Asm.{m}", getattr(K.Asm(), m), args, {}, params)

    # ------------------------------------------------------------------ record (no recording)
    scalar("record", "Recorder", RC.Recorder, (), {}, {
        0: (5, [5], "", ["bogus/x/y"]), "buffer_kb": (0, 63, 1 << 21, "64", 1.5, None, True),
        "tracefs": (5,), "text": BAD_B, "all_tasks": BAD_B,
        "drain_interval": (0, -1, 61, "0.1", True), "progress": (5, "x")})
    scalar("record", "read_capture", RC.read_capture, (os.path.join(data, "live", "demo.kvmcap"),), {}, {
        0: (None, 5, os.path.join(data, "nosuch.kvmcap"), os.path.join(data, "trace_v5_0.txt"))})
    cap = RC.read_capture(os.path.join(data, "live", "demo.kvmcap"))
    scalar("record", "write_capture", RC.write_capture, ("/nonexistent-dir/x.kvmcap", cap), {}, {
        0: (None, 5), 1: (None, 5, {})})
    scalar("record", "tracing_snapshot", RC.tracing_snapshot, ("/nonexistent",), {}, {0: (None, 5)})
    scalar("record", "lost_events", RC.lost_events, ({},), {}, {0: (None, 5, {"x": "y"}, {0: -1})})

    # ------------------------------------------------------------------ isa, profile
    scalar("isa", "level", IS.level, ("baseline",), {}, {0: ("bogus", None, 5, 1.5)})
    scalar("profile", "profile_for_version", PF.profile_for_version, ("6.8",), {}, {
        0: (None, 6.8, 5, "x.y", b"6.8"), "warn": BAD_B})
    scalar("profile", "get_profile[types]", PF.get_profile, ("v6.19",), {}, {0: (None, b"v6.19", ["v6.19"])})
    scalar("profile", "describe_version", PF.describe_version, ("6.8",), {}, {0: (None, 6.8, "x.y")})
    scalar("profile", "require", PF.require, (PF.get_profile("v6.19"), "has_tdx", "r"), {}, {
        0: (None, "v6.19"), 1: ("bogus", None, 5), 2: (None, 5)})

    # ------------------------------------------------------------------ kfuzz (no guest runs)
    scalar("kfuzz", "random_desc", KF.random_desc, (random.Random(1),), {}, {0: (None, 5, "seed"),
                                                                            1: (5, "x")})
    scalar("kfuzz", "mutate", KF.mutate, (K.demo_guest(), random.Random(1)), {}, {
        0: (None, {}), 1: (None, 1), 2: (5,), "tries": (0, -1, "50", 1.5, None)})
    scalar("kfuzz", "runnable_problem", KF.runnable_problem, (K.demo_guest(),), {}, {0: (None, 5, {})})
    scalar("kfuzz", "load_corpus", KF.load_corpus, (), {}, {0: (5, os.path.join(data, "nosuch"))})
    scalar("kfuzz", "fuzz_kernel", _no_guests(KF.fuzz_kernel), (), {"runs": 1, "use_corpus": False}, {
        "seconds": (0, -1, "60", None, float("nan"), True, 86401), "runs": (0, -1, "1", 1.5, True),
        "seed": ("1", 1.5, True), "out_dir": (None, 5), "keep_going": BAD_B, "audit": BAD_B,
        "shrink_s": (-1, "1", None, 3601), "progress": (5, "x"), "corpus": (5, os.path.join(data, "nosuch")),
        "use_corpus": BAD_B})
    scalar("kfuzz", "replay_kernel", _no_guests(KF.replay_kernel), (os.path.join(data, "live", "demo.kvmcap"),),
           {"live": False, "emit": lambda s: None}, {0: (None, 5, os.path.join(data, "nosuch.kvmcap")),
                                                    1: ("no", 2, 1.5), "emit": (5, None)})
    scalar("kfuzz", "judge[desc]", _no_guests(KF.judge), (None, None), {}, {0: (None, 5)})
    scalar("kfuzz", "shrink[budget]", _no_guests(KF.shrink), (K.demo_guest(), (), hi), {}, {
        "budget_s": (-1, "1", None, 3601), 0: (None, 5), 2: (None, 5)})


def _no_guests(fn):
    """``fn`` with every way to start a guest or a recording replaced by a refusal that the
    probe counts as "other": a bad argument that got that far was not checked up front."""
    import functools
    from pykvmmu import kvmrun as K, record as RC

    @functools.wraps(fn)
    def wrapped(*a, **kw):
        saved = (K.detect_host, K.run_guest, RC.Recorder.__enter__)

        def refuse(*_a, **_k):
            raise RuntimeError("probe: would start a guest or a recording (argument not checked first)")
        K.detect_host = K.run_guest = RC.Recorder.__enter__ = refuse
        try:
            return fn(*a, **kw)
        finally:
            K.detect_host, K.run_guest, RC.Recorder.__enter__ = saved
    return wrapped


def _selftest_cases():
    """Known-bad cases that show the probe is not blind (tests/test_trust_probe.py)."""
    from pykvmmu.errors import InputError

    class Box:
        def __init__(self):
            self.n = 0

        def bump_then_fail(self, v):
            self.n += 1
            raise InputError(f"v={v!r}: refused too late")

    add("selftest", "silent", "v", [1], lambda v: (None, lambda: None))
    add("selftest", "other", "v", [1], lambda v: (None, lambda: [].remove(v)))
    add("selftest", "unclear", "v", [1], lambda v: (None, lambda: (_ for _ in ()).throw(InputError("no"))))
    add("selftest", "half", "v", [1], lambda v: (lambda b: (b, lambda: b.bump_then_fail(v)))(Box()))
    def die():
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))      # no core file
        os.abort()
    add("selftest", "crash", "v", [1], lambda v: (None, die))
    add("selftest", "clear", "v", [7], lambda v: (None, lambda: (_ for _ in ()).throw(InputError("v=7: no"))))


def classify(exc, param, value, changed):
    from pykvmmu.errors import PykvmmuError
    if exc is None:
        return "silent"
    if changed:
        return "half"
    if not isinstance(exc, PykvmmuError):
        return "other"
    msg = str(exc)
    names = [str(param)] if isinstance(param, str) else []
    reprs = {repr(value), str(value)}
    if isinstance(value, int) and not isinstance(value, bool):
        reprs |= {f"{value:#x}", f"-{-value:#x}", hex(value)}
    if isinstance(value, (dict, list)):         # a container: naming a bad member is naming it
        names += [str(k) for k in value]
    if any(n and n in msg for n in names) or any(r and r in msg for r in reprs):
        return "clear"
    return "unclear"


def run_child(start: int) -> None:
    """Run cases from ``start`` on, one line per case (a crash leaves a case unanswered)."""
    from pykvmmu._check import snapshot
    build()
    out = sys.stdout
    for i in range(start, len(CASES)):
        module, label, param, value, thunk = CASES[i]
        out.write(f"S {i}\n")
        out.flush()
        exc = None
        changed = False
        try:
            obj, call = thunk()
            before = snapshot(obj) if obj is not None else None
        except Exception as e:     # noqa: BLE001 - a setup failure is a probe bug
            out.write(f"R {i} setup {type(e).__name__}: {e}\n")
            continue
        try:
            call()
        except Exception as e:     # noqa: BLE001 - classifying every exception is the point
            exc = e
        if exc is not None and obj is not None:
            changed = snapshot(obj) != before
        cat = classify(exc, param, value, changed)
        msg = "" if exc is None else f"{type(exc).__name__}: {str(exc)[:160]}"
        out.write(f"R {i} {cat} {msg}\n".replace("\r", " "))
        out.flush()


def main(argv) -> int:
    if argv[:1] == ["--child"]:
        run_child(int(argv[1]))
        return 0
    verbose = "-v" in argv
    build()
    n = len(CASES)
    results = {}
    start = 0
    while start < n:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(start)],
                           capture_output=True, text=True,
                           env={**os.environ, "PYKVMMU_THREADS": "1"})
        last = None
        for line in p.stdout.splitlines():
            if line.startswith("S "):
                last = int(line.split()[1])
            elif line.startswith("R "):
                _, i, rest = line.split(" ", 2)
                cat, _, msg = rest.partition(" ")
                results[int(i)] = (cat, msg)
                last = None
        if last is not None:
            results[last] = ("crash", f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")
            start = last + 1
        else:
            if p.returncode and len(results) < n:
                print(p.stderr, file=sys.stderr)
                return 2
            start = n
    counts = Counter(c for c, _ in results.values())
    per_mod = {}
    for i, (cat, msg) in sorted(results.items()):
        module, label, param, value, _ = CASES[i]
        per_mod.setdefault(module, Counter())[cat] += 1
        if verbose and cat != "clear":
            print(f"{cat:8s} {label} = {value!r}: {msg}")
    print(f"inputs tried: {n}")
    for cat in ("clear", "unclear", "other", "silent", "crash", "half", "setup"):
        print(f"  {cat:8s} {counts.get(cat, 0)}")
    for m, c in per_mod.items():
        print(f"  [{m}] " + " ".join(f"{k}={v}" for k, v in sorted(c.items())))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:         # piped into head: stop quietly
        sys.stderr.close()
