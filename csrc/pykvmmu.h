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
 * spte: MmuConfig and the SPTE engine (csrc/spte.c, pykvmmu/spte.py)
 * ====================================================================== */
/* SPTE_SECTION */

/* ======================================================================
 * mmio: MMIO SPTEs and generations (csrc/mmio.c, pykvmmu/mmio.py)
 * ====================================================================== */
/* MMIO_SECTION */

/* ======================================================================
 * role: page role words and the shadow-page hash (csrc/role.c, pykvmmu/role.py)
 * ====================================================================== */
/* ROLE_SECTION */

/* ======================================================================
 * rmp: the SEV-SNP Reverse Map Table (csrc/rmp.c, pykvmmu/rmp.py)
 * ====================================================================== */
/* RMP_SECTION */

#endif
