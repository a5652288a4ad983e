"""Kernel-era layout profiles: every rule the kernel changed over time, by era.

A profile is data: bit positions and the switches that select an era's rule.
MmuConfig carries one; the C core and the reference model read only the
switches, never a version number.  Eras follow ``../shared/spec/spte-mmio.md``
section 6 (P1..P6); the fact sheet's v5.13-5.18 era is split at v5.16 (make_spte's
writable shortcut, read in source) and v5.17 (lockless-writable test), and its "v6.13
and later" era where the fact sheet records rule changes inside it (v6.15 atomic
updates; split-child executability, the profile named ``v6.19`` for historical reasons,
which is the kvm.git rule set of 0c768fa0aeb8 and reached mainline only in the v7.2 merge
window: no release has exactly its rules, NOT_A_RELEASE).  Stable lines whose backports
changed a rule have their own profiles (``v6.6.64``, ...); ``profile_for_version`` maps any
kernel version string to a profile and says how (docs/spte.md).
"""
from __future__ import annotations

import enum
import re
import warnings
from dataclasses import dataclass, field, replace

from .errors import ProfileError

BIT = lambda n: 1 << n  # noqa: E731


class WritableShortcut(str, enum.Enum):
    """``LayoutProfile.writable_shortcut``: make_spte's writable shortcut (a string works too)."""
    CAN_UNSYNC = "can_unsync"
    OLD_WRITABLE = "old_writable"
    OLD_WRITABLE_LEAF = "old_writable_leaf"
    V6_13 = "v6.13"


class AtomicRule(str, enum.Enum):
    """``LayoutProfile.atomic_rule``: spte_has_volatile_bits' form (a string works too)."""
    LOCKLESS = "lockless"
    MMUW_NOT_W = "mmuw_not_w"
    NEEDS_ATOMIC = "needs_atomic"


@dataclass(frozen=True)
class LayoutProfile:
    """One kernel era's SPTE layout and rule set."""

    name: str
    kernels: str
    #: is_shadow_present_pte is ``spte & BIT(11)`` (v5.13+), else ``spte != 0 && !mmio``.
    mmu_present_bit11: bool
    #: v5.10-5.12: MMIO SPTEs are tagged with SPTE_SPECIAL_MASK == 3<<52.
    mmio_special_tag: bool
    #: v5.13-6.9: is_mmio_spte additionally requires a non-zero value; v6.10+ uses enable_mmio_caching.
    #: (A v6.1-based spte.h already tests enable_mmio_caching; from v6.0 caching is off exactly
    #: when the value is 0, so the two forms agree until TDX's per-VM value 0 in v6.10+.)
    mmio_requires_nonzero_value: bool
    #: MMIO generation layout: (low_start, low_end, high_start, high_end).
    mmio_gen_layout: tuple
    #: Host-writable / MMU-writable bits for (non-EPT, EPT).
    writable_bits_legacy: tuple
    writable_bits_ept: tuple
    #: Initial / zapped SPTE value and the frozen (removed) placeholder (None: no such value).
    nonpresent_value: int
    frozen_value: int | None
    #: v6.10+: SUPPRESS_VE (bit 63) is in the EPT present mask and the EPT MMIO mask.
    ept_suppress_ve: bool
    #: v5.19+: shadow_me_value / shadow_me_mask split (before: one shadow_me_mask).
    me_value_split: bool
    #: v6.13+: A/D masks set without hardware A/D, make_spte's new A/D/unsync rules,
    #: mark_spte_for_access_track clears the Accessed bit, leaf_spte_change_needs_tlb_flush.
    ad_always: bool
    #: make_spte's writable shortcut before v6.13: "can_unsync" (v5.10-5.15: skip when
    #: !can_unsync && old writable, also skipping the prefetch mark), "old_writable"
    #: (v5.16-6.12: skip when old writable; the prefetch mark still applies) or
    #: "old_writable_leaf" (2867eb782cf7 backported to 6.1.120, 6.6.64, 6.11.11, 6.12.2:
    #: skip only when the old SPTE is a writable *last-level* SPTE).
    writable_shortcut: str
    #: spte_has_volatile_bits form: "lockless" (spte_can_locklessly_be_made_writable) or
    #: "mmuw_not_w" (!W && MMU-W); "needs_atomic" = v6.15 spte_needs_atomic_update.
    atomic_rule: str
    #: spte_can_locklessly_be_made_writable needs host-W *and* MMU-W (v5.10-v5.16; MMU-W
    #: alone from 5f16bcac6e28, v5.17).  Also the pre-v6.13 flush rule's "MMU-writable".
    mmu_writable_needs_both_bits: bool
    #: kvm_mmu_set_mmio_spte_mask clears enable_mmio_caching when the value ends up 0
    #: (8b9e74bfbf8c, v5.19); before, caching stays on and is_mmio_spte's value != 0 test
    #: makes every SPTE non-MMIO.
    mmio_zero_value_disables_caching: bool
    #: kvm.git 0c768fa0aeb8 (v7.2 merge window; profile "v6.19"): make_small_spte sets
    #: executability from role.access (make_spte_executable(s, access)).
    split_exec_from_access: bool
    #: make_small_spte (make_huge_page_split_spte) exists.
    has_make_small_spte: bool
    #: make_huge_spte exists (v6.13+).
    has_make_huge_spte: bool
    #: is_dirty_spte exists (removed in v6.13).
    has_is_dirty_spte: bool
    #: is_ept_ve_possible exists (v6.10+).
    has_ept_ve_possible: bool
    #: TDX VMs exist (merged in v6.16: profiles v6.15 and later).
    has_tdx: bool = False
    #: False where the rules were not read in a tree of this kernel line (docs/spte.md).
    verified: bool = field(default=True, compare=False)
    #: What the rule set is when no kernel release has exactly it ("": a release's rules).
    not_a_release: str = field(default="", compare=False)
    notes: tuple = field(default=(), compare=False)

    def __post_init__(self):
        """Refuse a rule set the engine cannot run (e.g. a hand-made ``replace()``)."""
        for name, kind in _CHOICES.items():
            v = getattr(self, name)
            if v not in tuple(kind):
                raise ProfileError(f"{name}={v!r}: not a rule the engine knows; "
                                   f"one of {', '.join(repr(k.value) for k in kind)}")
            object.__setattr__(self, name, kind(v).value)   # stored as the plain string
        if (self.writable_shortcut == WritableShortcut.V6_13) != self.ad_always:
            raise ProfileError(f"writable_shortcut={self.writable_shortcut!r} with ad_always="
                               f"{self.ad_always}: make_spte's v6.13 rules come as one (ad_always "
                               "iff writable_shortcut 'v6.13')")
        if self.has_is_dirty_spte == self.ad_always:
            raise ProfileError(f"has_is_dirty_spte={self.has_is_dirty_spte} with ad_always="
                               f"{self.ad_always}: is_dirty_spte was removed by the v6.13 A/D rules")
        if self.has_tdx and self.atomic_rule != AtomicRule.NEEDS_ATOMIC:
            raise ProfileError("has_tdx needs atomic_rule 'needs_atomic' (TDX came in v6.16)")
        if self.mmio_special_tag and (self.mmu_present_bit11 or self.mmio_requires_nonzero_value):
            raise ProfileError("mmio_special_tag (v5.10-5.12) excludes the MMU-present bit and "
                               "the v5.13 is_mmio_spte rule")
        if self.mmio_requires_nonzero_value and self.ept_suppress_ve:
            raise ProfileError("mmio_requires_nonzero_value (v5.13-6.9) excludes the v6.10 "
                               "per-VM MMIO value era (ept_suppress_ve)")

    @property
    def mmio_gen_bits(self) -> int:
        ls, le, hs, he = self.mmio_gen_layout
        return (le - ls + 1) + (he - hs + 1)

    def __str__(self) -> str:
        return f"{self.name} ({self.kernels})"


#: The values each enumerated rule field may take.
_CHOICES: dict[str, type[enum.Enum]] = {"writable_shortcut": WritableShortcut, "atomic_rule": AtomicRule}

#: How each LayoutProfile field reaches the engine; tests/test_profile_fields.py fails for a
#: field missing here.  "c": a struct kvmmu_cfg rule bit, flag or constant (MmuConfig._cptr)
#: and the reference; "config": MmuConfig's presets and invariants (refused where C cannot
#: honour it); "gate": a routine exists or not (require / ProfileError); "meta": documentation.
FIELD_USE = {
    "name": "meta", "kernels": "meta", "verified": "meta", "notes": "meta", "not_a_release": "meta",
    "mmu_present_bit11": "c", "mmio_special_tag": "c", "mmio_requires_nonzero_value": "c",
    "mmio_gen_layout": "c", "writable_bits_legacy": "config", "writable_bits_ept": "config",
    "nonpresent_value": "c", "frozen_value": "c", "ept_suppress_ve": "config",
    "me_value_split": "c", "ad_always": "c", "writable_shortcut": "c", "atomic_rule": "c",
    "mmu_writable_needs_both_bits": "c", "mmio_zero_value_disables_caching": "config",
    "split_exec_from_access": "c", "has_make_small_spte": "gate", "has_make_huge_spte": "gate",
    "has_is_dirty_spte": "gate", "has_ept_ve_possible": "c", "has_tdx": "gate",
}

_GEN19 = (3, 10, 52, 62)
_GEN18 = (3, 11, 54, 62)
_NP64 = BIT(63)

PROFILES: dict[str, LayoutProfile] = {}


def _add(p: LayoutProfile) -> None:
    PROFILES[p.name] = p


# ----------------------------------------------------------------- mainline eras
_add(LayoutProfile(
    name="v5.10", kernels="v5.10-v5.12",
    mmu_present_bit11=False, mmio_special_tag=True, mmio_requires_nonzero_value=False,
    mmio_gen_layout=_GEN18, writable_bits_legacy=(10, 11), writable_bits_ept=(10, 11),
    nonpresent_value=0, frozen_value=None, ept_suppress_ve=False, me_value_split=False,
    ad_always=False, writable_shortcut="can_unsync", atomic_rule="lockless",
    mmu_writable_needs_both_bits=True, mmio_zero_value_disables_caching=False,
    split_exec_from_access=False, has_make_small_spte=False, has_make_huge_spte=False,
    has_is_dirty_spte=True, has_ept_ve_possible=False,
    notes=("first spte.h (O1): SPTE_SPECIAL_MASK 3<<52 tags MMIO SPTEs; host-W bit 10 and "
           "MMU-W bit 11 in every mode; no MMU-present bit; 18-bit MMIO generation (3-11, 54-62)",
           "REMOVED_SPTE of the v5.12 TDP MMU is not modelled (frozen value: none)")))
_add(LayoutProfile(
    name="v5.13", kernels="v5.13-v5.15",
    mmu_present_bit11=True, mmio_special_tag=False, mmio_requires_nonzero_value=True,
    mmio_gen_layout=_GEN19, writable_bits_legacy=(9, 10), writable_bits_ept=(57, 58),
    nonpresent_value=0, frozen_value=0x5A0, ept_suppress_ve=False, me_value_split=False,
    ad_always=False, writable_shortcut="can_unsync", atomic_rule="lockless",
    mmu_writable_needs_both_bits=True, mmio_zero_value_disables_caching=False,
    split_exec_from_access=False, has_make_small_spte=False, has_make_huge_spte=False,
    has_is_dirty_spte=True, has_ept_ve_possible=False,
    notes=("v5.13 series: MMU-present bit 11, EPT host/MMU-W 57/58, 19-bit generation, "
           "REMOVED_SPTE 0x5A0; make_spte skips on !can_unsync && writable old SPTE "
           "(read in the v5.13 spte.c)",
           "spte_can_locklessly_be_made_writable needs host-W and MMU-W until 5f16bcac6e28 "
           "(v5.17); MMIO caching stays on with value 0 until 8b9e74bfbf8c (v5.19)")))
_add(replace(
    PROFILES["v5.13"], name="v5.16", kernels="v5.16", writable_shortcut="old_writable",
    notes=("make_spte's writable shortcut skips on any writable old SPTE, with out: before "
           "the prefetch mark (read in spte.c @ 115111ef); still one shadow_me_mask and the "
           "both-bits spte_can_locklessly_be_made_writable (spte.h index a4af2a42695c, "
           "Jan 2022)",
           "make_huge_page_split_spte (eager split, v5.17/5.18) is not modelled for this "
           "profile: make_small_spte needs v5.19+")))
_add(replace(
    PROFILES["v5.16"], name="v5.17", kernels="v5.17-v5.18", mmu_writable_needs_both_bits=False,
    notes=("5f16bcac6e28 (v5.17): spte_can_locklessly_be_made_writable tests MMU-W alone "
           "(a WARN, not a result, for a missing host-W)",
           "make_huge_page_split_spte is not modelled for this profile")))
_add(LayoutProfile(
    name="v5.19", kernels="v5.19-v6.9",
    mmu_present_bit11=True, mmio_special_tag=False, mmio_requires_nonzero_value=True,
    mmio_gen_layout=_GEN19, writable_bits_legacy=(9, 10), writable_bits_ept=(57, 58),
    nonpresent_value=0, frozen_value=0x5A0, ept_suppress_ve=False, me_value_split=True,
    ad_always=False, writable_shortcut="old_writable", atomic_rule="mmuw_not_w",
    mmu_writable_needs_both_bits=False, mmio_zero_value_disables_caching=True,
    split_exec_from_access=False, has_make_small_spte=True, has_make_huge_spte=False,
    has_is_dirty_spte=True, has_ept_ve_possible=False,
    notes=("shadow_me_value/shadow_me_mask split; make_spte's writable shortcut skips on an "
           "already-writable old SPTE (read in source at the v5.16-5.18 spte.c); "
           "8b9e74bfbf8c: MMIO value 0 clears enable_mmio_caching",)))
_add(LayoutProfile(
    name="v6.10", kernels="v6.10-v6.12",
    mmu_present_bit11=True, mmio_special_tag=False, mmio_requires_nonzero_value=False,
    mmio_gen_layout=_GEN19, writable_bits_legacy=(9, 10), writable_bits_ept=(57, 58),
    nonpresent_value=_NP64, frozen_value=_NP64 | 0x5A0, ept_suppress_ve=True, me_value_split=True,
    ad_always=False, writable_shortcut="old_writable", atomic_rule="mmuw_not_w",
    mmu_writable_needs_both_bits=False, mmio_zero_value_disables_caching=True,
    split_exec_from_access=False, has_make_small_spte=True, has_make_huge_spte=False,
    has_is_dirty_spte=True, has_ept_ve_possible=True,
    notes=("SHADOW_NONPRESENT_VALUE = BIT63, FROZEN = BIT63|0x5A0, SVE in EPT present/MMIO "
           "masks, per-VM MMIO value, is_mmio_spte uses enable_mmio_caching",)))
_add(LayoutProfile(
    name="v6.13", kernels="v6.13-v6.14",
    mmu_present_bit11=True, mmio_special_tag=False, mmio_requires_nonzero_value=False,
    mmio_gen_layout=_GEN19, writable_bits_legacy=(9, 10), writable_bits_ept=(57, 58),
    nonpresent_value=_NP64, frozen_value=_NP64 | 0x5A0, ept_suppress_ve=True, me_value_split=True,
    ad_always=True, writable_shortcut="v6.13", atomic_rule="mmuw_not_w",
    mmu_writable_needs_both_bits=False, mmio_zero_value_disables_caching=True,
    split_exec_from_access=False, has_make_small_spte=True, has_make_huge_spte=True,
    has_is_dirty_spte=False, has_ept_ve_possible=True,
    notes=("kvm_ad_enabled; EPT A/D masks always bits 8/9; D set on writable creation; "
           "leaf_spte_change_needs_tlb_flush; make_small_spte / make_huge_spte",)))
_add(replace(
    PROFILES["v6.13"], name="v6.15", kernels="v6.15-v7.1", atomic_rule="needs_atomic",
    has_tdx=True,
    notes=("lockless aging: spte_needs_atomic_update (A/D-disabled SPTEs always atomic); "
           "TDX merged in v6.16",
           "v6.19 and v7.0: their KVM merge-window pulls change no modelled rule (6.19: "
           "spte.c only swaps the MMIO Stale Data static branch for a CPU feature, spte.h "
           "gains the moved dummy-root helpers; 7.0: no spte.c/spte.h change); v7.1 is mapped "
           "here by inference (its kvm-x86-mmu-7.1 pull was not read; profile_for_version "
           "warns); the next rule change found is 0c768fa0aeb8 (v7.2 merge window)")))
_add(replace(
    PROFILES["v6.15"], name="v6.19",
    kernels="kvm.git 2026 (0c768fa0aeb8, v7.2 merge window; no release)",
    split_exec_from_access=True,
    not_a_release=("the name is historical; these are the v6.15 rules plus kvm.git's 0c768fa0aeb8 "
                   "(split-child executability from role.access), which reached mainline in the "
                   "v7.2 merge window together with the MBEC SPTE layout (9a67ab74021b, "
                   "be4e45f360a2, a8827c196146 ACC_READ_MASK) that no profile models; v6.19-v7.1 "
                   "releases map to v6.15"),
    notes=("make_spte_executable(spte, access): a split 4K child is executable iff "
           "role.access has ACC_EXEC (S1, kvm.git); the bit layout is unchanged",
           "the name is historical: 0c768fa0aeb8 'merge make_spte_{non,}executable' reached "
           "mainline in the v7.2 merge window (torvalds push 2026-06-19), together with the "
           "MBEC SPTE layout (9a67ab74021b, be4e45f360a2) that no profile models; no release "
           "has exactly these rules")))

#: The mainline-era profiles, oldest first (the stable-line profiles follow them in PROFILES).
MAINLINE_PROFILES = tuple(PROFILES)

# ----------------------------------------------------------------- stable lines
#: 2867eb782cf7 "KVM: x86/mmu: Skip the "try unsync" path iff the old SPTE was a leaf SPTE"
#: (mainline v6.13-rc1, Cc: stable): first release of each stable line that carries it.
_LEAF_FIX = "2867eb782cf7"
for _line, _first, _base in (("6.1", 120, "v5.19"), ("6.6", 64, "v5.19"),
                             ("6.11", 11, "v6.10"), ("6.12", 2, "v6.10")):
    _add(replace(
        PROFILES[_base], name=f"v{_line}.{_first}", kernels=f"{_line}.{_first} and later {_line}.y",
        writable_shortcut="old_writable_leaf",
        notes=(f"{_base} rules plus {_LEAF_FIX} (stable review series of {_line}.{_first}): "
               "make_spte skips the try-unsync path only for a writable last-level old SPTE",)))

DEFAULT_PROFILE = "v6.19"

#: Profiles whose rule set is no kernel release, and what they are (their ``not_a_release``).
NOT_A_RELEASE = {p.name: p.not_a_release for p in PROFILES.values() if p.not_a_release}

_ALIASES = {
    "v5.10-5.12": "v5.10", "v5.11": "v5.10", "v5.12": "v5.10",
    "v5.13-5.15": "v5.13", "v5.14": "v5.13", "v5.15": "v5.13",
    "v5.17-5.18": "v5.17", "v5.18": "v5.17",
    "v5.19-6.9": "v5.19", **{f"v6.{i}": "v5.19" for i in range(0, 10)},
    "v6.10-6.12": "v6.10", "v6.11": "v6.10", "v6.12": "v6.10",
    "v6.13-6.14": "v6.13", "v6.14": "v6.13",
    "v6.15-6.18": "v6.15", "v6.16": "v6.15", "v6.17": "v6.15", "v6.18": "v6.15",
    "v6.13+": "v6.19", "latest": "v6.19", "newest": "v6.19", "default": "v6.19",
    "kvm-2026": "v6.19",
}

# ----------------------------------------------------------------- version -> profile
#: Mainline releases the tables know: (major, minor) -> profile name.
MAINLINE_RELEASES = {
    **{(5, m): "v5.10" for m in (10, 11, 12)}, **{(5, m): "v5.13" for m in (13, 14, 15)},
    (5, 16): "v5.16", (5, 17): "v5.17", (5, 18): "v5.17",
    (5, 19): "v5.19", **{(6, m): "v5.19" for m in range(0, 10)},
    **{(6, m): "v6.10" for m in (10, 11, 12)}, (6, 13): "v6.13", (6, 14): "v6.13",
    **{(6, m): "v6.15" for m in (15, 16, 17, 18, 19)}, (7, 0): "v6.15", (7, 1): "v6.15",
}
#: Releases mapped by inference (profile_for_version warns).  6.19 and 7.0 were checked by
#: their KVM merge-window pulls' diffstats and shortlogs (docs/spte.md).
MAINLINE_UNVERIFIED = {
    (7, 1): "its spte.c was not read and its MMU pull (tag kvm-x86-mmu-7.1) was not found; the "
            "v6.15 rules are assumed (v6.19 and v7.0 change no modelled rule; the next rule "
            "change found, 0c768fa0aeb8, is in the v7.2 merge window)"}
#: Stable lines whose backports of SPTE rules were checked: line -> ((first sublevel,
#: profile), ...), newest rule last.  A line with an empty tuple was checked and took none.
STABLE_RULES = {
    (5, 10): (), (5, 15): (), (6, 1): ((120, "v6.1.120"),), (6, 6): ((64, "v6.6.64"),),
    (6, 11): ((11, "v6.11.11"),), (6, 12): ((2, "v6.12.2"),), (6, 18): (),
}
#: Lines checked only in part: no backport of a modelled rule was found, but the evidence
#: does not cover the line (docs/spte.md says what was read); their releases still warn.
STABLE_UNVERIFIED = {
    (5, 10): "the 5.10.y backports were checked only for 2867eb782cf7, which 5.10 does not "
             "need (its make_spte shortcut already requires !can_unsync, and the TDP MMU passes "
             "can_unsync=true) and for which no 5.10 stable patch was found; other 5.10.y "
             "backports were not checked",
    (6, 18): "no 6.18.y backport of an SPTE rule was found: mainline v6.19 and v7.0 change no "
             "modelled rule, and this project's captures of 6.18.44 agree with the v6.15 rules "
             "(shadow MMU only), but fixes from the 7.1 MMU pull and later were not checked",
}

HOW_EXACT = "exact"
HOW_STABLE = "stable-line rule"
HOW_NEAREST = "nearest known (warned)"
HOW_UNVERIFIED = "unverified (warned)"

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?([-+_~].*)?$")


class PykvmmuWarning(UserWarning):
    """Base class of the warnings pykvmmu emits."""


class ProfileVersionWarning(PykvmmuWarning):
    """A kernel version was mapped to a profile the tables do not confirm for it."""


def parse_version(text: str):
    """``(major, minor, sublevel or None, suffix)`` of a kernel version ("6.6.75",
    "v6.18", "6.18.44-fc-v669", a ``uname -r``), or None if ``text`` is not one."""
    if not isinstance(text, str):
        return None
    m = _VERSION.match(text.strip().lower())
    if not m or re.match(r"^-\d+\.\d+", m.group(4) or ""):
        return None                       # not a version, or a range such as v5.13-5.18
    sub = int(m.group(3)) if m.group(3) is not None else None
    return int(m.group(1)), int(m.group(2)), sub, m.group(4) or ""


def _nearest_release(mm: tuple) -> tuple:
    known = sorted(MAINLINE_RELEASES)
    below = [k for k in known if k <= mm]
    return below[-1] if below else known[0]


def profile_for_version(version, *, warn: bool = True):
    """The layout profile of a kernel version, and how it was chosen.

    ``version``: a profile name or alias ("v5.19", "latest"; a name wins over the release of
    the same spelling, so "v6.19" is the profile and "6.19" the release), a mainline release ("v6.6"),
    a stable or distribution version ("6.6.75", "5.15.222", "6.18.44-fc-v669").  Returns
    ``(LayoutProfile, how)``, ``how`` one of HOW_EXACT (a profile name, alias or mainline
    release), HOW_STABLE (a stable release at or past a backport recorded in STABLE_RULES),
    HOW_NEAREST (a release the tables do not know: the nearest older known one, or the
    oldest) or HOW_UNVERIFIED (a stable release of a line whose backports were not read,
    a distribution ``X.Y.0-N`` whose stable level is unknown, or a release mapped by
    inference, MAINLINE_UNVERIFIED).  The last two warn with
    ProfileVersionWarning (unless ``warn=False``).  The one version-to-profile mapping
    of the library: trace.py and the CLI use it too.
    """
    if warn is not True and warn is not False:
        from ._check import boolean
        boolean("warn", warn, err=ProfileError)
    if isinstance(version, LayoutProfile):
        return version, HOW_EXACT
    if not isinstance(version, str):
        raise ProfileError(f"profile={version!r}: expected a kernel version or profile name "
                           f"such as {DEFAULT_PROFILE!r} or '6.6.75'")
    key = version.strip().lower()
    if key in PROFILES or key in _ALIASES:
        return PROFILES[key if key in PROFILES else _ALIASES[key]], HOW_EXACT
    parsed = parse_version(key)
    if "v" + key in PROFILES and parsed is None:
        return PROFILES["v" + key], HOW_EXACT
    if parsed is None:
        raise ProfileError(f"profile={version!r}: unknown kernel-era layout profile or kernel "
                           f"version; known profiles: {', '.join(PROFILES)}; versions look like "
                           "'6.6.75' or 'v6.11'")
    major, minor, sub, suffix = parsed
    mm = (major, minor)
    if mm < (2, 6) or (mm == (2, 6) and (sub or 0) < 20):
        raise ProfileError(f"profile={version!r}: Linux {major}.{minor} has no KVM (merged in "
                           "2.6.20); the oldest modelled SPTE layout is v5.10")
    if mm not in MAINLINE_RELEASES:
        near = _nearest_release(mm)
        p = PROFILES[MAINLINE_RELEASES[near]]
        if warn:
            warnings.warn(f"kernel {version!r}: release {major}.{minor} is not in the profile "
                          f"tables; using the nearest known release {near[0]}.{near[1]} "
                          f"(profile {p.name})", ProfileVersionWarning, stacklevel=2)
        return p, HOW_NEAREST
    p = PROFILES[MAINLINE_RELEASES[mm]]
    if mm in MAINLINE_UNVERIFIED:
        if warn:
            warnings.warn(f"kernel {version!r}: release {major}.{minor}: "
                          f"{MAINLINE_UNVERIFIED[mm]} (profile {p.name})",
                          ProfileVersionWarning, stacklevel=2)
        return p, HOW_UNVERIFIED
    if sub is None or (sub == 0 and not suffix):
        return p, HOW_EXACT
    if sub == 0 or mm not in STABLE_RULES or mm in STABLE_UNVERIFIED:
        why = ("a distribution kernel whose stable level is unknown" if sub == 0 else
               STABLE_UNVERIFIED.get(mm, f"the {major}.{minor}.y backports were not checked"))
        if warn:
            warnings.warn(f"kernel {version!r}: {why}; using the {major}.{minor} mainline "
                          f"profile {p.name}, unverified for this stable release",
                          ProfileVersionWarning, stacklevel=2)
        return p, HOW_UNVERIFIED
    for first, name in STABLE_RULES[mm]:
        if sub >= first:
            p = PROFILES[name]
    return p, HOW_STABLE


def describe_version(version) -> str:
    """One line: which profile ``version`` selects and why (for ``pykvmmu config``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileVersionWarning)
        p, how = profile_for_version(version)
    state = "" if p.verified else ", profile UNVERIFIED in source"
    if p.not_a_release:
        state += f"; not a kernel release: {p.not_a_release}"
    return f"profile {p.name} ({p.kernels}) for {str(version).strip()!r}: {how}{state}"


def lookup_named(name, table: dict, aliases: dict, cls: type, what: str, kind: str, default: str):
    """``table[name]`` by name, alias or object; a bare version gets its "v" ("6.11").
    Shared by the layout profiles and the role eras (pykvmmu.role.get_era)."""
    if isinstance(name, cls):
        return name
    if not isinstance(name, str):
        raise ProfileError(f"{what}={name!r}: expected a {kind} name such as {default!r}")
    key = name.strip().lower()
    if key not in table and key not in aliases and key[:1].isdigit():
        key = "v" + key
    try:
        return table[key if key in table else aliases.get(key, key)]
    except KeyError:
        raise ProfileError(f"{what}={name!r}: unknown {kind}; known: " + ", ".join(table)) from None


def get_profile(name) -> LayoutProfile:
    """A profile by name, alias (``"v6.11"``, ``"v5.19-6.9"``, ``"latest"``), object, or any
    kernel version (``"6.6.75"``, a ``uname -r``) through profile_for_version (which warns
    where the tables do not confirm the choice)."""
    return profile_for_version(name)[0]


def require(profile: LayoutProfile, feature: str, routine: str) -> None:
    """Raise ProfileError if ``routine`` did not exist in the profile's era."""
    if not isinstance(profile, LayoutProfile):
        raise ProfileError(f"profile={profile!r}: expected a LayoutProfile (get_profile())")
    if not isinstance(feature, str) or not feature.startswith("has_") \
            or not hasattr(profile, feature):
        raise ProfileError(f"feature={feature!r}: one of the profile's has_* fields")
    if not isinstance(routine, str):
        raise ProfileError(f"routine={routine!r}: expected the routine's name (a str)")
    if not getattr(profile, feature):
        raise ProfileError(f"{routine}: does not exist in kernel era {profile} "
                           f"(profile {profile.name!r}); choose a profile where it exists")
