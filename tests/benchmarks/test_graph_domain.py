"""The graph domain of the suite: every variant has its baseline in the matrix, and a cell runs the
examples' code on the real Cora."""

import pytest
import torch

from benchmarks.domains import build_cells
from benchmarks.graph_domain import graph_cells


def test_every_baseline_is_in_the_matrix(tmp_path, data_root):
    for suite in ("quick", "full"):
        cells = graph_cells(suite, 2, tmp_path, str(data_root))
        present = {(c.dataset, c.method) for c in cells}
        assert all(c.baseline is None or (c.dataset, c.baseline) in present for c in cells)
        assert len({c.key for c in cells}) == len(cells)
    quick = {c.method for c in graph_cells("quick", 1, tmp_path, str(data_root))}
    assert {"supervised:gcn", "supervised:pyg_gcn", "GRACE:vanilla", "GRACE:reference",
            "depth32:contrastive"} <= quick
    domains = {c.domain for c in build_cells("quick", ["graphs", "synthetic"], 1, tmp_path, None)}
    assert domains == {"graphs", "synthetic"}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small graphs: fastest on one thread
    yield
    torch.set_num_threads(threads)


def test_cells_run_the_examples_code(tmp_path, data_root, one_thread):
    cells = {c.method: c for c in graph_cells("quick", 1, tmp_path, str(data_root))}
    ours = cells["supervised:gcn"].run()
    assert ours["test_acc"] >= 78.0  # Kipf & Welling: 81.5 on the public split
    depth = cells["depth32:contrastive"].run()
    assert depth["test_acc"] > 60.0 and depth["mean_cosine"] < 0.9
