"""Issue 14: the fault cache of ``Vm.fault`` (a repeated fault answered from the outcome it
had) never changes an answer: two VMs run the same random operations, one with the cache
disabled, and every outcome, the statistics and the final state agree."""
import zlib

import numpy as np
import pytest

from pykvmmu import private as P
from pykvmmu.gmem import GmemError
from pykvmmu.vm import KVM_MEM_GUEST_MEMFD, Vm, VmError

NPAGES = 2048


def _vm(t, policy, folio_order):
    vm = Vm(t, policy=policy, folio_order=folio_order)
    g = vm.create_guest_memfd(NPAGES << 12)
    vm.set_memory_region(0, 0, NPAGES << 12, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    vm.set_memory_region(1, 1 << 30, 64 << 12)                  # a plain slot
    vm.convert(0, NPAGES // 2, True)
    return vm, g


def _ops(t, n, seed):
    rng = np.random.default_rng(seed)
    shared = P.gfn_direct_bits(t) << 12
    ecs = (0, P.PFERR_GUEST_ENC_MASK, P.PFERR_RSVD_MASK | 1, P.PFERR_PRIVATE_ACCESS, 2)
    out = []
    for _ in range(n):
        k = int(rng.integers(0, 100))
        gfn = int(rng.integers(0, NPAGES + 32))
        if k < 70:
            gpa = (gfn << 12) | (shared if rng.integers(0, 4) == 0 else 0)
            if rng.integers(0, 16) == 0:
                gpa = (1 << 30) + (int(rng.integers(0, 64)) << 12)
            out.append(("fault", gpa | int(rng.integers(0, 2)) * 0x123, ecs[rng.integers(0, 5)]))
        elif k < 82:
            out.append(("convert", min(gfn, NPAGES - 1), int(rng.integers(1, 600)) if k == 81
                        else 1, bool(k & 1)))
        elif k < 88:
            out.append(("punch", min(gfn, NPAGES - 1)))
        elif k < 90:
            out.append(("poison", min(gfn, NPAGES - 1)))
        elif k < 92:
            out.append(("migrate", min(gfn, NPAGES - 1)))
        elif k < 94:
            out.append(("race", gfn << 12))
        elif k < 95:
            out.append(("max_level", int(rng.integers(1, 4))))
        elif k < 96:
            out.append(("sw_protected", bool(rng.integers(0, 2))))
        elif k < 97:
            out.append(("memslot",))
        else:
            out.append(("fault_again",))
    return out


def _apply(vm, g, op, last):
    kind = op[0]
    try:
        if kind == "fault":
            return vm.fault(op[1], op[2])
        if kind == "fault_again":
            return vm.fault(*last) if last else None
        if kind == "convert":
            return vm.convert(op[1], min(op[2], NPAGES - op[1]), op[3])
        if kind == "punch":
            return vm.punch_hole(g, op[1] << 12, 4096)
        if kind == "poison":
            return g.memory_failure(op[1]) if g.folio_of(op[1]) else None
        if kind == "migrate":
            return vm.migrate_gfn(op[1]) if g.folio_of(op[1]) else None
        if kind == "race":
            return vm.fault(op[1], P.PFERR_GUEST_ENC_MASK if vm.is_private(op[1] >> 12) else 0,
                            race=lambda: vm.convert(op[1] >> 12, 1, not vm.is_private(op[1] >> 12)))
        if kind == "memslot":                               # delete or re-create the plain slot
            return vm.set_memory_region(1, 0 if len(vm.slots) == 2 else 1 << 30,
                                        0 if len(vm.slots) == 2 else 64 << 12)
        if kind == "max_level":
            vm.max_level = op[1]
            return None
        vm.sw_protected_enabled = op[1]
        return None
    except (GmemError, VmError) as e:
        return ("error", type(e).__name__, str(e))


def _state(vm):
    s = dict(vm.__dict__)
    return (s["stats"], {r: dict(v) for r, v in vm.leaves.items()}, vm.attrs.ranges(),
            vm.invalidation.snapshot(), vm._tbl.tobytes(), vm.generation)


@pytest.mark.parametrize("folio_order", [0, 9])
@pytest.mark.parametrize("policy", ["upstream", "rfc-v9", "three-way"])
@pytest.mark.parametrize("t", ["snp", "tdx", "sw_protected"])
def test_cache_never_changes_an_outcome(t, policy, folio_order):
    cached, gc = _vm(t, policy, folio_order)
    plain, gp = _vm(t, policy, folio_order)
    plain._fc_store = lambda *a: None                       # the cache off: every fault walks
    plain.vm_id = cached.vm_id                              # (TDX SEAMCALLs name the VM)
    last, used = None, 0
    for i, op in enumerate(_ops(t, 1500, seed=zlib.crc32(f"{t}{policy}{folio_order}".encode()))):
        a, b = _apply(cached, gc, op, last), _apply(plain, gp, op, last)
        assert a == b, (i, op, a, b)
        used += bool(cached._fc)
        if op[0] == "fault":
            last = op[1:]
    assert _state(cached) == _state(plain)
    assert used > 100 and not plain._fc                     # the cache was in use
    cached.check()
    plain.check()


def test_cache_is_exact_about_its_arguments():
    """A cached fault is found only for the same plain ints: bools, numpy integers, bad
    ``race`` values and out-of-range values take the checked path (the same refusals)."""
    vm, g = _vm("snp", "upstream", 0)
    enc = P.PFERR_GUEST_ENC_MASK
    first = vm.fault(0x5000, enc)
    again = vm.fault(0x5000, enc)
    assert first.kind == "mapped" and again.kind == "spurious" and vm._fc
    assert vm.fault(np.uint64(0x5000), enc) == again            # checked path, same answer
    for bad in (0x5000 + (1 << 64), -0x5000, 20480.0, "0x5000"):
        with pytest.raises(VmError):
            vm.fault(bad, enc)
    with pytest.raises(VmError):
        vm.fault(0x5000, enc, race=1)
    with pytest.raises(VmError):
        vm.fault(0x5000, enc + (1 << 64))
    with pytest.raises(VmError):
        vm.max_level = 4
    with pytest.raises(VmError):
        vm.gmem_hooks = object()
    with pytest.raises(P.PrivateFaultError):
        vm.policy = "nope"
    assert vm.fault(0x5000, enc) == again
