"""CIFAR-stem ResNets built from torchvision's blocks, and the official projection head."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
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
    ``forward`` returns the pooled features, of size :attr:`out_dim`.

    Args:
        block, layers: torchvision's residual block and the number of blocks per stage.
        width (int): first-stage width.
        stem_padding (int): padding of the 3x3 stem convolution: 1 keeps 32x32 maps (the
            GRAPH-ATTENTION code), 2 gives 34x34 ones as solo-learn's CIFAR ResNet does.
        zero_init_residual (bool): zero the last batch norm's scale in every residual branch, so
            each block starts as the identity (torchvision's and solo-learn's option).
        input_norm (tuple, optional): per-channel ``(mean, std)`` the network subtracts and divides
            by first (solo-learn normalises CIFAR inputs; the GRAPH-ATTENTION code does not). It is
            part of the encoder so that every evaluation of it (kNN, probes) sees inputs as
            training did.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int],
                 width: int = 64, stem_padding: int = 1, zero_init_residual: bool = False,
                 input_norm: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
        nn.Module.__init__(self)
        check_positive_int(width, "width")
        if isinstance(stem_padding, bool) or not isinstance(stem_padding, int) or stem_padding < 0:
            raise ValueError(f"'stem_padding' must be an integer >= 0, got {stem_padding!r}")
        if not isinstance(zero_init_residual, bool):
            raise TypeError(f"'zero_init_residual' must be a bool, got "
                            f"{type(zero_init_residual).__name__}")
        # The attributes torchvision's ResNet._make_layer reads.
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=stem_padding, bias=False)
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
        self.stem_padding, self.zero_init_residual = stem_padding, zero_init_residual
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    last = module.bn3 if isinstance(module, Bottleneck) else module.bn2
                    nn.init.zeros_(last.weight)
        self.input_norm = input_norm is not None
        if input_norm is not None:
            mean, std = _channel_stats(input_norm)
            self.register_buffer("input_mean", mean)
            self.register_buffer("input_std", std)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_norm:
            x = (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)
        return super().forward(x)


def _channel_stats(input_norm: tuple[Sequence[float], Sequence[float]]) -> tuple[Tensor, Tensor]:
    """``(mean, std)`` as ``[1, 3, 1, 1]`` tensors, checked."""
    if not isinstance(input_norm, (tuple, list)) or len(input_norm) != 2:
        raise TypeError("'input_norm' must be a pair (mean, std) of 3 values each")
    mean, std = (torch.as_tensor(v, dtype=torch.float32).flatten() for v in input_norm)
    if mean.numel() != 3 or std.numel() != 3:
        raise ValueError(f"'input_norm' must hold 3 means and 3 stds (one per RGB channel), got "
                         f"{mean.numel()} and {std.numel()}")
    if not bool(torch.isfinite(mean).all()) or not bool((std > 0).all()):
        raise ValueError("'input_norm' needs finite means and stds > 0")
    return mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)


def resnet_cifar(arch: str = "resnet18", width: int = 64, stem_padding: int = 1,
                 zero_init_residual: bool = False,
                 input_norm: tuple[Sequence[float], Sequence[float]] | None = None) -> CifarResNet:
    """A CIFAR-stem ResNet: ``arch`` in ``resnet10 | resnet18 | resnet34 | resnet50``; the other
    arguments as :class:`CifarResNet`'s."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"'arch' must be one of {tuple(ARCHITECTURES)}, got {arch!r}")
    block, layers = ARCHITECTURES[arch]
    return CifarResNet(block, layers, width, stem_padding, zero_init_residual, input_norm)


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
