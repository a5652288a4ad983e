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

/* One pass per VM type (no per-element branch on the type). */
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

/* The portable loops over n faults; returns the synthetic-collision count. */
static uint64_t classify_scalar(const struct kvmmu_pf_policy *p, const uint64_t *restrict gpa,
                                const uint64_t *restrict ec, const uint64_t *priv_start,
                                const uint64_t *priv_end, size_t nranges,
                                uint64_t *restrict og, uint64_t *restrict oe,
                                uint8_t *restrict op, size_t n)
{
    const uint64_t direct = p->gfn_direct_bits << 12;      /* the shared bit as a GPA mask */
    const uint64_t gfn_keep = ~p->gfn_direct_bits;
    uint64_t syn = 0;

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
    return syn;
}

#if defined(KVMMU_HAVE_AVX512)
#define PF_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"), always_inline))

/* One step: faults [i, i + 64) as 8 vectors of 8; stores og and oe, counts the collisions
 * into *syn and returns is_private of the 64 faults as a mask. */
PF_AVX512 static inline uint64_t
classify_avx512_step(const int kind, const __m512i shared, const __m512i keep,
                     const uint64_t *restrict gpa, const uint64_t *restrict ec,
                     uint64_t *restrict og, uint64_t *restrict oe, size_t i, bool nt, uint64_t *syn)
{
    const __m512i synm = _mm512_set1_epi64((long long)KVMMU_PFERR_SYNTHETIC);
    const __m512i enc = _mm512_set1_epi64((long long)KVMMU_PFERR_GUEST_ENC);
    const __m512i priv = _mm512_set1_epi64((long long)KVMMU_PFERR_PRIVATE_ACCESS);
    uint64_t pm = 0;

    for (unsigned j = 0; j < 8; j++) {
        const size_t k = i + 8 * j;
        const __m512i a = _mm512_loadu_si512((const void *)(gpa + k));
        __m512i x = _mm512_loadu_si512((const void *)(ec + k));
        const __m512i g = _mm512_and_si512(_mm512_srli_epi64(a, 12), keep);

        *syn += (uint64_t)__builtin_popcount(_mm512_test_epi64_mask(x, synm));
        x = _mm512_andnot_si512(synm, x);
        if (kind == 1)
            x = _mm512_or_si512(x, _mm512_slli_epi64(_mm512_and_si512(x, enc), 15));
        else if (kind == 2)
            x = _mm512_mask_or_epi64(x, _mm512_testn_epi64_mask(a, shared), x, priv);
        pm |= (uint64_t)_mm512_test_epi64_mask(x, priv) << (8 * j);
        if (nt) {
            _mm512_stream_si512((void *)(og + k), g);
            _mm512_stream_si512((void *)(oe + k), x);
        } else {
            _mm512_storeu_si512((void *)(og + k), g);
            _mm512_storeu_si512((void *)(oe + k), x);
        }
    }
    return pm;
}

/* The 64 is_private bytes of step i (mask pm) as 0/1: a plain store, or (nt) streamed into
 * op's 64-byte aligned windows, d being op's offset in its window and *carry the mask bits
 * of the previous step that fall into the current window (the partial first window is a
 * masked store). */
PF_AVX512 static inline void
store_private_bytes(uint8_t *restrict op, size_t i, uint64_t pm, bool nt, unsigned d,
                    uint64_t *carry)
{
    const __m512i one8 = _mm512_set1_epi8(1);

    if (!nt) {
        _mm512_storeu_si512((void *)(op + i), _mm512_maskz_mov_epi8(pm, one8));
    } else if (d == 0) {
        _mm512_stream_si512((void *)(op + i), _mm512_maskz_mov_epi8(pm, one8));
    } else if (i == 0) {                /* bytes [0, 64 - d) end at the first window */
        _mm512_mask_storeu_epi8((void *)op, (__mmask64)(~(uint64_t)0 >> d),
                                _mm512_maskz_mov_epi8(pm, one8));
        *carry = pm >> (64 - d);
    } else {                            /* the window holding bytes [i - d, i + 64 - d) */
        _mm512_stream_si512((void *)(op + i - d),
                            _mm512_maskz_mov_epi8(*carry | (pm << d), one8));
        *carry = pm >> (64 - d);
    }
}

/*
 * SNP / TDX / no-source AVX-512 path: 64 faults per step (8 vectors of 8).  is_private of
 * the 64 faults is one 64-bit k-mask, expanded to 64 bytes of 0/1.  nt (outputs far larger
 * than the caches): the two 64-bit outputs are streamed from 64-byte aligned og/oe, and the
 * is_private bytes are streamed too, the masks of two steps shifted into the 64-byte aligned
 * windows of op (the partial first and last windows are plain masked stores).
 * kind: 0 none, 1 SNP (ENC << 15), 2 TDX (shared bit clear -> bit 49).  Returns faults done
 * (a multiple of 64); *syn_out gets the collisions among them.
 */
PF_AVX512 static inline size_t
classify_avx512_kind(const int kind, uint64_t direct, uint64_t gfn_keep,
                     const uint64_t *restrict gpa, const uint64_t *restrict ec,
                     uint64_t *restrict og, uint64_t *restrict oe, uint8_t *restrict op,
                     size_t n, bool nt, uint64_t *syn_out)
{
    const __m512i shared = _mm512_set1_epi64((long long)direct);
    const __m512i keep = _mm512_set1_epi64((long long)gfn_keep);
    const unsigned d = (unsigned)((uintptr_t)op & 63);      /* op's offset in its window */
    uint64_t syn = 0, carry = 0;
    size_t i = 0;

    for (; i + 64 <= n; i += 64) {
        const uint64_t pm = classify_avx512_step(kind, shared, keep, gpa, ec, og, oe, i, nt, &syn);

        store_private_bytes(op, i, pm, nt, d, &carry);
    }
    if (nt && d && i)                       /* the last d bytes, [i - d, i) */
        _mm512_mask_storeu_epi8((void *)(op + i - d), (__mmask64)(~(uint64_t)0 >> (64 - d)),
                                _mm512_maskz_mov_epi8(carry, _mm512_set1_epi8(1)));
    if (nt)
        _mm_sfence();
    *syn_out += syn;
    return i;
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static size_t
classify_avx512(int kind, uint64_t direct, uint64_t gfn_keep, const uint64_t *restrict gpa,
                const uint64_t *restrict ec, uint64_t *restrict og, uint64_t *restrict oe,
                uint8_t *restrict op, size_t n, bool nt, uint64_t *syn_out)
{
    if (kind == 1)
        return classify_avx512_kind(1, direct, gfn_keep, gpa, ec, og, oe, op, n, nt, syn_out);
    if (kind == 2)
        return classify_avx512_kind(2, direct, gfn_keep, gpa, ec, og, oe, op, n, nt, syn_out);
    return classify_avx512_kind(0, direct, gfn_keep, gpa, ec, og, oe, op, n, nt, syn_out);
}
#endif

#if defined(__SSE2__)
/*
 * SNP / TDX / no-source SSE2 path: two faults per step in SSE2 registers, streaming (non-
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
    const bool sw = p->vm_type == KVMMU_VM_SW_PROTECTED && (p->flags & KVMMU_PF_F_SW_PROTECTED) &&
                    nranges;
    const int kind = p->vm_type == KVMMU_VM_SNP ? 1 : (p->vm_type == KVMMU_VM_TDX && direct) ? 2 : 0;
    /* Streaming stores only for outputs far larger than the caches (and allowed). */
#if defined(KVMMU_HAVE_STREAM)
    const bool stream = (uint64_t)n * 16 >= KVMMU_STREAM_MIN_BYTES;
#else
    const bool stream = false;
#endif
    uint64_t syn = 0;
    bool vec = false;

    (void)kind;
    (void)stream;
    (void)vec;
#if defined(KVMMU_HAVE_AVX512)
    if (!sw && kvmmu_avx512_ok(p->isa)) {
        /* nt needs og and oe at the same offset in a 64-byte line: a scalar head aligns them */
        const bool nt = stream && !(((uintptr_t)og - (uintptr_t)oe) & 63) && !((uintptr_t)og & 7);
        const size_t head = nt ? (((64 - ((uintptr_t)og & 63)) & 63) / 8) : 0;

        vec = true;
        if (head < n) {
            syn += classify_scalar(p, gpa, ec, priv_start, priv_end, nranges, og, oe, op, head);
            gpa += head; ec += head; og += head; oe += head; op += head; n -= head;
            const size_t done = classify_avx512(kind, direct, ~p->gfn_direct_bits, gpa, ec, og, oe,
                                                op, n, nt, &syn);
            gpa += done; ec += done; og += done; oe += done; op += done; n -= done;
        }
    }
#endif
#if defined(__SSE2__)
    if (!vec && !sw && stream && p->isa >= KVMMU_ISA_AVX2) {
        unsigned shift = kind == 2 ? (unsigned)__builtin_ctzll(direct) : 0;
        size_t done = classify_sse2(kind, shift, ~p->gfn_direct_bits, gpa, ec, og, oe, op, n, &syn);
        gpa += done; ec += done; og += done; oe += done; op += done; n -= done;
    }
#endif
    syn += classify_scalar(p, gpa, ec, priv_start, priv_end, nranges, og, oe, op, n);
    if (nsynthetic)
        *nsynthetic = syn;
    return 0;
}
