"""The simulated VM (csrc/vm.c, pykvmmu/vm.py): Vm.fault throughput on a random workload of
200K operations, and ``kvmmu_vm_tdp_map`` (one fault's TDP walk and leaf install) against its
pure-Python reference twin (pykvmmu.ref.vm), interleaved.

Groups:
- ``vm.fault random workload``: operations per second of a random SNP workload (faults, 1 in 64
  a conversion, 1 in 256 a punch hole), timed by the workload itself (VM setup excluded).  Most
  of its faults repeat an earlier (gpa, error_code) and are answered by Vm's fault cache
  (``Vm._fc``), so the same rounds also time, interleaved: ``no cache``, the same workload with
  the cache off (``Vm._fc_store`` a no-op, as tests/test_vm_cache.py does it: every fault walks),
  and ``first faults``, a fresh VM whose every fault maps a page not yet mapped (none can hit
  the cache).  The cache hit rate of the workload is counted on one more, untimed, run.  Each
  workload runs ``gc.collect()`` before its clock starts: a VM is a reference cycle (hooks,
  guest_memfd and attribute callbacks point back at it), so a dead VM of an earlier round is
  freed by whichever later full collection comes first, and would otherwise be charged to
  another case (a first-fault VM holds 200K pages of state).
- ``scalar vm.tdp_map``: the C walk + install called once per fault on the table pool of an SNP
  VM after a fault workload (re-installing mapped leaves with their own pfn and level, so the
  pool does not change, and reading the entries of unmapped gfns, which stop above the leaf
  level), as a loop of direct cffi calls; against the reference on the same pool, as plain
  lists, on ``PYKVMMU_BENCH_REF_N`` of the calls, and a no-op Python call; ns per call (in the
  report's scalar table).
"""
import gc
import os
import time

import numpy as np

from conftest import N, REF_N, interleaved
from pykvmmu import private as P
from pykvmmu import spte as S
from pykvmmu._ffi import ffi, lib
from pykvmmu.config import ACC_ALL
from pykvmmu.ref import vm as R

#: Operations of the Vm.fault workload at the full size (the issue's workload).
VM_FULL = 200_000
#: Operations of the Vm.fault workload (VM_FULL at the full size; scaled down with PYKVMMU_BENCH_N).
VM_FAULTS = int(os.environ.get("PYKVMMU_BENCH_VM_FAULTS", min(VM_FULL, max(N // 64, 10_000))))
#: kvmmu_vm_tdp_map calls per round of the core (the reference runs REF_N of them).
TDP_CALLS = max(REF_N, min(N // 256, 65536))


def _snp_vm(npages=16384):
    """An SNP VM with one guest_memfd memslot of ``npages`` pages, the first half private."""
    from pykvmmu.vm import KVM_MEM_GUEST_MEMFD, Vm
    vm = Vm("snp")
    g = vm.create_guest_memfd(npages << 12)
    vm.set_memory_region(0, 0, npages << 12, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    vm.convert(0, npages // 2, True)
    return vm, g


def _no_fc_store(*args):
    """``Vm._fc_store`` with the fault cache off: nothing is remembered, every fault walks."""
    return None


def vm_workload(n, seed=7, cache=True, count_hits=False):
    """n random faults on an SNP VM with 64 MiB of guest_memfd memory, 1 in 64 a conversion, 1 in
    256 a punch hole; returns (seconds, outcome counts).  ``cache=False``: the VM's fault cache
    off; ``count_hits``: ``cache_hits`` in the counts, the faults answered by the cache (they
    return the very outcome object the cache holds afterwards; a walk returns a new one and
    stores only its fields), at the cost of a wrapper around each fault (then the time is not
    the workload's)."""
    rng = np.random.default_rng(seed)
    npages = 16384
    vm, g = _snp_vm(npages)
    if not cache:
        vm._fc_store = _no_fc_store
    hits = [0]
    if count_hits:
        fault = vm.fault

        def counted(gpa, error_code):
            o = fault(gpa, error_code)
            cached = vm._fc.get(gpa >> 12)
            hits[0] += cached is not None and o is cached[2]
            return o
        vm.fault = counted
    gfns = rng.integers(0, npages + 64, n).tolist()        # a few MMIO gfns past the slot
    kinds = rng.integers(0, 256, n).tolist()
    enc = P.PFERR_GUEST_ENC_MASK
    gc.collect()            # earlier workloads' cyclic garbage (dead VMs) is not this one's cost
    t = time.perf_counter()
    for gfn, k in zip(gfns, kinds):
        if k < 4:
            vm.convert(gfn, 1, bool(k & 1))
        elif k == 4:
            vm.punch_hole(g, min(gfn, npages - 1) << 12, 4096)
        else:
            vm.fault(gfn << 12, enc if vm.is_private(gfn) ^ (k == 5) else 0)
    dt = time.perf_counter() - t
    vm.check()
    stats = dict(vm.stats)
    if count_hits:
        stats["cache_hits"] = hits[0]
    return dt, stats


def first_fault_workload(n, seed=7):
    """n faults on a fresh SNP VM of n guest_memfd pages (the first half private), each gfn
    once in random order with its own privacy: every fault maps a page not yet mapped (a new 4K
    leaf, tables allocated on the way), so none can be answered by the fault cache; returns
    (seconds, outcome counts) (VM setup excluded)."""
    gfns = np.random.default_rng(seed).permutation(n).tolist()
    vm, _ = _snp_vm(n)
    enc = P.PFERR_GUEST_ENC_MASK
    gc.collect()
    t = time.perf_counter()
    for gfn in gfns:
        vm.fault(gfn << 12, enc if vm.is_private(gfn) else 0)
    dt = time.perf_counter() - t
    vm.check()
    return dt, dict(vm.stats)


#: Cases of the Vm.fault group: kind -> workload (each returns (seconds, counts)).
VM_CASES = {"core": lambda: vm_workload(VM_FAULTS),
            "no cache": lambda: vm_workload(VM_FAULTS, cache=False),
            "first faults": lambda: first_fault_workload(VM_FAULTS)}


def test_vm_fault_throughput(benchmark):
    """Script-style: the random workload (``core``, target: >= 250,000 operations per second),
    the same with the fault cache off and the first-fault workload, interleaved, a few rounds,
    each timed by the workload itself (VM setup excluded).  The warm-up run of each is checked:
    the cache changes no outcome count, and every first fault mapped a page."""
    def check(r):
        assert r["core"][1] == r["no cache"][1], (r["core"][1], r["no cache"][1])
        assert r["first faults"][1]["mapped"] == r["first faults"][1]["faults"] == VM_FAULTS
    res = interleaved(benchmark, "vm.fault random workload", VM_CASES, elements=VM_FAULTS,
                      rounds=5, check=check, bench_rounds=1, workload=True, self_timed=True,
                      full_elements=VM_FULL,
                      targets=({"subject": "core", "max_ns": 1e9 / 250_000,
                                "label": ">= 250,000 ops/s"},))
    _, stats = vm_workload(VM_FAULTS, count_hits=True)
    assert {k: v for k, v in stats.items() if k != "cache_hits"} == res["core"][1]
    benchmark.extra_info.update(stats, first_faults_stats=res["first faults"][1])
    ns = {k: v or [res[k][0] / VM_FAULTS * 1e9] for k, v in           # (warm-up if not timed)
          benchmark.extra_info["ns_per_elem"].items()}
    print(f"\nvm.fault: {VM_FAULTS} operations; median ops/s "
          + ", ".join(f"{k} {1e9 / np.median(v):,.0f}" for k, v in ns.items())
          + f"; cache hits {stats['cache_hits']} of {stats['faults']} faults; {stats}")


def _tdp_calls(n, seed=11):
    """A faulted SNP VM and n kvmmu_vm_tdp_map argument tuples (gfn, level, pfn, flags): three in
    four re-install a mapped leaf (its own pfn and level: the pool stays as it is), one in four
    reads the 4K entry of an unmapped gfn."""
    rng = np.random.default_rng(seed)
    vm, _ = _snp_vm()
    enc = P.PFERR_GUEST_ENC_MASK
    for gfn in rng.integers(0, 16384 + 64, 8192).tolist():
        vm.fault(gfn << 12, enc if vm.is_private(gfn) else 0)
    mapped = [(base, lv, pfn) for base, (lv, pfn, kind) in vm.leaves["direct"].items()
              if kind != "mmio"]
    pick = rng.integers(0, len(mapped), n).tolist()
    holes = rng.integers(1 << 20, 1 << 30, n).tolist()     # far from the slot: no tables there
    calls = [(mapped[p][0], mapped[p][1], mapped[p][2], lib.KVMMU_VM_F_MAKE) if i % 4 else
             (holes[i], 1, 0, 0) for i, p in enumerate(pick)]
    return vm, calls


def _noop(*a):
    """The ``call`` baseline: a Python function that does nothing (the floor of any call)."""
    return None


def test_tdp_map(benchmark):
    """One fault's kvmmu_vm_tdp_map per call, as a loop of direct cffi calls on prebuilt
    arguments, interleaved with the reference on the same pool (plain lists) and with a no-op
    Python call; reported with the scalar calls (ns per call, loop included)."""
    vm, calls = _tdp_calls(TDP_CALLS)
    cfg, t = vm.cfg, vm._tdp
    root = vm._pt_idx[vm.roots["direct"]]
    mk, mt = vm._mk, S.MEMTYPE_AUTO
    out_spte, out_level = ffi.new("uint64_t *"), ffi.new("uint32_t *")
    fn = lib.kvmmu_vm_tdp_map
    before = vm._tbl.copy()
    ref_tbl, ref_child = vm._tbl.ravel().tolist(), vm._child.ravel().tolist()
    npages, levels, nonpresent = int(t.npages), int(t.levels), int(t.nonpresent)
    core_args = [(vm._c, t, root, gfn, level, pfn, ACC_ALL, mk, mt, flags, out_spte, out_level)
                 for gfn, level, pfn, flags in calls]
    ref_args = [(cfg, ref_tbl, ref_child, npages, levels, nonpresent, root, gfn, level, pfn,
                 ACC_ALL, mk, mt, flags) for gfn, level, pfn, flags in calls[:REF_N]]
    tdp_map = R.tdp_map

    def check(r):
        assert r["core"][:len(ref_args)] == [x.code for x in r["reference"]]
        assert set(r["core"]) == {lib.KVMMU_VM_OK, lib.KVMMU_VM_BLOCKED}, set(r["core"])
        for a, want in zip(core_args, r["reference"]):      # the SPTE and stop level too
            assert (fn(*a), out_spte[0], out_level[0]) == tuple(want)
        assert np.array_equal(vm._tbl, before)              # re-installs write the same SPTEs
        assert vm._tbl.ravel().tolist() == ref_tbl and vm._child.ravel().tolist() == ref_child
        vm.check()
    interleaved(benchmark, "scalar vm.tdp_map", {
        "core": lambda: [fn(*a) for a in core_args],
        "reference": (lambda: [tdp_map(*a) for a in ref_args], len(ref_args)),
        "call": lambda: [_noop(*a) for a in core_args],
    }, elements=len(core_args), check=check, scalar=True)
