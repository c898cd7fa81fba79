"""Evaluation of frozen encoders: a weighted kNN monitor and a linear probe."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mp_contrastive.vision.augment import to_float

__all__ = ["extract_features", "knn_accuracy", "linear_probe"]


@torch.no_grad()
def extract_features(encoder: Callable[[Tensor], Tensor], images: Tensor, batch_size: int = 512,
                     device: torch.device | str = "cpu") -> Tensor:
    """Features of uint8 images ``[N, 3, H, W]`` (no augmentation), on the CPU."""
    was_training = isinstance(encoder, nn.Module) and encoder.training
    if isinstance(encoder, nn.Module):
        encoder.eval()
    out = [encoder(to_float(images[i:i + batch_size].to(device))).float().cpu()
           for i in range(0, images.size(0), batch_size)]
    if was_training:
        encoder.train()
    return torch.cat(out)


@torch.no_grad()
def knn_accuracy(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                 test_labels: Tensor, num_classes: int, k: int = 200, temperature: float = 0.1,
                 chunk: int = 1024) -> float:
    r"""Weighted kNN top-1 accuracy (%), as in InstDisc and lightly's benchmarks: cosine
    similarity, the ``k`` nearest training features vote with weight
    :math:`e^{s/\tau}` for their class."""
    if train_features.size(0) < k:
        raise ValueError(f"'k' ({k}) exceeds the number of training features "
                         f"({train_features.size(0)})")
    bank = F.normalize(train_features, dim=1)
    correct = 0
    for start in range(0, test_features.size(0), chunk):
        query = F.normalize(test_features[start:start + chunk], dim=1)
        sim, idx = (query @ bank.T).topk(k, dim=1)
        votes = torch.zeros(query.size(0), num_classes)
        votes.scatter_add_(1, train_labels[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1) == test_labels[start:start + chunk]).sum())
    return 100.0 * correct / test_features.size(0)


def linear_probe(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                 test_labels: Tensor, num_classes: int, epochs: int = 100, lr: float = 0.1,
                 batch_size: int = 1024, momentum: float = 0.9, weight_decay: float = 0.0,
                 seed: int = 0) -> dict[str, float]:
    """Linear classifier on frozen features: SGD (lr 0.1, batch 1024, cosine schedule) on
    features standardised with the training mean and std. Returns train/test top-1 (%)."""
    generator = torch.Generator().manual_seed(seed)
    mean, std = train_features.mean(0), train_features.std(0).clamp_min(1e-6)
    x_train, x_test = (train_features - mean) / std, (test_features - mean) / std
    torch.manual_seed(seed)
    classifier = nn.Linear(x_train.size(1), num_classes)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    steps_per_epoch = max(1, -(-x_train.size(0) // batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(x_train.size(0), generator=generator)
        for start in range(0, x_train.size(0), batch_size):
            batch = order[start:start + batch_size]
            loss = F.cross_entropy(classifier(x_train[batch]), train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    with torch.no_grad():
        train_acc = (classifier(x_train).argmax(1) == train_labels).float().mean().item()
        test_acc = (classifier(x_test).argmax(1) == test_labels).float().mean().item()
    return {"train_top1": 100 * train_acc, "test_top1": 100 * test_acc}
