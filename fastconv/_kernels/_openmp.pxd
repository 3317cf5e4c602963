# Declarations shared by every kernel module: the OpenMP shim of _omp.h.

cdef extern from "_omp.h" nogil:
    int FASTCONV_OPENMP
    int omp_get_max_threads()
    int omp_get_thread_num()
    int fastconv_cpu_has(int which)
