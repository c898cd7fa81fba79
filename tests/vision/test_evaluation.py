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
