"""``--sync-bn``: under a process group of two ranks (gloo, as tests/test_distributed.py) every batch
norm of the method, the backbone's included, becomes a ``torch.nn.SyncBatchNorm``; alone it is a
no-op that says so. torch's SyncBatchNorm synchronises CUDA tensors only (its forward in training
mode raises on the CPU once a process group exists), so on these CPU-only tests the conversion and
the flag's plumbing are checked, not a synchronised forward pass; the command line refuses
``--sync-bn`` under torchrun on the CPU."""


import pytest
import torch
from torch import nn

from mp_contrastive.experiments.vision import sync_batch_norm
from mp_contrastive.vision.methods import SimCLRMethod
from tests.command_line import refused
from tests.process_group import run_on_ranks

WORLD = 2


class TinyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU()).double()
        self.projector = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8)).double()

    def forward(self, x):
        h = self.backbone(x)
        return self.projector(h), h


def batch_norms(module: nn.Module) -> list[type]:
    return [type(m) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def worker(rank):
    model = TinyModel()
    backbone = model.backbone  # the encoder the trainer evaluates, held separately
    plain_eval = model.eval()(torch.ones(3, 6, dtype=torch.float64))[0]
    method = SimCLRMethod(model.train(), temperature=0.3)
    converted = sync_batch_norm(method, True)
    kinds = (batch_norms(converted), batch_norms(backbone))
    # Eval mode uses the running statistics: the same output as before the conversion.
    converted.eval()
    same_eval = torch.equal(model(torch.ones(3, 6, dtype=torch.float64))[0], plain_eval)
    converted.train()
    try:
        model(torch.ones(3, 6, dtype=torch.float64))
        cpu_forward = "ran"
    except ValueError as error:  # torch: "SyncBatchNorm expected input tensor to be on GPU"
        cpu_forward = str(error)
    return (kinds, same_eval, cpu_forward, converted is method)


def test_sync_bn_converts_every_batch_norm_under_ddp(tmp_path):
    results = run_on_ranks(worker, tmp_path, world=WORLD)
    for rank in range(WORLD):
        (in_method, in_backbone), same_eval, cpu_forward, same_object = results[rank]
        assert in_method == [nn.SyncBatchNorm] * 2 and in_backbone == [nn.SyncBatchNorm]
        assert same_eval and same_object
        assert cpu_forward != "ran"  # torch refuses it on the CPU: why the command line does


def test_sync_bn_alone_is_a_no_op_that_says_so(capsys):
    method = SimCLRMethod(TinyModel(), temperature=0.3)
    state = {k: v.clone() for k, v in method.state_dict().items()}
    assert sync_batch_norm(method, True) is method
    assert batch_norms(method) == [nn.BatchNorm1d] * 2
    assert "--sync-bn" in capsys.readouterr().out  # said, naming the flag
    assert sync_batch_norm(method, False) is method and capsys.readouterr().out == ""
    for key, value in method.state_dict().items():
        assert torch.equal(value, state[key])


@pytest.mark.parametrize("name", ["cifar_simclr_gat", "cifar_simsiam_multistage"])
def test_sync_bn_under_torchrun_on_the_cpu_is_an_argparse_error(name, tmp_path, monkeypatch,
                                                                capsys):
    import importlib

    module = importlib.import_module(f"examples.{name}")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MP_CONTRASTIVE_DATA", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    last = refused(module.main, ["--sync-bn", "--out", str(tmp_path / "out")],
                   capsys).strip().splitlines()[-1]
    assert "argument --sync-bn:" in last and "CUDA" in last and "'cpu'" in last
    assert not (tmp_path / "out").exists()
    # One process: the flag parses (and is a no-op, said when the run starts).
    monkeypatch.setenv("WORLD_SIZE", "1")
    parsed = module.build_parser().parse_args(["--sync-bn", "--out", str(tmp_path / "out")])
    assert parsed.sync_bn and parsed.num_crops == 2
