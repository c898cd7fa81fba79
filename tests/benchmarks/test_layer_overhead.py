"""The layer-overhead benchmark: a Cora-size graph, the same layer on both sides, a verdict per
row."""

import re

import torch
from torch_geometric.utils import is_undirected

from benchmarks import layer_overhead


def test_the_graph_has_coras_size_and_no_self_loop_or_repeated_edge():
    edge_index = layer_overhead.cora_size_graph(torch.Generator().manual_seed(0))
    assert edge_index.shape == (2, layer_overhead.EDGES)
    assert int(edge_index.max()) < layer_overhead.NODES and is_undirected(edge_index)
    assert bool((edge_index[0] != edge_index[1]).all())
    assert edge_index.unique(dim=1).size(1) == layer_overhead.EDGES


def test_one_run_prints_a_row_and_a_verdict_per_layer_and_pass(capsys):
    layer_overhead.main(["--repeats", "1", "--threads", "1"])
    out = capsys.readouterr().out
    verdicts = re.findall(r"AlignmentGCNConv (\d+\.\d+)x GCNConv \(target <= 1.05\) (PASS|FAIL)",
                          out)
    assert len(verdicts) == 4 and out.count("| forward") == 4
    assert all((float(ratio) <= 1.05) == (verdict == "PASS") for ratio, verdict in verdicts)
