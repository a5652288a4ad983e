"""Memslot generation life cycle: start values, in-progress bit, increments, wrap zap, and a
2^19+ update run that never accepts a stale MMIO SPTE."""
import numpy as np
import pytest

from pykvmmu import mmio as M
from pykvmmu.config import MmuConfig
from pykvmmu.errors import InputError
from pykvmmu.memslots import MemslotGenerations, generation_sequence, kvm_arch_nr_memslot_as_ids
from pykvmmu.ref import mmio as R

BIT63 = 1 << 63


def test_start_values_and_increment():
    c = MmuConfig.ept()
    vm = MemslotGenerations(c)
    assert vm.nr_as_ids == 2 == kvm_arch_nr_memslot_as_ids(False)
    assert (vm.generation(0), vm.generation(1)) == (0, 1)
    vm.update(0)
    vm.update(1)
    vm.update(1)
    assert (vm.generation(0), vm.generation(1)) == (2, 5)      # AS0 even, AS1 odd
    pv = MemslotGenerations(c, private_mem=True)
    assert pv.nr_as_ids == 1 and pv.generation(0) == 0
    pv.update(0)
    assert pv.generation(0) == 1
    with pytest.raises(InputError, match="as_id"):
        pv.generation(1)


def test_in_progress_window():
    c = MmuConfig.npt()
    vm = MemslotGenerations(c)
    vm.update(0)
    before = vm.make_mmio_spte(0x1234, 7)
    assert vm.fault(before) == "emulate"
    vm.begin_update(0)
    assert vm.generation(0) == 2 | BIT63 and vm.in_progress(0)
    assert vm.fault(before) == "update_in_progress"
    assert not vm.check(before)
    # An SPTE rebuilt during the update carries the pre-update generation ...
    during = vm.make_mmio_spte(0x1234, 7)
    assert during == before
    with pytest.raises(InputError, match="already in progress"):
        vm.begin_update(0)
    vm.end_update(0)
    # ... and is stale once the update completes; a fresh one is accepted.
    assert vm.fault(during) == "stale"
    assert vm.fault(vm.make_mmio_spte(0x1234, 7)) == "emulate"
    assert vm.fault(0) == "not_mmio"
    with pytest.raises(InputError, match="no memslot update"):
        vm.end_update(0)


def test_invalidate_wrap_rule():
    c = MmuConfig.ept()
    inv = M.kvm_mmu_invalidate_mmio_sptes
    assert inv(c, 1 << 19, 2) and inv(c, (1 << 19) + 1, 2)      # AS0 and AS1 wrap
    assert not inv(c, (1 << 19) + 2, 2) and not inv(c, 2, 2)
    assert inv(c, 1 << 19, 1) and not inv(c, (1 << 19) + 1, 1)
    assert inv(c, 0, 1)
    old = MmuConfig.ept(profile="v5.10")                         # 18-bit generation
    assert inv(old, 1 << 18, 2) and not inv(c, 1 << 18, 2)
    for g in (0, 1, 2, 3, (1 << 19) + 1, (5 << 19) + 6):
        for n in (1, 2):
            assert inv(c, g, n) == R.kvm_mmu_invalidate_mmio_sptes(c, g, n)


def test_scalar_model_zaps_at_wrap():
    c = MmuConfig.ept(profile="v5.10")                           # 18 bits: wraps sooner
    vm = MemslotGenerations(c, private_mem=True)
    zaps = [k for k in range(1, (1 << 18) + 3) if vm.update(0)]
    assert zaps == [1 << 18] and vm.zaps == 1


@pytest.mark.parametrize("cfg", [MmuConfig.ept(), MmuConfig.npt(phys_bits=39, cache_bits=44),
                                 MmuConfig.tdx(), MmuConfig.ept(profile="v5.10")],
                         ids=["ept", "npt-l1tf", "tdx", "ept-v5.10"])
@pytest.mark.parametrize("private_mem,as_id", [(True, 0), (False, 0), (False, 1)])
def test_no_stale_mmio_spte_accepted_across_wrap(cfg, private_mem, as_id):
    """2^19 + 2^13 memslot updates of one address space, in batch.

    An MMIO SPTE created after update i survives until the next zap; checked after
    update j it must be accepted iff i == j (same full generation).  Without the zap, the
    generation alias 2^bits / nr_as_ids updates later would be accepted (control).
    """
    n = (1 << 19) + (1 << 13)
    gen, zap = generation_sequence(cfg, n, as_id=as_id, private_mem=private_mem)
    nr = 1 if private_mem else 2
    assert gen[0] == as_id and (np.diff(gen) == nr).all()
    bits = cfg.profile.mmio_gen_bits
    alias = (1 << bits) // nr
    zap_at = np.flatnonzero(zap)
    assert len(zap_at) >= 1 and ((zap_at[1:] - zap_at[:-1]) == alias).all()
    # last_zap[j]: the last update <= j that zapped all roots (-1: none yet).
    idx = np.arange(n + 1)
    last_zap = np.maximum.accumulate(np.where(zap, idx, -1))
    rng = np.random.default_rng(19)
    gfn = rng.integers(0, 1 << 30, n + 1, dtype=np.uint64)
    sptes = M.make_mmio_spte_batch(cfg, gfn, 7, gen)              # SPTE made after update i
    accepted_any = 0
    for d in (0, 1, 2, alias - 1, alias, alias + 1, 2 * alias):
        if d > n:
            continue
        i = idx[: n + 1 - d]
        j = i + d
        alive = last_zap[j] <= i
        ok = M.check_mmio_spte_batch(cfg, sptes[i], gen[j])
        accepted = alive & ok
        if d == 0:
            assert accepted.all()
            outcome = M.mmio_fault_outcome_batch(cfg, sptes[i], gen[j])
            assert (outcome == M.FAULT_OUTCOMES.index("emulate")).all()
        else:
            assert not accepted.any(), f"stale MMIO SPTE accepted {d} updates later"
            if d == alias:
                assert ok.all()          # control: only the zap protects against the alias
                accepted_any += int(ok.sum())
        # During the update that follows, nothing is accepted.
        if d == 1:
            assert not M.check_mmio_spte_batch(cfg, sptes[i], gen[i] | np.uint64(BIT63)).any()
            stale = M.mmio_fault_outcome_batch(cfg, sptes[i], gen[j])
            assert (stale == M.FAULT_OUTCOMES.index("stale")).all()
    assert accepted_any > 0


def test_generation_sequence_errors():
    c = MmuConfig.ept()
    with pytest.raises(InputError, match="as_id"):
        generation_sequence(c, 4, as_id=1, private_mem=True)
    with pytest.raises(InputError, match="congruent"):
        generation_sequence(c, 4, as_id=1, start=2)
    gen, zap = generation_sequence(c, 3, as_id=1, start=(1 << 19) - 3)
    assert gen.tolist() == [(1 << 19) - 3, (1 << 19) - 1, (1 << 19) + 1, (1 << 19) + 3]
    assert zap.tolist() == [False, False, True, False]
