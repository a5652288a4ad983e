"""Private/shared fault classification over 16M faults (C core vs plain numpy vs the pure-Python
reference), and Vm.fault throughput on a 1M-fault random workload.

The numpy formulation computes the same three outputs (gfn, error code with bit 49, is_private)
and the collision count, with preallocated outputs; it is checked once against the core.
"""
import os
import time

import numpy as np
import pytest

from conftest import CORE_THREADS, N, REF_N, bench, core_kinds, memcpy_case
from pykvmmu import private as P
from pykvmmu.ref import private as R

U = np.uint64
SYN = U(P.PFERR_SYNTHETIC_MASK)
PRIV = U(P.PFERR_PRIVATE_ACCESS)
ENC = U(P.PFERR_GUEST_ENC_MASK)
VM_FAULTS = int(os.environ.get("PYKVMMU_BENCH_VM_FAULTS", 1_000_000))


@pytest.fixture(scope="module")
def faults(rng):
    gpa = rng.integers(0, 1 << 52, N, dtype=np.uint64)
    ec = rng.integers(0, 1 << 37, N, dtype=np.uint64) & U(0x1F_8000_007F)
    return gpa, ec


def numpy_classify(vm_type, gpa, ec, out_gfn, out_ec, out_p, tmp):
    """Plain numpy, same rule: clear synthetic bits, SNP ENC->PRIVATE / TDX shared bit clear ->
    PRIVATE, strip the shared bit from the gfn, is_private = bit 49."""
    nsyn = int(np.count_nonzero(np.bitwise_and(ec, SYN, out=tmp)))
    np.bitwise_and(ec, ~SYN, out=out_ec)
    if vm_type == P.KVM_X86_SNP_VM:
        np.bitwise_and(out_ec, ENC, out=tmp)
        np.left_shift(tmp, U(15), out=tmp)
        np.bitwise_or(out_ec, tmp, out=out_ec)
        np.right_shift(gpa, U(12), out=out_gfn)
    else:
        direct = U(1 << 51)
        np.bitwise_and(gpa, direct, out=tmp)
        np.equal(tmp, U(0), out=out_p)
        np.left_shift(out_p.astype(np.uint64), U(49), out=tmp)
        np.bitwise_or(out_ec, tmp, out=out_ec)
        np.bitwise_and(gpa, ~direct, out=out_gfn)
        np.right_shift(out_gfn, U(12), out=out_gfn)
    np.not_equal(np.bitwise_and(out_ec, PRIV, out=tmp), U(0), out=out_p)
    return nsyn


@core_kinds
@pytest.mark.parametrize("vm", ["snp", "tdx"])
def test_classify_core(benchmark, faults, vm, core):
    gpa, ec = faults
    outs = (np.empty_like(gpa), np.empty_like(gpa), np.empty(N, dtype=np.bool_))
    bench(benchmark, f"private.classify 16M {vm}", core, N, P.classify_batch, vm, gpa, ec,
          out_gfn=outs[0], out_ec=outs[1], out_private=outs[2], threads=CORE_THREADS[core])


@pytest.mark.parametrize("vm", ["snp", "tdx"])
def test_classify_numpy(benchmark, faults, vm):
    gpa, ec = faults
    vt = P.vm_type_number(vm)
    og, oe, op, tmp = np.empty_like(gpa), np.empty_like(gpa), np.empty(N, dtype=np.bool_), np.empty_like(gpa)
    ns = numpy_classify(vt, gpa, ec, og, oe, op, tmp)
    g, e, p, ns2 = P.classify_batch(vm, gpa, ec)
    assert (g == og).all() and (e == oe).all() and (p == op).all() and ns == ns2
    bench(benchmark, f"private.classify 16M {vm}", "numpy", N, numpy_classify, vt, gpa, ec, og, oe, op, tmp)


@pytest.mark.parametrize("vm", ["snp", "tdx"])
def test_classify_memcpy(benchmark, vm):
    memcpy_case(benchmark, f"private.classify 16M {vm}", N * 16, N)


@pytest.mark.parametrize("vm", ["snp", "tdx"])
def test_classify_reference(benchmark, faults, vm):
    gpa, ec = faults
    g = [int(x) for x in gpa[:REF_N]]
    e = [int(x) for x in ec[:REF_N]]
    bench(benchmark, f"private.classify 16M {vm}", "reference", REF_N, R.classify_many,
          P.vm_type_number(vm), g, e)


def vm_workload(n, seed=7):
    """n random faults on an SNP VM with 64 MiB of guest_memfd memory, 1 in 64 a conversion, 1 in
    256 a punch hole; returns (seconds, outcome counts)."""
    from pykvmmu.vm import KVM_MEM_GUEST_MEMFD, Vm
    rng = np.random.default_rng(seed)
    vm = Vm("snp")
    npages = 16384
    g = vm.create_guest_memfd(npages << 12)
    vm.set_memory_region(0, 0, npages << 12, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    vm.convert(0, npages // 2, True)
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
    """Script-style: one round of the 1M-fault workload; ns per operation is the figure."""
    benchmark.group = "vm.fault 1M random workload"
    benchmark.extra_info.update(kind="core", elements=VM_FAULTS)
    res = benchmark.pedantic(vm_workload, args=(VM_FAULTS,), rounds=1, iterations=1)
    dt, stats = res
    benchmark.extra_info.update(stats)
    print(f"\nvm.fault: {VM_FAULTS} operations in {dt:.2f}s = {VM_FAULTS / dt:,.0f}/s; {stats}")
