"""``--num-crops``, ``--num-small-crops`` and ``--sync-bn`` on the image examples' command lines: a
tiny SimCLR run with four crops per image, or two global and two small ones, trains (finite loss,
results written, the dynamics monitor at every step); out-of-range or unsupported values are
argparse errors naming the flag."""

import importlib
import json
import math
import re
import subprocess
import sys

import pytest
import torch

from mp_contrastive._paths import DATA_ENV
from mp_contrastive.experiments.vision import SMALL_CROP_DEFAULTS
from tests.command_line import refused
from tests.examples.test_cifar_simclr_gat import ROOT, environment

SIMCLR = importlib.import_module("examples.cifar_simclr_gat")
SIMSIAM = importlib.import_module("examples.cifar_simsiam_multistage")
TINY = ["--preset", "cpu", "--arch", "resnet10", "--width", "4", "--epochs", "1",
        "--train-subset", "128", "--batch-size", "64", "--monitor-queries", "50",
        "--probe-epochs", "1", "--no-progress", "--dynamics-every", "1"]


def test_simclr_trains_with_four_crops(data_root, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "cifar_simclr_gat.py"), *TINY,
                           "--num-crops", "4", "--sync-bn", "--out", str(out)],
                          capture_output=True, text=True, env=environment(data_root), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--sync-bn" in done.stdout  # the no-op is said, naming the flag
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["num_crops"] == 4 and results["settings"]["sync_bn"] is True
    assert not set(SMALL_CROP_DEFAULTS) & set(results["settings"])  # no small crops to shape
    assert len(results["loss_per_epoch"]) == 1 and math.isfinite(results["loss_per_epoch"][0])
    assert math.isfinite(results["linear_probe"]["test_top1"])
    stored = torch.load(out / "checkpoint.pt", weights_only=True)["settings"]
    assert stored["num_views"] == 4 and stored["num_crops"] == 4
    # The learning-dynamics monitor ran at every step (on its 4 x 64 views: the nodes the method
    # returns, tests/test_multicrop.py).
    rows = (out / "dynamics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # header, one row per step (128 images / batch 64)


def test_simclr_trains_with_small_crops(data_root, tmp_path):
    """Two global and two small crops per image, with the default attention (official), which
    weighs every positive pair by the backbone features of views of both sizes."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "cifar_simclr_gat.py"), *TINY,
                           "--num-small-crops", "2", "--small-crop-size", "12", "--out", str(out)],
                          capture_output=True, text=True, env=environment(data_root), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    settings = results["settings"]
    assert (settings["num_crops"], settings["num_small_crops"], settings["small_crop_size"]) == (
        2, 2, 12)
    assert (settings["small_crop_min"], settings["small_crop_max"]) == (0.08, 0.5)  # defaults
    assert math.isfinite(results["loss_per_epoch"][0])
    stored = torch.load(out / "checkpoint.pt", weights_only=True)["settings"]
    assert (stored["num_views"], stored["num_small_views"], stored["num_small_crops"]) == (2, 2, 2)
    rows = (out / "dynamics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # the monitor read the 4 x 64 nodes of both steps


CASES = [
    (SIMCLR, ["--num-crops", "1"], "--num-crops"), (SIMCLR, ["--num-crops", "0"], "--num-crops"),
    (SIMCLR, ["--num-crops", "four"], "--num-crops"),
    (SIMCLR, ["--num-crops", "4", "--memory-bank", "64"], "--num-crops"),
    (SIMSIAM, ["--num-crops", "1"], "--num-crops"), (SIMSIAM, ["--num-crops", "4"], "--num-crops"),
    (SIMCLR, ["--num-small-crops", "-1"], "--num-small-crops"),
    (SIMCLR, ["--num-small-crops", "2", "--memory-bank", "64"], "--num-small-crops"),
    (SIMCLR, ["--num-small-crops", "2", "--small-crop-size", "0"], "--small-crop-size"),
    (SIMCLR, ["--num-small-crops", "2", "--small-crop-size", "32"], "--small-crop-size"),
    (SIMCLR, ["--small-crop-size", "8"], "--small-crop-size"),  # no small crops to shape
    (SIMCLR, ["--small-crop-max", "0.3"], "--small-crop-max"),
    (SIMCLR, ["--memory-bank", "64", "--small-crop-min", "0.1"], "--small-crop-min"),
    (SIMCLR, ["--memory-bank", "64", "--num-small-crops", "2", "--small-crop-size", "8"],
     "--num-small-crops"),
    (SIMCLR, ["--num-small-crops", "2", "--small-crop-min", "0"], "--small-crop-min"),
    (SIMCLR, ["--num-small-crops", "2", "--small-crop-min", "0.6"], "--small-crop-min"),
    (SIMCLR, ["--num-small-crops", "2", "--small-crop-max", "0.05"], "--small-crop-max"),
]


@pytest.mark.parametrize(("module", "argv", "flag"), CASES,
                         ids=[f"{m.__name__.split('.')[-1]} {' '.join(a)}" for m, a, _ in CASES])
def test_num_crops_is_validated(module, argv, flag, tmp_path, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    error = refused(module.main, [*argv, "--out", str(tmp_path / "out")], capsys)
    last = error.strip().splitlines()[-1]
    assert re.search(rf"error: argument {flag}( |:)", last), last
    assert not (tmp_path / "out").exists()
    if "--memory-bank" in argv:  # never the advice to add small crops, which the bank refuses
        assert "add --num-small-crops" not in last and "--memory-bank" in last, last


@pytest.mark.parametrize("argv", [["--small-crop-size", "8"], ["--num-small-crops", "1"],
                                  ["--small-crop-min", "0.1"]])
def test_simsiam_has_no_small_crop_flags(argv, tmp_path, monkeypatch, capsys):
    """SimSiam never takes small crops: their flags are unknown to it (an argparse error naming
    the flag, not advice to add --num-small-crops), and its --help lists none."""
    (tmp_path / "data").mkdir()
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    last = refused(SIMSIAM.main, [*argv, "--out", str(tmp_path / "out")],
                   capsys).strip().splitlines()[-1]
    assert argv[0] in last and "add --num-small-crops" not in last, last
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        SIMSIAM.main(["--help"])
    shown = capsys.readouterr().out
    assert "--num-crops" in shown and "small-crop" not in shown


def test_num_crops_defaults_to_two_views_per_image(tmp_path, monkeypatch):
    """The default is the former behaviour: the trainer draws two views per image."""
    from mp_contrastive.experiments.vision import _chosen_settings, _train_config

    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for module in (SIMCLR, SIMSIAM):
        args = module.build_parser().parse_args(["--preset", "cpu"])
        assert args.num_crops == 2 and args.sync_bn is False
        config = _train_config(_chosen_settings(args, module.PRESETS), args, str(tmp_path))
        assert config.num_views == 2
        assert config.num_small_views == 0 and args.num_small_crops == 0
    args = SIMCLR.build_parser().parse_args(["--preset", "cpu", "--num-crops", "6"])
    assert _train_config(_chosen_settings(args, SIMCLR.PRESETS), args, str(tmp_path)).num_views == 6
    args = SIMCLR.build_parser().parse_args(["--preset", "cpu", "--num-small-crops", "3"])
    config = _train_config(_chosen_settings(args, SIMCLR.PRESETS), args, str(tmp_path))
    assert (config.num_views, config.num_small_views) == (2, 3)


ADDED_LATER = ("num_crops", "sync_bn", "num_small_crops")


def run_settings(*flags):
    """The settings a SimCLR run with ``flags`` stores in its checkpoint (and ``--resume``
    compares)."""
    from mp_contrastive.experiments.vision import _chosen_settings, _run_settings, _view_settings

    args = SIMCLR.build_parser().parse_args(["--preset", "cpu", *flags])
    chosen = _chosen_settings(args, SIMCLR.PRESETS)
    chosen.update(_view_settings(args))  # as train_and_evaluate
    return _run_settings(chosen, args)


def test_a_checkpoint_from_before_the_flags_resumes_at_their_former_values(tmp_path, monkeypatch):
    """Checkpoints written before --num-crops, --sync-bn and the small crops lack those settings:
    a run at the values that reproduce those runs (2 crops, no sync, no small crops) resumes them,
    any other is refused with the setting named."""
    from mp_contrastive.vision.checkpoint import SettingsMismatch, compare_settings

    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    settings = run_settings
    assert not set(SMALL_CROP_DEFAULTS) & set(settings())  # no small crops, no shape

    before = {k: v for k, v in settings().items() if k not in ADDED_LATER}
    compare_settings(before, settings(), tmp_path / "checkpoint.pt")  # resumes
    with_shape = ["num_small_crops", *SMALL_CROP_DEFAULTS]
    for flags, keys in ((["--num-crops", "4"], ["num_crops"]), (["--sync-bn"], ["sync_bn"]),
                        (["--num-small-crops", "2"], with_shape),
                        (["--num-small-crops", "2", "--small-crop-size", "8"], with_shape)):
        with pytest.raises(SettingsMismatch) as error:
            compare_settings(before, settings(*flags), tmp_path / "checkpoint.pt")
        assert sorted(error.value.differences) == sorted(keys)
    # and a checkpoint written with 4 crops is refused by a run with the default 2
    with pytest.raises(SettingsMismatch) as error:
        compare_settings(settings("--num-crops", "4"), settings(), tmp_path / "checkpoint.pt")
    assert list(error.value.differences) == ["num_crops"]


def test_a_run_with_small_crops_stores_their_shape_even_at_the_defaults(tmp_path, monkeypatch):
    """``--num-small-crops 6`` alone stores the default size and area range in the checkpoint, so
    that a run after a change of the defaults is refused rather than resumed with other crops."""
    from mp_contrastive.vision.checkpoint import SettingsMismatch, compare_settings

    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    stored = run_settings("--num-small-crops", "6")
    assert {key: stored[key] for key in SMALL_CROP_DEFAULTS} == SMALL_CROP_DEFAULTS
    compare_settings(stored, run_settings("--num-small-crops", "6"), tmp_path / "checkpoint.pt")
    monkeypatch.setitem(SMALL_CROP_DEFAULTS, "small_crop_size",
                        SMALL_CROP_DEFAULTS["small_crop_size"] - 2)
    with pytest.raises(SettingsMismatch) as error:
        compare_settings(stored, run_settings("--num-small-crops", "6"), tmp_path / "checkpoint.pt")
    assert list(error.value.differences) == ["small_crop_size"]
