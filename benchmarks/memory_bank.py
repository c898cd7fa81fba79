"""Memory-bank NT-Xent: ``SimCLRLoss(memory_bank_size=K)`` (dense, and ``affinity="knn"``) next to
lightly's ``NTXentLoss(memory_bank_size=(K, d))``, measured in one run.

    python -m benchmarks.memory_bank --checkpoint runs/simclr_off_cpu_seed0/checkpoint.pt

Three tables:

* loss forward + backward + bank update (and, for the kNN path, index maintenance: every timed
  window of ``--repeats`` steps contains one re-training of the cells, ``retrain_every=repeats``),
  mean ms per step and peak memory, against lightly;
* a whole training step (a 2-layer MLP encoder on random inputs, AdamW) with each loss;
* the kNN path against the exact dense loss on the same bank: relative loss error and gradient
  cosine (w.r.t. both views), mean over ``--draws`` independent draws. With ``--checkpoint`` the
  bank and the batch are projections of augmented CIFAR-10 images by a trained encoder (the
  example's checkpoint); without it, synthetic clustered unit vectors.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks._measure import add_measure_arguments, interleaved_times, peak_memory, seed_and_threads, where
from mp_contrastive._reporting import markdown_table
from mp_contrastive.experiments.cli import (
    ArgumentParser,
    existing_file,
    make_parser,
    positive_float,
    positive_int,
)
from mp_contrastive.graph import sphere_projection
from mp_contrastive.knn import BankIndex
from mp_contrastive.losses import SimCLRLoss

TARGET_DENSE_TIME = 1.1     # our dense path / lightly
TARGET_DENSE_MEMORY = 1.2
TARGET_KNN_SPEEDUP = 3.0    # our dense path / our kNN path, at the largest bank
TARGET_LOSS_ERROR = 0.01
TARGET_COSINE = 0.99


def trained_features(checkpoint: str, count: int, seed: int, data_root: str | None) -> Tensor:
    """Projections ``[count, 128]`` of augmented CIFAR-10 training images (random images, one
    augmentation each) by the SimCLR encoder saved in ``checkpoint`` (eval mode); the architecture
    is read from the ``results.json`` beside it (the CPU preset's when there is none)."""
    from mp_contrastive.vision import ProjectionHead, SimCLRModel, resnet_cifar
    from mp_contrastive.vision.augment import SimCLRAugment
    from mp_contrastive.vision.data import load_cifar

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    results = Path(checkpoint).parent / "results.json"
    settings = json.loads(results.read_text())["settings"] if results.exists() else {}
    backbone = resnet_cifar(settings.get("arch", "resnet10"), settings.get("width", 16))
    model = SimCLRModel(backbone, ProjectionHead(backbone.out_dim))
    weights = {k[len("model."):]: v for k, v in state["method"].items() if k.startswith("model.")}
    model.load_state_dict(weights)
    model.eval()
    images = load_cifar("cifar10", data_root, train=True).images
    generator = torch.Generator().manual_seed(seed)
    augment = SimCLRAugment()
    out = []
    with torch.no_grad():
        for start in range(0, count, 1024):
            index = torch.randint(0, images.size(0), (min(1024, count - start),),
                                  generator=generator)
            out.append(model(augment(images[index], generator))[0])
    return torch.cat(out)


def clustered_features(count: int, dim: int, seed: int) -> Tensor:
    """Unit vectors around 64 random centres (a synthetic stand-in for trained features)."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(64, dim, generator=generator), dim=1)
    label = torch.randint(0, 64, (count,), generator=generator)
    return centres[label] + 0.35 * torch.randn(count, dim, generator=generator) / math.sqrt(dim)


def filled(loss: nn.Module, bank: Tensor) -> nn.Module:
    """``loss`` with its bank holding ``bank`` (lightly's pre-filled, ours pushed)."""
    if hasattr(loss, "memory_bank"):
        loss.memory_bank.bank = F.normalize(bank, dim=1).clone()
    else:
        loss.memory.push(bank)
    return loss


def mean_step_ms(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Mean wall time per call (ms), the functions taking turns (means, not medians: the kNN
    path's re-training every ``repeats`` steps is part of its cost)."""
    times = interleaved_times(runs, repeats, warmup=1, statistic=statistics.mean)
    return {name: 1e3 * seconds for name, seconds in times.items()}


def loss_step(loss: nn.Module, z0: Tensor, z1: Tensor) -> Callable[[], None]:
    def run() -> None:
        a, b = z0.clone().requires_grad_(), z1.clone().requires_grad_()
        loss(a, b).backward()
    return run


def training_step(loss: nn.Module, dim: int, batch: int, seed: int,
                  device: torch.device) -> Callable[[], None]:
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, dim)).to(device)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-3)
    x0, x1 = torch.randn(2, batch, 512, device=device).unbind(0)

    def run() -> None:
        optimizer.zero_grad()
        z = encoder(torch.cat([x0, x1]))
        loss(z[:batch], z[batch:]).backward()
        optimizer.step()
    return run


def contenders(size: int, dim: int, temperature: float, bank: Tensor,
               index: BankIndex) -> dict[str, nn.Module]:
    from lightly.loss import NTXentLoss

    return {
        "lightly NTXentLoss": filled(NTXentLoss(temperature, memory_bank_size=(size, dim)), bank),
        "SimCLRLoss dense": filled(SimCLRLoss(temperature, memory_bank_size=size), bank),
        "SimCLRLoss knn": filled(SimCLRLoss(temperature, memory_bank_size=size,
                                            affinity=index), bank),
    }


def accuracy(size: int, temperature: float, bank: Tensor, z0: Tensor, z1: Tensor,
             index: BankIndex, draws: int) -> tuple[float, float, float, float]:
    """Mean relative loss error, its worst draw, mean gradient cosine (w.r.t. both views' ``z``)
    and its worst draw of the kNN path against the dense loss, on the same bank (no update)."""
    z = torch.cat([z0, z1]).requires_grad_()
    h = sphere_projection(z, temperature)
    b = z0.size(0)

    def loss_and_grad(loss: SimCLRLoss) -> tuple[float, Tensor]:
        assert loss.memory is not None
        result = loss.memory.contrast(h[:b].detach(), h[b:].detach(), temperature)
        grad_h = torch.cat([result.grad_anchor, result.grad_positive]) / b
        (grad_z,) = torch.autograd.grad(h, z, grad_h, retain_graph=True)
        return result.energy.item() / b, grad_z.flatten()

    exact_value, exact_grad = loss_and_grad(filled(SimCLRLoss(temperature,
                                                              memory_bank_size=size), bank))
    knn = filled(SimCLRLoss(temperature, memory_bank_size=size, affinity=index), bank)
    errors, cosines = [], []
    for _ in range(draws):
        value, grad = loss_and_grad(knn)
        errors.append(abs(value - exact_value) / abs(exact_value))
        cosines.append(F.cosine_similarity(grad, exact_grad, 0).item())
    return (sum(errors) / draws, max(errors), sum(cosines) / draws, min(cosines))


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[16384, 65536],
                        help="bank sizes K")
    parser.add_argument("--batch", type=positive_int, default=256, help="batch size B")
    parser.add_argument("--dim", type=positive_int, default=128, help="feature width d")
    parser.add_argument("--temperature", type=positive_float, default=0.2,
                        help="temperature (the CPU preset's)")
    add_measure_arguments(parser, repeats=20, device="the losses and the bank",
                          repeats_help="timed steps per contender (and the kNN path's "
                                       "retrain_every)")
    parser.add_argument("--draws", type=positive_int, default=20,
                        help="independent kNN draws in the accuracy table")
    parser.add_argument("--k", type=positive_int, default=32, help="kNN head size")
    parser.add_argument("--num-samples", type=positive_int, default=256,
                        help="tail draws per anchor")
    parser.add_argument("--checkpoint", type=existing_file, default=None,
                        help="an image example's checkpoint.pt: measure accuracy on its "
                             "encoder's projections of CIFAR-10 (default: synthetic clusters)")
    parser.add_argument("--data-root", default=None,
                        help="CIFAR-10 for --checkpoint (default: $MP_CONTRASTIVE_DATA)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    seed_and_threads(args.seed, args.threads)
    largest = max(args.sizes)
    need = largest + args.batch
    source = "synthetic clusters"
    if args.checkpoint is not None:
        features = trained_features(args.checkpoint, need, args.seed, args.data_root)
        source = f"projections of augmented CIFAR-10 by {args.checkpoint}"
    else:
        features = clustered_features(need, args.dim, args.seed)
    device = torch.device(args.device)
    features = features.to(device)
    dim = features.size(1)
    print(f"# Memory-bank NT-Xent, B={args.batch}, d={dim}, tau={args.temperature}, "
          f"{where('cpu')}, "
          f"torch {torch.__version__}, {device}; features: {source}\n")
    z0, z1 = features[:args.batch], features[args.batch:2 * args.batch]
    rows, step_rows, accuracy_rows, verdicts = [], [], [], []
    for size in args.sizes:
        bank = features[-size:]

        def index() -> BankIndex:
            return BankIndex(args.k, args.num_samples, retrain_every=args.repeats,
                             seed=args.seed)

        losses = {name: loss.to(device) for name, loss in
                  contenders(size, dim, args.temperature, bank, index()).items()}
        times = mean_step_ms({name: loss_step(loss, z0, z1) for name, loss in losses.items()},
                             args.repeats)
        peaks = {name: peak_memory(loss_step(copy.deepcopy(loss), z0, z1))
                 for name, loss in losses.items()}
        steps = mean_step_ms({name: training_step(copy.deepcopy(loss), dim, args.batch,
                                                  args.seed, device)
                              for name, loss in losses.items()}, max(5, args.repeats // 2))
        lightly = "lightly NTXentLoss"
        for name in losses:
            rows.append([size, name, f"{times[name]:.1f}", f"{times[name] / times[lightly]:.2f}",
                         f"{peaks[name] / 2**20:.1f}", f"{peaks[name] / peaks[lightly]:.2f}"])
            step_rows.append([size, name, f"{steps[name]:.1f}",
                              f"{steps[name] / steps[lightly]:.2f}"])
        error, worst_error, cosine, worst_cosine = accuracy(
            size, args.temperature, bank, z0, z1, index(), args.draws)
        speedup = times["SimCLRLoss dense"] / times["SimCLRLoss knn"]
        accuracy_rows.append([size, f"{args.k} + {args.num_samples}", f"{100 * error:.3f}",
                              f"{100 * worst_error:.3f}", f"{cosine:.4f}", f"{worst_cosine:.4f}",
                              f"{speedup:.2f}"])
        dense_time = times["SimCLRLoss dense"] / times[lightly]
        dense_memory = peaks["SimCLRLoss dense"] / peaks[lightly]
        verdicts.append(f"K={size}: dense time {dense_time:.2f}x lightly (target <= "
                        f"{TARGET_DENSE_TIME}) {_verdict(dense_time <= TARGET_DENSE_TIME)}; "
                        f"dense memory {dense_memory:.2f}x lightly (target <= "
                        f"{TARGET_DENSE_MEMORY}) {_verdict(dense_memory <= TARGET_DENSE_MEMORY)}")
        if size == largest:
            verdicts.append(
                f"K={size}: kNN {speedup:.2f}x faster than dense (target >= {TARGET_KNN_SPEEDUP}) "
                f"{_verdict(speedup >= TARGET_KNN_SPEEDUP)}; loss error {100 * error:.3f}% "
                f"(target <= {100 * TARGET_LOSS_ERROR:.0f}%) "
                f"{_verdict(error <= TARGET_LOSS_ERROR)}; gradient cosine {cosine:.4f} (target "
                f">= {TARGET_COSINE}) {_verdict(cosine >= TARGET_COSINE)}")
    print("## Loss forward + backward + bank update (mean ms per step)\n")
    print(markdown_table(["K", "loss", "ms", "vs lightly", "peak MiB", "memory vs lightly"], rows))
    print("\n## Training step: MLP encoder 512-512-d, AdamW (mean ms)\n")
    print(markdown_table(["K", "loss", "ms", "vs lightly"], step_rows))
    print(f"\n## kNN path against the dense loss, {args.draws} draws\n")
    print(markdown_table(["K", "head + tail", "loss error %", "worst %", "gradient cosine",
                          "worst cosine", "speed vs dense"], accuracy_rows))
    print()
    print("\n".join(verdicts))


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


if __name__ == "__main__":
    main()
