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

from ._launch import (
    avg_pool_backward,
    bias_grad,
    conv_forward,
    conv_input_grad,
    conv_weight_grad,
    max_pool_backward,
)
from ._validation import (
    as_float_arrays,
    check_ndim,
    check_shape,
    check_size,
    conv_geometry,
    conv_transpose_geometry,
    pool_geometry,
)
from .functional import _check_count_include_pad

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
]


_WEIGHT_LAYOUT = "(channels, channels/groups, kernel...)"


def _operands(nd, **named):
    arrays, _ = as_float_arrays(named)
    for name, a in arrays.items():
        check_ndim(a, nd + 2, name, _WEIGHT_LAYOUT if name == "weight" else "(N, C, spatial...)")
    return arrays


def _check_grad_output(grad_output, expected, what):
    check_shape(grad_output, expected, "grad_output", f"the output of {what}")


def _nonempty(size, name):
    if any(s == 0 for s in size[1:]):
        raise ValueError(f"Expected {name} with non-zero channel and spatial sizes, got {size}")


# -- convolution --------------------------------------------------------------


def _conv_input(nd, input_size, weight, grad_output, stride, padding, dilation, groups):
    size = check_size(input_size, nd, "input_size")
    _nonempty(size, "input_size")
    a = _operands(nd, weight=weight, grad_output=grad_output)
    w, gy = a["weight"], a["grad_output"]
    geo = conv_geometry(size, w.shape, nd, stride, padding, dilation, groups)
    _check_grad_output(gy, geo.output_shape(), f"conv{nd}d for input_size={size}")
    return conv_input_grad(gy, w, None, geo)


def conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of ``conv1d`` with respect to its input, of shape ``input_size``."""
    return _conv_input(1, input_size, weight, grad_output, stride, padding, dilation, groups)


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of ``conv2d`` with respect to its input, of shape ``input_size``.

    ``dx[n, i, h, w] = sum dy[n, j, oh, ow] * W[j, i, p, q]`` over every
    ``(j, p, q, oh, ow)`` with ``oh*s_h - pad_top + p*d_h = h`` and likewise for
    ``w``: the transposed convolution of ``dy``. Arguments as :func:`fastconv.conv2d`.
    """
    return _conv_input(2, input_size, weight, grad_output, stride, padding, dilation, groups)


def _conv_weight(nd, x, weight_size, grad_output, stride, padding, dilation, groups):
    size = check_size(weight_size, nd, "weight_size", _WEIGHT_LAYOUT)
    a = _operands(nd, input=x, grad_output=grad_output)
    x, gy = a["input"], a["grad_output"]
    _nonempty(x.shape, "input")
    geo = conv_geometry(x.shape, size, nd, stride, padding, dilation, groups)
    _check_grad_output(gy, geo.output_shape(), f"conv{nd}d for weight_size={size}")
    return conv_weight_grad(x, gy, geo)


def conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of ``conv1d`` with respect to its weight, of shape ``weight_size``."""
    return _conv_weight(1, input, weight_size, grad_output, stride, padding, dilation, groups)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of ``conv2d`` with respect to its weight, of shape ``weight_size``.

    ``dW[j, i, p, q] = sum_{n, oh, ow} dy[n, j, oh, ow] * x_pad[n, i', oh*s_h + p*d_h, ow*s_w + q*d_w]``
    with ``i'`` the input channel ``i`` of ``j``'s group.
    """
    return _conv_weight(2, input, weight_size, grad_output, stride, padding, dilation, groups)


def _conv_transpose_input(nd, input_size, weight, grad_output, stride, padding,
                          output_padding, groups, dilation):
    size = check_size(input_size, nd, "input_size")
    _nonempty(size, "input_size")
    a = _operands(nd, weight=weight, grad_output=grad_output)
    w, gy = a["weight"], a["grad_output"]
    geo = conv_transpose_geometry(size, w.shape, nd, stride, padding, output_padding,
                                  groups, dilation)
    _check_grad_output(gy, geo.input_shape(), f"conv_transpose{nd}d for input_size={size}")
    # The transposed convolution's input gradient is the forward convolution.
    return conv_forward(gy, w, None, geo)


def conv_transpose1d_input(input_size, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    """Gradient of ``conv_transpose1d`` with respect to its input: ``conv1d`` of ``grad_output``."""
    return _conv_transpose_input(1, input_size, weight, grad_output, stride, padding,
                                 output_padding, groups, dilation)


def conv_transpose2d_input(input_size, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    """Gradient of ``conv_transpose2d`` with respect to its input: ``conv2d`` of ``grad_output``."""
    return _conv_transpose_input(2, input_size, weight, grad_output, stride, padding,
                                 output_padding, groups, dilation)


def _conv_transpose_weight(nd, x, weight_size, grad_output, stride, padding,
                           output_padding, groups, dilation):
    size = check_size(weight_size, nd, "weight_size", _WEIGHT_LAYOUT)
    a = _operands(nd, input=x, grad_output=grad_output)
    x, gy = a["input"], a["grad_output"]
    _nonempty(x.shape, "input")
    geo = conv_transpose_geometry(x.shape, size, nd, stride, padding, output_padding,
                                  groups, dilation)
    _check_grad_output(gy, geo.input_shape(), f"conv_transpose{nd}d for weight_size={size}")
    # Roles swap: the convolution's "input" is grad_output, its "grad_output" is x.
    return conv_weight_grad(gy, x, geo)


def conv_transpose1d_weight(input, weight_size, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    """Gradient of ``conv_transpose1d`` with respect to its weight."""
    return _conv_transpose_weight(1, input, weight_size, grad_output, stride, padding,
                                  output_padding, groups, dilation)


def conv_transpose2d_weight(input, weight_size, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    """Gradient of ``conv_transpose2d`` with respect to its weight."""
    return _conv_transpose_weight(2, input, weight_size, grad_output, stride, padding,
                                  output_padding, groups, dilation)


def conv_bias(grad_output):
    """Gradient of any convolution with respect to its bias.

    The sum of ``grad_output`` over every axis except the channel axis 1,
    accumulated in float64 and returned in ``grad_output``'s dtype.
    """
    gy = as_float_arrays({"grad_output": grad_output})[0]["grad_output"]
    if gy.ndim < 2:
        raise ValueError(
            f"Expected grad_output of at least 2 dimensions (N, C, ...), got shape {gy.shape}"
        )
    return bias_grad(gy)


# -- pooling ------------------------------------------------------------------


def _max_pool_grad(nd, grad_output, indices, input_size):
    size = check_size(input_size, nd, "input_size")
    gy = _operands(nd, grad_output=grad_output)["grad_output"]
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"Expected integer indices, got dtype {idx.dtype}")
    check_shape(idx, gy.shape, "indices", "the shape of grad_output")
    if gy.shape[:2] != size[:2]:
        raise ValueError(
            f"Expected grad_output with (N, C) = {size[:2]} from input_size, "
            f"got shape {gy.shape}"
        )
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    grad_in, bad = max_pool_backward(gy, idx, size)
    if bad:
        hw = int(np.prod(size[2:]))
        raise ValueError(
            f"Expected indices in [0, {hw}) for input_size={size}, got {bad} out of range"
        )
    return grad_in


def max_pool1d(grad_output, indices, input_size):
    """Gradient of ``max_pool1d``: ``grad_output`` routed to ``indices``.

    ``dx[n, c, indices[n, c, t]] += dy[n, c, t]``: each output's gradient goes
    to the position that won its window; positions that won several
    overlapping windows accumulate. Indices are bounds-checked.
    """
    return _max_pool_grad(1, grad_output, indices, input_size)


def max_pool2d(grad_output, indices, input_size):
    """Gradient of ``max_pool2d``: ``grad_output`` routed to ``indices`` (``h*W + w``).

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
    size = check_size(input_size, nd, "input_size")
    _nonempty(size, "input_size")
    _check_count_include_pad(count_include_pad)
    gy = _operands(nd, grad_output=grad_output)["grad_output"]
    geo = pool_geometry(size[2:], nd, kernel_size, stride, padding, 1, ceil_mode)
    _check_grad_output(gy, geo.out_shape(size[:2]), f"avg_pool{nd}d for input_size={size}")
    return avg_pool_backward(gy, size, geo, count_include_pad)


def avg_pool1d(grad_output, input_size, kernel_size, stride=None, padding=0,
               ceil_mode=False, count_include_pad=True):
    """Gradient of ``avg_pool1d``: each output's gradient, divided by its
    window's divisor, is added to every input position of the window."""
    return _avg_pool_grad(1, grad_output, input_size, kernel_size, stride, padding,
                          ceil_mode, count_include_pad)


def avg_pool2d(grad_output, input_size, kernel_size, stride=None, padding=0,
               ceil_mode=False, count_include_pad=True):
    """Gradient of ``avg_pool2d``: each output's gradient, divided by its
    window's divisor, is added to every input position of the window."""
    return _avg_pool_grad(2, grad_output, input_size, kernel_size, stride, padding,
                          ceil_mode, count_include_pad)
