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
_Static_assert(offsetof(struct kvmmu_spte_decoded, mmio_gfn) == 48 &&
                   sizeof(struct kvmmu_spte_decoded) == 72, "decode() result layout (spte._MMIO_FIELDS)");
_Static_assert(offsetof(struct kvmmu_spte_info, kind) == 16 &&
               offsetof(struct kvmmu_spte_info, level) == 22 &&
               offsetof(struct kvmmu_spte_info, pred) == 24, "decode record layout (DECODE_DTYPE)");

uint32_t kvmmu_isa_cpu(void)
{
#ifdef KVMMU_HAVE_AVX512
    if (kvmmu_avx512_ok(KVMMU_ISA_AVX512))
        return KVMMU_ISA_AVX512;
#endif
#ifdef KVMMU_HAVE_STREAM
    if (kvmmu_avx2_ok(KVMMU_ISA_AVX2) && __builtin_cpu_supports("bmi2"))
        return KVMMU_ISA_AVX2;
#endif
    return KVMMU_ISA_PORTABLE;
}

/* ------------------------------------------------------------ predicates */

/*
 * Every SPTE predicate is one row of spte_rules.h; the expansions below turn the rows into
 * the predicate numbers, the branch-free uint64 form (scalar helpers, batch loops, portable
 * decode), the AVX-512 k-mask form and the table Python builds its API from.
 */
/* KVMMU_P_<NAME> = id, and KVMMU_P_COUNT rows. */
enum {
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) KVMMU_P_##NAME = (id),
#include "spte_rules.h"
};
enum {
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) KVMMU_P_ROW_##NAME,
#include "spte_rules.h"
    KVMMU_P_COUNT
};
_Static_assert(KVMMU_P_COUNT <= (int)sizeof(((struct kvmmu_spte_info *)0)->pred),
               "every predicate has a byte in the decode record");
/* The ids are a permutation of 0..KVMMU_P_COUNT-1 (distinct, no gap). */
_Static_assert((0
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) | (UINT64_C(1) << (id))
#include "spte_rules.h"
               ) == (UINT64_C(1) << KVMMU_P_COUNT) - 1, "predicate ids are 0..count-1, each once");

static inline bool rule(const struct kvmmu_cfg *c, uint32_t r) { return (c->rules & r) != 0; }
static inline uint64_t nz(uint64_t x) { return (x | (0 - x)) >> 63; }   /* 1 iff x != 0 */
/* nz(s & m); one shift when m is a single constant bit (PT_WRITABLE_MASK, ...). */
static inline __attribute__((always_inline)) uint64_t test1(uint64_t s, uint64_t m)
{
    if (__builtin_constant_p(m) && m != 0 && (m & (m - 1)) == 0)
        return (s >> __builtin_ctzll(m)) & 1;
    return nz(s & m);
}

/*
 * Era rules are constant for a batch, so the batch loops resolve them once, not per SPTE:
 * the lane expansions read RULE(r) from an argument era (c->rules, or a constant), and
 * KVMMU_ERA_SPECIALISE runs its body with era a compile-time constant for each
 * combination of the era rules that the layout profiles (pykvmmu/profile.py) use, where
 * every SEL() folds to one side.  Any other combination runs the body with era = rules:
 * the same results, SELs computed at run time.  Rules outside KVMMU_ERA_RULES stay run
 * time in every variant, so a new RULE() in spte_rules.h is correct before it is listed.
 */
#define KVMMU_ERA_RULES (KVMMU_R_MMU_PRESENT_BIT11 | KVMMU_R_MMIO_SPECIAL_TAG | KVMMU_R_AD_ALWAYS | \
                         KVMMU_R_ATOMIC_MMUW_NOT_W | KVMMU_R_ATOMIC_NEEDS | KVMMU_R_LOCKLESS_BOTH_BITS)
#define ERA_V510  (KVMMU_R_MMIO_SPECIAL_TAG | KVMMU_R_LOCKLESS_BOTH_BITS)
#define ERA_V513  (KVMMU_R_MMU_PRESENT_BIT11 | KVMMU_R_LOCKLESS_BOTH_BITS)
#define ERA_V517  (KVMMU_R_MMU_PRESENT_BIT11)
#define ERA_V519  (KVMMU_R_MMU_PRESENT_BIT11 | KVMMU_R_ATOMIC_MMUW_NOT_W)
#define ERA_V613  (KVMMU_R_MMU_PRESENT_BIT11 | KVMMU_R_ATOMIC_MMUW_NOT_W | KVMMU_R_AD_ALWAYS)
#define ERA_V615  (KVMMU_R_MMU_PRESENT_BIT11 | KVMMU_R_ATOMIC_NEEDS | KVMMU_R_AD_ALWAYS)
#define ERA_CASE_(v, rules, ...)                                            \
    case (v): {                                                             \
        const uint32_t era = (v) | ((rules) & ~(uint32_t)KVMMU_ERA_RULES); \
        __VA_ARGS__;                                                        \
    } break;
#define KVMMU_ERA_SPECIALISE(rules, ...)                                    \
    switch ((rules) & KVMMU_ERA_RULES) {                                    \
    ERA_CASE_(ERA_V510, rules, __VA_ARGS__)                                 \
    ERA_CASE_(ERA_V513, rules, __VA_ARGS__)                                 \
    ERA_CASE_(ERA_V517, rules, __VA_ARGS__)                                 \
    ERA_CASE_(ERA_V519, rules, __VA_ARGS__)                                 \
    ERA_CASE_(ERA_V613, rules, __VA_ARGS__)                                 \
    ERA_CASE_(ERA_V615, rules, __VA_ARGS__)                                 \
    default: {                                                              \
        const uint32_t era = (rules);                                       \
        __VA_ARGS__;                                                        \
    } break;                                                                \
    }

/* The lane language of spte_rules.h over the configuration c and the level. */
#define CFG(f) (c->f)
#define RULE(r) ((era & KVMMU_R_##r) != 0)
#define FLAG(f) ((c->flags & KVMMU_F_##f) != 0)
#define LEVEL level

/* Branch-free form: a lane is a uint64_t 0 or 1 for the one SPTE s (vectorises in loops). */
#define TEST(m) test1(s, (m))
#define EQ(m, v) (1 ^ nz((s & (m)) ^ (v)))
#define BITIDX(t) (((t) >> (s & 63)) & 1)
#define TEST_SEL(l, m1, m0) nz(s & (((m1) & (0 - (l))) | ((m0) & ((l) - 1))))
#define NOT(a) ((a) ^ 1)
#define ONES_IF(k) ((uint64_t)((k) != 0))
#define SEL(k, a, b) (((a) & (0 - ONES_IF(k))) | ((b) & (ONES_IF(k) - 1)))

/* Bit KVMMU_P_<NAME> of the result is that predicate of s; inlined, unused rows vanish. */
static inline __attribute__((always_inline)) uint64_t
spte_lanes_era(const struct kvmmu_cfg *c, uint32_t era, uint64_t s, uint32_t level)
{
#define KVMMU_SPTE_TERM(var, expr) const uint64_t var = (expr);
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) const uint64_t field = (expr);
#include "spte_rules.h"
    return 0
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) | (field << (id))
#include "spte_rules.h"
        ;
}
static inline __attribute__((always_inline)) uint64_t
spte_lanes(const struct kvmmu_cfg *c, uint64_t s, uint32_t level)
{
    return spte_lanes_era(c, c->rules, s, level);
}
/* Predicate p alone (0 or 1): with p a constant, only the rows it depends on remain; with
 * era a constant (KVMMU_ERA_SPECIALISE), only one side of each era selector. */
#undef SEL
#define SEL(k, a, b) ((k) ? (a) : (b))
static inline __attribute__((always_inline)) uint64_t
spte_lane_era(const struct kvmmu_cfg *c, uint32_t era, uint64_t s, uint32_t level, int p)
{
#define KVMMU_SPTE_TERM(var, expr) const uint64_t var = (expr);
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) const uint64_t field = (expr);
#include "spte_rules.h"
    switch (p) {
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) case (id): return field;
#include "spte_rules.h"
    default: return 0;
    }
}
static inline __attribute__((always_inline)) uint64_t
spte_lane(const struct kvmmu_cfg *c, uint64_t s, uint32_t level, int p)
{
    return spte_lane_era(c, c->rules, s, level, p);
}
#include "spte_lang_end.h"

/* Scalar helpers named after the kernel functions: sp_is_shadow_present_pte(c, s, level). */
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr)                      \
    __attribute__((unused)) static inline bool sp_##fn(const struct kvmmu_cfg *c, uint64_t s, \
                                                       uint32_t level)                       \
    {                                                                                        \
        return spte_lane(c, s, level, KVMMU_P_##NAME);                                       \
    }
#include "spte_rules.h"

/* The table pykvmmu/spte.py builds PREDICATES, the docs, DECODE_DTYPE and __all__ from. */
static const struct kvmmu_spte_pred_info pred_table[] = {
#define KVMMU_SPTE_PREDICATE(N, I, L, FEAT, FN, FD, DOC, E) \
    {.kernel_fn = #FN, .field = #FD, .feature = FEAT, .doc = DOC, .id = (I), .needs_level = (L)},
#include "spte_rules.h"
};

const struct kvmmu_spte_pred_info *kvmmu_spte_pred_table(size_t *n)
{
    *n = sizeof(pred_table) / sizeof(pred_table[0]);
    return pred_table;
}

bool kvmmu_spte_pred(const struct kvmmu_cfg *cfg, int p, uint64_t spte, uint32_t level)
{
    if (p < 0 || p >= KVMMU_P_COUNT || level < 1 || level > 5)
        return false;
    return (spte_lanes(cfg, spte, level) >> p) & 1;
}

bool kvmmu_is_mmio_spte(const struct kvmmu_cfg *cfg, uint64_t spte) { return sp_is_mmio_spte(cfg, spte, 1); }

uint64_t kvmmu_spte_to_pfn(const struct kvmmu_cfg *cfg, uint64_t spte)
{
    return (spte & cfg->base_addr_mask) >> 12;
}

bool kvmmu_leaf_spte_change_needs_tlb_flush(const struct kvmmu_cfg *c, uint64_t o, uint64_t n)
{
    const uint64_t lo = spte_lanes(c, o, 1), ln = spte_lanes(c, n, 1);
#define P(l, NAME) (((l) >> KVMMU_P_##NAME) & 1)
    if (rule(c, KVMMU_R_AD_ALWAYS))
        return P(lo, MMU_WRITABLE) && !P(ln, MMU_WRITABLE);
    /* Before v6.13: what mmu_spte_update() returned. */
    if (!P(lo, SHADOW_PRESENT))
        return false;
    if (P(lo, MMU_WRITABLE) && !P(ln, WRITABLE))
        return true;
    if (P(lo, ACCESSED) && !P(ln, ACCESSED))
        return true;
    return P(lo, DIRTY) && !P(ln, DIRTY);
#undef P
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
    if (sp_spte_ad_enabled(c, s, 1))
        return s & ~c->accessed_mask;
    if (sp_is_access_track_spte(c, s, 1))
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
    bool tracked = sp_is_access_track_spte(c, s, 1);
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

/* make_spte() from v6.13: W, MMU-W and D together unless unsync fails; prefetch marks. */
static inline uint64_t make_spte_writable_v613(const struct kvmmu_cfg *c, uint64_t s, uint64_t old,
                                               uint32_t level, uint32_t acc, uint32_t mk,
                                               bool *wrprot)
{
    const bool prefetch = mk & KVMMU_MK_PREFETCH, sync = mk & KVMMU_MK_SYNCHRONIZING;
    if (acc & ACC_WRITE) {
        if ((!sp_is_last_spte(c, old, level) || !sp_is_writable_pte(c, old, 1)) &&
            (mk & KVMMU_MK_UNSYNC_FAILS))
            *wrprot = true;
        else
            s |= PT_WRITABLE_MASK | c->mmu_writable_mask | c->dirty_mask;
    }
    if (prefetch && !sync)
        s = mark_acc_track(c, s);
    return s;
}

/* make_spte() before v6.13: the era's writable shortcut ("goto out"), then D and prefetch. */
static inline uint64_t make_spte_writable_old(const struct kvmmu_cfg *c, uint64_t s, uint64_t old,
                                              uint32_t level, uint32_t acc, uint32_t mk,
                                              bool *wrprot)
{
    const bool prefetch = mk & KVMMU_MK_PREFETCH, sync = mk & KVMMU_MK_SYNCHRONIZING;
    if (acc & ACC_WRITE) {
        s |= PT_WRITABLE_MASK | c->mmu_writable_mask;
        if (rule(c, KVMMU_R_SHORTCUT_CAN_UNSYNC) && sync && sp_is_writable_pte(c, old, 1))
            return s;                       /* goto out: no D, no prefetch mark */
        if (rule(c, KVMMU_R_SHORTCUT_OLD_W) && sp_is_writable_pte(c, old, 1))
            return prefetch ? mark_acc_track(c, s) : s;   /* goto out: no D */
        if (rule(c, KVMMU_R_SHORTCUT_OLD_W_LEAF) && sp_is_last_spte(c, old, level) &&
            sp_is_writable_pte(c, old, 1))
            return prefetch ? mark_acc_track(c, s) : s;   /* 2867eb782cf7: leaf only */
        if (mk & KVMMU_MK_UNSYNC_FAILS) {
            *wrprot = true;
            acc &= ~ACC_WRITE;
            s &= ~(PT_WRITABLE_MASK | c->mmu_writable_mask);
        }
    }
    if (acc & ACC_WRITE)
        s |= sp_spte_ad_enabled(c, s, 1) ? c->dirty_mask : 0;
    if (prefetch)
        s = mark_acc_track(c, s);
    return s;
}

/* Everything make_spte() computes except the pfn, which is ORed in last but one. */
static inline uint64_t make_spte_nopfn(const struct kvmmu_cfg *c, uint64_t old, uint32_t level,
                                       uint32_t acc, uint32_t mk, uint32_t memtype, bool *wrprot)
{
    const bool prefetch = mk & KVMMU_MK_PREFETCH, sync = mk & KVMMU_MK_SYNCHRONIZING;
    const bool host_mmio = mk & KVMMU_MK_HOST_MMIO;
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
        s |= sp_spte_ad_enabled(c, s, 1) ? c->accessed_mask : 0;
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
    if (rule(c, KVMMU_R_AD_ALWAYS))
        return make_spte_writable_v613(c, s, old, level, acc, mk, wrprot);
    return make_spte_writable_old(c, s, old, level, acc, mk, wrprot);
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

uint32_t kvmmu_make_spte(const struct kvmmu_cfg *cfg, uint64_t pfn, uint64_t old_spte,
                         uint32_t level, uint32_t pte_access, uint32_t mkflags, uint32_t memtype,
                         uint64_t *spte)
{
    if (mkflags & KVMMU_MK_OLD_DEFAULT)
        old_spte = cfg->nonpresent_value;
    if ((mkflags & KVMMU_MK_AD_DEFAULT) && !(cfg->flags & KVMMU_F_AD_ENABLED))
        mkflags |= KVMMU_MK_AD_DISABLED;
    if ((mkflags & KVMMU_MK_NX_DEFAULT) && (cfg->flags & KVMMU_F_NX_HUGE_PAGES))
        mkflags |= KVMMU_MK_NX_HUGE;
    mkflags &= ~(uint32_t)(KVMMU_MK_AD_DEFAULT | KVMMU_MK_NX_DEFAULT | KVMMU_MK_OLD_DEFAULT);
    const int e = check_inputs(cfg, pfn, level, pte_access, mkflags, memtype);
    if (e)
        return (uint32_t)e;
    bool wp;
    /* The pfn only ever adds PA bits: access tracking touches bits 0-2, 8, 54 and 56. */
    const uint64_t s = make_spte_nopfn(cfg, old_spte, level, pte_access, mkflags, memtype, &wp) |
                       (pfn << 12);
    *spte = s;
    return (wp ? KVMMU_MKR_WRPROT : 0) |
           (cfg->nonpresent_value && (pte_access | cfg->present_mask) == cfg->nonpresent_value
            ? KVMMU_MKR_WARN_NONPRESENT : 0) |
           (sp_is_rsvd_spte(cfg, s, level) ? KVMMU_MKR_WARN_RSVD : 0);
}

uint32_t kvmmu_make_spte_fast(const struct kvmmu_cfg *cfg, uint64_t pfn, uint32_t level,
                              uint32_t pte_access, uint32_t mkflags, uint64_t *spte)
{
    const uint32_t r = kvmmu_make_spte(cfg, pfn, 0, level, pte_access,
                                       mkflags | KVMMU_MK_OLD_DEFAULT, KVMMU_MEMTYPE_AUTO, spte);
    return (r & 0xFF) ? KVMMU_MKF_ERROR : r >> 8;
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


#if defined(KVMMU_HAVE_STREAM)
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

#ifdef KVMMU_HAVE_AVX512
/*
 * The table path of make_spte_batch with AVX-512: eight SPTEs per step, the table index
 * (level > 1, access, flags) built in 32-bit lanes, entries fetched with one gather.  The
 * range checks accumulate (pfn bits outside the mask, the largest level - 1 and access);
 * returns non-zero if any input broke a rule (the caller then finds it).
 */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static uint64_t
mk_table_avx512(const uint64_t *tab, const uint64_t *pfn, const uint8_t *level, uint32_t level_scalar,
                const uint8_t *acc, uint32_t acc_scalar, const uint8_t *mk, uint64_t *out, size_t n,
                uint64_t pfn_bad, size_t *done, bool stream)
{
    const __m256i one = _mm256_set1_epi32(1), seven = _mm256_set1_epi32(7);
    const __m512i badm = _mm512_set1_epi64((long long)pfn_bad);
    const __m256i l1_s = _mm256_set1_epi32((int)(level_scalar - 1u));
    const __m256i ac_s = _mm256_set1_epi32((int)acc_scalar);
    __m512i bad = _mm512_setzero_si512();
    __m256i l1_max = level ? _mm256_setzero_si256() : l1_s, ac_max = acc ? _mm256_setzero_si256() : ac_s;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m512i p = _mm512_loadu_si512(pfn + i);
        __m256i l1 = l1_s, ac = ac_s, m = _mm256_setzero_si256();
        if (level)
            l1 = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(level + i))), one);
        if (acc)
            ac = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(acc + i)));
        if (mk)
            m = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(mk + i)));
        l1_max = _mm256_max_epu32(l1_max, l1);             /* level 0 wraps to 0xFFFFFFFF */
        ac_max = _mm256_max_epu32(ac_max, ac);
        bad = _mm512_ternarylogic_epi64(bad, p, badm, 0xF8);      /* bad | (p & badm) */
        /* index = (level > 1) << 11 | (access & 7) << 8 | flags, always inside the table */
        const __m256i k = _mm256_or_si256(_mm256_or_si256(_mm256_slli_epi32(_mm256_min_epu32(l1, one), 11),
                                                          _mm256_slli_epi32(_mm256_and_si256(ac, seven), 8)), m);
        const __m512i t = _mm512_i32gather_epi64(k, (const void *)tab, 8);
        const __m512i r = _mm512_or_si512(t, _mm512_slli_epi64(p, 12));
        if (stream)
            _mm512_stream_si512((void *)(out + i), r);    /* out + i is 64-byte aligned */
        else
            _mm512_storeu_si512(out + i, r);
    }
    if (stream)
        _mm_sfence();
    *done = i;
    const __mmask8 lbad = _mm256_cmpgt_epu32_mask(l1_max, _mm256_set1_epi32(4));
    const __mmask8 abad = _mm256_cmpgt_epu32_mask(ac_max, seven);
    return (uint64_t)(lbad | abad) | (uint64_t)_mm512_test_epi64_mask(bad, bad);
}
#endif

/* The arguments of kvmmu_make_spte_batch: an array, or NULL and the scalar used for all. */
struct mk_args {
    const uint64_t *pfn, *old;
    const uint8_t *level, *acc, *mk, *mt;
    uint64_t old_s;
    uint32_t level_s, acc_s, mk_s, mt_s;
    uint64_t *out;
    uint8_t *wrprot;
    size_t n;
};

/* Every input but the pfn is shared: build the template once, OR the pfns in. */
static size_t mk_batch_shared(const struct kvmmu_cfg *c, const struct mk_args *a, int *err)
{
    const uint64_t *restrict pfn = a->pfn;
    uint64_t *restrict out = a->out;
    const uint64_t pfn_bad = ~(c->base_addr_mask >> 12);
    const size_t n = a->n;
    int e = check_inputs(c, 0, a->level_s, a->acc_s, a->mk_s, a->mt_s);
    if (e) {
        *err = e;
        return 1;
    }
    bool wp;
    const uint64_t t = make_spte_nopfn(c, a->old_s, a->level_s, a->acc_s, a->mk_s, a->mt_s, &wp);
    uint64_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t p = pfn[i];
        bad |= p & pfn_bad;
        out[i] = t | (p << 12);
    }
    if (a->wrprot)
        memset(a->wrprot, wp, n);
    if (KVMMU_UNLIKELY(bad))
        return first_bad_input(c, pfn, NULL, a->level_s, NULL, a->acc_s, n, err);
    return 0;
}

typedef uint64_t mk_table_kernel(const uint64_t *tab, const uint64_t *pfn, const uint8_t *level,
                                 uint32_t level_scalar, const uint8_t *acc, uint32_t acc_scalar,
                                 const uint8_t *mk, uint64_t *out, size_t n, uint64_t pfn_bad,
                                 size_t *done, bool stream);

/* The vector part of mk_batch_table: the widest gather kernel the ISA cap allows takes the
 * elements [*head, *end) (huge outputs: streaming stores from the first element aligned to its
 * vector width); returns the OR of their bad-input bits.  No kernel: *head = *end = 0. */
static uint64_t mk_table_vector(const struct kvmmu_cfg *c, const struct mk_args *a, const uint64_t *tab,
                                uint64_t pfn_bad, size_t *head, size_t *end)
{
    mk_table_kernel *kernel = NULL;
    uintptr_t width = 0;
    *head = *end = 0;
    if (a->wrprot)
        return 0;
#ifdef KVMMU_HAVE_AVX512
    if (kvmmu_avx512_ok(c->isa)) {
        kernel = mk_table_avx512;
        width = 64;
    }
#endif
#ifdef KVMMU_HAVE_AVX2_GATHER
    if (!kernel && kvmmu_avx2_ok(c->isa)) {
        kernel = mk_table_avx2;
        width = 32;
    }
#endif
    if (!kernel)
        return 0;
    const size_t n = a->n;
    const bool stream = (uint64_t)n * 8 >= KVMMU_STREAM_MIN_BYTES && !((uintptr_t)a->out & 7);
    size_t h = stream ? ((width - ((uintptr_t)a->out & (width - 1))) & (width - 1)) / 8 : 0;
    if (h > n)
        h = n;
    size_t done = 0;
    const uint64_t bad = kernel(tab, a->pfn + h, a->level ? a->level + h : NULL, a->level_s,
                                a->acc ? a->acc + h : NULL, a->acc_s, a->mk ? a->mk + h : NULL,
                                a->out + h, n - h, pfn_bad, &done, stream);
    *head = h;
    *end = h + done;
    return bad;
}

/* Only (level, access, flags) vary: tabulate make_spte without the pfn once, then look up
 * (four at a time with an AVX2 gather when the ISA cap allows). */
static size_t mk_batch_table(const struct kvmmu_cfg *c, const struct mk_args *a, int *err)
{
    const uint64_t *restrict pfn = a->pfn;
    uint64_t *restrict out = a->out;
    const uint64_t pfn_bad = ~(c->base_addr_mask >> 12);
    const size_t n = a->n;
    uint64_t tab[MK_TABLE_SIZE];
    uint8_t tab_wp[MK_TABLE_SIZE];
    for (uint32_t k = 0; k < MK_TABLE_SIZE; k++) {
        bool wp;
        tab[k] = make_spte_nopfn(c, a->old_s, k / 2048 ? 2 : 1, (k / 256) % 8,
                                 (k % 256) | a->mk_s, a->mt_s, &wp);
        tab_wp[k] = wp;
    }
    size_t head = 0, end = 0;
    uint64_t bad = mk_table_vector(c, a, tab, pfn_bad, &head, &end);
    for (size_t i = 0; i < n; i++) {
        if (i == head)
            i = end > head ? end : head;
        if (i >= n)
            break;
        uint64_t p = pfn[i];
        uint32_t l1 = (a->level ? a->level[i] : a->level_s) - 1u;
        uint32_t ac = a->acc ? a->acc[i] : a->acc_s;
        uint32_t mk = a->mk ? a->mk[i] : 0u;
        bad |= (p & pfn_bad) | (uint64_t)(l1 > 4) | (uint64_t)(ac > 7);
        uint32_t k = ((l1 > 4 ? 0 : (l1 != 0)) * 8 + (ac & 7)) * 256 + mk;
        out[i] = tab[k] | (p << 12);
        if (a->wrprot)
            a->wrprot[i] = tab_wp[k];
    }
    if (KVMMU_UNLIKELY(bad))
        return first_bad_input(c, pfn, a->level, a->level_s, a->acc, a->acc_s, n, err);
    return 0;
}

/* Anything may vary per element (old SPTE, memtype): make_spte for each. */
static size_t mk_batch_general(const struct kvmmu_cfg *c, const struct mk_args *a, int *err)
{
    for (size_t i = 0; i < a->n; i++) {
        uint64_t p = a->pfn[i];
        uint32_t lv = a->level ? a->level[i] : a->level_s;
        uint32_t ac = a->acc ? a->acc[i] : a->acc_s;
        uint32_t mk = (a->mk ? a->mk[i] : 0u) | a->mk_s;
        uint32_t mt = a->mt ? a->mt[i] : a->mt_s;
        int e = check_inputs(c, p, lv, ac, mk, mt);
        if (KVMMU_UNLIKELY(e)) {
            *err = e;
            return i + 1;
        }
        bool wp;
        a->out[i] = make_spte_nopfn(c, a->old ? a->old[i] : a->old_s, lv, ac, mk, mt, &wp) | (p << 12);
        if (a->wrprot)
            a->wrprot[i] = wp;
    }
    return 0;
}

KVMMU_HOT size_t kvmmu_make_spte_batch(const struct kvmmu_cfg *cfg, const uint64_t *restrict pfn,
                             const uint64_t *restrict old_spte, uint64_t old_spte_scalar,
                             const uint8_t *restrict level, uint32_t level_scalar,
                             const uint8_t *restrict pte_access, uint32_t pte_access_scalar,
                             const uint8_t *restrict mkflags, uint32_t mkflags_scalar,
                             const uint8_t *restrict memtype, uint32_t memtype_scalar,
                             uint64_t *restrict out, uint8_t *restrict wrprot, size_t n, int *err)
{
    const struct kvmmu_cfg cl = *cfg;     /* a local copy: stores through out cannot alias it */
    const struct mk_args a = {
        .pfn = pfn, .old = old_spte, .level = level, .acc = pte_access, .mk = mkflags,
        .mt = memtype, .old_s = old_spte_scalar, .level_s = level_scalar,
        .acc_s = pte_access_scalar, .mk_s = mkflags_scalar, .mt_s = memtype_scalar,
        .out = out, .wrprot = wrprot, .n = n,
    };
    if (!old_spte && !level && !pte_access && !mkflags && !memtype)
        return mk_batch_shared(&cl, &a, err);
    if (memtype_scalar != KVMMU_MEMTYPE_AUTO && (memtype_scalar & ~(uint32_t)EPT_MT_FIELD)) {
        *err = KVMMU_E_MEMTYPE;
        return 1;
    }
    if (!old_spte && !memtype && n >= MK_TABLE_MIN)
        return mk_batch_table(&cl, &a, err);
    return mk_batch_general(&cl, &a, err);
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

static inline int small_check(const struct kvmmu_cfg *c, uint64_t huge, uint32_t child_level,
                              uint32_t index)
{
    if (!sp_is_shadow_present_pte(c, huge, 1))
        return KVMMU_E_NOT_PRESENT;
    if (!sp_is_large_pte(c, huge, 1))
        return KVMMU_E_NOT_HUGE;
    if (index > 511)
        return KVMMU_E_INDEX;
    uint64_t pfn = (huge & c->base_addr_mask) >> 12;
    if (pfn & (pages_per_hpage(child_level + 1) - 1))
        return KVMMU_E_PFN;
    return 0;
}

/* nx_huge of the checked scalar forms: 0, 1, or KVMMU_NX_DEFAULT (the configuration's). */
static inline bool nx_arg(const struct kvmmu_cfg *c, uint32_t nx)
{
    return nx == KVMMU_NX_DEFAULT ? (c->flags & KVMMU_F_NX_HUGE_PAGES) != 0 : nx != 0;
}

uint64_t kvmmu_make_small_spte_checked(const struct kvmmu_cfg *cfg, uint64_t huge_spte,
                                       uint32_t child_level, uint32_t role_access, uint32_t index,
                                       uint32_t nx)
{
    if (child_level < 1 || child_level > 4 || role_access > 7 || nx > KVMMU_NX_DEFAULT ||
        small_check(cfg, huge_spte, child_level, index))
        return 0;
    return small_spte(cfg, huge_spte, child_level, role_access, index, nx_arg(cfg, nx));
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

uint64_t kvmmu_make_huge_spte_checked(const struct kvmmu_cfg *cfg, uint64_t small_spte,
                                      uint32_t level, uint32_t nx)
{
    if (level < 2 || level > 3 || nx > KVMMU_NX_DEFAULT ||
        !sp_is_shadow_present_pte(cfg, small_spte, 1))
        return 0;
    return huge_spte(cfg, small_spte, level, nx_arg(cfg, nx));
}

size_t kvmmu_make_huge_spte_batch(const struct kvmmu_cfg *cfg, const uint64_t *small_spte,
                                  uint32_t level, bool nx_huge, uint64_t *out, size_t n, int *err)
{
    for (size_t i = 0; i < n; i++) {
        if (KVMMU_UNLIKELY(!sp_is_shadow_present_pte(cfg, small_spte[i], 1))) {
            *err = KVMMU_E_NOT_PRESENT;
            return i + 1;
        }
        out[i] = huge_spte(cfg, small_spte[i], level, nx_huge);
    }
    return 0;
}

/* ------------------------------------------------------------ batch queries */

/* 0, or index + 1 of the first level outside 1..5 (with *err set). */
static size_t first_bad_level(const uint8_t *level, size_t n, int *err)
{
    for (size_t i = 0; i < n; i++) {
        if (KVMMU_UNLIKELY(level[i] < 1 || level[i] > 5)) {
            *err = KVMMU_E_LEVEL;
            return i + 1;
        }
    }
    return 0;
}

/* One loop per predicate: spte_lane() with a constant predicate keeps only its rows, and
 * its era selectors are branches on loop invariants that gcc unswitches (build_core.py). */
#define PRED_LOOP(id)                                                                   \
    do {                                                                                \
        if (level) {                                                                    \
            for (size_t i = 0; i < n; i++)                                              \
                out[i] = (uint8_t)spte_lane(c, spte[i], level[i], (id));                \
        } else {                                                                        \
            for (size_t i = 0; i < n; i++)                                              \
                out[i] = (uint8_t)spte_lane(c, spte[i], level_scalar, (id));            \
        }                                                                               \
    } while (0)

#ifdef KVMMU_HAVE_AVX512
__attribute__((target("avx512f,avx512bw,avx512dq"))) static void
pred_avx512(const struct kvmmu_cfg *c, int p, const uint64_t *restrict spte, uint32_t level,
            uint8_t *restrict out, size_t n);
#endif
/* needs_level of each predicate id */
static const uint8_t pred_needs_level[KVMMU_P_COUNT] = {
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) [(id)] = (lv),
#include "spte_rules.h"
};

/* On AVX-512 CPUs pred_avx512() does all but the last n % 64 and the per-element levels of
 * the level rules, so these loops get the AVX2 clone there: no AVX-512 clone of them. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(PYKVMMU_NO_CLONES)
#define PRED_HOT __attribute__((target_clones("avx2", "default")))
#else
#define PRED_HOT
#endif

PRED_HOT size_t kvmmu_spte_pred_batch(const struct kvmmu_cfg *cfg, int p,
                                       const uint64_t *restrict spte,
                                       const uint8_t *restrict level, uint32_t level_scalar,
                                       uint8_t *restrict out, size_t n, int *err)
{
    const struct kvmmu_cfg cl = *cfg;     /* a local copy: stores through out cannot alias it */
    const struct kvmmu_cfg *c = &cl;

    if (p < 0 || p >= KVMMU_P_COUNT) {
        *err = KVMMU_E_FLAGS;
        return 1;
    }
    if (level) {
        const size_t bad = first_bad_level(level, n, err);
        if (bad)
            return bad;
    } else if (level_scalar < 1 || level_scalar > 5) {
        *err = KVMMU_E_LEVEL;
        return n ? 1 : 0;
    }
#ifdef KVMMU_HAVE_AVX512
    /* 64 SPTEs per step in AVX-512 (a level array only where the rule ignores the level),
     * the last n % 64 in the loops below. */
    if (kvmmu_avx512_ok(c->isa) && (!level || !pred_needs_level[p])) {
        const size_t body = n & ~(size_t)63;
        pred_avx512(c, p, spte, level ? 1 : level_scalar, out, body);
        spte += body;
        out += body;
        level = level ? level + body : NULL;
        n -= body;
    }
#endif
    switch (p) {
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) \
    case (id): PRED_LOOP(id); break;
#include "spte_rules.h"
    default:
        break;
    }
    return 0;
}
#undef PRED_LOOP

KVMMU_HOT size_t kvmmu_spte_to_pfn_batch(const struct kvmmu_cfg *cfg, const uint64_t *spte,
                               uint64_t *out, size_t n)
{
    uint64_t m = cfg->base_addr_mask;
    for (size_t i = 0; i < n; i++)
        out[i] = (spte[i] & m) >> 12;
    return 0;
}

/* The record words of a decode that do not depend on the SPTE. */
struct decode_consts {
    uint64_t eptm, base_mask, user, npv, lvl;
};

static inline struct decode_consts decode_setup(const struct kvmmu_cfg *c, uint32_t level)
{
    const struct decode_consts d = {
        .eptm = (c->flags & KVMMU_F_EPT) ? ~UINT64_C(0) : 0, .base_mask = c->base_addr_mask,
        .user = c->user_mask, .npv = c->nonpresent_value, .lvl = (uint64_t)level << 48,
    };
    return d;
}

/* Word 2 of a record (kind, AD type, memtype, IPAT, access, saved R/X, level) from the
 * halves lo, hi of s and its frozen, MMIO, present, executable and writable lanes (0 or 1):
 * its low half in *w2l, its high half in *w2h (32-bit arithmetic: 4 SPTEs per SSE2 vector). */
static inline __attribute__((always_inline)) void
decode_word2_halves(const struct decode_consts *d, uint32_t lo, uint32_t hi, uint32_t fr, uint32_t mm,
                    uint32_t pr, uint32_t ex, uint32_t wr, uint32_t *w2l, uint32_t *w2h)
{
    const uint32_t np = ((lo ^ (uint32_t)d->npv) | (hi ^ (uint32_t)(d->npv >> 32))) == 0;
    const uint32_t eptm = (uint32_t)d->eptm;
    /* frozen > mmio > present > non-present value > other, as mask selects */
    uint32_t kind = KVMMU_KIND_OTHER & (np - 1);
    kind = (kind & (pr - 1)) | (KVMMU_KIND_PRESENT & (0 - pr));
    kind = (kind & (mm - 1)) | (KVMMU_KIND_MMIO & (0 - mm));
    kind = (kind & (fr - 1)) | (KVMMU_KIND_FROZEN & (0 - fr));
    const uint32_t user = ((lo & (uint32_t)d->user) | (hi & (uint32_t)(d->user >> 32))) != 0;
    const uint32_t acc = ex | (wr << 1) | (user << 2);
    *w2l = kind | (((hi >> (52 - 32)) & 3) << 8) | ((((lo >> 3) & 7) & eptm) << 16) |
           ((((lo >> 6) & 1) & eptm) << 24);
    *w2h = acc | (((hi >> (ACC_TRACK_SHIFT - 32)) & (uint32_t)ACC_TRACK_SAVED) << 8) |
           (uint32_t)(d->lvl >> 32);
}

/* decode_word2_halves() from s and its predicate mask mk. */
static inline __attribute__((always_inline)) uint64_t
decode_word2(const struct decode_consts *d, uint64_t s, uint64_t mk)
{
#define MKB(NAME) ((uint32_t)(mk >> KVMMU_P_##NAME) & 1)
    uint32_t l, h;
    decode_word2_halves(d, (uint32_t)s, (uint32_t)(s >> 32), MKB(FROZEN), MKB(MMIO), MKB(SHADOW_PRESENT),
                        MKB(EXECUTABLE), MKB(WRITABLE), &l, &h);
#undef MKB
    return l | (uint64_t)h << 32;
}

/* Predicate bit k of b (0..255) becomes byte k (0 or 1) of the word. */
static inline uint64_t spread_bits(uint64_t b)
{
    return ((((b * UINT64_C(0x0101010101010101)) & UINT64_C(0x8040201008040201)) +
             UINT64_C(0x7F7F7F7F7F7F7F7F)) >> 7) & UINT64_C(0x0101010101010101);
}

/*
 * The lane language once more, for the portable decode: a lane is a uint32_t 0 or 1 and the
 * SPTE its halves lo, hi, so a loop keeps 4 SPTEs per SSE2 vector (16 per AVX-512 one) and
 * tests with 32-bit compares (SSE2 has no 64-bit compare: pcmpeqq is SSE4.1).  BITIDX reads
 * the halves ohl, ohh of 1 << (s & 63), computed beforehand (SSE2 has no per-lane variable
 * shift).
 */
#define LO32(m) ((uint32_t)(m))
#define HI32(m) ((uint32_t)((uint64_t)(m) >> 32))
#define TEST(m) ((uint32_t)(((lo & LO32(m)) | (hi & HI32(m))) != 0))
#define EQ(m, v) ((uint32_t)((((lo & LO32(m)) ^ LO32(v)) | ((hi & HI32(m)) ^ HI32(v))) == 0))
#define BITIDX(t) ((uint32_t)(((ohl & LO32(t)) | (ohh & HI32(t))) != 0))
#define TEST_SEL(l, m1, m0)                                                               \
    ((uint32_t)(((lo & ((LO32(m1) & (0u - (l))) | (LO32(m0) & ((l) - 1u)))) |              \
                 (hi & ((HI32(m1) & (0u - (l))) | (HI32(m0) & ((l) - 1u))))) != 0))
#define NOT(a) ((a) ^ 1u)
#define ONES_IF(k) ((uint32_t)((k) != 0))
#define SEL(k, a, b) (((a) & (0u - ONES_IF(k))) | ((b) & (ONES_IF(k) - 1u)))
/* The predicate words of a record as six 32-bit halves (byte KVMMU_P_<NAME> of the 24 is that
 * predicate, 0 or 1), plus word 2's halves. */
static inline __attribute__((always_inline)) void
decode_lanes32_era(const struct kvmmu_cfg *c, uint32_t era, uint32_t level, const struct decode_consts *d,
                   uint32_t lo, uint32_t hi, uint32_t ohl, uint32_t ohh, uint32_t w[8])
{
#define KVMMU_SPTE_TERM(var, expr) const uint32_t var = (expr);
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) const uint32_t field = (expr);
#include "spte_rules.h"
    w[2] = w[3] = w[4] = w[5] = w[6] = w[7] = 0;
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) \
    w[2 + ((id) >> 2)] |= field << (8 * ((id) & 3));
#include "spte_rules.h"
    decode_word2_halves(d, lo, hi, frozen, mmio, shadow_present, executable, writable, &w[0], &w[1]);
}
#include "spte_lang_end.h"
#undef LO32
#undef HI32

/* Records per block of the portable decode: small blocks interleave the burst of record
 * stores with the next block's arithmetic (256: 1.5x slower at 16M records). */
#define DECODE_BLOCK 64

/* Records o[0..m) from the SPTEs sp and words 2-5 of each as (low, high) 32-bit halves
 * q[k][2j], q[k][2j + 1] (word 2 + k): words 0 and 1 (the SPTE and its pfn) computed here. */
static inline __attribute__((always_inline)) void
interleave_records(uint64_t *restrict o, const uint64_t *restrict sp,
                   const uint32_t (*restrict q)[2 * DECODE_BLOCK], uint64_t base_mask, size_t m)
{
    for (size_t j = 0; j < m; j++) {
        const uint64_t s = sp[j];
        o[6 * j] = s;
        o[6 * j + 1] = (s & base_mask) >> 12;
        for (int k = 0; k < 4; k++)
            memcpy(o + 6 * j + 2 + k, &q[k][2 * j], 8);
    }
}

/*
 * Uniform-level decode, portable: per block of DECODE_BLOCK, a vectorisable pass computing
 * words 2-5 of each record as 32-bit halves (decode_lanes32_era(): the predicate bytes
 * straight from the lanes, no bit mask to spread, no table gathers), each word's halves
 * stored as a pair in its own array (two-lane interleaves, no widening to 64 bits), then the
 * records by interleave_records().  (One pass storing records directly does not vectorise:
 * 2-5x slower; words 2-5 as one group of eight halves per record are stored lane by lane.)
 * Huge outputs on AVX2 and AVX-512 CPUs go through decode_avx2() / decode_avx512(), which
 * stream.
 */
static inline __attribute__((always_inline)) void
decode_blocks(const struct kvmmu_cfg *c, uint32_t era, uint32_t level, const struct decode_consts *d,
              const uint64_t *restrict spte, struct kvmmu_spte_info *restrict out, size_t n)
{
    uint64_t oh[DECODE_BLOCK];
    uint32_t q[4][2 * DECODE_BLOCK];
    const struct decode_consts dl = *d;
    uint64_t one = 1;
#ifdef __GNUC__
    __asm__("" : "+r"(one));   /* opaque: gcc 12 vectorises one << k, not 1 << k */
#endif
    for (size_t base = 0; base < n; base += DECODE_BLOCK) {
        const size_t m = n - base < DECODE_BLOCK ? n - base : DECODE_BLOCK;
        const uint64_t *sp = spte + base;
        for (size_t j = 0; j < m; j++)
            oh[j] = one << (sp[j] & 63);
        for (size_t j = 0; j < m; j++) {
            const uint64_t s = sp[j];
            uint32_t w[8];
            decode_lanes32_era(c, era, level, &dl, (uint32_t)s, (uint32_t)(s >> 32), (uint32_t)oh[j],
                               (uint32_t)(oh[j] >> 32), w);
            for (int k = 0; k < 4; k++) {
                q[k][2 * j] = w[2 * k];
                q[k][2 * j + 1] = w[2 * k + 1];
            }
        }
        interleave_records((uint64_t *)(void *)(out + base), sp, (const uint32_t (*)[2 * DECODE_BLOCK])q,
                           dl.base_mask, m);
    }
}

#ifdef KVMMU_HAVE_STREAM
#define AVX2_DECODE __attribute__((target("avx2")))

/* The lane language of spte_rules.h in AVX2 registers: a lane is a 64-bit word of all ones
 * (true) or zero for each of the four SPTEs of s; & and | are the vector operators. */
#define B(x) _mm256_set1_epi64x((long long)(x))
#define NOT(a) _mm256_xor_si256((a), B(-1))
#define TEST(m) NOT(_mm256_cmpeq_epi64(_mm256_and_si256(s, B(m)), _mm256_setzero_si256()))
#define EQ(m, v) _mm256_cmpeq_epi64(_mm256_and_si256(s, B(m)), B(v))
#define BITIDX(t) NOT(_mm256_cmpeq_epi64(_mm256_and_si256(_mm256_srlv_epi64(B(t), \
                      _mm256_and_si256(s, B(63))), B(1)), _mm256_setzero_si256()))
#define TEST_SEL(l, m1, m0) NOT(_mm256_cmpeq_epi64(_mm256_and_si256(s, \
                      _mm256_blendv_epi8(B(m0), B(m1), (l))), _mm256_setzero_si256()))
#define ONES_IF(k) B(0 - (uint64_t)((k) != 0))     /* no branch: nothing to unswitch */
#define SEL(k, a, b) (((a) & ONES_IF(k)) | _mm256_andnot_si256(ONES_IF(k), (b)))   /* no branch */

/* decode_word2() of four SPTEs from their predicate lanes. */
AVX2_DECODE static inline __attribute__((always_inline)) __m256i
decode_word2_256(const struct decode_consts *d, __m256i s, __m256i present, __m256i mmio,
                 __m256i frozen, __m256i executable, __m256i writable)
{
    /* frozen > mmio > present > non-present value > other */
    __m256i f2 = _mm256_blendv_epi8(B(d->lvl | KVMMU_KIND_OTHER), B(d->lvl | KVMMU_KIND_NONPRESENT),
                                    _mm256_cmpeq_epi64(s, B(d->npv)));
    f2 = _mm256_blendv_epi8(f2, B(d->lvl | KVMMU_KIND_PRESENT), present);
    f2 = _mm256_blendv_epi8(f2, B(d->lvl | KVMMU_KIND_MMIO), mmio);
    f2 = _mm256_blendv_epi8(f2, B(d->lvl | KVMMU_KIND_FROZEN), frozen);
    f2 |= _mm256_and_si256(_mm256_srli_epi64(s, 52 - 8), B(UINT64_C(3) << 8));
    f2 |= _mm256_and_si256(_mm256_slli_epi64(s, 13), B(d->eptm & (UINT64_C(7) << 16)));
    f2 |= _mm256_and_si256(_mm256_slli_epi64(s, 18), B(d->eptm & (UINT64_C(1) << 24)));
    f2 |= _mm256_and_si256(_mm256_srli_epi64(s, ACC_TRACK_SHIFT - 40), B(ACC_TRACK_SAVED << 40));
    f2 |= _mm256_and_si256(executable, B((uint64_t)ACC_EXEC << 32));
    f2 |= _mm256_and_si256(writable, B((uint64_t)ACC_WRITE << 32));
    return f2 | _mm256_and_si256(TEST(d->user), B((uint64_t)ACC_USER << 32));
}

/* The predicate lanes of the four SPTEs in s as predicate words q[0..2] (byte id % 8 of
 * q[id / 8], 0 or 1); returns their word 2.  A lane is all ones or zero, so one word blend
 * with an immediate puts it into word (id % 8) / 2 of h[2 * (id / 8) + id % 2] (even and odd
 * ids apart); per word, a byte blend of the two and an AND then give the bytes. */
AVX2_DECODE static inline __attribute__((always_inline)) __m256i
spte_lanes256(const struct kvmmu_cfg *c, uint32_t era, __m256i s, uint32_t level,
              const struct decode_consts *d, __m256i *q)
{
    __m256i h[6];
    for (int i = 0; i < 6; i++)
        h[i] = _mm256_setzero_si256();
#define KVMMU_SPTE_TERM(var, expr) const __m256i var = (expr);
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr)             \
    const __m256i field = (expr);                                                 \
    h[2 * ((id) / 8) + (id) % 2] =                                                \
        _mm256_blend_epi16(h[2 * ((id) / 8) + (id) % 2], field, 0x11 << ((id) % 8 / 2));
#include "spte_rules.h"
    for (int i = 0; i < 3; i++)
        q[i] = _mm256_and_si256(_mm256_blendv_epi8(h[2 * i], h[2 * i + 1], B(UINT64_C(0xFF00FF00FF00FF00))),
                                B(UINT64_C(0x0101010101010101)));
    return decode_word2_256(d, s, shadow_present, mmio, frozen, executable, writable);
}
#include "spte_lang_end.h"

/*
 * Uniform-level decode of four SPTEs per step in AVX2 registers (spte_lanes256); the six
 * words of the four records, (spte, pfn, fields, pred[0:8], pred[8:16], pred[16:24]), are
 * interleaved by 64-bit unpacks and 128-bit lane permutes.  n must be a multiple of 4;
 * streams when nt (dst 32-byte aligned).
 */
AVX2_DECODE static inline __attribute__((always_inline)) void
decode_avx2_era(const struct kvmmu_cfg *cfg, uint32_t era, uint32_t level, const struct decode_consts *dc,
                const uint64_t *restrict spte, uint64_t *restrict dst, size_t n, bool nt)
{
    /* local copies: the stores through dst cannot change them, nothing is reloaded per step */
    const struct kvmmu_cfg cl = *cfg, *c = &cl;
    const struct decode_consts dl = *dc, *d = &dl;
    const __m256i base_mask = _mm256_set1_epi64x((long long)d->base_mask);
    for (size_t j = 0; j < n; j += 4) {
        const __m256i s = _mm256_loadu_si256((const __m256i *)(const void *)(spte + j));
        __m256i q[3];
        const __m256i f2 = spte_lanes256(c, era, s, level, d, q);
        const __m256i f1 = _mm256_srli_epi64(_mm256_and_si256(s, base_mask), 12);
        /* lo: records 0 and 2, hi: records 1 and 3, two words each per 128-bit half */
        const __m256i a_lo = _mm256_unpacklo_epi64(s, f1), a_hi = _mm256_unpackhi_epi64(s, f1);
        const __m256i b_lo = _mm256_unpacklo_epi64(f2, q[0]), b_hi = _mm256_unpackhi_epi64(f2, q[0]);
        const __m256i c_lo = _mm256_unpacklo_epi64(q[1], q[2]), c_hi = _mm256_unpackhi_epi64(q[1], q[2]);
        const __m256i v[6] = {
            _mm256_permute2x128_si256(a_lo, b_lo, 0x20), _mm256_permute2x128_si256(c_lo, a_hi, 0x20),
            _mm256_permute2x128_si256(b_hi, c_hi, 0x20), _mm256_permute2x128_si256(a_lo, b_lo, 0x31),
            _mm256_permute2x128_si256(c_lo, a_hi, 0x31), _mm256_permute2x128_si256(b_hi, c_hi, 0x31),
        };
        __m256i *o = (__m256i *)(void *)(dst + 6 * j);
        if (nt) {
            for (int i = 0; i < 6; i++)
                _mm256_stream_si256(o + i, v[i]);
        } else {
            for (int i = 0; i < 6; i++)
                _mm256_storeu_si256(o + i, v[i]);
        }
    }
    if (nt)
        _mm_sfence();
}

/* decode_avx2_era() compiled once per era variant, chosen once per batch. */
AVX2_DECODE static void
decode_avx2(const struct kvmmu_cfg *c, uint32_t level, const struct decode_consts *d,
            const uint64_t *restrict spte, uint64_t *restrict dst, size_t n, bool nt)
{
    KVMMU_ERA_SPECIALISE(c->rules, decode_avx2_era(c, era, level, d, spte, dst, n, nt))
}
#endif

#ifdef KVMMU_HAVE_AVX512
#define AVX512_DECODE __attribute__((target("avx512f,avx512bw,avx512dq")))

/* The lane language of spte_rules.h as AVX-512 k-masks: one bit per SPTE of the vector s. */
#define B(x) _mm512_set1_epi64((long long)(x))
#define TEST(m) _mm512_test_epi64_mask(s, B(m))
#define EQ(m, v) _mm512_cmpeq_epi64_mask(_mm512_and_si512(s, B(m)), B(v))
#define BITIDX(t) _mm512_test_epi64_mask(_mm512_srlv_epi64(B(t), _mm512_and_si512(s, B(63))), B(1))
#define TEST_SEL(l, m1, m0) _mm512_test_epi64_mask(s, _mm512_mask_blend_epi64((l), B(m0), B(m1)))
#define NOT(a) ((__mmask8)~(a))
#define ONES_IF(k) ((__mmask8)(0 - (unsigned)((k) != 0)))     /* no branch: nothing to unswitch */
#define SEL(k, a, b) ((__mmask8)(((a) & ONES_IF(k)) | ((b) & (__mmask8)~ONES_IF(k))))

/* decode_word2() for eight SPTEs, from their predicate k-masks. */
AVX512_DECODE static inline __attribute__((always_inline)) __m512i
decode_word2_512(const struct decode_consts *d, __m512i s, __mmask8 present, __mmask8 mmio,
                 __mmask8 frozen, __mmask8 executable, __mmask8 writable)
{
    /* frozen > mmio > present > non-present value > other */
    __m512i f2 = _mm512_mask_mov_epi64(B(d->lvl | KVMMU_KIND_OTHER), _mm512_cmpeq_epi64_mask(s, B(d->npv)),
                                       B(d->lvl | KVMMU_KIND_NONPRESENT));
    f2 = _mm512_mask_mov_epi64(f2, present, B(d->lvl | KVMMU_KIND_PRESENT));
    f2 = _mm512_mask_mov_epi64(f2, mmio, B(d->lvl | KVMMU_KIND_MMIO));
    f2 = _mm512_mask_mov_epi64(f2, frozen, B(d->lvl | KVMMU_KIND_FROZEN));
    f2 = _mm512_ternarylogic_epi64(f2, _mm512_srli_epi64(s, 52 - 8), B(UINT64_C(3) << 8), 0xF8);
    f2 = _mm512_ternarylogic_epi64(f2, _mm512_slli_epi64(s, 13), B(d->eptm & (UINT64_C(7) << 16)), 0xF8);
    f2 = _mm512_ternarylogic_epi64(f2, _mm512_slli_epi64(s, 18), B(d->eptm & (UINT64_C(1) << 24)), 0xF8);
    f2 = _mm512_ternarylogic_epi64(f2, _mm512_srli_epi64(s, ACC_TRACK_SHIFT - 40),
                                   B(ACC_TRACK_SAVED << 40), 0xF8);
    f2 = _mm512_mask_or_epi64(f2, executable, f2, B((uint64_t)ACC_EXEC << 32));
    f2 = _mm512_mask_or_epi64(f2, writable, f2, B((uint64_t)ACC_WRITE << 32));
    return _mm512_mask_or_epi64(f2, _mm512_test_epi64_mask(s, B(d->user)), f2, B((uint64_t)ACC_USER << 32));
}

/* The predicates of the eight SPTEs in s as k-masks, each put as byte id % 8 of w[id / 8]
 * (a general-purpose register: no vector operation per predicate); returns their word 2. */
AVX512_DECODE static inline __attribute__((always_inline)) __m512i
spte_lanes512(const struct kvmmu_cfg *c, uint32_t era, __m512i s, uint32_t level,
              const struct decode_consts *d, uint64_t *w)
{
#define KVMMU_SPTE_TERM(var, expr) const __mmask8 var = (__mmask8)(expr);
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr)              \
    const __mmask8 field = (__mmask8)(expr);                                       \
    w[(id) / 8] |= (uint64_t)field << (8 * ((id) % 8));
#include "spte_rules.h"
    return decode_word2_512(d, s, shadow_present, mmio, frozen, executable, writable);
}

/* The predicate words of eight records from w (spte_lanes512(): byte p = predicate p's
 * k-mask, bit r for record r): lane r of a broadcast tested against bit r of every byte
 * gives byte p of record r's word, 0 or 1 (three vector operations). */
AVX512_DECODE static inline __attribute__((always_inline)) __m512i
pred_word512(uint64_t w)
{
    const __m512i rbit = _mm512_set_epi64((long long)UINT64_C(0x8080808080808080), 0x4040404040404040,
                                          0x2020202020202020, 0x1010101010101010, 0x0808080808080808,
                                          0x0404040404040404, 0x0202020202020202, 0x0101010101010101);
    return _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(_mm512_set1_epi64((long long)w), rbit),
                                 _mm512_set1_epi8(1));
}

/* Predicate p (a constant at each use) of the eight SPTEs in s as a k-mask: only the rows
 * it depends on remain (with era a constant, only one side of each era selector). */
AVX512_DECODE static inline __attribute__((always_inline)) __mmask8
spte_lane512(const struct kvmmu_cfg *c, uint32_t era, __m512i s, uint32_t level, int p)
{
#define KVMMU_SPTE_TERM(var, expr) const __mmask8 var = (__mmask8)(expr);
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) const __mmask8 field = (__mmask8)(expr);
#include "spte_rules.h"
    switch (p) {
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) case (id): return field;
#include "spte_rules.h"
    default: return 0;
    }
}
#include "spte_lang_end.h"

/*
 * Uniform-level decode of eight SPTEs per step, all in registers: the predicates as k-masks
 * (spte_lanes512), gathered as the bytes of three general-purpose words and spread into
 * the predicate bytes by pred_word512() (no vector operation per predicate); the records
 * interleaved by 64-bit unpacks and two rounds of 128-bit shuffles (18 three-operand
 * shuffles, no index or blend constants).  n must be a multiple of 8; streams when nt (dst
 * 64-byte aligned).
 */
AVX512_DECODE static inline __attribute__((always_inline)) void
decode_avx512_era(const struct kvmmu_cfg *cfg, uint32_t era, uint32_t level, const struct decode_consts *dc,
              const uint64_t *restrict spte, uint64_t *restrict dst, size_t n, bool nt)
{
    /* local copies: the stores through dst cannot change them, nothing is reloaded per step */
    const struct kvmmu_cfg cl = *cfg, *c = &cl;
    const struct decode_consts dl = *dc, *d = &dl;
    const __m512i base_mask = _mm512_set1_epi64((long long)d->base_mask);

    for (size_t j = 0; j < n; j += 8) {
        const __m512i s = _mm512_loadu_si512(spte + j);
        uint64_t w[3] = {0, 0, 0};
        const __m512i f2 = spte_lanes512(c, era, s, level, d, w);
        const __m512i q[3] = {pred_word512(w[0]), pred_word512(w[1]), pred_word512(w[2])};
        const __m512i f1 = _mm512_srli_epi64(_mm512_and_si512(s, base_mask), 12);
        /* Record r is the 128-bit chunks A_r = (spte, pfn), B_r = (fields, pred[0:8]),
         * C_r = (pred[8:16], pred[16:24]); the unpacks give a_lo = A0 A2 A4 A6 and
         * a_hi = A1 A3 A5 A7 (likewise b, c); two rounds of 128-bit shuffles (lanes 0,2 of
         * each source: 0x88, lanes 1,3: 0xDD) order them A0 B0 C0 A1 | B1 C1 A2 B2 | ... */
        const __m512i a_lo = _mm512_unpacklo_epi64(s, f1), a_hi = _mm512_unpackhi_epi64(s, f1);
        const __m512i b_lo = _mm512_unpacklo_epi64(f2, q[0]), b_hi = _mm512_unpackhi_epi64(f2, q[0]);
        const __m512i c_lo = _mm512_unpacklo_epi64(q[1], q[2]), c_hi = _mm512_unpackhi_epi64(q[1], q[2]);
        const __m512i ab0 = _mm512_shuffle_i64x2(a_lo, b_lo, 0x88);   /* A0 A4 B0 B4 */
        const __m512i ab2 = _mm512_shuffle_i64x2(a_lo, b_lo, 0xDD);   /* A2 A6 B2 B6 */
        const __m512i ca0 = _mm512_shuffle_i64x2(c_lo, a_hi, 0x88);   /* C0 C4 A1 A5 */
        const __m512i ca2 = _mm512_shuffle_i64x2(c_lo, a_hi, 0xDD);   /* C2 C6 A3 A7 */
        const __m512i bc1 = _mm512_shuffle_i64x2(b_hi, c_hi, 0x88);   /* B1 B5 C1 C5 */
        const __m512i bc3 = _mm512_shuffle_i64x2(b_hi, c_hi, 0xDD);   /* B3 B7 C3 C7 */
        const __m512i v[6] = {
            _mm512_shuffle_i64x2(ab0, ca0, 0x88), _mm512_shuffle_i64x2(bc1, ab2, 0x88),
            _mm512_shuffle_i64x2(ca2, bc3, 0x88), _mm512_shuffle_i64x2(ab0, ca0, 0xDD),
            _mm512_shuffle_i64x2(bc1, ab2, 0xDD), _mm512_shuffle_i64x2(ca2, bc3, 0xDD),
        };
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

/* decode_avx512_era() compiled once per era variant, chosen once per batch. */
AVX512_DECODE static void
decode_avx512(const struct kvmmu_cfg *c, uint32_t level, const struct decode_consts *d,
              const uint64_t *restrict spte, uint64_t *restrict dst, size_t n, bool nt)
{
    KVMMU_ERA_SPECIALISE(c->rules, decode_avx512_era(c, era, level, d, spte, dst, n, nt))
}

/*
 * The lane language of spte_rules.h as vector lanes, for the one-predicate batch: a lane is
 * a __m512i whose bit VL_P is the truth for each of the eight SPTEs in s (the other bits are
 * don't-care).  A single-bit TEST is one rotate (none for bit VL_P), a row's logic is plain
 * vector AND/OR/NOT (ternary-logic instructions), and only the predicate becomes a k-mask
 * (PRED_VLANES says for which predicates).  VL_P = 52, the low AD-type bit, which several
 * rows test.  A test of several bits, t = s & m, gets t != 0 into bit 63 as t | (t + INT64_MAX),
 * then rotated to VL_P.
 */
#define VL_P 52
#define B(x) _mm512_set1_epi64((long long)(x))
/* bit b of s at bit VL_P */
AVX512_DECODE static inline __attribute__((always_inline)) __m512i vl_bit(__m512i s, unsigned b)
{
    if (__builtin_constant_p(b) && b == VL_P)
        return s;
    return _mm512_rolv_epi64(s, B((VL_P - b) & 63));
}
AVX512_DECODE static inline __attribute__((always_inline)) __m512i vl_nz(__m512i t)
{
    return _mm512_rol_epi64(_mm512_or_si512(t, _mm512_add_epi64(t, B(INT64_MAX))), (VL_P + 1) & 63);
}
/* (s & m) != 0; one rotate when m is a single bit (a constant, or a configuration mask:
 * the test on m is loop-invariant). */
AVX512_DECODE static inline __attribute__((always_inline)) __m512i vl_test(__m512i s, uint64_t m)
{
    if (m && !(m & (m - 1)))
        return vl_bit(s, (unsigned)__builtin_ctzll(m));
    return vl_nz(_mm512_and_si512(s, B(m)));
}
/* (s & m) == v; bit by bit for a constant m of at most two bits. */
AVX512_DECODE static inline __attribute__((always_inline)) __m512i vl_eq(__m512i s, uint64_t m, uint64_t v)
{
    if (v & ~m)
        return _mm512_setzero_si512();
    if (__builtin_constant_p(m) && m && __builtin_popcountll(m) <= 2) {
        const uint64_t lo = m & (0 - m), hi = m & ~lo;
        const __m512i l = (v & lo) ? vl_test(s, lo) : ~vl_test(s, lo);
        if (!hi)
            return l;
        return l & ((v & hi) ? vl_test(s, hi) : ~vl_test(s, hi));
    }
    return ~vl_nz(_mm512_xor_si512(_mm512_and_si512(s, B(m)), B(v)));
}
#define TEST(m) vl_test(s, (m))
#define EQ(m, v) vl_eq(s, (m), (v))
#define BITIDX(t) _mm512_rorv_epi64(B(t), _mm512_sub_epi64(s, B(VL_P)))   /* bit s & 63 to VL_P */
#define TEST_SEL(l, m1, m0) vl_test_sel(s, (l), (m1), (m0))
AVX512_DECODE static inline __attribute__((always_inline)) __m512i
vl_test_sel(__m512i s, __m512i l, uint64_t m1, uint64_t m0)
{
    const __m512i sel = _mm512_srai_epi64(_mm512_rolv_epi64(l, B(63 - VL_P)), 63);   /* l: all ones */
    return vl_nz(_mm512_and_si512(s, _mm512_ternarylogic_epi64(sel, B(m1), B(m0), 0xCA)));
}
#define NOT(a) (~(a))
#define ONES_IF(k) B(0 - (uint64_t)((k) != 0))
#define SEL(k, a, b) (((a) & ONES_IF(k)) | ((b) & ~ONES_IF(k)))

/* spte_lane512() in vector lanes: predicate p (a constant at each use) of the eight SPTEs in
 * s as a k-mask, only the rows it depends on computed. */
AVX512_DECODE static inline __attribute__((always_inline)) __mmask8
spte_vlane512(const struct kvmmu_cfg *c, uint32_t era, __m512i s, uint32_t level, int p)
{
#define KVMMU_SPTE_TERM(var, expr) const __m512i var = (expr);
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) const __m512i field = (expr);
#include "spte_rules.h"
    switch (p) {
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) \
    case (id): return _mm512_test_epi64_mask(field, B(KBIT(VL_P)));
#include "spte_rules.h"
    default: return 0;
    }
}
#include "spte_lang_end.h"

/*
 * The predicates whose batch uses the vector lanes: each combines several single-bit tests
 * by logic, the case where the k-mask form spends most of its operations on mask logic
 * (spte_needs_atomic_update: 0.25-0.31 -> 0.22 ns per SPTE in cache on a Zen 4).  The k-mask
 * form is faster for a predicate of one or two tests (a compare does a masked multi-bit test
 * in one operation, a rotate costs about as much).  The language covers every row: the test
 * entry kvmmu_spte_pred_vlane_batch() runs it for every predicate (tests/test_isa_spte.py
 * holds it to the reference model), so the row kinds no listed predicate uses (BITIDX,
 * TEST_SEL, multi-bit EQ) are tested too.
 */
#define PRED_VLANES (KBIT(KVMMU_P_NEEDS_ATOMIC_UPDATE) | KBIT(KVMMU_P_WRITABLE_INVARIANTS_OK))

/* One predicate over 64 SPTEs per step: eight k-masks make one 64-bit mask, stored as 64
 * bytes of 0/1.  n must be a multiple of 64. */
AVX512_DECODE static inline __attribute__((always_inline)) void
pred_avx512_one(const struct kvmmu_cfg *cfg, uint32_t era, int p, bool vlanes,
                const uint64_t *restrict spte, uint32_t level, uint8_t *restrict out, size_t n)
{
    const struct kvmmu_cfg cl = *cfg, *c = &cl;   /* byte stores through out cannot change it */
    for (size_t j = 0; j < n; j += 64) {
#define K(k) (vlanes ?                                                                   \
              spte_vlane512(c, era, _mm512_loadu_si512(spte + j + 8 * (k)), level, p) :  \
              spte_lane512(c, era, _mm512_loadu_si512(spte + j + 8 * (k)), level, p))
        const __mmask32 lo = _mm512_kunpackw(_mm512_kunpackb(K(3), K(2)), _mm512_kunpackb(K(1), K(0)));
        const __mmask32 hi = _mm512_kunpackw(_mm512_kunpackb(K(7), K(6)), _mm512_kunpackb(K(5), K(4)));
#undef K
        _mm512_storeu_si512(out + j, _mm512_maskz_mov_epi8(_mm512_kunpackd(hi, lo), _mm512_set1_epi8(1)));
    }
}

AVX512_DECODE static void
pred_avx512(const struct kvmmu_cfg *c, int p, const uint64_t *restrict spte, uint32_t level,
            uint8_t *restrict out, size_t n)
{
    switch (p) {
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) \
    case (id): KVMMU_ERA_SPECIALISE(c->rules, pred_avx512_one(c, era, (id), (PRED_VLANES >> (id)) & 1, \
                                                              spte, level, out, n)) break;
#include "spte_rules.h"
    default:
        break;
    }
}

/* pred_avx512() in the vector lanes for every predicate (the era read at run time). */
AVX512_DECODE static void
pred_vlane_avx512(const struct kvmmu_cfg *c, int p, const uint64_t *restrict spte, uint32_t level,
                  uint8_t *restrict out, size_t n)
{
    switch (p) {
#define KVMMU_SPTE_PREDICATE(NAME, id, lv, feat, fn, field, doc, expr) \
    case (id): pred_avx512_one(c, c->rules, (id), true, spte, level, out, n); break;
#include "spte_rules.h"
    default:
        break;
    }
}
#endif

int kvmmu_spte_pred_vlane_batch(const struct kvmmu_cfg *cfg, int p, const uint64_t *spte,
                                uint32_t level, uint8_t *out, size_t n)
{
    if (p < 0 || p >= KVMMU_P_COUNT || level < 1 || level > 5 || n % 64)
        return -1;
#ifdef KVMMU_HAVE_AVX512
    if (kvmmu_avx512_ok(cfg->isa)) {
        pred_vlane_avx512(cfg, p, spte, level, out, n);
        return 0;
    }
#endif
    (void)spte;
    (void)out;
    return 1;
}

/* One record, any level (1..5). */
static inline void decode_one(const struct kvmmu_cfg *c, uint64_t s, uint32_t level,
                              struct kvmmu_spte_info *out)
{
    const struct decode_consts d = decode_setup(c, level);
    const uint64_t mk = spte_lanes(c, s, level);
    const uint64_t w[6] = {s, (s & d.base_mask) >> 12, decode_word2(&d, s, mk),
                           spread_bits(mk & 0xFF), spread_bits((mk >> 8) & 0xFF),
                           spread_bits((mk >> 16) & 0xFF)};
    memcpy(out, w, sizeof(w));
}

/* A few records (the head and tail around a vector body). */
static void decode_few(const struct kvmmu_cfg *c, uint32_t level, const uint64_t *spte,
                       struct kvmmu_spte_info *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        decode_one(c, spte[i], level, &out[i]);
}

/* decode_batch with one level for all: the AVX-512 or AVX2 body when allowed (streaming huge
 * outputs), decode_one() around it; else the portable blocks. */
static inline __attribute__((always_inline)) void decode_uniform(const struct kvmmu_cfg *c, uint32_t level, const uint64_t *restrict spte,
                           struct kvmmu_spte_info *restrict out, size_t n)
{
    const struct decode_consts d = decode_setup(c, level);
    bool stream = false;
#ifdef KVMMU_HAVE_STREAM
    stream = (uint64_t)n * sizeof(*out) >= KVMMU_STREAM_MIN_BYTES;
#endif
    (void)stream;
#ifdef KVMMU_HAVE_AVX512
    if (kvmmu_avx512_ok(c->isa)) {
        /* Records before the first 64-byte aligned one (when out is 16-byte aligned) and
         * the last n % 8 go through decode_one(). */
        size_t head = 0;
        if (((uintptr_t)out & 15) == 0)
            while (head < n && head < 4 && ((uintptr_t)(out + head) & 63))
                head++;
        const bool nt = stream && ((uintptr_t)(out + head) & 63) == 0;
        if (!nt)
            head = 0;
        const size_t body = (n - head) & ~(size_t)7;
        decode_few(c, level, spte, out, head);
        decode_avx512(c, level, &d, spte + head, (uint64_t *)(void *)(out + head), body, nt);
        decode_few(c, level, spte + head + body, out + head + body, n - head - body);
        return;
    }
#endif
#ifdef KVMMU_HAVE_STREAM
    if (kvmmu_avx2_ok(c->isa)) {
        /* A record before the first 32-byte aligned one (when out is 16-byte aligned) and
         * the last n % 4 go through decode_one(). */
        const size_t head = (((uintptr_t)out & 31) == 16 && n) ? 1 : 0;
        const bool nt = stream && ((uintptr_t)(out + head) & 31) == 0;
        const size_t h = nt ? head : 0, body = (n - h) & ~(size_t)3;
        decode_few(c, level, spte, out, h);
        decode_avx2(c, level, &d, spte + h, (uint64_t *)(void *)(out + h), body, nt);
        decode_few(c, level, spte + h + body, out + h + body, n - h - body);
        return;
    }
#endif
    KVMMU_ERA_SPECIALISE(c->rules, decode_blocks(c, era, level, &d, spte, out, n))
}

KVMMU_HOT size_t kvmmu_spte_decode_batch(const struct kvmmu_cfg *cfg, const uint64_t *restrict spte,
                               const uint8_t *restrict level, uint32_t level_scalar,
                               struct kvmmu_spte_info *restrict out, size_t n, int *err)
{
    const struct kvmmu_cfg cl = *cfg;
    const struct kvmmu_cfg *c = &cl;

    if (!level) {
        if (level_scalar < 1 || level_scalar > 5) {
            *err = KVMMU_E_LEVEL;
            return n ? 1 : 0;
        }
        decode_uniform(c, level_scalar, spte, out, n);
        return 0;
    }
    const size_t bad = first_bad_level(level, n, err);
    if (bad)
        return bad;
    for (size_t i = 0; i < n; i++)
        decode_one(c, spte[i], level[i], &out[i]);
    return 0;
}

int kvmmu_spte_decode(const struct kvmmu_cfg *cfg, uint64_t spte, uint32_t level,
                      struct kvmmu_spte_decoded *out)
{
    if (level < 1 || level > 5)
        return KVMMU_E_LEVEL;
    decode_one(cfg, spte, level, &out->info);
    const bool mmio = out->info.kind == KVMMU_KIND_MMIO;
    out->mmio_gfn = mmio ? kvmmu_mmio_get_gfn(cfg, spte) : 0;
    out->mmio_access = mmio ? kvmmu_mmio_get_access(cfg, spte) : 0;
    out->mmio_generation = mmio ? kvmmu_mmio_get_generation(cfg, spte) : 0;
    return 0;
}
