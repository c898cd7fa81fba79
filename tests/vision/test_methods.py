import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mp_contrastive.vision.methods import (
    LossNodes,
    MethodOutput,
    SimCLRMethod,
    SimSiamMethod,
    gathered_sample_ids,
)


def simsiam(multistage: str, stages: int = 1, warmup: int = 0) -> SimSiamMethod:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))
    return SimSiamMethod(backbone, 6, num_samples=10, proj_dim=4, proj_hidden_dim=8,
                         pred_hidden_dim=3, multistage=multistage, num_stages=stages,
                         warmup_epochs=warmup).double()


def views(seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64) for _ in range(2)]


def test_official_target_is_half_now_half_previous_epoch():
    method = simsiam("official", warmup=1)
    index = torch.arange(5)
    method.set_epoch(0)
    v = views(0)
    z1, z2 = method.projector(method.backbone(torch.cat(v))).chunk(2)
    t1, t2 = method._targets(z1, z2, index)
    torch.testing.assert_close(t1, z2.detach())  # warm-up: plain SimSiam targets
    method.set_epoch(1)
    w = views(1)
    y1, y2 = method.projector(method.backbone(torch.cat(w))).chunk(2)
    t1, t2 = method._targets(y1, y2, index)
    torch.testing.assert_close(t1, 0.5 * y2.detach() + 0.5 * z2.detach())  # view-2 memory
    torch.testing.assert_close(t2, 0.5 * y1.detach() + 0.5 * z2.detach())


def test_alone_targets_are_the_stored_mean():
    method = simsiam("alone", stages=2)
    index = torch.arange(5)
    stored = []
    for epoch in range(3):
        method.set_epoch(epoch)
        z1, z2 = method.projector(method.backbone(torch.cat(views(epoch)))).chunk(2)
        t1, _ = method._targets(z1, z2, index)
        expected = z2.detach() if not stored else torch.stack(stored[-2:]).mean(0)
        torch.testing.assert_close(t1, expected)
        stored.append(z2.detach())


def test_simsiam_loss_is_negative_cosine():
    method = simsiam("off")
    v = views(0)
    z1, z2 = method.projector(method.backbone(torch.cat(v))).chunk(2)
    p1, p2 = method.predictor(torch.cat([z1, z2])).chunk(2)
    expected = -0.5 * (F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean())
    torch.testing.assert_close(method(v, torch.arange(5)).loss, expected)


def test_method_arguments_are_checked():
    with pytest.raises(ValueError, match="'multistage' must be one of"):
        simsiam("sometimes")
    with pytest.raises(ValueError, match="'attention' must be one of"):
        SimCLRMethod(nn.Identity(), attention="gat")


def test_gathered_sample_ids_order():
    assert gathered_sample_ids(2, 2, 8, torch.device("cpu")).tolist() == [0, 1, 0, 1, 2, 3, 2, 3]


def test_momentum_keys_follow_the_model_and_are_not_trained():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4))

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(x), x

    method = SimCLRMethod(Pair(), temperature=0.5, memory_bank_size=16, key_momentum=0.75)
    key = method.key_model.net[0].weight
    assert not key.requires_grad and torch.equal(key, model[0].weight)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    views = [torch.randn(8, 6), torch.randn(8, 6)]
    for step in range(3):
        before_key, before_model = key.clone(), model[0].weight.detach().clone()
        optimizer.zero_grad()
        loss = method(views, torch.arange(8)).loss
        if step > 0:  # the first step has an empty bank: no gradient
            loss.backward()
            optimizer.step()
        # MoCo's rule, applied before each step's keys are computed.
        torch.testing.assert_close(key, 0.75 * before_key + 0.25 * before_model)
    assert len(method.loss.memory.bank) == 16
    with pytest.raises(ValueError, match="memory_bank_size"):
        SimCLRMethod(Pair(), key_momentum=0.5)
    with pytest.raises(ValueError, match="key_momentum"):
        SimCLRMethod(Pair(), memory_bank_size=8, key_momentum=1.0)


class TwoOutputs(nn.Module):
    """A tiny (z, h) model: h = backbone features, z = their projection."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))
        self.projector = nn.Linear(6, 4)

    def forward(self, x):
        h = self.backbone(x)
        return self.projector(h), h


def test_paper_attention_is_plain_simclr_in_the_warmup_then_attends_on_backbone_features():
    from mp_contrastive.losses import AttentionSimCLRLoss, SimCLRLoss

    torch.manual_seed(0)
    method = SimCLRMethod(TwoOutputs().double(), temperature=0.5, attention="paper", beta=2.0,
                          attention_warmup=2)
    v, index = views(0), torch.arange(5)
    z, h = method.model(torch.cat(v))
    sample = torch.arange(5).repeat(2)
    plain = SimCLRLoss(0.5)(z, sample)
    attended = AttentionSimCLRLoss(0.5, 2.0, normalize="negatives", score="cosine")(
        z, sample, attention_features=h.detach())
    on_projections = AttentionSimCLRLoss(0.5, 2.0, normalize="negatives", score="cosine")(z, sample)
    assert not torch.allclose(attended, plain) and not torch.allclose(attended, on_projections)
    for epoch, expected in [(0, plain), (1, plain), (2, attended), (5, attended)]:
        method.set_epoch(epoch)
        torch.testing.assert_close(method(v, index).loss, expected)


def test_attention_warmup_arguments_are_checked():
    with pytest.raises(ValueError, match="'attention_warmup'"):
        SimCLRMethod(TwoOutputs(), attention="off", attention_warmup=3)
    with pytest.raises(ValueError, match="'attention_warmup'"):
        SimCLRMethod(TwoOutputs(), attention="paper", attention_warmup=-1)
    with pytest.raises(TypeError, match="'attention_warmup'"):
        SimCLRMethod(TwoOutputs(), attention="paper", attention_warmup=1.5)
    with pytest.raises(ValueError, match="attention='paper'.*memory"):
        SimCLRMethod(TwoOutputs(), attention="paper", memory_bank_size=16)


def test_official_attention_with_a_bank_warms_up_on_the_same_bank():
    torch.manual_seed(0)
    method = SimCLRMethod(TwoOutputs().double(), attention="official", memory_bank_size=8,
                          attention_warmup=1)
    assert method.warmup_loss.memory is method.loss.memory
    for epoch in range(2):
        method.set_epoch(epoch)
        loss = method(views(epoch), torch.arange(5)).loss
        assert torch.isfinite(loss)


@pytest.mark.parametrize("bank", [0, 16])
def test_simclr_returns_its_loss_and_the_projections_it_compared(bank):
    torch.manual_seed(0)
    method = SimCLRMethod(TwoOutputs().double(), temperature=0.5, memory_bank_size=bank)
    v, index = views(0), torch.tensor([7, 3, 9, 0, 4])
    output = method(v, index)
    assert isinstance(output, MethodOutput) and isinstance(output.nodes, LossNodes)
    z, _ = method.model(torch.cat(v))
    torch.testing.assert_close(output.nodes.features, z.detach())
    assert not output.nodes.features.requires_grad and output.loss.requires_grad
    assert output.nodes.sample.tolist() == [0, 1, 2, 3, 4] * 2  # the two views of a sample
    assert output.nodes.index.tolist() == [7, 3, 9, 0, 4] * 2
    loss, nodes = output  # a tuple: unpacks
    assert loss is output.loss and nodes is output.nodes


def test_simsiam_returns_its_loss_and_the_projections_of_both_views():
    method = simsiam("off")
    v, index = views(0), torch.tensor([7, 3, 9, 0, 4])
    loss, nodes = method(v, index)
    torch.testing.assert_close(nodes.features, method.projector(method.backbone(torch.cat(v))))
    assert nodes.sample.tolist() == [0, 1, 2, 3, 4] * 2
    assert nodes.index.tolist() == [7, 3, 9, 0, 4] * 2
    assert loss.dim() == 0 and loss.requires_grad
    assert not hasattr(method, "last_nodes")
