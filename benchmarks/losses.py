"""SimCLRLoss and AttentionSimCLRLoss against a plain NT-Xent and lightly's NTXentLoss.

Forward + backward of the loss on fixed projector outputs (two views, d = 128), median over
interleaved repeats, and peak memory of one forward + backward, all measured in one run:

    python -m benchmarks.losses [--sizes 512 1024 4096] [--repeats 15] [--seed 0] [--device cuda]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from lightly.loss import NTXentLoss

from benchmarks._measure import add_measure_arguments, interleaved_times, peak_memory, seed_and_threads, where
from mp_contrastive._reporting import markdown_table
from mp_contrastive.experiments.cli import (
    ArgumentParser,
    argument_error,
    int_at_least,
    make_parser,
    positive_float,
    positive_int,
)
from mp_contrastive.graph import view_sample_index
from mp_contrastive.losses import AttentionSimCLRLoss, SimCLRLoss
from mp_contrastive.losses import _plain_nt_xent as plain_nt_xent

TARGET_TIME, TARGET_MEMORY, TARGET_ATTENTION = 1.10, 1.20, 1.15


def contenders(batch: int, temperature: float,
               backbone: torch.Tensor) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    sample = view_sample_index(batch, 2, device=backbone.device)
    lightly = NTXentLoss(temperature)
    official = AttentionSimCLRLoss(temperature, 1.0, "positives")
    return {
        "plain NT-Xent": lambda a, b: plain_nt_xent(torch.cat([a, b]), sample, temperature),
        "lightly NTXentLoss": lightly,
        "SimCLRLoss": SimCLRLoss(temperature),
        "Attention (paper, beta=1)": AttentionSimCLRLoss(temperature, 1.0, "negatives"),
        "Attention (paper, beta=0.5)": AttentionSimCLRLoss(temperature, 0.5, "negatives"),
        "Attention (official)": lambda a, b: official(a, b, attention_features=backbone),
    }


def step(loss: Callable, z0: torch.Tensor, z1: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        a, b = z0.detach().requires_grad_(), z1.detach().requires_grad_()
        loss(a, b).backward()
    return run


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--sizes", type=int_at_least(4), nargs="+", default=[512, 1024, 4096],
                        help="numbers of nodes N, even (2 views of N/2 samples)")
    parser.add_argument("--dim", type=positive_int, default=128, help="projection width d")
    parser.add_argument("--temperature", type=positive_float, default=0.5,
                        help="temperature of every loss")
    add_measure_arguments(parser, repeats=15, device="the losses")

    def check(args: argparse.Namespace) -> None:
        odd = [n for n in args.sizes if n % 2]
        if odd:
            raise argument_error("--sizes", f"N must be even (2 views of N/2 samples), got {odd}")

    parser.add_check(check)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    seed_and_threads(args.seed, args.threads)
    print(f"# Loss forward+backward, d={args.dim}, tau={args.temperature}, "
          f"{where(args.device)}, torch {torch.__version__}\n")
    rows, verdicts = [], []
    for n in args.sizes:
        batch = n // 2
        z0, z1 = torch.randn(2, batch, args.dim).to(args.device).unbind(0)
        backbone = torch.randn(n, 512).to(args.device)
        runs = {name: step(loss, z0, z1)
                for name, loss in contenders(batch, args.temperature, backbone).items()}
        times = interleaved_times(runs, args.repeats)
        peaks = {name: peak_memory(run) for name, run in runs.items()}
        baseline_time = min(times["plain NT-Xent"], times["lightly NTXentLoss"])
        for name in runs:
            rows.append([n, name, f"{times[name] * 1e3:.2f}",
                         f"{times[name] / baseline_time:.2f}",
                         f"{times[name] / times['SimCLRLoss']:.2f}",
                         f"{peaks[name] / 2**20:.1f}",
                         f"{peaks[name] / peaks['plain NT-Xent']:.2f}"])
        ratio = times["SimCLRLoss"] / baseline_time
        memory = peaks["SimCLRLoss"] / peaks["plain NT-Xent"]
        verdicts.append(f"N={n}: SimCLRLoss time {ratio:.2f}x the fastest peer "
                        f"(target <= {TARGET_TIME}) {'PASS' if ratio <= TARGET_TIME else 'FAIL'}; "
                        f"memory {memory:.2f}x plain (target <= {TARGET_MEMORY}) "
                        f"{'PASS' if memory <= TARGET_MEMORY else 'FAIL'}")
        for name in ("Attention (paper, beta=1)", "Attention (paper, beta=0.5)",
                     "Attention (official)"):
            over = times[name] / times["SimCLRLoss"]
            verdicts.append(f"N={n}: {name} {over:.2f}x SimCLRLoss (target <= {TARGET_ATTENTION}) "
                            f"{'PASS' if over <= TARGET_ATTENTION else 'FAIL'}")
    print(markdown_table(["N", "loss", "ms", "vs fastest peer", "vs SimCLRLoss", "peak MiB",
                          "memory vs plain"], rows))
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
