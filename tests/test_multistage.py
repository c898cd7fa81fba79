import pytest
import torch
from torch_geometric.nn import JumpingKnowledge

from mp_contrastive.multistage import MultiStageMemory, StageAggregation, aggregate_stages


def test_ring_buffer_window_and_order():
    memory = MultiStageMemory(num_samples=4, dim=1, num_stages=2, aggr="sum")
    index = torch.tensor([0, 1])
    for epoch in range(4):  # sample 0 and 1 get value 10 * epoch + id each epoch
        agg, count = memory.read(index, epoch)
        expected = [sum(10 * e + i for e in range(max(0, epoch - 2), epoch)) for i in (0, 1)]
        assert agg.view(-1).tolist() == expected
        assert count.tolist() == [min(epoch, 2)] * 2
        memory.write(index, torch.tensor([[10.0 * epoch], [10.0 * epoch + 1]]), epoch)
    # Samples never written have no valid stage.
    agg, count = memory.read(torch.tensor([2, 3]), 4)
    assert count.tolist() == [0, 0] and agg.abs().sum() == 0


def test_stale_entries_expire_after_k_epochs():
    """A sample skipped for an epoch (drop_last) must not see features older than k epochs."""
    memory = MultiStageMemory(3, 2, num_stages=2, aggr="mean")
    memory.write(torch.tensor([0]), torch.ones(1, 2), epoch=0)
    assert memory.read(torch.tensor([0]), 1)[1].item() == 1
    assert memory.read(torch.tensor([0]), 2)[1].item() == 1
    assert memory.read(torch.tensor([0]), 3)[1].item() == 0  # written at 0, now 3 epochs old


@pytest.mark.parametrize("aggr", ["sum", "mean", "max", "decay"])
def test_aggregation_modes(aggr):
    memory = MultiStageMemory(2, 3, num_stages=3, aggr=aggr, gamma=0.5)
    values = [torch.randn(2, 3, generator=torch.Generator().manual_seed(e)) for e in range(3)]
    for epoch, v in enumerate(values):
        memory.write(torch.arange(2), v, epoch)
    agg, count = memory.read(torch.arange(2), 3)
    recent_first = torch.stack(values[::-1])  # stage s=1 is epoch 2
    expected = {"sum": recent_first.sum(0), "mean": recent_first.mean(0),
                "max": recent_first.amax(0),
                "decay": (recent_first * torch.tensor([0.5, 0.25, 0.125]).view(3, 1, 1)).sum(0)}
    torch.testing.assert_close(agg, expected[aggr])
    assert count.tolist() == [3, 3]


def test_state_dict_round_trip_and_half_precision(tmp_path):
    memory = MultiStageMemory(5, 4, num_stages=2, dtype=torch.float16)
    memory.write(torch.tensor([1, 3]), torch.randn(2, 4), epoch=0)
    torch.save(memory.state_dict(), tmp_path / "m.pt")
    restored = MultiStageMemory(5, 4, num_stages=2, dtype=torch.float16)
    restored.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    for a, b in zip(memory.read(torch.arange(5), 1), restored.read(torch.arange(5), 1),
                    strict=True):
        torch.testing.assert_close(a, b)
    assert restored.features.dtype == torch.float16


def test_bad_input():
    memory = MultiStageMemory(3, 2)
    with pytest.raises(ValueError, match="'index' must lie in \\[0, 3\\)"):
        memory.read(torch.tensor([3]), 0)
    with pytest.raises(ValueError, match="'features' must have shape \\[len\\(index\\), dim\\]"):
        memory.write(torch.tensor([0]), torch.ones(1, 3), 0)
    with pytest.raises(ValueError, match="'num_stages' must be a positive int"):
        MultiStageMemory(3, 2, num_stages=0)
    with pytest.raises(ValueError, match="'aggr' must be one of"):
        MultiStageMemory(3, 2, aggr="median")


def test_jumping_knowledge_over_layers_matches_pyg():
    xs = [torch.randn(7, 5, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    for mode in ("max", "cat"):
        torch.testing.assert_close(StageAggregation(mode)(xs), JumpingKnowledge(mode)(xs))
    torch.testing.assert_close(StageAggregation("mean")(xs), torch.stack(xs).mean(0))
    decay = StageAggregation("decay", gamma=0.5)(xs)  # last layer is stage 1
    torch.testing.assert_close(decay, sum(0.5 ** (4 - i) * x for i, x in enumerate(xs)))


def test_aggregate_stages_masks():
    stages = torch.tensor([[[1.0], [5.0]], [[3.0], [7.0]]])  # [k=2, N=2, d=1]
    valid = torch.tensor([[True, False], [True, False]])
    assert aggregate_stages(stages, "mean", valid).view(-1).tolist() == [2.0, 0.0]
    assert aggregate_stages(stages, "max", valid).view(-1).tolist() == [3.0, 0.0]
