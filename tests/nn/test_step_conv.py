"""StepConv's shared behaviour: what every operator accepts, rejects and prints."""

import warnings

import pytest
import torch

from mp_contrastive.nn import (
    AlignmentConv,
    AttentionAlignmentConv,
    ContrastiveConv,
    UniformityConv,
)

OPERATORS = [AlignmentConv, UniformityConv, ContrastiveConv, AttentionAlignmentConv]


@pytest.mark.parametrize("cls", OPERATORS)
def test_torch_jit_script_fails_with_a_reason(cls):
    with warnings.catch_warnings():  # torch's own "torch.jit.script is deprecated" notice
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(TypeError, match=rf"{cls.__name__} cannot be compiled by "
                                            r"torch.jit.script .* use torch.compile"):
            torch.jit.script(cls())


@pytest.mark.parametrize("cls", [UniformityConv, ContrastiveConv, AttentionAlignmentConv])
def test_flow_and_decomposed_layers_are_rejected_where_not_honoured(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__} supports only "
                                         r"flow='source_to_target'"):
        cls(flow="target_to_source")
    with pytest.raises(ValueError, match=rf"{cls.__name__} does not support decomposed_layers"):
        cls(decomposed_layers=2)


def test_alignment_honours_flow_and_decomposed_layers():
    conv = AlignmentConv(flow="target_to_source", decomposed_layers=2)
    assert repr(conv) == ("AlignmentConv(alpha=0.5, flow='target_to_source', "
                          "decomposed_layers=2)")


@pytest.mark.parametrize("cls", OPERATORS)
def test_repr_of_defaults_is_alpha_only(cls):
    conv = cls()
    assert repr(conv) == f"{cls.__name__}(alpha={conv.alpha})"
    assert repr(cls(alpha=0.25, detach_targets=True)) == \
        f"{cls.__name__}(alpha=0.25, detach_targets=True)"
