r"""Training and evaluation protocols for node classification: supervised training with model
selection on the validation split, and the linear probe used to evaluate frozen embeddings.

Both are full-batch and deterministic on the CPU for a given seed (:func:`seed_everything`).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data

from mp_contrastive._linear_head import fit_linear_head
from mp_contrastive._validation import (
    check_features,
    check_nonnegative,
    check_positive,
    check_positive_int,
)
from mp_contrastive.gnn.models import NodeClassifier

__all__ = [
    "SupervisedConfig",
    "seed_everything",
    "masked_accuracy",
    "build_classifier",
    "train_node_classifier",
    "fit_node_classifier",
    "linear_probe",
]


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators (all devices); nothing here draws from NumPy's."""
    random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class SupervisedConfig:
    """A model and its training protocol (one row of the supervised table).

    ``decay="first"`` applies the weight decay to the first layer only (Kipf & Welling's GCN and
    PyG's ``gcn.py``); ``"all"`` to every parameter (GAT).
    """

    layer: str = "gcn"
    hidden_channels: int = 16
    num_layers: int = 2
    dropout: float = 0.5
    heads: int = 8
    out_heads: int = 1
    attention_dropout: float = 0.6
    beta: float = 1.0
    score: str = "cosine"
    jk: str | None = None
    lr: float = 0.01
    weight_decay: float = 5e-4
    decay: str = "first"
    epochs: int = 200

    def replace(self, **changes: Any) -> SupervisedConfig:
        return SupervisedConfig(**{**asdict(self), **changes})


def build_classifier(config: SupervisedConfig, in_channels: int, num_classes: int) -> NodeClassifier:
    """The :class:`NodeClassifier` a config describes."""
    return NodeClassifier(in_channels, config.hidden_channels, num_classes, layer=config.layer,
                          num_layers=config.num_layers, dropout=config.dropout, heads=config.heads,
                          out_heads=config.out_heads, attention_dropout=config.attention_dropout,
                          beta=config.beta, score=config.score, jk=config.jk)


def masked_accuracy(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    """Accuracy (in %) of ``logits.argmax(-1)`` on the nodes in ``mask``."""
    if int(mask.sum()) == 0:
        raise ValueError("'mask' selects no node")
    return 100.0 * float((logits[mask].argmax(-1) == y[mask]).float().mean())


def _check_split(data: Data) -> None:
    for name in ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask"):
        if getattr(data, name, None) is None:
            raise ValueError(f"'data' must have '{name}' (a Planetoid-style split)")
    check_features(data.x, "data.x")


def train_node_classifier(config: SupervisedConfig, data: Data, seed: int = 0) -> dict[str, Any]:
    r"""Train the config's model on ``data``'s training nodes with Adam (full batch, cross-entropy)
    and select the epoch with the best validation accuracy (ties: lower validation loss).

    Returns ``test_acc`` and ``val_acc`` (in %) at that epoch, ``best_epoch`` and ``seconds``.
    """
    _check_split(data)
    check_positive(config.lr, "lr")
    check_nonnegative(config.weight_decay, "weight_decay")
    if config.decay not in ("first", "all"):
        raise ValueError(f"'decay' must be 'first' or 'all', got {config.decay!r}")
    seed_everything(seed)
    model = build_classifier(config, data.num_features, int(data.y.max()) + 1)
    if config.decay == "first":
        first = {id(p) for p in model.first_layer_parameters()}
        groups = [{"params": model.first_layer_parameters(), "weight_decay": config.weight_decay},
                  {"params": [p for p in model.parameters() if id(p) not in first],
                   "weight_decay": 0.0}]
    else:
        groups = [{"params": list(model.parameters()), "weight_decay": config.weight_decay}]
    optimizer = torch.optim.Adam(groups, lr=config.lr)
    return fit_node_classifier(model, data, optimizer, config.epochs)


def fit_node_classifier(model: nn.Module, data: Data, optimizer: torch.optim.Optimizer,
                        epochs: int) -> dict[str, Any]:
    """Train ``model(data.x, data.edge_index)`` full batch on the training nodes (cross-entropy) for
    ``epochs`` epochs and keep the epoch with the best validation accuracy (ties: lower validation
    loss); the loop of :func:`train_node_classifier`, for models that are not a config's.

    Returns ``test_acc`` and ``val_acc`` (in %) at that epoch, ``best_epoch`` and ``seconds``.
    """
    _check_split(data)
    check_positive_int(epochs, "epochs")
    best = (-1.0, math.inf)
    result: dict[str, Any] = {}
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        optimizer.zero_grad()
        out = model(data.x, data.edge_index)
        F.cross_entropy(out[data.train_mask], data.y[data.train_mask]).backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            out = model(data.x, data.edge_index)
        val_acc = masked_accuracy(out, data.y, data.val_mask)
        val_loss = float(F.cross_entropy(out[data.val_mask], data.y[data.val_mask]))
        if (val_acc, -val_loss) > (best[0], -best[1]):
            best = (val_acc, val_loss)
            result = {"val_acc": val_acc, "test_acc": masked_accuracy(out, data.y, data.test_mask),
                      "best_epoch": epoch}
    result["seconds"] = time.perf_counter() - started
    return result


def linear_probe(embeddings: Tensor, data: Data, *, weight_decays: tuple[float, ...] = (
        0.0, 1e-5, 1e-4, 1e-3, 1e-2), epochs: int = 300, lr: float = 0.01,
        seed: int = 0) -> dict[str, float]:
    r"""Evaluate frozen node embeddings on ``data``'s split with logistic regression.

    The embeddings are :math:`\ell_2`-normalised (as GRACE's evaluation does); a linear classifier
    is trained on the training nodes with full-batch Adam for each weight decay in
    ``weight_decays``; the one with the best validation accuracy (ties: the smaller decay) gives the
    test accuracy. Returns ``test_acc``, ``val_acc`` (in %) and the chosen ``weight_decay``.
    """
    embeddings = check_features(embeddings, "embeddings").detach()
    _check_split(data)
    if embeddings.size(0) != data.num_nodes:
        raise ValueError(f"'embeddings' must have one row per node ({data.num_nodes}), "
                         f"got {embeddings.size(0)}")
    if not weight_decays:
        raise ValueError("'weight_decays' must hold at least one value")
    x = F.normalize(embeddings, dim=1)
    y = data.y.to(x.device)
    num_classes = int(y.max()) + 1
    x_train, y_train = x[data.train_mask], y[data.train_mask]
    best: dict[str, float] = {"val_acc": -1.0}
    for decay in weight_decays:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        classifier = nn.Linear(x.size(1), num_classes).to(x.device)
        with torch.no_grad():  # seeded init, independent of the global generator
            bound = 1.0 / math.sqrt(x.size(1))
            classifier.weight.copy_(torch.rand(classifier.weight.shape, generator=generator)
                                    .mul_(2 * bound).sub_(bound))
            classifier.bias.zero_()
        optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, weight_decay=decay)
        fit_linear_head(classifier, x_train, y_train, optimizer, epochs)
        with torch.no_grad():
            logits = classifier(x)
        val_acc = masked_accuracy(logits, y, data.val_mask)
        if val_acc > best["val_acc"]:
            best = {"val_acc": val_acc, "test_acc": masked_accuracy(logits, y, data.test_mask),
                    "weight_decay": decay}
    return best
