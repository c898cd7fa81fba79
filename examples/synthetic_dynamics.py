r"""The paper's Figure 1 as a reproducible experiment: contrastive learning dynamics on free features.

A synthetic augmentation graph joins nodes (views) of the same class at random, with a tunable
edge probability per class, plus a few optional cross-class "noise" edges (augmentations that
change the class). Free features start from one random draw on the sphere
:math:`\|H_i\| = 1/\sqrt{\tau}` and take ``--steps`` steps of each library operator from that same
start, each step followed by projection back to the sphere (NodeNorm with temperature):

* alignment    ``AlignmentConv(alpha, detach_targets=True)``:   :math:`H + \alpha(\bar{A} - I)H` (eq. 4)
* uniformity   ``UniformityConv(alpha, detach_targets=True)``:  :math:`H - \alpha \hat{A} H` (eq. 8)
* contrastive  ``ContrastiveConv(alpha, detach_targets=True)``: :math:`H + \alpha(\bar{A} - \hat{A})H` (eq. 9)

Also measured: Proposition 2 (unprojected alignment steps on the label-preserving part of the graph
shrink each class's distance to its top eigenvector by at least :math:`1 - \alpha\lambda_2`) and
eq. 12 (stacked self-attention :math:`H + \alpha \hat{A} H`, i.e. a uniformity step of negative size
``H - conv.step(H)``, makes the features less uniform).

Writes ``synthetic_dynamics.png`` and ``synthetic_dynamics.json`` into ``--out``::

    python examples/synthetic_dynamics.py --seed 0 --out runs/synthetic
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from mp_contrastive import dynamics
from mp_contrastive._files import save_figure_atomic, write_text_atomic
from mp_contrastive.experiments import cli
from mp_contrastive.graph import sphere_projection
from mp_contrastive.monitor import measure_dynamics
from mp_contrastive.nn import AlignmentConv, ContrastiveConv, UniformityConv

__all__ = ["Config", "make_graph", "simulate", "plot", "main"]

OPERATORS = ("alignment", "uniformity", "contrastive")


@dataclass
class Config:
    seed: int = 0
    num_classes: int = 4
    nodes_per_class: int = 24
    intra_prob: tuple[float, ...] = (0.2, 0.3, 0.5, 0.8)  # one per class, or one for all
    noise_edges: int = 24  # random cross-class edges (0: label-preserving graph)
    dim: int = 2  # 2: features on the circle, 3: on the sphere
    steps: int = 400
    alpha: float = 0.5
    temperature: float = 0.5
    snapshot_steps: tuple[int, ...] = ()  # default: 0, 10, 50 and the last step
    prop2_steps: int = 40
    attention_layers: int = 40
    attention_alpha: float = 0.5

    def __post_init__(self) -> None:
        for name in ("num_classes", "nodes_per_class", "steps", "prop2_steps", "attention_layers"):
            if getattr(self, name) < (2 if name in ("num_classes", "nodes_per_class") else 1):
                raise ValueError(f"'{name}' is too small: {getattr(self, name)}")
        if self.noise_edges < 0:
            raise ValueError(f"'noise_edges' must be >= 0, got {self.noise_edges}")
        if self.dim not in (2, 3):
            raise ValueError(f"'dim' must be 2 (circle) or 3 (sphere), got {self.dim}")
        if len(self.intra_prob) not in (1, self.num_classes):
            raise ValueError(f"'intra_prob' needs 1 or num_classes={self.num_classes} values, "
                             f"got {len(self.intra_prob)}")
        if not all(0 < p <= 1 for p in self.intra_prob):
            raise ValueError(f"'intra_prob' values must lie in (0, 1], got {self.intra_prob}")
        if not 0 < self.alpha <= 0.5:  # Proposition 2 holds for alpha <= 1/2
            raise ValueError(f"'alpha' must lie in (0, 0.5], got {self.alpha}")
        if not self.snapshot_steps:
            self.snapshot_steps = tuple(sorted({s for s in (0, 10, 50) if s < self.steps}
                                               | {self.steps}))
        if any(s < 0 or s > self.steps for s in self.snapshot_steps):
            raise ValueError(f"'snapshot_steps' must lie in [0, steps={self.steps}], "
                             f"got {self.snapshot_steps}")


def make_graph(cfg: Config, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``(edge_index, labels, noise)``: an undirected graph, nodes ordered by class; within class
    ``c`` each pair is an edge with probability ``intra_prob[c]`` (a node left without edges is
    linked to a random classmate: every view has a positive), plus ``noise_edges`` random
    cross-class edges. ``noise`` marks the cross-class edges."""
    n, num_classes = cfg.nodes_per_class, cfg.num_classes
    num_nodes = n * num_classes
    labels = torch.arange(num_classes).repeat_interleave(n)
    adj = torch.zeros(num_nodes, num_nodes, dtype=torch.bool)
    for c in range(num_classes):
        p = cfg.intra_prob[c % len(cfg.intra_prob)]
        block = (torch.rand(n, n, generator=gen) < p).triu(1)
        block = block | block.T
        for i in (~block.any(1)).nonzero().flatten().tolist():
            j = (i + 1 + int(torch.randint(n - 1, (1,), generator=gen))) % n
            block[i, j] = block[j, i] = True
        adj[c * n:(c + 1) * n, c * n:(c + 1) * n] = block
    added = 0
    max_noise = num_nodes * num_nodes  # guard against an impossible request
    for _ in range(max_noise):
        if added == cfg.noise_edges:
            break
        i, j = torch.randint(num_nodes, (2,), generator=gen).tolist()
        if labels[i] != labels[j] and not adj[i, j]:
            adj[i, j] = adj[j, i] = True
            added += 1
    dst, src = adj.nonzero().T
    edge_index = torch.stack([src, dst])
    return edge_index, labels, labels[src] != labels[dst]


# The monitor's measurements (mp_contrastive.monitor.measure_dynamics), plus the mean pairwise
# distance the figure draws; h is already in the loss's feature space (no temperature).
_MONITOR_METRICS = ("class_distances", "alignment", "uniformity", "effective_rank",
                    "equilibrium_gap")


def _metrics(h: Tensor, edge_index: Tensor, labels: Tensor) -> dict[str, float]:
    row = measure_dynamics(h, edge_index=edge_index, labels=labels, metrics=_MONITOR_METRICS)
    distances = ("intra_class_distance", "inter_class_distance", "class_distance_ratio")
    return {**{key: row.pop(key) for key in distances},
            "mean_pairwise_distance": float(torch.pdist(F.normalize(h, dim=1)).mean()), **row}


def simulate(cfg: Config) -> dict:
    """Run every experiment of the figure; returns the JSON-ready results."""
    # Every tensor here is tiny: worker threads only add wake-up latency (milliseconds per op on
    # a busy machine), so run single-threaded and restore the caller's setting afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _simulate(cfg)
    finally:
        torch.set_num_threads(threads)


def _simulate(cfg: Config) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed)
    edge_index, labels, noise = make_graph(cfg, gen)
    num_nodes = labels.numel()
    h0 = sphere_projection(torch.randn(num_nodes, cfg.dim, generator=gen, dtype=torch.float64),
                 cfg.temperature)
    class_lambda2 = dynamics.class_algebraic_connectivity(edge_index, labels)
    results: dict = {
        "config": asdict(cfg),
        "graph": {
            "num_nodes": num_nodes,
            "num_edges": int(edge_index.size(1)) // 2,
            "noise_edges": int(noise.sum()) // 2,
            "labels": labels.tolist(),
            "edge_index": edge_index.tolist(),
            "class_lambda2": class_lambda2.tolist(),
            "lambda2": dynamics.algebraic_connectivity(edge_index, num_nodes=num_nodes),
        },
    }

    # 1. The three updates from the same start (Figure 1).
    convs = {
        "alignment": AlignmentConv(cfg.alpha, detach_targets=True),
        "uniformity": UniformityConv(cfg.alpha, detach_targets=True),
        "contrastive": ContrastiveConv(cfg.alpha, detach_targets=True),
    }
    curves, snapshots = {}, {}
    for name, conv in convs.items():
        h = h0.clone()
        rows: dict[str, list[float]] = {}
        snaps = {}
        for t in range(cfg.steps + 1):
            for key, value in _metrics(h, edge_index, labels).items():
                rows.setdefault(key, []).append(value)
            if t in cfg.snapshot_steps:
                snaps[str(t)] = F.normalize(h, dim=1).tolist()
            if t < cfg.steps:
                step = conv.step(h) if name == "uniformity" else conv.step(h, edge_index)
                h = sphere_projection(h + step, cfg.temperature)
        curves[name] = rows
        snapshots[name] = snaps
    results["curves"] = curves
    results["snapshots"] = snapshots

    # 2. Proposition 2: plain alignment steps (no projection) on the label-preserving edges.
    results["proposition2"] = _proposition2(cfg, h0, edge_index[:, ~noise], labels, class_lambda2)
    if bool(noise.any()):  # the same measurement on the full graph, which breaks the assumption
        full = _proposition2(cfg, h0, edge_index, labels, class_lambda2)
        results["proposition2"]["with_noise_edges_max_ratio_over_bound"] = \
            full["max_ratio_over_bound"]

    # 3. Eq. 12: stacked self-attention = uniformity steps of negative size.
    attention = UniformityConv(cfg.attention_alpha, detach_targets=True)
    h_att, h_uni = h0.clone(), h0.clone()
    layers = {"self_attention": [float(dynamics.uniformity_metric(h_att))],
              "uniformity_update": [float(dynamics.uniformity_metric(h_uni))]}
    for _ in range(cfg.attention_layers):
        h_att = sphere_projection(h_att - attention.step(h_att), cfg.temperature)
        h_uni = sphere_projection(h_uni + attention.step(h_uni), cfg.temperature)
        layers["self_attention"].append(float(dynamics.uniformity_metric(h_att)))
        layers["uniformity_update"].append(float(dynamics.uniformity_metric(h_uni)))
    results["self_attention"] = {"alpha": cfg.attention_alpha, "uniformity": layers}
    results["summary"] = _summary(results)
    return results


def _proposition2(cfg: Config, h0: Tensor, edge_index: Tensor, labels: Tensor,
                  class_lambda2: Tensor) -> dict:
    conv = AlignmentConv(cfg.alpha, detach_targets=True)
    bound = dynamics.alignment_contraction_bound(class_lambda2, cfg.alpha, detach_targets=True)
    h = h0.clone()
    distance = [dynamics.class_subspace_distance(h, edge_index, labels)]
    for _ in range(cfg.prop2_steps):
        h = conv(h, edge_index)
        distance.append(dynamics.class_subspace_distance(h, edge_index, labels))
    dist = torch.stack(distance)  # [steps + 1, classes]
    ratio = dist[1:] / dist[:-1]
    # Once a distance reaches round-off level its ratio is noise, not dynamics: skip those steps.
    valid = dist[:-1] > 1e-12 * dist[0]
    excess = torch.where(valid, ratio / bound, torch.zeros_like(ratio))
    return {
        "alpha": cfg.alpha,
        "lambda2": class_lambda2.tolist(),
        "bound": bound.tolist(),
        "distance": dist.tolist(),
        "step_ratio": ratio.tolist(),
        "max_ratio_over_bound": float(excess.max()),
        "violations": int((excess > 1 + 1e-9).sum()),
    }


def _summary(results: dict) -> dict:
    c = results["curves"]
    sa = results["self_attention"]["uniformity"]["self_attention"]
    return {
        "alignment_mean_distance": [c["alignment"]["mean_pairwise_distance"][i] for i in (0, -1)],
        "uniformity_mean_distance": [c["uniformity"]["mean_pairwise_distance"][i] for i in (0, -1)],
        "contrastive_intra_inter": [c["contrastive"]["intra_class_distance"][-1],
                                    c["contrastive"]["inter_class_distance"][-1]],
        "contrastive_equilibrium_tv": [c["contrastive"]["equilibrium_tv"][i] for i in (0, -1)],
        "proposition2_violations": results["proposition2"]["violations"],
        "self_attention_uniformity": [sa[0], sa[-1]],
    }


# -- figure ----------------------------------------------------------------------------------------

_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
_OPERATOR_STYLE = {"alignment": ("#d62728", "alignment (eq. 4)"),
                   "uniformity": ("#1f77b4", "uniformity (eq. 8)"),
                   "contrastive": ("#2ca02c", "contrastive (eq. 9)")}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    cfg = results["config"]
    labels = torch.tensor(results["graph"]["labels"])
    num_classes = cfg["num_classes"]
    colors = [_COLORS[c % len(_COLORS)] for c in labels.tolist()]
    steps = sorted(int(s) for s in results["snapshots"]["alignment"])
    ncols = max(len(steps), 4)
    fig = plt.figure(figsize=(4.4 * ncols, 4.0 * 5 + 1.6))
    grid = fig.add_gridspec(5, ncols, hspace=0.5, wspace=0.35, top=0.915, bottom=0.04,
                            left=0.05, right=0.98)
    lam = results["graph"]["class_lambda2"]
    fig.suptitle(
        "Contrastive learning dynamics as message passing on a synthetic augmentation graph\n"
        f"{num_classes} classes x {cfg['nodes_per_class']} views, intra-class edge probability "
        f"{', '.join(f'{p:g}' for p in cfg['intra_prob'])}, {results['graph']['noise_edges']} "
        f"cross-class noise edges, step size alpha={cfg['alpha']}, temperature {cfg['temperature']}"
        f", seed {cfg['seed']}", fontsize=14)

    # Rows 1-3: snapshots of the normalised features.
    class_handles = [Line2D([], [], marker="o", ls="", color=_COLORS[c % len(_COLORS)],
                            label=f"class {c} (lambda2={lam[c]:.2f})") for c in range(num_classes)]
    for row, name in enumerate(OPERATORS):
        for col, t in enumerate(steps):
            feats = torch.tensor(results["snapshots"][name][str(t)])
            if cfg["dim"] == 3:
                ax = fig.add_subplot(grid[row, col], projection="3d")
                ax.scatter(feats[:, 0], feats[:, 1], feats[:, 2], c=colors, s=14, depthshade=False)
                ax.set_xlim(-1, 1)
                ax.set_ylim(-1, 1)
                ax.set_zlim(-1, 1)
                ax.set_box_aspect((1, 1, 1))
            else:
                ax = fig.add_subplot(grid[row, col])
                circle = torch.linspace(0, 2 * math.pi, 200)
                ax.plot(circle.cos(), circle.sin(), color="0.85", lw=1, zorder=0)
                # A little radial jitter by class keeps coinciding points of different classes
                # visible (the features themselves are exactly on the circle).
                radius = 1 + 0.04 * (labels.double() - (num_classes - 1) / 2) / num_classes
                ax.scatter(feats[:, 0] * radius, feats[:, 1] * radius, c=colors, s=16,
                           edgecolors="none", alpha=0.85)
                ax.set_xlim(-1.25, 1.25)
                ax.set_ylim(-1.25, 1.25)
                ax.set_aspect("equal")
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_title(f"{_OPERATOR_STYLE[name][1]}: step {t}", fontsize=11,
                         color=_OPERATOR_STYLE[name][0])
    fig.legend(handles=class_handles, loc="upper center", bbox_to_anchor=(0.5, 0.952),
               ncol=num_classes, fontsize=10, frameon=False,
               title=f"rows 1-3: features H/|H| on the unit {'circle' if cfg['dim'] == 2 else 'sphere'}"
                     " at chosen steps, coloured by class (lambda2 = algebraic connectivity of the "
                     "class's augmentation subgraph)",
               title_fontsize=10)

    # Row 4: metric curves.
    curves = results["curves"]
    panels = [
        ("class_distance_ratio", "intra- / inter-class distance ratio\n(lower = better "
         "clustered)", "log"),
        ("mean_pairwise_distance", "mean pairwise distance of H/|H|\n(0 = complete collapse)",
         "linear"),
        ("uniformity", "uniformity (Wang & Isola)\nlog mean exp(-2|f_i - f_j|^2), 0 = collapse",
         "linear"),
        ("equilibrium_tv", "equilibrium gap TV(Abar, Ahat)\n(0 = Proposition 3 equilibrium)",
         "linear"),
    ]
    for col, (key, title, scale) in enumerate(panels[:ncols]):
        ax = fig.add_subplot(grid[3, col])
        for name in OPERATORS:
            color, label = _OPERATOR_STYLE[name]
            ax.plot(curves[name][key], color=color, label=label, lw=1.8)
        ax.set_yscale(scale)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if col == 0:
            ax.legend(fontsize=9)

    # Row 5: Proposition 2, self-attention, the graph.
    prop = results["proposition2"]
    dist = torch.tensor(prop["distance"])
    ax = fig.add_subplot(grid[4, 0])
    t = torch.arange(dist.size(0))
    for c in range(num_classes):
        color = _COLORS[c % len(_COLORS)]
        ax.plot(t, dist[:, c] / dist[0, c], color=color, lw=2)
        ax.plot(t, torch.tensor(prop["bound"][c]) ** t, color=color, ls="--", lw=1.3)
    ax.set_yscale("log")
    ax.set_ylim(bottom=max(float(dist.min() / dist[0].max()), 1e-12) / 10)
    ax.set_title("Prop. 2: each class's distance to its top\neigenvector (label-preserving edges)",
                 fontsize=10)
    ax.set_xlabel("alignment step t (no projection)")
    ax.set_ylabel("dist_t / dist_0")
    ax.grid(alpha=0.3)
    ax.legend(handles=[Line2D([], [], color="k", lw=2, label="measured"),
                       Line2D([], [], color="k", ls="--", lw=1.3,
                              label="bound (1 - alpha lambda2)^t")],
              fontsize=8, loc="lower left", title="colour = class", title_fontsize=8)

    ax = fig.add_subplot(grid[4, 1])
    ratio = torch.tensor(prop["step_ratio"])
    for c in range(num_classes):
        color = _COLORS[c % len(_COLORS)]
        valid = dist[:-1, c] > 1e-12 * dist[0, c]
        ax.plot(t[1:][valid], ratio[valid, c], color=color, lw=2)
        ax.axhline(prop["bound"][c], color=color, ls="--", lw=1.3)
    ax.set_title(f"Prop. 2 per step: shrinkage (solid) vs\nbound 1 - alpha lambda2 (dashed), "
                 f"{prop['violations']} violations", fontsize=10)
    ax.set_xlabel("alignment step t")
    ax.set_ylabel("dist_t / dist_(t-1)")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(grid[4, 2])
    layers = results["self_attention"]["uniformity"]
    ax.plot(layers["self_attention"], color="#9467bd", lw=2,
            label="self-attention H + a Ahat H")
    ax.plot(layers["uniformity_update"], color="#1f77b4", lw=2, ls="--",
            label="uniformity step H - a Ahat H")
    ax.set_title("Eq. 12: self-attention is a uniformity\nstep of negative size: it collapses",
                 fontsize=10)
    ax.set_ylabel("uniformity (higher = less uniform)")
    ax.set_xlabel("stacked layers (same start as rows 1-3)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    if ncols > 3:
        ax = fig.add_subplot(grid[4, 3])
        n = len(labels)
        src, dst = torch.tensor(results["graph"]["edge_index"])
        cross = labels[src] != labels[dst]
        ax.scatter(src[~cross], dst[~cross], s=2, color="0.25", label="intra-class edge")
        ax.scatter(src[cross], dst[cross], s=10, color="#d62728", label="cross-class noise edge")
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(n - 0.5, -0.5)
        ax.set_aspect("equal")
        ax.set_title(f"augmentation graph A, nodes sorted by class\n(whole graph: lambda2 = "
                     f"{results['graph']['lambda2']:.3f})", fontsize=10)
        ax.set_xlabel("node j")
        ax.set_ylabel("node i")
        ax.legend(fontsize=8, loc="upper right")
    save_figure_atomic(fig, path, dpi=80)
    plt.close(fig)


# -- command line ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = cli.make_parser(__doc__)
    parser.add_argument("--seed", type=cli.nonnegative_int, default=defaults.seed,
                        help="random seed")
    parser.add_argument("--out", type=cli.output_dir, default="runs/synthetic_dynamics",
                        help="output folder")
    parser.add_argument("--num-classes", type=cli.int_at_least(2), default=defaults.num_classes,
                        help="classes of views")
    parser.add_argument("--nodes-per-class", type=cli.int_at_least(2),
                        default=defaults.nodes_per_class, help="views per class")
    parser.add_argument("--intra-prob", type=cli.float_in(0.0, 1.0, low_open=True), nargs="+",
                        default=list(defaults.intra_prob),
                        help="intra-class edge probability: one value, or one per class")
    parser.add_argument("--noise-edges", type=cli.nonnegative_int, default=defaults.noise_edges,
                        help="number of random cross-class edges (0: label-preserving)")
    parser.add_argument("--dim", type=int, default=defaults.dim, choices=(2, 3),
                        help="2: features on the circle, 3: on the sphere")
    parser.add_argument("--steps", type=cli.positive_int, default=defaults.steps,
                        help="steps of each operator")
    parser.add_argument("--alpha", type=cli.float_in(0.0, 0.5, low_open=True),
                        default=defaults.alpha,
                        help="step size, in (0, 0.5] (Proposition 2 holds for alpha <= 1/2)")
    parser.add_argument("--temperature", type=cli.positive_float, default=defaults.temperature,
                        help="features lie on the sphere of radius 1/sqrt(temperature)")
    parser.add_argument("--snapshots", type=cli.nonnegative_int, nargs="+", default=None,
                        help="steps to draw, at most --steps (default: 0 10 50 and the last step)")
    parser.add_argument("--prop2-steps", type=cli.positive_int, default=defaults.prop2_steps,
                        help="unprojected alignment steps of the Proposition 2 measurement")
    parser.add_argument("--attention-layers", type=cli.positive_int,
                        default=defaults.attention_layers, help="stacked self-attention layers")
    parser.add_argument("--attention-alpha", type=cli.positive_float,
                        default=defaults.attention_alpha,
                        help="step size of the self-attention layers")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.out = Path(args.out)
    try:  # the rules that join several arguments are the Config's own
        cfg = Config(seed=args.seed, num_classes=args.num_classes,
                     nodes_per_class=args.nodes_per_class, intra_prob=tuple(args.intra_prob),
                     noise_edges=args.noise_edges, dim=args.dim, steps=args.steps,
                     alpha=args.alpha, temperature=args.temperature,
                     snapshot_steps=tuple(args.snapshots or ()), prop2_steps=args.prop2_steps,
                     attention_layers=args.attention_layers, attention_alpha=args.attention_alpha)
    except ValueError as error:
        parser.error(cli.library_error(error, {"snapshot_steps": "--snapshots"}))
    start = time.perf_counter()
    results = simulate(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "synthetic_dynamics.json", json.dumps(results))
    plot(results, args.out / "synthetic_dynamics.png")
    print(json.dumps(results["summary"], indent=1))
    print(f"wrote {args.out}/synthetic_dynamics.png and .json in "
          f"{time.perf_counter() - start:.1f} s")
    return results


if __name__ == "__main__":
    main()
