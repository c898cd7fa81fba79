"""Evaluation of frozen encoders: a weighted kNN monitor and two linear probes.

``linear_probe`` (the ``fast`` probe) trains on features extracted once from un-augmented images;
``official_linear_probe`` is the official code's protocol (``GRAPH-ATTENTION/linear.py`` with
``configs/cifar_eval.yaml``): a zero-initialised linear head on the frozen encoder in eval mode,
fed freshly augmented images at every step, so its numbers compare with the paper's Table 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mp_contrastive._linear_head import fit_linear_head
from mp_contrastive._validation import check_positive_int
from mp_contrastive.vision.augment import random_crop_flip, to_float

__all__ = ["extract_features", "knn_accuracy", "linear_probe", "official_linear_probe",
           "zero_linear_head", "PROBES"]

#: The linear probes the image examples offer (``--probe``).
PROBES = ("fast", "official")


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
    fit_linear_head(classifier, x_train, train_labels, optimizer, epochs, batch_size=batch_size,
                    generator=generator, scheduler=scheduler)
    with torch.no_grad():
        train_acc = (classifier(x_train).argmax(1) == train_labels).float().mean().item()
        test_acc = (classifier(x_test).argmax(1) == test_labels).float().mean().item()
    return {"train_top1": 100 * train_acc, "test_top1": 100 * test_acc}


def zero_linear_head(in_dim: int, num_classes: int) -> nn.Linear:
    """A linear classifier with zero weight and bias, as the official probe starts (``ssl.py``,
    ``SSLEval``): every class scores 0 until the first step."""
    head = nn.Linear(check_positive_int(in_dim, "in_dim"),
                     check_positive_int(num_classes, "num_classes"))
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


@contextmanager
def _frozen(encoder: nn.Module) -> Iterator[nn.Module]:
    """The encoder in eval mode (batch norm uses its running statistics, which then stay as they
    are) for the duration; its former mode afterwards."""
    was_training = encoder.training
    encoder.eval()
    try:
        yield encoder
    finally:
        encoder.train(was_training)


def official_linear_probe(encoder: nn.Module, train_images: Tensor, train_labels: Tensor,
                          test_images: Tensor, test_labels: Tensor, num_classes: int,
                          epochs: int = 164, lr: float = 0.1, batch_size: int = 1024,
                          momentum: float = 0.9, weight_decay: float = 1e-4, padding: int = 4,
                          seed: int = 0, device: torch.device | str = "cpu") -> dict[str, float]:
    """The official linear evaluation (``GRAPH-ATTENTION/configs/cifar_eval.yaml``, ``ssl.py``):
    a :func:`zero_linear_head` on the frozen ``encoder`` (eval mode), trained with SGD (momentum
    0.9, weight decay 1e-4 on weight and bias, batch 1024) at a learning rate decaying linearly
    from ``lr`` to 0, on training images augmented afresh at every step by
    :func:`random_crop_flip` (reflect padding 4, flip); tested on the un-augmented test images.
    The official run takes 8,000 steps of 1,024 images (about 164 epochs of CIFAR's 50,000).

    Images are uint8 ``[N, 3, H, W]`` (or float in [0, 1]). Returns ``test_top1`` and
    ``train_top1`` (%, the last epoch's augmented batches, as the official log reports it)."""
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not lr > 0:
        raise ValueError(f"'lr' must be > 0, got {lr}")
    if train_images.size(0) != train_labels.size(0) or test_images.size(0) != test_labels.size(0):
        raise ValueError("'train_images' / 'test_images' must have one label each")
    device = torch.device(device)
    with _frozen(encoder):
        head, train_top1 = _train_head(encoder, train_images, train_labels, num_classes, epochs,
                                       lr, batch_size, momentum, weight_decay, padding, seed,
                                       device)
        test_top1 = _head_accuracy(encoder, head, test_images, test_labels, batch_size, device)
    return {"train_top1": train_top1, "test_top1": test_top1}


def _train_head(encoder: nn.Module, images: Tensor, labels: Tensor, num_classes: int,
                epochs: int, lr: float, batch_size: int, momentum: float, weight_decay: float,
                padding: int, seed: int, device: torch.device) -> tuple[nn.Linear, float]:
    """Train the zero-initialised head; return it and the last epoch's training accuracy (%)."""
    sampler = torch.Generator().manual_seed(seed)
    augment_rng = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        dim = encoder(to_float(images[:1].to(device))).shape[1]
    head = zero_linear_head(dim, num_classes).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    steps_per_epoch = -(-images.size(0) // batch_size)  # the last, partial batch too
    total = epochs * steps_per_epoch
    step, correct, seen = 0, 0, 0
    for _ in range(epochs):
        order = torch.randperm(images.size(0), generator=sampler)
        correct = seen = 0
        for start in range(0, images.size(0), batch_size):
            batch = order[start:start + batch_size]
            x = random_crop_flip(images[batch].to(device), padding, generator=augment_rng)
            y = labels[batch].to(device)
            with torch.no_grad():
                features = encoder(x).float()
            logits = head(features)
            for group in optimizer.param_groups:  # linear decay: lr (1 - t / T) at step t
                group["lr"] = lr * (1 - step / total)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += y.numel()
    return head, 100.0 * correct / max(seen, 1)


@torch.no_grad()
def _head_accuracy(encoder: nn.Module, head: nn.Linear, images: Tensor, labels: Tensor,
                   batch_size: int, device: torch.device) -> float:
    correct = 0
    for start in range(0, images.size(0), batch_size):
        x = to_float(images[start:start + batch_size].to(device))
        logits = head(encoder(x).float())
        correct += int((logits.argmax(1).cpu() == labels[start:start + batch_size]).sum())
    return 100.0 * correct / max(images.size(0), 1)
