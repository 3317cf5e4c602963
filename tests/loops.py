"""Textbook loop implementations, the independent oracle for tiny inputs.

Every function is the direct formula with explicit for-loops over the batch,
channels, output positions and kernel taps, and bounds checks instead of
padding. Nothing here is vectorised or imported from fastconv, so it can be
read against the maths line by line. Inputs are tiny: these are slow.

All arrays are 4-D (N, C, H, W) float64; a 1-D op is the 2-D op with H = 1.
Geometry arguments are explicit pairs: ``stride=(sH, sW)``,
``pad_begin=(top, left)``, ``pad_end=(bottom, right)``, ``dilation=(dH, dW)``.
"""

import math

import numpy as np


def conv_out_len(size, k, stride, pad_begin, pad_end, dilation):
    """Number of windows of the dilated kernel that fit in the padded input."""
    span = dilation * (k - 1) + 1
    return (size + pad_begin + pad_end - span) // stride + 1


def conv2d(x, w, b, stride, pad_begin, pad_end, dilation, groups):
    """y[n, o, i, j] = b[o] + sum_{c, p, q} x[n, g*Cg + c, ih, iw] * w[o, c, p, q]."""
    n_batch, c_in, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    og = c_out // groups
    oh = conv_out_len(h, kh, stride[0], pad_begin[0], pad_end[0], dilation[0])
    ow = conv_out_len(wd, kw, stride[1], pad_begin[1], pad_end[1], dilation[1])
    y = np.zeros((n_batch, c_out, oh, ow))
    for n in range(n_batch):
        for o in range(c_out):
            g = o // og
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0 if b is None else b[o]
                    for c in range(cg):
                        for p in range(kh):
                            for q in range(kw):
                                ih = i * stride[0] - pad_begin[0] + p * dilation[0]
                                iw = j * stride[1] - pad_begin[1] + q * dilation[1]
                                if 0 <= ih < h and 0 <= iw < wd:
                                    acc += x[n, g * cg + c, ih, iw] * w[o, c, p, q]
                    y[n, o, i, j] = acc
    return y


def conv2d_input(gy, w, input_shape, stride, pad_begin, dilation, groups):
    """Scatter form: every gy[n, o, i, j] * w[o, c, p, q] lands on the input
    position that tap (p, q) of window (i, j) read."""
    n_batch, c_out, oh, ow = gy.shape
    _, cg, kh, kw = w.shape
    og = c_out // groups
    gx = np.zeros(input_shape)
    h, wd = input_shape[2:]
    for n in range(n_batch):
        for o in range(c_out):
            g = o // og
            for i in range(oh):
                for j in range(ow):
                    for c in range(cg):
                        for p in range(kh):
                            for q in range(kw):
                                ih = i * stride[0] - pad_begin[0] + p * dilation[0]
                                iw = j * stride[1] - pad_begin[1] + q * dilation[1]
                                if 0 <= ih < h and 0 <= iw < wd:
                                    gx[n, g * cg + c, ih, iw] += gy[n, o, i, j] * w[o, c, p, q]
    return gx


def conv2d_weight(x, gy, weight_shape, stride, pad_begin, dilation, groups):
    """gw[o, c, p, q] = sum_{n, i, j} gy[n, o, i, j] * x[n, g*Cg + c, ih, iw]."""
    n_batch, c_out, oh, ow = gy.shape
    _, cg, kh, kw = weight_shape
    og = c_out // groups
    h, wd = x.shape[2:]
    gw = np.zeros(weight_shape)
    for o in range(c_out):
        g = o // og
        for c in range(cg):
            for p in range(kh):
                for q in range(kw):
                    acc = 0.0
                    for n in range(n_batch):
                        for i in range(oh):
                            for j in range(ow):
                                ih = i * stride[0] - pad_begin[0] + p * dilation[0]
                                iw = j * stride[1] - pad_begin[1] + q * dilation[1]
                                if 0 <= ih < h and 0 <= iw < wd:
                                    acc += gy[n, o, i, j] * x[n, g * cg + c, ih, iw]
                    gw[o, c, p, q] = acc
    return gw


def pool_out_len(size, k, stride, pad, dilation, ceil_mode):
    """Pooling output length; in ceil mode a window starting in the right
    padding is dropped."""
    span = dilation * (k - 1) + 1
    if ceil_mode:
        out = -(-(size + 2 * pad - span) // stride) + 1  # ceiling division
        last_start = (out - 1) * stride - pad
        if last_start >= size:
            out -= 1
    else:
        out = (size + 2 * pad - span) // stride + 1
    return out


def max_pool2d(x, kernel, stride, pad, dilation, ceil_mode):
    """Values and int64 flat indices ih*W + iw, PyTorch's scan per window.

    The scan visits the in-bounds taps row-major, starting from -inf and the
    first tap at a non-negative position, and takes a tap if it is greater or
    NaN.
    """
    n_batch, channels, h, wd = x.shape
    oh = pool_out_len(h, kernel[0], stride[0], pad[0], dilation[0], ceil_mode)
    ow = pool_out_len(wd, kernel[1], stride[1], pad[1], dilation[1], ceil_mode)
    y = np.zeros((n_batch, channels, oh, ow))
    idx = np.zeros((n_batch, channels, oh, ow), dtype=np.int64)
    for n in range(n_batch):
        for c in range(channels):
            for i in range(oh):
                for j in range(ow):
                    h0 = i * stride[0] - pad[0]
                    w0 = j * stride[1] - pad[1]
                    while h0 < 0:
                        h0 += dilation[0]
                    while w0 < 0:
                        w0 += dilation[1]
                    best, best_idx = -math.inf, h0 * wd + w0
                    for p in range(kernel[0]):
                        for q in range(kernel[1]):
                            ih = i * stride[0] - pad[0] + p * dilation[0]
                            iw = j * stride[1] - pad[1] + q * dilation[1]
                            if 0 <= ih < h and 0 <= iw < wd:
                                v = x[n, c, ih, iw]
                                if v > best or math.isnan(v):
                                    best, best_idx = v, ih * wd + iw
                    y[n, c, i, j] = best
                    idx[n, c, i, j] = best_idx
    return y, idx


def avg_pool2d(x, kernel, stride, pad, ceil_mode, count_include_pad):
    """Window sums over in-bounds elements divided by PyTorch's divisor: the
    window clipped to the padded input if count_include_pad, else the number
    of in-bounds elements."""
    n_batch, channels, h, wd = x.shape
    oh = pool_out_len(h, kernel[0], stride[0], pad[0], 1, ceil_mode)
    ow = pool_out_len(wd, kernel[1], stride[1], pad[1], 1, ceil_mode)
    y = np.zeros((n_batch, channels, oh, ow))
    for n in range(n_batch):
        for c in range(channels):
            for i in range(oh):
                for j in range(ow):
                    h0 = i * stride[0] - pad[0]
                    w0 = j * stride[1] - pad[1]
                    h1 = min(h0 + kernel[0], h + pad[0])
                    w1 = min(w0 + kernel[1], wd + pad[1])
                    padded_count = (h1 - h0) * (w1 - w0)
                    acc, inside = 0.0, 0
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            if 0 <= ih < h and 0 <= iw < wd:
                                acc += x[n, c, ih, iw]
                                inside += 1
                    y[n, c, i, j] = acc / (padded_count if count_include_pad else inside)
    return y


def pool_grad_max(gy, idx, input_shape):
    """Scatter-add of every output gradient at its argmax."""
    gx = np.zeros(input_shape)
    n_batch, channels = gy.shape[:2]
    wd = input_shape[3]
    for n in range(n_batch):
        for c in range(channels):
            for i in range(gy.shape[2]):
                for j in range(gy.shape[3]):
                    k = idx[n, c, i, j]
                    gx[n, c, k // wd, k % wd] += gy[n, c, i, j]
    return gx
