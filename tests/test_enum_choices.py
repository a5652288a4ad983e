"""Rule choices, memslot-change actions and verdict statuses have ``str`` enums; the public
APIs take the enum member or its string, and store the plain string."""
import dataclasses

import pytest

from pykvmmu.audit import STATUSES, Auditor, AuditReport, SlotAction, Status
from pykvmmu.errors import InputError, ProfileError
from pykvmmu.profile import PROFILES, AtomicRule, WritableShortcut


def test_profile_rule_choices():
    assert {p.writable_shortcut for p in PROFILES.values()} <= {k.value for k in WritableShortcut}
    assert {p.atomic_rule for p in PROFILES.values()} <= {k.value for k in AtomicRule}
    p = dataclasses.replace(PROFILES["v5.19"], writable_shortcut=WritableShortcut.OLD_WRITABLE_LEAF)
    q = dataclasses.replace(PROFILES["v5.19"], writable_shortcut="old_writable_leaf")
    assert p == q and type(p.writable_shortcut) is str
    with pytest.raises(ProfileError, match="atomic_rule='often'.*'lockless'"):
        dataclasses.replace(PROFILES["v5.19"], atomic_rule="often")


def test_audit_slot_actions_and_statuses():
    slots = [{"gpa": 0, "size": 0x1000, "flags": []}]
    a = Auditor(None, "v6.18", memslots=slots,
                slot_changes=[{"action": SlotAction.MOVE, "slot": 0, "gpa": 0x2000},
                              {"action": "delete", "slot": 0}])
    assert [c["action"] for c in a.slot_changes] == ["move", "delete"]
    assert all(type(c["action"]) is str for c in a.slot_changes)
    with pytest.raises(InputError, match="action delete/move/flags"):
        Auditor(None, "v6.18", memslots=slots, slot_changes=[{"action": "resize", "slot": 0}])
    assert STATUSES == tuple(s.value for s in Status)
    r = AuditReport()
    assert r.total(Status.DISAGREED) == r.total("disagreed") == 0


def test_fault_actions_and_slot_kinds():
    from pykvmmu import private as P
    seen = set()
    for vt in ("default", "sw_protected", "snp", "tdx"):
        for kind in (None, *P.SlotKind, "plain", "gmem", "gmem_only"):
            for priv in (False, True):
                ctx = P.FaultContext(vm_type=vt, is_private=lambda gfn, p=priv: p,
                                     slot_kind=lambda gfn, k=kind: k)
                for ec in (0, P.PFERR_GUEST_ENC_MASK):
                    d = P.decide(ctx, 0x5000, ec)
                    assert type(d.action) is str and d.action in set(P.FaultAction)
                    seen.add(d.action)
    assert seen == {a.value for a in P.FaultAction}
    # the member and its string decide alike; an unknown kind is refused, not taken for "plain"
    ctx = P.FaultContext(vm_type="sw_protected", is_private=lambda gfn: True,
                         slot_kind=lambda gfn: P.SlotKind.GMEM_ONLY)
    assert P.decide(ctx, 0x5000, 0).action == P.FaultAction.PRIVATE == "private"
    bad = P.FaultContext(vm_type="sw_protected", slot_kind=lambda gfn: "gmemx")
    with pytest.raises(P.PrivateFaultError, match="slot_kind='gmemx': a memslot kind is one of gmem, gmem_only, plain"):
        P.decide(bad, 0x5000, 0)
