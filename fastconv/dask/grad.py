"""Gradients on dask arrays, mirroring :mod:`fastconv.grad`.

* Input gradients (``conv*_input``, ``conv_transpose*_input``, pooling)
  keep the input's chunking: input chunk ``[c_j, c_{j+1})`` gathers the
  output gradients that reach it, a halo from the left neighbour.
* Weight gradients are one fastconv call per block pair (the input tile
  with its halo and its output tile), summed in a tree on the workers:
  a ``(C_out, C_in/groups, *kernel)`` dask array of one chunk.
* ``conv_bias`` is dask's tree reduction, accumulated in float64.

The max-pool gradient takes the pooling geometry besides fastconv's
arguments (``kernel_size, stride, padding, dilation, ceil_mode``): it tells
which input chunks each output's index can reach.
"""

import dask
import dask.array as da
import numpy as np

from .. import _preprocess
from .._validation import (
    check_size,
    conv_geometry,
    conv_transpose_geometry,
    pool_geometry,
)
from . import _blocks
from ._blocks import align, dask_input, forward_table, nonempty, numpy_operands
from ._ops import _meta, adjoint_conv, forward_conv
from .planner import _axes

__all__ = [
    "conv1d_input", "conv2d_input", "conv1d_weight", "conv2d_weight",
    "conv_transpose1d_input", "conv_transpose2d_input", "conv_transpose1d_weight",
    "conv_transpose2d_weight", "conv_bias", "max_pool1d", "max_pool2d", "avg_pool1d",
    "avg_pool2d",
]


def _check_grad_output(gy, expected, what):
    if tuple(gy.shape) != tuple(expected):
        raise ValueError(f"Expected grad_output of shape {tuple(expected)} (the output of "
                         f"{what}), got {tuple(gy.shape)}")


# -- convolution --------------------------------------------------------------


def _conv_input(nd, input_size, weight, grad_output, stride, padding, dilation, groups,
                rechunk):
    size = check_size(input_size, nd, "input_size")
    nonempty(size, "input_size")
    gy = dask_input(grad_output, nd, "grad_output")
    gy, _, (w,) = numpy_operands(nd, gy, weight=weight)
    geo = conv_geometry(size, w.shape, nd, stride, padding, dilation, groups)
    _check_grad_output(gy, geo.output_shape(), f"conv{nd}d for input_size={size}")
    return adjoint_conv(gy, w, None, geo, rechunk)


def conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 *, rechunk=True):
    """Gradient of ``conv1d`` with respect to its input, as :func:`fastconv.grad.conv1d_input`.

    Parameters
    ----------
    input_size : tuple of int
        ``(N, C_in, L)``.
    weight : numpy.ndarray, shape (C_out, C_in/groups, k)
    grad_output : dask.array.Array, shape (N, C_out, L_out)
    stride, padding, dilation, groups
        As :func:`fastconv.conv1d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array of shape ``input_size``, chunked as the forward's input
    (output tile ``[o0, o1)`` -> input chunk ``[o0*s - p, o1*s - p)``).

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv, fastconv.dask as fd
    >>> w, gy = np.ones((1, 1, 3)), np.arange(8.).reshape(1, 1, 8)
    >>> dx = fd.grad.conv1d_input((1, 1, 16), w, da.from_array(gy, chunks=3), stride=2, padding=1)
    >>> dx.chunks[2], np.allclose(dx.compute(), fastconv.grad.conv1d_input((1, 1, 16), w, gy, 2, 1))
    ((5, 6, 5), True)
    """
    return _conv_input(1, input_size, weight, grad_output, stride, padding, dilation, groups,
                       rechunk)


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 *, rechunk=True):
    """Gradient of ``conv2d`` with respect to its input, as :func:`fastconv.grad.conv2d_input`.

    Parameters
    ----------
    input_size : tuple of int
        ``(N, C_in, H, W)``.
    weight : numpy.ndarray, shape (C_out, C_in/groups, kH, kW)
    grad_output : dask.array.Array, shape (N, C_out, H_out, W_out)
    stride, padding, dilation, groups
        As :func:`fastconv.conv2d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array of shape ``input_size``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask as fd
    >>> gy = da.ones((2, 4, 16, 16), chunks=(1, 4, 8, 8))
    >>> fd.grad.conv2d_input((2, 3, 16, 16), np.ones((4, 3, 3, 3)), gy, padding=1).chunks[2:]
    ((7, 9), (7, 9))
    """
    return _conv_input(2, input_size, weight, grad_output, stride, padding, dilation, groups,
                       rechunk)


def weight_grad(x, gy, geo, weight_shape, rechunk, names=("input", "grad_output")):
    """The weight gradient of the convolution ``geo``: ``x`` in its input space,
    ``gy`` in its output space; a tree sum over block pairs."""
    nd = geo.nd
    axes = _axes(geo)
    x, tiles = align(x, axes, "input", rechunk, names[0], channels=(x.shape[1],))
    want = ((x.chunks[0], (gy.shape[1],))
            + tuple(a.output_chunks(t) for a, t in zip(axes, tiles)))
    if gy.chunks != want:
        gy = gy.rechunk(want)
    xo = _blocks.overlap(x, {2 + i: (0, a.halo) for i, a in enumerate(axes)})
    tables = [forward_table(a, t) for a, t in zip(axes, tiles)]
    xb, gb = xo.to_delayed(), gy.to_delayed()
    parts = []
    for index in np.ndindex(xb.shape):
        parts.append(dask.delayed(_blocks.weight_tile, pure=True)(
            xb[index], gb[index], nd=nd, tables=tables,
            stride=geo.stride[2 - nd:], dilation=geo.dilation[2 - nd:], groups=geo.groups,
            weight_shape=tuple(weight_shape), block_id=index))
    total = _blocks.tree_sum(parts)
    return da.from_delayed(total, shape=tuple(weight_shape), dtype=x.dtype,
                           meta=np.empty((0,) * len(weight_shape), dtype=x.dtype))


def _operand_pair(nd, x, gy):
    x = dask_input(x, nd, "input")
    gy = dask_input(gy, nd, "grad_output")
    dtype = np.result_type(_blocks.numpy_operands(nd, x)[1], numpy_operands(nd, gy)[1])
    return x.astype(dtype), gy.astype(dtype)


def _conv_weight(nd, x, weight_size, grad_output, stride, padding, dilation, groups, rechunk):
    size = check_size(weight_size, nd, "weight_size", "(C_out, C_in/groups, *kernel)")
    x, gy = _operand_pair(nd, x, grad_output)
    nonempty(x.shape)
    geo = conv_geometry(x.shape, size, nd, stride, padding, dilation, groups)
    _check_grad_output(gy, geo.output_shape(), f"conv{nd}d for weight_size={size}")
    return weight_grad(x, gy, geo, size, rechunk)


def conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  *, rechunk=True):
    """Gradient of ``conv1d`` with respect to its weight, as :func:`fastconv.grad.conv1d_weight`.

    Parameters
    ----------
    input : dask.array.Array, shape (N, C_in, L)
    weight_size : tuple of int
        ``(C_out, C_in/groups, k)``.
    grad_output : dask.array.Array, shape (N, C_out, L_out)
        Rechunked to the tiles of ``input`` if needed.
    stride, padding, dilation, groups
        As :func:`fastconv.conv1d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array of shape ``weight_size``, one chunk (a tree sum of the blocks').

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv, fastconv.dask as fd
    >>> x, gy = np.ones((2, 1, 9)), np.ones((2, 1, 9))
    >>> dw = fd.grad.conv1d_weight(da.from_array(x, chunks=(1, 1, 3)), (1, 1, 3),
    ...                            da.from_array(gy), padding=1)
    >>> dw.chunks, dw.compute()
    (((1,), (1,), (3,)), array([[[16., 18., 16.]]]))
    """
    return _conv_weight(1, input, weight_size, grad_output, stride, padding, dilation, groups,
                        rechunk)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  *, rechunk=True):
    """Gradient of ``conv2d`` with respect to its weight, as :func:`fastconv.grad.conv2d_weight`.

    Parameters
    ----------
    input : dask.array.Array, shape (N, C_in, H, W)
    weight_size : tuple of int
        ``(C_out, C_in/groups, kH, kW)``.
    grad_output : dask.array.Array, shape (N, C_out, H_out, W_out)
    stride, padding, dilation, groups
        As :func:`fastconv.conv2d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array of shape ``weight_size``, one chunk.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask as fd
    >>> x = da.ones((2, 3, 16, 16), chunks=(1, 3, 8, 8))
    >>> gy = da.ones((2, 4, 16, 16))
    >>> fd.grad.conv2d_weight(x, (4, 3, 3, 3), gy, padding=1).compute()[0, 0]
    array([[450., 480., 450.],
           [480., 512., 480.],
           [450., 480., 450.]])
    """
    return _conv_weight(2, input, weight_size, grad_output, stride, padding, dilation, groups,
                        rechunk)


def _conv_transpose_input(nd, input_size, weight, grad_output, stride, padding, output_padding,
                          groups, dilation, rechunk):
    size = check_size(input_size, nd, "input_size")
    nonempty(size, "input_size")
    gy = dask_input(grad_output, nd, "grad_output")
    gy, _, (w,) = numpy_operands(nd, gy, weight=weight)
    geo = conv_transpose_geometry(size, w.shape, nd, stride, padding, output_padding, groups,
                                  dilation)
    _check_grad_output(gy, geo.input_shape(), f"conv_transpose{nd}d for input_size={size}")
    return forward_conv(gy, w, None, geo, rechunk, name="grad_output")


def conv_transpose1d_input(input_size, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1, *, rechunk=True):
    """Gradient of ``conv_transpose1d`` with respect to its input: ``conv1d`` of ``grad_output``.

    Parameters
    ----------
    input_size : tuple of int
    weight : numpy.ndarray, shape (C_in, C_out/groups, k)
    grad_output : dask.array.Array
    stride, padding, output_padding, groups, dilation
        As :func:`fastconv.conv_transpose1d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array of shape ``input_size``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask as fd
    >>> gy = da.ones((1, 2, 17), chunks=(1, 2, 6))
    >>> fd.grad.conv_transpose1d_input((1, 1, 8), np.ones((1, 2, 3)), gy, stride=2).compute()
    array([[[6., 6., 6., 6., 6., 6., 6., 6.]]])
    """
    return _conv_transpose_input(1, input_size, weight, grad_output, stride, padding,
                                 output_padding, groups, dilation, rechunk)


def conv_transpose2d_input(input_size, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1, *, rechunk=True):
    """Gradient of ``conv_transpose2d`` with respect to its input: ``conv2d`` of ``grad_output``.

    Parameters
    ----------
    input_size : tuple of int
    weight : numpy.ndarray, shape (C_in, C_out/groups, kH, kW)
    grad_output : dask.array.Array
    stride, padding, output_padding, groups, dilation
        As :func:`fastconv.conv_transpose2d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array of shape ``input_size``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask as fd
    >>> gy = da.ones((1, 2, 16, 16), chunks=(1, 2, 5, 5))
    >>> fd.grad.conv_transpose2d_input((1, 4, 8, 8), np.ones((4, 2, 2, 2)), gy, stride=2).shape
    (1, 4, 8, 8)
    """
    return _conv_transpose_input(2, input_size, weight, grad_output, stride, padding,
                                 output_padding, groups, dilation, rechunk)


def _conv_transpose_weight(nd, x, weight_size, grad_output, stride, padding, output_padding,
                           groups, dilation, rechunk):
    size = check_size(weight_size, nd, "weight_size", "(C_in, C_out/groups, *kernel)")
    x, gy = _operand_pair(nd, x, grad_output)
    nonempty(x.shape)
    geo = conv_transpose_geometry(x.shape, size, nd, stride, padding, output_padding, groups,
                                  dilation)
    _check_grad_output(gy, geo.input_shape(), f"conv_transpose{nd}d for weight_size={size}")
    # Roles swap: the convolution's "input" is grad_output, its "grad_output" is x.
    return weight_grad(gy, x, geo, size, rechunk, names=("grad_output", "input"))


def conv_transpose1d_weight(input, weight_size, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1, *, rechunk=True):
    """Gradient of ``conv_transpose1d`` with respect to its weight.

    Parameters
    ----------
    input : dask.array.Array, shape (N, C_in, L)
    weight_size : tuple of int
        ``(C_in, C_out/groups, k)``.
    grad_output : dask.array.Array
        Of the transposed convolution's output shape.
    stride, padding, output_padding, groups, dilation
        As :func:`fastconv.conv_transpose1d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array of shape ``weight_size``, one chunk.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask as fd
    >>> x, gy = da.ones((1, 1, 8), chunks=3), da.ones((1, 2, 17), chunks=5)
    >>> fd.grad.conv_transpose1d_weight(x, (1, 2, 3), gy, stride=2).compute()
    array([[[8., 8., 8.],
            [8., 8., 8.]]])
    """
    return _conv_transpose_weight(1, input, weight_size, grad_output, stride, padding,
                                  output_padding, groups, dilation, rechunk)


def conv_transpose2d_weight(input, weight_size, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1, *, rechunk=True):
    """Gradient of ``conv_transpose2d`` with respect to its weight.

    Parameters
    ----------
    input : dask.array.Array, shape (N, C_in, H, W)
    weight_size : tuple of int
        ``(C_in, C_out/groups, kH, kW)``.
    grad_output : dask.array.Array
    stride, padding, output_padding, groups, dilation
        As :func:`fastconv.conv_transpose2d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array of shape ``weight_size``, one chunk.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask as fd
    >>> x, gy = da.ones((1, 4, 8, 8), chunks=4), da.ones((1, 2, 16, 16), chunks=6)
    >>> fd.grad.conv_transpose2d_weight(x, (4, 2, 2, 2), gy, stride=2).shape
    (4, 2, 2, 2)
    """
    return _conv_transpose_weight(2, input, weight_size, grad_output, stride, padding,
                                  output_padding, groups, dilation, rechunk)


def conv_bias(grad_output):
    """Gradient of any convolution with respect to its bias: dask's tree sum of
    ``grad_output`` over every axis but 1, in float64, returned in its dtype.

    Parameters
    ----------
    grad_output : dask.array.Array, shape (N, C, ...)

    Returns
    -------
    dask.array.Array, shape (C,), one chunk.

    Examples
    --------
    >>> import dask.array as da, fastconv.dask as fd
    >>> fd.grad.conv_bias(da.ones((4, 3, 10), chunks=(1, 3, 3))).compute()
    array([40., 40., 40.])
    """
    if not isinstance(grad_output, da.Array):
        raise TypeError(f"Expected grad_output to be a dask array, got "
                        f"{type(grad_output).__name__}")
    if grad_output.ndim < 2:
        raise ValueError(f"Expected grad_output of at least 2 dimensions (N, C, ...), got "
                         f"shape {grad_output.shape}")
    gy, dtype, _ = numpy_operands(grad_output.ndim - 2, grad_output)
    axes = (0,) + tuple(range(2, gy.ndim))
    return gy.sum(axis=axes, dtype=np.float64).astype(dtype).rechunk(-1)


# -- pooling ------------------------------------------------------------------


def _adjoint_pool(nd, gy, geo, fn, rechunk, extra=(), **kw):
    axes = _axes(geo)
    gy, tiles = align(gy, axes, "output", rechunk, "grad_output")
    depth = {2 + i: (a.grad_halo, 0) for i, a in enumerate(axes)}
    go = _blocks.overlap(gy, depth)
    more = [_blocks.overlap(e.rechunk(gy.chunks), depth) for e in extra]
    tables = [_blocks.adjoint_table(a, t) for a, t in zip(axes, tiles)]
    chunks = tuple(gy.chunks[:2]) + tuple(a.input_chunks(t) for a, t in zip(axes, tiles))
    return da.map_blocks(fn, go, *more, geo=geo, tables=tables, chunks=chunks, dtype=gy.dtype,
                         meta=_meta(nd, gy.dtype), **kw)


def _max_pool_grad(nd, grad_output, indices, input_size, kernel_size, stride, padding,
                   dilation, ceil_mode, rechunk):
    size = check_size(input_size, nd, "input_size")
    nonempty(size, "input_size")
    gy = dask_input(grad_output, nd, "grad_output")
    gy, _, _ = numpy_operands(nd, gy)
    idx = indices if isinstance(indices, da.Array) else da.from_array(np.asarray(indices))
    if idx.dtype.kind not in "iu":
        raise TypeError(f"Expected integer indices, got dtype {idx.dtype}")
    if idx.shape != gy.shape:
        raise ValueError(f"Expected indices of the shape of grad_output {gy.shape}, got "
                         f"{idx.shape}")
    geo = pool_geometry(size[2:], nd, kernel_size, stride, padding, dilation, ceil_mode)
    _check_grad_output(gy, geo.out_shape(size[:2]), f"max_pool{nd}d for input_size={size}")
    return _adjoint_pool(nd, gy, geo, _blocks.max_pool_grad_tile, rechunk,
                         extra=(idx.astype(np.int64),))


def max_pool1d(grad_output, indices, input_size, kernel_size, stride=None, padding=0,
               dilation=1, ceil_mode=False, *, rechunk=True):
    """Gradient of ``max_pool1d``: ``grad_output`` routed to ``indices``, bitwise as
    :func:`fastconv.grad.max_pool1d`.

    Parameters
    ----------
    grad_output : dask.array.Array, shape (N, C, L_out)
    indices : dask.array.Array or numpy.ndarray of int
        The global indices of :func:`fastconv.dask.max_pool1d`.
    input_size : tuple of int
    kernel_size, stride, padding, dilation, ceil_mode
        The forward's geometry (which chunks an index can reach).
    rechunk : bool

    Returns
    -------
    dask.array.Array of shape ``input_size``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask as fd
    >>> x = da.from_array(np.array([[[1., 5, 2, 0, 7, 3]]]), chunks=2)
    >>> y, i = fd.max_pool1d(x, 2, return_indices=True)
    >>> fd.grad.max_pool1d(da.ones_like(y), i, x.shape, 2).compute()
    array([[[0., 1., 1., 0., 1., 0.]]])
    """
    return _max_pool_grad(1, grad_output, indices, input_size, kernel_size, stride, padding,
                          dilation, ceil_mode, rechunk)


def max_pool2d(grad_output, indices, input_size, kernel_size, stride=None, padding=0,
               dilation=1, ceil_mode=False, *, rechunk=True):
    """Gradient of ``max_pool2d``: ``grad_output`` routed to ``indices`` (``h*W + w``),
    bitwise as :func:`fastconv.grad.max_pool2d`.

    Parameters
    ----------
    grad_output : dask.array.Array, shape (N, C, H_out, W_out)
    indices : dask.array.Array or numpy.ndarray of int
    input_size : tuple of int
    kernel_size, stride, padding, dilation, ceil_mode
        The forward's geometry.
    rechunk : bool

    Returns
    -------
    dask.array.Array of shape ``input_size``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask as fd
    >>> x = da.random.default_rng(0).standard_normal((1, 2, 9, 9), chunks=(1, 1, 4, 4))
    >>> y, i = fd.max_pool2d(x, 3, 2, 1, return_indices=True)
    >>> fd.grad.max_pool2d(da.ones_like(y), i, x.shape, 3, 2, 1).sum().compute()
    np.float64(50.0)
    """
    return _max_pool_grad(2, grad_output, indices, input_size, kernel_size, stride, padding,
                          dilation, ceil_mode, rechunk)


def _avg_pool_grad(nd, grad_output, input_size, kernel_size, stride, padding, ceil_mode,
                   count_include_pad, rechunk):
    size = check_size(input_size, nd, "input_size")
    nonempty(size, "input_size")
    _preprocess._check_count_include_pad(count_include_pad)
    gy = dask_input(grad_output, nd, "grad_output")
    gy, _, _ = numpy_operands(nd, gy)
    geo = pool_geometry(size[2:], nd, kernel_size, stride, padding, 1, ceil_mode)
    _check_grad_output(gy, geo.out_shape(size[:2]), f"avg_pool{nd}d for input_size={size}")
    return _adjoint_pool(nd, gy, geo, _blocks.avg_pool_grad_tile, rechunk,
                         cip=bool(count_include_pad))


def avg_pool1d(grad_output, input_size, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, *, rechunk=True):
    """Gradient of ``avg_pool1d``, as :func:`fastconv.grad.avg_pool1d`.

    Parameters
    ----------
    grad_output : dask.array.Array, shape (N, C, L_out)
    input_size : tuple of int
    kernel_size, stride, padding, ceil_mode, count_include_pad
        As :func:`fastconv.avg_pool1d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array of shape ``input_size``.

    Examples
    --------
    >>> import dask.array as da, fastconv.dask as fd
    >>> fd.grad.avg_pool1d(da.ones((1, 1, 4), chunks=2), (1, 1, 8), 2).compute()
    array([[[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]]])
    """
    return _avg_pool_grad(1, grad_output, input_size, kernel_size, stride, padding, ceil_mode,
                          count_include_pad, rechunk)


def avg_pool2d(grad_output, input_size, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, *, rechunk=True):
    """Gradient of ``avg_pool2d``, as :func:`fastconv.grad.avg_pool2d`.

    Parameters
    ----------
    grad_output : dask.array.Array, shape (N, C, H_out, W_out)
    input_size : tuple of int
    kernel_size, stride, padding, ceil_mode, count_include_pad
        As :func:`fastconv.avg_pool2d`.
    rechunk : bool

    Returns
    -------
    dask.array.Array of shape ``input_size``.

    Examples
    --------
    >>> import dask.array as da, fastconv.dask as fd
    >>> fd.grad.avg_pool2d(da.ones((1, 1, 4, 4), chunks=2), (1, 1, 8, 8), 2).sum().compute()
    np.float64(16.0)
    """
    return _avg_pool_grad(2, grad_output, input_size, kernel_size, stride, padding, ceil_mode,
                          count_include_pad, rechunk)
