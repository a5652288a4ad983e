/* Internal helpers shared by the C core (not part of the cffi cdef). */
#ifndef PYKVMMU_COMMON_H
#define PYKVMMU_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KBIT(n) ((uint64_t)1 << (n))
#define KGENMASK(h, l) ((~(uint64_t)0 >> (63 - (h))) & ~((KBIT(l)) - 1))

/* Hot batch loops get an AVX2 clone chosen at load time (ifunc); portable otherwise. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(PYKVMMU_NO_CLONES)
#define KVMMU_HOT __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define KVMMU_HOT
#endif

#define KVMMU_LIKELY(x) __builtin_expect(!!(x), 1)
#define KVMMU_UNLIKELY(x) __builtin_expect(!!(x), 0)

#endif
