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
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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
)
from mp_contrastive.graph import augmentation_edges

__all__ = [
    "METRICS",
    "DEFAULT_EVERY",
    "MetricLogger",
    "CSVLogger",
    "TensorBoardLogger",
    "MemoryLogger",
    "DynamicsMonitor",
    "tensorboard_available",
]

METRICS = ("alignment", "uniformity", "effective_rank", "equilibrium_gap", "class_distances",
           "class_subspace_distance", "class_connectivity")
# Measured by benchmarks/monitor_overhead.py: at this period the monitor costs well under 2% of a
# training step for the image and graph setups there.
DEFAULT_EVERY = 50
_NEEDS_PAIRS = {"alignment", "equilibrium_gap", "class_subspace_distance", "class_connectivity"}
_NEEDS_LABELS = {"class_distances", "class_subspace_distance", "class_connectivity"}
_AUTO = tuple(m for m in METRICS if m != "class_connectivity")  # eigensolves: opt-in


# -- loggers ---------------------------------------------------------------------------------------


@runtime_checkable
class MetricLogger(Protocol):
    """Anything that can take one row of scalars per logged step."""

    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class MemoryLogger:
    """Keeps every row in :attr:`rows` (a list of dicts with a ``"step"`` key)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.rows.append({"step": step, **metrics})

    def close(self) -> None:
        pass


class CSVLogger:
    """Appends one row per logged step to a CSV file with a ``step`` column first.

    The file is flushed after every row, so it can be read while training runs. When a later row
    brings a column the header lacks (e.g. labels appear only at evaluation steps), the file is
    rewritten once with the extended header; missing values are left empty.

    Args:
        path (str or Path): the CSV file; its folder is created.
        append (bool): keep the rows of an existing file (default ``False``: start afresh).
    """

    def __init__(self, path: str | os.PathLike, append: bool = False) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"'path' must be a str or path, got {type(path).__name__}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._columns: list[str] = []
        if append and self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                self._columns = next(csv.reader(f))
        else:
            self.path.write_text("")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        row = {"step": step, **metrics}
        new = [k for k in row if k not in self._columns]
        if new:
            self._extend_header(new)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._columns, restval="").writerow(row)

    def _extend_header(self, new: list[str]) -> None:
        with self.path.open(newline="") as f:
            old_rows = list(csv.DictReader(f)) if self._columns else []
        self._columns = self._columns + new if self._columns else new
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, restval="")
            writer.writeheader()
            writer.writerows(old_rows)

    def close(self) -> None:
        pass  # every row is written and closed at once

    def __repr__(self) -> str:
        return f"CSVLogger('{self.path}')"


class TensorBoardLogger:
    """Writes each metric as a TensorBoard scalar ``{prefix}/{name}``.

    Args:
        target: a log directory (a ``torch.utils.tensorboard.SummaryWriter`` is created there;
            needs the ``tensorboard`` package), or an existing writer with ``add_scalar`` (e.g. the
            trainer's own, so the dynamics land in the same event files).
        prefix (str): tag prefix (default ``"dynamics"``).
    """

    def __init__(self, target: Any, prefix: str = "dynamics") -> None:
        if isinstance(target, (str, os.PathLike)):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError("TensorBoardLogger with a log directory needs the 'tensorboard' "
                                  "package (pip install tensorboard)") from error
            self.writer, self._owned = SummaryWriter(str(target)), True
        elif callable(getattr(target, "add_scalar", None)):
            self.writer, self._owned = target, False
        else:
            raise TypeError(f"'target' must be a log directory or a writer with add_scalar(), "
                            f"got {type(target).__name__}")
        self.prefix = str(prefix)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"{self.prefix}/{name}", value, step)

    def close(self) -> None:
        if self._owned:
            self.writer.close()
        elif callable(getattr(self.writer, "flush", None)):
            self.writer.flush()


def tensorboard_available() -> bool:
    """Whether ``tensorboard`` (needed by ``SummaryWriter``) is importable."""
    return importlib.util.find_spec("tensorboard") is not None


# -- the monitor -----------------------------------------------------------------------------------


class DynamicsMonitor:
    r"""Logs learning-dynamics diagnostics of the features every ``every`` steps.

    Call it every training step: ``monitor(step, features, sample=..., labels=...)``. On steps
    that are not a multiple of ``every`` it returns ``None`` immediately (no tensor is touched);
    otherwise it measures the detached features, writes a row to every logger, appends it to
    :attr:`history` and returns it. It never raises on non-finite features (a diverging run should
    not be killed by its monitor): it logs ``nan`` and warns once.

    Batches larger than ``max_nodes`` are subsampled (a fixed-seed random subset of rows) for the
    quadratic metrics: uniformity, effective rank and the equilibrium gap (whose softmax still runs
    over all nodes, so its mean stays unbiased). The linear ones use every node.

    Args:
        every (int): logging period in steps (default :data:`DEFAULT_EVERY`).
        log_dir (str or Path, optional): write ``log_dir/dynamics.csv``, and TensorBoard events
            into ``log_dir`` when ``tensorboard`` is installed.
        loggers (MetricLogger or list, optional): further loggers (e.g. a
            :class:`TensorBoardLogger` around the trainer's own ``SummaryWriter``).
        metrics (str or list): ``"auto"`` (every metric of :data:`METRICS` whose inputs are given,
            except the opt-in ``"class_connectivity"``) or an explicit list; an explicit metric whose
            inputs are missing raises ``ValueError``.
        temperature (float, optional): the loss's :math:`\tau`; the equilibrium gap is measured in
            the feature space :math:`H = \mathrm{normalize}(Z) / \sqrt{\tau}`. ``None``: the features
            are already :math:`H`.
        max_nodes (int): subsample size for the quadratic metrics (default 2048).
        seed (int): seed of the subsampling.
    """

    def __init__(self, every: int = DEFAULT_EVERY, *, log_dir: str | os.PathLike | None = None,
                 loggers: MetricLogger | Sequence[MetricLogger] | None = None,
                 metrics: str | Iterable[str] = "auto", temperature: float | None = None,
                 max_nodes: int = 2048, seed: int = 0) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"'every' must be a positive int (steps between logs), got {every!r}")
        if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 2:
            raise ValueError(f"'max_nodes' must be an int >= 2, got {max_nodes!r}")
        self.every = every
        self.max_nodes = max_nodes
        self.temperature = None if temperature is None else check_positive(temperature,
                                                                           "temperature")
        if isinstance(metrics, str):
            if metrics != "auto":
                raise ValueError(f"'metrics' must be 'auto' or a list drawn from {METRICS}, "
                                 f"got {metrics!r}")
            self.metrics: tuple[str, ...] | None = None
        else:
            chosen = tuple(metrics)
            unknown = [m for m in chosen if m not in METRICS]
            if unknown or not chosen:
                raise ValueError(f"'metrics' must be a non-empty list drawn from {METRICS}, "
                                 f"got unknown {unknown}" if unknown else "'metrics' is empty")
            self.metrics = chosen
        self.loggers: list[MetricLogger] = []
        if log_dir is not None:
            if not isinstance(log_dir, (str, os.PathLike)):
                raise TypeError(f"'log_dir' must be a str or path, got {type(log_dir).__name__}")
            self.loggers.append(CSVLogger(Path(log_dir) / "dynamics.csv"))
            if tensorboard_available():
                self.loggers.append(TensorBoardLogger(log_dir))
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
        row = self._measure(features, sample, edge_index, edge_weight, labels)
        self.seconds += time.perf_counter() - start
        for logger in self.loggers:
            logger.log(step, row)
        self.history.append({"step": step, **row})
        return row

    @torch.no_grad()
    def _measure(self, features: Tensor, sample: Tensor | None, edge_index: Tensor | None,
                 edge_weight: Tensor | None, labels: Tensor | None) -> dict[str, float]:
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
        chosen = self._select(edge_index is not None, labels is not None)

        if not bool(torch.isfinite(z).all()):
            if not self._warned:
                warnings.warn("DynamicsMonitor: non-finite features, logging nan", stacklevel=3)
                self._warned = True
            return dict.fromkeys(self._columns(chosen), math.nan)

        if num_nodes > self.max_nodes:
            subset = torch.randperm(num_nodes, generator=self._generator)[:self.max_nodes]
            subset = subset.to(device)
        else:
            subset = None
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
            h = z if self.temperature is None else unit / math.sqrt(self.temperature)
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
        return dict(zip(values, numbers, strict=True))

    def _select(self, has_pairs: bool, has_labels: bool) -> tuple[str, ...]:
        if self.metrics is None:
            return tuple(m for m in _AUTO if (has_pairs or m not in _NEEDS_PAIRS)
                         and (has_labels or m not in _NEEDS_LABELS))
        for metric in self.metrics:
            if metric in _NEEDS_PAIRS and not has_pairs:
                raise ValueError(f"metric '{metric}' needs positive pairs: pass 'sample' or "
                                 f"'edge_index'")
            if metric in _NEEDS_LABELS and not has_labels:
                raise ValueError(f"metric '{metric}' needs class labels: pass 'labels'")
        return self.metrics

    @staticmethod
    def _columns(chosen: Iterable[str]) -> list[str]:
        names = {"equilibrium_gap": ["equilibrium_tv", "equilibrium_kl"],
                 "class_distances": ["intra_class_distance", "inter_class_distance",
                                     "class_distance_ratio"],
                 "class_connectivity": ["class_lambda2_mean", "class_lambda2_min"]}
        return [column for metric in chosen for column in names.get(metric, [metric])]

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
