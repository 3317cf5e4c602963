"""Every kernel path of the plan (fastconv._plan), forced on every geometry
where it applies, against the reference and the loop oracles: on each ISA
build this CPU runs, at 1 and 3 threads, with the work grain lowered so
that these small cases are really shared among the threads (conftest's
n_threads fixture). With FASTCONV_ISA set, only that build is run."""

import importlib

import loops
import numpy as np
import pytest
from conftest import assert_close, isa_allowed

import fastconv
from fastconv import _config, _launch, _plan
from fastconv import reference as ref
from fastconv._validation import conv_geometry

# (name, input shape, weight shape, stride, padding, dilation, groups)
CASES = [
    ("3x3", (2, 5, 9, 11), (7, 5, 3, 3), 1, 1, 1, 1),
    ("3x3-s2", (3, 4, 11, 10), (8, 4, 3, 3), 2, 1, 1, 1),
    # winograd: rows of 19 tiles, more than a vector and not a whole number of them
    ("3x3-wide", (2, 3, 5, 37), (4, 3, 3, 3), 1, 1, 1, 1),
    ("dilated-groups", (2, 6, 12, 9), (9, 2, 3, 2), (1, 2), (2, 1), (2, 1), 3),
    ("one-channel", (3, 1, 10, 12), (2, 1, 5, 5), 1, 2, 1, 1),
    ("one-image", (1, 2, 9, 10), (3, 2, 3, 3), 1, 1, 1, 1),  # direct: bands for the threads
    ("depthwise", (2, 6, 8, 9), (6, 1, 3, 3), 1, 1, 1, 6),
    ("depthwise-s2", (2, 4, 9, 8), (4, 1, 3, 3), 2, 1, 1, 4),
    ("2x2-s2", (2, 3, 8, 10), (5, 3, 2, 2), 2, 0, 1, 1),
    ("many-channels", (2, 40, 6, 6), (13, 40, 3, 3), 1, 0, 1, 1),
    # one tile of positions for 2 groups of 17 output channels: im2col
    # splits the channels of each group into parts for the threads
    ("groups-parts", (1, 36, 5, 5), (34, 18, 3, 3), 1, 1, 1, 2),
    # channels: more output channels than one B panel, positions in two
    # tiles of patches, K in two blocks
    ("channel-panels", (2, 30, 9, 9), (70, 30, 3, 3), 1, 1, 1, 1),
    # implicit: blocks of NR positions by rows (32 outputs of 34 a row, at
    # every NR), whole blocks of MR channels stored in place, K in two
    # blocks (added there), and a partial block of channels; the cases
    # above take blocks across rows ("channel-panels": 9 of 11)
    ("deep-wide", (1, 32, 5, 32), (17, 32, 3, 3), 1, 1, 1, 1),
    ("1d-rows", (7, 4, 10), (6, 4, 3), 1, 1, 1, 1),
    ("1d-s2", (5, 3, 19), (5, 3, 3), 2, 1, 1, 1),
    ("1d-wide", (2, 2, 70), (3, 2, 5), 1, 0, 2, 1),
]
DTYPES = [np.float32, np.float64]
REFERENCE = {"forward": "conv{nd}d", "input_grad": "conv{nd}d_input",
             "weight_grad": "conv{nd}d_weight"}


@pytest.fixture(params=["generic", "avx2", "avx512"])
def isa(request, monkeypatch):
    """Run the test on one ISA build of the kernels, in this process."""
    name = request.param
    if name not in _config._supported_isas():
        pytest.skip(f"this CPU cannot run the {name} build")
    if not isa_allowed(name):
        pytest.skip(f"this run is on the {_config.ISA} build (FASTCONV_ISA)")
    try:
        conv = importlib.import_module(f"fastconv._kernels._conv_{name}")
        pool = importlib.import_module(f"fastconv._kernels._pool_{name}")
    except ImportError:
        pytest.skip(f"the {name} build is not part of this installation")
    monkeypatch.setattr(_config, "conv_kernels", conv)
    monkeypatch.setattr(_config, "pool_kernels", pool)
    _config.blocking.cache_clear()
    _plan._plan_cached.cache_clear()
    yield name
    _config.blocking.cache_clear()
    _plan._plan_cached.cache_clear()


def _operands(case, dtype, rng):
    _, xs, ws, stride, padding, dilation, groups = case
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    geo = conv_geometry(xs, ws, len(xs) - 2, stride, padding, dilation, groups)
    gy = rng.standard_normal(geo.output_shape()).astype(dtype)
    return x, w, b, gy, kw, geo


def _run(op, nd, x, w, b, gy, kw):
    if op == "forward":
        return getattr(fastconv, f"conv{nd}d")(x, w, b, **kw)
    if op == "input_grad":
        return getattr(fastconv.grad, f"conv{nd}d_input")(x.shape, w, gy, **kw)
    return getattr(fastconv.grad, f"conv{nd}d_weight")(x, w.shape, gy, **kw)


def _oracle(op, nd, x, w, b, gy, kw):
    name = REFERENCE[op].format(nd=nd)
    if op == "forward":
        return getattr(ref, name)(x, w, b, **kw)
    if op == "input_grad":
        return getattr(ref, name)(x.shape, w, gy, **kw)
    return getattr(ref, name)(x, w.shape, gy, **kw)


def _terms(op, geo):
    """The length of the sums behind one output value, for the tolerance."""
    taps = geo.kernel[0] * geo.kernel[1]
    if op == "forward":
        return geo.c_in // geo.groups * taps
    if op == "input_grad":
        return geo.c_out // geo.groups * taps
    return geo.n * geo.out_size[0] * geo.out_size[1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", _plan.CONV_OPS)
def test_every_path_matches_the_reference(op, dtype, isa, n_threads):
    rng = np.random.default_rng(7)
    taken = set()
    for path in _plan.PATHS[op]:
        for case in CASES:
            x, w, b, gy, kw, geo = _operands(case, dtype, rng)
            nd = geo.nd
            with _plan.forced(**{op: path}):
                try:
                    plan = _plan.plan_for(op, geo, np.dtype(dtype).itemsize)
                except ValueError as exc:
                    assert "does not apply" in str(exc)
                    continue
                assert plan.path == path
                assert plan.n_threads == n_threads
                got = _run(op, nd, x, w, b, gy, kw)
            want = _oracle(op, nd, x, w, b, gy, kw)
            assert got.dtype == dtype
            assert_close(got, want, n_terms=_terms(op, geo), err_msg=f"{op} {path} {case[0]}")
            taken.add(path)
    assert taken == set(_plan.PATHS[op]), f"paths never taken: {set(_plan.PATHS[op]) - taken}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_forward_path_fuses_the_relu(dtype, isa):
    """The forward with its fused ReLU (the inference layers), with and
    without a bias, on every path: max(reference, 0)."""
    rng = np.random.default_rng(5)
    taken = set()
    for path in _plan.PATHS["forward"]:
        for case in CASES:
            x, w, b, _, kw, geo = _operands(case, dtype, rng)
            for bias in (b, None):
                with _plan.forced(forward=path):
                    try:
                        _plan.plan_for("forward", geo, np.dtype(dtype).itemsize)
                    except ValueError:
                        continue
                    got = _launch.conv_forward(x, w, bias, geo, relu=True)
                want = np.maximum(_oracle("forward", geo.nd, x, w, bias, None, kw), 0)
                assert_close(got, want, n_terms=_terms("forward", geo),
                             err_msg=f"{path} {case[0]}")
                assert (got == 0).any() and (got > 0).any()
                taken.add(path)
    assert taken == set(_plan.PATHS["forward"])


LOOP_CASES = [  # (input shape, weight shape, stride, padding, groups), all 4-D
    ((2, 4, 5, 6), (4, 2, 3, 2), (1, 1), (1, 1), 2),
    ((3, 3, 1, 7), (2, 3, 1, 3), (1, 1), (0, 1), 1),  # a 1-D convolution: images as rows
    ((2, 3, 6, 5), (3, 1, 3, 3), (2, 1), (1, 0), 3),  # depthwise
    ((2, 3, 5, 6), (3, 1, 3, 3), (1, 1), (1, 1), 3),  # depthwise at stride 1: flat planes
    ((2, 3, 5, 7), (4, 3, 3, 3), (1, 1), (1, 1), 1),  # 3x3 at stride 1: winograd, odd sizes
    ((1, 2, 4, 37), (3, 2, 3, 3), (1, 1), (0, 1), 1),  # winograd: rows of tiles past a vector
]


@pytest.mark.parametrize("op", _plan.CONV_OPS)
def test_every_path_matches_the_loops(op, isa):
    """Tiny float64 cases against the textbook loops (tests/loops.py)."""
    rng = np.random.default_rng(3)
    taken = set()
    for xs, ws, stride, pad, groups in LOOP_CASES:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        nd = 1 if xs[2] == 1 else 2
        kw = dict(stride=stride[2 - nd:], padding=pad[2 - nd:], groups=groups)
        geo = conv_geometry(xs[:2] + xs[4 - nd:], ws[:2] + ws[4 - nd:], nd, kw["stride"],
                            kw["padding"], 1, groups)
        gy = rng.standard_normal(geo.output_shape())
        gy4 = gy.reshape(gy.shape[:2] + (-1,) + gy.shape[-1:])
        if op == "forward":
            want = loops.conv2d(x, w, None, stride, pad, pad, (1, 1), groups)
        elif op == "input_grad":
            want = loops.conv2d_input(gy4, w, xs, stride, pad, (1, 1), groups)
        else:
            want = loops.conv2d_weight(x, gy4, ws, stride, pad, (1, 1), groups)
        for path in _plan.PATHS[op]:
            with _plan.forced(**{op: path}):
                try:
                    _plan.plan_for(op, geo, 8)
                except ValueError as exc:
                    assert "does not apply" in str(exc)
                    continue
                got = _run(op, nd, x.reshape(geo.input_shape()),
                           w.reshape(geo.weight_shape()), None, gy, kw)
            assert_close(got.reshape(want.shape), want, n_terms=24, err_msg=f"{op} {path}")
            taken.add(path)
    assert taken == set(_plan.PATHS[op]), f"paths never taken: {set(_plan.PATHS[op]) - taken}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_paths_take_a_packed_weight(dtype, isa):
    """The forward of a weight packed ahead (_launch.PackedWeight, the fused
    inference layers) on every path: the same result as packing per call;
    panels of another build are packed again, and a wrong size is refused."""
    rng = np.random.default_rng(11)
    for case in CASES:
        x, w, b, _, kw, geo = _operands(case, dtype, rng)
        for path in _plan.PATHS["forward"]:
            with _plan.forced(forward=path):
                try:
                    _plan.plan_for("forward", geo, np.dtype(dtype).itemsize)
                except ValueError:
                    continue
                want = _launch.conv_forward(x, w, b, geo)
                packed = _launch.PackedWeight(w)
                for _ in range(2):
                    got = _launch.conv_forward(x, w, b, geo, packed=packed)
                    np.testing.assert_array_equal(got, want, err_msg=f"{path} {case[0]}")
                used = packed._kernels is _config.conv_kernels
                assert used != path.startswith("depthwise")  # which read the weight as it is
    other = importlib.import_module("fastconv._kernels._conv_generic")
    x, w, b, _, kw, geo = _operands(CASES[0], dtype, rng)
    packed = _launch.PackedWeight(w)
    packed.panels(other, geo.nd, geo.groups, 1)
    np.testing.assert_array_equal(_launch.conv_forward(x, w, b, geo, packed=packed),
                                  _launch.conv_forward(x, w, b, geo))
    assert packed._kernels is _config.conv_kernels
    out = np.empty(geo.output_shape(), dtype)
    with pytest.raises(ValueError, match="packed weight of 3 values"):
        _config.conv_kernels.conv2d_forward(x, w, b, np.ones(3, dtype), out,
                                            *geo.kernel_args(), "im2col", 0, 0, False, 1)


def test_conv_plan_names_the_paths_a_call_takes():
    plan = fastconv.conv_plan((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    assert set(plan) == {"forward", "input_grad", "weight_grad", "threads"}
    for op in _plan.CONV_OPS:
        assert plan[op] in _plan.PATHS[op]
    f64 = fastconv.conv_plan((8, 64, 56, 56), (64, 64, 3, 3), np.float64, padding=1)
    assert f64["forward"] == f64["input_grad"] == "winograd"  # on every build
    dw = fastconv.conv_plan((2, 8, 9, 9), (8, 1, 3, 3), np.float64, padding=1, groups=8)
    assert (dw["forward"], dw["input_grad"], dw["weight_grad"]) == ("depthwise_flat",) * 3
    with pytest.raises(TypeError, match="Expected dtype float32 or float64"):
        fastconv.conv_plan((1, 1, 4, 4), (1, 1, 3, 3), np.int32)
    with pytest.raises(ValueError, match="Expected an input shape of 3 or 4"):
        fastconv.conv_plan((1, 4), (1, 1, 3))


def test_forcing_checks_its_paths():
    with pytest.raises(ValueError, match="Expected a forward path of"):
        with _plan.forced(forward="col2im"):
            pass
    with pytest.raises(ValueError, match="Expected an op of"):
        with _plan.forced(backward="col2im"):
            pass
    with _plan.forced(weight_grad="direct"):
        with pytest.raises(ValueError, match="does not apply"):
            fastconv.grad.conv2d_weight(np.ones((1, 1, 5, 5)), (1, 1, 3, 3),
                                        np.ones((1, 1, 2, 2)), stride=2)
    assert _plan._forced == {}


NON_FINITE_CASES = [  # input gradients whose paths used to multiply zeros by the weight
    ((2, 8, 8, 8), (8, 8, 3, 3), dict(padding=1)),
    ((2, 8, 8, 8), (8, 1, 3, 3), dict(padding=1, groups=8)),  # depthwise
    ((6, 4, 10), (5, 4, 3), dict(padding=1)),  # 1-D: the implicit adjoint applies
]


@pytest.mark.parametrize("xs,ws,kw", NON_FINITE_CASES)
def test_input_gradient_is_nan_only_where_a_non_finite_weight_reaches(xs, ws, kw, isa):
    """An inf weight makes NaN (inf - inf) or inf only at the inputs its tap
    reaches; every path gives the reference's non-finite pattern and values."""
    rng = np.random.default_rng(5)
    nd = len(xs) - 2
    w = rng.standard_normal(ws)
    w[(1, 0) + (0,) * nd] = np.inf
    geo = conv_geometry(xs, ws, nd, 1, kw["padding"], 1, kw.get("groups", 1))
    gy = rng.standard_normal(geo.output_shape())
    want = getattr(ref, f"conv{nd}d_input")(xs, w, gy, **kw)
    assert np.isfinite(want).any() and not np.isfinite(want).all()
    taken = 0
    for path in _plan.PATHS["input_grad"]:
        with _plan.forced(input_grad=path):
            try:
                _plan.plan_for("input_grad", geo, 8)
            except ValueError:
                continue
            got = getattr(fastconv.grad, f"conv{nd}d_input")(xs, w, gy, **kw)
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=path)
        finite = np.isfinite(want)
        assert_close(got[finite], want[finite], n_terms=100, err_msg=path)
        taken += 1
    assert taken >= 1


# (input shape, kernel_size, stride, padding, ceil_mode): every pooling path applies
# to some of them (flat: 2x2 windows at stride 2 that tile pairs of rows;
# tiled: kernel = stride, no padding)
POOL_CASES = [
    ((2, 3, 8, 12), 2, 2, 0, False),
    ((2, 3, 9, 40), 2, 2, 0, False),   # an odd row count: the last row is dropped
    ((1, 2, 7, 9), 3, 2, 1, True),
    ((2, 2, 9, 8), (3, 2), (3, 2), 0, False),
    ((3, 1, 1, 30), (1, 4), (1, 3), (0, 1), False),  # 1-D as H = 1
    ((1, 1, 13, 11), 3, 1, 1, False),  # one plane: the forward's items are bands of rows
]
POOL_OPS = ("max_pool", "avg_pool", "avg_pool_grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", POOL_OPS)
def test_every_pooling_path_matches_the_reference(op, dtype, isa, n_threads):
    """Max pooling bitwise (values and indices, with ties), average pooling
    and its gradient within rounding, against the reference and the loops."""
    rng = np.random.default_rng(11)
    taken = set()
    for shape, k, s, p, ceil in POOL_CASES:
        x = rng.integers(-3, 4, size=shape).astype(dtype)  # ties
        kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil)
        for path in _plan.PATHS[op]:
            with _plan.forced(**{op: path}):
                try:
                    if op == "max_pool":
                        y, idx = fastconv.max_pool2d(x, return_indices=True, **kw)
                        y_only = fastconv.max_pool2d(x, **kw)
                    elif op == "avg_pool":
                        y = fastconv.avg_pool2d(x, **kw)
                    else:
                        gy = rng.standard_normal(ref.avg_pool2d(x, **kw).shape).astype(dtype)
                        got = fastconv.grad.avg_pool2d(gy, x.shape, **kw)
                except ValueError as exc:
                    assert "does not apply" in str(exc)
                    continue
            taken.add(path)
            if op == "max_pool":
                y_ref, idx_ref = ref.max_pool2d(x, return_indices=True, **kw)
                np.testing.assert_array_equal(y, y_ref, err_msg=path)
                np.testing.assert_array_equal(idx, idx_ref, err_msg=path)
                np.testing.assert_array_equal(y_only, y_ref, err_msg=path)
                kk, ss, pp = (np.broadcast_to(v, 2) for v in (k, s, p))
                np.testing.assert_array_equal(
                    y, loops.max_pool2d(x, tuple(kk), tuple(ss), tuple(pp), (1, 1), ceil)[0])
            elif op == "avg_pool":
                assert_close(y, ref.avg_pool2d(x, **kw), n_terms=9, err_msg=path)
            else:
                assert_close(got, ref.avg_pool2d_grad(gy, x.shape, **kw), n_terms=9,
                             err_msg=path)
    assert taken == set(_plan.PATHS[op]), f"paths never taken: {set(_plan.PATHS[op]) - taken}"


@pytest.mark.parametrize("ws,groups", [((2, 3, 3, 3), 1), ((3, 1, 3, 3), 3)])
def test_weight_gradient_is_nan_only_where_a_non_finite_input_reaches(ws, groups, isa):
    """An inf input at the last column is never paired with an output by the
    first column of taps: every path gives the reference's finite values there."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 8, 8))
    x[0, 1, 4, 7] = np.inf
    geo = conv_geometry(x.shape, ws, 2, 1, 0, 1, groups)
    gy = rng.standard_normal(geo.output_shape())
    want = ref.conv2d_weight(x, ws, gy, groups=groups)
    assert np.isfinite(want).any() and not np.isfinite(want).all()
    taken = 0
    for path in _plan.PATHS["weight_grad"]:
        with _plan.forced(weight_grad=path):
            try:
                _plan.plan_for("weight_grad", geo, 8)
            except ValueError:
                continue
            got = fastconv.grad.conv2d_weight(x, ws, gy, groups=groups)
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=path)
        finite = np.isfinite(want)
        assert_close(got[finite], want[finite], n_terms=100, err_msg=path)
        taken += 1
    assert taken >= 2


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("where", ["input", "weight"])
def test_winograd_gives_the_direct_non_finite_values(where, relu, isa):
    """The winograd transforms would turn an inf into NaN (inf - inf) where
    the direct sums are +-inf; meeting one, the path computes the call again
    directly, so the forward (with and without its fused ReLU, which would
    hide a -inf) and the input gradient give the reference's values."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 16, 9, 10))
    w = rng.standard_normal((32, 16, 3, 3))
    b = rng.standard_normal(32)
    if where == "input":
        x[0, 3, 4, 4], x[1, 0, 0, 9], x[1, 5, 6, 2] = np.inf, -np.inf, np.nan
    else:
        w[5, 2, 1, 1] = np.inf
    geo = conv_geometry(x.shape, w.shape, 2, 1, 1, 1, 1)
    with np.errstate(invalid="ignore"):  # inf - inf, on purpose
        want = ref.conv2d(x, w, b, padding=1)
        if relu:
            want = np.where(want < 0, 0, want)
        gy = rng.standard_normal(want.shape)
        if where == "input":
            gy[1, 7, 2, 3] = np.inf
        want_input = ref.conv2d_input(x.shape, w, gy, padding=1)
    with _plan.forced(forward="winograd", input_grad="winograd"):
        assert _plan.plan_for("forward", geo, 8).path == "winograd"
        got = _launch.conv_forward(x, w, b, geo, relu=relu)
        got_input = fastconv.grad.conv2d_input(x.shape, w, gy, padding=1)
    for g, wnt in ((got, want), (got_input, want_input)):
        assert np.isfinite(wnt).any() and not np.isfinite(wnt).all()
        for test in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(test(g), test(wnt))
        finite = np.isfinite(wnt)
        assert_close(g[finite], wnt[finite], n_terms=16 * 9)
    # the kernel's own answer: True (compute again) only with a non-finite value
    out = np.empty(want.shape)
    args = (*geo.kernel_args(), "winograd", 16, 0, relu, 1)
    assert _config.conv_kernels.conv2d_forward(x, w, b, np.empty(0), out, *args)
    x[~np.isfinite(x)] = 1.0
    w[~np.isfinite(w)] = 1.0
    assert not _config.conv_kernels.conv2d_forward(x, w, b, np.empty(0), out, *args)
    want = ref.conv2d(x, w, b, padding=1)
    assert_close(out, np.maximum(want, 0) if relu else want, n_terms=16 * 9)


@pytest.mark.parametrize("stride", [1, 2])
def test_forward_with_a_non_finite_weight_multiplies_the_padding_on_every_path(stride, isa):
    """A non-finite weight times the padding's zeros is NaN (the reference's
    and PyTorch's zero padding): every path, including the depthwise ones
    that skip the padding, gives the same non-finite pattern."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 7, 8))
    ws = (4, 1, 3, 3)
    w = rng.standard_normal(ws)
    w[2, 0, 0, 1] = np.inf
    geo = conv_geometry(x.shape, ws, 2, stride, 1, 1, 4)
    with np.errstate(invalid="ignore"):  # inf * 0, on purpose
        want = ref.conv2d(x, w, stride=stride, padding=1, groups=4)
    assert np.isnan(want).any() and np.isfinite(want).any()
    taken = 0
    for path in _plan.PATHS["forward"]:
        with _plan.forced(forward=path):
            try:
                _plan.plan_for("forward", geo, 8)
            except ValueError:
                continue
            got = fastconv.conv2d(x, w, stride=stride, padding=1, groups=4)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=path)
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want), err_msg=path)
        finite = np.isfinite(want)
        assert_close(got[finite], want[finite], n_terms=9, err_msg=path)
        taken += 1
    assert taken >= 2
