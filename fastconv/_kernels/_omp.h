/* OpenMP shim: the real runtime when the compiler has OpenMP, serial stubs otherwise. */
#ifndef FASTCONV_OMP_H
#define FASTCONV_OMP_H
#ifdef _OPENMP
#include <omp.h>
#define FASTCONV_OPENMP 1
#else
#define FASTCONV_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
#endif

/* Run-time CPU feature detection for picking an ISA variant of the kernels. */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
static inline int fastconv_cpu_has(int which) {
    __builtin_cpu_init();
    switch (which) {
        case 0: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case 1: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2")
                       && __builtin_cpu_supports("fma");
    }
    return 0;
}
#elif defined(_MSC_VER) && defined(_M_X64)
#include <intrin.h>
#include <immintrin.h>
static inline int fastconv_cpu_has(int which) {
    int r[4];
    unsigned long long xcr0;
    int avx2, fma, avx512f, osxsave;
    __cpuid(r, 1);
    fma = (r[2] >> 12) & 1;
    osxsave = (r[2] >> 27) & 1;
    if (!osxsave) return 0;
    xcr0 = _xgetbv(0);
    __cpuidex(r, 7, 0);
    avx2 = ((r[1] >> 5) & 1) && ((xcr0 & 0x6) == 0x6);
    avx512f = ((r[1] >> 16) & 1) && ((xcr0 & 0xe6) == 0xe6);
    if (which == 0) return avx2 && fma;
    if (which == 1) return avx512f && avx2 && fma;
    return 0;
}
#else
static inline int fastconv_cpu_has(int which) { (void)which; return 0; }
#endif
#endif
