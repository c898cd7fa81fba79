r"""Diagnostics of contrastive learning dynamics: the paper's theory as measurements.

Every function takes plain tensors (features ``x`` of shape ``[num_nodes, num_features]``, an
``edge_index`` in PyG's source-to-target convention, integer ``labels``) and returns tensors or
floats, so it can be called on a toy graph, a training batch or a whole graph alike.

**Graph spectra.** The Laplacian used throughout is the symmetric normalised Laplacian of
the paper's Proposition 2,

.. math::
    L = I_{+} - \bar{A}, \qquad \bar{A} = D^{-1/2} A D^{-1/2},

where :math:`I_{+}` has a one on the diagonal of every node with non-zero degree (Chung's
convention; it equals :math:`I` when no node is isolated, which is the case for any augmentation
graph). Its eigenvalues lie in :math:`[0, 2]`; the multiplicity of :math:`0` is the number of
connected components (an isolated node is a component), so the **algebraic connectivity**
:math:`\lambda_2`, the second-smallest eigenvalue, is positive iff the graph is connected.

**Proposition 2.** For a label-preserving augmentation graph, one alignment step
:math:`H' = (1-\alpha) H + \alpha \bar{A} H` (``AlignmentConv(alpha, detach_targets=True)``) shrinks
each class's distance to the top eigenvector :math:`u_c \propto \sqrt{d_c}` of
:math:`\bar{A}_c`,

.. math::
    \| H'_c - u_c u_c^\top H'_c \|_F \le (1 - \alpha \lambda_2(L_c))\,
    \| H_c - u_c u_c^\top H_c \|_F \qquad (0 < \alpha \le 1/2),

see :func:`class_algebraic_connectivity`, :func:`class_subspace_distance` and
:func:`alignment_contraction_bound`.

**Proposition 3.** The contrastive step vanishes when the affinity graph
:math:`\hat{A}_{ij} = e^{H_i \cdot H_j} / \sum_{k \ne i} e^{H_i \cdot H_k}` equals :math:`\bar{A}` row
by row; :func:`equilibrium_gap` measures how far the two graphs are apart.

**Representation quality.** Wang & Isola's alignment and uniformity (:func:`alignment_metric`,
:func:`uniformity_metric`), the singular spectrum and effective rank of the features (dimensional
collapse: :func:`singular_spectrum`, :func:`effective_rank`) and the intra- / inter-class
distance ratio (:func:`class_distances`).

Modules: :mod:`~mp_contrastive.dynamics.spectra` (spectra, Proposition 2),
:mod:`~mp_contrastive.dynamics.equilibrium` (Proposition 3),
:mod:`~mp_contrastive.dynamics.representation` (representation quality).
"""

from mp_contrastive.dynamics.equilibrium import REDUCTIONS, EquilibriumGap, equilibrium_gap
from mp_contrastive.dynamics.representation import (
    ClassDistances,
    alignment_metric,
    class_distances,
    effective_rank,
    singular_spectrum,
    spectrum_effective_rank,
    uniformity_metric,
)
from mp_contrastive.dynamics.spectra import (
    EIGEN_METHODS,
    algebraic_connectivity,
    alignment_contraction_bound,
    class_algebraic_connectivity,
    class_subspace_distance,
    normalized_laplacian,
)

__all__ = [
    "EIGEN_METHODS",
    "REDUCTIONS",
    "normalized_laplacian",
    "algebraic_connectivity",
    "class_algebraic_connectivity",
    "alignment_contraction_bound",
    "class_subspace_distance",
    "EquilibriumGap",
    "equilibrium_gap",
    "alignment_metric",
    "uniformity_metric",
    "singular_spectrum",
    "effective_rank",
    "spectrum_effective_rank",
    "ClassDistances",
    "class_distances",
]
