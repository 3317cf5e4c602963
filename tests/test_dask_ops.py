"""fastconv.dask ops and gradients against one fastconv call on the whole array.

Random geometries (stride, dilation, groups, every padding form, ceil_mode,
count_include_pad) on random chunkings that force many seams (spatial chunks
of 2-9 positions, batch chunks of 1-3), on dask's synchronous scheduler.
Pooling values, indices and the max-pool gradient are compared bitwise,
convolutions and reductions within rounding (conftest.assert_close).
"""

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from conftest import assert_close  # noqa: E402

import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402
from fastconv.dask import planner  # noqa: E402

SEEDS = range(24)


@pytest.fixture(autouse=True)
def _sync():
    with dask.config.set(scheduler="synchronous"):
        yield


def _chunks(rng, size, lo=2, hi=9):
    out = []
    while sum(out) < size:
        out.append(int(min(rng.integers(lo, hi + 1), size - sum(out))))
    return tuple(out)


def _dask(rng, x, channel_chunks=None):
    chunks = (_chunks(rng, x.shape[0], 1, 3), channel_chunks or (x.shape[1],))
    chunks += tuple(_chunks(rng, s) for s in x.shape[2:])
    return da.from_array(x, chunks=chunks)


def _padding(rng, nd, k, d, s):
    kind = rng.integers(5)
    if kind == 0 and all(v == 1 for v in s):
        return "same"
    if kind == 1:
        return "valid"
    if kind == 2:
        pairs = tuple((int(rng.integers(0, 4)), int(rng.integers(0, 4))) for _ in range(nd))
        return pairs
    return tuple(int(rng.integers(0, 4)) for _ in range(nd))


def _conv_case(seed, transpose=False):
    rng = np.random.default_rng(seed)
    nd = 1 + seed % 2
    dtype = np.float64 if seed % 3 else np.float32
    while True:
        g = int(rng.integers(1, 4))
        cig, cog = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        k = tuple(int(rng.integers(1, 5)) for _ in range(nd))
        s = tuple(int(rng.integers(1, 4)) for _ in range(nd))
        d = tuple(int(rng.integers(1, 4)) for _ in range(nd))
        size = tuple(int(rng.integers(6, 26)) for _ in range(nd))
        n = int(rng.integers(1, 5))
        if transpose:
            pad = tuple(int(rng.integers(0, 3)) for _ in range(nd))
            opad = tuple(int(rng.integers(0, max(si, di))) for si, di in zip(s, d))
            try:
                from fastconv._validation import conv_transpose_geometry
                conv_transpose_geometry((n, g * cig) + size, (g * cig, cog) + k, nd, s, pad,
                                        opad, g, d)
            except ValueError:
                continue
            x = rng.standard_normal((n, g * cig) + size).astype(dtype)
            w = rng.standard_normal((g * cig, cog) + k).astype(dtype)
            b = rng.standard_normal(g * cog).astype(dtype) if seed % 4 else None
            return rng, nd, x, w, b, dict(stride=s, padding=pad, output_padding=opad,
                                          groups=g, dilation=d), g, cig
        pad = _padding(rng, nd, k, d, s)
        x = rng.standard_normal((n, g * cig) + size).astype(dtype)
        w = rng.standard_normal((g * cog, cig) + k).astype(dtype)
        try:
            ref = (fastconv.conv1d if nd == 1 else fastconv.conv2d)(
                x, w, None, s, pad, d, g)
        except ValueError:
            continue
        b = rng.standard_normal(g * cog).astype(dtype) if seed % 4 else None
        return rng, nd, x, w, b, dict(stride=s, padding=pad, dilation=d, groups=g), g, cig, ref


def _group_chunks(rng, g, cig):
    cuts = sorted(set(int(c) for c in rng.integers(1, g, size=2))) if g > 1 else []
    bounds = [0] + [c * cig for c in cuts] + [g * cig]
    return tuple(b1 - b0 for b0, b1 in zip(bounds[:-1], bounds[1:]))


def _terms(w):
    return int(np.prod(w.shape[1:]))


@pytest.mark.parametrize("seed", SEEDS)
def test_conv_forward_and_gradients(seed):
    rng, nd, x, w, b, kw, g, cig, _ = _conv_case(seed)
    conv = fastconv.conv1d if nd == 1 else fastconv.conv2d
    dconv = fd.conv1d if nd == 1 else fd.conv2d
    xd = _dask(rng, x, _group_chunks(rng, g, cig))
    y = dconv(xd, w, b, **kw)
    expected = conv(x, w, b, **kw)
    assert y.shape == expected.shape
    assert_close(y.compute(), expected, n_terms=_terms(w), err_msg=str(kw))
    # gradients, on the output's chunking (what training would hand back)
    gy = rng.standard_normal(expected.shape).astype(x.dtype)
    gyd = da.from_array(gy, chunks=y.chunks)
    grad, dgrad = (fastconv.grad, fd.grad)
    name = f"conv{nd}d"
    dx = getattr(dgrad, name + "_input")(x.shape, w, gyd, **kw)
    ref_dx = getattr(grad, name + "_input")(x.shape, w, gy, **kw)
    assert_close(dx.compute(), ref_dx, n_terms=w.shape[0] * int(np.prod(w.shape[2:])))
    dw = getattr(dgrad, name + "_weight")(xd, w.shape, gyd, **kw)
    assert dw.chunks == tuple((s,) for s in w.shape)
    ref_dw = getattr(grad, name + "_weight")(x, w.shape, gy, **kw)
    assert_close(dw.compute(), ref_dw, n_terms=gy[:, 0].size)
    db = fd.grad.conv_bias(gyd)
    assert_close(db.compute(), grad.conv_bias(gy), n_terms=gy[:, 0].size)


@pytest.mark.parametrize("seed", SEEDS)
def test_conv_input_gradient_keeps_the_input_chunking(seed):
    rng, nd, x, w, b, kw, *_ = _conv_case(seed)
    dconv = fd.conv1d if nd == 1 else fd.conv2d
    xd = _dask(rng, x)
    y = dconv(xd, w, b, **kw)
    legal = dconv(xd, w, b, rechunk=True, **kw)
    gyd = da.zeros(y.shape, chunks=y.chunks, dtype=x.dtype)
    dx = getattr(fd.grad, f"conv{nd}d_input")(x.shape, w, gyd, **kw)
    # the input chunking the forward used: re-deriving it from the output tiles
    geo = planner.plan_conv(x.shape, w.shape, chunks=xd.chunks, **kw)
    assert dx.chunks[2:] == geo.input_chunks()[2:]
    assert legal.chunks[2:] == geo.output_chunks(w.shape[0])[2:]


@pytest.mark.parametrize("seed", SEEDS)
def test_conv_transpose_forward_and_gradients(seed):
    rng, nd, x, w, b, kw, g, cig = _conv_case(seed, transpose=True)
    op = fastconv.conv_transpose1d if nd == 1 else fastconv.conv_transpose2d
    dop = fd.conv_transpose1d if nd == 1 else fd.conv_transpose2d
    xd = _dask(rng, x, _group_chunks(rng, g, cig))
    y = dop(xd, w, b, **kw)
    expected = op(x, w, b, **kw)
    assert_close(y.compute(), expected, n_terms=_terms(w) * w.shape[0], err_msg=str(kw))
    gy = rng.standard_normal(expected.shape).astype(x.dtype)
    gyd = da.from_array(gy, chunks=y.chunks)
    name = f"conv_transpose{nd}d"
    dx = getattr(fd.grad, name + "_input")(x.shape, w, gyd, **kw)
    assert_close(dx.compute(), getattr(fastconv.grad, name + "_input")(x.shape, w, gy, **kw),
                 n_terms=_terms(w))
    dw = getattr(fd.grad, name + "_weight")(xd, w.shape, gyd, **kw)
    assert_close(dw.compute(), getattr(fastconv.grad, name + "_weight")(x, w.shape, gy, **kw),
                 n_terms=x[:, 0].size)


def _pool_case(seed, avg):
    rng = np.random.default_rng(1000 + seed)
    nd = 1 + seed % 2
    dtype = np.float32 if seed % 3 == 0 else np.float64
    while True:
        k = tuple(int(rng.integers(1, 5)) for _ in range(nd))
        s = tuple(int(rng.integers(1, 4)) for _ in range(nd))
        d = (1,) * nd if avg else tuple(int(rng.integers(1, 3)) for _ in range(nd))
        p = tuple(int(rng.integers(0, ki // 2 + 1)) for ki in k)
        size = tuple(int(rng.integers(5, 26)) for _ in range(nd))
        ceil = bool(rng.integers(2))
        x = rng.standard_normal((int(rng.integers(1, 4)), int(rng.integers(1, 4))) + size)
        x = x.astype(dtype)
        if not avg:  # ties, -inf and NaN
            x = np.round(x * 2) / 2
            x[rng.random(x.shape) < 0.05] = -np.inf
            x[rng.random(x.shape) < 0.02] = np.nan
        kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil)
        if avg:
            kw["count_include_pad"] = bool(rng.integers(2))
        else:
            kw["dilation"] = d
        try:
            op = getattr(fastconv, f"{'avg' if avg else 'max'}_pool{nd}d")
            op(x, **kw)
        except ValueError:
            continue
        return rng, nd, x, kw


@pytest.mark.parametrize("seed", SEEDS)
def test_max_pool_bitwise(seed):
    rng, nd, x, kw = _pool_case(seed, avg=False)
    xd = _dask(rng, x, _chunks(rng, x.shape[1], 1, 2))
    y, idx = getattr(fd, f"max_pool{nd}d")(xd, return_indices=True, **kw)
    ref, ref_idx = getattr(fastconv, f"max_pool{nd}d")(x, return_indices=True, **kw)
    yv, iv = dask.compute(y, idx)
    np.testing.assert_array_equal(yv, ref, err_msg=str(kw))
    np.testing.assert_array_equal(iv, ref_idx, err_msg=str(kw))
    assert np.array_equal(getattr(fd, f"max_pool{nd}d")(xd, **kw).compute(), ref,
                          equal_nan=True)
    gy = rng.standard_normal(ref.shape).astype(x.dtype)
    gyd = da.from_array(gy, chunks=y.chunks)
    dx = getattr(fd.grad, f"max_pool{nd}d")(gyd, idx, x.shape, **kw)
    expected = getattr(fastconv.grad, f"max_pool{nd}d")(gy, ref_idx, x.shape)
    np.testing.assert_array_equal(dx.compute(), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_avg_pool_bitwise_and_gradient(seed):
    rng, nd, x, kw = _pool_case(seed, avg=True)
    xd = _dask(rng, x)
    y = getattr(fd, f"avg_pool{nd}d")(xd, **kw)
    ref = getattr(fastconv, f"avg_pool{nd}d")(x, **kw)
    np.testing.assert_array_equal(y.compute(), ref, err_msg=str(kw))
    gy = rng.standard_normal(ref.shape).astype(x.dtype)
    gyd = da.from_array(gy, chunks=y.chunks)
    dx = getattr(fd.grad, f"avg_pool{nd}d")(gyd, x.shape, **kw)
    expected = getattr(fastconv.grad, f"avg_pool{nd}d")(gy, x.shape, **kw)
    assert_close(dx.compute(), expected, n_terms=int(np.prod(kw["kernel_size"])))


def test_every_output_is_computed_once(monkeypatch):
    """The kernels compute exactly as many outputs as the result has: no
    overlapping tiles, nothing computed and trimmed."""
    from fastconv import _launch, functional

    computed = []
    conv, pool = functional.conv2d, _launch.max_pool_forward

    def counting_conv(*a, **k):
        out = conv(*a, **k)
        computed.append(out.size)
        return out

    def counting_pool(*a, **k):
        out = pool(*a, **k)
        computed.append(out[0].size)
        return out

    monkeypatch.setattr(functional, "conv2d", counting_conv)
    monkeypatch.setattr(_launch, "max_pool_forward", counting_pool)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 31, 29))
    xd = da.from_array(x, chunks=(1, 3, 7, 6))
    y = fd.conv2d(xd, rng.standard_normal((4, 3, 3, 3)), stride=2, padding=1)
    assert y.npartitions > 8
    y.compute()
    assert sum(computed) == y.size and len(computed) == y.npartitions
    computed.clear()
    p = fd.max_pool2d(xd, 3, 2, 1, ceil_mode=True)
    p.compute()
    assert sum(computed) == p.size and len(computed) == p.npartitions


def test_planned_chunks_need_no_rechunk():
    p = planner.plan_conv((2, 3, 40, 33), (5, 3, 3, 3), stride=2, padding=1, outputs=(4, 5))
    x = da.zeros((2, 3, 40, 33), chunks=p.input_chunks())
    y = fd.conv2d(x, np.ones((5, 3, 3, 3)), stride=2, padding=1, rechunk=False)
    assert y.chunks == p.output_chunks(5)
    assert not any("rechunk" in name for name in y.dask.layers)


# -- errors ---------------------------------------------------------------------------


def test_weight_must_be_numpy():
    x = da.ones((1, 2, 8), chunks=4)
    with pytest.raises(TypeError, match="Expected weight to be a NumPy array"):
        fd.conv1d(x, da.ones((1, 2, 3)))


def test_input_must_be_dask():
    with pytest.raises(TypeError, match="Expected input to be a dask array"):
        fd.conv1d(np.ones((1, 2, 8)), np.ones((1, 2, 3)))


def test_channel_chunks_across_groups():
    x = da.ones((1, 4, 8), chunks=(1, 1, 8))
    w = np.ones((4, 2, 3))
    with pytest.raises(ValueError, match="channel chunks on group boundaries"):
        fd.conv1d(x, w, groups=2, rechunk=False)
    y = fd.conv1d(x, w, groups=2)  # rechunked to one channel chunk
    assert y.chunks[1] == (4,)
    ok = fd.conv1d(da.ones((1, 4, 8), chunks=(1, 2, 8)), w, groups=2, rechunk=False)
    assert ok.chunks[1] == (2, 2)
    np.testing.assert_allclose(ok.compute(), fastconv.conv1d(np.ones((1, 4, 8)), w, groups=2))


def test_chunk_smaller_than_halo_without_rechunk():
    x = da.ones((1, 1, 20), chunks=(1, 1, (2, 9, 9)))
    with pytest.raises(ValueError, match="Expected input chunks legal for this geometry"):
        fd.conv1d(x, np.ones((1, 1, 5)), padding=2, rechunk=False)
    with pytest.raises(ValueError, match="smallest chunk"):
        fd.max_pool1d(x, 5, 1, rechunk=False)


def test_bad_geometry_raises_as_fastconv():
    x = da.ones((1, 1, 4), chunks=2)
    with pytest.raises(ValueError, match="Expected the convolution"):
        fd.conv1d(x, np.ones((1, 1, 9)))
    with pytest.raises(ValueError, match="padding <= kernel_size/2"):
        fd.max_pool1d(x, 2, padding=2)
    with pytest.raises(TypeError, match="Expected input to have a float32"):
        fd.conv1d(x.astype(np.complex64), np.ones((1, 1, 2)))
    with pytest.raises(ValueError, match="Expected grad_output of shape"):
        fd.grad.conv1d_input((1, 1, 4), np.ones((1, 1, 2)), da.ones((1, 1, 2)))


def test_max_pool_gradient_checks_indices():
    gy = da.ones((1, 1, 2), chunks=1)
    idx = da.from_array(np.array([[[0, 7]]]), chunks=1)
    with pytest.raises(ValueError, match=r"Expected indices in \[0, 4\)"):
        fd.grad.max_pool1d(gy, idx, (1, 1, 4), 2).compute()


def test_integer_input_is_cast_to_float64():
    x = da.from_array(np.arange(10).reshape(1, 1, 10), chunks=3)
    y = fd.conv1d(x, np.ones((1, 1, 3)))
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y.compute(), fastconv.conv1d(np.arange(10).reshape(1, 1, 10),
                                                               np.ones((1, 1, 3))))
