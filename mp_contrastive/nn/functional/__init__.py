"""The operators' kernels as functions: the uniformity on dense (plain or tiled) and sparse
affinity graphs, attention weights, and the tiling setting they share."""

from mp_contrastive.nn.functional.affinity import edge_sum, sparse_uniformity, uniformity
from mp_contrastive.nn.functional.attention import (
    NORMALIZATIONS,
    SCORES,
    AttentionSpec,
    attention_weights,
)
from mp_contrastive.nn.functional.repulsion import Attraction, Repulsion
from mp_contrastive.nn.functional.sparse import scatter_logsumexp
from mp_contrastive.nn.functional.tiling import DEFAULT_TILING, Tiling
from mp_contrastive.nn.inputs import KERNELS

__all__ = [
    "KERNELS",
    "NORMALIZATIONS",
    "SCORES",
    "Tiling",
    "DEFAULT_TILING",
    "AttentionSpec",
    "Attraction",
    "Repulsion",
    "attention_weights",
    "uniformity",
    "sparse_uniformity",
    "edge_sum",
    "scatter_logsumexp",
]
