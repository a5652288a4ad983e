/*
 * Ends one lane language of csrc/spte.c: undefines the primitives an expansion of
 * spte_rules.h is written in (B, TEST, EQ, BITIDX, TEST_SEL, NOT, ONES_IF, SEL), so the
 * next language can define its own.  Included once after each language; no guard.
 */
#undef B
#undef TEST
#undef EQ
#undef BITIDX
#undef TEST_SEL
#undef NOT
#undef ONES_IF
#undef SEL
