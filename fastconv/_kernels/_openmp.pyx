# cython: language_level=3
"""OpenMP and CPU facts for the Python side: whether OpenMP was compiled in,
the runtime's default thread count, and which SIMD extensions the CPU has."""


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(FASTCONV_OPENMP)


def omp_max_threads():
    """The OpenMP runtime's current default (honours OMP_NUM_THREADS and
    threadpoolctl); 1 for a serial build."""
    return omp_get_max_threads()


def cpu_features():
    """SIMD extensions that both the CPU and the OS support (x86-64 only)."""
    return {"avx2_fma": bool(fastconv_cpu_has(0)), "avx512f": bool(fastconv_cpu_has(1))}


cdef extern from *:
    """
    #if defined(__clang__)
    #define FASTCONV_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define FASTCONV_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #define FASTCONV_COMPILER "msvc"
    #else
    #define FASTCONV_COMPILER "unknown"
    #endif
    """
    const char* FASTCONV_COMPILER


def compiler_info():
    """The compiler that built the extensions."""
    return FASTCONV_COMPILER.decode()
