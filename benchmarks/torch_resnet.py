"""torchvision's ResNet (BasicBlock) written out in PyTorch, for the benchmarks.

torchvision is not installable here, so the module is spelled out with
torchvision's attribute names (``conv1``, ``bn1``, ``relu``, ``maxpool``,
``layer1.0.conv1``, ``layer2.0.downsample.0``, ``avgpool``, ``fc``): its
state dict has torchvision's keys, which :mod:`fastconv.models` loads key for
key. ``small_input=True`` is the 3x3-stem variant of
:func:`fastconv.models.resnet_small`.
"""

__all__ = ["torch_resnet", "randomise_batch_norm"]


def torch_resnet(torch, layers=(2, 2, 2, 2), num_classes=1000, in_channels=3, width=64,
                 small_input=False):
    """A ``torch.nn.Module`` ResNet with BasicBlocks (ResNet-18 by default)."""
    tnn = torch.nn

    class BasicBlock(tnn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.relu = tnn.ReLU(inplace=True)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet(tnn.Module):
        def __init__(self):
            super().__init__()
            if small_input:
                self.conv1 = tnn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            else:
                self.conv1 = tnn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.bn1 = tnn.BatchNorm2d(width)
            self.relu = tnn.ReLU(inplace=True)
            self.maxpool = tnn.Identity() if small_input else tnn.MaxPool2d(3, 2, 1)
            inplanes = width
            for i, n in enumerate(layers):
                planes, stride = width * 2 ** i, (1 if i == 0 else 2)
                downsample = None
                if stride != 1 or inplanes != planes:
                    downsample = tnn.Sequential(
                        tnn.Conv2d(inplanes, planes, 1, stride, bias=False),
                        tnn.BatchNorm2d(planes))
                blocks = [BasicBlock(inplanes, planes, stride, downsample)]
                blocks += [BasicBlock(planes, planes) for _ in range(1, n)]
                inplanes = planes
                setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(inplanes, num_classes)
            for m in self.modules():
                if isinstance(m, tnn.Conv2d):
                    tnn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()


def randomise_batch_norm(torch, model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters (a trained
    network's are far from mean 0, variance 1, weight 1, bias 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.num_batches_tracked.fill_(1000)
    return model
