"""Alignment: one gradient step on the augmentation graph's Laplacian energy (GCN propagation)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.typing import Adj, OptTensor, PairTensor
from torch_geometric.utils import contains_self_loops, is_sparse, is_torch_sparse_tensor, scatter

from mp_contrastive._validation import check_features, has_values, require, value_checks_skipped
from mp_contrastive.nn.functional._inputs import (
    _sparse_values,
    as_edge_index,
    check_adjacency,
    check_pair,
)
from mp_contrastive.nn.step_conv import StepConv

__all__ = ["AlignmentConv"]


class AlignmentConv(StepConv):
    r"""The alignment update of contrastive learning (paper eq. 4-5): one gradient step of size
    :math:`\alpha` on the Laplacian energy of the augmentation graph

    .. math::
        E(H) = \mathrm{tr}(H^\top L H) = \tfrac{1}{2} \sum_{i,j} A_{ij}
        \Big\| \tfrac{H_i}{\sqrt{d_i}} - \tfrac{H_j}{\sqrt{d_j}} \Big\|^2,
        \qquad L = I - \bar{A},\ \bar{A} = D^{-1/2} A D^{-1/2}.

    It has two forms:

    * **the gradient-step form** (``detach_targets=False``, the default): both ends of every edge
      move, and the output is

      .. math::
          H' = H - \alpha \nabla E(H) = (1 - 2\alpha) H + \alpha (\bar{A} + \bar{A}^\top) H.

      On an undirected graph with symmetric weights its *output* at :math:`\alpha = 1/2` equals
      GCN's propagation :math:`\bar{A} H`, but its gradient w.r.t. ``edge_weight`` does not (each
      weight enters through :math:`\bar{A}` and :math:`\bar{A}^\top`), and on a directed or
      asymmetrically weighted graph its output differs too.
    * **the GCN form** (``detach_targets=True``): the neighbours are constants and the output is

      .. math::
          H' = (1 - \alpha) H + \alpha \bar{A} H,

      computed as written (not as :math:`H - \alpha (H - \bar{A} H)`). At :math:`\alpha = 1` it is
      exactly :math:`\bar{A} H`, so ``AlignmentConv(alpha=1.0, detach_targets=True,
      add_self_loops=True)`` is ``GCNConv``'s propagation (``GCNConv`` with an identity weight and
      no bias) on any graph: same output and same gradients w.r.t. ``x`` and ``edge_weight``,
      with the ``flow``, ``cached``, ``decomposed_layers`` and static-graph (3-D ``x``) conventions
      of ``GCNConv``.

    Input conventions (as ``GCNConv``'s): ``edge_index`` is a ``[2, num_edges]`` tensor, or a
    sparse ``adj_t`` (rows = targets): torch's COO and CSR layouts are normalised as ``GCNConv``
    normalises them, and a CSC ``adj_t`` (which ``gcn_norm`` rejects) is converted to an
    ``edge_index`` first. These layouts are tested against ``GCNConv``. A ``torch_sparse.SparseTensor``
    ``adj_t`` takes the same code path (``gcn_norm``'s ``SparseTensor`` branch) but is only tested
    where the optional ``torch_sparse`` extra is installed. As in ``GCNConv``, an ``edge_index``
    with a self loop keeps its weight (``add_remaining_self_loops``) while a sparse ``adj_t`` gets
    one added to it. Gradients w.r.t. the weights need the ``edge_index`` form (torch cannot
    differentiate through the coalescing of a sparse ``adj_t``'s values, in ``GCNConv`` either).
    ``x`` may be ``[batch, num_nodes, features]`` on a static graph: the step is
    linear in ``x``, so the batch is folded into the features. Negative edge weights need
    ``normalize=False`` (:math:`D^{-1/2}` of a signed degree is undefined).

    Args:
        alpha (float): step size :math:`\alpha` (default ``0.5``).
        detach_targets (bool): stop-gradient on the neighbours: the GCN form (default ``False``).
        normalize (bool): apply :math:`D^{-1/2} A D^{-1/2}` to the edge weights (PyG's ``gcn_norm``).
            Set ``False`` when ``edge_weight`` is already normalised. (default ``True``)
        add_self_loops (bool): add self loops before normalising, as ``GCNConv`` does.
            Needs ``normalize=True``. (default ``False``: the augmentation graph has none)
        cached (bool): cache :math:`\bar{A}` on the first call and reuse it, as ``GCNConv(cached=
            True)`` does (transductive use, one fixed graph; :meth:`reset_parameters` clears it).
            Only with ``normalize=True``. (default ``False``)
        **kwargs: ``MessagePassing`` arguments (``flow``, ``decomposed_layers``, ...).

    A bipartite pair ``x = (x_src, x_dst)`` (PyG's convention, what ``to_hetero`` and layer-wise
    sampling pass) takes the GCN form (``detach_targets=True``, no self loops): ``x_dst`` moves
    towards :math:`\bar{A} x_{src}`, with :math:`\bar{A}_{ij} = w_{ij} / \sqrt{d^{out}_j d^{in}_i}`
    for ``normalize=True`` (each end's degree on its own side; on a symmetric graph of one node set
    this is ``gcn_norm`` without self loops). Other settings raise a ``ValueError`` naming the
    form that works.

    Shapes:
        - **input:** node features :math:`(|V|, F)` or :math:`(B, |V|, F)` or a pair
          :math:`((|V_s|, F), (|V_t|, F))`, edge indices
          :math:`(2, |E|)` or a sparse ``adj_t`` :math:`(|V|, |V|)`, edge weights :math:`(|E|)`
          *(optional)*
        - **output:** node features of the input's shape
    """

    supports_flow = True
    _cached_adj: tuple[Adj, OptTensor] | None

    def __init__(self, alpha: float = 0.5, detach_targets: bool = False, normalize: bool = True,
                 add_self_loops: bool = False, cached: bool = False, **kwargs: Any) -> None:
        super().__init__(alpha, detach_targets, **kwargs)
        if add_self_loops and not normalize:
            raise ValueError("'add_self_loops=True' needs 'normalize=True' (as in GCNConv, self "
                             "loops are added by the normalisation)")
        self.normalize = bool(normalize)
        self.add_self_loops = bool(add_self_loops)
        self.cached = bool(cached)
        self._cached_adj = None

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self._cached_adj = None

    def forward(self, x: Tensor | PairTensor, edge_index: Adj,
                edge_weight: OptTensor = None) -> Tensor:
        self._check(x, edge_index, edge_weight)
        return self._forward(x, edge_index, edge_weight)

    def _forward(self, x: Tensor | PairTensor, edge_index: Adj,
                 edge_weight: OptTensor = None) -> Tensor:
        """``forward`` of checked inputs."""
        if isinstance(x, (tuple, list)):
            x_src, x_dst = x
            smoothed = self._bipartite(x_src, x_dst, edge_index, edge_weight)
            return smoothed if self.alpha == 1.0 else \
                torch.add(self.alpha * smoothed, x_dst, alpha=1.0 - self.alpha)
        x2, shape = self._fold(x)
        # The output is formed directly, not as x + step: at alpha = 1 (detached) it is exactly
        # A x, and at alpha = 1/2 exactly (A + A^T) x / 2, without an x - x rounding.
        if self.detach_targets:
            smoothed = self._smoothed(edge_index, edge_weight, x2)
            out = smoothed if self.alpha == 1.0 else \
                torch.add(self.alpha * smoothed, x2, alpha=1.0 - self.alpha)
        else:
            adj, weight = self._normalized_adjacency(edge_index, edge_weight, x2.size(0), x2)
            smoothed = self._propagate(adj, weight, x2)
            both = smoothed + self._propagate(self._transpose(adj), weight, x2)
            out = self.alpha * both if self.alpha == 0.5 else \
                torch.add(self.alpha * both, x2, alpha=1.0 - 2.0 * self.alpha)
        return self._unfold(out, shape)

    def _check(self, x: object, edge_index: object, edge_weight: object = None, *,
               sync: bool = False) -> None:
        if isinstance(x, (tuple, list)):
            x_src, x_dst, _ = check_pair(x, sync=sync)
            self._check_pair_settings()
            num_src, num_dst = x_src.size(0), x_dst.size(0)
        else:
            x_dst = self._check_x(x, sync=sync)
            num_src = num_dst = x_dst.size(-2)
        self._check_graph(edge_index, edge_weight, num_src, num_dst, x_dst, sync=sync)

    def _check_graph(self, edge_index: object, edge_weight: object, num_src: int, num_dst: int,
                     reference: Tensor, *, sync: bool = False) -> None:
        """The graph and its weights, unless a cached :math:`\bar{A}` replaces them (as in
        ``GCNConv(cached=True)``, the graph is then not read)."""
        if self.normalize and self.cached and self._cached_adj is not None:
            return
        sparse = is_sparse(edge_index)
        if sparse and self.flow == "target_to_source":
            raise ValueError("flow='target_to_source' cannot be used with a sparse 'edge_index' "
                             "(adj_t): pass the transposed matrix, adj_t.t(), with the default flow "
                             "(as for GCNConv)")
        check_adjacency(edge_index, edge_weight, num_src, num_dst, "edge_index", "edge_weight",
                        reference, sync=sync)
        weight = _sparse_values(edge_index) if sparse else edge_weight
        if self.normalize and weight is not None and weight.numel() > 0 \
                and not value_checks_skipped():
            # Finiteness is check_adjacency's (for every layout); the sign depends on normalize.
            lowest = weight.detach().min()
            require(lowest >= 0, "'edge_weight' must be non-negative with normalize=True (the "
                    "normalisation D^-1/2 A D^-1/2 takes square roots of the weighted degrees); "
                    "pass normalize=False with an already normalised signed adjacency",
                    lambda: f", got minimum {float(lowest)}", sync=sync)

    def _compute(self, x: Tensor | PairTensor, edge_index: Adj, edge_weight: OptTensor = None, *,
                 need_step: bool, need_energy: bool) -> tuple[Tensor | None, Tensor | None]:
        if isinstance(x, (tuple, list)):  # the sources are constants: E = |x_dst|^2/2 - x_dst.Ax_src
            x_src, x_dst = x
            smoothed = self._bipartite(x_src, x_dst, edge_index, edge_weight)
            energy = 0.5 * (x_dst * x_dst).sum() - (x_dst * smoothed).sum() if need_energy \
                else None
            return (x_dst - smoothed if need_step else None), energy
        x2, shape = self._fold(x)
        if self.detach_targets:
            adj = weight = None
            smoothed = self._smoothed(edge_index, edge_weight, x2)
        else:
            adj, weight = self._normalized_adjacency(edge_index, edge_weight, x2.size(0), x2)
            smoothed = self._propagate(adj, weight, x2)
        energy = grad = None
        if need_energy:
            energy = (x2 * x2).sum() - (x2 * smoothed).sum()
        if need_step:
            if self.detach_targets:
                grad = x2 - smoothed
            else:
                grad = 2 * x2 - smoothed - self._propagate(self._transpose(adj), weight, x2)
            grad = self._unfold(grad, shape)
        return grad, energy

    def normalized_adjacency(self, edge_index: Adj, edge_weight: OptTensor, num_nodes: int,
                             x: Tensor) -> tuple[Adj, OptTensor]:
        r"""The propagation matrix :math:`\bar{A}`: an ``edge_index`` with weights, or a sparse
        ``adj_t`` (kept sparse for the fused sparse-dense matmul). With ``cached=True`` (and
        ``normalize=True``) the first call's result is stored and returned from then on."""
        self._check_graph(edge_index, edge_weight, num_nodes, num_nodes, x)
        return self._normalized_adjacency(edge_index, edge_weight, num_nodes, x)

    def _normalized_adjacency(self, edge_index: Adj, edge_weight: OptTensor, num_nodes: int,
                              x: Tensor) -> tuple[Adj, OptTensor]:
        if self.normalize and self.cached and self._cached_adj is not None:
            return self._cached_adj
        # gcn_norm has no CSC branch: a CSC adj_t goes the edge_index way.
        keep_sparse = is_sparse(edge_index) and not (
            is_torch_sparse_tensor(edge_index) and edge_index.layout == torch.sparse_csc)
        if keep_sparse:
            adj: Adj = edge_index
            if is_torch_sparse_tensor(adj) and adj.dtype != x.dtype:
                adj = adj.to(x.dtype)
            weight = None
        else:
            adj, weight = as_edge_index(edge_index, edge_weight, x.dtype)
        if self.normalize:
            if keep_sparse:
                adj = gcn_norm(adj, None, num_nodes, add_self_loops=self.add_self_loops,
                               dtype=x.dtype)
                adj = adj[0] if isinstance(adj, tuple) else adj  # torch sparse: (adj_t, None)
            else:
                adj, weight = gcn_norm(adj, weight, num_nodes, add_self_loops=self.add_self_loops,
                                       flow=self.flow, dtype=x.dtype)
            if self.cached:
                self._cached_adj = (adj, weight)
        return adj, weight

    def _check_pair_settings(self) -> None:
        """A bipartite pair ``(x_src, x_dst)``, PyG's convention (``to_hetero``, layer-wise
        sampling): messages flow from ``x_src`` into ``x_dst``, and only ``x_dst`` moves."""
        if not self.detach_targets:
            raise ValueError("AlignmentConv with a bipartite pair (x_src, x_dst): only x_dst moves, "
                             "so use the GCN form, detach_targets=True (the gradient-step form "
                             "moves both ends of every edge, which needs one node set)")
        if self.add_self_loops:
            raise ValueError("AlignmentConv with a bipartite pair (x_src, x_dst) cannot add self "
                             "loops (the two node sets differ): use add_self_loops=False")
        if self.flow != "source_to_target":
            raise ValueError("AlignmentConv with a bipartite pair (x_src, x_dst) needs "
                             "flow='source_to_target' (messages flow into x_dst)")

    def _bipartite(self, x_src: Tensor, x_dst: Tensor, edge_index: Adj,
                   edge_weight: OptTensor) -> Tensor:
        r""":math:`\bar{A} x_{src}` with, for ``normalize=True``, :math:`\bar{A}_{ij} = w_{ij} /
        \sqrt{d^{out}_j d^{in}_i}` (each end's weighted degree on its own side: ``gcn_norm`` on a
        symmetric graph of one node set, without self loops)."""
        if self.cached and self._cached_adj is not None:
            index, weight = self._cached_adj
        else:
            index, weight = as_edge_index(edge_index, edge_weight, x_dst.dtype)
            if self.normalize:
                src, dst = index
                w = torch.ones(index.size(1), dtype=x_dst.dtype, device=index.device) \
                    if weight is None else weight
                out_degree = scatter(w, src, 0, x_src.size(0), reduce="sum")
                in_degree = scatter(w, dst, 0, x_dst.size(0), reduce="sum")
                norm = out_degree.pow(-0.5).masked_fill_(out_degree == 0, 0.0)
                weight = norm[src] * w * in_degree.pow(-0.5).masked_fill_(in_degree == 0, 0.0)[dst]
                if self.cached:
                    self._cached_adj = (index, weight)
        return self.propagate(index, x=(x_src, x_dst), weight=weight,
                              size=(x_src.size(0), x_dst.size(0)))

    # -- message passing -----------------------------------------------------------------------------
    def _smoothed(self, edge_index: Adj, edge_weight: OptTensor, x: Tensor) -> Tensor:
        r""":math:`\bar{A} x` of checked inputs: by :meth:`_loops_apart` where it applies, else
        through ``gcn_norm``'s per-edge weights. It applies to a plain ``edge_index`` with
        ``normalize=True``, nothing cached, and, with ``add_self_loops=True``, no self loop in the
        graph (``add_remaining_self_loops`` would keep its weight and drop duplicates; that rule
        stays ``gcn_norm``'s). ``torch.compile`` takes the ``gcn_norm`` path: the self-loop test is
        data-dependent control flow, which a full graph cannot hold."""
        if self.normalize and not self.cached and not is_sparse(edge_index) \
                and not torch.compiler.is_compiling() \
                and not (self.add_self_loops and _has_self_loops(edge_index)):
            return self._loops_apart(edge_index, edge_weight, x)
        adj, weight = self._normalized_adjacency(edge_index, edge_weight, x.size(0), x)
        return self._propagate(adj, weight, x)

    def _loops_apart(self, edge_index: Tensor, edge_weight: OptTensor, x: Tensor) -> Tensor:
        r""":math:`\bar{A} x` on a graph without self loops, bitwise equal to ``gcn_norm`` and
        ``propagate`` on the CPU (a GPU's atomic sums are not deterministic on either path): the
        self loops' messages are added as one row scaling of ``x`` after the sum over the edges,
        instead of being appended to the edge list. ``gcn_norm`` appends them (a boolean mask and
        a copy of the edge list) and the propagation then gathers ``x`` once per loop: at Cora's
        size this way saves about a sixth of ``GCNConv``'s hidden-layer forward (``python -m
        benchmarks.layer_overhead``). The arithmetic is ``gcn_norm``'s, in its order: degrees
        summed over the edges and then the loop's weight 1, each edge's weight
        :math:`d_j^{-1/2} w_{ji} d_i^{-1/2}`, and each node's loop message added after its edges'
        (where ``gcn_norm`` puts the loops: at the end of the list)."""
        row, col = edge_index
        target = col if self.flow == "source_to_target" else row
        weight = torch.ones(target.numel(), dtype=x.dtype, device=x.device) \
            if edge_weight is None else edge_weight.to(x.dtype)
        degree = scatter(weight, target, 0, x.size(0), reduce="sum")
        if self.add_self_loops:
            degree = degree + 1.0
        scale = degree.pow(-0.5)
        scale = scale.masked_fill_(scale == float("inf"), 0.0)
        summed = self.propagate(edge_index, x=x, weight=scale[row] * weight * scale[col])
        if not self.add_self_loops:
            return summed
        return summed + (scale * scale).unsqueeze(-1) * x  # the loop's weight 1: an exact no-op

    def _propagate(self, adj: Adj, weight: OptTensor, x: Tensor) -> Tensor:
        r""":math:`\bar{A} x` by ``propagate`` on the plain ``x`` tensor, so that ``flow`` and
        ``decomposed_layers`` apply as in any PyG layer."""
        if is_sparse(adj):
            return self.propagate(adj, x=x, weight=None)
        return self.propagate(adj, x=x, weight=weight)

    @staticmethod
    def _transpose(adj: Adj) -> Adj:
        return adj.t() if is_sparse(adj) else adj.flip(0)

    @staticmethod
    def _check_x(x: object, *, sync: bool = False) -> Tensor:
        """``x``: ``[num_nodes, features]`` or (a static graph) ``[batch, num_nodes, features]``."""
        if isinstance(x, Tensor) and x.dim() == 3:
            check_features(x.flatten(0, 1), sync=sync)  # a view: no copy of x
            return x
        if isinstance(x, Tensor) and x.dim() != 2:
            raise ValueError(f"'x' must have shape [num_nodes, num_features] or (a static graph) "
                             f"[batch, num_nodes, num_features], got shape {tuple(x.shape)}")
        return check_features(x, sync=sync)

    @staticmethod
    def _fold(x: Tensor) -> tuple[Tensor, tuple[int, ...] | None]:
        """A static-graph batch ``[B, N, F]`` as ``[N, B * F]`` (the step is linear in ``x``)."""
        if x.dim() == 3:
            shape = tuple(x.shape)
            return x.transpose(0, 1).reshape(shape[1], -1), shape
        return x, None

    @staticmethod
    def _unfold(out: Tensor, shape: tuple[int, ...] | None) -> Tensor:
        if shape is None:
            return out
        return out.reshape(shape[1], shape[0], shape[2]).transpose(0, 1)


def _has_self_loops(edge_index: Tensor) -> bool:
    """Whether a checked ``edge_index`` has a self loop: one read of the graph at every call (a
    host sync on a GPU, as ``gcn_norm``'s mask). Not remembered like the range check: it selects
    the computation, so a write the version counter misses (``.data[...]``, NumPy) would give a
    wrong output instead of skipping a check. A ``meta`` tensor has no values: no loop is
    assumed (the output's shape is the same either way)."""
    return has_values(edge_index) and contains_self_loops(edge_index)
