"""ResNets from fastconv.nn and fastconv.models: torchvision's state dict key
for key, central differences through BatchNorm + Residual + adaptive pooling,
a small ResNet trained step for step against PyTorch, and the train command."""

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

import fastconv
from fastconv import models, nn, optim
from fastconv import train as T


def _torch_resnet(torch, layers, num_classes, in_channels, width, small_input):
    """torchvision's ResNet with BasicBlock, written out in
    benchmarks/torch_resnet.py (torchvision is not a dependency): the same
    module names, so the same state-dict keys."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        from torch_resnet import torch_resnet
    finally:
        sys.path.pop(0)
    return torch_resnet(torch, layers, num_classes, in_channels, width, small_input)


def _randomise_torch_bn(torch, model, seed):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
            m.num_batches_tracked.fill_(7)


def test_resnet18_loads_a_torchvision_state_dict_key_for_key(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tmodel = _torch_resnet(torch, (2, 2, 2, 2), 1000, 3, 64, False)
    _randomise_torch_bn(torch, tmodel, 0)
    path = tmp_path / "resnet18.pth"
    torch.save(tmodel.state_dict(), path)
    model = models.resnet18(rng=0)
    state = fastconv.load(path)
    tkeys = list(tmodel.state_dict())
    assert list(model.state_dict()) == tkeys  # the same names, in the same order
    assert len(tkeys) == 122 and "layer2.0.downsample.0.weight" in tkeys
    assert "bn1.num_batches_tracked" in tkeys
    model.load_state_dict(state)  # strict
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel.eval()(torch.from_numpy(x)).numpy()
    model.eval()
    scale = float(np.abs(expected).max())
    assert_close(model(x), expected, n_terms=512 * 9, scale=scale)
    assert_close(nn.fuse(model)(x), expected, n_terms=512 * 9, scale=scale)


def test_buffers_and_names_of_a_block():
    block = models.BasicBlock(4, 8, stride=2, downsample=nn.Sequential(
        nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8)), rng=0)
    assert list(block.state_dict()) == [
        "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
        "bn1.num_batches_tracked", "conv2.weight", "bn2.weight", "bn2.bias",
        "bn2.running_mean", "bn2.running_var", "bn2.num_batches_tracked",
        "downsample.0.weight", "downsample.1.weight", "downsample.1.bias",
        "downsample.1.running_mean", "downsample.1.running_var",
        "downsample.1.num_batches_tracked"]
    assert "bn1.running_mean" not in dict(block.named_parameters())


def _central_differences(f, x, eps=1e-6):
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        numeric[i] = (f(x + d) - f(x - d)) / (2 * eps)
    return numeric


def test_central_differences_through_batchnorm_residual_and_adaptive_pooling(rng):
    f64 = np.float64
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, rng=rng, dtype=f64), nn.BatchNorm2d(4, dtype=f64),
        nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, rng=rng, dtype=f64),
                                  nn.BatchNorm2d(6, dtype=f64), nn.Tanh(),
                                  nn.Conv2d(6, 6, 3, padding=1, rng=rng, dtype=f64),
                                  nn.BatchNorm2d(6, momentum=None, dtype=f64)),
                    shortcut=nn.Sequential(nn.Conv2d(4, 6, 1, stride=2, rng=rng, dtype=f64),
                                           nn.BatchNorm2d(6, dtype=f64))),
        nn.Tanh(), nn.AdaptiveAvgPool2d((2, 3)), nn.Flatten(),
        nn.Linear(36, 3, rng=rng, dtype=f64), nn.Flatten(), nn.Linear(3, 2, rng=rng, dtype=f64))
    model[3].body[1].weight.data[...] = rng.uniform(0.5, 1.5, 6)
    x = rng.standard_normal((3, 2, 5, 7))
    gy = rng.standard_normal((3, 2))

    def loss(x_):
        return float(np.sum(model(x_) * gy))

    model.zero_grad()
    model(x)
    gx = model.backward(gy)
    np.testing.assert_allclose(gx, _central_differences(loss, x), rtol=1e-6, atol=1e-8)
    for name, p in model.named_parameters():
        analytic = p.grad.copy()
        original = p.data.copy()

        def loss_p(w, p=p):
            p.data[...] = w
            return loss(x)

        numeric = _central_differences(loss_p, original)
        p.data[...] = original
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


def test_central_differences_through_a_small_resnet(rng):
    model = models.resnet_small(num_classes=3, width=2, rng=0, dtype=np.float64)
    x = rng.standard_normal((3, 1, 5, 5))
    gy = rng.standard_normal((3, 3))
    model(x)
    gx = model.backward(gy)
    numeric = _central_differences(lambda x_: float(np.sum(model(x_) * gy)), x)
    np.testing.assert_allclose(gx, numeric, rtol=1e-6, atol=1e-8)


def _torch_twin(torch, model, dtype):
    tmodel = _torch_resnet(torch, [len(getattr(model, f"layer{i}")) for i in range(1, 5)],
                           model.fc.out_features, model.conv1.in_channels,
                           model.conv1.out_channels, True).to(dtype)
    tmodel.load_state_dict({k: torch.from_numpy(np.asarray(v))
                            for k, v in model.state_dict().items()})
    return tmodel


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_resnet_trains_step_for_step_like_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    model = models.resnet_small(num_classes=4, width=4, layers=(2, 1, 1, 1), rng=1,
                                dtype=dtype)
    tmodel = _torch_twin(torch, model, getattr(torch, np.dtype(dtype).name))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)
    for step in range(4):
        x = rng.standard_normal((6, 1, 8, 8)).astype(dtype)
        y = rng.integers(0, 4, 6)
        logits = model(x)
        loss = loss_fn(logits, y)
        model.backward(loss_fn.backward())
        tx = torch.from_numpy(x)
        tlogits = tmodel(tx)
        tloss = torch.nn.functional.cross_entropy(tlogits, torch.from_numpy(y))
        tloss.backward()
        np.testing.assert_allclose(logits, tlogits.detach().numpy(), **tol, err_msg=f"{step}")
        assert loss == pytest.approx(float(tloss.detach()), rel=tol["rtol"])
        tgrads = {k: p.grad.numpy() for k, p in tmodel.named_parameters()}
        for k, p in model.named_parameters():
            np.testing.assert_allclose(p.grad, tgrads[k], **tol, err_msg=f"{step} {k}")
        opt.step()
        opt.zero_grad()
        topt.step()
        topt.zero_grad()
        tstate = tmodel.state_dict()
        for k, v in model.state_dict().items():
            np.testing.assert_allclose(v, tstate[k].numpy(), **tol, err_msg=f"{step} {k}")
    model.eval()
    tmodel.eval()
    x = rng.standard_normal((5, 1, 8, 8)).astype(dtype)
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, **tol)
    np.testing.assert_allclose(nn.fuse(model)(x), expected, **tol)


def test_resnet_from_public_pieces_equals_the_models_class(rng):
    """A ResNet stage written with Sequential/Residual computes what BasicBlock does."""
    block = models.BasicBlock(4, 8, stride=2, downsample=nn.Sequential(
        nn.Conv2d(4, 8, 1, stride=2, bias=False, rng=rng), nn.BatchNorm2d(8)), rng=rng)
    pieces = nn.Sequential(
        nn.Residual(nn.Sequential(block.conv1, block.bn1, nn.ReLU(), block.conv2, block.bn2),
                    shortcut=block.downsample),
        nn.ReLU())
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    gy = rng.standard_normal((2, 8, 3, 3)).astype(np.float32)
    y_block = block(x)
    g_block = block.backward(gy)
    assert_close(pieces(x), y_block, n_terms=72)
    assert_close(pieces.backward(gy), g_block, n_terms=72)


# -- the train command -----------------------------------------------------------------


def test_build_model_resnet():
    model = T.build_model("resnet", (1, 8, 8), seed=0)
    assert isinstance(model, models.ResNet)
    assert model(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)
    with pytest.raises(ValueError, match="Expected input_shape"):
        T.build_model("resnet", (1, 40))


def test_train_resnet_saves_and_loads_with_buffers(tmp_path, capsys):
    pytest.importorskip("sklearn")
    path = tmp_path / "resnet.npz"
    assert T.main(["--model", "resnet", "--steps", "4", "--no-compare", "--quiet",
                   "--save", str(path)]) == 0
    out = capsys.readouterr().out
    assert "final test accuracy" in out
    saved = np.load(path)
    assert "layer1.0.bn1.running_var" in saved and "bn1.num_batches_tracked" in saved
    assert int(saved["bn1.num_batches_tracked"]) == 4
    assert not np.array_equal(saved["bn1.running_mean"], np.zeros(16))
    model = T.build_model("resnet", (1, 8, 8), seed=5)
    model.load_state_dict(saved)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, saved[k], err_msg=k)
    data = T.load_dataset("digits")
    loaded = T.evaluate(model, data.x_test, data.y_test)
    again = T.build_model("resnet", (1, 8, 8), seed=7)
    again.load_state_dict(dict(saved))
    assert T.evaluate(again, data.x_test, data.y_test) == loaded


# -- Identity and Residual -------------------------------------------------------------


def test_identity_and_residual_with_identity_shortcut(rng):
    x = rng.standard_normal((2, 3))
    ident = nn.Identity(3, whatever=True)  # arguments ignored, as in PyTorch
    assert ident(x) is x and ident.backward(x) is x
    block = nn.Residual(nn.Sequential(nn.Linear(3, 3, rng=rng, dtype=np.float64), nn.Tanh()))
    gy = rng.standard_normal((2, 3))
    block(x)
    gx = block.backward(gy)
    numeric = _central_differences(lambda x_: float(np.sum(block(x_) * gy)), x)
    np.testing.assert_allclose(gx, numeric, rtol=1e-7, atol=1e-9)
    assert [n for n, _ in block.named_parameters()] == ["body.0.weight", "body.0.bias"]


def test_residual_errors():
    with pytest.raises(TypeError, match="Expected body"):
        nn.Residual(lambda x: x)
    with pytest.raises(TypeError, match="Expected shortcut"):
        nn.Residual(nn.Identity(), shortcut=3)
    block = nn.Residual(nn.Flatten())
    with pytest.raises(ValueError, match="Expected body and shortcut outputs of the same"):
        block(np.zeros((2, 3, 4)))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Residual(nn.Identity()).backward(np.zeros(3))
