"""BankIndex follows a memory bank without rebuilding: its faiss lists hold exactly the filled
slots in the cells it records, the cells are re-trained on schedule, and the head it returns is the
exact top-k when every cell is probed."""

import math

import faiss
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mp_contrastive.knn import BankIndex
from mp_contrastive.knn._exact import exact_search
from mp_contrastive.memory import NegativeBank


def keys(count, seed):
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(count, 16, generator=gen), dim=1)


def lists(index: BankIndex) -> dict[int, int]:
    """slot -> cell, read back from the faiss index's inverted lists."""
    ivf = index._ivf
    out = {}
    for cell in range(ivf.nlist):
        size = ivf.invlists.list_size(cell)
        ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(cell), size).copy() if size else []
        out.update({int(i): cell for i in np.asarray(ids)})
    return out


def test_lists_follow_the_bank_and_cells_retrain_on_schedule():
    bank, index = NegativeBank(200, 16), BankIndex(k=5, num_samples=4, nlist=4, retrain_every=5)
    queries = keys(3, 99) * 5
    assert index.graph(bank.bank, 0, queries) is None  # nothing to search yet
    centroids = []
    for step in range(14):
        slots = bank.push(keys(30, step))
        index.update(bank.bank, len(bank), slots)
        if not index.trained:
            assert len(bank) < 4 * 39  # 39 keys a cell before the first training
            continue
        index.graph(bank.bank, len(bank), queries)  # builds the faiss index if it was dropped
        recorded = {slot: int(index.cell[slot]) for slot in range(len(bank))}
        assert lists(index) == recorded  # every filled slot once, in its recorded cell
        assert index._ivf.ntotal == len(bank)
        # The recorded cell is the nearest centroid of the key the slot holds now.
        nearest = (bank.features @ index.centroids.T).argmax(1)
        assert torch.equal(index.cell[: len(bank)], nearest)
        centroids.append((step, int(index.updates), index.centroids.clone()))
    trainings = [step for (step, updates, _) in centroids if updates == 0]
    assert trainings == [5, 10]  # first trained at step 5 (180 keys), again every 5 updates
    changed = [not torch.equal(a[2], b[2]) for a, b in zip(centroids[:-1], centroids[1:], strict=True)]
    assert changed == [step + 1 in trainings for step, _, _ in centroids[:-1]]


def test_head_is_the_exact_top_k_when_every_cell_is_probed():
    bank = NegativeBank(300, 16)
    index = BankIndex(k=7, num_samples=3, nlist=3, nprobe=3)
    slots = bank.push(keys(300, 1))
    index.update(bank.bank, len(bank), slots)
    queries = keys(9, 2) * 3
    edge_index, weight = index.graph(bank.bank, len(bank), queries)
    head_ids, _ = exact_search(bank.features, queries, 7, "ip", False, None, None,
                               index.tiling)
    for q in range(9):
        row = edge_index[0, edge_index[1] == q]
        assert torch.equal(row[:7], head_ids[q])  # head first, nearest first
        assert torch.all(weight[edge_index[1] == q][:7] == 1)
    exact = BankIndex(k=7, num_samples=3, nlist=3, backend="exact")
    exact.load_state_dict(index.state_dict())
    exact_edges, _ = exact.graph(bank.bank, len(bank), queries)
    heads = [exact_edges[0, exact_edges[1] == q][:7] for q in range(9)]
    assert all(torch.equal(h, head_ids[q]) for q, h in enumerate(heads))


def test_tail_weights_estimate_the_partition_function_without_bias():
    """E[sum_edges w e^{q.n}] is the sum over the whole bank (Hansen-Hurwitz): the mean of many
    draws approaches it."""
    bank = NegativeBank(400, 16)
    index = BankIndex(k=4, num_samples=8, nlist=5)
    slots = bank.push(keys(400, 3))
    index.update(bank.bank, len(bank), slots)
    queries = keys(6, 4) * 2.0
    exact = torch.logsumexp(queries @ bank.features.T, 1).exp()
    total = torch.zeros(6, dtype=torch.float64)
    draws = 2000
    for _ in range(draws):
        (src, dst), weight = index.graph(bank.bank, len(bank), queries)
        terms = weight * (queries[dst] * bank.features[src]).sum(1).exp()
        total += torch.zeros(6).index_add(0, dst, terms).double()
    assert torch.allclose(total / draws, exact.double(), rtol=0.02)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="'k'"):
        BankIndex(k=0)
    with pytest.raises(TypeError, match="'num_samples'"):
        BankIndex(num_samples=2.0)
    with pytest.raises(ValueError, match="'backend'"):
        BankIndex(backend="gpu")
    with pytest.raises(TypeError, match="'seed'"):
        BankIndex(seed="a")
    with pytest.raises(TypeError, match="'tiling'"):
        BankIndex(tiling="big")
    assert "num_samples=256" in repr(BankIndex()) and not math.isnan(BankIndex().k)
