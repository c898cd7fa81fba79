"""SimCLR augmentations on batches of image tensors, per-sample random, on any device.

One call augments a whole batch: every image gets its own crop, flip, colour-jitter factors (and
jitter order), grayscale draw, all taken from one ``torch.Generator``, so a run is reproducible and
its augmentation stream can be checkpointed. This replaces per-image PIL transforms in worker
processes: on a GPU the batch never leaves the device, on the CPU it avoids per-image Python.

The draws follow torchvision's ``RandomResizedCrop`` (10 tries, then a centre crop),
``RandomHorizontalFlip``, ``RandomApply(ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s), p=0.8)`` with a
random order of the four adjustments, and ``RandomGrayscale(0.2)``. Differences: resizing is
bicubic interpolation of float pixels by ``grid_sample`` (PIL's bicubic in the official code works on
uint8 and rounds after each step), which changes pixels by rounding only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SimCLRAugment", "to_float", "rgb_to_grayscale", "adjust_hue", "random_crop_flip"]

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's weights


def to_float(images: Tensor) -> Tensor:
    """uint8 ``[B, 3, H, W]`` in 0..255 to float in [0, 1]; float input is returned as is."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """Luma ``[B, 1, H, W]`` with torchvision's weights."""
    r, g, b = images.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def adjust_hue(images: Tensor, factor: Tensor) -> Tensor:
    """Shift each image's hue by ``factor`` (``[B]``, in turns, within [-0.5, 0.5])."""
    r, g, b = images.unbind(1)
    maxc, _ = images.max(1)  # the value channel
    minc, _ = images.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    saturation = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)),
                             torch.zeros_like(maxc))
    hue = torch.where(maxc == r, (g - b) / safe,
                      torch.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    hue = torch.remainder(hue + factor.view(-1, 1, 1), 1.0)
    # HSV -> RGB without branches: channel n (R=5, G=3, B=1) is v - v s clamp(min(k, 4-k), 0, 1)
    # with k = (n + 6h) mod 6.
    h6 = (hue * 6.0).unsqueeze(1)
    n = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + h6, 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    value, saturation = maxc.unsqueeze(1), saturation.unsqueeze(1)
    return value - value * saturation * ramp


def random_crop_flip(images: Tensor, padding: int = 4, flip_p: float = 0.5,
                     generator: torch.Generator | None = None) -> Tensor:
    """The linear probe's augmentation, batched: torchvision's ``RandomCrop(H, padding,
    padding_mode="reflect")`` then ``RandomHorizontalFlip(flip_p)``, each image its own draw.
    ``images``: ``[B, 3, H, W]``, uint8 or float in [0, 1]; returns float."""
    if images.dim() != 4 or images.size(1) != 3:
        raise ValueError(f"'images' must have shape [B, 3, H, W], got {tuple(images.shape)}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"'padding' must be an integer >= 0, got {padding!r}")
    if not 0 <= flip_p <= 1:
        raise ValueError(f"'flip_p' must be a probability in [0, 1], got {flip_p}")
    x = to_float(images)
    b, _, height, width = x.shape
    if padding > min(height, width) - 1:
        raise ValueError(f"'padding' ({padding}) must be smaller than the image side "
                         f"({min(height, width)}) to reflect")
    padded = F.pad(x, (padding,) * 4, mode="reflect") if padding else x
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    flip = torch.rand(b, generator=generator, device=x.device) < flip_p
    rows = top.view(b, 1) + torch.arange(height, device=x.device)  # [B, H]
    cols = left.view(b, 1) + torch.arange(width, device=x.device)  # [B, W]
    cols = torch.where(flip.view(b, 1), cols.flip(1), cols)  # a flip reads the columns backwards
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.view(b, height, 1), cols.view(b, 1, width)]
    return out.permute(0, 3, 1, 2).contiguous()


class SimCLRAugment(nn.Module):
    r"""SimCLR's augmentation pipeline on a batch ``[B, 3, H, W]`` (uint8 or float in [0, 1]).

    Args:
        size (int): output side length (default 32).
        scale (tuple): crop area range, a fraction of the image (default ``(0.08, 1.0)``).
        ratio (tuple): crop aspect-ratio range (default ``(3/4, 4/3)``).
        flip_p (float): horizontal-flip probability.
        jitter_strength (float): colour-distortion strength :math:`s` (the official code: 0.5).
        jitter_p (float): probability of colour jitter (0.8).
        grayscale_p (float): probability of grayscale (0.2).
        mean, std (tuple, optional): normalise the output (the official code does not).
    """

    def __init__(self, size: int = 32, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                 jitter_strength: float = 0.5, jitter_p: float = 0.8, grayscale_p: float = 0.2,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> None:
        super().__init__()
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"'scale' must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"'ratio' must satisfy 0 < min <= max, got {ratio}")
        for name, p in (("flip_p", flip_p), ("jitter_p", jitter_p), ("grayscale_p", grayscale_p)):
            if not 0 <= p <= 1:
                raise ValueError(f"'{name}' must be a probability in [0, 1], got {p}")
        if jitter_strength < 0:
            raise ValueError(f"'jitter_strength' must be >= 0, got {jitter_strength}")
        self.size, self.scale, self.ratio = size, scale, ratio
        self.flip_p, self.jitter_p, self.grayscale_p = flip_p, jitter_p, grayscale_p
        s = jitter_strength
        self.brightness = self.contrast = self.saturation = 0.8 * s
        self.hue = min(0.2 * s, 0.5)
        self.mean, self.std = mean, std

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if images.dim() != 4 or images.size(1) != 3:
            raise ValueError(f"'images' must have shape [B, 3, H, W], got {tuple(images.shape)}")
        x = to_float(images)
        x = self._resized_crop_and_flip(x, generator)
        x = self._color_jitter(x, generator)
        gray = self._draw(x.size(0), generator, x.device) < self.grayscale_p
        x = torch.where(gray.view(-1, 1, 1, 1), rgb_to_grayscale(x).expand_as(x), x)
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x

    @staticmethod
    def _draw(n: int, generator: torch.Generator | None, device: torch.device,
              *shape: int) -> Tensor:
        return torch.rand(n, *shape, generator=generator, device=device)

    def _resized_crop_and_flip(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        b, _, height, width = x.shape
        device = x.device
        area = height * width
        tries = 10
        target = area * (self.scale[0] + (self.scale[1] - self.scale[0])
                         * self._draw(b, generator, device, tries))
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * self._draw(b, generator, device, tries))
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = valid.float().argmax(1, keepdim=True)
        w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
        # No valid try: torchvision's fallback, a centre crop clamped to the ratio range.
        fallback = ~valid.any(1)
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw, fh = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            fw, fh = round(height * self.ratio[1]), height
        else:
            fw, fh = width, height
        w = torch.where(fallback, torch.full_like(w, fw), w)
        h = torch.where(fallback, torch.full_like(h, fh), h)
        top = torch.floor(self._draw(b, generator, device) * (height - h + 1))
        left = torch.floor(self._draw(b, generator, device) * (width - w + 1))
        top = torch.where(fallback, torch.floor((height - h) / 2), top)
        left = torch.where(fallback, torch.floor((width - w) / 2), left)
        flip = self._draw(b, generator, device) < self.flip_p
        # Affine map from output to input in normalised coordinates (align_corners=False).
        theta = torch.zeros(b, 2, 3, device=device)
        theta[:, 0, 0] = torch.where(flip, -w / width, w / width)
        theta[:, 0, 2] = (2 * left + w) / width - 1
        theta[:, 1, 1] = h / height
        theta[:, 1, 2] = (2 * top + h) / height - 1
        grid = F.affine_grid(theta.to(x.dtype), [b, 3, self.size, self.size], align_corners=False)
        out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
        return out.clamp_(0.0, 1.0)

    def _color_jitter(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        b, device = x.size(0), x.device
        apply = self._draw(b, generator, device) < self.jitter_p

        def factors(spread: float) -> Tensor:
            lo = max(0.0, 1.0 - spread)
            return lo + (1.0 + spread - lo) * self._draw(b, generator, device)

        brightness, contrast = factors(self.brightness), factors(self.contrast)
        saturation = factors(self.saturation)
        hue = (2 * self._draw(b, generator, device) - 1) * self.hue
        order = torch.argsort(self._draw(b, generator, device, 4), dim=1)  # a random permutation
        x = x.clone()
        for position in range(4):
            for op in range(4):
                rows = torch.nonzero(apply & (order[:, position] == op)).view(-1)
                if rows.numel() == 0:
                    continue
                part = x[rows]
                if op == 0:
                    part = part * brightness[rows].view(-1, 1, 1, 1)
                elif op == 1:
                    part = _blend(part, rgb_to_grayscale(part).mean((1, 2, 3), keepdim=True),
                                  contrast[rows])
                elif op == 2:
                    part = _blend(part, rgb_to_grayscale(part), saturation[rows])
                else:
                    part = adjust_hue(part, hue[rows])
                x[rows] = part.clamp_(0.0, 1.0)
        return x

    def extra_repr(self) -> str:
        return (f"size={self.size}, scale={self.scale}, jitter=({self.brightness:.2f}, "
                f"{self.contrast:.2f}, {self.saturation:.2f}, {self.hue:.2f}) p={self.jitter_p}, "
                f"grayscale_p={self.grayscale_p}")


def _blend(image: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = factor.view(-1, 1, 1, 1)
    return f * image + (1 - f) * other
