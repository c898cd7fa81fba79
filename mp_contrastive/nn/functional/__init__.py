r"""The operators' kernels as functions: the uniformity on dense (plain or tiled) and sparse
affinity graphs, attention weights, the contrast against a memory bank, and the tiling setting
they share.

:func:`uniformity` returns the gradient w.r.t. the anchors and the value of the uniformity energy

.. math::
    U = \sum_i c_i \log \sum_{k \in K(i)} w_{ik} e^{h_i \cdot h_k} \quad\text{(infonce)},
    \qquad U = \sum_i c_i \sum_{k \in K(i)} w_{ik} (h_i \cdot h_k)^2 \quad\text{(spectral)},

on the dense graph (every other node; tile by tile above :class:`Tiling`'s threshold) or on a
sparse one (CSR kernels where they apply). :func:`attention_weights` and
:func:`bipartite_attention_weights` reweight positive pairs (:class:`AttentionSpec`);
:func:`bank_contrast` contrasts anchors with their positives and a bank of negatives.
"""

from mp_contrastive.nn.functional._affinity import uniformity
from mp_contrastive.nn.functional._attention import (
    NORMALIZATIONS,
    SCORES,
    AttentionSpec,
    attention_weights,
    bipartite_attention_weights,
)
from mp_contrastive.nn.functional._bank import BankContrast, bank_contrast
from mp_contrastive.nn.functional._inputs import KERNELS
from mp_contrastive.nn.functional._tiling import DEFAULT_TILING, Tiling

__all__ = [
    "KERNELS",
    "NORMALIZATIONS",
    "SCORES",
    "Tiling",
    "DEFAULT_TILING",
    "AttentionSpec",
    "attention_weights",
    "bipartite_attention_weights",
    "uniformity",
    "BankContrast",
    "bank_contrast",
]
