"""What every image example shares: presets, command-line arguments, data splits, distributed
set-up, the final evaluation and the results file. An example adds its method and presets."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mp_contrastive._paths import DATA_ENV
from mp_contrastive.distributed import rank_and_world, setup_distributed
from mp_contrastive.experiments.cli import (
    ArgumentParser,
    add_common_arguments,
    argument_error,
    float_in,
    fraction,
    int_at_least,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    torch_device,
)
from mp_contrastive.monitor import DynamicsMonitor
from mp_contrastive.vision.augment import SimCLRAugment
from mp_contrastive.vision.checkpoint import SettingsMismatch, without_former_values
from mp_contrastive.vision.data import (
    CIFAR_MEAN_STD,
    DATASETS,
    ImageArrays,
    load_cifar,
    stratified_subset,
)
from mp_contrastive.vision.evaluation import (
    PROBES,
    extract_features,
    linear_probe,
    official_linear_probe,
)
from mp_contrastive.vision.models import ARCHITECTURES, CifarResNet, resnet_cifar
from mp_contrastive.vision.trainer import PRECISIONS, TrainConfig, Trainer

__all__ = ["DATA_LAYOUT", "GLOBAL_CROP_SIZE", "SMALL_CROP_DEFAULTS", "add_image_arguments",
           "preset_help", "resolve_preset", "ImageRun", "start_run", "check_warmup_epochs",
           "build_backbone", "Splits", "load_splits", "train_and_evaluate", "sync_batch_norm"]

# Defaults a preset may override: the GRAPH-ATTENTION code's choices (stem padding 1, default
# initialisation, raw [0, 1] inputs, float32), which solo-learn's SimSiam changes.
_COMMON_DEFAULTS = {"crop_min": 0.08, "stem_padding": 1, "zero_init_residual": False,
                   "normalize": False, "precision": "32", "probe": "fast"}

#: The global crops' output side: the CIFAR images' own.
GLOBAL_CROP_SIZE = 32

#: The small crops' defaults (``--num-small-crops``): solo-learn's CIFAR multi-crop (its SwAV,
#: scripts/pretrain/cifar-multicrop/augmentations/swav.yaml: 18-px crops from 0.08 to 0.5 of the
#: image beside 32-px global ones). SwAV's ImageNet range (96 px, 0.05 to 0.14, beside 224 px)
#: would cut 7-12 px patches out of a 32-px image; the flags give it.
SMALL_CROP_DEFAULTS = {"small_crop_size": 18, "small_crop_min": 0.08, "small_crop_max": 0.5}

#: What ``--data-root`` holds for the image examples.
DATA_LAYOUT = ("CIFAR in torchvision's layout or the packed copy <name>/{train,test}_jpeg.npz")

#: Options that may differ when a run is resumed: where its files are, how it is shown, and what
#: only runs after training. Every other option, and every preset value, is stored in the
#: checkpoint and must match (``--epochs`` too: it sets the learning-rate schedule, so a run resumed
#: with another would follow neither; ``--monitor-queries`` too: the per-epoch kNN figures would mix
#: two query sets). ``--device`` may name another GPU, but not another device type (the trainer
#: compares that); ``--compile`` computes the same steps.
_RESUME_MAY_CHANGE = frozenset({"resume", "out", "data_root", "download", "no_progress", "device",
                               "compile", "dynamics_every", "checkpoint_every", "probe_epochs",
                               "probe"})

def preset_help(presets: dict[str, dict[str, Any]], key: str, text: str) -> str:
    """``text`` and the default each preset gives ``key`` (``--help`` shows it)."""
    values = {name: {**_COMMON_DEFAULTS, **preset}[key] for name, preset in presets.items()}
    shown = {name: f"{v:g}" if isinstance(v, float) else str(v) for name, v in values.items()}
    if len(set(shown.values())) == 1:
        return f"{text} (default: {next(iter(shown.values()))} in every preset)"
    each = ", ".join(f"{value} in the {name} preset" for name, value in shown.items())
    return f"{text} (default: {each})"


def add_image_arguments(parser: ArgumentParser, presets: dict[str, dict[str, Any]],
                        out_pattern: str, lr_note: str | None = None, *,
                        two_views: Callable[[argparse.Namespace], str | None] | None = None,
                        small_crops: bool = True) -> None:
    """The common arguments (:func:`mp_contrastive.experiments.cli.add_common_arguments`) and the image
    examples' own; an option left out takes the chosen preset's value (``--help`` lists them).
    ``lr_note`` adds to ``--lr``'s help what the example does with the rate (e.g. its scaling).
    ``out_pattern`` describes ``--out``'s default, e.g. ``runs/simclr_<attention>_<preset>_seed<seed>``.

    ``two_views`` is the example's rule for a method that takes exactly two views of one size: given
    the parsed arguments, why they ask for such a method (e.g. ``"--memory-bank's loss is
    two-view"``), or ``None``. Where it gives a reason, ``--num-crops`` other than 2,
    ``--num-small-crops`` other than 0 and any small-crop shape flag are argparse errors naming the
    flag given, before the small crops' own checks. ``small_crops=False`` (a method that never takes
    them) leaves the small-crop flags out of the parser; ``args.num_small_crops`` is then 0.
    """
    def preset(key: str, text: str) -> str:
        return preset_help(presets, key, text)

    parser.add_argument("--preset", choices=["auto", *presets], default="auto",
                        help="paper: the official hyper-parameters (GPU); cpu: a run that finishes "
                             "in minutes on 2 CPU cores; auto: paper on a GPU, else cpu")
    parser.add_argument("--dataset", choices=sorted(DATASETS), help=preset("dataset", "dataset"))
    parser.add_argument("--arch", choices=list(ARCHITECTURES),
                        help=preset("arch", "ResNet architecture"))
    parser.add_argument("--width", type=positive_int,
                        help=preset("width", "first-stage width of the ResNet (64 = standard)"))
    parser.add_argument("--batch-size", type=positive_int,
                        help=preset("batch_size", "global batch size (all processes)"))
    parser.add_argument("--epochs", type=positive_int, help=preset("epochs", "training epochs"))
    parser.add_argument("--optimizer", choices=["lars", "sgd", "adamw"],
                        help=preset("optimizer", "optimiser"))
    parser.add_argument("--lr", type=positive_float,
                        help=preset("lr", "learning rate" + (f"; {lr_note}" if lr_note else "")))
    parser.add_argument("--weight-decay", type=nonnegative_float,
                        help=preset("weight_decay", "weight decay"))
    parser.add_argument("--warmup", type=fraction,
                        help=preset("warmup", "warm-up as a fraction of all steps, in [0, 1)"))
    parser.add_argument("--train-subset", type=nonnegative_int,
                        help=preset("train_subset", "train on a class-balanced subset of this many "
                                                    "images (0 = all)"))
    parser.add_argument("--monitor-queries", type=nonnegative_int,
                        help=preset("monitor_queries", "held-out images for the kNN monitor "
                                                       "(0 = the whole test set)"))
    parser.add_argument("--probe-epochs", type=positive_int,
                        help=preset("probe_epochs", "epochs of the final linear probe"))
    parser.add_argument("--probe", choices=PROBES,
                        help=preset("probe", "final linear probe: fast (features of un-augmented "
                                             "images, extracted once, standardised) or official "
                                             "(a zero-initialised head on the frozen encoder, "
                                             "augmented images, SGD wd 1e-4 with linear decay; "
                                             "comparable with the paper's Table 1)"))
    parser.add_argument("--jitter-strength", type=nonnegative_float,
                        help=preset("jitter_strength", "colour-distortion strength s"))
    parser.add_argument("--crop-min", type=float_in(0.0, 1.0, low_open=True),
                        help=preset("crop_min", "smallest random-resized-crop area, a fraction of "
                                                "the image, in (0, 1]"))
    parser.add_argument("--stem-padding", type=nonnegative_int,
                        help=preset("stem_padding", "padding of the ResNet's 3x3 stem convolution "
                                                    "(solo-learn's CIFAR ResNet: 2)"))
    parser.add_argument("--zero-init-residual", action=argparse.BooleanOptionalAction,
                        help=preset("zero_init_residual", "start every residual branch at zero "
                                                          "(its last batch norm's scale)"))
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction,
                        help=preset("normalize", "normalise inputs with the data set's channel "
                                                 "mean and std, inside the encoder"))
    parser.add_argument("--precision", choices=PRECISIONS,
                        help=preset("precision", "float32, or bf16 / fp16 mixed precision (CUDA "
                                                 "only; a preset's 16-bit value falls back to "
                                                 "float32 on the CPU, saying so)"))
    add_common_arguments(parser, default_out=None, data_layout=DATA_LAYOUT,
                         data_default=f"${DATA_ENV}, then ~/.cache/mp_contrastive",
                         out_help=f"output folder: checkpoints, logs, results (default: "
                                  f"{out_pattern})",
                         download_fills_root=True)
    parser.add_argument("--resume", action="store_true",
                        help="continue from <out>/checkpoint.pt (verified against its checksum); "
                             "refused, with every difference listed, when a setting that changes "
                             "the run differs from the stored one (all but "
                             + ", ".join(_flag(name) for name in
                                         sorted(_RESUME_MAY_CHANGE - {"resume", "device"}))
                             + ", and --device within one device type)")
    parser.add_argument("--checkpoint-every", type=nonnegative_int, default=0, metavar="N",
                        help="also write a checkpoint every N optimiser steps within an epoch "
                             "(0: at each epoch's end only); --resume continues from the last "
                             "one exactly. Ctrl-C and SIGTERM write one at the current step")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast (needs a CUDA device); the same as --precision bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training step")
    parser.add_argument("--device", type=torch_device, default=None,
                        help="cuda, cuda:1, cpu (default: cuda if there is a GPU, else cpu)")
    parser.add_argument("--dynamics-every", type=nonnegative_int, default=50,
                        help="log learning-dynamics diagnostics (alignment, uniformity, effective "
                             "rank, equilibrium gap, class distances) every N steps to "
                             "<out>/dynamics.csv; 0 = off")
    parser.add_argument("--num-crops", type=int_at_least(2), default=2, metavar="N",
                        help="augmented views (global crops, all of the same size and "
                             "augmentation) of every image per step, N >= 2; the loss gets each "
                             "view's sample id, so all N views of an image are positives of one "
                             "another (docs/guide.md, Multi-crop)")
    if small_crops:
        _add_small_crop_arguments(parser)
    else:
        parser.set_defaults(num_small_crops=0, **dict.fromkeys(SMALL_CROP_DEFAULTS))
    parser.add_argument("--sync-bn", action="store_true",
                        help="under torchrun with CUDA, batch norm statistics over the global "
                             "batch (torch.nn.SyncBatchNorm) instead of each process's share; a "
                             "single process already sees the whole batch, so there it changes "
                             "nothing and says so; refused with gloo on the CPU, where torch's "
                             "SyncBatchNorm does not run")

    def check(args: argparse.Namespace) -> None:
        _check_run(args, presets)
        _check_views(args, two_views(args) if two_views is not None else None)

    parser.add_check(check)


def _add_small_crop_arguments(parser: ArgumentParser) -> None:
    """``--num-small-crops`` and the small crops' shape: ``--small-crop-size``, ``-min``, ``-max``."""
    parser.add_argument("--num-small-crops", type=nonnegative_int, default=0, metavar="M",
                        help="small crops of every image per step besides the --num-crops global "
                             "ones (SwAV's and solo-learn's multi-crop): the same colour "
                             "augmentation, --small-crop-size pixels, from --small-crop-min to "
                             "--small-crop-max of the image; every view of an image, large or "
                             "small, is a positive of every other (docs/guide.md, Multi-crop)")
    parser.add_argument("--small-crop-size", type=int_at_least(1), metavar="S",
                        help=f"the small crops' side in pixels, from 1 to {GLOBAL_CROP_SIZE - 1} "
                             f"(smaller than the global crops' {GLOBAL_CROP_SIZE}; default: "
                             f"{SMALL_CROP_DEFAULTS['small_crop_size']}, solo-learn's CIFAR "
                             f"multi-crop; needs --num-small-crops)")
    parser.add_argument("--small-crop-min", type=float_in(0.0, 1.0, low_open=True), metavar="F",
                        help=f"smallest small-crop area, a fraction of the image, in (0, 1] "
                             f"(default: {SMALL_CROP_DEFAULTS['small_crop_min']:g}, solo-learn's "
                             f"CIFAR multi-crop; needs --num-small-crops)")
    parser.add_argument("--small-crop-max", type=float_in(0.0, 1.0, low_open=True), metavar="F",
                        help=f"largest small-crop area, a fraction of the image, in (0, 1] "
                             f"(default: {SMALL_CROP_DEFAULTS['small_crop_max']:g}, solo-learn's "
                             f"CIFAR multi-crop; needs --num-small-crops)")


def _check_run(args: argparse.Namespace, presets: dict[str, dict[str, Any]]) -> None:
    """The device, precision, batch, output and --sync-bn options fit together (argparse errors
    naming the flag)."""
    device = _device(args)
    found = "" if args.device else " (no CUDA GPU was found)"
    if args.bf16 and args.precision not in (None, "bf16"):
        raise argument_error("--bf16", f"it means --precision bf16, and --precision is "
                                       f"'{args.precision}': give one of the two")
    if args.bf16 and device.type != "cuda":
        raise argument_error("--bf16", f"bf16 autocast runs on CUDA only and the device is "
                                       f"'{device}'{found}")
    if args.precision not in (None, "32") and device.type != "cuda":
        raise argument_error("--precision", f"'{args.precision}' is CUDA autocast and the "
                                            f"device is '{device}'{found}: use 32")
    name, _ = _preset_name(args.preset)
    settings = _settings(args, presets, name)
    batch, subset = settings["batch_size"], settings["train_subset"]
    given = "--train-subset" if args.train_subset is not None else \
        f"the {name} preset's train_subset"
    if subset and batch > subset:
        raise argument_error("--batch-size", f"{batch} is larger than the training set "
                                             f"({subset} images, {given})")
    # Files a directory stands in the way of are found now, not after training.
    out = args.out or ""
    for file in ("checkpoint.pt", "results.json"):
        if out and (Path(out) / file).is_dir():
            raise argument_error("--out", f"'{Path(out) / file}' is a folder: the run writes "
                                          f"its {file} there; remove it or pick another --out")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if batch % world:
        raise argument_error("--batch-size", f"{batch} must be divisible by the number of "
                                             f"processes ({world})")
    if args.sync_bn and world > 1 and device.type != "cuda":
        raise argument_error("--sync-bn", f"torch's SyncBatchNorm synchronises CUDA tensors "
                                          f"only, and the device is '{device}'{found}: "
                                          f"leave --sync-bn out on the CPU")


def _check_views(args: argparse.Namespace, two_views: str | None) -> None:
    """The view options fit the method and one another (argparse errors naming the flag given).
    ``two_views``: why the method takes exactly two views of one size, or ``None``. Small-crop shape
    options left out take :data:`SMALL_CROP_DEFAULTS` where there are small crops. Shaping small
    crops that are not drawn is refused: it would change nothing, and a resumed run would be
    compared on it."""
    given = [key for key in SMALL_CROP_DEFAULTS if getattr(args, key) is not None]
    if two_views is not None:
        if args.num_crops != 2:
            raise argument_error("--num-crops", f"{two_views}, got {args.num_crops} views: use "
                                                f"--num-crops 2")
        if args.num_small_crops:
            raise argument_error("--num-small-crops", f"{two_views}, got {args.num_small_crops} "
                                                      f"small crop(s) besides: leave "
                                                      f"--num-small-crops at 0")
        if given:
            flag = _flag(given[0])
            raise argument_error(flag, f"{two_views}, so there are no small crops to shape: "
                                       f"leave {flag} out")
    if given and not args.num_small_crops:
        flag = _flag(given[0])
        raise argument_error(flag, f"it shapes the small crops and --num-small-crops is 0: add "
                                   f"--num-small-crops M > 0, or leave {flag} out")
    if not args.num_small_crops:
        return
    for key, value in SMALL_CROP_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.small_crop_size >= GLOBAL_CROP_SIZE:
        raise argument_error("--small-crop-size", f"{args.small_crop_size} pixels is not smaller "
                                                  f"than the global crops' {GLOBAL_CROP_SIZE}: for "
                                                  f"more full-size views use --num-crops")
    if args.small_crop_min > args.small_crop_max:
        flag = "--small-crop-min" if "small_crop_min" in given else "--small-crop-max"
        raise argument_error(flag, f"the small crops' area range is empty: --small-crop-min "
                                   f"{args.small_crop_min:g} > --small-crop-max "
                                   f"{args.small_crop_max:g}")


def _flag(key: str) -> str:
    """The command-line flag of the option stored as ``key``."""
    return "--" + key.replace("_", "-")


def _device(args: argparse.Namespace) -> torch.device:
    """The device a run will use (``--device``, else CUDA when there is a GPU)."""
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _preset_name(preset: str) -> tuple[str, str | None]:
    """The preset ``--preset`` stands for, and why ``auto`` chose it."""
    if preset != "auto":
        return preset, None
    if torch.cuda.is_available():
        return "paper", "a CUDA GPU is available"
    return "cpu", "no CUDA GPU was found, so the paper's 200-epoch ResNet-18 run would take days"


def _settings(args: argparse.Namespace, presets: dict[str, dict[str, Any]],
              name: str) -> dict[str, Any]:
    settings = {**_COMMON_DEFAULTS, **presets[name]}
    for key, value in vars(args).items():
        if value is not None and key in settings:
            settings[key] = value
    if getattr(args, "bf16", False):
        settings["precision"] = "bf16"
    return settings


def _chosen_settings(args: argparse.Namespace,
                     presets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The settings a run will use (preset, then the command line), quietly: for checks."""
    return _settings(args, presets, _preset_name(args.preset)[0])


def check_warmup_epochs(args: argparse.Namespace, presets: dict[str, dict[str, Any]], key: str,
                        what: str) -> None:
    """A warm-up of ``settings[key]`` epochs must end before the last epoch, or ``what`` never
    switches on: an argparse error naming ``--<key>`` and ``--epochs``."""
    settings = _chosen_settings(args, presets)
    warmup, epochs = settings[key], settings["epochs"]
    if warmup >= epochs:
        flag = _flag(key)
        raise argument_error(flag, f"{warmup} epochs of warm-up (from "
                                   f"{flag if getattr(args, key) is not None else 'the preset'}) "
                                   f"leave none of the {epochs} epochs (--epochs) for {what}")


def resolve_preset(args: argparse.Namespace, presets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The chosen preset's values overridden by every argument given on the command line; prints
    which preset was chosen and why."""
    name, reason = _preset_name(args.preset)
    if reason is not None:
        _print0(f"--preset auto: using '{name}' because {reason}")
    settings = _settings(args, presets, name)
    settings["preset"] = name
    device = _device(args)
    if settings["precision"] != "32" and device.type != "cuda":
        # Only a preset's value gets here: a 16-bit --precision on the CPU is an argparse error.
        _print0(f"the {name} preset trains in {settings['precision']} mixed precision on CUDA; "
                f"the device is '{device}', so this run trains in float32")
        settings["precision"] = "32"
    return settings


def build_backbone(settings: dict[str, Any]) -> CifarResNet:
    """The preset's ResNet: architecture, width, stem padding, residual initialisation and (with
    ``normalize``) the data set's channel mean and std inside the encoder."""
    norm = CIFAR_MEAN_STD[settings["dataset"]] if settings["normalize"] else None
    return resnet_cifar(settings["arch"], settings["width"], stem_padding=settings["stem_padding"],
                        zero_init_residual=settings["zero_init_residual"], input_norm=norm)


@dataclass
class Splits:
    """Training images, the kNN monitor's bank and queries, and the linear probe's data."""

    train: ImageArrays
    bank: ImageArrays
    queries: ImageArrays
    test: ImageArrays


def load_splits(settings: dict[str, Any], data_root: str | None, download: bool,
                seed: int) -> Splits:
    """Train split (optionally a class-balanced subset), the kNN bank (the training images, not
    augmented) and held-out queries (a class-balanced subset of the test split, or all of it)."""
    generator = torch.Generator().manual_seed(seed)

    def subset(size: int):  # noqa: ANN202
        return (lambda labels: stratified_subset(labels, size, generator)) if size else None

    train = load_cifar(settings["dataset"], data_root, train=True, download=download,
                       select=subset(settings["train_subset"]))
    queries = load_cifar(settings["dataset"], data_root, train=False, download=download,
                         select=subset(settings["monitor_queries"]))
    return Splits(train=train, bank=train, queries=queries, test=queries)


@dataclass
class ImageRun:
    """An image example's run once started (:func:`start_run`): its start time, device, resolved
    settings (the preset's and the options'; the example adds its method's), data splits and
    backbone."""

    started: float
    device: torch.device
    settings: dict[str, Any]
    splits: Splits
    backbone: CifarResNet


def start_run(args: argparse.Namespace, presets: dict[str, dict[str, Any]]) -> ImageRun:
    """What an image example does first: starts its clock, seeds torch with ``--seed``, sets up
    the device (and the process group under torchrun), resolves the preset
    (:func:`resolve_preset`), loads the splits (:func:`load_splits`) and builds the preset's
    backbone (:func:`build_backbone`, initialised from the seeded generator)."""
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    device = setup_distributed(args.device)
    settings = resolve_preset(args, presets)
    splits = load_splits(settings, args.data_root, args.download, args.seed)
    return ImageRun(started, device, settings, splits, build_backbone(settings))


def _augmentation(settings: dict[str, Any]) -> SimCLRAugment:
    """The SimCLR augmentation with the preset's crop range and colour strength."""
    return SimCLRAugment(size=GLOBAL_CROP_SIZE, scale=(settings["crop_min"], 1.0),
                         jitter_strength=settings["jitter_strength"])


def _small_augmentation(settings: dict[str, Any]) -> SimCLRAugment | None:
    """The small crops' augmentation (``--num-small-crops``; ``None`` without them): the global
    crops' colour augmentation at ``--small-crop-size`` pixels from ``--small-crop-min`` to
    ``--small-crop-max`` of the image."""
    if not settings["num_small_crops"]:
        return None
    return SimCLRAugment(size=settings["small_crop_size"],
                         scale=(settings["small_crop_min"], settings["small_crop_max"]),
                         jitter_strength=settings["jitter_strength"])


def _dynamics_monitor(args: argparse.Namespace, out_dir: str,
                      temperature: float | None = None) -> DynamicsMonitor | None:
    """The learning-dynamics monitor the examples attach (``--dynamics-every``, 0 = none)."""
    if not args.dynamics_every:
        return None
    return DynamicsMonitor(args.dynamics_every, log_dir=out_dir, temperature=temperature,
                           resume=args.resume)


#: Settings added after checkpoints were first written, with the value that reproduces a run
#: without them: stored only at another value, so that an older checkpoint (which lacks them)
#: resumes at that value and is refused at any other. The small crops' shape is not among them:
#: a run without small crops has none (:func:`_view_settings`), and a run with them stores it
#: always, so that a changed default cannot resume it with other crops.
_ADDED_LATER = {"num_crops": 2, "sync_bn": False, "num_small_crops": 0}


def _view_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The views and batch-norm options a run records in its settings (``results.json`` and the
    checkpoint): ``--num-crops``, ``--sync-bn``, ``--num-small-crops`` and, with small crops only,
    their shape (``--small-crop-size``, ``-min``, ``-max``, as given or by default)."""
    views = {"num_crops": args.num_crops, "sync_bn": args.sync_bn,
             "num_small_crops": args.num_small_crops}
    if args.num_small_crops:
        views.update({key: getattr(args, key) for key in SMALL_CROP_DEFAULTS})
    return views


def _run_settings(settings: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """What a checkpoint stores and ``--resume`` compares: every parsed option and preset value
    (the resolved preset's, where an option was left out) except :data:`_RESUME_MAY_CHANGE`, the
    small crops' shape only with small crops, and :data:`_ADDED_LATER` settings only where they
    differ from their former behaviour."""
    merged = {**vars(args), **settings}  # the preset's name as resolved, not "auto"
    left_out = _RESUME_MAY_CHANGE | (set() if args.num_small_crops else set(SMALL_CROP_DEFAULTS))
    return without_former_values({key: value for key, value in merged.items()
                                  if key not in left_out}, _ADDED_LATER)


def _train_config(settings: dict[str, Any], args: argparse.Namespace, out_dir: str,
                  **extra: Any) -> TrainConfig:
    return TrainConfig(
        epochs=settings["epochs"], batch_size=settings["batch_size"],
        num_views=args.num_crops, num_small_views=args.num_small_crops,
        optimizer=settings["optimizer"], lr=settings["lr"],
        weight_decay=settings["weight_decay"], warmup=settings["warmup"], seed=args.seed,
        out_dir=out_dir, precision=settings["precision"], compile=args.compile,
        progress=not args.no_progress, checkpoint_every=args.checkpoint_every,
        extra={**_run_settings(settings, args), **extra})


def train_and_evaluate(method: torch.nn.Module, run: ImageRun, args: argparse.Namespace,
                       out_dir: str, description: str,
                       temperature: float | None = None) -> dict[str, Any]:
    """The part every image example shares once its method (around ``run.backbone``) is built:
    trainer (with the kNN and dynamics monitors), ``--resume``, training, final evaluation and
    results."""
    settings, splits, encoder, device, started = (run.settings, run.splits, run.backbone,
                                                  run.device, run.started)
    settings.update(_view_settings(args))
    method = sync_batch_norm(method, settings["sync_bn"])
    trainer = Trainer(method, encoder, splits.train, _augmentation(settings),
                      _train_config(settings, args, out_dir), monitor=(splits.bank, splits.queries),
                      device=device, small_augment=_small_augmentation(settings))
    if args.resume:
        _resume(trainer, args)
    # Only now: the monitor opens its files when it is built, and a failed resume writes nothing.
    trainer.dynamics = _dynamics_monitor(args, out_dir, temperature)
    if args.resume and trainer.dynamics is not None and trainer.rank == 0:
        trainer.dynamics.truncate_logs(trainer.step)  # its rows after the checkpoint are redone
    _print0(f"{description} on {len(splits.train)} {settings['dataset']} images, "
            f"{settings['arch']} width {settings['width']}, batch {settings['batch_size']}, "
            f"{settings['epochs']} epochs, device {device}; data from {splits.train.source}")
    trainer.fit()
    return _final_evaluation(trainer, splits, settings, started)


def sync_batch_norm(method: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``--sync-bn``: ``method`` with every batch norm converted to :class:`torch.nn.SyncBatchNorm`
    in place (``torch.nn.SyncBatchNorm.convert_sync_batchnorm``), so that under DDP the
    normalisation statistics are those of the global batch, as in one process. Converted before
    the trainer wraps the method in DDP; an encoder held separately (the backbone) is converted
    with it, as its batch norms are replaced inside it. Without a process group of more than one
    rank it returns ``method`` unchanged and prints why (one process already normalises over the
    whole batch); nothing without ``enabled``."""
    if not enabled:
        return method
    _, world = rank_and_world()
    if world == 1:
        _print0("--sync-bn: a single process already normalises over the whole batch, so the "
                "model keeps its batch norms (the flag acts under torchrun only)")
        return method
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)


def _resume(trainer: Trainer, args: argparse.Namespace) -> None:
    """:meth:`Trainer.resume`, with the settings that differ named by their options."""
    try:
        trainer.resume()
    except SettingsMismatch as error:
        options = vars(args)
        raise error.renamed(lambda key: _flag(key) if key in options else key) from None


def _final_evaluation(trainer: Trainer, splits: Splits, settings: dict[str, Any],
                      started: float) -> dict[str, Any]:
    """Linear probe on frozen features, then the results dictionary (also written to JSON)."""
    rank, _ = rank_and_world()
    results: dict[str, Any] = {"settings": settings}
    if rank == 0:
        probe = _run_probe(trainer.encoder, splits, settings, trainer.device, trainer.config.seed)
        epochs = trainer.history["epochs"]
        results.update({
            "knn_top1_initial": trainer.history.get("knn_initial"),
            "knn_top1_final": epochs[-1].get("knn_top1") if epochs else None,
            "knn_top1_per_epoch": [e.get("knn_top1") for e in epochs],
            "loss_per_epoch": [e["loss"] for e in epochs],
            "linear_probe": probe,
            "train_images": len(splits.train), "test_images": len(splits.test),
            "data_source": splits.train.source,
            "wall_seconds": time.perf_counter() - started,
        })
        path = trainer.write_results(results)
        initial, final = results["knn_top1_initial"], results["knn_top1_final"]
        gain = f" (random init {initial:.2f}%, {final - initial:+.2f} points)" if (
            initial is not None and final is not None) else ""
        knn = "n/a (not evaluated)" if final is None else f"{final:.2f}%"
        print(f"kNN top-1 {knn}{gain}; linear probe top-1 {probe['test_top1']:.2f}%; "
              f"{results['wall_seconds']:.0f} s in all; results in {path}", flush=True)
    return results


def _run_probe(encoder: torch.nn.Module, splits: Splits, settings: dict[str, Any],
               device: torch.device, seed: int = 0) -> dict[str, float]:
    """The preset's linear probe (``settings["probe"]``) of the encoder: trained on the kNN bank's
    images (the training set), tested on the held-out ones."""
    train, test = splits.bank, splits.test
    if settings["probe"] == "official":
        return official_linear_probe(encoder, train.images, train.labels, test.images,
                                     test.labels, train.num_classes,
                                     epochs=settings["probe_epochs"], seed=seed, device=device)
    features = extract_features(encoder, train.images, device=device)
    test_features = extract_features(encoder, test.images, device=device)
    return linear_probe(features, train.labels, test_features, test.labels, train.num_classes,
                        epochs=settings["probe_epochs"])


def _print0(message: str) -> None:
    if rank_and_world()[0] == 0:
        print(message, flush=True)
