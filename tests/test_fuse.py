"""nn.fuse: folded BatchNorm, fused ReLU, no caches; outputs equal the eval model's."""

import numpy as np
import pytest
from conftest import assert_close

from fastconv import models, nn


def _randomise_bn(model, rng):
    """Non-trivial running statistics and affine parameters for every BatchNorm."""
    for _, m in _walk(model):
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            if m.track_running_stats:
                m.running_mean[...] = rng.standard_normal(c) * 0.5
                m.running_var[...] = rng.uniform(0.3, 3.0, c)
            if m.affine:
                m.weight.data[...] = rng.uniform(0.5, 1.5, c)
                m.bias.data[...] = rng.standard_normal(c) * 0.3
    return model


def _walk(module, prefix=""):
    yield prefix, module
    for name, child in module._children():
        yield from _walk(child, f"{prefix}{name}.")


def _no_caches(model):
    return [name for name, m in _walk(model) if m._cache not in (None, ())]


def _sequential(dtype, rng):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, rng=rng, dtype=dtype), nn.BatchNorm2d(8, dtype=dtype),
        nn.ReLU(),                                                          # conv-bn-relu
        nn.Conv2d(8, 8, 3, padding=1, bias=False, rng=rng, dtype=dtype),
        nn.BatchNorm2d(8, dtype=dtype),                                     # conv-bn
        nn.MaxPool2d(2),
        nn.Residual(
            nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1, rng=rng, dtype=dtype),
                          nn.BatchNorm2d(16, dtype=dtype), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1, rng=rng, dtype=dtype),
                          nn.BatchNorm2d(16, dtype=dtype)),
            shortcut=nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False, rng=rng,
                                             dtype=dtype),
                                   nn.BatchNorm2d(16, dtype=dtype))),
        nn.ReLU(),
        nn.Conv2d(16, 16, 1, rng=rng, dtype=dtype), nn.ReLU(),              # conv-relu
        nn.Conv2d(16, 12, 1, groups=4, rng=rng, dtype=dtype),               # lone conv
        nn.AdaptiveAvgPool2d((2, 3)), nn.Flatten(),
        nn.Linear(12 * 6, 5, rng=rng, dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequential_is_equivalent(dtype, rng):
    model = _randomise_bn(_sequential(dtype, rng), rng)
    x = rng.standard_normal((4, 3, 11, 9)).astype(dtype)
    fused = nn.fuse(model)
    assert model.training  # the original is left alone
    expected = model.eval()(x)
    y = fused(x)
    assert y.dtype == dtype
    assert_close(y, expected, n_terms=16 * 9 * 4)
    kinds = [type(m).__name__ for m in fused]
    assert kinds[:5] == ["FusedConv2d", "Identity", "Identity", "FusedConv2d", "Identity"]
    assert fused[0].activation == "relu" and fused[3].activation is None
    body, shortcut = fused[6].body, fused[6].shortcut
    assert [type(m).__name__ for m in body] == ["FusedConv2d", "Identity", "Identity",
                                                "FusedConv2d", "Identity"]
    assert type(shortcut[0]).__name__ == "FusedConv2d" and type(shortcut[1]) is nn.Identity
    assert fused[8].activation == "relu" and fused[10].activation is None
    assert not any(isinstance(m, (nn.BatchNorm2d,)) for _, m in _walk(fused))
    assert _no_caches(fused) == []
    with pytest.raises(RuntimeError, match="inference"):
        fused.backward(np.ones_like(y))


def test_original_model_still_trains(rng):
    model = _randomise_bn(_sequential(np.float64, rng), rng)
    before = model.state_dict()
    nn.fuse(model)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    x = rng.standard_normal((2, 3, 8, 8))
    y = model(x)
    assert model.backward(np.ones_like(y)).shape == x.shape


def test_conv1d_batchnorm1d(rng):
    model = _randomise_bn(nn.Sequential(
        nn.Conv1d(2, 6, 5, stride=2, padding=2, rng=rng), nn.BatchNorm1d(6), nn.ReLU(),
        nn.Conv1d(6, 6, 3, rng=rng), nn.BatchNorm1d(6),
        nn.AdaptiveAvgPool1d(1), nn.Flatten()), rng)
    x = rng.standard_normal((3, 2, 17)).astype(np.float32)
    fused = nn.fuse(model)
    assert type(fused[0]) is nn.FusedConv1d and type(fused[3]) is nn.FusedConv1d
    assert_close(fused(x), model.eval()(x), n_terms=60)


def test_batchnorm_without_running_stats_is_left_alone(rng):
    model = _randomise_bn(nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=rng), nn.BatchNorm2d(4, track_running_stats=False),
        nn.ReLU()), rng)
    x = rng.standard_normal((3, 1, 6, 6)).astype(np.float32)
    fused = nn.fuse(model)
    assert type(fused[1]) is nn.BatchNorm2d  # batch statistics even in eval: not foldable
    assert type(fused[0]) is nn.FusedConv2d and fused[0].activation is None
    assert_close(fused(x), model.eval()(x), n_terms=20)


class _Custom(nn.Module):
    """A custom module: attributes, not a Sequential."""

    def __init__(self, rng):
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, rng=rng)
        self.bn1 = nn.BatchNorm2d(6)
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.Conv2d(6, 4, 1, rng=rng), nn.BatchNorm2d(4))
        self.conv2 = nn.Conv2d(4, 4, 3, rng=rng)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn2(self.conv2(self.head(self.act(self.bn1(self.conv1(x))))))


def test_custom_module_with_groups(rng):
    model = _randomise_bn(_Custom(rng), rng)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    fused = nn.fuse(model, [["conv1", "bn1", "act"], ["conv2", "bn2"]])
    assert type(fused.conv1) is nn.FusedConv2d and fused.conv1.activation == "relu"
    assert type(fused.bn1) is nn.Identity and type(fused.act) is nn.Identity
    assert type(fused.bn2) is nn.Identity
    assert type(fused.head[0]) is nn.FusedConv2d  # found in the Sequential by itself
    assert_close(fused(x), model.eval()(x), n_terms=60)
    assert _no_caches(fused) == []
    # Without groups only the Sequential's run is fused; the rest stays in eval mode.
    partial = nn.fuse(model)
    assert type(partial.bn1) is nn.BatchNorm2d and type(partial.conv1) is nn.FusedConv2d
    assert_close(partial(x), model.eval()(x), n_terms=60)


def test_bad_groups(rng):
    model = _Custom(rng)
    with pytest.raises(ValueError, match="Expected 'nope' to name a module"):
        nn.fuse(model, [["nope", "bn1"]])
    with pytest.raises(ValueError, match="Expected 'bn1' to be a Conv1d or Conv2d"):
        nn.fuse(model, [["bn1", "conv1"]])
    with pytest.raises(ValueError, match="BatchNorm2d with running statistics over 4"):
        nn.fuse(model, [["conv2", "bn1"]])
    with pytest.raises(ValueError, match="Expected the group"):
        nn.fuse(model, [["conv1", "act", "bn1"]])
    with pytest.raises(ValueError, match="Expected a group of 2 or 3"):
        nn.fuse(model, [["conv1"]])
    with pytest.raises(TypeError, match="Expected a fastconv.nn module"):
        nn.fuse(np.zeros(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resnet_fuses_by_its_groups(dtype, rng):
    model = _randomise_bn(models.resnet_small(rng=0, width=8, dtype=dtype), rng)
    x = rng.standard_normal((3, 1, 8, 8)).astype(dtype)
    fused = nn.fuse(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for _, m in _walk(fused))
    assert type(fused.layer2[0].downsample[0]) is nn.FusedConv2d
    assert fused.layer1[0].conv1.activation == "relu"
    assert fused.layer1[0].conv2.activation is None
    assert_close(fused(x), model.eval()(x), n_terms=64 * 9 * 4)
    assert _no_caches(fused) == []


def test_fused_matches_torch_conv_bn_relu(rng):
    torch = pytest.importorskip("torch")
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, rng=rng)
    bn = _randomise_bn(nn.Sequential(nn.BatchNorm2d(5)), rng)[0]
    tconv, tbn = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1), torch.nn.BatchNorm2d(5)
    tconv.load_state_dict({k: torch.from_numpy(v) for k, v in conv.state_dict().items()})
    tbn.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in bn.state_dict().items()})
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    with torch.no_grad():
        expected = torch.relu(tbn.eval()(tconv(torch.from_numpy(x)))).numpy()
    assert_close(nn.FusedConv2d(conv, bn, relu=True)(x), expected, n_terms=27)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_weight_is_packed_once_and_kept_its_own(dtype, rng):
    """A fused convolution packs its weight's panels on its first call and
    reuses them; the weight is read-only, and a new one gets new panels."""
    conv = nn.Conv2d(5, 7, 3, padding=1, rng=rng, dtype=dtype)
    fused = nn.FusedConv2d(conv, relu=True)
    x = rng.standard_normal((2, 5, 6, 6)).astype(dtype)
    assert not fused._packed._panels
    first = fused(x)
    (panels,) = fused._packed._panels.values()
    assert panels.dtype == dtype
    assert_close(first, np.maximum(conv(x), 0), n_terms=45)
    again = fused(x)
    (kept,) = fused._packed._panels.values()
    assert kept is panels  # not packed again
    np.testing.assert_array_equal(again, first)
    with pytest.raises(ValueError, match="read-only"):
        fused.weight[0, 0, 0, 0] = 1
    fused.weight = -conv.weight.data
    assert not fused._packed._panels
    assert_close(fused(x), np.maximum(-conv(x) + 2 * conv.bias.data[:, None, None], 0),
                 n_terms=45)


def test_depthwise_fused_conv_packs_nothing(rng):
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=6, rng=rng)
    fused = nn.FusedConv2d(conv)
    x = rng.standard_normal((1, 6, 8, 8)).astype(np.float32)
    assert_close(fused(x), conv(x), n_terms=9)
    assert not fused._packed._panels  # the depthwise paths read the weight as it is


def test_fused_model_with_packed_weights_copies_and_pickles(rng):
    import copy
    import pickle

    fused = nn.fuse(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, rng=rng), nn.ReLU()))
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    y = fused(x)
    # fuse deep-copies the model, and so its dtypes: the panels are still used
    # (NumPy's asarray copied a weight of a copied dtype, which then was not
    # the packed one, and every call packed it again)
    assert fused[0]._packed._panels
    for twin in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
        assert twin[0]._packed.weight is twin[0].weight
        np.testing.assert_array_equal(twin(x), y)
        assert twin[0]._packed._panels
