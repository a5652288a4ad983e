/*
 * errors: the one table of rule texts, one row per KVMMU_*_E_* code of pykvmmu.h.
 *
 * Included once, by the cffi module's source (csrc/build_core.py); Python reads the rows
 * through kvmmu_error_texts() (pykvmmu.errors.rule_texts) and every module's messages are
 * derived from them.  A row is (domain, code macro, text); a text may hold str.format
 * fields ({pfn:#x}) that the Python caller fills with the values it names.
 * tests/test_errors_table.py holds: every code the header defines has exactly one row.
 */
#ifndef PYKVMMU_ERRORS_H
#define PYKVMMU_ERRORS_H

#include "pykvmmu.h"

#define KVMMU_STR_(x) #x
#define KVMMU_STR(x) KVMMU_STR_(x)

#define KVMMU_ERROR_ROWS(X)                                                                    \
    X(spte, KVMMU_E_PFN, "pfn does not fit the configuration's PFN mask (SPTE_BASE_ADDR_MASK)") \
    X(spte, KVMMU_E_LEVEL, "level must be 1..5")                                               \
    X(spte, KVMMU_E_ACCESS,                                                                    \
      "pte_access must be a combination of ACC_EXEC|ACC_WRITE|ACC_USER (0..7)")                \
    X(spte, KVMMU_E_FLAGS, "unknown make_spte flag bits")                                      \
    X(spte, KVMMU_E_MEMTYPE, "memtype must only use EPT bits 6:3 (memtype and IPAT), e.g. 0x70") \
    X(spte, KVMMU_E_INDEX, "index must be 0..511")                                             \
    X(spte, KVMMU_E_NOT_HUGE, "the SPTE is not a huge (large) SPTE")                           \
    X(spte, KVMMU_E_NOT_PRESENT, "the SPTE is not shadow-present")                             \
    X(mmio, KVMMU_MMIO_E_GFN, "gfn must fit in " KVMMU_STR(KVMMU_MMIO_GFN_BITS)                \
      " bits (a 52-bit guest physical address)")                                               \
    X(mmio, KVMMU_MMIO_E_ACCESS, "access must be ACC_* bits (0..7)")                           \
    X(mmio, KVMMU_MMIO_E_IN_PROGRESS,                                                          \
      "generation has the update-in-progress bit 63 (WARN in kvm_mmu_invalidate_mmio_sptes)")  \
    X(role, KVMMU_ROLE_E_WIDTH, "a field value does not fit in its bit-field width")           \
    X(role, KVMMU_ROLE_E_RESERVED, "bits set outside every field of the era's layout")         \
    X(role, KVMMU_ROLE_E_LAYOUT, "a malformed layout (row size, field widths 1..8 in order, "  \
      "used mask)")                                                                            \
    X(rmp, KVMMU_RMP_E_RANGE, "pfn {pfn:#x} is beyond the RMP (covers {nr_pfns:#x} pages)")   \
    X(rmp, KVMMU_RMP_E_LEVEL, "level={level}: a page level is 1 (4K) or 2 (2M)")               \
    X(rmp, KVMMU_RMP_E_FIELD, "assigned={assigned}, pagesize={pagesize}, "                     \
      "immutable={immutable}: each must be 0 or 1")                                            \
    X(rmp, KVMMU_RMP_E_ASID, "asid={asid:#x}: at most 0x3ff, and 0 when assigned=0")           \
    X(rmp, KVMMU_RMP_E_GPA,                                                                    \
      "gpa={gpa:#x}: 4K aligned (2M aligned for an assigned 2M page) and below 2^51")          \
    X(rmp, KVMMU_RMP_E_ALIGN, "pfn {pfn:#x}: a 2M update needs a 2M-aligned pfn")             \
    X(rmp, KVMMU_RMP_E_BLOCK, "pfn {pfn:#x}: the 2M block is not fully covered")               \
    X(private, KVMMU_PF_E_RANGE, "a range has start >= end")                                   \
    X(private, KVMMU_PF_E_ORDER, "ranges out of order or overlapping")                         \
    X(vm, KVMMU_VM_E_INDEX, "root / child index outside the table pool, or a bad level")       \
    X(vm, KVMMU_VM_E_MAKE, "make_spte refused the pfn, level or access")

#define KVMMU_ERROR_ROW(dom, code, text) { #dom, #code, code, text },

static const struct kvmmu_error_text kvmmu_error_rows[] = { KVMMU_ERROR_ROWS(KVMMU_ERROR_ROW) };

const struct kvmmu_error_text *kvmmu_error_texts(size_t *n)
{
    *n = sizeof(kvmmu_error_rows) / sizeof(kvmmu_error_rows[0]);
    return kvmmu_error_rows;
}

#endif
