"""The CIFAR ResNet's options that solo-learn's SimSiam uses: stem padding, zero-initialised
residual branches, input normalisation inside the encoder."""

import pytest
import torch
from torchvision.models.resnet import BasicBlock, Bottleneck

from mp_contrastive.vision import resnet_cifar
from mp_contrastive.vision.data import CIFAR_MEAN_STD


@pytest.mark.parametrize(("padding", "side"), [(1, 32), (2, 34)])
def test_stem_padding_sets_the_first_feature_map(padding, side):
    net = resnet_cifar("resnet10", 4, stem_padding=padding)
    assert net.conv1(torch.zeros(1, 3, 32, 32)).shape[-2:] == (side, side)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, net.out_dim)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_zero_init_residual_makes_every_block_start_as_its_shortcut(arch):
    torch.manual_seed(0)
    net = resnet_cifar(arch, 4, zero_init_residual=True).eval()
    blocks = [m for m in net.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    assert blocks
    for block in blocks:
        x = torch.randn(2, block.conv1.in_channels, 8, 8)
        shortcut = x if block.downsample is None else block.downsample(x)
        assert torch.equal(block(x), torch.relu(shortcut))
    # Without the option, the branches are not zero.
    plain = resnet_cifar(arch, 4).eval()
    block = next(m for m in plain.modules() if isinstance(m, (BasicBlock, Bottleneck)))
    x = torch.randn(2, block.conv1.in_channels, 8, 8)
    assert not torch.equal(block(x), torch.relu(x if block.downsample is None
                                                else block.downsample(x)))


def test_input_normalisation_is_applied_inside_the_encoder():
    mean, std = CIFAR_MEAN_STD["cifar10"]
    torch.manual_seed(0)
    normalised = resnet_cifar("resnet10", 4, input_norm=(mean, std)).eval()
    torch.manual_seed(0)
    raw = resnet_cifar("resnet10", 4).eval()
    raw.load_state_dict(normalised.state_dict(), strict=False)
    x = torch.rand(3, 3, 32, 32)
    expected = raw((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    torch.testing.assert_close(normalised(x), expected)
    assert set(normalised.state_dict()) - set(raw.state_dict()) == {"input_mean", "input_std"}


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"stem_padding": -1}, ValueError, "'stem_padding'"),
    ({"stem_padding": 1.5}, ValueError, "'stem_padding'"),
    ({"zero_init_residual": 1}, TypeError, "'zero_init_residual'"),
    ({"input_norm": (0.5, 0.5)}, ValueError, "'input_norm'"),
    ({"input_norm": ((0.5,) * 3, (0.2, 0.0, 0.2))}, ValueError, "'input_norm'"),
    ({"input_norm": [0.5] * 3}, TypeError, "'input_norm'"),
])
def test_bad_options_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        resnet_cifar("resnet10", 4, **kwargs)
