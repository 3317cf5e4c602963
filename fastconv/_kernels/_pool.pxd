# Declarations of the pooling kernels: one plane of (H, W) at a time, called
# by the parallel entry points of _pool.pyx (see its Design block).

from cython cimport floating
from libc.stdint cimport int64_t


cdef struct Pool2d:
    Py_ssize_t H, W, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw


cdef void max_pool_plane(const floating* x, floating* out, int64_t* indices,
                         const Pool2d* p, int* taps) noexcept nogil

cdef Py_ssize_t max_pool_grad_plane(const floating* grad_out, const int64_t* indices,
                                    Py_ssize_t n_out, floating* grad_in,
                                    Py_ssize_t n_in) noexcept nogil

cdef void avg_pool_plane(const floating* x, floating* out, const Pool2d* p,
                         bint count_include_pad) noexcept nogil

cdef void avg_pool_grad_plane(const floating* grad_out, floating* grad_in, const Pool2d* p,
                              bint count_include_pad, floating* scratch) noexcept nogil
