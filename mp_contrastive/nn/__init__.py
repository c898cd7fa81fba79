"""The contrastive updates as ``torch_geometric.nn.MessagePassing`` operators.

Each operator file holds one operator; the kernels they share (dense, blockwise and sparse
uniformity, attention weights, tiling) are functions in :mod:`mp_contrastive.nn.functional`.
"""

from mp_contrastive.nn.alignment import AlignmentConv
from mp_contrastive.nn.attention import AttentionAlignmentConv
from mp_contrastive.nn.contrastive import ContrastiveConv
from mp_contrastive.nn.step_conv import StepConv
from mp_contrastive.nn.uniformity import UniformityConv

__all__ = [
    "StepConv",
    "AlignmentConv",
    "UniformityConv",
    "ContrastiveConv",
    "AttentionAlignmentConv",
]
