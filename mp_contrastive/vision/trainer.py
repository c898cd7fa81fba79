"""One trainer for the image methods: batched on-device augmentation, LARS/SGD/AdamW with warm-up +
cosine, a kNN monitor, CSV/TensorBoard logs, checkpoints that resume exactly, and DDP.

Exact resumption: a checkpoint (written at the end of every epoch) holds the model, optimiser,
the sampler's and the augmentation's generator states and the loss history, and loads with
``torch.load(weights_only=True)``; a resumed run draws the same batches and augmentations and, on
the CPU, reproduces the uninterrupted run's losses bit for bit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mp_contrastive._files import write_text_atomic
from mp_contrastive._validation import check_positive_int
from mp_contrastive.distributed import rank_and_world
from mp_contrastive.monitor import DynamicsMonitor
from mp_contrastive.vision.augment import SimCLRAugment
from mp_contrastive.vision.data import ImageArrays
from mp_contrastive.vision.evaluation import extract_features, knn_accuracy
from mp_contrastive.vision.logs import TrainingLogs, progress_bar
from mp_contrastive.vision.optim import build_optimizer, warmup_cosine

__all__ = ["TrainConfig", "Trainer", "load_checkpoint"]

# Settings a resumed run must share with its checkpoint to continue the same trajectory.
_RESUME_KEYS = ("epochs", "batch_size", "num_views", "optimizer", "lr", "weight_decay", "momentum",
                "warmup", "seed")


@dataclass
class TrainConfig:
    """Training settings (the example scripts fill them from presets and the command line)."""

    epochs: int = 200
    batch_size: int = 512  # global, over all processes
    num_views: int = 2
    optimizer: str = "lars"
    lr: float = 1.0
    weight_decay: float = 1e-6
    momentum: float = 0.9
    warmup: float = 0.01  # fraction of all steps
    seed: int = 0
    out_dir: str = "runs/simclr"
    knn_k: int = 200
    knn_temperature: float = 0.1
    eval_every: int = 1
    amp: bool = False  # bf16 autocast on CUDA
    compile: bool = False
    progress: bool = True
    tensorboard: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # recorded with the results


class Trainer:
    """Train ``method`` (a module: ``method(views, index) -> loss`` that owns its model) on
    ``train`` images.

    Args:
        method: the self-supervised method (e.g. :class:`~mp_contrastive.vision.methods.SimCLRMethod`);
            if it has ``set_epoch(epoch)``, that is called at the start of every epoch.
        encoder: the part whose features are evaluated (the backbone).
        train: training images.
        augment: batched augmentation (a :class:`SimCLRAugment`).
        config: :class:`TrainConfig`.
        monitor: ``(bank, queries)`` images for the kNN monitor, or ``None``.
        device: where to train.
        callbacks: called as ``callback(trainer, step, loss)`` after every optimiser step.
        dynamics: a :class:`~mp_contrastive.monitor.DynamicsMonitor` fed with the nodes the loss
            saw (``method.last_nodes``) and their class labels, on rank 0.
    """

    def __init__(self, method: nn.Module, encoder: nn.Module, train: ImageArrays,
                 augment: SimCLRAugment, config: TrainConfig,
                 monitor: tuple[ImageArrays, ImageArrays] | None = None,
                 device: torch.device | str = "cpu",
                 callbacks: list[Callable[[Trainer, int, float], None]] | None = None,
                 dynamics: DynamicsMonitor | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        self.rank, self.world = rank_and_world()
        check_positive_int(config.batch_size, "batch_size")  # not a ZeroDivisionError further down
        if config.batch_size % self.world:
            raise ValueError(f"'batch_size' ({config.batch_size}) must be divisible by the number "
                             f"of processes ({self.world})")
        if len(train) < config.batch_size:
            raise ValueError(f"the training set ({len(train)} images) is smaller than one batch "
                             f"('batch_size' = {config.batch_size})")
        self.method = method.to(self.device)
        self.encoder = encoder
        self.train_data = train
        self.images = train.images.to(self.device)
        self.augment = augment
        self.monitor = monitor
        self.callbacks = list(callbacks or [])
        self.dynamics = dynamics
        self.optimizer = build_optimizer(config.optimizer, method, config.lr, config.weight_decay,
                                         config.momentum)
        self.steps_per_epoch = len(train) // config.batch_size
        self.total_steps = config.epochs * self.steps_per_epoch
        self.warmup_steps = round(config.warmup * self.total_steps)
        self.sampler_rng = torch.Generator().manual_seed(config.seed)
        self.augment_rng = torch.Generator(device=self.device).manual_seed(
            config.seed * 1000 + 1 + self.rank)
        self.epoch = 0
        self.history: dict[str, list] = {"step_loss": [], "epochs": []}
        self.out_dir = Path(config.out_dir)
        self.train_step = self.method
        if self.world > 1:
            self.train_step = nn.parallel.DistributedDataParallel(
                self.method, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if config.compile:
            self.train_step = torch.compile(self.train_step)
        self.logs = TrainingLogs(self.out_dir, self.rank, config.tensorboard)

    # -- checkpoints -----------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "epoch": self.epoch,
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler_rng": self.sampler_rng.get_state(),
            "augment_rng": self.augment_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "config": {k: v for k, v in asdict(self.config).items() if k != "extra"},
        }

    def save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(self.checkpoint_path)  # atomic: an interruption never leaves half a file

    def resume(self, path: str | Path | None = None) -> None:
        """Continue from a checkpoint (default: ``out_dir/checkpoint.pt``)."""
        state = load_checkpoint(self.checkpoint_path if path is None else path)
        saved = state["config"]
        mismatched = {k: (saved.get(k), getattr(self.config, k)) for k in _RESUME_KEYS
                      if saved.get(k) != getattr(self.config, k)}
        if mismatched:
            details = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}"
                                for k, (a, b) in mismatched.items())
            raise ValueError(f"the checkpoint was trained with other settings ({details}); resume "
                             f"with the same settings or start a new run in another --out folder")
        try:
            self.method.load_state_dict(state["method"])
        except RuntimeError as error:
            raise ValueError(f"the checkpoint does not match the model (different architecture or "
                             f"method?): {str(error).splitlines()[0]}") from error
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler_rng.set_state(state["sampler_rng"])
        self.augment_rng.set_state(state["augment_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.history = state["history"]
        self.epoch = state["epoch"]
        self.logs.truncate(self.epoch, self.steps_per_epoch)
        if self.dynamics is not None and self.rank == 0:
            self.dynamics.truncate_logs(self.epoch * self.steps_per_epoch)

    # -- training --------------------------------------------------------------------------------
    def fit(self, until_epoch: int | None = None) -> dict[str, list]:
        """Train up to ``until_epoch`` (default: all epochs); returns the history."""
        end = self.config.epochs if until_epoch is None else min(until_epoch, self.config.epochs)
        if self.rank == 0 and self.monitor is not None and not self.history["epochs"]:
            self.history["knn_initial"] = self.evaluate_knn()
            print(f"epoch 0 (random initialisation): kNN top-1 {self.history['knn_initial']:.2f}%",
                  flush=True)
        while self.epoch < end:
            started = time.perf_counter()
            losses = self._train_epoch()
            self.epoch += 1
            record = {"epoch": self.epoch, "loss": sum(losses) / len(losses),
                      "seconds": time.perf_counter() - started}
            if self.rank == 0 and self.monitor is not None and (
                    self.epoch % self.config.eval_every == 0 or self.epoch == self.config.epochs):
                record["knn_top1"] = self.evaluate_knn()
            self.history["epochs"].append(record)
            self.logs.epoch(record, self.config.epochs)
            self.save_checkpoint()
        return self.history

    def _train_epoch(self) -> list[float]:
        config = self.config
        local = config.batch_size // self.world
        order = torch.randperm(len(self.train_data), generator=self.sampler_rng)
        self.method.train()
        if hasattr(self.method, "set_epoch"):
            self.method.set_epoch(self.epoch)
        losses = []
        progress = progress_bar(self.steps_per_epoch, f"epoch {self.epoch + 1}/{config.epochs}",
                                config.progress and self.rank == 0)
        for it in range(self.steps_per_epoch):
            step = self.epoch * self.steps_per_epoch + it
            lr = warmup_cosine(step, self.total_steps, self.warmup_steps, config.lr)
            for group in self.optimizer.param_groups:
                if not group.get("static_lr", False):
                    group["lr"] = lr
            batch = order[it * config.batch_size:(it + 1) * config.batch_size]
            index = batch[self.rank * local:(self.rank + 1) * local].to(self.device)
            started = time.perf_counter()
            images = self.images[index]
            views = [self.augment(images, self.augment_rng) for _ in range(config.num_views)]
            autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                        if config.amp and self.device.type == "cuda" else nullcontext())
            with autocast:
                loss = self.train_step(views, index)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            value = float(loss.detach())
            losses.append(value)
            self.history["step_loss"].append(value)
            speed = config.batch_size / (time.perf_counter() - started)
            for callback in self.callbacks:
                callback(self, step, value)
            if self.dynamics is not None and self.rank == 0 and self.dynamics.should_log(step):
                features, sample, node_index = self.method.last_nodes
                self.dynamics(step, features, sample=sample,
                              labels=self.train_data.labels[node_index.cpu()])
            if progress is not None:
                progress.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.3g}", img_s=f"{speed:.0f}")
                progress.update()
            self.logs.step(step, self.epoch, value, lr, speed)
        if progress is not None:
            progress.close()
        return losses

    def evaluate_knn(self) -> float:
        """Weighted kNN top-1 (%) of the encoder: bank = monitor[0], queries = monitor[1]."""
        assert self.monitor is not None
        bank, queries = self.monitor
        bank_features = extract_features(self.encoder, bank.images, device=self.device)
        query_features = extract_features(self.encoder, queries.images, device=self.device)
        return knn_accuracy(bank_features, bank.labels, query_features, queries.labels,
                            bank.num_classes, k=min(self.config.knn_k, len(bank)),
                            temperature=self.config.knn_temperature)

    def write_results(self, results: dict[str, Any]) -> Path:
        """Write ``results.json`` next to the checkpoint (rank 0) and return its path."""
        path = self.out_dir / "results.json"
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(results, indent=2, default=float))
        return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a trainer checkpoint safely (``weights_only=True``) with a clear error if missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at '{path}' (nothing to resume); run without "
                                f"--resume to start training")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != 1:
        raise ValueError(f"'{path}' is not a checkpoint written by this trainer")
    return state

