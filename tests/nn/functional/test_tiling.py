import pytest
import torch

from mp_contrastive.nn.functional import DEFAULT_TILING, Tiling


def test_default_threshold_and_tile():
    assert DEFAULT_TILING == Tiling(elements=1 << 22, threshold=1 << 24)
    assert DEFAULT_TILING.blockwise(4097, 4096) and not DEFAULT_TILING.blockwise(4096, 4096)


def test_cuda_holds_larger_matrices_whole():
    # torch.device("cuda") is a plain value: no GPU is needed to construct it.
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert DEFAULT_TILING.cuda_threshold == 1 << 27
    assert not DEFAULT_TILING.blockwise(8192, 8192, cuda)           # the GPU check's N = 8192
    assert DEFAULT_TILING.blockwise(8192, 8192, cpu) and DEFAULT_TILING.blockwise(8192, 8192)
    assert DEFAULT_TILING.blockwise(8192, 16385, cuda)
    with pytest.raises(ValueError, match="cuda_threshold"):
        Tiling(cuda_threshold=-1)


@pytest.mark.parametrize("rows,cols,elements,expected", [
    (23, 31, 1, (1, 1)),        # one entry per tile: column chunks
    (23, 31, 7, (1, 7)),
    (23, 31, 60, (1, 31)),      # one whole row per tile (two do not fit)
    (23, 31, 62, (2, 31)),
    (23, 31, 10**6, (23, 31)),  # the whole matrix
])
def test_tile_shape_holds_at_most_elements(rows, cols, elements, expected):
    shape = Tiling(elements=elements).shape(rows, cols)
    assert shape == expected
    assert shape[0] * shape[1] <= max(elements, 1)


def test_min_and_max_columns():
    tiling = Tiling(elements=100)
    assert tiling.shape(50, 1000, min_cols=64, max_cols=80) == (1, 80)
    assert tiling.shape(50, 1000, min_cols=200) == (1, 200)  # k beyond a tile: wider tiles


def test_spans_cover_the_range_once():
    spans = list(Tiling().spans(10, 4))
    assert spans == [(0, 4), (4, 8), (8, 10)]


@pytest.mark.parametrize("kwargs,error,match", [
    ({"elements": 0}, ValueError, "'elements' must be a positive int"),
    ({"elements": 2.5}, TypeError, "'elements' must be an int"),
    ({"threshold": -1}, ValueError, "'threshold' must be a non-negative int"),
])
def test_bad_settings_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        Tiling(**kwargs)
