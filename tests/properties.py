"""Hypothesis strategies shared by the property-based tests (issue 26).

Tensors are drawn as a seed plus a shape and then filled by ``torch`` (drawing every entry through
hypothesis would be slow and shrink no better for these properties); the bad values, dtypes and
devices are drawn from the classes of bad input a user sweep found: negative, NaN, Inf and all-zero
weights, integer and bool dtypes, tensors on another device (``meta``: no data, and never the
device of the other arguments here), features of scale 1e-13 .. 1e30, and arguments of the wrong
type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from hypothesis import settings
from hypothesis import strategies as st
from torch import Tensor

#: Every property test runs with these: deterministic (the same examples on every run, so a
#: failure reproduces) and without hypothesis's per-example deadline (a first call may compile).
FAST = settings(max_examples=12, deadline=None, derandomize=True)
THOROUGH = settings(max_examples=25, deadline=None, derandomize=True)

#: "Another device" for every device test: a meta tensor has a shape but no data, so an unchecked
#: one fails inside ``.item()`` or a copy, which is exactly the confusing error to rule out.
OTHER_DEVICE = torch.device("meta")

seeds = st.integers(min_value=0, max_value=2**31 - 1)

#: Values that no weight or feature may hold.
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
#: Negative weights, from the tiny to the huge.
negative = st.floats(min_value=-1e30, max_value=-1e-30, allow_nan=False)
#: One bad entry for a weight vector: negative, NaN or +-Inf.
bad_weight_value = st.one_of(negative, non_finite)

#: dtypes that are not floating point (an integer bank or graph would truncate its weights).
non_float_dtypes = st.sampled_from([torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32,
                                    torch.int64])
#: dtypes ``edge_index`` may not have: PyG's scatter and gathers take int64 or int32 only.
bad_index_dtypes = st.sampled_from([torch.uint8, torch.int8, torch.int16, torch.bool,
                                    torch.float32, torch.float64])
#: Device strings torch does not know.
bad_device_strings = st.sampled_from(["tpu", "gpu", "kuda", "cpu:x", "cuda-0"])
#: Things that are not an int (an epoch, a seed): floats, strings, bools, None.
not_an_int = st.one_of(st.floats(allow_nan=True).filter(lambda v: v != int(v) if math.isfinite(v)
                                                        else True),
                       st.text(max_size=3), st.booleans(), st.none())
#: Things that are not a number > 0 (a temperature, a gamma, an alpha).
not_positive = st.one_of(st.floats(max_value=0.0), non_finite)
#: The scales at which cosine-normalised losses must give the scale-1 result: the extremes the
#: sweep hit (F.normalize's eps flattens norms below 1e-12; squares overflow above 1e154).
extreme_scales = st.sampled_from([1e-13, 1e-20, 1e-30, 1e20, 1e30, 1e100])


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@dataclass(frozen=True)
class Batch:
    """``num_samples x num_views`` views with features, their sample ids and a random sparse
    affinity graph among them (no self pairs) with positive weights, all float64."""

    x: Tensor
    sample: Tensor
    affinity_index: Tensor
    affinity_weight: Tensor

    @property
    def num_nodes(self) -> int:
        return self.x.size(0)


@st.composite
def batches(draw: st.DrawFn, min_samples: int = 2, max_samples: int = 5, max_views: int = 3,
            max_dim: int = 5) -> Batch:
    seed = draw(seeds)
    num_samples = draw(st.integers(min_samples, max_samples))
    num_views = draw(st.integers(2, max_views))
    dim = draw(st.integers(2, max_dim))
    n = num_samples * num_views
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    sample = torch.arange(num_samples).repeat(num_views)
    mask = torch.rand(n, n, generator=gen) < 0.6
    mask.fill_diagonal_(False)
    mask[torch.arange(n), (torch.arange(n) + 1) % n] = True  # every anchor has a neighbour
    dst, src = mask.nonzero().T
    weight = torch.rand(dst.numel(), generator=gen, dtype=torch.float64) + 0.1
    return Batch(x, sample, torch.stack([src, dst]), weight)


@st.composite
def bad_weights(draw: st.DrawFn, num: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """A positive weight vector ``[num]`` with one to ``num`` entries replaced by a bad value."""
    weight = torch.rand(num, generator=torch.Generator().manual_seed(draw(seeds)),
                        dtype=dtype) + 0.1
    count = draw(st.integers(1, num))
    weight[torch.randperm(num, generator=torch.Generator().manual_seed(draw(seeds)))[:count]] = \
        draw(bad_weight_value)
    return weight


@st.composite
def with_bad_entry(draw: st.DrawFn, x: Tensor) -> Tensor:
    """``x`` (a copy) with one entry set to NaN or +-Inf."""
    out = x.clone()
    flat = out.view(-1)
    flat[draw(st.integers(0, flat.numel() - 1))] = draw(non_finite)
    return out


def zero_some(weight: Tensor, seed: int, all_zero: bool) -> tuple[Tensor, Tensor]:
    """``weight`` with some (or all) entries zeroed, and the mask of the entries kept."""
    gen = torch.Generator().manual_seed(seed)
    keep = torch.zeros(weight.numel(), dtype=torch.bool) if all_zero else \
        torch.rand(weight.numel(), generator=gen) < 0.6
    return torch.where(keep, weight, torch.zeros_like(weight)), keep
