"""Page role words per kernel era: layouts, packing, role computations, nested-EPT identity.

KVM identifies a shadow page by ``(gfn, role.word)``; the 32-bit ``union
kvm_mmu_page_role`` changed layout and meaning over time (fact sheet
``role-hash-trace.md`` sections 1-2).  An era (:class:`RoleEra`) is data: the bit
layouts of the page role and of ``kvm_mmu_extended_role`` plus the switches that
select the era's role-computation rules.  Batch packing, unpacking and hashing run
in the C core (``csrc/role.c``); a scalar pack is one C call (or, for a few fields, a
Python loop), a scalar unpack plain int arithmetic from the layout's table.  The role
computations are small and stay in Python, memoised per era and exactly-typed arguments.

The package: :mod:`.eras` (layouts and eras), :mod:`.packing` (records, pack/unpack), :mod:`.hashing`
(``hash_64``), :mod:`.compute` (``VcpuState`` and the ``kvm_calc_*`` rules), :mod:`.nested`
(nested-EPT identity, impossible words); every name is re-exported here.
"""
from __future__ import annotations

from .eras import (ACC_ALL, ACC_EXEC, ACC_USER, ACC_WRITE, DEFAULT_ERA, EptRule, ERAS, Field, get_era,
                   MMU_BASE_ROLE_MASK, PrevRootsRule, PT32_ROOT_LEVEL, PT32E_ROOT_LEVEL, PT64_ROOT_4LEVEL,
                   PT64_ROOT_5LEVEL, ROLE_IGN_MASK, RoleEra, RoleFieldError, RoleLayout, SYNC_ROLE_IGN_MASK)
from .packing import (_ACCESS_STR, cpu_role_pack_batch, cpu_role_unpack_batch, CpuRole, gpte_bytes,
                      kvm_mmu_role_as_id, pack, pack_batch, pack_cpu_role, pack_ext, Role, unpack,
                      unpack_batch, unpack_cpu_role, unpack_ext)
from .hashing import (hash_64, hash_batch, HashVariant, HashVariantLike, KVM_MMU_HASH_SHIFT,
                      KVM_NUM_MMU_PAGES, kvm_page_table_hashfn)
from .compute import (_b4_for, kvm_calc_cpu_role, kvm_calc_mmu_role_ext, kvm_calc_shadow_ept_root_page_role,
                      kvm_calc_shadow_mmu_root_page_role, kvm_calc_shadow_npt_root_page_role,
                      kvm_calc_tdp_mmu_root_page_role, kvm_mmu_child_role, kvm_mmu_get_page_role,
                      quadrant_for_gaddr, shadow_root_sp_roles, tdp_mmu_child_role, VcpuState)
from .nested import check_role_word, find_collisions, identify_nested_ept, is_ept_sp

__all__ = [
    "RoleLayout", "RoleEra", "EptRule", "PrevRootsRule", "ERAS", "get_era", "DEFAULT_ERA", "Role",
    "CpuRole", "VcpuState",
    "RoleFieldError", "pack", "unpack", "pack_batch", "unpack_batch", "pack_ext", "unpack_ext",
    "pack_cpu_role", "unpack_cpu_role", "cpu_role_pack_batch", "cpu_role_unpack_batch",
    "hash_64", "kvm_page_table_hashfn", "hash_batch", "HashVariant", "HashVariantLike", "gpte_bytes",
    "kvm_calc_cpu_role", "kvm_calc_mmu_role_ext", "kvm_calc_tdp_mmu_root_page_role",
    "kvm_calc_shadow_mmu_root_page_role", "shadow_root_sp_roles", "kvm_calc_shadow_ept_root_page_role",
    "kvm_calc_shadow_npt_root_page_role", "kvm_mmu_get_page_role", "kvm_mmu_child_role",
    "tdp_mmu_child_role", "quadrant_for_gaddr", "is_ept_sp", "identify_nested_ept",
    "check_role_word", "find_collisions", "kvm_mmu_role_as_id",
    "ACC_EXEC", "ACC_WRITE", "ACC_USER", "ACC_ALL", "KVM_MMU_HASH_SHIFT", "KVM_NUM_MMU_PAGES",
    "MMU_BASE_ROLE_MASK", "ROLE_IGN_MASK", "SYNC_ROLE_IGN_MASK",
]


# Names the single-module ``pykvmmu.role`` also offered beyond ``__all__`` (kept importable).
_ALSO_EXPORTED = (Field, PT32_ROOT_LEVEL, PT32E_ROOT_LEVEL, PT64_ROOT_4LEVEL, PT64_ROOT_5LEVEL, _ACCESS_STR,
                  _b4_for)
