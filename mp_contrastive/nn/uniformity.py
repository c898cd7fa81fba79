"""Uniformity: one gradient step on the affinity graph's repulsion energy (reversed attention)."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch_geometric.typing import Adj, OptTensor, PairTensor

from mp_contrastive.nn.functional._affinity import uniformity
from mp_contrastive.nn.functional._inputs import (
    check_kernel,
    check_pair,
    check_repulsion,
    repulsion_inputs,
    split_pair,
)
from mp_contrastive.nn.functional._tiling import DEFAULT_TILING, Tiling, check_tiling
from mp_contrastive.nn.step_conv import StepConv

__all__ = ["UniformityConv"]


class UniformityConv(StepConv):
    r"""The uniformity update (paper eq. 7-8 and 2b): one gradient step of size :math:`\alpha` on
    the repulsion energy of the affinity graph :math:`K`,

    .. math::
        U(H) = \sum_i c_i \log \sum_{k \in K(i)} w_{ik}\, e^{H_i \cdot H_k}
        \quad (\texttt{kernel="infonce"}), \qquad
        U(H) = \sum_i c_i \sum_{k \in K(i)} w_{ik}\, (H_i \cdot H_k)^2
        \quad (\texttt{kernel="spectral"}).

    With :math:`\hat{A}_{ik} = w_{ik} e^{H_i \cdot H_k} / \sum_{l \in K(i)} w_{il} e^{H_i \cdot H_l}`
    (a row softmax, PyG's ``softmax`` on edges) and :math:`C = \mathrm{diag}(c)`, the InfoNCE step is

    .. math::
        H' = H - \alpha (C\hat{A} + \hat{A}^\top C) H,

    and :math:`H - \alpha C \hat{A} H` with ``detach_targets=True`` (the neighbours are constants).
    The spectral step is :math:`H - 2\alpha (CS + S^\top C) H` with :math:`S_{ik} = w_{ik} H_i \cdot
    H_k` on :math:`K` (:math:`H - 4\alpha S H` for a dense, unweighted graph), and
    :math:`H - 2\alpha C S H` detached. A negative ``alpha`` would be self-attention (paper eq. 12),
    a gradient *ascent* on uniformity; that is ``-conv.step(x)``.

    The affinity graph is dense (every other node of the batch) when ``edge_index`` is ``None``;
    otherwise its edges run from neighbour ``k`` (source) to anchor ``i`` (target), and
    ``edge_weight`` are the :math:`w_{ik}` (e.g. importance weights of sampled negatives). For
    memory-bank negatives pass ``x = (x_bank, x_batch)``: the step is on the batch (targets); the
    bank is a different tensor, so ``detach_targets`` makes no difference there.

    Args:
        alpha (float): step size (default ``1.0``).
        kernel (str): ``"infonce"`` or ``"spectral"``.
        detach_targets (bool): stop-gradient on the neighbours (default ``False``).
        tiling (Tiling): when and how a dense affinity graph is processed tile by tile (default
            :data:`~mp_contrastive.nn.functional.DEFAULT_TILING`).
    """

    def __init__(self, alpha: float = 1.0, kernel: str = "infonce", detach_targets: bool = False,
                 tiling: Tiling = DEFAULT_TILING, **kwargs: Any) -> None:
        super().__init__(alpha, detach_targets, **kwargs)
        self.kernel = check_kernel(kernel)
        self.tiling = check_tiling(tiling)

    def forward(self, x: Tensor | PairTensor, edge_index: Adj | None = None,
                edge_weight: OptTensor = None, anchor_weight: OptTensor = None,
                batch: Tensor | PairTensor | None = None) -> Tensor:
        """``anchor_weight`` are the :math:`c_i` (default one). ``batch``: each node's graph in a
        PyG ``Batch`` (as PyG's normalisation layers take it), so that the dense affinity graph
        stays within each graph: the same as one call per graph."""
        self._check(x, edge_index, edge_weight, anchor_weight, batch)
        return self._forward(x, edge_index, edge_weight, anchor_weight, batch)

    def _forward(self, x: Tensor | PairTensor, edge_index: Adj | None = None,
                 edge_weight: OptTensor = None, anchor_weight: OptTensor = None,
                 batch: Tensor | PairTensor | None = None) -> Tensor:
        """``forward`` of checked inputs."""
        return split_pair(x)[1] + self._step(x, edge_index, edge_weight, anchor_weight, batch)

    def _check(self, x: object, edge_index: object = None, edge_weight: object = None,
               anchor_weight: object = None, batch: object = None, *,
               sync: bool = False) -> None:
        x_src, x_dst, same_nodes = check_pair(x, sync=sync)
        check_repulsion(x_src, x_dst, same_nodes, edge_index, edge_weight, anchor_weight, batch,
                        ("edge_index", "edge_weight"), sync=sync)

    def _compute(self, x: Tensor | PairTensor, edge_index: Adj | None = None,
                 edge_weight: OptTensor = None, anchor_weight: OptTensor = None,
                 batch: Tensor | PairTensor | None = None, *,
                 need_step: bool, need_energy: bool) -> tuple[Tensor | None, Tensor | None]:
        x_src, x_dst, same_nodes = split_pair(x)
        edge_index, edge_weight, anchor_weight, batch = repulsion_inputs(
            edge_index, edge_weight, anchor_weight, batch, x_dst.dtype)
        # Under an explainer the sparse edges go through propagate, where its edge mask applies
        # (the fused kernels bypass it).
        explained = self.explain and edge_index is not None
        repulsion = uniformity(x_src, x_dst, same_nodes=same_nodes,
                               both_sides=same_nodes and not self.detach_targets,
                               affinity_index=edge_index, affinity_weight=edge_weight,
                               anchor_weight=anchor_weight,
                               kernel=self.kernel, need_step=need_step,
                               need_energy=need_energy, tiling=self.tiling,
                               batch=batch,
                               aggregate=self.weighted_sum if explained else None)
        return repulsion.grad, repulsion.energy
