"""The cells of the cross-domain suite, built on the examples' own code (imported, never copied).

``quick`` fits in about 20 minutes on 2 CPU cores; ``full`` is the paper-scale configuration,
meant for a GPU (the paper's Table 1 image rows on CIFAR-10 and CIFAR-100, Planetoid,
GRACE-style).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from benchmarks.suite import Cell, cell_key

__all__ = ["DOMAINS", "build_cells"]

DOMAINS = ("images", "graphs", "synthetic")

IMAGE_METRICS = ("knn_top1", "linear_top1")

# method name -> (example module, its arguments, baseline method)
IMAGE_METHODS: dict[str, tuple[str, list[str], str | None]] = {
    "SimCLR": ("cifar_simclr_gat", ["--attention", "off"], None),
    "SimCLR+attention(official)": ("cifar_simclr_gat", ["--attention", "official"], "SimCLR"),
    "SimCLR+attention(paper)": ("cifar_simclr_gat", ["--attention", "paper"], "SimCLR"),
    "SimSiam": ("cifar_simsiam_multistage", ["--multistage", "off"], None),
    "SimSiam+multi-stage": ("cifar_simsiam_multistage", ["--multistage", "official"], "SimSiam"),
}

QUICK_IMAGES = ["--preset", "cpu", "--arch", "resnet10", "--width", "8", "--epochs", "3",
                "--train-subset", "1536", "--batch-size", "256", "--monitor-queries", "1000",
                "--probe-epochs", "50", "--no-progress", "--dynamics-every", "0"]
QUICK_SIMSIAM = ["--multistage-warmup", "1", "--proj-dim", "256", "--pred-dim", "64"]


def _image_cell(module: str, argv: list[str], out: Path) -> dict[str, float]:
    import importlib

    example = importlib.import_module(f"examples.{module}")
    results = example.main([*argv, "--out", str(out)])
    return {"knn_top1": results["knn_top1_final"],
            "knn_top1_initial": results["knn_top1_initial"],
            "linear_top1": results["linear_probe"]["test_top1"],
            "wall_seconds": results["wall_seconds"]}


def image_cells(suite: str, seeds: int, out_dir: Path, data_root: str | None) -> list[Cell]:
    datasets = ["cifar10"] if suite == "quick" else ["cifar10", "cifar100"]
    methods = (["SimCLR", "SimCLR+attention(official)", "SimSiam", "SimSiam+multi-stage"]
               if suite == "quick" else list(IMAGE_METHODS))
    cells = []
    for dataset in datasets:
        for name in methods:
            module, extra, baseline = IMAGE_METHODS[name]
            for seed in range(seeds):
                argv = (QUICK_IMAGES if suite == "quick" else ["--preset", "paper"]) + extra
                if module == "cifar_simsiam_multistage" and suite == "quick":
                    argv = argv + QUICK_SIMSIAM
                argv = argv + ["--dataset", dataset, "--seed", str(seed)]
                if data_root:
                    argv += ["--data-root", data_root]
                folder = out_dir / "runs" / cell_key("images", dataset, name, seed)
                run = functools.partial(_image_cell, module, argv, folder)
                cells.append(Cell("images", dataset, name, seed, run, baseline, IMAGE_METRICS))
    return cells


@functools.lru_cache(maxsize=8)
def _synthetic(seed: int, noise_edges: int, steps: int) -> dict:
    from examples.synthetic_dynamics import Config, simulate

    return simulate(Config(seed=seed, noise_edges=noise_edges, steps=steps))


def _synthetic_cell(operator: str, seed: int, noise_edges: int, steps: int) -> dict[str, float]:
    curves = _synthetic(seed, noise_edges, steps)["curves"][operator]
    return {name: curves[name][-1] for name in
            ("class_distance_ratio", "mean_pairwise_distance", "uniformity", "effective_rank",
             "equilibrium_tv")}


SYNTHETIC_METRICS = ("class_distance_ratio", "mean_pairwise_distance", "uniformity")


def synthetic_cells(suite: str, seeds: int) -> list[Cell]:
    steps = 200 if suite == "quick" else 400
    cells = []
    for dataset, noise in (("label-preserving", 0), ("noisy(24 edges)", 24)):
        for operator in ("alignment", "uniformity", "contrastive"):
            for seed in range(seeds):
                run = functools.partial(_synthetic_cell, operator, seed, noise, steps)
                baseline = None if operator == "alignment" else "alignment"
                cells.append(Cell("synthetic", dataset, operator, seed, run, baseline,
                                  SYNTHETIC_METRICS))
    return cells


def graph_cells(suite: str, seeds: int, out_dir: Path, data_root: str | None) -> list[Cell]:
    from benchmarks.graph_domain import graph_cells as build

    return build(suite, seeds, out_dir, data_root)


def build_cells(suite: str, domains: list[str], seeds: int, out_dir: Path,
                data_root: str | None) -> list[Cell]:
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise ValueError(f"unknown domains {unknown}; choose from {DOMAINS}")
    builders: dict[str, Callable[[], list[Cell]]] = {
        "images": lambda: image_cells(suite, seeds, out_dir, data_root),
        "graphs": lambda: graph_cells(suite, seeds, out_dir, data_root),
        "synthetic": lambda: synthetic_cells(suite, seeds),
    }
    return [cell for domain in domains for cell in builders[domain]()]
