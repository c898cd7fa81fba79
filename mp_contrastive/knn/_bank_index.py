r"""A sparse affinity graph over a memory bank that is kept up to date as the bank turns over.

:class:`BankIndex` answers, for a batch of anchors, the graph of
:func:`~mp_contrastive.knn.sampled_affinity_graph` against a
:class:`~mp_contrastive.memory.NegativeBank`: the top-``k`` head (weight 1) plus ``num_samples``
importance-sampled tail draws per anchor, weighted so that the weighted sum of
:math:`e^{a_i \cdot n_k}` is an unbiased estimate of the anchor's whole partition function over the
bank. Nothing is rebuilt per step:

* the head comes from a faiss ``IndexIVFFlat`` (inner product) whose entries are the bank's slots:
  after each :meth:`~mp_contrastive.memory.NegativeBank.push` the overwritten slots are removed
  (``remove_ids``) and the new keys added under the same ids (``add_with_ids``);
* its centroids (spherical k-means) are re-trained every ``retrain_every`` updates, so the cells
  follow the drifting features; the tail's cluster proposal reads the same cells;
* the centroids, each slot's cell and the update counter are buffers: ``state_dict`` round-trips
  them and the faiss index is rebuilt from them, so a resumed run searches the same lists.

On a CUDA bank ``backend="auto"`` takes the head from the exact search's tiles (a ``B x K``
matmul costs a GPU less than moving the keys to a CPU index, and faiss's GPU indexes cannot remove
ids: faiss issues #584, #1818);
``backend="faiss"`` keeps the CPU IVF index for any device and ``"exact"`` the tiles everywhere.
Until the bank holds enough keys to train the cells (39 per cell, faiss's minimum) :meth:`graph`
returns ``None``: the caller uses the dense bank, which is small then (a bank of fewer slots trains
when it is full).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mp_contrastive._validation import check_choice, check_nonnegative_int, check_positive_int
from mp_contrastive.knn._exact import exact_search
from mp_contrastive.knn._faiss_backend import ranked_results
from mp_contrastive.knn._sampling import cluster_cells, sample_tail
from mp_contrastive.nn.functional._tiling import DEFAULT_TILING, Tiling, check_tiling

__all__ = ["BankIndex", "BANK_BACKENDS"]

BANK_BACKENDS = ("auto", "faiss", "exact")
# faiss's k-means asks for at least this many training points per centroid.
_POINTS_PER_CELL = 39


class BankIndex(nn.Module):
    r"""The kNN head + sampled tail affinity graph of a memory bank (module docstring).

    Args:
        k (int): head size: nearest bank entries per anchor, by inner product (default ``32``).
        num_samples (int): tail draws per anchor from the cluster proposal (default ``256``).
        nlist (int, optional): IVF cells (default :math:`\approx \sqrt{K}`, at least 1).
        nprobe (int, optional): cells visited per head search (default ``max(1, nlist // 64)``:
            the head need not be exact, the tail's weights keep the estimate unbiased whatever
            the head holds, and a wider probe costs more than it gains; see
            ``benchmarks/memory_bank.py``).
        retrain_every (int): bank updates between two trainings of the centroids (default 100).
        backend (str): ``"auto"``, ``"faiss"`` or ``"exact"`` (see the module docstring).
        seed (int): seed of the k-means and of the tail draws (the draws of update ``t`` use
            ``seed`` and ``t``, so a resumed run draws the same samples).
        tiling (Tiling): tile size of the exact head search.
    """

    centroids: Tensor
    cell: Tensor
    updates: Tensor

    def __init__(self, k: int = 32, num_samples: int = 256, *, nlist: int | None = None,
                 nprobe: int | None = None, retrain_every: int = 100, backend: str = "auto",
                 seed: int = 0, tiling: Tiling = DEFAULT_TILING) -> None:
        super().__init__()
        self.k = check_positive_int(k, "k")
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.nlist = None if nlist is None else check_positive_int(nlist, "nlist")
        self.nprobe = None if nprobe is None else check_positive_int(nprobe, "nprobe")
        self.retrain_every = check_positive_int(retrain_every, "retrain_every")
        self.backend = check_choice(backend, "backend", BANK_BACKENDS)
        self.seed = check_nonnegative_int(seed, "seed")
        self.tiling = check_tiling(tiling)
        # Empty until the first training: [nlist, d] centroids, each slot's cell (-1: empty).
        self.register_buffer("centroids", torch.zeros(0, 0))
        self.register_buffer("cell", torch.zeros(0, dtype=torch.long))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # since training
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))    # graphs drawn
        # Each cell's mean key at the last training: the tail proposal's cell scores. Between two
        # trainings the members change but the means are not recomputed (the proposal stays a
        # valid one, and its probabilities are computed from the same means, so the weights stay
        # exact); the members and counts are always current.
        self.register_buffer("cell_mean", torch.zeros(0, 0))
        self._ivf: Any = None

    @property
    def trained(self) -> bool:
        return self.centroids.numel() > 0

    def cells_for(self, size: int) -> int:
        """The number of cells for a bank of ``size`` slots (at most ``size``)."""
        return min(size, self.nlist if self.nlist is not None else max(1, round(math.sqrt(size))))

    # -- maintenance ------------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, bank: Tensor, count: int, slots: Tensor) -> None:
        """Follow a push: ``bank`` is the whole storage ``[K, d]``, ``count`` its filled slots and
        ``slots`` the ones just written (:meth:`NegativeBank.push`'s return value)."""
        nlist = self.cells_for(bank.size(0))
        if not self.trained:
            if count >= min(_POINTS_PER_CELL * nlist, bank.size(0)):  # a small bank: when full
                self._train(bank, count, nlist)
            return
        self.updates += 1
        if int(self.updates) >= self.retrain_every:
            self._train(bank, count, nlist)
            return
        # faiss works on CPU copies; the buffers stay wherever .to() put them.
        ivf = self._index(bank, count)
        slots = slots.cpu()
        old = slots[self.cell.cpu().index_select(0, slots) >= 0]
        if old.numel() > 0:
            ivf.remove_ids(old.numpy().astype(np.int64))
        data = _numpy(bank.index_select(0, slots.to(bank.device)))
        cells = self._assign(data)
        self.cell[slots.to(self.cell.device)] = cells.to(self.cell.device)
        _add(ivf, data, slots, cells)

    def _train(self, bank: Tensor, count: int, nlist: int) -> None:
        """Spherical k-means of the filled slots (on at most 64 keys a cell) and every slot's
        cell; the faiss index is rebuilt from them on the next search."""
        import faiss

        data = _numpy(bank[:count])
        kmeans = faiss.Kmeans(data.shape[1], nlist, niter=10, seed=self.seed + int(self.draws),
                              spherical=True, max_points_per_centroid=64, verbose=False)
        kmeans.train(data)
        device = self.cell.device
        self.centroids = torch.from_numpy(kmeans.centroids.copy()).to(device)
        cell = torch.full((bank.size(0),), -1, dtype=torch.long)
        cell[:count] = self._assign(data)
        self.cell = cell.to(device)
        self.cell_mean = cluster_cells(bank[:count], cell[:count], nlist)[3].to(device)
        self.updates.zero_()
        self._ivf = None

    def _assign(self, data: np.ndarray) -> Tensor:
        """The nearest centroid (inner product, as the IVF quantiser) of each row."""
        scores = torch.from_numpy(data) @ self.centroids.cpu().T
        return scores.argmax(1)

    def _index(self, bank: Tensor, count: int) -> Any:
        """The faiss IVF index over the filled slots, built from the buffers when missing."""
        if self._ivf is None:
            import faiss

            d = self.centroids.size(1)
            quantizer = faiss.IndexFlatIP(d)
            quantizer.add(self.centroids.cpu().numpy())
            ivf = faiss.IndexIVFFlat(quantizer, d, self.centroids.size(0),
                                     faiss.METRIC_INNER_PRODUCT)
            ivf.own_fields = False
            self._quantizer = quantizer  # the IVF index only points at it: keep it alive
            cell = self.cell.cpu()
            filled = (cell[:count] >= 0).nonzero().view(-1)
            if filled.numel() > 0:
                _add(ivf, _numpy(bank.index_select(0, filled.to(bank.device))), filled,
                     cell[filled])
            self._ivf = ivf
        nlist = self.centroids.size(0)
        self._ivf.nprobe = min(nlist, self.nprobe or max(1, nlist // 64))
        return self._ivf

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # The trained buffers take the checkpoint's shapes; the faiss index is rebuilt from them.
        for name in ("centroids", "cell", "cell_mean"):
            stored = state_dict.get(prefix + name)
            if isinstance(stored, Tensor):
                setattr(self, name, getattr(self, name).new_zeros(stored.shape))
        self._ivf = None
        super()._load_from_state_dict(state_dict, prefix, *args)

    # -- the graph --------------------------------------------------------------------------------
    @torch.no_grad()
    def graph(self, bank: Tensor, count: int, queries: Tensor,
              exclude: Tensor | None = None) -> tuple[Tensor, Tensor] | None:
        r"""``(edge_index, edge_weight)`` from the filled slots of ``bank`` to ``queries`` (row 0 =
        slot, row 1 = query; grouped by query, head first), or ``None`` while the cells are not
        trained or while the head and the draws would make as many edges per anchor as the bank has
        entries (the dense graph then costs no more and is exact). ``queries`` are scored at the
        scale the loss uses (:math:`z / \tau` against unit keys), which the proposal's cell
        probabilities need; the head's ranking ignores it.
        ``exclude`` (``[2, P]`` pairs (slot, query)) are never edges: dropped from the head and
        from the tail's draws, so the estimate is of the sum over the other slots."""
        if not self.trained or self.k + self.num_samples >= count:
            return None
        filled = bank[:count]
        k = min(self.k, count)
        if self._head_backend(bank) == "exact":
            head, key = exact_search(filled, queries, k, "ip", False, exclude, None, self.tiling)
        else:  # excluded pairs leave the head shorter
            head, key = self._ivf_search(bank, count, queries, k, exclude)
        cells = cluster_cells(filled, self.cell[:count], self.centroids.size(0), self.cell_mean)
        generator = torch.Generator(device=bank.device)
        generator.manual_seed(self.seed * 1_000_003 + int(self.draws))
        self.draws += 1
        return sample_tail(queries, head, key, count, self.num_samples, cells=cells, same=False,
                           exclude=exclude, generator=generator)

    def _head_backend(self, bank: Tensor) -> str:
        if self.backend == "auto":
            return "exact" if bank.device.type == "cuda" else "faiss"
        return self.backend

    def _ivf_search(self, bank: Tensor, count: int, queries: Tensor, k: int,
                    exclude: Tensor | None) -> tuple[Tensor, Tensor]:
        score, ids = self._index(bank, count).search(_numpy(queries), k)
        # Sorted by score, then slot (not by list order), so that a rebuilt index (a resumed run)
        # gives the same head as the incrementally updated one.
        return ranked_results(torch.from_numpy(score).to(queries.device, queries.dtype),
                              torch.from_numpy(ids).to(queries.device), count, "ip", False,
                              exclude)

    def extra_repr(self) -> str:
        nlist = "auto" if self.nlist is None else self.nlist
        return (f"k={self.k}, num_samples={self.num_samples}, nlist={nlist}, "
                f"retrain_every={self.retrain_every}, backend='{self.backend}'")


def _add(ivf: Any, data: np.ndarray, ids: Tensor, cells: Tensor) -> None:
    """Add ``data`` under ``ids`` to the lists ``cells`` given here (faiss's ``add_core`` with
    precomputed assignments), so that the lists are exactly :attr:`BankIndex.cell`, whichever
    batch size the quantiser would have searched with."""
    import faiss

    ids_np = np.ascontiguousarray(ids.numpy().astype(np.int64))
    cells_np = np.ascontiguousarray(cells.numpy().astype(np.int64))
    ivf.add_core(data.shape[0], faiss.swig_ptr(data), faiss.swig_ptr(ids_np),
                 faiss.swig_ptr(cells_np))


def _numpy(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())
