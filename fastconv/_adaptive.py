"""Adaptive average pooling in vectorised NumPy (no compiled kernel).

PyTorch's bins: along an axis of ``n`` positions pooled to ``m`` outputs, bin
``i`` covers ``[floor(i*n/m), ceil((i+1)*n/m))``. The pooling is separable,
so a 2-D op pools the rows, then the columns, each axis by one of:

* ``m == 1`` over the whole plane (the global pooling that ends a ResNet):
  one mean over the contiguous ``H*W`` plane, the fast path;
* ``m == n``: a copy;
* ``n % m == 0``: equal, disjoint bins: a reshape and one mean;
* otherwise (bins of two lengths that may overlap): prefix sums along the
  axis in float64, ``sum(bin i) = S[end_i] - S[start_i]``.

The gradient spreads ``dy_i / len_i`` over each bin. In the general case the
bins holding position ``h`` are ``i`` in ``[a_h, b_h)`` with
``b_h = #{i: start_i <= h}`` and ``a_h = #{i: end_i <= h}`` (both bounds are
non-decreasing in ``i``), so ``dx_h = G[b_h] - G[a_h]`` with ``G`` the prefix
sums of ``dy_i / len_i``. No Python loop runs over pixels, samples or bins.
"""

import numpy as np

__all__ = ["bins", "forward", "backward"]


def bins(n, m):
    """(start, end) int64 arrays of the ``m`` bins over ``n`` positions."""
    i = np.arange(m, dtype=np.int64)
    return (i * n) // m, -((-(i + 1) * n) // m)


def _prefix(a, axis):
    """Prefix sums along ``axis`` in float64, with a leading 0."""
    shape = list(a.shape)
    shape[axis] += 1
    s = np.zeros(shape, dtype=np.float64)
    np.cumsum(a, axis=axis, dtype=np.float64,
              out=s[(slice(None),) * axis + (slice(1, None),)])
    return s


def _pool_axis(x, axis, m):
    n = x.shape[axis]
    if m == n:
        return x
    if n % m == 0:
        k = n // m
        return x.reshape(x.shape[:axis] + (m, k) + x.shape[axis + 1:]).mean(axis=axis + 1)
    start, end = bins(n, m)
    s = _prefix(x, axis)
    shape = [1] * x.ndim
    shape[axis] = m
    sums = np.take(s, end, axis=axis) - np.take(s, start, axis=axis)
    sums /= (end - start).reshape(shape)
    return sums.astype(x.dtype, copy=False)


def _spread_axis(g, axis, n):
    m = g.shape[axis]
    if m == n:
        return g
    if n % m == 0:
        k = n // m
        return np.repeat(g / g.dtype.type(k), k, axis=axis)
    start, end = bins(n, m)
    shape = [1] * g.ndim
    shape[axis] = m
    share = g / (end - start).reshape(shape).astype(g.dtype)
    s = _prefix(share, axis)
    h = np.arange(n)
    b, a = np.searchsorted(start, h, "right"), np.searchsorted(end, h, "right")
    out = np.take(s, b, axis=axis) - np.take(s, a, axis=axis)
    return out.astype(g.dtype, copy=False)


def forward(x, out_size):
    """Adaptive average pooling of C-contiguous ``x`` (N, C, *spatial) to ``out_size``."""
    spatial = x.shape[2:]
    if all(m == 1 for m in out_size):
        plane = x.reshape(x.shape[:2] + (-1,))
        return plane.mean(axis=-1).reshape(x.shape[:2] + (1,) * len(spatial))
    y = x
    for axis, m in enumerate(out_size, start=2):
        y = _pool_axis(y, axis, m)
    return np.ascontiguousarray(y) if y is not x else x.copy()


def backward(gy, input_size):
    """Gradient of :func:`forward` for an input of ``input_size``."""
    spatial = tuple(input_size[2:])
    out = np.empty(input_size, dtype=gy.dtype)
    if all(m == 1 for m in gy.shape[2:]):
        out[...] = gy / gy.dtype.type(np.prod(spatial, dtype=np.int64))
        return out
    g = gy
    for axis, n in enumerate(spatial, start=2):
        g = _spread_axis(g, axis, n)
    out[...] = g
    return out
