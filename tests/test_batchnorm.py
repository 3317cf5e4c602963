"""Batch normalisation: fastconv.batch_norm, grad.batch_norm, the reference,
nn.BatchNorm1d/2d, and the module buffers they brought (state_dict,
load_state_dict(strict=...), train/eval).

Oracles: PyTorch when importable (the layers over several steps in train and
eval, every combination of momentum, affine and track_running_stats), the
reference (every ISA build, 1 and 3 threads, both kernel paths), textbook
loops on tiny inputs, and central differences in float64.
"""

import importlib
import itertools
import math

import numpy as np
import pytest
from conftest import assert_close

import fastconv
from fastconv import _config, _plan, nn, reference

DTYPES = [np.float32, np.float64]
# (layer, input shape): (N, C) and (N, C, L) for 1d, (N, C, H, W) for 2d
LAYER_CASES = [
    ("BatchNorm1d", (7, 3)),
    ("BatchNorm1d", (4, 3, 6)),
    ("BatchNorm2d", (3, 3, 4, 5)),
]
# shapes for the functional ops: the row path (S > 1, S not a multiple of the
# kernel's 8 lanes, and a multiple), the column path (S == 1, C over one block
# of 64 channels and under), and 3 spatial axes
SHAPES = [(5, 3), (2, 130), (9, 70, 1), (4, 3, 7), (2, 5, 16), (2, 4, 5, 6), (2, 2, 3, 3, 2)]


def _count(shape):
    """Values per channel: the length of each statistic's reduction."""
    return math.prod(shape) // shape[1]


def _data(rng, shape, dtype, loc=0.5, scale=2.0):
    return (rng.standard_normal(shape) * scale + loc).astype(dtype)


def _params(rng, c, dtype):
    """Non-trivial weight, bias and running statistics."""
    return (rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype),
            rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2.0, c).astype(dtype))


def _scales(x, gy, w, b, rm, rv, training, eps):
    """The magnitude of the terms each result sums or cancels, for assert_close.

    The output is computed as ``x*alpha + beta`` (PyTorch's CPU form), which
    cancels to ``y``: its rounding is relative to ``|x|*|alpha| + |beta|``,
    large when a channel's variance is small next to its mean (two close
    values, say). The input gradient likewise cancels terms of
    ``|dy|*|a|*(1 + |x|*invstd)^2``.
    """
    axes = (0,) + tuple(range(2, x.ndim))
    xd = x.astype(np.float64)
    var = xd.var(axis=axes) if training else rv.astype(np.float64)
    invstd = 1 / np.sqrt(var + eps)
    wa = np.ones(x.shape[1]) if w is None else np.abs(w.astype(np.float64))
    big_x, big_g = float(np.abs(xd).max()), float(np.abs(gy).max())
    standard = big_x * float(invstd.max())
    return {
        "output": standard * float(wa.max()) + (0 if b is None else float(np.abs(b).max())),
        "running_mean": max(1.0, big_x, float(np.abs(rm).max())),
        "running_var": max(1.0, big_x ** 2, float(np.abs(rv).max())),
        "grad_input": big_g * float((wa * invstd).max()) * (1 + standard) ** 2,
        "grad_weight": big_g * standard,
        "grad_bias": big_g,
    }


# -- against PyTorch ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, 0.7, None])
@pytest.mark.parametrize("name,shape", LAYER_CASES)
def test_layer_matches_torch_over_steps(name, shape, momentum, affine, track, dtype, rng):
    """Three training steps, two in eval, one more in training: outputs,
    input gradients, accumulated affine gradients, running statistics and
    num_batches_tracked after each."""
    torch = pytest.importorskip("torch")
    c = shape[1]
    ours = getattr(nn, name)(c, momentum=momentum, affine=affine, track_running_stats=track,
                             dtype=dtype)
    theirs = getattr(torch.nn, name)(c, momentum=momentum, affine=affine,
                                     track_running_stats=track, dtype=getattr(torch, dtype.__name__))
    if affine:
        w, b, _, _ = _params(rng, c, dtype)
        ours.weight.data[...] = w
        ours.bias.data[...] = b
        with torch.no_grad():
            theirs.weight.copy_(torch.from_numpy(w))
            theirs.bias.copy_(torch.from_numpy(b))
    n = _count(shape)
    for step, training in enumerate([True, True, True, False, False, True]):
        ours.train(training)
        theirs.train(training)
        x = _data(rng, shape, dtype, loc=0.5 + step)
        gy = rng.standard_normal(shape).astype(dtype)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        yt = theirs(xt)
        yt.backward(torch.from_numpy(gy))
        y = ours(x)
        gx = ours.backward(gy)
        msg = f"step {step} ({'train' if training else 'eval'})"
        assert y.dtype == gx.dtype == dtype
        w = ours.weight.data if affine else None
        b = ours.bias.data if affine else None
        rm = ours.running_mean if track else np.zeros(c)
        rv = ours.running_var if track else np.ones(c)
        s = _scales(x, gy, w, b, rm, rv, training or not track, ours.eps)
        assert_close(y, yt.detach().numpy(), n_terms=n, scale=s["output"], err_msg=msg)
        assert_close(gx, xt.grad.numpy(), n_terms=n, scale=s["grad_input"], err_msg=msg)
        if affine:
            assert_close(ours.weight.grad, theirs.weight.grad.numpy(), n_terms=n * (step + 1),
                         scale=s["grad_weight"], err_msg=msg)
            assert_close(ours.bias.grad, theirs.bias.grad.numpy(), n_terms=n * (step + 1),
                         scale=s["grad_bias"], err_msg=msg)
        if track:
            assert_close(ours.running_mean, theirs.running_mean.numpy(), n_terms=n,
                         scale=s["running_mean"], err_msg=msg)
            assert_close(ours.running_var, theirs.running_var.numpy(), n_terms=n,
                         scale=s["running_var"], err_msg=msg)
            assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked)
            assert ours.running_mean.dtype == dtype
        else:
            assert ours.running_mean is None and ours.named_buffers() == []
    assert list(ours.state_dict()) == list(theirs.state_dict())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_functional_matches_torch(shape, training, dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    c = shape[1]
    x = _data(rng, shape, dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    w, b, rm, rv = _params(rng, c, dtype)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    xt, wt, bt = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w, b))
    yt = F.batch_norm(xt, trm, trv, wt, bt, training=training, momentum=0.3, eps=1e-3)
    yt.backward(torch.from_numpy(gy))
    s = _scales(x, gy, w, b, rm, rv, training, 1e-3)
    grads = fastconv.grad.batch_norm(x, gy, w, rm, rv, training=training, eps=1e-3)
    y = fastconv.batch_norm(x, rm, rv, w, b, training=training, momentum=0.3, eps=1e-3)
    n = _count(shape)
    assert_close(y, yt.detach().numpy(), n_terms=n, scale=s["output"])
    assert_close(rm, trm.numpy(), n_terms=n, scale=s["running_mean"])
    assert_close(rv, trv.numpy(), n_terms=n, scale=s["running_var"])
    for name, ours, theirs in zip(("grad_input", "grad_weight", "grad_bias"), grads,
                                  (xt.grad, wt.grad, bt.grad)):
        assert ours.dtype == dtype
        assert_close(ours, theirs.numpy(), n_terms=n, scale=s[name], err_msg=name)


def test_no_running_stats_in_training_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = _data(rng, (6, 4, 3), np.float64)
    expected = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True)
    assert_close(fastconv.batch_norm(x, None, None, training=True), expected.numpy(), n_terms=8)


def test_load_torch_state_dict(rng):
    """A trained torch BatchNorm's state_dict loads key for key and the eval
    outputs agree."""
    torch = pytest.importorskip("torch")
    theirs = torch.nn.BatchNorm2d(3)
    theirs.weight.data.uniform_(0.5, 1.5)
    for _ in range(3):
        theirs(torch.randn(4, 3, 5, 5) * 2 + 1)
    ours = nn.BatchNorm2d(3)
    result = ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert tuple(result) == ([], [])
    assert int(ours.num_batches_tracked) == 3 and ours.num_batches_tracked.dtype == np.int64
    x = _data(rng, (2, 3, 5, 5), np.float32)
    expected = theirs.eval()(torch.from_numpy(x)).detach().numpy()
    assert_close(ours.eval()(x), expected, n_terms=8)


# -- against the reference, on every build and thread count -------------------------


@pytest.fixture(params=["generic", "avx2", "avx512"])
def isa(request, monkeypatch):
    """Run the test on one ISA build of the normalisation kernels."""
    name = request.param
    if name not in _config._supported_isas():
        pytest.skip(f"this CPU cannot run the {name} build")
    try:
        kernels = importlib.import_module(f"fastconv._kernels._norm_{name}")
    except ImportError:
        pytest.skip(f"the {name} build is not part of this installation")
    monkeypatch.setattr(_config, "norm_kernels", kernels)
    return name


@pytest.fixture(params=[1, 3])
def n_threads(request, monkeypatch, threads):
    """1 or 3 threads, with a grain small enough for every case to use them."""
    monkeypatch.setattr(_plan, "GRAIN", {"conv": 1, "pool": 1})
    threads.set_num_threads(request.param)
    return request.param


def _all_ops(module, x, gy, w, b, rm, rv, training):
    """Forward (and its updated running statistics) and the three gradients."""
    rm, rv = rm.copy(), rv.copy()
    grad = module.grad.batch_norm if module is fastconv else module.batch_norm_grad
    y = module.batch_norm(x, rm, rv, w, b, training=training, momentum=0.25, eps=1e-4)
    return (y, rm, rv) + tuple(grad(x, gy, w, rm if not training else None,
                                    rv if not training else None, training=training,
                                    eps=1e-4))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(shape, dtype, training, affine, isa, n_threads, rng):
    x = _data(rng, shape, dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    w, b, rm, rv = _params(rng, shape[1], dtype)
    if not affine:
        w = b = None
    ours = _all_ops(fastconv, x, gy, w, b, rm, rv, training)
    expected = _all_ops(reference, x, gy, w, b, rm, rv, training)
    s = _scales(x, gy, w, b, rm, rv, training, 1e-4)
    n = _count(shape)
    names = ["output", "running_mean", "running_var", "grad_input", "grad_weight", "grad_bias"]
    for name, a, e in zip(names, ours, expected):
        assert a.dtype == dtype, name
        assert_close(a, e, n_terms=n, scale=s[name], err_msg=name)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(40, 150), (3, 5, 37), (8, 3, 9, 9)])
def test_results_do_not_depend_on_the_thread_count(shape, training, monkeypatch, threads, rng):
    """A channel is summed by one thread in a fixed order: bitwise equal."""
    monkeypatch.setattr(_plan, "GRAIN", {"conv": 1, "pool": 1})
    x = _data(rng, shape, np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    w, b, rm, rv = _params(rng, shape[1], np.float32)
    runs = []
    for n in (1, 2, 3, 5):
        threads.set_num_threads(n)
        runs.append(_all_ops(fastconv, x, gy, w, b, rm, rv, training))
    for run in runs[1:]:
        for a, e in zip(run, runs[0]):
            np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("dtype", DTYPES)
def test_statistics_are_accurate_far_from_zero(dtype, rng):
    """The shifted one-pass statistics keep their accuracy when the mean is
    10^5 standard deviations away from 0 (the textbook E[x^2] - E[x]^2 in
    float32 would lose every digit)."""
    x = (1e4 + 0.1 * rng.standard_normal((16, 3, 50))).astype(dtype)
    rm, rv = np.zeros(3), np.zeros(3)
    fastconv.batch_norm(x, rm, rv, training=True, momentum=1.0)
    exact = x.astype(np.float64)
    np.testing.assert_allclose(rm, exact.mean(axis=(0, 2)), rtol=1e-15)
    np.testing.assert_allclose(rv, exact.var(axis=(0, 2), ddof=1), rtol=1e-9)


# -- against textbook loops -----------------------------------------------------------


def _loops_forward(x, w, b, eps):
    """Mean, biased variance and output, one element at a time."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1).astype(np.float64)
    m = flat.shape[2]
    mean, var, y = np.zeros(c), np.zeros(c), np.zeros(flat.shape)
    for j in range(c):
        total = 0.0
        for i in range(n):
            for s in range(m):
                total += flat[i, j, s]
        mean[j] = total / (n * m)
        total = 0.0
        for i in range(n):
            for s in range(m):
                total += (flat[i, j, s] - mean[j]) ** 2
        var[j] = total / (n * m)
        for i in range(n):
            for s in range(m):
                y[i, j, s] = (flat[i, j, s] - mean[j]) / math.sqrt(var[j] + eps) * w[j] + b[j]
    return mean, var, y.reshape(x.shape)


def _loops_backward(x, dy, w, eps):
    """CS231n's staged backward: dxhat, dvar, dmean, then dx, per element."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1).astype(np.float64)
    g = dy.reshape(n, c, -1).astype(np.float64)
    mean, var, _ = _loops_forward(x, np.ones(c), np.zeros(c), eps)
    m = n * flat.shape[2]
    dx, dw, db = np.zeros(flat.shape), np.zeros(c), np.zeros(c)
    for j in range(c):
        std = math.sqrt(var[j] + eps)
        dvar = dmean = sum_xmu = 0.0
        for i, s in itertools.product(range(n), range(flat.shape[2])):
            dxhat = g[i, j, s] * w[j]
            dvar += dxhat * (flat[i, j, s] - mean[j]) * -0.5 * std ** -3
            dmean += -dxhat / std
            sum_xmu += flat[i, j, s] - mean[j]
            dw[j] += g[i, j, s] * (flat[i, j, s] - mean[j]) / std
            db[j] += g[i, j, s]
        dmean += dvar * -2 * sum_xmu / m
        for i, s in itertools.product(range(n), range(flat.shape[2])):
            dx[i, j, s] = (g[i, j, s] * w[j] / std + dvar * 2 * (flat[i, j, s] - mean[j]) / m
                           + dmean / m)
    return dx.reshape(x.shape), dw, db


@pytest.mark.parametrize("shape", [(3, 2), (2, 3, 3), (2, 2, 2, 3), (4, 2, 1)])
def test_matches_textbook_loops(shape, rng):
    x = _data(rng, shape, np.float64)
    dy = rng.standard_normal(shape)
    w, b, _, _ = _params(rng, shape[1], np.float64)
    eps = 1e-3
    mean, var, y = _loops_forward(x, w, b, eps)
    rm, rv = np.zeros(shape[1]), np.ones(shape[1])
    assert_close(fastconv.batch_norm(x, rm, rv, w, b, training=True, momentum=1.0, eps=eps), y,
                 n_terms=8)
    m = _count(shape)
    assert_close(rm, mean, n_terms=8)
    assert_close(rv, var * m / (m - 1), n_terms=8)
    for ours, expected in zip(fastconv.grad.batch_norm(x, dy, w, training=True, eps=eps),
                              _loops_backward(x, dy, w, eps)):
        assert_close(ours, expected, n_terms=m, scale=10)
    # eval: the running statistics, an affine map per channel
    y_eval = fastconv.batch_norm(x, mean, var, w, b, eps=eps)
    expected = (x - mean.reshape((1, -1) + (1,) * (x.ndim - 2))) / np.sqrt(
        var.reshape((1, -1) + (1,) * (x.ndim - 2)) + eps) * w.reshape(
        (1, -1) + (1,) * (x.ndim - 2)) + b.reshape((1, -1) + (1,) * (x.ndim - 2))
    assert_close(y_eval, expected, n_terms=8)


# -- central differences ---------------------------------------------------------------


def _central(f, a, h=1e-6):
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + h
        up = f()
        a[i] = old - h
        down = f()
        a[i] = old
        g[i] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 4), (2, 2, 3, 3), (6, 3, 1)])
def test_gradients_central_differences(shape, training, rng):
    x = _data(rng, shape, np.float64)
    G = rng.standard_normal(shape)
    w, b, rm, rv = _params(rng, shape[1], np.float64)

    def loss():
        return float(np.sum(fastconv.batch_norm(x, rm.copy(), rv.copy(), w, b,
                                                training=training, eps=1e-3) * G))

    gx, gw, gb = fastconv.grad.batch_norm(x, G, w, rm, rv, training=training, eps=1e-3)
    for analytic, wrt in ((gx, x), (gw, w), (gb, b)):
        np.testing.assert_allclose(analytic, _central(loss, wrt), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_layer_in_a_model_central_differences(momentum, rng):
    """conv -> BatchNorm2d -> ReLU -> BatchNorm1d on flattened features, in
    training mode: the backward pass through the whole model."""
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64),
                          nn.BatchNorm2d(3, momentum=momentum, dtype=np.float64),
                          nn.Tanh(), nn.Flatten(),
                          nn.BatchNorm1d(3 * 4 * 4, momentum=momentum, dtype=np.float64))
    model[1].weight.data[...] = rng.uniform(0.5, 1.5, 3)
    model[1].bias.data[...] = rng.standard_normal(3)
    x = rng.standard_normal((4, 2, 4, 4))
    G = rng.standard_normal((4, 48))

    def loss():
        return float(np.sum(model(x) * G))

    loss()
    model.zero_grad()
    gx = model.backward(G)
    np.testing.assert_allclose(gx, _central(loss, x), rtol=1e-5, atol=1e-7)
    for p in (model[0].weight, model[1].weight, model[1].bias):
        np.testing.assert_allclose(p.grad, _central(loss, p.data), rtol=1e-5, atol=1e-7)


# -- the layer's behaviour ------------------------------------------------------------


def test_buffers_are_state_not_parameters():
    bn = nn.BatchNorm2d(4)
    assert [name for name, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [name for name, _ in bn.named_buffers()] == ["running_mean", "running_var",
                                                        "num_batches_tracked"]
    assert all(b is getattr(bn, name) for name, b in bn.named_buffers())  # not copies
    assert len(bn.parameters()) == 2
    assert nn.BatchNorm1d(4, affine=False).parameters() == []
    assert list(nn.BatchNorm1d(4, affine=False, track_running_stats=False).state_dict()) == []
    state = bn.state_dict()
    assert state["num_batches_tracked"].shape == () and state["num_batches_tracked"].dtype == np.int64
    assert state["running_mean"].dtype == np.float32


def test_state_dict_names_and_order_are_pytorchs():
    torch = pytest.importorskip("torch")
    ours = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(),
                         nn.Sequential(nn.Flatten(), nn.Linear(8, 4), nn.BatchNorm1d(4)))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2),
                                 torch.nn.ReLU(),
                                 torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 4),
                                                     torch.nn.BatchNorm1d(4)))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]


def test_train_and_eval_switch_every_module_below(rng):
    model = nn.Sequential(nn.Linear(3, 4, rng=rng), nn.BatchNorm1d(4),
                          nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(4)))
    assert model.eval() is model
    assert not any(m.training for m in (model, model[1], model[2], model[2][0], model[2][1]))
    model.train()
    assert all(m.training for m in (model, model[1], model[2], model[2][0], model[2][1]))


def test_eval_uses_running_stats_and_changes_nothing(rng):
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    for _ in range(3):
        bn(_data(rng, (4, 3, 2, 2), np.float64))
    state = bn.state_dict()
    bn.eval()
    x = _data(rng, (2, 3, 2, 2), np.float64)
    y = bn(x)
    for key, value in bn.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    shape = (1, 3, 1, 1)
    expected = (x - bn.running_mean.reshape(shape)) / np.sqrt(bn.running_var.reshape(shape)
                                                              + bn.eps)
    assert_close(y, expected, n_terms=8)
    assert bn(x[:1, :, :1, :1]).shape == (1, 3, 1, 1)  # one value per channel is fine in eval


def test_cumulative_average_with_momentum_none(rng):
    bn = nn.BatchNorm1d(2, momentum=None, dtype=np.float64)
    batches = [_data(rng, (5, 2), np.float64) for _ in range(4)]
    for x in batches:
        bn(x)
    # running = (running*(k-1) + stat_k)/k from running_mean 0 / var 1 at k = 0: the
    # cumulative average of the batch statistics (the initial values weigh 0)
    assert_close(bn.running_mean, np.mean([x.mean(axis=0) for x in batches], axis=0), n_terms=8)
    assert_close(bn.running_var, np.mean([x.var(axis=0, ddof=1) for x in batches], axis=0),
                 n_terms=8)
    assert int(bn.num_batches_tracked) == 4


def test_track_running_stats_false_always_uses_batch_stats(rng):
    bn = nn.BatchNorm1d(3, track_running_stats=False, dtype=np.float64).eval()
    x = _data(rng, (6, 3), np.float64)
    assert_close(bn(x), (x - x.mean(0)) / np.sqrt(x.var(0) + bn.eps), n_terms=8)
    gx = bn.backward(np.ones_like(x))  # the batch statistics' gradient: sum(dx) is 0
    assert_close(gx.sum(axis=0), np.zeros(3), n_terms=8)


def test_numpy_backend_routes_to_the_reference(rng, monkeypatch):
    from fastconv import _backend

    numpy_ops = _backend._BACKENDS["numpy"]
    assert numpy_ops.batch_norm is reference.batch_norm
    assert numpy_ops.grad.batch_norm is reference.batch_norm_grad
    calls = []
    for space, name, func in ((numpy_ops, "batch_norm", reference.batch_norm),
                              (numpy_ops.grad, "batch_norm", reference.batch_norm_grad)):
        def counted(*args, _func=func, **kwargs):
            calls.append(_func.__name__)
            return _func(*args, **kwargs)
        monkeypatch.setattr(space, name, counted)
    x = _data(rng, (4, 3, 5), np.float32)
    a, b = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with fastconv.use_backend("numpy"):
        y_ref = a(x)
        g_ref = a.backward(np.ones_like(x))
    assert calls == ["batch_norm", "batch_norm_grad"]
    assert_close(b(x), y_ref, n_terms=8)
    assert_close(b.backward(np.ones_like(x)), g_ref, n_terms=20)
    assert_close(a.running_var, b.running_var, n_terms=8)


def test_layer_casts_its_input_to_its_dtype(rng):
    bn = nn.BatchNorm2d(2)
    y = bn(rng.integers(0, 255, (2, 2, 3, 3)))
    assert y.dtype == np.float32 and bn.backward(np.ones((2, 2, 3, 3))).dtype == np.float32


def test_non_contiguous_and_read_only_input(rng):
    x = _data(rng, (5, 4, 6), np.float64)
    view = np.swapaxes(x, 0, 2).copy()  # (6, 4, 5) ...
    view = np.swapaxes(view, 0, 2)      # ... seen again as (5, 4, 6), not C-contiguous
    view.flags.writeable = False
    assert not view.flags.c_contiguous
    rm, rv = np.zeros(4), np.ones(4)
    np.testing.assert_array_equal(fastconv.batch_norm(view, rm.copy(), rv.copy(), training=True),
                                  fastconv.batch_norm(x, rm.copy(), rv.copy(), training=True))


def test_empty_batch(rng):
    rm, rv = np.zeros(3), np.ones(3)
    x = np.zeros((0, 3, 4))
    assert fastconv.batch_norm(x, rm, rv, training=True).shape == (0, 3, 4)
    assert fastconv.batch_norm(x, rm, rv).shape == (0, 3, 4)
    np.testing.assert_array_equal(rm, 0)
    np.testing.assert_array_equal(rv, 1)
    gx, gw, gb = fastconv.grad.batch_norm(x, x, None, rm, rv)
    assert gx.shape == (0, 3, 4)
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)


# -- state_dict and load_state_dict -------------------------------------------------------


def _bn_model(seed):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=rng), nn.BatchNorm2d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(18, 3, rng=rng), nn.BatchNorm1d(3))
    for _ in range(2):
        model(rng.standard_normal((4, 1, 5, 5)))
    return model


def test_state_dict_round_trip_with_buffers(tmp_path, rng):
    model = _bn_model(1)
    np.savez(tmp_path / "model.npz", **model.state_dict())
    fresh = _bn_model(2)
    running = fresh[1].running_mean
    with np.load(tmp_path / "model.npz") as loaded:
        assert tuple(fresh.load_state_dict(loaded)) == ([], [])
    assert fresh[1].running_mean is running  # copied in place
    assert int(fresh[1].num_batches_tracked) == 2
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value)
    x = rng.standard_normal((3, 1, 5, 5))
    np.testing.assert_array_equal(fresh.eval()(x), model.eval()(x))


def test_load_state_dict_strict_names_every_problem():
    model = _bn_model(1)
    good = model.state_dict()
    bad = {k: v for k, v in good.items() if k != "1.running_var"}
    bad["9.weight"] = np.zeros(1)
    bad["5.running_mean"] = np.zeros(4)
    before = model.state_dict()
    bad["0.weight"] = good["0.weight"] + 1  # would be copied if anything were
    with pytest.raises(ValueError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    assert "missing keys ['1.running_var']" in message
    assert "unexpected keys ['9.weight']" in message
    assert "Expected '5.running_mean' of shape (3,), got (4,)" in message
    for key, value in model.state_dict().items():  # nothing copied
        np.testing.assert_array_equal(value, before[key])


def test_load_state_dict_non_strict_loads_what_matches():
    model = _bn_model(1)
    source = _bn_model(2).state_dict()
    del source["1.running_var"]
    source["extra"] = np.zeros(2)
    source["5.running_mean"] = np.zeros(7)
    result = model.load_state_dict(source, strict=False)
    missing, unexpected = result
    assert missing == result.missing_keys == ["1.running_var"]
    assert unexpected == result.unexpected_keys == ["extra"]
    assert result.mismatched_keys == ["5.running_mean"]
    state = model.state_dict()
    for key in source:
        if key not in ("extra", "5.running_mean"):
            np.testing.assert_array_equal(state[key], source[key])
    assert not np.array_equal(state["1.running_var"], _bn_model(2).state_dict()["1.running_var"])
    assert state["5.running_mean"].shape == (3,)
    with pytest.raises(ValueError, match="Expected '0.bias' of a real dtype, got complex128"):
        model.load_state_dict({"0.bias": np.zeros(2, complex)}, strict=False)


# -- errors ---------------------------------------------------------------------------------


def test_one_value_per_channel_in_training_raises_like_torch():
    for shape in [(1, 3), (1, 3, 1), (1, 3, 1, 1)]:
        with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when "
                                             r"training, got input size \(1, 3"):
            fastconv.batch_norm(np.zeros(shape), np.zeros(3), np.ones(3), training=True)
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            reference.batch_norm(np.zeros(shape), None, None, training=True)
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            fastconv.grad.batch_norm(np.zeros(shape), np.zeros(shape), training=True)
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        bn(np.zeros((1, 3)))
    assert int(bn.num_batches_tracked) == 0  # the failed call is not counted


@pytest.mark.parametrize("layer,shape,match", [
    (nn.BatchNorm1d(3), (4, 5), r"Expected input of shape \(N, 3\) or \(N, 3, L\)"),
    (nn.BatchNorm1d(3), (4, 3, 2, 2), r"got shape \(4, 3, 2, 2\)"),
    (nn.BatchNorm2d(3), (4, 3, 2), r"Expected input of shape \(N, 3, H, W\) for BatchNorm2d"),
    (nn.BatchNorm2d(3), (4, 2, 2, 2), r"num_features=3\), got shape \(4, 2, 2, 2\)"),
])
def test_layer_rejects_wrong_shapes(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer(np.zeros(shape))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: fastconv.batch_norm(np.zeros((2, 3)), np.zeros(4), np.ones(4)), ValueError,
     r"Expected running_mean of shape \(3,\) \(one value per channel\), got \(4,\)"),
    (lambda: fastconv.batch_norm(np.zeros((2, 3)), None, None), ValueError,
     "Expected running_mean and running_var in evaluation mode"),
    (lambda: fastconv.batch_norm(np.zeros((2, 3)), np.zeros(3), None, training=True),
     ValueError, "both given or both None"),
    (lambda: fastconv.batch_norm(np.zeros((2, 3)), [0, 0, 0], [1, 1, 1]), TypeError,
     "Expected running_mean to be a float32 or float64 ndarray, got list"),
    (lambda: fastconv.batch_norm(np.zeros((2, 3)), np.zeros(3, int), np.ones(3)), TypeError,
     "got dtype int64"),
    (lambda: fastconv.batch_norm(np.zeros((2, 3)), np.zeros(3), np.ones(3), np.ones(2)),
     ValueError, r"Expected weight of shape \(3,\)"),
    (lambda: fastconv.batch_norm(np.zeros((2, 3)), np.zeros(3), np.ones(3), None, np.ones(4)),
     ValueError, r"Expected bias of shape \(3,\)"),
    (lambda: fastconv.batch_norm(np.zeros(3), np.zeros(3), np.ones(3)), ValueError,
     "Expected input of at least 2 dimensions"),
    (lambda: fastconv.batch_norm(np.zeros((2, 0)), np.zeros(0), np.ones(0)), ValueError,
     "non-zero channel"),
    (lambda: fastconv.batch_norm(np.zeros((2, 3), complex), np.zeros(3), np.ones(3)),
     TypeError, "Expected input to have a float32"),
    (lambda: fastconv.batch_norm(np.zeros((2, 3)), np.zeros(3), np.ones(3), eps=-1),
     ValueError, "Expected eps to be a finite number >= 0"),
    (lambda: fastconv.batch_norm(np.zeros((2, 3)), np.zeros(3), np.ones(3), momentum="x"),
     TypeError, "Expected momentum to be a real number"),
    (lambda: fastconv.batch_norm(np.zeros((2, 3)), np.zeros(3), np.ones(3), training=1),
     TypeError, "Expected training to be a bool"),
    (lambda: fastconv.grad.batch_norm(np.zeros((2, 3)), np.zeros((2, 4)), training=True),
     ValueError, r"Expected grad_output of shape \(2, 3\) \(the shape of input\)"),
    (lambda: fastconv.grad.batch_norm(np.zeros((2, 3)), np.zeros((2, 3))), ValueError,
     "Expected running_mean and running_var in evaluation mode"),
])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_read_only_running_stats_are_refused_in_training():
    rm = np.zeros(3)
    rm.flags.writeable = False
    with pytest.raises(ValueError, match="Expected running_mean to be writable"):
        fastconv.batch_norm(np.zeros((2, 3)), rm, np.ones(3), training=True)
    fastconv.batch_norm(np.zeros((2, 3)), rm, np.ones(3))  # read-only is fine in eval


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_features=0), "Expected num_features to be a positive int"),
    (dict(num_features=3, eps=-1e-5), "Expected eps to be a finite number >= 0"),
    (dict(num_features=3, momentum="0.1"), "Expected momentum to be a real number"),
    (dict(num_features=3, affine=1), "Expected affine to be a bool"),
    (dict(num_features=3, track_running_stats=None), "Expected track_running_stats to be a bool"),
    (dict(num_features=3, dtype=np.float16), "Expected dtype float32 or float64"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nn.BatchNorm2d(**kwargs)


def test_backward_before_forward_and_repr():
    bn = nn.BatchNorm1d(4, momentum=None, affine=False)
    with pytest.raises(RuntimeError, match="backward\\(\\) called before forward\\(\\)"):
        bn.backward(np.zeros((2, 4)))
    assert repr(bn) == ("BatchNorm1d(4, eps=1e-05, momentum=None, affine=False, "
                        "track_running_stats=True)")


def test_nan_propagates_to_its_channel_only(rng):
    """A NaN in channel 1 makes that channel's output, statistics and
    gradients NaN (the variance is not clamped to 0), as in PyTorch, and
    leaves the other channels alone."""
    for shape in [(4, 3, 5), (6, 3)]:
        x = _data(rng, shape, np.float64)
        x[1, 1] = np.nan
        rm, rv = np.zeros(3), np.ones(3)
        y = fastconv.batch_norm(x, rm, rv, training=True)
        assert np.isnan(y[:, 1]).all() and np.isnan(rm[1]) and np.isnan(rv[1])
        clean = np.delete(x, 1, axis=1)
        expected = fastconv.batch_norm(clean, np.zeros(2), np.ones(2), training=True)
        np.testing.assert_array_equal(np.delete(y, 1, axis=1), expected)
        gx, gw, gb = fastconv.grad.batch_norm(x, np.ones(shape), training=True)
        assert np.isnan(gx[:, 1]).all() and np.isnan(gw[1])
        assert not np.isnan(np.delete(gx, 1, axis=1)).any()


def test_random_shapes_match_reference():
    """Hypothesis: any (N, C, *spatial) with 0 to 2 spatial axes, both
    dtypes, train and eval, against the reference."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
    @hypothesis.given(n=st.integers(0, 5), c=st.integers(1, 70),
                      spatial=st.lists(st.integers(1, 9), max_size=2),
                      dtype=st.sampled_from(DTYPES), training=st.booleans(),
                      affine=st.booleans(), seed=st.integers(0, 2**16))
    def check(n, c, spatial, dtype, training, affine, seed):
        shape = (n, c, *spatial)
        if training and math.prod(shape) // c == 1:
            return  # the one-value error, tested above
        rng = np.random.default_rng(seed)
        x = _data(rng, shape, dtype)
        gy = rng.standard_normal(shape).astype(dtype)
        w, b, rm, rv = _params(rng, c, dtype)
        if not affine:
            w = b = None
        ours = _all_ops(fastconv, x, gy, w, b, rm, rv, training)
        expected = _all_ops(reference, x, gy, w, b, rm, rv, training)
        if n == 0:
            for a, e in zip(ours, expected):
                np.testing.assert_array_equal(a, e)
            return
        s = _scales(x, gy, w, b, rm, rv, training, 1e-4)
        names = ["output", "running_mean", "running_var", "grad_input", "grad_weight",
                 "grad_bias"]
        for name, a, e in zip(names, ours, expected):
            assert_close(a, e, n_terms=_count(shape), scale=s[name], err_msg=name)

    check()


@pytest.mark.parametrize("isa_name", ["generic", "avx2"])
def test_norm_kernels_follow_fastconv_isa(isa_name):
    """FASTCONV_ISA picks the normalisation build with the others."""
    import os
    import subprocess
    import sys

    if isa_name not in _config._supported_isas():
        pytest.skip(f"this CPU cannot run the {isa_name} build")
    code = ("from fastconv import _config; "
            "print(_config.ISA, _config.norm_kernels.__name__.rsplit('_', 1)[-1])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, FASTCONV_ISA=isa_name), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [isa_name, isa_name]
