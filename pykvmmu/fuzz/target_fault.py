"""Fuzz target ``fault``: private/shared fault classification."""
from __future__ import annotations

import numpy as np

from .base import U64, FuzzInput, batch_len, check, expect_same, expect_same_batch, isa_level, target


_VM_TYPES = (0, 1, 2, 3, 4, 5)


@target("fault")
def fuzz_fault(fi: FuzzInput) -> None:
    """Private/shared fault classification: classify_batch (C) vs kvm_mmu_do_page_fault
    (Python) vs pykvmmu.ref.private, per VM type, GPAW and private ranges; decide() under
    every policy returns a well-formed decision."""
    from .. import private as P
    from ..ref import private as RP
    vt = fi.pick(_VM_TYPES)
    gpaw = fi.pick((52, 48))
    ranges = []
    g = 0
    for _ in range(fi.int_in(0, 4)):
        g += fi.int_in(0, 64)
        e = g + fi.int_in(1, 64)
        ranges.append((g, e))
        g = e
    n = fi.int_in(1, 6)
    gpas, ecs = [], []
    interesting_ec = [0, 1, 2, 3, P.PFERR_RSVD_MASK | 1, P.PFERR_GUEST_ENC_MASK,
                      P.PFERR_GUEST_ENC_MASK | 2, 1 << 48, 1 << 49, (1 << 48) | (1 << 49)]
    for _ in range(n):
        gpa = (fi.int_in(0, 300) << 12) | fi.uint(12) if fi.bool() else fi.u64()
        if fi.chance(3):
            gpa |= 1 << P.tdx_shared_gpa_bit(gpaw)
        gpas.append(gpa & U64)
        ecs.append(fi.pick(interesting_ec) | (fi.u64() if fi.chance(6) else 0))
    starts = np.array([s for s, _ in ranges], np.uint64)
    ends = np.array([e for _, e in ranges], np.uint64)
    m = batch_len(fi, n)
    og, oe, op, nsyn = P.classify_batch(vt, np.resize(np.array(gpas, np.uint64), m),
                                        np.resize(np.array(ecs, np.uint64), m), gpaw=gpaw,
                                        attrs=(starts, ends), isa=isa_level(fi))
    shared_bit = P.tdx_shared_gpa_bit(gpaw)

    def priv(gfn):
        return any(s <= gfn < e for s, e in ranges)

    ctx = P.FaultContext(vm_type=vt, gpaw=gpaw, is_private=priv,
                         slot_kind=lambda gfn: (None, "plain", "gmem", "gmem_only")[gfn % 4])
    wants = [RP.classify(vt, gpa, ec, shared_bit, ranges) for gpa, ec in zip(gpas, ecs)]
    for what, got, k in (("gfn", og, 0), ("error_code", oe, 1), ("is_private", op, 2)):
        expect_same_batch(f"classify_batch {what}", got, [w[k] for w in wants], vt, gpaw, gpas, ecs, ranges)
    expect_same("classify_batch synthetic collisions", nsyn,
                int(np.resize(np.array([w[3] for w in wants], np.int64), m).sum()), vt)
    for gpa, ec, want in zip(gpas, ecs, wants):
        c = P.kvm_mmu_do_page_fault(ctx, gpa, ec)
        expect_same("kvm_mmu_do_page_fault", (c.gfn, c.error_code, c.kind == P.KVM_FAULT_PRIVATE),
                    want[:3], vt, gpa, ec)
        fi.feature("fault.classify", vt, want[2], want[3])
        for pol in P.POLICIES:
            d = P.decide(ctx, gpa, ec, pol)
            check(d.action in set(P.FaultAction),
                  "decide: unknown action", pol, d.action)
            check((d.exit is not None) == (d.action == "exit"), "decide: exit iff action exit", pol)
            fi.feature("fault.decide", vt, pol, d.outcome)
        str(P.decode_error_code(ec))
