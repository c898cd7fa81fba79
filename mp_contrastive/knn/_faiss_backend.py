"""The ``"faiss"`` backend: a faiss flat (exact) or IVF (approximate) index over the candidates,
on faiss's GPU index when the candidates are on CUDA and faiss has GPU support, and its search
with the self and excluded pairs removed."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from mp_contrastive.knn._exact import contains, sort_by_key_then_index

__all__ = ["FAISS_GPU_MAX_K", "faiss_gpu_available", "FaissIndex", "ranked_results"]

#: faiss's GPU indexes return at most this many neighbours per query.
FAISS_GPU_MAX_K = 2048


def faiss_gpu_available() -> bool:
    """Whether the installed faiss was built with GPU support and sees a GPU."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a dependency
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class FaissIndex:
    r"""A faiss index over the candidates ``x`` (``[N, d]``), built on first use.

    Args:
        x (Tensor): candidates (normalised already for ``"cos"``); copied into the index once.
        metric (str): ``"ip"``, ``"cos"`` or ``"l2"``.
        kind (str): ``"flat"`` or ``"ivf"``.
        nlist (int): IVF cells. seed (int): seed of the IVF k-means.
        nprobe (int): IVF cells visited per query.
    """

    def __init__(self, x: Tensor, metric: str, kind: str, nlist: int, seed: int,
                 nprobe: int = 1) -> None:
        self.x, self.metric, self.kind = x, metric, kind
        self.nlist, self.seed = nlist, seed
        self._nprobe = nprobe
        self._index: Any = None
        #: Most neighbours one search may fetch (``None``: no limit, the CPU index).
        self.k_limit: int | None = None

    @property
    def nprobe(self) -> int:
        """IVF cells visited per query; applied to a built index at once."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = value
        if self._index is not None and self.kind == "ivf":
            self._apply_nprobe()

    def _apply_nprobe(self) -> None:
        import faiss

        if self.k_limit is not None:  # a GPU index
            faiss.GpuParameterSpace().set_index_parameter(self._index, "nprobe", self._nprobe)
        else:
            faiss.extract_index_ivf(self._index).nprobe = self._nprobe

    def build(self) -> Any:
        """The faiss index (trained and filled on the first call)."""
        if self._index is not None:
            return self._index
        import faiss

        d = self.x.size(1)
        metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        data = self.x.detach().float().contiguous()
        if self.kind == "flat":
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
            self.k_limit = FAISS_GPU_MAX_K
        else:
            index = cpu
            index.add(data.cpu().numpy())
        self._index = index
        if self.kind == "ivf":
            self._apply_nprobe()
        return index

    def search(self, q: Tensor, k: int, same: bool,
               exclude: Tensor | None) -> tuple[Tensor, Tensor] | None:
        """``[Q, k]`` candidate ids (``N`` for none) and rank keys (larger is nearer, ``-inf`` for
        none), or ``None`` when the over-fetch the exclusions need exceeds :attr:`k_limit`."""
        index = self.build()
        n = self.x.size(0)
        # Over-fetch by the most pairs any query may lose to the exclusions.
        extra = int(same)
        if exclude is not None and exclude.numel() > 0:
            extra += int(torch.bincount(exclude[1], minlength=q.size(0)).max())
        fetch = min(n, k + extra)
        if self.k_limit is not None and fetch > self.k_limit:
            return None
        if q.is_cuda and self.k_limit is not None:
            score, index_ = index.search(q.detach().float().contiguous(), fetch)
        else:
            import numpy as np

            score_np, index_np = index.search(np.ascontiguousarray(q.detach().float().cpu()
                                                                   .numpy()), fetch)
            score, index_ = torch.from_numpy(score_np), torch.from_numpy(index_np)
        index_, key = ranked_results(score.to(device=q.device, dtype=q.dtype),
                                     index_.to(q.device), n, self.metric, same, exclude)
        return index_[:, :k], key[:, :k]

    def cell_assignment(self) -> Tensor | None:
        """The IVF cell of every candidate (CPU, ``[N]``), or ``None`` for a flat or GPU index."""
        if self.kind != "ivf":
            return None
        self.build()
        if self.k_limit is not None:  # a GPU index: its lists are not read from here
            return None
        import faiss

        ivf = faiss.extract_index_ivf(self._index)
        invlists = ivf.invlists
        assign = torch.empty(self.x.size(0), dtype=torch.long)
        for cell in range(ivf.nlist):
            size = invlists.list_size(cell)
            if size:
                ids = faiss.rev_swig_ptr(invlists.get_ids(cell), size)
                assign[torch.from_numpy(ids.copy())] = cell
        return assign


def ranked_results(score: Tensor, index: Tensor, n: int, metric: str, same: bool,
                   exclude: Tensor | None) -> tuple[Tensor, Tensor]:
    """faiss's ``[Q, k]`` scores and ids as ``(ids, rank keys)`` in the order every backend uses:
    larger key is nearer, ties by the smaller id; missing (-1), self and ``exclude``d entries
    (``[2, P]`` (candidate, query) pairs among ``n`` candidates) go last as ``(n, -inf)``."""
    key = -score if metric == "l2" else score.clone()
    invalid = index < 0
    rows = torch.arange(index.size(0), device=index.device).unsqueeze(1)
    if same:
        invalid |= index == rows
    if exclude is not None and exclude.numel() > 0:
        invalid |= contains(exclude[1] * n + exclude[0], rows * n + index)
    key.masked_fill_(invalid, -math.inf)
    index = index.masked_fill(invalid, n)  # sorts after every real candidate on ties
    key, index = sort_by_key_then_index(key, index)
    return index, key
