"""Convolution and pooling on dask arrays: ``fastconv.dask.conv2d`` and the rest.

Each op validates its arguments as the fastconv op does, tiles the input
(:mod:`fastconv.dask.planner`), exchanges halos once with
``dask.array.overlap.overlap(boundary='none', allow_rechunk=False)`` and maps
one fastconv kernel call per output block (``dask.array.map_blocks`` with the
output chunks given), so every output is computed exactly once.
"""

import dask
import dask.array as da
import numpy as np

from .. import _preprocess
from .._validation import conv_geometry, conv_transpose_geometry, pool_geometry
from . import _blocks
from ._blocks import align, dask_input, forward_table, group_channels, nonempty, numpy_operands
from .planner import _axes

__all__ = [
    "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d",
    "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
]

def _meta(nd, dtype):
    return np.empty((0,) * (nd + 2), dtype=dtype)


def _small(a):
    """A NumPy weight as one shared graph node (not a copy per task)."""
    return None if a is None else dask.delayed(a, pure=True)


def forward_conv(x, w, b, geo, rechunk, name="input"):
    """The convolution ``geo`` of the dask array ``x`` (in its input space)."""
    nd = geo.nd
    axes = _axes(geo)
    cig, cog = geo.c_in // geo.groups, geo.c_out // geo.groups
    ch, groups_of = group_channels(x.chunks[1], cig, geo.groups, name, rechunk)
    x, tiles = align(x, axes, "input", rechunk, name, channels=ch)
    xo = _blocks.overlap(x, {2 + i: (0, a.halo) for i, a in enumerate(axes)})
    tables = [forward_table(a, t) for a, t in zip(axes, tiles)]
    chunks = ((x.chunks[0], tuple((g1 - g0) * cog for g0, g1 in groups_of))
              + tuple(a.output_chunks(t) for a, t in zip(axes, tiles)))
    return da.map_blocks(
        _blocks.conv_tile, xo, _small(w), _small(b), nd=nd, tables=tables,
        stride=geo.stride[2 - nd:], dilation=geo.dilation[2 - nd:], groups_of=groups_of,
        rows_per_group=cog, chunks=chunks, dtype=x.dtype, meta=_meta(nd, x.dtype))


def adjoint_conv(gy, w, b, geo, rechunk, name="grad_output"):
    """The input gradient (transposed convolution) of the convolution ``geo`` for the
    dask array ``gy`` in its output space, plus ``b`` if not None."""
    nd = geo.nd
    axes = _axes(geo)
    cig, cog = geo.c_in // geo.groups, geo.c_out // geo.groups
    ch, groups_of = group_channels(gy.chunks[1], cog, geo.groups, name, rechunk)
    gy, tiles = align(gy, axes, "output", rechunk, name, channels=ch)
    go = _blocks.overlap(gy, {2 + i: (a.grad_halo, 0) for i, a in enumerate(axes)})
    tables = [_blocks.adjoint_table(a, t) for a, t in zip(axes, tiles)]
    chunks = ((gy.chunks[0], tuple((g1 - g0) * cig for g0, g1 in groups_of))
              + tuple(a.input_chunks(t) for a, t in zip(axes, tiles)))
    return da.map_blocks(
        _blocks.adjoint_tile, go, _small(w), _small(b), nd=nd, tables=tables,
        stride=geo.stride[2 - nd:], dilation=geo.dilation[2 - nd:], groups_of=groups_of,
        rows_per_group=cog, c_out_per_group=cig, chunks=chunks, dtype=gy.dtype,
        meta=_meta(nd, gy.dtype))


# -- convolution --------------------------------------------------------------


def _conv(nd, x, weight, bias, stride, padding, dilation, groups, rechunk):
    x = dask_input(x, nd)
    x, _, (w, b) = numpy_operands(nd, x, weight=weight, bias=bias)
    nonempty(x.shape)
    geo = conv_geometry(x.shape, w.shape, nd, stride, padding, dilation, groups)
    _preprocess._bias(b, geo.c_out)
    return forward_conv(x, w, b, geo, rechunk)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, rechunk=True):
    """conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, rechunk=True)

    :func:`fastconv.conv1d` of a dask array, tile by tile.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C_in, L)
    weight : numpy.ndarray, shape (C_out, C_in/groups, k)
    bias : numpy.ndarray, shape (C_out,), optional
    stride, padding, dilation, groups
        As :func:`fastconv.conv1d`.
    rechunk : bool
        Rechunk an input whose chunks are not legal for the geometry (else raise).

    Returns
    -------
    dask.array.Array, shape (N, C_out, L_out)
        Chunked along the batch as ``x``, along L in the tiles of ``x``'s chunks.

    Shape
    -----
    ``L_out = floor((L + pad_left + pad_right - dilation*(k-1) - 1) / stride) +
    1``, which must be >= 1. Output ``(N, C_out, L_out)``. As for
    :func:`fastconv.conv1d`; the result is a dask array with known chunks.

    Notes
    -----
    The channel axis may be chunked on group boundaries (whole groups per
    chunk); otherwise it is rechunked to one chunk.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv, fastconv.dask as fd
    >>> x = np.arange(24.).reshape(1, 2, 12)
    >>> w = np.ones((3, 2, 3))
    >>> y = fd.conv1d(da.from_array(x, chunks=(1, 2, 4)), w, stride=2, padding=1)
    >>> y.chunks[2], np.allclose(y.compute(), fastconv.conv1d(x, w, stride=2, padding=1))
    ((2, 2, 2), True)
    """
    return _conv(1, x, weight, bias, stride, padding, dilation, groups, rechunk)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, rechunk=True):
    """conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, rechunk=True)

    :func:`fastconv.conv2d` of a dask array, tile by tile.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C_in, H, W)
    weight : numpy.ndarray, shape (C_out, C_in/groups, kH, kW)
    bias : numpy.ndarray, shape (C_out,), optional
    stride, padding, dilation, groups
        As :func:`fastconv.conv2d`, including ``'same'``, ``'valid'`` and
        asymmetric ``((top, bottom), (left, right))`` padding.
    rechunk : bool
        Rechunk an input whose chunks are not legal for the geometry (else raise).

    Returns
    -------
    dask.array.Array, shape (N, C_out, H_out, W_out)

    Shape
    -----
    ``H_out = floor((H + pad_top + pad_bottom - d_h*(kH-1) - 1) / s_h) + 1``
    (likewise ``W_out``), which must be >= 1. Output ``(N, C_out, H_out,
    W_out)``. As for :func:`fastconv.conv2d`; the result is a dask array with
    known chunks.

    Notes
    -----
    Spatial chunk boundaries must sit at ``o*stride - pad_begin``; other
    chunks are snapped to the nearest such boundaries (a rechunk). The channel
    axis may be chunked on group boundaries, otherwise it is rechunked to one chunk.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv, fastconv.dask as fd
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 20, 20))
    >>> w = np.ones((4, 3, 3, 3))
    >>> y = fd.conv2d(da.from_array(x, chunks=(1, 3, 7, 7)), w, padding=1)
    >>> y.chunks[2:]
    ((8, 7, 5), (8, 7, 5))
    >>> np.allclose(y.compute(), fastconv.conv2d(x, w, padding=1))
    True
    """
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, rechunk)


def _conv_transpose(nd, x, weight, bias, stride, padding, output_padding, groups, dilation,
                    rechunk):
    x = dask_input(x, nd)
    x, _, (w, b) = numpy_operands(nd, x, weight=weight, bias=bias)
    nonempty(x.shape)
    geo = conv_transpose_geometry(x.shape, w.shape, nd, stride, padding, output_padding,
                                  groups, dilation)
    _preprocess._bias(b, geo.c_in)
    return adjoint_conv(x, w, b, geo, rechunk, name="input")


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, rechunk=True):
    """conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *, rechunk=True)

    :func:`fastconv.conv_transpose1d` of a dask array: each output chunk
    gathers the inputs that scatter into it (a halo of ``ceil(eff/stride) - 1``
    inputs from the left neighbour).

    Parameters
    ----------
    x : dask.array.Array, shape (N, C_in, L)
    weight : numpy.ndarray, shape (C_in, C_out/groups, k)
    bias : numpy.ndarray, shape (C_out,), optional
    stride, padding, output_padding, groups, dilation
        As :func:`fastconv.conv_transpose1d`.
    rechunk : bool
        Rechunk an input whose chunks are smaller than the halo (else raise).

    Returns
    -------
    dask.array.Array, shape (N, C_out, L_out)
        Input chunk ``[t0, t1)`` becomes the output chunk ``[t0*s - p, t1*s - p)``
        (the first starts at 0, the last ends at ``L_out``).

    Shape
    -----
    ``L_out = (L - 1)*stride - 2*padding + dilation*(k-1) + output_padding +
    1``. Output ``(N, C_out, L_out)``. As for :func:`fastconv.conv_transpose1d`;
    the result is a dask array with known chunks.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv, fastconv.dask as fd
    >>> x = np.arange(12.).reshape(1, 1, 12)
    >>> w = np.ones((1, 2, 3))
    >>> y = fd.conv_transpose1d(da.from_array(x, chunks=(1, 1, 4)), w, stride=2)
    >>> y.chunks[2], np.allclose(y.compute(), fastconv.conv_transpose1d(x, w, stride=2))
    ((8, 8, 9), True)
    """
    return _conv_transpose(1, x, weight, bias, stride, padding, output_padding, groups,
                           dilation, rechunk)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, rechunk=True):
    """conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *, rechunk=True)

    :func:`fastconv.conv_transpose2d` of a dask array (see :func:`conv_transpose1d`).

    Parameters
    ----------
    x : dask.array.Array, shape (N, C_in, H, W)
    weight : numpy.ndarray, shape (C_in, C_out/groups, kH, kW)
    bias : numpy.ndarray, shape (C_out,), optional
    stride, padding, output_padding, groups, dilation
        As :func:`fastconv.conv_transpose2d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array, shape (N, C_out, H_out, W_out)

    Shape
    -----
    ``H_out = (H - 1)*s_h - 2*p_h + d_h*(kH-1) + output_padding_h + 1``
    (likewise ``W_out``). Output ``(N, C_out, H_out, W_out)``. As for
    :func:`fastconv.conv_transpose2d`; the result is a dask array with known
    chunks.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask as fd
    >>> x = da.ones((2, 4, 8, 8), chunks=(1, 4, 4, 4))
    >>> fd.conv_transpose2d(x, np.ones((4, 2, 2, 2)), stride=2).chunks[2:]
    ((8, 8), (8, 8))
    """
    return _conv_transpose(2, x, weight, bias, stride, padding, output_padding, groups,
                           dilation, rechunk)


# -- pooling ------------------------------------------------------------------


def _pool(nd, kind, x, geo, rechunk, cip=False, return_indices=False):
    axes = _axes(geo)
    x, tiles = align(x, axes, "input", rechunk, "input")
    xo = _blocks.overlap(x, {2 + i: (0, a.halo) for i, a in enumerate(axes)})
    tables = [forward_table(a, t) for a, t in zip(axes, tiles)]
    chunks = tuple(x.chunks[:2]) + tuple(a.output_chunks(t) for a, t in zip(axes, tiles))
    kw = dict(kind=kind, geo=geo, tables=tables, cip=cip, want_indices=return_indices,
              chunks=chunks)
    if not return_indices:
        return da.map_blocks(_blocks.pool_tile, xo, dtype=x.dtype, meta=_meta(nd, x.dtype), **kw)
    both = da.map_blocks(_blocks.pool_tile, xo, dtype=object, meta=_meta(nd, object), **kw)
    values = both.map_blocks(_blocks.item, 0, dtype=x.dtype, meta=_meta(nd, x.dtype))
    indices = both.map_blocks(_blocks.item, 1, dtype=np.int64, meta=_meta(nd, np.int64))
    return values, indices


def _max_pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, rechunk):
    x = dask_input(x, nd)
    x, _, _ = numpy_operands(nd, x)
    nonempty(x.shape)
    geo = pool_geometry(x.shape[2:], nd, kernel_size, stride, padding, dilation, ceil_mode)
    return _pool(nd, "max", x, geo, rechunk, return_indices=return_indices)


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, rechunk=True):
    """max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *, rechunk=True)

    :func:`fastconv.max_pool1d` of a dask array; bitwise the same values and
    indices (global positions in ``[0, L)``).

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, L)
        Chunked along any axis (channels too).
    kernel_size, stride, padding, dilation, ceil_mode, return_indices
        As :func:`fastconv.max_pool1d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array, or (values, indices) with ``return_indices``

    Shape
    -----
    Input ``(N, C, L)``, output ``(N, C, L_out)`` with ``L_out =
    floor_or_ceil((L + 2*padding - dilation*(k-1) - 1) / stride) + 1``. Indices
    (``return_indices=True``) are int64 positions in ``[0, L)``. ``ceil_mode``
    drops a last window that would start in the right padding. As for
    :func:`fastconv.max_pool1d`; the result is a dask array with known chunks.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask as fd
    >>> x = da.from_array(np.array([[[1., 5, 2, 0, 7, 3]]]), chunks=(1, 1, 2))
    >>> y, i = fd.max_pool1d(x, 2, return_indices=True)
    >>> y.compute(), i.compute()
    (array([[[5., 2., 7.]]]), array([[[1, 2, 4]]]))
    """
    return _max_pool(1, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                     rechunk)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, rechunk=True):
    """max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *, rechunk=True)

    :func:`fastconv.max_pool2d` of a dask array; bitwise the same values and
    indices, which are global flat positions ``h*W + w`` in the whole input plane.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, H, W)
        Chunked along any axis (channels too).
    kernel_size, stride, padding, dilation, ceil_mode, return_indices
        As :func:`fastconv.max_pool2d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array, or (values, indices) with ``return_indices``

    Shape
    -----
    ``H_out = floor_or_ceil((H + 2*p_h - d_h*(kH-1) - 1) / s_h) + 1``; with
    ``ceil_mode`` a last window that would start in the bottom/right padding is
    dropped. Output ``(N, C, H_out, W_out)``. As for
    :func:`fastconv.max_pool2d`; the result is a dask array with known chunks.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv, fastconv.dask as fd
    >>> x = np.random.default_rng(0).standard_normal((1, 2, 9, 9))
    >>> y, i = fd.max_pool2d(da.from_array(x, chunks=(1, 1, 4, 4)), 3, 2, 1,
    ...                      return_indices=True)
    >>> ref, ref_i = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    >>> np.array_equal(y.compute(), ref), np.array_equal(i.compute(), ref_i)
    (True, True)
    """
    return _max_pool(2, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                     rechunk)


def _avg_pool(nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad, rechunk):
    x = dask_input(x, nd)
    x, _, _ = numpy_operands(nd, x)
    nonempty(x.shape)
    _preprocess._check_count_include_pad(count_include_pad)
    geo = pool_geometry(x.shape[2:], nd, kernel_size, stride, padding, 1, ceil_mode)
    return _pool(nd, "avg", x, geo, rechunk, cip=bool(count_include_pad))


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               *, rechunk=True):
    """avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *, rechunk=True)

    :func:`fastconv.avg_pool1d` of a dask array; bitwise the same values.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, L)
    kernel_size, stride, padding, ceil_mode, count_include_pad
        As :func:`fastconv.avg_pool1d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array, shape (N, C, L_out)

    Shape
    -----
    Input ``(N, C, L)``, output ``(N, C, L_out)``, ``L_out = floor_or_ceil((L +
    2*padding - k) / stride) + 1``. As for :func:`fastconv.avg_pool1d`; the
    result is a dask array with known chunks.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask as fd
    >>> x = da.from_array(np.arange(8.).reshape(1, 1, 8), chunks=(1, 1, 3))
    >>> fd.avg_pool1d(x, 2).compute()
    array([[[0.5, 2.5, 4.5, 6.5]]])
    """
    return _avg_pool(1, x, kernel_size, stride, padding, ceil_mode, count_include_pad, rechunk)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               *, rechunk=True):
    """avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *, rechunk=True)

    :func:`fastconv.avg_pool2d` of a dask array; bitwise the same values.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, H, W)
    kernel_size, stride, padding, ceil_mode, count_include_pad
        As :func:`fastconv.avg_pool2d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array, shape (N, C, H_out, W_out)

    Shape
    -----
    ``H_out = floor_or_ceil((H + 2*p_h - kH) / s_h) + 1``, as for max pooling.
    Output ``(N, C, H_out, W_out)``. As for :func:`fastconv.avg_pool2d`; the
    result is a dask array with known chunks.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask as fd
    >>> fd.avg_pool2d(da.ones((2, 3, 32, 32), chunks=(1, 3, 8, 8)), 2).shape
    (2, 3, 16, 16)
    """
    return _avg_pool(2, x, kernel_size, stride, padding, ceil_mode, count_include_pad, rechunk)
