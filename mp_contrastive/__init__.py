"""mp_contrastive: contrastive learning dynamics as PyTorch Geometric message passing."""

import warnings

with warnings.catch_warnings():
    # PyG 2.8 scripts a few helpers at import time; torch 2.10+ deprecates torch.jit.script and
    # says so once per process. Not actionable for our users.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    import torch_geometric  # noqa: F401

from mp_contrastive import graph, losses, nn
from mp_contrastive.graph import augmentation_graph
from mp_contrastive.losses import AttentionSimCLRLoss, MessagePassingLoss, SimCLRLoss

__version__ = "0.1.0"

# Imported on first access (`mp_contrastive.knn.affinity_graph(...)` after `import mp_contrastive`),
# so that importing the package does not load faiss, torchvision or matplotlib.
_LAZY_SUBMODULES = ("knn", "memory", "dynamics", "monitor", "loggers", "distributed", "gnn",
                    "vision")


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "graph",
    "nn",
    "losses",
    "augmentation_graph",
    "MessagePassingLoss",
    "SimCLRLoss",
    "AttentionSimCLRLoss",
    "__version__",
]
