"""Self-supervised methods as modules: ``method(views, index) -> MethodOutput(loss, nodes)``.

A method returns what the training loop needs and the loop
(:class:`~mp_contrastive.vision.trainer.Trainer`) owns the rest. A method owns its model and
computes the loss of one batch of augmented views; it returns a :class:`MethodOutput`: the loss
and the :class:`LossNodes` the loss saw (their features, sample ids and data-set indices, for the
learning-dynamics monitor; ``None`` where the method gives none). Across processes, features are
gathered with gradients so that every rank computes the loss of the global batch.
"""

from __future__ import annotations

import copy
import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mp_contrastive._validation import check_nonnegative_int, check_rate
from mp_contrastive.distributed import gather_no_grad, gather_with_grad
from mp_contrastive.losses import AttentionSimCLRLoss, SimCLRLoss
from mp_contrastive.memory import MultiStageMemory

__all__ = ["MethodOutput", "LossNodes", "SimCLRMethod", "SimSiamMethod", "ATTENTION_MODES",
           "MULTISTAGE_MODES", "gathered_sample_ids"]

ATTENTION_MODES = ("off", "paper", "official")
MULTISTAGE_MODES = ("off", "paper", "official", "alone")


class LossNodes(NamedTuple):
    """The nodes one step's loss saw, as the learning-dynamics monitor reads them.

    Row ``i`` of every field describes the same node (one augmented view of one image; under DDP,
    every rank's nodes, rank by rank, as the loss gathered them).

    Attributes:
        features: ``[N, D]`` the features the loss compared (detached), e.g. the projections.
        sample: ``[N]`` sample ids: two nodes are views of the same image iff their ids are equal
            (the positives of the monitor's alignment).
        index: ``[N]`` each node's index in the training set (the trainer looks up its label).
    """

    features: Tensor
    sample: Tensor
    index: Tensor


class MethodOutput(NamedTuple):
    """What a method's ``forward(views, index)`` returns to the
    :class:`~mp_contrastive.vision.trainer.Trainer`.

    Attributes:
        loss: the scalar loss of the batch (the trainer back-propagates it).
        nodes: the :class:`LossNodes` the loss saw, or ``None``. The trainer needs them only when
            it has a learning-dynamics monitor (``Trainer(dynamics=...)``) and raises if a method
            gives none then.
    """

    loss: Tensor
    nodes: LossNodes | None = None


class SimCLRMethod(nn.Module):
    """SimCLR, optionally with attention alignment.

    ``attention="off"``: :class:`~mp_contrastive.losses.SimCLRLoss`. ``"paper"``: the paper's
    attention (eq. 15, normalised over in-batch negatives, sharpness ``beta``) computed, as its
    appendix C.2 says, on the backbone features ``h`` before the projector, unit-normalised (the
    paper's features are; a dot product of raw ResNet features would saturate the exponential).
    ``"official"``: attention ``exp(beta cos(h_i, h_j))`` on backbone features ``h``, softmax over
    the batch's positive pairs, each anchor's whole term weighted, as in the official code. The
    model returns ``(z, h)``.

    Views of different sizes (the trainer's small crops after its global ones) go through the
    model in groups of one size, one forward pass per group (solo-learn forwards every crop on its
    own); the projections are concatenated in view order, so every view of
    an image, large or small, is a positive of every other (the loss's sample ids). Batch norm
    therefore normalises each group over itself.

    ``attention_warmup=E`` trains plain SimCLR for the first ``E`` epochs (the trainer calls
    :meth:`set_epoch`) and switches the attention on after: appendix C.2 warms up for 30 of 200
    epochs; the official code has no warm-up.

    ``memory_bank_size=K`` contrasts each first-view anchor with its positive and a bank of the
    last ``K`` second-view projections (lightly's ``NTXentLoss(memory_bank_size)``), over
    ``affinity="dense"`` (every entry) or ``"knn"`` (a kNN head + sampled tail); see
    :class:`~mp_contrastive.losses.SimCLRLoss`. Under DDP each rank then contrasts its own
    anchors (the bank receives every rank's keys), as lightly does. Unlike lightly, an image's own
    keys from earlier epochs are left out of its negatives (``sample_ids``): on a data set not
    much larger than the bank they are near copies of the positive. ``key_momentum=m > 0`` takes
    the keys (the second view's projections, no gradient) from an exponential moving average of
    the model, as MoCo does: with keys from the model itself (``m = 0``, lightly's ``NTXentLoss``)
    the bank holds features of many past encoders, which a fast-moving encoder tells apart from
    its own, and the CPU preset unlearned with a 16,384-key bank (kNN 29.4% -> 27.6% after 4 of 10
    epochs; MoCo, He et al. 2020, reports that ``m = 0`` fails to train). See
    ``docs/results.md``.
    """

    def __init__(self, model: nn.Module, temperature: float = 0.5, attention: str = "off",
                 beta: float = 1.0, memory_bank_size: int = 0, affinity: str = "dense",
                 key_momentum: float = 0.0, attention_warmup: int = 0) -> None:
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise ValueError(f"'attention' must be one of {ATTENTION_MODES}, got {attention!r}")
        self.attention_warmup = check_nonnegative_int(attention_warmup, "attention_warmup")
        if attention_warmup and attention == "off":
            raise ValueError("'attention_warmup' delays the attention, and attention='off' has "
                             "none: pass attention='paper' or 'official'")
        if attention == "paper" and memory_bank_size:
            # The bank's "negatives" normalisation scores the projections only (bank_loss.py).
            raise ValueError("attention='paper' scores backbone features against in-batch "
                             "negatives, which a memory bank does not keep: use "
                             "memory_bank_size=0 or attention='official'")
        self.model = model
        self.attention = attention
        self.epoch = 0
        self.key_momentum = check_rate(key_momentum, "key_momentum")
        self.key_model: nn.Module | None = None
        if self.key_momentum > 0:
            if memory_bank_size == 0:
                raise ValueError("'key_momentum' makes the keys of a memory bank: it needs "
                                 "memory_bank_size > 0")
            # MoCo's key encoder: an exponential moving average of the model, never trained.
            self.key_model = copy.deepcopy(model).requires_grad_(False)
        bank = dict(memory_bank_size=memory_bank_size, affinity=affinity)
        if attention == "off":
            self.loss = SimCLRLoss(temperature, **bank)
        else:
            normalize = "negatives" if attention == "paper" else "positives"
            self.loss = AttentionSimCLRLoss(temperature, beta, normalize=normalize,
                                            score="cosine", **bank)
        # The warm-up's loss: plain SimCLR on the same negatives (and bank, if any).
        self.warmup_loss = SimCLRLoss(temperature, **bank) if self.attention_warmup else None
        if self.warmup_loss is not None and self.warmup_loss.memory is not None:
            self.warmup_loss.memory = self.loss.memory  # one bank, filled in every epoch

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at the start of every epoch (the attention's warm-up)."""
        self.epoch = epoch

    @property
    def attending(self) -> bool:
        """Whether this epoch's loss has the attention (off during the warm-up)."""
        return self.attention != "off" and self.epoch >= self.attention_warmup

    def forward(self, views: list[Tensor], index: Tensor) -> MethodOutput:
        """The loss of ``views`` (a list of ``[B, ...]`` augmentations of the images ``index``, the
        local batch's data-set indices) and the projections it compared."""
        if self.loss.memory is not None:
            return self._bank_forward(views, index)
        z, h = _forward_by_size(self.model, views)
        z = gather_with_grad(_full_precision(z))
        sample = gathered_sample_ids(views[0].size(0), len(views), z.size(0), z.device)
        nodes = LossNodes(z.detach(), sample, _node_index(index, len(views)))
        if not self.attending:
            return MethodOutput((self.warmup_loss or self.loss)(z, sample), nodes)
        features = gather_with_grad(_full_precision(h)).detach()
        return MethodOutput(self.loss(z, sample, attention_features=features), nodes)

    def _bank_forward(self, views: list[Tensor], index: Tensor) -> MethodOutput:
        if len(views) != 2:
            raise ValueError(f"a memory bank takes 2 views, got {len(views)}")
        _check_one_size(views, "a memory bank")
        if self.key_model is None:
            z, h = self.model(torch.cat(views))
        else:  # anchors from the model, keys (no gradient) from its moving average
            self._update_key_model()
            z0, h0 = self.model(views[0])
            with torch.no_grad():
                z1, h1 = self.key_model(views[1])
            z, h = torch.cat([z0, z1]), torch.cat([h0, h1])
        z = _full_precision(z)
        batch = views[0].size(0)
        gathered = gather_no_grad(z.detach())
        nodes = LossNodes(gathered, gathered_sample_ids(batch, 2, gathered.size(0), z.device),
                          _node_index(index, 2))
        z0, z1 = z[:batch], z[batch:]
        # A sample's own keys from earlier epochs are not its negatives (a bank larger than a
        # fraction of the data set holds them, and they sit next to the positive).
        if not self.attending:
            return MethodOutput((self.warmup_loss or self.loss)(z0, z1, sample_ids=index), nodes)
        return MethodOutput(self.loss(z0, z1, attention_features=_full_precision(h).detach(),
                                      sample_ids=index), nodes)

    @torch.no_grad()
    def _update_key_model(self) -> None:
        """MoCo's update, before each step: key = m * key + (1 - m) * model (parameters; the key
        model's normalisation statistics follow its own forward passes)."""
        assert self.key_model is not None
        for key, online in zip(self.key_model.parameters(), self.model.parameters(), strict=True):
            key.mul_(self.key_momentum).add_(online.detach(), alpha=1 - self.key_momentum)


class SimSiamMethod(nn.Module):
    r"""SimSiam (solo-learn's CIFAR architecture), optionally with multi-stage aggregation.

    Projector: Linear-BN-ReLU-Linear-BN-ReLU-Linear-BN(no affine); predictor: Linear-BN-ReLU-Linear.
    The loss is :math:`-\tfrac12[\cos(p_1, \mathrm{sg}(t_1)) + \cos(p_2, \mathrm{sg}(t_2))]`
    with targets

    * ``"off"``: :math:`t_1 = z_2,\ t_2 = z_1` (SimSiam);
    * ``"paper"`` / ``"official"`` (after ``warmup_epochs``): the mean of the other view's
      :math:`z` and the sample's stored stages (view-2 projections of the last ``num_stages``
      epochs; aggregated with ``aggr``). With ``num_stages=1`` this is the official code's
      :math:`0.5 z_{now} + 0.5 z_{previous\ epoch}` (``MULTI-STAGE-GRAPH-AGGREGATION``);
    * ``"alone"``: multi-stage alignment without the predictor (paper eq. 13, Figure 2a):
      :math:`-\cos(z_v, \mathrm{sg}(\bar{m}))` with :math:`\bar{m}` the mean of the stored
      stages (the other view's :math:`z` while a sample has none yet).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_samples: int,
                 proj_dim: int = 2048, proj_hidden_dim: int = 2048, pred_hidden_dim: int = 512,
                 multistage: str = "off", num_stages: int = 1, aggr: str = "mean",
                 warmup_epochs: int = 0) -> None:
        super().__init__()
        if multistage not in MULTISTAGE_MODES:
            raise ValueError(f"'multistage' must be one of {MULTISTAGE_MODES}, got {multistage!r}")
        self.backbone = backbone
        self.projector = nn.Sequential(
            nn.Linear(feature_dim, proj_hidden_dim, bias=False), nn.BatchNorm1d(proj_hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden_dim, proj_hidden_dim, bias=False),
            nn.BatchNorm1d(proj_hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(proj_hidden_dim, proj_dim, bias=False), nn.BatchNorm1d(proj_dim, affine=False))
        self.predictor = nn.Sequential(
            nn.Linear(proj_dim, pred_hidden_dim, bias=False), nn.BatchNorm1d(pred_hidden_dim),
            nn.ReLU(inplace=True), nn.Linear(pred_hidden_dim, proj_dim))
        self.multistage = multistage
        self.warmup_epochs = warmup_epochs
        self.memory = (MultiStageMemory(num_samples, proj_dim, num_stages, aggr)
                       if multistage != "off" else None)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at the start of every epoch (the memory is epoch-indexed)."""
        self.epoch = epoch

    def param_groups(self) -> list[dict]:
        """The predictor keeps a fixed learning rate, as in SimSiam and solo-learn."""
        predictor = {id(p) for p in self.predictor.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in predictor]
        return [{"params": rest}, {"params": list(self.predictor.parameters()), "static_lr": True}]

    def forward(self, views: list[Tensor], index: Tensor) -> MethodOutput:
        """The loss of two views of the images ``index`` and their projections (this rank's)."""
        if len(views) != 2:
            raise ValueError(f"SimSiam takes 2 views, got {len(views)}")
        _check_one_size(views, "SimSiam")
        z1, z2 = _full_precision(self.projector(self.backbone(torch.cat(views)))).chunk(2)
        local = torch.arange(index.numel(), device=z1.device)
        nodes = LossNodes(torch.cat([z1, z2]).detach(), local.repeat(2), index.repeat(2))
        targets = self._targets(z1, z2, index)
        if self.multistage == "alone":
            loss = -0.5 * (F.cosine_similarity(z1, targets[0], dim=-1).mean()
                           + F.cosine_similarity(z2, targets[1], dim=-1).mean())
            return MethodOutput(loss, nodes)
        p1, p2 = self.predictor(torch.cat([z1, z2])).chunk(2)
        loss = -0.5 * (F.cosine_similarity(p1, targets[0], dim=-1).mean()
                       + F.cosine_similarity(p2, targets[1], dim=-1).mean())
        return MethodOutput(loss, nodes)

    @torch.no_grad()
    def _targets(self, z1: Tensor, z2: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        z1, z2 = z1.detach(), z2.detach()
        if self.memory is None or not self.training:
            return z2, z1
        stored, count = self.memory.read(index, self.epoch)
        self.memory.write(index, z2, self.epoch)
        have = (count > 0).unsqueeze(1)
        if self.multistage == "alone":
            return torch.where(have, stored, z2), torch.where(have, stored, z1)
        if self.epoch < self.warmup_epochs:
            return z2, z1
        # Half the other view's current projection, half the aggregate of the stored stages.
        return (torch.where(have, 0.5 * (z2 + stored), z2),
                torch.where(have, 0.5 * (z1 + stored), z1))


def _forward_by_size(model: nn.Module, views: list[Tensor]) -> tuple[Tensor, Tensor]:
    """The model's ``(z, h)`` of every view, in view order. Views of one size share a forward pass
    (one per run of equal-size views; crops of different sizes cannot share a batch tensor), so
    with one size this is the single forward of the concatenated views, unchanged."""
    groups = [list(group) for _, group in itertools.groupby(views, key=lambda v: v.shape[1:])]
    if len(groups) == 1:
        return model(torch.cat(views))
    outputs = [model(torch.cat(group)) for group in groups]
    return (torch.cat([z for z, _ in outputs]), torch.cat([h for _, h in outputs]))


def _check_one_size(views: list[Tensor], method: str) -> None:
    """Two-view methods pair views row by row through one forward pass: small crops are refused."""
    sizes = sorted({tuple(view.shape[1:]) for view in views})
    if len(sizes) > 1:
        raise ValueError(f"{method} takes views of one size, got views of shapes {sizes} "
                         f"(small crops): train it without them")


def _node_index(index: Tensor, num_views: int) -> Tensor:
    """Dataset index of every gathered node, in the order of :func:`gathered_sample_ids`."""
    gathered = gather_no_grad(index)
    local = index.numel()
    world = gathered.numel() // local
    return gathered.view(world, 1, local).expand(world, num_views, local).reshape(-1)


def _full_precision(x: Tensor) -> Tensor:
    """The loss runs in float32 (or float64) even under bf16 autocast."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def gathered_sample_ids(local: int, num_views: int, num_nodes: int,
                        device: torch.device) -> Tensor:
    """Sample ids of gathered nodes, ordered rank by rank and, within a rank, view by view:
    rank ``r``'s ``b``-th sample is ``r * local + b``."""
    world = num_nodes // (local * num_views)
    ids = torch.arange(world * local, device=device).view(world, 1, local)
    return ids.expand(world, num_views, local).reshape(-1)
