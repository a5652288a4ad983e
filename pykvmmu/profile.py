"""Kernel-era layout profiles: every rule the kernel changed over time, by era.

A profile is data: bit positions and the switches that select an era's rule.
MmuConfig carries one; the C core and the reference model read only the
switches, never a version number.  Eras follow ``../shared/spec/spte-mmio.md``
section 6 (P1..P6); the fact sheet's v5.13-5.18 era is split at v5.16 (make_spte's
writable shortcut, read in source) and its "v6.13 and later" era where the fact
sheet records rule changes inside it (v6.15 atomic updates, v6.19 split-child
executability).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .errors import ProfileError

BIT = lambda n: 1 << n  # noqa: E731


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
    #: !can_unsync && old writable, also skipping the prefetch mark) or "old_writable"
    #: (v5.16-6.12: skip when old writable; the prefetch mark still applies).
    writable_shortcut: str
    #: spte_has_volatile_bits form: "lockless" (MMU-W, v5.10: host-W and MMU-W) or
    #: "mmuw_not_w" (!W && MMU-W); "needs_atomic" = v6.15 spte_needs_atomic_update.
    atomic_rule: str
    #: v6.19+: make_small_spte sets executability from role.access (make_spte_executable(s, access)).
    split_exec_from_access: bool
    #: make_small_spte (make_huge_page_split_spte) exists.
    has_make_small_spte: bool
    #: make_huge_spte exists (v6.13+).
    has_make_huge_spte: bool
    #: is_dirty_spte exists (removed in v6.13).
    has_is_dirty_spte: bool
    #: is_ept_ve_possible exists (v6.10+).
    has_ept_ve_possible: bool
    notes: tuple = field(default=(), compare=False)

    @property
    def has_tdx(self) -> bool:
        """TDX VMs exist (merged in v6.16: profiles v6.15 and later)."""
        return self.atomic_rule == "needs_atomic"

    @property
    def mmu_writable_needs_both_bits(self) -> bool:
        """v5.10: spte_can_locklessly_be_made_writable needs host-W and MMU-W."""
        return self.name == "v5.10"

    @property
    def mmio_gen_bits(self) -> int:
        ls, le, hs, he = self.mmio_gen_layout
        return (le - ls + 1) + (he - hs + 1)

    def __str__(self) -> str:
        return f"{self.name} ({self.kernels})"


_GEN19 = (3, 10, 52, 62)
_GEN18 = (3, 11, 54, 62)
_NP64 = BIT(63)

PROFILES: dict[str, LayoutProfile] = {}


def _add(p: LayoutProfile) -> None:
    PROFILES[p.name] = p


_add(LayoutProfile(
    name="v5.10", kernels="v5.10-v5.12",
    mmu_present_bit11=False, mmio_special_tag=True, mmio_requires_nonzero_value=False,
    mmio_gen_layout=_GEN18, writable_bits_legacy=(10, 11), writable_bits_ept=(10, 11),
    nonpresent_value=0, frozen_value=None, ept_suppress_ve=False, me_value_split=False,
    ad_always=False, writable_shortcut="can_unsync", atomic_rule="lockless",
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
    split_exec_from_access=False, has_make_small_spte=False, has_make_huge_spte=False,
    has_is_dirty_spte=True, has_ept_ve_possible=False,
    notes=("v5.13 series: MMU-present bit 11, EPT host/MMU-W 57/58, 19-bit generation, "
           "REMOVED_SPTE 0x5A0; make_spte skips on !can_unsync && writable old SPTE "
           "(read in the v5.13 spte.c)",)))
_add(replace(
    PROFILES["v5.13"], name="v5.16", kernels="v5.16-v5.18", writable_shortcut="old_writable",
    notes=("make_spte's writable shortcut skips on any writable old SPTE, with out: before "
           "the prefetch mark (read in spte.c @ 115111ef); still one shadow_me_mask and "
           "spte_can_locklessly_be_made_writable = MMU-W (the v5.19 changes are not here)",
           "make_huge_page_split_spte (eager split, v5.17/5.18) is not modelled for this "
           "profile: make_small_spte needs v5.19+")))
_add(LayoutProfile(
    name="v5.19", kernels="v5.19-v6.9",
    mmu_present_bit11=True, mmio_special_tag=False, mmio_requires_nonzero_value=True,
    mmio_gen_layout=_GEN19, writable_bits_legacy=(9, 10), writable_bits_ept=(57, 58),
    nonpresent_value=0, frozen_value=0x5A0, ept_suppress_ve=False, me_value_split=True,
    ad_always=False, writable_shortcut="old_writable", atomic_rule="mmuw_not_w",
    split_exec_from_access=False, has_make_small_spte=True, has_make_huge_spte=False,
    has_is_dirty_spte=True, has_ept_ve_possible=False,
    notes=("shadow_me_value/shadow_me_mask split; make_spte's writable shortcut skips on an "
           "already-writable old SPTE (read in source at the v5.16-5.18 spte.c)",)))
_add(LayoutProfile(
    name="v6.10", kernels="v6.10-v6.12",
    mmu_present_bit11=True, mmio_special_tag=False, mmio_requires_nonzero_value=False,
    mmio_gen_layout=_GEN19, writable_bits_legacy=(9, 10), writable_bits_ept=(57, 58),
    nonpresent_value=_NP64, frozen_value=_NP64 | 0x5A0, ept_suppress_ve=True, me_value_split=True,
    ad_always=False, writable_shortcut="old_writable", atomic_rule="mmuw_not_w",
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
    split_exec_from_access=False, has_make_small_spte=True, has_make_huge_spte=True,
    has_is_dirty_spte=False, has_ept_ve_possible=True,
    notes=("kvm_ad_enabled; EPT A/D masks always bits 8/9; D set on writable creation; "
           "leaf_spte_change_needs_tlb_flush; make_small_spte / make_huge_spte",)))
_add(LayoutProfile(
    name="v6.15", kernels="v6.15-v6.18",
    mmu_present_bit11=True, mmio_special_tag=False, mmio_requires_nonzero_value=False,
    mmio_gen_layout=_GEN19, writable_bits_legacy=(9, 10), writable_bits_ept=(57, 58),
    nonpresent_value=_NP64, frozen_value=_NP64 | 0x5A0, ept_suppress_ve=True, me_value_split=True,
    ad_always=True, writable_shortcut="v6.13", atomic_rule="needs_atomic",
    split_exec_from_access=False, has_make_small_spte=True, has_make_huge_spte=True,
    has_is_dirty_spte=False, has_ept_ve_possible=True,
    notes=("lockless aging: spte_needs_atomic_update (A/D-disabled SPTEs always atomic)",)))
_add(LayoutProfile(
    name="v6.19", kernels="v6.19 and later",
    mmu_present_bit11=True, mmio_special_tag=False, mmio_requires_nonzero_value=False,
    mmio_gen_layout=_GEN19, writable_bits_legacy=(9, 10), writable_bits_ept=(57, 58),
    nonpresent_value=_NP64, frozen_value=_NP64 | 0x5A0, ept_suppress_ve=True, me_value_split=True,
    ad_always=True, writable_shortcut="v6.13", atomic_rule="needs_atomic",
    split_exec_from_access=True, has_make_small_spte=True, has_make_huge_spte=True,
    has_is_dirty_spte=False, has_ept_ve_possible=True,
    notes=("make_spte_executable(spte, access): a split 4K child is executable iff "
           "role.access has ACC_EXEC (S1, kvm.git); the bit layout is unchanged",)))

DEFAULT_PROFILE = "v6.19"

_ALIASES = {
    "v5.10-5.12": "v5.10", "v5.11": "v5.10", "v5.12": "v5.10",
    "v5.13-5.15": "v5.13", "v5.14": "v5.13", "v5.15": "v5.13",
    "v5.16-5.18": "v5.16", "v5.17": "v5.16", "v5.18": "v5.16",
    "v5.19-6.9": "v5.19", **{f"v6.{i}": "v5.19" for i in range(0, 10)},
    "v6.10-6.12": "v6.10", "v6.11": "v6.10", "v6.12": "v6.10",
    "v6.13-6.14": "v6.13", "v6.14": "v6.13",
    "v6.15-6.18": "v6.15", "v6.16": "v6.15", "v6.17": "v6.15", "v6.18": "v6.15",
    "v6.13+": "v6.19", "latest": "v6.19", "newest": "v6.19", "default": "v6.19",
}


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
    """Look up a profile by name, alias (``"v6.11"``, ``"v5.19-6.9"``, ``"latest"``) or object."""
    return lookup_named(name, PROFILES, _ALIASES, LayoutProfile, "profile",
                        "kernel-era layout profile", DEFAULT_PROFILE)


def require(profile: LayoutProfile, feature: str, routine: str) -> None:
    """Raise ProfileError if ``routine`` did not exist in the profile's era."""
    if not getattr(profile, feature):
        raise ProfileError(f"{routine}: does not exist in kernel era {profile} "
                           f"(profile {profile.name!r}); choose a profile where it exists")
