"""Independent references and test features for the kNN search tests."""

import math

import torch
import torch.nn.functional as F


def brute_force(x, q, k, metric, same, exclude=None):
    """Independent reference: the full score matrix, one stable sort per row (ties by index)."""
    if metric == "cos":
        x, q = F.normalize(x, dim=1), F.normalize(q, dim=1)
    score = torch.cdist(q.double(), x.double()).pow(2) if metric == "l2" else q.double() @ x.double().T
    rank = -score if metric == "l2" else score.clone()
    if same:
        rank.fill_diagonal_(-math.inf)
    if exclude is not None:
        rank[exclude[1], exclude[0]] = -math.inf
    order = torch.sort(rank, dim=1, descending=True, stable=True).indices[:, :k]
    keep = torch.gather(rank, 1, order) > -math.inf
    dst = torch.arange(q.size(0)).unsqueeze(1).expand_as(order)
    return torch.stack([order[keep], dst[keep]]), score.gather(1, order)[keep]


def clustered(n, d, clusters, gen, spread=0.3):
    """``n`` unit vectors around ``clusters`` random centres."""
    centers = F.normalize(torch.randn(clusters, d, generator=gen), dim=1)
    label = torch.randint(0, clusters, (n,), generator=gen)
    noise = torch.randn(n, d, generator=gen) * (spread / math.sqrt(d))  # norm ~ spread
    return F.normalize(centers[label] + noise, dim=1)
