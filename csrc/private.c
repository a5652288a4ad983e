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

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

/* One pass per VM type (no per-element branch on the type); outputs may be NULL. */
#define PF_LOOP(SET_PRIVATE)                                                        \
    for (size_t i = 0; i < n; i++) {                                                \
        const uint64_t a = gpa[i];                                                  \
        uint64_t e = ec[i];                                                         \
        syn += (e & KVMMU_PFERR_SYNTHETIC) != 0;                                    \
        e &= ~(uint64_t)KVMMU_PFERR_SYNTHETIC;                                      \
        SET_PRIVATE;                                                                \
        og[i] = (a >> 12) & gfn_keep;                                               \
        oe[i] = e;                                                                  \
        op[i] = (uint8_t)((e >> 49) & 1);                                           \
    }

#if defined(__SSE2__)
/*
 * SNP / TDX / no-source fast path: two faults per step in SSE2 registers, streaming (non-
 * temporal) stores for the two 64-bit outputs, which are written once and not read back.
 * kind: 0 none, 1 SNP (ENC << 15), 2 TDX (shared bit clear -> bit 49).  Returns elements done.
 */
static size_t classify_sse2(int kind, unsigned shared_shift, uint64_t gfn_keep,
                            const uint64_t *restrict gpa, const uint64_t *restrict ec,
                            uint64_t *restrict og, uint64_t *restrict oe, uint8_t *restrict op,
                            size_t n, uint64_t *syn_out)
{
    if (((uintptr_t)og | (uintptr_t)oe) & 15)
        return 0;
    const __m128i synm = _mm_set1_epi64x((long long)KVMMU_PFERR_SYNTHETIC);
    const __m128i enc = _mm_set1_epi64x((long long)KVMMU_PFERR_GUEST_ENC);
    const __m128i one = _mm_set1_epi64x(1);
    const __m128i keep = _mm_set1_epi64x((long long)gfn_keep);
    const __m128i sh = _mm_cvtsi32_si128((int)shared_shift);
    __m128i cnt = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        __m128i x = _mm_loadu_si128((const __m128i *)(ec + i));
        const __m128i a = _mm_loadu_si128((const __m128i *)(gpa + i));
        const __m128i hs = _mm_and_si128(x, synm);
        cnt = _mm_add_epi64(cnt, _mm_and_si128(_mm_or_si128(_mm_srli_epi64(hs, 48),
                                                            _mm_srli_epi64(hs, 49)), one));
        x = _mm_andnot_si128(synm, x);
        if (kind == 1) {
            x = _mm_or_si128(x, _mm_slli_epi64(_mm_and_si128(x, enc), 15));
        } else if (kind == 2) {
            const __m128i clear = _mm_and_si128(_mm_srl_epi64(_mm_andnot_si128(a, _mm_set1_epi64x(-1)), sh), one);
            x = _mm_or_si128(x, _mm_slli_epi64(clear, 49));
        }
        _mm_stream_si128((__m128i *)(og + i), _mm_and_si128(_mm_srli_epi64(a, 12), keep));
        _mm_stream_si128((__m128i *)(oe + i), x);
        const __m128i pv = _mm_and_si128(_mm_srli_epi64(x, 49), one);
        op[i] = (uint8_t)_mm_cvtsi128_si32(pv);
        op[i + 1] = (uint8_t)_mm_cvtsi128_si32(_mm_srli_si128(pv, 8));
    }
    _mm_sfence();
    uint64_t c[2];
    _mm_storeu_si128((__m128i *)c, cnt);
    *syn_out += c[0] + c[1];
    return i;
}
#endif

size_t kvmmu_private_classify_batch(const struct kvmmu_pf_policy *p, const uint64_t *restrict gpa,
                                    const uint64_t *restrict ec, const uint64_t *priv_start,
                                    const uint64_t *priv_end, size_t nranges,
                                    uint64_t *restrict og, uint64_t *restrict oe,
                                    uint8_t *restrict op, size_t n, uint64_t *nsynthetic)
{
    const uint64_t direct = p->gfn_direct_bits << 12;      /* the shared bit as a GPA mask */
    const uint64_t gfn_keep = ~p->gfn_direct_bits;
    uint64_t syn = 0;

#if defined(__SSE2__)
    {
        const bool sw = p->vm_type == KVMMU_VM_SW_PROTECTED && (p->flags & KVMMU_PF_F_SW_PROTECTED) &&
                        nranges;
        /* Streaming stores only for outputs far larger than the caches (and allowed). */
        if (!sw && (uint64_t)n * 16 >= KVMMU_STREAM_MIN_BYTES && p->isa >= KVMMU_ISA_AVX2) {
            int kind = p->vm_type == KVMMU_VM_SNP ? 1 : (p->vm_type == KVMMU_VM_TDX && direct) ? 2 : 0;
            unsigned shift = kind == 2 ? (unsigned)__builtin_ctzll(direct) : 0;
            size_t done = classify_sse2(kind, shift, gfn_keep, gpa, ec, og, oe, op, n, &syn);
            gpa += done; ec += done; og += done; oe += done; op += done; n -= done;
        }
    }
#endif
    if (p->vm_type == KVMMU_VM_SNP) {
        /* ENC is bit 34, PRIVATE_ACCESS bit 49: shift by 15. */
        PF_LOOP(e |= (e & KVMMU_PFERR_GUEST_ENC) << 15)
    } else if (p->vm_type == KVMMU_VM_TDX && direct) {
        PF_LOOP(e |= ((a & direct) == 0) ? (uint64_t)KVMMU_PFERR_PRIVATE_ACCESS : 0)
    } else if (p->vm_type == KVMMU_VM_SW_PROTECTED && (p->flags & KVMMU_PF_F_SW_PROTECTED) &&
               nranges) {
        PF_LOOP(if (!(e & KVMMU_PFERR_RSVD) && in_ranges(priv_start, priv_end, nranges, a >> 12))
                    e |= KVMMU_PFERR_PRIVATE_ACCESS)
    } else {
        PF_LOOP((void)0)
    }
    if (nsynthetic)
        *nsynthetic = syn;
    return 0;
}
