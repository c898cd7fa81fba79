"""mp_contrastive: contrastive learning dynamics as PyTorch Geometric message passing."""

from mp_contrastive import graph, losses, nn
from mp_contrastive.graph import augmentation_graph
from mp_contrastive.losses import AttentionSimCLRLoss, MessagePassingLoss, SimCLRLoss

__version__ = "0.1.0"

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
