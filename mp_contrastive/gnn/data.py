r"""Node-classification graphs: the Planetoid citation graphs (public split), the larger graphs
graph contrastive learning is benchmarked on (Amazon, Coauthor, WikiCS, ogbn-arxiv; downloaded by
PyG or ``ogb`` on a user's machine), and planted-partition graphs of any size for scale and memory
measurements.

PyG's :class:`~torch_geometric.datasets.Planetoid` writes ``processed/`` next to ``raw/``, so raw
files found in a read-only data folder are first copied into a cache folder
(``~/.cache/mp_contrastive/Planetoid/<Name>/raw`` by default) and loaded from there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch_geometric.transforms as T
from torch_geometric.data import Data
from torch_geometric.datasets import Planetoid
from torch_geometric.utils import coalesce, to_undirected

from mp_contrastive._paths import default_cache_dir, default_data_root
from mp_contrastive._validation import check_positive_int

__all__ = [
    "PLANETOID_NAMES",
    "PUBMED_SIZE",
    "load_planetoid",
    "planted_partition_graph",
    "GRAPH_DATASETS",
    "load_graph",
]

PLANETOID_NAMES = ("Cora", "CiteSeer", "PubMed")
#: PubMed's statistics (nodes, features, classes, undirected edges) for the synthetic stand-in.
PUBMED_SIZE = {"num_nodes": 19717, "num_features": 500, "num_classes": 3, "num_edges": 44324}


def _canonical_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"'name' must be a str, one of {PLANETOID_NAMES}, got {type(name).__name__}")
    for known in PLANETOID_NAMES:
        if name.lower() == known.lower():
            return known
    raise ValueError(f"'name' must be one of {PLANETOID_NAMES}, got {name!r}")


def _raw_folder(root: Path, name: str) -> Path | None:
    """The folder of ``name``'s raw files under ``root``: ``root/Planetoid/<Name>/raw``,
    ``root/<Name>/raw`` or ``root`` itself (each spelling of the name PyG accepts)."""
    prefix = f"ind.{name.lower()}."
    for candidate in (root / "Planetoid" / name / "raw", root / name / "raw", root / "raw", root):
        if candidate.is_dir() and any(p.name.startswith(prefix) for p in candidate.iterdir()):
            return candidate
    return None


def load_planetoid(name: str, root: str | Path | None = None, *, cache_dir: str | Path | None = None,
                   download: bool = False, normalize_features: bool = True) -> Data:
    r"""One Planetoid graph (``"Cora"``, ``"CiteSeer"`` or ``"PubMed"``) with its public split
    (20 training nodes per class, 500 validation, 1000 test) as a :class:`~torch_geometric.data.Data`
    with ``x``, ``edge_index`` (undirected), ``y`` and the three masks.

    Args:
        name (str): dataset name (case-insensitive).
        root (str or Path, optional): folder with the raw files, as ``root/Planetoid/<Name>/raw``
            (the shared data layout), ``root/<Name>/raw`` or the raw folder itself; default
            ``$MP_CONTRASTIVE_DATA``. They are copied into ``cache_dir`` before loading.
        cache_dir (str or Path, optional): where PyG processes the data (default
            ``~/.cache/mp_contrastive``, ``$XDG_CACHE_HOME`` respected).
        download (bool): when no raw files are found, let PyG download them into ``cache_dir``.
        normalize_features (bool): row-normalise the features (``T.NormalizeFeatures``, as GCN, GAT
            and GRACE do). (default ``True``)

    Raises:
        FileNotFoundError: no raw files under ``root`` (or the cache) and ``download=False``.
    """
    name = _canonical_name(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if root is None:
        root = default_data_root()
    target = cache / "Planetoid" / name / "raw"
    source = _raw_folder(Path(root), name) if root is not None else None
    if root is not None and source is None and not Path(root).exists():
        raise FileNotFoundError(f"data root '{root}' does not exist; pass 'root' (or set "
                                f"MP_CONTRASTIVE_DATA) to a folder holding Planetoid/{name}/raw")
    if source is not None and source.resolve() != target.resolve():
        target.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.is_file() and path.name.startswith(f"ind.{name.lower()}."):
                copy = target / path.name
                if not copy.exists() or copy.stat().st_size != path.stat().st_size:
                    shutil.copyfile(path, copy)
    elif not download and _raw_folder(cache / "Planetoid", name) is None:
        where = f"under '{root}'" if root is not None else "(MP_CONTRASTIVE_DATA is not set)"
        raise FileNotFoundError(
            f"no raw Planetoid files for {name} {where} nor in the cache '{target}'; pass 'root' "
            f"(or set MP_CONTRASTIVE_DATA) to a folder holding Planetoid/{name}/raw, or "
            f"download=True to let PyG fetch them")
    transform = T.NormalizeFeatures() if normalize_features else None
    dataset = Planetoid(str(cache / "Planetoid"), name, split="public", transform=transform)
    return dataset[0]


def planted_partition_graph(num_nodes: int = PUBMED_SIZE["num_nodes"],
                            num_features: int = PUBMED_SIZE["num_features"],
                            num_classes: int = PUBMED_SIZE["num_classes"],
                            num_edges: int = PUBMED_SIZE["num_edges"], *, homophily: float = 0.8,
                            signal: float = 1.0, train_per_class: int = 20, num_val: int = 500,
                            num_test: int = 1000, seed: int = 0) -> Data:
    r"""A planted-partition (stochastic block model) graph, PubMed's size by default, with a
    Planetoid-style split.

    Labels are uniform over ``num_classes``. Each of ``num_edges`` undirected edges joins a uniform
    node :math:`u` to a uniform node :math:`v` of the same class with probability ``homophily``,
    else of any other class (duplicates and self loops removed). Features are
    :math:`x_u = \mathrm{signal} \cdot \mu_{y_u} + \varepsilon_u` with class means
    :math:`\mu_c \sim \mathcal{N}(0, I_d / d)` (norm :math:`\approx 1`) and noise
    :math:`\varepsilon_u \sim \mathcal{N}(0, I_d)`: along the direction between two class means the
    noise has standard deviation 1 against a separation of :math:`\approx \sqrt{2}\,\mathrm{signal}`,
    so the features alone classify poorly and the graph carries the rest. Everything is drawn from
    ``seed``. Unlike PyG's ``StochasticBlockModelDataset`` it needs neither
    scikit-learn nor a folder on disk, and it is deterministic.
    """
    for arg, value in (("num_nodes", num_nodes), ("num_features", num_features),
                       ("num_classes", num_classes), ("num_edges", num_edges)):
        check_positive_int(value, arg)
    if not 0.0 <= homophily <= 1.0:
        raise ValueError(f"'homophily' must lie in [0, 1], got {homophily}")
    if num_classes * train_per_class + num_val + num_test > num_nodes:
        raise ValueError(f"the split ({num_classes} x {train_per_class} + {num_val} + {num_test}) "
                         f"needs more than 'num_nodes' = {num_nodes} nodes")
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (num_nodes,), generator=gen)
    order = torch.argsort(y, stable=True)
    count = torch.bincount(y, minlength=num_classes)
    start = torch.cumsum(count, 0) - count
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    same = torch.rand(num_edges, generator=gen) < homophily
    # Same class: a uniform member of y[src]; other class: a uniform class != y[src], then a member.
    shift = torch.randint(1, max(num_classes, 2), (num_edges,), generator=gen)
    cls = torch.where(same, y[src], (y[src] + shift) % num_classes)
    pick = (torch.rand(num_edges, generator=gen) * count[cls]).long().clamp_max(count[cls] - 1)
    dst = order[start[cls] + pick]
    keep = src != dst
    edge_index = to_undirected(coalesce(torch.stack([src[keep], dst[keep]]), num_nodes=num_nodes),
                               num_nodes=num_nodes)
    means = torch.randn(num_classes, num_features, generator=gen) / num_features ** 0.5
    x = signal * means[y] + torch.randn(num_nodes, num_features, generator=gen)
    perm = torch.randperm(num_nodes, generator=gen)
    train = torch.cat([perm[y[perm] == c][:train_per_class] for c in range(num_classes)])
    rest = perm[~torch.isin(perm, train)]
    masks = [torch.zeros(num_nodes, dtype=torch.bool) for _ in range(3)]
    masks[0][train] = True
    masks[1][rest[:num_val]] = True
    masks[2][rest[num_val:num_val + num_test]] = True
    return Data(x=x, edge_index=edge_index, y=y, train_mask=masks[0], val_mask=masks[1],
                test_mask=masks[2])



#: What :func:`load_graph` loads: the Planetoid graphs (public split), PyG's ``Amazon``,
#: ``Coauthor`` and ``WikiCS`` datasets, ``ogbn-arxiv`` (through ``ogb``), and ``SBM-<nodes>``
#: planted-partition graphs (e.g. ``SBM-1000000``; PubMed's features and classes).
GRAPH_DATASETS = (*PLANETOID_NAMES, "Amazon-Computers", "Amazon-Photo", "Coauthor-CS",
                  "Coauthor-Physics", "WikiCS", "ogbn-arxiv", "SBM-<nodes>")


def _downloaded(family: str, name: str, cache: Path, download: bool) -> Path:
    """``cache/family/name``, where PyG keeps the dataset; it must exist unless ``download``."""
    folder = cache / family / name
    if not download and not folder.exists():
        raise FileNotFoundError(f"{family} {name} is not in the cache '{folder}'; pass "
                                f"download=True (--download) to let PyG fetch it")
    return folder


def _random_split(data: Data, seed: int) -> Data:
    """GRACE's protocol for graphs without a public split: 10% training, 10% validation, 80% test
    nodes, drawn from ``seed`` (PyG's ``RandomNodeSplit``)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return T.RandomNodeSplit("train_rest", num_val=0.1, num_test=0.8)(data)


def load_graph(name: str, root: str | Path | None = None, *, cache_dir: str | Path | None = None,
               download: bool = False, seed: int = 0) -> Data:
    r"""A node-classification graph by name (:data:`GRAPH_DATASETS`) as a
    :class:`~torch_geometric.data.Data` with ``x``, undirected ``edge_index``, ``y`` and
    ``train_mask`` / ``val_mask`` / ``test_mask``.

    Planetoid graphs come from :func:`load_planetoid` (public split, ``root`` as there). Amazon
    and Coauthor have no public split: GRACE's random 10% / 10% / 80% split from ``seed``. WikiCS
    keeps its own split number ``seed % 20`` (its 20 training / validation splits, one test
    set). ``ogbn-arxiv`` (needs ``pip install ogb``) keeps OGB's time split. PyG (or ``ogb``)
    downloads these into ``cache_dir`` with ``download=True``. ``SBM-<nodes>`` is
    :func:`planted_partition_graph` with that many nodes, PubMed's features and classes and
    average degree 10, drawn from ``seed``.

    Raises:
        ValueError: an unknown name. FileNotFoundError: data not in the cache and no
            ``download``. ImportError: ``ogbn-arxiv`` without ``ogb``. OSError: a download that
            failed (offline), with what to do.
    """
    if not isinstance(name, str):
        raise TypeError(f"'name' must be a str, one of {GRAPH_DATASETS}, got {type(name).__name__}")
    if name.lower() in (n.lower() for n in PLANETOID_NAMES):
        return load_planetoid(name, root, cache_dir=cache_dir, download=download)
    if name.upper().startswith("SBM-"):
        size = name[4:].replace("_", "")
        if not size.isdigit() or int(size) < 2000:
            raise ValueError(f"'name' SBM-<nodes> needs a whole number of nodes >= 2000, got "
                             f"{name!r}")
        n = int(size)
        return planted_partition_graph(n, PUBMED_SIZE["num_features"], PUBMED_SIZE["num_classes"],
                                       5 * n, seed=seed)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    from torch_geometric import datasets

    try:
        if name in ("Amazon-Computers", "Amazon-Photo", "Coauthor-CS", "Coauthor-Physics"):
            family, short = name.split("-")
            folder = _downloaded(family, short, cache, download)
            data = getattr(datasets, family)(str(folder.parent), short,
                                             transform=T.NormalizeFeatures())[0]
            return _random_split(data, seed)
        if name == "WikiCS":
            folder = _downloaded("WikiCS", "WikiCS", cache, download)
            data = datasets.WikiCS(str(folder), is_undirected=True)[0]
            split = seed % data.train_mask.size(1)
            data.train_mask, data.val_mask = data.train_mask[:, split], data.val_mask[:, split]
            return data
        if name == "ogbn-arxiv":
            try:
                from ogb.nodeproppred import PygNodePropPredDataset
            except ImportError:
                raise ImportError("ogbn-arxiv needs the ogb package: pip install ogb") from None
            folder = _downloaded("OGB", "ogbn_arxiv", cache, download)
            dataset = PygNodePropPredDataset("ogbn-arxiv", root=str(folder.parent))
            data = dataset[0]
            data.edge_index = to_undirected(data.edge_index, num_nodes=data.num_nodes)
            data.y = data.y.view(-1)
            for key, index in zip(("train_mask", "val_mask", "test_mask"),
                                  dataset.get_idx_split().values(), strict=True):
                mask = torch.zeros(data.num_nodes, dtype=torch.bool)
                mask[index] = True
                data[key] = mask
            return data
    except OSError as error:  # urllib's URLError is an OSError: offline, refused, DNS
        if isinstance(error, FileNotFoundError):
            raise
        raise OSError(f"downloading {name} failed ({error}); the machine may be offline: copy "
                      f"the dataset into '{cache}' from a machine that has it") from None
    raise ValueError(f"'name' must be one of {GRAPH_DATASETS}, got {name!r}")
