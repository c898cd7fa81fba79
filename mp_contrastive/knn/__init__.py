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
  searches and samples do not rebuild the index;
* :class:`BankIndex` keeps the head-plus-tail graph of a
  :class:`~mp_contrastive.memory.NegativeBank` up to date as the bank turns over (a faiss IVF
  index whose overwritten slots are removed and new keys added, cells re-trained every few
  hundred keys): ``SimCLRLoss(memory_bank_size=K, affinity="knn")``.

Backends: ``"exact"`` is a tiled ``torch`` matmul + top-:math:`k` with a running merge, whose memory
is bounded by the tile (``O((N + Q) d + Q k)``, never ``O(N Q)``; its size is the ``tiling=``
argument, a :class:`~mp_contrastive.nn.functional.Tiling`) on any device; ``"faiss"`` uses a
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

from mp_contrastive.knn._bank_index import BANK_BACKENDS, BankIndex
from mp_contrastive.knn._faiss_backend import faiss_gpu_available
from mp_contrastive.knn._graphs import AFFINITIES, affinity_graph, sampled_affinity_graph
from mp_contrastive.knn._index import BACKENDS, INDEXES, SIMILARITY_METRICS, AffinityIndex, choose_backend
from mp_contrastive.knn._sampling import PROPOSALS

__all__ = [
    "AFFINITIES",
    "SIMILARITY_METRICS",
    "BACKENDS",
    "BANK_BACKENDS",
    "INDEXES",
    "PROPOSALS",
    "AffinityIndex",
    "BankIndex",
    "affinity_graph",
    "sampled_affinity_graph",
    "choose_backend",
    "faiss_gpu_available",
]
