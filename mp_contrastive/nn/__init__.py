"""The contrastive updates as ``torch_geometric.nn.MessagePassing`` operators."""

from mp_contrastive.nn._base import StepConv
from mp_contrastive.nn.alignment import AlignmentConv
from mp_contrastive.nn.attention import AttentionAlignmentConv
from mp_contrastive.nn.contrastive import ContrastiveConv
from mp_contrastive.nn.uniformity import UniformityConv

__all__ = [
    "StepConv",
    "AlignmentConv",
    "UniformityConv",
    "ContrastiveConv",
    "AttentionAlignmentConv",
]
