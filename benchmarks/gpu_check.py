"""Every CUDA path once, in one prepared run for a lent GPU (68 s on an H200 on 2026-12-04, under
the issue's limit of 8 minutes), with ``--dry-run`` on tiny sizes on the CPU so that CI knows it
starts.

    python -m benchmarks gpu-check --update-docs docs/performance.md     # on a GPU
    python -m benchmarks gpu-check --dry-run                             # anywhere

Sections, each a table or a line:

1. the flagship's ``paper`` preset (ResNet-18, batch 512) with bf16 autocast and ``--compile`` for
   ``--steps`` steps on CIFAR-10: images/s after the first steps (compilation), peak GPU memory,
   and the extrapolated time of 200 epochs of 50,000 images against the target of 30 minutes
   (lightly reports 87 minutes for 200 epochs of SimCLR, batch 512, on an A6000);
2. the same with a 65,536-key memory bank and the kNN affinity (``BankIndex`` on CUDA: exact
   tiles for the head);
3. ``SimCLRLoss`` at batch 4096 against lightly (``benchmarks.losses`` on the GPU);
4. the memory-bank losses at 65,536 keys on the GPU (``benchmarks.memory_bank --device cuda``);
5. faiss's GPU search against the exact tiles (``knn.affinity_graph``), where faiss has GPU
   support;
6. mini-batch GRACE on a 1M-node planted-partition graph on the GPU (one epoch);
7. a two-process NCCL gather with gradients, where there are two GPUs.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import importlib.util
import io
import os
import statistics
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import torch

from benchmarks._measure import ROOT, interleaved_times
from benchmarks.suite import add_update_docs, replace_marked_section
from mp_contrastive._files import write_text_atomic
from mp_contrastive._reporting import markdown_table
from mp_contrastive.experiments.cli import ArgumentParser, make_parser, output_dir, positive_int

MARKER = "results-gpu-check"
TARGET_MINUTES = 30.0
EPOCH_IMAGES = 50_000


def flagship(out: Path, steps: int, dry_run: bool, extra: list[str]) -> dict:
    """One short flagship run in this process; images/s, peak memory and the 200-epoch time."""
    spec = importlib.util.spec_from_file_location("cifar_simclr_gat",
                                                  ROOT / "examples" / "cifar_simclr_gat.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    if dry_run:
        argv = ["--preset", "cpu", "--arch", "resnet10", "--width", "4", "--batch-size", "32",
                "--train-subset", str(32 * steps), "--monitor-queries", "50"]
    else:
        argv = ["--preset", "paper", "--bf16", "--train-subset", str(512 * steps),
                "--monitor-queries", "1000"]
    argv += ["--epochs", "1", "--probe-epochs", "1", "--no-progress", "--out", str(out), *extra]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        example.main(argv)
    seconds = time.perf_counter() - started
    with open(out / "steps.csv") as rows:
        speeds = [float(row["images_per_s"]) for row in csv.DictReader(rows)]
    warm = speeds[min(len(speeds) - 1, 3):]  # the first steps compile
    images_per_s = statistics.median(warm)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return {"images_per_s": images_per_s, "peak_gib": peak, "seconds": seconds,
            "minutes_200": 200 * EPOCH_IMAGES / images_per_s / 60}


def captured(module: str, argv: list[str]) -> str:
    """A benchmark module's printed tables."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        __import__(f"benchmarks.{module}", fromlist=["main"]).main(argv)
    # The module's own headings sit under this report's "###" sections.
    return "\n".join("###" + line if line.startswith("#") else line
                     for line in buffer.getvalue().splitlines()
                     if not line.startswith(("USDT", "ERROR:")))


def faiss_against_exact(device: torch.device, dry_run: bool) -> str:
    from mp_contrastive.knn import affinity_graph, faiss_gpu_available

    n, k = (512, 8) if dry_run else (262_144, 64)
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(n, 128, generator=gen), dim=1).to(device)
    queries = x[:1024]
    backends = ["exact"] + (["faiss"] if device.type == "cpu" or faiss_gpu_available() else [])
    searches = {backend: partial(affinity_graph, x, k, queries=queries, backend=backend)
                for backend in backends}
    times = interleaved_times(searches, repeats=1, warmup=1)  # the warm-up builds the index
    edges = {backend: search()[0] for backend, search in searches.items()}
    rows = [[backend, f"{1e3 * times[backend]:.1f}"] for backend in backends]
    if "faiss" not in edges:
        return markdown_table(["backend", "ms"], rows) + "\n\nfaiss has no GPU support here: " \
            "exact tiles only"
    same = (edges["faiss"] == edges["exact"]).all(0).float().mean().item()
    return markdown_table(["backend", "ms"], rows) + f"\n\nedges equal to the exact search: " \
        f"{100 * same:.2f}% ({n} keys, {queries.size(0)} queries, k={k})"


def _nccl_worker(rank: int, init_file: str, results: dict) -> None:
    import torch.distributed as dist

    from mp_contrastive.distributed import gather_with_grad

    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.cuda.set_device(rank)
        x = torch.full((4, 3), float(rank + 1), device="cuda", requires_grad=True)
        gathered = gather_with_grad(x)
        gathered.pow(2).sum().backward()
        results[rank] = (gathered.detach().cpu(), x.grad.cpu())
    finally:
        dist.destroy_process_group()


def nccl_gather(out: Path) -> str:
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return "skipped: fewer than 2 GPUs"
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_nccl_worker, args=(str(out / "nccl_init"), results), nprocs=2)
        results = dict(results)
    ok = all(torch.equal(results[r][0][:4], torch.full((4, 3), 1.0))
             and torch.equal(results[r][1], torch.full((4, 3), 2.0 * (r + 1))) for r in range(2))
    return f"2-process NCCL gather with gradients: {'PASS' if ok else 'FAIL'}"


SECTIONS = ("flagship", "losses", "memory-bank", "faiss", "graph", "nccl")


def graph_section(device: torch.device, dry_run: bool) -> str:
    """Mini-batch GRACE on a planted-partition graph on the device: one epoch in 8 batches, the
    seconds, the peak memory and the linear probe of the whole graph's embeddings."""
    from mp_contrastive.gnn import GRACEConfig, planted_partition_graph, train_grace_minibatch

    n = 4_000 if dry_run else 1_000_000
    data = planted_partition_graph(n, 128, 5, 5 * n, seed=0)  # on the CPU; batches move
    config = GRACEConfig(hidden=128, proj_hidden=128, epochs=1, batch_size=n // 8,
                         sampler="subgraph", knn_k=16, knn_samples=64)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = train_grace_minibatch(config, data, seed=0, device=device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return (f"### Mini-batch GRACE, {n:,} nodes, 1 epoch of 8 batches\n\n"
            + markdown_table(["s / epoch", "steps", "negatives", "peak GiB", "probe test acc (%)"],
                             [[f"{result['seconds']:.1f}", result["steps"], result["path"],
                               f"{peak:.1f}", f"{result['test_acc']:.2f}"]]))


def flagship_section(out: Path, steps: int, dry_run: bool) -> str:
    bank = "128" if dry_run else "65536"
    preset = "tiny cpu preset" if dry_run else "paper preset, bf16"
    runs = {  # (folder, extra arguments); compiling the bank run would break at faiss's calls
        preset + ("" if dry_run else ", compile"): ("flagship", [] if dry_run else ["--compile"]),
        f"{preset}, bank {bank}, kNN":
            ("flagship_bank", ["--memory-bank", bank, "--affinity", "knn", "--key-momentum",
                               "0.99"])}
    rows = []
    for label, (folder, extra) in runs.items():
        result = flagship(out / folder, steps, dry_run, extra)
        verdict = "PASS" if result["minutes_200"] <= TARGET_MINUTES else "FAIL"
        rows.append([label, f"{result['images_per_s']:.0f}", f"{result['peak_gib']:.1f}",
                     f"{result['minutes_200']:.1f}", f"{verdict} (target <= {TARGET_MINUTES:.0f})"])
    return (f"### Flagship, {steps} steps" + (" (dry run)" if dry_run else "") + "\n\n"
            + markdown_table(["run", "images/s", "peak GiB", "200 epochs (min)", "verdict"], rows))


def losses_section(device: torch.device, dry_run: bool) -> str:
    sizes = ["--sizes", "64", "--repeats", "2"] if dry_run else ["--sizes", "8192", "--repeats", "10"]
    return ("### Losses at batch 4096 against lightly\n\n"
            + captured("losses", [*sizes, "--device", device.type]))


def memory_bank_section(device: torch.device, dry_run: bool) -> str:
    argv = (["--sizes", "256", "--batch", "16", "--dim", "8", "--repeats", "2", "--draws", "2",
             "--k", "4", "--num-samples", "8"] if dry_run else
            ["--sizes", "65536", "--repeats", "20", "--draws", "5"])
    return "### Memory bank\n\n" + captured("memory_bank", [*argv, "--device", device.type])


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__, prog="python -m benchmarks gpu-check")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on the CPU: checks that every section starts")
    parser.add_argument("--steps", type=positive_int, default=60,
                        help="flagship training steps per run (the first 3 are not timed)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="the sections to run (all by default)")
    parser.add_argument("--out", type=output_dir, default="runs/gpu_check",
                        help="output folder (the flagship runs, gpu_check.md)")
    add_update_docs(parser, MARKER, f"write the report between the {MARKER} markers of PATH "
                                    f"(docs/performance.md); not with --dry-run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU; use --dry-run to check that it starts on the CPU",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu" if args.dry_run else "cuda")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (dry run)"
    started = time.perf_counter()
    sections = [f"GPU check, {datetime.date.today().isoformat()}, {name}, torch "
                f"{torch.__version__}" + (" (dry run: tiny sizes, not a measurement)"
                                          if args.dry_run else "")]
    run = {"flagship": lambda: flagship_section(out, args.steps, args.dry_run),
           "losses": lambda: losses_section(device, args.dry_run),
           "memory-bank": lambda: memory_bank_section(device, args.dry_run),
           "faiss": lambda: "### faiss against the exact search\n\n"
                            + faiss_against_exact(device, args.dry_run),
           "graph": lambda: graph_section(device, args.dry_run),
           "nccl": lambda: "### NCCL\n\n" + nccl_gather(out)}
    failed = []
    print(sections[0], flush=True)
    for section in args.sections:
        # A lent GPU is rare and short: one broken section must not cost the others' figures.
        try:
            text = run[section]()
        except Exception:  # noqa: BLE001 - reported in full, and the exit status says so
            failed.append(section)
            text = f"### {section}: FAILED\n\n```\n{traceback.format_exc()}```"
        sections.append(text)
        print("\n" + text, flush=True)
        write_text_atomic(out / "gpu_check.md", "\n\n".join(sections) + "\n")
    sections.append(f"{time.perf_counter() - started:.0f} s in all")
    print("\n" + sections[-1])
    report = "\n\n".join(sections)
    write_text_atomic(out / "gpu_check.md", report + "\n")
    if args.update_docs and not args.dry_run and not failed:
        replace_marked_section(args.update_docs, MARKER, report)
    if failed:
        print(f"failed sections: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
