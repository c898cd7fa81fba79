"""Bad input into every public entry point -> a ``ValueError`` / ``TypeError`` naming the argument
(issue 26). One table row per (entry point, argument, class of bad value); each row is a property
over the values hypothesis draws from its class. The message is matched on the argument's name only
(as a whole word), never on the wording, so rewording a message cannot break a test.

The classes are those a user sweep found: negative / NaN / Inf weights, non-finite features,
integer and bool dtypes, tensors on another device (``meta``), edge indices of the wrong dtype,
unknown device strings, non-int epochs and seeds, non-Tiling ``tiling``, out-of-range scalars and
features whose inner products overflow.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

import mp_contrastive
from mp_contrastive import (
    AttentionSimCLRLoss,
    MessagePassingLoss,
    SimCLRLoss,
    augmentation_graph,
    graph,
    knn,
    losses,
    memory,
    nn,
)
from mp_contrastive.graph import augmentation_edges, sphere_projection, view_sample_index
from mp_contrastive.knn import (
    AffinityIndex,
    BankIndex,
    affinity_graph,
    choose_backend,
    sampled_affinity_graph,
)
from mp_contrastive.losses import _plain_nt_xent as plain_nt_xent
from mp_contrastive.losses import descent_loss
from mp_contrastive.memory import (
    MultiStageMemory,
    NegativeBank,
    StageAggregation,
    aggregate_stages,
)
from mp_contrastive.nn import (
    AlignmentConv,
    AttentionAlignmentConv,
    ContrastiveConv,
    UniformityConv,
)
from mp_contrastive.nn.functional import AttentionSpec
from tests.properties import (
    FAST,
    OTHER_DEVICE,
    bad_device_strings,
    bad_index_dtypes,
    bad_weight_value,
    bad_weights,
    negative,
    non_finite,
    non_float_dtypes,
    not_an_int,
    not_positive,
    with_bad_entry,
)
from tests.reference import complete_graph

# One small batch (3 samples x 2 views, float64) and its graphs, shared by every row.
X = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
SAMPLE = torch.arange(3).repeat(2)
AUG = augmentation_graph(3, 2, dtype=torch.float64)
EI, EW = AUG.edge_index, AUG.edge_weight
AFF = complete_graph(6)
AFF_W = torch.rand(AFF.size(1), generator=torch.Generator().manual_seed(1),
                   dtype=torch.float64) + 0.1
NEG = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
EMPTY_INDEX = torch.empty(2, 0, dtype=torch.long)


@dataclass(frozen=True)
class Case:
    """``call(bad)`` passes ``bad`` as the argument ``arg`` of the entry point ``entry``."""

    entry: str
    arg: str
    call: Callable[[object], object]
    values: SearchStrategy

    @property
    def id(self) -> str:
        return f"{self.entry}-{self.arg}"


def meta(t: torch.Tensor) -> torch.Tensor:
    return t.to(OTHER_DEVICE)


def on_other_device(t: torch.Tensor) -> SearchStrategy:
    return st.just(meta(t))


def memory_with_write() -> MultiStageMemory:
    mem = MultiStageMemory(6, 3, num_stages=2, dtype=torch.float64)
    mem.write(torch.arange(6), X, 0)
    return mem


def bank_with(x: torch.Tensor) -> NegativeBank:
    bank = NegativeBank(4, x.size(1), dtype=x.dtype)
    bank.push(x)
    return bank


def attention_loss(**kwargs: object) -> AttentionSimCLRLoss:
    return AttentionSimCLRLoss(normalize="positives", **kwargs)


E, A = EI.size(1), AFF.size(1)
bad_edge_weights = bad_weights(E)
bad_affinity_weights = bad_weights(A)
bad_anchor_weights = bad_weights(6)
bad_x = with_bad_entry(X)

CASES: list[Case] = [
    # -- negative, NaN, Inf weights ---------------------------------------------------------------
    Case("UniformityConv", "edge_weight", lambda w: UniformityConv()(X, AFF, w),
         bad_affinity_weights),
    Case("UniformityConv", "anchor_weight",
         lambda w: UniformityConv()(X, AFF, anchor_weight=w), bad_anchor_weights),
    Case("ContrastiveConv", "edge_weight", lambda w: ContrastiveConv()(X, EI, w), bad_edge_weights),
    Case("ContrastiveConv", "affinity_weight",
         lambda w: ContrastiveConv()(X, EI, EW, affinity_index=AFF, affinity_weight=w),
         bad_affinity_weights),
    Case("ContrastiveConv", "anchor_weight", lambda w: ContrastiveConv()(X, EI, EW, anchor_weight=w),
         bad_anchor_weights),
    Case("AttentionAlignmentConv", "edge_weight", lambda w: AttentionAlignmentConv()(X, EI, w),
         bad_edge_weights),
    Case("AttentionAlignmentConv(neighbors)", "edge_weight",
         lambda w: AttentionAlignmentConv(normalize="neighbors")(X, EI, w), bad_edge_weights),
    Case("AlignmentConv", "edge_weight", lambda w: AlignmentConv()(X, EI, w), bad_edge_weights),
    Case("MessagePassingLoss", "edge_weight",
         lambda w: MessagePassingLoss(UniformityConv())(X, AFF, w), bad_affinity_weights),
    # A NaN weight must not give a finite loss with a NaN gradient: it is refused.
    Case("SimCLRLoss", "affinity_weight",
         lambda w: SimCLRLoss()(X, SAMPLE, affinity_index=AFF, affinity_weight=w),
         bad_affinity_weights),
    Case("AttentionSimCLRLoss", "affinity_weight",
         lambda w: AttentionSimCLRLoss()(X, SAMPLE, affinity_index=AFF, affinity_weight=w),
         bad_affinity_weights),
    # -- non-finite features ----------------------------------------------------------------------
    Case("UniformityConv", "x", lambda x: UniformityConv()(x), bad_x),
    Case("ContrastiveConv", "x", lambda x: ContrastiveConv()(x, EI, EW), bad_x),
    Case("ContrastiveConv", "negatives", lambda n: ContrastiveConv()(X, EI, EW, negatives=n),
         with_bad_entry(NEG)),
    Case("AttentionAlignmentConv", "x", lambda x: AttentionAlignmentConv()(x, EI), bad_x),
    Case("AttentionAlignmentConv", "attention_x",
         lambda a: AttentionAlignmentConv(normalize="positives")(X, EI, attention_x=a), bad_x),
    Case("AlignmentConv", "x", lambda x: AlignmentConv()(x, EI), bad_x),
    Case("SimCLRLoss", "z0", lambda z: SimCLRLoss()(z, SAMPLE), bad_x),
    Case("SimCLRLoss", "z1", lambda z: SimCLRLoss()(X[:3], z), with_bad_entry(X[3:])),
    Case("AttentionSimCLRLoss", "attention_features",
         lambda a: attention_loss()(X, SAMPLE, a), bad_x),
    Case("plain_nt_xent", "z", lambda z: plain_nt_xent(z, SAMPLE), bad_x),
    Case("NegativeBank.push", "x", lambda x: NegativeBank(4).push(x), bad_x),
    Case("MultiStageMemory.write", "features",
         lambda f: MultiStageMemory(6, 3, dtype=torch.float64).write(torch.arange(6), f, 0), bad_x),
    Case("affinity_graph", "x", lambda x: affinity_graph(x, 2), bad_x),
    Case("affinity_graph", "queries", lambda q: affinity_graph(X, 2, queries=q), bad_x),
    Case("sampled_affinity_graph", "x", lambda x: sampled_affinity_graph(x, 2, 2), bad_x),
    Case("AffinityIndex", "x", lambda x: AffinityIndex(x), bad_x),
    # -- integer / bool dtypes --------------------------------------------------------------------
    Case("NegativeBank", "dtype", lambda d: NegativeBank(4, 3, dtype=d), non_float_dtypes),
    Case("MultiStageMemory", "dtype", lambda d: MultiStageMemory(4, 3, dtype=d), non_float_dtypes),
    Case("augmentation_graph", "dtype", lambda d: augmentation_graph(3, 2, dtype=d),
         non_float_dtypes),
    Case("augmentation_edges", "dtype", lambda d: augmentation_edges(SAMPLE, dtype=d),
         non_float_dtypes),
    Case("NegativeBank.push", "x", lambda d: NegativeBank(4).push(X.to(d)), non_float_dtypes),
    Case("UniformityConv", "x", lambda d: UniformityConv()(X.to(d)), non_float_dtypes),
    Case("SimCLRLoss", "z0", lambda d: SimCLRLoss()(X.to(d), SAMPLE), non_float_dtypes),
    Case("aggregate_stages", "stages",
         lambda d: aggregate_stages(torch.ones(2, 3, 4, dtype=d), "sum"), non_float_dtypes),
    # -- edge indices of the wrong dtype ----------------------------------------------------------
    Case("UniformityConv", "edge_index", lambda d: UniformityConv()(X, AFF.to(d)), bad_index_dtypes),
    Case("ContrastiveConv", "edge_index", lambda d: ContrastiveConv()(X, EI.to(d)),
         bad_index_dtypes),
    Case("ContrastiveConv", "affinity_index",
         lambda d: ContrastiveConv()(X, EI, affinity_index=AFF.to(d)), bad_index_dtypes),
    Case("AttentionAlignmentConv", "edge_index", lambda d: AttentionAlignmentConv()(X, EI.to(d)),
         bad_index_dtypes),
    Case("AlignmentConv", "edge_index", lambda d: AlignmentConv()(X, EI.to(d)), bad_index_dtypes),
    Case("SimCLRLoss", "affinity_index",
         lambda d: SimCLRLoss()(X, SAMPLE, affinity_index=AFF.to(d)), bad_index_dtypes),
    Case("affinity_graph", "exclude", lambda d: affinity_graph(X, 2, exclude=EI.to(d)),
         bad_index_dtypes),
    # -- tensors on another device ----------------------------------------------------------------
    Case("UniformityConv", "x", lambda x: UniformityConv()(x, AFF), on_other_device(X)),
    Case("UniformityConv", "edge_index", lambda e: UniformityConv()(X, e), on_other_device(AFF)),
    Case("UniformityConv", "edge_weight", lambda w: UniformityConv()(X, AFF, w),
         on_other_device(AFF_W)),
    Case("UniformityConv", "anchor_weight", lambda w: UniformityConv()(X, anchor_weight=w),
         on_other_device(torch.ones(6, dtype=torch.float64))),
    Case("UniformityConv", "x_dst", lambda x: UniformityConv()((X, x)), on_other_device(X)),
    Case("ContrastiveConv", "edge_index", lambda e: ContrastiveConv()(X, e), on_other_device(EI)),
    Case("ContrastiveConv", "edge_weight", lambda w: ContrastiveConv()(X, EI, w),
         on_other_device(EW)),
    Case("ContrastiveConv", "affinity_index",
         lambda e: ContrastiveConv()(X, EI, affinity_index=e), on_other_device(AFF)),
    Case("ContrastiveConv", "affinity_weight",
         lambda w: ContrastiveConv()(X, EI, affinity_index=AFF, affinity_weight=w),
         on_other_device(AFF_W)),
    Case("ContrastiveConv", "anchor_weight", lambda w: ContrastiveConv()(X, EI, anchor_weight=w),
         on_other_device(torch.ones(6, dtype=torch.float64))),
    Case("ContrastiveConv", "negatives", lambda n: ContrastiveConv()(X, EI, negatives=n),
         on_other_device(NEG)),
    Case("ContrastiveConv", "attention_x",
         lambda a: ContrastiveConv(attention=AttentionSpec(normalize="positives"))(
             X, EI, attention_x=a), on_other_device(X)),
    Case("AttentionAlignmentConv", "edge_index", lambda e: AttentionAlignmentConv()(X, e),
         on_other_device(EI)),
    Case("AttentionAlignmentConv", "edge_weight", lambda w: AttentionAlignmentConv()(X, EI, w),
         on_other_device(EW)),
    Case("AttentionAlignmentConv", "attention_x",
         lambda a: AttentionAlignmentConv()(X, EI, attention_x=a), on_other_device(X)),
    Case("AlignmentConv", "edge_index", lambda e: AlignmentConv()(X, e), on_other_device(EI)),
    Case("AlignmentConv", "edge_weight", lambda w: AlignmentConv()(X, EI, w), on_other_device(EW)),
    Case("MessagePassingLoss", "edge_index",
         lambda e: MessagePassingLoss(ContrastiveConv())(X, e), on_other_device(EI)),
    Case("SimCLRLoss", "z1", lambda z: SimCLRLoss()(X[:3], z), on_other_device(X[3:])),
    Case("SimCLRLoss", "sample", lambda s: SimCLRLoss()(X, s), on_other_device(SAMPLE)),
    Case("SimCLRLoss", "affinity_index", lambda e: SimCLRLoss()(X, SAMPLE, affinity_index=e),
         on_other_device(AFF)),
    Case("SimCLRLoss", "affinity_weight",
         lambda w: SimCLRLoss()(X, SAMPLE, affinity_index=AFF, affinity_weight=w),
         on_other_device(AFF_W)),
    Case("SimCLRLoss(memory_bank_size)", "sample_ids",
         lambda s: SimCLRLoss(memory_bank_size=4)(X[:3], X[3:], sample_ids=s),
         on_other_device(torch.arange(3))),
    Case("AttentionSimCLRLoss", "attention_features",
         lambda a: attention_loss()(X, SAMPLE, a), on_other_device(X)),
    Case("plain_nt_xent", "sample", lambda s: plain_nt_xent(X, s), on_other_device(SAMPLE)),
    Case("descent_loss", "step",
         lambda s: descent_loss(X, s, 1.0, X.sum()), on_other_device(X)),
    Case("NegativeBank.push", "x", lambda x: NegativeBank(4, 3).push(x),
         on_other_device(X.float())),
    Case("NegativeBank.push", "ids", lambda i: NegativeBank(4).push(X, i),
         on_other_device(torch.arange(6))),
    Case("NegativeBank.same_sample", "ids", lambda i: bank_with(X).same_sample(i),
         on_other_device(torch.arange(6))),
    Case("MultiStageMemory.write", "index",
         lambda i: MultiStageMemory(6, 3).write(i, X.float(), 0), on_other_device(torch.arange(6))),
    Case("MultiStageMemory.write", "features",
         lambda f: MultiStageMemory(6, 3).write(torch.arange(6), f, 0), on_other_device(X.float())),
    Case("MultiStageMemory.read", "index", lambda i: memory_with_write().read(i, 1),
         on_other_device(torch.arange(6))),
    Case("affinity_graph", "queries", lambda q: affinity_graph(X, 2, queries=q),
         on_other_device(X)),
    Case("affinity_graph", "exclude", lambda e: affinity_graph(X, 2, exclude=e),
         on_other_device(EI)),
    Case("AffinityIndex.sample", "queries", lambda q: AffinityIndex(X).sample(2, 2, q),
         on_other_device(X)),
    # -- confusing-error classes: tiling, epochs, seeds, generators, devices ----------------------
    *[Case(name, "tiling", make, st.sampled_from(["big", 4096, None, (64, 64)])) for name, make in [
        ("UniformityConv", lambda t: UniformityConv(tiling=t)),
        ("ContrastiveConv", lambda t: ContrastiveConv(tiling=t)),
        ("AttentionAlignmentConv", lambda t: AttentionAlignmentConv(tiling=t)),
        ("SimCLRLoss", lambda t: SimCLRLoss(tiling=t)),
        ("AttentionSimCLRLoss", lambda t: AttentionSimCLRLoss(tiling=t)),
        ("AffinityIndex", lambda t: AffinityIndex(X, tiling=t)),
        ("affinity_graph", lambda t: affinity_graph(X, 2, tiling=t)),
        ("sampled_affinity_graph", lambda t: sampled_affinity_graph(X, 2, 2, tiling=t)),
        ("BankIndex", lambda t: BankIndex(tiling=t)),
    ]],
    Case("MultiStageMemory.write", "epoch",
         lambda e: MultiStageMemory(6, 3).write(torch.arange(6), X.float(), e), not_an_int),
    Case("MultiStageMemory.read", "epoch", lambda e: MultiStageMemory(6, 3).read(torch.arange(6), e),
         not_an_int),
    Case("AffinityIndex", "seed", lambda s: AffinityIndex(X, seed=s), not_an_int),
    Case("BankIndex", "seed", lambda s: BankIndex(seed=s), not_an_int),
    Case("sampled_affinity_graph", "generator",
         lambda g: sampled_affinity_graph(X, 2, 2, generator=g), st.sampled_from([0, 1, "a", 0.5])),
    Case("AffinityIndex.sample", "generator", lambda g: AffinityIndex(X).sample(2, 2, generator=g),
         st.sampled_from([0, "seed"])),
    Case("augmentation_graph", "device", lambda d: augmentation_graph(3, 2, device=d),
         bad_device_strings),
    Case("augmentation_graph(sample=)", "device",
         lambda d: augmentation_graph(sample=SAMPLE, device=d), bad_device_strings),
    Case("view_sample_index", "device", lambda d: view_sample_index(3, 2, device=d),
         bad_device_strings),
    Case("NegativeBank", "device", lambda d: NegativeBank(4, 3, device=d), bad_device_strings),
    Case("choose_backend", "device", lambda d: choose_backend(10, 10, 2, d), bad_device_strings),
    # AffinityIndex takes its device from x: a device= argument is refused by name.
    Case("AffinityIndex", "device", lambda d: AffinityIndex(X, device=d), bad_device_strings),
    # -- out-of-range scalars ---------------------------------------------------------------------
    Case("MultiStageMemory", "gamma", lambda g: MultiStageMemory(4, 3, aggr="decay", gamma=g),
         not_positive),
    Case("StageAggregation", "gamma", lambda g: StageAggregation("decay", gamma=g), not_positive),
    Case("aggregate_stages", "gamma",
         lambda g: aggregate_stages(torch.ones(2, 3, 4), "decay", gamma=g), not_positive),
    Case("SimCLRLoss", "temperature", lambda t: SimCLRLoss(temperature=t), not_positive),
    Case("AttentionSimCLRLoss", "temperature", lambda t: AttentionSimCLRLoss(temperature=t),
         not_positive),
    Case("AttentionSimCLRLoss", "beta", lambda b: AttentionSimCLRLoss(beta=b),
         st.one_of(negative, non_finite)),
    Case("AttentionAlignmentConv", "beta", lambda b: AttentionAlignmentConv(beta=b),
         st.one_of(negative, non_finite)),
    Case("sphere_projection", "temperature", lambda t: sphere_projection(X, t), not_positive),
    Case("plain_nt_xent", "temperature", lambda t: plain_nt_xent(X, SAMPLE, t), not_positive),
    Case("descent_loss", "alpha", lambda a: descent_loss(X, X, a, X.sum()), not_positive),
    *[Case(name, "alpha", make, not_positive) for name, make in [
        ("UniformityConv", lambda a: UniformityConv(alpha=a)),
        ("ContrastiveConv", lambda a: ContrastiveConv(alpha=a)),
        ("AttentionAlignmentConv", lambda a: AttentionAlignmentConv(alpha=a)),
        ("AlignmentConv", lambda a: AlignmentConv(alpha=a)),
    ]],
    Case("SimCLRLoss", "reduction", lambda r: SimCLRLoss(reduction=r),
         st.sampled_from(["avg", "", "MEAN"])),
    Case("view_sample_index", "num_views", lambda v: view_sample_index(3, v),
         st.integers(-3, 1)),
    Case("augmentation_graph", "num_samples", lambda n: augmentation_graph(n, 2),
         st.one_of(st.integers(-3, 0), st.just(2.0))),
    Case("augmentation_edges", "sample", lambda s: augmentation_edges(s),
         st.sampled_from([torch.arange(4), torch.tensor([0, 0, 1]), torch.tensor([-1, -1])])),
    Case("NegativeBank", "size", lambda s: NegativeBank(s), st.integers(-3, 0)),
    Case("MultiStageMemory", "num_stages", lambda k: MultiStageMemory(4, 3, num_stages=k),
         st.integers(-3, 0)),
    Case("MultiStageMemory.read", "index", lambda i: MultiStageMemory(6, 3).read(i, 1),
         st.sampled_from([torch.tensor([6]), torch.tensor([-1]), torch.tensor([0.5])])),
    Case("affinity_graph", "k", lambda k: affinity_graph(X, k), st.integers(-2, 0)),
    Case("sampled_affinity_graph", "num_samples",
         lambda m: sampled_affinity_graph(X, 2, m), st.integers(-2, 0)),
    Case("choose_backend", "num_candidates", lambda n: choose_backend(n, 10, 2, "cpu"),
         st.one_of(st.integers(-2, 0), st.just(1.5))),
    Case("BankIndex", "k", lambda k: BankIndex(k=k), st.integers(-2, 0)),
    Case("MessagePassingLoss", "conv", lambda c: MessagePassingLoss(c),
         st.sampled_from([None, torch.nn.Linear(2, 2), "ContrastiveConv"])),
    Case("StepConv", "flow", lambda f: UniformityConv(flow=f), st.just("target_to_source")),
    # -- overflow: inner products beyond the dtype's range ----------------------------------------
    *[Case(f"affinity_graph({metric}, {backend})", "x",
           lambda s, metric=metric, backend=backend: affinity_graph(
               X.float() * s, 2, metric=metric, backend=backend),
           st.sampled_from([1e20, 1e25, 1e30]))
      for metric in ("ip", "l2") for backend in ("exact", "faiss")],
    Case("affinity_graph(ivf)", "x",
         lambda s: affinity_graph(torch.randn(64, 3) * s, 2, backend="faiss", index="ivf",
                                  nlist=2), st.sampled_from([1e20, 1e30])),
    Case("AffinityIndex.search", "queries",
         lambda s: AffinityIndex(X).search(2, X * s), st.sampled_from([1e160, 1e200])),
    Case("AttentionAlignmentConv(dot)", "x",
         lambda s: AttentionAlignmentConv(beta=1.0)(X * s, EI), st.sampled_from([1e160, 1e200])),
    Case("AttentionAlignmentConv(beta)", "beta",
         lambda b: AttentionAlignmentConv(beta=b)(X * 1e3, EI), st.sampled_from([1e300, 1e305])),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
@FAST
@given(data=st.data())
def test_bad_input_names_the_argument(case: Case, data: st.DataObject) -> None:
    bad = data.draw(case.values, label=case.arg)
    # The name as a whole word: 'x' must not be satisfied by the x of 'edge_index'.
    with pytest.raises((ValueError, TypeError),
                       match=rf"(?<![\w.]){re.escape(case.arg)}(?!\w)") as info:
        case.call(bad)
    if isinstance(bad, torch.Tensor) and bad.device == OTHER_DEVICE:
        # A tensor on another device: the message also names both devices.
        assert info.type is ValueError
        assert str(OTHER_DEVICE) in str(info.value) and str(X.device) in str(info.value)


# -- every public entry point has rows above -------------------------------------------------------
#: Public names that are not entry points taking input: modules, constants, the Data subclass
#: (built by augmentation_graph) and a probe of the installed faiss.
NOT_ENTRY_POINTS = {"graph", "nn", "losses", "__version__", "AGGREGATIONS", "AugmentationGraph",
                    "AFFINITIES", "SIMILARITY_METRICS", "BACKENDS", "BANK_BACKENDS", "INDEXES",
                    "PROPOSALS",
                    "faiss_gpu_available"}


def public_entry_points() -> set[str]:
    names: set[str] = set()
    for module in (mp_contrastive, nn, losses, memory, graph, knn):
        names.update(module.__all__)
    return names - NOT_ENTRY_POINTS


def test_every_public_entry_point_has_bad_input_rows() -> None:
    covered = {re.split(r"[.(]", case.entry)[0] for case in CASES}
    missing = public_entry_points() - covered
    assert not missing, f"public entry points without a bad-input row: {sorted(missing)}"


@FAST
@given(w=bad_weight_value)
def test_nan_or_negative_affinity_weight_never_gives_a_finite_loss_with_nan_gradient(
        w: float) -> None:
    """The sweep's worst case: NaN in ``affinity_weight`` gave a finite SimCLR loss whose gradient
    was NaN. Any bad entry is now refused before a loss exists."""
    weight = AFF_W.clone()
    weight[3] = w
    z = X.clone().requires_grad_()
    with pytest.raises(ValueError, match="affinity_weight"):
        SimCLRLoss()(z, SAMPLE, affinity_index=AFF, affinity_weight=weight).backward()
    assert z.grad is None


def test_an_empty_edge_list_is_valid_input() -> None:
    # No neighbours is not bad input: the repulsion is zero and the layer returns x as it is.
    torch.testing.assert_close(UniformityConv()(X, EMPTY_INDEX), X)
