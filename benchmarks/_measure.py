"""Timing, peak-memory measurement and the command-line options shared by the benchmark scripts."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from mp_contrastive.experiments.cli import ArgumentParser, nonnegative_int, positive_int, torch_device

__all__ = ["ROOT", "peak_memory", "interleaved_times", "where", "seed_and_threads",
           "add_measure_arguments"]

#: The repository's root: the benchmarks that run the examples start them from here.
ROOT = Path(__file__).resolve().parents[1]


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes allocated by ``fn`` above what was allocated before it (CPU tensors through the
    profiler's allocation events; CUDA through the caching allocator's statistics)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def interleaved_times(fns: Mapping[str, Callable[[], object]], repeats: int,
                      warmup: int = 2,
                      statistic: Callable[[list[float]], float] = statistics.median
                      ) -> dict[str, float]:
    """Wall time (seconds; the median of the repeats, or another ``statistic`` such as the mean
    when rare slow calls are part of the cost) of each function, run round-robin so that drift of
    the machine (other load, frequency) hits every contender alike."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            samples[name].append(time.perf_counter() - start)
    return {name: statistic(values) for name, values in samples.items()}


def where(device: str | torch.device) -> str:
    """The processor the numbers were measured on, for a table's title: the GPU's name on CUDA,
    else the CPU and torch's thread count."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def seed_and_threads(seed: int, threads: int | None) -> torch.Generator:
    """Sets torch's thread count (``None``: torch's choice) and its global seed; returns a
    generator seeded alike, for the benchmark's inputs."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def add_measure_arguments(parser: ArgumentParser, *, repeats: int, device: str | None = None,
                          repeats_help: str = "timed repeats") -> None:
    """The options of every timing benchmark, one meaning each: ``--repeats`` (default
    ``repeats``), ``--seed``, ``--threads`` (torch's thread count, default torch's choice; read by
    :func:`seed_and_threads`) and, where the benchmark can run on a GPU, ``--device`` (the help
    names what runs there)."""
    parser.add_argument("--repeats", type=positive_int, default=repeats, help=repeats_help)
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads (default: torch's choice). On a machine shared with "
                             "other jobs, 1 avoids stalls of idle-waiting worker threads")
    if device is not None:
        parser.add_argument("--device", type=torch_device, default="cpu",
                            help=f"where {device} run (cpu, cuda)")
