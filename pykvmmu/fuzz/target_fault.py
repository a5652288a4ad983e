"""Fuzz target ``fault``: private/shared fault classification."""
from __future__ import annotations

import numpy as np

from .base import U64, Disagreement, FuzzInput, batch_len, check, expect_same, expect_same_batch, isa_level, target


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
    _fault_faultin(fi, vt, gpaw, gpas, ecs, ranges, wants, priv)


_GPAW_BAD = (0, 39, 46, 47, 49, 50, 51, 53, 57, 64)


def _fault_faultin(fi: FuzzInput, vt, gpaw, gpas, ecs, ranges, wants, priv) -> None:
    """Drawn after the classification's draws: upstream_error_code vs pykvmmu.ref.private,
    the other GPAW (and refusal of widths a TD cannot have), ept_violation_error_code's private
    bit vs the reference and its bits no qualification bit it ignores can change,
    prefault_error_code, faultin_decision's action against the slot kind it saw."""
    from .. import private as P
    from ..errors import PykvmmuError
    from ..ref import private as RP
    ctx = P.FaultContext(vm_type=vt, gpaw=gpaw, is_private=priv)
    for gpa, ec, want in zip(gpas, ecs, wants):
        got, warn = P.upstream_error_code(ctx, gpa, ec)
        expect_same("upstream_error_code", (got, bool(warn)), (want[1], want[3]), vt, gpa, ec)
    # the other GPAW a TD can have, then one it cannot
    other = 48 if gpaw == 52 else 52
    og, oe, op, _ = P.classify_batch(vt, np.array(gpas, np.uint64), np.array(ecs, np.uint64), gpaw=other,
                                     attrs=(np.array([s for s, _ in ranges], np.uint64),
                                            np.array([e for _, e in ranges], np.uint64)))
    w2 = [RP.classify(vt, g, e, other - 1, ranges) for g, e in zip(gpas, ecs)]
    expect_same_batch("classify_batch (other gpaw) gfn", og, [w[0] for w in w2], vt, other, gpas)
    expect_same_batch("classify_batch (other gpaw) is_private", op, [w[2] for w in w2], vt, other, gpas)
    bad = fi.pick(_GPAW_BAD)
    try:
        P.classify_batch(vt, np.array(gpas, np.uint64), np.array(ecs, np.uint64), gpaw=bad)
    except PykvmmuError:
        fi.feature("fault.gpaw_refused")
    else:
        raise Disagreement(f"classify_batch accepted gpaw={bad} (a TD's GPAW is 48 or 52)")
    # EPT violation (VMX): the private bit is the reference's TDX rule; ignored bits ignored
    q = fi.uint(9) | (fi.u64() if fi.chance(4) else 0)
    gpa = gpas[0]
    ec = P.ept_violation_error_code(q, gpa, vt, gpaw)
    want_priv = vt == RP.TDX and RP.classify(vt, gpa, 0, gpaw - 1)[2]
    expect_same("ept_violation_error_code private", bool(ec & P.PFERR_PRIVATE_ACCESS), want_priv, vt, q, gpa)
    ignored = fi.u64() & ~0x1BF
    expect_same("ept_violation_error_code ignores bits 6, 9-63", P.ept_violation_error_code(q ^ ignored, gpa, vt, gpaw),
                ec, q, ignored)
    for b in range(6):
        check(P.ept_violation_error_code(q | 1 << b, gpa, vt, gpaw) & ec == ec,
              "ept_violation_error_code: an access bit removed a PFERR bit", q, b)
    gva = P.PFERR_GUEST_FINAL_MASK | P.PFERR_GUEST_PAGE_MASK
    check(bin(ec & gva).count("1") == (1 if q & 0x80 else 0), "FINAL/PAGE without exactly one GVA bit", q, ec)
    check(not ec & (P.PFERR_RSVD_MASK | P.PFERR_GUEST_ENC_MASK), "EPT violation with RSVD/ENC", q, ec)
    # KVM_PRE_FAULT_MEMORY: private only on a VM type the reference ever classifies private
    capable = RP.classify(vt, 0, RP.ENC, 51, [(0, 1)])[2]
    for p in (False, True):
        pe = P.prefault_error_code(vt, p)
        expect_same("prefault_error_code", pe, P.PFERR_GUEST_FINAL_MASK | (RP.PRIVATE if capable and p else 0),
                    vt, p)
    # faultin_decision: where each action may come from
    gfn, ecw, is_private = wants[0][:3]
    if fi.chance(3):
        is_private = not is_private             # a policy that resolved the mismatch the other way
    c = P.Classification(gfn, ecw, P.KVM_FAULT_PRIVATE if wants[0][2] else P.KVM_FAULT_SHARED,
                         ("w",) if wants[0][3] else ())
    ex = P.MemoryFaultExit.for_fault(gfn, is_private, "fuzz") if fi.chance(4) else None
    slot = fi.pick((None, "plain", "gmem", "gmem_only"))
    d = P.faultin_decision(c, is_private, ex, slot)
    check((d.gfn, d.error_code, d.is_private, d.warnings) == (gfn, ecw, is_private, c.warnings),
          "faultin_decision changed the classification", d, c)
    check((d.exit is not None) == (d.action == "exit"), "faultin_decision: exit iff action exit", d)
    if ex is not None:
        check(d.action == "exit" and d.exit is ex, "faultin_decision dropped the policy's exit", d)
    elif d.action == "exit":
        check(is_private and slot in (None, "plain"), "faultin_decision: exit of a servable fault", slot, d)
        check(d.exit is not None and d.exit.gpa == gfn << 12 and d.exit.private,
              "faultin_decision: exit gpa/private", d)
    else:
        served = {"private": (True, ("gmem", "gmem_only")), "shared": (False, ("plain", "gmem")),
                  "gmem_shared": (False, ("gmem_only",)), "noslot": (False, (None,))}[d.action]
        check(served[0] == is_private and slot in served[1], "faultin_decision: action vs slot",
              slot, is_private, d.action)
    fi.feature("fault.faultin", slot, is_private, d.action)
