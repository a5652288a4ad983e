/* Internal helpers shared by the C core (not part of the cffi cdef). */
#ifndef PYKVMMU_COMMON_H
#define PYKVMMU_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KBIT(n) ((uint64_t)1 << (n))
#define KGENMASK(h, l) ((~(uint64_t)0 >> (63 - (h))) & ~((KBIT(l)) - 1))

#define KVMMU_LIKELY(x) __builtin_expect(!!(x), 1)
#define KVMMU_UNLIKELY(x) __builtin_expect(!!(x), 0)

#endif
