"""Gradients of the convolution and pooling ops, with ``torch.nn.grad`` signatures.

For a convolution ``y = conv(x, w) + b`` and an upstream gradient ``dy``:

* ``conv*_input``: ``dx`` is the transposed convolution of ``dy`` with ``w``
  (the "full" convolution of ``dy`` with the flipped kernel, generalised to
  stride, padding, dilation and groups);
* ``conv*_weight``: ``dw[j, i, k] = sum_{n, t} dy[n, j, t] * x_pad[n, i, t*s + k*d]``,
  the correlation of the input with the error map, summed over positions and
  batch: weight sharing sums the gradients of every place a weight is used;
* ``conv_bias``: ``db[j] = sum_{n, t} dy[n, j, t]``.

The transposed-convolution gradients swap these roles. Pooling gradients route
``dy`` back through the max-pool "switches" (indices) or spread it evenly over
each averaging window.

``input_size`` and ``weight_size`` are full shapes, ``(N, C, ...)`` and
``(C_out, C_in/groups, ...)``. Every ``grad_output`` is checked against the
shape the forward op would produce for those sizes.
"""


import numpy as np

from . import _adaptive, _preprocess
from ._launch import (
    avg_pool_backward,
    batch_norm_backward,
    bias_grad,
    conv_forward,
    conv_input_grad,
    conv_weight_grad,
    max_pool_backward,
)

__all__ = [
    "conv1d_input",
    "conv2d_input",
    "conv1d_weight",
    "conv2d_weight",
    "conv_transpose1d_input",
    "conv_transpose2d_input",
    "conv_transpose1d_weight",
    "conv_transpose2d_weight",
    "conv_bias",
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "batch_norm",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
]


# -- convolution --------------------------------------------------------------


def _conv_input(nd, input_size, weight, grad_output, stride, padding, dilation, groups):
    w, gy, geo = _preprocess.conv_input(nd, input_size, weight, grad_output, stride, padding,
                                        dilation, groups)
    return conv_input_grad(gy, w, None, geo)


def conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1)

    Gradient of :func:`fastconv.conv1d` with respect to its input.

    Every ``dy[n, j, t]`` adds ``dy[n, j, t] * w[j, i, k]`` to input position
    ``t*stride - pad_left + k*dilation``: the transposed convolution of
    ``grad_output`` (the "full" convolution with the flipped kernel). Input
    positions that no window reaches get 0.

    Parameters
    ----------
    input_size : tuple of int
        The full input shape ``(N, C_in, L)``.
    weight : array_like, shape (C_out, C_in/groups, k)
    grad_output : array_like, shape (N, C_out, L_out)
        The gradient of the loss with respect to ``conv1d``'s output.
    stride, padding, dilation, groups
        As given to :func:`fastconv.conv1d`.

    Returns
    -------
    numpy.ndarray
        The input gradient, of shape ``input_size``.

    Shape
    -----
    ``grad_output`` must have the forward op's output shape, ``L_out =
    floor((L + pad_left + pad_right - dilation*(k-1) - 1) / stride) + 1``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> w = np.array([[[1., 2.]]])
    >>> dy = np.array([[[1., 10.]]])          # gradient of conv1d's (1, 1, 2) output
    >>> fastconv.grad.conv1d_input((1, 1, 3), w, dy)
    array([[[ 1., 12., 20.]]])
    """
    return _conv_input(1, input_size, weight, grad_output, stride, padding, dilation, groups)


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1)

    Gradient of :func:`fastconv.conv2d` with respect to its input.

    ``dx[n, i, h, w] = sum dy[n, j, oh, ow] * W[j, i, p, q]`` over every
    ``(j, p, q, oh, ow)`` with ``oh*s_h - pad_top + p*d_h = h`` and likewise for
    ``w``: the transposed convolution of ``dy``, i.e.
    :func:`fastconv.conv_transpose2d` with the same weight.

    Parameters
    ----------
    input_size : tuple of int
        The full input shape ``(N, C_in, H, W)``.
    weight : array_like, shape (C_out, C_in/groups, kH, kW)
    grad_output : array_like, shape (N, C_out, H_out, W_out)
    stride, padding, dilation, groups
        As given to :func:`fastconv.conv2d`.

    Returns
    -------
    numpy.ndarray
        The input gradient, of shape ``input_size``.

    Shape
    -----
    ``grad_output`` must have the forward op's output shape, ``H_out =
    floor((H + pad_top + pad_bottom - d_h*(kH-1) - 1) / s_h) + 1`` (likewise
    ``W_out``).

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((16, 3, 3, 3))
    >>> dy = rng.standard_normal((8, 16, 16, 16))     # conv2d(x, w, stride=2, padding=1) of 32x32
    >>> dx = fastconv.grad.conv2d_input((8, 3, 32, 32), w, dy, stride=2, padding=1)
    >>> dx.shape
    (8, 3, 32, 32)
    >>> np.allclose(dx, fastconv.conv_transpose2d(dy, w, stride=2, padding=1, output_padding=1))
    True
    """
    return _conv_input(2, input_size, weight, grad_output, stride, padding, dilation, groups)


def _conv_weight(nd, x, weight_size, grad_output, stride, padding, dilation, groups):
    x, gy, geo = _preprocess.conv_weight(nd, x, weight_size, grad_output, stride, padding,
                                         dilation, groups)
    return conv_weight_grad(x, gy, geo)


def conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1)

    Gradient of :func:`fastconv.conv1d` with respect to its weight.

    ``dw[j, i, k] = sum_{n, t} dy[n, j, t] * x_pad[n, i', t*stride + k*dilation]``
    with ``i'`` the input channel ``i`` of ``j``'s group: the correlation of the
    input with the error map, summed over positions and batch (weight sharing
    sums the gradients of every place a weight is used).

    Parameters
    ----------
    input : array_like, shape (N, C_in, L)
        The forward op's input.
    weight_size : tuple of int
        The full weight shape ``(C_out, C_in/groups, k)``.
    grad_output : array_like, shape (N, C_out, L_out)
    stride, padding, dilation, groups
        As given to :func:`fastconv.conv1d`.

    Returns
    -------
    numpy.ndarray
        The weight gradient, of shape ``weight_size``.

    Shape
    -----
    ``grad_output`` must have the forward op's output shape ``(N, C_out, L_out)``,
    ``L_out = floor((L + pad_left + pad_right - dilation*(k-1) - 1) / stride) + 1``;
    the result has ``weight_size``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[3., 4., 5.]]])
    >>> dy = np.array([[[1., 10.]]])
    >>> fastconv.grad.conv1d_weight(x, (1, 1, 2), dy)      # 1*3 + 10*4, 1*4 + 10*5
    array([[[43., 54.]]])
    """
    return _conv_weight(1, input, weight_size, grad_output, stride, padding, dilation, groups)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1)

    Gradient of :func:`fastconv.conv2d` with respect to its weight.

    ``dW[j, i, p, q] = sum_{n, oh, ow} dy[n, j, oh, ow] * x_pad[n, i', oh*s_h + p*d_h, ow*s_w + q*d_w]``
    with ``i'`` the input channel ``i`` of ``j``'s group.

    Parameters
    ----------
    input : array_like, shape (N, C_in, H, W)
        The forward op's input.
    weight_size : tuple of int
        The full weight shape ``(C_out, C_in/groups, kH, kW)``.
    grad_output : array_like, shape (N, C_out, H_out, W_out)
    stride, padding, dilation, groups
        As given to :func:`fastconv.conv2d`.

    Returns
    -------
    numpy.ndarray
        The weight gradient, of shape ``weight_size``.

    Shape
    -----
    ``grad_output`` must have the forward op's output shape
    ``(N, C_out, H_out, W_out)``,
    ``H_out = floor((H + pad_top + pad_bottom - d_h*(kH-1) - 1) / s_h) + 1``
    (likewise ``W_out``); the result has ``weight_size``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((4, 3, 8, 8))
    >>> dy = rng.standard_normal((4, 6, 8, 8))
    >>> dw = fastconv.grad.conv2d_weight(x, (6, 3, 3, 3), dy, padding=1)
    >>> dw.shape
    (6, 3, 3, 3)
    >>> np.allclose(dw, fastconv.reference.conv2d_weight(x, (6, 3, 3, 3), dy, padding=1))
    True
    """
    return _conv_weight(2, input, weight_size, grad_output, stride, padding, dilation, groups)


def _conv_transpose_input(nd, input_size, weight, grad_output, stride, padding,
                          output_padding, groups, dilation):
    w, gy, geo = _preprocess.conv_transpose_input(nd, input_size, weight, grad_output, stride,
                                                  padding, output_padding, groups, dilation)
    # The transposed convolution's input gradient is the forward convolution.
    return conv_forward(gy, w, None, geo)


def conv_transpose1d_input(input_size, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    """conv_transpose1d_input(input_size, weight, grad_output, stride=1, padding=0, output_padding=0, groups=1, dilation=1)

    Gradient of :func:`fastconv.conv_transpose1d` with respect to its input: the
    forward convolution :func:`fastconv.conv1d` of ``grad_output`` with the same
    weight.

    Parameters
    ----------
    input_size : tuple of int
        The full input shape ``(N, C_in, L)``.
    weight : array_like, shape (C_in, C_out/groups, k)
    grad_output : array_like, shape (N, C_out, L_out)
    stride, padding, output_padding, groups, dilation
        As given to :func:`fastconv.conv_transpose1d`.

    Returns
    -------
    numpy.ndarray
        The input gradient, of shape ``input_size``.

    Shape
    -----
    ``L_out = (L - 1)*stride - 2*padding + dilation*(k-1) + output_padding + 1``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> w = np.array([[[1., 10., 100.]]])
    >>> dy = np.array([[[1., 0., 0., 2.]]])     # gradient of the (1, 1, 4) output
    >>> fastconv.grad.conv_transpose1d_input((1, 1, 2), w, dy)
    array([[[  1., 200.]]])
    """
    return _conv_transpose_input(1, input_size, weight, grad_output, stride, padding,
                                 output_padding, groups, dilation)


def conv_transpose2d_input(input_size, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    """conv_transpose2d_input(input_size, weight, grad_output, stride=1, padding=0, output_padding=0, groups=1, dilation=1)

    Gradient of :func:`fastconv.conv_transpose2d` with respect to its input: the
    forward convolution :func:`fastconv.conv2d` of ``grad_output`` with the same
    weight.

    Parameters
    ----------
    input_size : tuple of int
        The full input shape ``(N, C_in, H, W)``.
    weight : array_like, shape (C_in, C_out/groups, kH, kW)
    grad_output : array_like, shape (N, C_out, H_out, W_out)
    stride, padding, output_padding, groups, dilation
        As given to :func:`fastconv.conv_transpose2d`.

    Returns
    -------
    numpy.ndarray
        The input gradient, of shape ``input_size``.

    Shape
    -----
    ``H_out = (H - 1)*s_h - 2*p_h + d_h*(kH-1) + output_padding_h + 1`` (likewise
    ``W_out``).

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((8, 4, 2, 2))
    >>> dy = rng.standard_normal((2, 4, 12, 12))      # conv_transpose2d of (2, 8, 6, 6), stride 2
    >>> dx = fastconv.grad.conv_transpose2d_input((2, 8, 6, 6), w, dy, stride=2)
    >>> dx.shape, np.allclose(dx, fastconv.conv2d(dy, w, stride=2))
    ((2, 8, 6, 6), True)
    """
    return _conv_transpose_input(2, input_size, weight, grad_output, stride, padding,
                                 output_padding, groups, dilation)


def _conv_transpose_weight(nd, x, weight_size, grad_output, stride, padding,
                           output_padding, groups, dilation):
    x, gy, geo = _preprocess.conv_transpose_weight(nd, x, weight_size, grad_output, stride,
                                                   padding, output_padding, groups, dilation)
    # Roles swap: the convolution's "input" is grad_output, its "grad_output" is x.
    return conv_weight_grad(gy, x, geo)


def conv_transpose1d_weight(input, weight_size, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    """conv_transpose1d_weight(input, weight_size, grad_output, stride=1, padding=0, output_padding=0, groups=1, dilation=1)

    Gradient of :func:`fastconv.conv_transpose1d` with respect to its weight:
    ``dw[i, j, k] = sum_{n, t} x[n, i, t] * dy[n, j', t*stride - padding + k*dilation]``
    (the roles of input and output gradient of :func:`conv1d_weight` swapped).

    Parameters
    ----------
    input : array_like, shape (N, C_in, L)
        The forward op's input.
    weight_size : tuple of int
        The full weight shape ``(C_in, C_out/groups, k)``.
    grad_output : array_like, shape (N, C_out, L_out)
    stride, padding, output_padding, groups, dilation
        As given to :func:`fastconv.conv_transpose1d`.

    Returns
    -------
    numpy.ndarray
        The weight gradient, of shape ``weight_size``.

    Shape
    -----
    ``L_out = (L - 1)*stride - 2*padding + dilation*(k-1) + output_padding + 1``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[1., 2.]]])
    >>> dy = np.array([[[1., 0., 0., 2.]]])
    >>> fastconv.grad.conv_transpose1d_weight(x, (1, 1, 3), dy)
    array([[[1., 0., 4.]]])
    """
    return _conv_transpose_weight(1, input, weight_size, grad_output, stride, padding,
                                  output_padding, groups, dilation)


def conv_transpose2d_weight(input, weight_size, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    """conv_transpose2d_weight(input, weight_size, grad_output, stride=1, padding=0, output_padding=0, groups=1, dilation=1)

    Gradient of :func:`fastconv.conv_transpose2d` with respect to its weight
    (the roles of input and output gradient of :func:`conv2d_weight` swapped).

    Parameters
    ----------
    input : array_like, shape (N, C_in, H, W)
        The forward op's input.
    weight_size : tuple of int
        The full weight shape ``(C_in, C_out/groups, kH, kW)``.
    grad_output : array_like, shape (N, C_out, H_out, W_out)
    stride, padding, output_padding, groups, dilation
        As given to :func:`fastconv.conv_transpose2d`.

    Returns
    -------
    numpy.ndarray
        The weight gradient, of shape ``weight_size``.

    Shape
    -----
    ``H_out = (H - 1)*s_h - 2*p_h + d_h*(kH-1) + output_padding_h + 1`` (likewise
    ``W_out``).

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((2, 8, 6, 6))
    >>> dy = rng.standard_normal((2, 4, 12, 12))
    >>> dw = fastconv.grad.conv_transpose2d_weight(x, (8, 4, 2, 2), dy, stride=2)
    >>> dw.shape
    (8, 4, 2, 2)
    >>> np.allclose(dw, fastconv.grad.conv2d_weight(dy, (8, 4, 2, 2), x, stride=2))
    True
    """
    return _conv_transpose_weight(2, input, weight_size, grad_output, stride, padding,
                                  output_padding, groups, dilation)


def conv_bias(grad_output):
    """conv_bias(grad_output)

    Gradient of any convolution with respect to its bias.

    The sum of ``grad_output`` over every axis except the channel axis 1,
    accumulated in float64 and returned in ``grad_output``'s dtype.

    Parameters
    ----------
    grad_output : array_like, shape (N, C_out, ...)

    Returns
    -------
    numpy.ndarray, shape (C_out,)

    Shape
    -----
    ``(N, C_out, L)`` or ``(N, C_out, H, W)`` -> ``(C_out,)``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.grad.conv_bias(np.ones((2, 3, 4, 4)))     # 2 * 4 * 4 per channel
    array([32., 32., 32.])
    """
    return bias_grad(_preprocess.conv_bias(grad_output))


# -- pooling ------------------------------------------------------------------


def _max_pool_grad(nd, grad_output, indices, input_size):
    gy, idx, size = _preprocess.max_pool_grad(nd, grad_output, indices, input_size)
    grad_in, bad = max_pool_backward(gy, idx, size)
    _preprocess.check_indices_in_range(bad, size)
    return grad_in


def max_pool1d(grad_output, indices, input_size):
    """max_pool1d(grad_output, indices, input_size)

    Gradient of :func:`fastconv.max_pool1d`: ``grad_output`` routed to ``indices``.

    ``dx[n, c, indices[n, c, t]] += dy[n, c, t]``: each output's gradient goes
    to the position that won its window; positions that won several
    overlapping windows accumulate. Indices are bounds-checked: one outside
    ``[0, L)`` raises ``ValueError`` and nothing is written there.

    Parameters
    ----------
    grad_output : array_like, shape (N, C, L_out)
    indices : array_like of int, shape (N, C, L_out)
        The switches, from ``max_pool1d(..., return_indices=True)``.
    input_size : tuple of int
        The full input shape ``(N, C, L)``.

    Returns
    -------
    numpy.ndarray
        The input gradient, of shape ``input_size``.

    Shape
    -----
    ``grad_output`` and ``indices`` ``(N, C, L_out)``, output ``input_size``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[1., 3., 2., 0.]]])
    >>> y, idx = fastconv.max_pool1d(x, 2, stride=1, return_indices=True)
    >>> idx                                     # 3 wins two windows
    array([[[1, 1, 2]]])
    >>> fastconv.grad.max_pool1d(np.ones_like(y), idx, x.shape)
    array([[[0., 2., 1., 0.]]])
    """
    return _max_pool_grad(1, grad_output, indices, input_size)


def max_pool2d(grad_output, indices, input_size):
    """max_pool2d(grad_output, indices, input_size)

    Gradient of :func:`fastconv.max_pool2d`: ``grad_output`` routed to ``indices``.

    ``dx[n, c].flat[indices[n, c, i, j]] += dy[n, c, i, j]``, the indices being
    flat positions ``h*W + w`` in the input plane; overlapping windows
    accumulate. Indices are bounds-checked: one outside ``[0, H*W)`` raises
    ``ValueError``.

    Parameters
    ----------
    grad_output : array_like, shape (N, C, H_out, W_out)
    indices : array_like of int, shape (N, C, H_out, W_out)
        The switches, from ``max_pool2d(..., return_indices=True)``.
    input_size : tuple of int
        The full input shape ``(N, C, H, W)``.

    Returns
    -------
    numpy.ndarray
        The input gradient, of shape ``input_size``.

    Shape
    -----
    ``grad_output`` and ``indices`` ``(N, C, H_out, W_out)``, output ``input_size``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[[1, 3, 2, 4], [5, 6, 7, 8], [9, 2, 1, 0], [4, 5, 6, 7]]]], float)
    >>> y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    >>> fastconv.grad.max_pool2d(np.array([[[[1., 2.], [3., 4.]]]]), idx, x.shape)[0, 0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 2.],
           [3., 0., 0., 0.],
           [0., 0., 0., 4.]])
    """
    return _max_pool_grad(2, grad_output, indices, input_size)


def _avg_pool_grad(nd, grad_output, input_size, kernel_size, stride, padding, ceil_mode,
                   count_include_pad):
    gy, size, geo = _preprocess.avg_pool_grad(nd, grad_output, input_size, kernel_size, stride,
                                              padding, ceil_mode, count_include_pad)
    return avg_pool_backward(gy, size, geo, count_include_pad)


def avg_pool1d(grad_output, input_size, kernel_size, stride=None, padding=0,
               ceil_mode=False, count_include_pad=True):
    """avg_pool1d(grad_output, input_size, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)

    Gradient of :func:`fastconv.avg_pool1d`: each output's gradient, divided by
    its window's divisor, is added to every input position of the window;
    padding receives nothing.

    Parameters
    ----------
    grad_output : array_like, shape (N, C, L_out)
    input_size : tuple of int
        The full input shape ``(N, C, L)``.
    kernel_size, stride, padding, ceil_mode, count_include_pad
        As given to :func:`fastconv.avg_pool1d`.

    Returns
    -------
    numpy.ndarray
        The input gradient, of shape ``input_size``.

    Shape
    -----
    ``L_out = floor_or_ceil((L + 2*padding - k) / stride) + 1``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.grad.avg_pool1d(np.array([[[1., 2.]]]), (1, 1, 4), 2)
    array([[[0.5, 0.5, 1. , 1. ]]])
    """
    return _avg_pool_grad(1, grad_output, input_size, kernel_size, stride, padding,
                          ceil_mode, count_include_pad)


def avg_pool2d(grad_output, input_size, kernel_size, stride=None, padding=0,
               ceil_mode=False, count_include_pad=True):
    """avg_pool2d(grad_output, input_size, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)

    Gradient of :func:`fastconv.avg_pool2d`: each output's gradient, divided by
    its window's divisor, is added to every input position of the window;
    padding receives nothing.

    Parameters
    ----------
    grad_output : array_like, shape (N, C, H_out, W_out)
    input_size : tuple of int
        The full input shape ``(N, C, H, W)``.
    kernel_size, stride, padding, ceil_mode, count_include_pad
        As given to :func:`fastconv.avg_pool2d`.

    Returns
    -------
    numpy.ndarray
        The input gradient, of shape ``input_size``.

    Shape
    -----
    ``H_out = floor_or_ceil((H + 2*p_h - kH) / s_h) + 1`` (likewise ``W_out``).

    Examples
    --------
    With ``count_include_pad=False`` a corner window, which holds one real
    element, gives it its whole gradient:

    >>> import numpy as np, fastconv
    >>> dy = np.ones((1, 1, 2, 2))
    >>> fastconv.grad.avg_pool2d(dy, (1, 1, 3, 3), 2, padding=1)[0, 0]
    array([[0.25, 0.25, 0.25],
           [0.25, 0.25, 0.25],
           [0.25, 0.25, 0.25]])
    >>> fastconv.grad.avg_pool2d(dy, (1, 1, 3, 3), 2, padding=1, count_include_pad=False)[0, 0]
    array([[1.  , 0.5 , 0.5 ],
           [0.5 , 0.25, 0.25],
           [0.5 , 0.25, 0.25]])
    """
    return _avg_pool_grad(2, grad_output, input_size, kernel_size, stride, padding,
                          ceil_mode, count_include_pad)


# -- normalisation ------------------------------------------------------------


def batch_norm(input, grad_output, weight=None, running_mean=None, running_var=None,
               training=False, eps=1e-5):
    """batch_norm(input, grad_output, weight=None, running_mean=None, running_var=None, training=False, eps=1e-5)

    Gradients of :func:`fastconv.batch_norm` with respect to its input,
    weight and bias, for the same ``input``, ``weight``, running statistics,
    ``training`` and ``eps`` as the forward call (``bias`` and ``momentum``
    do not enter). With ``M = N * prod(spatial)``, ``xmu = x - mean`` and
    ``invstd = 1/sqrt(var + eps)`` per channel::

        grad_bias[c]   = sum(dy[:, c])
        grad_weight[c] = sum(dy[:, c] * xmu[:, c]) * invstd[c]
        training: dx = (dy - grad_bias/M - xmu * invstd^2 * sum(dy*xmu)/M) * invstd * weight
        eval:     dx = dy * invstd * weight

    In training the batch statistics are recomputed from ``input`` in the
    same pass as the sums (one pass of sums, one writing ``dx``); in
    evaluation the running statistics are used (one pass). The running
    statistics are never changed.

    Parameters
    ----------
    input : array_like, shape (N, C, ...)
        The forward call's input.
    grad_output : array_like, shape of input
        The gradient of the loss with respect to the forward's output.
    weight : array_like, shape (C,), optional
        The forward call's weight (None: 1).
    running_mean, running_var : ndarray of shape (C,) or None
        Required when ``training=False``.
    training : bool
        Whether the forward used the batch statistics.
    eps : float >= 0

    Returns
    -------
    grad_input : ndarray, shape of input
    grad_weight, grad_bias : ndarray, shape (C,)
        Always returned, also without a weight or bias (they are the
        gradients an affine layer would get).

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x, dy = np.array([[1., 2.], [3., 6.]]), np.array([[1., 0.], [3., 0.]])
    >>> fastconv.grad.batch_norm(x, dy, training=True, eps=0.0)
    (array([[0., 0.],
           [0., 0.]]), array([2., 0.]), array([4., 0.]))
    """
    x, gy, w, rm, rv, training, eps = _preprocess.batch_norm_grad(
        input, grad_output, weight, running_mean, running_var, training, eps)
    if training:
        mean = invstd = None
    else:
        mean = rm.astype(np.float64)
        invstd = 1 / np.sqrt(rv.astype(np.float64) + eps)
    grad_in, grad_weight, grad_bias = batch_norm_backward(x, gy, w, mean, invstd, training, eps)
    return grad_in, grad_weight.astype(x.dtype), grad_bias.astype(x.dtype)


def adaptive_avg_pool1d(grad_output, input_size, output_size=None):
    """adaptive_avg_pool1d(grad_output, input_size, output_size=None)

    Gradient of :func:`fastconv.adaptive_avg_pool1d` with respect to its
    input: each ``grad_output[n, c, i]``, divided by its bin's length, is
    added to every input position of bin ``i`` (overlapping bins accumulate).

    Parameters
    ----------
    grad_output : array_like, shape (N, C, L_out)
    input_size : tuple of int
        ``(N, C, L)``.
    output_size : int, (int,) or None, optional
        Checked against ``grad_output`` when given; None takes its size.

    Returns
    -------
    ndarray, shape input_size

    Shape
    -----
    ``grad_output (N, C, L_out) -> (N, C, L)``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.grad.adaptive_avg_pool1d(np.array([[[2., 4.]]]), (1, 1, 5))
    array([[[0.66666667, 0.66666667, 2.        , 1.33333333, 1.33333333]]])
    """
    gy, size, _ = _preprocess.adaptive_pool_grad(1, grad_output, input_size, output_size)
    return _adaptive.backward(gy, size)


def adaptive_avg_pool2d(grad_output, input_size, output_size=None):
    """adaptive_avg_pool2d(grad_output, input_size, output_size=None)

    Gradient of :func:`fastconv.adaptive_avg_pool2d` with respect to its
    input: ``grad_output[n, c, i, j]`` divided by the area of bin ``(i, j)``
    is added to every input position of the bin. The global case (output
    ``(1, 1)``) fills each plane with ``dy / (H*W)``.

    Parameters
    ----------
    grad_output : array_like, shape (N, C, H_out, W_out)
    input_size : tuple of int
        ``(N, C, H, W)``.
    output_size : int, tuple or None, optional
        Checked against ``grad_output`` when given; None takes its size.

    Returns
    -------
    ndarray, shape input_size

    Shape
    -----
    ``grad_output (N, C, H_out, W_out) -> (N, C, H, W)``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.grad.adaptive_avg_pool2d(np.full((1, 1, 1, 1), 4.), (1, 1, 2, 2))[0, 0]
    array([[1., 1.],
           [1., 1.]])
    """
    gy, size, _ = _preprocess.adaptive_pool_grad(2, grad_output, input_size, output_size)
    return _adaptive.backward(gy, size)
