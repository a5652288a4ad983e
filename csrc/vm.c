/*
 * vm: one fault's TDP walk and leaf install for pykvmmu.vm.Vm, in one call.
 *
 * Models the part of kvm_tdp_mmu_map() that descends from the root to the
 * target level (tdp_mmu_for_each_pte) and sets the leaf (tdp_mmu_map_handle_target_level
 * with make_spte()).  The tables live in a pool owned by the Vm (numpy buffers): entry
 * (page, index) holds the SPTE and, for a non-leaf SPTE, the pool index of its child
 * table.  Missing tables, a huge leaf in the way or a subtree at the target level are
 * reported back: the Vm's Python slow path allocates / splits / frees them (rare).
 * Written from the rules in docs/private.md §7, not from kernel code.
 */
#include "pykvmmu.h"
#include "common.h"

/* The SPTE predicate numbers of kvmmu_spte_pred (VM_P_<NAME> = the row's id). */
enum {
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) VM_P_##NAME = (id),
#include "spte_rules.h"
};

/* The entry at the target level already maps pfn: a shadow-present leaf (the walk reached
 * it through pointers and it is not one, so a present entry is the leaf of its level) whose
 * spte_to_pfn() is pfn -- the fault would install what is there (RET_PF_SPURIOUS). */
static bool maps_pfn(const struct kvmmu_cfg *cfg, uint64_t spte, uint32_t level, uint64_t pfn)
{
    return kvmmu_spte_to_pfn(cfg, spte) == pfn &&
           kvmmu_spte_pred(cfg, VM_P_SHADOW_PRESENT, spte, level);
}

int kvmmu_vm_tdp_map(const struct kvmmu_cfg *cfg, const struct kvmmu_vm_tdp *t, uint32_t root,
                     uint64_t gfn, uint32_t level, uint64_t pfn, uint32_t pte_access,
                     uint32_t mkflags, uint32_t memtype, uint32_t flags, uint64_t *spte,
                     uint32_t *stop_level)
{
    if (root >= t->npages || level < 1 || level > t->levels || t->levels > 5)
        return KVMMU_VM_E_INDEX;
    uint64_t new_spte = 0;
    /* Validate make_spte's inputs before touching a table (the old SPTE never makes them fail);
     * with F_SPURIOUS, after the walk, so that an entry already mapping pfn is reported first. */
    if ((flags & KVMMU_VM_F_MAKE) && !(flags & KVMMU_VM_F_SPURIOUS) &&
        (kvmmu_make_spte(cfg, pfn, t->nonpresent, level, pte_access, mkflags, memtype,
                         &new_spte) & 0xFFu))
        return KVMMU_VM_E_MAKE;
    uint32_t page = root;
    for (uint32_t lv = t->levels; lv > level; lv--) {
        const size_t i = (size_t)page * 512u + (size_t)((gfn >> (9u * (lv - 1u))) & 511u);
        const int32_t c = t->child[i];
        if (c < 0) {
            *stop_level = lv;
            *spte = t->spte[i];
            return KVMMU_VM_BLOCKED;
        }
        if ((uint32_t)c >= t->npages)
            return KVMMU_VM_E_INDEX;
        page = (uint32_t)c;
    }
    const size_t i = (size_t)page * 512u + (size_t)((gfn >> (9u * (level - 1u))) & 511u);
    if (t->child[i] >= 0) {
        *stop_level = level;
        *spte = t->spte[i];
        return KVMMU_VM_SUBTREE;
    }
    if ((flags & KVMMU_VM_F_SPURIOUS) && maps_pfn(cfg, t->spte[i], level, pfn)) {
        *stop_level = level;
        *spte = t->spte[i];
        return KVMMU_VM_SPURIOUS;
    }
    if ((flags & KVMMU_VM_F_MAKE) && (flags & KVMMU_VM_F_SPURIOUS) &&
        (kvmmu_make_spte(cfg, pfn, t->nonpresent, level, pte_access, mkflags, memtype,
                         &new_spte) & 0xFFu))
        return KVMMU_VM_E_MAKE;
    *stop_level = level;
    if (flags & KVMMU_VM_F_MAKE) {
        /* tdp_mmu_map_handle_target_level: make_spte() sees the entry's current value */
        (void)kvmmu_make_spte(cfg, pfn, t->spte[i], level, pte_access, mkflags, memtype, &new_spte);
        t->spte[i] = new_spte;
        *spte = new_spte;
    } else {
        *spte = t->spte[i];
    }
    return KVMMU_VM_OK;
}

int kvmmu_vm_fault_map(struct kvmmu_vm_fault *f, uint32_t root, uint64_t gfn, uint32_t level,
                       uint64_t pfn, uint32_t flags)
{
    return kvmmu_vm_tdp_map(f->cfg, f->tdp, root, gfn, level, pfn, f->pte_access, f->mkflags,
                            f->memtype, flags, &f->spte, &f->stop_level);
}
