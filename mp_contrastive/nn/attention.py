"""Attention alignment: alignment on an attention-reweighted augmentation graph (GAT / AGNN)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.typing import Adj, OptTensor, PairTensor
from torch_geometric.utils import scatter

from mp_contrastive._validation import check_choice, check_nonnegative
from mp_contrastive.nn.functional._attention import (
    NORMALIZATIONS,
    SCORES,
    AttentionSpec,
    _attention_weights,
    _bipartite_attention_weights,
    check_attention_inputs,
)
from mp_contrastive.nn.functional._inputs import as_edge_index, check_adjacency, check_pair
from mp_contrastive.nn.functional._tiling import DEFAULT_TILING, Tiling, check_tiling
from mp_contrastive.nn.step_conv import StepConv

__all__ = ["AttentionAlignmentConv"]


class AttentionAlignmentConv(StepConv):
    r"""Attention alignment (paper eq. 14-16): one gradient step of size :math:`\alpha` on

    .. math::
        E(H) = \tfrac{1}{2} \sum_i \sum_{j \in \mathrm{pos}(i)} w_{ij} \| H_i - H_j \|^2,

    the Laplacian energy of the attention graph :math:`W`, whose weights are computed from the
    features and then detached (they are loss coefficients; ``detach_attention=False`` lets
    gradients flow through them, as in GAT/AGNN layers). With ``detach_targets=True`` the step is
    :math:`H - \alpha (D_W - W) H` (:math:`D_W` = row sums); for row-stochastic :math:`W` it is
    :math:`(1 - \alpha) H + \alpha W H`, and :math:`\alpha = 1` gives GAT/AGNN propagation
    :math:`W H`. Without detaching, the step adds the transposed term
    :math:`-\alpha (D_{W^\top} - W^\top) H`.

    The score of an edge is :math:`s_{ij} = \beta\, q_i \cdot q_j` with :math:`q` the attention
    features (``attention_x``, default ``x``; unit-normalised first when ``score="cosine"``).
    With base weights :math:`b_{ij}` (``edge_weight``; default :math:`1/\deg(i)`, i.e.
    :math:`\bar{A}` for a batch of views), the three normalisations are:

    * ``"negatives"`` (the paper): :math:`w_{ij} = b_{ij}\, e^{s_{ij}} /
      \mathrm{mean}_{k \in \mathrm{neg}(i)} e^{s_{ik}}`, negatives = every node that is neither
      ``i`` nor a positive of ``i`` (dense), or the sources of ``affinity_index`` that are not. The
      paper writes a *sum* over negatives; we divide by the mean (the sum over
      :math:`|\mathrm{neg}(i)|`), else the alignment term would shrink by :math:`1/(2B)` against
      uniformity. With it, :math:`\beta = 0` gives :math:`w = b`.
    * ``"positives"`` (the official code, ``GRAPH-ATTENTION/models/losses.py``):
      :math:`w_{ij} = b_{ij}\, e^{s_{ij}} / \mathrm{mean}_{(k, l) \in E} e^{s_{kl}}`, a softmax over
      all positive pairs of the batch scaled to mean one. The official code uses ``score="cosine"``
      on backbone features (before the projector) and :math:`\beta = 1`.
    * ``"neighbors"`` (GAT / AGNN): :math:`w_{ij} = \mathrm{softmax}_{j \in \mathrm{pos}(i)}
      (s_{ij} + \log b_{ij})`. With ``score="cosine"``, ``add_self_loops=True``,
      ``detach_targets=True`` and :math:`\alpha = 1` this is PyG's ``AGNNConv`` with the same
      :math:`\beta`: the same output and, with ``detach_attention=False``, the same gradients
      (``learn_beta=True`` is ``AGNNConv(requires_grad=True)``).

    All three give :math:`w = b` at :math:`\beta = 0`, so attention alignment then reduces to plain
    alignment (and :class:`~mp_contrastive.losses.AttentionSimCLRLoss` to SimCLR).

    Args:
        alpha (float): step size (default ``0.5``).
        beta (float): attention sharpness :math:`\beta \ge 0` (default ``1.0``).
        normalize (str): ``"negatives"``, ``"positives"`` or ``"neighbors"``.
        score (str): ``"dot"`` (:math:`q_i \cdot q_j`, the paper on :math:`H`) or ``"cosine"``.
        detach_targets (bool): stop-gradient on the neighbours (default ``False``).
        add_self_loops (bool): add self loops (weight 1 before normalisation), as ``AGNNConv``.
        detach_attention (bool): treat the attention weights as constants (default ``True``: the
            loss-coefficient view of the paper). ``False``: differentiate through them.
        learn_beta (bool): make :math:`\beta` a trainable parameter (initialised to ``beta``),
            as ``AGNNConv(requires_grad=True)``; needs ``detach_attention=False``.
        tiling (Tiling): tiles of the dense negatives' log-sum-exp (default
            :data:`~mp_contrastive.nn.functional.DEFAULT_TILING`).
    """

    def __init__(self, alpha: float = 0.5, beta: float = 1.0, normalize: str = "negatives",
                 score: str = "dot", detach_targets: bool = False, add_self_loops: bool = False,
                 detach_attention: bool = True, learn_beta: bool = False,
                 tiling: Tiling = DEFAULT_TILING, **kwargs: Any) -> None:
        super().__init__(alpha, detach_targets, **kwargs)
        self.initial_beta = check_nonnegative(beta, "beta")
        self.normalize = check_choice(normalize, "normalize", NORMALIZATIONS)
        self.score = check_choice(score, "score", SCORES)
        self.add_self_loops = bool(add_self_loops)
        self.detach_attention = bool(detach_attention)
        self.learn_beta = bool(learn_beta)
        if self.learn_beta and self.detach_attention:
            raise ValueError("'learn_beta=True' needs 'detach_attention=False' (beta gets its "
                             "gradient through the attention weights)")
        self.tiling = check_tiling(tiling)
        self.beta: float | Parameter = (Parameter(torch.tensor([self.initial_beta]))
                                        if self.learn_beta else self.initial_beta)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if isinstance(self.beta, Parameter):
            with torch.no_grad():
                self.beta.fill_(self.initial_beta)

    @property
    def spec(self) -> AttentionSpec:
        """This operator's attention as an :class:`~mp_contrastive.nn.functional.AttentionSpec`
        (the current :math:`\beta`, as a number), e.g. for ``ContrastiveConv(attention=...)``."""
        beta = float(self.beta.detach()) if isinstance(self.beta, Tensor) else self.beta
        return AttentionSpec(beta, self.normalize, self.score, self.add_self_loops)

    def forward(self, x: Tensor | PairTensor, edge_index: Adj, edge_weight: OptTensor = None,
                affinity_index: Adj | None = None, attention_x: OptTensor = None,
                return_attention_weights: bool | None = None
                ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        """``return_attention_weights=True`` also returns ``(edge_index, weights)`` like
        ``GATConv`` (the edge index includes the added self loops, if any). ``x`` may be PyG's
        bipartite pair ``(x_src, x_dst)`` for the GAT / AGNN form (``normalize="neighbors"``,
        ``detach_targets=True``): ``x_dst`` moves towards the attention-weighted ``x_src``."""
        self._check(x, edge_index, edge_weight, affinity_index, attention_x)
        return self._forward(x, edge_index, edge_weight, affinity_index, attention_x,
                             return_attention_weights)

    def _forward(self, x: Tensor | PairTensor, edge_index: Adj, edge_weight: OptTensor = None,
                 affinity_index: Adj | None = None, attention_x: OptTensor = None,
                 return_attention_weights: bool | None = None
                 ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        """``forward`` of checked inputs."""
        x_src, x_dst, *attention = self._attention_graph(x, edge_index, edge_weight,
                                                         affinity_index, attention_x)
        grad, _ = self._descend(x_src, x_dst, *attention, need_step=True, need_energy=False)
        assert grad is not None
        out = x_dst - self.alpha * grad
        return (out, tuple(attention)) if return_attention_weights else out

    def attention(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None,
                  affinity_index: Adj | None = None,
                  attention_x: OptTensor = None) -> tuple[Tensor, Tensor]:
        """The attention graph ``(edge_index, weights)`` over the positive pairs (detached unless
        ``detach_attention=False``)."""
        check_attention_inputs(x, edge_index, edge_weight, affinity_index, attention_x,
                               sync=False)
        return self._attention(x, edge_index, edge_weight, affinity_index, attention_x)

    def _attention(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None,
                   affinity_index: Adj | None = None,
                   attention_x: OptTensor = None) -> tuple[Tensor, Tensor]:
        """:meth:`attention` of checked inputs."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_attention):
            return _attention_weights(x, edge_index, edge_weight, beta=self.beta,
                                      normalize=self.normalize, score=self.score,
                                      add_self_loops=self.add_self_loops,
                                      affinity_index=affinity_index, attention_x=attention_x,
                                      tiling=self.tiling)

    def _check(self, x: object, edge_index: object, edge_weight: object = None,
               affinity_index: object = None, attention_x: object = None, *,
               sync: bool = False) -> None:
        if not isinstance(x, (tuple, list)):
            check_attention_inputs(x, edge_index, edge_weight, affinity_index, attention_x,
                                   sync=sync)
            return
        x_src, x_dst, _ = check_pair(x, sync=sync)
        if self.normalize != "neighbors" or not self.detach_targets or self.add_self_loops:
            raise ValueError("AttentionAlignmentConv with a bipartite pair (x_src, x_dst) is the "
                             "GAT / AGNN form: use normalize='neighbors', detach_targets=True and "
                             "add_self_loops=False (the other normalisations compare a node with "
                             "the rest of its own node set)")
        if affinity_index is not None or attention_x is not None:
            raise ValueError("AttentionAlignmentConv with a bipartite pair takes no "
                             "affinity_index or attention_x")
        check_adjacency(edge_index, edge_weight, x_src.size(0), x_dst.size(0), "edge_index",
                        "edge_weight", x_dst, nonnegative=True, sync=sync)

    def _compute(self, x: Tensor | PairTensor, edge_index: Adj, edge_weight: OptTensor = None,
                 affinity_index: Adj | None = None, attention_x: OptTensor = None, *,
                 need_step: bool, need_energy: bool) -> tuple[Tensor | None, Tensor | None]:
        return self._descend(*self._attention_graph(x, edge_index, edge_weight, affinity_index,
                                                    attention_x),
                             need_step=need_step, need_energy=need_energy)

    def _attention_graph(self, x: Tensor | PairTensor, edge_index: Adj, edge_weight: OptTensor,
                         affinity_index: Adj | None, attention_x: OptTensor
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x_src, x_dst, edge_index, weights)``: the attention graph of one node set (``x_src``
        is ``x_dst``) or of a bipartite pair."""
        if isinstance(x, (tuple, list)):
            return self._bipartite(x, edge_index, edge_weight, affinity_index, attention_x)
        return x, x, *self._attention(x, edge_index, edge_weight, affinity_index, attention_x)

    def _bipartite(self, x: tuple[Tensor, Tensor] | list[Tensor], edge_index: Adj,
                   edge_weight: OptTensor, affinity_index: Adj | None,
                   attention_x: OptTensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x_src, x_dst, edge_index, weights)`` of a checked bipartite pair."""
        x_src, x_dst = x
        index, base = as_edge_index(edge_index, edge_weight, x_dst.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_attention):
            weight = _bipartite_attention_weights(x_src, x_dst, index, base, beta=self.beta,
                                                 score=self.score)
        return x_src, x_dst, index, weight

    def _descend(self, x_src: Tensor, x_dst: Tensor, edge_index: Tensor, weight: Tensor, *,
                 need_step: bool, need_energy: bool) -> tuple[Tensor | None, Tensor | None]:
        r"""Gradient w.r.t. ``x_dst`` and value of the Laplacian energy of the attention graph,
        :math:`\tfrac12 \sum_e w_e \|x^{dst}_i - x^{src}_j\|^2`. On one node set without
        ``detach_targets`` the sources move too; on a bipartite pair only ``x_dst`` does."""
        src, dst = edge_index
        grad = energy = None
        if need_energy:
            energy = 0.5 * (weight * (x_dst.index_select(0, dst) - x_src.index_select(0, src))
                            .pow(2).sum(-1)).sum()
        if need_step:
            num_dst = x_dst.size(0)
            out_degree = scatter(weight, dst, 0, num_dst, reduce="sum")
            grad = out_degree.unsqueeze(1) * x_dst - self.weighted_sum(edge_index, weight, x_src,
                                                                       num_dst)
            if x_src is x_dst and not self.detach_targets:
                in_degree = scatter(weight, src, 0, num_dst, reduce="sum")
                grad = grad + in_degree.unsqueeze(1) * x_dst - self.weighted_sum(
                    edge_index.flip(0), weight, x_dst, num_dst)
        return grad, energy

    def _repr_args(self) -> list[str]:
        args = super()._repr_args()
        if self.learn_beta:  # beta is the parameter's current value; show the initial one too
            args.append(f"initial_beta={self.initial_beta}")
        return args
