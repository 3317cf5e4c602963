"""Layers and losses for training CNNs in plain NumPy, with PyTorch's names.

Each layer is small, after CS231n's ``layers.py``:

* ``__init__`` checks its hyperparameters and draws its parameters from an
  explicit ``numpy.random.Generator`` (PyTorch's default initialisation);
* ``forward(x)`` (or ``layer(x)``) returns ``y`` and caches exactly what
  ``backward`` needs;
* ``backward(grad_out)`` returns the gradient with respect to the input and
  *adds* the parameter gradients into each :class:`Parameter`'s ``grad``.

Convolution and pooling go through ``fastconv._backend.ops()`` when called,
so ``with fastconv.use_backend("numpy"):`` runs the same network on the
pure-NumPy reference. No layer loops over pixels or samples in Python.

Conventions and the few places where this differs from ``torch.nn``:

* A layer with parameters computes in its parameters' dtype (float32 by
  default, or float64): inputs and upstream gradients of another real dtype
  are cast to it, so a float32 network fed float64 or integer images stays
  float32. Layers without parameters keep their input's dtype.
* The cache is kept after ``backward``: calling ``backward`` again with the
  same ``grad_out`` adds the same gradients again. ``backward`` before any
  ``forward`` raises ``RuntimeError``.
* ``state_dict()`` returns copies (PyTorch returns views), so a saved state
  does not change when training continues; ``load_state_dict`` copies into
  the existing arrays, so optimisers keep working on the same ``Parameter``.
* Every bad constructor argument raises ``ValueError`` ("Expected ..., got ...").

Example
-------
>>> import numpy as np
>>> from fastconv import nn
>>> rng = np.random.default_rng(0)
>>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, rng=rng), nn.ReLU(),
...                       nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 2, rng=rng))
>>> x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
>>> loss = nn.CrossEntropyLoss()
>>> value = loss(model(x), np.array([0, 1, 0, 1, 1]))
>>> model.backward(loss.backward()).shape
(5, 1, 8, 8)
>>> sorted(model.state_dict())
['0.bias', '0.weight', '4.bias', '4.weight']
"""

import math
import numbers
from typing import NamedTuple

import numpy as np

from . import _backend, functional
from ._launch import PackedWeight
from ._validation import conv_geometry, conv_transpose_geometry, ntuple, pool_geometry

__all__ = [
    "Parameter",
    "IncompatibleKeys",
    "Module",
    "Conv1d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "MaxPool1d",
    "MaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "Flatten",
    "Dropout",
    "Linear",
    "Sequential",
    "CrossEntropyLoss",
    "MSELoss",
]


# -- argument checks ----------------------------------------------------------


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"Expected {name} to be a positive int, got {value!r}")
    return int(value)


def _real(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"Expected {name} to be a real number, got {value!r}")
    return float(value)


def _bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"Expected {name} to be a bool, got {value!r}")
    return bool(value)


def _as_valueerror(check, *args, **kwargs):
    """Run one of ``_validation``'s checks, reporting a bad type as ValueError too."""
    try:
        return check(*args, **kwargs)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _ints(value, nd, name, minimum=1):
    """An int or a tuple of ``nd`` ints, each >= ``minimum``, as a tuple."""
    return _as_valueerror(ntuple, value, nd, name, minimum=minimum)


def _param_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.float32, np.float64):
        raise ValueError(f"Expected dtype float32 or float64, got {dtype!r}")
    return dt


def _cast(a, dtype):
    """``a`` as an array of ``dtype`` if it is real, else unchanged (the op rejects it)."""
    a = np.asarray(a)
    return a.astype(dtype, copy=False) if a.dtype.kind in "biuf" else a


def _check_grad_shape(grad_out, shape, layer):
    if np.shape(grad_out) != tuple(shape):
        raise ValueError(
            f"Expected grad_out of shape {tuple(shape)} (the output of {layer!r}), "
            f"got {np.shape(grad_out)}"
        )


# -- parameters and the module base -------------------------------------------


class Parameter:
    """A trainable array: ``data`` and its gradient ``grad`` (same shape and dtype).

    Layers *add* into ``grad`` in ``backward``; optimisers update ``data`` in
    place and ``zero_grad`` zeroes ``grad`` in place, so the arrays a
    ``Parameter`` holds never change identity.

    Parameters
    ----------
    data : array_like
        The initial value; ``grad`` starts as zeros of the same shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> p = nn.Parameter(np.zeros((2, 3), np.float32))
    >>> p
    Parameter(shape=(2, 3), dtype=float32)
    >>> p.grad += 1.0                # what a layer's backward does
    >>> float(p.grad.sum())
    6.0
    """

    def __init__(self, data):
        self.data = np.asarray(data)
        self.grad = np.zeros_like(self.data)

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def _kaiming_uniform(shape, rng, dtype):
    """PyTorch's default ``kaiming_uniform_(w, a=sqrt(5))`` and bias init.

    With ``fan_in = shape[1] * prod(shape[2:])`` (what ``torch.nn.init``
    computes for Linear ``(out, in)``, Conv ``(C_out, C_in/g, k...)`` and
    ConvTranspose ``(C_in, C_out/g, k...)`` weights alike), the gain
    ``sqrt(2 / (1 + a^2)) = sqrt(1/3)`` gives the weight bound
    ``gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in)``; the bias bound is the same.
    Returns ``(weight, bias_bound)``.
    """
    fan_in = shape[1] * math.prod(shape[2:])
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(dtype), bound


class _KeyLists(NamedTuple):
    missing_keys: list
    unexpected_keys: list


class IncompatibleKeys(_KeyLists):
    """What ``load_state_dict(..., strict=False)`` did not load.

    A named pair ``(missing_keys, unexpected_keys)``, as PyTorch's
    ``_IncompatibleKeys``, with one more attribute: ``mismatched_keys``, the
    keys that both sides have with different shapes, which ``strict=False``
    skips (PyTorch raises for them even then).

    Examples
    --------
    >>> from fastconv.nn import IncompatibleKeys
    >>> missing, unexpected = IncompatibleKeys(["a"], [], ["b"])
    >>> missing, IncompatibleKeys(["a"], [], ["b"]).mismatched_keys
    (['a'], ['b'])
    """

    def __new__(cls, missing_keys, unexpected_keys, mismatched_keys=()):
        self = super().__new__(cls, list(missing_keys), list(unexpected_keys))
        self.mismatched_keys = list(mismatched_keys)
        return self

    def __repr__(self):
        return (f"IncompatibleKeys(missing_keys={self.missing_keys}, unexpected_keys="
                f"{self.unexpected_keys}, mismatched_keys={self.mismatched_keys})")


class Module:
    """Base of every layer and loss: parameters, buffers, train/eval mode, state dict.

    Parameters are the :class:`Parameter` attributes of a module, in the order
    they were assigned, followed by those of its sub-module attributes under
    ``"<attribute>.<name>"`` (``Sequential`` names its layers ``"0"``, ``"1"``, ...).
    Buffers are the ndarray attributes named in the class attribute
    ``_buffer_names`` (BatchNorm's ``running_mean``, ``running_var`` and
    ``num_batches_tracked``; a buffer set to None is absent): state that is
    saved and loaded but not trained, so not in :meth:`parameters`.

    A subclass implements ``forward`` (caching what its gradient needs) and
    ``backward(grad_out)`` (returning the input gradient and adding the parameter
    gradients into each ``Parameter.grad``).

    Examples
    --------
    A layer of one's own: ``y = scale * x``, with a trainable scale.

    >>> import numpy as np
    >>> from fastconv import nn
    >>> class Scale(nn.Module):
    ...     def __init__(self):
    ...         self.scale = nn.Parameter(np.ones(1))
    ...     def forward(self, x):
    ...         self._cache = x
    ...         return self.scale.data * x
    ...     def backward(self, grad_out):
    ...         x = self._saved()
    ...         self.scale.grad += np.sum(grad_out * x)
    ...         return self.scale.data * grad_out
    >>> layer = Scale()
    >>> y = layer(np.array([1., 2., 3.]))
    >>> layer.backward(np.ones(3))
    array([1., 1., 1.])
    >>> layer.scale.grad, sorted(layer.state_dict())
    (array([6.]), ['scale'])
    """

    training = True
    _cache = None
    _buffer_names = ()

    def __call__(self, *args):
        return self.forward(*args)

    def forward(self, x):
        """The layer's output for ``x``; caches what :meth:`backward` needs.
        """
        raise NotImplementedError

    def backward(self, grad_out):
        """The gradient with respect to the input of the last :meth:`forward`, given
        the gradient ``grad_out`` of its output; adds the parameter gradients into
        each ``Parameter.grad``.
        """
        raise NotImplementedError

    def _saved(self):
        """What ``forward`` cached, or the error for a backward that came first."""
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before forward()"
            )
        return self._cache

    # -- parameters and buffers

    def _children(self):
        return [(name, v) for name, v in vars(self).items() if isinstance(v, Module)]

    def named_parameters(self):
        """``[(name, Parameter)]``, names as in :meth:`state_dict`."""
        out = [(name, v) for name, v in vars(self).items() if isinstance(v, Parameter)]
        for prefix, child in self._children():
            out += [(f"{prefix}.{name}", p) for name, p in child.named_parameters()]
        return out

    def parameters(self):
        """The :class:`Parameter` objects, in the order of :meth:`named_parameters`.
        """
        return [p for _, p in self.named_parameters()]

    def _own_buffers(self):
        return [(name, getattr(self, name)) for name in self._buffer_names
                if getattr(self, name, None) is not None]

    def named_buffers(self):
        """``[(name, ndarray)]`` of the buffers here and in sub-modules, names as
        in :meth:`state_dict` (``"1.running_mean"``); the arrays themselves."""
        out = self._own_buffers()
        for prefix, child in self._children():
            out += [(f"{prefix}.{name}", b) for name, b in child.named_buffers()]
        return out

    def zero_grad(self):
        """Set every parameter's ``grad`` to zero, in place.
        """
        for p in self.parameters():
            p.grad[...] = 0

    # -- mode

    def train(self, mode=True):
        """Set training mode here and in every sub-module (it changes
        ``Dropout`` and ``BatchNorm``); returns ``self``."""
        self.training = bool(mode)
        for _, child in self._children():
            child.train(mode)
        return self

    def eval(self):
        """Set evaluation mode (``train(False)``) here and in every sub-module;
        returns the module."""
        return self.train(False)

    # -- state

    def _state_arrays(self, prefix=""):
        """``[(name, array)]`` in PyTorch's order: each module's parameters,
        then its buffers, then its sub-modules'."""
        own = [(name, v.data) for name, v in vars(self).items() if isinstance(v, Parameter)]
        out = [(prefix + name, a) for name, a in own + self._own_buffers()]
        for name, child in self._children():
            out += child._state_arrays(f"{prefix}{name}.")
        return out

    def state_dict(self):
        """``{name: copy}`` of every parameter and buffer, under PyTorch's names
        and in its order (``"0.weight"``, ``"1.running_mean"``,
        ``"1.num_batches_tracked"``, ...); round-trips through
        ``numpy.savez``/``numpy.load``."""
        return {name: a.copy() for name, a in self._state_arrays()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy ``state_dict`` (a dict or an ``NpzFile``) into the parameters
        and buffers, in place (values are cast to each array's dtype).

        With ``strict=True`` the keys must be exactly those of
        :meth:`state_dict` and every shape must match; otherwise a
        ``ValueError`` names the missing keys, the unexpected keys and the
        shape mismatches, and nothing is copied.

        With ``strict=False`` every key present on both sides with the same
        shape is copied; the rest is returned as an :class:`IncompatibleKeys`
        that unpacks to ``(missing_keys, unexpected_keys)`` as in PyTorch, and
        whose ``mismatched_keys`` names the keys skipped for their shape
        (where PyTorch raises). With ``strict=True`` it returns an empty one.

        A value of a non-real dtype (complex, say) raises ``ValueError`` in
        both modes, before anything is copied.
        """
        targets = dict(self._state_arrays())
        state = {key: np.asarray(state_dict[key]) for key in state_dict.keys()}
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        mismatched = [k for k in targets if k in state and state[k].shape != targets[k].shape]
        if strict and (missing or unexpected or mismatched):
            problems = [f"missing keys {missing}", f"unexpected keys {unexpected}"]
            problems += [f"Expected {k!r} of shape {targets[k].shape}, got {state[k].shape}"
                         for k in mismatched]
            raise ValueError(
                f"Expected state_dict keys {list(targets)}; got " + "; ".join(problems)
            )
        load = [k for k in targets if k in state and k not in mismatched]
        for name in load:
            if state[name].dtype.kind not in "biuf":
                raise ValueError(
                    f"Expected {name!r} of a real dtype, got {state[name].dtype}"
                )
        for name in load:
            np.copyto(targets[name], state[name], casting="unsafe")
        return IncompatibleKeys(missing, unexpected, mismatched)

    def extra_repr(self):
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


# -- convolution --------------------------------------------------------------


class _ConvNd(Module):
    """Shared body of the four convolution layers.

    ``y = conv(x, W) + b`` with the op named ``_op`` (``conv2d``,
    ``conv_transpose1d``, ...); ``backward`` computes::

        grad_in = ops().grad.<_op>_input(x.shape, W, dy, ...)
        W.grad += ops().grad.<_op>_weight(x, W.shape, dy, ...)
        b.grad += ops().grad.conv_bias(dy)             # dy summed over (N, spatial)
    """

    _nd = 2
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 groups, bias, output_padding, rng, dtype):
        nd = self._nd
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.groups = _positive_int(groups, "groups")
        for name, c in (("in_channels", self.in_channels), ("out_channels", self.out_channels)):
            if c % self.groups:
                raise ValueError(
                    f"Expected {name} divisible by groups, got {name}={c} and groups={self.groups}"
                )
        self.kernel_size = _ints(kernel_size, nd, "kernel_size")
        self.stride = _ints(stride, nd, "stride")
        self.dilation = _ints(dilation, nd, "dilation")
        if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
            padding = (int(padding),) * nd
        elif isinstance(padding, list):
            padding = tuple(tuple(p) if isinstance(p, list) else p for p in padding)
        self.padding = padding
        self.dtype = _param_dtype(dtype)
        use_bias = _bool(bias, "bias")
        rng = np.random.default_rng(rng)
        if self._transposed:
            self.output_padding = _ints(output_padding, nd, "output_padding", minimum=0)
            shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        else:
            shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self._check_geometry(shape)
        w, bound = _kaiming_uniform(shape, rng, self.dtype)
        self.weight = Parameter(w)
        self.bias = (Parameter(rng.uniform(-bound, bound, self.out_channels).astype(self.dtype))
                     if use_bias else None)

    def _op_args(self):
        args = dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)
        if self._transposed:
            args["output_padding"] = self.output_padding
        return args

    def _check_geometry(self, w_shape):
        """Let the ops' own validation judge padding (and its mix with stride,
        dilation and output_padding) now, on an input large enough for any kernel."""
        if self._transposed:
            # (A string padding gets the geometry's own error.)
            pad = 0 if isinstance(self.padding, str) else max(
                _ints(self.padding, self._nd, "padding", minimum=0))
            size = (2 * pad + 1,) * self._nd
            _as_valueerror(conv_transpose_geometry, (1, self.in_channels) + size, w_shape,
                           self._nd, self.stride, self.padding, self.output_padding,
                           self.groups, self.dilation)
        else:
            size = tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size))
            _as_valueerror(conv_geometry, (1, self.in_channels) + size, w_shape, self._nd,
                           self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x):
        x = _cast(x, self.dtype)
        if x.ndim != self._nd + 2 or x.shape[1] != self.in_channels:
            layout = ("L",) if self._nd == 1 else ("H", "W")
            expected = ", ".join(("N", str(self.in_channels)) + layout)
            raise ValueError(
                f"Expected input of shape ({expected}) for {self!r} "
                f"(in_channels={self.in_channels}), got shape {x.shape}"
            )
        bias = None if self.bias is None else self.bias.data
        y = getattr(_backend.ops(), self._op)(x, self.weight.data, bias, **self._op_args())
        self._cache = (x,)
        return y

    def backward(self, grad_out):
        (x,) = self._saved()
        gy = _cast(grad_out, self.dtype)
        grad = _backend.ops().grad
        w = self.weight.data
        grad_in = getattr(grad, self._op + "_input")(x.shape, w, gy, **self._op_args())
        self.weight.grad += getattr(grad, self._op + "_weight")(x, w.shape, gy,
                                                                **self._op_args())
        if self.bias is not None:
            self.bias.grad += grad.conv_bias(gy)
        return grad_in

    def extra_repr(self):
        nd = self._nd
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * nd:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * nd:
            s += f", dilation={self.dilation}"
        if self._transposed and self.output_padding != (0,) * nd:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv1d(_ConvNd):
    """Conv1d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True, rng=None, dtype=np.float32)

    ``y = conv1d(x, W, b)``: weight ``(C_out, C_in/groups, k)``, bias ``(C_out,)``,
    both uniform in ``±1/sqrt((C_in/groups)*k)``. ``padding`` takes every form
    :func:`fastconv.conv1d` does: int, ``(left, right)``, ``'same'``, ``'valid'``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or tuple of int
    padding : int, tuple, 'valid' or 'same'
        Every form the functional op takes: int, ``(left, right)``, ``'same'``, ``'valid'``.
    groups : int
    bias : bool
        Whether to add a learnable bias.
    rng : numpy.random.Generator, optional
        Draws the initial weight and bias (a fresh ``default_rng()`` if omitted).
    dtype : float32 or float64
        The dtype of the parameters, and of the computation.

    Shape
    -----
    ``(N, C_in, L) -> (N, C_out, L_out)``,
    ``L_out = floor((L + pad_left + pad_right - dilation*(k-1) - 1) / stride) + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> layer = nn.Conv1d(1, 4, 5, stride=2, padding=1, rng=np.random.default_rng(0))
    >>> layer
    Conv1d(1, 4, kernel_size=(5,), stride=(2,), padding=(1,))
    >>> layer(np.zeros((8, 1, 40))).shape           # floor((40 + 2 - 5) / 2) + 1 = 19
    (8, 4, 19)
    """

    _nd, _op = 1, "conv1d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, rng=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, 0, rng, dtype)


class Conv2d(_ConvNd):
    """Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True, rng=None, dtype=np.float32)

    ``y = conv2d(x, W, b)``: weight ``(C_out, C_in/groups, kH, kW)``, bias
    ``(C_out,)``, both uniform in ``±1/sqrt((C_in/groups)*kH*kW)``. ``padding``
    takes every form :func:`fastconv.conv2d` does, asymmetric
    ``((top, bottom), (left, right))`` included.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or tuple of int
    padding : int, tuple, 'valid' or 'same'
        Every form the functional op takes, asymmetric ``((top, bottom), (left, right))`` included.
    groups : int
    bias : bool
        Whether to add a learnable bias.
    rng : numpy.random.Generator, optional
        Draws the initial weight and bias (a fresh ``default_rng()`` if omitted).
    dtype : float32 or float64
        The dtype of the parameters, and of the computation.

    Shape
    -----
    ``(N, C_in, H, W) -> (N, C_out, H_out, W_out)``,
    ``H_out = floor((H + pad_top + pad_bottom - d_h*(kH-1) - 1) / s_h) + 1``
    (likewise ``W_out``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> layer = nn.Conv2d(1, 16, 3, padding=1, rng=np.random.default_rng(0))
    >>> layer
    Conv2d(1, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
    >>> y = layer(np.zeros((2, 1, 8, 8), np.float32))
    >>> y.shape, layer.backward(np.ones_like(y)).shape, layer.weight.grad.shape
    ((2, 16, 8, 8), (2, 1, 8, 8), (16, 1, 3, 3))
    """

    _nd, _op = 2, "conv2d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, rng=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, 0, rng, dtype)


class ConvTranspose1d(_ConvNd):
    """ConvTranspose1d(in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True, dilation=1, rng=None, dtype=np.float32)

    ``y = conv_transpose1d(x, W, b)``: weight ``(C_in, C_out/groups, k)``; as in
    PyTorch, weight and bias are uniform in ``±1/sqrt((C_out/groups)*k)``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, output_padding, dilation : int or tuple of int
    groups : int
    bias : bool
    rng : numpy.random.Generator, optional
    dtype : float32 or float64

    Shape
    -----
    ``(N, C_in, L) -> (N, C_out, L_out)``,
    ``L_out = (L - 1)*stride - 2*padding + dilation*(k-1) + output_padding + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> layer = nn.ConvTranspose1d(8, 4, 2, stride=2)
    >>> layer
    ConvTranspose1d(8, 4, kernel_size=(2,), stride=(2,))
    >>> layer(np.zeros((3, 8, 10))).shape             # (10 - 1)*2 + 1*(2 - 1) + 1 = 20
    (3, 4, 20)
    """

    _nd, _op, _transposed = 1, "conv_transpose1d", True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, rng=None,
                 dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, output_padding, rng, dtype)


class ConvTranspose2d(_ConvNd):
    """ConvTranspose2d(in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True, dilation=1, rng=None, dtype=np.float32)

    ``y = conv_transpose2d(x, W, b)``: weight ``(C_in, C_out/groups, kH, kW)``;
    weight and bias uniform in ``±1/sqrt((C_out/groups)*kH*kW)``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, output_padding, dilation : int or tuple of int
    groups : int
    bias : bool
    rng : numpy.random.Generator, optional
    dtype : float32 or float64

    Shape
    -----
    ``(N, C_in, H, W) -> (N, C_out, H_out, W_out)``,
    ``H_out = (H - 1)*s_h - 2*p_h + d_h*(kH-1) + output_padding_h + 1``
    (likewise ``W_out``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> layer = nn.ConvTranspose2d(8, 4, 2, stride=2)      # upsampling by 2
    >>> layer(np.zeros((1, 8, 16, 16))).shape
    (1, 4, 32, 32)
    """

    _nd, _op, _transposed = 2, "conv_transpose2d", True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, rng=None,
                 dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, output_padding, rng, dtype)


# -- batch normalisation ---------------------------------------------------------


class _BatchNorm(Module):
    """Shared body of BatchNorm1d and BatchNorm2d, after ``torch.nn``'s ``_BatchNorm``.

    ``forward`` calls ``ops().batch_norm`` with the batch statistics in
    training mode or when ``track_running_stats=False``, and with the running
    statistics in eval mode; in training with tracked statistics it first
    adds 1 to ``num_batches_tracked`` and updates the running statistics with
    ``momentum`` (or, with ``momentum=None``, with ``1/num_batches_tracked``:
    the cumulative average). ``backward`` calls ``ops().grad.batch_norm`` for
    the same statistics (it reads the running statistics as they are then).
    """

    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    _layouts = ()  # the accepted input layouts, e.g. ("(N, C)", "(N, C, L)")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32):
        self.num_features = _positive_int(num_features, "num_features")
        self.eps = _real(eps, "eps")
        if not (self.eps >= 0 and math.isfinite(self.eps)):
            raise ValueError(f"Expected eps to be a finite number >= 0, got {eps!r}")
        self.momentum = None if momentum is None else _real(momentum, "momentum")
        self.affine = _bool(affine, "affine")
        self.track_running_stats = _bool(track_running_stats, "track_running_stats")
        self.dtype = _param_dtype(dtype)
        c = self.num_features
        self.weight = Parameter(np.ones(c, self.dtype)) if self.affine else None
        self.bias = Parameter(np.zeros(c, self.dtype)) if self.affine else None
        if self.track_running_stats:
            self.running_mean = np.zeros(c, self.dtype)
            self.running_var = np.ones(c, self.dtype)
            self.num_batches_tracked = np.zeros((), np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self):
        """Running mean 0, running variance 1, ``num_batches_tracked`` 0 (in place)."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def _check_input(self, x):
        c = self.num_features
        if x.ndim not in self._ndims or x.shape[1] != c:
            expected = " or ".join(layout.replace("C", str(c)) for layout in self._layouts)
            raise ValueError(
                f"Expected input of shape {expected} for {self!r} (num_features={c}), "
                f"got shape {x.shape}"
            )

    def forward(self, x):
        x = _cast(x, self.dtype)
        self._check_input(x)
        batch_stats = self.training or not self.track_running_stats
        factor = 0.0
        if self.training and self.track_running_stats:
            if x.shape[0] and x.size // x.shape[1] == 1:  # the op raises; count nothing
                return _backend.ops().batch_norm(x, None, None, training=True)
            self.num_batches_tracked += 1
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else self.momentum)
        stats = ((self.running_mean, self.running_var)
                 if not self.training or self.track_running_stats else (None, None))
        w = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        y = _backend.ops().batch_norm(x, *stats, w, b, training=batch_stats, momentum=factor,
                                      eps=self.eps)
        self._cache = (x, batch_stats)
        return y

    def backward(self, grad_out):
        x, batch_stats = self._saved()
        gy = _cast(grad_out, self.dtype)
        _check_grad_shape(gy, x.shape, self)
        w = None if self.weight is None else self.weight.data
        stats = (None, None) if batch_stats else (self.running_mean, self.running_var)
        grad_in, grad_w, grad_b = _backend.ops().grad.batch_norm(
            x, gy, w, *stats, training=batch_stats, eps=self.eps)
        if self.affine:
            self.weight.grad += grad_w
            self.bias.grad += grad_b
        return grad_in

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, dtype=np.float32)

    Batch normalisation over ``(N, C)`` or ``(N, C, L)`` input, as
    ``torch.nn.BatchNorm1d``, number for number::

        y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]

    In training mode (or always, with ``track_running_stats=False``) the
    statistics are the batch's, over N (and L), the variance biased; the
    running statistics (buffers, in :meth:`state_dict`, not in
    :meth:`parameters`) are updated with the *unbiased* variance::

        running = (1 - momentum) * running + momentum * batch_statistic

    with ``momentum=None`` meaning the cumulative average
    (``momentum = 1/num_batches_tracked``). In eval mode the running
    statistics are used. ``weight`` starts at 1 and ``bias`` at 0 (with
    ``affine=False`` there are none). See :func:`fastconv.batch_norm` and
    :func:`fastconv.grad.batch_norm`.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float >= 0
        Added to the variance.
    momentum : float or None
        The weight of each batch in the running statistics; None: cumulative.
    affine : bool
        Whether there are a learnable ``weight`` and ``bias``.
    track_running_stats : bool
        Whether there are running statistics (buffers ``running_mean``,
        ``running_var``, ``num_batches_tracked``); without them the batch
        statistics are used in eval mode too.
    dtype : float32 or float64
        Of the parameters, the buffers and the computation.

    Shape
    -----
    ``(N, C) -> (N, C)`` or ``(N, C, L) -> (N, C, L)``; in training
    ``N`` (times ``L``) must be more than 1.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> bn = nn.BatchNorm1d(2)
    >>> y = bn(np.array([[1., 2.], [3., 6.]]))
    >>> y.round(4), bn.running_mean, bn.running_var
    (array([[-1., -1.],
           [ 1.,  1.]], dtype=float32), array([0.2, 0.4], dtype=float32), array([1.1, 1.7], dtype=float32))
    >>> list(bn.state_dict())
    ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
    """

    _ndims = (2, 3)
    _layouts = ("(N, C)", "(N, C, L)")


class BatchNorm2d(_BatchNorm):
    """BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, dtype=np.float32)

    Batch normalisation over ``(N, C, H, W)`` input, as
    ``torch.nn.BatchNorm2d``: the statistics of channel ``c`` are taken over
    N, H and W. Everything else as :class:`BatchNorm1d`.

    Shape
    -----
    ``(N, C, H, W) -> (N, C, H, W)``; in training ``N*H*W`` must be more than 1.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> bn = nn.BatchNorm2d(3)
    >>> x = np.random.default_rng(0).normal(5, 2, (4, 3, 8, 8))
    >>> y = bn(x)
    >>> bool(abs(y.mean()) < 1e-5), bool(abs(y.std() - 1) < 1e-3)
    (True, True)
    >>> bn.eval()(x).shape
    (4, 3, 8, 8)
    """

    _ndims = (4,)
    _layouts = ("(N, C, H, W)",)


# -- pooling ------------------------------------------------------------------


class _PoolNd(Module):
    _nd = 2

    def __init__(self, kernel_size, stride, padding, dilation, ceil_mode):
        nd = self._nd
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = _bool(ceil_mode, "ceil_mode")
        # pool_geometry checks every argument; an input of the padded window
        # size is large enough for any legal combination.
        k = _ints(kernel_size, nd, "kernel_size")
        d = _ints(dilation, nd, "dilation")
        p = _ints(padding, nd, "padding", minimum=0)
        size = tuple(di * (ki - 1) + 1 + 2 * pi for ki, di, pi in zip(k, d, p))
        _as_valueerror(pool_geometry, size, nd, kernel_size, stride, padding, dilation,
                       ceil_mode)


class _MaxPoolNd(_PoolNd):
    """``y = max over each window``; ``backward`` routes ``dy`` to the cached
    argmax indices: ``dx = ops().grad.max_pool{nd}d(dy, indices, x.shape)``."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, x):
        op = getattr(_backend.ops(), f"max_pool{self._nd}d")
        y, indices = op(x, self.kernel_size, self.stride, self.padding, self.dilation,
                        self.ceil_mode, return_indices=True)
        self._cache = (indices, np.shape(x))
        return y

    def backward(self, grad_out):
        indices, shape = self._saved()
        _check_grad_shape(grad_out, indices.shape, self)
        return getattr(_backend.ops().grad, f"max_pool{self._nd}d")(grad_out, indices, shape)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """MaxPool1d(kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False)

    Max pooling; ``backward`` routes the gradient to the cached argmax indices
    (the switches). Ties, NaN and ``ceil_mode`` as :func:`fastconv.max_pool1d`.

    Parameters
    ----------
    kernel_size : int or tuple of int
    stride : int or tuple of int, optional
        Defaults to ``kernel_size``.
    padding : int or tuple of int
        At most half the kernel; the input is padded with ``-inf``.
    dilation : int or tuple of int
    ceil_mode : bool
        Round the output size up (a last window starting in the padding is dropped).

    Shape
    -----
    ``(N, C, L) -> (N, C, L_out)``,
    ``L_out = floor_or_ceil((L + 2*padding - dilation*(k-1) - 1) / stride) + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> pool = nn.MaxPool1d(2)
    >>> pool(np.array([[[1., 3., 2., 5.]]]))
    array([[[3., 5.]]])
    >>> pool.backward(np.array([[[10., 20.]]]))
    array([[[ 0., 10.,  0., 20.]]])
    """

    _nd = 1


class MaxPool2d(_MaxPoolNd):
    """MaxPool2d(kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False)

    Max pooling; ``backward`` routes the gradient to the cached argmax indices
    (the switches). Ties, NaN and ``ceil_mode`` as :func:`fastconv.max_pool2d`.

    Parameters
    ----------
    kernel_size : int or tuple of int
    stride : int or tuple of int, optional
        Defaults to ``kernel_size``.
    padding : int or tuple of int
        At most half the kernel; the input is padded with ``-inf``.
    dilation : int or tuple of int
    ceil_mode : bool
        Round the output size up (a last window starting in the padding is dropped).

    Shape
    -----
    ``(N, C, H, W) -> (N, C, H_out, W_out)``,
    ``H_out = floor_or_ceil((H + 2*p_h - d_h*(kH-1) - 1) / s_h) + 1`` (likewise ``W_out``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> pool = nn.MaxPool2d(3, stride=2, padding=1)
    >>> pool
    MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)
    >>> pool(np.zeros((1, 64, 112, 112))).shape
    (1, 64, 56, 56)
    """

    _nd = 2


class _AvgPoolNd(_PoolNd):
    """``y = window sum / divisor``; ``backward`` spreads ``dy / divisor`` over
    each window: ``dx = ops().grad.avg_pool{nd}d(dy, x.shape, ...)``."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = _bool(count_include_pad, "count_include_pad")

    def _op_args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode,
                self.count_include_pad)

    def forward(self, x):
        y = getattr(_backend.ops(), f"avg_pool{self._nd}d")(x, *self._op_args())
        self._cache = (np.shape(x),)
        return y

    def backward(self, grad_out):
        (shape,) = self._saved()
        return getattr(_backend.ops().grad, f"avg_pool{self._nd}d")(grad_out, shape,
                                                                    *self._op_args())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """AvgPool1d(kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)

    Average pooling; ``backward`` spreads each output's gradient over its window.
    The divisor rule is :func:`fastconv.avg_pool1d`'s.

    Parameters
    ----------
    kernel_size : int or tuple of int
    stride : int or tuple of int, optional
        Defaults to ``kernel_size``.
    padding : int or tuple of int
        At most half the kernel; zeros.
    ceil_mode : bool
        Round the output size up (a last window starting in the padding is dropped).
    count_include_pad : bool
        Whether the padding zeros count in the divisor.

    Shape
    -----
    ``(N, C, L) -> (N, C, L_out)``, ``L_out = floor_or_ceil((L + 2*padding - k) / stride) + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> pool = nn.AvgPool1d(2)
    >>> pool(np.array([[[1., 3., 2., 6.]]]))
    array([[[2., 4.]]])
    >>> pool.backward(np.array([[[1., 2.]]]))
    array([[[0.5, 0.5, 1. , 1. ]]])
    """

    _nd = 1


class AvgPool2d(_AvgPoolNd):
    """AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)

    Average pooling; ``backward`` spreads each output's gradient over its window.
    The divisor rule is :func:`fastconv.avg_pool2d`'s.

    Parameters
    ----------
    kernel_size : int or tuple of int
    stride : int or tuple of int, optional
        Defaults to ``kernel_size``.
    padding : int or tuple of int
        At most half the kernel; zeros.
    ceil_mode : bool
        Round the output size up (a last window starting in the padding is dropped).
    count_include_pad : bool
        Whether the padding zeros count in the divisor.

    Shape
    -----
    ``(N, C, H, W) -> (N, C, H_out, W_out)``,
    ``H_out = floor_or_ceil((H + 2*p_h - kH) / s_h) + 1`` (likewise ``W_out``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> nn.AvgPool2d(2)(np.ones((4, 3, 8, 8))).shape
    (4, 3, 4, 4)
    """

    _nd = 2


# -- element-wise layers and reshaping ----------------------------------------


class ReLU(Module):
    """``y = max(x, 0)``; ``dx = dy * (x > 0)`` (the gradient at 0 is 0).

    Shape
    -----
    Any shape; the output has the input's.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> relu = nn.ReLU()
    >>> relu(np.array([[-1., 0., 2.]])), relu.backward(np.ones((1, 3)))
    (array([[0., 0., 2.]]), array([[0., 0., 1.]]))
    """

    def forward(self, x):
        x = np.asarray(x)
        self._cache = (x > 0,)
        return np.maximum(x, 0)

    def backward(self, grad_out):
        (mask,) = self._saved()
        _check_grad_shape(grad_out, mask.shape, self)
        return grad_out * mask


class LeakyReLU(Module):
    """``y = x if x > 0 else negative_slope * x``; ``dx = dy`` or ``negative_slope * dy``.

    Parameters
    ----------
    negative_slope : float
        The slope for ``x <= 0`` (default 0.01).

    Shape
    -----
    Any shape; the output has the input's.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> layer = nn.LeakyReLU(0.1)
    >>> layer(np.array([[-1., 0., 2.]])), layer.backward(np.ones((1, 3)))
    (array([[-0.1,  0. ,  2. ]]), array([[0.1, 0.1, 1. ]]))
    """

    def __init__(self, negative_slope=0.01):
        self.negative_slope = _real(negative_slope, "negative_slope")

    def forward(self, x):
        x = np.asarray(x)
        mask = x > 0
        self._cache = (mask,)
        return np.where(mask, x, x * self.negative_slope)

    def backward(self, grad_out):
        (mask,) = self._saved()
        _check_grad_shape(grad_out, mask.shape, self)
        gy = np.asarray(grad_out)
        return np.where(mask, gy, gy * self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Module):
    """``y = tanh(x)``; ``dx = dy * (1 - y^2)`` from the cached output.

    Shape
    -----
    Any shape; the output has the input's.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> layer = nn.Tanh()
    >>> y = layer(np.array([[0., 1.]]))
    >>> np.allclose(layer.backward(np.ones((1, 2))), 1 - np.tanh([[0., 1.]]) ** 2)
    True
    """

    def forward(self, x):
        y = np.tanh(x)
        self._cache = (y,)
        return y

    def backward(self, grad_out):
        (y,) = self._saved()
        _check_grad_shape(grad_out, y.shape, self)
        return grad_out * (1 - y * y)


class Sigmoid(Module):
    """``y = 1 / (1 + exp(-x))``; ``dx = dy * y * (1 - y)`` from the cached output.

    Computed as ``1/(1+e)`` for ``x >= 0`` and ``e/(1+e)`` otherwise, with
    ``e = exp(-|x|)``, so no ``exp`` overflows.

    Shape
    -----
    Any shape; the output has the input's.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> layer = nn.Sigmoid()
    >>> layer(np.array([[0., 1000., -1000.]]))          # no overflow warning
    array([[0.5, 1. , 0. ]])
    >>> layer.backward(np.ones((1, 3)))
    array([[0.25, 0.  , 0.  ]])
    """

    def forward(self, x):
        x = np.asarray(x)
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1, e) / (1 + e)
        self._cache = (y,)
        return y

    def backward(self, grad_out):
        (y,) = self._saved()
        _check_grad_shape(grad_out, y.shape, self)
        return grad_out * (y * (1 - y))


class Flatten(Module):
    """``(N, d1, d2, ...) -> (N, d1*d2*...)``; ``backward`` reshapes back.

    Shape
    -----
    ``(N, d1, d2, ...) -> (N, d1*d2*...)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> layer = nn.Flatten()
    >>> layer(np.zeros((5, 32, 2, 2))).shape, layer.backward(np.zeros((5, 128))).shape
    ((5, 128), (5, 32, 2, 2))
    """

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim < 1:
            raise ValueError(f"Expected input with a batch axis, got shape {x.shape}")
        self._cache = (x.shape,)
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, grad_out):
        (shape,) = self._saved()
        _check_grad_shape(grad_out, (shape[0], math.prod(shape[1:])), self)
        return np.asarray(grad_out).reshape(shape)


class Dropout(Module):
    """Dropout(p=0.5, rng=None): inverted dropout.

    In training mode each element is kept with probability ``1 - p`` (drawn
    from the layer's ``rng``) and scaled by ``1/(1 - p)``, so ``E[y] = x``:
    ``y = x * m``, ``dx = dy * m`` with ``m`` in ``{0, 1/(1-p)}``. In eval mode
    (``layer.eval()``) it is the identity, forward and backward.

    Parameters
    ----------
    p : float in [0, 1)
        The probability of dropping an element.
    rng : numpy.random.Generator, optional
        Draws the masks.

    Shape
    -----
    Any shape; the output has the input's.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> layer = nn.Dropout(0.5, rng=np.random.default_rng(0))
    >>> layer(np.ones((1, 8)))                  # kept elements scaled by 2
    array([[2., 0., 0., 0., 2., 2., 2., 2.]])
    >>> layer.eval()(np.ones((1, 4)))
    array([[1., 1., 1., 1.]])
    """

    def __init__(self, p=0.5, rng=None):
        p = _real(p, "p")
        if not 0 <= p < 1:
            raise ValueError(f"Expected dropout probability p in [0, 1), got {p!r}")
        self.p = p
        self.rng = np.random.default_rng(rng)

    def forward(self, x):
        x = np.asarray(x)
        if not self.training or self.p == 0:
            self._cache = (None,)
            return x
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
        mask = (self.rng.random(x.shape) >= self.p).astype(dtype) / (1 - self.p)
        self._cache = (mask,)
        return x * mask

    def backward(self, grad_out):
        (mask,) = self._saved()
        if mask is None:
            return grad_out
        _check_grad_shape(grad_out, mask.shape, self)
        return grad_out * mask

    def extra_repr(self):
        return f"p={self.p}"


class Linear(Module):
    """Linear(in_features, out_features, bias=True, rng=None, dtype=np.float32)

    ``y = x @ W.T + b`` with ``W`` of shape ``(out, in)``, both uniform in
    ``±1/sqrt(in_features)``. ``backward``: ``dW += dy.T @ x``,
    ``db += dy.sum(0)``, ``dx = dy @ W``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    rng : numpy.random.Generator, optional
    dtype : float32 or float64

    Shape
    -----
    ``(N, in_features) -> (N, out_features)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> layer = nn.Linear(4, 2, rng=np.random.default_rng(0))
    >>> layer
    Linear(in_features=4, out_features=2, bias=True)
    >>> y = layer(np.ones((3, 4)))
    >>> layer.backward(np.ones((3, 2))).shape, layer.weight.grad.shape, layer.bias.grad
    ((3, 4), (2, 4), array([3., 3.], dtype=float32))
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        self.dtype = _param_dtype(dtype)
        use_bias = _bool(bias, "bias")
        rng = np.random.default_rng(rng)
        w, bound = _kaiming_uniform((self.out_features, self.in_features), rng, self.dtype)
        self.weight = Parameter(w)
        self.bias = (Parameter(rng.uniform(-bound, bound, self.out_features).astype(self.dtype))
                     if use_bias else None)

    def forward(self, x):
        x = _cast(x, self.dtype)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Expected input of shape (N, {self.in_features}) for {self!r} "
                f"(in_features={self.in_features}), got shape {x.shape}"
            )
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        self._cache = (x,)
        return y

    def backward(self, grad_out):
        (x,) = self._saved()
        gy = _cast(grad_out, self.dtype)
        _check_grad_shape(gy, (x.shape[0], self.out_features), self)
        self.weight.grad += gy.T @ x
        if self.bias is not None:
            self.bias.grad += gy.sum(axis=0)
        return gy @ self.weight.data

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Sequential(Module):
    """Sequential(``*layers``): ``forward`` chains the layers, ``backward`` runs
    them in reverse and returns the input gradient. Parameters are named
    ``"<index>.<name>"`` (``"0.weight"``, ``"3.bias"``), as in PyTorch.

    Parameters
    ----------
    *layers : Module
        The layers, applied in order.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> model
    Sequential(
      (0): Linear(in_features=4, out_features=3, bias=True)
      (1): ReLU()
      (2): Linear(in_features=3, out_features=2, bias=True)
    )
    >>> y = model(np.ones((5, 4)))
    >>> model.backward(np.ones_like(y)).shape, list(model.state_dict())
    ((5, 4), ['0.weight', '0.bias', '2.weight', '2.bias'])
    """

    def __init__(self, *layers):
        for layer in layers:
            if not isinstance(layer, Module):
                raise TypeError(f"Expected fastconv.nn modules, got {layer!r}")
        self.layers = list(layers)

    def _children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        self._cache = ()  # the layers hold their own caches
        return x

    def backward(self, grad_out):
        self._saved()
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        lines = [f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers)]
        return "Sequential(" + "".join("\n" + line for line in lines) + ("\n)" if lines else ")")


# -- losses -------------------------------------------------------------------


def _float_array(a, name):
    a = np.asarray(a)
    if a.dtype.kind in "biu":
        return a.astype(np.float64)
    if a.dtype.kind != "f":
        raise TypeError(f"Expected {name} of a real dtype, got {a.dtype}")
    return a


class CrossEntropyLoss(Module):
    """``loss(logits, labels) -> float``: mean negative log-likelihood of softmax.

    With ``z = logits - max_c logits`` (rows shifted for stability) and
    ``lse = log sum_c exp(z)``, ``log_softmax = z - lse`` and
    ``loss = -mean_n log_softmax[n, labels[n]]``. ``backward()`` returns
    ``(softmax(logits) - onehot(labels)) / N`` in the logits' dtype, times
    ``grad_output`` (default 1).

    Shape
    -----
    logits ``(N, C)``, integer labels ``(N,)`` in ``[0, C)``; the loss is a float.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> loss_fn = nn.CrossEntropyLoss()
    >>> loss = loss_fn(np.array([[0., 0.], [2., 0.]]), np.array([0, 0]))
    >>> round(loss, 6)                           # (log 2 + log(1 + e^-2)) / 2
    0.410038
    >>> loss_fn.backward()
    array([[-0.25      ,  0.25      ],
           [-0.05960146,  0.05960146]])
    """

    def forward(self, logits, labels):
        logits = _float_array(logits, "logits")
        labels = np.asarray(labels)
        if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
            raise ValueError(f"Expected logits of shape (N, C) with N, C >= 1, got {logits.shape}")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"Expected integer class labels, got dtype {labels.dtype}")
        n, c = logits.shape
        if labels.shape != (n,):
            raise ValueError(
                f"Expected labels of shape ({n},) for logits of shape {logits.shape}, "
                f"got {labels.shape}"
            )
        if labels.min() < 0 or labels.max() >= c:
            raise ValueError(
                f"Expected labels in [0, {c}), got values in [{labels.min()}, {labels.max()}]"
            )
        z = logits - logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
        log_p = z - lse
        self._cache = (np.exp(log_p), labels)
        return -float(log_p[np.arange(n), labels].mean(dtype=np.float64))

    def backward(self, grad_output=1.0):
        p, labels = self._saved()
        n = p.shape[0]
        grad = p.copy()
        grad[np.arange(n), labels] -= 1
        grad *= float(grad_output) / n
        return grad


class MSELoss(Module):
    """``loss(pred, target) -> float = mean((pred - target)^2)``;
    ``backward()`` returns ``2 * (pred - target) / pred.size`` in pred's dtype.

    Shape
    -----
    ``pred`` and ``target`` of the same shape; the loss is a float.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> loss_fn = nn.MSELoss()
    >>> loss_fn(np.array([1., 2.]), np.array([0., 0.]))
    2.5
    >>> loss_fn.backward()
    array([1., 2.])
    """

    def forward(self, pred, target):
        pred = _float_array(pred, "pred")
        target = np.asarray(target)
        if pred.shape != target.shape or pred.size == 0:
            raise ValueError(
                f"Expected non-empty pred and target of the same shape, got "
                f"{pred.shape} and {target.shape}"
            )
        diff = (pred - target).astype(pred.dtype, copy=False)
        self._cache = (diff,)
        return float(np.mean(diff * diff, dtype=np.float64))

    def backward(self, grad_output=1.0):
        (diff,) = self._saved()
        return diff * (2 * float(grad_output) / diff.size)


# -- adaptive pooling, identity and residual blocks -----------------------------
# (Kept in their own section, with their own __all__ entries.)

__all__ += ["AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "Identity", "Residual"]


class _AdaptiveAvgPoolNd(Module):
    """``y = the mean of each of PyTorch's adaptive bins``; ``backward`` spreads
    ``dy / bin size`` over each bin: ``ops().grad.adaptive_avg_pool{nd}d``."""

    _nd = 2

    def __init__(self, output_size):
        from ._preprocess import adaptive_output_size

        adaptive_output_size(output_size, self._nd)  # checks it now
        self.output_size = output_size

    def forward(self, x):
        y = getattr(_backend.ops(), f"adaptive_avg_pool{self._nd}d")(x, self.output_size)
        self._cache = (np.shape(x),)
        return y

    def backward(self, grad_out):
        (shape,) = self._saved()
        return getattr(_backend.ops().grad, f"adaptive_avg_pool{self._nd}d")(
            grad_out, shape, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size!r}"


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """AdaptiveAvgPool1d(output_size)

    Average pooling to a fixed length, with PyTorch's bins
    (:func:`fastconv.adaptive_avg_pool1d`).

    Parameters
    ----------
    output_size : int, (int,) or None
        ``L_out``; None keeps the input's length.

    Shape
    -----
    ``(N, C, L) -> (N, C, L_out)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> pool = nn.AdaptiveAvgPool1d(3)
    >>> pool(np.ones((2, 4, 10), np.float32)).shape
    (2, 4, 3)
    >>> pool.backward(np.ones((2, 4, 3), np.float32)).shape
    (2, 4, 10)
    """

    _nd = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """AdaptiveAvgPool2d(output_size)

    Average pooling to a fixed ``(H_out, W_out)``, with PyTorch's bins
    (:func:`fastconv.adaptive_avg_pool2d`); ``AdaptiveAvgPool2d(1)`` is the
    global average pooling before a ResNet's classifier.

    Parameters
    ----------
    output_size : int, (int or None, int or None) or None
        An int means a square output; None keeps that size.

    Shape
    -----
    ``(N, C, H, W) -> (N, C, H_out, W_out)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> nn.AdaptiveAvgPool2d((1, 1))(np.ones((2, 8, 7, 7), np.float32)).shape
    (2, 8, 1, 1)
    >>> nn.AdaptiveAvgPool2d((None, 2))(np.ones((2, 8, 7, 6))).shape
    (2, 8, 7, 2)
    """

    _nd = 2


class Identity(Module):
    """Identity(*args, **kwargs)

    ``y = x`` and ``dx = dy``; the arguments are ignored, as in PyTorch. It
    holds the place of a module that :func:`fuse` folded into another.

    Shape
    -----
    Any; the output has the input's shape.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> nn.Identity()(np.arange(3.))
    array([0., 1., 2.])
    """

    def __init__(self, *args, **kwargs):
        pass

    def forward(self, x):
        self._cache = ()
        return x

    def backward(self, grad_out):
        self._saved()
        return grad_out


class Residual(Module):
    """Residual(body, shortcut=None)

    A residual block: ``y = body(x) + shortcut(x)``, the shortcut being the
    identity when None (or a module such as a strided 1x1 ``Conv2d`` followed
    by ``BatchNorm2d`` when the body changes the shape). ``backward`` sums the
    two branches' input gradients:
    ``dx = body.backward(dy) + shortcut.backward(dy)`` (``+ dy`` for the
    identity). A ReLU after the sum, as in a ResNet, is a separate layer.

    Parameters
    ----------
    body : Module
    shortcut : Module or None

    Shape
    -----
    ``body(x)`` and ``shortcut(x)`` must have the same shape, the output's.
    Parameters are named ``body.<name>`` and ``shortcut.<name>``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> rng = np.random.default_rng(0)
    >>> block = nn.Residual(nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1, rng=rng),
    ...                                   nn.ReLU(),
    ...                                   nn.Conv2d(8, 8, 3, padding=1, rng=rng)),
    ...                     shortcut=nn.Conv2d(4, 8, 1, stride=2, rng=rng))
    >>> x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    >>> block(x).shape
    (2, 8, 3, 3)
    >>> block.backward(np.ones((2, 8, 3, 3), np.float32)).shape
    (2, 4, 6, 6)
    >>> [name for name, _ in block.named_parameters()][:2]
    ['body.0.weight', 'body.0.bias']
    """

    def __init__(self, body, shortcut=None):
        for name, m in (("body", body), ("shortcut", shortcut)):
            if not (isinstance(m, Module) or (name == "shortcut" and m is None)):
                raise TypeError(f"Expected {name} to be a fastconv.nn module, got {m!r}")
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        y = self.body(x)
        s = x if self.shortcut is None else self.shortcut(x)
        if np.shape(y) != np.shape(s):
            raise ValueError(
                f"Expected body and shortcut outputs of the same shape, got {np.shape(y)} "
                f"and {np.shape(s)}"
            )
        self._cache = ()
        return y + s

    def backward(self, grad_out):
        self._saved()
        grad_in = self.body.backward(grad_out)
        if self.shortcut is None:
            return grad_in + grad_out
        return grad_in + self.shortcut.backward(grad_out)

    def __repr__(self):
        body = "\n  ".join(f"(body): {self.body!r}".splitlines())
        out = f"Residual(\n  {body}"
        if self.shortcut is not None:
            out += "\n  " + "\n  ".join(f"(shortcut): {self.shortcut!r}".splitlines())
        return out + "\n)"


# -- fused inference layers -------------------------------------------------------

__all__ += ["FusedConv1d", "FusedConv2d", "fuse"]


class _InferenceOnly:
    """Mixin of the layers :func:`fuse` puts in a model: no backward caches."""

    def backward(self, grad_out):
        raise RuntimeError(
            f"{type(self).__name__} is an inference layer made by fastconv.nn.fuse: it keeps "
            f"no backward cache (train the unfused model)"
        )


class _FusedConvNd(_InferenceOnly, Module):
    _nd = 2

    def __init__(self, conv, bn=None, relu=False):
        if type(conv) not in (Conv1d, Conv2d) or conv._nd != self._nd:
            raise TypeError(f"Expected a Conv{self._nd}d to fuse, got {conv!r}")
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "dilation", "groups", "dtype"):
            setattr(self, name, getattr(conv, name))
        w = conv.weight.data.astype(np.float64)
        b = (np.zeros(conv.out_channels) if conv.bias is None
             else conv.bias.data.astype(np.float64))
        if bn is not None:
            mean, var = (np.asarray(a, np.float64) for a in (bn.running_mean, bn.running_var))
            gamma = 1.0 if bn.weight is None else bn.weight.data.astype(np.float64)
            beta = 0.0 if bn.bias is None else bn.bias.data.astype(np.float64)
            scale = gamma / np.sqrt(var + bn.eps)
            w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
            b = (b - mean) * scale + beta
        # Plain arrays, not Parameters: a fused model is not trained.
        self.weight = w
        self.bias = np.ascontiguousarray(b, dtype=self.dtype)
        self.activation = "relu" if relu else None
        self._op = conv._op

    @property
    def weight(self):
        """The folded weight, read-only: the kernels' packed copy of it
        (``_launch.PackedWeight``) is made once and must stay its own. Assign
        a new array to change it."""
        return self._weight

    @weight.setter
    def weight(self, w):
        w = np.array(w, dtype=self.dtype, order="C")
        w.flags.writeable = False
        self._weight, self._packed = w, PackedWeight(w)

    def forward(self, x):
        x = _cast(x, self.dtype)
        if x.ndim != self._nd + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"Expected input of {self._nd + 2} dimensions with {self.in_channels} "
                f"channels for {self!r}, got shape {x.shape}"
            )
        args = dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)
        ops = _backend.ops()
        if ops.name == "fastconv":  # the weight's panels packed once, not per call
            return functional._conv(x, self.weight, self.bias, self._nd, activation=self.activation,
                                    packed=self._packed, **args)
        return getattr(ops, self._op)(x, self.weight, self.bias, activation=self.activation,
                                      **args)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * self._nd:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + (f", activation={self.activation!r}" if self.activation else "")


class FusedConv1d(_FusedConvNd):
    """FusedConv1d(conv, bn=None, relu=False)

    An inference ``Conv1d`` with a following ``BatchNorm1d`` folded into its
    weight and bias and a following ReLU applied in the kernel's output store.
    :func:`fuse` builds these. See :class:`FusedConv2d` for the folding rule.

    Parameters
    ----------
    conv : Conv1d
    bn : BatchNorm1d or None
        Its running statistics and affine parameters are folded in.
    relu : bool
        Apply ``max(y, 0)`` in the convolution's output store.

    Shape
    -----
    As ``conv``: ``(N, C_in, L) -> (N, C_out, L_out)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> conv = nn.Conv1d(2, 4, 3, padding=1, rng=0)
    >>> fused = nn.FusedConv1d(conv, relu=True)
    >>> x = np.random.default_rng(1).standard_normal((2, 2, 5)).astype(np.float32)
    >>> bool(np.allclose(fused(x), np.maximum(conv(x), 0)))
    True
    """

    _nd = 1


class FusedConv2d(_FusedConvNd):
    """FusedConv2d(conv, bn=None, relu=False)

    An inference ``Conv2d`` with a following ``BatchNorm2d`` folded in:
    ``W' = W * s`` per output channel and ``b' = (b - running_mean) * s + beta``
    with ``s = gamma / sqrt(running_var + eps)`` (computed in float64, stored in
    the convolution's dtype), and an optional ReLU applied in the convolution
    kernel's output store. It keeps no backward cache; ``backward`` raises.

    Parameters
    ----------
    conv : Conv2d
    bn : BatchNorm2d or None
    relu : bool

    Shape
    -----
    As ``conv``: ``(N, C_in, H, W) -> (N, C_out, H_out, W_out)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> conv = nn.Conv2d(3, 8, 3, padding=1, bias=False, rng=0)
    >>> fused = nn.FusedConv2d(conv, relu=True)
    >>> fused
    FusedConv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), activation='relu')
    >>> fused(np.ones((1, 3, 4, 4), np.float32)).shape
    (1, 8, 4, 4)
    """

    _nd = 2


class _InferenceReLU(_InferenceOnly, ReLU):
    def forward(self, x):
        return np.maximum(x, 0)


class _InferenceLinear(_InferenceOnly, Linear):
    def forward(self, x):
        x = _cast(x, self.dtype)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Expected input of shape (N, {self.in_features}) for {self!r}, "
                f"got shape {x.shape}"
            )
        # a 1x1 convolution on fastconv's threads, not x @ W.T on OpenBLAS's:
        # BLAS threads left spinning after the product took the cores from the
        # next call's convolutions (ResNet-18 at batch 1 ran 1.5-2x slower)
        bias = None if self.bias is None else self.bias.data
        y = _backend.ops().conv1d(x[:, :, None], self.weight.data[:, :, None], bias)
        return y[:, :, 0]


class _InferenceMaxPoolNd(_InferenceOnly):
    def forward(self, x):
        op = getattr(_backend.ops(), f"max_pool{self._nd}d")
        return op(x, self.kernel_size, self.stride, self.padding, self.dilation,
                  self.ceil_mode)


class _InferenceMaxPool1d(_InferenceMaxPoolNd, MaxPool1d):
    pass


class _InferenceMaxPool2d(_InferenceMaxPoolNd, MaxPool2d):
    pass


class _Uncached(_InferenceOnly):
    """The layer's own forward, its (small) cache dropped afterwards."""

    def forward(self, x):
        y = super().forward(x)
        self._cache = None
        return y


_INFERENCE_TWINS = {ReLU: _InferenceReLU, Linear: _InferenceLinear,
                    MaxPool1d: _InferenceMaxPool1d, MaxPool2d: _InferenceMaxPool2d}
for _cls in (Flatten, AvgPool1d, AvgPool2d, AdaptiveAvgPool1d, AdaptiveAvgPool2d, Tanh,
             Sigmoid, LeakyReLU, Dropout):
    _INFERENCE_TWINS[_cls] = type(f"_Inference{_cls.__name__}", (_Uncached, _cls),
                                  {"__module__": __name__})
del _cls
_FUSED = {1: FusedConv1d, 2: FusedConv2d}


def _batch_norm_nd(m):
    """1 or 2 for a BatchNorm1d/2d (by name: BatchNorm lives in this module
    too), else None."""
    name = type(m).__name__
    return {"BatchNorm1d": 1, "BatchNorm2d": 2}.get(name) if isinstance(m, Module) else None


def _foldable(conv, bn):
    """Whether ``bn`` (eval mode) is a fixed affine map that folds into ``conv``."""
    return (_batch_norm_nd(bn) == conv._nd and getattr(bn, "running_mean", None) is not None
            and bn.num_features == conv.out_channels)


def _is_conv(m):
    return type(m) in (Conv1d, Conv2d)


def _twin(m):
    """A module's inference form: a twin without caches, a FusedConv for a
    lone convolution, or the module itself."""
    if _is_conv(m):
        return _FUSED[m._nd](m)
    cls = _INFERENCE_TWINS.get(type(m))
    if cls is None:
        return m
    twin = object.__new__(cls)
    twin.__dict__.update(m.__dict__)
    return twin


def _fuse_tree(module):
    """Fuse conv -> BatchNorm (-> ReLU) runs in every Sequential under
    ``module`` and swap the other layers for their inference forms."""
    if isinstance(module, Sequential):
        layers, out, i = module.layers, [], 0
        while i < len(layers):
            m = layers[i]
            if _is_conv(m):
                j = i + 1
                bn = None
                if j < len(layers) and _foldable(m, layers[j]):
                    bn, j = layers[j], j + 1
                relu = j < len(layers) and type(layers[j]) is ReLU
                out.append(_FUSED[m._nd](m, bn, relu))
                # Identity in the fused layers' places keeps the indices, as in PyTorch.
                out += [Identity() for _ in range(i + 1, j + relu)]
                i = j + relu
                continue
            out.append(_fuse_tree(m))
            i += 1
        module.layers = out
        return module
    for name, child in list(vars(module).items()):
        if isinstance(child, Module):
            setattr(module, name, _fuse_tree(child))
    if hasattr(module, "_keep_cache"):  # a custom module that can drop its own cache
        module._keep_cache = False
    return _twin(module)


def _locate(model, dotted):
    """(parent, key, module) of a dotted attribute name such as ``layer1.0.conv1``."""
    parent, key, cur = None, None, model
    for part in dotted.split("."):
        parent, key = cur, part
        if isinstance(cur, Sequential) and part.isdigit() and int(part) < len(cur):
            cur = cur.layers[int(part)]
        else:
            cur = getattr(cur, part, None)
        if not isinstance(cur, Module):
            raise ValueError(f"Expected {dotted!r} to name a module of the model, got {cur!r}")
    return parent, key, cur


def _put(parent, key, module):
    if isinstance(parent, Sequential) and key.isdigit():
        parent.layers[int(key)] = module
    else:
        setattr(parent, key, module)


def _fuse_group(model, group):
    if isinstance(group, str) or not 2 <= len(group) <= 3:
        raise ValueError(
            f"Expected a group of 2 or 3 module names (conv, BatchNorm and/or ReLU), "
            f"got {group!r}"
        )
    found = [_locate(model, name) for name in group]
    conv = found[0][2]
    rest = [m for _, _, m in found[1:]]
    if not _is_conv(conv):
        raise ValueError(f"Expected {group[0]!r} to be a Conv1d or Conv2d, got {conv!r}")
    bn = None
    if _batch_norm_nd(rest[0]) is not None:
        if not _foldable(conv, rest[0]):
            raise ValueError(
                f"Expected {group[1]!r} to be a BatchNorm{conv._nd}d with running statistics "
                f"over {conv.out_channels} channels, got {rest[0]!r}"
            )
        bn, rest = rest[0], rest[1:]
    if len(rest) > 1 or (rest and type(rest[0]) is not ReLU):
        raise ValueError(
            f"Expected the group {group!r} to be conv, BatchNorm (, ReLU) or conv, ReLU, "
            f"got {[type(m).__name__ for _, _, m in found]}"
        )
    parent, key, _ = found[0]
    _put(parent, key, _FUSED[conv._nd](conv, bn, bool(rest)))
    for parent, key, _ in found[1:]:
        _put(parent, key, Identity())


def fuse(model, groups=None):
    """fuse(model, groups=None)

    An equivalent inference model: each convolution followed by a BatchNorm
    gets the BatchNorm folded into its weight and bias (with its running
    statistics, as in eval mode), a ReLU after them is applied in the
    convolution kernel's output store, and no layer keeps a backward cache
    (max pooling computes no indices, ReLU no mask). ``model`` is not
    changed: a deep copy in eval mode is fused and returned.

    In every :class:`Sequential` of the model (searched recursively, so the
    bodies and shortcuts of :class:`Residual` blocks too) the runs
    conv -> BatchNorm (-> ReLU) and conv -> ReLU are found and fused. A custom
    module's attributes are fused by explicit ``groups`` of dotted names, as
    ``torch.ao.quantization.fuse_modules`` takes them: the first module of a
    group becomes the fused convolution, the others :class:`Identity`. When
    ``groups`` is None, a model's own ``fuse_groups()`` (the ResNets of
    :mod:`fastconv.models` have one) supplies them. BatchNorms without running
    statistics (``track_running_stats=False``) use batch statistics even in
    eval mode, so they are left unfused.

    A fused convolution packs its weight into the micro-kernels' panels on
    its first call and keeps them, where an ordinary call packs on every
    call (9.4 MB for a 512 -> 512 channel 3x3 layer). Its ``weight`` is
    therefore read-only; assign a new array to change it.

    Parameters
    ----------
    model : Module
    groups : list of list of str, optional
        For example ``[["conv1", "bn1", "relu"], ["layer1.0.conv2", "layer1.0.bn2"]]``.

    Returns
    -------
    Module
        The fused copy; its ``backward`` raises.

    Shape
    -----
    As ``model``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=0), nn.ReLU(),
    ...                       nn.Flatten(), nn.Linear(4 * 5 * 5, 2, rng=0))
    >>> fused = nn.fuse(model)
    >>> fused[0]
    FusedConv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), activation='relu')
    >>> x = np.random.default_rng(0).standard_normal((3, 1, 5, 5)).astype(np.float32)
    >>> bool(np.allclose(fused(x), model.eval()(x), rtol=1e-5, atol=1e-6))
    True
    """
    import copy

    if not isinstance(model, Module):
        raise TypeError(f"Expected a fastconv.nn module, got {model!r}")
    model = copy.deepcopy(model)
    model.eval()
    if groups is None:
        groups = model.fuse_groups() if hasattr(model, "fuse_groups") else []
    for group in groups:
        _fuse_group(model, group)
    return _fuse_tree(model)
