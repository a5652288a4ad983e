"""MmuConfig: the set of SPTE masks KVM computes at module load, as one immutable value.

The kernel computes these in ``kvm_mmu_reset_all_pte_masks()`` and then lets the
vendor module override them (``kvm_mmu_set_ept_masks()``, ``kvm_mmu_set_me_spte_mask()``,
``svm_adjust_mmio_mask()``, ``kvm_mmu_set_mmio_spte_mask()``, TDX's per-VM MMIO value).
The presets below replay that sequence for a kernel-era profile; ``MmuConfig(...)``
accepts explicit masks and refuses a set that breaks a kernel invariant.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from functools import cached_property

from ._check import boolean, choice, in_range, opt_boolean, uint
from .errors import ConfigError
from .profile import DEFAULT_PROFILE, LayoutProfile, get_profile

BIT = lambda n: 1 << n  # noqa: E731
U64 = (1 << 64) - 1


def GENMASK(h: int, l: int) -> int:  # noqa: E743
    """Bits h..l inclusive (the kernel's GENMASK_ULL)."""
    h, l = in_range("h", h, 0, 63, "a bit of a u64"), in_range("l", l, 0, 63, "a bit of a u64")  # noqa: E741
    return ((1 << (h + 1)) - 1) & ~((1 << l) - 1) if h >= l else 0


def rsvd_bits(s: int, e: int) -> int:
    """The kernel's rsvd_bits(s, e): bits s..e, or 0 if e < s."""
    s, e = in_range("s", s, 0, 63, "a bit of a u64"), in_range("e", e, 0, 63, "a bit of a u64")
    return GENMASK(e, s) if e >= s else 0


# Constants shared by every mode (spte.h, mmu.h, vmx.h).
PT_PRESENT_MASK = BIT(0)
PT_WRITABLE_MASK = BIT(1)
PT_USER_MASK = BIT(2)
PT_ACCESSED_MASK = BIT(5)
PT_DIRTY_MASK = BIT(6)
PT_PAGE_SIZE_MASK = BIT(7)
PT64_NX_MASK = BIT(63)
SPTE_MMU_PRESENT_MASK = BIT(11)
SPTE_TDP_AD_SHIFT = 52
SPTE_TDP_AD_MASK = 3 << 52
SPTE_TDP_AD_ENABLED = 0
SPTE_TDP_AD_DISABLED = 1 << 52
SPTE_TDP_AD_WRPROT_ONLY = 2 << 52
SPTE_SPECIAL_MMIO_TAG = 3 << 52          # v5.10-5.12 SPTE_MMIO_MASK
SHADOW_ACC_TRACK_SAVED_BITS_MASK = 0x5
SHADOW_ACC_TRACK_SAVED_BITS_SHIFT = 54
SHADOW_NONPRESENT_OR_RSVD_MASK_LEN = 5
SPTE_MMIO_ALLOWED_MASK = BIT(63) | GENMASK(51, 12) | GENMASK(2, 0)
VMX_EPT_READABLE_MASK = 0x1
VMX_EPT_WRITABLE_MASK = 0x2
VMX_EPT_EXECUTABLE_MASK = 0x4
VMX_EPT_RWX_MASK = 0x7
VMX_EPT_MT_MASK = 7 << 3
VMX_EPT_IPAT_BIT = BIT(6)
VMX_EPT_ACCESS_BIT = BIT(8)
VMX_EPT_DIRTY_BIT = BIT(9)
VMX_EPT_SUPPRESS_VE_BIT = BIT(63)
VMX_EPT_MISCONFIG_WX_VALUE = 0x6
ACC_EXEC_MASK, ACC_WRITE_MASK, ACC_USER_MASK, ACC_ALL = 1, 2, 4, 7
MT_UC, MT_WB = 0, 6

MODES = ("legacy", "npt", "shadow", "ept", "tdx")


def ept_rsvd_table(maxphyaddr: int, execonly: bool, huge_level: int, me_mask: int = 0):
    """``__reset_rsvds_bits_mask_ept()`` for KVM's own (TDP) tables.

    Returns (rsvd_bits_mask[2][5] flattened row-major, bad_mt_xwr).  The TDP table
    drops shadow_me_mask bits from the reserved set (reset_tdp_shadow_zero_bits_mask).
    """
    maxphyaddr = in_range("maxphyaddr", maxphyaddr, 32, 52, "CPUID.80000008H:EAX[7:0]",
                          err=ConfigError)
    execonly = boolean("execonly", execonly, err=ConfigError)
    huge_level = in_range("huge_level", huge_level, 1, 3, "1: 4K only, 2: 2M, 3: 1G pages",
                          err=ConfigError)
    me_mask = uint("me_mask", me_mask, err=ConfigError)
    high = rsvd_bits(maxphyaddr, 63) & GENMASK(51, 0) & ~me_mask
    r0 = [0] * 5
    r1 = [0] * 5
    r0[4] = high | rsvd_bits(3, 7)
    r0[3] = high | rsvd_bits(3, 7)
    r0[2] = high | rsvd_bits(3, 6) | (0 if huge_level >= 3 else rsvd_bits(7, 7))
    r0[1] = high | rsvd_bits(3, 6) | (0 if huge_level >= 2 else rsvd_bits(7, 7))
    r0[0] = high
    r1[4], r1[3], r1[0] = r0[4], r0[3], r0[0]
    r1[2] = high | rsvd_bits(12, 29) | (0 if huge_level >= 3 else rsvd_bits(7, 7))
    r1[1] = high | rsvd_bits(12, 20) | (0 if huge_level >= 2 else rsvd_bits(7, 7))
    bad = 0
    for pte in range(64):
        mt, xwr = pte >> 3, pte & 7
        if mt in (2, 3, 7) or xwr in (0b010, 0b110) or (xwr == 0b100 and not execonly):
            bad |= BIT(pte)
    return tuple(r0 + r1), bad


def legacy_rsvd_table(maxphyaddr: int, level: int, nx: bool, gbpages: bool, amd: bool,
                      drop_mask: int = 0, add_mask: int = 0):
    """``__reset_rsvds_bits_mask()`` for 4- and 5-level 64-bit tables (bad_mt_xwr is 0).

    ``drop_mask`` bits are removed from the reserved set (TDP: shadow_me_mask);
    ``add_mask`` bits are added (shadow paging: shadow_me_mask & ~shadow_me_value).
    """
    maxphyaddr = in_range("maxphyaddr", maxphyaddr, 32, 52, "CPUID.80000008H:EAX[7:0]",
                          err=ConfigError)
    level = in_range("level", level, 4, 5, "4- or 5-level 64-bit tables", err=ConfigError)
    nx, gbpages, amd = (boolean(n, v, err=ConfigError)
                        for n, v in (("nx", nx), ("gbpages", gbpages), ("amd", amd)))
    drop_mask = uint("drop_mask", drop_mask, err=ConfigError)
    add_mask = uint("add_mask", add_mask, err=ConfigError)
    high = (rsvd_bits(maxphyaddr, 63) & GENMASK(51, 0) & ~drop_mask) | add_mask
    if not nx:
        high |= BIT(63)
    gb = 0 if gbpages else BIT(7)
    bit8 = BIT(8) if amd else 0
    r0 = [0] * 5
    r1 = [0] * 5
    if level >= 5:
        r0[4] = high | bit8 | BIT(7)
        r1[4] = r0[4]
    r0[3] = high | bit8 | BIT(7)
    r0[2] = high | gb
    r0[1] = high
    r0[0] = high
    r1[3] = r0[3]
    r1[2] = high | gb | rsvd_bits(13, 29)
    r1[1] = high | rsvd_bits(13, 20)
    r1[0] = r0[0]
    return tuple(r0 + r1), 0


def _options(what: str, kw: dict, *fns, fixed=()) -> None:
    """Refuse keyword options that none of ``fns`` (the preset builders) takes, or that the
    preset sets itself (``fixed``)."""
    allowed = set()
    for fn in fns:
        allowed |= {p.name for p in inspect.signature(fn).parameters.values()
                    if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and not p.name.startswith("_")}
    allowed -= set(fixed)
    bad = sorted(set(kw) - allowed)
    if bad:
        raise ConfigError(f"{what}: unknown option(s) {', '.join(bad)}; known: "
                          f"{', '.join(sorted(allowed))}")


# ------------------------------------------------------------------ MMIO masks (the one definition;
# pykvmmu.mmio re-exports them)
def default_mmio_masks(maxphyaddr: int) -> tuple[int, int, int]:
    """``kvm_mmu_reset_all_pte_masks()``: (value, mask, access_mask) = (BIT51|BIT0, same, W|U)
    below 52-bit MAXPHYADDR; value and mask 0 at 52 bits (no reserved PA bit left)."""
    m = in_range("maxphyaddr", maxphyaddr, 32, 52, "CPUID.80000008H:EAX[7:0]", err=ConfigError)
    v = (1 << 51) | PT_PRESENT_MASK if m < 52 else 0
    return v, v, ACC_WRITE_MASK | ACC_USER_MASK


def ept_mmio_masks(profile=None) -> tuple[int, int, int]:
    """``kvm_mmu_set_ept_masks()``: value WX (a misconfiguration), mask RWX (| SUPPRESS_VE
    from v6.10), access mask 0."""
    p = get_profile(profile or "latest")
    mask = VMX_EPT_RWX_MASK | (VMX_EPT_SUPPRESS_VE_BIT if p.ept_suppress_ve else 0)
    return VMX_EPT_MISCONFIG_WX_VALUE, mask, 0


def svm_adjust_mmio_mask(phys_bits: int, c_bit: int | None, *, mem_encrypt: bool = True):
    """``svm_adjust_mmio_mask()``: with memory encryption enabled (CPUID 0x8000001F and
    SYSCFG.MEM_ENCRYPT), the reserved bit is the first one above x86_phys_bits, bumped by
    one when it is the C-bit; value = mask = ``rsvd_bits(bit, 51) | P`` below 52, else 0.
    Returns (value, mask, access_mask), or None when the default masks stay."""
    bit = in_range("phys_bits", phys_bits, 32, 52, "x86_phys_bits", err=ConfigError)
    if c_bit is not None:
        c_bit = in_range("c_bit", c_bit, 32, 51, "the C-bit position, CPUID 0x8000001F EBX[5:0]",
                         err=ConfigError)
    if not boolean("mem_encrypt", mem_encrypt) or c_bit is None:
        return None
    if bit == c_bit:
        bit += 1
    mask = rsvd_bits(bit, 51) | PT_PRESENT_MASK if bit < 52 else 0
    return mask, mask, PT_WRITABLE_MASK | PT_USER_MASK


@dataclass(frozen=True)
class MmioSetResult:
    """Outcome of ``kvm_mmu_set_mmio_spte_mask()``: effective masks and the checks that fired."""

    value: int
    mask: int
    access_mask: int
    caching: bool
    fired: tuple  # names of checks that fired, in kernel order


def kvm_mmu_set_mmio_spte_mask(profile: LayoutProfile, value: int, mask: int, access_mask: int,
                               *, allow_mmio_caching: bool = True,
                               nonpresent_or_rsvd_mask: int = 0, lower_gfn_mask: int = 0,
                               strict_allowed_mask: bool | None = None) -> MmioSetResult:
    """Apply the kernel's checks, in the kernel's order, with the kernel's outcome.

    A check that fires forces the value to 0, which disables MMIO caching; the
    lower-gfn overlap check only warns.  ``strict_allowed_mask`` selects the
    SPTE_MMIO_ALLOWED_MASK check (present since about v6.1; default: on for
    profiles from v5.19, whose range it entered).
    """
    profile = get_profile(profile)
    value, mask = uint("value", value, err=ConfigError), uint("mask", mask, err=ConfigError)
    access_mask = uint("access_mask", access_mask, err=ConfigError)
    allow_mmio_caching = boolean("allow_mmio_caching", allow_mmio_caching, err=ConfigError)
    nonpresent_or_rsvd_mask = uint("nonpresent_or_rsvd_mask", nonpresent_or_rsvd_mask, err=ConfigError)
    lower_gfn_mask = uint("lower_gfn_mask", lower_gfn_mask, err=ConfigError)
    strict_allowed_mask = opt_boolean("strict_allowed_mask", strict_allowed_mask, err=ConfigError)
    if access_mask >> 32:
        raise ConfigError(f"access_mask={access_mask:#x}: must fit in 32 bits "
                          "(BUG_ON in kvm_mmu_set_mmio_spte_mask)")
    fired = []
    if value & lower_gfn_mask:
        fired.append("value_overlaps_lower_gfn_mask(warn)")
    if not allow_mmio_caching:
        fired.append("mmio_caching_disabled_by_parameter")
        value = 0
    if strict_allowed_mask is None:
        strict_allowed_mask = profile.me_value_split
    if strict_allowed_mask and mask & ~SPTE_MMIO_ALLOWED_MASK:
        fired.append("mask_outside_SPTE_MMIO_ALLOWED_MASK")
        value = 0
    if value & (nonpresent_or_rsvd_mask << SHADOW_NONPRESENT_OR_RSVD_MASK_LEN):
        fired.append("value_collides_with_l1tf_relocation")
        value = 0
    if (value & mask) != value:
        fired.append("value_outside_mask")
        value = 0
    frozen = profile.frozen_value
    if frozen is not None and value and (frozen & mask) == value:
        fired.append("frozen_spte_matches_value")
        value = 0
    if profile.mmio_zero_value_disables_caching:
        caching = value != 0
        if not caching and "mmio_caching_disabled_by_parameter" not in fired:
            fired.append("value_zero_disables_caching")
    else:
        # Before 8b9e74bfbf8c (v5.19): enable_mmio_caching stays as the parameter set it;
        # a value of 0 only makes is_mmio_spte false (its value != 0 test).
        caching = bool(allow_mmio_caching)
    return MmioSetResult(value, mask, access_mask, caching, tuple(fired))


@dataclass(frozen=True)
class MmuConfig:
    """Every SPTE mask KVM computes at module load, plus the era profile and host facts.

    Build one with a preset (``MmuConfig.ept()``, ``.npt()``, ``.shadow()``, ``.tdx()``,
    ``.legacy()`` or ``MmuConfig.preset(name)``), or explicitly from masks; the
    constructor checks the kernel's invariants and raises ConfigError naming the rule.
    """

    mode: str
    profile: LayoutProfile
    maxphyaddr: int
    phys_bits: int
    present_mask: int
    user_mask: int
    accessed_mask: int
    dirty_mask: int
    nx_mask: int
    x_mask: int
    acc_track_mask: int
    host_writable_mask: int
    mmu_writable_mask: int
    me_value: int = 0
    me_mask: int = 0
    mmio_value: int = 0
    mmio_mask: int = 0
    mmio_access_mask: int = 0
    nonpresent_or_rsvd_mask: int = 0
    nonpresent_or_rsvd_lower_gfn_mask: int = 0
    base_addr_mask: int = GENMASK(51, 12)
    mmio_caching: bool = True
    nx_huge_pages: bool = False
    ad_enabled: bool = True
    exec_only: bool = False
    tdp: bool = True
    mt_hook: bool = False
    ignore_guest_pat: bool = True
    cache_bits: int | None = None
    rsvd_bits_mask: tuple = field(default=(0,) * 10)
    bad_mt_xwr: int = 0
    mmio_fired: tuple = field(default=(), compare=False)

    # ------------------------------------------------------------------ checks
    def __post_init__(self):
        object.__setattr__(self, "profile", get_profile(self.profile))
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode!r}: unknown paging mode; known: {', '.join(MODES)}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "bool":
                boolean(f.name, v, err=ConfigError)
            if f.type == "int" and (not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > U64):
                raise ConfigError(f"{f.name}={v!r}: must be an unsigned 64-bit integer")
        if not 32 <= self.maxphyaddr <= 52:
            raise ConfigError(f"maxphyaddr={self.maxphyaddr}: must be in 32..52 (CPUID.80000008H:EAX[7:0])")
        if not 32 <= self.phys_bits <= self.maxphyaddr:
            raise ConfigError(f"phys_bits={self.phys_bits}: must be in 32..maxphyaddr ({self.maxphyaddr})")
        if len(self.rsvd_bits_mask) != 10:
            raise ConfigError("rsvd_bits_mask: needs 10 entries ([2][5] row-major)")
        self._check_invariants()

    def _fail(self, rule: str, detail: str):
        raise ConfigError(f"{rule}: {detail}")

    def _check_invariants(self):
        p = self.profile
        if self.me_value & ~self.me_mask:
            self._fail("me_value within me_mask (kvm_mmu_set_me_spte_mask)",
                       f"me_value={self.me_value:#x} has bits {self.me_value & ~self.me_mask:#x} "
                       f"outside me_mask={self.me_mask:#x}")
        if self.base_addr_mask & ~GENMASK(51, 12):
            self._fail("SPTE_BASE_ADDR_MASK within bits 51:12",
                       f"base_addr_mask={self.base_addr_mask:#x}")
        if bool(self.x_mask) == bool(self.nx_mask):
            self._fail("exactly one of shadow_x_mask / shadow_nx_mask",
                       f"x_mask={self.x_mask:#x} nx_mask={self.nx_mask:#x}")
        if self.acc_track_mask not in (0, VMX_EPT_RWX_MASK):
            self._fail("shadow_acc_track_mask is 0 or EPT RWX",
                       f"acc_track_mask={self.acc_track_mask:#x}")
        for name in ("host_writable_mask", "mmu_writable_mask"):
            v = getattr(self, name)
            if v == 0 or v & (v - 1):
                self._fail(f"{name} is a single bit", f"{name}={v:#x}")
        for name in ("accessed_mask", "dirty_mask"):
            v = getattr(self, name)
            if v & (v - 1):
                self._fail(f"{name} is a single bit or 0", f"{name}={v:#x}")
        # Software bits must not overlap each other, the PFN, or hardware permission bits.
        mmu_present = SPTE_MMU_PRESENT_MASK if p.mmu_present_bit11 else 0
        sw = [("host_writable_mask", self.host_writable_mask),
              ("mmu_writable_mask", self.mmu_writable_mask)]
        if mmu_present:
            sw.append(("SPTE_MMU_PRESENT_MASK", mmu_present))
        if self.mode in ("ept", "tdx"):
            sw.append(("SPTE_TDP_AD_MASK", SPTE_TDP_AD_MASK))
            sw.append(("access-track saved bits", SHADOW_ACC_TRACK_SAVED_BITS_MASK
                       << SHADOW_ACC_TRACK_SAVED_BITS_SHIFT))
        hw = [("present_mask", self.present_mask), ("user_mask", self.user_mask),
              ("accessed_mask", self.accessed_mask), ("dirty_mask", self.dirty_mask),
              ("nx_mask", self.nx_mask), ("x_mask", self.x_mask),
              ("PT_WRITABLE_MASK", PT_WRITABLE_MASK), ("PT_PAGE_SIZE_MASK", PT_PAGE_SIZE_MASK),
              ("base_addr_mask", self.base_addr_mask & ~self.me_mask)]
        for i, (na, a) in enumerate(sw):
            for nb, b in sw[i + 1:] + hw:
                if a & b:
                    self._fail("software SPTE bits must not overlap",
                               f"{na}={a:#x} overlaps {nb}={b:#x} in {a & b:#x}")
        if self.nonpresent_value_ & mmu_present:
            self._fail("SHADOW_NONPRESENT_VALUE has no MMU-present bit", f"{self.nonpresent_value_:#x}")
        if p.mmio_special_tag and not self.mmio_caching:
            self._fail("no MMIO caching switch before v5.13 (kvm.mmio_caching came with b09763da4dd8)",
                       f"profile {p.name} has MMIO SPTEs always on; mmio_caching=False has no kernel counterpart")
        if p.mmio_requires_nonzero_value and not self.mmio_caching and self.mmio_value:
            # v5.13-v6.9: kvm_mmu_set_mmio_spte_mask() stores value 0 when caching is off.
            self._fail("MMIO caching off means shadow_mmio_value == 0 (v5.13-v6.9)",
                       f"mmio_caching=False with mmio_value={self.mmio_value:#x}")
        if p.mmio_requires_nonzero_value and p.mmio_zero_value_disables_caching \
                and self.mmio_caching and not self.mmio_value:
            # v5.19-v6.9: a value of 0 also clears enable_mmio_caching (8b9e74bfbf8c); a
            # config with the two out of step has no kernel counterpart (spte-mmio.md 3.4, 3.6).
            self._fail("MMIO caching on iff shadow_mmio_value != 0 (v5.19-v6.9, 8b9e74bfbf8c)",
                       f"mmio_caching=True with mmio_value=0 in profile {p.name}")
        if not p.me_value_split and self.me_value != self.me_mask:
            self._fail("one shadow_me_mask before v5.19 (me_value == me_mask)",
                       f"me_value={self.me_value:#x} me_mask={self.me_mask:#x} in profile {p.name}; "
                       "the shadow_me_value/shadow_me_mask split arrived in v5.19")
        if self.mmio_value & ~self.mmio_mask and not p.mmio_special_tag:
            self._fail("MMIO value within MMIO mask",
                       f"mmio_value={self.mmio_value:#x} mmio_mask={self.mmio_mask:#x}")
        if self.mmio_caching:
            ls, le, hs, he = p.mmio_gen_layout
            gen = GENMASK(le, ls) | GENMASK(he, hs)
            if self.mmio_mask & gen:
                self._fail("MMIO mask must not overlap the MMIO generation",
                           f"mmio_mask={self.mmio_mask:#x} overlaps generation bits in {self.mmio_mask & gen:#x}")
            if self.mmio_mask & mmu_present:
                self._fail("MMIO mask must not overlap the MMU-present bit",
                           f"mmio_mask={self.mmio_mask:#x} has bit 11")
        if self.mmio_access_mask >> 32:
            self._fail("MMIO access mask fits in 32 bits", f"{self.mmio_access_mask:#x}")
        if self.cache_bits is not None and not self.phys_bits <= self.cache_bits < 47:
            self._fail("L1TF cache bits in phys_bits..46",
                       f"cache_bits={self.cache_bits} phys_bits={self.phys_bits}")

    # --------------------------------------------------------------- derived
    @property
    def nonpresent_value_(self) -> int:
        """SHADOW_NONPRESENT_VALUE of the profile (BIT 63 from v6.10, else 0)."""
        return self.profile.nonpresent_value

    @property
    def frozen_value(self):
        """FROZEN_SPTE (REMOVED_SPTE before v6.11), or None where the era has none."""
        return self.profile.frozen_value

    @property
    def mmu_present_mask(self) -> int:
        return SPTE_MMU_PRESENT_MASK if self.profile.mmu_present_bit11 else 0

    @property
    def me_bits(self) -> int:
        """What make_spte / make_nonleaf_spte OR in: shadow_me_value (v5.19+), else the one
        shadow_me_mask of older eras (the profile's me_value_split)."""
        return self.me_value if self.profile.me_value_split else self.me_mask

    @property
    def mmio_detects(self) -> bool:
        """is_mmio_spte can be true: caching on, and (v5.13-v6.9) a non-zero MMIO value."""
        return self.mmio_caching and not (self.profile.mmio_requires_nonzero_value
                                          and self.mmio_value == 0)

    @property
    def is_ept(self) -> bool:
        return self.mode in ("ept", "tdx")

    @property
    def max_pfn(self) -> int:
        return self.base_addr_mask >> 12

    @cached_property
    def _cptr(self):
        """The configuration as the C core's ``struct kvmmu_cfg`` (built once)."""
        from ._ffi import ffi, lib
        p = self.profile
        c = ffi.new("struct kvmmu_cfg *")
        for name in ("present_mask", "user_mask", "accessed_mask", "dirty_mask", "nx_mask",
                     "x_mask", "acc_track_mask", "host_writable_mask", "mmu_writable_mask",
                     "me_value", "mmio_value", "mmio_mask", "mmio_access_mask",
                     "nonpresent_or_rsvd_mask", "nonpresent_or_rsvd_lower_gfn_mask",
                     "base_addr_mask", "mmu_present_mask"):
            setattr(c, name, getattr(self, name))
        c.me_value = self.me_bits
        c.nonpresent_value = p.nonpresent_value
        c.frozen_value = p.frozen_value or 0
        ls, le, hs, he = p.mmio_gen_layout
        low_bits = le - ls + 1
        c.mmio_gen_low_mask = GENMASK(le, ls)
        c.mmio_gen_high_mask = GENMASK(he, hs)
        c.mmio_gen_low_shift = ls
        c.mmio_gen_high_shift = hs - low_bits
        c.mmio_gen_bits = p.mmio_gen_bits
        for i, v in enumerate(self.rsvd_bits_mask):
            c.rsvd_bits_mask[i] = v
        c.bad_mt_xwr = self.bad_mt_xwr
        rules = 0
        rules |= lib.KVMMU_R_MMU_PRESENT_BIT11 if p.mmu_present_bit11 else 0
        rules |= lib.KVMMU_R_MMIO_SPECIAL_TAG if p.mmio_special_tag else 0
        rules |= lib.KVMMU_R_AD_ALWAYS if p.ad_always else 0
        rules |= {"can_unsync": lib.KVMMU_R_SHORTCUT_CAN_UNSYNC,
                  "old_writable": lib.KVMMU_R_SHORTCUT_OLD_W,
                  "old_writable_leaf": lib.KVMMU_R_SHORTCUT_OLD_W_LEAF,
                  "v6.13": 0}[p.writable_shortcut]
        rules |= {"lockless": lib.KVMMU_R_ATOMIC_LOCKLESS, "mmuw_not_w": lib.KVMMU_R_ATOMIC_MMUW_NOT_W,
                  "needs_atomic": lib.KVMMU_R_ATOMIC_NEEDS}[p.atomic_rule]
        rules |= lib.KVMMU_R_SPLIT_EXEC_ACCESS if p.split_exec_from_access else 0
        rules |= lib.KVMMU_R_LOCKLESS_BOTH_BITS if p.mmu_writable_needs_both_bits else 0
        c.rules = rules
        flags = 0
        flags |= lib.KVMMU_F_EPT if self.is_ept else 0
        flags |= lib.KVMMU_F_MMIO_ENABLED if self.mmio_detects else 0
        flags |= lib.KVMMU_F_MT_HOOK if self.mt_hook else 0
        flags |= lib.KVMMU_F_IGNORE_GUEST_PAT if self.ignore_guest_pat else 0
        flags |= lib.KVMMU_F_HAS_FROZEN if p.frozen_value is not None else 0
        flags |= lib.KVMMU_F_EPT_VE_CHECK if p.has_ept_ve_possible else 0
        flags |= lib.KVMMU_F_AD_ENABLED if self.ad_enabled else 0
        flags |= lib.KVMMU_F_NX_HUGE_PAGES if self.nx_huge_pages else 0
        c.flags = flags
        from . import isa
        c.isa = isa.DEFAULT
        return c

    def _isa_copy(self, level: str) -> "MmuConfig":
        """An equal configuration whose C struct caps the core's hand-written kernels at
        ``level`` (``portable``, ``avx2``, ``avx512``; see :mod:`pykvmmu.isa`), so tests can
        hold every kernel to the same results as the portable loops."""
        from . import isa
        twin = self.replace()
        twin._cptr.isa = isa.level(level)
        return twin

    def _portable_copy(self) -> "MmuConfig":
        """``_isa_copy("portable")``: plain C loops only."""
        return self._isa_copy("portable")

    def replace(self, **changes) -> "MmuConfig":
        """A copy with some fields changed (validated again)."""
        names = {f.name for f in dataclasses.fields(self)}
        for k in changes:
            if k not in names:
                raise ConfigError(f"{k}: not an MmuConfig field (fields: {', '.join(sorted(names))})")
        changes.setdefault("mmio_fired", self.mmio_fired)
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        lines = [f"MmuConfig mode={self.mode} profile={self.profile}",
                 f"  maxphyaddr={self.maxphyaddr} phys_bits={self.phys_bits} "
                 f"cache_bits={self.cache_bits} tdp={self.tdp} ad_enabled={self.ad_enabled} "
                 f"exec_only={self.exec_only} nx_huge_pages={self.nx_huge_pages} "
                 f"mmio_caching={self.mmio_caching} mt_hook={self.mt_hook}"]
        for name in ("present_mask", "user_mask", "accessed_mask", "dirty_mask", "nx_mask",
                     "x_mask", "acc_track_mask", "host_writable_mask", "mmu_writable_mask",
                     "me_value", "me_mask", "mmio_value", "mmio_mask", "mmio_access_mask",
                     "nonpresent_or_rsvd_mask", "nonpresent_or_rsvd_lower_gfn_mask",
                     "base_addr_mask"):
            lines.append(f"  {name:34s} 0x{getattr(self, name):016x}")
        lines.append(f"  {'SHADOW_NONPRESENT_VALUE':34s} 0x{self.nonpresent_value_:016x}")
        fz = self.frozen_value
        lines.append(f"  {'FROZEN_SPTE':34s} " + ("none" if fz is None else f"0x{fz:016x}"))
        return "\n".join(lines)

    # ------------------------------------------------------------- presets
    @classmethod
    def _base(cls, profile, maxphyaddr, phys_bits, cache_bits):
        """kvm_mmu_reset_all_pte_masks(): the defaults every vendor starts from."""
        p = get_profile(profile)
        maxphyaddr = in_range("maxphyaddr", maxphyaddr, 32, 52, "CPUID.80000008H:EAX[7:0]",
                              err=ConfigError)
        phys_bits = maxphyaddr if phys_bits is None else \
            in_range("phys_bits", phys_bits, 32, maxphyaddr, "x86_phys_bits <= maxphyaddr",
                     err=ConfigError)
        low_phys_bits = phys_bits
        rsvd = 0
        if cache_bits is not None:
            if not isinstance(cache_bits, int) or cache_bits >= 52 - SHADOW_NONPRESENT_OR_RSVD_MASK_LEN \
                    or cache_bits < phys_bits:
                raise ConfigError(f"cache_bits={cache_bits!r}: L1TF masks need phys_bits <= cache_bits < 47 "
                                  "(WARN_ON_ONCE in kvm_mmu_reset_all_pte_masks)")
            low_phys_bits = cache_bits - SHADOW_NONPRESENT_OR_RSVD_MASK_LEN
            rsvd = rsvd_bits(low_phys_bits, cache_bits - 1)
        hw, mw = p.writable_bits_legacy
        return p, dict(
            profile=p, maxphyaddr=maxphyaddr, phys_bits=phys_bits, cache_bits=cache_bits,
            present_mask=PT_PRESENT_MASK, user_mask=PT_USER_MASK,
            accessed_mask=PT_ACCESSED_MASK, dirty_mask=PT_DIRTY_MASK,
            nx_mask=PT64_NX_MASK, x_mask=0, acc_track_mask=0,
            host_writable_mask=BIT(hw), mmu_writable_mask=BIT(mw),
            nonpresent_or_rsvd_mask=rsvd,
            nonpresent_or_rsvd_lower_gfn_mask=GENMASK(low_phys_bits - 1, 12))

    @classmethod
    def _finish(cls, p, kw, value, mask, access, mmio_caching):
        if p.mmio_special_tag:
            # v5.10-5.12: kvm_mmu_set_mmio_spte_mask(value, access) ORs SPTE_MMIO_MASK into the value;
            # detection looks only at SPTE_SPECIAL_MASK.
            if not mmio_caching:
                raise ConfigError(f"mmio_caching=False: profile {p} had no kvm.mmio_caching parameter "
                                  "(added in v5.13); MMIO SPTEs are always on in that era")
            kw.update(mmio_value=value | SPTE_SPECIAL_MMIO_TAG, mmio_mask=SPTE_SPECIAL_MMIO_TAG | mask,
                      mmio_access_mask=access, mmio_caching=True, mmio_fired=())
            return cls(**kw)
        r = kvm_mmu_set_mmio_spte_mask(p, value, mask, access, allow_mmio_caching=mmio_caching,
                                       nonpresent_or_rsvd_mask=kw["nonpresent_or_rsvd_mask"],
                                       lower_gfn_mask=kw["nonpresent_or_rsvd_lower_gfn_mask"])
        kw.update(mmio_value=r.value, mmio_mask=r.mask, mmio_access_mask=r.access_mask,
                  mmio_caching=r.caching, mmio_fired=r.fired)
        return cls(**kw)

    @classmethod
    def legacy(cls, *, maxphyaddr: int = 46, phys_bits: int | None = None, cache_bits: int | None = None,
               profile=DEFAULT_PROFILE, nx_huge_pages: bool = False, mmio_caching: bool = True,
               sme_cbit: int | None = None, sme_phys_reduction: int = 5, tdp: bool = True,
               mode: str = "npt", tdp_level: int = 4, gbpages: bool = True,
               guest_nx: bool = True, guest_amd: bool = True) -> "MmuConfig":
        """x86-64 format (AMD NPT, or shadow paging with ``tdp=False``).

        With ``sme_cbit`` the host runs SME/SEV: ``kvm_mmu_set_me_spte_mask(C, C)``,
        x86_phys_bits reduced by ``sme_phys_reduction``, the C-bit dropped from the PFN
        mask (dynamic physical mask) and ``svm_adjust_mmio_mask()`` applied.
        """
        me = 0
        pb = phys_bits
        maxphyaddr = in_range("maxphyaddr", maxphyaddr, 32, 52, "CPUID.80000008H:EAX[7:0]",
                              err=ConfigError)
        mode = choice("mode", mode, ("npt", "legacy"), err=ConfigError)
        tdp_level = in_range("tdp_level", tdp_level, 4, 5, "NPT tables have 4 or 5 levels",
                             err=ConfigError)
        nx_huge_pages, mmio_caching, tdp, gbpages, guest_nx, guest_amd = (
            boolean(n, v, err=ConfigError) for n, v in (
                ("nx_huge_pages", nx_huge_pages), ("mmio_caching", mmio_caching), ("tdp", tdp),
                ("gbpages", gbpages), ("guest_nx", guest_nx), ("guest_amd", guest_amd)))
        if sme_cbit is not None:
            sme_cbit = in_range("sme_cbit", sme_cbit, 32, 51, "the C-bit position, "
                                "CPUID 0x8000001F EBX[5:0]", err=ConfigError)
            sme_phys_reduction = in_range("sme_phys_reduction", sme_phys_reduction, 0, 63,
                                          "CPUID 0x8000001F EBX[11:6]", err=ConfigError)
            me = BIT(sme_cbit)
            if pb is None:
                pb = maxphyaddr - sme_phys_reduction
                if pb < 32:
                    raise ConfigError(f"sme_phys_reduction={sme_phys_reduction}: maxphyaddr "
                                      f"{maxphyaddr} - reduction = {pb} phys bits, below 32")
        p, kw = cls._base(profile, maxphyaddr, pb, cache_bits)
        value, mask, access = svm_adjust_mmio_mask(kw["phys_bits"], sme_cbit) \
            or default_mmio_masks(maxphyaddr)
        if tdp:
            rsvd, bad = legacy_rsvd_table(maxphyaddr, tdp_level, nx=True, gbpages=gbpages,
                                          amd=True, drop_mask=me)
        else:
            rsvd, bad = legacy_rsvd_table(maxphyaddr, 4, nx=guest_nx, gbpages=gbpages,
                                          amd=guest_amd, add_mask=0)
        kw.update(mode=mode if tdp else "shadow", me_value=me, me_mask=me, tdp=tdp,
                  base_addr_mask=GENMASK(51, 12) & ~me, nx_huge_pages=nx_huge_pages,
                  ad_enabled=True, rsvd_bits_mask=rsvd, bad_mt_xwr=bad)
        return cls._finish(p, kw, value, mask, access, mmio_caching)

    @classmethod
    def npt(cls, **kw) -> "MmuConfig":
        """AMD NPT (``legacy`` with tdp=True); pass ``sme_cbit=47`` for an SME/SEV host."""
        _options("npt", kw, cls.legacy, fixed=("tdp",))
        kw.setdefault("mode", "npt")
        return cls.legacy(tdp=True, **kw)

    @classmethod
    def shadow(cls, **kw) -> "MmuConfig":
        """Shadow paging (no TDP): masks as legacy, reserved bits from the guest's paging."""
        _options("shadow", kw, cls.legacy, fixed=("tdp",))
        kw.pop("mode", None)
        kw.setdefault("guest_amd", False)
        return cls.legacy(tdp=False, **kw)

    @classmethod
    def ept(cls, *, ad: bool = True, exec_only: bool = False, maxphyaddr: int = 46,
            phys_bits: int | None = None, cache_bits: int | None = None, profile=DEFAULT_PROFILE,
            nx_huge_pages: bool = False, mmio_caching: bool = True, huge_level: int = 3,
            ignore_guest_pat: bool = True, _tdx: bool = False) -> "MmuConfig":
        """Intel EPT: ``kvm_mmu_set_ept_masks(has_ad, has_exec_only)`` plus ``vmx_setup_me_spte_mask``.

        With ``phys_bits < maxphyaddr`` (MKTME/TDX KeyID bits) the KeyID bits become
        ``shadow_me_mask`` with value 0 (v5.19+).
        """
        ad, exec_only, nx_huge_pages, mmio_caching, ignore_guest_pat = (
            boolean(n, v, err=ConfigError) for n, v in (
                ("ad", ad), ("exec_only", exec_only), ("nx_huge_pages", nx_huge_pages),
                ("mmio_caching", mmio_caching), ("ignore_guest_pat", ignore_guest_pat)))
        huge_level = in_range("huge_level", huge_level, 1, 3, "1: 4K only, 2: 2M, 3: 1G pages",
                              err=ConfigError)
        p, kw = cls._base(profile, maxphyaddr, phys_bits, cache_bits)
        hw, mw = p.writable_bits_ept
        present = (0 if exec_only else VMX_EPT_READABLE_MASK)
        if p.ept_suppress_ve:
            present |= VMX_EPT_SUPPRESS_VE_BIT
        a_mask = VMX_EPT_ACCESS_BIT if (ad or p.ad_always) else 0
        d_mask = VMX_EPT_DIRTY_BIT if (ad or p.ad_always) else 0
        me_mask = 0
        if p.me_value_split and kw["phys_bits"] != maxphyaddr:
            me_mask = rsvd_bits(kw["phys_bits"], maxphyaddr - 1)
        rsvd, bad = ept_rsvd_table(maxphyaddr, execonly=False, huge_level=huge_level, me_mask=me_mask)
        kw.update(mode="tdx" if _tdx else "ept", present_mask=present,
                  user_mask=VMX_EPT_READABLE_MASK, accessed_mask=a_mask, dirty_mask=d_mask,
                  nx_mask=0, x_mask=VMX_EPT_EXECUTABLE_MASK, acc_track_mask=VMX_EPT_RWX_MASK,
                  host_writable_mask=BIT(hw), mmu_writable_mask=BIT(mw), me_value=0, me_mask=me_mask,
                  ad_enabled=ad, exec_only=exec_only, tdp=True, mt_hook=True,
                  ignore_guest_pat=ignore_guest_pat, nx_huge_pages=nx_huge_pages,
                  rsvd_bits_mask=rsvd, bad_mt_xwr=bad)
        return cls._finish(p, kw, *ept_mmio_masks(p), mmio_caching)

    @classmethod
    def tdx(cls, *, maxphyaddr: int = 52, phys_bits: int | None = None, profile=DEFAULT_PROFILE,
            **kw) -> "MmuConfig":
        """A TDX VM: EPT with A/D, the per-VM MMIO value 0 (``tdx_vm_init``), guest PAT honoured.

        TDX needs MMIO caching and EPT A/D; a configuration without them is refused, as
        ``tdx_bringup`` refuses to come up.  TDX exists from v6.16 (profile v6.15 or later).
        """
        _options("tdx", kw, cls.ept, fixed=("ignore_guest_pat",))
        p = get_profile(profile)
        maxphyaddr = in_range("maxphyaddr", maxphyaddr, 32, 52, "CPUID.80000008H:EAX[7:0]",
                              err=ConfigError)
        if not p.has_tdx:
            raise ConfigError(f"tdx: TDX was merged in v6.16; profile {p} predates it")
        if kw.pop("ad", True) is not True:
            raise ConfigError("tdx: EPT A/D bits are required (tdx_bringup)")
        if phys_bits is None:
            phys_bits = maxphyaddr - 6
        c = cls.ept(ad=True, maxphyaddr=maxphyaddr, phys_bits=phys_bits, profile=p,
                    ignore_guest_pat=False, _tdx=True, **kw)
        if not c.mmio_caching:
            raise ConfigError("tdx: MMIO caching is required (tdx_bringup: 'TDP MMU and MMIO caching "
                              "and EPT A/D bit is required for TDX')")
        return c.replace(mmio_value=0, mmio_fired=c.mmio_fired + ("tdx_per_vm_value_0",))

    PRESETS = ("npt", "npt-sme", "shadow", "ept", "ept-noad", "ept-xo", "tdx")

    @classmethod
    def preset(cls, name: str, **kw) -> "MmuConfig":
        """One of the named presets: npt, npt-sme, shadow, ept, ept-noad, ept-xo, tdx."""
        table = {
            "npt": lambda: cls.npt(**kw),
            "legacy": lambda: cls.npt(**kw),
            "npt-sme": lambda: cls.npt(**{"sme_cbit": 47, "maxphyaddr": 48, **kw}),
            "shadow": lambda: cls.shadow(**kw),
            "ept": lambda: cls.ept(**kw),
            "ept-noad": lambda: cls.ept(**{"ad": False, **kw}),
            "ept-xo": lambda: cls.ept(**{"exec_only": True, **kw}),
            "tdx": lambda: cls.tdx(**kw),
        }
        if not isinstance(name, str) or name not in table:
            raise ConfigError(f"preset={name!r}: unknown; known: {', '.join(cls.PRESETS)}")
        if name.startswith("ept"):
            _options(f"preset {name}", kw, cls.ept)
        return table[name]()

    @classmethod
    def all_presets(cls, profiles=None):
        """Every preset for every profile where it exists (for tests and demos)."""
        from .profile import PROFILES
        out = []
        if profiles is not None and (isinstance(profiles, (str, bytes))
                                     or not hasattr(profiles, "__iter__")):
            raise ConfigError(f"profiles={profiles!r}: expected a list of profile names or None")
        for pname in (profiles or PROFILES):
            for name in cls.PRESETS:
                try:
                    out.append(cls.preset(name, profile=pname))
                except ConfigError:
                    continue
        return out
