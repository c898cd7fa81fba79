r"""A training monitor that logs the learning-dynamics diagnostics of :mod:`mp_contrastive.dynamics`.

A trainer creates one :class:`DynamicsMonitor` and calls it every step with the features the loss
sees (and, when it has them, the sample id of every view and the class labels). Every ``every``
steps the monitor measures the features under ``torch.no_grad`` and writes one row of scalars
through its loggers (CSV, TensorBoard, or anything with ``log(step, metrics)``); on the other
steps it returns at once. An image trainer attaches it as::

    monitor = DynamicsMonitor(log_dir=out_dir, temperature=0.5)
    monitor(step, torch.cat([z0, z1]), sample=sample, labels=torch.cat([y, y]))

and a graph trainer (GRACE-style: two views of every node, or the graph itself as positive pairs)::

    monitor = DynamicsMonitor(log_dir=out_dir, temperature=0.5)
    monitor(step, z, edge_index=data.edge_index, labels=data.y)

Logged columns, by metric (with ``metrics="auto"``, every metric whose inputs are given):

* ``alignment`` (needs pairs): Wang & Isola alignment of the positive pairs, lower = better aligned.
* ``uniformity``: Wang & Isola uniformity, lower = more uniform, 0 = complete collapse.
* ``effective_rank``: effective rank of the features (dimensional collapse lowers it).
* ``equilibrium_gap`` (pairs) -> ``equilibrium_tv``, ``equilibrium_kl``: distance between
  :math:`\bar{A}` and :math:`\hat{A}`, zero at the Proposition 3 equilibrium.
* ``class_distances`` (labels) -> ``intra_class_distance``, ``inter_class_distance``,
  ``class_distance_ratio``: RMS distances of the normalised features, ratio lower = clustered.
* ``class_subspace_distance`` (labels, pairs): mean over classes of the relative distance to the
  Proposition 2 subspace :math:`\mathrm{span}(u_c)`.
* ``class_connectivity`` (labels, pairs; opt-in, it runs eigensolvers) -> ``class_lambda2_mean``,
  ``class_lambda2_min``. On a batch of views it is 0: views only connect within their sample.

"pairs" are ``sample`` (views of the same sample are positives) or an explicit ``edge_index``.
:func:`measure_dynamics` measures one such row without a monitor; the loggers live in
:mod:`mp_contrastive.loggers`.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mp_contrastive import dynamics
from mp_contrastive._validation import (
    check_edge_index,
    check_edge_values,
    check_features,
    check_index_vector,
    check_positive,
    check_positive_int,
)
from mp_contrastive.graph import augmentation_edges, sphere_projection
from mp_contrastive.loggers import (
    CSVLogger,
    MetricLogger,
    TensorBoardLogger,
    tensorboard_available,
    truncate_tensorboard,
)

__all__ = [
    "METRICS",
    "DEFAULT_EVERY",
    "DynamicsMonitor",
    "measure_dynamics",
    "metric_columns",
]

METRICS = ("alignment", "uniformity", "effective_rank", "equilibrium_gap", "class_distances",
           "class_subspace_distance", "class_connectivity")
# Measured by benchmarks/monitor_overhead.py: at this period the monitor costs well under 2% of a
# training step for the image and graph setups there.
DEFAULT_EVERY = 50
_NEEDS_PAIRS = {"alignment", "equilibrium_gap", "class_subspace_distance", "class_connectivity"}
_NEEDS_LABELS = {"class_distances", "class_subspace_distance", "class_connectivity"}
_AUTO = tuple(m for m in METRICS if m != "class_connectivity")  # eigensolves: opt-in
_COLUMNS = {"equilibrium_gap": ("equilibrium_tv", "equilibrium_kl"),
            "class_distances": ("intra_class_distance", "inter_class_distance",
                                "class_distance_ratio"),
            "class_connectivity": ("class_lambda2_mean", "class_lambda2_min")}


def metric_columns(metrics: Iterable[str]) -> list[str]:
    """The logged columns of ``metrics`` (drawn from :data:`METRICS`), in order."""
    return [column for metric in metrics for column in _COLUMNS.get(metric, (metric,))]


def _check_metrics(metrics: str | Iterable[str]) -> tuple[str, ...] | None:
    """``None`` for ``"auto"``, else the explicit metrics, checked."""
    if isinstance(metrics, str):
        if metrics != "auto":
            raise ValueError(f"'metrics' must be 'auto' or a list drawn from {METRICS}, "
                             f"got {metrics!r}")
        return None
    chosen = tuple(metrics)
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise ValueError(f"'metrics' must be a non-empty list drawn from {METRICS}, "
                         f"got unknown {unknown}" if unknown else "'metrics' is empty")
    return chosen


def _select(metrics: tuple[str, ...] | None, has_pairs: bool, has_labels: bool) -> tuple[str, ...]:
    if metrics is None:
        return tuple(m for m in _AUTO if (has_pairs or m not in _NEEDS_PAIRS)
                     and (has_labels or m not in _NEEDS_LABELS))
    for metric in metrics:
        if metric in _NEEDS_PAIRS and not has_pairs:
            raise ValueError(f"metric '{metric}' needs positive pairs: pass 'sample' or "
                             f"'edge_index'")
        if metric in _NEEDS_LABELS and not has_labels:
            raise ValueError(f"metric '{metric}' needs class labels: pass 'labels'")
    return metrics


def measure_dynamics(features: Tensor, *, sample: Tensor | None = None,
                     edge_index: Tensor | None = None, edge_weight: Tensor | None = None,
                     labels: Tensor | None = None, metrics: str | Iterable[str] = "auto",
                     temperature: float | None = None, max_nodes: int | None = None,
                     generator: torch.Generator | None = None) -> dict[str, float]:
    r"""One row of diagnostics of ``features``: what :class:`DynamicsMonitor` logs, measured once
    (detached, under ``torch.no_grad``).

    Non-finite features give a row of ``nan`` instead of an exception (a diverging run should not
    be killed by its diagnostics). With ``max_nodes``, a batch with more rows is subsampled (a
    random subset drawn from ``generator``) for the quadratic metrics: uniformity, effective rank
    and the equilibrium gap (anchored at the subset; its softmax still runs over all nodes, so its
    mean stays unbiased). The linear ones use every node.

    Args:
        features (Tensor): :math:`(N, d)` features, e.g. the projector outputs the loss sees.
        sample (Tensor, optional): :math:`(N)` sample id of every view; views of the same sample
            are the positive pairs.
        edge_index (Tensor, optional): explicit positive pairs :math:`(2, |E|)` instead of
            ``sample``, e.g. a graph's edges. edge_weight (Tensor, optional): their weights.
        labels (Tensor, optional): :math:`(N)` class labels, for the class metrics.
        metrics (str or list): ``"auto"`` (every metric of :data:`METRICS` whose inputs are given,
            except the opt-in ``"class_connectivity"``) or an explicit list; an explicit metric whose
            inputs are missing raises ``ValueError``.
        temperature (float, optional): the loss's :math:`\tau`; the equilibrium gap is measured on
            :func:`~mp_contrastive.graph.sphere_projection` of the features. ``None``: the
            features are already in that space.
        max_nodes (int, optional): subsample size for the quadratic metrics (default: no subsample).
        generator (torch.Generator, optional): the subsample's random source.

    Returns:
        The columns of :func:`metric_columns` of the chosen metrics, as floats.
    """
    if temperature is not None:
        temperature = check_positive(temperature, "temperature")
    if max_nodes is not None and check_positive_int(max_nodes, "max_nodes") < 2:
        raise ValueError(f"'max_nodes' must be an int >= 2, got {max_nodes!r}")
    return _measure(features, sample, edge_index, edge_weight, labels, _check_metrics(metrics),
                    temperature, max_nodes, generator)[0]


@torch.no_grad()
def _measure(features: Tensor, sample: Tensor | None, edge_index: Tensor | None,
             edge_weight: Tensor | None, labels: Tensor | None, metrics: tuple[str, ...] | None,
             temperature: float | None, max_nodes: int | None,
             generator: torch.Generator | None) -> tuple[dict[str, float], bool]:
    """:func:`measure_dynamics` with checked options; also says whether the features were finite."""
    z = check_features(features, "features", finite=False).detach()
    if z.dtype in (torch.float16, torch.bfloat16):  # AMP outputs: softmax and SVD need more bits
        z = z.float()
    num_nodes, device = z.size(0), z.device
    if sample is not None and edge_index is not None:
        raise TypeError("pass either 'sample' or 'edge_index' as the positive pairs, not both")
    if sample is not None:
        sample = check_index_vector(sample, "sample", length=num_nodes).to(device)
        edge_index, edge_weight, _ = augmentation_edges(sample, z.dtype)
    elif edge_index is not None:
        edge_index = check_edge_index(edge_index, num_nodes, num_nodes).to(device)
        if edge_weight is not None:
            edge_weight = check_edge_values(edge_weight, edge_index.size(1), "edge_weight")
    if labels is not None:
        labels = check_index_vector(labels, "labels", length=num_nodes).to(device)
    chosen = _select(metrics, edge_index is not None, labels is not None)
    if not bool(torch.isfinite(z).all()):
        return dict.fromkeys(metric_columns(chosen), math.nan), False

    subset = None
    if max_nodes is not None and num_nodes > max_nodes:
        subset = torch.randperm(num_nodes, generator=generator)[:max_nodes].to(device)
    part = z if subset is None else z.index_select(0, subset)
    unit = F.normalize(z, dim=1)
    values: dict[str, Tensor] = {}
    if "alignment" in chosen:
        values["alignment"] = dynamics.alignment_metric(z, edge_index)
    if "uniformity" in chosen:
        values["uniformity"] = dynamics.uniformity_metric(part)
    if "effective_rank" in chosen:
        values["effective_rank"] = dynamics.effective_rank(part)
    if "equilibrium_gap" in chosen:
        h = z if temperature is None else sphere_projection(z, temperature)
        gap = dynamics.equilibrium_gap(h, edge_index, edge_weight, anchors=subset)
        values["equilibrium_tv"], values["equilibrium_kl"] = gap
    if "class_distances" in chosen:
        assert labels is not None
        counts = torch.bincount(labels)
        if int((counts > 0).sum()) > 1 and int(counts.max()) > 1:
            dist = dynamics.class_distances(unit, labels)
        else:  # a batch with one class, or only singletons: no pair of the needed kind
            nan = torch.tensor(math.nan, device=device)
            dist = dynamics.ClassDistances(nan, nan, nan)
        values["intra_class_distance"], values["inter_class_distance"] = dist.intra, dist.inter
        values["class_distance_ratio"] = dist.ratio
    if "class_subspace_distance" in chosen:
        assert labels is not None and edge_index is not None
        dist = dynamics.class_subspace_distance(unit, edge_index, labels, edge_weight)
        size = torch.bincount(labels, minlength=dist.numel()).to(unit.dtype)
        relative = dist / size.sqrt()  # each unit row has norm 1: ||X_c||_F = sqrt(n_c)
        values["class_subspace_distance"] = relative[~torch.isnan(relative)].mean()
    if "class_connectivity" in chosen:
        lam = dynamics.class_algebraic_connectivity(edge_index, labels, edge_weight)
        lam = lam[~torch.isnan(lam)]
        values["class_lambda2_mean"], values["class_lambda2_min"] = lam.mean(), lam.min()
    # One device-to-host transfer for the whole row.
    numbers = torch.stack([v.detach().to(device, torch.float64).reshape(()) for v in
                           values.values()]).tolist()
    return dict(zip(values, numbers, strict=True)), True


class DynamicsMonitor:
    r"""Logs learning-dynamics diagnostics of the features every ``every`` steps.

    Call it every training step: ``monitor(step, features, sample=..., labels=...)``. On steps
    that are not a multiple of ``every`` it returns ``None`` immediately (no tensor is touched);
    otherwise it measures the detached features, writes a row to every logger, appends it to
    :attr:`history` and returns it. It never raises on non-finite features (a diverging run should
    not be killed by its monitor): it logs ``nan`` and warns once.

    The row is :func:`measure_dynamics`'s. Batches larger than ``max_nodes`` are subsampled (a
    fixed-seed random subset of rows) for the quadratic metrics: uniformity, effective rank and the
    equilibrium gap (whose softmax still runs over all nodes, so its mean stays unbiased). The
    linear ones use every node.

    Args:
        every (int): logging period in steps (default :data:`DEFAULT_EVERY`).
        log_dir (str or Path, optional): write ``log_dir/dynamics.csv``, and TensorBoard events
            into ``log_dir/tensorboard`` when ``tensorboard`` is installed.
        loggers (MetricLogger or list, optional): further loggers (e.g. a
            :class:`~mp_contrastive.loggers.TensorBoardLogger` around the trainer's own
            ``SummaryWriter``).
        metrics (str or list): ``"auto"`` (every metric of :data:`METRICS` whose inputs are given,
            except the opt-in ``"class_connectivity"``) or an explicit list; an explicit metric whose
            inputs are missing raises ``ValueError``.
        temperature (float, optional): the loss's :math:`\tau`; the equilibrium gap is measured in
            the feature space :math:`H = \mathrm{normalize}(Z) / \sqrt{\tau}`. ``None``: the features
            are already :math:`H`.
        max_nodes (int): subsample size for the quadratic metrics (default 2048).
        seed (int): seed of the subsampling.
        resume (bool): keep the rows of an existing ``dynamics.csv`` (a resumed run; call
            :meth:`truncate_logs` with the step it resumes from).
    """

    def __init__(self, every: int = DEFAULT_EVERY, *, log_dir: str | os.PathLike | None = None,
                 loggers: MetricLogger | Sequence[MetricLogger] | None = None,
                 metrics: str | Iterable[str] = "auto", temperature: float | None = None,
                 max_nodes: int = 2048, seed: int = 0, resume: bool = False) -> None:
        self.every = check_positive_int(every, "every")
        if check_positive_int(max_nodes, "max_nodes") < 2:
            raise ValueError(f"'max_nodes' must be an int >= 2, got {max_nodes!r}")
        self.max_nodes = max_nodes
        self.temperature = None if temperature is None else check_positive(temperature,
                                                                           "temperature")
        self.metrics = _check_metrics(metrics)
        self.loggers: list[MetricLogger] = []
        if log_dir is not None:
            if not isinstance(log_dir, (str, os.PathLike)):
                raise TypeError(f"'log_dir' must be a str or path, got {type(log_dir).__name__}")
            # A resumed run keeps the rows written before its checkpoint (see truncate_logs).
            self.loggers.append(CSVLogger(Path(log_dir) / "dynamics.csv", append=bool(resume)))
            if tensorboard_available():  # beside the trainer's events: one TensorBoard folder
                self.loggers.append(TensorBoardLogger(Path(log_dir) / "tensorboard"))
        if loggers is not None:
            extra = [loggers] if isinstance(loggers, MetricLogger) else list(loggers)
            for logger in extra:
                if not isinstance(logger, MetricLogger):
                    raise TypeError(f"'loggers' must hold objects with log(step, metrics) and "
                                    f"close(), got {type(logger).__name__}")
            self.loggers.extend(extra)
        self.history: list[dict[str, float]] = []
        self.seconds = 0.0  # time spent measuring, for overhead accounting
        self._generator = torch.Generator().manual_seed(seed)
        self._warned = False

    def should_log(self, step: int) -> bool:
        """Whether :meth:`update` at ``step`` measures (lets a trainer skip preparing inputs)."""
        return step % self.every == 0

    def __call__(self, step: int, features: Tensor, **kwargs: Any) -> dict[str, float] | None:
        return self.update(step, features, **kwargs)

    def update(self, step: int, features: Tensor, *, sample: Tensor | None = None,
               edge_index: Tensor | None = None, edge_weight: Tensor | None = None,
               labels: Tensor | None = None) -> dict[str, float] | None:
        """Measure and log at multiples of ``every``; returns the row, or ``None`` when skipped.

        Args:
            step (int): the global training step.
            features (Tensor): :math:`(N, d)` features of the batch (or graph), e.g. the projector
                outputs the loss sees. Gradients are not tracked.
            sample (Tensor, optional): :math:`(N)` sample id of every view; views of the same
                sample are the positive pairs.
            edge_index (Tensor, optional): explicit positive pairs :math:`(2, |E|)` instead of
                ``sample``, e.g. a graph's edges.
            edge_weight (Tensor, optional): weights of ``edge_index``.
            labels (Tensor, optional): :math:`(N)` class labels, for the class metrics.
        """
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"'step' must be an int, got {type(step).__name__}")
        if not self.should_log(step):
            return None
        start = time.perf_counter()
        row, finite = _measure(features, sample, edge_index, edge_weight, labels, self.metrics,
                               self.temperature, self.max_nodes, self._generator)
        if not finite and not self._warned:
            warnings.warn("DynamicsMonitor: non-finite features, logging nan", stacklevel=3)
            self._warned = True
        self.seconds += time.perf_counter() - start
        for logger in self.loggers:
            logger.log(step, row)
        self.history.append({"step": step, **row})
        return row

    def truncate_logs(self, below: int) -> None:
        """Drop the CSV rows and the TensorBoard scalars (its own, in folders its loggers
        opened) of steps ``>= below`` (a resumed run redoes them)."""
        for logger in self.loggers:
            if isinstance(logger, CSVLogger):
                logger.truncate(below)
            elif isinstance(logger, TensorBoardLogger) and logger.log_dir is not None:
                mine = logger.prefix + "/"
                truncate_tensorboard(logger.log_dir, lambda tag, step, mine=mine: (
                    step < below or not tag.startswith(mine)))

    def flush(self) -> None:
        """Write what the loggers hold back (TensorBoard events) to disk."""
        for logger in self.loggers:
            if callable(getattr(logger, "flush", None)):
                logger.flush()

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()

    def __enter__(self) -> DynamicsMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        metrics = "auto" if self.metrics is None else list(self.metrics)
        return (f"{self.__class__.__name__}(every={self.every}, metrics={metrics!r}, "
                f"loggers={self.loggers!r})")
