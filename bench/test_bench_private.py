"""Private/shared fault classification over 16M faults (C core vs a same-traffic copy, plain
numpy and the pure-Python reference, interleaved).  The Vm.fault workload is in
bench/test_bench_vm.py.

The numpy formulation computes the same three outputs (gfn, error code with bit 49, is_private)
and the collision count into preallocated outputs, in cache-sized blocks; it is checked against
the core.
"""
import numpy as np
import pytest

from conftest import N, REF_N, assert_same, blocks, interleaved, same_traffic_copy, tmp
from pykvmmu import private as P
from pykvmmu.ref import private as R

U = np.uint64
SYN = U(P.PFERR_SYNTHETIC_MASK)
PRIV = U(P.PFERR_PRIVATE_ACCESS)
ENC = U(P.PFERR_GUEST_ENC_MASK)


@pytest.fixture(scope="module")
def faults(rng):
    gpa = rng.integers(0, 1 << 52, N, dtype=np.uint64)
    ec = rng.integers(0, 1 << 37, N, dtype=np.uint64) & U(0x1F_8000_007F)
    return gpa, ec


def _classify_block(vm_type, gpa, ec, out_gfn, out_ec, out_p, t, nsyn):
    np.bitwise_and(ec, SYN, out=t)
    nsyn[0] += int(np.count_nonzero(t))
    np.bitwise_and(ec, ~SYN, out=out_ec)
    if vm_type == P.KVM_X86_SNP_VM:
        np.bitwise_and(out_ec, ENC, out=t)
        np.not_equal(t, U(0), out=out_p)
        np.left_shift(t, U(15), out=t)                  # ENC (34) -> PRIVATE_ACCESS (49)
        np.bitwise_or(out_ec, t, out=out_ec)
        np.right_shift(gpa, U(12), out=out_gfn)
    else:
        direct = U(1 << 51)
        np.bitwise_and(gpa, direct, out=t)
        np.equal(t, U(0), out=out_p)                     # shared bit clear: private
        np.left_shift(out_p, U(49), out=t, dtype=U)
        np.bitwise_or(out_ec, t, out=out_ec)
        np.bitwise_and(gpa, ~direct, out=out_gfn)
        np.right_shift(out_gfn, U(12), out=out_gfn)


def numpy_classify(vm_type, gpa, ec, out_gfn, out_ec, out_p, t):
    """Plain numpy, same rule: clear synthetic bits (counting the inputs that had them), SNP
    ENC -> PRIVATE / TDX shared bit clear -> PRIVATE, strip the shared bit from the gfn,
    is_private = bit 49; cache-sized blocks.  Returns the collision count."""
    nsyn = [0]
    blocks(lambda *a: _classify_block(vm_type, *a, nsyn), (gpa, ec, out_gfn, out_ec, out_p), (t,))
    return nsyn[0]


@pytest.mark.parametrize("vm", ["snp", "tdx"])
def test_classify(benchmark, faults, vm):
    gpa, ec = faults
    vt = P.vm_type_number(vm)
    outs = [(np.empty_like(gpa), np.empty_like(gpa), np.empty(N, dtype=np.bool_)) for _ in range(3)]
    t = tmp(U)
    g = [int(x) for x in gpa[:REF_N]]
    e = [int(x) for x in ec[:REF_N]]

    def core(o, threads=None):
        return P.classify_batch(vm, gpa, ec, out_gfn=o[0], out_ec=o[1], out_private=o[2], threads=threads)

    def check(r):
        want = r["alloc"]
        for k in ("core", "core1t"):
            for a, b in zip(r[k][:3], want[:3]):
                assert_same(a, b)
            assert r[k][3] == want[3]
        for a, b in zip(outs[2], want[:3]):
            assert_same(a, b)
        assert r["numpy"] == want[3]
        assert [(a, b, c) for a, b, c, _ in r["reference"]] == list(zip(
            want[0][:len(g)].tolist(), want[1][:len(g)].tolist(), want[2][:len(g)].tolist()))
    interleaved(benchmark, f"private.classify 16M {vm}", {
        "core": lambda: core(outs[0]),
        "core1t": lambda: core(outs[1], 1),
        "alloc": lambda: P.classify_batch(vm, gpa, ec),
        "memcpy": same_traffic_copy(16, 17),
        "numpy": lambda: numpy_classify(vt, gpa, ec, *outs[2], t),
        "reference": (lambda: R.classify_many(vt, g, e), len(g)),
    }, check=check, in_bytes=16, out_bytes=17,
        targets=({"subject": "core1t", "vs": "memcpy", "min": 0.9},
                 {"subject": "core1t", "vs": "numpy", "min": 3.0}))
