/*
 * The SPTE engine: make_spte() and friends, the SPTE predicates and decoding.
 *
 * Written from the rules in shared/spec/spte-mmio.md (sections 1, 2, 4, 5, 10);
 * era differences are selected by cfg->rules (pykvmmu/profile.py).
 */
#include "pykvmmu.h"
#include "common.h"

#include <string.h>

#define PT_PRESENT_MASK     KBIT(0)
#define PT_WRITABLE_MASK    KBIT(1)
#define PT_PAGE_SIZE_MASK   KBIT(7)
#define SPTE_AD_MASK        (UINT64_C(3) << 52)
#define SPTE_AD_DISABLED    (UINT64_C(1) << 52)
#define SPTE_AD_WRPROT_ONLY (UINT64_C(2) << 52)
#define ACC_TRACK_SAVED     UINT64_C(0x5)
#define ACC_TRACK_SHIFT     54
#define ACC_EXEC            1u
#define ACC_WRITE           2u
#define ACC_USER            4u
#define EPT_MT_FIELD        UINT64_C(0x78)   /* memtype (5:3) and IPAT (6) */
#define EPT_MT_WB_IPAT      UINT64_C(0x70)
#define EPT_MT_WB           UINT64_C(0x30)
#define EPT_SVE             KBIT(63)

_Static_assert((SPTE_AD_MASK & (ACC_TRACK_SAVED << ACC_TRACK_SHIFT)) == 0,
               "AD type bits must not overlap the access-track saved bits");
_Static_assert(((KBIT(57) | KBIT(58)) & SPTE_AD_MASK) == 0, "EPT writable bits vs AD type");
_Static_assert(((KBIT(57) | KBIT(58)) & (ACC_TRACK_SAVED << ACC_TRACK_SHIFT)) == 0,
               "EPT writable bits vs saved bits");
_Static_assert((KBIT(11) & (KGENMASK(10, 3) | KGENMASK(62, 52))) == 0,
               "MMU-present bit vs MMIO generation");
_Static_assert(((KBIT(63) | KGENMASK(51, 12) | KGENMASK(2, 0)) &
                (KBIT(11) | KGENMASK(10, 3) | KGENMASK(62, 52))) == 0,
               "SPTE_MMIO_ALLOWED_MASK vs MMU-present and generation");
_Static_assert(((KBIT(63) | UINT64_C(0x5A0)) & KBIT(11)) == 0, "FROZEN_SPTE is not MMU-present");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "decode writes its records as little-endian uint64 words"
#endif
_Static_assert(ACC_EXEC == 1 && ACC_WRITE == 2 && ACC_USER == 4, "decode packs ACC bits by shifts");
_Static_assert(sizeof(struct kvmmu_spte_info) == 48, "decode record is 48 bytes (DECODE_DTYPE)");
_Static_assert(offsetof(struct kvmmu_spte_info, kind) == 16 &&
               offsetof(struct kvmmu_spte_info, level) == 22 &&
               offsetof(struct kvmmu_spte_info, pred) == 24, "decode record layout (DECODE_DTYPE)");

/* ------------------------------------------------------------ predicates */

static inline bool rule(const struct kvmmu_cfg *c, uint32_t r) { return (c->rules & r) != 0; }

static inline bool is_mmio(const struct kvmmu_cfg *c, uint64_t s)
{
    const bool on = (c->flags & KVMMU_F_MMIO_ENABLED) != 0;
    if (rule(c, KVMMU_R_MMIO_SPECIAL_TAG))
        return on & ((s & SPTE_AD_MASK) == SPTE_AD_MASK);
    return on & ((s & c->mmio_mask) == c->mmio_value);
}

static inline bool is_present(const struct kvmmu_cfg *c, uint64_t s)
{
    if (rule(c, KVMMU_R_MMU_PRESENT_BIT11))
        return (s & KBIT(11)) != 0;
    return (s != 0) & !is_mmio(c, s);
}

static inline bool is_frozen(const struct kvmmu_cfg *c, uint64_t s)
{
    return ((c->flags & KVMMU_F_HAS_FROZEN) != 0) & (s == c->frozen_value);
}

static inline bool is_large(uint64_t s) { return (s & PT_PAGE_SIZE_MASK) != 0; }
static inline bool is_last(uint64_t s, uint32_t level) { return (level == 1) | is_large(s); }
static inline bool is_writable(uint64_t s) { return (s & PT_WRITABLE_MASK) != 0; }

static inline bool is_executable(const struct kvmmu_cfg *c, uint64_t s)
{
    return (s & (c->x_mask | c->nx_mask)) == c->x_mask;
}

static inline bool ad_enabled(uint64_t s) { return (s & SPTE_AD_MASK) != SPTE_AD_DISABLED; }
static inline bool ad_need_wp(uint64_t s) { return (s & SPTE_AD_MASK) != 0; }

static inline bool is_access_track(const struct kvmmu_cfg *c, uint64_t s)
{
    return !ad_enabled(s) & ((s & c->acc_track_mask) == 0);
}

static inline bool is_mmu_writable(const struct kvmmu_cfg *c, uint64_t s)
{
    if (rule(c, KVMMU_R_LOCKLESS_BOTH_BITS)) {
        uint64_t both = c->host_writable_mask | c->mmu_writable_mask;
        return (s & both) == both;
    }
    return (s & c->mmu_writable_mask) != 0;
}

/* Before v6.13: the A (or D) mask applies only to AD-enabled SPTEs; otherwise fall back. */
static inline bool is_accessed(const struct kvmmu_cfg *c, uint64_t s)
{
    if (rule(c, KVMMU_R_AD_ALWAYS))
        return (s & c->accessed_mask) != 0;
    const bool use_mask = ad_enabled(s) & (c->accessed_mask != 0);
    return (use_mask & ((s & c->accessed_mask) != 0)) | (!use_mask & !is_access_track(c, s));
}

/* is_dirty_spte(), which exists before v6.13 only. */
static inline bool is_dirty_old(const struct kvmmu_cfg *c, uint64_t s)
{
    const bool use_mask = ad_enabled(s) & (c->dirty_mask != 0);
    return (use_mask & ((s & c->dirty_mask) != 0)) | (!use_mask & is_writable(s));
}

static inline bool needs_atomic(const struct kvmmu_cfg *c, uint64_t s)
{
    const bool w = is_writable(s), mmuw = is_mmu_writable(c, s), ad = ad_enabled(s);
    const bool d = (s & c->dirty_mask) != 0, a = (s & c->accessed_mask) != 0;
    if (rule(c, KVMMU_R_ATOMIC_NEEDS))
        return (!w & mmuw) | (!ad) | (w & !d);
    /* spte_has_volatile_bits() */
    /* v5.19+ (mmuw_not_w): the shadow-present check moved to the callers. */
    const bool mmuw_not_w = rule(c, KVMMU_R_ATOMIC_MMUW_NOT_W);
    const bool lockless = mmuw_not_w ? (!w & mmuw) : mmuw;
    return (mmuw_not_w || is_present(c, s)) &&
           (lockless || is_access_track(c, s) || (ad && (!a || (w && !d))));
}

static inline bool writable_invariants_ok(const struct kvmmu_cfg *c, uint64_t s)
{
    const bool mmuw = (s & c->mmu_writable_mask) != 0;
    return (mmuw & ((s & c->host_writable_mask) != 0)) | (!mmuw & !is_writable(s));
}

static inline bool is_rsvd(const struct kvmmu_cfg *c, uint64_t s, uint32_t level)
{
    uint32_t large = (uint32_t)((s >> 7) & 1);
    return ((c->bad_mt_xwr >> (s & 0x3F)) & 1) |
           ((s & c->rsvd_bits_mask[large * 5 + (level - 1)]) != 0);
}

static inline bool ept_ve_possible(const struct kvmmu_cfg *c, uint64_t s)
{
    return ((c->present_mask & EPT_SVE) != 0) & !(s & EPT_SVE) & ((s & 7) != 6);
}

static inline bool pred(const struct kvmmu_cfg *c, int p, uint64_t s, uint32_t level)
{
    switch (p) {
    case KVMMU_P_SHADOW_PRESENT: return is_present(c, s);
    case KVMMU_P_MMIO: return is_mmio(c, s);
    case KVMMU_P_FROZEN: return is_frozen(c, s);
    case KVMMU_P_LARGE: return is_large(s);
    case KVMMU_P_LAST: return is_last(s, level);
    case KVMMU_P_EXECUTABLE: return is_executable(c, s);
    case KVMMU_P_WRITABLE: return is_writable(s);
    case KVMMU_P_MMU_WRITABLE: return is_mmu_writable(c, s);
    case KVMMU_P_HOST_WRITABLE: return (s & c->host_writable_mask) != 0;
    case KVMMU_P_ACCESSED: return is_accessed(c, s);
    case KVMMU_P_DIRTY:
        return rule(c, KVMMU_R_AD_ALWAYS) ? (s & c->dirty_mask) != 0 : is_dirty_old(c, s);
    case KVMMU_P_AD_ENABLED: return ad_enabled(s);
    case KVMMU_P_AD_NEED_WRITE_PROTECT: return ad_need_wp(s);
    case KVMMU_P_ACCESS_TRACK: return is_access_track(c, s);
    case KVMMU_P_NEEDS_ATOMIC_UPDATE: return needs_atomic(c, s);
    case KVMMU_P_WRITABLE_INVARIANTS_OK: return writable_invariants_ok(c, s);
    case KVMMU_P_RSVD: return is_rsvd(c, s, level);
    case KVMMU_P_EPT_VE_POSSIBLE: return ept_ve_possible(c, s);
    default: return false;
    }
}

bool kvmmu_spte_pred(const struct kvmmu_cfg *cfg, int p, uint64_t spte, uint32_t level)
{
    return pred(cfg, p, spte, level);
}

bool kvmmu_is_shadow_present_pte(const struct kvmmu_cfg *cfg, uint64_t spte)
{
    return is_present(cfg, spte);
}

bool kvmmu_is_mmio_spte(const struct kvmmu_cfg *cfg, uint64_t spte) { return is_mmio(cfg, spte); }
bool kvmmu_is_last_spte(uint64_t spte, uint32_t level) { return is_last(spte, level); }

bool kvmmu_is_rsvd_spte(const struct kvmmu_cfg *cfg, uint64_t spte, uint32_t level)
{
    return is_rsvd(cfg, spte, level);
}

uint64_t kvmmu_spte_to_pfn(const struct kvmmu_cfg *cfg, uint64_t spte)
{
    return (spte & cfg->base_addr_mask) >> 12;
}

bool kvmmu_leaf_spte_change_needs_tlb_flush(const struct kvmmu_cfg *c, uint64_t o, uint64_t n)
{
    if (rule(c, KVMMU_R_AD_ALWAYS))
        return is_mmu_writable(c, o) && !is_mmu_writable(c, n);
    /* Before v6.13: what mmu_spte_update() returned. */
    if (!is_present(c, o))
        return false;
    if (is_mmu_writable(c, o) && !is_writable(n))
        return true;
    if (is_accessed(c, o) && !is_accessed(c, n))
        return true;
    return is_dirty_old(c, o) && !is_dirty_old(c, n);
}

KVMMU_HOT size_t kvmmu_leaf_spte_change_needs_tlb_flush_batch(const struct kvmmu_cfg *cfg,
                                                              const uint64_t *restrict o,
                                                              const uint64_t *restrict nw,
                                                              uint8_t *restrict out, size_t n)
{
    const struct kvmmu_cfg cl = *cfg;
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)kvmmu_leaf_spte_change_needs_tlb_flush(&cl, o[i], nw[i]);
    return 0;
}

/* -------------------------------------------------------- access tracking */

static inline uint64_t mark_acc_track(const struct kvmmu_cfg *c, uint64_t s)
{
    if (ad_enabled(s))
        return s & ~c->accessed_mask;
    if (is_access_track(c, s))
        return s;
    s |= (s & ACC_TRACK_SAVED) << ACC_TRACK_SHIFT;
    s &= ~c->acc_track_mask;
    if (rule(c, KVMMU_R_AD_ALWAYS))
        s &= ~c->accessed_mask;
    return s;
}

static inline uint64_t restore_acc_track(const struct kvmmu_cfg *c, uint64_t s)
{
    uint64_t saved = (s >> ACC_TRACK_SHIFT) & ACC_TRACK_SAVED;
    s &= ~c->acc_track_mask;
    s &= ~(ACC_TRACK_SAVED << ACC_TRACK_SHIFT);
    return s | saved;
}

uint64_t kvmmu_mark_spte_for_access_track(const struct kvmmu_cfg *cfg, uint64_t spte)
{
    return mark_acc_track(cfg, spte);
}

uint64_t kvmmu_restore_acc_track_spte(const struct kvmmu_cfg *cfg, uint64_t spte)
{
    return restore_acc_track(cfg, spte);
}

KVMMU_HOT size_t kvmmu_access_track_batch(const struct kvmmu_cfg *cfg, const uint64_t *in, bool restore,
                                uint64_t *out, size_t n)
{
    if (restore) {
        for (size_t i = 0; i < n; i++)
            out[i] = restore_acc_track(cfg, in[i]);
    } else {
        for (size_t i = 0; i < n; i++)
            out[i] = mark_acc_track(cfg, in[i]);
    }
    return 0;
}

/* modify_spte_protections(): restore an access-tracked SPTE, change it, re-mark it. */
static inline uint64_t modify_protections(const struct kvmmu_cfg *c, uint64_t s, uint64_t set,
                                          uint64_t clear)
{
    bool tracked = is_access_track(c, s);
    if (tracked)
        s = restore_acc_track(c, s);
    s = (s | set) & ~clear;
    if (tracked)
        s = mark_acc_track(c, s);
    return s;
}

/* ---------------------------------------------------------------- make_spte */

static inline uint64_t memtype_bits(const struct kvmmu_cfg *c, uint32_t memtype, bool host_mmio)
{
    if (!(c->flags & KVMMU_F_MT_HOOK))
        return 0;
    if (memtype != KVMMU_MEMTYPE_AUTO)
        return memtype;
    /* vmx_get_mt_mask(): UC for host MMIO, WB (+IPAT when guest PAT is ignored) otherwise. */
    if (host_mmio)
        return 0;
    return (c->flags & KVMMU_F_IGNORE_GUEST_PAT) ? EPT_MT_WB_IPAT : EPT_MT_WB;
}

/* Everything make_spte() computes except the pfn, which is ORed in last but one. */
static inline uint64_t make_spte_nopfn(const struct kvmmu_cfg *c, uint64_t old, uint32_t level,
                                       uint32_t acc, uint32_t mk, uint32_t memtype, bool *wrprot)
{
    bool prefetch = mk & KVMMU_MK_PREFETCH, sync = mk & KVMMU_MK_SYNCHRONIZING;
    bool host_mmio = mk & KVMMU_MK_HOST_MMIO;
    uint64_t s = c->mmu_present_mask;

    *wrprot = false;
    if (mk & KVMMU_MK_AD_DISABLED)
        s |= SPTE_AD_DISABLED;
    else if (mk & KVMMU_MK_WRPROT_ONLY)
        s |= SPTE_AD_WRPROT_ONLY;
    s |= c->present_mask;
    if (rule(c, KVMMU_R_AD_ALWAYS)) {
        if (!prefetch || sync)
            s |= c->accessed_mask;
    } else if (!prefetch) {
        s |= ad_enabled(s) ? c->accessed_mask : 0;
    }
    if (level > 1 && (acc & ACC_EXEC) && (mk & KVMMU_MK_NX_HUGE))
        acc &= ~ACC_EXEC;
    s |= (acc & ACC_EXEC) ? c->x_mask : c->nx_mask;
    if (acc & ACC_USER)
        s |= c->user_mask;
    if (level > 1)
        s |= PT_PAGE_SIZE_MASK;
    s |= memtype_bits(c, memtype, host_mmio);
    if (mk & KVMMU_MK_HOST_WRITABLE)
        s |= c->host_writable_mask;
    else
        acc &= ~ACC_WRITE;
    if (!host_mmio)
        s |= c->me_value;

    if (rule(c, KVMMU_R_AD_ALWAYS)) {
        if (acc & ACC_WRITE) {
            if ((!is_last(old, level) || !is_writable(old)) && (mk & KVMMU_MK_UNSYNC_FAILS))
                *wrprot = true;
            else
                s |= PT_WRITABLE_MASK | c->mmu_writable_mask | c->dirty_mask;
        }
        if (prefetch && !sync)
            s = mark_acc_track(c, s);
        return s;
    }

    /* Before v6.13. */
    if (acc & ACC_WRITE) {
        s |= PT_WRITABLE_MASK | c->mmu_writable_mask;
        if (rule(c, KVMMU_R_SHORTCUT_CAN_UNSYNC) && sync && is_writable(old))
            return s;                       /* goto out: no D, no prefetch mark */
        if (rule(c, KVMMU_R_SHORTCUT_OLD_W) && is_writable(old))
            return prefetch ? mark_acc_track(c, s) : s;   /* goto out: no D */
        if (rule(c, KVMMU_R_SHORTCUT_OLD_W_LEAF) && is_last(old, level) && is_writable(old))
            return prefetch ? mark_acc_track(c, s) : s;   /* 2867eb782cf7: leaf only */
        if (mk & KVMMU_MK_UNSYNC_FAILS) {
            *wrprot = true;
            acc &= ~ACC_WRITE;
            s &= ~(PT_WRITABLE_MASK | c->mmu_writable_mask);
        }
    }
    if (acc & ACC_WRITE)
        s |= ad_enabled(s) ? c->dirty_mask : 0;
    if (prefetch)
        s = mark_acc_track(c, s);
    return s;
}

uint64_t kvmmu_make_spte(const struct kvmmu_cfg *cfg, uint64_t pfn, uint64_t old_spte,
                         uint32_t level, uint32_t pte_access, uint32_t mkflags,
                         uint32_t memtype, bool *wrprot)
{
    /* The pfn only ever adds PA bits: access tracking touches bits 0-2, 8, 54 and 56. */
    return make_spte_nopfn(cfg, old_spte, level, pte_access, mkflags, memtype, wrprot) |
           (pfn << 12);
}

static inline int check_inputs(const struct kvmmu_cfg *c, uint64_t pfn, uint32_t level,
                               uint32_t acc, uint32_t mk, uint32_t memtype)
{
    if ((pfn >> 40) || ((pfn << 12) & ~c->base_addr_mask))
        return KVMMU_E_PFN;
    if (level < 1 || level > 5)
        return KVMMU_E_LEVEL;
    if (acc > 7)
        return KVMMU_E_ACCESS;
    if (mk & ~(uint32_t)KVMMU_MK_ALL_FLAGS)
        return KVMMU_E_FLAGS;
    if (memtype != KVMMU_MEMTYPE_AUTO && (memtype & ~(uint32_t)EPT_MT_FIELD))
        return KVMMU_E_MEMTYPE;
    return 0;
}

int kvmmu_make_spte_check(const struct kvmmu_cfg *cfg, uint64_t pfn, uint32_t level,
                          uint32_t pte_access, uint32_t mkflags, uint32_t memtype)
{
    return check_inputs(cfg, pfn, level, pte_access, mkflags, memtype);
}

/* Batch sizes from which the per-element path uses a table of every (level, access, flags). */
#define MK_TABLE_MIN 16384
#define MK_TABLE_SIZE (2 * 8 * 256)   /* make_spte sees the level only as level > 1 */

static size_t first_bad_input(const struct kvmmu_cfg *c, const uint64_t *pfn, const uint8_t *level,
                              uint32_t level_scalar, const uint8_t *acc, uint32_t acc_scalar,
                              size_t n, int *err)
{
    for (size_t i = 0; i < n; i++) {
        int e = check_inputs(c, pfn[i], level ? level[i] : level_scalar, acc ? acc[i] : acc_scalar,
                             0, KVMMU_MEMTYPE_AUTO);
        if (e) {
            *err = e;
            return i + 1;
        }
    }
    return 0;
}


#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KVMMU_HAVE_AVX2_GATHER 1
/*
 * The table path of make_spte_batch with AVX2: four SPTEs per step, table entries fetched
 * with a gather.  Returns non-zero if any input broke a rule (the caller then finds it).
 */
__attribute__((target("avx2"))) static uint64_t
mk_table_avx2(const uint64_t *tab, const uint64_t *pfn, const uint8_t *level, uint32_t level_scalar,
              const uint8_t *acc, uint32_t acc_scalar, const uint8_t *mk, uint64_t *out, size_t n,
              uint64_t pfn_bad, size_t *done, bool stream)
{
    const __m256i one = _mm256_set1_epi64x(1), four = _mm256_set1_epi64x(4);
    const __m256i seven = _mm256_set1_epi64x(7), badm = _mm256_set1_epi64x((long long)pfn_bad);
    const __m256i lv_s = _mm256_set1_epi64x((long long)level_scalar);
    const __m256i ac_s = _mm256_set1_epi64x((long long)acc_scalar);
    __m256i bad = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t w;
        __m256i p = _mm256_loadu_si256((const __m256i *)(pfn + i));
        __m256i lv = lv_s, ac = ac_s, m = _mm256_setzero_si256();
        if (level) {
            memcpy(&w, level + i, 4);
            lv = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128((int)w));
        }
        if (acc) {
            memcpy(&w, acc + i, 4);
            ac = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128((int)w));
        }
        if (mk) {
            memcpy(&w, mk + i, 4);
            m = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128((int)w));
        }
        __m256i l1 = _mm256_sub_epi64(lv, one);
        __m256i lbad = _mm256_cmpgt_epi64(l1, four);          /* level 0 wraps to -1 below */
        lbad = _mm256_or_si256(lbad, _mm256_cmpgt_epi64(_mm256_setzero_si256(), l1));
        __m256i abad = _mm256_cmpgt_epi64(ac, seven);
        bad = _mm256_or_si256(bad, _mm256_and_si256(p, badm));
        bad = _mm256_or_si256(bad, _mm256_or_si256(lbad, abad));
        __m256i l1c = _mm256_and_si256(_mm256_cmpgt_epi64(_mm256_andnot_si256(lbad, l1),
                                                          _mm256_setzero_si256()), one);
        __m256i k = _mm256_add_epi64(_mm256_slli_epi64(_mm256_add_epi64(_mm256_slli_epi64(l1c, 3),
                                                                         _mm256_and_si256(ac, seven)), 8), m);
        __m256i t = _mm256_i64gather_epi64((const long long *)tab, k, 8);
        __m256i r = _mm256_or_si256(t, _mm256_slli_epi64(p, 12));
        if (stream)
            _mm256_stream_si256((__m256i *)(out + i), r);     /* out + i is 32-byte aligned */
        else
            _mm256_storeu_si256((__m256i *)(out + i), r);
    }
    if (stream)
        _mm_sfence();
    *done = i;
    return !_mm256_testz_si256(bad, bad);
}
#endif

KVMMU_HOT size_t kvmmu_make_spte_batch(const struct kvmmu_cfg *cfg, const uint64_t *restrict pfn,
                             const uint64_t *restrict old_spte, uint64_t old_spte_scalar,
                             const uint8_t *restrict level, uint32_t level_scalar,
                             const uint8_t *restrict pte_access, uint32_t pte_access_scalar,
                             const uint8_t *restrict mkflags, uint32_t mkflags_scalar,
                             const uint8_t *restrict memtype, uint32_t memtype_scalar,
                             uint64_t *restrict out, uint8_t *restrict wrprot, size_t n, int *err)
{
    const struct kvmmu_cfg cl = *cfg;     /* a local copy: stores through out cannot alias it */
    const struct kvmmu_cfg *c = &cl;
    const uint64_t pfn_bad = ~(cl.base_addr_mask >> 12);

    if (!old_spte && !level && !pte_access && !mkflags && !memtype) {
        /* Every input but the pfn is shared: build the template once, OR the pfns in. */
        int e = check_inputs(c, 0, level_scalar, pte_access_scalar, mkflags_scalar, memtype_scalar);
        if (e) {
            *err = e;
            return 1;
        }
        bool wp;
        const uint64_t t = make_spte_nopfn(c, old_spte_scalar, level_scalar, pte_access_scalar,
                                           mkflags_scalar, memtype_scalar, &wp);
        uint64_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t p = pfn[i];
            bad |= p & pfn_bad;
            out[i] = t | (p << 12);
        }
        if (wrprot) {
            for (size_t i = 0; i < n; i++)
                wrprot[i] = wp;
        }
        if (KVMMU_UNLIKELY(bad))
            return first_bad_input(c, pfn, NULL, level_scalar, NULL, pte_access_scalar, n, err);
        return 0;
    }
    if (memtype_scalar != KVMMU_MEMTYPE_AUTO && (memtype_scalar & ~(uint32_t)EPT_MT_FIELD)) {
        *err = KVMMU_E_MEMTYPE;
        return 1;
    }
    if (!old_spte && !memtype && n >= MK_TABLE_MIN) {
        /* Only (level, access, flags) vary: tabulate make_spte without the pfn once. */
        uint64_t tab[MK_TABLE_SIZE];
        uint8_t tab_wp[MK_TABLE_SIZE];
        for (uint32_t k = 0; k < MK_TABLE_SIZE; k++) {
            bool wp;
            tab[k] = make_spte_nopfn(c, old_spte_scalar, k / 2048 ? 2 : 1, (k / 256) % 8,
                                     (k % 256) | mkflags_scalar, memtype_scalar, &wp);
            tab_wp[k] = wp;
        }
        uint64_t bad = 0;
        size_t head = 0, end = 0;
#ifdef KVMMU_HAVE_AVX2_GATHER
        if (!wrprot && __builtin_cpu_supports("avx2")) {
            /* Huge outputs: streaming stores from the first 32-byte aligned element on. */
            const bool stream = (uint64_t)n * 8 >= KVMMU_STREAM_MIN_BYTES && !((uintptr_t)out & 7);
            head = stream ? (((32 - ((uintptr_t)out & 31)) & 31) / 8) : 0;
            if (head > n)
                head = n;
            size_t done = 0;
            bad = mk_table_avx2(tab, pfn + head, level ? level + head : NULL, level_scalar,
                                pte_access ? pte_access + head : NULL, pte_access_scalar,
                                mkflags ? mkflags + head : NULL, out + head, n - head, pfn_bad,
                                &done, stream);
            end = head + done;
        }
#endif
        for (size_t i = 0; i < n; i++) {
            if (i == head)
                i = end > head ? end : head;
            if (i >= n)
                break;
            uint64_t p = pfn[i];
            uint32_t l1 = (level ? level[i] : level_scalar) - 1u;
            uint32_t ac = pte_access ? pte_access[i] : pte_access_scalar;
            uint32_t mk = mkflags ? mkflags[i] : 0u;
            bad |= (p & pfn_bad) | (uint64_t)(l1 > 4) | (uint64_t)(ac > 7);
            uint32_t k = ((l1 > 4 ? 0 : (l1 != 0)) * 8 + (ac & 7)) * 256 + mk;
            out[i] = tab[k] | (p << 12);
            if (wrprot)
                wrprot[i] = tab_wp[k];
        }
        if (KVMMU_UNLIKELY(bad))
            return first_bad_input(c, pfn, level, level_scalar, pte_access, pte_access_scalar, n, err);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t p = pfn[i];
        uint32_t lv = level ? level[i] : level_scalar;
        uint32_t ac = pte_access ? pte_access[i] : pte_access_scalar;
        uint32_t mk = (mkflags ? mkflags[i] : 0u) | mkflags_scalar;
        uint32_t mt = memtype ? memtype[i] : memtype_scalar;
        int e = check_inputs(c, p, lv, ac, mk, mt);
        if (KVMMU_UNLIKELY(e)) {
            *err = e;
            return i + 1;
        }
        bool wp;
        out[i] = make_spte_nopfn(c, old_spte ? old_spte[i] : old_spte_scalar, lv, ac, mk, mt, &wp) |
                 (p << 12);
        if (wrprot)
            wrprot[i] = wp;
    }
    return 0;
}

/* ------------------------------------------------- non-leaf, split, collapse */

static inline uint64_t nonleaf(const struct kvmmu_cfg *c, uint64_t pa, bool ad_disabled)
{
    uint64_t s = c->mmu_present_mask | pa | c->present_mask | PT_WRITABLE_MASK | c->user_mask |
                 c->x_mask | c->me_value;
    return s | (ad_disabled ? SPTE_AD_DISABLED : c->accessed_mask);
}

uint64_t kvmmu_make_nonleaf_spte(const struct kvmmu_cfg *cfg, uint64_t child_pa, bool ad_disabled)
{
    return nonleaf(cfg, child_pa, ad_disabled);
}

size_t kvmmu_make_nonleaf_spte_batch(const struct kvmmu_cfg *cfg, const uint64_t *child_pa,
                                     bool ad_disabled, uint64_t *out, size_t n)
{
    uint64_t bad = ~cfg->base_addr_mask;
    for (size_t i = 0; i < n; i++) {
        if (KVMMU_UNLIKELY(child_pa[i] & bad))
            return i + 1;
        out[i] = nonleaf(cfg, child_pa[i], ad_disabled);
    }
    return 0;
}

static inline uint64_t pages_per_hpage(uint32_t level)
{
    return UINT64_C(1) << ((level - 1) * 9);
}

static inline uint64_t make_executable(const struct kvmmu_cfg *c, uint64_t s, uint32_t access)
{
    if (access & ACC_EXEC)
        return modify_protections(c, s, c->x_mask, c->nx_mask);
    return modify_protections(c, s, c->nx_mask, c->x_mask);
}

static inline uint64_t small_spte(const struct kvmmu_cfg *c, uint64_t huge, uint32_t child_level,
                                  uint32_t access, uint32_t index, bool nx_huge)
{
    uint64_t s = huge | ((index * pages_per_hpage(child_level)) << 12);
    if (child_level == 1) {
        s &= ~PT_PAGE_SIZE_MASK;
        if (nx_huge) {
            if (rule(c, KVMMU_R_SPLIT_EXEC_ACCESS))
                s = make_executable(c, s, access);
            else if (access & ACC_EXEC)
                s = make_executable(c, s, ACC_EXEC);
        }
    }
    return s;
}

uint64_t kvmmu_make_small_spte(const struct kvmmu_cfg *cfg, uint64_t huge_spte,
                               uint32_t child_level, uint32_t role_access, uint32_t index,
                               bool nx_huge)
{
    return small_spte(cfg, huge_spte, child_level, role_access, index, nx_huge);
}

static inline int small_check(const struct kvmmu_cfg *c, uint64_t huge, uint32_t child_level,
                              uint32_t index)
{
    if (!is_present(c, huge))
        return KVMMU_E_NOT_PRESENT;
    if (!is_large(huge))
        return KVMMU_E_NOT_HUGE;
    if (index > 511)
        return KVMMU_E_INDEX;
    uint64_t pfn = (huge & c->base_addr_mask) >> 12;
    if (pfn & (pages_per_hpage(child_level + 1) - 1))
        return KVMMU_E_PFN;
    return 0;
}

size_t kvmmu_make_small_spte_batch(const struct kvmmu_cfg *cfg, const uint64_t *huge_spte,
                                   uint32_t child_level, uint32_t role_access,
                                   const uint16_t *index, uint32_t index_scalar, bool nx_huge,
                                   uint64_t *out, size_t n, int *err)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t ix = index ? index[i] : index_scalar;
        int e = small_check(cfg, huge_spte[i], child_level, ix);
        if (KVMMU_UNLIKELY(e)) {
            *err = e;
            return i + 1;
        }
        out[i] = small_spte(cfg, huge_spte[i], child_level, role_access, ix, nx_huge);
    }
    return 0;
}

static inline uint64_t huge_spte(const struct kvmmu_cfg *c, uint64_t small, uint32_t level,
                                 bool nx_huge)
{
    uint64_t hmask = ~((UINT64_C(1) << (12 + 9 * (level - 1))) - 1);
    uint64_t h = (small | PT_PAGE_SIZE_MASK) & (hmask | 0xFFF);
    if (nx_huge)
        h = make_executable(c, h, 0);
    return h;
}

uint64_t kvmmu_make_huge_spte(const struct kvmmu_cfg *cfg, uint64_t small_spte, uint32_t level,
                              bool nx_huge)
{
    return huge_spte(cfg, small_spte, level, nx_huge);
}

size_t kvmmu_make_huge_spte_batch(const struct kvmmu_cfg *cfg, const uint64_t *small_spte,
                                  uint32_t level, bool nx_huge, uint64_t *out, size_t n, int *err)
{
    for (size_t i = 0; i < n; i++) {
        if (KVMMU_UNLIKELY(!is_present(cfg, small_spte[i]))) {
            *err = KVMMU_E_NOT_PRESENT;
            return i + 1;
        }
        out[i] = huge_spte(cfg, small_spte[i], level, nx_huge);
    }
    return 0;
}

/* ------------------------------------------ branch-free predicate masks */

/* Predicates as pure uint64 arithmetic (so loops vectorise); era rules become selectors. */
struct pmask_consts {
    uint64_t bit11, nb11;             /* ~0 if the MMU-present rule is bit 11, and its inverse */
    uint64_t mmio_on, special, nspecial, mmio_mask, mmio_value;
    uint64_t frozen_on, frozen_value;
    uint64_t x_mask, xnx, hw, mw, both, lockless_both, nlockless_both;
    uint64_t a_mask, d_mask, a_nz, d_nz, atm;
    uint64_t ad_always, nad_always, at_needs, at_mmuw_not_w, at_lockless;
    uint64_t ve_on, last_lv1, rsvd0, rsvd1, bad_mt_xwr;
};

static inline uint64_t nz(uint64_t x) { return (x | (0 - x)) >> 63; }   /* 1 iff x != 0 */
static inline uint64_t sel(bool b) { return b ? ~UINT64_C(0) : 0; }

static void pmask_setup(const struct kvmmu_cfg *c, uint32_t level, struct pmask_consts *k)
{
    k->bit11 = sel(rule(c, KVMMU_R_MMU_PRESENT_BIT11));
    k->nb11 = ~k->bit11;
    k->mmio_on = (c->flags & KVMMU_F_MMIO_ENABLED) ? 1 : 0;
    k->special = sel(rule(c, KVMMU_R_MMIO_SPECIAL_TAG));
    k->nspecial = ~k->special;
    k->mmio_mask = c->mmio_mask;
    k->mmio_value = c->mmio_value;
    k->frozen_on = (c->flags & KVMMU_F_HAS_FROZEN) ? 1 : 0;
    k->frozen_value = c->frozen_value;
    k->x_mask = c->x_mask;
    k->xnx = c->x_mask | c->nx_mask;
    k->hw = c->host_writable_mask;
    k->mw = c->mmu_writable_mask;
    k->both = c->host_writable_mask | c->mmu_writable_mask;
    k->lockless_both = sel(rule(c, KVMMU_R_LOCKLESS_BOTH_BITS));
    k->nlockless_both = ~k->lockless_both;
    k->a_mask = c->accessed_mask;
    k->d_mask = c->dirty_mask;
    k->a_nz = c->accessed_mask ? 1 : 0;
    k->d_nz = c->dirty_mask ? 1 : 0;
    k->atm = c->acc_track_mask;
    k->ad_always = sel(rule(c, KVMMU_R_AD_ALWAYS));
    k->nad_always = ~k->ad_always;
    k->at_needs = sel(rule(c, KVMMU_R_ATOMIC_NEEDS));
    k->at_mmuw_not_w = sel(rule(c, KVMMU_R_ATOMIC_MMUW_NOT_W));
    k->at_lockless = sel(rule(c, KVMMU_R_ATOMIC_LOCKLESS));
    k->ve_on = ((c->flags & KVMMU_F_EPT_VE_CHECK) && (c->present_mask & EPT_SVE)) ? 1 : 0;
    k->last_lv1 = level == 1 ? 1 : 0;
    k->rsvd0 = c->rsvd_bits_mask[level - 1];
    k->rsvd1 = c->rsvd_bits_mask[5 + level - 1];
    k->bad_mt_xwr = c->bad_mt_xwr;
}

/* Bit p of the result is predicate p (KVMMU_P_*) of s; equal to pred() bit for bit. */
static inline __attribute__((always_inline)) uint64_t pmask(const struct pmask_consts *k, uint64_t s)
{
    const uint64_t adt = (s >> 52) & 3;
    const uint64_t ad_en = nz(adt ^ 1);
    const uint64_t ad_wp = nz(adt);
    const uint64_t mmio_std = 1 ^ nz((s & k->mmio_mask) ^ k->mmio_value);
    const uint64_t mmio_tag = 1 ^ nz(adt ^ 3);
    const uint64_t mmio = k->mmio_on & ((mmio_std & k->nspecial) | (mmio_tag & k->special));
    const uint64_t present = (((s >> 11) & 1) & k->bit11) | ((nz(s) & (1 ^ mmio)) & k->nb11);
    const uint64_t frozen = k->frozen_on & (1 ^ nz(s ^ k->frozen_value));
    const uint64_t large = (s >> 7) & 1;
    const uint64_t w = (s >> 1) & 1;
    const uint64_t x = 1 ^ nz((s & k->xnx) ^ k->x_mask);
    const uint64_t mmuw = ((1 ^ nz((s & k->both) ^ k->both)) & k->lockless_both) |
                          (nz(s & k->mw) & k->nlockless_both);
    const uint64_t hwb = nz(s & k->hw);
    const uint64_t abit = nz(s & k->a_mask), dbit = nz(s & k->d_mask);
    const uint64_t tracked = (1 ^ ad_en) & (1 ^ nz(s & k->atm));
    const uint64_t use_a = ad_en & k->a_nz, use_d = ad_en & k->d_nz;
    const uint64_t acc_old = (use_a & abit) | ((1 ^ use_a) & (1 ^ tracked));
    const uint64_t accessed = (abit & k->ad_always) | (acc_old & k->nad_always);
    const uint64_t dirty_old = (use_d & dbit) | ((1 ^ use_d) & w);
    const uint64_t dirty = (dbit & k->ad_always) | (dirty_old & k->nad_always);
    const uint64_t at_new = ((1 ^ w) & mmuw) | (1 ^ ad_en) | (w & (1 ^ dbit));
    const uint64_t lockless = (((1 ^ w) & mmuw) & k->at_mmuw_not_w) | (mmuw & k->at_lockless);
    const uint64_t at_old = (present | k->at_mmuw_not_w) & (lockless | tracked | (ad_en & ((1 ^ abit) | (w & (1 ^ dbit)))));
    const uint64_t atomic = (at_new & k->at_needs) | (at_old & ~k->at_needs);
    const uint64_t wr_mmuw = nz(s & k->mw);
    const uint64_t winv2 = (wr_mmuw & hwb) | ((1 ^ wr_mmuw) & (1 ^ w));
    const uint64_t rs = (k->rsvd0 & (large - 1)) | (k->rsvd1 & (0 - large));
    const uint64_t rsvd = ((k->bad_mt_xwr >> (s & 0x3F)) & 1) | nz(s & rs);
    const uint64_t ve = k->ve_on & (1 ^ (s >> 63)) & nz((s & 7) ^ 6);
    return (present << KVMMU_P_SHADOW_PRESENT) | (mmio << KVMMU_P_MMIO) |
           (frozen << KVMMU_P_FROZEN) | (large << KVMMU_P_LARGE) |
           ((k->last_lv1 | large) << KVMMU_P_LAST) | (x << KVMMU_P_EXECUTABLE) |
           (w << KVMMU_P_WRITABLE) | (mmuw << KVMMU_P_MMU_WRITABLE) |
           (hwb << KVMMU_P_HOST_WRITABLE) | (accessed << KVMMU_P_ACCESSED) |
           (dirty << KVMMU_P_DIRTY) | (ad_en << KVMMU_P_AD_ENABLED) |
           (ad_wp << KVMMU_P_AD_NEED_WRITE_PROTECT) | (tracked << KVMMU_P_ACCESS_TRACK) |
           (atomic << KVMMU_P_NEEDS_ATOMIC_UPDATE) | (winv2 << KVMMU_P_WRITABLE_INVARIANTS_OK) |
           (rsvd << KVMMU_P_RSVD) | (ve << KVMMU_P_EPT_VE_POSSIBLE);
}

/* ------------------------------------------------------------ batch queries */

#define PRED_LOOP(expr)                                              \
    for (size_t i = 0; i < n; i++) {                                 \
        const uint64_t s = spte[i];                                  \
        out[i] = (uint8_t)(expr);                                    \
    }

KVMMU_HOT size_t kvmmu_spte_pred_batch(const struct kvmmu_cfg *cfg, int p,
                                       const uint64_t *restrict spte,
                                       const uint8_t *restrict level, uint32_t level_scalar,
                                       uint8_t *restrict out, size_t n, int *err)
{
    const struct kvmmu_cfg cl = *cfg;
    const struct kvmmu_cfg *c = &cl;

    if (p < 0 || p >= KVMMU_P_COUNT) {
        *err = KVMMU_E_FLAGS;
        return 1;
    }
    if (level || level_scalar < 1 || level_scalar > 5) {
        for (size_t i = 0; i < n; i++) {
            uint32_t lv = level ? level[i] : level_scalar;
            if (KVMMU_UNLIKELY(lv < 1 || lv > 5)) {
                *err = KVMMU_E_LEVEL;
                return i + 1;
            }
            out[i] = (uint8_t)pred(c, p, spte[i], lv);
        }
        return 0;
    }
    struct pmask_consts k;
    pmask_setup(c, level_scalar, &k);
    const uint64_t mw = k.mw, hw = k.hw, d = k.d_mask, a = k.a_mask;
    (void)mw;
    switch (p) {
    case KVMMU_P_SHADOW_PRESENT:
        if (rule(c, KVMMU_R_MMU_PRESENT_BIT11)) {
            PRED_LOOP((s >> 11) & 1);
        } else {
            PRED_LOOP(is_present(c, s));
        }
        break;
    case KVMMU_P_MMIO:
        if (!(cl.flags & KVMMU_F_MMIO_ENABLED)) {
            memset(out, 0, n);
        } else if (rule(c, KVMMU_R_MMIO_SPECIAL_TAG)) {
            PRED_LOOP(1 ^ nz(((s >> 52) & 3) ^ 3));
        } else {
            const uint64_t m = cl.mmio_mask, v = cl.mmio_value;
            PRED_LOOP(1 ^ nz((s & m) ^ v));
        }
        break;
    case KVMMU_P_LARGE: PRED_LOOP((s >> 7) & 1); break;
    case KVMMU_P_LAST:
        if (level_scalar == 1)
            memset(out, 1, n);
        else
            PRED_LOOP((s >> 7) & 1);
        break;
    case KVMMU_P_WRITABLE: PRED_LOOP((s >> 1) & 1); break;
    case KVMMU_P_HOST_WRITABLE: PRED_LOOP(nz(s & hw)); break;
    case KVMMU_P_AD_ENABLED: PRED_LOOP(nz(((s >> 52) & 3) ^ 1)); break;
    case KVMMU_P_AD_NEED_WRITE_PROTECT: PRED_LOOP(nz((s >> 52) & 3)); break;
    case KVMMU_P_NEEDS_ATOMIC_UPDATE:
        if (rule(c, KVMMU_R_ATOMIC_NEEDS) && !rule(c, KVMMU_R_LOCKLESS_BOTH_BITS)) {
            PRED_LOOP(((((s >> 1) & 1) ^ 1) & nz(s & mw)) | (1 ^ nz(((s >> 52) & 3) ^ 1)) |
                      (((s >> 1) & 1) & (1 ^ nz(s & d))));
        } else {
            PRED_LOOP((pmask(&k, s) >> KVMMU_P_NEEDS_ATOMIC_UPDATE) & 1);
        }
        break;
    case KVMMU_P_ACCESSED:
        if (rule(c, KVMMU_R_AD_ALWAYS)) {
            PRED_LOOP(nz(s & a));
        } else {
            PRED_LOOP((pmask(&k, s) >> KVMMU_P_ACCESSED) & 1);
        }
        break;
    case KVMMU_P_FROZEN: PRED_LOOP(is_frozen(c, s)); break;
    case KVMMU_P_EXECUTABLE: PRED_LOOP(is_executable(c, s)); break;
    case KVMMU_P_MMU_WRITABLE: PRED_LOOP(is_mmu_writable(c, s)); break;
    case KVMMU_P_DIRTY: PRED_LOOP((pmask(&k, s) >> KVMMU_P_DIRTY) & 1); break;
    case KVMMU_P_ACCESS_TRACK: PRED_LOOP(is_access_track(c, s)); break;
    case KVMMU_P_WRITABLE_INVARIANTS_OK: PRED_LOOP(writable_invariants_ok(c, s)); break;
    case KVMMU_P_RSVD: PRED_LOOP(is_rsvd(c, s, level_scalar)); break;
    case KVMMU_P_EPT_VE_POSSIBLE: PRED_LOOP(k.ve_on & ept_ve_possible(c, s)); break;
    default:
        break;
    }
    return 0;
}

KVMMU_HOT size_t kvmmu_spte_to_pfn_batch(const struct kvmmu_cfg *cfg, const uint64_t *spte,
                               uint64_t *out, size_t n)
{
    uint64_t m = cfg->base_addr_mask;
    for (size_t i = 0; i < n; i++)
        out[i] = (spte[i] & m) >> 12;
    return 0;
}

#ifdef KVMMU_HAVE_STREAM
/* Two 48-byte decode records = three aligned 32-byte streaming stores, built in registers. */
__attribute__((target("avx2"))) static size_t
decode_stream_pairs(uint64_t *dst, const uint64_t *sp, const uint64_t *w1, const uint64_t *w2,
                    const uint64_t *p0, const uint64_t *spread, size_t m)
{
    size_t j = 0;
    for (; j + 2 <= m; j += 2) {
        const uint64_t pa = p0[j], pb = p0[j + 1];
        __m256i v0 = _mm256_set_epi64x((long long)spread[pa & 0xFF], (long long)w2[j],
                                       (long long)w1[j], (long long)sp[j]);
        __m256i v1 = _mm256_set_epi64x((long long)w1[j + 1], (long long)sp[j + 1],
                                       (long long)spread[(pa >> 16) & 0xFF],
                                       (long long)spread[(pa >> 8) & 0xFF]);
        __m256i v2 = _mm256_set_epi64x((long long)spread[(pb >> 16) & 0xFF],
                                       (long long)spread[(pb >> 8) & 0xFF],
                                       (long long)spread[pb & 0xFF], (long long)w2[j + 1]);
        _mm256_stream_si256((__m256i *)(void *)(dst + 6 * j), v0);
        _mm256_stream_si256((__m256i *)(void *)(dst + 6 * j + 4), v1);
        _mm256_stream_si256((__m256i *)(void *)(dst + 6 * j + 8), v2);
    }
    return j;
}
#endif

/* The record words of a uniform-level decode that do not depend on the SPTE. */
struct decode_consts {
    uint64_t eptm, base_mask, user, npv, lvl;
};

/*
 * Uniform-level decode, portable: a vectorisable structure-of-arrays pass per block of 256,
 * then the interleave into 48-byte records; huge outputs are streamed, straight from
 * registers when out is 32-byte aligned, else through an L1 block.
 */
static inline __attribute__((always_inline)) void
decode_blocks(const struct pmask_consts *k, const struct decode_consts *d,
              const uint64_t *restrict spte, struct kvmmu_spte_info *restrict out, size_t n,
              bool stream)
{
    uint64_t w1[256], w2[256], p0[256], spread[256];
    const uint64_t eptm = d->eptm, base_mask = d->base_mask, user = d->user, npv = d->npv;
    const uint64_t lvl = d->lvl;
#ifdef KVMMU_HAVE_STREAM
    uint64_t stage[256 * 6];
    const bool direct = ((uintptr_t)out & 31) == 0;    /* every 256-record block stays aligned */
#else
    (void)stream;
#endif
    /* spread[b]: bit i of b becomes byte i (0 or 1) of the word. */
    for (uint64_t b = 0; b < 256; b++)
        spread[b] = ((((b * UINT64_C(0x0101010101010101)) & UINT64_C(0x8040201008040201)) +
                      UINT64_C(0x7F7F7F7F7F7F7F7F)) >> 7) & UINT64_C(0x0101010101010101);
    for (size_t base = 0; base < n; base += 256) {
        const size_t m = n - base < 256 ? n - base : 256;
        const uint64_t *sp = spte + base;
        for (size_t j = 0; j < m; j++) {
            const uint64_t s = sp[j], mk = pmask(k, s);
            const uint64_t fr = (mk >> KVMMU_P_FROZEN) & 1, mm = (mk >> KVMMU_P_MMIO) & 1;
            const uint64_t pr = (mk >> KVMMU_P_SHADOW_PRESENT) & 1;
            const uint64_t np = 1 ^ nz(s ^ npv);
            /* frozen > mmio > present > non-present value > other, as mask selects */
            uint64_t kind = KVMMU_KIND_OTHER & (np - 1);
            kind = (kind & (pr - 1)) | (KVMMU_KIND_PRESENT & (0 - pr));
            kind = (kind & (mm - 1)) | (KVMMU_KIND_MMIO & (0 - mm));
            kind = (kind & (fr - 1)) | (KVMMU_KIND_FROZEN & (0 - fr));
            const uint64_t acc = ((mk >> KVMMU_P_EXECUTABLE) & 1) |
                                 (((mk >> KVMMU_P_WRITABLE) & 1) << 1) | (nz(s & user) << 2);
            w1[j] = (s & base_mask) >> 12;
            w2[j] = kind | (((s >> 52) & 3) << 8) | ((((s >> 3) & 7) & eptm) << 16) |
                    ((((s >> 6) & 1) & eptm) << 24) | (acc << 32) |
                    (((s >> ACC_TRACK_SHIFT) & ACC_TRACK_SAVED) << 40) | lvl;
            p0[j] = mk;
        }
        size_t j0 = 0;
        uint64_t *o = (uint64_t *)(void *)(out + base);
#ifdef KVMMU_HAVE_STREAM
        if (stream && direct)
            j0 = decode_stream_pairs(o, sp, w1, w2, p0, spread, m);
        else if (stream)
            o = stage;
#endif
        for (size_t j = j0; j < m; j++) {
            o[6 * j + 0] = sp[j];
            o[6 * j + 1] = w1[j];
            o[6 * j + 2] = w2[j];
            o[6 * j + 3] = spread[p0[j] & 0xFF];
            o[6 * j + 4] = spread[(p0[j] >> 8) & 0xFF];
            o[6 * j + 5] = spread[(p0[j] >> 16) & 0xFF];
        }
#ifdef KVMMU_HAVE_STREAM
        if (stream && !direct)
            kvmmu_stream_copy(out + base, stage, m * sizeof(*out));
#endif
    }
#ifdef KVMMU_HAVE_STREAM
    if (stream)
        kvmmu_stream_fence();
#endif
}

#ifdef KVMMU_HAVE_AVX512
#define AVX512_DECODE __attribute__((target("avx512f,avx512bw,avx512dq")))
/*
 * Uniform-level decode of eight SPTEs per step, all in registers: the predicates of pmask()
 * as k-masks (one bit per SPTE), set into the predicate bytes by masked ORs; the records
 * interleaved by two-source permutes (output vector v takes word f of record e, 8v + lane
 * = 6e + f, from the word pairs (spte, pfn), (fields, pred[0:8]), (pred[8:16], pred[16:24]))
 * and two blends.  n must be a multiple of 8; streams when nt (dst 64-byte aligned).
 */
AVX512_DECODE static void
decode_avx512(const struct pmask_consts *k, const struct decode_consts *d,
              const uint64_t *restrict spte, uint64_t *restrict dst, size_t n, bool nt)
{
    const __m512i c1 = _mm512_set1_epi64(1), c3 = _mm512_set1_epi64(3);
    const __m512i bit1 = _mm512_set1_epi64(PT_WRITABLE_MASK), bit7 = _mm512_set1_epi64(PT_PAGE_SIZE_MASK);
    const __m512i bit11 = _mm512_set1_epi64((long long)KBIT(11)), bit63 = _mm512_set1_epi64((long long)KBIT(63));
    const __m512i adm = _mm512_set1_epi64((long long)SPTE_AD_MASK);
    const __m512i mmio_m = _mm512_set1_epi64((long long)k->mmio_mask);
    const __m512i mmio_v = _mm512_set1_epi64((long long)k->mmio_value);
    const __m512i frozen_v = _mm512_set1_epi64((long long)k->frozen_value);
    const __m512i xnx = _mm512_set1_epi64((long long)k->xnx), xm = _mm512_set1_epi64((long long)k->x_mask);
    const __m512i both = _mm512_set1_epi64((long long)k->both), mw = _mm512_set1_epi64((long long)k->mw);
    const __m512i hw = _mm512_set1_epi64((long long)k->hw), am = _mm512_set1_epi64((long long)k->a_mask);
    const __m512i dm = _mm512_set1_epi64((long long)k->d_mask), atm = _mm512_set1_epi64((long long)k->atm);
    const __m512i rsvd0 = _mm512_set1_epi64((long long)k->rsvd0), rsvd1 = _mm512_set1_epi64((long long)k->rsvd1);
    const __m512i bad = _mm512_set1_epi64((long long)k->bad_mt_xwr);
    const __m512i c63 = _mm512_set1_epi64(0x3F), c7 = _mm512_set1_epi64(7), c6 = _mm512_set1_epi64(6);
    const __m512i npv = _mm512_set1_epi64((long long)d->npv), user = _mm512_set1_epi64((long long)d->user);
    const __m512i base_mask = _mm512_set1_epi64((long long)d->base_mask);
    const __m512i kind_other = _mm512_set1_epi64((long long)(d->lvl | KVMMU_KIND_OTHER));
    const __m512i kind_np = _mm512_set1_epi64((long long)(d->lvl | KVMMU_KIND_NONPRESENT));
    const __m512i kind_pr = _mm512_set1_epi64((long long)(d->lvl | KVMMU_KIND_PRESENT));
    const __m512i kind_mm = _mm512_set1_epi64((long long)(d->lvl | KVMMU_KIND_MMIO));
    const __m512i kind_fr = _mm512_set1_epi64((long long)(d->lvl | KVMMU_KIND_FROZEN));
    const __m512i mt_field = _mm512_set1_epi64((long long)(d->eptm & (UINT64_C(7) << 16)));
    const __m512i ipat_field = _mm512_set1_epi64((long long)(d->eptm & (UINT64_C(1) << 24)));
    const __m512i saved_field = _mm512_set1_epi64((long long)(ACC_TRACK_SAVED << 40));
    const __m512i acc_x = _mm512_set1_epi64((long long)((uint64_t)ACC_EXEC << 32));
    const __m512i acc_w = _mm512_set1_epi64((long long)((uint64_t)ACC_WRITE << 32));
    const __m512i acc_u = _mm512_set1_epi64((long long)((uint64_t)ACC_USER << 32));
    const __m512i idx0 = _mm512_set_epi64(9, 1, 8, 0, 8, 0, 8, 0);
    const __m512i idx1 = _mm512_set_epi64(10, 2, 10, 2, 9, 1, 9, 1);
    const __m512i idx2 = _mm512_set_epi64(11, 3, 11, 3, 11, 3, 10, 2);
    const __m512i four = _mm512_set1_epi64(4);
    const __m512i idx3 = _mm512_add_epi64(idx0, four), idx4 = _mm512_add_epi64(idx1, four);
    const __m512i idx5 = _mm512_add_epi64(idx2, four);
    const __mmask8 mb0 = 0x0C, mc0 = 0x30, mb1 = 0xC3, mc1 = 0x0C, mb2 = 0x30, mc2 = 0xC3;
    const bool mmio_on = k->mmio_on != 0, special = k->special != 0, present11 = k->bit11 != 0;
    const bool frozen_on = k->frozen_on != 0, lockless_both = k->lockless_both != 0;
    const bool ad_always = k->ad_always != 0, at_needs = k->at_needs != 0;
    const __mmask8 use_a_on = k->a_nz ? 0xFF : 0, use_d_on = k->d_nz ? 0xFF : 0;
    const __mmask8 mmuw_not_w = k->at_mmuw_not_w ? 0xFF : 0, at_lockless = k->at_lockless ? 0xFF : 0;
    const __mmask8 ve_on = k->ve_on ? 0xFF : 0, last_lv1 = k->last_lv1 ? 0xFF : 0;

    for (size_t j = 0; j < n; j += 8) {
        const __m512i s = _mm512_loadu_si512(spte + j);
        const __m512i adt = _mm512_and_si512(_mm512_srli_epi64(s, 52), c3);
        const __mmask8 ad_en = _mm512_cmpneq_epi64_mask(adt, c1);
        const __mmask8 ad_wp = _mm512_test_epi64_mask(s, adm);
        __mmask8 mmio = 0;
        if (mmio_on)
            mmio = special ? _mm512_cmpeq_epi64_mask(adt, c3)
                           : _mm512_cmpeq_epi64_mask(_mm512_and_si512(s, mmio_m), mmio_v);
        const __mmask8 present = present11 ? _mm512_test_epi64_mask(s, bit11)
                                           : (__mmask8)(_mm512_test_epi64_mask(s, s) & ~mmio);
        const __mmask8 frozen = frozen_on ? _mm512_cmpeq_epi64_mask(s, frozen_v) : 0;
        const __mmask8 large = _mm512_test_epi64_mask(s, bit7);
        const __mmask8 w = _mm512_test_epi64_mask(s, bit1);
        const __mmask8 x = _mm512_cmpeq_epi64_mask(_mm512_and_si512(s, xnx), xm);
        const __mmask8 mmuw = lockless_both ? _mm512_cmpeq_epi64_mask(_mm512_and_si512(s, both), both)
                                            : _mm512_test_epi64_mask(s, mw);
        const __mmask8 hwb = _mm512_test_epi64_mask(s, hw);
        const __mmask8 abit = _mm512_test_epi64_mask(s, am), dbit = _mm512_test_epi64_mask(s, dm);
        const __mmask8 tracked = _mm512_mask_testn_epi64_mask((__mmask8)~ad_en, s, atm);
        const __mmask8 use_a = ad_en & use_a_on, use_d = ad_en & use_d_on;
        const __mmask8 accessed = ad_always ? abit : (__mmask8)((use_a & abit) | (~use_a & ~tracked));
        const __mmask8 dirty = ad_always ? dbit : (__mmask8)((use_d & dbit) | (~use_d & w));
        __mmask8 atomic;
        if (at_needs) {
            atomic = (__mmask8)((~w & mmuw) | ~ad_en | (w & ~dbit));
        } else {
            const __mmask8 lockless = (__mmask8)((~w & mmuw & mmuw_not_w) | (mmuw & at_lockless));
            atomic = (present | mmuw_not_w) &
                     (lockless | tracked | (ad_en & (__mmask8)(~abit | (w & ~dbit))));
        }
        const __mmask8 wr_mmuw = _mm512_test_epi64_mask(s, mw);
        const __mmask8 winv = (__mmask8)((wr_mmuw & hwb) | (~wr_mmuw & ~w));
        const __m512i rs = _mm512_mask_blend_epi64(large, rsvd0, rsvd1);
        const __mmask8 rsvd = _mm512_test_epi64_mask(_mm512_srlv_epi64(bad, _mm512_and_si512(s, c63)), c1) |
                              _mm512_test_epi64_mask(s, rs);
        const __mmask8 ve = ve_on & _mm512_mask_cmpneq_epi64_mask(_mm512_testn_epi64_mask(s, bit63),
                                                                  _mm512_and_si512(s, c7), c6);
        const __mmask8 last = last_lv1 | large;
        const __mmask8 np = _mm512_cmpeq_epi64_mask(s, npv);

        __m512i q[3] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
#define PUT(p, mk) q[(p) / 8] = _mm512_mask_or_epi64(q[(p) / 8], (mk), q[(p) / 8], \
                                                      _mm512_set1_epi64((long long)KBIT(8 * ((p) % 8))))
        PUT(KVMMU_P_SHADOW_PRESENT, present);
        PUT(KVMMU_P_MMIO, mmio);
        PUT(KVMMU_P_FROZEN, frozen);
        PUT(KVMMU_P_LARGE, large);
        PUT(KVMMU_P_LAST, last);
        PUT(KVMMU_P_EXECUTABLE, x);
        PUT(KVMMU_P_WRITABLE, w);
        PUT(KVMMU_P_MMU_WRITABLE, mmuw);
        PUT(KVMMU_P_HOST_WRITABLE, hwb);
        PUT(KVMMU_P_ACCESSED, accessed);
        PUT(KVMMU_P_DIRTY, dirty);
        PUT(KVMMU_P_AD_ENABLED, ad_en);
        PUT(KVMMU_P_AD_NEED_WRITE_PROTECT, ad_wp);
        PUT(KVMMU_P_ACCESS_TRACK, tracked);
        PUT(KVMMU_P_NEEDS_ATOMIC_UPDATE, atomic);
        PUT(KVMMU_P_WRITABLE_INVARIANTS_OK, winv);
        PUT(KVMMU_P_RSVD, rsvd);
        PUT(KVMMU_P_EPT_VE_POSSIBLE, ve);
#undef PUT
        /* frozen > mmio > present > non-present value > other */
        __m512i f2 = _mm512_mask_mov_epi64(kind_other, np, kind_np);
        f2 = _mm512_mask_mov_epi64(f2, present, kind_pr);
        f2 = _mm512_mask_mov_epi64(f2, mmio, kind_mm);
        f2 = _mm512_mask_mov_epi64(f2, frozen, kind_fr);
        f2 = _mm512_or_si512(f2, _mm512_slli_epi64(adt, 8));
        f2 = _mm512_ternarylogic_epi64(f2, _mm512_slli_epi64(s, 13), mt_field, 0xF8);
        f2 = _mm512_ternarylogic_epi64(f2, _mm512_slli_epi64(s, 18), ipat_field, 0xF8);
        f2 = _mm512_ternarylogic_epi64(f2, _mm512_srli_epi64(s, ACC_TRACK_SHIFT - 40), saved_field, 0xF8);
        f2 = _mm512_mask_or_epi64(f2, x, f2, acc_x);
        f2 = _mm512_mask_or_epi64(f2, w, f2, acc_w);
        f2 = _mm512_mask_or_epi64(f2, _mm512_test_epi64_mask(s, user), f2, acc_u);
        const __m512i f1 = _mm512_srli_epi64(_mm512_and_si512(s, base_mask), 12);

        __m512i v[6];
#define RECORDS(i, idx, mb, mc)                                                               \
        v[i] = _mm512_mask_blend_epi64(mc, _mm512_mask_blend_epi64(mb,                           \
                   _mm512_permutex2var_epi64(s, idx, f1), _mm512_permutex2var_epi64(f2, idx, q[0])), \
                   _mm512_permutex2var_epi64(q[1], idx, q[2]))
        RECORDS(0, idx0, mb0, mc0);
        RECORDS(1, idx1, mb1, mc1);
        RECORDS(2, idx2, mb2, mc2);
        RECORDS(3, idx3, mb0, mc0);
        RECORDS(4, idx4, mb1, mc1);
        RECORDS(5, idx5, mb2, mc2);
#undef RECORDS
        uint64_t *o = dst + 6 * j;
        if (nt) {
            for (int i = 0; i < 6; i++)
                _mm512_stream_si512((void *)(o + 8 * i), v[i]);
        } else {
            for (int i = 0; i < 6; i++)
                _mm512_storeu_si512(o + 8 * i, v[i]);
        }
    }
    if (nt)
        _mm_sfence();
}
#endif

KVMMU_HOT size_t kvmmu_spte_decode_batch(const struct kvmmu_cfg *cfg, const uint64_t *restrict spte,
                               const uint8_t *restrict level, uint32_t level_scalar,
                               struct kvmmu_spte_info *restrict out, size_t n, int *err)
{
    const struct kvmmu_cfg cl = *cfg;
    const struct kvmmu_cfg *c = &cl;
    const bool ept = (cl.flags & KVMMU_F_EPT) != 0;
    const bool ve = (cl.flags & KVMMU_F_EPT_VE_CHECK) != 0;
    const bool ad_always = rule(c, KVMMU_R_AD_ALWAYS);

    if (!level && level_scalar >= 1 && level_scalar <= 5) {
        struct pmask_consts k;
        const struct decode_consts d = {
            .eptm = ept ? ~UINT64_C(0) : 0, .base_mask = cl.base_addr_mask, .user = cl.user_mask,
            .npv = cl.nonpresent_value, .lvl = (uint64_t)level_scalar << 48,
        };
        bool stream = false;
#ifdef KVMMU_HAVE_STREAM
        stream = (uint64_t)n * sizeof(*out) >= KVMMU_STREAM_MIN_BYTES && kvmmu_stream_ok();
#endif
        pmask_setup(c, level_scalar, &k);
#ifdef KVMMU_HAVE_AVX512
        if (!(cl.flags & KVMMU_F_PORTABLE) && kvmmu_avx512_ok()) {
            /* Records before the first 64-byte aligned one (when out is 16-byte aligned) and
             * the last n % 8 go through the portable blocks. */
            size_t head = 0;
            if (((uintptr_t)out & 15) == 0)
                while (head < n && head < 4 && ((uintptr_t)(out + head) & 63))
                    head++;
            const bool nt = stream && ((uintptr_t)(out + head) & 63) == 0;
            if (!nt)
                head = 0;
            const size_t body = (n - head) & ~(size_t)7;
            decode_blocks(&k, &d, spte, out, head, false);
            decode_avx512(&k, &d, spte + head, (uint64_t *)(void *)(out + head), body, nt);
            decode_blocks(&k, &d, spte + head + body, out + head + body, n - head - body, false);
            return 0;
        }
#endif
        decode_blocks(&k, &d, spte, out, n, stream);
        return 0;
    }

    for (size_t i = 0; i < n; i++) {
        const uint64_t s = spte[i];
        const uint32_t lv = level ? level[i] : level_scalar;
        if (KVMMU_UNLIKELY(lv < 1 || lv > 5)) {
            *err = KVMMU_E_LEVEL;
            return i + 1;
        }
        const bool present = is_present(c, s), mmio = is_mmio(c, s), frozen = is_frozen(c, s);
        const bool w = is_writable(s), x = is_executable(c, s);
        uint32_t m = 0;
        m |= (uint32_t)present << KVMMU_P_SHADOW_PRESENT;
        m |= (uint32_t)mmio << KVMMU_P_MMIO;
        m |= (uint32_t)frozen << KVMMU_P_FROZEN;
        m |= (uint32_t)is_large(s) << KVMMU_P_LARGE;
        m |= (uint32_t)is_last(s, lv) << KVMMU_P_LAST;
        m |= (uint32_t)x << KVMMU_P_EXECUTABLE;
        m |= (uint32_t)w << KVMMU_P_WRITABLE;
        m |= (uint32_t)is_mmu_writable(c, s) << KVMMU_P_MMU_WRITABLE;
        m |= (uint32_t)((s & cl.host_writable_mask) != 0) << KVMMU_P_HOST_WRITABLE;
        m |= (uint32_t)is_accessed(c, s) << KVMMU_P_ACCESSED;
        m |= (uint32_t)(ad_always ? (s & cl.dirty_mask) != 0 : is_dirty_old(c, s)) << KVMMU_P_DIRTY;
        m |= (uint32_t)ad_enabled(s) << KVMMU_P_AD_ENABLED;
        m |= (uint32_t)ad_need_wp(s) << KVMMU_P_AD_NEED_WRITE_PROTECT;
        m |= (uint32_t)is_access_track(c, s) << KVMMU_P_ACCESS_TRACK;
        m |= (uint32_t)needs_atomic(c, s) << KVMMU_P_NEEDS_ATOMIC_UPDATE;
        m |= (uint32_t)writable_invariants_ok(c, s) << KVMMU_P_WRITABLE_INVARIANTS_OK;
        m |= (uint32_t)is_rsvd(c, s, lv) << KVMMU_P_RSVD;
        m |= (uint32_t)(ve && ept_ve_possible(c, s)) << KVMMU_P_EPT_VE_POSSIBLE;

        struct kvmmu_spte_info *o = &out[i];
        o->spte = s;
        o->pfn = (s & cl.base_addr_mask) >> 12;
        o->kind = frozen ? KVMMU_KIND_FROZEN : mmio ? KVMMU_KIND_MMIO : present ? KVMMU_KIND_PRESENT
                  : s == cl.nonpresent_value ? KVMMU_KIND_NONPRESENT : KVMMU_KIND_OTHER;
        o->ad_type = (uint8_t)((s >> 52) & 3);
        o->memtype = ept ? (uint8_t)((s >> 3) & 7) : 0;
        o->ipat = ept ? (uint8_t)((s >> 6) & 1) : 0;
        o->access = (uint8_t)((x ? ACC_EXEC : 0) | (w ? ACC_WRITE : 0) |
                              ((s & cl.user_mask) ? ACC_USER : 0));
        o->saved_rx = (uint8_t)((s >> ACC_TRACK_SHIFT) & ACC_TRACK_SAVED);
        o->level = (uint8_t)lv;
        o->pad = 0;
        /* Spread predicate bit k to byte k (0 or 1) eight at a time. */
        for (int q = 0; q < 3; q++) {
            uint64_t b = (m >> (8 * q)) & 0xFF;
            uint64_t e = ((((b * UINT64_C(0x0101010101010101)) & UINT64_C(0x8040201008040201)) +
                           UINT64_C(0x7F7F7F7F7F7F7F7F)) >> 7) & UINT64_C(0x0101010101010101);
            memcpy(&o->pred[8 * q], &e, 8);
        }
    }
    return 0;
}
