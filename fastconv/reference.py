"""Pure-NumPy reference implementations of every fastconv op.

This module is both the benchmark baseline and a test oracle, so it is written
as the strongest reasonable vectorised NumPy, never as a naive loop:

* convolutions are im2col + batched GEMM: ``sliding_window_view`` over the
  zero-padded input, one copy into ``(N, groups, C_in/groups * kH * kW, OH * OW)``
  columns, then ``numpy.matmul`` (BLAS) broadcasting the grouped weight over
  the batch, which writes the output directly in NCHW order;
* the input gradient (= transposed convolution) is one GEMM into columns
  followed by a scatter-add of each kernel tap into a padded buffer, a Python
  loop over the ``kH * kW`` taps only;
* pooling loops over the kernel taps in Python and works on whole
  ``(N, C, OH, OW)`` strided views per tap; the max-pool gradient is a single
  unbuffered ``numpy.add.at``.

Semantics follow PyTorch 2.x on CPU, including its tie and NaN rules for max
pooling and its divisor rule for average pooling. Every argument is parsed and
validated by :mod:`fastconv._validation`. Internally everything runs in 2-D
form: a 1-D op is a 2-D op with ``H = kH = 1``.
"""

from types import SimpleNamespace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import _preprocess

__all__ = [
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "conv1d_input",
    "conv2d_input",
    "conv1d_weight",
    "conv2d_weight",
    "conv_transpose1d_input",
    "conv_transpose2d_input",
    "conv_transpose1d_weight",
    "conv_transpose2d_weight",
    "conv_bias",
    "max_pool1d_grad",
    "max_pool2d_grad",
    "avg_pool1d_grad",
    "avg_pool2d_grad",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool1d_grad",
    "adaptive_avg_pool2d_grad",
    "batch_norm",
    "batch_norm_grad",
    "grad",
]



# -- shared helpers -------------------------------------------------------------


def _as4d(a, nd):
    """View an (N, C, L) array as (N, C, 1, L); 4-D arrays pass through."""
    return a if nd == 2 else a[:, :, None, :]


def _from4d(a, nd):
    return np.ascontiguousarray(a if nd == 2 else a[:, :, 0, :])


def _padded(x, begin, size, value):
    """Place ``x`` at offset ``begin`` in a ``size`` plane filled with ``value``.

    ``size`` may be smaller than ``begin + x``'s plane (a negative end padding):
    the part of ``x`` that does not fit is cropped.
    """
    h, w = x.shape[2:]
    if tuple(begin) == (0, 0) and tuple(size) == (h, w):
        return x
    out = np.full(x.shape[:2] + tuple(size), value, dtype=x.dtype)
    (bh, bw), (sh, sw) = begin, size
    fh, fw = max(0, min(h, sh - bh)), max(0, min(w, sw - bw))
    out[:, :, bh : bh + fh, bw : bw + fw] = x[:, :, :fh, :fw]
    return out


def _tap(a, i, j, out_size, stride, dilation):
    """The strided (N, C, OH, OW) view of ``a`` seen by kernel tap (i, j)."""
    (oh, ow), (sh, sw), (dh, dw) = out_size, stride, dilation
    return a[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh,
             j * dw : j * dw + sw * (ow - 1) + 1 : sw]


def _matmul(a, b):
    """``a @ b`` that skips BLAS for a contraction of length one.

    Depthwise convolutions contract over a single channel; there a broadcast
    product is several times faster than a stack of rank-1 GEMM calls.
    """
    if a.shape[-1] == 1:
        return a * b
    return a @ b


def _columns(x4, g):
    """im2col: (N, groups, C_in/groups * kH * kW, OH * OW) windows of ``x4``."""
    h, w = g.in_size
    size = (h + g.pad_begin[0] + g.pad_end[0], w + g.pad_begin[1] + g.pad_end[1])
    xp = _padded(x4, g.pad_begin, size, 0)
    (kh, kw), (oh, ow), (sh, sw), (dh, dw) = g.kernel, g.out_size, g.stride, g.dilation
    win = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, : sh * (oh - 1) + 1 : sh, : sw * (ow - 1) + 1 : sw, ::dh, ::dw]
    n, cg = x4.shape[0], g.c_in // g.groups
    win = win.reshape(n, g.groups, cg, oh, ow, kh, kw).transpose(0, 1, 2, 5, 6, 3, 4)
    return win.reshape(n, g.groups, cg * kh * kw, oh * ow)


def _conv_forward(x4, w4, g):
    """Convolution of ``x4`` (N, c_in, H, W) with ``w4`` as described by ``g``."""
    n = x4.shape[0]
    if n == 0:  # an empty batch: no padded copy (with a huge padding NumPy cannot size it)
        return np.zeros((0, g.c_out, *g.out_size), dtype=x4.dtype)
    og = g.c_out // g.groups
    wm = w4.reshape(g.groups, og, -1)
    out = _matmul(wm, _columns(x4, g))  # (N, groups, og, OH * OW)
    return out.reshape(n, g.c_out, *g.out_size)


def _conv_input(gy4, w4, g):
    """Input gradient of the convolution ``g``: a transposed convolution of ``gy4``."""
    n = gy4.shape[0]
    if n == 0:
        return np.zeros((0, g.c_in, *g.in_size), dtype=gy4.dtype)
    (kh, kw), (oh, ow), (h, w) = g.kernel, g.out_size, g.in_size
    og = g.c_out // g.groups
    wm = w4.reshape(g.groups, og, -1).transpose(0, 2, 1)
    cols = _matmul(wm, gy4.reshape(n, g.groups, og, oh * ow))
    cols = cols.reshape(n, g.c_in, kh, kw, oh, ow)
    # The buffer holds the padded input and every position a tap touches; with
    # output_padding the end padding is negative and the input reaches further.
    size = tuple(
        max(b + i + max(e, 0), d * (k - 1) + s * (o - 1) + 1)
        for b, i, e, d, k, s, o in zip(
            g.pad_begin, g.in_size, g.pad_end, g.dilation, g.kernel, g.stride, g.out_size
        )
    )
    buf = np.zeros((n, g.c_in) + size, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            _tap(buf, i, j, g.out_size, g.stride, g.dilation)[...] += cols[:, :, i, j]
    bh, bw = g.pad_begin
    return buf[:, :, bh : bh + h, bw : bw + w]


def _conv_weight(x4, gy4, g):
    """Weight gradient of the convolution ``g`` with input ``x4``."""
    n = x4.shape[0]
    if n == 0:
        return np.zeros((g.c_out, g.c_in // g.groups, *g.kernel), dtype=x4.dtype)
    (kh, kw), (oh, ow) = g.kernel, g.out_size
    og, cg = g.c_out // g.groups, g.c_in // g.groups
    gy = gy4.reshape(n, g.groups, og, oh * ow)
    cols = _columns(x4, g).transpose(0, 1, 3, 2)  # (N, groups, OH * OW, cg*kh*kw)
    gw = _matmul(gy, cols).sum(axis=0)
    return gw.reshape(g.c_out, cg, kh, kw)


# -- convolution ----------------------------------------------------------------


def _conv(nd, x, weight, bias, stride, padding, dilation, groups, activation):
    x, weight, bias, g, relu = _preprocess.conv(nd, x, weight, bias, stride, padding,
                                                dilation, groups, activation)
    out = _conv_forward(_as4d(x, nd), _as4d(weight, nd), g)
    if bias is not None:
        out += bias[:, None, None]
    if relu:
        np.maximum(out, 0, out=out)
    return _from4d(out, nd)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None)

    1-D cross-correlation of ``x`` with ``weight``, plus ``bias``:
    ``y[n, o, l] = b[o] + sum_{c, t} x_pad[n, g*C_in/groups + c, l*s + t*d] * w[o, c, t]``
    where ``g`` is the group of output channel ``o``.

    ``padding`` is an int, a ``(left, right)`` pair, ``'valid'`` or ``'same'``.
    ``activation='relu'`` returns ``max(y, 0)`` (NaN kept).

    Shape
    -----
    - x: (N, C_in, L); weight: (C_out, C_in/groups, k); bias: (C_out,)
    - out: (N, C_out, L_out) with
      ``L_out = (L + pad_left + pad_right - dilation*(k-1) - 1) // stride + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.conv1d([[[3, 4, 5]]], [[[1, 2]]])
    array([[[11., 14.]]])
    """
    return _conv(1, x, weight, bias, stride, padding, dilation, groups, activation)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None)

    2-D cross-correlation of ``x`` with ``weight``, plus ``bias``:
    ``y[n, o, i, j] = b[o] + sum_{c, p, q} x_pad[n, g*C_in/groups + c,
    i*sH + p*dH, j*sW + q*dW] * w[o, c, p, q]``.

    ``padding`` is an int, an ``(pH, pW)`` pair, ``((top, bottom), (left,
    right))``, ``'valid'`` or ``'same'`` (stride 1; the odd extra row/column of
    an even effective kernel goes at the end). ``activation='relu'`` returns
    ``max(y, 0)`` (NaN kept).

    Shape
    -----
    - x: (N, C_in, H, W); weight: (C_out, C_in/groups, kH, kW); bias: (C_out,)
    - out: (N, C_out, H_out, W_out) with
      ``H_out = (H + pad_top + pad_bottom - dH*(kH-1) - 1) // sH + 1``
      and likewise for ``W_out``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.conv2d(np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3)), stride=2, padding=1).shape
    (2, 4, 4, 4)
    """
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, activation)


def _conv_transpose(nd, x, weight, bias, stride, padding, output_padding, groups,
                    dilation):
    x, weight, bias, g = _preprocess.conv_transpose(nd, x, weight, bias, stride, padding,
                                                    output_padding, groups, dilation)
    out = _conv_input(_as4d(x, nd), _as4d(weight, nd), g)
    if bias is not None:
        out += bias[:, None, None]
    return _from4d(out, nd)


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1)

    1-D transposed convolution: the input gradient of ``conv1d`` with the same
    weight and parameters, taking ``x`` as the gradient of its output, plus
    ``bias``. Every ``x[n, c, l]`` adds ``x[n, c, l] * w[c, o, t]`` at output
    position ``l*s + t*d - padding``.

    Shape
    -----
    - x: (N, C_in, L); weight: (C_in, C_out/groups, k); bias: (C_out,)
    - out: (N, C_out, L_out) with
      ``L_out = (L-1)*stride - 2*padding + dilation*(k-1) + output_padding + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.conv_transpose1d(np.ones((1, 2, 5)), np.ones((2, 3, 3)), stride=2).shape
    (1, 3, 11)
    """
    return _conv_transpose(1, x, weight, bias, stride, padding, output_padding,
                           groups, dilation)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1)

    2-D transposed convolution: the input gradient of ``conv2d`` with the same
    weight and parameters, taking ``x`` as the gradient of its output, plus
    ``bias``. Every ``x[n, c, i, j]`` adds ``x[n, c, i, j] * w[c, o, p, q]`` at
    output position ``(i*sH + p*dH - pH, j*sW + q*dW - pW)``.

    Shape
    -----
    - x: (N, C_in, H, W); weight: (C_in, C_out/groups, kH, kW); bias: (C_out,)
    - out: (N, C_out, H_out, W_out) with
      ``H_out = (H-1)*sH - 2*pH + dH*(kH-1) + output_padding_H + 1``
      and likewise for ``W_out``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.conv_transpose2d(np.ones((1, 4, 3, 3)), np.ones((4, 2, 2, 2)), stride=2).shape
    (1, 2, 6, 6)
    """
    return _conv_transpose(2, x, weight, bias, stride, padding, output_padding,
                           groups, dilation)


# -- convolution gradients --------------------------------------------------------


def _conv_input_grad(nd, input_size, weight, grad_output, stride, padding, dilation,
                     groups):
    weight, gy, g = _preprocess.conv_input(nd, input_size, weight, grad_output, stride,
                                           padding, dilation, groups)
    return _from4d(_conv_input(_as4d(gy, nd), _as4d(weight, nd), g), nd)


def conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1,
                 groups=1):
    """conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1)

    Gradient of ``conv1d`` with respect to its input:
    ``gx[n, c, l] = sum_{o, t, j : j*s + t*d - pad_left = l} gy[n, o, j] * w[o, c, t]``.
    Input positions no window reaches get 0.

    Shape
    -----
    - input_size: (N, C_in, L); weight: (C_out, C_in/groups, k)
    - grad_output: (N, C_out, L_out) as computed by ``conv1d``
    - out: input_size

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> w = np.array([[[1., 2.]]])
    >>> reference.conv1d_input((1, 1, 3), w, np.array([[[1., 10.]]]))
    array([[[ 1., 12., 20.]]])
    """
    return _conv_input_grad(1, input_size, weight, grad_output, stride, padding,
                            dilation, groups)


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1,
                 groups=1):
    """conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1)

    Gradient of ``conv2d`` with respect to its input: every ``gy[n, o, i, j]``
    adds ``gy[n, o, i, j] * w[o, c, p, q]`` to input position
    ``(i*sH + p*dH - pad_top, j*sW + q*dW - pad_left)`` of channel
    ``g*C_in/groups + c``. Input positions no window reaches get 0.

    Shape
    -----
    - input_size: (N, C_in, H, W); weight: (C_out, C_in/groups, kH, kW)
    - grad_output: (N, C_out, H_out, W_out) as computed by ``conv2d``
    - out: input_size

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> from fastconv import reference
    >>> rng = np.random.default_rng(0)
    >>> w, dy = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 4, 4, 4))
    >>> dx = reference.conv2d_input((2, 3, 8, 8), w, dy, stride=2, padding=1)
    >>> dx.shape, np.allclose(dx, fastconv.grad.conv2d_input((2, 3, 8, 8), w, dy, stride=2, padding=1))
    ((2, 3, 8, 8), True)
    """
    return _conv_input_grad(2, input_size, weight, grad_output, stride, padding,
                            dilation, groups)


def _conv_weight_grad(nd, x, weight_size, grad_output, stride, padding, dilation,
                      groups):
    x, gy, g = _preprocess.conv_weight(nd, x, weight_size, grad_output, stride, padding,
                                       dilation, groups)
    return _from4d(_conv_weight(_as4d(x, nd), _as4d(gy, nd), g), nd)


def conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1,
                  groups=1):
    """conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1)

    Gradient of ``conv1d`` with respect to its weight:
    ``gw[o, c, t] = sum_{n, j} gy[n, o, j] * x_pad[n, g*C_in/groups + c, j*s + t*d]``.

    Shape
    -----
    - input: (N, C_in, L); weight_size: (C_out, C_in/groups, k)
    - grad_output: (N, C_out, L_out) as computed by ``conv1d``
    - out: weight_size

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.conv1d_weight(np.array([[[3., 4., 5.]]]), (1, 1, 2), np.array([[[1., 10.]]]))
    array([[[43., 54.]]])
    """
    return _conv_weight_grad(1, input, weight_size, grad_output, stride, padding,
                             dilation, groups)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1,
                  groups=1):
    """conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1)

    Gradient of ``conv2d`` with respect to its weight:
    ``gw[o, c, p, q] = sum_{n, i, j} gy[n, o, i, j]
    * x_pad[n, g*C_in/groups + c, i*sH + p*dH, j*sW + q*dW]``.

    Shape
    -----
    - input: (N, C_in, H, W); weight_size: (C_out, C_in/groups, kH, kW)
    - grad_output: (N, C_out, H_out, W_out) as computed by ``conv2d``
    - out: weight_size

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> from fastconv import reference
    >>> rng = np.random.default_rng(0)
    >>> x, dy = rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((2, 8, 6, 6))
    >>> dw = reference.conv2d_weight(x, (8, 2, 3, 3), dy, padding="same", groups=2)
    >>> dw.shape, np.allclose(dw, fastconv.grad.conv2d_weight(x, (8, 2, 3, 3), dy, padding="same", groups=2))
    ((8, 2, 3, 3), True)
    """
    return _conv_weight_grad(2, input, weight_size, grad_output, stride, padding,
                             dilation, groups)


def _conv_transpose_input_grad(nd, input_size, weight, grad_output, stride, padding,
                               output_padding, groups, dilation):
    weight, gy, g = _preprocess.conv_transpose_input(nd, input_size, weight, grad_output,
                                                     stride, padding, output_padding, groups,
                                                     dilation)
    return _from4d(_conv_forward(_as4d(gy, nd), _as4d(weight, nd), g), nd)


def conv_transpose1d_input(input_size, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    """conv_transpose1d_input(input_size, weight, grad_output, stride=1, padding=0, output_padding=0, groups=1, dilation=1)

    Gradient of ``conv_transpose1d`` with respect to its input: the ``conv1d``
    of ``grad_output`` with the same weight, stride, dilation and groups, padded
    by ``padding`` on the left and ``padding - output_padding`` on the right.

    Shape
    -----
    - input_size: (N, C_in, L); weight: (C_in, C_out/groups, k)
    - grad_output: (N, C_out, L_out) as computed by ``conv_transpose1d``
    - out: input_size

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> w = np.array([[[1., 10., 100.]]])
    >>> reference.conv_transpose1d_input((1, 1, 2), w, np.array([[[1., 0., 0., 2.]]]))
    array([[[  1., 200.]]])
    """
    return _conv_transpose_input_grad(1, input_size, weight, grad_output, stride,
                                      padding, output_padding, groups, dilation)


def conv_transpose2d_input(input_size, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    """conv_transpose2d_input(input_size, weight, grad_output, stride=1, padding=0, output_padding=0, groups=1, dilation=1)

    Gradient of ``conv_transpose2d`` with respect to its input: the ``conv2d``
    of ``grad_output`` with the same weight, stride, dilation and groups, padded
    by ``padding`` at the beginning and ``padding - output_padding`` at the end
    of each axis.

    Shape
    -----
    - input_size: (N, C_in, H, W); weight: (C_in, C_out/groups, kH, kW)
    - grad_output: (N, C_out, H_out, W_out) as computed by ``conv_transpose2d``
    - out: input_size

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> rng = np.random.default_rng(0)
    >>> w, dy = rng.standard_normal((8, 4, 2, 2)), rng.standard_normal((2, 4, 12, 12))
    >>> dx = reference.conv_transpose2d_input((2, 8, 6, 6), w, dy, stride=2)
    >>> dx.shape, np.allclose(dx, reference.conv2d(dy, w, stride=2))
    ((2, 8, 6, 6), True)
    """
    return _conv_transpose_input_grad(2, input_size, weight, grad_output, stride,
                                      padding, output_padding, groups, dilation)


def _conv_transpose_weight_grad(nd, x, weight_size, grad_output, stride, padding,
                                output_padding, groups, dilation):
    x, gy, g = _preprocess.conv_transpose_weight(nd, x, weight_size, grad_output, stride,
                                                 padding, output_padding, groups, dilation)
    return _from4d(_conv_weight(_as4d(gy, nd), _as4d(x, nd), g), nd)


def conv_transpose1d_weight(input, weight_size, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    """conv_transpose1d_weight(input, weight_size, grad_output, stride=1, padding=0, output_padding=0, groups=1, dilation=1)

    Gradient of ``conv_transpose1d`` with respect to its weight:
    ``gw[c, o, t] = sum_{n, l} x[n, c, l] * gy_pad[n, g*C_out/groups + o, l*s + t*d]``,
    i.e. the ``conv1d`` weight gradient with the roles of input and output
    gradient exchanged.

    Shape
    -----
    - input: (N, C_in, L); weight_size: (C_in, C_out/groups, k)
    - grad_output: (N, C_out, L_out) as computed by ``conv_transpose1d``
    - out: weight_size

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.conv_transpose1d_weight(np.array([[[1., 2.]]]), (1, 1, 3), np.array([[[1., 0., 0., 2.]]]))
    array([[[1., 0., 4.]]])
    """
    return _conv_transpose_weight_grad(1, input, weight_size, grad_output, stride,
                                       padding, output_padding, groups, dilation)


def conv_transpose2d_weight(input, weight_size, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    """conv_transpose2d_weight(input, weight_size, grad_output, stride=1, padding=0, output_padding=0, groups=1, dilation=1)

    Gradient of ``conv_transpose2d`` with respect to its weight:
    ``gw[c, o, p, q] = sum_{n, i, j} x[n, c, i, j]
    * gy_pad[n, g*C_out/groups + o, i*sH + p*dH, j*sW + q*dW]``,
    i.e. the ``conv2d`` weight gradient with the roles of input and output
    gradient exchanged.

    Shape
    -----
    - input: (N, C_in, H, W); weight_size: (C_in, C_out/groups, kH, kW)
    - grad_output: (N, C_out, H_out, W_out) as computed by ``conv_transpose2d``
    - out: weight_size

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> rng = np.random.default_rng(0)
    >>> x, dy = rng.standard_normal((2, 8, 6, 6)), rng.standard_normal((2, 4, 12, 12))
    >>> reference.conv_transpose2d_weight(x, (8, 4, 2, 2), dy, stride=2).shape
    (8, 4, 2, 2)
    """
    return _conv_transpose_weight_grad(2, input, weight_size, grad_output, stride,
                                       padding, output_padding, groups, dilation)


def conv_bias(grad_output):
    """conv_bias(grad_output)

    Gradient of any convolution with respect to its bias: ``grad_output``
    summed over every axis except the channel axis 1.

    Shape
    -----
    - grad_output: ``(N, C_out, *spatial)``
    - out: ``(C_out,)``

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.conv_bias(np.ones((2, 3, 4, 4)))
    array([32., 32., 32.])
    """
    gy = _preprocess.conv_bias(grad_output)
    return gy.sum(axis=(0,) + tuple(range(2, gy.ndim)))


# -- pooling ----------------------------------------------------------------------


def _pool_taps(g):
    """Per axis, the range [lo, hi) of kernel taps that reach the input in
    some window: the others see only padding. A window may be far larger
    than the input (ceil_mode accepts kernel_size=10**7 on 47 inputs): the
    taps and the plane are then bounded by the input and the outputs, not
    by the kernel (all 10**14 taps took forever)."""
    taps = []
    for i, p, s, o, d, k in zip(g.in_size, g.padding, g.stride, g.out_size, g.dilation,
                                g.kernel):
        # tap t reaches position o*s - p + t*d in [0, i) for some output o
        lo = max(0, -(-(p - (o - 1) * s) // d))
        hi = min(k, (p + i - 1) // d + 1)
        taps.append((lo, max(lo + 1, hi)))
    return taps


def _pool_plane(g, taps):
    """(plane, offset of the input in it): a plane holding every position
    the taps in ``taps`` see, and where the input starts in it (negative:
    the input's first rows and columns are not seen, and are cut)."""
    plane, offset = [], []
    for (lo, hi), p, s, o, d in zip(taps, g.padding, g.stride, g.out_size, g.dilation):
        plane.append(s * (o - 1) + d * (hi - 1 - lo) + 1)
        offset.append(p - lo * d)  # input position 0 in plane coordinates
    return tuple(plane), tuple(offset)


def _pool_padded(x4, g, taps, value):
    """The input placed in the plane of ``_pool_plane``, the rest ``value``."""
    size, offset = _pool_plane(g, taps)
    cut = tuple(max(0, -b) for b in offset)
    return _padded(x4[:, :, cut[0]:, cut[1]:], tuple(max(0, b) for b in offset), size, value)


def _avg_divisor(g, count_include_pad, dtype):
    """(OH, OW) divisors, PyTorch's rule, as an outer product of per-axis counts."""
    counts = []
    for i, k, s, p, o in zip(g.in_size, g.kernel, g.stride, g.padding, g.out_size):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, i + p)
        if count_include_pad:
            counts.append(end - start)
        else:
            counts.append(np.minimum(end, i) - np.maximum(start, 0))
    return np.multiply.outer(counts[0], counts[1]).astype(dtype)


def _first_tap(taps, val, dtype):
    """Number of the first tap equal to ``val``, window by window (no NaN)."""
    first = np.zeros(val.shape, dtype=dtype)
    before = np.ones(val.shape, dtype=bool)  # no tap has matched yet
    differs = np.empty(val.shape, dtype=bool)
    for v in taps[:-1]:
        np.not_equal(v, val, out=differs)
        before &= differs
        first += before
    return first


def _torch_scan(taps, first_inside, dtype):
    """PyTorch's scan, run on all windows at once; returns (value, tap number).

    Start from maxval = -inf at the first tap inside the input, then take a tap
    if ``val > maxval`` or ``val`` is NaN: ties keep the first, the last NaN
    wins, and a -inf padding cell is never taken.
    """
    shape = taps[0].shape
    val = np.full(shape, -np.inf, dtype=taps[0].dtype)
    tap = np.empty(shape, dtype=dtype)
    tap[...] = first_inside
    take = np.empty(shape, dtype=bool)
    nan = np.empty(shape, dtype=bool)
    for t, v in enumerate(taps):
        np.greater(v, val, out=take)
        take |= np.isnan(v, out=nan)
        np.copyto(val, v, where=take)
        np.copyto(tap, t, where=take)
    return val, tap


def _max_pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    x, g = _preprocess.max_pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode)
    x4 = _as4d(x, nd)
    (hlo, hhi), (wlo, whi) = hull = _pool_taps(g)
    xp = _pool_padded(x4, g, hull, -np.inf)
    (oh, ow), (sh, sw), (dh, dw) = g.out_size, g.stride, g.dilation
    taps = [_tap(xp, i, j, g.out_size, g.stride, g.dilation)
            for i in range(hhi - hlo) for j in range(whi - wlo)]
    val = np.full(x4.shape[:2] + g.out_size, -np.inf, dtype=x.dtype)
    for v in taps:
        # np.maximum keeps its second argument on ties (the earlier tap), which
        # only the sign of a zero could reveal.
        np.maximum(v, val, out=val)
    if not return_indices:
        return _from4d(val, nd)

    # Tap numbers t = i*kW + j. Window starts in unpadded coordinates, and the
    # first tap of each window at a non-negative position: PyTorch's initial
    # index, kept when every tap inside the input is -inf. (With padding <=
    # kernel/2 that tap has i < kH and j < kW, so t decodes uniquely; it lies
    # past the input when no tap of the window is inside.)
    rows = np.arange(oh) * sh - g.padding[0]
    cols = np.arange(ow) * sw - g.padding[1]
    # (numbered among the taps of the hull, which holds them: every window
    # overlaps the input)
    hw = whi - wlo
    first_inside = np.add.outer((-(rows.clip(max=0) // dh) - hlo) * hw,
                                -(cols.clip(max=0) // dw) - wlo)
    tap_dtype = np.uint8 if len(taps) <= 255 else np.int64
    if np.isnan(val).any():
        val, tap = _torch_scan(taps, first_inside, tap_dtype)
    else:
        # Without NaN, PyTorch's scan picks the first tap equal to the maximum,
        # or its initial index when the maximum is -inf.
        tap = _first_tap(taps, val, tap_dtype)
        tap = np.where(val == -np.inf, first_inside, tap)
    ti, tj = np.divmod(tap.astype(np.int64), hw)
    ti, tj = ti + hlo, tj + wlo
    idx = np.add.outer(rows * g.in_size[1], cols)
    idx = idx + ti.astype(np.int64) * (dh * g.in_size[1]) + tj.astype(np.int64) * dw
    return _from4d(val, nd), _from4d(idx, nd)


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)

    Maximum over each window of ``x`` padded with ``-inf``:
    ``y[n, c, l] = max_t x_pad[n, c, l*s + t*d]``. Ties go to the first
    element of the window; a NaN wins (the last NaN if there are several).
    ``indices`` are int64 positions in the unpadded input. ``stride``
    defaults to ``kernel_size``.

    Shape
    -----
    - x: (N, C, L)
    - out (and indices): (N, C, L_out) with
      ``L_out = floor_or_ceil((L + 2*padding - dilation*(k-1) - 1) / stride) + 1``;
      in ceil mode a last window starting in the right padding is dropped.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.max_pool1d([[[1, 3, 2, 5, 4]]], 2, return_indices=True)
    (array([[[3., 5.]]]), array([[[1, 3]]]))
    """
    return _max_pool(1, x, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)

    Maximum over each window of ``x`` padded with ``-inf``:
    ``y[n, c, i, j] = max_{p, q} x_pad[n, c, i*sH + p*dH, j*sW + q*dW]``.
    Windows are scanned row-major: ties go to the first element, a NaN wins
    (the last NaN if there are several). ``indices`` are int64 flat positions
    ``h*W + w`` in the unpadded input plane. ``stride`` defaults to
    ``kernel_size``.

    Shape
    -----
    - x: (N, C, H, W)
    - out (and indices): (N, C, H_out, W_out) with
      ``H_out = floor_or_ceil((H + 2*pH - dH*(kH-1) - 1) / sH) + 1``, likewise
      ``W_out``; in ceil mode a last window starting in the padding is dropped.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.max_pool2d(np.zeros((2, 3, 7, 7)), 3, stride=2, ceil_mode=True).shape
    (2, 3, 3, 3)
    """
    return _max_pool(2, x, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def _avg_pool(nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    x, g = _preprocess.avg_pool(nd, x, kernel_size, stride, padding, ceil_mode,
                                count_include_pad)
    (hlo, hhi), (wlo, whi) = hull = _pool_taps(g)
    xp = _pool_padded(_as4d(x, nd), g, hull, 0)
    acc = np.zeros(x.shape[:2] + g.out_size, dtype=x.dtype)
    for i in range(hhi - hlo):
        for j in range(whi - wlo):
            acc += _tap(xp, i, j, g.out_size, g.stride, g.dilation)
    acc /= _avg_divisor(g, count_include_pad, x.dtype)
    return _from4d(acc, nd)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)

    Mean over each window of ``x`` padded with zeros. For a window starting
    at ``start = l*s - padding`` and ending at ``end = min(start + k, L + padding)``
    the divisor is ``end - start`` if ``count_include_pad``, otherwise the
    number of window elements inside the input. ``stride`` defaults to
    ``kernel_size``.

    Shape
    -----
    - x: (N, C, L)
    - out: (N, C, L_out) with
      ``L_out = floor_or_ceil((L + 2*padding - k) / stride) + 1``;
      in ceil mode a last window starting in the right padding is dropped.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.avg_pool1d([[[1, 3, 2, 6]]], 2)
    array([[[2., 4.]]])
    """
    return _avg_pool(1, x, kernel_size, stride, padding, ceil_mode, count_include_pad)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)

    Mean over each window of ``x`` padded with zeros. Per axis a window runs
    from ``start = i*s - p`` to ``end = min(start + k, size + p)``; the divisor
    is the product over both axes of ``end - start`` if ``count_include_pad``,
    otherwise of the number of window elements inside the input. ``stride``
    defaults to ``kernel_size``.

    Shape
    -----
    - x: (N, C, H, W)
    - out: (N, C, H_out, W_out) with
      ``H_out = floor_or_ceil((H + 2*pH - kH) / sH) + 1``, likewise ``W_out``;
      in ceil mode a last window starting in the padding is dropped.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.avg_pool2d(np.zeros((2, 3, 6, 6)), 2).shape
    (2, 3, 3, 3)
    """
    return _avg_pool(2, x, kernel_size, stride, padding, ceil_mode, count_include_pad)


# -- pooling gradients --------------------------------------------------------------


def _max_pool_grad(nd, grad_output, indices, input_size):
    gy, indices, input_size = _preprocess.max_pool_grad(nd, grad_output, indices, input_size)
    plane = int(np.prod(input_size[2:]))
    _preprocess.check_indices_in_range(
        np.count_nonzero((indices < 0) | (indices >= plane)), input_size)
    dtype = gy.dtype
    out = np.zeros(input_size, dtype=dtype)
    if gy.size == 0:
        return out
    n_planes = input_size[0] * input_size[1]
    flat = indices.reshape(n_planes, -1).astype(np.int64)
    flat += np.arange(n_planes, dtype=np.int64)[:, None] * plane
    # Unbuffered accumulation: a cell chosen by several windows gets every grad.
    np.add.at(out.reshape(-1), flat.ravel(), gy.ravel())
    return out


def max_pool1d_grad(grad_output, indices, input_size):
    """max_pool1d_grad(grad_output, indices, input_size)

    Gradient of ``max_pool1d`` with respect to its input: every
    ``grad_output[n, c, l]`` is added at position ``indices[n, c, l]`` of
    plane ``(n, c)``; overlapping windows accumulate.

    Shape
    -----
    - grad_output, indices: (N, C, L_out); indices integer, in [0, L)
    - input_size: (N, C, L); out: input_size

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> x = np.array([[[1., 3., 2., 0.]]])
    >>> y, idx = reference.max_pool1d(x, 2, stride=1, return_indices=True)
    >>> reference.max_pool1d_grad(np.ones_like(y), idx, x.shape)      # 3 won two windows
    array([[[0., 2., 1., 0.]]])
    """
    return _max_pool_grad(1, grad_output, indices, input_size)


def max_pool2d_grad(grad_output, indices, input_size):
    """max_pool2d_grad(grad_output, indices, input_size)

    Gradient of ``max_pool2d`` with respect to its input: every
    ``grad_output[n, c, i, j]`` is added at flat position ``indices[n, c, i, j]``
    (``h*W + w``) of plane ``(n, c)``; overlapping windows accumulate.

    Shape
    -----
    - grad_output, indices: (N, C, H_out, W_out); indices integer, in [0, H*W)
    - input_size: (N, C, H, W); out: input_size

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> x = np.array([[[[1, 3, 2, 4], [5, 6, 7, 8], [9, 2, 1, 0], [4, 5, 6, 7]]]], float)
    >>> y, idx = reference.max_pool2d(x, 2, return_indices=True)
    >>> reference.max_pool2d_grad(np.array([[[[1., 2.], [3., 4.]]]]), idx, x.shape)[0, 0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 2.],
           [3., 0., 0., 0.],
           [0., 0., 0., 4.]])
    """
    return _max_pool_grad(2, grad_output, indices, input_size)


def _avg_pool_grad(nd, grad_output, input_size, kernel_size, stride, padding, ceil_mode,
                   count_include_pad):
    gy, input_size, g = _preprocess.avg_pool_grad(nd, grad_output, input_size, kernel_size,
                                                  stride, padding, ceil_mode, count_include_pad)
    dtype = gy.dtype
    share = _as4d(gy, nd) / _avg_divisor(g, count_include_pad, dtype)
    (hlo, hhi), (wlo, whi) = hull = _pool_taps(g)
    size, (bh, bw) = _pool_plane(g, hull)
    buf = np.zeros(tuple(input_size[:2]) + size, dtype=dtype)
    for i in range(hhi - hlo):
        for j in range(whi - wlo):
            _tap(buf, i, j, g.out_size, g.stride, g.dilation)[...] += share
    # the input's part of the plane (rows and columns no tap sees stay zero)
    h, w = g.in_size
    out = np.zeros(tuple(input_size[:2]) + (h, w), dtype=dtype)
    r0, c0 = max(0, -bh), max(0, -bw)
    part = buf[:, :, max(0, bh) : bh + h, max(0, bw) : bw + w]
    out[:, :, r0 : r0 + part.shape[2], c0 : c0 + part.shape[3]] = part
    return _from4d(out, nd)


def avg_pool1d_grad(grad_output, input_size, kernel_size, stride=None, padding=0,
                    ceil_mode=False, count_include_pad=True):
    """avg_pool1d_grad(grad_output, input_size, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)

    Gradient of ``avg_pool1d`` with respect to its input: every
    ``grad_output[n, c, l] / divisor[l]`` is added to each input element of
    window ``l``; padding receives nothing.

    Shape
    -----
    - grad_output: (N, C, L_out) as computed by ``avg_pool1d``
    - input_size: (N, C, L); out: input_size

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.avg_pool1d_grad(np.array([[[1., 2.]]]), (1, 1, 4), 2)
    array([[[0.5, 0.5, 1. , 1. ]]])
    """
    return _avg_pool_grad(1, grad_output, input_size, kernel_size, stride, padding,
                          ceil_mode, count_include_pad)


def avg_pool2d_grad(grad_output, input_size, kernel_size, stride=None, padding=0,
                    ceil_mode=False, count_include_pad=True):
    """avg_pool2d_grad(grad_output, input_size, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)

    Gradient of ``avg_pool2d`` with respect to its input: every
    ``grad_output[n, c, i, j] / divisor[i, j]`` is added to each input element
    of window ``(i, j)``; padding receives nothing.

    Shape
    -----
    - grad_output: (N, C, H_out, W_out) as computed by ``avg_pool2d``
    - input_size: (N, C, H, W); out: input_size

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> dy = np.ones((1, 1, 2, 2))
    >>> reference.avg_pool2d_grad(dy, (1, 1, 3, 3), 2, padding=1, count_include_pad=False)[0, 0]
    array([[1.  , 0.5 , 0.5 ],
           [0.5 , 0.25, 0.25],
           [0.5 , 0.25, 0.25]])
    """
    return _avg_pool_grad(2, grad_output, input_size, kernel_size, stride, padding,
                          ceil_mode, count_include_pad)


# -- adaptive pooling ---------------------------------------------------------------


def _bin_matrix(n, m, dtype):
    """(m, n) matrix averaging PyTorch's adaptive bins: row ``i`` holds
    ``1/len_i`` on ``[floor(i*n/m), ceil((i+1)*n/m))``, zeros elsewhere."""
    i = np.arange(m)[:, None]
    start, end = (i * n) // m, -((-(i + 1) * n) // m)
    h = np.arange(n)[None, :]
    return (((h >= start) & (h < end)) / (end - start)).astype(dtype)


def _adaptive_matrices(in_size, out_size, dtype):
    """The rows' and the columns' bin matrices of the 2-D form."""
    return [_bin_matrix(n, m, dtype) for n, m in zip(in_size, out_size)]


def adaptive_avg_pool1d(x, output_size):
    """adaptive_avg_pool1d(x, output_size)

    Adaptive average pooling as a product with the bin matrix ``P``
    (``L_out x L``, ``1/len_i`` on bin ``i``): ``y = x @ P.T``.

    Shape
    -----
    - x: (N, C, L)
    - out: (N, C, L_out), bin ``i`` being ``[floor(i*L/L_out), ceil((i+1)*L/L_out))``

    Examples
    --------
    >>> from fastconv import reference
    >>> reference.adaptive_avg_pool1d([[[1, 2, 3, 4, 5]]], 2)
    array([[[2., 4.]]])
    """
    x, out = _preprocess.adaptive_pool(1, x, output_size)
    (p,) = _adaptive_matrices(x.shape[2:], out, x.dtype)
    return x @ p.T


def adaptive_avg_pool2d(x, output_size):
    """adaptive_avg_pool2d(x, output_size)

    Adaptive average pooling as two products with the bin matrices of the
    rows and the columns: ``y = P_H @ x @ P_W.T``, with PyTorch's bins
    ``[floor(i*H/H_out), ceil((i+1)*H/H_out))``.

    Shape
    -----
    - x: (N, C, H, W)
    - out: (N, C, H_out, W_out); ``None`` in ``output_size`` keeps that size

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.adaptive_avg_pool2d(np.ones((2, 3, 7, 7)), (3, None)).shape
    (2, 3, 3, 7)
    """
    x, out = _preprocess.adaptive_pool(2, x, output_size)
    ph, pw = _adaptive_matrices(x.shape[2:], out, x.dtype)
    return ph @ x @ pw.T


def adaptive_avg_pool1d_grad(grad_output, input_size, output_size=None):
    """adaptive_avg_pool1d_grad(grad_output, input_size, output_size=None)

    Gradient of ``adaptive_avg_pool1d``: ``dx = dy @ P``.

    Shape
    -----
    - grad_output: (N, C, L_out); input_size: (N, C, L)
    - out: input_size

    Examples
    --------
    >>> from fastconv import reference
    >>> reference.adaptive_avg_pool1d_grad([[[3.0, 6.0]]], (1, 1, 5))
    array([[[1., 1., 3., 2., 2.]]])
    """
    gy, size, out = _preprocess.adaptive_pool_grad(1, grad_output, input_size, output_size)
    (p,) = _adaptive_matrices(size[2:], out, gy.dtype)
    return np.ascontiguousarray(np.broadcast_to(gy @ p, size))


def adaptive_avg_pool2d_grad(grad_output, input_size, output_size=None):
    """adaptive_avg_pool2d_grad(grad_output, input_size, output_size=None)

    Gradient of ``adaptive_avg_pool2d``: ``dx = P_H.T @ dy @ P_W``.

    Shape
    -----
    - grad_output: (N, C, H_out, W_out); input_size: (N, C, H, W)
    - out: input_size

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.adaptive_avg_pool2d_grad(np.ones((1, 1, 1, 1)), (1, 1, 2, 2))
    array([[[[0.25, 0.25],
             [0.25, 0.25]]]])
    """
    gy, size, out = _preprocess.adaptive_pool_grad(2, grad_output, input_size, output_size)
    ph, pw = _adaptive_matrices(size[2:], out, gy.dtype)
    return np.ascontiguousarray(np.broadcast_to(ph.T @ gy @ pw, size))
# -- batch normalisation ---------------------------------------------------------
# Two passes of NumPy reductions in float64 (the mean, then the mean of the
# squared deviations, as PyTorch's CPU kernel), per-channel scale and shift in
# float64, and one multiply-add in the input's dtype.


def _channel_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, x):
    """A (C,) vector shaped to broadcast against (N, C, ...) ``x``."""
    return np.asarray(v).reshape((1, -1) + (1,) * (x.ndim - 2))


def _batch_moments(x):
    """The float64 batch mean and biased variance of each channel."""
    axes = _channel_axes(x)
    mean = x.mean(axis=axes, dtype=np.float64)
    d = x - _per_channel(mean, x)
    return mean, np.mean(d * d, axis=axes, dtype=np.float64)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Reference ``batch_norm`` (see :func:`fastconv.batch_norm`).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> reference.batch_norm(np.array([[1., 2.], [3., 6.]]), None, None, training=True,
    ...                      eps=0.0)
    array([[-1., -1.],
           [ 1.,  1.]])
    """
    x, rm, rv, w, b, training, momentum, eps = _preprocess.batch_norm(
        input, running_mean, running_var, weight, bias, training, momentum, eps)
    if x.shape[0] == 0:
        return np.empty_like(x)
    if training:
        mean, var = _batch_moments(x)
        _preprocess.update_running_stats(rm, rv, mean, var, x.size // x.shape[1], momentum)
    else:
        mean, var = rm.astype(np.float64), rv.astype(np.float64)
    scale = 1 / np.sqrt(var + eps)
    if w is not None:
        scale = scale * w
    shift = -mean * scale + (0 if b is None else b)
    return x * _per_channel(scale.astype(x.dtype), x) + _per_channel(shift.astype(x.dtype), x)


def batch_norm_grad(input, grad_output, weight=None, running_mean=None, running_var=None,
                    training=False, eps=1e-5):
    """Reference ``grad.batch_norm`` (see :func:`fastconv.grad.batch_norm`):
    ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import reference
    >>> x, dy = np.array([[1., 2.], [3., 6.]]), np.array([[1., 0.], [3., 0.]])
    >>> reference.batch_norm_grad(x, dy, training=True, eps=0.0)
    (array([[0., 0.],
           [0., 0.]]), array([2., 0.]), array([4., 0.]))
    """
    x, gy, w, rm, rv, training, eps = _preprocess.batch_norm_grad(
        input, grad_output, weight, running_mean, running_var, training, eps)
    axes = _channel_axes(x)
    if training and x.shape[0] > 0:
        mean, var = _batch_moments(x)
    elif training:
        mean, var = np.zeros(x.shape[1]), np.ones(x.shape[1])
    else:
        mean, var = rm.astype(np.float64), rv.astype(np.float64)
    invstd = 1 / np.sqrt(var + eps)
    xmu = x - _per_channel(mean, x)
    sum_dy = gy.sum(axis=axes, dtype=np.float64)
    sum_dy_xmu = np.sum(gy * xmu, axis=axes, dtype=np.float64)
    scale = invstd if w is None else invstd * w
    if training:
        count = x.size // x.shape[1] if x.shape[0] else 1
        k = invstd * invstd * sum_dy_xmu / count
        grad_in = (gy - _per_channel(sum_dy / count, x) - xmu * _per_channel(k, x)) \
            * _per_channel(scale, x)
    else:
        grad_in = gy * _per_channel(scale, x)
    return (grad_in.astype(x.dtype, copy=False), (sum_dy_xmu * invstd).astype(x.dtype),
            sum_dy.astype(x.dtype))


# The gradients under the same names as ``fastconv.grad``, so that code written
# against one module runs on the other: ``reference.grad.max_pool2d`` etc.
grad = SimpleNamespace(
    conv1d_input=conv1d_input,
    conv2d_input=conv2d_input,
    conv1d_weight=conv1d_weight,
    conv2d_weight=conv2d_weight,
    conv_transpose1d_input=conv_transpose1d_input,
    conv_transpose2d_input=conv_transpose2d_input,
    conv_transpose1d_weight=conv_transpose1d_weight,
    conv_transpose2d_weight=conv_transpose2d_weight,
    conv_bias=conv_bias,
    max_pool1d=max_pool1d_grad,
    max_pool2d=max_pool2d_grad,
    avg_pool1d=avg_pool1d_grad,
    avg_pool2d=avg_pool2d_grad,
    adaptive_avg_pool1d=adaptive_avg_pool1d_grad,
    adaptive_avg_pool2d=adaptive_avg_pool2d_grad,
    batch_norm=batch_norm_grad,
)
