"""Wang & Isola's metrics, effective rank and class distances against references."""

import math

import numpy as np
import pytest
import torch

from mp_contrastive import dynamics
from mp_contrastive.graph import augmentation_graph


def test_alignment_metric_matches_wang_isola_for_two_views(gen):
    z0 = torch.randn(6, 4, generator=gen)
    z1 = torch.randn(6, 4, generator=gen)
    f0, f1 = (torch.nn.functional.normalize(z, dim=1) for z in (z0, z1))
    for alpha in (2.0, 1.0):
        expected = (f0 - f1).norm(dim=1).pow(alpha).mean()  # Wang & Isola's align_loss
        z, sample = torch.cat([z0, z1]), torch.arange(6).repeat(2)
        torch.testing.assert_close(dynamics.alignment_metric(z, sample=sample, alpha=alpha),
                                   expected)
        g = augmentation_graph(6, 2)
        torch.testing.assert_close(dynamics.alignment_metric(z, g.edge_index, alpha=alpha),
                                   expected)


def test_uniformity_metric_matches_reference_and_limits(gen):
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    f = torch.nn.functional.normalize(x, dim=1).numpy()
    vals = [np.exp(-2 * np.sum((f[i] - f[j]) ** 2)) for i in range(7) for j in range(i + 1, 7)]
    assert dynamics.uniformity_metric(x).item() == pytest.approx(np.log(np.mean(vals)), rel=1e-12)
    collapsed = torch.ones(5, 3)
    assert dynamics.uniformity_metric(collapsed).item() == pytest.approx(0.0, abs=1e-6)
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    # |f_i - f_j|^2 = 4, t = 2
    assert dynamics.uniformity_metric(antipodal).item() == pytest.approx(-8.0)


# -- effective rank --------------------------------------------------------------------------------


@pytest.mark.parametrize(("spectrum", "expected"), [
    ([3.0, 3.0, 3.0, 3.0], 4.0),
    ([1.0, 0.0, 0.0], 1.0),
    ([2.0, 2.0, 0.0, 0.0], 2.0),
    ([2.0, 1.0, 1.0], 2 ** 1.5),  # p = (1/2, 1/4, 1/4): entropy 1.5 log 2
    ([0.0, 0.0], 0.0),
])
def test_effective_rank_of_known_spectra(spectrum, expected):
    value = dynamics.spectrum_effective_rank(torch.tensor(spectrum, dtype=torch.float64))
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_effective_rank_of_features_with_prescribed_singular_values(gen):
    s = torch.tensor([5.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(20, 4, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(6, 4, generator=gen, dtype=torch.float64))
    x = u @ torch.diag(s) @ v.T
    torch.testing.assert_close(dynamics.singular_spectrum(x)[:4], s)
    p = (s / s.sum()).numpy()
    assert dynamics.effective_rank(x).item() == pytest.approx(np.exp(-(p * np.log(p)).sum()),
                                                              rel=1e-10)
    # A complete collapse: rank one uncentred, nothing left once centred.
    point = (torch.ones(10, 1, dtype=torch.float64)
             @ torch.randn(1, 6, generator=gen, dtype=torch.float64))
    assert dynamics.effective_rank(point).item() == pytest.approx(1.0)
    assert dynamics.singular_spectrum(point, center=True).max() < 1e-5
    assert dynamics.effective_rank(torch.zeros(3, 2)).item() == 0.0


# -- class distances -------------------------------------------------------------------------------


def test_class_distances_match_brute_force_and_are_scale_free(gen):
    x = torch.randn(15, 3, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0] * 4 + [1] * 6 + [2] * 5)
    d2 = torch.cdist(x, x).pow(2)
    same = labels[:, None] == labels[None, :]
    off = ~torch.eye(15, dtype=torch.bool)
    intra = d2[same & off].mean().sqrt()
    inter = d2[~same].mean().sqrt()
    got = dynamics.class_distances(x, labels)
    torch.testing.assert_close(got.intra, intra)
    torch.testing.assert_close(got.inter, inter)
    torch.testing.assert_close(dynamics.class_distances(3 * x, labels).ratio, intra / inter)


def test_class_distances_of_collapsed_classes():
    x = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)
    got = dynamics.class_distances(x, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert got.intra.item() == 0 and got.inter.item() == pytest.approx(math.sqrt(2))


def test_bad_inputs_name_the_argument():
    x = torch.randn(4, 2)
    with pytest.raises(TypeError, match="'x'"):
        dynamics.uniformity_metric(x.numpy())
    with pytest.raises(ValueError, match="'x'"):
        dynamics.uniformity_metric(torch.randn(4))
    with pytest.raises(TypeError, match="edge_index.*sample"):
        dynamics.alignment_metric(x)
    with pytest.raises(ValueError, match="sample"):
        dynamics.alignment_metric(x, sample=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="singular_values"):
        dynamics.spectrum_effective_rank(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="single class"):
        dynamics.class_distances(x, torch.zeros(4, dtype=torch.long))
