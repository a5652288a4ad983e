/*
 * The SEV-SNP Reverse Map Table: entry layout, lookups, the RMP instructions
 * (RMPUPDATE, PSMASH, PVALIDATE, RMPADJUST) and the RMP access checks.
 *
 * Written from the rules in shared/spec/rmp-private-memory.md sections 1-3 and
 * the AMD APM (see docs/rmp.md for every reading taken and the flags that
 * select the alternatives).  No kernel or firmware code is copied.
 *
 * The table is a caller-owned buffer laid out as at RMP_BASE: 16 KiB of
 * processor bookkeeping, then (contiguous RMP) one 16-byte entry per 4 KiB
 * page, or (segmented RMP) the 4 KiB segment table followed by the segments.
 * struct kvmmu_rmp says where each segment's entries are; a contiguous RMP is
 * one segment with shift 52, as the kernel unifies the two formats.
 *
 * Every instruction validates everything first and writes only when it will
 * succeed, so a failed instruction leaves every entry unchanged.
 */
#include <string.h>

#include "pykvmmu.h"
#include "common.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the RMP buffer is little-endian; a big-endian host needs byte swaps here"
#endif

/* Raw entry masks, derived from the layout rows KVMMU_RMP_FLD_* of pykvmmu.h (the one
 * description of the entry; AMD firmware rmp_fields_t / kernel rmpentry_raw). */
#define RMP_FSHIFT(F)       KVMMU_RMP_FLD_##F##_SHIFT
#define RMP_FWIDTH(F)       KVMMU_RMP_FLD_##F##_WIDTH
#define RMP_FMASK(F)        KGENMASK(RMP_FSHIFT(F) + RMP_FWIDTH(F) - 1, RMP_FSHIFT(F))
#define RMP_ASSIGNED        RMP_FMASK(ASSIGNED)
#define RMP_PAGESIZE        RMP_FMASK(PAGESIZE)
#define RMP_IMMUTABLE       RMP_FMASK(IMMUTABLE)
#define RMP_SUBPAGE_SHIFT   RMP_FSHIFT(SUBPAGE_COUNT)
#define RMP_SUBPAGE_MASK    RMP_FMASK(SUBPAGE_COUNT)
#define RMP_GPA_SHIFT       RMP_FSHIFT(GPA)
#define RMP_GPA_MASK        RMP_FMASK(GPA)
#define RMP_GPA_BITS        RMP_FWIDTH(GPA)
#define RMP_ASID_SHIFT      RMP_FSHIFT(ASID)
#define RMP_ASID_MASK       RMP_FMASK(ASID)
#define RMP_ASID_MAX        ((1u << RMP_FWIDTH(ASID)) - 1)
#define RMP_VMSA            RMP_FMASK(VMSA)
#define RMP_VALIDATED       RMP_FMASK(VALIDATED)
#define RMP_LOCK            RMP_FMASK(LOCK)
/* Second quadword: four VMPL permission masks, VMPL v at VMPL0's shift + v * width. */
#define RMP_PERM_SHIFT      RMP_FSHIFT(VMPL0)
#define RMP_PERM_WIDTH      RMP_FWIDTH(VMPL0)
#define RMP_PERM_ONE        ((uint32_t)RMP_FMASK(VMPL0) >> RMP_PERM_SHIFT)
#define RMP_PERMS_MASK      KGENMASK(RMP_PERM_SHIFT + 4 * RMP_PERM_WIDTH - 1, RMP_PERM_SHIFT)
#define PERM_R              1u
#define PERM_W              2u
#define PERM_XU             4u
#define PERM_XS             8u
#define PERM_SSS            16u
#define PERM_RSVD           0xE0u
#define PERM_FULL           (PERM_R | PERM_W | PERM_XU | PERM_XS | PERM_SSS)
/* The fields of each quadword, for the layout checks below. */
#define RMP_LO_FIELDS(X)    X(ASSIGNED) X(PAGESIZE) X(IMMUTABLE) X(SUBPAGE_COUNT) X(GPA) X(ASID) \
                            X(VMSA) X(VALIDATED) X(LOCK)
#define RMP_HI_FIELDS(X)    X(VMPL0) X(VMPL1) X(VMPL2) X(VMPL3)
/* Firmware GPA-state tag in bits 38:36 of the GPA field. */
#define GPA_STATE_SHIFT     36
#define GPA_STATE_METADATA  1u
#define GPA_STATE_FW_IOMMU  2u

#define PTRS_PER_PMD        512u
#define PMD_PFN_MASK        (~(uint64_t)(PTRS_PER_PMD - 1))
#define PG_LEVEL_4K         1
#define PG_LEVEL_2M         2
#define PG_LEVEL_1G         3

/* NPF EXITINFO1 / KVM PFERR bits. */
#define PFERR_PRESENT       KBIT(0)
#define PFERR_WRITE         KBIT(1)
#define PFERR_USER          KBIT(2)
#define PFERR_FETCH         KBIT(4)
#define PFERR_GUEST_RMP     KBIT(31)
#define PFERR_GUEST_FINAL   KBIT(32)
#define PFERR_GUEST_PAGE    KBIT(33)
#define PFERR_GUEST_ENC     KBIT(34)
#define PFERR_GUEST_SIZEM   KBIT(35)
#define PFERR_GUEST_VMPL    KBIT(36)
#define SVM_EXIT_VC_NOT_VALIDATED 0x404u

#ifndef PREFETCH_DIST
#define PREFETCH_DIST       16
#endif

#define RMP_OR_MASK(F)      | RMP_FMASK(F)
#define RMP_SUM_WIDTH(F)    + RMP_FWIDTH(F)
_Static_assert((0 RMP_LO_FIELDS(RMP_OR_MASK)) == ~(uint64_t)0 &&
               (0 RMP_LO_FIELDS(RMP_SUM_WIDTH)) == 64,
               "the first quadword's fields cover its 64 bits without overlapping");
_Static_assert((0 RMP_HI_FIELDS(RMP_OR_MASK)) == RMP_PERMS_MASK &&
               (0 RMP_HI_FIELDS(RMP_SUM_WIDTH)) == 4 * RMP_PERM_WIDTH,
               "the four VMPL masks are consecutive fields of one width");
#define RMP_WORD_IS(F, W)   && KVMMU_RMP_FLD_##F##_WORD == (W)
#define RMP_WORD0(F)        RMP_WORD_IS(F, 0)
#define RMP_WORD1(F)        RMP_WORD_IS(F, 1)
_Static_assert(1 RMP_LO_FIELDS(RMP_WORD0) RMP_HI_FIELDS(RMP_WORD1), "fields sit in their quadword");
_Static_assert(RMP_FSHIFT(VMPL3) == RMP_PERM_SHIFT + 3 * RMP_PERM_WIDTH, "VMPL v at v * width");
_Static_assert(RMP_SUBPAGE_MASK >> RMP_SUBPAGE_SHIFT == PTRS_PER_PMD - 1,
               "the 9-bit sub-page count holds 0..511");
_Static_assert(sizeof(struct kvmmu_rmp_state) == 16, "struct rmp_state is 16 bytes");
_Static_assert(sizeof(struct kvmmu_rmp_fields) == 40, "fields record layout");
_Static_assert(sizeof(struct kvmmu_rmp_access) == 32, "access record layout");
_Static_assert(KVMMU_RMP_BOOKKEEPING == 0x4000 && KVMMU_RMP_ENTRY_SIZE == 16, "RMP geometry");

/* ------------------------------------------------------------ locating entries */

static inline uint64_t *entry_ptr(const struct kvmmu_rmp *t, uint64_t pfn)
{
    uint32_t sh = t->seg_shift - 12;
    uint64_t seg = pfn >> sh;
    uint64_t idx = pfn & ((KBIT(sh)) - 1);
    if (KVMMU_UNLIKELY(seg >= t->nr_segs || idx >= t->seg_count[seg]))
        return NULL;
    return (uint64_t *)(void *)(t->base + t->seg_off[seg] + idx * KVMMU_RMP_ENTRY_SIZE);
}

/* The 512 entries of a 2M block are contiguous (a segment never splits one). */
static inline uint64_t *block_ptr(const struct kvmmu_rmp *t, uint64_t head)
{
    uint64_t *h = entry_ptr(t, head);
    if (!h || !entry_ptr(t, head + PTRS_PER_PMD - 1))
        return NULL;
    return h;
}

static inline bool is_2m_page(uint64_t lo)
{
    return (lo & (RMP_ASSIGNED | RMP_PAGESIZE)) == (RMP_ASSIGNED | RMP_PAGESIZE);
}

static inline uint64_t lo_gfn(uint64_t lo) { return (lo & RMP_GPA_MASK) >> RMP_GPA_SHIFT; }
static inline uint32_t lo_asid(uint64_t lo) { return (uint32_t)((lo & RMP_ASID_MASK) >> RMP_ASID_SHIFT); }
static inline uint32_t lo_count(uint64_t lo) { return (uint32_t)((lo & RMP_SUBPAGE_MASK) >> RMP_SUBPAGE_SHIFT); }
static inline uint32_t hi_perm(uint64_t hi, uint32_t vmpl)
{
    return (uint32_t)(hi >> (RMP_PERM_SHIFT + RMP_PERM_WIDTH * vmpl)) & RMP_PERM_ONE;
}

/* ------------------------------------------------------------ level index
 *
 * The lookup's level comes from the Page_Size bit of the 2M-aligned entry, a second
 * cache line per random lookup.  The optional level index keeps that bit for every 2M
 * block (64 KiB per TiB of host memory, cache-resident), so a batch lookup reads one
 * entry.  Every function here that writes a 2M-aligned entry calls lvl_sync(). */

static inline void lvl_sync(const struct kvmmu_rmp *t, uint64_t head, uint64_t lo)
{
    uint64_t i = head / PTRS_PER_PMD;
    if (!t->lvl_bits || i >= t->lvl_nbits)
        return;
    uint64_t m = KBIT(i & 63);
    if (lo & RMP_PAGESIZE)
        t->lvl_bits[i >> 6] |= m;
    else
        t->lvl_bits[i >> 6] &= ~m;
}

static inline uint8_t lvl_get(const uint64_t *bits, uint64_t pfn)
{
    uint64_t i = pfn / PTRS_PER_PMD;
    return (uint8_t)(1 + ((bits[i >> 6] >> (i & 63)) & 1));
}

/* Bits [lo, hi) of a level index: bit i = Page_Size of the entry at pfn i * 512 (0 where
 * not covered), written a whole 64-bit word at a time (lo a multiple of 64, hi the index's
 * size or a multiple of 64), so that parts of one index can be built at once.  The
 * 2M-aligned entries are 8 KiB apart: prefetched PREFETCH_DIST ahead. */
void kvmmu_rmp_level_bits(const struct kvmmu_rmp *t, uint64_t *bits, uint64_t lo, uint64_t hi)
{
    for (uint64_t i = lo; i < lo + PREFETCH_DIST && i < hi; i++) {
        const uint64_t *q = entry_ptr(t, i * PTRS_PER_PMD);
        if (q)
            __builtin_prefetch(q);
    }
    uint64_t word = 0;
    for (uint64_t i = lo; i < hi; i++) {
        if (i + PREFETCH_DIST < hi) {
            const uint64_t *q = entry_ptr(t, (i + PREFETCH_DIST) * PTRS_PER_PMD);
            if (q)
                __builtin_prefetch(q);
        }
        const uint64_t *h = entry_ptr(t, i * PTRS_PER_PMD);
        if (h && (h[0] & RMP_PAGESIZE))
            word |= KBIT(i & 63);
        if ((i & 63) == 63 || i + 1 == hi) {
            bits[i >> 6] = word;
            word = 0;
        }
    }
}

void kvmmu_rmp_level_index_build(const struct kvmmu_rmp *t)
{
    if (t->lvl_bits)
        kvmmu_rmp_level_bits(t, t->lvl_bits, 0, t->lvl_nbits);
}

/* 0, or 1 + the first 2M block whose index bit differs from its entry. */
size_t kvmmu_rmp_level_index_check(const struct kvmmu_rmp *t)
{
    for (uint64_t i = 0; t->lvl_bits && i < t->lvl_nbits; i++) {
        const uint64_t *h = entry_ptr(t, i * PTRS_PER_PMD);
        uint64_t want = h ? (h[0] & RMP_PAGESIZE) != 0 : 0;
        if (((t->lvl_bits[i >> 6] >> (i & 63)) & 1) != want)
            return (size_t)i + 1;
    }
    return 0;
}

bool kvmmu_rmp_covered(const struct kvmmu_rmp *t, uint64_t pfn)
{
    return entry_ptr(t, pfn) != NULL;
}

int kvmmu_rmp_write(const struct kvmmu_rmp *t, uint64_t pfn, uint64_t lo, uint64_t hi)
{
    uint64_t *e = entry_ptr(t, pfn);
    if (!e)
        return -1;
    e[0] = lo;
    e[1] = hi;
    if (!(pfn & (PTRS_PER_PMD - 1)))
        lvl_sync(t, pfn, lo);
    return 0;
}

/* ------------------------------------------------------------ lookups */

/* snp_lookup_rmpentry(): assigned from the pfn's own entry, level from the
 * 2M-aligned entry's page size. */
int kvmmu_rmp_lookup(const struct kvmmu_rmp *t, uint64_t pfn, bool *assigned, int *level)
{
    const uint64_t *e = entry_ptr(t, pfn);
    if (!e)
        return -1;
    const uint64_t *h = entry_ptr(t, pfn & PMD_PFN_MASK);
    *assigned = (e[0] & RMP_ASSIGNED) != 0;
    *level = (h[0] & RMP_PAGESIZE) ? PG_LEVEL_2M : PG_LEVEL_4K;
    return 0;
}

static inline void lookup_one(uint64_t lo, uint64_t hlo, size_t i, uint8_t *assigned,
                              uint8_t *level, uint16_t *asid, uint64_t *gpa)
{
    assigned[i] = (uint8_t)(lo & RMP_ASSIGNED);
    level[i] = (uint8_t)(1 + ((hlo & RMP_PAGESIZE) != 0));
    if (asid)
        asid[i] = (uint16_t)lo_asid(lo);
    if (gpa)
        gpa[i] = lo & RMP_GPA_MASK;
}

size_t kvmmu_rmp_lookup_batch(const struct kvmmu_rmp *t, const uint64_t *pfn, uint8_t *assigned,
                              uint8_t *level, uint16_t *asid, uint64_t *gpa, size_t n, int *err)
{
    return kvmmu_rmp_lookup_batch_lvl(t, pfn, assigned, level, asid, gpa, n, err, t->lvl_bits);
}

/* A lookup batch's out-of-range pfn at index i: the rule code, and i + 1. */
static inline size_t lookup_range_error(int *err, size_t i)
{
    if (err)
        *err = KVMMU_RMP_E_RANGE;
    return i + 1;
}

/* Contiguous RMP with a level index: one entry (one cache line) per lookup. */
static inline size_t lookup_batch_flat_indexed(const struct kvmmu_rmp *t, const uint64_t *pfn,
                                               uint8_t *assigned, uint8_t *level, uint16_t *asid,
                                               uint64_t *gpa, size_t n, int *err,
                                               const uint64_t *lvl_bits)
{
    const uint64_t *ent = (const uint64_t *)(const void *)(t->base + t->seg_off[0]);
    const uint64_t cnt = t->seg_count[0];
    for (size_t i = 0; i < n && i < PREFETCH_DIST; i++)
        __builtin_prefetch(ent + 2 * (pfn[i] < cnt ? pfn[i] : 0));
    for (size_t i = 0; i < n; i++) {
        if (i + PREFETCH_DIST < n) {
            uint64_t q = pfn[i + PREFETCH_DIST];
            __builtin_prefetch(ent + 2 * (q < cnt ? q : 0));
        }
        uint64_t p = pfn[i];
        if (KVMMU_UNLIKELY(p >= cnt))
            return lookup_range_error(err, i);
        uint64_t lo = ent[2 * p];
        assigned[i] = (uint8_t)(lo & RMP_ASSIGNED);
        level[i] = lvl_get(lvl_bits, p);
        if (asid)
            asid[i] = (uint16_t)lo_asid(lo);
        if (gpa)
            gpa[i] = lo & RMP_GPA_MASK;
    }
    return 0;
}

/* Contiguous RMP: flat index, two entries per lookup, both prefetched PREFETCH_DIST ahead. */
static inline size_t lookup_batch_flat(const struct kvmmu_rmp *t, const uint64_t *pfn,
                                       uint8_t *assigned, uint8_t *level, uint16_t *asid,
                                       uint64_t *gpa, size_t n, int *err)
{
    const uint64_t *ent = (const uint64_t *)(const void *)(t->base + t->seg_off[0]);
    const uint64_t cnt = t->seg_count[0];
    size_t warm = n < PREFETCH_DIST ? n : PREFETCH_DIST;
    for (size_t i = 0; i < warm; i++) {
        uint64_t p = pfn[i] < cnt ? pfn[i] : 0;
        __builtin_prefetch(ent + 2 * p);
        __builtin_prefetch(ent + 2 * (p & PMD_PFN_MASK));
    }
    for (size_t i = 0; i < n; i++) {
        if (i + PREFETCH_DIST < n) {
            uint64_t q = pfn[i + PREFETCH_DIST];
            q = q < cnt ? q : 0;
            __builtin_prefetch(ent + 2 * q);
            __builtin_prefetch(ent + 2 * (q & PMD_PFN_MASK));
        }
        uint64_t p = pfn[i];
        if (KVMMU_UNLIKELY(p >= cnt))
            return lookup_range_error(err, i);
        lookup_one(ent[2 * p], ent[2 * (p & PMD_PFN_MASK)], i, assigned, level, asid, gpa);
    }
    return 0;
}

/* Segmented RMP (or a non-default segment shift): entry_ptr() per entry; the level from
 * lvl_bits when it is not NULL, else from the 2M-aligned entry. */
static inline size_t lookup_batch_segmented(const struct kvmmu_rmp *t, const uint64_t *pfn,
                                            uint8_t *assigned, uint8_t *level, uint16_t *asid,
                                            uint64_t *gpa, size_t n, int *err,
                                            const uint64_t *lvl_bits)
{
    for (size_t i = 0; i < n; i++) {
        if (i + PREFETCH_DIST < n) {
            const uint64_t *q = entry_ptr(t, pfn[i + PREFETCH_DIST]);
            if (q) {
                __builtin_prefetch(q);
                __builtin_prefetch(entry_ptr(t, pfn[i + PREFETCH_DIST] & PMD_PFN_MASK));
            }
        }
        const uint64_t *e = entry_ptr(t, pfn[i]);
        if (KVMMU_UNLIKELY(!e))
            return lookup_range_error(err, i);
        if (lvl_bits) {
            lookup_one(e[0], 0, i, assigned, level, asid, gpa);
            level[i] = lvl_get(lvl_bits, pfn[i]);
        } else {
            const uint64_t *h = entry_ptr(t, pfn[i] & PMD_PFN_MASK);
            lookup_one(e[0], h[0], i, assigned, level, asid, gpa);
        }
    }
    return 0;
}

/* kvmmu_rmp_lookup_batch with the level from lvl_bits (a level index of at least
 * ceil(nr_pfns / 512) bits) when it is not NULL, else from the 2M-aligned entries. */
size_t kvmmu_rmp_lookup_batch_lvl(const struct kvmmu_rmp *t, const uint64_t *pfn,
                                  uint8_t *assigned, uint8_t *level, uint16_t *asid,
                                  uint64_t *gpa, size_t n, int *err, const uint64_t *lvl_bits)
{
    const bool flat = t->nr_segs == 1 && t->seg_shift == KVMMU_RMP_NONSEG_SHIFT;

    if (flat && lvl_bits)
        return lookup_batch_flat_indexed(t, pfn, assigned, level, asid, gpa, n, err, lvl_bits);
    if (flat)
        return lookup_batch_flat(t, pfn, assigned, level, asid, gpa, n, err);
    return lookup_batch_segmented(t, pfn, assigned, level, asid, gpa, n, err, lvl_bits);
}

/* ------------------------------------------------------------ fields and states */

/* rmp_entry_get_state() of the AMD firmware, first match wins. */
int kvmmu_rmp_state_raw(uint64_t lo)
{
    bool a = lo & RMP_ASSIGNED, v = lo & RMP_VALIDATED, im = lo & RMP_IMMUTABLE;
    bool vmsa = lo & RMP_VMSA, lock = lo & RMP_LOCK;
    uint32_t asid = lo_asid(lo);
    uint64_t gfn = lo_gfn(lo);
    uint64_t gfn_plain = gfn & ~(UINT64_C(7) << GPA_STATE_SHIFT);
    uint32_t gstate = (uint32_t)(gfn >> GPA_STATE_SHIFT);

    if (!a && !v && asid == 0)
        return im ? KVMMU_RMP_STATE_HV_FIXED : KVMMU_RMP_STATE_HYPERVISOR;
    if (a && !v && asid == 0) {
        if (im && gfn == 0 && !vmsa)
            return KVMMU_RMP_STATE_FIRMWARE;
        if (!im && !lock)
            return KVMMU_RMP_STATE_RECLAIM;
        if (im && gfn == 0 && vmsa)
            return KVMMU_RMP_STATE_CONTEXT;
        if (im && gfn_plain > 0 && gstate == GPA_STATE_METADATA)
            return KVMMU_RMP_STATE_METADATA;
    }
    if (a && asid > 0)
        return im ? (v ? KVMMU_RMP_STATE_PRE_SWAP : KVMMU_RMP_STATE_PRE_GUEST)
                  : (v ? KVMMU_RMP_STATE_GUEST_VALID : KVMMU_RMP_STATE_GUEST_INVALID);
    if (a && !v && asid == 0 && im && gfn_plain == 1 && gstate == GPA_STATE_FW_IOMMU && !vmsa)
        return KVMMU_RMP_STATE_FIRMWARE_IOMMU;
    return KVMMU_RMP_STATE_INVALID;
}

/* The entry that governs a pfn: the 2M-aligned entry of an assigned 2M page,
 * otherwise the pfn's own entry. */
static inline const uint64_t *governing(const struct kvmmu_rmp *t, uint64_t pfn, const uint64_t *e,
                                        bool *in_2m)
{
    const uint64_t *h = (pfn & (PTRS_PER_PMD - 1)) ? entry_ptr(t, pfn & PMD_PFN_MASK) : e;
    *in_2m = is_2m_page(h[0]);
    return *in_2m ? h : e;
}

int kvmmu_rmp_page_state(const struct kvmmu_rmp *t, uint64_t pfn, bool effective)
{
    const uint64_t *e = entry_ptr(t, pfn);
    if (!e)
        return KVMMU_RMP_STATE_DEFAULT;
    if (effective) {
        bool in2m;
        e = governing(t, pfn, e, &in2m);
    }
    return kvmmu_rmp_state_raw(e[0]);
}

void kvmmu_rmp_page_state_batch(const struct kvmmu_rmp *t, const uint64_t *pfn, bool effective,
                                uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i + PREFETCH_DIST < n) {
            const uint64_t *q = entry_ptr(t, pfn[i + PREFETCH_DIST]);
            if (q)
                __builtin_prefetch(q);
        }
        out[i] = (uint8_t)kvmmu_rmp_page_state(t, pfn[i], effective);
    }
}

void kvmmu_rmp_decode(uint64_t lo, uint64_t hi, struct kvmmu_rmp_fields *o)
{
    memset(o, 0, sizeof(*o));
    o->lo = lo;
    o->hi = hi;
    o->gpa = lo_gfn(lo);
    o->asid = (uint16_t)lo_asid(lo);
    o->subpage_count = (uint16_t)lo_count(lo);
    o->assigned = (lo & RMP_ASSIGNED) != 0;
    o->pagesize = (lo & RMP_PAGESIZE) != 0;
    o->immutable = (lo & RMP_IMMUTABLE) != 0;
    o->vmsa = (lo & RMP_VMSA) != 0;
    o->validated = (lo & RMP_VALIDATED) != 0;
    o->lock = (lo & RMP_LOCK) != 0;
    for (uint32_t v = 0; v < 4; v++)
        o->vmpl[v] = (uint8_t)hi_perm(hi, v);
    o->state = (uint8_t)kvmmu_rmp_state_raw(lo);
}

void kvmmu_rmp_decode_batch(const uint64_t *lo, const uint64_t *hi,
                            struct kvmmu_rmp_fields *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        kvmmu_rmp_decode(lo[i], hi[i], &out[i]);
}

size_t kvmmu_rmp_fields_batch(const struct kvmmu_rmp *t, const uint64_t *pfn,
                              struct kvmmu_rmp_fields *out, size_t n, int *err)
{
    for (size_t i = 0; i < n; i++) {
        if (i + PREFETCH_DIST < n) {
            const uint64_t *q = entry_ptr(t, pfn[i + PREFETCH_DIST]);
            if (q)
                __builtin_prefetch(q);
        }
        const uint64_t *e = entry_ptr(t, pfn[i]);
        if (!e) {
            if (err)
                *err = KVMMU_RMP_E_RANGE;
            return i + 1;
        }
        kvmmu_rmp_decode(e[0], e[1], &out[i]);
    }
    return 0;
}

size_t kvmmu_rmp_count_assigned(const struct kvmmu_rmp *t, uint64_t start, uint64_t count)
{
    size_t c = 0;
    for (uint64_t p = start; p < start + count; p++) {
        const uint64_t *e = entry_ptr(t, p);
        if (e && (e[0] & RMP_ASSIGNED))
            c++;
    }
    return c;
}

/* ------------------------------------------------------------ RMPUPDATE */

static inline int overlap_rc(const struct kvmmu_rmp *t)
{
    return (t->flags & KVMMU_RMP_F_OVERLAP_RC7) ? KVMMU_RMP_RC_FAIL_OVERLAP_RFC
                                                : KVMMU_RMP_RC_FAIL_OVERLAP;
}

/* Validated, VMSA and the VMPL masks survive an RMPUPDATE only when the
 * ownership (assigned, ASID, GPA, page size) is unchanged. */
static inline bool ownership_same(const struct kvmmu_rmp *t, uint64_t old_lo, uint64_t new_lo)
{
    const uint64_t own = RMP_ASSIGNED | RMP_PAGESIZE | RMP_GPA_MASK | RMP_ASID_MASK;
    if (t->flags & KVMMU_RMP_F_ALWAYS_RESET)
        return false;
    return (old_lo & own) == (new_lo & own);
}

static void write_owner(const struct kvmmu_rmp *t, uint64_t *e, uint64_t new_lo, bool keep_count)
{
    uint64_t old = e[0];
    uint64_t lo = new_lo;
    uint64_t hi = e[1];
    if (keep_count)
        lo |= old & RMP_SUBPAGE_MASK;
    if (ownership_same(t, old, new_lo)) {
        lo |= old & (RMP_VALIDATED | RMP_VMSA);
    } else {
        hi &= ~RMP_PERMS_MASK;
        if (new_lo & RMP_ASSIGNED)
            hi |= PERM_FULL;         /* VMPL0 full, VMPL1-3 none */
    }
    e[1] = hi;
    e[0] = lo;
}

/* The RMPUPDATE FAIL_INPUT rules, which depend on the operands and the table's
 * geometry only (never on entry contents): 0, or the KVMMU_RMP_E_* rule broken. */
static int rmpupdate_input(const struct kvmmu_rmp *t, uint64_t pfn, const struct kvmmu_rmp_state *st)
{
    if (!entry_ptr(t, pfn))
        return KVMMU_RMP_E_RANGE;
    if (st->assigned > 1 || st->pagesize > 1 || st->immutable > 1 || st->rsvd != 0)
        return KVMMU_RMP_E_FIELD;
    if (st->asid > RMP_ASID_MAX || (!st->assigned && st->asid != 0))
        return KVMMU_RMP_E_ASID;
    if ((st->gpa & 0xFFF) || (st->gpa >> (12 + RMP_GPA_BITS)))
        return KVMMU_RMP_E_GPA;
    if (st->pagesize) {
        if (pfn & (PTRS_PER_PMD - 1))
            return KVMMU_RMP_E_ALIGN;
        if (st->assigned && (st->gpa & (KBIT(21) - 1)))
            return KVMMU_RMP_E_GPA;
        if (!block_ptr(t, pfn))
            return KVMMU_RMP_E_BLOCK;
    }
    return 0;
}

size_t kvmmu_rmp_rmpupdate_batch_check(const struct kvmmu_rmp *t, const uint64_t *pfn,
                                       const uint64_t *gpa, uint32_t assigned, uint32_t pagesize,
                                       uint32_t immutable, uint32_t asid, size_t n, int *err)
{
    struct kvmmu_rmp_state st = {0, (uint8_t)assigned, (uint8_t)pagesize, (uint8_t)immutable, 0, asid};
    if (assigned > 1 || pagesize > 1 || immutable > 1) {
        *err = KVMMU_RMP_E_FIELD;
        return n ? 1 : 0;
    }
    for (size_t i = 0; i < n; i++) {
        st.gpa = gpa ? gpa[i] : 0;
        int rule = rmpupdate_input(t, pfn[i], &st);
        if (rule) {
            *err = rule;
            return i + 1;
        }
    }
    return 0;
}

int kvmmu_rmp_rmpupdate(const struct kvmmu_rmp *t, uint64_t pfn, const struct kvmmu_rmp_state *st)
{
    if (rmpupdate_input(t, pfn, st))
        return KVMMU_RMP_RC_FAIL_INPUT;
    uint64_t *e = entry_ptr(t, pfn);
    uint64_t head = pfn & PMD_PFN_MASK;
    uint64_t new_lo = (st->assigned ? RMP_ASSIGNED : 0) | (st->immutable ? RMP_IMMUTABLE : 0) |
                      (st->gpa & RMP_GPA_MASK) | ((uint64_t)st->asid << RMP_ASID_SHIFT);

    if (st->pagesize) {
        uint64_t *b = block_ptr(t, head);
        for (uint32_t i = 0; i < PTRS_PER_PMD; i++)
            if (b[2 * i] & RMP_IMMUTABLE)
                return KVMMU_RMP_RC_FAIL_PERMISSION;
        for (uint32_t i = 0; i < PTRS_PER_PMD; i++)
            if (b[2 * i] & RMP_LOCK)
                return KVMMU_RMP_RC_FAIL_INUSE;
        if (!is_2m_page(b[0]) && lo_count(b[0]) != 0)
            return overlap_rc(t);
        /* Commit: the 2M entry, then the 511 middle entries. */
        new_lo |= RMP_PAGESIZE;
        write_owner(t, b, new_lo, false);
        lvl_sync(t, head, b[0]);
        for (uint32_t i = 1; i < PTRS_PER_PMD; i++) {
            uint64_t *m = b + 2 * i;
            if (t->flags & KVMMU_RMP_F_MIDDLE_FULL) {
                uint64_t mlo = new_lo;
                if (st->assigned)
                    mlo = (mlo & ~RMP_GPA_MASK) | ((st->gpa & RMP_GPA_MASK) + ((uint64_t)i << 12));
                m[0] = mlo;
                m[1] = (m[1] & ~RMP_PERMS_MASK) | (b[1] & RMP_PERMS_MASK);
            } else {
                m[0] = st->assigned ? RMP_ASSIGNED : 0;
                m[1] &= ~RMP_PERMS_MASK;
            }
        }
        return KVMMU_RMP_RC_SUCCESS;
    }

    uint64_t *h = entry_ptr(t, head);
    if (e[0] & RMP_IMMUTABLE)
        return KVMMU_RMP_RC_FAIL_PERMISSION;
    if (e[0] & RMP_LOCK)
        return KVMMU_RMP_RC_FAIL_INUSE;
    if (is_2m_page(h[0]))
        return overlap_rc(t);
    bool was = e[0] & RMP_ASSIGNED;
    write_owner(t, e, new_lo, pfn == head);
    if (pfn == head)
        lvl_sync(t, head, e[0]);
    if (pfn != head && was != (bool)st->assigned) {
        uint64_t c = lo_count(h[0]);
        c = st->assigned ? c + 1 : c - 1;
        h[0] = (h[0] & ~RMP_SUBPAGE_MASK) | (c << RMP_SUBPAGE_SHIFT);
    }
    return KVMMU_RMP_RC_SUCCESS;
}

size_t kvmmu_rmp_rmpupdate_batch(const struct kvmmu_rmp *t, const uint64_t *pfn,
                                 const uint64_t *gpa, uint32_t assigned, uint32_t pagesize,
                                 uint32_t immutable, uint32_t asid, size_t n, int *err)
{
    struct kvmmu_rmp_state st = {0, (uint8_t)assigned, (uint8_t)pagesize, (uint8_t)immutable, 0, asid};
    if (assigned > 1 || pagesize > 1 || immutable > 1) {
        if (err)
            *err = KVMMU_RMP_RC_FAIL_INPUT;
        return n ? 1 : 0;
    }
    for (size_t i = 0; i < n; i++) {
        st.gpa = gpa ? gpa[i] : 0;
        int rc = kvmmu_rmp_rmpupdate(t, pfn[i], &st);
        if (rc) {
            if (err)
                *err = rc;
            return i + 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ PSMASH */

int kvmmu_rmp_psmash(const struct kvmmu_rmp *t, uint64_t pfn)
{
    if (!entry_ptr(t, pfn) || (pfn & (PTRS_PER_PMD - 1)))
        return KVMMU_RMP_RC_FAIL_INPUT;
    uint64_t *b = block_ptr(t, pfn);
    if (!b)
        return KVMMU_RMP_RC_FAIL_INPUT;
    if (b[0] & RMP_LOCK)
        return KVMMU_RMP_RC_FAIL_INUSE;
    if (!is_2m_page(b[0]))
        return KVMMU_RMP_RC_FAIL_BADADDR;
    uint64_t lo = b[0] & ~(RMP_PAGESIZE | RMP_SUBPAGE_MASK | RMP_LOCK);
    uint64_t perms = b[1] & RMP_PERMS_MASK;
    uint64_t gfn = lo_gfn(lo);
    for (uint32_t i = PTRS_PER_PMD; i-- > 0;) {
        uint64_t *m = b + 2 * i;
        uint64_t mlo = (lo & ~RMP_GPA_MASK) | (((gfn + i) << RMP_GPA_SHIFT) & RMP_GPA_MASK);
        if (i == 0)
            mlo |= (uint64_t)(PTRS_PER_PMD - 1) << RMP_SUBPAGE_SHIFT;
        m[1] = (m[1] & ~RMP_PERMS_MASK) | perms;
        m[0] = mlo;
    }
    lvl_sync(t, pfn, b[0]);
    return KVMMU_RMP_RC_SUCCESS;
}

/* ------------------------------------------------------------ guest instructions */

/* The base exit info of a guest instruction's NPF (guest_insn_npf, kvmmu_rmp_insn_code_word). */
#define INSN_NPF_BASE       (PFERR_PRESENT | PFERR_GUEST_RMP | PFERR_GUEST_FINAL | PFERR_GUEST_ENC)

/* The RMP checks PVALIDATE and RMPADJUST share: covered, guest-owned,
 * reverse-map, mutable, and (NPF with SIZEM) a 4K request on a 2M page.
 * Returns 0 or KVMMU_RMP_RC_NPF; *g is the governing entry. */
static int guest_insn_npf(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t asid, uint64_t gfn,
                          uint32_t size, uint64_t **g, bool *in2m, uint64_t *exitinfo)
{
    uint64_t *e = entry_ptr(t, pfn);
    uint64_t base = INSN_NPF_BASE;
    if (!e) {
        *exitinfo = base;
        return KVMMU_RMP_RC_NPF;
    }
    *g = (uint64_t *)governing(t, pfn, e, in2m);
    uint64_t lo = (*g)[0];
    uint64_t want_gfn = *in2m ? lo_gfn(lo) + (pfn & (PTRS_PER_PMD - 1)) : lo_gfn(lo);
    if (!(lo & RMP_ASSIGNED) || lo_asid(lo) != asid || want_gfn != gfn || (lo & RMP_IMMUTABLE)) {
        *exitinfo = base;
        return KVMMU_RMP_RC_NPF;
    }
    if (*in2m && size == 0) {
        *exitinfo = base | PFERR_GUEST_SIZEM;
        return KVMMU_RMP_RC_NPF;
    }
    return 0;
}

int kvmmu_rmp_pvalidate(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t asid, uint32_t vmpl,
                        uint64_t gfn, uint32_t size, uint32_t validate, uint64_t *exitinfo)
{
    uint64_t *g = NULL;
    bool in2m = false;
    *exitinfo = 0;
    if (size > 1 || validate > 1 || vmpl > 3)
        return KVMMU_RMP_RC_FAIL_INPUT;
    if (size == 1 && ((gfn | pfn) & (PTRS_PER_PMD - 1)))
        return KVMMU_RMP_RC_FAIL_INPUT;
    if (vmpl != 0)
        return (t->flags & KVMMU_RMP_F_PVALIDATE_VMPL_GP) ? KVMMU_RMP_RC_GP
                                                          : KVMMU_RMP_RC_FAIL_PERMISSION;
    int rc = guest_insn_npf(t, pfn, asid, gfn, size, &g, &in2m, exitinfo);
    if (rc)
        return rc;
    if (size == 1 && !in2m)
        return KVMMU_RMP_RC_FAIL_SIZEMISMATCH;
    if (((g[0] & RMP_VALIDATED) != 0) == (validate != 0))
        return KVMMU_RMP_RC_NOUPDATE;
    g[0] = validate ? (g[0] | RMP_VALIDATED) : (g[0] & ~RMP_VALIDATED);
    return KVMMU_RMP_RC_SUCCESS;
}

int kvmmu_rmp_rmpadjust(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t asid, uint32_t vmpl,
                        uint64_t gfn, uint32_t size, uint32_t target_vmpl, uint32_t perms,
                        uint32_t vmsa, uint64_t *exitinfo)
{
    uint64_t *g = NULL;
    bool in2m = false;
    *exitinfo = 0;
    if (size > 1 || vmpl > 3 || target_vmpl > 3 || perms > RMP_PERM_ONE || (perms & PERM_RSVD) || vmsa > 1)
        return KVMMU_RMP_RC_FAIL_INPUT;
    if (size == 1 && ((gfn | pfn) & (PTRS_PER_PMD - 1)))
        return KVMMU_RMP_RC_FAIL_INPUT;
    if (target_vmpl <= vmpl)
        return KVMMU_RMP_RC_FAIL_PERMISSION;
    int rc = guest_insn_npf(t, pfn, asid, gfn, size, &g, &in2m, exitinfo);
    if (rc)
        return rc;
    if (!(g[0] & RMP_VALIDATED)) {
        *exitinfo = SVM_EXIT_VC_NOT_VALIDATED;
        return KVMMU_RMP_RC_VC;
    }
    if (size == 1 && !in2m)
        return KVMMU_RMP_RC_FAIL_SIZEMISMATCH;
    if (perms & ~hi_perm(g[1], vmpl))
        return KVMMU_RMP_RC_FAIL_PERMISSION;
    uint64_t sh = RMP_PERM_SHIFT + RMP_PERM_WIDTH * target_vmpl;
    g[1] = (g[1] & ~((uint64_t)RMP_PERM_ONE << sh)) | ((uint64_t)perms << sh);
    if (vmpl == 0)
        g[0] = vmsa ? (g[0] | RMP_VMSA) : (g[0] & ~RMP_VMSA);
    return KVMMU_RMP_RC_SUCCESS;
}

/* ------------------------------------------------------------ access checks */

/* Hypervisor-Owned for a mapping of the given level (1G is checked as 2M):
 * Assigned=0 in the entry, or in all 512 entries of a 2M mapping.  Immutable
 * is "don't care" (APM) unless KVMMU_RMP_F_HOST_IMMUTABLE. */
static int hv_owned_check(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t level, bool host)
{
    bool immut = host && (t->flags & KVMMU_RMP_F_HOST_IMMUTABLE);
    uint64_t start = level > PG_LEVEL_4K ? (pfn & PMD_PFN_MASK) : pfn;
    uint32_t cnt = level > PG_LEVEL_4K ? PTRS_PER_PMD : 1;
    int fail = KVMMU_RMP_CHK_OK;
    for (uint32_t i = 0; i < cnt; i++) {
        const uint64_t *e = entry_ptr(t, start + i);
        if (!e)
            continue;                /* beyond the RMP: permanently hypervisor-owned */
        if (e[0] & RMP_ASSIGNED)
            return KVMMU_RMP_CHK_HV_OWNED;
        if (immut && (e[0] & RMP_IMMUTABLE))
            fail = KVMMU_RMP_CHK_MUTABLE;
    }
    return fail;
}

int kvmmu_rmp_host_check(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t level, bool user,
                         uint64_t *error_code)
{
    int chk = hv_owned_check(t, pfn, level, true);
    *error_code = chk ? (PFERR_PRESENT | PFERR_WRITE | (user ? PFERR_USER : 0) | PFERR_GUEST_RMP)
                      : 0;
    return chk;
}

size_t kvmmu_rmp_host_check_batch(const struct kvmmu_rmp *t, const uint64_t *pfn, uint32_t level,
                                  uint8_t *out, size_t n)
{
    size_t first = 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = (uint8_t)hv_owned_check(t, pfn[i], level, true);
        if (out[i] && !first)
            first = i + 1;
    }
    return first;
}

static uint64_t npf_base(const struct kvmmu_rmp_access *a, bool enc)
{
    uint64_t ei = PFERR_PRESENT | PFERR_GUEST_RMP;
    if (a->kind == KVMMU_RMP_ACC_WRITE || a->kind == KVMMU_RMP_ACC_PT_WRITE)
        ei |= PFERR_WRITE;
    if (a->user)
        ei |= PFERR_USER;
    if (a->kind == KVMMU_RMP_ACC_FETCH)
        ei |= PFERR_FETCH;
    ei |= (a->kind == KVMMU_RMP_ACC_PT_READ || a->kind == KVMMU_RMP_ACC_PT_WRITE)
              ? PFERR_GUEST_PAGE : PFERR_GUEST_FINAL;
    if (enc)
        ei |= PFERR_GUEST_ENC;
    return ei;
}

/* Non-SNP guests: writes and page-table accesses are checked; SNP C=0: data writes.
 * A checked access to a page that is not hypervisor-owned is a #NPF. */
static inline int guest_check_shared(const struct kvmmu_rmp *t, const struct kvmmu_rmp_access *a,
                                     uint32_t level, bool is_write, int *fault, uint64_t *exitinfo)
{
    int chk = KVMMU_RMP_CHK_OK;
    bool checked = a->snp_active ? a->kind == KVMMU_RMP_ACC_WRITE
                                 : (is_write || a->kind == KVMMU_RMP_ACC_PT_READ);
    if (checked && (chk = hv_owned_check(t, a->pfn, level, false)) != KVMMU_RMP_CHK_OK) {
        chk = KVMMU_RMP_CHK_HV_OWNED;
        *fault = KVMMU_RMP_RC_NPF;
        *exitinfo = npf_base(a, false);
    }
    return chk;
}

/* The VMPL permission check of an encrypted access (permission mask p of the access's VMPL). */
static inline bool vmpl_allows(const struct kvmmu_rmp_access *a, uint32_t p, bool is_write)
{
    if (a->kind == KVMMU_RMP_ACC_FETCH)
        return p & (a->user ? PERM_XU : PERM_XS);
    if (is_write)
        return (p & (PERM_R | PERM_W)) == (PERM_R | PERM_W);
    return p & PERM_R;
}

/* An encrypted (C=1 or forced) access: the first check of the governing entry it fails. */
static inline int guest_check_private(const struct kvmmu_rmp *t, const struct kvmmu_rmp_access *a,
                                      uint32_t level, bool is_write)
{
    const uint64_t *e = entry_ptr(t, a->pfn);
    bool in2m = false;
    if (!e || (level > PG_LEVEL_4K && !entry_ptr(t, a->pfn & PMD_PFN_MASK)))
        return KVMMU_RMP_CHK_COVERED;
    const uint64_t *g = governing(t, a->pfn, e, &in2m);
    uint64_t lo = g[0];
    uint64_t want = in2m ? lo_gfn(lo) + (a->pfn & (PTRS_PER_PMD - 1)) : lo_gfn(lo);
    if (!(lo & RMP_ASSIGNED) || lo_asid(lo) != a->asid)
        return KVMMU_RMP_CHK_GUEST_OWNED;
    if (want != a->gfn)
        return KVMMU_RMP_CHK_REVERSE_MAP;
    if (lo & RMP_IMMUTABLE)
        return KVMMU_RMP_CHK_MUTABLE;
    if (in2m != (level > PG_LEVEL_4K))
        return KVMMU_RMP_CHK_PAGE_SIZE;
    if (!(lo & RMP_VALIDATED))
        return KVMMU_RMP_CHK_VALIDATED;
    if (!vmpl_allows(a, a->vmpl < 4 ? hi_perm(g[1], a->vmpl) : 0, is_write))
        return KVMMU_RMP_CHK_VMPL;
    return KVMMU_RMP_CHK_OK;
}

/* The fault an encrypted access raises when it fails check chk (none for OK), and its exit info. */
static inline void private_fault(const struct kvmmu_rmp_access *a, int chk, int *fault,
                                 uint64_t *exitinfo)
{
    if (chk == KVMMU_RMP_CHK_VALIDATED) {
        *fault = KVMMU_RMP_RC_VC;
        *exitinfo = SVM_EXIT_VC_NOT_VALIDATED;
    } else if (chk != KVMMU_RMP_CHK_OK) {
        *fault = KVMMU_RMP_RC_NPF;
        *exitinfo = npf_base(a, true) | (chk == KVMMU_RMP_CHK_PAGE_SIZE ? PFERR_GUEST_SIZEM : 0) |
                    (chk == KVMMU_RMP_CHK_VMPL ? PFERR_GUEST_VMPL : 0);
    }
}

int kvmmu_rmp_guest_check(const struct kvmmu_rmp *t, const struct kvmmu_rmp_access *a,
                          int *fault, uint64_t *exitinfo)
{
    bool is_write = a->kind == KVMMU_RMP_ACC_WRITE || a->kind == KVMMU_RMP_ACC_PT_WRITE;
    bool forced_c = a->kind == KVMMU_RMP_ACC_FETCH || a->kind == KVMMU_RMP_ACC_PT_READ ||
                    a->kind == KVMMU_RMP_ACC_PT_WRITE;
    uint32_t level = a->npt_level > PG_LEVEL_2M ? PG_LEVEL_2M : a->npt_level;
    *fault = 0;
    *exitinfo = 0;

    if (!(a->snp_active && (a->c_bit || forced_c)))
        return guest_check_shared(t, a, level, is_write, fault, exitinfo);
    int chk = guest_check_private(t, a, level, is_write);
    private_fault(a, chk, fault, exitinfo);
    return chk;
}

size_t kvmmu_rmp_guest_check_batch(const struct kvmmu_rmp *t, const uint64_t *pfn,
                                   const uint64_t *gfn, const struct kvmmu_rmp_access *proto,
                                   uint8_t *check, size_t n)
{
    struct kvmmu_rmp_access a = *proto;
    size_t first = 0;
    for (size_t i = 0; i < n; i++) {
        int fault;
        uint64_t ei;
        a.pfn = pfn[i];
        a.gfn = gfn[i];
        check[i] = (uint8_t)kvmmu_rmp_guest_check(t, &a, &fault, &ei);
        if (check[i] && !first)
            first = i + 1;
    }
    return first;
}

/* ------------------------------------------------------------ scalar entry points
 *
 * One call per scalar Python call: the operands are checked here (-1 when one breaks a
 * rule; the Python side then re-checks them to name it) and the results packed in the
 * return word. */

/* snp_lookup_rmpentry(): -1 beyond the table, else assigned | level << 1. */
int kvmmu_rmp_lookup_word(const struct kvmmu_rmp *t, uint64_t pfn)
{
    bool a;
    int lv;
    if (kvmmu_rmp_lookup(t, pfn, &a, &lv))
        return -1;
    return (int)a | lv << 1;
}

/* The host check: -1 for a level outside 1..3, else check | #PF error code << 8. */
int64_t kvmmu_rmp_host_check_word(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t level, bool user)
{
    uint64_t ec;
    if (level < PG_LEVEL_4K || level > PG_LEVEL_1G)
        return -1;
    int chk = kvmmu_rmp_host_check(t, pfn, level, user, &ec);
    return (int64_t)((uint64_t)chk | ec << 8);
}

/* The guest access check: -1 for a VMPL above 3, an NPT level outside 1..3 or an unknown
 * access kind, else check | fault (KVMMU_RMP_RC_*, 0 none) << 8 | exit info << 20. */
int64_t kvmmu_rmp_guest_check_word(const struct kvmmu_rmp *t, uint64_t pfn, uint64_t gfn,
                                   uint32_t asid, uint32_t vmpl, uint32_t npt_level, uint32_t kind,
                                   bool c_bit, bool snp_active, bool user)
{
    if (vmpl > 3 || npt_level < PG_LEVEL_4K || npt_level > PG_LEVEL_1G ||
        kind > KVMMU_RMP_ACC_PT_WRITE)
        return -1;
    struct kvmmu_rmp_access a = {
        .pfn = pfn, .gfn = gfn, .asid = asid, .vmpl = (uint8_t)vmpl,
        .npt_level = (uint8_t)npt_level, .kind = (uint8_t)kind, .c_bit = c_bit,
        .snp_active = snp_active, .user = user, .pad = {0},
    };
    int fault;
    uint64_t ei;
    int chk = kvmmu_rmp_guest_check(t, &a, &fault, &ei);
    return (int64_t)((uint64_t)chk | (uint64_t)fault << 8 | ei << 20);
}

int kvmmu_rmp_rmpupdate_fields(const struct kvmmu_rmp *t, uint64_t pfn, uint64_t gpa,
                               uint8_t assigned, uint8_t pagesize, uint8_t immutable, uint32_t asid)
{
    struct kvmmu_rmp_state st = {gpa, assigned, pagesize, immutable, 0, asid};
    return kvmmu_rmp_rmpupdate(t, pfn, &st);
}

/* PVALIDATE / RMPADJUST: rc | exit info << 12. */
int64_t kvmmu_rmp_pvalidate_word(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t asid,
                                 uint32_t vmpl, uint64_t gfn, uint32_t size, uint32_t validate)
{
    uint64_t ei;
    int rc = kvmmu_rmp_pvalidate(t, pfn, asid, vmpl, gfn, size, validate, &ei);
    return (int64_t)((uint64_t)rc | ei << 12);
}

int64_t kvmmu_rmp_rmpadjust_word(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t asid,
                                 uint32_t vmpl, uint64_t gfn, uint32_t size, uint32_t target_vmpl,
                                 uint32_t perms, uint32_t vmsa)
{
    uint64_t ei;
    int rc = kvmmu_rmp_rmpadjust(t, pfn, asid, vmpl, gfn, size, target_vmpl, perms, vmsa, &ei);
    return (int64_t)((uint64_t)rc | ei << 12);
}

/* handle_user_rmp_page_fault() of the v7/v8 SNP host patches, given the host mapping of
 * the faulting address: UNMAP (no PTE), SIGBUS (the lookup failed or the 4K entry is
 * assigned), SPLIT (host level above the RMP level), else RETRY.  -1 for a level outside
 * 1..3 or a PTE pfn wider than KVMMU_RMP_PTE_PFN_BITS; else action (KVMMU_RMP_UPF_*) |
 * RMP level (0: no lookup) << 2 | the 4K pfn << 4. */
int64_t kvmmu_rmp_user_fault(const struct kvmmu_rmp *t, bool pte_present, uint64_t pte_pfn,
                             uint32_t level, uint64_t address)
{
    if (level < PG_LEVEL_4K || level > PG_LEVEL_1G || (pte_pfn >> KVMMU_RMP_PTE_PFN_BITS))
        return -1;
    if (!pte_present)
        return KVMMU_RMP_UPF_UNMAP;
    uint64_t pfn = pte_pfn;
    if (level > PG_LEVEL_4K)
        pfn |= (address & (KBIT(12 + 9 * (level - 1)) - 1)) >> 12;
    bool a;
    int lv;
    if (kvmmu_rmp_lookup(t, pfn, &a, &lv))
        return (int64_t)(KVMMU_RMP_UPF_SIGBUS | pfn << 4);
    uint64_t act = a ? KVMMU_RMP_UPF_SIGBUS
                     : (int)level > lv ? KVMMU_RMP_UPF_SPLIT : KVMMU_RMP_UPF_RETRY;
    return (int64_t)(act | (uint64_t)lv << 2 | pfn << 4);
}

/* The SNP gmem max-mapping-level hook: 0 (no limit) for a non-SNP VM, 4K when the lookup
 * fails or the entry is not assigned, else the RMP level. */
int kvmmu_rmp_max_mapping_level(const struct kvmmu_rmp *t, uint64_t pfn, bool snp)
{
    bool a;
    int lv;
    if (!snp)
        return 0;
    if (kvmmu_rmp_lookup(t, pfn, &a, &lv) || !a)
        return PG_LEVEL_4K;
    return lv;
}

/* kvm_max_private_mapping_level(): min(max_level, the level of the gmem folio order
 * (PMD order 9, PUD order 18), hook_level when not 0).  -1 for max_level outside 1..3,
 * an order above 255 or hook_level above 3. */
int kvmmu_rmp_max_private_level(uint32_t max_level, uint32_t max_order, uint32_t hook_level)
{
    if (max_level < PG_LEVEL_4K || max_level > PG_LEVEL_1G || max_order > 255 ||
        hook_level > PG_LEVEL_1G)
        return -1;
    uint32_t lv = max_order >= 18 ? PG_LEVEL_1G : max_order >= 9 ? PG_LEVEL_2M : PG_LEVEL_4K;
    if (max_level < lv)
        lv = max_level;
    if (hook_level && hook_level < lv)
        lv = hook_level;
    return (int)lv;
}

/* The entries of the 2M region at start that the table covers: all 512, or up to the
 * table's end inside the region. */
static uint32_t region_count(const struct kvmmu_rmp *t, uint64_t start)
{
    uint32_t cnt = PTRS_PER_PMD;
    if (!entry_ptr(t, start + PTRS_PER_PMD - 1))
        for (cnt = 0; cnt < PTRS_PER_PMD && entry_ptr(t, start + cnt); cnt++)
            ;
    return cnt;
}

/* dump_rmpentry(): -1 if pfn is beyond the table; 0 if its entry is assigned (out[0..2] =
 * pfn, lo, hi); else 1 + k, out[0 .. 3k) the (pfn, lo, hi) of the k non-zero entries of the
 * pfn's 2M region, in order, up to the first pfn beyond the table.  out: 3 * 512 words. */
int kvmmu_rmp_dump(const struct kvmmu_rmp *t, uint64_t pfn, uint64_t *out)
{
    const uint64_t *e = entry_ptr(t, pfn);
    if (!e)
        return -1;
    if (e[0] & RMP_ASSIGNED) {
        out[0] = pfn;
        out[1] = e[0];
        out[2] = e[1];
        return 0;
    }
    uint64_t start = pfn & PMD_PFN_MASK;
    const uint64_t *b = entry_ptr(t, start);       /* a 2M block's entries are contiguous */
    const uint32_t cnt = region_count(t, start);
    int k = 0;
    for (uint32_t i = 0; i < cnt; i++) {
        if (b[2 * i] | b[2 * i + 1]) {
            out[3 * k] = start + i;
            out[3 * k + 1] = b[2 * i];
            out[3 * k + 2] = b[2 * i + 1];
            k++;
        }
    }
    return 1 + k;
}

/* v in lower-case hex, exactly `digits` digits (the low ones), written backwards from end. */
static inline void put_hex_digits(char *end, uint64_t v, int digits)
{
    static const char hex[16] = {'0', '1', '2', '3', '4', '5', '6', '7',
                                 '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'};
    for (int i = 1; i <= digits; i++, v >>= 4)
        end[-i] = hex[v & 0xF];
}

/* "0x" and v in lower-case hex, zero-padded to at least `digits` digits (Python's "#0{2+digits}x"). */
static inline char *put_hex(char *p, uint64_t v, int digits)
{
    int n = v ? (64 - __builtin_clzll(v) + 3) / 4 : 1;
    n = n > digits ? n : digits;
    p[0] = '0';
    p[1] = 'x';
    put_hex_digits(p + 2 + n, v, n);
    return p + 2 + n;
}

/* The 8 hex digits of v, most significant first, in one word (SWAR: nibble k to byte k,
 * byte-swapped, then '0' + d, plus 'a' - '0' - 10 where d > 9). */
static inline uint64_t hex8_word(uint32_t v)
{
    uint64_t x = v;
    x = (x | x << 16) & UINT64_C(0x0000FFFF0000FFFF);
    x = (x | x << 8) & UINT64_C(0x00FF00FF00FF00FF);
    x = (x | x << 4) & UINT64_C(0x0F0F0F0F0F0F0F0F);
    x = __builtin_bswap64(x);
    uint64_t over9 = ((x + UINT64_C(0x0606060606060606)) >> 4) & UINT64_C(0x0101010101010101);
    return x + UINT64_C(0x3030303030303030) + over9 * ('a' - '0' - 10);
}

/* "0x" and the 16 hex digits of v: an entry quadword of the dump lines (0 too, as before). */
static inline char *put_hex16(char *p, uint64_t v)
{
    uint64_t w[2] = {hex8_word((uint32_t)(v >> 32)), hex8_word((uint32_t)v)};
    p[0] = '0';
    p[1] = 'x';
    memcpy(p + 2, w, 16);
    return p + 18;
}

#define PUT_LIT(p, s)       (memcpy((p), (s), sizeof(s) - 1), (p) + sizeof(s) - 1)

/* "[lo - hi]" as the kernel prints an entry's two quadwords ("[%#018llx - %#018llx]"). */
static inline char *put_quads(char *p, uint64_t lo, uint64_t hi)
{
    *p++ = '[';
    p = put_hex16(p, lo);
    p = PUT_LIT(p, " - ");
    p = put_hex16(p, hi);
    *p++ = ']';
    return p;
}

/* the header line (< 128 bytes) and 512 region lines of 67 bytes at most */
_Static_assert(KVMMU_RMP_DUMP_TEXT_MAX >= 128 + PTRS_PER_PMD * 67, "dump text buffer too small");

/* dump_rmpentry()'s log lines (mainline, v6.9+) for pfn, '\n'-separated, into out
 * (KVMMU_RMP_DUMP_TEXT_MAX bytes, not NUL-terminated): the raw entry if assigned, else the
 * region header and every non-zero entry of the 2M region (the entries kvmmu_rmp_dump
 * finds: one branch-free pass collects their indexes, a second prints them).  Returns the
 * length, or -1 if pfn is beyond the table (the caller prints the -EFAULT line). */
int kvmmu_rmp_dump_text(const struct kvmmu_rmp *t, uint64_t pfn, char *out)
{
    const uint64_t *e = entry_ptr(t, pfn);
    char *p = out;
    if (!e)
        return -1;
    p = put_hex(PUT_LIT(p, "PFN "), pfn, 1);
    if (e[0] & RMP_ASSIGNED) {
        p = put_quads(PUT_LIT(p, ", RMP entry: "), e[0], e[1]);
        return (int)(p - out);
    }
    uint64_t start = pfn & PMD_PFN_MASK;
    const uint64_t *b = entry_ptr(t, start);       /* a 2M block's entries are contiguous */
    const uint32_t cnt = region_count(t, start);
    uint16_t idx[PTRS_PER_PMD];
    uint32_t k = 0;
    for (uint32_t i = 0; i < cnt; i++) {
        idx[k] = (uint16_t)i;
        k += (b[2 * i] | b[2 * i + 1]) != 0;
    }
    p = PUT_LIT(p, " unassigned, dumping non-zero entries in 2M PFN region: [");
    p = put_hex(p, start, 1);
    p = put_hex(PUT_LIT(p, " - "), start + PTRS_PER_PMD, 1);
    *p++ = ']';
    for (uint32_t j = 0; j < k; j++) {
        uint32_t i = idx[j];
        p = put_hex(PUT_LIT(p, "\nPFN: "), start + i, 1);
        p = put_quads(PUT_LIT(p, ", "), b[2 * i], b[2 * i + 1]);
    }
    return (int)(p - out);
}

/* ------------------------------------------------------------ fewer operands */

/* guest_check()'s default access: a C=1 read at VMPL 0 through a 4K NPT mapping by an SNP
 * guest in supervisor mode (pfn, gfn and ASID set per call). */
static const struct kvmmu_rmp_access READ_ACCESS = {
    .pfn = 0, .gfn = 0, .asid = 0, .vmpl = 0, .npt_level = PG_LEVEL_4K, .kind = KVMMU_RMP_ACC_READ,
    .c_bit = true, .snp_active = true, .user = false, .pad = {0},
};

/* The guest check of the default access: the check code only (its fault and exit info
 * follow from it: kvmmu_rmp_guest_check_read_word). */
int kvmmu_rmp_guest_check_read(const struct kvmmu_rmp *t, uint64_t pfn, uint64_t gfn,
                               uint32_t asid)
{
    struct kvmmu_rmp_access a = READ_ACCESS;
    int fault;
    uint64_t ei;
    a.pfn = pfn;
    a.gfn = gfn;
    a.asid = asid;
    return kvmmu_rmp_guest_check(t, &a, &fault, &ei);
}

/* The check codes are 0..KVMMU_RMP_CHK_VMPL, VMPL the highest (the last check of APM Table
 * 15-39): kvmmu_rmp_guest_check_read_word() refuses the codes above it. */
_Static_assert(KVMMU_RMP_CHK_OK < KVMMU_RMP_CHK_VMPL && KVMMU_RMP_CHK_COVERED < KVMMU_RMP_CHK_VMPL &&
               KVMMU_RMP_CHK_HV_OWNED < KVMMU_RMP_CHK_VMPL &&
               KVMMU_RMP_CHK_GUEST_OWNED < KVMMU_RMP_CHK_VMPL &&
               KVMMU_RMP_CHK_REVERSE_MAP < KVMMU_RMP_CHK_VMPL &&
               KVMMU_RMP_CHK_MUTABLE < KVMMU_RMP_CHK_VMPL &&
               KVMMU_RMP_CHK_PAGE_SIZE < KVMMU_RMP_CHK_VMPL &&
               KVMMU_RMP_CHK_VALIDATED < KVMMU_RMP_CHK_VMPL, "KVMMU_RMP_CHK_VMPL is the highest check code");

/* The word of kvmmu_rmp_guest_check_word for the default access failing check chk (the
 * fault and exit info of an encrypted access); -1 for an unknown check code. */
int64_t kvmmu_rmp_guest_check_read_word(uint32_t chk)
{
    int fault = 0;
    uint64_t ei = 0;
    if (chk > KVMMU_RMP_CHK_VMPL)
        return -1;
    private_fault(&READ_ACCESS, (int)chk, &fault, &ei);
    return (int64_t)((uint64_t)chk | (uint64_t)fault << 8 | ei << 20);
}

/* The word (rc | exit info << 12) of a guest instruction's result code: rc, plus
 * KVMMU_RMP_INSN_SIZEM for an NPF with PFERR_GUEST_SIZEM (guest_insn_npf's exit infos; a #VC
 * carries the PAGE_NOT_VALIDATED exit code).  -1 for a code that is not one of these. */
int64_t kvmmu_rmp_insn_code_word(uint32_t code)
{
    uint32_t rc = code & ~(uint32_t)KVMMU_RMP_INSN_SIZEM;
    if (code >= 2 * KVMMU_RMP_INSN_SIZEM || ((code & KVMMU_RMP_INSN_SIZEM) && rc != KVMMU_RMP_RC_NPF))
        return -1;
    uint64_t ei = rc == KVMMU_RMP_RC_NPF ? INSN_NPF_BASE | (code != rc ? PFERR_GUEST_SIZEM : 0)
                : rc == KVMMU_RMP_RC_VC ? SVM_EXIT_VC_NOT_VALIDATED : 0;
    return (int64_t)(rc | ei << 12);
}

/* RMPADJUST at VMPL 0 on a 4K page, VMSA 0, as its result code (kvmmu_rmp_insn_code_word);
 * -1 should the code not give back the exact word (the caller then takes the word). */
int kvmmu_rmp_rmpadjust_vmpl0(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t asid,
                              uint64_t gfn, uint32_t target_vmpl, uint32_t perms)
{
    int64_t w = kvmmu_rmp_rmpadjust_word(t, pfn, asid, 0, gfn, 0, target_vmpl, perms, 0);
    uint64_t ei = (uint64_t)w >> 12;
    uint32_t code = (uint32_t)(w & 0xFFF) | ((ei & PFERR_GUEST_SIZEM) ? KVMMU_RMP_INSN_SIZEM : 0);
    return kvmmu_rmp_insn_code_word(code) == w ? (int)code : -1;
}

/* kvmmu_rmp_user_fault on a present 4K PTE, whose 4K pfn is the PTE's: the word without
 * the pfn (action | RMP level << 2), or -1 for a PTE pfn wider than KVMMU_RMP_PTE_PFN_BITS. */
int kvmmu_rmp_user_fault_4k(const struct kvmmu_rmp *t, uint64_t pte_pfn, uint64_t address)
{
    int64_t w = kvmmu_rmp_user_fault(t, true, pte_pfn, PG_LEVEL_4K, address);
    return w < 0 ? -1 : (int)(w & 15);
}

/* The entry's low quadword as an index of 8-byte words from the table base (entries are
 * 16-byte aligned in the buffer); -1 beyond the table. */
int64_t kvmmu_rmp_entry_index(const struct kvmmu_rmp *t, uint64_t pfn)
{
    const uint64_t *e = entry_ptr(t, pfn);
    return e ? (int64_t)(((const uint8_t *)(const void *)e - t->base) / 8) : -1;
}
