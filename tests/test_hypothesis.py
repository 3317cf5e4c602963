"""Property-based tests: random geometries against the NumPy reference."""

import numpy as np
from conftest import assert_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference as ref

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def conv_problems(draw):
    nd = draw(st.sampled_from([1, 2]))
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    padding_kind = draw(st.sampled_from(["int", "tuple", "asym", "same", "valid"]))
    stride = (1,) * nd if padding_kind == "same" else tuple(
        draw(st.integers(1, 4)) for _ in range(nd))
    if padding_kind == "int":
        padding = draw(st.integers(0, 3))
    elif padding_kind == "tuple":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(nd))
    elif padding_kind == "asym":
        pairs = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(nd))
        padding = pairs[0] if nd == 1 else pairs
    else:
        padding = padding_kind
    # an input large enough for one output
    spatial = tuple(d * (k - 1) + 1 + draw(st.integers(0, 9))
                    for d, k in zip(dilation, kernel))
    n = draw(st.integers(0, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return dict(nd=nd, shape=(n, c_in) + spatial, w_shape=(c_out, c_in // groups) + kernel,
                kw=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
                seed=seed, dtype=dtype)


@SETTINGS
@given(conv_problems())
def test_conv_random_geometry(p):
    rng = np.random.default_rng(p["seed"])
    nd, kw, dtype = p["nd"], p["kw"], p["dtype"]
    x = rng.standard_normal(p["shape"]).astype(dtype)
    w = rng.standard_normal(p["w_shape"]).astype(dtype)
    b = rng.standard_normal(p["w_shape"][0]).astype(dtype)
    y = getattr(fastconv, f"conv{nd}d")(x, w, b, **kw)
    assert_close(y, getattr(ref, f"conv{nd}d")(x, w, b, **kw), n_terms=w[0].size)
    gy = rng.standard_normal(y.shape).astype(dtype)
    assert_close(getattr(fastconv.grad, f"conv{nd}d_input")(x.shape, w, gy, **kw),
                 getattr(ref, f"conv{nd}d_input")(x.shape, w, gy, **kw),
                 n_terms=w.shape[0] * w[0, 0].size)
    assert_close(getattr(fastconv.grad, f"conv{nd}d_weight")(x, w.shape, gy, **kw),
                 getattr(ref, f"conv{nd}d_weight")(x, w.shape, gy, **kw),
                 n_terms=max(1, gy[:, 0].size))


@SETTINGS
@given(conv_problems(), st.data())
def test_conv_transpose_random_geometry(p, data):
    nd, kw, dtype = p["nd"], dict(p["kw"]), p["dtype"]
    kw["stride"] = tuple(data.draw(st.integers(1, 4)) for _ in range(nd))
    kw["padding"] = tuple(data.draw(st.integers(0, 3)) for _ in range(nd))
    kw["output_padding"] = tuple(
        data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(kw["stride"], kw["dilation"]))
    rng = np.random.default_rng(p["seed"])
    groups = kw["groups"]
    c_out, c_in = p["w_shape"][0], p["shape"][1]
    x = rng.standard_normal((p["shape"][0], c_out) + p["shape"][2:]).astype(dtype)
    w = rng.standard_normal((c_out, c_in // groups) + p["w_shape"][2:]).astype(dtype)
    op = getattr(fastconv, f"conv_transpose{nd}d")
    try:
        y = op(x, w, **kw)
    except ValueError:
        # padding larger than the transposed output: must be rejected by both
        with np.testing.assert_raises(ValueError):
            getattr(ref, f"conv_transpose{nd}d")(x, w, **kw)
        return
    assert_close(y, getattr(ref, f"conv_transpose{nd}d")(x, w, **kw), n_terms=w[:, 0].size)
    gy = rng.standard_normal(y.shape).astype(dtype)
    assert_close(getattr(fastconv.grad, f"conv_transpose{nd}d_input")(x.shape, w, gy, **kw),
                 getattr(ref, f"conv_transpose{nd}d_input")(x.shape, w, gy, **kw),
                 n_terms=w[0].size)
    assert_close(getattr(fastconv.grad, f"conv_transpose{nd}d_weight")(x, w.shape, gy, **kw),
                 getattr(ref, f"conv_transpose{nd}d_weight")(x, w.shape, gy, **kw),
                 n_terms=max(1, x[:, 0].size))


@st.composite
def pool_problems(draw):
    nd = draw(st.sampled_from([1, 2]))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 4)] * nd)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    spatial = tuple(d * (k - 1) + 1 + draw(st.integers(0, 8))
                    for d, k in zip(dilation, kernel))
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3))) + spatial
    return dict(nd=nd, shape=shape, kernel_size=kernel, stride=stride, padding=padding,
                dilation=dilation, ceil_mode=draw(st.booleans()),
                count_include_pad=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)),
                dtype=draw(st.sampled_from([np.float32, np.float64])))


@SETTINGS
@given(pool_problems())
def test_pool_random_geometry(p):
    rng = np.random.default_rng(p["seed"])
    nd = p["nd"]
    x = np.round(rng.standard_normal(p["shape"]), 1).astype(p["dtype"])
    kw = dict(kernel_size=p["kernel_size"], stride=p["stride"], padding=p["padding"],
              ceil_mode=p["ceil_mode"])
    try:
        y, idx = getattr(fastconv, f"max_pool{nd}d")(x, dilation=p["dilation"],
                                                     return_indices=True, **kw)
    except ValueError as exc:  # a window of only padding: both must reject it
        assert "overlap the input" in str(exc)
        with np.testing.assert_raises(ValueError):
            getattr(ref, f"max_pool{nd}d")(x, dilation=p["dilation"], **kw)
        return
    y_ref, idx_ref = getattr(ref, f"max_pool{nd}d")(x, dilation=p["dilation"],
                                                    return_indices=True, **kw)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    gy = rng.standard_normal(y.shape).astype(p["dtype"])
    assert_close(getattr(fastconv.grad, f"max_pool{nd}d")(gy, idx, x.shape),
                 getattr(ref.grad, f"max_pool{nd}d")(gy, idx, x.shape), n_terms=16)

    kw["count_include_pad"] = p["count_include_pad"]
    a = getattr(fastconv, f"avg_pool{nd}d")(x, **kw)
    assert_close(a, getattr(ref, f"avg_pool{nd}d")(x, **kw), n_terms=16)
    ga = rng.standard_normal(a.shape).astype(p["dtype"])
    assert_close(getattr(fastconv.grad, f"avg_pool{nd}d")(ga, x.shape, **kw),
                 getattr(ref.grad, f"avg_pool{nd}d")(ga, x.shape, **kw), n_terms=16)
