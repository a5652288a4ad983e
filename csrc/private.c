/*
 * private: batch private/shared fault classification (pykvmmu/private.py).
 *
 * Models, for one fault, what the vendor exit handler and kvm_mmu_page_fault()
 * do to the error code before kvm_mmu_do_page_fault() derives fault->is_private
 * and fault->gfn (upstream behaviour since v6.10):
 *   1. hardware error-code bits that collide with KVM's synthetic flags
 *      (PFERR_IMPLICIT_ACCESS, PFERR_PRIVATE_ACCESS) are WARNed and cleared;
 *   2. SNP: the NPF "encrypted" bit (34) sets PFERR_PRIVATE_ACCESS;
 *      TDX: a GPA with the shared bit clear sets it;
 *      SW-protected: a non-RSVD fault on a gfn whose attributes say PRIVATE sets it;
 *   3. is_private = error_code & PFERR_PRIVATE_ACCESS,
 *      gfn = (gpa >> 12) & ~gfn_direct_bits.
 * Written from the fact sheet (docs/private.md), not from kernel code.
 */
#include "pykvmmu.h"
#include "common.h"

_Static_assert(KVMMU_PFERR_PRIVATE_ACCESS == KBIT(49), "PFERR_PRIVATE_ACCESS is bit 49");
_Static_assert(KVMMU_PFERR_SYNTHETIC == (KBIT(48) | KBIT(49)), "synthetic bits 48|49");
_Static_assert(KVMMU_PFERR_GUEST_ENC == KBIT(34), "PFERR_GUEST_ENC_MASK is bit 34");

/* Is gfn inside one of the sorted, disjoint [start, end) ranges? */
static inline bool in_ranges(const uint64_t *start, const uint64_t *end, size_t nr, uint64_t gfn)
{
    size_t lo = 0, hi = nr;
    while (lo < hi) {               /* first range whose end > gfn */
        size_t mid = lo + (hi - lo) / 2;
        if (end[mid] <= gfn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < nr && start[lo] <= gfn;
}

int kvmmu_private_ranges_check(const uint64_t *start, const uint64_t *end, size_t nr)
{
    for (size_t i = 0; i < nr; i++) {
        if (start[i] >= end[i])
            return (int)KVMMU_PF_E_RANGE;
        if (i && start[i] < end[i - 1])
            return (int)KVMMU_PF_E_ORDER;
    }
    return 0;
}

size_t kvmmu_private_classify_batch(const struct kvmmu_pf_policy *p, const uint64_t *gpa,
                                    const uint64_t *ec, const uint64_t *priv_start,
                                    const uint64_t *priv_end, size_t nranges,
                                    uint64_t *out_gfn, uint64_t *out_ec, uint8_t *out_private,
                                    size_t n, uint64_t *nsynthetic)
{
    const uint64_t direct = p->gfn_direct_bits << 12;      /* the shared bit as a GPA mask */
    const uint64_t gfn_keep = ~p->gfn_direct_bits;
    const bool snp = p->vm_type == KVMMU_VM_SNP;
    const bool tdx = p->vm_type == KVMMU_VM_TDX && direct != 0;
    const bool sw = p->vm_type == KVMMU_VM_SW_PROTECTED && (p->flags & KVMMU_PF_F_SW_PROTECTED) &&
                    nranges != 0;
    uint64_t syn = 0;

    for (size_t i = 0; i < n; i++) {
        uint64_t e = ec[i];
        const uint64_t a = gpa[i];
        syn += (e & KVMMU_PFERR_SYNTHETIC) != 0;
        e &= ~(uint64_t)KVMMU_PFERR_SYNTHETIC;
        if (snp) {
            /* ENC is bit 34, PRIVATE_ACCESS bit 49: shift by 15. */
            e |= (e & KVMMU_PFERR_GUEST_ENC) << 15;
        } else if (tdx) {
            e |= (a & direct) ? 0 : KVMMU_PFERR_PRIVATE_ACCESS;
        } else if (sw) {
            if (!(e & KVMMU_PFERR_RSVD) && in_ranges(priv_start, priv_end, nranges, a >> 12))
                e |= KVMMU_PFERR_PRIVATE_ACCESS;
        }
        if (out_ec)
            out_ec[i] = e;
        if (out_gfn)
            out_gfn[i] = (a >> 12) & gfn_keep;
        if (out_private)
            out_private[i] = (uint8_t)((e >> 49) & 1);
    }
    if (nsynthetic)
        *nsynthetic = syn;
    return 0;
}
