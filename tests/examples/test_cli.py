"""Every example's command line refuses out-of-range values where it parses them: an argparse
error naming the flag, exit status 2, nothing written. In-process (``main(argv)``), so fast."""

import argparse
import importlib
import re

import pytest
import torch

from mp_contrastive._paths import DATA_ENV
from tests.command_line import assert_help_shows_every_default, refused

NAMES = ("cifar_simclr_gat", "cifar_simsiam_multistage", "multistage_collapse", "oversmoothing",
         "planetoid_gnn", "planetoid_grace", "synthetic_dynamics")
EXAMPLES = {name: importlib.import_module(f"examples.{name}") for name in NAMES}

# Shared by both image examples (mp_contrastive.experiments.vision.add_image_arguments).
IMAGE = [
    (["--epochs", "0"], "--epochs"), (["--epochs", "-1"], "--epochs"),
    (["--epochs", "ten"], "--epochs"), (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-4"], "--batch-size"), (["--width", "0"], "--width"),
    (["--lr", "0"], "--lr"), (["--lr", "nan"], "--lr"), (["--weight-decay", "-1e-6"], "--weight-decay"),
    (["--warmup", "1"], "--warmup"), (["--warmup", "-0.1"], "--warmup"),
    (["--train-subset", "-1"], "--train-subset"), (["--monitor-queries", "-1"], "--monitor-queries"),
    (["--probe-epochs", "0"], "--probe-epochs"), (["--jitter-strength", "-0.5"], "--jitter-strength"),
    (["--crop-min", "0"], "--crop-min"), (["--crop-min", "1.5"], "--crop-min"),
    (["--seed", "-1"], "--seed"), (["--dynamics-every", "-1"], "--dynamics-every"),
    (["--arch", "resnet7"], "--arch"), (["--optimizer", "adam"], "--optimizer"),
    (["--dataset", "mnist"], "--dataset"), (["--preset", "gpu"], "--preset"),
    (["--device", "tpu"], "--device"), (["--device", "cuda"], "--device"),
    (["--bf16"], "--bf16"), (["--bf16", "--device", "cpu"], "--bf16"),
    (["--precision", "fp16"], "--precision"), (["--precision", "bf16", "--device", "cpu"],
                                               "--precision"),
    (["--precision", "16"], "--precision"), (["--stem-padding", "-1"], "--stem-padding"),
    # larger than the cpu preset's 8192 / 4096 training images, given or from the preset
    (["--preset", "cpu", "--batch-size", "9000"], "--batch-size"),
    (["--train-subset", "100", "--batch-size", "256"], "--batch-size"),
    (["--data-root", "{missing}"], "--data-root"),
]
GRAPH = [
    (["--num-seeds", "0"], "--num-seeds"), (["--num-seeds", "-2"], "--num-seeds"),
    (["--seed", "-1"], "--seed"), (["--threads", "0"], "--threads"),
    (["--datasets", "Reddit"], "--datasets"), (["--data-root", "{missing}"], "--data-root"),
]
CASES = {
    "cifar_simclr_gat": IMAGE + [
        (["--temperature", "0"], "--temperature"), (["--temperature", "-0.5"], "--temperature"),
        (["--beta", "-1"], "--beta"), (["--attention", "both"], "--attention"),
        (["--memory-bank", "-1"], "--memory-bank"), (["--affinity", "sparse"], "--affinity"),
        (["--affinity", "knn"], "--affinity"), (["--key-momentum", "0.9"], "--key-momentum"),
        (["--memory-bank", "64", "--key-momentum", "1"], "--key-momentum")],
    "cifar_simsiam_multistage": IMAGE + [
        (["--stages", "0"], "--stages"), (["--multistage-warmup", "-1"], "--multistage-warmup"),
        (["--proj-dim", "0"], "--proj-dim"), (["--pred-dim", "0"], "--pred-dim"),
        (["--aggr", "median"], "--aggr"), (["--multistage", "on"], "--multistage"),
        (["--multistage", "official", "--stages", "4"], "--stages"),
        (["--stages", "2", "--aggr", "sum"], "--stages"),  # official is the default mode
        (["--multistage", "official", "--aggr", "sum"], "--aggr")],
    "multistage_collapse": [
        (["--stages", "0"], "--stages"), (["--stages", "1", "-2"], "--stages"),
        (["--epochs", "0"], "--epochs"), (["--train-subset", "-1"], "--train-subset"),
        (["--monitor-queries", "-1"], "--monitor-queries"), (["--batch-size", "0"], "--batch-size"),
        (["--train-subset", "64", "--batch-size", "128"], "--batch-size"),
        (["--lr", "-0.5"], "--lr"), (["--arch", "vgg"], "--arch"), (["--width", "0"], "--width"),
        (["--proj-dim", "0"], "--proj-dim"), (["--seed", "-1"], "--seed"),
        (["--data-root", "{missing}"], "--data-root")],
    "oversmoothing": GRAPH + [
        (["--depths", "-1"], "--depths"), (["--mode", "trained", "--depths", "0", "2"], "--depths"),
        (["--schemes", "gcn"], "--schemes"), (["--alpha", "0"], "--alpha"), (["--tau", "0"], "--tau"),
        (["--k", "0"], "--k"), (["--num-samples", "-1"], "--num-samples"),
        (["--affinity", "sparse"], "--affinity"), (["--probe-weight-decay", "-1"], "--probe-weight-decay"),
        (["--mode", "deep"], "--mode"), (["--hidden", "0"], "--hidden"), (["--epochs", "0"], "--epochs"),
        (["--lr", "0"], "--lr"), (["--refresh-every", "0"], "--refresh-every")],
    "planetoid_gnn": GRAPH + [(["--models", "mlp"], "--models"), (["--beta", "-1"], "--beta")],
    "planetoid_grace": GRAPH + [
        (["--variants", "plain"], "--variants"), (["--epochs", "0"], "--epochs"),
        (["--eval-every", "-1"], "--eval-every"), (["--beta", "-1"], "--beta"),
        (["--attention", "all"], "--attention"), (["--num-stages", "0"], "--num-stages"),
        (["--multistage-weight", "0"], "--multistage-weight"), (["--negatives", "none"], "--negatives"),
        (["--batch-size", "0"], "--batch-size"), (["--sampler", "random"], "--sampler"),
        (["--sampler", "subgraph"], "--sampler"), (["--num-neighbors", "5"], "--num-neighbors"),
        (["--batch-size", "64", "--eval-every", "5"], "--eval-every"),
        (["--datasets", "SBM-10"], "--datasets"), (["--datasets", "Amazon"], "--datasets")],
    "synthetic_dynamics": [
        (["--seed", "-1"], "--seed"), (["--num-classes", "1"], "--num-classes"),
        (["--nodes-per-class", "1"], "--nodes-per-class"), (["--intra-prob", "0"], "--intra-prob"),
        (["--intra-prob", "1.5"], "--intra-prob"), (["--intra-prob", "0.5", "0.5"], "--intra-prob"),
        (["--noise-edges", "-1"], "--noise-edges"), (["--dim", "4"], "--dim"),
        (["--steps", "0"], "--steps"), (["--alpha", "0.7"], "--alpha"), (["--alpha", "0"], "--alpha"),
        (["--temperature", "0"], "--temperature"), (["--snapshots", "-1"], "--snapshots"),
        (["--steps", "20", "--snapshots", "30"], "--snapshots"),
        (["--prop2-steps", "0"], "--prop2-steps"), (["--attention-layers", "0"], "--attention-layers"),
        (["--attention-alpha", "-0.5"], "--attention-alpha")],
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty folder (so a default output folder would show), on a machine without CUDA,
    with the data variable pointing at an (empty) folder."""
    cwd, data = tmp_path / "cwd", tmp_path / "data"
    cwd.mkdir()
    data.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(DATA_ENV, str(data))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return tmp_path


@pytest.mark.parametrize(("name", "argv", "flag"),
                         [(name, argv, flag) for name, cases in CASES.items() for argv, flag in cases],
                         ids=lambda value: " ".join(value) if isinstance(value, list) else value)
def test_out_of_range_value_is_an_argparse_error(name, argv, flag, workdir, capsys):
    argv = [a.replace("{missing}", str(workdir / "missing")) for a in argv]
    out = workdir / "out"
    error = refused(EXAMPLES[name].main, [*argv, "--out", str(out)], capsys)
    last = error.strip().splitlines()[-1]
    assert re.search(rf"error: argument {flag}( |:|/)", last), last
    assert not out.exists() and not any((workdir / "cwd").iterdir())
    assert sorted(p.name for p in workdir.iterdir()) == ["cwd", "data"]


@pytest.mark.parametrize("name", NAMES)
def test_data_variable_that_is_no_folder_names_flag_and_variable(name, workdir, monkeypatch,
                                                                  capsys):
    if name == "synthetic_dynamics":  # reads no data
        return
    monkeypatch.setenv(DATA_ENV, str(workdir / "nowhere"))
    error = refused(EXAMPLES[name].main, ["--out", str(workdir / "out")], capsys)
    assert "--data-root" in error and f"${DATA_ENV}" in error
    assert not (workdir / "out").exists()


@pytest.mark.parametrize("name", ["cifar_simclr_gat", "cifar_simsiam_multistage"])
def test_bf16_without_cuda_is_refused(name, workdir, capsys):
    error = refused(EXAMPLES[name].main, ["--bf16", "--out", str(workdir / "out")], capsys)
    assert "argument --bf16" in error and "CUDA" in error


@pytest.mark.parametrize("name", ["cifar_simclr_gat", "cifar_simsiam_multistage"])
def test_bf16_and_another_precision_name_both_flags(name, workdir, capsys):
    error = refused(EXAMPLES[name].main, ["--bf16", "--precision", "fp16", "--out",
                                     str(workdir / "out")], capsys)
    last = error.strip().splitlines()[-1]
    assert "argument --bf16" in last and "--precision" in last


def test_missing_data_under_an_existing_folder_names_flag_variable_and_download(workdir,
                                                                                  monkeypatch):
    """The graph examples' loader words the library's 'pass root' error for the command line."""
    from mp_contrastive.experiments.graphs import graph_datasets

    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))  # an empty cache
    args = argparse.Namespace(threads=None, datasets=["Cora"], data_root=str(workdir / "data"),
                              download=False, seed=0)
    with pytest.raises(FileNotFoundError) as error:
        graph_datasets(args)
    message = str(error.value)
    assert "--data-root" in message and f"${DATA_ENV}" in message and "--download" in message
    assert "'root'" not in message


@pytest.mark.parametrize("name", NAMES)
def test_help_shows_every_default_and_the_whole_description(name, capsys):
    assert_help_shows_every_default(EXAMPLES[name], capsys)


@pytest.mark.parametrize("name", ["cifar_simclr_gat", "cifar_simsiam_multistage"])
def test_help_gives_each_presets_value_of_each_option_it_sets(name):
    """An option left out takes the chosen preset's value, so its help must give every preset's
    value: checked against the PRESETS table itself, for every option a preset sets."""
    from mp_contrastive.experiments.vision import _COMMON_DEFAULTS

    module = EXAMPLES[name]
    helps = {action.dest: " ".join((action.help or "").split())
             for action in module.build_parser()._actions}
    keys = {key for preset in module.PRESETS.values() for key in preset if key in helps}
    assert {"epochs", "batch_size", "lr"} <= keys
    for key in keys:
        for preset_name, preset in module.PRESETS.items():
            value = {**_COMMON_DEFAULTS, **preset}[key]
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            assert shown in helps[key], f"--{key} help does not give the {preset_name} value"
            values = {str({**_COMMON_DEFAULTS, **p}[key]) for p in module.PRESETS.values()}
            if len(values) > 1:
                assert f"{preset_name} preset" in helps[key], f"--{key}: {preset_name}"


@pytest.mark.parametrize("name", NAMES)
def test_defaults_and_valid_values_parse(name, data_root, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    parser = EXAMPLES[name].build_parser()
    args = parser.parse_args([])
    assert args.seed == 0
    if name.startswith("cifar"):
        valid = parser.parse_args(["--epochs", "3", "--batch-size", "64", "--warmup", "0",
                                   "--train-subset", "0", "--crop-min", "1", "--device", "cpu",
                                   "--data-root", str(data_root)])
        assert (valid.epochs, valid.batch_size, valid.warmup, valid.crop_min) == (3, 64, 0.0, 1.0)
        assert valid.device == "cpu"
        # a missing data folder is fine when torchvision may download into it
        parser.parse_args(["--download", "--data-root", str(data_root / "new")])
    if name in ("oversmoothing", "planetoid_gnn", "planetoid_grace"):
        assert args.num_seeds == 10 and args.datasets == ["Cora", "CiteSeer"]
        assert parser.parse_args(["--num-seeds", "1", "--threads", "1"]).num_seeds == 1


@pytest.mark.parametrize("name", ["cifar_simclr_gat", "cifar_simsiam_multistage"])
@pytest.mark.parametrize("blocked", ["checkpoint.pt", "results.json"])
def test_a_folder_in_the_way_of_an_output_file_is_found_before_training(name, blocked, workdir,
                                                                          capsys):
    out = workdir / "out"
    (out / blocked).mkdir(parents=True)
    last = refused(EXAMPLES[name].main, ["--out", str(out)], capsys).strip().splitlines()[-1]
    assert re.search(r"error: argument --out: .*" + re.escape(blocked) + "' is a folder", last)
    assert sorted(p.name for p in out.iterdir()) == [blocked]


@pytest.mark.parametrize(("argv", "flags"), [
    # the official attention has no warm-up (nor has plain SimCLR)
    (["--attention-warmup", "5"], ["--attention-warmup", "--attention"]),
    (["--attention", "off", "--attention-warmup", "5"], ["--attention-warmup", "--attention"]),
    # the paper's attention scores in-batch negatives
    (["--attention", "paper", "--memory-bank", "64"], ["--memory-bank", "--attention"]),
    # a warm-up as long as the run leaves no epoch for the attention
    (["--attention", "paper", "--epochs", "2"], ["--attention-warmup", "--epochs"]),
    (["--attention", "paper", "--attention-warmup", "4", "--epochs", "4"],
     ["--attention-warmup", "--epochs"]),
])
def test_incompatible_attention_flags_name_both(argv, flags, workdir, capsys):
    error = refused(EXAMPLES["cifar_simclr_gat"].main, [*argv, "--out", str(workdir / "out")], capsys)
    last = error.strip().splitlines()[-1]
    assert re.search(rf"error: argument {flags[0]}:", last), last
    assert all(flag in last for flag in flags), last


@pytest.mark.parametrize(("argv", "flags"), [
    (["--multistage", "official", "--stages", "4"], ["--stages", "--multistage"]),
    (["--multistage", "official", "--aggr", "sum"], ["--aggr", "--multistage"]),
    (["--epochs", "2"], ["--multistage-warmup", "--epochs"]),  # cpu preset: warm-up 2
    (["--multistage", "paper", "--multistage-warmup", "6", "--epochs", "5"],
     ["--multistage-warmup", "--epochs"]),
])
def test_incompatible_multistage_flags_name_both(argv, flags, workdir, capsys):
    error = refused(EXAMPLES["cifar_simsiam_multistage"].main, [*argv, "--out", str(workdir / "out")],
                    capsys)
    last = error.strip().splitlines()[-1]
    assert re.search(rf"error: argument {flags[0]}:", last), last
    assert all(flag in last for flag in flags), last
