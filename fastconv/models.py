"""ResNets with torchvision's attribute names, built from :mod:`fastconv.nn`.

:class:`BasicBlock` and :class:`ResNet` name their sub-modules as
``torchvision.models.resnet`` does (``conv1``, ``bn1``, ``relu``, ``maxpool``,
``layer1`` ... ``layer4``, ``avgpool``, ``fc``; in a block ``conv1``, ``bn1``,
``relu``, ``conv2``, ``bn2``, ``downsample.0``, ``downsample.1``), so a
torchvision state dict (``layer2.0.downsample.0.weight``,
``bn1.running_mean``, ``bn1.num_batches_tracked``, ...) loads into
:func:`resnet18` key for key, from a ``torch.save`` file through
:func:`fastconv.load` without torch::

    model = fastconv.models.resnet18()
    model.load_state_dict(fastconv.load("resnet18.pth"))
    logits = fastconv.nn.fuse(model)(images)        # inference, BatchNorm folded

Initialisation follows torchvision: convolutions ``kaiming_normal_`` with
``mode="fan_out"`` for ReLU (``std = sqrt(2 / (C_out*kH*kW))``), BatchNorm
weight 1 and bias 0, the classifier PyTorch's default ``Linear``.

:func:`resnet_small` is the same architecture for tiny images (a 3x3 stem
without max pooling, as CIFAR ResNets have), the model of
``python -m fastconv train --model resnet``.
"""

import math

import numpy as np

from . import nn

__all__ = ["BasicBlock", "ResNet", "resnet18", "resnet34", "resnet_small"]


def _check_trainable(module):
    if not module._keep_cache:
        raise RuntimeError(
            f"{type(module).__name__} was made by fastconv.nn.fuse for inference: it keeps "
            f"no backward cache (train the unfused model)"
        )


def _conv(in_channels, out_channels, kernel_size, stride, padding, rng, dtype):
    """A bias-free Conv2d with torchvision's kaiming-normal (fan_out, ReLU) weights."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                     bias=False, rng=rng, dtype=dtype)
    w = conv.weight.data
    std = math.sqrt(2.0 / (w.shape[0] * math.prod(w.shape[2:])))
    w[...] = rng.normal(0.0, std, w.shape)
    return conv


class BasicBlock(nn.Module):
    """BasicBlock(inplanes, planes, stride=1, downsample=None, rng=None, dtype=np.float32)

    torchvision's ResNet basic block:
    ``y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut)`` with 3x3
    convolutions (the first strided), the shortcut being ``x`` or
    ``downsample(x)``. ``backward`` routes ``dy`` through the final ReLU, then
    both branches, and sums their input gradients.

    Parameters
    ----------
    inplanes, planes : int
        Input and output channels.
    stride : int
    downsample : Module or None
        Typically ``Sequential(Conv2d 1x1 strided, BatchNorm2d)``.
    rng : numpy.random.Generator, int or None
    dtype : float32 or float64

    Shape
    -----
    ``(N, inplanes, H, W) -> (N, planes, ceil(H/stride), ceil(W/stride))``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import models
    >>> block = models.BasicBlock(8, 8, rng=0)
    >>> block(np.ones((2, 8, 5, 5), np.float32)).shape
    (2, 8, 5, 5)
    >>> [k for k in block.state_dict() if k.startswith("bn1")][:3]
    ['bn1.weight', 'bn1.bias', 'bn1.running_mean']
    """

    expansion = 1
    _keep_cache = True  # nn.fuse sets it False: an inference block keeps nothing

    def __init__(self, inplanes, planes, stride=1, downsample=None, rng=None,
                 dtype=np.float32):
        rng = np.random.default_rng(rng)
        self.conv1 = _conv(inplanes, planes, 3, stride, 1, rng, dtype)
        self.bn1 = nn.BatchNorm2d(planes, dtype=dtype)
        self.relu = nn.ReLU()
        self.conv2 = _conv(planes, planes, 3, 1, 1, rng, dtype)
        self.bn2 = nn.BatchNorm2d(planes, dtype=dtype)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        out = out + identity
        # The final ReLU is the block's own (torchvision reuses ``relu`` here,
        # which fusing conv1/bn1/relu would turn into an Identity).
        np.maximum(out, 0, out=out)
        self._cache = (out,) if self._keep_cache else None
        return out

    def backward(self, grad_out):
        _check_trainable(self)
        (y,) = self._saved()
        g = grad_out * (y > 0)
        g_short = g if self.downsample is None else self.downsample.backward(g)
        for layer in (self.bn2, self.conv2, self.relu, self.bn1, self.conv1):
            g = layer.backward(g)
        return g + g_short

    def fuse_groups(self, prefix=""):
        """The groups of :func:`fastconv.nn.fuse` for this block's names."""
        groups = [[prefix + n for n in ("conv1", "bn1", "relu")],
                  [prefix + n for n in ("conv2", "bn2")]]
        if isinstance(self.downsample, nn.Sequential) and len(self.downsample) == 2:
            groups.append([prefix + "downsample.0", prefix + "downsample.1"])
        return groups

    def extra_repr(self):
        return (f"{self.conv1.in_channels}, {self.conv1.out_channels}, stride={self.stride}, "
                f"downsample={self.downsample is not None}")


class ResNet(nn.Module):
    """ResNet(block=BasicBlock, layers=(2, 2, 2, 2), num_classes=1000, in_channels=3, width=64, small_input=False, rng=None, dtype=np.float32)

    torchvision's ResNet: ``conv1`` (7x7, stride 2, 3 padding) ``bn1``
    ``relu`` ``maxpool`` (3x3, stride 2, padding 1), then ``layer1`` ...
    ``layer4`` (``Sequential`` of ``layers[i]`` blocks, ``width * 2**i``
    channels, stride 2 from ``layer2`` on, a 1x1-conv + BatchNorm
    ``downsample`` where the shape changes), ``avgpool``
    (``AdaptiveAvgPool2d((1, 1))``), a flatten and ``fc``.
    ``small_input=True`` makes the stem a 3x3 stride-1 ``conv1`` and
    ``maxpool`` an ``Identity``, for images of a few pixels.

    Parameters
    ----------
    block : type
        :class:`BasicBlock`.
    layers : sequence of 4 ints
    num_classes, in_channels, width : int
    small_input : bool
    rng : numpy.random.Generator, int or None
    dtype : float32 or float64

    Shape
    -----
    ``(N, in_channels, H, W) -> (N, num_classes)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import models
    >>> model = models.ResNet(layers=(1, 1, 1, 1), num_classes=10, in_channels=1, width=4,
    ...                       small_input=True, rng=0)
    >>> model(np.zeros((2, 1, 8, 8), np.float32)).shape
    (2, 10)
    >>> [k for k in model.state_dict() if k.startswith("layer2.0.downsample")][:2]
    ['layer2.0.downsample.0.weight', 'layer2.0.downsample.1.weight']
    """

    _keep_cache = True  # nn.fuse sets it False

    def __init__(self, block=BasicBlock, layers=(2, 2, 2, 2), num_classes=1000, in_channels=3,
                 width=64, small_input=False, rng=None, dtype=np.float32):
        if len(layers) != 4:
            raise ValueError(f"Expected layers to be 4 block counts, got {layers!r}")
        rng = np.random.default_rng(rng)
        self.dtype = np.dtype(dtype)
        self.inplanes = width
        if small_input:
            self.conv1 = _conv(in_channels, width, 3, 1, 1, rng, dtype)
        else:
            self.conv1 = _conv(in_channels, width, 7, 2, 3, rng, dtype)
        self.bn1 = nn.BatchNorm2d(width, dtype=dtype)
        self.relu = nn.ReLU()
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0], 1, rng, dtype)
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2, rng, dtype)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2, rng, dtype)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2, rng, dtype)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes, rng=rng, dtype=dtype)

    def _make_layer(self, block, planes, blocks, stride, rng, dtype):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv(self.inplanes, planes * block.expansion, 1, stride, 0, rng, dtype),
                nn.BatchNorm2d(planes * block.expansion, dtype=dtype))
        layers = [block(self.inplanes, planes, stride, downsample, rng=rng, dtype=dtype)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, rng=rng, dtype=dtype) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _stages(self):
        return (self.conv1, self.bn1, self.relu, self.maxpool, self.layer1, self.layer2,
                self.layer3, self.layer4, self.avgpool)

    def forward(self, x):
        for stage in self._stages():
            x = stage(x)
        self._cache = (x.shape,) if self._keep_cache else None
        return self.fc(x.reshape(x.shape[0], -1))

    def backward(self, grad_out):
        _check_trainable(self)
        (shape,) = self._saved()
        g = self.fc.backward(grad_out).reshape(shape)
        for stage in reversed(self._stages()):
            g = stage.backward(g)
        return g

    def fuse_groups(self):
        """The groups :func:`fastconv.nn.fuse` folds: the stem and every block's
        conv/BatchNorm(/ReLU) pairs, as torchvision's quantizable ResNet lists them."""
        groups = [["conv1", "bn1", "relu"]]
        for i in range(1, 5):
            for j, blk in enumerate(getattr(self, f"layer{i}")):
                if isinstance(blk, BasicBlock):
                    groups += blk.fuse_groups(f"layer{i}.{j}.")
        return groups

    def extra_repr(self):
        counts = [len(getattr(self, f"layer{i}")) for i in range(1, 5)]
        return (f"layers={tuple(counts)}, width={self.conv1.out_channels}, "
                f"num_classes={self.fc.out_features}")


def resnet18(num_classes=1000, in_channels=3, rng=None, dtype=np.float32):
    """resnet18(num_classes=1000, in_channels=3, rng=None, dtype=np.float32)

    ResNet-18 (``BasicBlock``, ``layers=(2, 2, 2, 2)``), torchvision's
    ``resnet18``: its state dict's 122 keys (102 arrays plus 20
    ``num_batches_tracked``) load key for key.

    Parameters
    ----------
    num_classes, in_channels : int
    rng : numpy.random.Generator, int or None
    dtype : float32 or float64

    Returns
    -------
    ResNet

    Shape
    -----
    ``(N, 3, 224, 224) -> (N, num_classes)`` (any size of at least 32 pixels works).

    Examples
    --------
    >>> from fastconv import models
    >>> model = models.resnet18(rng=0)
    >>> sum(p.data.size for p in model.parameters())
    11689512
    """
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, rng=rng, dtype=dtype)


def resnet34(num_classes=1000, in_channels=3, rng=None, dtype=np.float32):
    """resnet34(num_classes=1000, in_channels=3, rng=None, dtype=np.float32)

    ResNet-34 (``BasicBlock``, ``layers=(3, 4, 6, 3)``), torchvision's ``resnet34``.

    Parameters
    ----------
    num_classes, in_channels : int
    rng : numpy.random.Generator, int or None
    dtype : float32 or float64

    Returns
    -------
    ResNet

    Shape
    -----
    ``(N, 3, 224, 224) -> (N, num_classes)``.

    Examples
    --------
    >>> from fastconv import models
    >>> len(models.resnet34(rng=0).layer3)
    6
    """
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, rng=rng, dtype=dtype)


def resnet_small(num_classes=10, in_channels=1, width=16, layers=(1, 1, 1, 1), rng=None,
                 dtype=np.float32):
    """resnet_small(num_classes=10, in_channels=1, width=16, layers=(1, 1, 1, 1), rng=None, dtype=np.float32)

    A ResNet for tiny images such as the 8x8 digits: the 3x3 stride-1 stem
    without max pooling, four stages of ``width * (1, 2, 4, 8)`` channels
    (8x8 -> 8x8, 4x4, 2x2, 1x1 on digits), global average pooling and ``fc``.

    Parameters
    ----------
    num_classes, in_channels, width : int
    layers : sequence of 4 ints
    rng : numpy.random.Generator, int or None
    dtype : float32 or float64

    Returns
    -------
    ResNet

    Shape
    -----
    ``(N, in_channels, H, W) -> (N, num_classes)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import models
    >>> models.resnet_small(rng=0)(np.zeros((3, 1, 8, 8), np.float32)).shape
    (3, 10)
    """
    return ResNet(BasicBlock, layers, num_classes, in_channels, width, small_input=True,
                  rng=rng, dtype=dtype)
