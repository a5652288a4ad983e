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
