import math

import pytest
import torch
from lightly.models.modules.memory_bank import MemoryBankModule
from torch_geometric.nn import JumpingKnowledge

from mp_contrastive.knn import affinity_graph
from mp_contrastive.memory import (
    MultiStageMemory,
    NegativeBank,
    StageAggregation,
    aggregate_stages,
)
from mp_contrastive.nn import ContrastiveConv, UniformityConv
from tests.reference import step_from_autograd, uniformity_energy


def rows(start, stop, dim=3):
    """Row r is filled with the value r: the order of the stored entries can be read off."""
    return torch.arange(start, stop, dtype=torch.float32).unsqueeze(1).repeat(1, dim)


def ids(x):
    return x[:, 0].long().tolist()


def test_fifo_order_and_wrap_around():
    bank = NegativeBank(5, 3)
    assert len(bank) == 0 and bank.features.shape == (0, 3) and not bank.full
    bank.push(rows(0, 2))
    assert ids(bank.features) == [0, 1] and ids(bank.oldest_first()) == [0, 1]
    bank.push(rows(2, 5))
    assert bank.full and ids(bank.oldest_first()) == [0, 1, 2, 3, 4]
    bank.push(rows(5, 8))  # wraps: 5, 6 overwrite 0, 1 ... 7 overwrites 2
    assert ids(bank.features) == [5, 6, 7, 3, 4]
    assert ids(bank.oldest_first()) == [3, 4, 5, 6, 7]
    assert int(bank.ptr) == 3 and len(bank) == 5
    for start in range(8, 20, 2):  # batches that do not divide the size
        bank.push(rows(start, start + 2))
        assert ids(bank.oldest_first()) == list(range(start + 2 - 5, start + 2))


def test_overflow_keeps_the_newest():
    bank = NegativeBank(4, 3)
    bank.push(rows(0, 3))
    bank.push(rows(3, 13))  # a batch larger than the bank
    assert ids(bank.oldest_first()) == [9, 10, 11, 12] and len(bank) == 4
    bank.push(rows(13, 14))
    assert ids(bank.oldest_first()) == [10, 11, 12, 13]


def test_matches_lightly_memory_bank():
    """Independent implementation: once full, lightly's bank (batch size dividing the size, where
    lightly does not truncate) holds exactly ours, in the same storage order."""
    gen = torch.Generator().manual_seed(0)
    ours, theirs = NegativeBank(12, 4), MemoryBankModule(size=(12, 4), feature_dim_first=False)
    for _ in range(7):
        batch = torch.randn(4, 4, generator=gen)
        before = ours(batch)
        _, lightly_before = theirs(batch, update=True)
        if ours.full and len(before) == 12:
            torch.testing.assert_close(before, lightly_before)
    torch.testing.assert_close(ours.features, theirs.bank)


def test_forward_returns_the_negatives_before_the_update():
    bank = NegativeBank(4, 3)
    bank.push(rows(0, 2))
    negatives = bank(rows(2, 4))
    assert ids(negatives) == [0, 1] and ids(bank.features) == [0, 1, 2, 3]
    bank(rows(4, 6))
    assert ids(negatives) == [0, 1]  # a copy: later pushes do not change it
    assert ids(bank(rows(6, 7), update=False)) == [4, 5, 2, 3] and len(bank) == 4


def test_state_dict_round_trip():
    bank = NegativeBank(6, 3)
    bank.push(rows(0, 8))
    state = bank.state_dict()
    assert set(state) == {"bank", "ids", "ptr", "count"}
    restored = NegativeBank(6, 3)
    restored.load_state_dict(state)
    assert torch.equal(restored.oldest_first(), bank.oldest_first())
    restored.push(rows(8, 9))
    bank.push(rows(8, 9))
    assert torch.equal(restored.oldest_first(), bank.oldest_first())
    with pytest.raises(RuntimeError, match="size mismatch"):
        NegativeBank(5, 3).load_state_dict(state)
    bank.reset()
    assert len(bank) == 0 and int(bank.ptr) == 0


def test_dtype_and_device_moves():
    bank = NegativeBank(4, 3).double()
    assert bank.bank.dtype == torch.float64 and bank.ptr.dtype == torch.long
    bank.push(rows(0, 2))  # float32 input is cast to the storage dtype
    assert bank.features.dtype == torch.float64
    moved = bank.to("cpu")
    assert moved.bank.device.type == "cpu" and ids(moved.features) == [0, 1]
    half = NegativeBank(4, 3, dtype=torch.bfloat16)
    half.push(rows(0, 3))
    assert half.features.dtype == torch.bfloat16


def test_device_move_and_mismatch():
    """Buffers follow .to(device) and pushes from another device are refused. The 'meta' device
    stands in for a GPU here: it exercises the same device checks without one."""
    bank = NegativeBank(4, 3)
    bank.push(rows(0, 3))
    moved = bank.to("meta")
    assert moved.bank.device.type == "meta" and moved.ptr.device.type == "meta"
    with pytest.raises(ValueError, match="must be on the bank's device"):
        moved.push(rows(0, 1))


def test_negative_bank_bad_input():
    with pytest.raises(ValueError, match="'size' must be a positive int"):
        NegativeBank(0, 3)
    with pytest.raises(TypeError, match="'dim' must be an int"):
        NegativeBank(4, 3.0)
    bank = NegativeBank(4, 3)
    with pytest.raises(ValueError, match=r"'x' must have shape \[batch_size, 3\]"):
        bank.push(torch.randn(2, 4))
    with pytest.raises(ValueError, match="'x' contains non-finite"):
        bank.push(torch.tensor([[0.0, math.nan, 1.0]]))
    with pytest.raises(TypeError, match="'x' must be a floating-point"):
        bank.push(torch.ones(2, 3, dtype=torch.long))
    assert len(bank) == 0  # nothing half-written


def test_bank_as_negatives_for_the_operators(gen):
    """The bank is the source side of a bipartite affinity graph, dense or kNN."""
    bank = NegativeBank(32, 4, dtype=torch.float64)
    for _ in range(3):
        bank.push(torch.randn(12, 4, generator=gen, dtype=torch.float64))
    h = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    conv = UniformityConv(alpha=0.4)
    everything = torch.ones(6, 32, dtype=torch.bool)
    expected = step_from_autograd(
        lambda x: uniformity_energy(x, bank.features, everything, None, None, "infonce", False),
        h, 0.4)
    torch.testing.assert_close(conv((bank.features, h)), expected, atol=1e-10, rtol=0)
    # kNN over the bank: k = size is the dense graph again.
    edge_index, _ = affinity_graph(bank.features, 32, queries=h)
    torch.testing.assert_close(conv((bank.features, h), edge_index), expected, atol=1e-10, rtol=0)
    # Contrastive with bank negatives: batch positives, bank repulsion.
    positives = torch.tensor([[0, 1, 2, 3, 4, 5], [3, 4, 5, 0, 1, 2]])
    out = ContrastiveConv(alpha=0.4)(h, positives, negatives=bank.features)
    assert out.shape == h.shape and bool(torch.isfinite(out).all())


# -- multi-stage memory and aggregation -----------------------------------------------------------

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


def test_multistage_memory_bad_input():
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


def test_lazy_dim_dtype_and_sample_ids():
    bank = NegativeBank(5)  # dim (and dtype) from the first push, as lightly's memory_bank_size=K
    slots = bank.push(rows(0, 3).double(), ids=torch.tensor([7, 8, 7]))
    assert bank.dim == 3 and bank.bank.dtype == torch.float64 and slots.tolist() == [0, 1, 2]
    slots = bank.push(rows(3, 6).double(), ids=torch.tensor([9, 8, 1]))  # wraps: 3, 4, then 0
    assert slots.tolist() == [3, 4, 0]
    # Pairs (slot, row) of the stored entries that share each row's id; unknown ids never match.
    pairs = bank.same_sample(torch.tensor([8, 5, 7]))
    assert sorted(map(tuple, pairs.T.tolist())) == [(1, 0), (2, 2), (4, 0)]
    bank.push(rows(6, 7).double())  # into slot 1, without an id (-1: matches nothing)
    assert bank.same_sample(torch.tensor([8])).tolist() == [[4], [0]]
    restored = NegativeBank(5)
    restored.load_state_dict(bank.state_dict())
    assert restored.dim == 3 and torch.equal(restored.oldest_first(), bank.oldest_first())
    with pytest.raises(TypeError, match="'dtype'"):
        NegativeBank(4, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="'ids'"):
        bank.push(rows(0, 2).double(), ids=torch.tensor([1]))
