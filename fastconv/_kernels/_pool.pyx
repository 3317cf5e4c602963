# cython: language_level=3
"""Max and average pooling, forward and backward.

Design
------
Pooling is memory-bound, so there is one loop nest per op and no packing.
Inputs arrive as (planes, H, W) with planes = N*C (1-D pooling has H = kH = 1).
Each entry point is a `prange` over planes calling a `noexcept nogil` kernel
for one plane (declared in _pool.pxd). A plane of the output (forward) or of
the input gradient (backward) is written by exactly one thread, so the
max-pool gradient can accumulate where windows overlap without races, and the
results are bitwise independent of the thread count.

Window of output (oh, ow): rows ih = oh*sh - ph + kh*dh, columns likewise,
restricted to the input (padding is never read).

* Max pooling scans a window in row-major order, starting from the first
  in-bounds element with value -inf, and takes an element when
  `value > max or value is NaN` (PyTorch's rule): ties keep the first maximum,
  a NaN wins (the last NaN, if several), and an all -inf window still gets the
  index of a real element. Indices are flat positions h*W + w in the plane.
* The max-pool gradient routes grad_out[p] to indices[p], bounds-checking each
  index; out-of-range ones are counted and skipped, never written.
* Average pooling divides by the window area clipped to the padded input
  (count_include_pad) or to the input itself; an empty window yields 0.

Compiler directives: boundscheck=False, wraparound=False, cdivision=True,
initializedcheck=False (set in setup.py).
"""

from cython.parallel cimport prange
from libc.math cimport INFINITY


cdef inline Py_ssize_t _first_valid(Py_ssize_t start, Py_ssize_t d) noexcept nogil:
    """Smallest start + m*d >= 0."""
    if start >= 0:
        return start
    return start + ((-start + d - 1) // d) * d


cdef void max_pool_plane(const floating* x, floating* out, int64_t* indices,
                         const Pool2d* p) noexcept nogil:
    cdef Py_ssize_t oh, ow, kh, kw, ih, iw, hs, ws, best
    cdef floating v, m
    for oh in range(p.OH):
        hs = oh * p.sh - p.ph
        for ow in range(p.OW):
            ws = ow * p.sw - p.pw
            m = -INFINITY
            best = _first_valid(hs, p.dh) * p.W + _first_valid(ws, p.dw)
            for kh in range(p.KH):
                ih = hs + kh * p.dh
                if ih < 0:
                    continue
                if ih >= p.H:
                    break
                for kw in range(p.KW):
                    iw = ws + kw * p.dw
                    if iw < 0:
                        continue
                    if iw >= p.W:
                        break
                    v = x[ih * p.W + iw]
                    if v > m or v != v:
                        m = v
                        best = ih * p.W + iw
            out[oh * p.OW + ow] = m
            if indices != NULL:
                indices[oh * p.OW + ow] = best


cdef Py_ssize_t max_pool_grad_plane(const floating* grad_out, const int64_t* indices,
                                    Py_ssize_t n_out, floating* grad_in,
                                    Py_ssize_t n_in) noexcept nogil:
    """Returns the number of out-of-range indices, which are skipped."""
    cdef Py_ssize_t q, bad = 0
    cdef int64_t i
    for q in range(n_out):
        i = indices[q]
        if 0 <= i < n_in:
            grad_in[i] += grad_out[q]
        else:
            bad += 1
    return bad


cdef struct _Window:
    Py_ssize_t h0, h1, w0, w1, divisor


cdef inline _Window _avg_window(Py_ssize_t oh, Py_ssize_t ow, const Pool2d* p,
                                bint count_include_pad) noexcept nogil:
    """The window of output (oh, ow) clipped to the input, and its divisor."""
    cdef _Window win
    cdef Py_ssize_t hs = oh * p.sh - p.ph, ws = ow * p.sw - p.pw
    cdef Py_ssize_t he = min(hs + p.KH, p.H + p.ph), we = min(ws + p.KW, p.W + p.pw)
    win.h0 = max(hs, 0)
    win.h1 = min(he, p.H)
    win.w0 = max(ws, 0)
    win.w1 = min(we, p.W)
    if count_include_pad:
        win.divisor = (he - hs) * (we - ws)
    else:
        win.divisor = (win.h1 - win.h0) * (win.w1 - win.w0)
    return win


cdef void avg_pool_plane(const floating* x, floating* out, const Pool2d* p,
                         bint count_include_pad) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw
    cdef _Window win
    cdef floating s
    for oh in range(p.OH):
        for ow in range(p.OW):
            win = _avg_window(oh, ow, p, count_include_pad)
            if win.h0 >= win.h1 or win.w0 >= win.w1:
                out[oh * p.OW + ow] = 0
                continue
            s = 0
            for ih in range(win.h0, win.h1):
                for iw in range(win.w0, win.w1):
                    s += x[ih * p.W + iw]
            out[oh * p.OW + ow] = s / win.divisor


cdef void avg_pool_grad_plane(const floating* grad_out, floating* grad_in, const Pool2d* p,
                              bint count_include_pad) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw
    cdef _Window win
    cdef floating g
    for oh in range(p.OH):
        for ow in range(p.OW):
            win = _avg_window(oh, ow, p, count_include_pad)
            if win.h0 >= win.h1 or win.w0 >= win.w1:
                continue
            g = grad_out[oh * p.OW + ow] / win.divisor
            for ih in range(win.h0, win.h1):
                for iw in range(win.w0, win.w1):
                    grad_in[ih * p.W + iw] += g


cdef Pool2d _geometry(Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                      tuple args):
    cdef Pool2d p
    p.H, p.W, p.OH, p.OW = H, W, OH, OW
    p.KH, p.KW, p.sh, p.sw, p.ph, p.pw, p.dh, p.dw = args
    return p


# -- entry points: parallel over planes ----------------------------------------


def max_pool2d_forward(const floating[:, :, ::1] x,      # IN  (planes, H, W)
                       floating[:, :, ::1] out,          # OUT (planes, OH, OW)
                       int64_t[:, :, ::1] indices,       # OUT (planes, OH, OW) or (0, 0, 0)
                       tuple geometry,                   # (kH, kW, sh, sw, ph, pw, dh, dw)
                       int n_threads):
    cdef Pool2d p = _geometry(x.shape[1], x.shape[2], out.shape[1], out.shape[2], geometry)
    cdef bint want_indices = indices.shape[0] > 0
    cdef Py_ssize_t c
    for c in prange(x.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        max_pool_plane(&x[c, 0, 0], &out[c, 0, 0],
                       &indices[c, 0, 0] if want_indices else NULL, &p)


def max_pool_backward(const floating[:, ::1] grad_out,   # IN  (planes, OH*OW)
                      const int64_t[:, ::1] indices,     # IN  (planes, OH*OW)
                      floating[:, ::1] grad_in,          # OUT (planes, H*W), zeroed
                      int n_threads):
    """Route grad_out to the recorded argmax positions; returns the number of
    out-of-range indices, which are skipped."""
    cdef Py_ssize_t c, bad = 0
    for c in prange(grad_out.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        bad += max_pool_grad_plane(&grad_out[c, 0], &indices[c, 0], grad_out.shape[1],
                                   &grad_in[c, 0], grad_in.shape[1])
    return bad


def avg_pool2d_forward(const floating[:, :, ::1] x,      # IN  (planes, H, W)
                       floating[:, :, ::1] out,          # OUT (planes, OH, OW)
                       tuple geometry,                   # (kH, kW, sh, sw, ph, pw, 1, 1)
                       bint count_include_pad, int n_threads):
    cdef Pool2d p = _geometry(x.shape[1], x.shape[2], out.shape[1], out.shape[2], geometry)
    cdef Py_ssize_t c
    for c in prange(x.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        avg_pool_plane(&x[c, 0, 0], &out[c, 0, 0], &p, count_include_pad)


def avg_pool2d_backward(const floating[:, :, ::1] grad_out,  # IN  (planes, OH, OW)
                        floating[:, :, ::1] grad_in,         # OUT (planes, H, W), zeroed
                        tuple geometry,                      # (kH, kW, sh, sw, ph, pw, 1, 1)
                        bint count_include_pad, int n_threads):
    cdef Pool2d p = _geometry(grad_in.shape[1], grad_in.shape[2], grad_out.shape[1],
                              grad_out.shape[2], geometry)
    cdef Py_ssize_t c
    for c in prange(grad_in.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        avg_pool_grad_plane(&grad_out[c, 0, 0], &grad_in[c, 0, 0], &p, count_include_pad)
