import pytest
import torch

from mp_contrastive.gnn import load_planetoid


@pytest.fixture(scope="session")
def cora(data_root, tmp_path_factory):
    """Cora's public split, processed in a temporary cache (the shared data stays read-only)."""
    return load_planetoid("Cora", data_root, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def one_thread():
    """The small graphs here are fastest on one thread, and on a loaded machine several OpenMP
    threads can wait on each other for orders of magnitude longer than the work takes (measured
    here: 0.15 s instead of 6 ms for one GCNConv on Cora with 2 threads while other jobs ran)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
