"""fastconv.reference against the textbook loops, worked examples and PyTorch.

The loops in ``tests/loops.py`` are the independent oracle: every reference
op is compared with them on tiny nasty cases. PyTorch, when importable, is a
second oracle on the same cases; those tests skip without it.

The loop comparisons also run on fastconv's kernels (the ``impl`` fixture),
at 1 and 3 threads with the work grain lowered, so that these small cases
are shared among the threads as large ones are.
"""

import numpy as np
import pytest
from conftest import assert_close

import fastconv
from fastconv import reference as ref

try:
    from . import loops
except ImportError:
    import loops


def to4d(a, nd):
    """(N, C, L) as (N, C, 1, L) for the 2-D loops."""
    a = np.asarray(a)
    return a if nd == 2 else a[:, :, None, :]


def from4d(a, nd):
    return a if nd == 2 else a[:, :, 0, :]


def pair(v, nd, fill):
    """A parameter in the loops' 2-D form (the H axis of a 1-D op is trivial)."""
    t = (v,) * nd if isinstance(v, int) else tuple(v)
    return t if nd == 2 else (fill,) + t


IMPLS = ["reference", "fastconv-1-thread", "fastconv-3-threads"]


@pytest.fixture(params=IMPLS)
def impl(request, low_grain, threads):
    """The implementation under test: the reference, or fastconv at 1 or 3
    threads with the grain lowered (conftest's low_grain)."""
    if request.param != "reference":
        threads.set_num_threads(int(request.param.split("-")[1]))
    return request.param


def ops(nd, impl="reference"):
    """The ops of rank nd of the reference (or of fastconv), by their rank-free names."""
    if impl != "reference":
        g = fastconv.grad
        return {
            "conv": getattr(fastconv, f"conv{nd}d"),
            "conv_input": getattr(g, f"conv{nd}d_input"),
            "conv_weight": getattr(g, f"conv{nd}d_weight"),
            "conv_transpose": getattr(fastconv, f"conv_transpose{nd}d"),
            "conv_transpose_input": getattr(g, f"conv_transpose{nd}d_input"),
            "conv_transpose_weight": getattr(g, f"conv_transpose{nd}d_weight"),
            "conv_bias": g.conv_bias,
            "max_pool": getattr(fastconv, f"max_pool{nd}d"),
            "avg_pool": getattr(fastconv, f"avg_pool{nd}d"),
            "max_pool_grad": getattr(g, f"max_pool{nd}d"),
            "avg_pool_grad": getattr(g, f"avg_pool{nd}d"),
        }
    spelled = {
        "conv": f"conv{nd}d",
        "conv_input": f"conv{nd}d_input",
        "conv_weight": f"conv{nd}d_weight",
        "conv_transpose": f"conv_transpose{nd}d",
        "conv_transpose_input": f"conv_transpose{nd}d_input",
        "conv_transpose_weight": f"conv_transpose{nd}d_weight",
        "max_pool": f"max_pool{nd}d",
        "avg_pool": f"avg_pool{nd}d",
        "max_pool_grad": f"max_pool{nd}d_grad",
        "avg_pool_grad": f"avg_pool{nd}d_grad",
    }
    return {name: getattr(ref, full) for name, full in spelled.items()} | {
        "conv_bias": ref.conv_bias}


# -- convolution cases --------------------------------------------------------------
# (x shape, weight shape, stride, padding as given to fastconv, dilation, groups,
#  pad_begin, pad_end) where the last two are the explicit padding, worked out
#  by hand, in the loops' 2-D form.

CONV_CASES = [
    pytest.param((2, 3, 7, 8), (4, 3, 2, 2), 3, 0, 1, 1, (0, 0), (0, 0),
                 id="stride>kernel"),
    pytest.param((1, 2, 6, 7), (3, 2, 3, 3), 2, 1, 1, 1, (1, 1), (1, 1),
                 id="ragged-last-window"),
    pytest.param((1, 2, 5, 6), (2, 2, 2, 4), 1, "same", 1, 1, (0, 1), (1, 2),
                 id="same-even-kernel"),
    pytest.param((1, 2, 5, 6), (2, 2, 2, 3), 1, "same", (3, 2), 1, (1, 2), (2, 2),
                 id="same-dilated"),
    pytest.param((2, 2, 6, 5), (2, 2, 3, 2), 1, "valid", 1, 1, (0, 0), (0, 0),
                 id="valid"),
    pytest.param((2, 2, 5, 5), (3, 2, 3, 2), (2, 1), ((2, 0), (1, 3)), 1, 1,
                 (2, 1), (0, 3), id="asymmetric-padding"),
    pytest.param((1, 2, 9, 8), (2, 2, 3, 2), (2, 3), (2, 1), (2, 3), 1, (2, 1), (2, 1),
                 id="dilation-with-stride"),
    pytest.param((2, 4, 5, 6), (6, 2, 3, 3), (1, 2), 1, 1, 2, (1, 1), (1, 1),
                 id="groups"),
    pytest.param((1, 3, 6, 5), (3, 1, 3, 3), 2, 1, 1, 3, (1, 1), (1, 1),
                 id="depthwise"),
    pytest.param((2, 2, 5, 5), (4, 1, 2, 2), 1, 0, 1, 2, (0, 0), (0, 0),
                 id="depthwise-multiplier-2"),
    pytest.param((1, 3, 5, 5), (2, 3, 1, 1), 2, 0, 1, 1, (0, 0), (0, 0),
                 id="pointwise-strided"),
    pytest.param((2, 2, 3, 4), (3, 2, 3, 4), 1, 0, 1, 1, (0, 0), (0, 0),
                 id="kernel-fills-input"),
    pytest.param((2, 3, 7), (4, 3, 3), 2, 1, 1, 1, (0, 1), (0, 1), id="1d-ragged"),
    pytest.param((1, 2, 9), (3, 2, 2), 3, (2, 0), 2, 1, (0, 2), (0, 0),
                 id="1d-asymmetric-dilated-strided"),
    pytest.param((1, 2, 6), (2, 2, 4), 1, "same", 1, 1, (0, 1), (0, 2),
                 id="1d-same-even-kernel"),
    pytest.param((2, 4, 10), (4, 2, 3), 1, 2, 3, 2, (0, 2), (0, 2),
                 id="1d-groups-dilation"),
    pytest.param((1, 3, 5), (3, 1, 2), 2, 1, 1, 3, (0, 1), (0, 1), id="1d-depthwise"),
]

CONV_ARGS = "x_shape, w_shape, stride, padding, dilation, groups, begin, end"


def conv_data(x_shape, w_shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(x_shape), rng.standard_normal(w_shape),
            rng.standard_normal(w_shape[0]))


@pytest.mark.parametrize(CONV_ARGS, CONV_CASES)
def test_conv_forward_matches_loops(x_shape, w_shape, stride, padding, dilation, groups,
                                    begin, end, impl):
    nd = len(x_shape) - 2
    x, w, b = conv_data(x_shape, w_shape)
    got = ops(nd, impl)["conv"](x, w, b, stride, padding, dilation, groups)
    want = loops.conv2d(to4d(x, nd), to4d(w, nd), b, pair(stride, nd, 1), begin, end,
                        pair(dilation, nd, 1), groups)
    assert_close(got, from4d(want, nd), n_terms=w[0].size + 1)


@pytest.mark.parametrize(CONV_ARGS, CONV_CASES)
def test_conv_gradients_match_loops(x_shape, w_shape, stride, padding, dilation, groups,
                                    begin, end, impl):
    nd = len(x_shape) - 2
    op = ops(nd, impl)
    x, w, _ = conv_data(x_shape, w_shape)
    y_shape = op["conv"](x, w, None, stride, padding, dilation, groups).shape
    gy = np.random.default_rng(1).standard_normal(y_shape)
    s2, d2 = pair(stride, nd, 1), pair(dilation, nd, 1)

    gx = op["conv_input"](x_shape, w, gy, stride, padding, dilation, groups)
    want_gx = loops.conv2d_input(to4d(gy, nd), to4d(w, nd), to4d(x, nd).shape, s2, begin,
                                 d2, groups)
    assert_close(gx, from4d(want_gx, nd), n_terms=w.shape[0] // groups * w[0, 0].size)

    gw = op["conv_weight"](x, w_shape, gy, stride, padding, dilation, groups)
    want_gw = loops.conv2d_weight(to4d(x, nd), to4d(gy, nd), to4d(w, nd).shape, s2, begin,
                                  d2, groups)
    assert_close(gw, from4d(want_gw, nd), n_terms=gy[:, 0].size)

    assert_close(op["conv_bias"](gy), gy.sum(axis=tuple(i for i in range(gy.ndim) if i != 1)),
                 n_terms=gy[:, 0].size)


@pytest.mark.parametrize(CONV_ARGS, CONV_CASES)
def test_conv_gradients_are_adjoint(x_shape, w_shape, stride, padding, dilation, groups,
                                    begin, end, impl):
    # <conv(x, w), gy> = <x, conv_input(gy)> = <w, conv_weight(x, gy)>
    nd = len(x_shape) - 2
    op = ops(nd, impl)
    x, w, _ = conv_data(x_shape, w_shape, seed=2)
    y = op["conv"](x, w, None, stride, padding, dilation, groups)
    gy = np.random.default_rng(3).standard_normal(y.shape)
    gx = op["conv_input"](x_shape, w, gy, stride, padding, dilation, groups)
    gw = op["conv_weight"](x, w_shape, gy, stride, padding, dilation, groups)
    assert_close(np.vdot(x, gx), np.vdot(y, gy), n_terms=x.size)
    assert_close(np.vdot(w, gw), np.vdot(y, gy), n_terms=x.size)


def test_conv_input_leaves_unreached_rows_at_zero():
    # k=3, s=2 on H=6: the windows cover rows 0..4, row 5 and column 5 are never read.
    rng = np.random.default_rng(4)
    w = rng.standard_normal((2, 1, 3, 3))
    gy = rng.standard_normal((1, 2, 2, 2))
    gx = ref.conv2d_input((1, 1, 6, 6), w, gy, stride=2)
    assert_close(gx, loops.conv2d_input(gy, w, (1, 1, 6, 6), (2, 2), (0, 0), (1, 1), 1),
                 n_terms=8)
    np.testing.assert_array_equal(gx[0, 0, 5, :], 0.0)
    np.testing.assert_array_equal(gx[0, 0, :, 5], 0.0)
    assert np.all(gx[0, 0, :5, :5] != 0.0)


# -- transposed convolution cases -------------------------------------------------
# (x shape, weight shape (C_in, C_out/groups, k...), stride, padding,
#  output_padding, groups, dilation)

TRANSPOSE_CASES = [
    pytest.param((2, 4, 3, 3), (4, 3, 3, 3), 2, 1, 1, 2, 1, id="groups-output-padding"),
    pytest.param((1, 2, 4, 3), (2, 2, 2, 3), (3, 2), (0, 1), (2, 1), 1, (1, 2),
                 id="stride>kernel-output-padding"),
    pytest.param((1, 3, 2, 2), (3, 1, 3, 3), 1, 0, 0, 3, 1, id="depthwise"),
    pytest.param((1, 2, 3, 3), (2, 1, 2, 2), 1, 1, 1, 1, 2,
                 id="output-padding-from-dilation"),
    pytest.param((2, 2, 5), (2, 3, 3), 2, 1, 1, 1, 1, id="1d"),
    pytest.param((1, 4, 4), (4, 1, 4), 3, 2, 2, 2, 1, id="1d-groups"),
]

TRANSPOSE_ARGS = "x_shape, w_shape, stride, padding, output_padding, groups, dilation"


def transpose_out_shape(x_shape, w_shape, stride, padding, output_padding, groups,
                        dilation):
    nd = len(x_shape) - 2
    s, p = pair(stride, nd, 1), pair(padding, nd, 0)
    op, d = pair(output_padding, nd, 0), pair(dilation, nd, 1)
    k = to4d(np.empty(w_shape), nd).shape[2:]
    h, w = to4d(np.empty(x_shape), nd).shape[2:]
    size = tuple((i - 1) * s_ - 2 * p_ + d_ * (k_ - 1) + o_ + 1
                 for i, s_, p_, d_, k_, o_ in zip((h, w), s, p, d, k, op))
    return (x_shape[0], w_shape[1] * groups) + size[2 - nd :]


@pytest.mark.parametrize(TRANSPOSE_ARGS, TRANSPOSE_CASES)
def test_conv_transpose_matches_loops(x_shape, w_shape, stride, padding, output_padding,
                                      groups, dilation, impl):
    nd = len(x_shape) - 2
    op = ops(nd, impl)
    x, w, _ = conv_data(x_shape, w_shape, seed=5)
    b = np.random.default_rng(6).standard_normal(w_shape[1] * groups)
    s, p = pair(stride, nd, 1), pair(padding, nd, 0)
    opad, d = pair(output_padding, nd, 0), pair(dilation, nd, 1)
    out_shape = transpose_out_shape(x_shape, w_shape, stride, padding, output_padding,
                                    groups, dilation)
    args = (stride, padding, output_padding, groups, dilation)

    # Forward: the input gradient of the convolution whose output is x.
    y = op["conv_transpose"](x, w, b, *args)
    want = loops.conv2d_input(to4d(x, nd), to4d(w, nd), to4d(np.empty(out_shape), nd).shape,
                              s, p, d, groups)
    assert_close(y, from4d(want, nd) + b.reshape((1, -1) + (1,) * nd),
                 n_terms=w.shape[0] // groups * w[0, 0].size + 1)

    # Input gradient: that convolution, with end padding p - output_padding.
    gy = np.random.default_rng(7).standard_normal(out_shape)
    gx = op["conv_transpose_input"](x_shape, w, gy, *args)
    end = tuple(pp - o for pp, o in zip(p, opad))
    want_gx = loops.conv2d(to4d(gy, nd), to4d(w, nd), None, s, p, end, d, groups)
    assert_close(gx, from4d(want_gx, nd), n_terms=w[0].size)

    # Weight gradient: that convolution's weight gradient, roles exchanged.
    gw = op["conv_transpose_weight"](x, w_shape, gy, *args)
    want_gw = loops.conv2d_weight(to4d(gy, nd), to4d(x, nd), to4d(w, nd).shape, s, p, d,
                                  groups)
    assert_close(gw, from4d(want_gw, nd), n_terms=x[:, 0].size)


# -- pooling cases ------------------------------------------------------------------


def pool_input(shape, kind, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.standard_normal(shape)
    if kind == "ties":
        return rng.integers(0, 3, shape).astype(float)
    if kind == "nan":
        x = rng.integers(0, 3, shape).astype(float)
        x[rng.random(shape) < 0.3] = np.nan
        return x
    if kind == "-inf":
        x = rng.standard_normal(shape)
        x[rng.random(shape) < 0.6] = -np.inf
        return x
    if kind == "all-inf":
        return np.full(shape, -np.inf)
    raise AssertionError(kind)


# (x shape, kernel, stride, padding, dilation, ceil_mode, input kind)
MAX_POOL_CASES = [
    pytest.param((2, 2, 7, 8), 2, 3, 0, 1, False, "random", id="stride>kernel"),
    pytest.param((1, 2, 6, 6), 3, 2, 0, 1, True, "random", id="ceil-extra-window"),
    pytest.param((1, 2, 5, 5), 2, 2, 1, 1, True, "random",
                 id="ceil-window-in-padding-dropped"),
    pytest.param((1, 2, 6, 7), 3, 2, 1, 1, True, "random", id="ceil-with-padding"),
    pytest.param((2, 2, 7, 9), (3, 2), (2, 3), 1, (2, 3), False, "random",
                 id="dilation-with-stride"),
    pytest.param((2, 3, 5, 6), 3, 1, 1, 1, False, "ties", id="ties"),
    pytest.param((2, 3, 6, 6), (2, 3), (2, 1), (1, 1), 1, True, "ties", id="ties-ceil"),
    pytest.param((2, 3, 6, 6), 3, 1, 1, 1, False, "nan", id="nan"),
    pytest.param((2, 3, 7, 7), 3, 2, 1, 2, True, "nan", id="nan-dilated-ceil"),
    pytest.param((1, 2, 5, 5), 3, 2, 1, 1, False, "-inf", id="-inf-windows"),
    pytest.param((1, 1, 4, 5), 2, 1, 1, 1, True, "all-inf", id="all-inf"),
    pytest.param((2, 2, 9), 3, 2, 1, 1, False, "ties", id="1d-ties"),
    pytest.param((2, 2, 8), 2, 3, 1, 2, True, "nan", id="1d-nan-ceil-dilated"),
    pytest.param((1, 2, 10), 4, 1, 2, 3, False, "-inf", id="1d-inf-dilated"),
]

MAX_POOL_ARGS = "x_shape, kernel, stride, padding, dilation, ceil_mode, kind"


@pytest.mark.parametrize(MAX_POOL_ARGS, MAX_POOL_CASES)
def test_max_pool_matches_loops(x_shape, kernel, stride, padding, dilation, ceil_mode,
                                kind, impl):
    nd = len(x_shape) - 2
    op = ops(nd, impl)
    x = pool_input(x_shape, kind)
    y, idx = op["max_pool"](x, kernel, stride, padding, dilation, ceil_mode,
                            return_indices=True)
    want_y, want_idx = loops.max_pool2d(to4d(x, nd), pair(kernel, nd, 1),
                                        pair(stride, nd, 1), pair(padding, nd, 0),
                                        pair(dilation, nd, 1), ceil_mode)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(y, from4d(want_y, nd))
    np.testing.assert_array_equal(idx, from4d(want_idx, nd))
    np.testing.assert_array_equal(
        op["max_pool"](x, kernel, stride, padding, dilation, ceil_mode), y
    )

    gy = np.random.default_rng(8).standard_normal(y.shape)
    gx = op["max_pool_grad"](gy, idx, x_shape)
    want_gx = loops.pool_grad_max(to4d(gy, nd), to4d(idx, nd), to4d(x, nd).shape)
    assert_close(gx, from4d(want_gx, nd), n_terms=np.prod(kernel))


def test_max_pool_nan_and_tie_rules():
    # One window each: ties -> first; NaN beats everything; the last NaN wins;
    # an all -inf window still points at its first element.
    nan, inf = np.nan, np.inf
    x = np.array([[[3.0, 1.0, 3.0, 2.0],
                    [1.0, nan, 5.0, nan],
                    [-inf, -inf, -inf, -inf]]])
    y, idx = ref.max_pool1d(x, 4, return_indices=True)
    np.testing.assert_array_equal(y, [[[3.0], [nan], [-inf]]])
    np.testing.assert_array_equal(idx, [[[0], [3], [0]]])
    # With left padding the -inf padding is never chosen: index 0, not -1.
    y, idx = ref.max_pool1d(x[:, 2:], 2, stride=2, padding=1, return_indices=True)
    # Windows [-1, 1), [1, 3), [3, 5): each starts at its first element inside.
    np.testing.assert_array_equal(idx, [[[0, 1, 3]]])
    np.testing.assert_array_equal(y, [[[-inf, -inf, -inf]]])


def test_max_pool_window_without_input_element_is_rejected():
    # H=W=1, k=2, p=1, d=2: the only window reads padded positions -1 and 1.
    # PyTorch returns -inf with index 2, outside the 1-element plane; fastconv
    # rejects the geometry instead of returning an index nothing can use.
    for op in (ref.max_pool2d, fastconv.max_pool2d):
        with pytest.raises(ValueError, match="overlap the input"):
            op(np.array([[[[5.0]]]]), 2, stride=1, padding=1, dilation=2)


# (x shape, kernel, stride, padding, ceil_mode)
AVG_POOL_CASES = [
    pytest.param((2, 2, 5, 5), 3, 2, 1, True, id="ceil-with-padding"),
    pytest.param((1, 2, 6, 7), 3, 2, 1, True, id="ceil-window-past-padding"),
    pytest.param((1, 2, 5, 5), 2, 2, 1, True, id="ceil-window-in-padding-dropped"),
    pytest.param((2, 2, 7, 8), 2, 3, 0, False, id="stride>kernel"),
    pytest.param((1, 3, 5, 6), (2, 3), (1, 2), (1, 1), False, id="rectangular"),
    pytest.param((1, 1, 4, 4), 4, 1, 2, False, id="padding-half-kernel"),
    pytest.param((2, 2, 9), 3, 2, 1, True, id="1d-ceil"),
    pytest.param((1, 2, 7), 4, 3, 2, False, id="1d-padding"),
]

AVG_POOL_ARGS = "x_shape, kernel, stride, padding, ceil_mode"


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(AVG_POOL_ARGS, AVG_POOL_CASES)
def test_avg_pool_matches_loops(x_shape, kernel, stride, padding, ceil_mode,
                                count_include_pad, impl):
    nd = len(x_shape) - 2
    op = ops(nd, impl)
    x = pool_input(x_shape, "random", seed=9)
    y = op["avg_pool"](x, kernel, stride, padding, ceil_mode, count_include_pad)
    want = loops.avg_pool2d(to4d(x, nd), pair(kernel, nd, 1), pair(stride, nd, 1),
                            pair(padding, nd, 0), ceil_mode, count_include_pad)
    assert_close(y, from4d(want, nd), n_terms=np.prod(kernel))

    # Average pooling is linear: its gradient is its adjoint.
    gy = np.random.default_rng(10).standard_normal(y.shape)
    gx = op["avg_pool_grad"](gy, x_shape, kernel, stride, padding, ceil_mode,
                             count_include_pad)
    assert gx.shape == x_shape
    assert_close(np.vdot(x, gx), np.vdot(y, gy), n_terms=x.size)
    # And column by column: the gradient of output o is row o of the operator.
    basis = np.eye(x.size).reshape((x.size,) + x_shape)
    operator = np.stack([op["avg_pool"](e, kernel, stride, padding, ceil_mode,
                                        count_include_pad).ravel() for e in basis], axis=1)
    assert_close(gx.ravel(), operator.T @ gy.ravel(), n_terms=np.prod(kernel))


def test_avg_pool_divisor_rule():
    # L=6, k=3, s=2, p=1, ceil: windows [-1,2), [1,4), [3,6), [5,8) clipped to
    # [5,7): divisors 3, 3, 3, 2 with padding counted, 2, 3, 3, 1 without.
    x = np.ones((1, 1, 6))
    assert_close(ref.avg_pool1d(x, 3, 2, 1, ceil_mode=True),
                               [[[2 / 3, 1.0, 1.0, 0.5]]], rtol=1e-15)
    assert_close(
        ref.avg_pool1d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
        [[[1.0, 1.0, 1.0, 1.0]]], rtol=1e-15)


# -- worked examples --------------------------------------------------------------


def test_conv1d_worked_example():
    y = ref.conv1d(np.array([[[3.0, 4.0, 5.0]]]), np.array([[[1.0, 2.0]]]))
    np.testing.assert_array_equal(y, [[[11.0, 14.0]]])
    gw = ref.conv1d_weight(np.array([[[3.0, 4.0, 5.0]]]), (1, 1, 2),
                           np.array([[[1.0, -1.0]]]))
    np.testing.assert_array_equal(gw, [[[-1.0, -1.0]]])
    gx = ref.conv1d_input((1, 1, 3), np.array([[[1.0, 2.0]]]), np.array([[[1.0, -1.0]]]))
    np.testing.assert_array_equal(gx, [[[1.0, 1.0, -2.0]]])
    np.testing.assert_array_equal(ref.conv_bias(np.array([[[1.0, -1.0]]])), [0.0])


def test_max_pool2d_worked_example():
    x = np.array([[1, 3, 2, 4],
                  [5, 6, 7, 8],
                  [9, 2, 1, 0],
                  [4, 5, 6, 7]], dtype=float)[None, None]
    y, idx = ref.max_pool2d(x, 2, 2, return_indices=True)
    np.testing.assert_array_equal(y, [[[[6, 8], [9, 7]]]])
    np.testing.assert_array_equal(idx, [[[[5, 7], [8, 15]]]])
    a, b, c, d = 1.5, -2.0, 3.25, 7.0
    gx = ref.max_pool2d_grad(np.array([[[[a, b], [c, d]]]]), idx, x.shape)
    want = np.zeros((4, 4))
    want[1, 1], want[1, 3], want[2, 0], want[3, 3] = a, b, c, d
    np.testing.assert_array_equal(gx[0, 0], want)


def test_max_pool_grad_accumulates_overlapping_windows():
    # k=3, s=1 on a plane whose maximum sits in the middle: all 9 windows pick it.
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0
    y, idx = ref.max_pool2d(x, 3, 1, return_indices=True)
    np.testing.assert_array_equal(idx, np.full((1, 1, 3, 3), 12))
    gx = ref.max_pool2d_grad(np.ones_like(y), idx, x.shape)
    assert gx[0, 0, 2, 2] == 9.0
    assert gx.sum() == 9.0


# -- dtypes, empty batches, errors ---------------------------------------------------


def test_dtypes():
    rng = np.random.default_rng(11)
    x32 = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w32 = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    y = ref.conv2d(x32, w32, np.zeros(3, np.float32), padding=1)
    assert y.dtype == np.float32
    assert_close(
        y, loops.conv2d(x32.astype(float), w32.astype(float), None, (1, 1), (1, 1),
                        (1, 1), (1, 1), 1), n_terms=w32[0].size)
    assert ref.conv2d_input(x32.shape, w32, y, padding=1).dtype == np.float32
    assert ref.conv2d_weight(x32, w32.shape, y, padding=1).dtype == np.float32
    assert ref.conv2d(x32, w32.astype(np.float64)).dtype == np.float64
    xi = np.arange(25).reshape(1, 1, 5, 5)
    assert ref.conv2d(xi, np.ones((1, 1, 2, 2), dtype=bool)).dtype == np.float64
    assert ref.max_pool2d(xi, 2).dtype == np.float64
    assert ref.avg_pool2d(x32, 2).dtype == np.float32
    y, idx = ref.max_pool2d(x32, 2, return_indices=True)
    assert ref.max_pool2d_grad(y, idx, x32.shape).dtype == np.float32
    assert ref.avg_pool2d_grad(y, x32.shape, 2).dtype == np.float32
    with pytest.raises(TypeError, match="Expected input to have a float32"):
        ref.conv2d(x32.astype(np.complex64), w32)


def test_empty_batch():
    w = np.ones((4, 1, 3, 3))
    assert ref.conv2d(np.zeros((0, 2, 6, 6)), w, groups=2).shape == (0, 4, 4, 4)
    assert ref.conv2d_input((0, 2, 6, 6), w, np.zeros((0, 4, 4, 4)), groups=2).shape == (
        0, 2, 6, 6)
    gw = ref.conv2d_weight(np.zeros((0, 2, 6, 6)), w.shape, np.zeros((0, 4, 4, 4)),
                           groups=2)
    np.testing.assert_array_equal(gw, np.zeros(w.shape))
    assert ref.conv_transpose1d(np.zeros((0, 4, 5)), np.ones((4, 1, 3)),
                                groups=2).shape == (0, 2, 7)
    y, idx = ref.max_pool2d(np.zeros((0, 3, 4, 4)), 2, return_indices=True)
    assert y.shape == idx.shape == (0, 3, 2, 2)
    assert ref.max_pool2d_grad(y, idx, (0, 3, 4, 4)).shape == (0, 3, 4, 4)
    assert ref.avg_pool1d(np.zeros((0, 2, 5)), 2).shape == (0, 2, 2)
    assert ref.avg_pool1d_grad(np.zeros((0, 2, 2)), (0, 2, 5), 2).shape == (0, 2, 5)
    np.testing.assert_array_equal(ref.conv_bias(np.zeros((0, 3, 2))), np.zeros(3))


def test_non_contiguous_and_read_only_inputs():
    rng = np.random.default_rng(12)
    base = rng.standard_normal((2, 3, 8, 10))
    base.flags.writeable = False
    x = base[:, :, ::2, 1::2]  # strided view, read-only
    w = rng.standard_normal((2, 3, 2, 2))
    assert_close(ref.conv2d(x, w), loops.conv2d(x, w, None, (1, 1), (0, 0), (0, 0),
                                                (1, 1), 1), n_terms=12)
    y = ref.max_pool2d(x, 2)
    np.testing.assert_array_equal(y, loops.max_pool2d(x, (2, 2), (2, 2), (0, 0), (1, 1),
                                                      False)[0])
    assert not base.flags.writeable


def test_validation_errors():
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    with pytest.raises(ValueError, match="Expected input of 4 dimensions"):
        ref.conv2d(x[0], w)
    with pytest.raises(ValueError, match="Expected weight of 3 dimensions"):
        ref.conv1d(np.ones((1, 2, 5)), w)
    with pytest.raises(ValueError, match="Expected bias of shape"):
        ref.conv2d(x, w, np.ones(2))
    with pytest.raises(ValueError, match="Expected grad_output of shape"):
        ref.conv2d_input(x.shape, w, np.ones((1, 3, 4, 3)))
    with pytest.raises(ValueError, match="Expected grad_output of shape"):
        ref.conv2d_weight(x, w.shape, np.ones((1, 3, 3, 4)))
    with pytest.raises(ValueError, match="Expected grad_output of shape"):
        ref.conv_transpose2d_input((1, 3, 3, 3), np.ones((3, 2, 3, 3)),
                                   np.ones((1, 2, 6, 5)))
    with pytest.raises(TypeError, match="Expected input_size to be a tuple"):
        ref.conv2d_input(np.array(x.shape), w, np.ones((1, 3, 3, 3)))
    with pytest.raises(ValueError, match="Expected grad_output of at least 2"):
        ref.conv_bias(np.ones(3))

    gy = np.ones((1, 2, 2, 2))
    idx = np.zeros((1, 2, 2, 2), dtype=np.int64)
    with pytest.raises(TypeError, match="Expected integer indices"):
        ref.max_pool2d_grad(gy, idx.astype(float), (1, 2, 4, 4))
    with pytest.raises(ValueError, match="Expected indices of shape"):
        ref.max_pool2d_grad(gy, idx[:, :1], (1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"Expected indices in \[0, 16\)"):
        ref.max_pool2d_grad(gy, idx + 16, (1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"Expected indices in \[0, 16\)"):
        ref.max_pool2d_grad(gy, idx - 1, (1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"Expected grad_output with \(N, C\) = \(1, 3\) from input_size"):
        ref.max_pool2d_grad(gy, idx, (1, 3, 4, 4))
    with pytest.raises(ValueError, match="Expected grad_output of shape"):
        ref.avg_pool2d_grad(gy, (1, 2, 5, 5), 2, 1)


# -- PyTorch, when importable --------------------------------------------------------


def torch_conv_setup(torch, x, nd, padding, begin, end):
    """PyTorch takes 'same'/'valid' directly; explicit pads go through F.pad."""
    F = torch.nn.functional
    xt = torch.tensor(x, requires_grad=True)
    if isinstance(padding, str):
        return xt, xt, padding
    pads = []  # F.pad lists the last axis first
    for axis in reversed(range(2 - nd, 2)):
        pads += [begin[axis], end[axis]]
    return xt, F.pad(xt, pads), 0


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize(CONV_ARGS, CONV_CASES)
def test_conv_matches_torch(x_shape, w_shape, stride, padding, dilation, groups, begin,
                            end):
    torch = pytest.importorskip("torch")
    nd = len(x_shape) - 2
    op = ops(nd)
    F = torch.nn.functional
    x, w, b = conv_data(x_shape, w_shape, seed=13)
    xt, xin, tpad = torch_conv_setup(torch, x, nd, padding, begin, end)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    conv = F.conv1d if nd == 1 else F.conv2d
    yt = conv(xin, wt, bt, stride, tpad, dilation, groups)
    y = op["conv"](x, w, b, stride, padding, dilation, groups)
    assert_close(y, yt.detach().numpy(), n_terms=w[0].size + 1)

    gy = np.random.default_rng(14).standard_normal(y.shape)
    yt.backward(torch.tensor(gy))
    assert_close(op["conv_input"](x_shape, w, gy, stride, padding, dilation, groups),
                 xt.grad.numpy(), n_terms=w.shape[0] // groups * w[0, 0].size)
    assert_close(op["conv_weight"](x, w_shape, gy, stride, padding, dilation, groups),
                 wt.grad.numpy(), n_terms=gy[:, 0].size)
    assert_close(ref.conv_bias(gy), bt.grad.numpy(), n_terms=gy[:, 0].size)


@pytest.mark.parametrize(TRANSPOSE_ARGS, TRANSPOSE_CASES)
def test_conv_transpose_matches_torch(x_shape, w_shape, stride, padding, output_padding,
                                      groups, dilation):
    torch = pytest.importorskip("torch")
    nd = len(x_shape) - 2
    op = ops(nd)
    F = torch.nn.functional
    x, w, _ = conv_data(x_shape, w_shape, seed=15)
    b = np.random.default_rng(16).standard_normal(w_shape[1] * groups)
    args = (stride, padding, output_padding, groups, dilation)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    tconv = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
    yt = tconv(xt, wt, torch.tensor(b), *args)
    y = op["conv_transpose"](x, w, b, *args)
    assert_close(y, yt.detach().numpy(), n_terms=w.shape[0] // groups * w[0, 0].size + 1)

    gy = np.random.default_rng(17).standard_normal(y.shape)
    yt.backward(torch.tensor(gy))
    assert_close(op["conv_transpose_input"](x_shape, w, gy, *args), xt.grad.numpy(),
                 n_terms=w[0].size)
    assert_close(op["conv_transpose_weight"](x, w_shape, gy, *args), wt.grad.numpy(),
                 n_terms=x[:, 0].size)


@pytest.mark.parametrize(MAX_POOL_ARGS, MAX_POOL_CASES)
def test_max_pool_matches_torch(x_shape, kernel, stride, padding, dilation, ceil_mode,
                                kind):
    torch = pytest.importorskip("torch")
    nd = len(x_shape) - 2
    op = ops(nd)
    pool = torch.nn.functional.max_pool1d if nd == 1 else torch.nn.functional.max_pool2d
    x = pool_input(x_shape, kind, seed=18)
    xt = torch.tensor(x, requires_grad=True)
    yt, it = pool(xt, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    y, idx = op["max_pool"](x, kernel, stride, padding, dilation, ceil_mode,
                            return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())

    gy = np.random.default_rng(19).standard_normal(y.shape)
    yt.backward(torch.tensor(gy))
    assert_close(op["max_pool_grad"](gy, idx, x_shape), xt.grad.numpy(),
                 n_terms=np.prod(kernel))


def test_max_pool_window_without_input_element_torch_index_is_out_of_range():
    """Why fastconv rejects this geometry: PyTorch's index points outside the plane."""
    torch = pytest.importorskip("torch")
    _, it = torch.nn.functional.max_pool2d(torch.full((1, 1, 1, 1), 5.0), 2, 1, 1, 2,
                                           return_indices=True)
    assert int(it) >= 1


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(AVG_POOL_ARGS, AVG_POOL_CASES)
def test_avg_pool_matches_torch(x_shape, kernel, stride, padding, ceil_mode,
                                count_include_pad):
    torch = pytest.importorskip("torch")
    nd = len(x_shape) - 2
    op = ops(nd)
    pool = torch.nn.functional.avg_pool1d if nd == 1 else torch.nn.functional.avg_pool2d
    x = pool_input(x_shape, "random", seed=20)
    xt = torch.tensor(x, requires_grad=True)
    yt = pool(xt, kernel, stride, padding, ceil_mode, count_include_pad)
    y = op["avg_pool"](x, kernel, stride, padding, ceil_mode, count_include_pad)
    assert_close(y, yt.detach().numpy(), n_terms=np.prod(kernel))

    gy = np.random.default_rng(21).standard_normal(y.shape)
    yt.backward(torch.tensor(gy))
    assert_close(op["avg_pool_grad"](gy, x_shape, kernel, stride, padding, ceil_mode,
                                     count_include_pad), xt.grad.numpy(),
                 n_terms=np.prod(kernel))


@pytest.mark.parametrize("seed", range(40))
def test_random_convolutions_match_torch(seed):
    """Random geometries, including the ones no hand-written case thought of."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(100 + seed)
    nd = int(rng.integers(1, 3))
    op = ops(nd)
    groups = int(rng.integers(1, 4))
    cg, og = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    k = tuple(int(v) for v in rng.integers(1, 4, nd))
    s = tuple(int(v) for v in rng.integers(1, 4, nd))
    d = tuple(int(v) for v in rng.integers(1, 3, nd))
    p = tuple(int(v) for v in rng.integers(0, 3, nd))
    size = tuple(int(rng.integers(max(1, di * (ki - 1) + 1 - 2 * pi), 9))
                 for ki, di, pi in zip(k, d, p))
    x = rng.standard_normal((2, cg * groups) + size)
    w = rng.standard_normal((og * groups, cg) + k)
    conv = F.conv1d if nd == 1 else F.conv2d
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = conv(xt, wt, None, s, p, d, groups)
    y = op["conv"](x, w, None, s, p, d, groups)
    assert_close(y, yt.detach().numpy(), n_terms=w[0].size)
    gy = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(gy))
    assert_close(op["conv_input"](x.shape, w, gy, s, p, d, groups), xt.grad.numpy(),
                 n_terms=og * w[0, 0].size)
    assert_close(op["conv_weight"](x, w.shape, gy, s, p, d, groups), wt.grad.numpy(),
                 n_terms=gy[:, 0].size)

    # The same weight read as a transposed convolution's (C_in, C_out/groups, k).
    wT = rng.standard_normal((cg * groups, og) + k)
    xs = rng.standard_normal((2, cg * groups) + tuple(int(v) for v in rng.integers(1, 5, nd)))
    opad = tuple(int(rng.integers(0, max(si, di))) for si, di in zip(s, d))
    tconv = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
    xt, wt = torch.tensor(xs, requires_grad=True), torch.tensor(wT, requires_grad=True)
    try:
        yt = tconv(xt, wt, None, s, p, opad, groups, d)
        empty = min(yt.shape[2:]) < 1
    except RuntimeError:  # PyTorch returns an empty output or fails obscurely
        empty = True
    if empty:
        with pytest.raises(ValueError, match="positive output size"):
            op["conv_transpose"](xs, wT, None, s, p, opad, groups, d)
        return
    y = op["conv_transpose"](xs, wT, None, s, p, opad, groups, d)
    assert_close(y, yt.detach().numpy(), n_terms=cg * wT[0, 0].size)
    gy = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(gy))
    assert_close(op["conv_transpose_input"](xs.shape, wT, gy, s, p, opad, groups, d),
                 xt.grad.numpy(), n_terms=wT[0].size)
    assert_close(op["conv_transpose_weight"](xs, wT.shape, gy, s, p, opad, groups, d),
                 wt.grad.numpy(), n_terms=xs[:, 0].size)
