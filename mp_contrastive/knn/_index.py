"""The searchable candidate set :class:`AffinityIndex` and the rule ``backend="auto"`` follows."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mp_contrastive._validation import (
    check_choice,
    check_device_arg,
    check_edge_index,
    check_features,
    check_generator,
    check_nonnegative_int,
    check_positive_int,
    check_product_range,
    unit_rows,
)
from mp_contrastive.knn._exact import exact_search, to_edges
from mp_contrastive.knn._faiss_backend import FAISS_GPU_MAX_K, FaissIndex, faiss_gpu_available
from mp_contrastive.knn._sampling import (
    PROPOSALS,
    Cells,
    cluster_cells,
    kmeans_assignment,
    sample_tail,
)
from mp_contrastive.nn.functional._tiling import DEFAULT_TILING, Tiling, check_tiling

__all__ = ["SIMILARITY_METRICS", "BACKENDS", "INDEXES", "AffinityIndex", "choose_backend"]

#: How a query and a candidate are scored: inner product, cosine, squared L2 distance (the
#: ``metric`` argument; a different idea from :data:`mp_contrastive.monitor.METRICS`, the
#: measurements of the learning dynamics).
SIMILARITY_METRICS = ("ip", "cos", "l2")
BACKENDS = ("auto", "faiss", "exact")
INDEXES = ("flat", "ivf")


def choose_backend(num_candidates: int, num_queries: int, k: int, device: torch.device) -> str:
    """The exact engine ``backend="auto"`` uses: ``"faiss"`` or ``"exact"``.

    On CUDA: faiss's GPU index when available (and ``k`` within its limit), else the torch tiles
    (the GPU branch is written against faiss's documented GPU API but could not be run here: no
    GPU). On the CPU the rule encodes the crossover measured by ``benchmarks/affinity.py --sections
    search`` (1 thread, MKL, faiss 1.15, d = 128, k = 64): for a batch of 512 queries against a
    bank the torch tiles are as fast at 16k candidates and 2.3x faster at 65k and 262k, while for
    all-pairs graphs faiss's flat index (BLAS over 4096-query blocks, fused heaps) is 2.2x faster
    at 8k nodes and 3x at 19.7k. Neither engine is approximate; for that ask for ``index="ivf"``.
    """
    device = _checked_backend_args(num_candidates, num_queries, k, device)
    if device.type == "cuda":
        return "faiss" if faiss_gpu_available() and k <= FAISS_GPU_MAX_K else "exact"
    if device.type != "cpu":
        return "exact"
    return "faiss" if num_queries >= 4096 and num_candidates >= 4096 else "exact"


def _checked_backend_args(num_candidates: object, num_queries: object, k: object,
                          device: object) -> torch.device:
    for name, value in (("num_candidates", num_candidates), ("num_queries", num_queries),
                        ("k", k)):
        check_positive_int(value, name)
    checked = check_device_arg(device)
    if checked is None:
        raise TypeError("'device' must be a torch.device or a device string, got None")
    return checked


class AffinityIndex:
    r"""A searchable set of candidate neighbours :math:`X \in \mathbb{R}^{N \times d}` (a memory
    bank, or a graph's node features), for repeated :meth:`search` and :meth:`sample` calls.

    Scores: ``"ip"`` :math:`q \cdot x` and ``"cos"`` :math:`\cos(q, x)` (larger is nearer),
    ``"l2"`` :math:`\|q - x\|^2` (smaller is nearer).

    Args:
        x (Tensor): candidates ``[N, d]`` (floating point, finite). Not copied by the exact backend;
            the index reflects ``x`` at construction for faiss.
        metric (str): ``"ip"``, ``"cos"`` or ``"l2"`` (default ``"ip"``, the uniformity's score).
        backend (str): ``"auto"``, ``"faiss"`` or ``"exact"``.
        index (str): ``"flat"`` (exact search) or ``"ivf"`` (faiss IVF: approximate, much faster on
            large sets; trained once here).
        nlist (int, optional): IVF cells, and clusters of the ``"cluster"`` sampling proposal
            (default :math:`\approx 4\sqrt{N}`, at most :math:`N / 39`).
        nprobe (int, optional): IVF cells visited per query (default ``max(1, nlist // 32)``).
        seed (int): seed of the k-means clustering (IVF training, cluster proposal).
        tiling (Tiling): tile size of the exact backend's similarity tiles.
    """

    def __init__(self, x: Tensor, *, metric: str = "ip", backend: str = "auto",
                 index: str = "flat", nlist: int | None = None, nprobe: int | None = None,
                 seed: int = 0, tiling: Tiling = DEFAULT_TILING) -> None:
        x = check_features(x, "x").detach()
        self.metric = check_choice(metric, "metric", SIMILARITY_METRICS)
        self.backend = check_choice(backend, "backend", BACKENDS)
        self.index = check_choice(index, "index", INDEXES)
        if self.index == "ivf" and self.backend == "exact":
            raise ValueError("index='ivf' is a faiss index: use backend='faiss' or 'auto'")
        n = x.size(0)
        self.nlist = check_positive_int(nlist, "nlist") if nlist is not None else \
            max(1, min(int(4 * math.sqrt(n)), n // 39))
        if self.nlist > n:
            raise ValueError(f"'nlist' must be at most the number of candidates ({n}), "
                             f"got {self.nlist}")
        self.seed = check_nonnegative_int(seed, "seed")
        self.tiling = check_tiling(tiling)
        # cos: unit_rows keeps rows of any scale (1e-13, 1e30) at their direction; the other
        # metrics' scores must not overflow (faiss would abort the process on inf).
        self.x = unit_rows(x) if self.metric == "cos" else check_product_range(x, "x")
        self._sq_norm = self.x.pow(2).sum(1) if self.metric == "l2" else None
        #: The faiss index over ``x``, built on the first search (or clustering) that needs it.
        self.faiss_index = FaissIndex(self.x, self.metric, self.index, self.nlist, self.seed)
        self.nprobe = max(1, self.nlist // 32) if nprobe is None else nprobe  # checked
        self._cells: Cells | None = None

    @property
    def nprobe(self) -> int:
        """IVF cells visited per query: the speed/recall knob, adjustable at any time."""
        return self.faiss_index.nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.faiss_index.nprobe = min(self.nlist, check_positive_int(value, "nprobe"))

    @property
    def num_candidates(self) -> int:
        return self.x.size(0)

    @property
    def dim(self) -> int:
        return self.x.size(1)

    def search(self, k: int, queries: Tensor | None = None, *, exclude_self: bool = True,
               exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""The :math:`k` nearest candidates of every query, as ``(edge_index, score)``.

        ``edge_index[0]`` indexes the candidates (source, neighbour :math:`k`), ``edge_index[1]``
        the queries (target, anchor :math:`i`); edges are grouped by query in ascending order and,
        within a query, nearest first, ties broken by the smaller candidate index. A query gets
        fewer than ``k`` edges only when fewer candidates remain after the exclusions (or, for
        ``index="ivf"``, when its probed cells hold fewer). Scores carry no gradient.

        Args:
            k (int): neighbours per query; without ``queries`` at most :math:`N - 1` (:math:`N`
                with ``exclude_self=False``), otherwise at most :math:`N`.
            queries (Tensor, optional): ``[Q, d]``; default the candidates themselves (a kNN graph).
            exclude_self (bool): without ``queries``, never return the pair :math:`(i, i)`.
                Ignored when ``queries`` are given (a different node set).
            exclude (Tensor, optional): ``[2, P]`` pairs (candidate, query) never to return, e.g. the
                positives of each query's sample.
        """
        q, same, k, exclude = _check_search(self, k, queries, exclude_self, exclude)
        return to_edges(*self._search(q, k, same, exclude), self.metric)

    def sample(self, k: int, num_samples: int, queries: Tensor | None = None, *,
               proposal: str = "cluster", exclude_self: bool = True,
               exclude: Tensor | None = None,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        r"""A sampled affinity graph ``(edge_index, edge_weight)``: the top-``k`` head with weight 1
        plus ``num_samples`` importance-sampled tail draws per query (see
        :func:`sampled_affinity_graph`)."""
        if self.metric != "ip":
            raise ValueError(f"sampling estimates the partition function of inner products: the "
                             f"index needs metric='ip', got {self.metric!r}")
        num_samples = check_positive_int(num_samples, "num_samples")
        check_generator(generator)
        check_choice(proposal, "proposal", PROPOSALS)
        q, same, k, exclude = _check_search(self, k, queries, exclude_self, exclude)
        head, head_key = self._search(q, k, same, exclude)
        cells = self.cells() if proposal == "cluster" else None
        return sample_tail(q, head, head_key, self.num_candidates, num_samples, cells=cells,
                           same=same, exclude=exclude, generator=generator)

    def cells(self) -> Cells:
        """The clustering behind the ``"cluster"`` proposal: ``(order, ptr, count, mean)`` with
        candidate ids sorted by cell, cell offsets into them, cell sizes and cell means. The IVF
        index's own cells when there is one, else a k-means of ``nlist`` cells (computed once)."""
        if self._cells is None:
            assign = self.faiss_index.cell_assignment()
            if assign is None:
                assign = kmeans_assignment(self.x, self.nlist, self.seed)
            self._cells = cluster_cells(self.x, assign, self.nlist)
        return self._cells

    def resolve_backend(self, num_queries: int, k: int) -> str:
        """The engine, ``"exact"`` or ``"faiss"``, that a search of ``num_queries`` queries for
        ``k`` neighbours runs on."""
        if self.index == "ivf":
            return "faiss"
        if self.backend == "auto":
            return choose_backend(self.num_candidates, num_queries, k, self.x.device)
        return self.backend

    def _search(self, q: Tensor, k: int, same: bool,
                exclude: Tensor | None) -> tuple[Tensor, Tensor]:
        """``[Q, k]`` candidate ids and rank keys (larger is nearer, ``-inf`` where none)."""
        if self.resolve_backend(q.size(0), k) == "faiss":
            found = self.faiss_index.search(q, k, same, exclude)
            if found is not None:
                return found
        # The exact backend, also for over-fetches beyond faiss's GPU limit.
        return exact_search(self.x, q, k, self.metric, same, exclude, self._sq_norm, self.tiling)

    def __repr__(self) -> str:
        extra = f", nlist={self.nlist}, nprobe={self.nprobe}" if self.index == "ivf" else ""
        if self.tiling != DEFAULT_TILING:
            extra += f", tiling={self.tiling}"
        return (f"{self.__class__.__name__}(num_candidates={self.num_candidates}, dim={self.dim}, "
                f"metric='{self.metric}', backend='{self.backend}', index='{self.index}'{extra})")


def _check_search(index: AffinityIndex, k: int, queries: Tensor | None, exclude_self: bool,
                  exclude: Tensor | None) -> tuple[Tensor, bool, int, Tensor | None]:
    """The validated ``(queries, same, k, exclude)`` of a search of ``index``."""
    k = check_positive_int(k, "k")
    n = index.num_candidates
    if queries is None:
        same = bool(exclude_self)
        if k >= n + (0 if same else 1):
            raise ValueError(f"'k' must be below the number of nodes ({n}) when searching a "
                             f"set against itself{' without self pairs' if same else ''}, "
                             f"got k={k}")
        q = index.x
    else:
        same = False
        q = check_features(queries, "queries").detach()
        if q.size(1) != index.dim:
            raise ValueError(f"'queries' must have shape [num_queries, {index.dim}] (the "
                             f"candidates' dimension), got {tuple(q.shape)}")
        if q.dtype != index.x.dtype:
            raise TypeError(f"'queries' must have the candidates' dtype {index.x.dtype}, "
                            f"got {q.dtype}")
        if k > n:
            raise ValueError(f"'k' must be at most the number of candidates ({n}), got {k}")
        if q.device != index.x.device:
            raise ValueError(f"'queries' must be on the candidates' device {index.x.device} "
                             f"(that of 'x'), got {q.device}")
        q = unit_rows(q) if index.metric == "cos" else check_product_range(q, "queries")
    if exclude is not None:
        exclude = check_edge_index(exclude, n, q.size(0), "exclude", device=q.device,
                                   ref="queries" if queries is not None else "x", move=True)
    return q, same, k, exclude
