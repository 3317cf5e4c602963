"""Convolution, pooling and batch-norm ops with PyTorch's names and conventions.

Layout is channels-first: 1-D input ``(N, C, L)``, 2-D input ``(N, C, H, W)``.
Each op normalises and validates its arguments once (``_preprocess``, shared
with ``grad`` and ``reference``), which makes its arrays C-contiguous in the
resolved float dtype, and calls one launcher
(``_launch``), which runs the compiled kernel that ``_plan`` picks. 1-D ops
run the 2-D kernels with ``H = 1``.

Dtypes: float32 and float64 run their own kernels and stay as they are.
Integer and bool inputs are cast to float64; mixed float inputs follow
``numpy.result_type``; complex, object, string and float16 inputs raise
``TypeError``.
"""


import numpy as np

from . import _adaptive, _preprocess
from ._launch import (
    avg_pool_forward,
    batch_norm_apply,
    batch_norm_train_forward,
    conv_forward,
    conv_input_grad,
    max_pool_forward,
)

__all__ = [
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "batch_norm",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
]

# -- convolution --------------------------------------------------------------


def _conv(x, weight, bias, nd, stride, padding, dilation, groups, activation, packed=None):
    """``conv{nd}d``; ``packed``: a ``_launch.PackedWeight`` of ``weight``
    (the fused inference layers)."""
    return conv_forward(*_preprocess.conv(nd, x, weight, bias, stride, padding, dilation,
                                          groups, activation), packed=packed)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None)

    1-D convolution (cross-correlation, the deep-learning convention): the
    scanning MLP / TDNN. For output channel ``j`` in group ``g``::

        y[n, j, t] = b[j] + sum_{i, k} w[j, i, k] * x_pad[n, g*C_in/groups + i, t*stride + k*dilation]

    Parameters
    ----------
    x : array_like, shape (N, C_in, L)
    weight : array_like, shape (C_out, C_in/groups, k)
    bias : array_like, shape (C_out,), optional
    stride, dilation : int or (int,)
    padding : int, (int,), (left, right), 'valid' or 'same'
        Zeros added at both ends. ``'same'`` needs stride 1 and puts the extra
        pad of an even effective kernel at the end, as PyTorch does.
    groups : int
        Input and output channels are split into ``groups`` independent blocks.
    activation : None or 'relu'
        ``'relu'`` returns ``max(y, 0)`` (NaN stays NaN), applied by the
        kernel as it stores the output: no second pass over it (the
        inference path of ``nn.fuse``).

    Shape
    -----
    ``L_out = floor((L + pad_left + pad_right - dilation*(k-1) - 1) / stride) + 1``,
    which must be >= 1. Output ``(N, C_out, L_out)``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv1d(np.array([[[3., 4., 5.]]]), np.array([[[1., 2.]]]))
    array([[[11., 14.]]])

    ``'same'`` with an even kernel: one zero before, two after.

    >>> fastconv.conv1d(np.arange(6.).reshape(1, 1, 6), np.ones((1, 1, 4)), padding="same")
    array([[[ 3.,  6., 10., 14., 12.,  9.]]])
    """
    return _conv(x, weight, bias, 1, stride, padding, dilation, groups, activation)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None)

    2-D convolution (cross-correlation). For output channel ``j`` in group ``g``::

        y[n, j, h, w] = b[j] + sum_{i, p, q} W[j, i, p, q]
                        * x_pad[n, g*C_in/groups + i, h*s_h + p*d_h, w*s_w + q*d_w]

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W)
    weight : array_like, shape (C_out, C_in/groups, kH, kW)
    bias : array_like, shape (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), ((top, bottom), (left, right)), 'valid' or 'same'
        ``'same'`` needs stride 1; with an even effective kernel the extra
        pad goes at the bottom/right, as PyTorch does.
    groups : int
    activation : None or 'relu'
        As for ``conv1d``: ``max(y, 0)`` fused into the kernel's output store.

    Shape
    -----
    ``H_out = floor((H + pad_top + pad_bottom - d_h*(kH-1) - 1) / s_h) + 1``
    (likewise ``W_out``), which must be >= 1. Output ``(N, C_out, H_out, W_out)``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.zeros((1, 3, 224, 224), np.float32)
    >>> w = np.zeros((64, 3, 7, 7), np.float32)
    >>> fastconv.conv2d(x, w, stride=2, padding=3).shape
    (1, 64, 112, 112)
    """
    return _conv(x, weight, bias, 2, stride, padding, dilation, groups, activation)


def _conv_transpose(x, weight, bias, nd, stride, padding, output_padding, groups, dilation):
    return conv_input_grad(*_preprocess.conv_transpose(nd, x, weight, bias, stride, padding,
                                                       output_padding, groups, dilation))


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1)

    1-D transposed convolution: the input gradient of ``conv1d`` with the same
    weight, i.e. a full convolution of the zero-upsampled input with the
    flipped kernel. Each input sample scatters ``x[n, i, t] * w[i, j, k]`` to
    output position ``t*stride - padding + k*dilation``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, L)
    weight : array_like, shape (C_in, C_out/groups, k)
    bias : array_like, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or (int,)
        ``output_padding`` (< max(stride, dilation)) adds to the end of the output.
    groups : int

    Shape
    -----
    ``L_out = (L - 1)*stride - 2*padding + dilation*(k-1) + output_padding + 1``.
    Output ``(N, C_out, L_out)``.

    Examples
    --------
    Each input sample adds a scaled copy of the kernel to the output:

    >>> import numpy as np, fastconv
    >>> x = np.array([[[1., 2.]]])                # (N, C_in, L)
    >>> w = np.array([[[1., 10., 100.]]])         # (C_in, C_out, k)
    >>> fastconv.conv_transpose1d(x, w)
    array([[[  1.,  12., 120., 200.]]])
    >>> fastconv.conv_transpose1d(x, w, stride=2)
    array([[[  1.,  10., 102.,  20., 200.]]])
    """
    return _conv_transpose(x, weight, bias, 1, stride, padding, output_padding, groups,
                           dilation)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1)

    2-D transposed convolution (the input gradient of ``conv2d``, used for
    upsampling). See :func:`conv_transpose1d` for the rule, per axis.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W)
    weight : array_like, shape (C_in, C_out/groups, kH, kW)
    bias : array_like, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or (int, int)
    groups : int

    Shape
    -----
    ``H_out = (H - 1)*s_h - 2*p_h + d_h*(kH-1) + output_padding_h + 1``
    (likewise ``W_out``). Output ``(N, C_out, H_out, W_out)``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((16, 64, 32, 32), np.float32)
    >>> w = np.ones((64, 32, 2, 2), np.float32)
    >>> fastconv.conv_transpose2d(x, w, stride=2).shape
    (16, 32, 64, 64)
    """
    return _conv_transpose(x, weight, bias, 2, stride, padding, output_padding, groups,
                           dilation)


# -- pooling ------------------------------------------------------------------


def _max_pool(x, nd, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    x, geo = _preprocess.max_pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode)
    out, indices = max_pool_forward(x, geo, return_indices)
    return (out, indices) if return_indices else out


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)

    1-D max pooling: ``y[n, c, t] = max_k x_pad[n, c, t*stride + k*dilation]``
    with ``-inf`` padding. See :func:`max_pool2d` for the rules.

    Parameters
    ----------
    x : array_like, shape (N, C, L)
    kernel_size, stride, padding, dilation : int or (int,)
        ``stride`` defaults to ``kernel_size``; ``padding`` (at most half the
        kernel) adds ``-inf`` at both ends.
    ceil_mode : bool
        Round the output size up instead of down.
    return_indices : bool
        Also return the int64 argmax positions (the switches).

    Returns
    -------
    numpy.ndarray, or (numpy.ndarray, numpy.ndarray)
        The pooled output, and the indices when ``return_indices=True``.

    Shape
    -----
    Input ``(N, C, L)``, output ``(N, C, L_out)`` with
    ``L_out = floor_or_ceil((L + 2*padding - dilation*(k-1) - 1) / stride) + 1``.
    Indices (``return_indices=True``) are int64 positions in ``[0, L)``.
    ``ceil_mode`` drops a last window that would start in the right padding.

    Examples
    --------
    A tie goes to the first maximum; a NaN wins its window:

    >>> import numpy as np, fastconv
    >>> x = np.array([[[2., 7., 7., 1., np.nan, 3., 4.]]])
    >>> fastconv.max_pool1d(x, 3, stride=2, return_indices=True)
    (array([[[ 7., nan, nan]]]), array([[[1, 4, 4]]]))
    >>> fastconv.max_pool1d(x[..., :5], 2).shape, fastconv.max_pool1d(x[..., :5], 2, ceil_mode=True).shape
    ((1, 1, 2), (1, 1, 3))
    """
    return _max_pool(x, 1, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)

    2-D max pooling over windows of ``kernel_size`` (dilated by ``dilation``),
    moved by ``stride`` (default: ``kernel_size``) over the input padded with
    ``-inf`` (``padding`` <= kernel_size/2).

    Rules, as in PyTorch: each window is scanned in row-major order; on a tie
    the first maximum wins; a NaN wins (the last one if several) and its index
    points at it; a window that is all ``-inf`` still gets the index of a real
    element. With ``return_indices=True`` the int64 indices are flat positions
    ``h*W + w`` in the input plane: the "switches" that route the gradient
    (:func:`fastconv.grad.max_pool2d`).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    kernel_size, stride, padding, dilation : int or (int, int)
        ``stride`` defaults to ``kernel_size``; ``padding`` (at most half the
        kernel) adds ``-inf`` at both ends.
    ceil_mode : bool
        Round the output size up instead of down.
    return_indices : bool
        Also return the int64 argmax positions (the switches).

    Returns
    -------
    numpy.ndarray, or (numpy.ndarray, numpy.ndarray)
        The pooled output, and the indices when ``return_indices=True``.

    Shape
    -----
    ``H_out = floor_or_ceil((H + 2*p_h - d_h*(kH-1) - 1) / s_h) + 1``; with
    ``ceil_mode`` a last window that would start in the bottom/right padding is
    dropped. Output ``(N, C, H_out, W_out)``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[[1, 3, 2, 4], [5, 6, 7, 8], [9, 2, 1, 0], [4, 5, 6, 7]]]], float)
    >>> y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    >>> y[0, 0], idx[0, 0]
    (array([[6., 8.],
           [9., 7.]]), array([[ 5,  7],
           [ 8, 15]]))
    """
    return _max_pool(x, 2, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def _avg_pool(x, nd, kernel_size, stride, padding, ceil_mode, count_include_pad):
    x, geo = _preprocess.avg_pool(nd, x, kernel_size, stride, padding, ceil_mode,
                                  count_include_pad)
    return avg_pool_forward(x, geo, count_include_pad)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)

    1-D average pooling. See :func:`avg_pool2d` for the divisor rule.

    Parameters
    ----------
    x : array_like, shape (N, C, L)
    kernel_size, stride, padding : int or (int,)
        ``stride`` defaults to ``kernel_size``; ``padding`` (at most half the
        kernel) adds zeros at both ends.
    ceil_mode : bool
        Round the output size up instead of down.
    count_include_pad : bool
        Whether the padding zeros count in each window's divisor.

    Returns
    -------
    numpy.ndarray

    Shape
    -----
    Input ``(N, C, L)``, output ``(N, C, L_out)``,
    ``L_out = floor_or_ceil((L + 2*padding - k) / stride) + 1``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[1., 2., 3., 4., 5.]]])
    >>> fastconv.avg_pool1d(x, 2)
    array([[[1.5, 3.5]]])
    >>> fastconv.avg_pool1d(x, 2, padding=1)                            # zeros counted
    array([[[0.5, 2.5, 4.5]]])
    >>> fastconv.avg_pool1d(x, 2, padding=1, count_include_pad=False)   # zeros not counted
    array([[[1. , 2.5, 4.5]]])
    >>> fastconv.avg_pool1d(x, 2, ceil_mode=True)     # the last window holds x[4] alone
    array([[[1.5, 3.5, 5. ]]])
    """
    return _avg_pool(x, 1, kernel_size, stride, padding, ceil_mode, count_include_pad)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)

    2-D average pooling with zero padding. Each output is the window's sum
    divided by the window's area clipped to the padded input
    (``count_include_pad=True``) or to the input itself (``False``); windows
    that ``ceil_mode`` lets run past the padding count only up to its edge.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    kernel_size, stride, padding : int or (int, int)
        ``stride`` defaults to ``kernel_size``; ``padding`` (at most half the
        kernel) adds zeros at both ends.
    ceil_mode : bool
        Round the output size up instead of down.
    count_include_pad : bool
        Whether the padding zeros count in each window's divisor.

    Returns
    -------
    numpy.ndarray

    Shape
    -----
    ``H_out = floor_or_ceil((H + 2*p_h - kH) / s_h) + 1``, as for max pooling.
    Output ``(N, C, H_out, W_out)``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.avg_pool2d(np.ones((2, 3, 32, 32)), 2).shape
    (2, 3, 16, 16)
    >>> x = np.arange(16.).reshape(1, 1, 4, 4)
    >>> fastconv.avg_pool2d(x, 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    return _avg_pool(x, 2, kernel_size, stride, padding, ceil_mode, count_include_pad)


# -- normalisation ------------------------------------------------------------


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5)

    Batch normalisation, as ``torch.nn.functional.batch_norm``: for channel
    ``c``, with ``mean[c]`` and ``var[c]`` taken over the batch and every
    spatial position::

        y[:, c] = (x[:, c] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]

    With ``training=True`` the statistics are the batch's (the variance
    biased, divided by the count ``M = N * prod(spatial)``), and the running
    statistics, when given, are updated in place::

        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)

    (the *unbiased* variance). With ``training=False`` the running
    statistics are used and left alone. One fused kernel: a pass of
    statistics (accumulated in float64) and a pass of ``y = x*a[c] + b[c]``
    in training, the second pass alone in evaluation.

    Parameters
    ----------
    input : array_like, shape (N, C, ...)
        ``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)`` or more spatial axes.
    running_mean, running_var : ndarray of shape (C,) or None
        float32 or float64 arrays, used in place (never copied or cast).
        Required when ``training=False``; with ``training=True`` they may be
        None (nothing is tracked).
    weight, bias : array_like, shape (C,), optional
        The affine parameters; None means 1 and 0.
    training : bool
        Batch statistics (True) or running statistics (False).
    momentum : float
        The weight of the batch in the running statistics' update.
    eps : float >= 0
        Added to the variance.

    Returns
    -------
    ndarray
        The normalised input, in the dtype shared by ``input``, ``weight``
        and ``bias`` (see the module's dtype rule).

    Shape
    -----
    Output: the shape of ``input``. In training ``N * prod(spatial)`` must be
    more than 1 (a ``ValueError`` says "Expected more than 1 value per
    channel when training", as PyTorch does); an empty batch gives an empty
    output and leaves the running statistics alone.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[1., 2.], [3., 6.]])
    >>> mean, var = np.zeros(2), np.ones(2)
    >>> fastconv.batch_norm(x, mean, var, training=True, eps=0.0)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> mean, var
    (array([0.2, 0.4]), array([1.1, 1.7]))
    """
    x, rm, rv, w, b, training, momentum, eps = _preprocess.batch_norm(
        input, running_mean, running_var, weight, bias, training, momentum, eps)
    if x.shape[0] == 0:
        return np.empty_like(x)
    if training:
        y, mean, var = batch_norm_train_forward(x, w, b, eps)
        _preprocess.update_running_stats(rm, rv, mean, var, x.size // x.shape[1], momentum)
        return y
    scale = 1 / np.sqrt(rv.astype(np.float64) + eps)
    if w is not None:
        scale *= w
    shift = -rm * scale
    if b is not None:
        shift += b
    return batch_norm_apply(x, scale, shift)


# -- adaptive pooling ---------------------------------------------------------


def adaptive_avg_pool1d(x, output_size):
    """adaptive_avg_pool1d(x, output_size)

    1-D adaptive average pooling: the mean over each of ``output_size`` bins
    of PyTorch's rule, bin ``i`` covering
    ``[floor(i*L/L_out), ceil((i+1)*L/L_out))`` (bins may overlap when
    ``L_out`` does not divide ``L``). See :func:`adaptive_avg_pool2d`.

    Parameters
    ----------
    x : array_like, shape (N, C, L)
    output_size : int, (int,) or None
        ``L_out``; None keeps ``L``.

    Returns
    -------
    ndarray, shape (N, C, L_out)

    Shape
    -----
    Input ``(N, C, L)``, output ``(N, C, L_out)``, ``L_out = output_size``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.adaptive_avg_pool1d(np.array([[[1., 2., 3., 4., 5.]]]), 2)
    array([[[2., 4.]]])
    """
    x, out = _preprocess.adaptive_pool(1, x, output_size)
    return _adaptive.forward(x, out)


def adaptive_avg_pool2d(x, output_size):
    """adaptive_avg_pool2d(x, output_size)

    2-D adaptive average pooling with PyTorch's bins: output ``(i, j)`` is the
    mean of rows ``[floor(i*H/H_out), ceil((i+1)*H/H_out))`` and columns
    ``[floor(j*W/W_out), ceil((j+1)*W/W_out))``. ``output_size=1`` is global
    average pooling (one mean over each contiguous plane, the fast path);
    sizes that divide the input pool disjoint equal windows; others use
    prefix sums in float64. Vectorised NumPy, no compiled kernel.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    output_size : int, (int or None, int or None) or None
        ``(H_out, W_out)``; an int means a square output, None keeps that size.

    Returns
    -------
    ndarray, shape (N, C, H_out, W_out)

    Shape
    -----
    Input ``(N, C, H, W)``, output ``(N, C, H_out, W_out)``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(16.).reshape(1, 1, 4, 4)
    >>> fastconv.adaptive_avg_pool2d(x, 1)[0, 0]
    array([[7.5]])
    >>> fastconv.adaptive_avg_pool2d(np.ones((2, 3, 7, 5)), (3, None)).shape
    (2, 3, 3, 5)
    """
    x, out = _preprocess.adaptive_pool(2, x, output_size)
    return _adaptive.forward(x, out)
