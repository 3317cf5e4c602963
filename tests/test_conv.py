"""Convolutions and their gradients against the NumPy reference, PyTorch
(when importable) and central differences."""

import loops
import numpy as np
import pytest
from conftest import assert_close

import fastconv
from fastconv import reference as ref

DTYPES = [np.float32, np.float64]

# (N, C_in, C_out, spatial, kernel, stride, padding, dilation, groups)
CONV2D_CASES = [
    (2, 3, 4, (7, 9), (3, 3), 1, 1, 1, 1),
    (2, 4, 6, (11, 10), (3, 2), 2, 1, 2, 2),  # dilation with stride, groups
    (1, 6, 6, (9, 9), (3, 3), 1, 1, 1, 6),  # depthwise
    (2, 3, 5, (8, 8), (2, 2), 3, 0, 1, 1),  # stride > kernel
    (2, 3, 5, (9, 8), (3, 3), 2, 0, 1, 1),  # (H - k) % s != 0
    (2, 2, 3, (10, 7), (4, 4), 1, "same", 1, 1),  # even kernel, 'same'
    (2, 2, 3, (9, 8), (3, 2), 1, "same", 2, 1),  # dilated 'same'
    (1, 3, 2, (6, 7), (3, 3), 2, ((1, 0), (2, 1)), 1, 1),  # asymmetric padding
    (3, 8, 16, (5, 5), (1, 1), 1, 0, 1, 2),  # pointwise, grouped
    (1, 2, 3, (20, 21), (3, 3), 1, 1, 1, 1),  # several position tiles
    (1, 70, 13, (12, 12), (3, 3), 1, 1, 1, 1),  # K = 630 > one packed block
    (2, 3, 7, (13, 13), (5, 5), 1, "valid", 1, 1),
    (2, 4, 4, (6, 6), (3, 3), 1, (2, 1), (1, 2), 1),  # per-axis tuples
    # stride 1 with >= 6 channels per group: the implicit forward, and the
    # input gradient as a forward convolution with the flipped weight
    (2, 7, 9, (37, 23), (3, 3), 1, 1, 1, 1),  # several row tiles, a short last one
    (2, 70, 13, (16, 16), (3, 3), 1, 1, 1, 1),  # K = 630: several channel blocks
    (2, 6, 7, (15, 14), (3, 3), 1, 2, 2, 1),  # dilated
    (2, 12, 8, (9, 9), (3, 3), 1, 1, 1, 2),  # grouped
    (2, 6, 4, (7, 8), (4, 4), 1, "same", 1, 1),  # even kernel: asymmetric padding
    (2, 6, 6, (8, 8), (3, 3), 1, 3, 1, 1),  # padding > d*(k-1): col2im input grad
    (2, 6, 5, (10, 10), (3, 3), 1, 0, 4, 1),  # 2x2 outputs of a wide window: im2col
    # stride 1 with >= 16 output channels per group: the implicit weight
    # gradient, with partial panels of taps and of output channels
    (2, 30, 40, (13, 11), (3, 3), 1, 1, 1, 1),  # K = 270: two channel blocks
    (2, 14, 40, (10, 12), (3, 3), 1, 2, 2, 2),  # grouped, dilated
    # strided, with taps that share a phase of the input: the implicit kernels
    # on a phase-split copy
    (2, 3, 16, (31, 29), (3, 3), 2, 1, 1, 1),
    (2, 4, 16, (26, 40), (3, 5), (2, 3), (1, 2), (2, 1), 1),  # per-axis stride, dilation
    (1, 3, 16, (40, 41), (7, 7), 2, 3, 1, 1),  # the ResNet stem
    (2, 8, 32, (21, 22), (3, 3), 2, ((0, 2), (1, 0)), 1, 2),  # grouped, asymmetric padding
    (2, 4, 16, (1, 20), (1, 3), (3, 1), 1, 1, 1),  # one output row, of padding only
    # one row (H = kH = 1): the images as rows, whatever the stride and
    # dilation across the one row
    (40, 6, 32, (1, 30), (1, 3), (2, 1), 0, 1, 1),
    (24, 6, 32, (1, 30), (1, 3), (3, 2), 0, (2, 1), 1),
    # one or two output channels per group: the implicit forward one channel
    # at a time, over wider blocks of positions
    (2, 7, 1, (20, 19), (3, 3), 1, 1, 1, 1),
    (2, 40, 1, (16, 16), (3, 3), 1, 1, 1, 1),  # K = 360: two channel blocks
    (2, 8, 4, (17, 18), (5, 5), 1, 2, 1, 2),  # grouped
    (2, 6, 2, (25, 26), (3, 3), 2, 1, 1, 1),  # strided
    # at most NR/4 output channels per group at stride 1: the weight gradient
    # as dot products over flat planes
    (2, 1, 6, (12, 12), (5, 5), 1, 0, 1, 1),  # lenet1's 6
    (2, 4, 2, (9, 10), (3, 4), 1, (1, 2), (2, 1), 2),  # one per group, dilated
    # depthwise at stride 1: one pass per tap over a zero-bordered flat plane
    (2, 5, 5, (14, 14), (3, 3), 1, 1, 1, 5),  # MobileNet's 14x14
    (2, 4, 4, (9, 11), (4, 3), 1, "same", (2, 1), 4),  # dilated, even kernel 'same'
    (2, 3, 3, (7, 8), (3, 3), 1, 3, 1, 3),  # padding > d*(k-1)
    (2, 3, 3, (6, 7), (3, 3), 1, 0, 1, 3),  # no padding
    (2, 4, 4, (15, 16), (3, 3), 2, 1, 1, 4),  # ... and at stride 2: a pass per row
]

CONV1D_CASES = [
    (3, 1, 25, (40,), (5,), 2, 1, 1, 1),  # MNIST-1D layer 1
    (3, 25, 25, (20,), (3,), 2, 1, 1, 1),  # MNIST-1D layer 2
    (2, 8, 16, (30,), (5,), 1, "same", 1, 1),  # TDNN
    (2, 2, 3, (10,), (3,), 1, (2, 0), 1, 1),  # asymmetric (left, right)
    (2, 4, 6, (17,), (3,), 2, 1, 3, 2),  # dilated, strided, grouped
    (2, 3, 3, (9,), (4,), 1, "same", 1, 3),  # even kernel 'same', depthwise
    (2, 6, 8, (1200,), (5,), 1, 2, 1, 1),  # rows wider than a tile: column tiles
    (2, 7, 20, (700,), (5,), 1, 2, 1, 1),  # ... for the implicit weight gradient
    (2, 3, 16, (1100,), (5,), 2, 2, 1, 1),  # ... strided
    # the implicit kernels with the images as rows: several per tile
    (40, 6, 16, (12,), (3,), 1, 1, 1, 1),
    (16, 25, 25, (19,), (3,), 2, 1, 1, 1),  # MNIST-1D layer 2
    (24, 8, 32, (15,), (3,), 2, 1, 1, 2),  # grouped
    (40, 6, 1, (30,), (3,), 2, 1, 1, 1),  # one output channel
    # ... and for the input gradient, where an image has fewer outputs than
    # half a block of micro-kernel columns
    (16, 25, 25, (10,), (3,), 2, 1, 1, 1),  # MNIST-1D layer 3
    (30, 100, 8, (9,), (5,), 2, 2, 1, 1),  # K = 500: two channel blocks
    (20, 3, 5, (14,), (3,), 3, 1, 2, 1),  # dilated, stride 3
]

# (N, C_in, C_out, spatial, kernel, stride, padding, output_padding, groups, dilation)
CONVT2D_CASES = [
    (2, 4, 6, (5, 6), (3, 3), 2, 1, 1, 2, 1),
    (1, 3, 2, (4, 4), (2, 2), 2, 0, 0, 1, 1),  # upsampling x2
    (2, 2, 4, (5, 5), (3, 3), 1, 0, 0, 1, 2),
    (2, 4, 4, (3, 7), (4, 3), 3, 2, 2, 4, 1),
    (2, 3, 3, (5, 6), (3, 3), 1, 0, 1, 3, 2),  # depthwise: output_padding at stride 1
    (1, 2, 3, (4, 5), (3, 3), (2, 1), (1, 0), (1, 0), 1, (1, 2)),
    (2, 6, 7, (5, 6), (3, 3), 1, 1, 1, 1, 2),  # stride 1, output_padding < dilation
]
CONVT1D_CASES = [
    (2, 4, 6, (7,), (3,), 2, 1, 1, 2, 1),
    (3, 2, 2, (5,), (4,), 3, 0, 2, 1, 1),
]


def _case_arrays(rng, case, dtype, transposed=False):
    n, c_in, c_out, spatial, kernel = case[:5]
    groups = case[8]
    x = rng.standard_normal((n, c_in) + spatial).astype(dtype)
    if transposed:
        w = rng.standard_normal((c_in, c_out // groups) + kernel).astype(dtype)
    else:
        w = rng.standard_normal((c_out, c_in // groups) + kernel).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    return x, w, b


def _conv_kwargs(case):
    return dict(stride=case[5], padding=case[6], dilation=case[7], groups=case[8])


def _convt_kwargs(case):
    return dict(stride=case[5], padding=case[6], output_padding=case[7], groups=case[8],
                dilation=case[9])


def _ops(nd):
    return (getattr(fastconv, f"conv{nd}d"), getattr(fastconv.grad, f"conv{nd}d_input"),
            getattr(fastconv.grad, f"conv{nd}d_weight"))


CONV_PARAMS = [(2, c) for c in CONV2D_CASES] + [(1, c) for c in CONV1D_CASES]

CONVT_PARAMS = [(2, c) for c in CONVT2D_CASES] + [(1, c) for c in CONVT1D_CASES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd,case", CONV_PARAMS)
def test_conv_matches_reference(nd, case, dtype, rng):
    x, w, b = _case_arrays(rng, case, dtype)
    kw = _conv_kwargs(case)
    conv, conv_input, conv_weight = _ops(nd)
    y = conv(x, w, b, **kw)
    assert y.dtype == dtype
    y_ref = getattr(ref, f"conv{nd}d")(x, w, b, **kw)
    k_terms = w[0].size
    assert_close(y, y_ref, n_terms=k_terms, err_msg="forward")

    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = conv_input(x.shape, w, gy, **kw)
    assert gx.dtype == dtype
    gx_ref = getattr(ref, f"conv{nd}d_input")(x.shape, w, gy, **kw)
    assert_close(gx, gx_ref, n_terms=w.shape[0] * w[0, 0].size, err_msg="input grad")

    gw = conv_weight(x, w.shape, gy, **kw)
    gw_ref = getattr(ref, f"conv{nd}d_weight")(x, w.shape, gy, **kw)
    assert_close(gw, gw_ref, n_terms=gy[:, 0].size, err_msg="weight grad")

    gb = fastconv.grad.conv_bias(gy)
    assert gb.dtype == dtype
    assert_close(gb, ref.conv_bias(gy), n_terms=gy[:, 0].size, err_msg="bias grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd,case", CONVT_PARAMS)
def test_conv_transpose_matches_reference(nd, case, dtype, rng):
    x, w, b = _case_arrays(rng, case, dtype, transposed=True)
    kw = _convt_kwargs(case)
    y = getattr(fastconv, f"conv_transpose{nd}d")(x, w, b, **kw)
    y_ref = getattr(ref, f"conv_transpose{nd}d")(x, w, b, **kw)
    assert y.dtype == dtype
    assert_close(y, y_ref, n_terms=w[:, 0].size, err_msg="forward")

    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = getattr(fastconv.grad, f"conv_transpose{nd}d_input")(x.shape, w, gy, **kw)
    gx_ref = getattr(ref, f"conv_transpose{nd}d_input")(x.shape, w, gy, **kw)
    assert_close(gx, gx_ref, n_terms=w[0].size, err_msg="input grad")

    gw = getattr(fastconv.grad, f"conv_transpose{nd}d_weight")(x, w.shape, gy, **kw)
    gw_ref = getattr(ref, f"conv_transpose{nd}d_weight")(x, w.shape, gy, **kw)
    assert_close(gw, gw_ref, n_terms=x[:, 0].size, err_msg="weight grad")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cases_reach_every_forward_path(dtype):
    """Geometries that take the implicit forward with several row tiles (a
    short last one), with column tiles and with several channel blocks, at
    stride 1 and 2, and with the images of a 1-D convolution as rows; and
    the im2col forward at stride 1 and at stride 2 (with 2 output channels,
    fewer than any build's NR: the channels path takes few positions of
    more); and the channels forward."""
    from fastconv import _plan
    from fastconv._validation import conv_geometry

    def plan(x, k, c_out=8, **kw):
        nd = len(x) - 2
        geo = conv_geometry(x, (c_out, x[1]) + k, nd, kw.get("stride", 1),
                            kw.get("padding", 0), kw.get("dilation", 1), 1)
        return _plan.plan_for("forward", geo, np.dtype(dtype).itemsize)

    if plan((2, 1, 16, 64), (3, 3), padding=1).path != "implicit":
        pytest.skip("this build's micro-kernel rows are too short for the implicit kernels")
    rows, cols = plan((2, 1, 37, 23), (3, 3), padding=1).tile  # 37 is prime: a short last tile
    assert 1 < rows < 37 and cols == 23
    assert plan((2, 1, 1, 1200), (1, 5), padding=(0, 2)).tile == (1, 508)  # 512 less the window
    assert plan((2, 70, 16, 16), (3, 3), padding=1).path == "implicit"  # K = 630: 3 channel blocks
    assert plan((2, 1, 10, 10), (3, 3), c_out=2, dilation=4).path == "im2col"  # 2x2: mostly waste
    assert plan((2, 1, 31, 29), (3, 3), stride=2).path == "implicit"
    assert plan((1, 1, 40, 41), (7, 7), stride=2, padding=3).path == "implicit"
    assert plan((2, 1, 1100), (5,), stride=2, padding=2).tile == (1, 510)
    assert plan((40, 1, 12), (3,), padding=1).tile[0] > 1  # images as rows
    assert plan((16, 1, 19), (3,), stride=2, padding=1).path == "implicit"
    assert plan((2, 1, 9, 8), (2, 2), c_out=2, stride=2).path == "im2col"  # one tap per phase
    assert plan((2, 1, 16, 64), (3, 3), c_out=2, padding=1).path == "implicit_row"
    assert plan((1, 64, 7, 7), (3, 3), c_out=128, padding=1).path == "channels"  # 49 positions


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,stride,groups", [
    ((2, 256, 5, 5), (128, 256, 3, 3), 1, 1),
    ((1, 512, 6, 6), (128, 256, 3, 3), 2, 2),
])
def test_weight_grad_of_a_large_weight_on_a_small_map(xs, ws, stride, groups, dtype, rng):
    """dW over 1 MiB summed over few positions (a deep layer's 7x7 map): the
    weight gradient splits dW's columns among the threads instead of the
    positions."""
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    kw = dict(stride=stride, padding=1, groups=groups)
    gy = rng.standard_normal(fastconv.conv2d(x, w, **kw).shape).astype(dtype)
    assert_close(fastconv.grad.conv2d_weight(x, w.shape, gy, **kw),
                 ref.grad.conv2d_weight(x, w.shape, gy, **kw), n_terms=gy[:, 0].size)


# -- textbook loops ------------------------------------------------------------


LOOP_CASES = [
    # (x shape, w shape, stride, pad_begin, pad_end, dilation, groups, padding arg)
    ((2, 2, 5, 6), (3, 2, 3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1, 1),
    ((1, 4, 7, 6), (4, 2, 2, 3), (2, 1), (0, 1), (0, 1), (2, 1), 2, (0, 1)),
    ((1, 1, 6, 6), (2, 1, 2, 2), (1, 1), (0, 0), (1, 1), (1, 1), 1, "same"),
    ((1, 2, 5, 5), (2, 2, 3, 3), (2, 2), (1, 0), (0, 2), (1, 1), 1, ((1, 0), (0, 2))),
    ((2, 6, 9, 8), (7, 6, 3, 3), (1, 1), (2, 2), (2, 2), (2, 2), 1, 2),
    ((1, 6, 5, 6), (6, 6, 2, 3), (1, 1), (0, 1), (1, 1), (1, 1), 1, "same"),
    ((1, 3, 6, 7), (16, 3, 3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1, 1),
    ((2, 3, 6, 7), (3, 1, 3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 3, 1),  # depthwise
    ((2, 3, 7, 6), (3, 1, 3, 2), (1, 1), (0, 1), (2, 1), (2, 1), 3, ((0, 2), (1, 1))),
]


@pytest.mark.parametrize("xs,ws,stride,pb,pe,dil,groups,padding", LOOP_CASES)
def test_conv2d_and_gradients_match_textbook_loops(xs, ws, stride, pb, pe, dil, groups, padding, rng):
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    kw = dict(stride=stride, padding=padding, dilation=dil, groups=groups)
    y = fastconv.conv2d(x, w, b, **kw)
    assert_close(y, loops.conv2d(x, w, b, stride, pb, pe, dil, groups), n_terms=w[0].size)
    gy = rng.standard_normal(y.shape)
    assert_close(fastconv.grad.conv2d_input(x.shape, w, gy, **kw),
                 loops.conv2d_input(gy, w, x.shape, stride, pb, dil, groups),
                 n_terms=w.shape[0] * w[0, 0].size)
    assert_close(fastconv.grad.conv2d_weight(x, w.shape, gy, **kw),
                 loops.conv2d_weight(x, gy, w.shape, stride, pb, dil, groups),
                 n_terms=gy[:, 0].size)


def test_conv1d_is_the_scanning_mlp(rng):
    """Each output position is the same dense layer applied to one window."""
    x = rng.standard_normal((2, 3, 12))
    w = rng.standard_normal((5, 3, 4))
    b = rng.standard_normal(5)
    y = fastconv.conv1d(x, w, b, stride=2)
    mlp = w.reshape(5, -1)
    for t in range(y.shape[2]):
        window = x[:, :, 2 * t : 2 * t + 4].reshape(2, -1)
        assert_close(y[:, :, t], window @ mlp.T + b, n_terms=12)


# -- seed worked examples ----------------------------------------------------


def test_seed_1d_example():
    x = np.array([[[3.0, 4.0, 5.0]]])
    k = np.array([[[1.0, 2.0]]])
    np.testing.assert_array_equal(fastconv.conv1d(x, k), [[[11.0, 14.0]]])
    gk = fastconv.grad.conv1d_weight(x, k.shape, np.array([[[1.0, -1.0]]]))
    np.testing.assert_array_equal(gk, [[[-1.0, -1.0]]])


def test_seed_output_sizes():
    x = np.zeros((1, 3, 224, 224), np.float32)
    assert fastconv.conv2d(x, np.zeros((64, 3, 7, 7), np.float32), stride=2, padding=3).shape \
        == (1, 64, 112, 112)
    x = np.zeros((1, 16, 32, 32), np.float32)
    assert fastconv.conv2d(x, np.zeros((32, 16, 3, 3), np.float32), padding=1).shape \
        == (1, 32, 32, 32)


# -- central differences ------------------------------------------------------


def numerical_grad(f, a, gy, eps=1e-6):
    """d/da of sum(f(a) * gy) by central differences (float64)."""
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = np.sum(f(a) * gy)
        flat[i] = old - eps
        down = np.sum(f(a) * gy)
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


FD_CASES = [
    (2, (1, 4, 6, (5, 6), (3, 3), 2, 1, 1, 2)),
    (2, (2, 2, 3, (5, 4), (2, 3), 1, "same", (2, 1), 1)),
    (2, (1, 2, 2, (5, 5), (3, 3), 2, ((0, 1), (1, 0)), 1, 1)),
    (1, (2, 3, 4, (9,), (3,), 2, 1, 2, 1)),
]


@pytest.mark.parametrize("nd,case", FD_CASES)
def test_conv_gradients_central_differences(nd, case, rng):
    x, w, b = _case_arrays(rng, case, np.float64)
    kw = _conv_kwargs(case)
    conv, conv_input, conv_weight = _ops(nd)
    y = conv(x, w, b, **kw)
    gy = rng.standard_normal(y.shape)
    assert_close(conv_input(x.shape, w, gy, **kw),
                               numerical_grad(lambda a: conv(a, w, b, **kw), x, gy),
                               rtol=1e-6, atol=1e-7)
    assert_close(conv_weight(x, w.shape, gy, **kw),
                               numerical_grad(lambda a: conv(x, a, b, **kw), w, gy),
                               rtol=1e-6, atol=1e-7)
    assert_close(fastconv.grad.conv_bias(gy),
                               numerical_grad(lambda a: conv(x, w, a, **kw), b, gy),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_winograd_gradients_central_differences(padding, rng):
    """The winograd path's input gradient (the winograd forward of grad_out)
    is the derivative of its forward, by central differences; odd sizes
    leave partial 2x2 tiles on both edges."""
    from fastconv import _plan
    x, w = rng.standard_normal((2, 3, 5, 7)), rng.standard_normal((4, 3, 3, 3))
    with _plan.forced(forward="winograd", input_grad="winograd"):
        y = fastconv.conv2d(x, w, padding=padding)
        gy = rng.standard_normal(y.shape)
        assert_close(fastconv.grad.conv2d_input(x.shape, w, gy, padding=padding),
                     numerical_grad(lambda a: fastconv.conv2d(a, w, padding=padding), x, gy),
                     rtol=1e-6, atol=1e-7)


def _unaligned(a):
    """A copy of ``a`` one byte into a buffer: not aligned for its dtype, as
    a pickle's out-of-band buffer can arrive on a Dask worker."""
    a = np.asarray(a)
    buf = np.empty(a.nbytes + 1, dtype=np.uint8)
    out = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_unaligned_arrays_give_the_aligned_results(dtype, rng):
    """Every operand may sit at any byte offset: the kernels see an aligned
    copy (an unaligned load is undefined behaviour, which the sanitizer
    job checks), and the results are the aligned arrays' exactly."""
    x = rng.standard_normal((2, 16, 9, 9)).astype(dtype)
    w = rng.standard_normal((32, 16, 3, 3)).astype(dtype)
    b = rng.standard_normal(32).astype(dtype)
    y = fastconv.conv2d(x, w, b, padding=1)
    gy = rng.standard_normal(y.shape).astype(dtype)
    ux, uw, ub, ugy = map(_unaligned, (x, w, b, gy))
    np.testing.assert_array_equal(fastconv.conv2d(ux, uw, ub, padding=1), y)
    np.testing.assert_array_equal(fastconv.grad.conv2d_input(x.shape, uw, ugy, padding=1),
                                  fastconv.grad.conv2d_input(x.shape, w, gy, padding=1))
    np.testing.assert_array_equal(fastconv.grad.conv2d_weight(ux, w.shape, ugy, padding=1),
                                  fastconv.grad.conv2d_weight(x, w.shape, gy, padding=1))
    p, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(fastconv.max_pool2d(ux, 2), p)
    gp = rng.standard_normal(p.shape).astype(dtype)
    np.testing.assert_array_equal(
        fastconv.grad.max_pool2d(_unaligned(gp), _unaligned(idx), x.shape),
        fastconv.grad.max_pool2d(gp, idx, x.shape))


@pytest.mark.parametrize("nd,case", [(2, CONVT2D_CASES[0]), (2, CONVT2D_CASES[4]),
                                     (1, CONVT1D_CASES[1])])
def test_conv_transpose_gradients_central_differences(nd, case, rng):
    x, w, b = _case_arrays(rng, case, np.float64, transposed=True)
    kw = _convt_kwargs(case)
    op = getattr(fastconv, f"conv_transpose{nd}d")
    y = op(x, w, b, **kw)
    gy = rng.standard_normal(y.shape)
    assert_close(
        getattr(fastconv.grad, f"conv_transpose{nd}d_input")(x.shape, w, gy, **kw),
        numerical_grad(lambda a: op(a, w, b, **kw), x, gy), rtol=1e-6, atol=1e-7)
    assert_close(
        getattr(fastconv.grad, f"conv_transpose{nd}d_weight")(x, w.shape, gy, **kw),
        numerical_grad(lambda a: op(x, a, b, **kw), w, gy), rtol=1e-6, atol=1e-7)
    assert_close(
        fastconv.grad.conv_bias(gy),
        numerical_grad(lambda a: op(x, w, a, **kw), b, gy), rtol=1e-6, atol=1e-7)


# -- PyTorch ------------------------------------------------------------------


def _torch_padding(padding, nd):
    """PyTorch has no asymmetric padding: return (F.pad widths, conv padding)."""
    if isinstance(padding, tuple) and any(isinstance(p, tuple) for p in padding):
        pairs = padding
    elif nd == 1 and isinstance(padding, tuple) and len(padding) == 2:
        pairs = (padding,)
    else:
        return None, padding
    widths = []
    for b, e in reversed(pairs):  # F.pad wants the last axis first
        widths += [b, e]
    return widths, 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd,case", CONV_PARAMS)
def test_conv_matches_torch(nd, case, dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b = _case_arrays(rng, case, dtype)
    kw = _conv_kwargs(case)
    conv, conv_input, conv_weight = _ops(nd)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    widths, tpad = _torch_padding(kw["padding"], nd)
    tin = F.pad(tx, widths) if widths else tx
    ty = getattr(F, f"conv{nd}d")(tin, tw, tb, kw["stride"], tpad, kw["dilation"], kw["groups"])
    y = conv(x, w, b, **kw)
    assert_close(y, ty.detach().numpy(), n_terms=w[0].size)
    gy = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.tensor(gy))
    assert_close(conv_input(x.shape, w, gy, **kw), tx.grad.numpy(),
                 n_terms=w.shape[0] * w[0, 0].size)
    assert_close(conv_weight(x, w.shape, gy, **kw), tw.grad.numpy(), n_terms=gy[:, 0].size)
    assert_close(fastconv.grad.conv_bias(gy), tb.grad.numpy(), n_terms=gy[:, 0].size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd,case", CONVT_PARAMS)
def test_conv_transpose_matches_torch(nd, case, dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b = _case_arrays(rng, case, dtype, transposed=True)
    kw = _convt_kwargs(case)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = getattr(F, f"conv_transpose{nd}d")(tx, tw, tb, kw["stride"], kw["padding"],
                                            kw["output_padding"], kw["groups"], kw["dilation"])
    y = getattr(fastconv, f"conv_transpose{nd}d")(x, w, b, **kw)
    assert_close(y, ty.detach().numpy(), n_terms=w[:, 0].size)
    gy = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.tensor(gy))
    assert_close(getattr(fastconv.grad, f"conv_transpose{nd}d_input")(x.shape, w, gy, **kw),
                 tx.grad.numpy(), n_terms=w[0].size)
    assert_close(getattr(fastconv.grad, f"conv_transpose{nd}d_weight")(x, w.shape, gy, **kw),
                 tw.grad.numpy(), n_terms=x[:, 0].size)
    assert_close(fastconv.grad.conv_bias(gy), tb.grad.numpy(), n_terms=gy[:, 0].size)


def test_grad_signatures_match_torch_nn_grad(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 3))
    gy = rng.standard_normal((2, 6, 5, 4))
    kw = dict(stride=2, padding=1, dilation=1, groups=2)
    expected = torch.nn.grad.conv2d_input(x.shape, torch.tensor(w), torch.tensor(gy), **kw)
    assert_close(fastconv.grad.conv2d_input(x.shape, w, gy, **kw), expected.numpy(), n_terms=27)
    expected = torch.nn.grad.conv2d_weight(torch.tensor(x), w.shape, torch.tensor(gy), **kw)
    assert_close(fastconv.grad.conv2d_weight(x, w.shape, gy, **kw), expected.numpy(), n_terms=40)
