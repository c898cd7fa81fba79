"""Runs a function on each rank of a CPU process group (gloo, one spawned process a rank), for
the tests that check distributed training against one process."""

import os

import torch.distributed as dist
import torch.multiprocessing as mp


def _rank_main(rank, world, init_file, fn, args, results):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        results[rank] = fn(rank, *args)
    finally:
        dist.destroy_process_group()


def run_on_ranks(fn, tmp_path, *args, world: int = 2) -> dict:
    """``fn(rank, *args)`` on every rank of a ``world``-process group (initialised through a file
    under ``tmp_path``); returns each rank's result, by rank. ``fn`` must be defined at a module's
    top level, where the spawned processes can import it."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_main, args=(world, str(tmp_path / "init"), fn, args, results),
                 nprocs=world)
        return dict(results)
