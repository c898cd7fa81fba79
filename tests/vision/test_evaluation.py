import pytest
import torch

from mp_contrastive.vision.evaluation import knn_accuracy, linear_probe


def clustered(n: int, classes: int, noise: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, 16, generator=torch.Generator().manual_seed(99))
    labels = torch.randint(0, classes, (n,), generator=g)
    return centers[labels] + noise * torch.randn(n, 16, generator=g), labels


def test_knn_on_separable_and_random_features():
    x, y = clustered(600, 5, 0.1, 0)
    q, qy = clustered(200, 5, 0.1, 1)
    assert knn_accuracy(x, y, q, qy, 5, k=20) == 100.0
    r = torch.randn(200, 16, generator=torch.Generator().manual_seed(2))
    assert knn_accuracy(x, y, r, qy, 5, k=20) < 40.0  # chance is 20%


def test_knn_matches_brute_force_vote():
    x, y = clustered(100, 3, 1.5, 0)
    q, qy = clustered(30, 3, 1.5, 1)
    xs, qs = torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(q, dim=1)
    predictions = []
    for i in range(30):
        sim = qs[i] @ xs.T
        top = sim.topk(10)
        votes = torch.zeros(3)
        for s, j in zip(top.values, top.indices, strict=True):
            votes[y[j]] += torch.exp(s / 0.1)
        predictions.append(int(votes.argmax()))
    expected = 100.0 * int((torch.tensor(predictions) == qy).sum()) / 30
    assert abs(knn_accuracy(x, y, q, qy, 3, k=10, chunk=7) - expected) < 1e-9


def test_linear_probe_learns_separable_features():
    x, y = clustered(1000, 4, 0.5, 0)
    q, qy = clustered(300, 4, 0.5, 1)
    result = linear_probe(x, y, q, qy, 4, epochs=30, seed=0)
    assert result["test_top1"] > 95.0
    assert result == linear_probe(x, y, q, qy, 4, epochs=30, seed=0)  # deterministic


class Recorder(torch.nn.Module):
    """A frozen 'encoder' with a batch norm (to see its mode) that records what it is fed."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(3)
        self.seen: list[tuple[bool, torch.Tensor]] = []

    def forward(self, x):
        self.seen.append((self.training, x.detach().clone()))
        return self.norm(x.mean((2, 3)))


def images_and_labels(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 100, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    images[:, 0] += (60 * labels).to(torch.uint8).view(-1, 1, 1)  # class in the red channel
    return images, labels


def test_official_probe_augments_training_images_only_and_keeps_the_encoder_frozen():
    from mp_contrastive.vision.evaluation import official_linear_probe

    train, train_y = images_and_labels(48, 0)
    test, test_y = images_and_labels(30, 1)
    encoder = Recorder().train()
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    result = official_linear_probe(encoder, train, train_y, test, test_y, 3, epochs=1,
                                   batch_size=16, padding=2)
    assert encoder.training  # its mode comes back
    for key, value in encoder.state_dict().items():  # eval mode: running stats untouched
        assert torch.equal(value, state[key]), key
    assert all(not training for training, _ in encoder.seen)
    fed = encoder.seen[1:]  # the first call only measures the feature size
    train_batches, test_batches = fed[:3], fed[3:]
    assert [x.size(0) for _, x in train_batches] == [16, 16, 16]
    assert [x.size(0) for _, x in test_batches] == [16, 14]
    raw_train = {tuple(img.flatten().tolist()) for img in train.float() / 255}
    augmented = [tuple(img.flatten().tolist()) not in raw_train
                 for _, x in train_batches for img in x]
    assert sum(augmented) > 30  # crops / flips (a few draws may be the identity)
    torch.testing.assert_close(torch.cat([x for _, x in test_batches]), test.float() / 255)
    assert set(result) == {"train_top1", "test_top1"}


def test_official_probe_starts_from_a_zero_head_and_learns():
    from mp_contrastive.vision.evaluation import official_linear_probe, zero_linear_head

    head = zero_linear_head(5, 3)
    assert not head.weight.any() and not head.bias.any()
    train, train_y = images_and_labels(96, 0)
    test, test_y = images_and_labels(60, 1)
    encoder = Recorder()
    # A step of 1e-50 is 0 in float32: the head stays where it started. From zero every class
    # ties and argmax picks class 0, so accuracy is class 0's share (a random start would not).
    frozen = official_linear_probe(encoder, train, train_y, test, test_y, 3, epochs=1, lr=1e-50,
                                   batch_size=32)
    assert frozen["test_top1"] == pytest.approx(100.0 * int((test_y == 0).sum()) / len(test_y))
    learned = official_linear_probe(encoder, train, train_y, test, test_y, 3, epochs=30, lr=0.5,
                                    batch_size=32, padding=1)
    assert learned["test_top1"] > 80.0


def test_official_probe_arguments_are_checked():
    from mp_contrastive.vision.evaluation import official_linear_probe

    train, train_y = images_and_labels(8, 0)
    with pytest.raises(ValueError, match="'epochs'"):
        official_linear_probe(Recorder(), train, train_y, train, train_y, 3, epochs=0)
    with pytest.raises(ValueError, match="'lr'"):
        official_linear_probe(Recorder(), train, train_y, train, train_y, 3, lr=0.0)
    with pytest.raises(ValueError, match="one label each"):
        official_linear_probe(Recorder(), train, train_y[:4], train, train_y, 3)
