"""The kernel launchers: validated arrays in, one compiled kernel call, arrays out.

The public ops (``functional``, ``grad``) validate and normalise their
arguments, then call one launcher here. A launcher allocates the output,
asks ``_plan`` for the path and thread count, views the arrays in the
kernels' 2-D layout (1-D ops have H = 1) and calls the kernel of the build
in use (``_config.conv_kernels`` / ``pool_kernels`` / ``norm_kernels``). Nothing here
checks user input: that was done before.
"""

import math

import numpy as np

from . import _config, _plan

__all__ = [
    "PackedWeight", "conv_forward", "conv_input_grad", "conv_weight_grad", "bias_grad",
    "max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward",
    "batch_norm_train_forward", "batch_norm_apply", "batch_norm_backward",
]


def _as4d(a, nd):
    """View a C-contiguous (N, C, L) array as (N, C, 1, L)."""
    return a if nd == 2 else a.reshape(a.shape[0], a.shape[1], 1, a.shape[2])


def _planes(a, geo_size):
    """View (N, C, *spatial) as (N*C, H, W)."""
    return a.reshape((-1,) + tuple(geo_size))


def _bias_or_empty(b, dtype):
    return np.empty(0, dtype=dtype) if b is None else b


# -- convolution ------------------------------------------------------------------


class PackedWeight:
    """A fixed convolution weight and its forward panels, packed once.

    ``conv_forward`` packs its weight into the micro-kernels' panels on
    every call: 9.4 MB for a 512 -> 512 channel 3x3 layer in float32, as
    much memory traffic as the GEMM of a 7x7 batch-1 input does over its 49
    columns. An inference layer whose weight never changes
    (:func:`fastconv.nn.fuse`) hands one of these to ``conv_forward``
    instead, which packs on first use and keeps the panels for the build
    that packed them: A panels of MR output channels, B panels of NR of
    them where the ``channels`` path runs, and the transformed weight where
    the ``winograd`` one does. The weight must not change in place
    afterwards; the fused layers make it read-only.
    """

    __slots__ = ("weight", "_kernels", "_panels")

    def __init__(self, weight):
        self.weight = weight
        self._kernels, self._panels = None, {}

    def __reduce__(self):
        # copies and pickles keep the weight and pack again on first use
        # (the panels belong to a loaded kernels module, which does not pickle)
        return PackedWeight, (self.weight,)

    def panels(self, kernels, nd, groups, n_threads, path="im2col"):
        """The panels of forward path ``path`` for ``kernels`` (the build in
        use), packed if needed."""
        if self._kernels is not kernels:
            self._kernels, self._panels = kernels, {}
        kind = path if path in ("channels", "winograd") else "A"
        if kind not in self._panels:
            w4 = _as4d(self.weight, nd)
            self._panels[kind] = (
                kernels.pack_winograd_weight(w4, n_threads) if kind == "winograd"
                else kernels.pack_forward_weight(w4, groups, kind == "channels", n_threads))
        return self._panels[kind]


def conv_forward(x, w, b, geo, relu=False, packed=None):
    """``conv{nd}d`` of ``x`` with ``w`` (and bias ``b`` or None) for geometry
    ``geo``; with ``relu``, max(., 0) applied as the kernel stores the output.
    ``packed``, a :class:`PackedWeight` of ``w``, saves packing it again."""
    out = np.empty(geo.output_shape(), dtype=x.dtype)
    plan = _plan.plan_for("forward", geo, x.dtype.itemsize)
    x4, w4, out4 = _as4d(x, geo.nd), _as4d(w, geo.nd), _as4d(out, geo.nd)
    bias = _bias_or_empty(b, x.dtype)
    kernels = _config.conv_kernels
    if plan.path.startswith("depthwise"):
        kernels.depthwise_forward_or_input_grad(
            x4, w4, bias, out4, *geo.kernel_args()[:-1], False, plan.path == "depthwise_flat",
            relu, plan.n_threads)
        return out
    for _ in range(2):
        if packed is not None and packed.weight is w:
            panels = packed.panels(kernels, geo.nd, geo.groups, plan.n_threads, plan.path)
        else:
            panels = np.empty(0, dtype=x.dtype)
        if not kernels.conv2d_forward(x4, w4, bias, panels, out4, *geo.kernel_args(),
                                      plan.path, *plan.tile, relu, plan.n_threads):
            return out
        # the winograd path met a non-finite value: the others give the reference's
        plan = _plan.plan_for("forward", geo, x.dtype.itemsize, winograd=False)
    raise AssertionError("unreachable: only the winograd path returns True")


def conv_input_grad(grad_out, w, b, geo):
    """The input gradient of the convolution ``geo`` (a transposed convolution,
    plus the bias ``b`` when not None)."""
    grad_in = np.empty(geo.input_shape(), dtype=grad_out.dtype)
    plan = _plan.plan_for("input_grad", geo, grad_out.dtype.itemsize)
    bias = _bias_or_empty(b, grad_out.dtype)
    gy4, w4, gx4 = _as4d(grad_out, geo.nd), _as4d(w, geo.nd), _as4d(grad_in, geo.nd)
    kernels = _config.conv_kernels
    if plan.path == "winograd":
        # the forward of grad_out with the weight flipped and its channels
        # swapped, padded by 2 - padding
        flipped = np.ascontiguousarray(w4.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        (ph, pw), empty = geo.pad_begin, np.empty(0, dtype=grad_out.dtype)
        if not kernels.conv2d_forward(gy4, flipped, bias, empty, gx4, 1, 1, 2 - ph, 2 - pw,
                                      1, 1, 1, "winograd", *plan.tile, False, plan.n_threads):
            return grad_in
        plan = _plan.plan_for("input_grad", geo, grad_out.dtype.itemsize, winograd=False)
    if plan.path.startswith("depthwise"):
        kernels.depthwise_forward_or_input_grad(
            gy4, w4, bias, gx4, *geo.kernel_args()[:-1], True, plan.path == "depthwise_flat",
            False, plan.n_threads)
    else:
        kernels.conv2d_input_grad(gy4, w4, bias, gx4, *geo.kernel_args(), plan.path,
                                  *plan.tile, plan.n_threads)
    return grad_in


def conv_weight_grad(x, grad_out, geo):
    """The weight gradient of the convolution ``geo``: the kernel's per-thread
    partial sums, summed."""
    plan = _plan.plan_for("weight_grad", geo, x.dtype.itemsize)
    shape = geo.weight_shape()
    partial = np.zeros((plan.n_threads, math.prod(shape)), dtype=x.dtype)
    rows = plan.n_threads  # of partial that hold sums
    x4, gy4 = _as4d(x, geo.nd), _as4d(grad_out, geo.nd)
    if plan.path.startswith("depthwise"):
        _config.conv_kernels.depthwise_weight_grad(
            x4, gy4, partial, *geo.kernel, *geo.kernel_args()[:-1],
            plan.path == "depthwise_flat", plan.tile[0], plan.n_threads)
    else:
        rows = _config.conv_kernels.conv2d_weight_grad(
            x4, gy4, partial, *geo.kernel, *geo.kernel_args(), plan.path, *plan.tile,
            plan.n_threads)
    # one thread: its row is the result (a view of nothing larger)
    total = partial[0] if plan.n_threads == 1 else partial[:rows].sum(axis=0)
    return total.reshape(shape)


def bias_grad(gy):
    """The sum of ``gy`` (N, C, ...) over every axis but 1, in ``gy``'s dtype."""
    out = np.empty(gy.shape[1], dtype=gy.dtype)
    positions = math.prod(gy.shape[2:])
    _config.conv_kernels.bias_grad(gy.reshape(gy.shape[0], gy.shape[1], positions), out,
                                   _plan.threads_for(gy.size, "pool"))
    return out


# -- pooling ----------------------------------------------------------------------


def max_pool_forward(x, geo, return_indices):
    """Max pooling of ``x`` for geometry ``geo``: the output, and its argmax
    indices (flat in each plane) or None."""
    out = np.empty(geo.out_shape(x.shape[:2]), dtype=x.dtype)
    if return_indices:
        indices = np.empty(out.shape, dtype=np.int64)
        idx3 = _planes(indices, geo.out_size)
    else:
        indices, idx3 = None, np.empty((0, 0, 0), dtype=np.int64)
    plan = _plan.pool_plan("max_pool", geo, x.dtype.itemsize, x.size, return_indices)
    _config.pool_kernels.max_pool2d_forward(
        _planes(x, geo.in_size), _planes(out, geo.out_size), idx3, geo.kernel_args(),
        plan.path, plan.n_threads)
    return out, indices


def max_pool_backward(gy, indices, input_size):
    """``gy`` routed to ``indices`` in planes of ``input_size``; the number of
    out-of-range indices (skipped) besides."""
    grad_in = np.empty(input_size, dtype=gy.dtype)  # each plane zeroed by the kernel
    planes, n_out = input_size[0] * input_size[1], math.prod(gy.shape[2:])
    bad = _config.pool_kernels.max_pool_backward(
        gy.reshape(planes, n_out), indices.reshape(planes, n_out),
        grad_in.reshape(planes, math.prod(input_size[2:])),
        _plan.threads_for(grad_in.size, "pool"))
    return grad_in, bad


def avg_pool_forward(x, geo, count_include_pad):
    """Average pooling of ``x`` for geometry ``geo``."""
    out = np.empty(geo.out_shape(x.shape[:2]), dtype=x.dtype)
    plan = _plan.pool_plan("avg_pool", geo, x.dtype.itemsize, x.size)
    _config.pool_kernels.avg_pool2d_forward(
        _planes(x, geo.in_size), _planes(out, geo.out_size), geo.kernel_args(),
        bool(count_include_pad), plan.path, plan.n_threads)
    return out


def avg_pool_backward(gy, input_size, geo, count_include_pad):
    """The input gradient of average pooling ``geo`` for output gradient ``gy``."""
    grad_in = np.empty(input_size, dtype=gy.dtype)  # each plane zeroed by the kernel
    plan = _plan.pool_plan("avg_pool_grad", geo, gy.dtype.itemsize, grad_in.size)
    _config.pool_kernels.avg_pool2d_backward(
        _planes(gy, geo.out_size), _planes(grad_in, geo.in_size), geo.kernel_args(),
        bool(count_include_pad), plan.path, plan.n_threads)
    return grad_in


# -- batch normalisation ----------------------------------------------------------
# The kernels see (N, C, S), S the product of the spatial sizes. They are
# memory-bound like pooling and share its grain. With S == 1 ((N, C) input) a
# task is a block of adjacent channels (columns), as many as spread the
# channels over the threads, at most the kernel's 64; otherwise one channel.


def _nc_s(a):
    """View C-contiguous (N, C, *spatial) as (N, C, S)."""
    return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def _norm_task(x):
    """(channels per task, threads) for a batch-norm kernel on ``x``."""
    n_threads = _plan.threads_for(x.size, "pool")
    if math.prod(x.shape[2:]) != 1:
        return 1, n_threads
    return min(64, -(-x.shape[1] // n_threads)), n_threads


def batch_norm_train_forward(x, weight, bias, eps):
    """Batch norm of ``x`` (N*S >= 1) with its batch statistics: (output,
    batch mean, biased batch variance), the statistics float64 (C,)."""
    out = np.empty_like(x)
    mean = np.empty(x.shape[1])
    var = np.empty(x.shape[1])
    block, n_threads = _norm_task(x)
    _config.norm_kernels.batch_norm_train_forward(
        _nc_s(x), _bias_or_empty(weight, x.dtype), _bias_or_empty(bias, x.dtype), eps,
        _nc_s(out), mean, var, block, n_threads)
    return out, mean, var


def batch_norm_apply(x, scale, shift):
    """``x * scale[c] + shift[c]`` with float64 (C,) ``scale`` and ``shift``."""
    out = np.empty_like(x)
    block, n_threads = _norm_task(x)
    _config.norm_kernels.batch_norm_apply(_nc_s(x), scale, shift, _nc_s(out), block,
                                          n_threads)
    return out


def batch_norm_backward(x, gy, weight, mean, invstd, training, eps):
    """(grad_input, grad_weight, grad_bias) of batch norm, the last two in
    float64. In training the batch statistics are recomputed from ``x`` (pass
    None for ``mean`` and ``invstd``); otherwise ``mean`` and ``invstd`` are
    the running mean and ``1/sqrt(running_var + eps)`` as float64 (C,)."""
    channels = x.shape[1]
    grad_in = np.empty_like(x)
    grad_weight = np.empty(channels)
    grad_bias = np.empty(channels)
    if training:
        mean, invstd = np.empty(channels), np.empty(channels)
    block, n_threads = _norm_task(x)
    _config.norm_kernels.batch_norm_backward(
        _nc_s(x), _nc_s(gy), _bias_or_empty(weight, x.dtype), mean, invstd, training, eps,
        _nc_s(grad_in), grad_weight, grad_bias, block, n_threads)
    return grad_in, grad_weight, grad_bias
