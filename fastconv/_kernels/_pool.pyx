# cython: language_level=3
"""Max and average pooling, forward and backward.

Design
------
Pooling is memory-bound, so there is one loop nest per op and no packing.
Inputs arrive as (planes, H, W) with planes = N*C (1-D pooling has H = kH = 1).
Every op is parallel over planes: a plane of the output (forward) or of the
input gradient (backward) is written by exactly one thread, so the
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

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.math cimport INFINITY


cdef inline Py_ssize_t _first_valid(Py_ssize_t start, Py_ssize_t d) noexcept nogil:
    """Smallest start + m*d >= 0."""
    if start >= 0:
        return start
    return start + ((-start + d - 1) // d) * d


def max_pool2d_forward(const floating[:, :, ::1] x,      # IN  (planes, H, W)
                       floating[:, :, ::1] out,          # OUT (planes, OH, OW)
                       int64_t[:, :, ::1] indices,       # OUT (planes, OH, OW) or (0, 0, 0)
                       Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                       int n_threads):
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef bint want_indices = indices.shape[0] > 0
    cdef Py_ssize_t c, oh, ow, kh, kw, ih, iw, hs, ws, best
    cdef floating v, m
    cdef const floating* xp
    for c in prange(planes, schedule='static', nogil=True, num_threads=n_threads):
        xp = &x[c, 0, 0]
        for oh in range(OH):
            hs = oh * sh - ph
            for ow in range(OW):
                ws = ow * sw - pw
                m = -INFINITY
                best = _first_valid(hs, dh) * W + _first_valid(ws, dw)
                for kh in range(KH):
                    ih = hs + kh * dh
                    if ih < 0:
                        continue
                    if ih >= H:
                        break
                    for kw in range(KW):
                        iw = ws + kw * dw
                        if iw < 0:
                            continue
                        if iw >= W:
                            break
                        v = xp[ih * W + iw]
                        if v > m or v != v:
                            m = v
                            best = ih * W + iw
                out[c, oh, ow] = m
                if want_indices:
                    indices[c, oh, ow] = best


def max_pool_backward(const floating[:, ::1] grad_out,   # IN  (planes, OH*OW)
                      const int64_t[:, ::1] indices,     # IN  (planes, OH*OW)
                      floating[:, ::1] grad_in,          # OUT (planes, H*W), zeroed
                      int n_threads):
    """Route grad_out to the recorded argmax positions; returns the number of
    out-of-range indices, which are skipped."""
    cdef Py_ssize_t planes = grad_out.shape[0], P = grad_out.shape[1]
    cdef Py_ssize_t HW = grad_in.shape[1]
    cdef Py_ssize_t c, p, bad = 0
    cdef int64_t i
    for c in prange(planes, schedule='static', nogil=True, num_threads=n_threads):
        for p in range(P):
            i = indices[c, p]
            if 0 <= i < HW:
                grad_in[c, i] += grad_out[c, p]
            else:
                bad += 1
    return bad


cdef struct _Window:
    Py_ssize_t h0, h1, w0, w1, divisor


cdef inline _Window _avg_window(Py_ssize_t hs, Py_ssize_t ws, Py_ssize_t KH, Py_ssize_t KW,
                                Py_ssize_t H, Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw,
                                bint count_include_pad) noexcept nogil:
    """The window starting at (hs, ws) clipped to the input, and its divisor."""
    cdef _Window win
    cdef Py_ssize_t he = min(hs + KH, H + ph), we = min(ws + KW, W + pw)
    win.h0 = max(hs, 0)
    win.h1 = min(he, H)
    win.w0 = max(ws, 0)
    win.w1 = min(we, W)
    if count_include_pad:
        win.divisor = (he - hs) * (we - ws)
    else:
        win.divisor = (win.h1 - win.h0) * (win.w1 - win.w0)
    return win


def avg_pool2d_forward(const floating[:, :, ::1] x,      # IN  (planes, H, W)
                       floating[:, :, ::1] out,          # OUT (planes, OH, OW)
                       Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad,
                       int n_threads):
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef Py_ssize_t c, oh, ow, ih, iw
    cdef _Window win
    cdef floating s
    cdef const floating* xp
    for c in prange(planes, schedule='static', nogil=True, num_threads=n_threads):
        xp = &x[c, 0, 0]
        for oh in range(OH):
            for ow in range(OW):
                win = _avg_window(oh * sh - ph, ow * sw - pw, KH, KW, H, W, ph, pw,
                                  count_include_pad)
                if win.h0 >= win.h1 or win.w0 >= win.w1:
                    out[c, oh, ow] = 0
                    continue
                s = 0
                for ih in range(win.h0, win.h1):
                    for iw in range(win.w0, win.w1):
                        s = s + xp[ih * W + iw]
                out[c, oh, ow] = s / win.divisor


def avg_pool2d_backward(const floating[:, :, ::1] grad_out,  # IN  (planes, OH, OW)
                        floating[:, :, ::1] grad_in,         # OUT (planes, H, W), zeroed
                        Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad,
                        int n_threads):
    cdef Py_ssize_t planes = grad_in.shape[0], H = grad_in.shape[1], W = grad_in.shape[2]
    cdef Py_ssize_t OH = grad_out.shape[1], OW = grad_out.shape[2]
    cdef Py_ssize_t c, oh, ow, ih, iw
    cdef _Window win
    cdef floating g
    cdef floating* gp
    for c in prange(planes, schedule='static', nogil=True, num_threads=n_threads):
        gp = &grad_in[c, 0, 0]
        for oh in range(OH):
            for ow in range(OW):
                win = _avg_window(oh * sh - ph, ow * sw - pw, KH, KW, H, W, ph, pw,
                                  count_include_pad)
                if win.h0 >= win.h1 or win.w0 >= win.w1:
                    continue
                g = grad_out[c, oh, ow] / win.divisor
                for ih in range(win.h0, win.h1):
                    for iw in range(win.w0, win.w1):
                        gp[ih * W + iw] += g
