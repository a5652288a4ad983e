/*
 * pykvmmu C core: the one public header.  It is both #included by the C
 * sources and fed (minus preprocessor lines, except plain integer #defines)
 * to cffi's cdef by build_core.py, so it holds only declarations cffi can
 * parse: fixed-width types, structs, enums, prototypes.
 *
 * Conventions
 *  - Every function takes its configuration as a const struct pointer; the
 *    core has no global mutable state.
 *  - Batch functions take (pointer, count) pairs and return 0 on success or
 *    (index + 1) of the first element that broke a rule, leaving the rule
 *    code in *err when err is not NULL.  They never allocate.
 *  - Scalar functions never fail; Python validates their inputs.
 */
#ifndef PYKVMMU_H
#define PYKVMMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ======================================================================
 * errors: the rule text of every KVMMU_*_E_* code (csrc/errors.h, pykvmmu/errors.py)
 * ====================================================================== */
/* ERRORS_SECTION */
struct kvmmu_error_text {
    const char *domain;              /* spte, mmio, role, rmp, private, vm */
    const char *name;                /* the code's macro name, e.g. KVMMU_E_PFN */
    int32_t code;
    const char *text;                /* the rule broken (may hold str.format fields) */
};
/* The rows of the table (*n of them); defined in csrc/errors.h. */
const struct kvmmu_error_text *kvmmu_error_texts(size_t *n);

/* ======================================================================
 * spte: MmuConfig and the SPTE engine (csrc/spte.c, pykvmmu/spte.py)
 * ====================================================================== */
/* SPTE_SECTION */
/* Rule switches of the kernel-era layout profile (pykvmmu/profile.py). */
#define KVMMU_R_MMU_PRESENT_BIT11   1
#define KVMMU_R_MMIO_SPECIAL_TAG    2
#define KVMMU_R_AD_ALWAYS           4
#define KVMMU_R_SHORTCUT_CAN_UNSYNC 8
#define KVMMU_R_SHORTCUT_OLD_W      16
#define KVMMU_R_ATOMIC_LOCKLESS     32
#define KVMMU_R_ATOMIC_MMUW_NOT_W   64
#define KVMMU_R_ATOMIC_NEEDS        128
#define KVMMU_R_SPLIT_EXEC_ACCESS   256
#define KVMMU_R_LOCKLESS_BOTH_BITS  512
#define KVMMU_R_SHORTCUT_OLD_W_LEAF 1024

/* Configuration flags. */
#define KVMMU_F_EPT                 1
#define KVMMU_F_MMIO_ENABLED        2
/* The configuration's defaults for make_spte (kvm_ad_enabled(), nx_huge_pages). */
#define KVMMU_F_AD_ENABLED          4
#define KVMMU_F_NX_HUGE_PAGES       8
#define KVMMU_F_MT_HOOK             16
#define KVMMU_F_IGNORE_GUEST_PAT    32
#define KVMMU_F_HAS_FROZEN          64
#define KVMMU_F_EPT_VE_CHECK        128
/*
 * ISA caps, shared by every engine: the highest instruction-set level whose hand-written
 * kernels (intrinsics, streaming stores) a call may use; each kernel also needs the CPU to
 * have it.  PORTABLE: plain C loops only; AVX2: also SSE2/AVX2/BMI2 kernels and streaming
 * stores; AVX512: everything.  Carried in each engine's configuration struct.
 */
#define KVMMU_ISA_PORTABLE          0
#define KVMMU_ISA_AVX2              1
#define KVMMU_ISA_AVX512            2

/* The masks KVM computes at module load, plus the profile's constants. */
struct kvmmu_cfg {
    uint64_t present_mask;
    uint64_t user_mask;
    uint64_t accessed_mask;
    uint64_t dirty_mask;
    uint64_t nx_mask;
    uint64_t x_mask;
    uint64_t acc_track_mask;
    uint64_t host_writable_mask;
    uint64_t mmu_writable_mask;
    uint64_t me_value;
    uint64_t mmio_value;
    uint64_t mmio_mask;
    uint64_t mmio_access_mask;
    uint64_t nonpresent_or_rsvd_mask;
    uint64_t nonpresent_or_rsvd_lower_gfn_mask;
    uint64_t base_addr_mask;
    uint64_t mmu_present_mask;
    uint64_t nonpresent_value;
    uint64_t frozen_value;
    uint64_t mmio_gen_low_mask;
    uint64_t mmio_gen_high_mask;
    uint64_t rsvd_bits_mask[10];     /* [2][5], row-major: [large][level-1] */
    uint64_t bad_mt_xwr;
    uint32_t mmio_gen_low_shift;
    uint32_t mmio_gen_high_shift;
    uint32_t mmio_gen_bits;
    uint32_t rules;                  /* KVMMU_R_* */
    uint32_t flags;                  /* KVMMU_F_* */
    uint32_t isa;                    /* KVMMU_ISA_* cap */
};
/* The highest KVMMU_ISA_* level this CPU supports. */
uint32_t kvmmu_isa_cpu(void);

/* Per-SPTE inputs of make_spte() that are not in the configuration. */
#define KVMMU_MK_AD_DISABLED    1
#define KVMMU_MK_WRPROT_ONLY    2
#define KVMMU_MK_PREFETCH       4
#define KVMMU_MK_SYNCHRONIZING  8
#define KVMMU_MK_HOST_WRITABLE  16
#define KVMMU_MK_HOST_MMIO      32
#define KVMMU_MK_UNSYNC_FAILS   64
#define KVMMU_MK_NX_HUGE        128
#define KVMMU_MK_ALL_FLAGS      255
/* kvmmu_make_spte only: take ad_disabled, nx_huge and old_spte from the configuration. */
#define KVMMU_MK_AD_DEFAULT     256
#define KVMMU_MK_NX_DEFAULT     512
#define KVMMU_MK_OLD_DEFAULT    1024
#define KVMMU_MEMTYPE_AUTO      255

/* Error codes reported by batch functions through *err. */
#define KVMMU_E_PFN             1
#define KVMMU_E_LEVEL           2
#define KVMMU_E_ACCESS          3
#define KVMMU_E_FLAGS           4
#define KVMMU_E_MEMTYPE         5
#define KVMMU_E_INDEX           6
#define KVMMU_E_NOT_HUGE        7
#define KVMMU_E_NOT_PRESENT     8

/* kvmmu_make_spte's return: 0 or a KVMMU_E_* code in bits 7:0, then the outputs. */
#define KVMMU_MKR_WRPROT            256
/* warnings: pte_access | shadow_present_mask == SHADOW_NONPRESENT_VALUE; is_rsvd_spte() */
#define KVMMU_MKR_WARN_NONPRESENT   512
#define KVMMU_MKR_WARN_RSVD         1024
/* One leaf SPTE: validates, builds it into *spte and reports wrprot and the warnings. */
uint32_t kvmmu_make_spte(const struct kvmmu_cfg *cfg, uint64_t pfn, uint64_t old_spte,
                         uint32_t level, uint32_t pte_access, uint32_t mkflags, uint32_t memtype,
                         uint64_t *spte);
size_t kvmmu_make_spte_batch(const struct kvmmu_cfg *cfg, const uint64_t *pfn,
                             const uint64_t *old_spte, uint64_t old_spte_scalar,
                             const uint8_t *level, uint32_t level_scalar,
                             const uint8_t *pte_access, uint32_t pte_access_scalar,
                             const uint8_t *mkflags, uint32_t mkflags_scalar,
                             const uint8_t *memtype, uint32_t memtype_scalar,
                             uint64_t *out, uint8_t *wrprot, size_t n, int *err);

uint64_t kvmmu_make_nonleaf_spte(const struct kvmmu_cfg *cfg, uint64_t child_pa, bool ad_disabled);
uint64_t kvmmu_mark_spte_for_access_track(const struct kvmmu_cfg *cfg, uint64_t spte);
uint64_t kvmmu_restore_acc_track_spte(const struct kvmmu_cfg *cfg, uint64_t spte);
size_t kvmmu_make_nonleaf_spte_batch(const struct kvmmu_cfg *cfg, const uint64_t *child_pa,
                                     bool ad_disabled, uint64_t *out, size_t n);
size_t kvmmu_make_small_spte_batch(const struct kvmmu_cfg *cfg, const uint64_t *huge_spte,
                                   uint32_t child_level, uint32_t role_access,
                                   const uint16_t *index, uint32_t index_scalar, bool nx_huge,
                                   uint64_t *out, size_t n, int *err);
size_t kvmmu_make_huge_spte_batch(const struct kvmmu_cfg *cfg, const uint64_t *small_spte,
                                  uint32_t level, bool nx_huge, uint64_t *out, size_t n, int *err);
size_t kvmmu_access_track_batch(const struct kvmmu_cfg *cfg, const uint64_t *in, bool restore,
                                uint64_t *out, size_t n);

/* One SPTE predicate, a row of csrc/spte_rules.h (pykvmmu/spte.py builds PREDICATES, the
 * predicate functions, their docs, DECODE_DTYPE and __all__ from this table). */
struct kvmmu_spte_pred_info {
    const char *kernel_fn;           /* the kernel function modelled (also the Python name) */
    const char *field;               /* decode field p_<field> */
    const char *feature;             /* LayoutProfile flag the era needs, "" for every era */
    const char *doc;                 /* one line for the docstring */
    int id;                          /* bit of a predicate mask, byte of kvmmu_spte_info.pred */
    int needs_level;                 /* the rule reads the level */
};
const struct kvmmu_spte_pred_info *kvmmu_spte_pred_table(size_t *n);

bool kvmmu_spte_pred(const struct kvmmu_cfg *cfg, int pred, uint64_t spte, uint32_t level);
bool kvmmu_is_mmio_spte(const struct kvmmu_cfg *cfg, uint64_t spte);
bool kvmmu_leaf_spte_change_needs_tlb_flush(const struct kvmmu_cfg *cfg, uint64_t old_spte,
                                            uint64_t new_spte);
size_t kvmmu_leaf_spte_change_needs_tlb_flush_batch(const struct kvmmu_cfg *cfg,
                                                    const uint64_t *old_spte,
                                                    const uint64_t *new_spte, uint8_t *out,
                                                    size_t n);
uint64_t kvmmu_spte_to_pfn(const struct kvmmu_cfg *cfg, uint64_t spte);
size_t kvmmu_spte_pred_batch(const struct kvmmu_cfg *cfg, int pred, const uint64_t *spte,
                             const uint8_t *level, uint32_t level_scalar, uint8_t *out,
                             size_t n, int *err);
size_t kvmmu_spte_to_pfn_batch(const struct kvmmu_cfg *cfg, const uint64_t *spte,
                               uint64_t *out, size_t n);

/* One SPTE decoded (the numpy structured dtype in pykvmmu/spte.py mirrors it). */
#define KVMMU_KIND_NONPRESENT 0
#define KVMMU_KIND_PRESENT    1
#define KVMMU_KIND_MMIO       2
#define KVMMU_KIND_FROZEN     3
#define KVMMU_KIND_OTHER      4
struct kvmmu_spte_info {
    uint64_t spte;
    uint64_t pfn;
    uint8_t kind;            /* KVMMU_KIND_* */
    uint8_t ad_type;         /* bits 53:52 */
    uint8_t memtype;         /* EPT bits 5:3 */
    uint8_t ipat;
    uint8_t access;          /* ACC_* bits the entry grants */
    uint8_t saved_rx;        /* access-track saved R (bit 0) and X (bit 2) */
    uint8_t level;
    uint8_t pad;
    uint8_t pred[24];        /* [i] = predicate i (0 where the era lacks it) */
};
/* decode()'s result: the record of decode_batch, and for an MMIO SPTE (kind
 * KVMMU_KIND_MMIO) what get_mmio_spte_gfn/_access/_generation give (0 otherwise). */
struct kvmmu_spte_decoded {
    struct kvmmu_spte_info info;
    uint64_t mmio_gfn, mmio_access, mmio_generation;
};
/* One SPTE decoded into *out in one call; returns 0 or KVMMU_E_LEVEL. */
int kvmmu_spte_decode(const struct kvmmu_cfg *cfg, uint64_t spte, uint32_t level,
                      struct kvmmu_spte_decoded *out);
size_t kvmmu_spte_decode_batch(const struct kvmmu_cfg *cfg, const uint64_t *spte,
                               const uint8_t *level, uint32_t level_scalar,
                               struct kvmmu_spte_info *out, size_t n, int *err);

/*
 * Checked scalar forms for the Python fast paths: each validates and computes in one call.
 * kvmmu_make_spte_fast: kvmmu_make_spte with old_spte = SHADOW_NONPRESENT_VALUE and the
 * memtype of vmx_get_mt_mask(); returns KVMMU_MKR_* >> 8 (0..7: bit 0 wrprot, bits 1-2 the
 * warnings) or KVMMU_MKF_ERROR (the caller's full checks then name the rule).
 * kvmmu_make_small_spte_checked / _huge_: nx is 0, 1 or KVMMU_NX_DEFAULT (the
 * configuration's nx_huge_pages); they return 0 for any input that breaks a rule (a valid
 * result can be 0 only in theory: the caller then runs its full checks, which decide).
 */
#define KVMMU_MKF_ERROR         8
#define KVMMU_NX_DEFAULT        2
uint32_t kvmmu_make_spte_fast(const struct kvmmu_cfg *cfg, uint64_t pfn, uint32_t level,
                              uint32_t pte_access, uint32_t mkflags, uint64_t *spte);
uint64_t kvmmu_make_small_spte_checked(const struct kvmmu_cfg *cfg, uint64_t huge_spte,
                                       uint32_t child_level, uint32_t role_access, uint32_t index,
                                       uint32_t nx);
uint64_t kvmmu_make_huge_spte_checked(const struct kvmmu_cfg *cfg, uint64_t small_spte,
                                      uint32_t level, uint32_t nx);

/*
 * Test entry (tests/test_isa_spte.py): predicate p of n SPTEs (n a multiple of 64) by the
 * AVX-512 vector-lane kernel, whichever predicates the batch gives it (PRED_VLANES), so
 * that every row kind of its lane language runs.  Returns 0, 1 when the kernel cannot run
 * (built without AVX-512, or the CPU or the configuration's ISA cap lacks it), -1 for p,
 * level (1..5) or n out of range.
 */
int kvmmu_spte_pred_vlane_batch(const struct kvmmu_cfg *cfg, int p, const uint64_t *spte,
                                uint32_t level, uint8_t *out, size_t n);

/* ======================================================================
 * mmio: MMIO SPTEs and generations (csrc/mmio.c, pykvmmu/mmio.py)
 * ====================================================================== */
/* MMIO_SECTION */
/* A gfn addresses a 52-bit GPA. */
#define KVMMU_MMIO_GFN_BITS         40
/* Batch error codes (through *err). */
#define KVMMU_MMIO_E_GFN            1
#define KVMMU_MMIO_E_ACCESS         2
#define KVMMU_MMIO_E_IN_PROGRESS    3
/* Outcome of a fault on an MMIO SPTE (handle_mmio_page_fault). */
/*   EMULATE: generation matches, cache and emulate; STALE: RET_PF_INVALID, the slow
 *   path rebuilds the SPTE; IN_PROGRESS: RET_PF_INVALID during a memslot update,
 *   nothing cached; NOT_MMIO: RET_PF_RETRY. */
#define KVMMU_MMIO_EMULATE          0
#define KVMMU_MMIO_STALE            1
#define KVMMU_MMIO_IN_PROGRESS      2
#define KVMMU_MMIO_NOT_MMIO         3
/* Field selector of kvmmu_mmio_get_batch. */
#define KVMMU_MMIO_GET_GFN          0
#define KVMMU_MMIO_GET_ACCESS       1
#define KVMMU_MMIO_GET_GENERATION   2

uint64_t kvmmu_mmio_generation_mask(const struct kvmmu_cfg *cfg);
uint64_t kvmmu_mmio_gen_spte_bits(const struct kvmmu_cfg *cfg, uint64_t gen);
uint64_t kvmmu_mmio_make(const struct kvmmu_cfg *cfg, uint64_t gfn, uint32_t access,
                         uint64_t generation);
uint64_t kvmmu_mmio_get_gfn(const struct kvmmu_cfg *cfg, uint64_t spte);
uint64_t kvmmu_mmio_get_access(const struct kvmmu_cfg *cfg, uint64_t spte);
uint64_t kvmmu_mmio_get_generation(const struct kvmmu_cfg *cfg, uint64_t spte);
bool kvmmu_mmio_check(const struct kvmmu_cfg *cfg, uint64_t spte, uint64_t memslots_gen);
int kvmmu_mmio_fault_outcome(const struct kvmmu_cfg *cfg, uint64_t spte, uint64_t memslots_gen);
bool kvmmu_mmio_invalidate_zaps(const struct kvmmu_cfg *cfg, uint64_t gen, uint32_t nr_as_ids);
size_t kvmmu_mmio_make_batch(const struct kvmmu_cfg *cfg, const uint64_t *gfn,
                             const uint64_t *access, uint64_t access_scalar,
                             const uint64_t *gen, uint64_t gen_scalar,
                             uint64_t *out, size_t n, int *err);
void kvmmu_mmio_get_batch(const struct kvmmu_cfg *cfg, int which, const uint64_t *spte,
                          uint64_t *out, size_t n);
void kvmmu_mmio_check_batch(const struct kvmmu_cfg *cfg, const uint64_t *spte, const uint64_t *gen,
                            uint64_t gen_scalar, uint8_t *out, size_t n);
void kvmmu_mmio_fault_outcome_batch(const struct kvmmu_cfg *cfg, const uint64_t *spte,
                                    const uint64_t *gen, uint64_t gen_scalar, uint8_t *out,
                                    size_t n);
size_t kvmmu_mmio_invalidate_batch(const struct kvmmu_cfg *cfg, const uint64_t *gen,
                                   uint32_t nr_as_ids, uint8_t *zap, size_t n, int *err);
/* GEN_LOW_MASK | GEN_HIGH_MASK of the era. */
uint64_t kvmmu_mmio_generation_bits(const struct kvmmu_cfg *cfg);
/* Checked scalar forms: generation_mmio_spte_mask() returns UINT64_MAX (never a result) for a
 * generation wider than MMIO_SPTE_GEN_MASK; kvm_mmu_invalidate_mmio_sptes() returns -1 for
 * the update-in-progress bit or nr_as_ids outside 1..2, else 0/1 (zap all). */
uint64_t kvmmu_mmio_gen_spte_bits_checked(const struct kvmmu_cfg *cfg, uint64_t gen);
int kvmmu_mmio_invalidate_checked(const struct kvmmu_cfg *cfg, uint64_t gen, uint32_t nr_as_ids);

/* ======================================================================
 * role: page role words and the shadow-page hash (csrc/role.c, pykvmmu/role.py)
 * ====================================================================== */
/* ROLE_SECTION */
/*
 * A role layout: the bit-fields of one era's union (kvm_mmu_page_role,
 * kvm_mmu_extended_role, or the 64-bit kvm_cpu_role), in ascending bit order.
 * An unpacked role is a row of `row` bytes (16 for 32-bit words, 32 for
 * 64-bit words); byte i holds field i, bytes past nfields are 0.
 */
#define KVMMU_ROLE_MAXF          32
#define KVMMU_ROLE_ROW32         16
#define KVMMU_ROLE_ROW64         32
/* Batch rule codes: a field value wider than its field; bits outside every
 * field; a malformed layout. */
#define KVMMU_ROLE_E_WIDTH       1
#define KVMMU_ROLE_E_RESERVED    2
#define KVMMU_ROLE_E_LAYOUT      3
/* hash_64 variants: 64-bit kernel v4.7+; 32-bit kernel v4.7+; before v4.7. */
#define KVMMU_HASH_X86_64        0
#define KVMMU_HASH_32BIT_HOST    1
#define KVMMU_HASH_PRE_4_7       2
#define KVMMU_MMU_HASH_SHIFT     12

struct kvmmu_role_layout {
    uint64_t used_mask;                /* union of the fields' bits */
    uint32_t nfields;                  /* fields in use, <= row */
    uint32_t row;                      /* KVMMU_ROLE_ROW32 or KVMMU_ROLE_ROW64 */
    uint8_t shift[KVMMU_ROLE_MAXF];
    uint8_t width[KVMMU_ROLE_MAXF];    /* 1..8 */
    uint32_t isa;                      /* KVMMU_ISA_* cap of the batch kernels */
};

int kvmmu_role_layout_check(const struct kvmmu_role_layout *lay);
uint64_t kvmmu_role_pack(const struct kvmmu_role_layout *lay, const uint8_t *fields, int *err);
void kvmmu_role_unpack(const struct kvmmu_role_layout *lay, uint64_t word, uint8_t *fields);
/* Scalar pack of named fields (in any order): spec holds, per value, the field index and
 * the largest value the caller allows, then KVMMU_ROLE_SPEC_END right after the n pairs;
 * value vals[i] goes into field spec[2i].  Returns the word, or KVMMU_ROLE_REFUSED (all
 * ones: bits outside used_mask) when an index is not a field, a value is above its limit or
 * wider than its field, or the end byte is not at pair n; the caller then runs its full
 * checks. */
#define KVMMU_ROLE_SPEC_END      255
#define KVMMU_ROLE_REFUSED       0xFFFFFFFFFFFFFFFF
uint64_t kvmmu_role_pack_named(const struct kvmmu_role_layout *lay, const uint8_t *spec,
                               const uint8_t *vals, uint32_t n);
size_t kvmmu_role_pack_batch32(const struct kvmmu_role_layout *lay, const uint8_t *fields,
                               uint32_t *out, size_t n, int *err);
size_t kvmmu_role_unpack_batch32(const struct kvmmu_role_layout *lay, const uint32_t *words,
                                 uint8_t *out, size_t n, bool strict, int *err);
size_t kvmmu_role_pack_batch64(const struct kvmmu_role_layout *lay, const uint8_t *fields,
                               uint64_t *out, size_t n, int *err);
size_t kvmmu_role_unpack_batch64(const struct kvmmu_role_layout *lay, const uint64_t *words,
                                 uint8_t *out, size_t n, bool strict, int *err);
uint32_t kvmmu_role_hash_64(uint64_t val, uint32_t bits, int variant);
size_t kvmmu_role_hash_batch(const uint64_t *val, uint32_t *out, size_t n, uint32_t bits,
                             int variant, uint32_t isa);
size_t kvmmu_role_bucket_count(const uint32_t *bucket, uint64_t *counts, uint32_t nbuckets,
                               size_t n);

/* ======================================================================
 * rmp: the SEV-SNP Reverse Map Table (csrc/rmp.c, pykvmmu/rmp/)
 * ====================================================================== */
/* RMP_SECTION */
/* Table geometry (AMD APM 15.36.4 and 15.36.22; kernel snp_rmptable_init). */
#define KVMMU_RMP_BOOKKEEPING       16384
#define KVMMU_RMP_ENTRY_SIZE        16
#define KVMMU_RMP_RST_SIZE          4096
#define KVMMU_RMP_MAX_SEGMENTS      512
#define KVMMU_RMP_NONSEG_SHIFT      52

/* Raw entry layout (fact sheet section 1.1): THE description of the 16-byte entry, one row
 * per field: bits [SHIFT, SHIFT + WIDTH) of little-endian quadword WORD (0 = lo, 1 = hi).
 * csrc/rmp.c derives every mask from these rows; pykvmmu/rmp reads them (ENTRY_LAYOUT)
 * for RmpEntry's accessors and make_lo (tests/test_rmp_layout.py holds both to them). */
#define KVMMU_RMP_FLD_ASSIGNED_WORD         0
#define KVMMU_RMP_FLD_ASSIGNED_SHIFT        0
#define KVMMU_RMP_FLD_ASSIGNED_WIDTH        1
#define KVMMU_RMP_FLD_PAGESIZE_WORD         0
#define KVMMU_RMP_FLD_PAGESIZE_SHIFT        1
#define KVMMU_RMP_FLD_PAGESIZE_WIDTH        1
#define KVMMU_RMP_FLD_IMMUTABLE_WORD        0
#define KVMMU_RMP_FLD_IMMUTABLE_SHIFT       2
#define KVMMU_RMP_FLD_IMMUTABLE_WIDTH       1
#define KVMMU_RMP_FLD_SUBPAGE_COUNT_WORD    0
#define KVMMU_RMP_FLD_SUBPAGE_COUNT_SHIFT   3
#define KVMMU_RMP_FLD_SUBPAGE_COUNT_WIDTH   9
#define KVMMU_RMP_FLD_GPA_WORD              0
#define KVMMU_RMP_FLD_GPA_SHIFT             12
#define KVMMU_RMP_FLD_GPA_WIDTH             39
#define KVMMU_RMP_FLD_ASID_WORD             0
#define KVMMU_RMP_FLD_ASID_SHIFT            51
#define KVMMU_RMP_FLD_ASID_WIDTH            10
#define KVMMU_RMP_FLD_VMSA_WORD             0
#define KVMMU_RMP_FLD_VMSA_SHIFT            61
#define KVMMU_RMP_FLD_VMSA_WIDTH            1
#define KVMMU_RMP_FLD_VALIDATED_WORD        0
#define KVMMU_RMP_FLD_VALIDATED_SHIFT       62
#define KVMMU_RMP_FLD_VALIDATED_WIDTH       1
#define KVMMU_RMP_FLD_LOCK_WORD             0
#define KVMMU_RMP_FLD_LOCK_SHIFT            63
#define KVMMU_RMP_FLD_LOCK_WIDTH            1
#define KVMMU_RMP_FLD_VMPL0_WORD            1
#define KVMMU_RMP_FLD_VMPL0_SHIFT           0
#define KVMMU_RMP_FLD_VMPL0_WIDTH           8
#define KVMMU_RMP_FLD_VMPL1_WORD            1
#define KVMMU_RMP_FLD_VMPL1_SHIFT           8
#define KVMMU_RMP_FLD_VMPL1_WIDTH           8
#define KVMMU_RMP_FLD_VMPL2_WORD            1
#define KVMMU_RMP_FLD_VMPL2_SHIFT           16
#define KVMMU_RMP_FLD_VMPL2_WIDTH           8
#define KVMMU_RMP_FLD_VMPL3_WORD            1
#define KVMMU_RMP_FLD_VMPL3_SHIFT           24
#define KVMMU_RMP_FLD_VMPL3_WIDTH           8

/* Rule switches (struct kvmmu_rmp.flags); 0 = the APM reading everywhere. */
/* KVMMU_RMP_F_HOST_IMMUTABLE: host writes also need Immutable=0 (v7-v9 changelog) */
#define KVMMU_RMP_F_HOST_IMMUTABLE      1
/* KVMMU_RMP_F_OVERLAP_RC7: FAIL_OVERLAP is 7 (RFC v5-v7 numbering) */
#define KVMMU_RMP_F_OVERLAP_RC7         2
/* KVMMU_RMP_F_MIDDLE_FULL: 2M middle entries carry ASID/GPA/size/immutable too */
#define KVMMU_RMP_F_MIDDLE_FULL         4
/* KVMMU_RMP_F_PVALIDATE_VMPL_GP: PVALIDATE at VMPL>0 raises #GP, not FAIL_PERMISSION */
#define KVMMU_RMP_F_PVALIDATE_VMPL_GP   8
/* KVMMU_RMP_F_ALWAYS_RESET: RMPUPDATE clears Validated/VMSA/perms even if unchanged */
#define KVMMU_RMP_F_ALWAYS_RESET        16
#define KVMMU_RMP_F_ALL                 31

/* Instruction return codes (EAX), plus the faults a guest instruction can raise. */
#define KVMMU_RMP_RC_SUCCESS        0
#define KVMMU_RMP_RC_FAIL_INPUT     1
#define KVMMU_RMP_RC_FAIL_PERMISSION 2
#define KVMMU_RMP_RC_FAIL_INUSE     3
#define KVMMU_RMP_RC_FAIL_OVERLAP   4
#define KVMMU_RMP_RC_FAIL_SIZEMISMATCH 6
#define KVMMU_RMP_RC_FAIL_BADADDR   7
#define KVMMU_RMP_RC_FAIL_OVERLAP_RFC 7
#define KVMMU_RMP_RC_NOUPDATE       255
#define KVMMU_RMP_RC_NPF            256
#define KVMMU_RMP_RC_VC             257
#define KVMMU_RMP_RC_GP             258

/* Access checks (APM Table 15-39): the check that failed, 0 = all passed. */
#define KVMMU_RMP_CHK_OK            0
#define KVMMU_RMP_CHK_COVERED       1
#define KVMMU_RMP_CHK_HV_OWNED      2
#define KVMMU_RMP_CHK_GUEST_OWNED   3
#define KVMMU_RMP_CHK_REVERSE_MAP   4
#define KVMMU_RMP_CHK_MUTABLE       5
#define KVMMU_RMP_CHK_PAGE_SIZE     6
#define KVMMU_RMP_CHK_VALIDATED     7
#define KVMMU_RMP_CHK_VMPL          8

/* Guest access kinds. */
#define KVMMU_RMP_ACC_READ          0
#define KVMMU_RMP_ACC_WRITE         1
#define KVMMU_RMP_ACC_FETCH         2
#define KVMMU_RMP_ACC_PT_READ       3
#define KVMMU_RMP_ACC_PT_WRITE      4

/* Firmware page states (AMD SEV firmware snp_page_state numbering). */
#define KVMMU_RMP_STATE_INVALID     0
#define KVMMU_RMP_STATE_DEFAULT     1
#define KVMMU_RMP_STATE_HYPERVISOR  2
#define KVMMU_RMP_STATE_HV_FIXED    3
#define KVMMU_RMP_STATE_FIRMWARE    4
#define KVMMU_RMP_STATE_FIRMWARE_IOMMU 5
#define KVMMU_RMP_STATE_RECLAIM     6
#define KVMMU_RMP_STATE_CONTEXT     7
#define KVMMU_RMP_STATE_METADATA    8
#define KVMMU_RMP_STATE_PRE_GUEST   9
#define KVMMU_RMP_STATE_PRE_SWAP    10
#define KVMMU_RMP_STATE_GUEST_INVALID 11
#define KVMMU_RMP_STATE_GUEST_VALID 12

/* Batch error codes (through *err). */
#define KVMMU_RMP_E_RANGE           1
#define KVMMU_RMP_E_LEVEL           2
/* RMPUPDATE input rules (kvmmu_rmp_rmpupdate_batch_check; all are FAIL_INPUT) */
#define KVMMU_RMP_E_FIELD           3
#define KVMMU_RMP_E_ASID            4
#define KVMMU_RMP_E_GPA             5
#define KVMMU_RMP_E_ALIGN           6
#define KVMMU_RMP_E_BLOCK           7

/* A table: a buffer laid out as at RMP_BASE, and where its entries are. */
struct kvmmu_rmp {
    uint8_t *base;                   /* RMP_BASE: 16 KiB bookkeeping first */
    uint64_t size;                   /* bytes in the buffer */
    uint64_t nr_pfns;                /* pfns below this may be covered */
    uint32_t seg_shift;              /* KVMMU_RMP_NONSEG_SHIFT for a contiguous RMP */
    uint32_t nr_segs;                /* RST entries in use (1 when contiguous) */
    uint32_t flags;                  /* KVMMU_RMP_F_* */
    uint32_t pad;
    uint64_t seg_off[512];           /* byte offset in base of each segment's entry 0 */
    uint64_t seg_count[512];         /* entries of each segment (0 = not covered) */
    uint64_t *lvl_bits;              /* optional level index (NULL: none): bit i = Page_Size */
    uint64_t lvl_nbits;              /*   of the entry at pfn i * 512, kept by every writer */
};

/* RMPUPDATE input (the kernel's struct rmp_state, 16 bytes). */
struct kvmmu_rmp_state {
    uint64_t gpa;
    uint8_t assigned;
    uint8_t pagesize;
    uint8_t immutable;
    uint8_t rsvd;
    uint32_t asid;
};

/* One raw entry decoded (pykvmmu.rmp.FIELDS_DTYPE mirrors it). */
struct kvmmu_rmp_fields {
    uint64_t lo;
    uint64_t hi;
    uint64_t gpa;                    /* the GPA field: a guest frame number */
    uint16_t asid;
    uint16_t subpage_count;
    uint8_t assigned;
    uint8_t pagesize;
    uint8_t immutable;
    uint8_t vmsa;
    uint8_t validated;
    uint8_t lock;
    uint8_t vmpl[4];
    uint8_t state;                   /* firmware page state of the raw entry */
    uint8_t pad;
};

/* A guest access to be checked against the RMP. */
struct kvmmu_rmp_access {
    uint64_t pfn;                    /* system frame accessed */
    uint64_t gfn;                    /* guest frame it was translated from */
    uint32_t asid;
    uint8_t vmpl;
    uint8_t npt_level;               /* 1 = 4K, 2 = 2M, 3 = 1G (checked as 2M) */
    uint8_t kind;                    /* KVMMU_RMP_ACC_* */
    uint8_t c_bit;
    uint8_t snp_active;
    uint8_t user;
    uint8_t pad[6];
};

bool kvmmu_rmp_covered(const struct kvmmu_rmp *t, uint64_t pfn);
int kvmmu_rmp_write(const struct kvmmu_rmp *t, uint64_t pfn, uint64_t lo, uint64_t hi);
int kvmmu_rmp_lookup(const struct kvmmu_rmp *t, uint64_t pfn, bool *assigned, int *level);
size_t kvmmu_rmp_lookup_batch(const struct kvmmu_rmp *t, const uint64_t *pfn, uint8_t *assigned,
                              uint8_t *level, uint16_t *asid, uint64_t *gpa, size_t n, int *err);
void kvmmu_rmp_decode(uint64_t lo, uint64_t hi, struct kvmmu_rmp_fields *out);
void kvmmu_rmp_decode_batch(const uint64_t *lo, const uint64_t *hi,
                            struct kvmmu_rmp_fields *out, size_t n);
size_t kvmmu_rmp_fields_batch(const struct kvmmu_rmp *t, const uint64_t *pfn,
                              struct kvmmu_rmp_fields *out, size_t n, int *err);
int kvmmu_rmp_state_raw(uint64_t lo);
int kvmmu_rmp_page_state(const struct kvmmu_rmp *t, uint64_t pfn, bool effective);
void kvmmu_rmp_page_state_batch(const struct kvmmu_rmp *t, const uint64_t *pfn, bool effective,
                                uint8_t *out, size_t n);

int kvmmu_rmp_rmpupdate(const struct kvmmu_rmp *t, uint64_t pfn, const struct kvmmu_rmp_state *st);
size_t kvmmu_rmp_rmpupdate_batch_check(const struct kvmmu_rmp *t, const uint64_t *pfn,
                                       const uint64_t *gpa, uint32_t assigned, uint32_t pagesize,
                                       uint32_t immutable, uint32_t asid, size_t n, int *err);
size_t kvmmu_rmp_rmpupdate_batch(const struct kvmmu_rmp *t, const uint64_t *pfn,
                                 const uint64_t *gpa, uint32_t assigned, uint32_t pagesize,
                                 uint32_t immutable, uint32_t asid, size_t n, int *err);
int kvmmu_rmp_psmash(const struct kvmmu_rmp *t, uint64_t pfn);
int kvmmu_rmp_pvalidate(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t asid, uint32_t vmpl,
                        uint64_t gfn, uint32_t size, uint32_t validate, uint64_t *exitinfo);
int kvmmu_rmp_rmpadjust(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t asid, uint32_t vmpl,
                        uint64_t gfn, uint32_t size, uint32_t target_vmpl, uint32_t perms,
                        uint32_t vmsa, uint64_t *exitinfo);

int kvmmu_rmp_host_check(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t level, bool user,
                         uint64_t *error_code);
size_t kvmmu_rmp_host_check_batch(const struct kvmmu_rmp *t, const uint64_t *pfn, uint32_t level,
                                  uint8_t *out, size_t n);
int kvmmu_rmp_guest_check(const struct kvmmu_rmp *t, const struct kvmmu_rmp_access *a,
                          int *fault, uint64_t *exitinfo);
size_t kvmmu_rmp_guest_check_batch(const struct kvmmu_rmp *t, const uint64_t *pfn,
                                   const uint64_t *gfn, const struct kvmmu_rmp_access *proto,
                                   uint8_t *check, size_t n);
size_t kvmmu_rmp_count_assigned(const struct kvmmu_rmp *t, uint64_t start, uint64_t count);
void kvmmu_rmp_level_index_build(const struct kvmmu_rmp *t);
size_t kvmmu_rmp_level_index_check(const struct kvmmu_rmp *t);

/* Scalar entry points: one call checks the operands and computes; the results come packed
 * in the return word, -1 when an operand breaks a rule (pykvmmu/rmp then re-checks the
 * operands for the error message).  Fields of the words: see each function in csrc/rmp.c. */
#define KVMMU_RMP_PTE_PFN_BITS      40
#define KVMMU_RMP_UPF_UNMAP         0
#define KVMMU_RMP_UPF_SIGBUS        1
#define KVMMU_RMP_UPF_SPLIT         2
#define KVMMU_RMP_UPF_RETRY         3
int kvmmu_rmp_lookup_word(const struct kvmmu_rmp *t, uint64_t pfn);
int64_t kvmmu_rmp_host_check_word(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t level, bool user);
int64_t kvmmu_rmp_guest_check_word(const struct kvmmu_rmp *t, uint64_t pfn, uint64_t gfn,
                                   uint32_t asid, uint32_t vmpl, uint32_t npt_level, uint32_t kind,
                                   bool c_bit, bool snp_active, bool user);
int kvmmu_rmp_rmpupdate_fields(const struct kvmmu_rmp *t, uint64_t pfn, uint64_t gpa,
                               uint8_t assigned, uint8_t pagesize, uint8_t immutable, uint32_t asid);
int64_t kvmmu_rmp_pvalidate_word(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t asid,
                                 uint32_t vmpl, uint64_t gfn, uint32_t size, uint32_t validate);
int64_t kvmmu_rmp_rmpadjust_word(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t asid,
                                 uint32_t vmpl, uint64_t gfn, uint32_t size, uint32_t target_vmpl,
                                 uint32_t perms, uint32_t vmsa);
int64_t kvmmu_rmp_user_fault(const struct kvmmu_rmp *t, bool pte_present, uint64_t pte_pfn,
                             uint32_t level, uint64_t address);
int kvmmu_rmp_max_mapping_level(const struct kvmmu_rmp *t, uint64_t pfn, bool snp);
int kvmmu_rmp_max_private_level(uint32_t max_level, uint32_t max_order, uint32_t hook_level);
int kvmmu_rmp_dump(const struct kvmmu_rmp *t, uint64_t pfn, uint64_t *out);
/* dump_rmpentry()'s log lines as text (out: KVMMU_RMP_DUMP_TEXT_MAX bytes); -1 beyond the table. */
#define KVMMU_RMP_DUMP_TEXT_MAX     34816
int kvmmu_rmp_dump_text(const struct kvmmu_rmp *t, uint64_t pfn, char *out);
/* Bits [lo, hi) of a level index for one batch (lookup_batch builds one when the batch is
 * large enough, in parts on its threads): lo a multiple of 64, hi one too or the end. */
void kvmmu_rmp_level_bits(const struct kvmmu_rmp *t, uint64_t *bits, uint64_t lo, uint64_t hi);
size_t kvmmu_rmp_lookup_batch_lvl(const struct kvmmu_rmp *t, const uint64_t *pfn,
                                  uint8_t *assigned, uint8_t *level, uint16_t *asid,
                                  uint64_t *gpa, size_t n, int *err, const uint64_t *lvl_bits);
/* The common scalar calls in fewer operands (each cffi operand costs a conversion), with
 * small results: the guest check of a C=1 read at VMPL 0 through a 4K NPT mapping by an SNP
 * guest in supervisor mode (the check code; the word of each code from
 * kvmmu_rmp_guest_check_read_word), RMPADJUST at VMPL 0 on a 4K page with VMSA 0 (a result
 * code: kvmmu_rmp_insn_code_word), the user fault on a present 4K PTE (action | RMP level
 * << 2: the pfn is the PTE's), and entry(): the index of the entry's low quadword in the
 * table buffer (8-byte units), -1 beyond the table. */
int kvmmu_rmp_guest_check_read(const struct kvmmu_rmp *t, uint64_t pfn, uint64_t gfn,
                               uint32_t asid);
int64_t kvmmu_rmp_guest_check_read_word(uint32_t chk);
#define KVMMU_RMP_INSN_SIZEM        512
int kvmmu_rmp_rmpadjust_vmpl0(const struct kvmmu_rmp *t, uint64_t pfn, uint32_t asid,
                              uint64_t gfn, uint32_t target_vmpl, uint32_t perms);
int64_t kvmmu_rmp_insn_code_word(uint32_t code);
int kvmmu_rmp_user_fault_4k(const struct kvmmu_rmp *t, uint64_t pte_pfn, uint64_t address);
int64_t kvmmu_rmp_entry_index(const struct kvmmu_rmp *t, uint64_t pfn);

/* ======================================================================
 * private: private/shared fault classification (csrc/private.c, pykvmmu/private.py)
 * ====================================================================== */
/* PRIVATE_SECTION */
#define KVMMU_PFERR_RSVD            8
#define KVMMU_PFERR_GUEST_ENC       0x400000000
#define KVMMU_PFERR_PRIVATE_ACCESS  0x2000000000000
#define KVMMU_PFERR_SYNTHETIC       0x3000000000000
#define KVMMU_VM_DEFAULT            0
#define KVMMU_VM_SW_PROTECTED       1
#define KVMMU_VM_SEV                2
#define KVMMU_VM_SEV_ES             3
#define KVMMU_VM_SNP                4
#define KVMMU_VM_TDX                5
/* flags: CONFIG_KVM_SW_PROTECTED_VM; errors: a range with start >= end, ranges out of order */
#define KVMMU_PF_F_SW_PROTECTED     1
#define KVMMU_PF_E_RANGE            1
#define KVMMU_PF_E_ORDER            2

struct kvmmu_pf_policy {
    uint32_t vm_type;                /* KVMMU_VM_* */
    uint32_t flags;                  /* KVMMU_PF_F_* */
    uint64_t gfn_direct_bits;        /* TDX shared bit as a gfn mask (kvm_gfn_direct_bits), else 0 */
    uint32_t isa;                    /* KVMMU_ISA_* cap */
};

int kvmmu_private_ranges_check(const uint64_t *start, const uint64_t *end, size_t nr);
size_t kvmmu_private_classify_batch(const struct kvmmu_pf_policy *p, const uint64_t *gpa,
                                    const uint64_t *ec, const uint64_t *priv_start,
                                    const uint64_t *priv_end, size_t nranges,
                                    uint64_t *out_gfn, uint64_t *out_ec, uint8_t *out_private,
                                    size_t n, uint64_t *nsynthetic);
/* (out_gfn, out_ec, out_private must not be NULL nor overlap the inputs) */

/* ======================================================================
 * vm: the simulated VM's TDP page table walk and install (csrc/vm.c, pykvmmu/vm.py)
 * ====================================================================== */
/* VM_SECTION */
/* The Vm's table pool: npages tables of 512 SPTEs, and for each entry the pool index of the
 * table it points to (-1: not a pointer: non-present, a leaf or an MMIO SPTE). */
struct kvmmu_vm_tdp {
    uint64_t *spte;
    int32_t *child;
    uint32_t npages;
    uint32_t levels;                 /* 4 or 5 */
    uint64_t nonpresent;             /* the era's SHADOW_NONPRESENT_VALUE (make_spte's old) */
};
/* flags: MAKE = make_spte(pfn) and write it at the level (else read the entry).
 * Returns OK; BLOCKED: a non-pointer entry above the level (at *stop_level); SUBTREE: the
 * entry at the level points to a table; E_INDEX: root / child index outside the pool or a bad
 * level; E_MAKE: make_spte refused pfn / level / access.  Nothing is written unless OK. */
#define KVMMU_VM_F_MAKE             1
#define KVMMU_VM_OK                 0
#define KVMMU_VM_BLOCKED            1
#define KVMMU_VM_SUBTREE            2
#define KVMMU_VM_E_INDEX            3
#define KVMMU_VM_E_MAKE             4
int kvmmu_vm_tdp_map(const struct kvmmu_cfg *cfg, const struct kvmmu_vm_tdp *t, uint32_t root,
                     uint64_t gfn, uint32_t level, uint64_t pfn, uint32_t pte_access,
                     uint32_t mkflags, uint32_t memtype, uint32_t flags, uint64_t *spte,
                     uint32_t *stop_level);
/* One Vm's fault-path constants (configuration, pool, make_spte's access / flags / memtype)
 * and the outputs of its last kvmmu_vm_fault_map call: kvmmu_vm_tdp_map with the per-VM
 * arguments read from here (the fault path's call, half the arguments to convert). */
struct kvmmu_vm_fault {
    const struct kvmmu_cfg *cfg;
    const struct kvmmu_vm_tdp *tdp;
    uint32_t pte_access;
    uint32_t mkflags;
    uint32_t memtype;
    uint32_t stop_level;             /* out */
    uint64_t spte;                   /* out */
};
int kvmmu_vm_fault_map(struct kvmmu_vm_fault *f, uint32_t root, uint64_t gfn, uint32_t level,
                       uint64_t pfn, uint32_t flags);
/* kvmmu_vm_tdp_map flag F_SPURIOUS: first, if the entry at the level is a shadow-present leaf
 * of pfn (RET_PF_SPURIOUS), nothing is written and SPURIOUS is returned with that entry;
 * make_spte's inputs are then checked after the walk, before any write. */
#define KVMMU_VM_F_SPURIOUS         2
#define KVMMU_VM_SPURIOUS           5

#endif
