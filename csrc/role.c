/*
 * Page role words (union kvm_mmu_page_role, kvm_mmu_extended_role,
 * kvm_cpu_role) and the shadow-page hash (hash_64 / kvm_page_table_hashfn).
 *
 * A role word is a sequence of unsigned bit-fields allocated from bit 0
 * upward (x86-64 SysV), so every era is described by data: a layout of
 * (shift, width) pairs.  Packing gathers one byte per field into the word;
 * unpacking scatters the word back into one byte per field.
 *
 * Fast path: with BMI2 (checked at run time, per call: no global state) a
 * row of bytes is compressed with PEXT through a per-byte width mask and
 * the compressed bits are deposited into the word's field bits with PDEP.
 * This works because the fields are in ascending, non-overlapping order, so
 * "field bits in row order" and "field bits in word order" are the same
 * sequence.  The portable path does the shifts one field at a time.
 */
#include <string.h>

#include "common.h"
#include "pykvmmu.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define ROLE_HAVE_BMI2_PATH 1
#else
#define ROLE_HAVE_BMI2_PATH 0
#endif

#define GOLDEN_RATIO_32 UINT32_C(0x61C88647)
#define GOLDEN_RATIO_64 UINT64_C(0x61C8864680B583EB)
#define GOLDEN_RATIO_PRIME_64 UINT64_C(0x9e37fffffffc0001)

_Static_assert(KVMMU_ROLE_ROW32 == 16 && KVMMU_ROLE_ROW64 == 32, "row sizes");
_Static_assert(KVMMU_ROLE_MAXF >= KVMMU_ROLE_ROW64, "a 64-bit row holds at most MAXF fields");

/* Per-call derived masks: lane k (8 bytes of the row) may hold these bits. */
struct role_masks {
    uint64_t lane[KVMMU_ROLE_ROW64 / 8];
    uint32_t lane_bits[KVMMU_ROLE_ROW64 / 8];
    uint32_t lanes;
};

static uint32_t word_bits(const struct kvmmu_role_layout *lay)
{
    return lay->row == KVMMU_ROLE_ROW64 ? 64u : 32u;
}

int kvmmu_role_layout_check(const struct kvmmu_role_layout *lay)
{
    uint64_t used = 0;
    uint32_t next = 0;

    if (lay->row != KVMMU_ROLE_ROW32 && lay->row != KVMMU_ROLE_ROW64)
        return KVMMU_ROLE_E_LAYOUT;
    if (lay->nfields > lay->row)
        return KVMMU_ROLE_E_LAYOUT;
    for (uint32_t i = 0; i < lay->nfields; i++) {
        uint32_t s = lay->shift[i], w = lay->width[i];

        if (w < 1 || w > 8 || s < next || s + w > word_bits(lay))
            return KVMMU_ROLE_E_LAYOUT;
        used |= KGENMASK(s + w - 1, s);
        next = s + w;
    }
    for (uint32_t i = lay->nfields; i < KVMMU_ROLE_MAXF; i++)
        if (lay->width[i] || lay->shift[i])
            return KVMMU_ROLE_E_LAYOUT;
    return used == lay->used_mask ? 0 : KVMMU_ROLE_E_LAYOUT;
}

static void role_masks(const struct kvmmu_role_layout *lay, struct role_masks *m)
{
    memset(m, 0, sizeof(*m));
    m->lanes = lay->row / 8;
    for (uint32_t i = 0; i < lay->nfields; i++) {
        uint64_t fm = KBIT(lay->width[i]) - 1;

        m->lane[i / 8] |= fm << (8 * (i % 8));
        m->lane_bits[i / 8] += lay->width[i];
    }
}

static uint64_t load64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
    return v;
}

static void store64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, sizeof(v));
}

/* True when some byte of the row has bits outside its field's width. */
static bool row_too_wide(const struct role_masks *m, const uint8_t *row)
{
    uint64_t bad = 0;

    for (uint32_t k = 0; k < m->lanes; k++)
        bad |= load64(row + 8 * k) & ~m->lane[k];
    return bad != 0;
}

static uint64_t pack_portable(const struct kvmmu_role_layout *lay, const uint8_t *row)
{
    uint64_t w = 0;

    for (uint32_t i = 0; i < lay->nfields; i++)
        w |= (uint64_t)row[i] << lay->shift[i];
    return w;
}

static void unpack_portable(const struct kvmmu_role_layout *lay, uint64_t w, uint8_t *row)
{
    memset(row, 0, lay->row);
    for (uint32_t i = 0; i < lay->nfields; i++)
        row[i] = (uint8_t)((w >> lay->shift[i]) & (KBIT(lay->width[i]) - 1));
}

uint64_t kvmmu_role_pack(const struct kvmmu_role_layout *lay, const uint8_t *fields, int *err)
{
    struct role_masks m;

    role_masks(lay, &m);
    if (row_too_wide(&m, fields)) {
        if (err)
            *err = KVMMU_ROLE_E_WIDTH;
        return 0;
    }
    if (err)
        *err = 0;
    return pack_portable(lay, fields);
}

void kvmmu_role_unpack(const struct kvmmu_role_layout *lay, uint64_t word, uint8_t *fields)
{
    unpack_portable(lay, word, fields);
}

uint64_t kvmmu_role_pack_named(const struct kvmmu_role_layout *lay, const uint8_t *spec,
                               const uint8_t *vals, uint32_t n)
{
    uint64_t w = 0;

    _Static_assert(KVMMU_ROLE_SPEC_END >= KVMMU_ROLE_MAXF, "the end byte is no field index");
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t k = spec[2 * i], v = vals[i];

        /* k == KVMMU_ROLE_SPEC_END (n too large) stops here, before its limit byte */
        if (k >= lay->nfields || v > spec[2 * i + 1] || (v >> lay->width[k]))
            return KVMMU_ROLE_REFUSED;
        w |= (uint64_t)v << lay->shift[k];
    }
    return spec[2 * (size_t)n] == KVMMU_ROLE_SPEC_END ? w : KVMMU_ROLE_REFUSED;
}

#if ROLE_HAVE_BMI2_PATH
__attribute__((target("bmi2")))
static uint64_t pack_bmi2(const struct role_masks *m, uint64_t used, const uint8_t *row)
{
    uint64_t c = 0;
    uint32_t off = 0;

    for (uint32_t k = 0; k < m->lanes; k++) {
        if (!m->lane_bits[k])
            continue;
        c |= _pext_u64(load64(row + 8 * k), m->lane[k]) << off;
        off += m->lane_bits[k];
    }
    return _pdep_u64(c, used);
}

__attribute__((target("bmi2")))
static void unpack_bmi2(const struct role_masks *m, uint64_t used, uint64_t w, uint8_t *row)
{
    uint64_t c = _pext_u64(w, used);

    for (uint32_t k = 0; k < m->lanes; k++) {
        store64(row + 8 * k, _pdep_u64(c, m->lane[k]));
        c = m->lane_bits[k] >= 64 ? 0 : c >> m->lane_bits[k];
    }
}

/* The two-lane (32-bit word) forms, unrolled for the batch loops. */
__attribute__((target("bmi2")))
static size_t pack32_bmi2(const struct role_masks *m, uint64_t used, const uint8_t *rows,
                          uint32_t *out, size_t n, int *err)
{
    const uint64_t m0 = m->lane[0], m1 = m->lane[1];
    const uint32_t b0 = m->lane_bits[0];

    for (size_t i = 0; i < n; i++) {
        uint64_t lo = load64(rows + 16 * i), hi = load64(rows + 16 * i + 8);

        if (KVMMU_UNLIKELY((lo & ~m0) | (hi & ~m1))) {
            *err = KVMMU_ROLE_E_WIDTH;
            return i + 1;
        }
        /* b0 <= 32 here (a 32-bit word has at most 32 field bits). */
        out[i] = (uint32_t)_pdep_u64(_pext_u64(lo, m0) | (_pext_u64(hi, m1) << b0), used);
    }
    return 0;
}

__attribute__((target("bmi2")))
static size_t unpack32_bmi2(const struct role_masks *m, uint64_t used, const uint32_t *words,
                            uint8_t *rows, size_t n, bool strict, int *err)
{
    const uint64_t m0 = m->lane[0], m1 = m->lane[1];
    const uint32_t b0 = m->lane_bits[0];

    for (size_t i = 0; i < n; i++) {
        uint64_t w = words[i];
        uint64_t c = _pext_u64(w, used);

        if (KVMMU_UNLIKELY(strict && (w & ~used))) {
            *err = KVMMU_ROLE_E_RESERVED;
            return i + 1;
        }
        store64(rows + 16 * i, _pdep_u64(c, m0));
        store64(rows + 16 * i + 8, _pdep_u64(c >> b0, m1));
    }
    return 0;
}

/* The BMI2 kernels belong to the KVMMU_ISA_AVX2 level of the layout's cap. */
static bool have_bmi2(const struct kvmmu_role_layout *lay)
{
    return lay->isa >= KVMMU_ISA_AVX2 && __builtin_cpu_supports("bmi2");
}
#else
static bool have_bmi2(const struct kvmmu_role_layout *lay)
{
    (void)lay;
    return false;
}
#endif

/* The scalar batch loops (BMI2 when allowed, else portable) over 32-bit words. */
static size_t pack32_scalar(const struct kvmmu_role_layout *lay, const struct role_masks *m,
                            const uint8_t *fields, uint32_t *out, size_t n, int *err)
{
#if ROLE_HAVE_BMI2_PATH
    if (lay->row == KVMMU_ROLE_ROW32 && have_bmi2(lay))
        return pack32_bmi2(m, lay->used_mask, fields, out, n, err);
#endif
    for (size_t i = 0; i < n; i++) {
        const uint8_t *row = fields + (size_t)lay->row * i;

        if (KVMMU_UNLIKELY(row_too_wide(m, row))) {
            *err = KVMMU_ROLE_E_WIDTH;
            return i + 1;
        }
        out[i] = (uint32_t)pack_portable(lay, row);
    }
    return 0;
}

static size_t unpack32_scalar(const struct kvmmu_role_layout *lay, const struct role_masks *m,
                              const uint32_t *words, uint8_t *out, size_t n, bool strict, int *err)
{
#if ROLE_HAVE_BMI2_PATH
    if (lay->row == KVMMU_ROLE_ROW32 && have_bmi2(lay))
        return unpack32_bmi2(m, lay->used_mask, words, out, n, strict, err);
#endif
    (void)m;
    for (size_t i = 0; i < n; i++) {
        if (KVMMU_UNLIKELY(strict && (words[i] & ~lay->used_mask))) {
            *err = KVMMU_ROLE_E_RESERVED;
            return i + 1;
        }
        unpack_portable(lay, words[i], out + (size_t)lay->row * i);
    }
    return 0;
}

#if ROLE_HAVE_BMI2_PATH && defined(KVMMU_HAVE_AVX512)
/*
 * AVX-512 pack / unpack of 16-byte rows and 32-bit words, 16 rows per step, as a tree of
 * merges: byte pairs -> 16-bit lanes -> 32-bit lanes -> 64-bit lanes -> the row, each merge
 * a variable shift of the upper half next to the lower half's field bits (one shift and one
 * bit-select per level), then the gaps of the used mask opened (pack) or closed (unpack) one
 * at a time.  Unpack runs the tree backwards, leaving bits of the next fields above each
 * part, cleared by one AND with the fields' width masks at the end.  The constants depend
 * only on the layout: per-lane shift counts and select masks of one row, repeated per row.
 */
#define ROLE_MAXGAP 8

struct role_simd32 {
    uint16_t c1[32], m1[32];        /* level 1 (16-bit lanes): count, low-part mask */
    uint32_t c2[16], m2[16];        /* level 2 (32-bit lanes) */
    uint64_t c3[8], m3[8];          /* level 3 (64-bit lanes) */
    uint64_t bad[8];                /* bits outside each byte's field width */
    uint8_t width[64];              /* each byte's width mask (0 past nfields) */
    uint32_t w3lo;                  /* bits of fields 0..7: the upper lane's place */
    uint32_t ngap;
    uint32_t gap_at[ROLE_MAXGAP], gap_len[ROLE_MAXGAP];   /* final positions, ascending */
};

/* False when the layout does not fit the kernels (more gaps than ROLE_MAXGAP). */
static bool role_simd32_init(const struct kvmmu_role_layout *lay, const struct role_masks *m,
                             struct role_simd32 *c)
{
    uint32_t w[16] = {0}, w1[8], w2[4];
    const uint32_t used = (uint32_t)lay->used_mask;

    for (uint32_t i = 0; i < lay->nfields && i < 16; i++)
        w[i] = lay->width[i];
    for (uint32_t j = 0; j < 8; j++)
        w1[j] = w[2 * j] + w[2 * j + 1];
    for (uint32_t j = 0; j < 4; j++)
        w2[j] = w1[2 * j] + w1[2 * j + 1];
    for (uint32_t r = 0; r < 4; r++) {
        for (uint32_t j = 0; j < 8; j++) {
            c->c1[8 * r + j] = (uint16_t)(8 - w[2 * j]);
            c->m1[8 * r + j] = (uint16_t)((1u << w[2 * j]) - 1);
        }
        for (uint32_t j = 0; j < 4; j++) {
            c->c2[4 * r + j] = 16 - w1[2 * j];
            c->m2[4 * r + j] = (1u << w1[2 * j]) - 1;
        }
        for (uint32_t j = 0; j < 2; j++) {
            c->c3[2 * r + j] = 32 - w2[2 * j];
            c->m3[2 * r + j] = KBIT(w2[2 * j]) - 1;
            c->bad[2 * r + j] = ~m->lane[j];
        }
        for (uint32_t j = 0; j < 16; j++)
            c->width[16 * r + j] = (uint8_t)((1u << w[j]) - 1);
    }
    c->w3lo = w2[0] + w2[1];
    c->ngap = 0;
    for (uint32_t b = 0; b < 32 && (used >> b);) {
        if (used & (1u << b)) {
            b++;
            continue;
        }
        uint32_t e = b;
        while (!(used & (1u << e)))
            e++;
        if (c->ngap == ROLE_MAXGAP)
            return false;
        c->gap_at[c->ngap] = b;
        c->gap_len[c->ngap++] = e - b;
        b = e;
    }
    return true;
}

/* Streaming stores for a batch writing out_bytes: only past KVMMU_STREAM_MIN_BYTES. */
static inline bool role_stream(uint64_t out_bytes)
{
#if defined(KVMMU_HAVE_STREAM)
    return out_bytes >= KVMMU_STREAM_MIN_BYTES;
#else
    (void)out_bytes;
    return false;
#endif
}

#define ROLE_SEL 0xE4               /* ternary logic: C ? A : B */
#define ROLE_AND_OR 0xEC            /* ternary logic: (A & C) | B */
#define ROLE_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

/* Rows done (a multiple of 16); stops before the first 16-row block with a too-wide byte. */
ROLE_AVX512 static size_t pack32_avx512(const struct role_simd32 *c, const uint8_t *rows,
                                        uint32_t *out, size_t n, bool nt)
{
    const __m512i c1 = _mm512_loadu_si512((const void *)c->c1), m1 = _mm512_loadu_si512((const void *)c->m1);
    const __m512i c2 = _mm512_loadu_si512((const void *)c->c2), m2 = _mm512_loadu_si512((const void *)c->m2);
    const __m512i c3 = _mm512_loadu_si512((const void *)c->c3), m3 = _mm512_loadu_si512((const void *)c->m3);
    const __m512i bad = _mm512_loadu_si512((const void *)c->bad);
    const __m512i lo_idx = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i hi_idx = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
    const __m128i w3 = _mm_cvtsi32_si128((int)c->w3lo);
    size_t i = 0;

    for (; i + 16 <= n; i += 16) {
        __m512i x[4];
        __mmask8 k = 0;

        for (int r = 0; r < 4; r++) {
            x[r] = _mm512_loadu_si512((const void *)(rows + 16 * i + 64 * r));
            k |= _mm512_test_epi64_mask(x[r], bad);
        }
        if (KVMMU_UNLIKELY(k))
            break;
        for (int r = 0; r < 4; r++) {
            __m512i v = x[r];

            v = _mm512_ternarylogic_epi64(v, _mm512_srlv_epi16(v, c1), m1, ROLE_SEL);
            v = _mm512_ternarylogic_epi64(v, _mm512_srlv_epi32(v, c2), m2, ROLE_SEL);
            x[r] = _mm512_ternarylogic_epi64(v, _mm512_srlv_epi64(v, c3), m3, ROLE_SEL);
        }
        __m256i y[2];
        for (int h = 0; h < 2; h++) {
            const __m512i lo = _mm512_permutex2var_epi64(x[2 * h], lo_idx, x[2 * h + 1]);
            const __m512i hi = _mm512_permutex2var_epi64(x[2 * h], hi_idx, x[2 * h + 1]);

            y[h] = _mm512_cvtepi64_epi32(_mm512_or_si512(lo, _mm512_sll_epi64(hi, w3)));
        }
        __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(y[0]), y[1], 1);
        for (uint32_t g = 0; g < c->ngap; g++) {
            const __m512i low = _mm512_set1_epi32((int)((1u << c->gap_at[g]) - 1));
            const __m512i up = _mm512_sll_epi32(_mm512_andnot_si512(low, wv),
                                                _mm_cvtsi32_si128((int)c->gap_len[g]));

            wv = _mm512_ternarylogic_epi32(wv, up, low, ROLE_AND_OR);
        }
        if (nt)
            _mm512_stream_si512((void *)(out + i), wv);
        else
            _mm512_storeu_si512((void *)(out + i), wv);
    }
    if (nt)
        _mm_sfence();
    return i;
}

/* Words done (a multiple of 16); strict: stops before the first block with a reserved bit. */
ROLE_AVX512 static size_t unpack32_avx512(const struct role_simd32 *c, uint32_t used,
                                          const uint32_t *words, uint8_t *rows, size_t n,
                                          bool strict, bool nt)
{
    const __m512i c1 = _mm512_loadu_si512((const void *)c->c1);
    const __m512i c2 = _mm512_loadu_si512((const void *)c->c2);
    const __m512i c3 = _mm512_loadu_si512((const void *)c->c3);
    const __m512i h1 = _mm512_set1_epi16(0xFF), h2 = _mm512_set1_epi32(0xFFFF);
    const __m512i h3 = _mm512_set1_epi64(0xFFFFFFFF);
    const __m512i width = _mm512_loadu_si512((const void *)c->width);
    const __m512i usedv = _mm512_set1_epi32((int)used);
    const __m512i a_idx = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0);
    const __m512i b_idx = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
    const __m128i w3 = _mm_cvtsi32_si128((int)c->w3lo);
    size_t i = 0;

    for (; i + 16 <= n; i += 16) {
        __m512i wv = _mm512_loadu_si512((const void *)(words + i));

        if (strict && KVMMU_UNLIKELY(_mm512_test_epi32_mask(wv, _mm512_andnot_si512(usedv, _mm512_set1_epi32(-1)))))
            break;
        wv = _mm512_and_si512(wv, usedv);
        for (uint32_t g = c->ngap; g-- > 0;) {
            const __m512i low = _mm512_set1_epi32((int)((1u << c->gap_at[g]) - 1));

            wv = _mm512_ternarylogic_epi32(
                wv, _mm512_srl_epi32(wv, _mm_cvtsi32_si128((int)c->gap_len[g])), low, ROLE_SEL);
        }
        __m512i x[4];
        for (int h = 0; h < 2; h++) {
            const __m512i lo = _mm512_cvtepu32_epi64(h ? _mm512_extracti64x4_epi64(wv, 1)
                                                       : _mm512_castsi512_si256(wv));
            const __m512i hi = _mm512_srl_epi64(lo, w3);

            x[2 * h] = _mm512_permutex2var_epi64(lo, a_idx, hi);
            x[2 * h + 1] = _mm512_permutex2var_epi64(lo, b_idx, hi);
        }
        for (int r = 0; r < 4; r++) {
            __m512i v = x[r];

            v = _mm512_ternarylogic_epi64(v, _mm512_sllv_epi64(v, c3), h3, ROLE_SEL);
            v = _mm512_ternarylogic_epi64(v, _mm512_sllv_epi32(v, c2), h2, ROLE_SEL);
            v = _mm512_ternarylogic_epi64(v, _mm512_sllv_epi16(v, c1), h1, ROLE_SEL);
            v = _mm512_and_si512(v, width);
            if (nt)
                _mm512_stream_si512((void *)(rows + 16 * i + 64 * r), v);
            else
                _mm512_storeu_si512((void *)(rows + 16 * i + 64 * r), v);
        }
    }
    if (nt)
        _mm_sfence();
    return i;
}
#endif

/* A batch's start: the layout's masks in *m, and the error word (err, or dummy when err is
 * NULL) cleared; returns the error word's address. */
static inline int *role_batch_begin(const struct kvmmu_role_layout *lay, struct role_masks *m,
                                    int *err, int *dummy)
{
    if (!err)
        err = dummy;
    *err = 0;
    role_masks(lay, m);
    return err;
}

#if ROLE_HAVE_BMI2_PATH && defined(KVMMU_HAVE_AVX512)
/* Whether a batch of n ROW32 rows takes the AVX-512 path (16 rows or more, the ISA cap
 * allowing it, a layout role_simd32_init can hold: *c filled), and how: its output (elem
 * bytes per row at out) is streamed (*nt) only past KVMMU_STREAM_MIN_BYTES and when out is
 * elem-aligned, after a scalar head of *head rows up to a 64-byte boundary. */
static inline bool role_simd32_plan(const struct kvmmu_role_layout *lay,
                                    const struct role_masks *m, struct role_simd32 *c,
                                    const void *out, size_t elem, size_t n, bool *nt, size_t *head)
{
    if (lay->row != KVMMU_ROLE_ROW32 || n < 16 || !kvmmu_avx512_ok(lay->isa) ||
        !role_simd32_init(lay, m, c))
        return false;
    *nt = role_stream((uint64_t)n * elem) && !((uintptr_t)out & (elem - 1));
    *head = *nt ? ((64 - ((uintptr_t)out & 63)) & 63) / elem : 0;
    return true;
}
#endif

size_t kvmmu_role_pack_batch32(const struct kvmmu_role_layout *lay, const uint8_t *fields,
                               uint32_t *out, size_t n, int *err)
{
    struct role_masks m;
    int dummy;

    err = role_batch_begin(lay, &m, err, &dummy);
#if ROLE_HAVE_BMI2_PATH && defined(KVMMU_HAVE_AVX512)
    struct role_simd32 c;
    size_t head;
    bool nt;

    if (role_simd32_plan(lay, &m, &c, out, 4, n, &nt, &head)) {
        size_t r = pack32_scalar(lay, &m, fields, out, head, err), done;

        if (r)
            return r;
        done = head + pack32_avx512(&c, fields + 16 * head, out + head, n - head, nt);
        r = pack32_scalar(lay, &m, fields + 16 * done, out + done, n - done, err);
        return r ? r + done : 0;
    }
#endif
    return pack32_scalar(lay, &m, fields, out, n, err);
}

size_t kvmmu_role_unpack_batch32(const struct kvmmu_role_layout *lay, const uint32_t *words,
                                 uint8_t *out, size_t n, bool strict, int *err)
{
    struct role_masks m;
    int dummy;

    err = role_batch_begin(lay, &m, err, &dummy);
#if ROLE_HAVE_BMI2_PATH && defined(KVMMU_HAVE_AVX512)
    struct role_simd32 c;
    size_t head;
    bool nt;

    if (role_simd32_plan(lay, &m, &c, out, 16, n, &nt, &head)) {
        size_t r = unpack32_scalar(lay, &m, words, out, head, strict, err), done;

        if (r)
            return r;
        done = head + unpack32_avx512(&c, (uint32_t)lay->used_mask, words + head,
                                      out + 16 * head, n - head, strict, nt);
        r = unpack32_scalar(lay, &m, words + done, out + 16 * done, n - done, strict, err);
        return r ? r + done : 0;
    }
#endif
    return unpack32_scalar(lay, &m, words, out, n, strict, err);
}

size_t kvmmu_role_pack_batch64(const struct kvmmu_role_layout *lay, const uint8_t *fields,
                               uint64_t *out, size_t n, int *err)
{
    struct role_masks m;
    bool fast = have_bmi2(lay);
    int dummy;

    err = role_batch_begin(lay, &m, err, &dummy);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *row = fields + (size_t)lay->row * i;

        if (KVMMU_UNLIKELY(row_too_wide(&m, row))) {
            *err = KVMMU_ROLE_E_WIDTH;
            return i + 1;
        }
#if ROLE_HAVE_BMI2_PATH
        if (fast) {
            out[i] = pack_bmi2(&m, lay->used_mask, row);
            continue;
        }
#endif
        out[i] = pack_portable(lay, row);
    }
    (void)fast;
    return 0;
}

size_t kvmmu_role_unpack_batch64(const struct kvmmu_role_layout *lay, const uint64_t *words,
                                 uint8_t *out, size_t n, bool strict, int *err)
{
    struct role_masks m;
    bool fast = have_bmi2(lay);
    int dummy;

    err = role_batch_begin(lay, &m, err, &dummy);
    for (size_t i = 0; i < n; i++) {
        uint8_t *row = out + (size_t)lay->row * i;

        if (KVMMU_UNLIKELY(strict && (words[i] & ~lay->used_mask))) {
            *err = KVMMU_ROLE_E_RESERVED;
            return i + 1;
        }
#if ROLE_HAVE_BMI2_PATH
        if (fast) {
            unpack_bmi2(&m, lay->used_mask, words[i], row);
            continue;
        }
#endif
        unpack_portable(lay, words[i], row);
    }
    (void)fast;
    return 0;
}

/* ---- hash_64 (include/linux/hash.h) ---------------------------------- */

static uint32_t hash32_mul(uint32_t x)
{
    return x * GOLDEN_RATIO_32;
}

uint32_t kvmmu_role_hash_64(uint64_t val, uint32_t bits, int variant)
{
    if (bits < 1 || bits > 32)
        return 0;
    switch (variant) {
    case KVMMU_HASH_32BIT_HOST:
        return hash32_mul((uint32_t)val ^ hash32_mul((uint32_t)(val >> 32))) >> (32 - bits);
    case KVMMU_HASH_PRE_4_7:
        return (uint32_t)((val * GOLDEN_RATIO_PRIME_64) >> (64 - bits));
    default:
        return (uint32_t)((val * GOLDEN_RATIO_64) >> (64 - bits));
    }
}

#if ROLE_HAVE_BMI2_PATH
/* The multiplicative hash with AVX-512DQ (vpmullq): 8 gfns per step; streamed stores of
 * the 32-bit buckets (no read-for-ownership) when nt, past the 32-byte aligned head. */
__attribute__((target("avx512f,avx512dq,avx512vl")))
static void hash_mul_avx512(const uint64_t *val, uint32_t *out, size_t n, uint64_t g, uint32_t s,
                            bool nt)
{
    const __m512i vg = _mm512_set1_epi64((long long)g);
    const __m128i vs = _mm_cvtsi32_si128((int)s);
    size_t i = 0;

    while (nt && i < n && ((uintptr_t)(out + i) & 31))
        out[i] = (uint32_t)((val[i] * g) >> s), i++;
    for (; i + 8 <= n; i += 8) {
        __m512i v = _mm512_loadu_si512((const void *)(val + i));
        __m256i h = _mm512_cvtepi64_epi32(_mm512_srl_epi64(_mm512_mullo_epi64(v, vg), vs));

        if (nt)
            _mm256_stream_si256((__m256i *)(void *)(out + i), h);
        else
            _mm256_storeu_si256((__m256i *)(void *)(out + i), h);
    }
    if (nt)
        _mm_sfence();
    for (; i < n; i++)
        out[i] = (uint32_t)((val[i] * g) >> s);
}
#endif

size_t kvmmu_role_hash_batch(const uint64_t *val, uint32_t *out, size_t n, uint32_t bits,
                             int variant, uint32_t isa)
{
    if (bits < 1 || bits > 32)
        return n ? 1 : 0;
    if (variant == KVMMU_HASH_32BIT_HOST) {
        const uint32_t s = 32 - bits;

        for (size_t i = 0; i < n; i++) {
            uint64_t v = val[i];

            out[i] = hash32_mul((uint32_t)v ^ hash32_mul((uint32_t)(v >> 32))) >> s;
        }
    } else {
        const uint64_t g = variant == KVMMU_HASH_PRE_4_7 ? GOLDEN_RATIO_PRIME_64 : GOLDEN_RATIO_64;
        const uint32_t s = 64 - bits;

#if ROLE_HAVE_BMI2_PATH && defined(KVMMU_HAVE_AVX512)
        if (kvmmu_avx512_ok(isa)) {
            hash_mul_avx512(val, out, n, g, s, (uint64_t)n * 4 >= KVMMU_STREAM_MIN_BYTES);
            return 0;
        }
#endif
        (void)isa;
        for (size_t i = 0; i < n; i++)
            out[i] = (uint32_t)((val[i] * g) >> s);
    }
    return 0;
}

size_t kvmmu_role_bucket_count(const uint32_t *bucket, uint64_t *counts, uint32_t nbuckets,
                               size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (KVMMU_UNLIKELY(bucket[i] >= nbuckets))
            return i + 1;
        counts[bucket[i]]++;
    }
    return 0;
}
