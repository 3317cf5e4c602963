"""Argument normalisation and validation, shared by every op.

Everything a kernel needs is checked and normalised here, once, in Python:
ints or tuples become tuples of the op's rank, padding strings become explicit
(begin, end) pairs, dtypes are resolved, and output sizes are computed and
checked. Kernels trust what they receive.

Every error is a ``ValueError`` or ``TypeError`` worded "Expected ..., got ...".
"""

import functools
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ConvGeometry",
    "PoolGeometry",
    "aligned",
    "as_float_arrays",
    "check_elements",
    "check_ndim",
    "check_shape",
    "check_size",
    "contiguous",
    "conv_geometry",
    "conv_transpose_geometry",
    "ntuple",
    "pool_geometry",
]

# Parameters larger than this cannot describe a real array dimension and would
# overflow the kernels' 64-bit index arithmetic once multiplied together.
_MAX_PARAM = 2**31 - 1


def _int(value, name):
    if type(value) is int:  # the common case, without the slower abc check below
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Expected {name} to be an int, got {value!r}")
    return int(value)


def ntuple(value, nd, name, *, minimum):
    """Normalise an int or a length-``nd`` sequence of ints to a tuple."""
    if isinstance(value, (tuple, list)):
        if len(value) != nd:
            raise ValueError(
                f"Expected {name} to be an int or a tuple of {nd} ints, got {value!r}"
            )
        out = tuple(_int(v, name) for v in value)
    else:
        out = (_int(value, name),) * nd
    for v in out:
        if v < minimum:
            raise ValueError(f"Expected {name} >= {minimum}, got {value!r}")
        if v > _MAX_PARAM:
            raise ValueError(f"Expected {name} <= {_MAX_PARAM}, got {value!r}")
    return out


# -- dtypes -------------------------------------------------------------------


def _float_dtype(a, name):
    kind = a.dtype.kind
    if kind in "biu":
        return np.dtype(np.float64)
    if kind == "f" and a.dtype in (np.float32, np.float64):
        return a.dtype
    raise TypeError(
        f"Expected {name} to have a float32, float64, integer or bool dtype, "
        f"got {a.dtype}"
    )


def as_float_arrays(named):
    """Convert ``{name: array_like or None}`` to aligned C-contiguous float arrays.

    Integer and bool inputs count as float64; the common dtype of the float
    inputs follows ``numpy.result_type``. float16, long double, complex, object
    and string inputs raise ``TypeError``. Returns ``(arrays, dtype)``.
    """
    arrays, dtypes = {}, []
    for name, value in named.items():
        if value is None:
            arrays[name] = None
            continue
        a = np.asarray(value)
        dtypes.append(_float_dtype(a, name))
        arrays[name] = a
    same = dtypes and all(d == dtypes[0] for d in dtypes)
    dtype = dtypes[0] if same else np.result_type(*dtypes)
    for name, a in arrays.items():
        if a is not None:
            # astype, not asarray: NumPy 2's asarray copies an array whose
            # dtype is equal to `dtype` but another instance of it (as a
            # deepcopy makes), and the fused layers' weights are deepcopies
            arrays[name] = aligned(a.astype(dtype, order="C", copy=False))
    return arrays, dtype


def aligned(a):
    """``a``, or an aligned copy of it: the kernels read whole elements, and
    an array can sit at any byte offset (``np.frombuffer`` at an offset, a
    pickle's out-of-band buffer as Dask's workers receive it)."""
    return a if a.flags.aligned else a.copy()


def contiguous(a):
    """``a`` as the kernels read it, C-contiguous and aligned (copied only if it is not)."""
    return aligned(np.ascontiguousarray(a))


def check_ndim(a, nd, name, layout):
    if a.ndim != nd:
        raise ValueError(
            f"Expected {name} of {nd} dimensions {layout}, got shape {a.shape}"
        )


def check_shape(a, expected, name, reason=""):
    if tuple(a.shape) != tuple(expected):
        why = f" ({reason})" if reason else ""
        raise ValueError(
            f"Expected {name} of shape {tuple(expected)}{why}, got {tuple(a.shape)}"
        )


def check_size(size, nd, name, layout="(N, C, spatial...)"):
    """Validate a full array size such as ``input_size=(N, C, H, W)``."""
    if isinstance(size, np.ndarray) or not isinstance(size, (tuple, list)):
        raise TypeError(f"Expected {name} to be a tuple of {nd + 2} ints, got {size!r}")
    if len(size) != nd + 2:
        raise ValueError(
            f"Expected {name} to be a tuple of {nd + 2} ints {layout}, got {tuple(size)!r}"
        )
    out = tuple(_int(s, name) for s in size)
    if any(s < 0 for s in out):
        raise ValueError(f"Expected non-negative sizes in {name}, got {out}")
    check_elements(out, name)  # the array of this size is allocated (NumPy's words, else)
    return out


# -- memoised geometry ----------------------------------------------------------

# A training loop asks for the same few geometries over and over; validating
# them costs more than a small kernel call. Geometries are frozen, so a cached
# one can be shared. Keys carry the type of every argument and of every item of
# a tuple argument, so that True and 1, or 2.0 and 2, which validate
# differently, never share an entry. Arguments that are unhashable (lists) or
# nested (padding pairs) are validated without the cache; a failed validation
# raises before anything is stored.
_CACHE_SIZE = 256


def _cache_key(args):
    types = []
    for a in args:
        if type(a) is tuple:
            inner = tuple(map(type, a))
            if tuple in inner:
                raise TypeError("nested")
            types.append(inner)
        else:
            types.append(type(a))
    return args, tuple(types)


def _memoized(func):
    cache = {}

    @functools.wraps(func)
    def wrapper(*args):
        try:
            key = _cache_key(args)
            return cache[key]
        except KeyError:
            pass
        except TypeError:  # unhashable or nested: validate without caching
            return func(*args)
        result = func(*args)
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[key] = result
        return result

    return wrapper


# -- convolution geometry -----------------------------------------------------


@dataclass(frozen=True)
class ConvGeometry:
    """Geometry of a convolution, always in 2-D form (1-D has H = k_h = 1)."""

    n: int
    c_in: int
    c_out: int
    groups: int
    in_size: tuple  # (H, W)
    kernel: tuple  # (kH, kW)
    out_size: tuple  # (OH, OW)
    stride: tuple
    pad_begin: tuple  # (top, left)
    pad_end: tuple  # (bottom, right)
    dilation: tuple
    nd: int  # rank of the user-facing op: 1 or 2

    def kernel_args(self):
        """Positional geometry arguments shared by the convolution kernels."""
        return (*self.stride, *self.pad_begin, *self.dilation, self.groups)

    def input_shape(self):
        return (self.n, self.c_in) + self.in_size[2 - self.nd :]

    def output_shape(self):
        return (self.n, self.c_out) + self.out_size[2 - self.nd :]

    def weight_shape(self):
        return (self.c_out, self.c_in // self.groups) + self.kernel[2 - self.nd :]


def _groups_and_kernel(groups, c_in, w_shape):
    """Validate ``groups`` against the input channels, and the kernel size."""
    groups = _int(groups, "groups")
    if groups < 1:
        raise ValueError(f"Expected groups >= 1, got {groups}")
    if any(c < 1 for c in w_shape[:2]):  # PyTorch too: "expected weight to be at least 1"
        raise ValueError(
            f"Expected weight with non-zero channel sizes, got weight shape {tuple(w_shape)}"
        )
    kernel = tuple(w_shape[2:])
    if any(k < 1 for k in kernel):
        raise ValueError(f"Expected a non-empty kernel, got weight shape {tuple(w_shape)}")
    if c_in % groups:
        raise ValueError(
            f"Expected in_channels divisible by groups, got in_channels={c_in} "
            f"and groups={groups}"
        )
    return groups, kernel


def _check_ranks(x_shape, w_shape, nd):
    for name, shape in (("input", x_shape), ("weight", w_shape)):
        if len(shape) != nd + 2:
            raise ValueError(
                f"Expected {name} of {nd + 2} dimensions, got shape {tuple(shape)}"
            )


def _to2d(t, fill):
    return t if len(t) == 2 else (fill,) + tuple(t)


def _conv_padding(padding, nd, kernel, dilation, stride):
    """Return ``(begin, end)`` tuples for every accepted padding form."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * nd, (0,) * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(
                    f"Expected stride=1 with padding='same', got stride={stride}"
                )
            total = tuple(d * (k - 1) for d, k in zip(dilation, kernel))
            # The extra pad of an even effective kernel goes at the end.
            begin = tuple(t // 2 for t in total)
            return begin, tuple(t - b for t, b in zip(total, begin))
        raise ValueError(
            f"Expected padding to be 'valid', 'same', an int or a tuple, got {padding!r}"
        )
    if isinstance(padding, (tuple, list)):
        items = list(padding)
        pairs = None
        if nd == 1 and len(items) == 2 and not any(isinstance(p, (tuple, list)) for p in items):
            pairs = [items]  # 1-D (left, right)
        elif len(items) == nd and all(isinstance(p, (tuple, list)) for p in items):
            pairs = items
        if pairs is not None:
            begin, end = [], []
            for pair in pairs:
                if len(pair) != 2:
                    raise ValueError(
                        f"Expected padding pairs (begin, end), got {padding!r}"
                    )
                b, e = ntuple(tuple(pair), 2, "padding", minimum=0)
                begin.append(b)
                end.append(e)
            return tuple(begin), tuple(end)
    p = ntuple(padding, nd, "padding", minimum=0)
    return p, p


def _out_len(size, pad_total, k, s, d):
    return (size + pad_total - d * (k - 1) - 1) // s + 1


# The largest number of elements an output may have: numpy's own limit for
# 8-byte items, so that no size computation can overflow.
_MAX_ELEMENTS = np.iinfo(np.intp).max // 8


def _check_out_size(out, in_size, pad_begin, pad_end, kernel, dilation, what):
    if any(o < 1 for o in out):
        eff = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
        padded = tuple(i + b + e for i, b, e in zip(in_size, pad_begin, pad_end))
        raise ValueError(
            f"Expected the {what} (dilated) kernel size {eff} to fit in the padded "
            f"input size {padded}, got a kernel larger than the input"
        )
    check_elements(out, f"the {what} output")


def check_elements(shape, what):
    """Reject shapes whose element count no array can hold. NumPy sizes an
    array by its non-zero dimensions, so an empty batch does not make a
    plane of 2**62 positions valid (NumPy's "array is too big" came
    instead, worded otherwise)."""
    total = 1
    for s in shape:
        total *= max(int(s), 1)
    if total > _MAX_ELEMENTS:
        raise ValueError(
            f"Expected {what} to have at most {_MAX_ELEMENTS} elements, got shape "
            f"{tuple(shape)}"
        )


@_memoized
def conv_geometry(x_shape, w_shape, nd, stride, padding, dilation, groups):
    """Geometry of ``conv{nd}d`` for input and weight shapes (of nd + 2 dims)."""
    _check_ranks(x_shape, w_shape, nd)
    stride = ntuple(stride, nd, "stride", minimum=1)
    dilation = ntuple(dilation, nd, "dilation", minimum=1)
    n, c_in = x_shape[:2]
    c_out, c_in_g = w_shape[:2]
    groups, kernel = _groups_and_kernel(groups, c_in, w_shape)
    if c_out % groups:
        raise ValueError(
            f"Expected out_channels divisible by groups, got weight shape "
            f"{tuple(w_shape)} (out_channels={c_out}) and groups={groups}"
        )
    if c_in_g * groups != c_in:
        raise ValueError(
            f"Expected weight of shape (C_out, C_in/groups={c_in // groups}, ...) for "
            f"input of shape {tuple(x_shape)} and groups={groups}, got weight shape "
            f"{tuple(w_shape)}"
        )
    pad_begin, pad_end = _conv_padding(padding, nd, kernel, dilation, stride)
    in_size = tuple(x_shape[2:])
    out = tuple(
        _out_len(i, b + e, k, s, d)
        for i, b, e, k, s, d in zip(in_size, pad_begin, pad_end, kernel, stride, dilation)
    )
    _check_out_size(out, in_size, pad_begin, pad_end, kernel, dilation, "convolution")
    check_elements((n, c_out) + out, "the convolution output")
    return ConvGeometry(
        n=n,
        c_in=c_in,
        c_out=c_out,
        groups=groups,
        in_size=_to2d(in_size, 1),
        kernel=_to2d(kernel, 1),
        out_size=_to2d(out, 1),
        stride=_to2d(stride, 1),
        pad_begin=_to2d(pad_begin, 0),
        pad_end=_to2d(pad_end, 0),
        dilation=_to2d(dilation, 1),
        nd=nd,
    )


@_memoized
def conv_transpose_geometry(x_shape, w_shape, nd, stride, padding, output_padding,
                            groups, dilation):
    """Geometry of ``conv_transpose{nd}d``, expressed as the convolution it undoes.

    A transposed convolution of ``x`` is the input gradient of the convolution
    whose output is ``x``. The returned geometry describes that convolution:
    its ``c_in``/``in_size`` are the transposed op's output channels and size,
    its ``c_out``/``out_size`` are the transposed op's input.
    """
    _check_ranks(x_shape, w_shape, nd)
    if isinstance(padding, str):
        raise ValueError(
            f"Expected padding of a transposed convolution to be an int or a tuple, "
            f"got {padding!r}"
        )
    stride = ntuple(stride, nd, "stride", minimum=1)
    dilation = ntuple(dilation, nd, "dilation", minimum=1)
    pad = ntuple(padding, nd, "padding", minimum=0)
    out_pad = ntuple(output_padding, nd, "output_padding", minimum=0)
    for op, s, d in zip(out_pad, stride, dilation):
        if op >= max(s, d):
            raise ValueError(
                f"Expected output_padding < max(stride, dilation), got "
                f"output_padding={out_pad}, stride={stride}, dilation={dilation}"
            )
    n, c_in = x_shape[:2]
    w_c_in, c_out_g = w_shape[:2]
    groups, kernel = _groups_and_kernel(groups, c_in, w_shape)
    if w_c_in != c_in:
        raise ValueError(
            f"Expected weight of shape (C_in={c_in}, C_out/groups, ...) for input of "
            f"shape {tuple(x_shape)}, got weight shape {tuple(w_shape)}"
        )
    in_size = tuple(x_shape[2:])
    out = tuple(
        (i - 1) * s - 2 * p + d * (k - 1) + op + 1
        for i, s, p, d, k, op in zip(in_size, stride, pad, dilation, kernel, out_pad)
    )
    if any(i < 1 for i in in_size) or any(o < 1 for o in out):
        raise ValueError(
            f"Expected a positive output size for transposed convolution of input "
            f"shape {tuple(x_shape)} with weight shape {tuple(w_shape)}, got {out}"
        )
    check_elements((n, c_out_g * groups) + out, "the transposed convolution output")
    return ConvGeometry(
        n=n,
        c_in=c_out_g * groups,
        c_out=c_in,
        groups=groups,
        in_size=_to2d(out, 1),
        kernel=_to2d(kernel, 1),
        out_size=_to2d(in_size, 1),
        stride=_to2d(stride, 1),
        pad_begin=_to2d(pad, 0),
        pad_end=_to2d(tuple(p - op for p, op in zip(pad, out_pad)), 0),
        dilation=_to2d(dilation, 1),
        nd=nd,
    )


# -- pooling geometry ---------------------------------------------------------


@dataclass(frozen=True)
class PoolGeometry:
    """Geometry of a pooling op, always in 2-D form (1-D has H = k_h = 1)."""

    in_size: tuple
    kernel: tuple
    out_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    nd: int

    def kernel_args(self):
        return (*self.kernel, *self.stride, *self.padding, *self.dilation)

    def out_shape(self, lead):
        return tuple(lead) + self.out_size[2 - self.nd :]


def _pool_out_len(size, k, s, p, d, ceil_mode):
    num = size + 2 * p - d * (k - 1) - 1
    out = (num + (s - 1 if ceil_mode else 0)) // s + 1
    # A last window that would start in the right padding is dropped.
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


@_memoized
def pool_geometry(in_size, nd, kernel_size, stride, padding, dilation, ceil_mode):
    """Geometry of a pooling op over the spatial ``in_size``."""
    kernel = ntuple(kernel_size, nd, "kernel_size", minimum=1)
    stride = kernel if stride is None else ntuple(stride, nd, "stride", minimum=1)
    pad = ntuple(padding, nd, "padding", minimum=0)
    dilation = ntuple(dilation, nd, "dilation", minimum=1)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"Expected ceil_mode to be a bool, got {ceil_mode!r}")
    for p, k in zip(pad, kernel):
        if p > k // 2:
            raise ValueError(
                f"Expected padding <= kernel_size/2, got padding={pad} and "
                f"kernel_size={kernel}"
            )
    out = tuple(
        _pool_out_len(i, k, s, p, d, ceil_mode)
        for i, k, s, p, d in zip(in_size, kernel, stride, pad, dilation)
    )
    _check_out_size(out, in_size, pad, pad, kernel, dilation, "pooling")
    for i, k, s, p, d in zip(in_size, kernel, stride, pad, dilation):
        # Only windows starting in the left padding can miss the input (ceil_mode
        # drops those starting in the right padding): their first in-bounds tap
        # must exist. PyTorch returns an index outside the input for them. That
        # tap, start + ceil(-start/d)*d, lies in [0, d): with i >= d it is in the
        # input whenever the window has it, and the first window (the most taps
        # in the padding) decides. Checking one window, not all of them, keeps
        # this O(1) for paddings of any size.
        starts = range(-p, 0, s)
        for start in starts if i < d else starts[:1]:
            first = start + (-start + d - 1) // d * d
            if first > min(start + (k - 1) * d, i - 1):
                raise ValueError(
                    f"Expected every pooling window to overlap the input, got a window "
                    f"of only padding for input size {tuple(in_size)}, kernel_size="
                    f"{kernel}, padding={pad}, dilation={dilation}"
                )
    return PoolGeometry(
        in_size=_to2d(tuple(in_size), 1),
        kernel=_to2d(kernel, 1),
        out_size=_to2d(out, 1),
        stride=_to2d(stride, 1),
        padding=_to2d(pad, 0),
        dilation=_to2d(dilation, 1),
        nd=nd,
    )
