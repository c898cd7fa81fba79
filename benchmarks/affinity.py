"""Affinity graphs at scale: dense vs kNN vs sampled uniformity, kNN search engines, and the
blockwise dense path, all measured in one run:

    python -m benchmarks.affinity [--quick] [--seed 0] [--repeats 3] [--threads T]
                                  [--sections uniformity tradeoff search blockwise]
                                  [--features sphere vMF]

1. Uniformity step + energy (the operator's forward + backward: what ``MessagePassingLoss`` and
   ``SimCLRLoss`` evaluate, under ``no_grad``, on inputs they checked once) of a batch of 512 anchors
   against 4k / 16k / 65k / 262k bank negatives, d = 128, temperatures 0.1 and 0.5, features
   uniform on the sphere or a mixture of von Mises-Fisher clusters. Contenders: dense (the
   library's path: blockwise above ``Tiling.threshold``), the top-64 alone (exact search and
   IVF search, softmax renormalised over the head), and top-64 + importance-sampled tail
   (``sampled_affinity_graph``; cluster and uniform proposals). Index search and sampling are
   included in the sparse times; building the IVF index (k-means) is reported separately (a bank
   keeps its index across steps and re-adds the 512 new entries). Gradient agreement with dense:
   cosine and norm ratio of the step w.r.t. H, and of its tangential part (what reaches the
   encoder through the normalisation, "Z").
2. The captured softmax mass and gradient agreement of the head alone against k, and of the
   sampled estimator against its number of draws, at 65k clustered negatives, temperature 0.1.
3. kNN search: torch tiles (exact) vs faiss flat vs faiss IVF vs PyG's MIPSKNNIndex, for a batch
   of queries against a bank and for all-pairs graphs (where ``backend="auto"``'s rule comes from).
4. Blockwise vs plain dense uniformity at N = 16384, d = 128 (in-batch, both sides): time and
   peak memory, without autograd (the losses' path) and with autograd through the energy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch_geometric.nn.pool import MIPSKNNIndex

from benchmarks._measure import add_measure_arguments, interleaved_times, peak_memory, seed_and_threads, where
from mp_contrastive._reporting import markdown_table
from mp_contrastive.experiments.cli import ArgumentParser, make_parser
from mp_contrastive.knn import AffinityIndex
from mp_contrastive.nn import UniformityConv
from mp_contrastive.nn.functional import DEFAULT_TILING, Tiling

BATCH, DIM, K = 512, 128, 64
CLUSTERS, KAPPA = 100, 175.0  # mean cosine to the cluster mean ~0.7, within a cluster ~0.5
TARGET_SPEEDUP, TARGET_COS, TARGET_NORM = 5.0, 0.99, 0.05
SECTIONS = ("uniformity", "tradeoff", "search", "blockwise")


# -- features ------------------------------------------------------------------------------------
def von_mises_fisher(mean: torch.Tensor, kappa: float, gen: torch.Generator) -> torch.Tensor:
    """One vMF draw around each row of ``mean`` (unit vectors): Wood's (1994) rejection sampler for
    the cosine ``w`` to the mean, then a uniform tangent direction."""
    n, d = mean.shape
    b = (-2 * kappa + math.sqrt(4 * kappa**2 + (d - 1) ** 2)) / (d - 1)
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + (d - 1) * math.log(1 - x0**2)
    w = torch.empty(n, dtype=torch.float64)
    todo = torch.arange(n)
    while todo.numel() > 0:
        # z ~ Beta((d-1)/2, (d-1)/2) as a ratio of chi-square variates with d - 1 degrees of freedom
        chi = torch.randn(2, todo.numel(), d - 1, generator=gen, dtype=torch.float64).pow(2).sum(2)
        z = chi[0] / (chi[0] + chi[1])
        cand = (1 - (1 + b) * z) / (1 - (1 - b) * z)
        u = torch.rand(todo.numel(), generator=gen, dtype=torch.float64)
        ok = kappa * cand + (d - 1) * torch.log(1 - x0 * cand) - c >= torch.log(u)
        w[todo[ok]] = cand[ok]
        todo = todo[~ok]
    m = mean.double()
    v = torch.randn(n, d, generator=gen, dtype=torch.float64)
    v = F.normalize(v - (v * m).sum(1, keepdim=True) * m, dim=1)
    return (w.unsqueeze(1) * m + (1 - w.unsqueeze(1) ** 2).sqrt() * v).float()


def unit_features(kind: str, n: int, gen: torch.Generator, centers: torch.Tensor) -> torch.Tensor:
    if kind == "sphere":
        return F.normalize(torch.randn(n, DIM, generator=gen), dim=1)
    label = torch.randint(0, centers.size(0), (n,), generator=gen)
    return von_mises_fisher(centers[label], KAPPA, gen)


# -- measurements --------------------------------------------------------------------------------
def agreement(g: torch.Tensor, g0: torch.Tensor, h: torch.Tensor) -> list[str]:
    """cos and norm ratio w.r.t. H, and of the tangential parts (through the normalisation)."""
    def tangential(x: torch.Tensor) -> torch.Tensor:
        u = F.normalize(h, dim=1)
        return x - (x * u).sum(1, keepdim=True) * u

    out = []
    for a, b in [(g, g0), (tangential(g), tangential(g0))]:
        out += [f"{F.cosine_similarity(a.flatten(), b.flatten(), 0):.4f}",
                f"{a.norm() / b.norm():.3f}"]
    return out


def ivf_index(x: torch.Tensor) -> AffinityIndex:
    """The library's default IVF, with at most 1024 cells (k-means training grows with the square
    of the cell count; 1024 cells of 256 vectors at 262k suffice for both uses)."""
    n = x.size(0)
    return AffinityIndex(x, index="ivf", nlist=max(1, min(int(4 * math.sqrt(n)), n // 39, 1024)))


def row_logsumexp(q: torch.Tensor, bank: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """Each anchor's log partition function over the whole bank, chunk by chunk."""
    return torch.stack([torch.logsumexp(q @ bank[c:c + chunk].T, 1)
                        for c in range(0, bank.size(0), chunk)]).logsumexp(0)


def head_mass(q: torch.Tensor, bank: torch.Tensor, lse: torch.Tensor, index: torch.Tensor,
              weight: torch.Tensor | None) -> float:
    """The dense softmax mass the head (weight-1 edges) captures, averaged over the anchors."""
    head = index if weight is None else index[:, weight == 1]
    score = (q[head[1]] * bank[head[0]]).sum(1)
    return float((score - lse[head[1]]).exp().sum() / q.size(0))


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> tuple[dict, dict]:
    def quiet(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn()
        return run

    wrapped = {name: quiet(fn) for name, fn in fns.items()}
    times = interleaved_times(wrapped, repeats, warmup=1)
    peaks = {name: peak_memory(fn) for name, fn in wrapped.items()}
    return times, peaks


def uniformity_table(kinds: list[str], sizes: list[int], temperatures: list[float], repeats: int,
                     gen: torch.Generator, centers: torch.Tensor) -> list[str]:
    verdicts: list[str] = []
    for kind in kinds:
        for tau in temperatures:
            rows: list[list[object]] = []
            for m in sizes:
                rows += uniformity_rows(kind, tau, m, repeats, gen, centers, verdicts)
            print(f"\n## Uniformity, {kind} features, tau={tau}, batch {BATCH}, d={DIM}\n")
            print(markdown_table(["negatives", "method", "ms", "speedup", "peak MiB",
                                  "mem vs dense", "head mass", "cos H", "norm H", "cos Z",
                                  "norm Z"], rows))
    return verdicts


def uniformity_rows(kind: str, tau: float, m: int, repeats: int, gen: torch.Generator,
                    centers: torch.Tensor, verdicts: list[str]) -> list[list[object]]:
    conv = UniformityConv()
    bank = unit_features(kind, m, gen, centers) / math.sqrt(tau)
    q = unit_features(kind, BATCH, gen, centers) / math.sqrt(tau)
    exact = AffinityIndex(bank, backend="exact")
    ivf = ivf_index(bank)
    build = _seconds(ivf.cells)  # trains the IVF index, adds the bank, reads its cells
    with torch.no_grad():
        dense_step = conv._step((bank, q))
        lse = row_logsumexp(q, bank)

    default_nprobe = ivf.nprobe

    def drawn(draws: int, proposal: str = "cluster", k: int = K,
              nprobe: int = default_nprobe) -> Callable[[], tuple]:
        def run() -> tuple:
            ivf.nprobe = nprobe
            return ivf.sample(k, draws, q, proposal=proposal,
                              generator=torch.Generator().manual_seed(1))
        return run

    def ivf_head() -> tuple:
        ivf.nprobe = default_nprobe
        return ivf.search(K, q)[0], None

    edges: dict[str, Callable[[], tuple]] = {
        "top-64 (exact search)": lambda: (exact.search(K, q)[0], None),
        f"top-64 (IVF search, nprobe {default_nprobe})": ivf_head,
        "top-64 + 256 cluster-IS": drawn(256),
        "top-64 + 512 cluster-IS": drawn(512),
        "top-64 + 512 uniform": drawn(512, "uniform"),
        "top-16 (nprobe 1) + 384 cluster-IS": drawn(384, k=16, nprobe=1),
    }
    fns: dict[str, Callable[[], object]] = {"dense": lambda: conv._step_and_energy((bank, q))}
    for name, make in edges.items():
        fns[name] = lambda make=make: conv._step_and_energy((bank, q), *make())
    times, peaks = timed(fns, repeats)
    path = "blockwise" if DEFAULT_TILING.blockwise(BATCH, m) else "plain"
    rows: list[list[object]] = []
    for name in fns:
        if name == "dense":
            mass, agree = "1", agreement(dense_step, dense_step, q)
        else:
            with torch.no_grad():
                index, weight = edges[name]()
                step = conv._step((bank, q), index, weight)
            mass = f"{head_mass(q, bank, lse, index, weight):.3f}"
            agree = agreement(step, dense_step, q)
        speedup = times["dense"] / times[name]
        rows.append([m, f"dense ({path})" if name == "dense" else name,
                     f"{times[name] * 1e3:.1f}", f"{speedup:.2f}", f"{peaks[name] / 2**20:.1f}",
                     f"{peaks[name] / peaks['dense']:.3f}", mass, *agree])
        if kind == "vMF" and tau == 0.1 and m == 65536 and name != "dense":
            cos, norm = float(agree[0]), float(agree[1])
            ok = speedup >= TARGET_SPEEDUP and cos >= TARGET_COS and abs(norm - 1) <= TARGET_NORM
            verdicts.append(f"65k vMF tau=0.1 {name}: {speedup:.2f}x dense, cos {cos:.4f}, norm "
                            f"{norm:.3f} (target >= {TARGET_SPEEDUP}x, cos >= {TARGET_COS}, norm "
                            f"within {TARGET_NORM:.0%}) -> {'PASS' if ok else 'FAIL'}")
    rows.append([m, f"(IVF build: k-means of {ivf.nlist} cells + add, once per bank state)",
                 f"{build * 1e3:.0f}", "", "", "", "", "", "", "", ""])
    return rows


def tradeoff_table(m: int, gen: torch.Generator, centers: torch.Tensor, repeats: int) -> None:
    tau = 0.1
    bank = unit_features("vMF", m, gen, centers) / math.sqrt(tau)
    q = unit_features("vMF", BATCH, gen, centers) / math.sqrt(tau)
    conv = UniformityConv()
    exact = AffinityIndex(bank, backend="exact")
    ivf = ivf_index(bank)
    ivf.cells()
    with torch.no_grad():
        dense_step = conv._step((bank, q))
        lse = row_logsumexp(q, bank)
    fns: dict[str, Callable[[], object]] = {"dense": lambda: conv._step_and_energy((bank, q))}
    make: dict[str, Callable[[], tuple]] = {}
    for k in [16, 64, 256, 1024]:
        make[f"top-{k} alone"] = lambda k=k: (exact.search(k, q)[0], None)
    ivf.nprobe = 1  # the head matters little once the tail is sampled: the cheapest search
    for draws in [128, 256, 384, 512, 1024]:
        make[f"top-16 + {draws} cluster-IS"] = lambda d=draws: ivf.sample(
            16, d, q, generator=torch.Generator().manual_seed(2))
    for draws in [512, 2048, 4096]:
        make[f"top-16 + {draws} uniform"] = lambda d=draws: ivf.sample(
            16, d, q, proposal="uniform", generator=torch.Generator().manual_seed(2))
    for name, edges in make.items():
        fns[name] = lambda edges=edges: conv._step_and_energy((bank, q), *edges())
    times = interleaved_times({n: _quiet(f) for n, f in fns.items()}, repeats, warmup=1)
    rows = []
    for name, edges in make.items():
        with torch.no_grad():
            index, weight = edges()
            step = conv._step((bank, q), index, weight)
        rows.append([name, f"{index.size(1) / BATCH:.0f}",
                     f"{head_mass(q, bank, lse, index, weight):.3f}",
                     *agreement(step, dense_step, q), f"{times[name] * 1e3:.1f}",
                     f"{times['dense'] / times[name]:.2f}"])
    print(f"\n## Trade-off at {m} vMF negatives, tau={tau} (dense {times['dense'] * 1e3:.1f} ms; "
          f"sampled graphs: IVF head with nprobe 1 of {ivf.nlist} cells)\n")
    print(markdown_table(["graph", "edges/anchor", "head mass", "cos H", "norm H", "cos Z",
                          "norm Z", "ms", "speedup"], rows))


def search_table(sizes: list[int], all_pairs: list[int], repeats: int, gen: torch.Generator,
                 centers: torch.Tensor) -> None:
    rows: list[list[object]] = []
    for m, queries in [(m, BATCH) for m in sizes] + [(n, n) for n in all_pairs]:
        rows += search_rows(m, queries, repeats, gen, centers)
    print(f"\n## kNN search, k={K}, d={DIM} (vMF features, inner product)\n")
    print(markdown_table(["candidates", "queries", "engine", "ms", "vs exact", "note"], rows))


def search_rows(m: int, queries: int, repeats: int, gen: torch.Generator,
                centers: torch.Tensor) -> list[list[object]]:
    x = unit_features("vMF", m, gen, centers)
    same = queries == m  # an all-pairs kNN graph (self pairs excluded)
    q = None if same else unit_features("vMF", queries, gen, centers)
    exact = AffinityIndex(x, backend="exact")
    flat = AffinityIndex(x, backend="faiss")
    ivf = ivf_index(x)
    build = _seconds(ivf.faiss_index.build)
    flat.faiss_index.build()
    pyg = MIPSKNNIndex(x)
    self_links = torch.arange(m).repeat(2, 1) if same else None
    fns = {
        "exact (torch tiles)": lambda: exact.search(K, q),
        "faiss flat": lambda: flat.search(K, q),
        "faiss IVF": lambda: ivf.search(K, q),
        "PyG MIPSKNNIndex": lambda: pyg.search(x if q is None else q, K,
                                               exclude_links=self_links),
    }
    times = interleaved_times({n: _quiet(f) for n, f in fns.items()},
                              repeats if queries <= 4096 else 1, warmup=1)
    truth, _ = exact.search(K, q)
    approx, _ = ivf.search(K, q)
    recall = len(set((truth[1] * m + truth[0]).tolist())
                 & set((approx[1] * m + approx[0]).tolist())) / truth.size(1)
    auto = {"exact": "exact (torch tiles)", "faiss": "faiss flat"}[
        AffinityIndex(x).resolve_backend(queries, K)]
    rows: list[list[object]] = []
    for name in fns:
        note = "auto picks this" if name == auto else ""
        if name == "faiss IVF":
            note = (f"recall@64 {recall:.3f} (nlist {ivf.nlist}, nprobe {ivf.nprobe}); "
                    f"build {build * 1e3:.0f} ms")
        rows.append([m, queries, name, f"{times[name] * 1e3:.1f}",
                     f"{times[name] / times['exact (torch tiles)']:.2f}", note])
    return rows


def blockwise_table(n: int, repeats: int, gen: torch.Generator) -> list[str]:
    h = F.normalize(torch.randn(n, DIM, generator=gen), dim=1) / math.sqrt(0.1)
    convs = {"plain": UniformityConv(tiling=Tiling(threshold=1 << 62)),
             "blockwise": UniformityConv(tiling=Tiling(threshold=0))}

    def forced(path: str, fn: Callable[[UniformityConv], object]) -> Callable[[], object]:
        return lambda: fn(convs[path])

    def no_grad(conv: UniformityConv) -> object:
        with torch.no_grad():
            return conv._step_and_energy(h)

    def autograd(conv: UniformityConv) -> object:
        x = h.detach().requires_grad_()
        conv.energy(x).backward()
        return x.grad

    rows, verdicts = [], []
    for mode, fn, reps in [("step + energy, no autograd (losses)", no_grad, repeats),
                           ("energy, autograd backward", autograd, max(1, repeats // 2))]:
        runs = {"plain": forced("plain", fn), "blockwise": forced("blockwise", fn)}
        times = interleaved_times(runs, reps, warmup=1)
        peaks = {name: peak_memory(run) for name, run in runs.items()}
        a, b = runs["plain"](), runs["blockwise"]()
        a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
        diff = max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(a, b, strict=True))
        for name in runs:
            rows.append([mode, name, f"{times[name] * 1e3:.0f}",
                         f"{times[name] / times['plain']:.2f}", f"{peaks[name] / 2**20:.1f}",
                         f"{peaks[name] / peaks['plain']:.3f}",
                         f"{diff:.1e}" if name == "blockwise" else ""])
        t, p = times["blockwise"] / times["plain"], peaks["blockwise"] / peaks["plain"]
        verdicts.append(f"N={n} {mode}: blockwise time {t:.2f}x plain (target <= 1.3) "
                        f"{'PASS' if t <= 1.3 else 'FAIL'}; memory {p:.3f}x (target < 0.1) "
                        f"{'PASS' if p < 0.1 else 'FAIL'}")
    print(f"\n## Blockwise vs plain dense uniformity, N={n}, d={DIM} (tile "
          f"{DEFAULT_TILING.elements} entries)\n")
    print(markdown_table(["mode", "path", "ms", "time vs plain", "peak MiB", "mem vs plain",
                          "max rel. diff"], rows))
    return verdicts


def _quiet(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return fn()
    return run


def _seconds(fn: Callable[[], object]) -> float:
    import time

    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 4k and 65k negatives, tau=0.1, N=8192 blockwise")
    add_measure_arguments(parser, repeats=3)
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS,
                        help="which tables to measure (on a loaded 2-core machine the whole run "
                             "takes over 10 minutes: split it)")
    parser.add_argument("--features", nargs="+", default=["sphere", "vMF"],
                        choices=["sphere", "vMF"], help="feature kinds of the uniformity table")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    gen = seed_and_threads(args.seed, args.threads)
    centers = F.normalize(torch.randn(CLUSTERS, DIM, generator=gen), dim=1)
    sizes = [4096, 65536] if args.quick else [4096, 16384, 65536, 262144]
    temperatures = [0.1] if args.quick else [0.1, 0.5]
    print(f"# Affinity benchmark (seed {args.seed}{', quick' if args.quick else ''}): "
          f"{where('cpu')}, "
          f"torch {torch.__version__}; vMF mixture: {CLUSTERS} clusters, kappa={KAPPA}; load "
          f"average at start {os.getloadavg()[0]:.1f} (other processes share the cores: compare "
          f"ratios, measured interleaved, rather than absolute times)")
    verdicts: list[str] = []
    if "uniformity" in args.sections:
        verdicts += uniformity_table(args.features, sizes, temperatures, args.repeats, gen,
                                     centers)
    if "tradeoff" in args.sections:
        tradeoff_table(65536, gen, centers, args.repeats)
    if "search" in args.sections:
        search_table(sizes, [8192] if args.quick else [8192, 19717], args.repeats, gen, centers)
    if "blockwise" in args.sections:
        verdicts += blockwise_table(8192 if args.quick else 16384, args.repeats, gen)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
