"""The previous-roots (PGD) cache: kvm_mmu.root + prev_roots[KVM_MMU_NUM_PREV_ROOTS].

Models, per era flavour (fact sheet section 4):
  * "v4.19"  cached_root_available() (v4.19-v5.6): rotate the current root through
    prev_roots; hit when pgd, a valid hpa and role.word all match; the current root itself
    is never reused; a miss leaves the LRU root in the current slot to be freed.
  * "v5.7"   as above, but the current root is checked first and direct MMUs ignore pgd.
  * "v5.19"  cached_root_find_and_keep_current() / cached_root_find_without_current().
Driven with a sequence of CR3/EPTP switches (``new_pgd(pgd, role)``), it reports hits and
misses.  A new root's stored role is what kvm_mmu_get_page() stores (the era's filter of
bit 4 on direct pages), which is exactly where the v4.20/v5.0 NPT bug came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ._check import in_range, snapshot, uint
from .errors import InputError, ProfileError
from .role import PrevRootsRule, get_era, kvm_mmu_get_page_role, unpack

__all__ = ["INVALID_PAGE", "KVM_MMU_NUM_PREV_ROOTS", "KVM_MMU_ROOT_CURRENT", "KVM_MMU_ROOTS_ALL",
           "KVM_MMU_ROOT_PREVIOUS", "RootInfo", "RootPage", "PrevRootsCache", "run_switches"]

INVALID_PAGE = (1 << 64) - 1
KVM_MMU_NUM_PREV_ROOTS = 3
KVM_MMU_ROOT_CURRENT = 1
KVM_MMU_ROOTS_ALL = (1 << (1 + KVM_MMU_NUM_PREV_ROOTS)) - 1


def KVM_MMU_ROOT_PREVIOUS(i: int) -> int:  # noqa: N802 - kernel macro name
    return 1 << (1 + in_range("i", i, 0, KVM_MMU_NUM_PREV_ROOTS - 1, "KVM_MMU_NUM_PREV_ROOTS"))


@dataclass
class RootInfo:
    """struct kvm_mmu_root_info: pgd (cr3 before ~v5.7) and the root's hpa."""

    pgd: int = 0
    hpa: int = INVALID_PAGE

    @property
    def valid(self) -> bool:
        return self.hpa != INVALID_PAGE


@dataclass
class RootPage:
    role: int
    root_count: int = 0
    unsync: bool = False
    obsolete: bool = False


@dataclass
class PrevRootsCache:
    """One struct kvm_mmu's root cache, with the root pages it points to."""

    era: object
    root: RootInfo = field(default_factory=RootInfo)
    prev_roots: list = field(default_factory=lambda: [RootInfo(INVALID_PAGE, INVALID_PAGE)
                                                      for _ in range(KVM_MMU_NUM_PREV_ROOTS)])
    pages: dict = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    freed: int = 0
    log: list = field(default_factory=list)
    _next_hpa: int = 0x100000

    def __post_init__(self):
        self.era = get_era(self.era)
        if self.era.prev_roots is None:
            raise ProfileError(f"prev_roots: the cache does not exist in era {self.era} (v4.19+)")
        self.flavour = self.era.prev_roots

    # -- helpers -----------------------------------------------------------
    def _args(self, pgd, role) -> tuple:
        """Check a (pgd, role) switch before anything changes: pgd a u64, role a 32-bit
        role word whose level is 1..5 (kvm_mmu_get_page builds the root from it)."""
        pgd = uint("pgd", pgd)
        role = uint("role", role, 32)
        in_range("role.level", role & 0xF, 1, 5, "a root SP's level is PG_LEVEL_4K.."
                 "PT64_ROOT_MAX_LEVEL")
        return pgd, role

    def _snapshot(self):
        """The cache's whole state, comparable (tests: a refused call changes nothing)."""
        return snapshot(self)

    def _sp(self, hpa: int):
        return self.pages.get(hpa)

    def is_root_usable(self, root: RootInfo, pgd: int, role: int) -> bool:
        """is_root_usable: valid hpa, pgd equal (ignored for direct roles from v5.7), an SP
        behind the root, and role.word equal to the SP's stored role.word."""
        if not isinstance(root, RootInfo):
            raise InputError(f"root={root!r}: expected a RootInfo")
        pgd, role = uint("pgd", pgd), uint("role", role, 32)
        if not root.valid:
            return False
        direct = (role >> 7) & 1
        if not (direct and self.flavour != PrevRootsRule.V4_19) and pgd != root.pgd:
            return False
        sp = self._sp(root.hpa)
        if sp is None:
            return False
        return role == sp.role

    def _free_root(self, info: RootInfo) -> None:
        """mmu_free_root_page: --root_count; the page goes when unused (TDP MMU put_root)."""
        sp = self._sp(info.hpa)
        if sp is not None:
            sp.root_count -= 1
            if sp.root_count <= 0:
                del self.pages[info.hpa]
                self.freed += 1
        info.hpa = INVALID_PAGE

    def free_roots(self, roots_to_free: int) -> None:
        """kvm_mmu_free_roots: free the selected roots; a prev root keeps its pgd, the current
        root gets pgd 0."""
        roots_to_free = uint("roots_to_free", roots_to_free)
        if roots_to_free & ~KVM_MMU_ROOTS_ALL:
            raise InputError(f"roots_to_free={roots_to_free:#x}: bits outside KVM_MMU_ROOTS_ALL")
        for i in range(KVM_MMU_NUM_PREV_ROOTS):
            if roots_to_free & KVM_MMU_ROOT_PREVIOUS(i) and self.prev_roots[i].valid:
                self._free_root(self.prev_roots[i])
        if roots_to_free & KVM_MMU_ROOT_CURRENT and self.root.valid:
            self._free_root(self.root)
            self.root.pgd = 0

    def free_guest_mode_roots(self) -> None:
        """kvm_mmu_free_guest_mode_roots: free prev roots with no SP or role.guest_mode = 1."""
        mask = 0
        for i, r in enumerate(self.prev_roots):
            if r.valid:
                sp = self._sp(r.hpa)
                if sp is None or (sp.role >> 17) & 1:
                    mask |= KVM_MMU_ROOT_PREVIOUS(i)
        self.free_roots(mask)

    def alloc_root(self, pgd: int, role: int) -> int:
        """kvm_mmu_reload -> a new root SP whose stored role is kvm_mmu_get_page's."""
        pgd, role = self._args(pgd, role)
        r = unpack(self.era, role)
        stored = kvm_mmu_get_page_role(self.era, role, level=r.level, direct=bool(r.direct),
                                       access=r.access)
        hpa = self._next_hpa
        self._next_hpa += 0x1000
        self.pages[hpa] = RootPage(stored, root_count=1)
        self.root = RootInfo(0 if (r.direct and self.flavour == PrevRootsRule.V5_19) else pgd, hpa)
        return hpa

    # -- the fast switch ---------------------------------------------------
    def _rotate(self, pgd: int, role: int) -> bool:
        for i in range(KVM_MMU_NUM_PREV_ROOTS):
            self.root, self.prev_roots[i] = self.prev_roots[i], self.root
            if self.is_root_usable(self.root, pgd, role):
                return True
        return False

    def _find_without_current(self, pgd: int, role: int) -> bool:
        """cached_root_find_without_current: swap the first usable prev root in, shift the
        younger ones down, and invalidate the LRU slot's hpa (its pgd stays)."""
        n = KVM_MMU_NUM_PREV_ROOTS
        for i in range(n):
            if self.is_root_usable(self.prev_roots[i], pgd, role):
                self.root, self.prev_roots[i] = self.prev_roots[i], self.root
                for j in range(i, n - 1):
                    self.prev_roots[j] = self.prev_roots[j + 1]
                self.prev_roots[n - 1] = RootInfo(self.prev_roots[n - 1].pgd, INVALID_PAGE)
                return True
        return False

    def fast_pgd_switch(self, pgd: int, role: int) -> bool:
        """kvm_mmu_fast_pgd_switch: look for a usable cached root (see the module docstring)."""
        pgd, role = self._args(pgd, role)
        if self.flavour == PrevRootsRule.V5_19:
            if self.root.valid and self._sp(self.root.hpa) is None:
                self.free_roots(KVM_MMU_ROOT_CURRENT)
            if self.root.valid:
                if self.is_root_usable(self.root, pgd, role):
                    return True
                if self._rotate(pgd, role):
                    return True
                self.free_roots(KVM_MMU_ROOT_CURRENT)
                return False
            return self._find_without_current(pgd, role)
        if self.flavour == PrevRootsRule.V5_7 and self.is_root_usable(self.root, pgd, role):
            return True
        if self._rotate(pgd, role):
            return True
        self.free_roots(KVM_MMU_ROOT_CURRENT)
        return False

    def new_pgd(self, pgd: int, role: int, label: str = "") -> bool:
        """kvm_mmu_new_pgd: fast switch; on a miss build a new root (kvm_mmu_reload).  Every
        argument is checked before the cache changes."""
        pgd, role = self._args(pgd, role)
        if not isinstance(label, str):
            raise InputError(f"label={label!r}: expected a str")
        hit = self.fast_pgd_switch(pgd, role)
        if hit:
            self.hits += 1
        else:
            self.misses += 1
            self.alloc_root(pgd, role)
        self.log.append((label, pgd, role, hit))
        return hit

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0

    def describe(self) -> str:
        def one(r):
            if not r.valid:
                return f"pgd {r.pgd:#x} INVALID" if r.pgd != INVALID_PAGE else "INVALID"
            sp = self._sp(r.hpa)
            return f"pgd {r.pgd:#x} hpa {r.hpa:#x} role {sp.role:#010x}" if sp else f"hpa {r.hpa:#x} (no SP)"
        lines = [f"current: {one(self.root)}"]
        lines += [f"prev[{i}]: {one(r)}" for i, r in enumerate(self.prev_roots)]
        return "\n".join(lines)


def run_switches(era, seq) -> PrevRootsCache:
    """Drive a cache with [(pgd, role, label), ...]; returns the cache (hits/misses/log)."""
    c = PrevRootsCache(era)
    if isinstance(seq, (str, bytes)) or not hasattr(seq, "__iter__"):
        raise InputError(f"seq={seq!r}: expected an iterable of (pgd, role, label) triples")
    for i, step in enumerate(seq):
        if not isinstance(step, (tuple, list)) or len(step) != 3:
            raise InputError(f"seq[{i}]={step!r}: expected a (pgd, role, label) triple")
        try:
            c.new_pgd(*step)
        except InputError as e:
            raise InputError(f"seq[{i}]: {e}") from None
    return c
