"""Graphs with known spectra, and numpy's lambda_2 as an independent reference."""

import numpy as np
import torch


def undirected(pairs) -> torch.Tensor:
    """Edge index with both directions of every (i, j) in ``pairs``."""
    a = torch.tensor(pairs, dtype=torch.long).T
    return torch.cat([a, a.flip(0)], 1)


def path(n: int) -> torch.Tensor:
    return undirected([(i, i + 1) for i in range(n - 1)])


def cycle(n: int) -> torch.Tensor:
    return undirected([(i, (i + 1) % n) for i in range(n)])


def complete(n: int) -> torch.Tensor:
    return undirected([(i, j) for i in range(n) for j in range(i + 1, n)])


def two_cliques(m: int, bridges: int) -> torch.Tensor:
    """Two copies of K_m; node i of the first joined to node i of the second for i < bridges."""
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    pairs += [(m + i, m + j) for i, j in pairs]
    pairs += [(i, m + i) for i in range(bridges)]
    return undirected(pairs)


def numpy_lambda2(edge_index: torch.Tensor, num_nodes: int, weight=None) -> float:
    """Independent reference: dense numpy eigvalsh of L = I - D^-1/2 A D^-1/2."""
    a = np.zeros((num_nodes, num_nodes))
    w = np.ones(edge_index.size(1)) if weight is None else weight.numpy()
    np.add.at(a, (edge_index[1].numpy(), edge_index[0].numpy()), w)
    d = a.sum(1)
    lap = np.eye(num_nodes) - a / np.sqrt(np.outer(d, d))
    return float(np.linalg.eigvalsh(lap)[1])
