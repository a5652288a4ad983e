/*
 * MMIO SPTEs: the generation encoding, make/decode, the generation check and
 * the memslot-generation wrap rule (kvm_mmu_invalidate_mmio_sptes).
 *
 * Written from the rules in shared/spec/spte-mmio.md (sections 3, 5, 6, 10).
 * Everything era-specific comes from the configuration: the generation layout
 * (19 bits at 3-10/52-62 from v5.13, 18 bits at 3-11/54-62 in v5.10-5.12),
 * the MMIO value (which carries SPTE_MMIO_MASK = 3<<52 in v5.10-5.12, and is
 * the per-VM value, 0 for a TD, from v6.10), the access mask and the L1TF masks.
 */
#include "pykvmmu.h"
#include "common.h"

#define UPDATE_IN_PROGRESS KBIT(63)   /* KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS */
#define RSVD_MASK_LEN      5          /* SHADOW_NONPRESENT_OR_RSVD_MASK_LEN */
#define PAGE_SHIFT         12

_Static_assert(KVMMU_MMIO_GFN_BITS + PAGE_SHIFT == 52, "a gfn addresses a 52-bit GPA");
/* The current layout: generation bits never touch the MMU-present bit or the allowed mask. */
_Static_assert(((KGENMASK(10, 3) | KGENMASK(62, 52)) & KBIT(11)) == 0,
               "19-bit MMIO generation vs MMU-present bit");
_Static_assert(((KBIT(63) | KGENMASK(51, 12) | KGENMASK(2, 0)) &
                (KGENMASK(10, 3) | KGENMASK(62, 52))) == 0,
               "SPTE_MMIO_ALLOWED_MASK vs the 19-bit generation");
/* The v5.10 layout: generation bits never touch SPTE_SPECIAL_MASK (bits 53:52). */
_Static_assert(((KGENMASK(11, 3) | KGENMASK(62, 54)) & (UINT64_C(3) << 52)) == 0,
               "18-bit MMIO generation vs SPTE_MMIO_MASK");

static inline uint64_t gen_mask(const struct kvmmu_cfg *c)
{
    return (KBIT(c->mmio_gen_bits) - 1);
}

/* generation_mmio_spte_mask(): spread a (masked) generation over the SPTE. */
static inline uint64_t gen_bits(const struct kvmmu_cfg *c, uint64_t gen)
{
    return ((gen << c->mmio_gen_low_shift) & c->mmio_gen_low_mask) |
           ((gen << c->mmio_gen_high_shift) & c->mmio_gen_high_mask);
}

static inline uint64_t get_gen(const struct kvmmu_cfg *c, uint64_t s)
{
    return ((s & c->mmio_gen_low_mask) >> c->mmio_gen_low_shift) |
           ((s & c->mmio_gen_high_mask) >> c->mmio_gen_high_shift);
}

/* make_mmio_spte() without the range checks (the caller validated gfn and access). */
static inline uint64_t make(const struct kvmmu_cfg *c, uint64_t gfn, uint64_t access, uint64_t gen)
{
    const uint64_t r = c->nonpresent_or_rsvd_mask;
    uint64_t gpa = gfn << PAGE_SHIFT;

    return gen_bits(c, gen & gen_mask(c)) | c->mmio_value | (access & c->mmio_access_mask) |
           gpa | r | ((gpa & r) << RSVD_MASK_LEN);
}

/* get_mmio_spte_gfn(): SPTE bits [cache_bits, cache_bits+5) fold back into R (aliasing, 10.1). */
static inline uint64_t get_gfn(const struct kvmmu_cfg *c, uint64_t s)
{
    uint64_t gpa = s & c->nonpresent_or_rsvd_lower_gfn_mask;

    gpa |= (s >> RSVD_MASK_LEN) & c->nonpresent_or_rsvd_mask;
    return gpa >> PAGE_SHIFT;
}

static inline bool check(const struct kvmmu_cfg *c, uint64_t s, uint64_t memslots_gen)
{
    if (memslots_gen & UPDATE_IN_PROGRESS)
        return false;
    return (memslots_gen & gen_mask(c)) == get_gen(c, s);
}

static inline bool invalidate_zaps(const struct kvmmu_cfg *c, uint64_t gen, uint32_t nr_as)
{
    gen &= gen_mask(c);
    gen &= ~((uint64_t)nr_as - 1);
    return gen == 0;
}

/* ------------------------------------------------------------ scalar */

uint64_t kvmmu_mmio_generation_mask(const struct kvmmu_cfg *cfg) { return gen_mask(cfg); }

uint64_t kvmmu_mmio_gen_spte_bits(const struct kvmmu_cfg *cfg, uint64_t gen)
{
    return gen_bits(cfg, gen);
}

uint64_t kvmmu_mmio_generation_bits(const struct kvmmu_cfg *cfg)
{
    return cfg->mmio_gen_low_mask | cfg->mmio_gen_high_mask;
}

uint64_t kvmmu_mmio_gen_spte_bits_checked(const struct kvmmu_cfg *cfg, uint64_t gen)
{
    _Static_assert(((KGENMASK(11, 3) | KGENMASK(62, 52)) & KBIT(63)) == 0,
                   "no generation layout reaches bit 63: UINT64_MAX is never a result");
    return (gen & ~gen_mask(cfg)) ? UINT64_MAX : gen_bits(cfg, gen);
}

uint64_t kvmmu_mmio_make(const struct kvmmu_cfg *cfg, uint64_t gfn, uint32_t access,
                         uint64_t generation)
{
    return make(cfg, gfn, access, generation);
}

uint64_t kvmmu_mmio_get_gfn(const struct kvmmu_cfg *cfg, uint64_t spte) { return get_gfn(cfg, spte); }

uint64_t kvmmu_mmio_get_access(const struct kvmmu_cfg *cfg, uint64_t spte)
{
    return spte & cfg->mmio_access_mask;
}

uint64_t kvmmu_mmio_get_generation(const struct kvmmu_cfg *cfg, uint64_t spte)
{
    return get_gen(cfg, spte);
}

bool kvmmu_mmio_check(const struct kvmmu_cfg *cfg, uint64_t spte, uint64_t memslots_gen)
{
    return check(cfg, spte, memslots_gen);
}

int kvmmu_mmio_fault_outcome(const struct kvmmu_cfg *cfg, uint64_t spte, uint64_t memslots_gen)
{
    if (!kvmmu_is_mmio_spte(cfg, spte))
        return KVMMU_MMIO_NOT_MMIO;
    if (memslots_gen & UPDATE_IN_PROGRESS)
        return KVMMU_MMIO_IN_PROGRESS;
    return check(cfg, spte, memslots_gen) ? KVMMU_MMIO_EMULATE : KVMMU_MMIO_STALE;
}

bool kvmmu_mmio_invalidate_zaps(const struct kvmmu_cfg *cfg, uint64_t gen, uint32_t nr_as_ids)
{
    return invalidate_zaps(cfg, gen, nr_as_ids);
}

int kvmmu_mmio_invalidate_checked(const struct kvmmu_cfg *cfg, uint64_t gen, uint32_t nr_as_ids)
{
    if ((gen & UPDATE_IN_PROGRESS) || nr_as_ids < 1 || nr_as_ids > 2)
        return -1;
    return invalidate_zaps(cfg, gen, nr_as_ids);
}

/* ------------------------------------------------------------- batch */

/* Index + 1 of the first element with bits in `bad` (called only once a violation is known). */
static size_t first_bad(const uint64_t *a, uint64_t bad, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] & bad)
            return i + 1;
    return 0;
}


#ifdef KVMMU_HAVE_STREAM
/* make_mmio_spte for one shared access/generation with streaming 32-byte stores. */
__attribute__((target("avx2"))) static size_t
mmio_make_stream(const uint64_t *gfn, uint64_t *out, size_t n, uint64_t base, uint64_t *seen)
{
    size_t i = 0;
    uint64_t s = 0;
    while (i < n && ((uintptr_t)(out + i) & 31)) {
        s |= gfn[i];
        out[i] = base | (gfn[i] << PAGE_SHIFT);
        i++;
    }
    const __m256i b = _mm256_set1_epi64x((long long)base);
    __m256i acc = _mm256_setzero_si256();
    for (; i + 4 <= n; i += 4) {
        __m256i g = _mm256_loadu_si256((const __m256i *)(gfn + i));
        acc = _mm256_or_si256(acc, g);
        _mm256_stream_si256((__m256i *)(out + i),
                            _mm256_or_si256(b, _mm256_slli_epi64(g, PAGE_SHIFT)));
    }
    kvmmu_stream_fence();
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, acc);
    *seen |= s | lanes[0] | lanes[1] | lanes[2] | lanes[3];
    return i;
}
#endif

size_t kvmmu_mmio_make_batch(const struct kvmmu_cfg *cfg, const uint64_t *restrict gfn,
                                       const uint64_t *restrict access, uint64_t access_scalar,
                                       const uint64_t *restrict gen, uint64_t gen_scalar,
                                       uint64_t *restrict out, size_t n, int *err)
{
    const uint64_t gfn_bad = ~(KBIT(KVMMU_MMIO_GFN_BITS) - 1);
    const uint64_t acc_bad = ~UINT64_C(7);
    uint64_t seen_gfn = 0, seen_acc = access ? 0 : access_scalar;
    size_t i;

    /*
     * One pass: build every element while ORing the inputs together, then report the
     * first bad element if any (out is only an output buffer; its content is
     * unspecified when the call fails).  Validation costs no extra read of the input.
     */
    if (!access && !gen) {
        /* The common case: one access and one generation for the whole batch. */
        const uint64_t r = cfg->nonpresent_or_rsvd_mask;
        const uint64_t base = make(cfg, 0, access_scalar, gen_scalar);
        if (r) {
            for (i = 0; i < n; i++) {
                uint64_t g = gfn[i], gpa = g << PAGE_SHIFT;
                seen_gfn |= g;
                out[i] = base | gpa | ((gpa & r) << RSVD_MASK_LEN);
            }
        } else {
            i = 0;
#ifdef KVMMU_HAVE_STREAM
            if ((uint64_t)n * 8 >= KVMMU_STREAM_MIN_BYTES && kvmmu_stream_ok(cfg->isa))
                i = mmio_make_stream(gfn, out, n, base, &seen_gfn);
#endif
            for (; i < n; i++) {
                uint64_t g = gfn[i];
                seen_gfn |= g;
                out[i] = base | (g << PAGE_SHIFT);
            }
        }
    } else {
        for (i = 0; i < n; i++) {
            uint64_t a = access ? access[i] : access_scalar;
            seen_gfn |= gfn[i];
            seen_acc |= a;
            out[i] = make(cfg, gfn[i], a, gen ? gen[i] : gen_scalar);
        }
    }
    if (KVMMU_UNLIKELY(seen_gfn & gfn_bad)) {
        if (err)
            *err = KVMMU_MMIO_E_GFN;
        return first_bad(gfn, gfn_bad, n);
    }
    if (KVMMU_UNLIKELY(seen_acc & acc_bad)) {
        if (err)
            *err = KVMMU_MMIO_E_ACCESS;
        return access ? first_bad(access, acc_bad, n) : 1;
    }
    return 0;
}

KVMMU_HOT void kvmmu_mmio_get_batch(const struct kvmmu_cfg *cfg, int which,
                                    const uint64_t *restrict spte, uint64_t *restrict out, size_t n)
{
    size_t i;

    switch (which) {
    case KVMMU_MMIO_GET_GFN: {
        const uint64_t lo = cfg->nonpresent_or_rsvd_lower_gfn_mask;
        const uint64_t r = cfg->nonpresent_or_rsvd_mask;
        for (i = 0; i < n; i++)
            out[i] = ((spte[i] & lo) | ((spte[i] >> RSVD_MASK_LEN) & r)) >> PAGE_SHIFT;
        break;
    }
    case KVMMU_MMIO_GET_ACCESS: {
        const uint64_t m = cfg->mmio_access_mask;
        for (i = 0; i < n; i++)
            out[i] = spte[i] & m;
        break;
    }
    default: {
        const uint64_t lm = cfg->mmio_gen_low_mask, hm = cfg->mmio_gen_high_mask;
        const unsigned ls = cfg->mmio_gen_low_shift, hs = cfg->mmio_gen_high_shift;
        for (i = 0; i < n; i++)
            out[i] = ((spte[i] & lm) >> ls) | ((spte[i] & hm) >> hs);
        break;
    }
    }
}

KVMMU_HOT void kvmmu_mmio_check_batch(const struct kvmmu_cfg *cfg, const uint64_t *restrict spte,
                                      const uint64_t *restrict gen, uint64_t gen_scalar,
                                      uint8_t *restrict out, size_t n)
{
    size_t i;

    if (!gen) {
        if (gen_scalar & UPDATE_IN_PROGRESS) {
            for (i = 0; i < n; i++)
                out[i] = 0;
            return;
        }
        /* Compare in SPTE space: the generation bits of the SPTE against the spread generation. */
        const uint64_t gm = cfg->mmio_gen_low_mask | cfg->mmio_gen_high_mask;
        const uint64_t want = gen_bits(cfg, gen_scalar & gen_mask(cfg));
        /* Branch-free form of (spte & gm) == want that SSE2 can vectorize (no 64-bit compare). */
        for (i = 0; i < n; i++) {
            uint64_t x = (spte[i] & gm) ^ want;
            out[i] = (uint8_t)(((x | (0 - x)) >> 63) ^ 1);
        }
        return;
    }
    for (i = 0; i < n; i++)
        out[i] = check(cfg, spte[i], gen[i]);
}

KVMMU_HOT void kvmmu_mmio_fault_outcome_batch(const struct kvmmu_cfg *cfg, const uint64_t *spte,
                                    const uint64_t *gen, uint64_t gen_scalar, uint8_t *out,
                                    size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)kvmmu_mmio_fault_outcome(cfg, spte[i], gen ? gen[i] : gen_scalar);
}

size_t kvmmu_mmio_invalidate_batch(const struct kvmmu_cfg *cfg, const uint64_t *gen,
                                   uint32_t nr_as_ids, uint8_t *zap, size_t n, int *err)
{
    uint64_t seen = 0;
    size_t i;

    for (i = 0; i < n; i++)
        seen |= gen[i];
    if (seen & UPDATE_IN_PROGRESS) {
        if (err)
            *err = KVMMU_MMIO_E_IN_PROGRESS;
        return first_bad(gen, UPDATE_IN_PROGRESS, n);
    }
    for (i = 0; i < n; i++)
        zap[i] = invalidate_zaps(cfg, gen[i], nr_as_ids);
    return 0;
}
