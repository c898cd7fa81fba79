r"""Mini-batch GRACE-style training for graphs past one batch: the memory of a step does not grow
with :math:`N^2`, nor with :math:`N` beyond the graph itself.

Each step takes a batch of nodes with their neighbourhood (a PyG loader, below), draws GRACE's
two augmented views of that subgraph, and applies GRACE's loss
(:class:`~mp_contrastive.gnn.GraphContrastiveLoss`, inter- and intra-view negatives) to the seed
nodes' :math:`2B` projections: over the dense affinity graph for up to
:data:`~mp_contrastive.gnn.grace_loss.AUTO_DENSE_MAX_VIEWS` views, above it over the sparse kNN
affinity graph (each anchor's top-:math:`k` plus :math:`s` importance-weighted draws from the
rest), so that a step costs :math:`O(B\,(k + s))` and holds no :math:`B \times B` matrix.

Why the negatives come from the batch and not from a memory bank of earlier batches: with
lightly's bank (keys from the model itself, :class:`~mp_contrastive.losses.SimCLRLoss` with
``memory_bank_size``, symmetric) GRACE collapsed on Cora in two 1,354-node batches per epoch:
after 30 epochs the projections' mean cosine was 0.9999 and the probe 61.7%, where full-batch
training had 0.08 and 79.5%. The bank's entries are constants, so they push every anchor of a
batch the same way, and nothing spreads the batch itself; the batch's own negatives do (82.5% at
400 epochs in the same batches). The memory-bank losses stay the image examples' tool, with a
moving-average key encoder.

**Loaders.** PyG's ``NeighborLoader`` (seed nodes and a sampled ``num_neighbors`` neighbourhood;
the loss on the seeds) needs ``pyg-lib`` or ``torch-sparse``, neither of which the default install
has (``pyg-lib`` has no PyPI wheel, ``torch-sparse`` builds from source). Without them
(``sampler="subgraph"``, what ``"auto"`` picks then) the batches come from PyG's
``RandomNodeLoader``: the subgraph induced by a random part of the nodes, every node a seed. It
keeps an edge only when both ends fall into the same part, a share of about ``batch_size / N`` of
each node's edges, so it wants large batches on large graphs (PyG's own example,
``ogbn_proteins_deepgcn.py``, uses 40 parts). Both are driven by one permutation of the nodes per
epoch, split into equal shares per rank under DDP.

**DDP.** Under ``torch.distributed`` the model is wrapped in ``DistributedDataParallel`` and each
rank takes its share of the epoch's nodes; each rank's negatives are its own batch's, so a step on
two ranks equals one process's step on the mean of the two batches' losses (tested).
Augmentations draw per-rank random numbers (seed + rank), as the image examples do.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader, RandomNodeLoader
from torch_geometric.utils import to_torch_csr_tensor

from mp_contrastive._validation import check_choice, check_positive_int
from mp_contrastive.distributed import rank_and_world
from mp_contrastive.gnn.augment import SPARSE_FEATURES_BELOW, GraphAugment
from mp_contrastive.gnn.grace_config import GRACEConfig
from mp_contrastive.gnn.grace_loss import (
    AffinitySchedule,
    GraphContrastiveLoss,
    MultiStageAlignment,
)
from mp_contrastive.gnn.grace_model import GRACEEncoder, GRACEModel
from mp_contrastive.gnn.training import linear_probe, seed_everything

__all__ = ["SAMPLERS", "neighbor_sampling_available", "resolve_sampler", "epoch_nodes",
           "node_batches", "embed_nodes", "train_grace_minibatch"]

#: ``"neighbor"`` (PyG's NeighborLoader), ``"subgraph"`` (PyG's RandomNodeLoader) or ``"auto"``.
SAMPLERS = ("auto", "neighbor", "subgraph")
#: A function ``epoch -> batches`` (PyG ``Data`` with ``n_id``, and ``batch_size`` seed nodes
#: first when only those carry the loss).
BatchSource = Callable[[int], Iterable[Data]]


def neighbor_sampling_available() -> bool:
    """Whether PyG's ``NeighborLoader`` can sample here (``pyg-lib`` or ``torch-sparse``)."""
    return any(importlib.util.find_spec(name) is not None for name in ("pyg_lib", "torch_sparse"))


def resolve_sampler(sampler: str) -> str:
    """``"neighbor"`` or ``"subgraph"``; ``"auto"`` is the first when it can run here."""
    check_choice(sampler, "sampler", SAMPLERS)
    if sampler == "auto":
        return "neighbor" if neighbor_sampling_available() else "subgraph"
    if sampler == "neighbor" and not neighbor_sampling_available():
        raise ValueError("sampler='neighbor' uses PyG's NeighborLoader, which needs pyg-lib or "
                         "torch-sparse (pip install torch-sparse, or pyg-lib from "
                         "data.pyg.org); use sampler='subgraph' (RandomNodeLoader) without them")
    return sampler


def epoch_nodes(num_nodes: int, epoch: int, seed: int, rank: int = 0,
                world_size: int = 1) -> Tensor:
    """This rank's share of epoch ``epoch``'s permutation of the nodes (the same permutation on
    every rank, from ``seed`` and ``epoch``; equal shares, so every rank takes as many steps; the
    ``num_nodes % world_size`` nodes left over change from epoch to epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_nodes, generator=generator)
    share = num_nodes // world_size
    return order[rank * share:(rank + 1) * share]


def node_batches(data: Data, nodes: Tensor, batch_size: int, sampler: str,
                 num_neighbors: tuple[int, ...] = (10, 10)) -> Iterable[Data]:
    """Batches of at most ``batch_size`` seed nodes from ``nodes``, in that order: ``NeighborLoader``
    subgraphs (``sampler="neighbor"``) or ``RandomNodeLoader`` induced subgraphs
    (``"subgraph"``). Each batch has ``n_id`` (global node ids; seeds first)."""
    check_positive_int(batch_size, "batch_size")
    if resolve_sampler(sampler) == "neighbor":
        return NeighborLoader(data, num_neighbors=list(num_neighbors), input_nodes=nodes,
                              batch_size=batch_size, shuffle=False)
    with_ids = data
    if "n_id" not in data:  # a shallow copy: the graph's tensors are shared, not copied
        with_ids = copy.copy(data)
        with_ids.n_id = torch.arange(data.num_nodes, device=data.edge_index.device)
    # RandomNodeLoader takes the number of parts; ``sampler`` fixes which nodes form each part.
    parts = max(1, math.ceil(data.num_nodes / batch_size))
    return RandomNodeLoader(with_ids, num_parts=parts, sampler=nodes.tolist())


def seed_count(batch: Data) -> int:
    """The number of nodes that carry the loss: ``batch_size`` seeds (``NeighborLoader``), else
    every node."""
    return int(batch.batch_size) if "batch_size" in batch else batch.num_nodes


@torch.no_grad()
def embed_nodes(model: nn.Module, data: Data) -> Tensor:
    """The encoder's output for every node of ``data`` in one pass over the whole graph, with the
    adjacency as a sparse CSR ``adj_t`` (a fused sparse-dense product: no ``[E, C]`` messages, so
    a million-node graph fits where its edge list of messages would not)."""
    n = data.num_nodes
    with warnings.catch_warnings():  # the CSR layout's "beta" notice
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
        adj_t = to_torch_csr_tensor(data.edge_index.flip(0), size=(n, n))  # rows = targets
        return model(data.x, adj_t)


def _encode_views(model: nn.Module, views: list[GraphAugment], batch: Data,
                  seeds: int, sparse_features: bool = False) -> tuple[Tensor, Tensor]:
    """The seed nodes' encodings in the two views, from one forward pass over the views'
    disjoint union (``DistributedDataParallel`` expects one forward per backward).
    ``sparse_features``: the union's features go in as a CSR matrix (bag-of-words graphs, as the
    full-batch trainer does: the first layer then costs O(nnz), not O(n x features))."""
    n = batch.num_nodes
    (x1, e1), (x2, e2) = (view(batch.x, batch.edge_index) for view in views)
    x = torch.cat([x1, x2])
    if sparse_features:
        with warnings.catch_warnings():  # the CSR layout's "beta" notice
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
            x = x.to_sparse_csr()
    z = model(x, torch.cat([e1, e2 + n], 1))
    return z[:seeds], z[n:n + seeds]


def train_grace_minibatch(config: GRACEConfig, data: Data, seed: int = 0, *,
                          batches: BatchSource | None = None,
                          progress: Callable[[int, float], None] | None = None,
                          evaluate: bool = True,
                          device: torch.device | str | None = None) -> dict[str, Any]:
    r"""Train a GRACE-style model on ``data`` in mini-batches (``config.batch_size`` seed nodes
    drawn by ``config.sampler``; negatives within each batch, by ``config.negatives``) and, with
    ``evaluate``, probe the frozen encoder linearly on the data's split (embeddings of the whole
    graph, :func:`embed_nodes`).

    ``device`` (default: where ``data`` is) is where the model trains: the graph can stay on the
    CPU while each batch moves to the GPU. ``batches(epoch)`` replaces the loader (any iterable of
    PyG mini-batches with ``n_id``). Under
    ``torch.distributed`` each rank trains on its share (module docs). Returns ``losses`` (mean per
    epoch), ``seconds`` (training), ``steps``, ``path`` (the negatives' path of the last batch,
    ``"dense"`` or ``"knn"``), ``model``, ``embeddings`` and the probe's ``test_acc`` /
    ``val_acc``.

    Raises:
        ValueError: ``config.batch_size`` unset, ``variant="reference"`` (its authors' code has no
            mini-batch form), ``eval_every`` (model selection is full-batch only), ``knn_refresh``
            other than 1 (cached edges belong to one batch's nodes), or ``sampler="neighbor"``
            without pyg-lib / torch-sparse.
    """
    if config.batch_size is None:
        raise ValueError("train_grace_minibatch needs config.batch_size (seed nodes per batch)")
    if config.variant == "reference":
        raise ValueError("variant='reference' (GRACE's own code) is full-batch only; use "
                         "'vanilla' with a batch_size")
    if config.eval_every is not None:
        raise ValueError("eval_every (probe-based model selection) is full-batch only; set it to "
                         "None with a batch_size")
    if config.knn_refresh != 1:
        raise ValueError(f"knn_refresh={config.knn_refresh} reuses one batch's kNN edges for the "
                         f"next batches, whose nodes differ: set knn_refresh=1 with a batch_size")
    sampler = resolve_sampler(config.sampler)
    rank, world = rank_and_world()
    seed_everything(seed)
    device = torch.device(device) if device is not None else data.x.device
    encoder = GRACEEncoder(data.num_features, config.hidden, config.activation, config.num_layers,
                           config.encoder_layer)
    model = GRACEModel(encoder, config.hidden, config.proj_hidden).to(device)
    trained: nn.Module = model
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(model)
    if rank:  # every rank starts from the same weights, and draws its own augmentations
        torch.manual_seed(seed + 1_000_003 * rank)
    views = [GraphAugment(e, f) for e, f in zip(config.drop_edge, config.drop_feature, strict=True)]
    attention = config.attention_normalize if config.variant == "attention" else None
    loss_fn = GraphContrastiveLoss(config.tau, attention, config.beta, config.negatives,
                                   config.knn_k, config.knn_samples, config.knn_index,
                                   seed=seed + rank)
    affinity = AffinitySchedule(loss_fn, 1, seed=seed + rank)  # each batch its own kNN edges
    multistage = (MultiStageAlignment(data.num_nodes, config.hidden, config.tau, config.num_stages,
                                      config.multistage_weight).to(device)
                  if config.variant == "multistage" else None)
    if batches is None:
        def batches(epoch: int) -> Iterable[Data]:
            nodes = epoch_nodes(data.num_nodes, epoch, seed, rank, world)
            return node_batches(data, nodes, config.batch_size, sampler, config.num_neighbors)

    sparse = float((data.x != 0).float().mean()) < SPARSE_FEATURES_BELOW
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    steps = 0
    path = None  # the negatives' path of the last batch
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        trained.train()
        total, count = 0.0, 0
        for batch in batches(epoch):
            batch = batch.to(device)
            seeds = seed_count(batch)
            ids = batch.n_id[:seeds]
            optimizer.zero_grad()
            z1, z2 = _encode_views(trained, views, batch, seeds, sparse)
            u, v = model.projection(z1), model.projection(z2)
            features = (z1, z2) if attention == "positives" else None
            loss = loss_fn(u, v, features, affinity(u, v))
            if multistage is not None:
                loss = loss + multistage(u, v, epoch, index=ids)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * seeds
            count += seeds
            steps += 1
            path = loss_fn.path_for(seeds)
        losses.append(total / max(count, 1))
        if progress is not None:
            progress(epoch, losses[-1])
    result: dict[str, Any] = {"losses": losses, "seconds": time.perf_counter() - started,
                              "steps": steps, "path": path, "model": model}
    model.eval()
    whole = data.to(device)  # the same object when it is there already
    result["embeddings"] = embed_nodes(model, whole)
    if evaluate:
        result.update(linear_probe(result["embeddings"], whole, seed=seed))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return result
