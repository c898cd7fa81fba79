"""Each ``paper`` preset against a table of the official run's values, with where each is set.

Sources: PKU-ML/Message-Passing-Contrastive-Learning at commit 6e3f1c8 (``MSGA/`` =
``MULTI-STAGE-GRAPH-AGGREGATION/``, built on solo-learn; ``GA/`` = ``GRAPH-ATTENTION/``) and the
paper (ICLR 2023). docs/results.md has the same table for readers. Every preset key must be in
the table, so a setting added to a preset needs its official value and source here."""

import importlib
import inspect

import pytest
import torch
from torchvision.models.resnet import BasicBlock

from mp_contrastive.experiments.vision import _chosen_settings, build_backbone
from mp_contrastive.vision.data import CIFAR_MEAN_STD
from mp_contrastive.vision.evaluation import official_linear_probe

SIMSIAM = importlib.import_module("examples.cifar_simsiam_multistage")
SIMCLR = importlib.import_module("examples.cifar_simclr_gat")

# The official linear evaluation, shared by both presets.
PROBE = {
    "probe": ("official", "GA/configs/cifar_eval.yaml, GA/linear.py"),
    "probe_epochs": (164, "GA/configs/cifar_eval.yaml:4,15: 8000 steps x 1024 / 50,000 images"),
}

SIMSIAM_OFFICIAL = {
    "dataset": ("cifar10", "simsiam.sh:2 (--dataset $1); paper Table 1(a), CIFAR-10 column"),
    "arch": ("resnet18", "MSGA/scripts/pretrain/cifar/simsiam.sh:3"),
    "width": (64, "torchvision's resnet18: MSGA/solo/backbones/resnet/resnet.py:20"),
    "stem_padding": (2, "MSGA/solo/methods/base.py:253"),
    "zero_init_residual": (True, "simsiam.sh:25; MSGA/solo/args/utils.py:202"),
    "normalize": (True, "MSGA/solo/data/pretrain_dataloader.py:234-235, 257"),
    "precision": ("fp16", "simsiam.sh:9 (--precision 16: Lightning 1.6 native fp16 AMP)"),
    "epochs": (200, "paper appendix C.1 (simsiam.sh:6 says 1000)"),
    "batch_size": (256, "simsiam.sh:15 on one device (simsiam.sh:7; MSGA/solo/args/utils.py:242)"),
    "optimizer": ("sgd", "simsiam.sh:10; momentum 0.9: MSGA/solo/args/utils.py:220"),
    "lr": (0.5, "simsiam.sh:12, times batch / 256: MSGA/solo/args/utils.py:251-252"),
    "weight_decay": (1e-5, "simsiam.sh:14 (the paper's appendix C.1 says 5e-5)"),
    "warmup_epochs": (10, "MSGA/solo/methods/base.py:126 (warmup_epochs default)"),
    "jitter_strength": (0.5, "simsiam.sh:18-21: 0.4 = 0.8 s, 0.1 = 0.2 s"),
    "crop_min": (0.08, "MSGA/solo/args/dataset.py:81"),
    "proj_dim": (2048, "simsiam.sh:33, 35 (hidden and output)"),
    "pred_dim": (512, "simsiam.sh:34"),
    "multistage_warmup": (51, "MSGA/solo/methods/simsiam.py:153, 171: plain while the epoch "
                              "counter, 0 at the start, is <= 50"),
    "train_subset": (0, "the whole training set"),
    "monitor_queries": (0, "the whole test set"),
    **PROBE,
}

SIMCLR_OFFICIAL = {
    "dataset": ("cifar10", "GA/configs/cifar_train_epochs200_bs512.yaml:7"),
    "arch": ("resnet18", "cifar_train_epochs200_bs512.yaml:1"),
    "width": (64, "GA/models/resnet.py:30"),
    "stem_padding": (1, "GA/models/resnet.py:30"),
    "zero_init_residual": (False, "GA/models/resnet.py (no zero initialisation)"),
    "normalize": (False, "GA/models/ssl.py:242-252 (ToTensor and clip only)"),
    "precision": ("32", "GA/train.py (no autocast)"),
    "epochs": (200, "paper section 3.3.2; cifar_train_epochs200_bs512.yaml:11: 19,200 steps"),
    "batch_size": (512, "cifar_train_epochs200_bs512.yaml:3"),
    "optimizer": ("lars", "cifar_train_epochs200_bs512.yaml:18"),
    "lr": (1.0, "cifar_train_epochs200_bs512.yaml:13"),
    "weight_decay": (1e-6, "cifar_train_epochs200_bs512.yaml:28"),
    "warmup": (0.01, "cifar_train_epochs200_bs512.yaml:27"),
    "temperature": (0.7, "GA/models/ssl.py:131"),
    "jitter_strength": (0.5, "cifar_train_epochs200_bs512.yaml:5"),
    "crop_min": (0.08, "cifar_train_epochs200_bs512.yaml:22"),
    "attention_warmup": (30, "paper appendix C.2 (--attention paper only; the code has none: "
                             "GA/models/losses.py:93)"),
    "train_subset": (0, "the whole training set"),
    "monitor_queries": (0, "the whole test set"),
    **PROBE,
}


def paper_settings(module, data_root) -> dict:
    """The paper preset as a run resolves it (before the CPU's float32 fall-back)."""
    args = module.build_parser().parse_args(["--preset", "paper", "--data-root", str(data_root)])
    return _chosen_settings(args, module.PRESETS)


def as_compared(settings: dict, table: dict) -> dict:
    """The preset in the table's terms: the warm-up fraction as epochs where the source counts
    epochs."""
    compared = dict(settings)
    if "warmup_epochs" in table:
        compared["warmup_epochs"] = compared.pop("warmup") * compared["epochs"]
    return compared


@pytest.mark.parametrize(("module", "table"), [(SIMSIAM, SIMSIAM_OFFICIAL),
                                               (SIMCLR, SIMCLR_OFFICIAL)],
                         ids=["simsiam", "simclr"])
def test_paper_preset_is_the_official_run(module, table, data_root, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    settings = as_compared(paper_settings(module, data_root), table)
    assert set(settings) == set(table), "every preset setting needs its official value here"
    for key, (official, source) in table.items():
        assert settings[key] == pytest.approx(official), f"{key}: official {official} ({source})"


@pytest.mark.parametrize("module", [SIMSIAM, SIMCLR], ids=["simsiam", "simclr"])
def test_cpu_preset_keeps_its_own_values_and_the_fast_probe(module, data_root, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = module.build_parser().parse_args(["--preset", "cpu", "--data-root", str(data_root)])
    settings = _chosen_settings(args, module.PRESETS)
    assert (settings["probe"], settings["precision"]) == ("fast", "32")


def test_simsiam_paper_backbone_is_solo_learns_cifar_resnet(data_root, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    net = build_backbone(paper_settings(SIMSIAM, data_root))
    assert net.conv1.padding == (2, 2) and net.conv1.kernel_size == (3, 3)
    assert net.conv1.stride == (1, 1) and isinstance(net.maxpool, torch.nn.Identity)
    blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8 and all(not b.bn2.weight.any() for b in blocks)
    mean, std = CIFAR_MEAN_STD["cifar10"]
    torch.testing.assert_close(net.input_mean.flatten(), torch.tensor(mean))
    torch.testing.assert_close(net.input_std.flatten(), torch.tensor(std))


def test_official_probe_defaults_are_the_official_evaluation():
    # GA/configs/cifar_eval.yaml:4, 17, 35 (batch, lr, weight decay); GA/models/ssl.py:637
    # (momentum); GA/models/ssl.py:459 (RandomCrop padding 4); :164 epochs = 8000 steps.
    official = {"lr": 0.1, "batch_size": 1024, "weight_decay": 1e-4, "momentum": 0.9,
                "padding": 4, "epochs": 164}
    defaults = {name: p.default for name, p in
                inspect.signature(official_linear_probe).parameters.items()}
    for key, value in official.items():
        assert defaults[key] == value, key


def test_simsiam_lr_is_scaled_by_batch_over_256(data_root, monkeypatch, tmp_path):
    """solo-learn multiplies the base rate by batch / 256 (MSGA/solo/args/utils.py:251-252)."""
    captured = {}

    def fake_train(method, run, args, out, description):
        captured.update(run.settings)
        return {}

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(SIMSIAM.harness, "train_and_evaluate", fake_train)
    SIMSIAM.main(["--preset", "cpu", "--batch-size", "128", "--lr", "0.4", "--train-subset", "256",
                  "--monitor-queries", "10", "--arch", "resnet10", "--width", "2",
                  "--data-root", str(data_root), "--out", str(tmp_path / "o")])
    assert captured["lr"] == pytest.approx(0.4 * 128 / 256)
