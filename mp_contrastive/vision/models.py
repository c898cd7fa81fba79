"""CIFAR-stem ResNets built from torchvision's blocks, and the official projection head."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from mp_contrastive._validation import check_positive_int

__all__ = ["CifarResNet", "resnet_cifar", "ProjectionHead", "SimCLRModel", "ARCHITECTURES"]

ARCHITECTURES = {
    "resnet10": (BasicBlock, [1, 1, 1, 1]),
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class CifarResNet(ResNet):
    """torchvision's ``ResNet`` with the CIFAR stem (3x3 stride-1 convolution, no max-pool), stage
    widths ``width * (1, 2, 4, 8)`` (``width=64`` is the standard network) and no classifier:
    ``forward`` returns the pooled features, of size :attr:`out_dim`."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int],
                 width: int = 64) -> None:
        nn.Module.__init__(self)
        check_positive_int(width, "width")
        # The attributes torchvision's ResNet._make_layer reads.
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        self.out_dim = 8 * width * block.expansion
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def resnet_cifar(arch: str = "resnet18", width: int = 64) -> CifarResNet:
    """A CIFAR-stem ResNet: ``arch`` in ``resnet10 | resnet18 | resnet34 | resnet50``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"'arch' must be one of {tuple(ARCHITECTURES)}, got {arch!r}")
    block, layers = ARCHITECTURES[arch]
    return CifarResNet(block, layers, width)


class ProjectionHead(nn.Sequential):
    """The official projector: Linear(d, d) - BN - ReLU - Linear(d, out) - BN (no bias on the
    linears; the last BN's shift is frozen at zero), as in ``GRAPH-ATTENTION/models/encoder.py``."""

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128) -> None:
        hidden_dim = in_dim if hidden_dim is None else hidden_dim
        last = nn.BatchNorm1d(out_dim)
        last.bias.requires_grad_(False)
        super().__init__(OrderedDict([
            ("fc1", nn.Linear(in_dim, hidden_dim, bias=False)),
            ("bn1", nn.BatchNorm1d(hidden_dim)),
            ("relu1", nn.ReLU(inplace=True)),
            ("fc2", nn.Linear(hidden_dim, out_dim, bias=False)),
            ("bn2", last),
        ]))


class SimCLRModel(nn.Module):
    """Backbone + projector; ``forward`` returns ``(projection z, backbone features h)``."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.backbone(x)
        return self.projector(h), h
