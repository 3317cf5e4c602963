"""The one preprocessing layer of every op, shared by both backends.

Each function takes an op's user arguments and returns its arrays (cast to
the op's float dtype, C-contiguous, checked) and its geometry, or raises
``ValueError``/``TypeError`` worded "Expected ..., got ...". ``functional``
and ``grad`` (the compiled kernels) and ``reference`` (pure NumPy) call the
same function for the same op, as scikit-image's filters share
``_preprocess_input``: both accept and reject the same inputs, with the same
words. The argument checks themselves live in ``_validation``.
"""

import numpy as np

from ._validation import (
    as_float_arrays,
    check_ndim,
    check_shape,
    check_size,
    conv_geometry,
    conv_transpose_geometry,
    pool_geometry,
)

__all__ = [
    "conv", "conv_transpose", "conv_input", "conv_weight", "conv_transpose_input",
    "conv_transpose_weight", "conv_bias", "max_pool", "avg_pool", "max_pool_grad",
    "avg_pool_grad", "check_indices_in_range",
]

LAYOUT = {1: "(N, C, L)", 2: "(N, C, H, W)"}
WEIGHT_LAYOUT = {1: "(C_out, C_in/groups, kL)", 2: "(C_out, C_in/groups, kH, kW)"}
TWEIGHT_LAYOUT = {1: "(C_in, C_out/groups, kL)", 2: "(C_in, C_out/groups, kH, kW)"}


def _nonempty(shape, name):
    """Channels and positions must exist (an empty batch is fine), as in PyTorch."""
    if any(s == 0 for s in shape[1:]):
        raise ValueError(
            f"Expected {name} with non-zero channel and spatial sizes, got shape "
            f"{tuple(shape)}"
        )


def _bias(b, channels):
    if b is not None:
        check_shape(b, (channels,), "bias", "one value per output channel")


def _grad_output(gy, expected, what):
    check_shape(gy, expected, "grad_output", f"the output of {what}")


def _operands(nd, layouts, **named):
    """The ``named`` arrays cast to their float dtype (None stays None), in
    order, each name in ``layouts`` checked to have nd + 2 dimensions."""
    for name in layouts:  # required: None is not an array (it gave AttributeError)
        if named[name] is None:
            raise TypeError(f"Expected {name} to be an array, got None")
    arrays, _ = as_float_arrays(named)
    for name, layout in layouts.items():
        check_ndim(arrays[name], nd + 2, name, layout)
    return [arrays[name] for name in named]


def _forward_operands(nd, x, weight, bias, weight_layout):
    x, w, b = _operands(nd, {"input": LAYOUT[nd], "weight": weight_layout[nd]},
                        input=x, weight=weight, bias=bias)
    _nonempty(x.shape, "input")
    return x, w, b


# -- convolution ---------------------------------------------------------------------


def conv(nd, x, weight, bias, stride, padding, dilation, groups):
    """``conv{nd}d``: (input, weight, bias or None, geometry)."""
    x, w, b = _forward_operands(nd, x, weight, bias, WEIGHT_LAYOUT)
    geo = conv_geometry(x.shape, w.shape, nd, stride, padding, dilation, groups)
    _bias(b, geo.c_out)
    return x, w, b, geo


def conv_transpose(nd, x, weight, bias, stride, padding, output_padding, groups, dilation):
    """``conv_transpose{nd}d``: (input, weight, bias or None, geometry of the
    convolution it transposes)."""
    x, w, b = _forward_operands(nd, x, weight, bias, TWEIGHT_LAYOUT)
    geo = conv_transpose_geometry(x.shape, w.shape, nd, stride, padding, output_padding,
                                  groups, dilation)
    _bias(b, geo.c_in)
    return x, w, b, geo


def _input_grad_operands(nd, input_size, weight, grad_output, weight_layout):
    size = check_size(input_size, nd, "input_size")
    _nonempty(size, "input_size")
    w, gy = _operands(nd, {"weight": weight_layout[nd], "grad_output": LAYOUT[nd]},
                      weight=weight, grad_output=grad_output)
    return size, w, gy


def _weight_grad_operands(nd, x, weight_size, grad_output, weight_layout):
    size = check_size(weight_size, nd, "weight_size", weight_layout[nd])
    x, gy = _operands(nd, {"input": LAYOUT[nd], "grad_output": LAYOUT[nd]},
                      input=x, grad_output=grad_output)
    _nonempty(x.shape, "input")
    return size, x, gy


def conv_input(nd, input_size, weight, grad_output, stride, padding, dilation, groups):
    """``grad.conv{nd}d_input``: (weight, grad_output, geometry)."""
    size, w, gy = _input_grad_operands(nd, input_size, weight, grad_output, WEIGHT_LAYOUT)
    geo = conv_geometry(size, w.shape, nd, stride, padding, dilation, groups)
    _grad_output(gy, geo.output_shape(), f"conv{nd}d for input_size={size}")
    return w, gy, geo


def conv_weight(nd, x, weight_size, grad_output, stride, padding, dilation, groups):
    """``grad.conv{nd}d_weight``: (input, grad_output, geometry)."""
    size, x, gy = _weight_grad_operands(nd, x, weight_size, grad_output, WEIGHT_LAYOUT)
    geo = conv_geometry(x.shape, size, nd, stride, padding, dilation, groups)
    _grad_output(gy, geo.output_shape(), f"conv{nd}d for weight_size={size}")
    return x, gy, geo


def conv_transpose_input(nd, input_size, weight, grad_output, stride, padding,
                         output_padding, groups, dilation):
    """``grad.conv_transpose{nd}d_input``: (weight, grad_output, geometry of
    the convolution it transposes)."""
    size, w, gy = _input_grad_operands(nd, input_size, weight, grad_output, TWEIGHT_LAYOUT)
    geo = conv_transpose_geometry(size, w.shape, nd, stride, padding, output_padding,
                                  groups, dilation)
    _grad_output(gy, geo.input_shape(), f"conv_transpose{nd}d for input_size={size}")
    return w, gy, geo


def conv_transpose_weight(nd, x, weight_size, grad_output, stride, padding, output_padding,
                          groups, dilation):
    """``grad.conv_transpose{nd}d_weight``: (input, grad_output, geometry of
    the convolution it transposes)."""
    size, x, gy = _weight_grad_operands(nd, x, weight_size, grad_output, TWEIGHT_LAYOUT)
    geo = conv_transpose_geometry(x.shape, size, nd, stride, padding, output_padding,
                                  groups, dilation)
    _grad_output(gy, geo.input_shape(), f"conv_transpose{nd}d for weight_size={size}")
    return x, gy, geo


def conv_bias(grad_output):
    """``grad.conv_bias``: grad_output, of at least 2 dimensions."""
    gy = as_float_arrays({"grad_output": grad_output})[0]["grad_output"]
    if gy.ndim < 2:
        raise ValueError(
            f"Expected grad_output of at least 2 dimensions (N, C, ...), got shape {gy.shape}"
        )
    return gy


# -- pooling ---------------------------------------------------------------------------


def _check_count_include_pad(count_include_pad):
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(
            f"Expected count_include_pad to be a bool, got {count_include_pad!r}"
        )


def _pool_input(nd, x):
    (x,) = _operands(nd, {"input": LAYOUT[nd]}, input=x)
    _nonempty(x.shape, "input")
    return x


def max_pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode):
    """``max_pool{nd}d``: (input, geometry)."""
    x = _pool_input(nd, x)
    geo = pool_geometry(x.shape[2:], nd, kernel_size, stride, padding, dilation, ceil_mode)
    return x, geo


def avg_pool(nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """``avg_pool{nd}d``: (input, geometry)."""
    x = _pool_input(nd, x)
    _check_count_include_pad(count_include_pad)
    geo = pool_geometry(x.shape[2:], nd, kernel_size, stride, padding, 1, ceil_mode)
    return x, geo


def max_pool_grad(nd, grad_output, indices, input_size):
    """``grad.max_pool{nd}d``: (grad_output, int64 indices, input_size). The
    indices' range is checked where they are used (the kernel counts the
    ones out of range): see check_indices_in_range."""
    size = check_size(input_size, nd, "input_size")
    (gy,) = _operands(nd, {"grad_output": LAYOUT[nd]}, grad_output=grad_output)
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"Expected integer indices, got dtype {idx.dtype}")
    check_shape(idx, gy.shape, "indices", "the shape of grad_output")
    if gy.shape[:2] != size[:2]:
        raise ValueError(
            f"Expected grad_output with (N, C) = {size[:2]} from input_size, "
            f"got shape {gy.shape}"
        )
    return gy, np.ascontiguousarray(idx, dtype=np.int64), size


def check_indices_in_range(n_bad, input_size):
    """Raise for ``n_bad`` max-pool indices outside the plane of ``input_size``."""
    if n_bad:
        plane = int(np.prod(input_size[2:]))
        raise ValueError(
            f"Expected indices in [0, {plane}) for input_size={tuple(input_size)}, "
            f"got {n_bad} out of range"
        )


def avg_pool_grad(nd, grad_output, input_size, kernel_size, stride, padding, ceil_mode,
                  count_include_pad):
    """``grad.avg_pool{nd}d``: (grad_output, input_size, geometry)."""
    size = check_size(input_size, nd, "input_size")
    _nonempty(size, "input_size")
    _check_count_include_pad(count_include_pad)
    (gy,) = _operands(nd, {"grad_output": LAYOUT[nd]}, grad_output=grad_output)
    geo = pool_geometry(size[2:], nd, kernel_size, stride, padding, 1, ceil_mode)
    _grad_output(gy, geo.out_shape(size[:2]), f"avg_pool{nd}d for input_size={size}")
    return gy, size, geo
