"""The graph cells of the cross-domain suite, built on the Planetoid examples' code.

* supervised node classification (``examples/planetoid_gnn.py``'s families): each operator-built
  model next to PyG's own layer under the same protocol (its baseline);
* GRACE-style contrastive learning (``examples/planetoid_grace.py``): the reference (plain NT-Xent
  on PyG's ``GCNConv``, GRACE's own code path) is the baseline of the operator loss, and the
  operator loss the baseline of its attention and multi-stage variants;
* oversmoothing (``examples/oversmoothing.py``): linear-probe accuracy after deep propagation,
  alignment-only as the baseline of ``ContrastiveConv`` and PairNorm.

``quick`` runs Cora (GRACE: 60 epochs of ``config.yaml``'s settings, probing the last epoch's
encoder; oversmoothing at 32 steps); ``full`` adds CiteSeer, the JumpingKnowledge family, the GRACE
presets' full schedules (with their model selection) and 64 steps.
"""

from __future__ import annotations

import functools
from pathlib import Path

from benchmarks.suite import Cell

__all__ = ["graph_cells"]

ACCURACY = ("test_acc", "val_acc")


@functools.lru_cache(maxsize=4)
def _dataset(name: str, data_root: str | None):  # noqa: ANN202 - a torch_geometric Data
    from mp_contrastive.gnn.data import load_planetoid

    return load_planetoid(name, data_root)


def _supervised_cell(preset: str, dataset: str, seed: int, data_root: str | None) -> dict[str, float]:
    from mp_contrastive.experiments.presets import SUPERVISED_PRESETS
    from mp_contrastive.gnn import train_node_classifier

    result = train_node_classifier(SUPERVISED_PRESETS[preset], _dataset(dataset, data_root), seed)
    return {"test_acc": result["test_acc"], "val_acc": result["val_acc"],
            "seconds": result["seconds"]}


def _grace_cell(variant: str, dataset: str, seed: int, epochs: int | None,
                data_root: str | None) -> dict[str, float]:
    from mp_contrastive.experiments.presets import GRACE_CONFIG_YAML, GRACE_PRESETS
    from mp_contrastive.gnn import train_grace

    if epochs is None:
        config = GRACE_PRESETS[dataset].replace(variant=variant)
    else:  # a shortened run of GRACE's own settings (config.yaml): no checkpoint selection
        config = GRACE_CONFIG_YAML[dataset].replace(variant=variant, epochs=epochs)
    result = train_grace(config, _dataset(dataset, data_root), seed)
    return {"test_acc": result["test_acc"], "val_acc": result["val_acc"],
            "final_loss": result["losses"][-1], "seconds": result["seconds"]}


def _oversmoothing_cell(scheme: str, dataset: str, seed: int, depth: int,
                        data_root: str | None) -> dict[str, float]:
    from mp_contrastive.experiments.oversmoothing import depth_study

    (row,) = depth_study(_dataset(dataset, data_root), depths=(depth,), schemes=(scheme,), seed=seed)
    return {"test_acc": row["test_acc"], "val_acc": row["val_acc"],
            "mean_cosine": row["mean_cosine"]}


def graph_cells(suite: str, seeds: int, out_dir: Path, data_root: str | None) -> list[Cell]:
    """The graph domain's cells (``out_dir`` is unused: these cells keep no files of their own)."""
    from examples.planetoid_gnn import FAMILIES

    quick = suite == "quick"
    datasets = ["Cora"] if quick else ["Cora", "CiteSeer"]
    families = ["gcn", "attention"] if quick else list(FAMILIES)
    grace_epochs = 60 if quick else None  # GRACE cells dominate the quick suite
    depth = 32 if quick else 64
    cells: list[Cell] = []
    for dataset in datasets:
        for family in families:
            ours, pyg, _ = FAMILIES[family]
            for preset, baseline in ((pyg, None), (ours, pyg)):
                for seed in range(seeds):
                    run = functools.partial(_supervised_cell, preset, dataset, seed, data_root)
                    cells.append(Cell("graphs", dataset, f"supervised:{preset}", seed, run,
                                      baseline and f"supervised:{baseline}", ACCURACY))
        for variant, baseline in (("reference", None), ("vanilla", "reference"),
                                  ("attention", "vanilla"), ("multistage", "vanilla")):
            for seed in range(seeds):
                run = functools.partial(_grace_cell, variant, dataset, seed, grace_epochs, data_root)
                cells.append(Cell("graphs", dataset, f"GRACE:{variant}", seed, run,
                                  baseline and f"GRACE:{baseline}", ACCURACY))
        for scheme, baseline in (("alignment", None), ("contrastive", "alignment"),
                                 ("pairnorm", "alignment")):
            for seed in range(seeds):
                run = functools.partial(_oversmoothing_cell, scheme, dataset, seed, depth, data_root)
                cells.append(Cell("graphs", dataset, f"depth{depth}:{scheme}", seed, run,
                                  baseline and f"depth{depth}:{baseline}", ACCURACY))
    return cells
