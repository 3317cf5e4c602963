"""Layers, losses and optimisers (fastconv.nn, fastconv.optim): central
differences through mixed models on both backends, PyTorch (when importable),
initialisation, dtypes, state dicts, errors and a short training run."""

import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_close

import fastconv
from fastconv import _backend, nn, optim

BACKENDS = ["fastconv", "numpy"]
DTYPES = [np.float32, np.float64]


# -- models mixing every layer type ---------------------------------------------


def model_2d(rng, dtype=np.float64):
    """Input (2, 4, 9, 9): grouped, dilated, strided conv down, transposed conv up."""
    return nn.Sequential(
        nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2, rng=rng, dtype=dtype),
        nn.ReLU(),  # (2, 6, 4, 4)
        nn.MaxPool2d(2, stride=1),  # (2, 6, 3, 3)
        nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2,
                           rng=rng, dtype=dtype),  # (2, 4, 6, 6)
        nn.Tanh(),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),  # (2, 4, 3, 3)
        nn.Flatten(),
        nn.Linear(36, 5, rng=rng, dtype=dtype),
        nn.Sigmoid(),
    )


def model_2d_b(rng, dtype=np.float64):
    """Input (2, 2, 7, 6): asymmetric and 'same' padding, ceil mode, eval-mode Dropout."""
    return nn.Sequential(
        nn.Conv2d(2, 3, (3, 2), padding=((1, 0), (2, 1)), rng=rng, dtype=dtype),  # (2, 3, 6, 8)
        nn.LeakyReLU(0.2),
        nn.MaxPool2d(3, stride=2, padding=1, dilation=(1, 2), ceil_mode=True),  # (2, 3, 4, 4)
        nn.Conv2d(3, 4, 2, padding="same", bias=False, rng=rng, dtype=dtype),
        nn.Sigmoid(),
        nn.AvgPool2d(2, stride=1, padding=1),  # (2, 4, 5, 5)
        nn.Dropout(0.3, rng=rng),
        nn.Flatten(),
        nn.Linear(100, 3, rng=rng, dtype=dtype),
        nn.LeakyReLU(),
    ).eval()


def model_1d(rng, dtype=np.float64):
    """Input (2, 3, 12)."""
    return nn.Sequential(
        nn.Conv1d(3, 4, 3, padding="same", dilation=2, rng=rng, dtype=dtype),  # (2, 4, 12)
        nn.LeakyReLU(0.1),
        nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True),  # (2, 4, 7)
        nn.ConvTranspose1d(4, 6, 4, stride=2, padding=1, groups=2, rng=rng,
                           dtype=dtype),  # (2, 6, 14)
        nn.Tanh(),
        nn.AvgPool1d(3, stride=2, padding=1),  # (2, 6, 7)
        nn.Conv1d(6, 2, 2, stride=2, padding=(1, 0), rng=rng, dtype=dtype),  # (2, 2, 4)
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8, 3, rng=rng, dtype=dtype),
    )


MODELS = {
    "2d": (model_2d, (2, 4, 9, 9)),
    "2d_b": (model_2d_b, (2, 2, 7, 6)),
    "1d": (model_1d, (2, 3, 12)),
}


def make(name, seed=0, dtype=np.float64):
    """A model, an input and a fixed upstream gradient G (loss = sum(out * G))."""
    build, shape = MODELS[name]
    rng = np.random.default_rng(seed)
    model = build(rng, dtype)
    x = rng.standard_normal(shape).astype(dtype)
    out_shape = model(x).shape
    return model, x, rng.standard_normal(out_shape).astype(dtype)


def forward_backward(model, x, G):
    model.zero_grad()
    y = model(x)
    gx = model.backward(G)
    return y, gx, {name: p.grad.copy() for name, p in model.named_parameters()}


# -- central differences ------------------------------------------------------------


def check_central_differences(model, x, G, rng, eps=1e-6, n_probe=25):
    """Compare the input and every parameter gradient of sum(model(x) * G) with
    central differences at up to n_probe random entries of each array."""
    _, gx, grads = forward_backward(model, x, G)
    arrays = [("input", x, gx)]
    arrays += [(name, p.data, grads[name]) for name, p in model.named_parameters()]
    for name, a, g in arrays:
        probes = np.arange(a.size) if a.size <= n_probe else rng.choice(a.size, n_probe, False)
        numeric = []
        for i in probes:
            orig = a.flat[i]
            a.flat[i] = orig + eps
            f_plus = np.sum(model(x) * G)
            a.flat[i] = orig - eps
            f_minus = np.sum(model(x) * G)
            a.flat[i] = orig
            numeric.append((f_plus - f_minus) / (2 * eps))
        assert_close(g.flat[probes], numeric, rtol=1e-5, atol=1e-7,
                                   err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_model_gradients_central_differences(name, backend, rng, threads):
    # Hundreds of forwards of tiny arrays: at one thread, so that OpenMP start-up
    # on a busy machine does not dominate. The other tests run at the default.
    threads.set_num_threads(1)
    model, x, G = make(name)
    with fastconv.use_backend(backend):
        check_central_differences(model, x, G, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(MODELS))
def test_backends_agree(name, dtype):
    model, x, G = make(name, dtype=dtype)
    y, gx, grads = forward_backward(model, x, G)
    with fastconv.use_backend("numpy"):
        y_ref, gx_ref, grads_ref = forward_backward(model, x, G)
    assert y.dtype == gx.dtype == dtype
    assert_close(y, y_ref, n_terms=200, err_msg="forward")
    assert_close(gx, gx_ref, n_terms=200, err_msg="input grad")
    for key in grads:
        assert_close(grads[key], grads_ref[key], n_terms=200, err_msg=key)


def test_layers_call_the_ops_of_the_current_backend(monkeypatch, rng):
    layer = nn.Conv2d(2, 3, 3, rng=rng)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    calls = []
    with fastconv.use_backend("numpy"):
        ops = _backend.ops()
        original = ops.conv2d
        monkeypatch.setattr(ops, "conv2d", lambda *a, **k: calls.append(1) or original(*a, **k))
        layer(x)
    assert calls == [1]
    layer(x)  # back on the compiled backend: the spy is not called
    assert calls == [1]


# -- PyTorch ------------------------------------------------------------------------


def to_torch(layer, pairs):
    """The torch.nn equivalent of a layer (or Sequential) with the same weights;
    appends (our Parameter, torch parameter) to ``pairs``."""
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    if isinstance(layer, nn.Sequential):
        return tnn.Sequential(*(to_torch(m, pairs) for m in layer))
    kind = type(layer).__name__
    pre = None
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
        nd = len(layer.kernel_size)
        kw = dict(stride=layer.stride, dilation=layer.dilation, groups=layer.groups,
                  bias=layer.bias is not None)
        pad = layer.padding
        if kind.startswith("ConvTranspose"):
            kw["output_padding"] = layer.output_padding
        elif not isinstance(pad, str) and (
            (nd == 1 and len(pad) == 2) or (nd == 2 and isinstance(pad[0], tuple))
        ):
            # Asymmetric padding: torch pads (last axis begin, end, first axis begin, end).
            per_axis = [pad] if nd == 1 else list(pad)
            flat = tuple(v for pair in reversed(per_axis) for v in pair)
            pre = getattr(tnn, f"ConstantPad{nd}d")(flat, 0.0)
            pad = 0
        m = getattr(tnn, kind)(layer.in_channels, layer.out_channels, layer.kernel_size,
                               padding=pad, **kw)
    elif isinstance(layer, nn.Linear):
        m = tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    elif isinstance(layer, (nn.MaxPool1d, nn.MaxPool2d)):
        m = getattr(tnn, kind)(layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                               ceil_mode=layer.ceil_mode)
    elif isinstance(layer, (nn.AvgPool1d, nn.AvgPool2d)):
        m = getattr(tnn, kind)(layer.kernel_size, layer.stride, layer.padding,
                               ceil_mode=layer.ceil_mode,
                               count_include_pad=layer.count_include_pad)
    elif isinstance(layer, nn.LeakyReLU):
        m = tnn.LeakyReLU(layer.negative_slope)
    elif isinstance(layer, nn.Dropout):
        m = tnn.Dropout(layer.p)
    else:
        m = getattr(tnn, kind)()
    params = layer.parameters()
    if params:
        m = m.to(torch.float64 if params[0].data.dtype == np.float64 else torch.float32)
    for ours, theirs in zip(params, m.parameters(), strict=True):
        with torch.no_grad():
            theirs.copy_(torch.from_numpy(ours.data))
        pairs.append((ours, theirs))
    m.train(layer.training)
    return m if pre is None else tnn.Sequential(pre, m)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_models_match_torch(name, backend):
    torch = pytest.importorskip("torch")
    model, x, G = make(name)
    with fastconv.use_backend(backend):
        y, gx, _ = forward_backward(model, x, G)
    pairs = []
    tmodel = to_torch(model, pairs)
    tx = torch.tensor(x, requires_grad=True)
    ty = tmodel(tx)
    ty.backward(torch.from_numpy(G))
    assert_close(y, ty.detach().numpy(), n_terms=100, err_msg="forward")
    assert_close(gx, tx.grad.numpy(), n_terms=100, err_msg="input grad")
    for ours, theirs in pairs:
        assert_close(ours.grad, theirs.grad.numpy(), n_terms=100, err_msg=str(ours))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_matches_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    loss = nn.CrossEntropyLoss()
    labels = rng.integers(0, 5, 7)
    for scale in (1.0, 1e4):  # 1e4: exp would overflow without the max shift
        logits = (scale * rng.standard_normal((7, 5))).astype(dtype)
        value = loss(logits, labels)
        grad = loss.backward()
        t_logits = torch.tensor(logits, requires_grad=True)
        t_loss = F.cross_entropy(t_logits, torch.from_numpy(labels))
        t_loss.backward()
        assert isinstance(value, float) and np.isfinite(value)
        assert grad.dtype == dtype
        assert_close(value, t_loss.item(), rtol=10 * np.finfo(dtype).eps)
        assert_close(grad, t_logits.grad.numpy(), n_terms=5)


def test_cross_entropy_by_hand():
    loss = nn.CrossEntropyLoss()
    logits = np.array([[0.0, np.log(3.0)], [1000.0, 0.0]])
    # p = [1/4, 3/4] and [1, e^-1000]
    assert loss(logits, np.array([0, 0])) == pytest.approx(np.log(4) / 2)
    assert_close(loss.backward(), [[-3 / 8, 3 / 8], [0, 0]], atol=1e-15)
    assert loss(logits, np.array([1, 1])) == pytest.approx((np.log(4 / 3) + 1000) / 2)
    assert_close(loss.backward(2.0), [[1 / 4, -1 / 4], [1, -1]], atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_matches_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    pred = rng.standard_normal((4, 3)).astype(dtype)
    target = rng.standard_normal((4, 3))
    loss = nn.MSELoss()
    value = loss(pred, target)
    grad = loss.backward()
    t_pred = torch.tensor(pred, requires_grad=True)
    t_loss = torch.nn.functional.mse_loss(t_pred, torch.tensor(target, dtype=t_pred.dtype))
    t_loss.backward()
    assert grad.dtype == dtype
    assert_close(value, t_loss.item(), rtol=10 * np.finfo(dtype).eps)
    assert_close(grad, t_pred.grad.numpy())


OPTIMIZERS = [
    (optim.SGD, "SGD", dict(lr=0.1)),
    (optim.SGD, "SGD", dict(lr=0.1, momentum=0.9)),
    (optim.SGD, "SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (optim.SGD, "SGD", dict(lr=0.05, weight_decay=0.1)),
    (optim.Adam, "Adam", dict(lr=0.01)),
    (optim.Adam, "Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
]


@pytest.mark.parametrize("opt_class,torch_name,kwargs", OPTIMIZERS)
def test_optimizer_trajectory_matches_torch(opt_class, torch_name, kwargs, rng):
    torch = pytest.importorskip("torch")
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64), nn.ReLU(),
        nn.Flatten(), nn.Linear(75, 4, rng=rng, dtype=np.float64),
    )
    x = rng.standard_normal((6, 2, 5, 5))
    labels = rng.integers(0, 4, 6)
    pairs = []
    tmodel = to_torch(model, pairs)
    opt = opt_class(model.parameters(), **kwargs)
    topt = getattr(torch.optim, torch_name)(tmodel.parameters(), **kwargs)
    loss = nn.CrossEntropyLoss()
    for _ in range(5):
        opt.zero_grad()
        value = loss(model(x), labels)
        model.backward(loss.backward())
        opt.step()
        topt.zero_grad()
        t_loss = torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(x)),
                                                   torch.from_numpy(labels))
        t_loss.backward()
        topt.step()
        assert value == pytest.approx(t_loss.item(), rel=1e-10)
        for ours, theirs in pairs:
            assert_close(ours.data, theirs.detach().numpy(), rtol=1e-9,
                                       atol=1e-12)


# -- initialisation, sizes, dtypes ----------------------------------------------------


INIT_CASES = [
    # (our layer, torch constructor args, fan_in)
    (lambda rng: nn.Conv2d(64, 32, 3, groups=4, rng=rng),
     ("Conv2d", 64, 32, 3, 1, 0, 1, 4), 16 * 9),
    (lambda rng: nn.ConvTranspose2d(16, 64, 3, groups=2, rng=rng),
     ("ConvTranspose2d", 16, 64, 3, 1, 0, 0, 2), 32 * 9),
    (lambda rng: nn.Conv1d(8, 64, 5, rng=rng), ("Conv1d", 8, 64, 5), 8 * 5),
    (lambda rng: nn.ConvTranspose1d(64, 8, 5, rng=rng), ("ConvTranspose1d", 64, 8, 5), 8 * 5),
    (lambda rng: nn.Linear(300, 20, rng=rng), ("Linear", 300, 20), 300),
]


@pytest.mark.parametrize("build,torch_args,fan_in", INIT_CASES)
def test_initialisation_bounds(build, torch_args, fan_in, rng):
    layer = build(rng)
    bound = 1 / np.sqrt(fan_in)
    w, b = layer.weight.data, layer.bias.data
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert np.abs(w).max() > 0.99 * bound
    assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=0.05)  # uniform's std
    assert abs(np.mean(w)) < 0.05 * bound
    assert np.abs(b).max() <= bound * (1 + 1e-6)
    assert np.abs(b).max() > 0.5 * bound


@pytest.mark.parametrize("build,torch_args,fan_in", INIT_CASES)
def test_initialisation_matches_torch(build, torch_args, fan_in, rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    kind, *args = torch_args
    t_layer = getattr(torch.nn, kind)(*args)
    t_fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(t_layer.weight)
    assert t_fan_in == fan_in
    layer = build(rng)
    assert layer.weight.data.shape == tuple(t_layer.weight.shape)
    for ours, theirs in ((layer.weight.data, t_layer.weight), (layer.bias.data, t_layer.bias)):
        theirs = theirs.detach().numpy()
        # Same distribution: the same bound, approached by both.
        assert_close(np.abs(ours).max(), np.abs(theirs).max(), rtol=0.5)
        assert np.abs(theirs).max() <= 1 / np.sqrt(fan_in) * (1 + 1e-6)
    assert np.abs(layer.weight.data).max() == pytest.approx(
        np.abs(t_layer.weight.detach().numpy()).max(), rel=0.02)


def n_params(layer):
    return sum(p.data.size for p in layer.parameters())


def test_parameter_counts():
    assert n_params(nn.Conv2d(64, 64, 5)) == 102_464
    assert n_params(nn.Conv2d(64, 64, 3)) == 36_928
    assert n_params(nn.Conv2d(64, 64, 3, bias=False)) == 36_864
    assert n_params(nn.Conv2d(64, 64, 3, groups=64)) == 64 * 9 + 64
    assert n_params(nn.ConvTranspose2d(64, 32, 2, groups=2)) == 64 * 16 * 4 + 32
    assert n_params(nn.Conv1d(1, 25, 5)) == 150
    assert n_params(nn.Linear(36, 5)) == 185
    assert n_params(nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(8, 2))) == 80 + 18
    assert nn.ReLU().parameters() == [] and nn.MaxPool2d(2).state_dict() == {}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(MODELS))
def test_dtypes_are_kept(name, dtype):
    model, x, G = make(name, dtype=dtype)
    y, gx, grads = forward_backward(model, x, G)
    assert y.dtype == gx.dtype == dtype
    for p in model.parameters():
        assert p.data.dtype == p.grad.dtype == dtype
    # float64 data into a float32 network (and the reverse) runs in the network's dtype
    other = np.float64 if dtype == np.float32 else np.float32
    y2, gx2, _ = forward_backward(model, x.astype(other), G.astype(other))
    assert y2.dtype == dtype and gx2.dtype == dtype
    loss = nn.CrossEntropyLoss()
    loss(y.reshape(y.shape[0], -1), np.zeros(y.shape[0], dtype=int))
    assert loss.backward().dtype == dtype


def test_integer_images_into_a_float32_network(rng):
    layer = nn.Conv2d(1, 2, 3, rng=rng)
    x = rng.integers(0, 256, (2, 1, 5, 5), dtype=np.uint8)
    y = layer(x)
    assert y.dtype == np.float32
    assert_close(y, layer(x.astype(np.float32)))


# -- state -----------------------------------------------------------------------------


def test_state_dict_round_trip_through_savez(tmp_path):
    model, x, _ = make("2d", seed=1, dtype=np.float32)
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"]
    np.savez(tmp_path / "model.npz", **state)

    fresh, _, _ = make("2d", seed=2, dtype=np.float32)
    assert not np.array_equal(fresh(x), model(x))
    weight = fresh[0].weight.data
    with np.load(tmp_path / "model.npz") as loaded:
        fresh.load_state_dict(loaded)
    assert fresh[0].weight.data is weight  # copied in place
    np.testing.assert_array_equal(fresh(x), model(x))


def test_state_dict_is_a_copy_and_nested_names():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), nn.Linear(3, 1))
    state = model.state_dict()
    assert sorted(state) == ["0.0.bias", "0.0.weight", "1.bias", "1.weight"]
    state["1.weight"][...] = 7
    assert not np.any(model[1].weight.data == 7)


def test_load_state_dict_errors():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    good = model.state_dict()
    with pytest.raises(ValueError, match=r"missing keys \['2.bias'\]"):
        model.load_state_dict({k: v for k, v in good.items() if k != "2.bias"})
    with pytest.raises(ValueError, match=r"unexpected keys \['3.weight'\]"):
        model.load_state_dict(dict(good, **{"3.weight": np.zeros(1)}))
    before = model[0].weight.data.copy()
    with pytest.raises(ValueError, match=r"Expected '2.weight' of shape \(1, 3\), got \(3, 1\)"):
        model.load_state_dict(dict(good, **{"0.weight": good["0.weight"] + 1,
                                           "2.weight": np.zeros((3, 1))}))
    with pytest.raises(ValueError, match="Expected '2.bias' of a real dtype, got complex128"):
        model.load_state_dict(dict(good, **{"0.weight": good["0.weight"] + 1,
                                           "2.bias": np.zeros(1, complex)}))
    np.testing.assert_array_equal(model[0].weight.data, before)  # nothing copied
    model.load_state_dict({k: v.astype(np.float64) for k, v in good.items()})
    assert model[0].weight.data.dtype == np.float32


def test_reproducible_with_a_fixed_rng():
    a, x, _ = make("2d", seed=7)
    b, _, _ = make("2d", seed=7)
    c, _, _ = make("2d", seed=8)
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[key])
        assert not np.array_equal(value, c.state_dict()[key])
    d1 = nn.Dropout(0.5, rng=np.random.default_rng(3))
    d2 = nn.Dropout(0.5, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(d1(np.ones((4, 10))), d2(np.ones((4, 10))))


def test_default_rng_draws_fresh_weights():
    assert not np.array_equal(nn.Linear(5, 5).weight.data, nn.Linear(5, 5).weight.data)


# -- behaviour of single layers -----------------------------------------------------


def test_dropout_train_and_eval(rng):
    layer = nn.Dropout(0.25, rng=rng)
    x = rng.standard_normal((200, 50)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    kept = y != 0
    assert kept.mean() == pytest.approx(0.75, abs=0.02)
    assert_close(y[kept], x[kept] / 0.75, rtol=1e-6)
    g = layer.backward(np.ones_like(x))
    assert_close(g, kept / np.float32(0.75), rtol=1e-6)
    assert not np.array_equal(layer(x) != 0, kept)  # a new mask per forward

    model = nn.Sequential(nn.Linear(50, 50, rng=rng), layer)
    model.eval()
    assert not layer.training and not model[0].training
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)
    model.train()
    assert layer.training


def test_activations_by_hand():
    x = np.array([[-2.0, -0.0, 0.0, 3.0, np.nan]])
    g = np.arange(1.0, 6.0)[None]
    relu = nn.ReLU()
    np.testing.assert_array_equal(relu(x), [[0, 0, 0, 3, np.nan]])
    np.testing.assert_array_equal(relu.backward(g), [[0, 0, 0, 4, 0]])
    leaky = nn.LeakyReLU(0.5)
    np.testing.assert_array_equal(leaky(x[:, :4]), [[-1, 0, 0, 3]])
    np.testing.assert_array_equal(leaky.backward(g[:, :4]), [[0.5, 1, 1.5, 4]])
    sig = nn.Sigmoid()
    with np.errstate(over="raise", invalid="raise"):  # no overflow for large |x|
        y = sig(np.array([[-1000.0, 0.0, 1000.0]], np.float32))
    np.testing.assert_array_equal(y, [[0, 0.5, 1]])
    assert y.dtype == np.float32
    np.testing.assert_array_equal(sig.backward(np.ones((1, 3), np.float32)), [[0, 0.25, 0]])
    tanh = nn.Tanh()
    tanh(np.zeros((1, 2)))
    np.testing.assert_array_equal(tanh.backward(np.array([[2.0, 3.0]])), [[2, 3]])
    flat = nn.Flatten()
    assert flat(np.zeros((0, 3, 4))).shape == (0, 12)
    assert flat.backward(np.zeros((0, 12))).shape == (0, 3, 4)


def test_linear_by_hand():
    layer = nn.Linear(2, 3, dtype=np.float64)
    layer.weight.data[...] = [[1, 2], [3, 4], [5, 6]]
    layer.bias.data[...] = [1, 0, -1]
    x = np.array([[1.0, -1.0]])
    np.testing.assert_array_equal(layer(x), [[0, -1, -2]])
    np.testing.assert_array_equal(layer.backward(np.array([[1.0, 0.0, 2.0]])), [[11, 14]])
    np.testing.assert_array_equal(layer.weight.grad, [[1, -1], [0, 0], [2, -2]])
    np.testing.assert_array_equal(layer.bias.grad, [1, 0, 2])


def test_gradients_accumulate_and_zero_grad_resets(rng):
    model, x, G = make("2d", dtype=np.float64)
    model.zero_grad()
    model(x)
    gx1 = model.backward(G)
    first = [p.grad.copy() for p in model.parameters()]
    gx2 = model.backward(G)  # the cache is kept: a second backward adds the same again
    np.testing.assert_array_equal(gx1, gx2)
    for p, g in zip(model.parameters(), first):
        np.testing.assert_array_equal(p.grad, 2 * g)
    grads = [p.grad for p in model.parameters()]
    optim.SGD(model.parameters(), lr=0.1).zero_grad()
    for p, g in zip(model.parameters(), grads):
        assert p.grad is g and not g.any()  # zeroed in place
    model(x)
    model.backward(G)
    model.zero_grad()
    assert not any(p.grad.any() for p in model.parameters())


def test_reprs_match_torch():
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    pairs = [
        (nn.Conv2d(1, 16, 3, padding=1), tnn.Conv2d(1, 16, 3, padding=1)),
        (nn.Conv2d(4, 8, (3, 5), stride=2, dilation=2, groups=4, bias=False),
         tnn.Conv2d(4, 8, (3, 5), stride=2, dilation=2, groups=4, bias=False)),
        (nn.Conv1d(2, 3, 4, padding="same"), tnn.Conv1d(2, 3, 4, padding="same")),
        (nn.ConvTranspose2d(4, 6, 3, stride=2, output_padding=1, groups=2),
         tnn.ConvTranspose2d(4, 6, 3, stride=2, output_padding=1, groups=2)),
        (nn.Linear(3, 4, bias=False), tnn.Linear(3, 4, bias=False)),
        (nn.MaxPool2d(3, 2, 1), tnn.MaxPool2d(3, 2, 1)),
        (nn.MaxPool1d(2), tnn.MaxPool1d(2)),
        (nn.AvgPool2d(2), tnn.AvgPool2d(2)),
        (nn.LeakyReLU(0.2), tnn.LeakyReLU(0.2)),
        (nn.Sequential(nn.ReLU(), nn.Tanh(), nn.Sigmoid()),
         tnn.Sequential(tnn.ReLU(), tnn.Tanh(), tnn.Sigmoid())),
    ]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)


def test_package_does_not_import_torch():
    code = ("import sys, fastconv, fastconv.nn, fastconv.optim; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- errors --------------------------------------------------------------------------


BEFORE_FORWARD = [
    lambda: nn.Conv1d(1, 1, 1), lambda: nn.Conv2d(1, 1, 1),
    lambda: nn.ConvTranspose1d(1, 1, 1), lambda: nn.ConvTranspose2d(1, 1, 1),
    lambda: nn.MaxPool1d(2), lambda: nn.MaxPool2d(2), lambda: nn.AvgPool1d(2),
    lambda: nn.AvgPool2d(2), nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Flatten,
    lambda: nn.Dropout(0.5), lambda: nn.Linear(1, 1), lambda: nn.Sequential(nn.ReLU()),
    nn.CrossEntropyLoss, nn.MSELoss,
]


@pytest.mark.parametrize("build", BEFORE_FORWARD)
def test_backward_before_forward(build):
    layer = build()
    name = type(layer).__name__
    with pytest.raises(RuntimeError, match=rf"{name}.backward\(\) called before forward\(\)"):
        layer.backward(np.zeros((1, 1, 1, 1)))


def test_wrong_channel_or_feature_count():
    message = r"Expected input of shape \(N, 3, H, W\).*in_channels=3.*got shape \(2, 4, 5, 5\)"
    with pytest.raises(ValueError, match=message):
        nn.Conv2d(3, 8, 3)(np.zeros((2, 4, 5, 5)))
    with pytest.raises(ValueError, match=r"Expected input of shape \(N, 3, L\)"):
        nn.Conv1d(3, 8, 3)(np.zeros((2, 3, 5, 5)))
    with pytest.raises(ValueError, match=r"in_channels=6"):
        nn.ConvTranspose2d(6, 2, 3)(np.zeros((1, 2, 4, 4)))
    message = r"Expected input of shape \(N, 4\).*in_features=4.*got shape \(2, 5\)"
    with pytest.raises(ValueError, match=message):
        nn.Linear(4, 2)(np.zeros((2, 5)))
    relu = nn.ReLU()
    relu(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"Expected grad_out of shape \(2, 3\)"):
        relu.backward(np.zeros((3, 2)))
    lin = nn.Linear(4, 2)
    lin(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"Expected grad_out of shape \(2, 2\)"):
        lin.backward(np.zeros((2, 3)))


@pytest.mark.parametrize("layer, out_shape, wrong", [
    (nn.MaxPool1d(2), (2, 3, 4), (2, 3, 5)),
    (nn.MaxPool2d(2), (2, 3, 4, 4), (2, 3, 4, 5)),
    (nn.AvgPool2d(2), (2, 3, 4, 4), (2, 3, 4, 5)),
    # The functional gradient infers output_size from grad_out; the layer
    # knows its own and must not accept another.
    (nn.AdaptiveAvgPool1d(3), (2, 3, 3), (2, 3, 4)),
    (nn.AdaptiveAvgPool2d(3), (2, 3, 3, 3), (2, 3, 3, 4)),
    # The same number of elements, which a reshape would take silently.
    (nn.Flatten(), (2, 192), (192, 2)),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_rejects_a_grad_out_of_another_shape(layer, out_shape, wrong, backend):
    x = np.ones((2, 3, 8) if len(out_shape) == 3 else (2, 3, 8, 8))
    message = r"Expected grad_out(put)? of shape " + re.escape(str(out_shape))
    with fastconv.use_backend(backend):
        assert layer(x).shape == out_shape
        with pytest.raises(ValueError, match=message):
            layer.backward(np.ones(wrong))


BAD_ARGS = [
    (lambda: nn.Conv2d(0, 4, 3), "in_channels to be a positive int, got 0"),
    (lambda: nn.Conv2d(3, 4.0, 3), "out_channels to be a positive int, got 4.0"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), "in_channels divisible by groups"),
    (lambda: nn.Conv2d(4, 6, 3, groups=4), "out_channels divisible by groups"),
    (lambda: nn.Conv2d(3, 4, 3, groups=0), "groups to be a positive int"),
    (lambda: nn.Conv2d(3, 4, 0), "kernel_size >= 1"),
    (lambda: nn.Conv2d(3, 4, 2.5), "kernel_size to be an int"),
    (lambda: nn.Conv2d(3, 4, (3, 3, 3)), "kernel_size to be an int or a tuple of 2"),
    (lambda: nn.Conv2d(3, 4, 3, stride=0), "stride >= 1"),
    (lambda: nn.Conv2d(3, 4, 3, dilation=0), "dilation >= 1"),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), "padding >= 0"),
    (lambda: nn.Conv2d(3, 4, 3, padding="full"), "padding to be 'valid', 'same'"),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"), "stride=1 with padding='same'"),
    (lambda: nn.Conv2d(3, 4, 3, bias=1), "bias to be a bool"),
    (lambda: nn.Conv2d(3, 4, 3, dtype=np.int32), "dtype float32 or float64"),
    (lambda: nn.Conv2d(3, 4, 3, dtype="float16"), "dtype float32 or float64"),
    (lambda: nn.Conv1d(3, 4, 3, dtype="nonsense"), "dtype float32 or float64"),
    (lambda: nn.ConvTranspose2d(4, 4, 3, stride=2, output_padding=2), "output_padding <"),
    (lambda: nn.ConvTranspose1d(4, 4, 3, padding="same"), "padding of a transposed"),
    (lambda: nn.ConvTranspose1d(4, 6, 3, groups=4), "out_channels divisible by groups"),
    (lambda: nn.Linear(0, 3), "in_features to be a positive int"),
    (lambda: nn.Linear(3, -1), "out_features to be a positive int"),
    (lambda: nn.Linear(3, 2, dtype=np.complex64), "dtype float32 or float64"),
    (lambda: nn.MaxPool2d(0), "kernel_size >= 1"),
    (lambda: nn.MaxPool2d(2, padding=2), "padding <= kernel_size/2"),
    (lambda: nn.MaxPool1d(2, dilation=0), "dilation >= 1"),
    (lambda: nn.AvgPool1d(3, stride=0), "stride >= 1"),
    (lambda: nn.AvgPool2d(2, ceil_mode=1), "ceil_mode to be a bool"),
    (lambda: nn.AvgPool2d(2, count_include_pad="yes"), "count_include_pad to be a bool"),
    (lambda: nn.Dropout(1.0), r"p in \[0, 1\), got 1.0"),
    (lambda: nn.Dropout(-0.1), r"p in \[0, 1\)"),
    (lambda: nn.Dropout("half"), "p to be a real number"),
    (lambda: nn.LeakyReLU("a"), "negative_slope to be a real number"),
]


@pytest.mark.parametrize("build,message", BAD_ARGS)
def test_bad_constructor_arguments(build, message):
    with pytest.raises(ValueError, match=f"^Expected .*{message}"):
        build()


def test_sequential_rejects_non_modules():
    with pytest.raises(TypeError, match="Expected fastconv.nn modules, got 3"):
        nn.Sequential(nn.ReLU(), 3)


def test_loss_errors():
    ce = nn.CrossEntropyLoss()
    logits = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"Expected labels in \[0, 4\), got values in \[0, 4\]"):
        ce(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"Expected labels in \[0, 4\)"):
        ce(logits, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"Expected labels of shape \(3,\)"):
        ce(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="Expected integer class labels, got dtype float64"):
        ce(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"Expected logits of shape \(N, C\)"):
        ce(np.zeros(4), np.array([0]))
    with pytest.raises(ValueError, match=r"Expected logits of shape \(N, C\)"):
        ce(np.zeros((0, 4)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match=r"same shape, got \(3, 4\) and \(4, 3\)"):
        nn.MSELoss()(logits, np.zeros((4, 3)))


OPT_ERRORS = [
    (lambda ps: optim.SGD(ps, lr=-0.1), r"lr in \[0.0, inf\], got -0.1"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=-1), "momentum"),
    (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1), "weight_decay"),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "momentum > 0 with nesterov"),
    (lambda ps: optim.SGD(ps, lr="fast"), "lr to be a real number"),
    (lambda ps: optim.Adam(ps, lr=-1), "lr"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.9)), r"beta1 in \[0.0, 1.0\)"),
    (lambda ps: optim.Adam(ps, betas=(0.9, -0.1)), "beta2"),
    (lambda ps: optim.Adam(ps, betas=0.9), "betas to be a pair"),
    (lambda ps: optim.Adam(ps, eps=-1e-8), "eps"),
    (lambda ps: optim.Adam([], lr=0.1), "non-empty list of parameters"),
]


@pytest.mark.parametrize("build,message", OPT_ERRORS)
def test_optimizer_errors(build, message):
    with pytest.raises(ValueError, match=f"^Expected .*{message}"):
        build(nn.Linear(2, 2).parameters())


def test_optimizer_rejects_arrays():
    with pytest.raises(TypeError, match="Expected fastconv.nn.Parameter objects"):
        optim.SGD([np.zeros(3)], lr=0.1)


# -- training ------------------------------------------------------------------------


def blobs(rng, n):
    """8x8 noisy images with a bright 3x3 blob in the left (label 0) or right (1) half."""
    labels = rng.integers(0, 2, n)
    rows = rng.integers(1, 7, n)[:, None, None]
    cols = (rng.integers(1, 3, n) + 4 * labels)[:, None, None]
    yy, xx = np.mgrid[:8, :8]
    blob = (np.abs(yy - rows) <= 1) & (np.abs(xx - cols) <= 1)
    x = 0.3 * rng.standard_normal((n, 1, 8, 8)) + blob[:, None]
    return x.astype(np.float32), labels


def test_training_a_small_cnn(rng):
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 2, rng=rng),
    )
    opt = optim.Adam(model.parameters(), lr=0.02)
    loss = nn.CrossEntropyLoss()
    x, labels = blobs(rng, 128)
    history = []
    for step in range(40):
        batch = slice(32 * (step % 4), 32 * (step % 4 + 1))
        opt.zero_grad()
        history.append(loss(model(x[batch]), labels[batch]))
        model.backward(loss.backward())
        opt.step()
    assert np.mean(history[-4:]) < 0.5 * np.mean(history[:4])
    x_test, labels_test = blobs(rng, 200)
    accuracy = np.mean(model.eval()(x_test).argmax(axis=1) == labels_test)
    assert accuracy >= 0.95
