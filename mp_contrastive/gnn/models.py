r"""GNN layers built from the contrastive operators, and node classifiers that use them or PyG's own
layers under one protocol.

* :class:`AlignmentGCNConv`: a linear map, then one :class:`~mp_contrastive.nn.AlignmentConv` step.
  With :math:`\alpha = 1`, stop-gradient targets and self loops the step is exactly GCN's
  propagation :math:`\hat{A} = \tilde{D}^{-1/2} (A + I) \tilde{D}^{-1/2}`, on *any* graph (the
  undetached :math:`\alpha = 1/2` form equals it only on symmetric graphs, and GRACE's views drop the
  two directions of an edge independently), so the layer equals ``GCNConv`` given the same weights.
* :class:`AttentionAlignmentGATConv`: a linear map to ``heads`` channels groups, then one
  :class:`~mp_contrastive.nn.AttentionAlignmentConv` step per head (neighbour softmax, cosine
  score, self loops, :math:`\alpha = 1`): each head is PyG's ``AGNNConv`` propagation with a fixed
  :math:`\beta`. It has GAT's architecture (heads, concatenation or averaging, attention dropout)
  but the operator's attention: the score is :math:`\beta \cos(W x_i, W x_j)`, not GAT's learned
  :math:`\mathrm{LeakyReLU}(a^\top [W x_i \| W x_j])`, and the weights are detached (loss
  coefficients, no gradient through them). It equals ``GATConv`` exactly when both attentions are
  uniform (:math:`\beta = 0` here, zero attention vectors there).
* :class:`NodeClassifier`: a stack of such layers (or PyG's ``GCNConv`` / ``GATConv``), optionally
  with JumpingKnowledge over layers through :class:`~mp_contrastive.memory.StageAggregation`
  (PyG's :class:`~torch_geometric.nn.models.JumpingKnowledge` for the PyG baselines).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, JumpingKnowledge
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import Adj, OptTensor

from mp_contrastive._validation import (
    check_choice,
    check_features,
    check_positive_int,
    check_rate,
    require_finite,
)
from mp_contrastive.gnn.augment import check_node_features
from mp_contrastive.memory import StageAggregation
from mp_contrastive.nn import AlignmentConv, AttentionAlignmentConv
from mp_contrastive.nn.functional import SCORES
from mp_contrastive.nn.functional._inputs import check_adjacency

__all__ = [
    "feature_dropout",
    "LAYERS",
    "JK_MODES",
    "AlignmentGCNConv",
    "AttentionAlignmentGATConv",
    "NodeClassifier",
]

#: Layer kinds of :class:`NodeClassifier`: ours and the PyG baseline each is compared with.
LAYERS = ("gcn", "pyg_gcn", "attention", "pyg_gat")
#: JumpingKnowledge modes: all of :class:`StageAggregation`'s for our layers; PyG's
#: ``JumpingKnowledge`` has ``"max"`` and ``"cat"`` of these.
JK_MODES = ("sum", "mean", "max", "decay", "cat")


class AlignmentGCNConv(nn.Module):
    r"""The graph convolutional operator (Kipf & Welling) as a linear map followed by one alignment
    step (:class:`~mp_contrastive.nn.AlignmentConv` with :math:`\alpha = 1`, ``detach_targets=True``,
    ``add_self_loops=True``):

    .. math::
        X' = \hat{D}^{-1/2} \hat{A} \hat{D}^{-1/2} X \Theta + b, \qquad \hat{A} = A + I,

    i.e. :math:`H - \alpha (H - \bar{A} H)` at :math:`\alpha = 1` for :math:`H = X \Theta`. Weights
    are initialised as ``GCNConv``'s (Glorot, zero bias, created in the same order), so the same seed
    gives the same initial layer.

    ``x`` may be a sparse CSR matrix (bag-of-words features): the linear map is then a sparse-dense
    product.

    Args:
        in_channels (int): input features. out_channels (int): output features.
        bias (bool): add a learnable bias (default ``True``).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.lin = Linear(in_channels, out_channels, bias=False, weight_initializer="glorot")
        self.propagation = AlignmentConv(alpha=1.0, detach_targets=True, add_self_loops=True)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None) -> Tensor:
        # One boundary: x's type and shape are checked here; its finiteness once, on lin(x): a
        # NaN or Inf in x makes its row of lin(x) non-finite (Inf * 0 is NaN), and that check
        # reads out_channels columns where one on x would read in_channels (1,433 on Cora:
        # 1.3 ms, a fifth of GCNConv's forward, python -m benchmarks.layer_overhead). lin(x)'s
        # type and shape follow from x's. Then the graph, and the propagation runs unchecked.
        x = check_node_features(x, finite=False)
        h = self.lin(x)
        require_finite(h, "x", sync=False)
        self.propagation._check_graph(edge_index, edge_weight, x.size(0), x.size(0), h)
        return self._propagate(h, edge_index, edge_weight)

    def _forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None) -> Tensor:
        """``forward`` of checked inputs (a model that checked them once, for every layer)."""
        return self._propagate(self.lin(x), edge_index, edge_weight)

    def _propagate(self, h: Tensor, edge_index: Adj, edge_weight: OptTensor) -> Tensor:
        out = self.propagation._forward(h, edge_index, edge_weight)
        return out if self.bias is None else out + self.bias

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels})"


class AttentionAlignmentGATConv(nn.Module):
    r"""A multi-head attention layer from the attention-alignment operator: per head :math:`k`,

    .. math::
        x'^{(k)}_i = \sum_{j \in \mathcal{N}(i) \cup \{i\}} w^{(k)}_{ij}\, \Theta^{(k)} x_j, \qquad
        w^{(k)}_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i) \cup \{i\}}
        \big(\beta \cos(\Theta^{(k)} x_i, \Theta^{(k)} x_j)\big),

    one :class:`~mp_contrastive.nn.AttentionAlignmentConv` step (``normalize="neighbors"``,
    :math:`\alpha = 1`, ``detach_targets=True``, ``add_self_loops=True``; ``score="dot"`` uses
    :math:`\beta\, \Theta x_i \cdot \Theta x_j` instead). Heads are concatenated or averaged, then a
    bias is added, as in ``GATConv``. The attention weights are detached, as they are in the
    operator (loss coefficients).

    Attention dropout is ``GATConv``'s: during training each normalised weight is zeroed with
    probability ``dropout`` and the rest are scaled by :math:`1/(1-p)`; the dropped attention graph
    is then propagated by an :class:`~mp_contrastive.nn.AlignmentConv` step (:math:`\alpha = 1`,
    stop-gradient targets, weights as given), which is :math:`W H` for any weights :math:`W`.

    Args:
        in_channels (int): input features. out_channels (int): features per head.
        heads (int): attention heads (default ``1``).
        concat (bool): concatenate the heads (``True``) or average them.
        beta (float): attention sharpness :math:`\beta \ge 0` (default ``1.0``; ``0`` = mean over
            the neighbourhood).
        score (str): ``"cosine"`` (AGNN, default) or ``"dot"``.
        dropout (float): attention dropout (default ``0``).
        bias (bool): add a learnable bias (default ``True``).
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, concat: bool = True,
                 beta: float = 1.0, score: str = "cosine", dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.heads = check_positive_int(heads, "heads")
        self.concat = bool(concat)
        self.dropout = check_rate(dropout, "dropout")
        check_choice(score, "score", SCORES)
        self.lin = Linear(in_channels, heads * out_channels, bias=False, weight_initializer="glorot")
        self.propagation = AttentionAlignmentConv(alpha=1.0, beta=beta, normalize="neighbors",
                                                  score=score, detach_targets=True,
                                                  add_self_loops=True)
        # W H for a given (dropped-out) attention graph W: one alignment step with alpha = 1.
        self.weighted = AlignmentConv(alpha=1.0, detach_targets=True, normalize=False)
        size = heads * out_channels if concat else out_channels
        self.bias = nn.Parameter(torch.empty(size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        # Checked once, here: x's type and shape, the graph, and (for x's finiteness, as in
        # AlignmentGCNConv) lin(x); the operators below run unchecked on the per-head copies.
        x = check_features(x, finite=False)
        check_adjacency(edge_index, None, x.size(0), x.size(0), "edge_index", "edge_weight", x,
                        sync=False)
        h = self.lin(x)
        require_finite(h, "x", sync=False)
        return self._heads(h, edge_index)

    def _forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """``forward`` of checked inputs (a model that checked them once, for every layer)."""
        return self._heads(self.lin(x), edge_index)

    def _heads(self, h: Tensor, edge_index: Tensor) -> Tensor:
        num_nodes, heads = h.size(0), self.heads
        # All heads in one operator call: head k's nodes are rows k N .. (k+1) N - 1 of a graph
        # holding one copy of edge_index per head. The copies share no node, so each head's
        # attention and propagation are exactly its own; one pass instead of one per head.
        h = h.view(num_nodes, heads, self.out_channels).transpose(0, 1).reshape(
            heads * num_nodes, self.out_channels)
        if heads > 1:
            offsets = torch.arange(heads, device=edge_index.device).mul_(num_nodes)
            edge_index = (edge_index.unsqueeze(1) + offsets.view(1, heads, 1)).flatten(1)
        if self.training and self.dropout > 0:
            edges, weight = self.propagation._attention(h, edge_index)
            weight = F.dropout(weight, p=self.dropout, training=True)
            out = self.weighted._forward(h, edges, weight)
        else:
            out = self.propagation._forward(h, edge_index)
        out = out.view(heads, num_nodes, self.out_channels).transpose(0, 1)
        out = out.flatten(1) if self.concat else out.mean(dim=1)
        return out if self.bias is None else out + self.bias

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"heads={self.heads}, beta={self.propagation.beta})")


def feature_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    r"""``F.dropout`` that draws random numbers only for the non-zero entries of a mostly-zero
    ``x`` (bag-of-words node features: 1.3% non-zeros on Cora). Dropping a zero changes nothing,
    so the output has exactly dropout's distribution; but the draws, which dominate a GCN epoch on
    Cora (44 of 75 ms on one thread), shrink 80-fold. Dense inputs go to ``F.dropout``."""
    if not training or p == 0.0:
        return x
    # Counted first: nonzero() on a dense input would allocate 16 bytes per entry.
    if not x.is_floating_point() or int(torch.count_nonzero(x)) * 4 > x.numel():
        return F.dropout(x, p=p, training=True)
    rows, cols = x.nonzero(as_tuple=True)
    keep = torch.rand(rows.numel(), device=x.device) >= p
    rows, cols = rows[keep], cols[keep]
    out = torch.zeros_like(x)
    out[rows, cols] = x[rows, cols] / (1.0 - p)
    return out


class NodeClassifier(nn.Module):
    r"""A node classifier of ``num_layers`` graph layers under the protocol of Kipf & Welling (GCN)
    and Velickovic et al. (GAT): dropout on each layer's input, ReLU (GCN) or ELU (attention)
    between layers.

    * ``layer="gcn"`` / ``"pyg_gcn"``: :class:`AlignmentGCNConv` / PyG's ``GCNConv``.
    * ``layer="attention"`` / ``"pyg_gat"``: :class:`AttentionAlignmentGATConv` / PyG's ``GATConv``,
      with ``heads`` concatenated heads in the hidden layers and ``out_heads`` averaged heads at the
      output, attention dropout ``attention_dropout``.
    * ``jk`` (JumpingKnowledge): all ``num_layers`` layers map to ``hidden_channels``; their
      activated outputs are aggregated by :class:`~mp_contrastive.memory.StageAggregation`
      (our layers; PyG's ``JumpingKnowledge`` for the PyG layers, ``"max"`` or ``"cat"``) and a
      linear layer classifies. Multi-stage aggregation over layers, the GNN reading of the
      paper's eq. 13.

    Args:
        in_channels (int): input features. hidden_channels (int): hidden features (per head).
        out_channels (int): classes.
        layer (str): one of :data:`LAYERS` (default ``"gcn"``).
        num_layers (int): graph layers (default ``2``).
        dropout (float): dropout on the input of every layer (default ``0.5``).
        heads (int), out_heads (int), attention_dropout (float): attention layers only.
        beta (float), score (str): :class:`AttentionAlignmentGATConv` only.
        jk (str, optional): JumpingKnowledge mode, one of :data:`JK_MODES`.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 layer: str = "gcn", num_layers: int = 2, dropout: float = 0.5, heads: int = 8,
                 out_heads: int = 1, attention_dropout: float = 0.6, beta: float = 1.0,
                 score: str = "cosine", jk: str | None = None) -> None:
        super().__init__()
        self.layer = check_choice(layer, "layer", LAYERS)
        self.num_layers = check_positive_int(num_layers, "num_layers")
        self.dropout = check_rate(dropout, "dropout")
        check_positive_int(hidden_channels, "hidden_channels")
        attention = layer in ("attention", "pyg_gat")
        self.activation = F.elu if attention else F.relu
        if jk is not None:
            check_choice(jk, "jk", JK_MODES)
            if layer.startswith("pyg") and jk not in ("max", "cat"):
                raise ValueError(f"'jk' for PyG's layers must be 'max' or 'cat' (PyG's "
                                 f"JumpingKnowledge), got {jk!r}")
        self.jk_mode = jk

        def make(i: int, o: int, last: bool) -> nn.Module:
            if layer == "gcn":
                return AlignmentGCNConv(i, o)
            if layer == "pyg_gcn":
                return GCNConv(i, o)
            h, concat = (out_heads, False) if last else (heads, True)
            if layer == "attention":
                return AttentionAlignmentGATConv(i, o, heads=h, concat=concat, beta=beta,
                                                 score=score, dropout=attention_dropout)
            return GATConv(i, o, heads=h, concat=concat, dropout=attention_dropout)

        width = hidden_channels * (heads if attention else 1)
        self.convs = nn.ModuleList()
        for index in range(num_layers):
            last = index == num_layers - 1 and jk is None
            self.convs.append(make(in_channels if index == 0 else width,
                                   out_channels if last else hidden_channels, last))
        self.jk: nn.Module | None = None
        self.classifier: nn.Module | None = None
        if jk is not None:
            self.jk = (JumpingKnowledge(jk) if layer.startswith("pyg") else StageAggregation(jk))
            self.classifier = Linear(width * (num_layers if jk == "cat" else 1), out_channels)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        # Our layers: x and edge_index are checked once here, not once per layer; x's
        # finiteness on the first layer's output (a NaN or Inf in x spreads into it, and it has
        # hidden_channels columns, not in_channels). PyG's layers check nothing.
        ours = self.layer in ("gcn", "attention")
        if ours:
            x = check_node_features(x, finite=False)
            check_adjacency(edge_index, None, x.size(0), x.size(0), "edge_index", "edge_weight",
                            x, sync=False)
        stages = []
        for index, conv in enumerate(self.convs):
            x = (feature_dropout(x, self.dropout, self.training) if index == 0
                 else F.dropout(x, p=self.dropout, training=self.training))
            if ours:
                x = conv._forward(x, edge_index)
                if index == 0:
                    require_finite(x, "x", sync=False)
            else:
                x = conv(x, edge_index)
            if index < len(self.convs) - 1 or self.jk is not None:
                x = self.activation(x)
                stages.append(x)
        if self.jk is not None:
            assert self.classifier is not None
            x = F.dropout(self.jk(stages), p=self.dropout, training=self.training)
            x = self.classifier(x)
        return x

    def first_layer_parameters(self) -> list[nn.Parameter]:
        """The first graph layer's parameters (Kipf & Welling regularise only those)."""
        return list(self.convs[0].parameters())

    def extra_repr(self) -> str:
        return f"layer='{self.layer}', num_layers={self.num_layers}, jk={self.jk_mode!r}"
