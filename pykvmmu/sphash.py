"""The shadow-page hash table (kvm->arch.mmu_page_hash): lookup by gfn and role word.

Models kvm_mmu_find_shadow_page / kvm_mmu_alloc_shadow_page / __kvm_mmu_get_shadow_page
(fact sheet section 3): 4096 buckets keyed by ``hash_64(gfn, 12)``, LIFO buckets (head
insertion), obsolete pages (role.invalid or a stale mmu_valid_gen) skipped, ``collisions``
counted per lookup like ``max_mmu_page_hash_collisions``.  Bucket statistics and a bucket
occupancy plot (matplotlib optional) for a gfn population.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ._batch import in_array, ptr
from ._check import boolean, in_range, snapshot, uint
from ._ffi import lib
from .errors import InputError
from .role import KVM_MMU_HASH_SHIFT, hash_batch, kvm_page_table_hashfn

__all__ = ["ShadowPage", "MmuPageHash", "bucket_counts", "bucket_stats", "plot_bucket_occupancy",
           "realistic_gfns"]


@dataclass
class ShadowPage:
    gfn: int
    role: int
    mmu_valid_gen: int = 0
    unsync: bool = False
    tdp_mmu_page: bool = False
    root_count: int = 0
    write_flooding_count: int = 0
    spt: list = field(default_factory=lambda: [0] * 512)

    def __post_init__(self):
        self.gfn = uint("gfn", self.gfn)
        self.role = uint("role", self.role, 32)

    @property
    def direct(self) -> bool:
        return bool((self.role >> 7) & 1)

    @property
    def level(self) -> int:
        return self.role & 0xF

    @property
    def invalid(self) -> bool:
        return bool((self.role >> 11) & 1)

    def has_gptes(self, passthrough_bit: int | None = 18) -> bool:
        """sp_has_gptes: !direct && !passthrough."""
        pt = passthrough_bit is not None and (self.role >> passthrough_bit) & 1
        return not self.direct and not pt


class MmuPageHash:
    """kvm->arch.mmu_page_hash plus the statistics KVM keeps about it."""

    def __init__(self, shift: int = KVM_MMU_HASH_SHIFT):
        shift = in_range("shift", shift, 1, 20, "hash_64 bits for the bucket array")
        self.shift = shift
        self.buckets: list[list[ShadowPage]] = [[] for _ in range(1 << shift)]
        self.mmu_valid_gen = 0
        self.stat = {"mmu_cache_miss": 0, "max_mmu_page_hash_collisions": 0, "mmu_shadow_zapped": 0}
        self.active_mmu_pages: list[ShadowPage] = []

    def _snapshot(self):
        """The whole hash state, comparable (tests: a refused call changes nothing)."""
        return snapshot(self)

    def bucket_of(self, gfn: int) -> int:
        """kvm_page_table_hashfn(gfn) (hash_64 with this table's bits)."""
        gfn = uint("gfn", gfn)
        if self.shift == KVM_MMU_HASH_SHIFT:
            return kvm_page_table_hashfn(gfn)
        from .role import hash_64
        return hash_64(gfn, self.shift)

    def is_obsolete(self, sp: ShadowPage) -> bool:
        """is_obsolete_sp: role.invalid, or a stale generation (shadow-MMU pages only)."""
        return sp.invalid or (not sp.tdp_mmu_page and sp.mmu_valid_gen != self.mmu_valid_gen)

    def find(self, gfn: int, role: int) -> ShadowPage | None:
        """kvm_mmu_find_shadow_page: walk the bucket; gfn mismatches count as collisions;
        on a role mismatch an unsync SP is zapped when the requested level > 4K."""
        gfn, role = uint("gfn", gfn), uint("role", role, 32)
        collisions = 0
        found = None
        for sp in list(self.buckets[self.bucket_of(gfn)]):
            if self.is_obsolete(sp):
                continue
            if sp.gfn != gfn:
                collisions += 1
                continue
            if sp.role != role:
                if (role & 0xF) > 1 and sp.unsync:
                    self.zap(sp)
                continue
            found = sp
            if not sp.direct:
                sp.write_flooding_count = 0
            break
        if found is None:
            self.stat["mmu_cache_miss"] += 1
        self.stat["max_mmu_page_hash_collisions"] = max(self.stat["max_mmu_page_hash_collisions"],
                                                       collisions)
        self.last_collisions = collisions
        return found

    def alloc(self, gfn: int, role: int, tdp_mmu_page: bool = False) -> ShadowPage:
        """kvm_mmu_alloc_shadow_page: head of active_mmu_pages and of the gfn's bucket.  A
        second valid SP with the same gfn and role is refused (KVM looks one up first:
        __kvm_mmu_get_shadow_page)."""
        gfn, role = uint("gfn", gfn), uint("role", role, 32)
        tdp_mmu_page = boolean("tdp_mmu_page", tdp_mmu_page)
        for other in self.buckets[self.bucket_of(gfn)]:
            if other.gfn == gfn and other.role == role and not self.is_obsolete(other):
                raise InputError(f"gfn={gfn:#x} role={role:#x}: a valid shadow page with this gfn "
                                 "and role already exists (use get(), which finds it)")
        sp = ShadowPage(gfn, role, self.mmu_valid_gen, tdp_mmu_page=tdp_mmu_page)
        self.active_mmu_pages.insert(0, sp)
        self.buckets[self.bucket_of(gfn)].insert(0, sp)
        return sp

    def get(self, gfn: int, role: int) -> tuple:
        """__kvm_mmu_get_shadow_page: (sp, created)."""
        gfn, role = uint("gfn", gfn), uint("role", role, 32)
        sp = self.find(gfn, role)
        if sp is not None:
            return sp, False
        return self.alloc(gfn, role), True

    def zap(self, sp: ShadowPage) -> None:
        """Remove the SP from the hash (kvm_mmu_prepare_zap_page + commit, simplified).  The
        SP must be this hash's (the very object, not an equal one)."""
        if not isinstance(sp, ShadowPage):
            raise InputError(f"sp={sp!r}: expected a ShadowPage, got {type(sp).__name__}")
        bucket = self.buckets[self.bucket_of(sp.gfn)]
        i = next((k for k, x in enumerate(bucket) if x is sp), None)
        if i is None:
            raise InputError(f"sp=<ShadowPage gfn={sp.gfn:#x} role={sp.role:#x}>: not in this "
                             "mmu_page_hash (already zapped, or another table's page)")
        del bucket[i]
        j = next((k for k, x in enumerate(self.active_mmu_pages) if x is sp), None)
        if j is not None:
            del self.active_mmu_pages[j]
        self.stat["mmu_shadow_zapped"] += 1

    def zap_all_fast(self) -> None:
        """kvm_mmu_zap_all_fast: toggle the u8 generation 0 <-> 1 (old pages become obsolete)."""
        self.mmu_valid_gen ^= 1

    def for_each_gfn_valid_sp_with_gptes(self, gfn: int, passthrough_bit: int | None = 18):
        """for_each_gfn_valid_sp_with_gptes: the valid SPs of ``gfn`` that shadow guest PTEs."""
        gfn = uint("gfn", gfn)
        if passthrough_bit is not None:
            passthrough_bit = in_range("passthrough_bit", passthrough_bit, 0, 31, "a role word bit")
        for sp in self.buckets[self.bucket_of(gfn)]:
            if sp.gfn == gfn and not self.is_obsolete(sp) and sp.has_gptes(passthrough_bit):
                yield sp

    def occupancy(self) -> np.ndarray:
        return np.array([len(b) for b in self.buckets], dtype=np.uint64)


def bucket_counts(gfns: np.ndarray, bits: int = KVM_MMU_HASH_SHIFT, variant: str = "x86_64") -> np.ndarray:
    """Pages per bucket for a uint64 gfn array (hash and count in the C core)."""
    in_array("gfns", gfns, np.uint64)
    b = hash_batch(gfns, bits, variant)
    counts = np.zeros(1 << bits, dtype=np.uint64)
    lib.kvmmu_role_bucket_count(ptr(b, "uint32_t"), ptr(counts, "uint64_t"), 1 << bits, b.size)
    return counts


def bucket_stats(counts: np.ndarray) -> dict:
    """Occupancy statistics: mean, max, empty buckets, chi-square against uniform, and the
    mean walk length (expected collisions of a successful lookup)."""
    try:
        raw = np.asarray(counts)
    except ValueError:
        raw = None
    if raw is None or raw.ndim != 1 or raw.dtype.kind not in "ui" or (raw.size and raw.min() < 0):
        raise InputError(f"counts={counts!r}: expected a 1-D array of non-negative integer "
                         "bucket counts")
    counts = raw
    c = np.asarray(counts, dtype=np.float64)
    n, k = c.sum(), c.size
    mean = n / k
    chi2 = float(((c - mean) ** 2 / mean).sum()) if mean else 0.0
    walk = float((c * (c - 1) / 2).sum() / n) if n else 0.0
    hist = np.bincount(np.asarray(counts, dtype=np.int64))
    return {"pages": int(n), "buckets": int(k), "mean": mean, "max": int(c.max()) if k else 0,
            "empty": int((c == 0).sum()), "chi2": chi2, "chi2_dof": k - 1,
            "mean_collisions_per_hit": walk, "histogram": hist.tolist()}


def realistic_gfns(n_vms: int = 4, seed: int = 0) -> np.ndarray:
    """A gfn population like a shadow-paged guest's page-table pages: clustered kernel page
    tables low in memory, per-process tables scattered over RAM, a few high (MMIO/PCI hole)."""
    n_vms = in_range("n_vms", n_vms, 1, 1 << 16, "shadow-paged guests to simulate")
    if seed is not None:
        seed = uint("seed", seed)
    rng = np.random.default_rng(seed)
    parts = []
    for vm in range(n_vms):
        ram_pages = 1 << 22                      # 16 GiB guest
        parts.append(np.arange(0x1000, 0x1000 + 2048, dtype=np.uint64))        # kernel tables
        parts.append(rng.integers(0x100000, ram_pages, 6000, dtype=np.uint64))  # process tables
        parts.append(np.arange(0xfec00, 0xfec00 + 16, dtype=np.uint64))        # high
    return np.unique(np.concatenate(parts))


def plot_bucket_occupancy(counts: np.ndarray, path: str, title: str = "mmu_page_hash") -> str:
    """Write a PNG of bucket occupancy; without matplotlib write ``path`` with .txt and the
    statistics as a text table.  Returns the path written."""
    stats = bucket_stats(counts)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        txt = os.path.splitext(path)[0] + ".txt"
        with open(txt, "w") as f:
            f.write(f"# {title}: matplotlib is not installed, statistics as text instead of a PNG\n")
            f.write(format_stats(stats))
        return txt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(np.asarray(counts), lw=0.5)
    a1.set_xlabel("bucket")
    a1.set_ylabel("shadow pages")
    a1.set_title(title)
    a2.bar(range(len(stats["histogram"])), stats["histogram"])
    a2.set_xlabel("pages in bucket")
    a2.set_ylabel("buckets")
    a2.set_title(f"mean {stats['mean']:.2f}, max {stats['max']}, chi2 {stats['chi2']:.0f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def format_stats(stats: dict) -> str:
    """The statistics of :func:`bucket_stats` as an aligned text table."""
    need = ("pages", "buckets", "mean", "max", "empty", "chi2", "chi2_dof",
            "mean_collisions_per_hit", "histogram")
    if not isinstance(stats, dict) or any(k not in stats for k in need):
        raise InputError(f"stats={stats!r}: expected the dict bucket_stats() returns "
                         f"(keys {', '.join(need)})")
    lines = [f"{'pages':>24} {stats['pages']}", f"{'buckets':>24} {stats['buckets']}",
             f"{'mean per bucket':>24} {stats['mean']:.3f}", f"{'max per bucket':>24} {stats['max']}",
             f"{'empty buckets':>24} {stats['empty']}",
             f"{'chi-square (dof)':>24} {stats['chi2']:.1f} ({stats['chi2_dof']})",
             f"{'collisions per hit':>24} {stats['mean_collisions_per_hit']:.3f}",
             f"{'occupancy':>24} buckets"]
    for k, v in enumerate(stats["histogram"]):
        lines.append(f"{k:>24} {v}")
    return "\n".join(lines) + "\n"


__all__.append("format_stats")
__all__.append("KVM_NUM_MMU_PAGES")
