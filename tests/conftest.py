import os
from pathlib import Path

import pytest
import torch


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The offline datasets (set by .ci/run). A missing folder fails the test: it never skips."""
    root = os.environ.get("MP_CONTRASTIVE_DATA")
    assert root, "MP_CONTRASTIVE_DATA is not set: point it at the shared data folder"
    path = Path(root)
    assert path.is_dir(), f"MP_CONTRASTIVE_DATA={root} is not a directory"
    return path
