"""The one preprocessing layer of every op, shared by both backends.

Each function takes an op's user arguments and returns its arrays (cast to
the op's float dtype, C-contiguous, checked) and its geometry, or raises
``ValueError``/``TypeError`` worded "Expected ..., got ...". ``functional``
and ``grad`` (the compiled kernels) and ``reference`` (pure NumPy) call the
same function for the same op, as scikit-image's filters share
``_preprocess_input``: both accept and reject the same inputs, with the same
words. The argument checks themselves live in ``_validation``.
"""

import numbers

import numpy as np

from ._validation import (
    as_float_arrays,
    check_ndim,
    check_shape,
    check_size,
    contiguous,
    conv_geometry,
    conv_transpose_geometry,
    pool_geometry,
)

__all__ = [
    "conv", "conv_transpose", "conv_input", "conv_weight", "conv_transpose_input",
    "conv_transpose_weight", "conv_bias", "max_pool", "avg_pool", "max_pool_grad",
    "avg_pool_grad", "check_indices_in_range", "adaptive_output_size", "adaptive_pool",
    "adaptive_pool_grad",
    "avg_pool_grad", "check_indices_in_range", "batch_norm", "batch_norm_grad",
    "update_running_stats",
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


ACTIVATIONS = (None, "relu")


def conv(nd, x, weight, bias, stride, padding, dilation, groups, activation=None):
    """``conv{nd}d``: (input, weight, bias or None, geometry, whether a ReLU
    follows)."""
    if not (activation is None or isinstance(activation, str)) or activation not in ACTIVATIONS:
        raise ValueError(f"Expected activation None or 'relu', got {activation!r}")
    x, w, b = _forward_operands(nd, x, weight, bias, WEIGHT_LAYOUT)
    geo = conv_geometry(x.shape, w.shape, nd, stride, padding, dilation, groups)
    _bias(b, geo.c_out)
    return x, w, b, geo, activation == "relu"


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
    return gy, contiguous(idx.astype(np.int64, copy=False)), size


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


# -- adaptive pooling ---------------------------------------------------------------


def adaptive_output_size(output_size, nd, in_size=None):
    """``output_size`` (an int, None, or a tuple of ``nd`` ints or Nones) as a
    tuple; a None entry takes the input's size from ``in_size`` (or stays None
    when ``in_size`` is None, for a layer's constructor)."""
    if output_size is None:
        sizes = (None,) * nd
    elif isinstance(output_size, (tuple, list)):
        if len(output_size) != nd:
            raise ValueError(
                f"Expected output_size to be an int or a tuple of {nd} ints (or None), "
                f"got {output_size!r}"
            )
        sizes = tuple(output_size)
    else:
        sizes = (output_size,) * nd
    out = []
    for i, v in enumerate(sizes):
        if v is None:
            out.append(None if in_size is None else int(in_size[i]))
            continue
        if (isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))
                or v < 1):
            raise ValueError(
                f"Expected output_size entries to be positive ints or None, got "
                f"{output_size!r}"
            )
        out.append(int(v))
    return tuple(out)


def adaptive_pool(nd, x, output_size):
    """``adaptive_avg_pool{nd}d``: (input, output spatial size)."""
    x = _pool_input(nd, x)
    return x, adaptive_output_size(output_size, nd, x.shape[2:])


def adaptive_pool_grad(nd, grad_output, input_size, output_size=None):
    """``grad.adaptive_avg_pool{nd}d``: (grad_output, input_size, output spatial
    size). ``output_size`` None means grad_output's own spatial size."""
    size = check_size(input_size, nd, "input_size")
    _nonempty(size, "input_size")
    (gy,) = _operands(nd, {"grad_output": LAYOUT[nd]}, grad_output=grad_output)
    out = adaptive_output_size(tuple(gy.shape[2:]) if output_size is None else output_size,
                               nd, size[2:])
    _grad_output(gy, size[:2] + out, f"adaptive_avg_pool{nd}d for input_size={size}")
    return gy, size, out
# -- batch normalisation -----------------------------------------------------------


def _real(value, name, minimum=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"Expected {name} to be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"Expected {name} to be a finite number{bound}, got {value!r}")
    return value


def _running_stat(a, name, channels, writable):
    """A running statistic: a float32/float64 ndarray of shape (C,), used (and,
    in training, updated) in place, so it is never copied or cast."""
    if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
        what = type(a).__name__ if not isinstance(a, np.ndarray) else f"dtype {a.dtype}"
        raise TypeError(f"Expected {name} to be a float32 or float64 ndarray, got {what}")
    check_shape(a, (channels,), name, "one value per channel")
    if writable and not a.flags.writeable:
        raise ValueError(f"Expected {name} to be writable (it is updated in training), "
                         "got a read-only array")
    return a


def _norm_input(x, named):
    """(input, the other ``named`` arrays cast with it) for batch norm."""
    arrays, _ = as_float_arrays(dict(input=x, **named))
    x = arrays.pop("input")
    if x.ndim < 2:
        raise ValueError(f"Expected input of at least 2 dimensions (N, C, ...), got shape "
                         f"{x.shape}")
    _nonempty(x.shape, "input")
    channels = x.shape[1]
    for name, a in arrays.items():
        if a is not None:
            check_shape(a, (channels,), name, "one value per channel")
    return x, arrays


def _batch_norm_mode(x, running_mean, running_var, training, update):
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"Expected training to be a bool, got {training!r}")
    channels = x.shape[1]
    if (running_mean is None) != (running_var is None):
        raise ValueError("Expected running_mean and running_var both given or both None, "
                         f"got running_mean={type(running_mean).__name__} and "
                         f"running_var={type(running_var).__name__}")
    if running_mean is not None:
        running_mean = _running_stat(running_mean, "running_mean", channels,
                                     update and training)
        running_var = _running_stat(running_var, "running_var", channels,
                                    update and training)
    elif not training:
        raise ValueError("Expected running_mean and running_var in evaluation mode "
                         "(training=False), got None")
    if training and int(np.prod(x.shape)) // channels == 1:
        raise ValueError("Expected more than 1 value per channel when training, got input "
                         f"size {tuple(x.shape)}")
    return running_mean, running_var


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    """``batch_norm``: (input, running_mean, running_var, weight, bias,
    training, momentum, eps). The input, weight and bias share the float
    dtype of the computation; the running statistics are float ndarrays of
    shape (C,) that are used as they are and, in training, updated in place."""
    x, arrays = _norm_input(x, dict(weight=weight, bias=bias))
    running_mean, running_var = _batch_norm_mode(x, running_mean, running_var, training,
                                                 update=True)
    momentum = _real(momentum, "momentum")
    eps = _real(eps, "eps", minimum=0)
    return (x, running_mean, running_var, arrays["weight"], arrays["bias"], bool(training),
            momentum, eps)


def batch_norm_grad(x, grad_output, weight, running_mean, running_var, training, eps):
    """``grad.batch_norm``: (input, grad_output, weight, running_mean,
    running_var, training, eps); grad_output has the input's shape."""
    x, arrays = _norm_input(x, dict(weight=weight))
    gy = as_float_arrays({"grad_output": grad_output})[0]["grad_output"]
    check_shape(gy, x.shape, "grad_output", "the shape of input")
    gy = gy.astype(x.dtype, copy=False)
    running_mean, running_var = _batch_norm_mode(x, running_mean, running_var, training,
                                                 update=False)
    eps = _real(eps, "eps", minimum=0)
    return x, gy, arrays["weight"], running_mean, running_var, bool(training), eps


def update_running_stats(running_mean, running_var, mean, var, count, momentum):
    """The running-statistics update of batch norm in training, in place and
    in float64, as PyTorch's CPU kernel: ``r = momentum*batch + (1 - momentum)*r``
    with the batch mean and the *unbiased* batch variance
    ``var * count/(count - 1)`` (``var`` is the biased one). Shared by both
    backends."""
    if running_mean is None:
        return
    unbiased = var * (count / (count - 1))
    running_mean[...] = momentum * mean + (1 - momentum) * running_mean.astype(np.float64)
    running_var[...] = momentum * unbiased + (1 - momentum) * running_var.astype(np.float64)
