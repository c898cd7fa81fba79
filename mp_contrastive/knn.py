r"""Affinity graphs: the neighbour sets :math:`K(i)` of the uniformity energy, as PyG edge lists.

The uniformity energy of an anchor :math:`i` is :math:`\log \sum_{k \in K(i)} w_{ik} e^{h_i \cdot h_k}`
(:class:`~mp_contrastive.nn.UniformityConv`). Within a batch :math:`K(i)` is every other node (the
dense graph); with a memory bank of tens of thousands of negatives, or a graph of tens of thousands
of nodes, it is a sparse graph found by :math:`k`-nearest-neighbour search:

* :func:`affinity_graph` returns the :math:`k` nearest neighbours of every query as
  ``edge_index`` (``[2, E]``, row 0 = neighbour = source, row 1 = query = target) and their scores;
* :func:`sampled_affinity_graph` adds to that top-:math:`k` *head* an importance-sampled *tail* of
  the remaining candidates, with weights :math:`w_{ik}` such that
  :math:`\sum_k w_{ik} e^{h_i \cdot h_k}` is an unbiased estimate of the full partition function:
  renormalising the softmax over the head alone gets the gradient's direction but not its size;
* :class:`AffinityIndex` holds the searchable features (e.g. a memory bank) so that repeated
  searches and samples do not rebuild the index.

Backends: ``"exact"`` is a tiled ``torch`` matmul + top-:math:`k` with a running merge, whose memory
is bounded by the tile (``O((N + Q) d + Q k)``, never ``O(N Q)``) on any device; ``"faiss"`` uses a
faiss flat index (exact) or an IVF index (approximate, ``index="ivf"``) on the CPU, and faiss's GPU
index (``StandardGpuResources``) when the features are on CUDA and the installed faiss has GPU
support (otherwise CUDA features use the exact backend, which is fast there). ``"auto"`` picks
between the two exact engines by the crossover measured with ``benchmarks/affinity.py``
(see :func:`choose_backend`); it never silently switches to an approximate index.

Compared with :class:`torch_geometric.nn.pool.MIPSKNNIndex` / ``L2KNNIndex`` (which we measure
against): those return dense ``[Q, k]`` index/score matrices, always use faiss, cap ``k`` at 2048,
exclude links only by over-fetching up to the largest exclusion count and pad rows with ``-1``,
and break ties in whatever order faiss returns them. Here the result is an edge list ready for the
operators, self pairs can be excluded, ties are broken by the smaller index on every backend (so
the result is deterministic and the backends agree exactly up to floating-point ties), the exact
backend needs no faiss and runs on any torch device, and ``"cos"`` is a metric of its own.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mp_contrastive._validation import check_choice, check_edge_index, check_features

__all__ = [
    "METRICS",
    "BACKENDS",
    "INDEXES",
    "PROPOSALS",
    "AffinityIndex",
    "affinity_graph",
    "sampled_affinity_graph",
    "choose_backend",
    "faiss_gpu_available",
]

METRICS = ("ip", "cos", "l2")
BACKENDS = ("auto", "faiss", "exact")
INDEXES = ("flat", "ivf")
PROPOSALS = ("uniform", "cluster")

#: Similarity entries per tile of the exact backend (16 MiB in float32).
TILE_ELEMENTS = 1 << 22
#: Candidates per tile of the exact backend (columns), unless ``k`` is larger.
TILE_COLUMNS = 8192
#: faiss's GPU indexes return at most this many neighbours per query.
FAISS_GPU_MAX_K = 2048
# Share of the cluster proposal drawn uniformly (defensive importance sampling): bounds every
# importance weight by  num_candidates / (DEFENSIVE * num_samples).
DEFENSIVE = 0.1


def faiss_gpu_available() -> bool:
    """Whether the installed faiss was built with GPU support and sees a GPU."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a dependency
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


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
    if device.type == "cuda":
        return "faiss" if faiss_gpu_available() and k <= FAISS_GPU_MAX_K else "exact"
    if device.type != "cpu":
        return "exact"
    return "faiss" if num_queries >= 4096 and num_candidates >= 4096 else "exact"


def _check_k(k: object, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"'{name}' must be an int, got {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"'{name}' must be a positive number of neighbours, got {k}")
    return k


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
    """

    def __init__(self, x: Tensor, *, metric: str = "ip", backend: str = "auto",
                 index: str = "flat", nlist: int | None = None, nprobe: int | None = None,
                 seed: int = 0) -> None:
        x = check_features(x, "x").detach()
        self.metric = check_choice(metric, "metric", METRICS)
        self.backend = check_choice(backend, "backend", BACKENDS)
        self.index = check_choice(index, "index", INDEXES)
        if self.index == "ivf" and self.backend == "exact":
            raise ValueError("index='ivf' is a faiss index: use backend='faiss' or 'auto'")
        n = x.size(0)
        self.nlist = _check_k(nlist, "nlist") if nlist is not None else \
            max(1, min(int(4 * math.sqrt(n)), n // 39))
        if self.nlist > n:
            raise ValueError(f"'nlist' must be at most the number of candidates ({n}), "
                             f"got {self.nlist}")
        self._nprobe = max(1, self.nlist // 32) if nprobe is None else nprobe
        self.seed = int(seed)
        self.x = F.normalize(x, dim=1) if self.metric == "cos" else x
        self._sq_norm = self.x.pow(2).sum(1) if self.metric == "l2" else None
        self._faiss: Any = None
        self.nprobe = self._nprobe  # checked by the setter
        self._faiss_k_limit: int | None = None
        self._cells: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    @property
    def nprobe(self) -> int:
        """IVF cells visited per query: the speed/recall knob, adjustable at any time."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = min(self.nlist, _check_k(value, "nprobe"))
        if self._faiss is not None and self.index == "ivf":
            self._set_nprobe()

    def _set_nprobe(self) -> None:
        import faiss

        if self._faiss_k_limit is not None:  # a GPU index
            faiss.GpuParameterSpace().set_index_parameter(self._faiss, "nprobe", self._nprobe)
        else:
            faiss.extract_index_ivf(self._faiss).nprobe = self._nprobe

    @property
    def num_candidates(self) -> int:
        return self.x.size(0)

    @property
    def dim(self) -> int:
        return self.x.size(1)

    # -- search ----------------------------------------------------------------------------------
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
        q, same, k, exclude = self._check_search(k, queries, exclude_self, exclude)
        return _to_edges(*self._search(q, k, same, exclude), self.metric)

    def _search(self, q: Tensor, k: int, same: bool,
                exclude: Tensor | None) -> tuple[Tensor, Tensor]:
        """``[Q, k]`` candidate ids and rank keys (larger is nearer, ``-inf`` where none)."""
        if self._resolve(q.size(0), k) == "exact":
            return _exact_search(self.x, q, k, self.metric, same, exclude, self._sq_norm)
        return self._faiss_search(q, k, same, exclude)

    def _check_search(self, k: int, queries: Tensor | None, exclude_self: bool,
                      exclude: Tensor | None) -> tuple[Tensor, bool, int, Tensor | None]:
        k = _check_k(k)
        n = self.num_candidates
        if queries is None:
            same = bool(exclude_self)
            if k >= n + (0 if same else 1):
                raise ValueError(f"'k' must be below the number of nodes ({n}) when searching a "
                                 f"set against itself{' without self pairs' if same else ''}, "
                                 f"got k={k}")
            q = self.x
        else:
            same = False
            q = check_features(queries, "queries").detach()
            if q.size(1) != self.dim:
                raise ValueError(f"'queries' must have shape [num_queries, {self.dim}] (the "
                                 f"candidates' dimension), got {tuple(q.shape)}")
            if q.dtype != self.x.dtype:
                raise TypeError(f"'queries' must have the candidates' dtype {self.x.dtype}, "
                                f"got {q.dtype}")
            if k > n:
                raise ValueError(f"'k' must be at most the number of candidates ({n}), got {k}")
            if self.metric == "cos":
                q = F.normalize(q, dim=1)
        if q.device != self.x.device:
            raise ValueError(f"'queries' must be on the candidates' device {self.x.device}, "
                             f"got {q.device}")
        if exclude is not None:
            exclude = check_edge_index(exclude, n, q.size(0), "exclude").to(q.device)
        return q, same, k, exclude

    def _resolve(self, num_queries: int, k: int) -> str:
        if self.index == "ivf":
            return "faiss"
        if self.backend == "auto":
            return choose_backend(self.num_candidates, num_queries, k, self.x.device)
        return self.backend

    # -- faiss -----------------------------------------------------------------------------------
    def _faiss_index(self) -> Any:
        if self._faiss is not None:
            return self._faiss
        import faiss

        d = self.dim
        metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        data = self.x.detach().float().contiguous()
        if self.index == "flat":
            cpu = faiss.IndexFlat(d, metric)
        else:
            quantizer = faiss.IndexFlat(d, metric)
            cpu = faiss.IndexIVFFlat(quantizer, d, self.nlist, metric)
            self._quantizer = quantizer  # the IVF index only points at it: keep it alive
            cpu.cp.seed = self.seed
            cpu.cp.max_points_per_centroid = 64  # k-means on a subsample: the cells stay good
            cpu.train(data.cpu().numpy())
            cpu.nprobe = self.nprobe
        if data.is_cuda and faiss_gpu_available():
            import faiss.contrib.torch_utils  # noqa: F401  (lets faiss take CUDA tensors)

            self._gpu_resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_resources, data.device.index or 0, cpu)
            index.add(data)
            self._faiss_k_limit = FAISS_GPU_MAX_K
        else:
            index = cpu
            index.add(data.cpu().numpy())
        self._faiss = index
        if self.index == "ivf":
            self._set_nprobe()
        return index

    def _faiss_search(self, q: Tensor, k: int, same: bool,
                      exclude: Tensor | None) -> tuple[Tensor, Tensor]:
        index = self._faiss_index()
        n = self.num_candidates
        # Over-fetch by the most pairs any query may lose to the exclusions.
        extra = int(same)
        if exclude is not None and exclude.numel() > 0:
            extra += int(torch.bincount(exclude[1], minlength=q.size(0)).max())
        fetch = min(n, k + extra)
        if self._faiss_k_limit is not None and fetch > self._faiss_k_limit:
            return _exact_search(self.x, q, k, self.metric, same, exclude, self._sq_norm)
        if q.is_cuda and self._faiss_k_limit is not None:
            score, index_ = index.search(q.detach().float().contiguous(), fetch)
        else:
            import numpy as np

            score_np, index_np = index.search(np.ascontiguousarray(q.detach().float().cpu()
                                                                   .numpy()), fetch)
            score, index_ = torch.from_numpy(score_np), torch.from_numpy(index_np)
        score = score.to(device=q.device, dtype=q.dtype)
        index_ = index_.to(q.device)
        # Rank key: larger is nearer. Missing (-1), self and excluded entries go last as -inf.
        key = -score if self.metric == "l2" else score.clone()
        invalid = index_ < 0
        rows = torch.arange(q.size(0), device=q.device).unsqueeze(1)
        if same:
            invalid |= index_ == rows
        if exclude is not None and exclude.numel() > 0:
            invalid |= _contains(exclude[1] * n + exclude[0], rows * n + index_)
        key.masked_fill_(invalid, -math.inf)
        index_ = index_.masked_fill(invalid, n)  # sorts after every real candidate on ties
        key, index_ = _sort_by_key_then_index(key, index_)
        key, index_ = key[:, :k], index_[:, :k]
        return index_, key

    # -- sampling --------------------------------------------------------------------------------
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
        num_samples = _check_k(num_samples, "num_samples")
        check_choice(proposal, "proposal", PROPOSALS)
        q, same, k, exclude = self._check_search(k, queries, exclude_self, exclude)
        head, head_key = self._search(q, k, same, exclude)
        num_queries, n = q.size(0), self.num_candidates
        device, dtype = q.device, q.dtype
        # Draw num_samples candidates per query from the proposal p_i, with replacement.
        if proposal == "uniform":
            item = torch.randint(0, n, (num_queries, num_samples), device=device,
                                 generator=generator)
            prob = torch.full(item.shape, 1.0 / n, dtype=dtype, device=device)
        else:
            order, ptr, count, mean = self.cells()
            filled = (count > 0).nonzero().view(-1)  # empty cells are never drawn
            order_ptr, count, mean = ptr[filled], count[filled], mean[filled]
            cell_prob = torch.softmax(q @ mean.T + count.to(dtype).log(), 1)
            cell_prob.mul_(1 - DEFENSIVE).add_(count.to(dtype) * (DEFENSIVE / n))
            # Systematic sampling: one uniform offset u per query and the evenly spaced points
            # (u + j) / m through the cells' CDF, so each cell gets the floor or the ceiling of
            # m p_i(c) draws: no multinomial noise in the counts, same expected counts (weights).
            cdf = cell_prob.cumsum(1)
            cdf[:, -1] = 1.0  # exactly m draws per query despite rounding (with the clamp)
            offset = torch.rand(num_queries, 1, device=device, dtype=dtype, generator=generator)
            reached = (cdf * num_samples + offset).floor_().long().clamp_max_(num_samples)
            per_cell = torch.diff(reached, dim=1, prepend=torch.zeros_like(reached[:, :1]))
            cells = torch.arange(count.numel(), device=device).expand_as(per_cell)
            cell = torch.repeat_interleave(cells.reshape(-1), per_cell.reshape(-1),
                                           output_size=num_queries * num_samples)
            cell = cell.view(num_queries, num_samples)
            size = count[cell]
            slot = (torch.rand(cell.shape, device=device, dtype=dtype, generator=generator)
                    * size.to(dtype)).long().clamp_max_(size - 1)
            item = order.index_select(0, (order_ptr[cell] + slot).view(-1)).view(cell.shape)
            prob = cell_prob.gather(1, cell) / size.to(dtype)
        # Hansen-Hurwitz: sum_j 1[k_j in tail] f(k_j) / (m p_i(k_j)) is unbiased for the tail's
        # sum whatever the head is (so an approximate IVF head keeps the estimate unbiased).
        weight = 1.0 / (num_samples * prob)
        rows = torch.arange(num_queries, device=device).unsqueeze(1)
        keep = ~_contains((rows * n + head)[head_key > -math.inf], rows * n + item)
        if same:
            keep &= item != rows
        if exclude is not None:
            keep &= ~_contains(exclude[1] * n + exclude[0], rows * n + item)
        # Rows of [head | tail] flattened row-major: edges grouped by query, head first. Repeated
        # draws of a pair stay separate edges (their weights add up in the operator's sum).
        index = torch.cat([head, item], 1)
        valid = torch.cat([head_key > -math.inf, keep], 1)
        edge_weight = torch.cat([torch.ones_like(head_key), weight], 1)[valid]
        dst = rows.expand_as(index)[valid]
        return torch.stack([index[valid], dst]), edge_weight

    def cells(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The clustering behind the ``"cluster"`` proposal: ``(order, ptr, count, mean)`` with
        candidate ids sorted by cell, cell offsets into them, cell sizes and cell means. The IVF
        index's own cells when there is one, else a k-means of ``nlist`` cells (computed once)."""
        if self._cells is not None:
            return self._cells
        import faiss

        if self.index == "ivf" and self._faiss_index() is not None and self._faiss_k_limit is None:
            ivf = faiss.extract_index_ivf(self._faiss)  # the CPU index's own cells
            invlists = ivf.invlists
            assign = torch.empty(self.num_candidates, dtype=torch.long)
            for cell in range(ivf.nlist):
                size = invlists.list_size(cell)
                if size:
                    ids = faiss.rev_swig_ptr(invlists.get_ids(cell), size)
                    assign[torch.from_numpy(ids.copy())] = cell
        else:
            data = self.x.detach().float().cpu().contiguous().numpy()
            kmeans = faiss.Kmeans(self.dim, self.nlist, niter=10, seed=self.seed,
                                  max_points_per_centroid=64,
                                  spherical=False, verbose=False)
            kmeans.train(data)
            _, nearest = kmeans.index.search(data, 1)
            assign = torch.from_numpy(nearest[:, 0]).long()
        assign = assign.to(self.x.device)
        count = torch.bincount(assign, minlength=self.nlist)
        order = torch.argsort(assign, stable=True)
        ptr = torch.cumsum(count, 0) - count
        mean = torch.zeros(self.nlist, self.dim, dtype=self.x.dtype, device=self.x.device)
        mean.index_add_(0, assign, self.x).div_(count.clamp_min(1).unsqueeze(1).to(self.x.dtype))
        self._cells = (order, ptr, count, mean)
        return self._cells

    def __repr__(self) -> str:
        extra = f", nlist={self.nlist}, nprobe={self.nprobe}" if self.index == "ivf" else ""
        return (f"{self.__class__.__name__}(num_candidates={self.num_candidates}, dim={self.dim}, "
                f"metric='{self.metric}', backend='{self.backend}', index='{self.index}'{extra})")


def affinity_graph(x: Tensor, k: int, *, queries: Tensor | None = None, metric: str = "ip",
                   backend: str = "auto", exclude_self: bool = True, exclude: Tensor | None = None,
                   index: str = "flat", nlist: int | None = None,
                   nprobe: int | None = None) -> tuple[Tensor, Tensor]:
    r"""The :math:`k`-nearest-neighbour affinity graph of ``queries`` (default ``x`` itself) among
    the rows of ``x``, as ``(edge_index, score)``: ``edge_index[0]`` indexes ``x`` (source =
    neighbour), ``edge_index[1]`` the queries (target = anchor), ready for
    ``UniformityConv()(x, edge_index)`` or, with queries, ``UniformityConv()((x, queries),
    edge_index)``. Edges are grouped by query and nearest first, ties broken by the smaller index.

    .. math::
        K(i) = \operatorname{top-}k_{j \ne i}\; s(q_i, x_j), \qquad s = q \cdot x \ (\texttt{ip}),\
        \cos(q, x) \ (\texttt{cos}),\ -\|q - x\|^2 \ (\texttt{l2}; \text{the score returned is }
        \|q - x\|^2).

    Builds a one-off :class:`AffinityIndex`; keep one to search the same candidates repeatedly. See
    :meth:`AffinityIndex.search` for the arguments.
    """
    return AffinityIndex(x, metric=metric, backend=backend, index=index, nlist=nlist,
                         nprobe=nprobe).search(k, queries, exclude_self=exclude_self,
                                               exclude=exclude)


def sampled_affinity_graph(x: Tensor, k: int, num_samples: int, *, queries: Tensor | None = None,
                           proposal: str = "cluster", backend: str = "auto",
                           exclude_self: bool = True, exclude: Tensor | None = None,
                           index: str = "flat", nlist: int | None = None,
                           nprobe: int | None = None,
                           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    r"""A sparse affinity graph whose uniformity *gradient* stays close to the dense one:
    ``(edge_index, edge_weight)`` for ``UniformityConv()(x, edge_index, edge_weight)`` (or
    ``((x, queries), ...)``).

    For each anchor :math:`i` with candidates :math:`C(i)` (all rows of ``x``, minus ``i`` itself
    and the ``exclude`` pairs), the head :math:`T(i)` is its top-``k`` by inner product (weight 1)
    and the tail :math:`C(i) \setminus T(i)` is represented by ``num_samples`` draws
    :math:`k_1, \dots, k_m` from a proposal :math:`p_i`, draws that fall in the head or are
    excluded dropped, each kept draw weighted :math:`1 / (m\, p_i(k_j))`:

    .. math::
        \hat{Z}_i = \sum_{k \in T(i)} e^{h_i \cdot h_k}
        + \sum_{j=1}^{m} \frac{\mathbb{1}[k_j \notin T(i)]}{m\, p_i(k_j)}\, e^{h_i \cdot h_{k_j}},
        \qquad \mathbb{E}\, \hat{Z}_i = \sum_{k \in C(i)} e^{h_i \cdot h_k}

    (Hansen-Hurwitz; unbiased for any head, so an approximate IVF head is fine). The operator's
    step is then the self-normalised importance-sampling estimate of the dense softmax-weighted
    mean :math:`\sum_k \hat{A}_{ik} h_k`, so it matches the dense gradient in size as well as
    direction, up to sampling noise. Proposals:

    * ``"uniform"``: :math:`p_i(k) = 1/N`, independent draws (the sampled-softmax baseline);
    * ``"cluster"``: a k-means (or the IVF index's) partition of ``x`` into ``nlist`` cells with
      sizes :math:`n_c` and means :math:`\mu_c`; cells are drawn with probability
      :math:`\propto n_c e^{h_i \cdot \mu_c}` (mixed with 10% of the uniform proposal, which bounds
      the weights) by systematic sampling (each cell gets the floor or ceiling of its expected
      count), then members uniformly: cluster-mates that missed the head are drawn about as often
      as their softmax mass asks.

    Measured (``benchmarks/affinity.py``; 512 anchors, 65k clustered negatives, d = 128,
    temperature 0.1): the top-64 alone gives cosine 0.983 but 1.87x the dense gradient's norm;
    top-16 + 384 cluster draws give cosine 0.993 and the norm within 1%, 5.7x faster than the dense
    step (1 thread; IVF head with ``nprobe=1``); ``"uniform"`` needs about 16x more draws for the
    same error. When the softmax is flat (unclustered features, or temperature 0.5) every
    candidate matters a little and a few hundred draws are not enough (cosine 0.8-0.9): keep the
    dense (blockwise) path there.

    Edges are grouped by anchor, head first; repeated draws of a pair stay separate edges (their
    weights add up in the operator's sum).

    Args:
        x (Tensor): candidate features ``[N, d]`` (already scaled, e.g. :math:`z / \sqrt{\tau}`).
        k (int): head size. num_samples (int): tail draws per anchor.
        queries (Tensor, optional): anchors ``[Q, d]``; default ``x`` (in-batch).
        proposal (str): ``"cluster"`` (default) or ``"uniform"``.
        generator (torch.Generator, optional): for reproducible draws.
        backend, exclude_self, exclude, index, nlist, nprobe: as in :func:`affinity_graph`.
    """
    return AffinityIndex(x, metric="ip", backend=backend, index=index, nlist=nlist,
                         nprobe=nprobe).sample(k, num_samples, queries, proposal=proposal,
                                               exclude_self=exclude_self, exclude=exclude,
                                               generator=generator)


# -- the exact backend ---------------------------------------------------------------------------------
def _contains(reference: Tensor, values: Tensor) -> Tensor:
    """``torch.isin(values, reference)`` by binary search in the sorted reference (isin sorts both
    sides; the reference here is the smaller one)."""
    reference = torch.sort(reference.reshape(-1)).values
    if reference.numel() == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    pos = torch.searchsorted(reference, values).clamp_max_(reference.numel() - 1)
    return reference[pos] == values


def _sort_by_key_then_index(key: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Rows sorted by ``key`` descending, ties by ``index`` ascending (two stable sorts)."""
    by_index = torch.argsort(index, dim=1, stable=True)
    key, index = key.gather(1, by_index), index.gather(1, by_index)
    by_key = torch.argsort(key, dim=1, descending=True, stable=True)
    return key.gather(1, by_key), index.gather(1, by_key)


def _tile_topk(s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` of each row, ties at the boundary resolved to the smaller column index."""
    key, index = s.topk(k, 1)
    bound = key[:, -1:]
    # Rows with more entries equal to their k-th value than were kept: the choice among the
    # tied entries was topk's; redo those rows with a stable sort (rare with continuous data).
    ambiguous = ((s == bound).sum(1) > (key == bound).sum(1)).nonzero().view(-1)
    if ambiguous.numel() > 0:
        sorted_key, sorted_index = torch.sort(s.index_select(0, ambiguous), dim=1,
                                              descending=True, stable=True)
        key[ambiguous], index[ambiguous] = sorted_key[:, :k], sorted_index[:, :k]
    return key, index


def _exact_search(x: Tensor, q: Tensor, k: int, metric: str, same: bool, exclude: Tensor | None,
                  sq_norm: Tensor | None) -> tuple[Tensor, Tensor]:
    """Tiled ``q @ x.T`` with a running top-``k`` per query: ``[Q, k]`` candidate ids (``N`` for
    none) and rank keys (larger is nearer, ``-inf`` for none; ``-|q - x|^2`` for l2); never more
    than one tile of similarities."""
    n, num_queries = x.size(0), q.size(0)
    cols = min(n, max(k, TILE_COLUMNS))
    rows = max(1, min(num_queries, TILE_ELEMENTS // cols))
    if exclude is not None:
        order = torch.argsort(exclude[1], stable=True)
        ex_src, ex_dst = exclude[0, order], exclude[1, order]
    out_key = q.new_empty(num_queries, k)
    out_index = torch.empty(num_queries, k, dtype=torch.long, device=q.device)
    for r0 in range(0, num_queries, rows):
        r1 = min(num_queries, r0 + rows)
        best_key = q.new_empty(r1 - r0, 0)
        best_index = torch.empty(r1 - r0, 0, dtype=torch.long, device=q.device)
        if exclude is not None:
            lo, hi = torch.searchsorted(ex_dst, torch.tensor([r0, r1], device=q.device)).tolist()
        for c0 in range(0, n, cols):
            c1 = min(n, c0 + cols)
            s = q[r0:r1] @ x[c0:c1].T
            if metric == "l2":  # argmin |q - x|^2 = argmax 2 q.x - |x|^2
                assert sq_norm is not None
                s.mul_(2.0).sub_(sq_norm[c0:c1])
            if same:
                s.diagonal(r0 - c0).fill_(-math.inf)
            if exclude is not None and hi > lo:
                src, dst = ex_src[lo:hi], ex_dst[lo:hi]
                inside = (src >= c0) & (src < c1)
                s[dst[inside] - r0, src[inside] - c0] = -math.inf
            key, index = _tile_topk(s, min(k, c1 - c0))
            best_key = torch.cat([best_key, key], 1)
            best_index = torch.cat([best_index, index + c0], 1)
            if best_key.size(1) > k:
                best_key, best_index = _sort_by_key_then_index(best_key, best_index)
                best_key, best_index = best_key[:, :k], best_index[:, :k]
        best_key, best_index = _sort_by_key_then_index(best_key, best_index)
        out_key[r0:r1], out_index[r0:r1] = best_key, best_index
    out_index.masked_fill_(out_key == -math.inf, n)
    if metric == "l2":  # rank key 2 q.x - |x|^2 to -|q - x|^2, the faiss backend's key
        out_key.sub_(q.pow(2).sum(1, keepdim=True)).clamp_max_(0.0)
    return out_index, out_key


def _to_edges(index: Tensor, key: Tensor, metric: str) -> tuple[Tensor, Tensor]:
    """``[Q, k]`` candidate ids and rank keys (``-inf``: no candidate) to ``(edge_index, score)``."""
    valid = key > -math.inf
    dst = torch.arange(index.size(0), device=index.device).repeat_interleave(valid.sum(1))
    score = key[valid]
    return torch.stack([index[valid], dst]), (-score if metric == "l2" else score)
