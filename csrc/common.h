/* Internal helpers shared by the C core (not part of the cffi cdef). */
#ifndef PYKVMMU_COMMON_H
#define PYKVMMU_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pykvmmu.h"

#define KBIT(n) ((uint64_t)1 << (n))
#define KGENMASK(h, l) ((~(uint64_t)0 >> (63 - (h))) & ~((KBIT(l)) - 1))

/* Hot batch loops get an AVX2 clone chosen at load time (ifunc); portable otherwise. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(PYKVMMU_NO_CLONES)
#define KVMMU_HOT __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define KVMMU_HOT
#endif

/*
 * Streaming (non-temporal) 32-byte stores for outputs far larger than the caches: the
 * destination lines are not read first, which cuts the memory traffic of a write-heavy
 * batch by up to a third.  Use only past KVMMU_STREAM_MIN_BYTES of output.
 */
#define KVMMU_STREAM_MIN_BYTES (UINT64_C(32) << 20)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(PYKVMMU_NO_STREAM)
#include <immintrin.h>
#include <string.h>
#define KVMMU_HAVE_STREAM 1
/* Streaming stores (and the SSE2/AVX2/BMI2 kernels) under the ISA cap isa. */
static inline bool kvmmu_stream_ok(uint32_t isa)
{
    return isa >= KVMMU_ISA_AVX2 && __builtin_cpu_supports("avx2");
}
static inline bool kvmmu_avx2_ok(uint32_t isa) { return kvmmu_stream_ok(isa); }

/* Copy bytes (a multiple of 8) from a cached buffer to dst with streaming stores. */
__attribute__((target("avx2"), unused)) static void
kvmmu_stream_copy(void *dst, const void *src, size_t bytes)
{
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    while (bytes && ((uintptr_t)d & 31)) {
        memcpy(d, s, 8);
        d += 8, s += 8, bytes -= 8;
    }
    for (; bytes >= 32; d += 32, s += 32, bytes -= 32)
        _mm256_stream_si256((__m256i *)(void *)d, _mm256_loadu_si256((const __m256i *)(const void *)s));
    if (bytes)
        memcpy(d, s, bytes);
}
static inline void kvmmu_stream_fence(void) { _mm_sfence(); }
#endif

/* Hand-written AVX-512 (F, BW, DQ) kernels, used when the CPU has them. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(PYKVMMU_NO_AVX512)
#include <immintrin.h>
#define KVMMU_HAVE_AVX512 1
static inline bool kvmmu_avx512_ok(uint32_t isa)
{
    return isa >= KVMMU_ISA_AVX512 && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl");
}
#endif

#define KVMMU_LIKELY(x) __builtin_expect(!!(x), 1)
#define KVMMU_UNLIKELY(x) __builtin_expect(!!(x), 0)

#endif
