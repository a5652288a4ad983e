/*
 * The SPTE predicates, each rule written once (issue 15).  No include guard: csrc/spte.c
 * includes this file once per expansion, with these two row macros defined:
 *
 *   KVMMU_SPTE_TERM(var, expr)
 *       an intermediate lane that later rows use by name;
 *   KVMMU_SPTE_PREDICATE(NAME, id, needs_level, "feature", kernel_fn, field, "doc", expr)
 *       predicate KVMMU_P_<NAME> = id (its bit in a predicate mask, its byte in the decode
 *       record), modelling the kernel's kernel_fn() (also its Python name); needs_level 1 if
 *       the rule reads the level; "feature" is the LayoutProfile flag an era needs for the
 *       routine to exist ("" for every era); field names the decode field p_<field>.
 *
 * Rows come in dependency order: an expression may use any earlier row's var or field.
 * An expression is written in a small lane language that every expansion defines, so the
 * same text yields the scalar helpers, the branch-free uint64 masks of the batch loops and
 * the AVX-512 k-masks (8 SPTEs at a time).  The SPTE is implicit:
 *
 *   TEST(m)              (spte & m) != 0
 *   EQ(m, v)             (spte & m) == v
 *   BITIDX(t)            bit (spte & 63) of the 64-bit table t
 *   TEST_SEL(l, m1, m0)  (spte & (l ? m1 : m0)) != 0, for a lane l
 *   NOT(a), a & b, a | b lane logic
 *   ONES_IF(c)           the lane "true" where the constant c holds (a config or level rule)
 *   SEL(c, a, b)         c ? a : b for a constant c (era rules)
 *   CFG(f), RULE(R), FLAG(F), LEVEL
 *                        cfg->f, (cfg->rules & KVMMU_R_R) != 0, (cfg->flags & KVMMU_F_F) != 0,
 *                        the level (1..5)
 *
 * Adding a predicate: see docs/CONVENTIONS.md ("Adding an SPTE predicate").
 * An expansion that needs no terms may leave KVMMU_SPTE_TERM undefined; both row macros
 * are undefined at the end of this file.
 */
#ifndef KVMMU_SPTE_TERM
#define KVMMU_SPTE_TERM(var, expr)
#endif

KVMMU_SPTE_PREDICATE(MMIO, 1, 0, "", is_mmio_spte, mmio,
    "``(spte & shadow_mmio_mask) == shadow_mmio_value`` with caching on (v5.10: bits 53:52 == 11b).",
    ONES_IF(FLAG(MMIO_ENABLED)) &
    SEL(RULE(MMIO_SPECIAL_TAG), EQ(SPTE_AD_MASK, SPTE_AD_MASK), EQ(CFG(mmio_mask), CFG(mmio_value))))

KVMMU_SPTE_PREDICATE(SHADOW_PRESENT, 0, 0, "", is_shadow_present_pte, shadow_present,
    "MMU-present bit 11 set (v5.10-5.12: non-zero and not MMIO).",
    SEL(RULE(MMU_PRESENT_BIT11), TEST(KBIT(11)), TEST(~UINT64_C(0)) & NOT(mmio)))

KVMMU_SPTE_PREDICATE(FROZEN, 2, 0, "", is_frozen_spte, frozen,
    "``spte == FROZEN_SPTE`` (REMOVED_SPTE before v6.11).",
    ONES_IF(FLAG(HAS_FROZEN)) & EQ(~UINT64_C(0), CFG(frozen_value)))

KVMMU_SPTE_PREDICATE(LARGE, 3, 0, "", is_large_pte, large,
    "PS bit (7) set.",
    TEST(PT_PAGE_SIZE_MASK))

KVMMU_SPTE_PREDICATE(LAST, 4, 1, "", is_last_spte, last,
    "``level == 1 || is_large_pte(spte)``; presence is not checked.",
    ONES_IF(LEVEL == 1) | large)

KVMMU_SPTE_PREDICATE(EXECUTABLE, 5, 0, "", is_executable_pte, executable,
    "``(spte & (x_mask | nx_mask)) == x_mask``.",
    EQ(CFG(x_mask) | CFG(nx_mask), CFG(x_mask)))

KVMMU_SPTE_PREDICATE(WRITABLE, 6, 0, "", is_writable_pte, writable,
    "W bit (1) set.",
    TEST(PT_WRITABLE_MASK))

KVMMU_SPTE_PREDICATE(MMU_WRITABLE, 7, 0, "", is_mmu_writable_spte, mmu_writable,
    "MMU-writable bit set (v5.10: host- and MMU-writable both set).",
    SEL(RULE(LOCKLESS_BOTH_BITS),
        EQ(CFG(host_writable_mask) | CFG(mmu_writable_mask), CFG(host_writable_mask) | CFG(mmu_writable_mask)),
        TEST(CFG(mmu_writable_mask))))

KVMMU_SPTE_PREDICATE(HOST_WRITABLE, 8, 0, "", is_host_writable_spte, host_writable,
    "host-writable bit set.",
    TEST(CFG(host_writable_mask)))

KVMMU_SPTE_PREDICATE(AD_ENABLED, 11, 0, "", spte_ad_enabled, ad_enabled,
    "Bits 53:52 != AD_DISABLED (WRPROT_ONLY counts as enabled).",
    NOT(EQ(SPTE_AD_MASK, SPTE_AD_DISABLED)))

KVMMU_SPTE_PREDICATE(AD_NEED_WRITE_PROTECT, 12, 0, "", spte_ad_need_write_protect, ad_need_write_protect,
    "Bits 53:52 != 0 (AD-disabled or WRPROT_ONLY).",
    TEST(SPTE_AD_MASK))

KVMMU_SPTE_PREDICATE(ACCESS_TRACK, 13, 0, "", is_access_track_spte, access_track,
    "AD-disabled and no bits of shadow_acc_track_mask set.",
    NOT(ad_enabled) & NOT(TEST(CFG(acc_track_mask))))

KVMMU_SPTE_TERM(a_bit, TEST(CFG(accessed_mask)))
KVMMU_SPTE_TERM(d_bit, TEST(CFG(dirty_mask)))
/* Before v6.13 the A and D masks apply to AD-enabled SPTEs only (spte_shadow_*_mask()). */
KVMMU_SPTE_TERM(use_a, ad_enabled & ONES_IF(CFG(accessed_mask) != 0))
KVMMU_SPTE_TERM(use_d, ad_enabled & ONES_IF(CFG(dirty_mask) != 0))

KVMMU_SPTE_PREDICATE(ACCESSED, 9, 0, "", is_accessed_spte, accessed,
    "Accessed (v6.13+: the A bit; before: A if AD-enabled, else not access-tracked).",
    SEL(RULE(AD_ALWAYS), a_bit, (use_a & a_bit) | (NOT(use_a) & NOT(access_track))))

KVMMU_SPTE_PREDICATE(DIRTY, 10, 0, "has_is_dirty_spte", is_dirty_spte, dirty,
    "Dirty (before v6.13 only; 0 in the eras without it): D if AD-enabled, else W.",
    ONES_IF(!RULE(AD_ALWAYS)) & ((use_d & d_bit) | (NOT(use_d) & writable)))

/* v6.15 spte_needs_atomic_update(); before, spte_has_volatile_bits(), whose shadow-present
 * check moved to the callers in v5.19 (ATOMIC_MMUW_NOT_W). */
KVMMU_SPTE_PREDICATE(NEEDS_ATOMIC_UPDATE, 14, 0, "", spte_needs_atomic_update, needs_atomic_update,
    "v6.15 spte_needs_atomic_update(); spte_has_volatile_bits() before.",
    SEL(RULE(ATOMIC_NEEDS),
        (NOT(writable) & mmu_writable) | NOT(ad_enabled) | (writable & NOT(d_bit)),
        (ONES_IF(RULE(ATOMIC_MMUW_NOT_W)) | shadow_present) &
        (SEL(RULE(ATOMIC_MMUW_NOT_W), NOT(writable) & mmu_writable, mmu_writable) | access_track |
         (ad_enabled & (NOT(a_bit) | (writable & NOT(d_bit)))))))

KVMMU_SPTE_TERM(mmu_writable_bit, TEST(CFG(mmu_writable_mask)))

KVMMU_SPTE_PREDICATE(WRITABLE_INVARIANTS_OK, 15, 0, "", check_spte_writable_invariants, writable_invariants_ok,
    "True if MMU-W implies host-W and !MMU-W implies !W.",
    (mmu_writable_bit & host_writable) | (NOT(mmu_writable_bit) & NOT(writable)))

KVMMU_SPTE_PREDICATE(RSVD, 16, 1, "", is_rsvd_spte, rsvd,
    "``is_rsvd_spte(&shadow_zero_check, spte, level)`` over the config's tables.",
    BITIDX(CFG(bad_mt_xwr)) |
    TEST_SEL(large, CFG(rsvd_bits_mask[5 + LEVEL - 1]), CFG(rsvd_bits_mask[LEVEL - 1])))

KVMMU_SPTE_PREDICATE(EPT_VE_POSSIBLE, 17, 0, "has_ept_ve_possible", is_ept_ve_possible, ept_ve_possible,
    "v6.10+: SVE in the present mask, SVE clear in the SPTE, RWX != 110b.",
    ONES_IF(FLAG(EPT_VE_CHECK) && (CFG(present_mask) & EPT_SVE)) & NOT(TEST(EPT_SVE)) &
    NOT(EQ(UINT64_C(7), UINT64_C(6))))

#undef KVMMU_SPTE_TERM
#undef KVMMU_SPTE_PREDICATE
