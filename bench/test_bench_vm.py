"""The simulated VM (csrc/vm.c, pykvmmu/vm.py): Vm.fault throughput on a random workload of
200K operations, and ``kvmmu_vm_tdp_map`` (one fault's TDP walk and leaf install) against its
pure-Python reference twin (pykvmmu.ref.vm), interleaved.

Groups:
- ``vm.fault random workload``: operations per second of a random SNP workload (faults, 1 in 64
  a conversion, 1 in 256 a punch hole), timed by the workload itself (VM setup excluded).
- ``scalar vm.tdp_map``: the C walk + install called once per fault on the table pool of an SNP
  VM after a fault workload (re-installing mapped leaves with their own pfn and level, so the
  pool does not change, and reading the entries of unmapped gfns, which stop above the leaf
  level), as a loop of direct cffi calls; against the reference on the same pool, as plain
  lists, on ``PYKVMMU_BENCH_REF_N`` of the calls, and a no-op Python call; ns per call (in the
  report's scalar table).
"""
import os
import time

import numpy as np

from conftest import N, REF_N, interleaved
from pykvmmu import private as P
from pykvmmu import spte as S
from pykvmmu._ffi import ffi, lib
from pykvmmu.config import ACC_ALL
from pykvmmu.ref import vm as R

#: Operations of the Vm.fault workload (200K at the full size; scaled down with PYKVMMU_BENCH_N).
VM_FAULTS = int(os.environ.get("PYKVMMU_BENCH_VM_FAULTS", min(200_000, max(N // 64, 10_000))))
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


def vm_workload(n, seed=7):
    """n random faults on an SNP VM with 64 MiB of guest_memfd memory, 1 in 64 a conversion, 1 in
    256 a punch hole; returns (seconds, outcome counts)."""
    rng = np.random.default_rng(seed)
    npages = 16384
    vm, g = _snp_vm(npages)
    gfns = rng.integers(0, npages + 64, n).tolist()        # a few MMIO gfns past the slot
    kinds = rng.integers(0, 256, n).tolist()
    enc = P.PFERR_GUEST_ENC_MASK
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
    return dt, dict(vm.stats)


def test_vm_fault_throughput(benchmark):
    """Script-style: the random workload, a few rounds; the figure is operations per second
    (target: >= 250,000 per second), timed by the workload itself (VM setup excluded)."""
    runs = []

    def run():
        runs.append(vm_workload(VM_FAULTS))
        return runs[-1]
    interleaved(benchmark, "vm.fault random workload", {"core": run}, elements=VM_FAULTS, rounds=3,
                targets=({"subject": "core", "max_ns": 1e9 / 250_000, "label": ">= 250,000 ops/s"},),
                warmup=False, bench_rounds=1, workload=True)
    timed = runs[:benchmark.extra_info["rounds"]] or runs[:1]     # the interleaved rounds
    benchmark.extra_info["ns_per_elem"] = {"core": [dt / VM_FAULTS * 1e9 for dt, _ in timed]}
    dt, stats = runs[0]
    benchmark.extra_info.update(stats)
    print(f"\nvm.fault: {VM_FAULTS} operations in {dt:.2f}s = {VM_FAULTS / dt:,.0f}/s; {stats}")


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
