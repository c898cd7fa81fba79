"""CIFAR-10 / CIFAR-100 as in-memory uint8 tensors, with sample indices.

Images are held as one ``uint8`` tensor ``[N, 3, 32, 32]`` (150 MB for CIFAR-10's training set) and
augmented in batches on the training device (see :mod:`mp_contrastive.vision.augment`), so data
loading never starves a GPU and every random draw comes from one checkpointable generator.

Where the data comes from, in order: (1) the offline packed copy this project ships alongside
(``<root>/cifar10/{train,test}_jpeg.npz``: JPEG bytes + labels, see the data README), (2)
torchvision's own layout under ``<root>`` or ``<root>/<name>`` (``cifar-10-batches-py`` /
``cifar-100-python``), (3) a torchvision download into ``<root>`` when ``download=True``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mp_contrastive._paths import default_cache_dir, default_data_root

__all__ = ["ImageArrays", "DATASETS", "CIFAR_MEAN_STD", "load_cifar", "stratified_subset"]

DATASETS = {"cifar10": 10, "cifar100": 100}

#: Per-channel (mean, std) of the training images in [0, 1], the values solo-learn normalises
#: CIFAR with (``solo/data/pretrain_dataloader.py``, ``CifarTransform``).
CIFAR_MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


@dataclass
class ImageArrays:
    """Images ``[N, 3, H, W]`` (uint8), labels ``[N]`` (int64) and where they came from."""

    images: Tensor
    labels: Tensor
    num_classes: int
    source: str

    def __len__(self) -> int:
        return self.images.size(0)

    def subset(self, index: Tensor) -> ImageArrays:
        return ImageArrays(self.images[index], self.labels[index], self.num_classes,
                           f"{self.source} [subset of {index.numel()}]")


def load_cifar(name: str = "cifar10", root: str | Path | None = None, train: bool = True,
               download: bool = False,
               select: Callable[[Tensor], Tensor] | None = None) -> ImageArrays:
    """Load a CIFAR split from the first source that has it (see the module docstring).

    ``root`` defaults to ``$MP_CONTRASTIVE_DATA``, else ``~/.cache/mp_contrastive``
    (``$XDG_CACHE_HOME`` respected).

    ``select`` maps the labels to the indices to keep (e.g. a class-balanced subset); the packed
    copy then decodes only those images.
    """
    if name not in DATASETS:
        raise ValueError(f"'name' must be one of {tuple(DATASETS)}, got {name!r}")
    root = (default_data_root() or default_cache_dir()) if root is None else Path(root)
    if not root.is_dir() and not download:
        raise FileNotFoundError(
            f"data root '{root}' does not exist. Pass --data-root (or set MP_CONTRASTIVE_DATA) to a "
            f"folder holding {name} in torchvision's layout or the packed npz copy, or add "
            f"--download to fetch it with torchvision (needs internet).")
    split = "train" if train else "test"
    packed = root / name / f"{split}_jpeg.npz"
    if packed.is_file():
        return _load_packed(packed, DATASETS[name], select)
    attempts = [str(packed)]
    for folder in (root, root / name):
        try:
            return _select(_load_torchvision(name, folder, train, download=False), select)
        except RuntimeError:
            attempts.append(str(folder))
    if download:
        try:
            return _select(_load_torchvision(name, root, train, download=True), select)
        except OSError as error:  # urllib's URLError is an OSError: offline, refused, DNS
            raise FileNotFoundError(
                f"{name} ({split}) could not be downloaded into '{root}' ({error}): this machine "
                f"may be offline; point --data-root at a folder that has it instead") from None
    raise FileNotFoundError(
        f"{name} ({split}) not found. Looked for the packed copy and torchvision's layout in: "
        f"{', '.join(attempts)}. Either point --data-root at a folder that has it, or add "
        f"--download to let torchvision fetch it into '{root}' (needs internet).")


def stratified_subset(labels: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """``size`` indices with (as near as possible) equally many per class, in random order."""
    num_classes = int(labels.max()) + 1
    if not 0 < size <= labels.numel():
        raise ValueError(f"'size' must be in [1, {labels.numel()}], got {size}")
    per_class = [torch.nonzero(labels == c).view(-1) for c in range(num_classes)]
    quota = [size // num_classes + (c < size % num_classes) for c in range(num_classes)]
    chosen = [idx[torch.randperm(idx.numel(), generator=generator)[:q]]
              for idx, q in zip(per_class, quota, strict=True)]
    index = torch.cat(chosen)
    return index[torch.randperm(index.numel(), generator=generator)]


def _select(arrays: ImageArrays, select: Callable[[Tensor], Tensor] | None) -> ImageArrays:
    return arrays if select is None else arrays.subset(select(arrays.labels))


def _load_packed(path: Path, num_classes: int,
                 select: Callable[[Tensor], Tensor] | None) -> ImageArrays:
    from PIL import Image

    with np.load(path, allow_pickle=False) as data:
        buffer, offsets, labels = data["jpeg"], data["offsets"], torch.from_numpy(data["labels"])
    index = torch.arange(labels.numel()) if select is None else select(labels.long())
    images = np.stack([
        np.asarray(Image.open(io.BytesIO(buffer[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
        for i in index.tolist()])
    source = str(path) if select is None else f"{path} [subset of {index.numel()}]"
    return ImageArrays(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                       labels[index].long(), num_classes, source)


def _load_torchvision(name: str, root: Path, train: bool, download: bool) -> ImageArrays:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    dataset = cls(str(root), train=train, download=download)
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return ImageArrays(images, torch.as_tensor(dataset.targets).long(), DATASETS[name],
                       f"torchvision {cls.__name__} at {root}")
