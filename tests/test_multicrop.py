"""Multi-crop SimCLR (``--num-crops N``): our loss with sample ids is SupCon's L_out (the mean over an
anchor's positives of each one's NT-Xent term), and solo-learn's ``simclr_loss_func`` is not: it
puts the positives' sum inside the logarithm. Both are written here from their formulas, in plain
loops, and compared on the same random features (docs/guide.md, Multi-crop, quotes the numbers).
Small crops (``--num-small-crops``) go through the model by size and are positives like the rest."""

import math

import pytest
import torch
from torch import nn

from mp_contrastive.graph import view_sample_index
from mp_contrastive.losses import SimCLRLoss
from mp_contrastive.losses import _plain_nt_xent as plain_nt_xent
from mp_contrastive.vision.methods import SimCLRMethod, SimSiamMethod

BATCH, DIM = 8, 16


def similarities(z: torch.Tensor, temperature: float) -> list[list[float]]:
    h = z / z.norm(dim=1, keepdim=True)
    return (h @ h.T / temperature).tolist()


def supcon_out(z: torch.Tensor, sample: list[int], temperature: float) -> float:
    r"""Our formula: :math:`\frac1N \sum_i \frac{1}{|P(i)|} \sum_{p \in P(i)}
    -\log(e^{s_{ip}} / \sum_{k \ne i} e^{s_{ik}})`."""
    s, n = similarities(z, temperature), len(sample)
    total = 0.0
    for i in range(n):
        denominator = sum(math.exp(s[i][k]) for k in range(n) if k != i)
        positives = [p for p in range(n) if p != i and sample[p] == sample[i]]
        total += sum(-math.log(math.exp(s[i][p]) / denominator) for p in positives) / len(positives)
    return total / n


def solo_learn(z: torch.Tensor, sample: list[int], temperature: float) -> float:
    r"""solo-learn's ``simclr_loss_func`` (vturrisi/solo-learn, solo/losses/simclr.py, one
    process): ``pos_mask`` = same index but not itself, ``neg_mask`` = another index,
    ``-mean(log(pos / (pos + neg)))`` with ``pos``, ``neg`` the row sums of ``exp(sim)`` under
    each mask, i.e. :math:`\frac1N \sum_i -\log(\sum_{p \in P(i)} e^{s_{ip}} /
    \sum_{k \ne i} e^{s_{ik}})`."""
    s, n = similarities(z, temperature), len(sample)
    total = 0.0
    for i in range(n):
        pos = sum(math.exp(s[i][p]) for p in range(n) if p != i and sample[p] == sample[i])
        neg = sum(math.exp(s[i][k]) for k in range(n) if sample[k] != sample[i])
        total += -math.log(pos / (pos + neg))
    return total / n


def features(views: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(BATCH * views, DIM, generator=g, dtype=torch.float64),
            view_sample_index(BATCH, views))


# Measured on these features (seed 0, 8 images x N crops, 16 dimensions); docs/guide.md quotes them.
MEASURED = {(4, 0.5): (3.532886035174457, 2.378634032977901),
            (4, 0.1): (5.489916615406778, 3.396659818418609),
            (2, 0.5): (2.851698456306383, 2.851698456306383)}


@pytest.mark.parametrize(("views", "temperature"), list(MEASURED))
def test_ours_is_supcon_out_and_solo_learns_differs_beyond_two_views(views, temperature):
    z, sample = features(views)
    ours = float(SimCLRLoss(temperature)(z, sample))
    reference = supcon_out(z, sample.tolist(), temperature)
    solo = solo_learn(z, sample.tolist(), temperature)
    assert ours == pytest.approx(reference, abs=1e-6)
    assert ours == pytest.approx(float(plain_nt_xent(z, sample, temperature)), abs=1e-10)
    assert (ours, solo) == pytest.approx(MEASURED[views, temperature], abs=1e-9)
    if views == 2:  # one positive per anchor: both are NT-Xent
        assert solo == pytest.approx(ours, abs=1e-12)
    else:  # Jensen: ours >= solo-learn's + log |P(i)|, strictly unless positives tie
        assert ours - solo > math.log(views - 1)


class TinyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU()).double()
        self.projector = nn.Linear(16, 8).double()

    def forward(self, x):
        h = self.backbone(x)
        return self.projector(h), h


@pytest.mark.parametrize("attention", ["off", "paper", "official"])
def test_simclr_method_trains_on_four_views(attention):
    """The trainer hands the method ``num_views`` augmented batches: with 4 the method's loss is
    the multi-positive one over the concatenated views, and every attention mode runs."""
    g = torch.Generator().manual_seed(3)
    views = [torch.randn(BATCH, 6, generator=g, dtype=torch.float64) for _ in range(4)]
    method = SimCLRMethod(TinyModel(), temperature=0.3, attention=attention)
    loss, nodes = method(views, torch.arange(BATCH))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in method.parameters())
    z, sample, node_index = nodes
    assert z.shape == (4 * BATCH, 8)
    assert torch.equal(sample, view_sample_index(BATCH, 4))
    assert torch.equal(node_index, torch.arange(BATCH).repeat(4))
    if attention == "off":
        torch.testing.assert_close(loss.detach(), plain_nt_xent(z, sample, 0.3), atol=1e-12,
                                   rtol=0)


class TinyConvModel(nn.Module):
    """Images of any side to ``(z, h)``: a convolution with batch norm, pooled, then a projector;
    it counts its forward passes and the input sides it saw."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten()).double()
        self.projector = nn.Linear(16, 8).double()
        self.sides: list[int] = []

    def forward(self, x):
        self.sides.append(x.size(-1))
        h = self.backbone(x)
        return self.projector(h), h


def large_and_small_views(large: int = 2, small: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return ([torch.rand(BATCH, 3, 32, 32, generator=g, dtype=torch.float64) for _ in range(large)]
            + [torch.rand(BATCH, 3, 16, 16, generator=g, dtype=torch.float64)
               for _ in range(small)])


@pytest.mark.parametrize("attention", ["off", "paper", "official"])
def test_small_crops_go_through_the_model_by_size_and_every_view_is_a_positive(attention):
    """2 global + 2 small views: one forward pass per size, the projections concatenated in view
    order, and the loss the method's own loss of them with every view of an image a positive of
    every other (the sample ids of 4 views); every attention mode takes them and trains."""
    views = large_and_small_views()
    method = SimCLRMethod(TinyConvModel(), temperature=0.3, attention=attention)
    loss, (z, sample, node_index) = method(views, torch.arange(BATCH))
    assert method.model.sides == [32, 16]  # one forward per size, the global crops first
    assert torch.equal(sample, view_sample_index(BATCH, 4))
    assert torch.equal(node_index, torch.arange(BATCH).repeat(4))

    # The same model, forwarded by hand group by group, gives the projections and features.
    reference = TinyConvModel()
    z_large, h_large = reference(torch.cat(views[:2]))
    z_small, h_small = reference(torch.cat(views[2:]))
    projections = torch.cat([z_large, z_small])
    torch.testing.assert_close(z, projections.detach(), atol=0, rtol=0)
    if attention == "off":
        expected = SimCLRLoss(0.3)(projections, sample)
    else:
        expected = method.loss(projections, sample,
                               attention_features=torch.cat([h_large, h_small]).detach())
    torch.testing.assert_close(loss, expected, atol=1e-12, rtol=0)

    loss.backward()
    expected.backward()
    for (name, got), want in zip(method.model.named_parameters(), reference.parameters(),
                                 strict=True):
        assert got.grad is not None and got.grad.abs().sum() > 0, name  # the gradients flow
        torch.testing.assert_close(got.grad, want.grad, atol=1e-12, rtol=0)


def test_views_of_one_size_keep_the_single_forward_pass():
    """Without small crops the method forwards the concatenated views once, as before."""
    model = TinyConvModel()
    SimCLRMethod(model, temperature=0.3)(large_and_small_views(4, 0), torch.arange(BATCH))
    assert model.sides == [32]


def test_two_view_methods_refuse_views_of_two_sizes():
    """The error names the views' two shapes."""
    views = large_and_small_views(1, 1)
    shapes = r"\(3, 16, 16\).*\(3, 32, 32\)"
    bank = SimCLRMethod(TinyConvModel(), memory_bank_size=16)
    with pytest.raises(ValueError, match=shapes):
        bank(views, torch.arange(BATCH))
    siam = SimSiamMethod(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                         4, BATCH, proj_dim=8, proj_hidden_dim=8, pred_hidden_dim=4)
    with pytest.raises(ValueError, match=shapes):
        siam(views, torch.arange(BATCH))
