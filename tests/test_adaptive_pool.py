"""Adaptive average pooling: fastconv vs the bin-matrix reference, explicit
loops and PyTorch, forward and gradient, divisible and non-divisible sizes."""

import math

import numpy as np
import pytest
from conftest import assert_close

import fastconv
from fastconv import nn, reference

# (input spatial size, output_size): divisible, non-divisible (overlapping
# bins), output larger than the input, global, None entries.
CASES_2D = [
    ((8, 8), 4), ((8, 8), (2, 4)), ((7, 5), (3, 2)), ((10, 7), (4, 3)), ((5, 5), 1),
    ((7, 7), (1, 1)), ((2, 3), (5, 7)), ((6, 9), (None, 4)), ((6, 9), None),
    ((1, 1), 3), ((13, 11), (5, 6)),
]
CASES_1D = [(8, 4), (11, 4), (7, 1), (3, 5), (9, None), (10, 3), (6, 6)]


def _bin(i, n, m):
    return (i * n) // m, math.ceil((i + 1) * n / m)


def loops_2d(x, out):
    """The definition, one output element at a time."""
    n_b, c, h, w = x.shape
    oh, ow = out
    y = np.zeros((n_b, c, oh, ow))
    for n in range(n_b):
        for ch in range(c):
            for i in range(oh):
                h0, h1 = _bin(i, h, oh)
                for j in range(ow):
                    w0, w1 = _bin(j, w, ow)
                    acc = 0.0
                    for p in range(h0, h1):
                        for q in range(w0, w1):
                            acc += x[n, ch, p, q]
                    y[n, ch, i, j] = acc / ((h1 - h0) * (w1 - w0))
    return y


def loops_2d_grad(gy, size):
    n_b, c, h, w = size
    oh, ow = gy.shape[2:]
    gx = np.zeros(size)
    for n in range(n_b):
        for ch in range(c):
            for i in range(oh):
                h0, h1 = _bin(i, h, oh)
                for j in range(ow):
                    w0, w1 = _bin(j, w, ow)
                    share = gy[n, ch, i, j] / ((h1 - h0) * (w1 - w0))
                    for p in range(h0, h1):
                        for q in range(w0, w1):
                            gx[n, ch, p, q] += share
    return gx


def _resolved(size, out, nd):
    out = (out,) * nd if not isinstance(out, tuple) else out
    return tuple(s if o is None else o for s, o in zip(size, out))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size, out", CASES_2D)
def test_2d_matches_loops_and_reference(size, out, dtype, rng):
    x = rng.standard_normal((2, 3) + size).astype(dtype)
    resolved = _resolved(size, out, 2)
    y = fastconv.adaptive_avg_pool2d(x, out)
    assert y.dtype == dtype and y.shape == (2, 3) + resolved and y.flags.c_contiguous
    n_terms = math.ceil(size[0] / resolved[0] + 1) * math.ceil(size[1] / resolved[1] + 1)
    expected = loops_2d(x.astype(np.float64), resolved)
    assert_close(y, expected, n_terms=n_terms)
    assert_close(reference.adaptive_avg_pool2d(x, out), expected, n_terms=n_terms)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = fastconv.grad.adaptive_avg_pool2d(gy, x.shape)
    assert gx.dtype == dtype and gx.shape == x.shape and gx.flags.c_contiguous
    g_expected = loops_2d_grad(gy.astype(np.float64), x.shape)
    assert_close(gx, g_expected, n_terms=n_terms)
    assert_close(reference.grad.adaptive_avg_pool2d(gy, x.shape), g_expected,
                 n_terms=n_terms)
    # output_size given to the gradient is checked and gives the same result
    assert np.array_equal(fastconv.grad.adaptive_avg_pool2d(gy, x.shape, out), gx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length, out", CASES_1D)
def test_1d_is_the_2d_op_with_one_row(length, out, dtype, rng):
    x = rng.standard_normal((3, 2, length)).astype(dtype)
    (resolved,) = _resolved((length,), out, 1)
    y = fastconv.adaptive_avg_pool1d(x, out)
    expected = loops_2d(x[:, :, None, :].astype(np.float64), (1, resolved))[:, :, 0]
    n_terms = math.ceil(length / resolved + 1)
    assert y.shape == (3, 2, resolved) and y.dtype == dtype
    assert_close(y, expected, n_terms=n_terms)
    assert_close(reference.adaptive_avg_pool1d(x, out), expected, n_terms=n_terms)
    gy = rng.standard_normal(y.shape).astype(dtype)
    g_expected = loops_2d_grad(gy[:, :, None, :].astype(np.float64),
                               (3, 2, 1, length))[:, :, 0]
    assert_close(fastconv.grad.adaptive_avg_pool1d(gy, x.shape), g_expected, n_terms=n_terms)
    assert_close(reference.grad.adaptive_avg_pool1d(gy, x.shape), g_expected,
                 n_terms=n_terms)


def test_gradient_matches_central_differences(rng):
    x = rng.standard_normal((1, 2, 7, 5))
    gy = rng.standard_normal((1, 2, 3, 4))
    gx = fastconv.grad.adaptive_avg_pool2d(gy, x.shape)
    eps = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        numeric[i] = np.sum((fastconv.adaptive_avg_pool2d(x + d, (3, 4))
                             - fastconv.adaptive_avg_pool2d(x - d, (3, 4))) * gy) / (2 * eps)
    np.testing.assert_allclose(gx, numeric, rtol=1e-7, atol=1e-9)


def test_empty_batch_and_noncontiguous_input(rng):
    assert fastconv.adaptive_avg_pool2d(np.zeros((0, 3, 7, 7)), 3).shape == (0, 3, 3, 3)
    assert fastconv.grad.adaptive_avg_pool2d(np.zeros((0, 3, 3, 3)), (0, 3, 7, 7)).shape == (
        0, 3, 7, 7)
    x = rng.standard_normal((2, 3, 9, 8))[:, :, ::2, ::-1]
    assert_close(fastconv.adaptive_avg_pool2d(x, (2, 3)), loops_2d(x, (2, 3)), n_terms=8)


def test_integer_input_is_float64():
    y = fastconv.adaptive_avg_pool2d(np.arange(16).reshape(1, 1, 4, 4), 2)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y[0, 0], [[2.5, 4.5], [10.5, 12.5]])


@pytest.mark.parametrize("op", [fastconv.adaptive_avg_pool2d, reference.adaptive_avg_pool2d])
def test_bad_arguments(op):
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="Expected output_size"):
        op(x, 0)
    with pytest.raises(ValueError, match="Expected output_size"):
        op(x, (2, 2, 2))
    with pytest.raises(ValueError, match="Expected output_size"):
        op(x, 2.0)
    with pytest.raises(ValueError, match="Expected output_size"):
        op(x, (True, 2))
    with pytest.raises(ValueError, match="Expected input"):
        op(np.zeros((1, 4, 4)), 2)
    with pytest.raises(ValueError, match="non-zero"):
        op(np.zeros((1, 1, 0, 4)), 2)
    with pytest.raises(TypeError, match="Expected"):
        op(np.zeros((1, 1, 4, 4), np.complex128), 2)


@pytest.mark.parametrize("grad", [fastconv.grad.adaptive_avg_pool2d,
                                  reference.grad.adaptive_avg_pool2d])
def test_bad_gradient_arguments(grad):
    with pytest.raises(ValueError, match="Expected grad_output of shape"):
        grad(np.zeros((1, 1, 2, 2)), (1, 1, 4, 4), 3)
    with pytest.raises(ValueError, match="Expected grad_output of shape"):
        grad(np.zeros((1, 2, 2, 2)), (1, 1, 4, 4))
    with pytest.raises(ValueError, match="Expected output_size"):
        grad(np.zeros((1, 1, 0, 2)), (1, 1, 4, 4))
    with pytest.raises((TypeError, ValueError), match="Expected input_size"):
        grad(np.zeros((1, 1, 2, 2)), (1, 4, 4))


# -- layers -----------------------------------------------------------------------


def test_layers_forward_backward_and_backends(rng):
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    pool = nn.AdaptiveAvgPool2d((3, None))
    y = pool(x)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = pool.backward(gy)
    with fastconv.use_backend("numpy"):
        y_ref, gx_ref = pool(x), pool.backward(gy)
    assert y.shape == (2, 3, 3, 6) and gx.shape == x.shape
    assert_close(y, y_ref, n_terms=6)
    assert_close(gx, gx_ref, n_terms=6)
    pool1 = nn.AdaptiveAvgPool1d(4)
    assert pool1(x[:, :, 0]).shape == (2, 3, 4)
    assert pool1.backward(np.ones((2, 3, 4), np.float32)).shape == (2, 3, 6)
    assert repr(pool) == "AdaptiveAvgPool2d(output_size=(3, None))"
    with pytest.raises(ValueError, match="Expected output_size"):
        nn.AdaptiveAvgPool2d(0)
    with pytest.raises(RuntimeError, match="before forward"):
        nn.AdaptiveAvgPool2d(1).backward(np.ones((1, 1, 1, 1)))


# -- PyTorch --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size, out", CASES_2D)
def test_2d_matches_torch(size, out, dtype, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3) + size).astype(dtype)
    t = torch.tensor(x, requires_grad=True)
    # torch takes None only inside a tuple
    yt = torch.nn.functional.adaptive_avg_pool2d(t, (None, None) if out is None else out)
    gy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(gy))
    resolved = _resolved(size, out, 2)
    n_terms = math.ceil(size[0] / resolved[0] + 1) * math.ceil(size[1] / resolved[1] + 1)
    layer = nn.AdaptiveAvgPool2d(out)
    assert_close(layer(x), yt.detach().numpy(), n_terms=n_terms)
    assert_close(layer.backward(gy), t.grad.numpy(), n_terms=n_terms)


@pytest.mark.parametrize("length, out", [c for c in CASES_1D if c[1] is not None])
def test_1d_matches_torch(length, out, rng):
    torch = pytest.importorskip("torch")  # (its adaptive_avg_pool1d takes no None)
    x = rng.standard_normal((2, 3, length)).astype(np.float32)
    t = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.adaptive_avg_pool1d(t, out)
    gy = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.tensor(gy))
    n_terms = math.ceil(length / out + 1)
    assert_close(fastconv.adaptive_avg_pool1d(x, out), yt.detach().numpy(), n_terms=n_terms)
    assert_close(fastconv.grad.adaptive_avg_pool1d(gy, x.shape), t.grad.numpy(),
                 n_terms=n_terms)
