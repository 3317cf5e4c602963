"""Max and average pooling, forward and gradient, against the NumPy reference,
textbook loops, PyTorch (when importable) and central differences."""

import loops
import numpy as np
import pytest
from conftest import assert_close
from test_conv import numerical_grad

import fastconv
from fastconv import reference as ref

DTYPES = [np.float32, np.float64]

# (shape, kernel_size, stride, padding, dilation, ceil_mode)
MAX2D_CASES = [
    ((2, 3, 8, 8), 2, None, 0, 1, False),
    ((2, 3, 9, 11), 3, 2, 1, 1, True),  # ceil_mode, last window partly in padding
    ((1, 2, 10, 10), 3, 2, 1, 2, False),  # dilation with stride
    ((1, 2, 7, 7), 2, 3, 1, 1, True),  # stride > kernel, ceil_mode
    ((2, 1, 6, 9), (2, 3), (1, 2), (1, 0), (2, 1), True),  # per-axis tuples
    ((1, 1, 5, 5), 4, 1, 2, 1, True),  # ceil window starting in padding dropped
    ((1, 2, 112, 112), 3, 2, 1, 1, False),
]
MAX1D_CASES = [
    ((2, 3, 20), 2, None, 0, 1, False),
    ((2, 2, 13), 3, 2, 1, 2, True),
    ((1, 1, 9), 4, 3, 2, 1, True),
]
# (shape, kernel_size, stride, padding, ceil_mode, count_include_pad)
AVG2D_CASES = [
    ((2, 3, 8, 8), 2, None, 0, False, True),
    ((2, 3, 9, 11), 3, 2, 1, True, True),
    ((2, 3, 9, 11), 3, 2, 1, True, False),
    ((1, 2, 7, 7), (3, 2), (2, 3), (1, 1), True, False),
    ((1, 1, 5, 5), 4, 3, 2, True, True),  # windows running past the padding
    ((1, 1, 5, 5), 4, 3, 2, True, False),
]
AVG1D_CASES = [
    ((2, 3, 20), 2, None, 0, False, True),
    ((2, 2, 13), 3, 2, 1, True, False),
    ((1, 1, 10), 4, 3, 2, True, True),
]

MAX_PARAMS = [(2, c) for c in MAX2D_CASES] + [(1, c) for c in MAX1D_CASES]
AVG_PARAMS = [(2, c) for c in AVG2D_CASES] + [(1, c) for c in AVG1D_CASES]


def _max_kwargs(case):
    return dict(kernel_size=case[1], stride=case[2], padding=case[3], dilation=case[4],
                ceil_mode=case[5])


def _avg_kwargs(case):
    return dict(kernel_size=case[1], stride=case[2], padding=case[3], ceil_mode=case[4],
                count_include_pad=case[5])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd,case", MAX_PARAMS)
def test_max_pool_matches_reference(nd, case, dtype, rng):
    # Rounded values make ties, which must resolve like the reference.
    x = np.round(rng.standard_normal(case[0]) * 2).astype(dtype)
    kw = _max_kwargs(case)
    y, idx = getattr(fastconv, f"max_pool{nd}d")(x, return_indices=True, **kw)
    y_ref, idx_ref = getattr(ref, f"max_pool{nd}d")(x, return_indices=True, **kw)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(getattr(fastconv, f"max_pool{nd}d")(x, **kw), y)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = getattr(fastconv.grad, f"max_pool{nd}d")(gy, idx, x.shape)
    gx_ref = getattr(ref.grad, f"max_pool{nd}d")(gy, idx, x.shape)
    assert_close(gx, gx_ref, n_terms=4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd,case", AVG_PARAMS)
def test_avg_pool_matches_reference(nd, case, dtype, rng):
    x = rng.standard_normal(case[0]).astype(dtype)
    kw = _avg_kwargs(case)
    y = getattr(fastconv, f"avg_pool{nd}d")(x, **kw)
    assert y.dtype == dtype
    assert_close(y, getattr(ref, f"avg_pool{nd}d")(x, **kw), n_terms=9)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = getattr(fastconv.grad, f"avg_pool{nd}d")(gy, x.shape, **kw)
    assert_close(gx, getattr(ref.grad, f"avg_pool{nd}d")(gy, x.shape, **kw), n_terms=9)


# -- textbook loops ----------------------------------------------------------


@pytest.mark.parametrize("k,s,p,d", [(2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 1, 2), (2, 3, 1, 1)])
def test_max_pool2d_matches_textbook_loops(k, s, p, d, rng):
    x = np.round(rng.standard_normal((2, 2, 7, 8)))
    x[0, 0, 1, 1] = np.nan
    x[1, 1, :3, :3] = -np.inf
    y, idx = fastconv.max_pool2d(x, k, s, p, d, return_indices=True)
    y_loop, idx_loop = loops.max_pool2d(x, (k, k), (s, s), (p, p), (d, d), False)
    np.testing.assert_array_equal(y, y_loop)
    np.testing.assert_array_equal(idx, idx_loop)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [29, 75])
@pytest.mark.parametrize("k,s,p,d", [(3, 1, 1, 1), (3, 2, 1, 1), (2, 2, 0, 1), (2, 1, 0, 1),
                                     (3, 1, 0, 1), (2, 2, 1, 1), (3, 3, 0, 1), (3, 2, 1, 2),
                                     ((2, 4), (1, 5), (1, 2), (1, 1))])
def test_max_pool2d_wide_rows_match_textbook_loops(k, s, p, d, width, dtype, rng):
    # Rows wide enough for the vectorised interior and its remainder, with ties
    # (small integers), NaNs and -inf runs scattered through them. Square 2x2
    # and 3x3 windows at stride 1 or 2 take the unrolled row kernel; at width
    # 75 its interior spans two or more vectors of every ISA build (and ends
    # in an overlapping last vector), at width 29 less.
    x = rng.integers(-3, 4, size=(2, 2, 9, width)).astype(dtype)
    x[rng.random(x.shape) < 0.03] = np.nan
    x[rng.random(x.shape) < 0.05] = -np.inf
    x[1, 0, 2:6, 10:30] = -np.inf
    kk, ss, pp, dd = (v if isinstance(v, tuple) else (v, v) for v in (k, s, p, d))
    y, idx = fastconv.max_pool2d(x, k, s, p, d, return_indices=True)
    y_loop, idx_loop = loops.max_pool2d(x, kk, ss, pp, dd, False)
    np.testing.assert_array_equal(y, y_loop)
    np.testing.assert_array_equal(idx, idx_loop)
    np.testing.assert_array_equal(fastconv.max_pool2d(x, k, s, p, d), y_loop)


@pytest.mark.parametrize("k,s,p,ceil_mode", [(3, 1, 1, False), (3, 2, 1, True), (2, 2, 0, False),
                                           (2, 1, 0, False), (3, 3, 1, True),
                                           ((2, 4), (1, 5), (1, 2), True),
                                           ((4, 3), (3, 2), (1, 1), False),
                                           ((1, 2), (1, 2), (0, 1), True),
                                           # windows that tile the input, but for
                                           # the last rows and columns
                                           (3, 3, 0, False), ((3, 2), (3, 2), 0, False),
                                           # ... or run past it (ceil_mode)
                                           (2, 2, 0, True)])
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("width", [53, 75])
def test_avg_pool2d_wide_rows(k, s, p, ceil_mode, count_include_pad, width, rng):
    # Rows wide enough for the vectorised interior and its remainder (and, at
    # width 75, for the unrolled 2x2 and 3x3 rows to end in an overlapping
    # vector): the forward against textbook loops, the gradient against the
    # reference and as the forward's adjoint, <gy, avg(x)> == <avg_grad(gy), x>.
    x = rng.standard_normal((2, 2, 9, width))
    kk, ss, pp = (v if isinstance(v, tuple) else (v, v) for v in (k, s, p))
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil_mode,
              count_include_pad=count_include_pad)
    y = fastconv.avg_pool2d(x, **kw)
    assert_close(y, loops.avg_pool2d(x, kk, ss, pp, ceil_mode, count_include_pad),
                 n_terms=kk[0] * kk[1])
    gy = rng.standard_normal(y.shape)
    gx = fastconv.grad.avg_pool2d(gy, x.shape, **kw)
    assert_close(gx, ref.grad.avg_pool2d(gy, x.shape, **kw), n_terms=kk[0] * kk[1])
    assert_close(np.vdot(gy, y), np.vdot(gx, x), n_terms=x.size * kk[0] * kk[1],
                 scale=float(np.vdot(np.abs(gx), np.abs(x))))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [
    (2, 2, 29, 28),  # LeNet's 14 outputs a row, and a last input row no window reads
    (3, 2, 16, 32),  # 16 outputs a row
    (2, 2, 1041, 8),  # 4 outputs a row, in several bands of rows
    (1, 2, 6, 224),  # rows of two vectors or more
])
def test_2x2_pooling_of_whole_row_pairs(shape, dtype, rng):
    # 2x2 windows at stride 2 that tile whole pairs of input rows: pooled as
    # flat rows, bands of output rows at a time; with ties, NaNs and -inf.
    x = rng.integers(-3, 4, size=shape).astype(dtype)
    x[rng.random(x.shape) < 0.03] = np.nan
    x[rng.random(x.shape) < 0.05] = -np.inf
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    y_loop, idx_loop = loops.max_pool2d(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    np.testing.assert_array_equal(y, y_loop)
    np.testing.assert_array_equal(idx, idx_loop)
    np.testing.assert_array_equal(fastconv.max_pool2d(x, 2), y_loop)
    x = rng.standard_normal(shape).astype(dtype)
    assert_close(fastconv.avg_pool2d(x, 2),
                 loops.avg_pool2d(x, (2, 2), (2, 2), (0, 0), False, True), n_terms=4)


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_matches_textbook_loops(k, s, p, count_include_pad, rng):
    x = rng.standard_normal((2, 2, 7, 8))
    y = fastconv.avg_pool2d(x, k, s, p, count_include_pad=count_include_pad)
    assert_close(y, loops.avg_pool2d(x, (k, k), (s, s), (p, p), False, count_include_pad),
                 n_terms=k * k)


# -- the rules ---------------------------------------------------------------


def test_seed_max_pool_example_and_routing():
    x = np.array([[[[1, 3, 2, 4], [5, 6, 7, 8], [9, 2, 1, 0], [4, 5, 6, 7]]]], float)
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y[0, 0], [[6, 8], [9, 7]])
    a, b, c, d = 1.5, -2.0, 3.25, 4.0
    gx = fastconv.grad.max_pool2d(np.array([[[[a, b], [c, d]]]]), idx, x.shape)
    expected = np.zeros((4, 4))
    expected[1, 1], expected[1, 3], expected[2, 0], expected[3, 3] = a, b, c, d
    np.testing.assert_array_equal(gx[0, 0], expected)


def test_max_pool_ties_nan_and_neg_inf():
    x = np.array([[[[1.0, 1.0, -np.inf, -np.inf],
                    [1.0, 0.0, -np.inf, -np.inf],
                    [np.nan, 2.0, 5.0, np.nan],
                    [3.0, np.nan, 5.0, 5.0]]]])
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    assert idx[0, 0, 0, 0] == 0  # tie: first maximum in row-major order
    assert y[0, 0, 0, 1] == -np.inf and idx[0, 0, 0, 1] == 2  # all -inf: a real index
    assert np.isnan(y[0, 0, 1, 0]) and idx[0, 0, 1, 0] == 13  # NaN wins (the last)
    assert np.isnan(y[0, 0, 1, 1]) and idx[0, 0, 1, 1] == 11
    # padding (-inf) never wins, even over an all -inf window
    x = np.full((1, 1, 3, 3), -np.inf)
    y, idx = fastconv.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    assert np.all(y == -np.inf)
    assert np.all((idx >= 0) & (idx < 9))


def test_max_pool_gradient_accumulates_on_overlap():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0  # the centre wins all four overlapping windows
    y, idx = fastconv.max_pool2d(x, 2, stride=1, return_indices=True)
    assert np.all(idx == 4)
    gx = fastconv.grad.max_pool2d(np.ones_like(y), idx, x.shape)
    assert gx[0, 0, 1, 1] == 4.0 and gx.sum() == 4.0


def test_max_pool_gradient_is_bounds_checked():
    gy = np.ones((1, 1, 2, 2))
    idx = np.array([[[[0, 1], [2, 16]]]])
    with pytest.raises(ValueError, match="indices"):
        fastconv.grad.max_pool2d(gy, idx, (1, 1, 4, 4))
    with pytest.raises(ValueError, match="indices"):
        fastconv.grad.max_pool2d(gy, -idx, (1, 1, 4, 4))


# -- central differences ------------------------------------------------------


@pytest.mark.parametrize("nd,case", [(2, MAX2D_CASES[1]), (2, MAX2D_CASES[4]),
                                     (1, MAX1D_CASES[1])])
def test_max_pool_gradient_central_differences(nd, case, rng):
    # Distinct values, so a small perturbation never changes a window's winner.
    x = rng.permutation(np.prod(case[0])).reshape(case[0]).astype(np.float64)
    kw = _max_kwargs(case)
    op = getattr(fastconv, f"max_pool{nd}d")
    y, idx = op(x, return_indices=True, **kw)
    gy = rng.standard_normal(y.shape)
    assert_close(getattr(fastconv.grad, f"max_pool{nd}d")(gy, idx, x.shape),
                               numerical_grad(lambda a: op(a, **kw), x, gy, eps=1e-3),
                               rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("nd,case", [(2, AVG2D_CASES[2]), (2, AVG2D_CASES[4]),
                                     (1, AVG1D_CASES[1])])
def test_avg_pool_gradient_central_differences(nd, case, rng):
    x = rng.standard_normal(case[0])
    kw = _avg_kwargs(case)
    op = getattr(fastconv, f"avg_pool{nd}d")
    y = op(x, **kw)
    gy = rng.standard_normal(y.shape)
    assert_close(getattr(fastconv.grad, f"avg_pool{nd}d")(gy, x.shape, **kw),
                               numerical_grad(lambda a: op(a, **kw), x, gy),
                               rtol=1e-6, atol=1e-8)


# -- PyTorch ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd,case", MAX_PARAMS)
def test_max_pool_matches_torch(nd, case, dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.round(rng.standard_normal(case[0]) * 2).astype(dtype)
    x.reshape(-1)[:: 7] = np.nan
    kw = _max_kwargs(case)
    tx = torch.tensor(x, requires_grad=True)
    ty, tidx = getattr(F, f"max_pool{nd}d")(tx, kw["kernel_size"], kw["stride"],
                                            kw["padding"], kw["dilation"],
                                            ceil_mode=kw["ceil_mode"], return_indices=True)
    y, idx = getattr(fastconv, f"max_pool{nd}d")(x, return_indices=True, **kw)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    gy = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.tensor(gy))
    assert_close(getattr(fastconv.grad, f"max_pool{nd}d")(gy, idx, x.shape),
                 tx.grad.numpy(), n_terms=4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd,case", AVG_PARAMS)
def test_avg_pool_matches_torch(nd, case, dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal(case[0]).astype(dtype)
    kw = _avg_kwargs(case)
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(F, f"avg_pool{nd}d")(tx, kw["kernel_size"], kw["stride"], kw["padding"],
                                      kw["ceil_mode"], kw["count_include_pad"])
    y = getattr(fastconv, f"avg_pool{nd}d")(x, **kw)
    assert_close(y, ty.detach().numpy(), n_terms=9)
    gy = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.tensor(gy))
    assert_close(getattr(fastconv.grad, f"avg_pool{nd}d")(gy, x.shape, **kw),
                 tx.grad.numpy(), n_terms=9)
