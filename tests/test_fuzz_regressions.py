"""Inputs the fuzzers found, kept as regression tests (each names what it exposed).

So far no disagreement between the C core and the references and no crash was found; the
one finding was an over-strong harness invariant, kept here because it documents a real
corner of the v5.10 era.
"""
from pykvmmu import fuzz as F
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.ref import spte as R


def test_v510_exec_only_make_spte_can_be_the_word_zero():
    """v5.10-5.12 has no MMU-present bit: on an exec-only EPT host (present mask 0) an SPTE
    with no access, pfn 0, memtype UC (host MMIO) and A/D enabled is the word 0, which that
    era's is_shadow_present_pte calls non-present.  Core and reference agree; the fuzz
    target checks "make_spte output is shadow-present" only from v5.13 (bit 11)."""
    cfg = MmuConfig.ept(exec_only=True, profile="v5.10")
    kw = dict(level=1, pte_access=0, prefetch=True, synchronizing=True, host_writable=False,
              host_mmio=True, unsync_fails=True)
    r = S.make_spte(cfg, 0, **kw)
    assert (r.spte, r.wrprot) == R.make_spte(cfg, 0, **kw) == (0, False)
    assert not S.is_shadow_present_pte(cfg, r.spte)
    new = MmuConfig.ept(exec_only=True, profile="v5.13")
    assert S.is_shadow_present_pte(new, S.make_spte(new, 0, **kw).spte)


def test_v510_exec_only_reproducer_replays_clean():
    data = bytes.fromhex("036252b43e6b44b2000000000000000001")
    _, fail = F.run_one(F.TARGETS["spte"], data)
    assert fail is None, fail.message
