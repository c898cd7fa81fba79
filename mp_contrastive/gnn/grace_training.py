r"""GRACE-style graph contrastive learning (Zhu et al., 2020) and the paper's two variants: the
training loop and the linear probe of the frozen encoder.

Variants (:attr:`GRACEConfig.variant <mp_contrastive.gnn.GRACEConfig>`):

* ``"vanilla"``: GRACE's loss as the energy of :class:`~mp_contrastive.nn.ContrastiveConv`
  (:class:`~mp_contrastive.gnn.GraphContrastiveLoss`), with our GCN layers.
* ``"reference"``: GRACE as its authors' code computes it, for comparison in the same run:
  PyG's ``GCNConv`` encoder and the NT-Xent written out and differentiated by autograd,
  dense negatives; the same seed gives the same initial weights and views as ``"vanilla"``.
* ``"attention"``: positive pairs reweighted by :class:`~mp_contrastive.nn.AttentionAlignmentConv`
  (the official code's ``normalize="positives"`` on the encoder outputs by default, or the paper's
  ``"negatives"``); :class:`~mp_contrastive.losses.AttentionSimCLRLoss` underneath.
* ``"multistage"``: the paper's eq. 13 added to the loss, each node pulled towards the mean
  of its own features from the last ``num_stages`` epochs
  (:class:`~mp_contrastive.gnn.MultiStageAlignment`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch_geometric.data import Data

from mp_contrastive._validation import (
    check_choice,
    check_features,
    check_nonnegative,
    check_positive,
    check_positive_int,
)
from mp_contrastive.gnn.augment import SPARSE_FEATURES_BELOW, GraphAugment
from mp_contrastive.gnn.grace_config import VARIANTS, GRACEConfig
from mp_contrastive.gnn.grace_loss import (
    AffinitySchedule,
    GraphContrastiveLoss,
    MultiStageAlignment,
)
from mp_contrastive.gnn.grace_model import GRACEEncoder, GRACEModel
from mp_contrastive.gnn.minibatch import train_grace_minibatch
from mp_contrastive.gnn.training import linear_probe, seed_everything
from mp_contrastive.losses import _plain_nt_xent as plain_nt_xent

__all__ = ["SPARSE_FEATURES_BELOW", "train_grace"]



def train_grace(config: GRACEConfig, data: Data, seed: int = 0, *,
                progress: Callable[[int, float], None] | None = None,
                evaluate: bool = True) -> dict[str, Any]:
    r"""Train a GRACE-style model on ``data`` and, with ``evaluate``, probe its frozen encoder
    linearly on the data's split (:func:`~mp_contrastive.gnn.linear_probe`).

    With ``config.batch_size`` it trains in mini-batches
    (:func:`~mp_contrastive.gnn.train_grace_minibatch`, which says what it returns).

    Returns ``test_acc``, ``val_acc`` (%), ``losses`` (per epoch), ``seconds``, ``path`` (the
    negatives' path, ``"dense"`` or ``"knn"``), ``embeddings`` and ``model``. ``progress(epoch,
    loss)`` is called after every epoch.

    With ``config.eval_every`` the encoder is probed every that many epochs and at the last one
    (validation accuracy only selects; the global generator is forked around the probes, so the
    training trajectory is that of ``eval_every=None``); ``model`` and ``embeddings`` are those of the
    checkpoint with the best validation accuracy (ties: the earlier epoch), the result adds
    ``best_epoch`` and ``checkpoints`` (``(epoch, val_acc, test_acc)`` of every probe; the test
    accuracies are reported, never used) and, with ``evaluate``, holds that checkpoint's probe.
    ``seconds`` counts training only, not the probes. The data needs its split masks then, even
    with ``evaluate=False``.

    Raises:
        ValueError: an unknown variant, a non-positive learning rate, a negative weight decay, or an
            ``eval_every`` below one. TypeError: an ``eval_every`` that is neither an int nor
            ``None``.
    """
    check_choice(config.variant, "variant", VARIANTS)
    if config.batch_size is not None:
        return train_grace_minibatch(config, data, seed, progress=progress, evaluate=evaluate)
    check_positive(config.lr, "lr")
    check_nonnegative(config.weight_decay, "weight_decay")
    eval_every = config.eval_every
    if eval_every is not None:
        check_positive_int(eval_every, "eval_every")
    seed_everything(seed)
    x = check_features(data.x, "data.x")
    if float((x != 0).float().mean()) < SPARSE_FEATURES_BELOW:
        with warnings.catch_warnings():  # the CSR layout's "beta" notice
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
            x = x.to_sparse_csr()  # same views and results, the first layer costs O(nnz)
    reference = config.variant == "reference"
    encoder = GRACEEncoder(data.num_features, config.hidden, config.activation, config.num_layers,
                           "pyg_gcn" if reference else config.encoder_layer)
    model = GRACEModel(encoder, config.hidden, config.proj_hidden).to(x.device)
    views = [GraphAugment(e, f) for e, f in zip(config.drop_edge, config.drop_feature, strict=True)]
    attention = config.attention_normalize if config.variant == "attention" else None
    loss_fn = GraphContrastiveLoss(config.tau, attention, config.beta, config.negatives,
                                   config.knn_k, config.knn_samples, config.knn_index, seed=seed)
    # The loop owns the kNN edges: searched every knn_refresh epochs, passed to the loss.
    affinity = AffinitySchedule(loss_fn, config.knn_refresh, seed=seed)
    multistage = (MultiStageAlignment(data.num_nodes, config.hidden, config.tau, config.num_stages,
                                      config.multistage_weight).to(x.device)
                  if config.variant == "multistage" else None)
    sample = torch.arange(data.num_nodes, device=x.device).repeat(2)  # the reference's pairs
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    checkpoints: list[tuple[int, float, float]] = []
    best: dict[str, Any] | None = None  # the best checkpoint: epoch, probe, embeddings, weights
    probing = 0.0
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        optimizer.zero_grad()
        z1, z2 = (model(*view(x, data.edge_index)) for view in views)
        u, v = model.projection(z1), model.projection(z2)
        # The official attention code scores positive pairs on backbone features (the encoder).
        features = (z1, z2) if attention == "positives" else None
        if reference:
            loss = plain_nt_xent(torch.cat([u, v]), sample, config.tau)
        else:
            loss = loss_fn(u, v, features, affinity(u, v))
        if multistage is not None:
            loss = loss + multistage(u, v, epoch)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if eval_every is not None and (epoch % eval_every == 0 or epoch == config.epochs):
            probe_started = time.perf_counter()
            model.eval()
            # The probe's classifier is built by nn.Linear, which draws from the global generator:
            # fork it so that the views after this epoch are those of a run without probes.
            devices = [x.device] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                with torch.no_grad():
                    embeddings = model(x, data.edge_index)
                probe = linear_probe(embeddings, data, seed=seed)
            checkpoints.append((epoch, probe["val_acc"], probe["test_acc"]))
            if best is None or probe["val_acc"] > best["probe"]["val_acc"]:
                best = {"epoch": epoch, "probe": probe, "embeddings": embeddings,
                        "state": {k: t.detach().clone() for k, t in model.state_dict().items()}}
            probing += time.perf_counter() - probe_started
        if progress is not None:
            progress(epoch, losses[-1])
    result: dict[str, Any] = {"losses": losses, "seconds": time.perf_counter() - started - probing,
                              "path": "dense" if reference else loss_fn.path_for(data.num_nodes),
                              "model": model}
    model.eval()
    if best is not None:
        model.load_state_dict(best["state"])
        result.update(embeddings=best["embeddings"], best_epoch=best["epoch"],
                      checkpoints=checkpoints)
        if evaluate:
            result.update(best["probe"])
        return result
    with torch.no_grad():
        result["embeddings"] = model(x, data.edge_index)
    if evaluate:
        result.update(linear_probe(result["embeddings"], data, seed=seed))
    return result
