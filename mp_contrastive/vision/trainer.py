"""One trainer for the image methods: batched on-device augmentation, LARS/SGD/AdamW with warm-up +
cosine, a kNN monitor, CSV/TensorBoard logs, checkpoints that resume exactly, and DDP.

Exact resumption: a checkpoint (written at the end of every epoch, every ``checkpoint_every``
steps and when SIGINT or SIGTERM stops the run) holds the model, optimiser, the sampler's and
every rank's augmentation generator states, the position within the epoch (its batch order and
losses so far), the loss history and the run's settings. It is written atomically with a checksum
and loads with ``torch.load(weights_only=True)`` after the checksum is verified
(:mod:`mp_contrastive.vision.checkpoint`). :meth:`Trainer.resume` refuses a checkpoint whose
settings differ from the run's, listing each difference; a resumed run draws the same batches and
augmentations and, on the CPU, reproduces the uninterrupted run's losses and weights bit for bit,
from an epoch's end or from within an epoch.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mp_contrastive._files import write_text_atomic
from mp_contrastive._reporting import progress_bar
from mp_contrastive._signals import Interrupted, StopSignals
from mp_contrastive._validation import check_nonnegative_int, check_positive_int
from mp_contrastive.distributed import rank_and_world
from mp_contrastive.monitor import DynamicsMonitor
from mp_contrastive.vision.augment import SimCLRAugment
from mp_contrastive.vision.checkpoint import (
    FORMAT,
    compare_settings,
    load_checkpoint,
    plain_settings,
    save_checkpoint,
    without_former_values,
)
from mp_contrastive.vision.data import ImageArrays
from mp_contrastive.vision.evaluation import extract_features, knn_accuracy
from mp_contrastive.vision.logs import TrainingLogs
from mp_contrastive.vision.methods import LossNodes, MethodOutput
from mp_contrastive.vision.optim import build_optimizer, warmup_cosine

__all__ = ["TrainConfig", "Trainer", "Interrupted", "PRECISIONS"]

#: Training precisions: float32, or mixed precision with bf16 or fp16 autocast (CUDA only; fp16
#: with a gradient scaler, as PyTorch Lightning's ``precision=16`` that solo-learn runs).
PRECISIONS = ("32", "bf16", "fp16")

# The TrainConfig settings a resumed run must share with its checkpoint to continue the same
# trajectory (``epochs`` among them: it sets the learning-rate schedule); TrainConfig.extra adds
# the method's and the data's, and the trainer the device type and the number of processes.
_RESUME_KEYS = ("epochs", "batch_size", "num_views", "num_small_views", "optimizer", "lr",
                "weight_decay", "momentum", "warmup", "seed", "knn_k", "knn_temperature",
                "eval_every", "precision")
# Of those, the ones added after checkpoints were first written, at the value that reproduces the
# runs from before them: stored only at another value, so that older checkpoints still resume.
_ADDED_LATER = {"num_small_views": 0}


@dataclass
class TrainConfig:
    """The :class:`Trainer`'s settings (the example scripts fill them from presets and the command
    line).

    Attributes:
        epochs: passes over the training set (an epoch is ``len(train) // batch_size`` steps; the
            last incomplete batch is dropped). It also sets the learning-rate schedule's length.
        batch_size: images per optimiser step, global: under DDP each of the ``N`` processes
            takes ``batch_size / N`` of them.
        num_views: augmented views of every image passed to the method (the global crops, drawn
            by the trainer's ``augment``).
        num_small_views: further views of every image drawn by the trainer's ``small_augment``
            (small crops, SwAV's multi-crop), passed after the ``num_views`` global ones; 0 (the
            default) draws none and leaves the augmentation stream as it was without them.
        optimizer: ``"lars"``, ``"sgd"`` or ``"adamw"``
            (:func:`~mp_contrastive.vision.optim.build_optimizer`; LARS leaves BN and biases out
            of its adaptation, SGD and AdamW take a method's ``param_groups()`` if it has one).
        lr: peak learning rate, reached after a linear warm-up and then decayed with a cosine
            (:func:`~mp_contrastive.vision.optim.warmup_cosine`), per step. A parameter group
            with ``static_lr=True`` keeps its own.
        weight_decay, momentum: the optimiser's.
        warmup: the warm-up's length, as a fraction of all steps.
        seed: seeds the batch order and the augmentations (rank ``r``: ``seed * 1000 + 1 + r``);
            the model's initialisation is the caller's (seed ``torch`` before building it).
        out_dir: where ``checkpoint.pt``, ``steps.csv``, ``epochs.csv``, TensorBoard events
            and ``results.json`` go.
        knn_k, knn_temperature: the weighted kNN monitor's neighbours and temperature.
        eval_every: the kNN monitor runs every this many epochs (and after the last).
        precision: one of :data:`PRECISIONS`: ``"32"``, or CUDA autocast in ``"bf16"`` or
            ``"fp16"`` (with a gradient scaler).
        compile: wrap the method in :func:`torch.compile`.
        progress: a progress bar per epoch (rank 0; tqdm when installed).
        tensorboard: also log to TensorBoard (when installed).
        checkpoint_every: also write a checkpoint every this many steps within an epoch (0: at
            epoch ends only).
        stop_on_signals: SIGINT / SIGTERM finish the running step, write a checkpoint and raise
            :class:`~mp_contrastive.vision.trainer.Interrupted`.
        extra: the run's other settings (method, data, augmentations, small crops' size and
            scale among them): stored in every checkpoint and compared on resume, like the ones
            above.
    """

    epochs: int = 200
    batch_size: int = 512  # global, over all processes
    num_views: int = 2
    num_small_views: int = 0  # drawn by the Trainer's small_augment, after the num_views
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
    precision: str = "32"  # one of PRECISIONS; the 16-bit ones need CUDA
    compile: bool = False
    progress: bool = True
    tensorboard: bool = True
    checkpoint_every: int = 0  # also a checkpoint every N steps within an epoch; 0: epoch ends only
    stop_on_signals: bool = True  # SIGINT / SIGTERM: finish the step, save, raise Interrupted
    extra: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """The training loop of the image methods: ``method`` (a module that owns its model and
    computes the loss) trained on ``train`` images.

    The method's contract (:mod:`mp_contrastive.vision.methods`): ``method(views, index)`` takes
    ``config.num_views`` augmented views of a batch (a list of ``[B, C, H, W]`` tensors, ``B`` =
    this process's share of the batch), followed by ``config.num_small_views`` small crops
    (``[B, C, h, w]``, smaller sides) when there are any, and the images' indices in ``train``
    (``[B]``), and returns
    a :class:`~mp_contrastive.vision.methods.MethodOutput` ``(loss, nodes)``: the scalar loss and
    the :class:`~mp_contrastive.vision.methods.LossNodes` it saw, or ``None``. A plain loss tensor
    is also accepted (``nodes=None``); the nodes are needed only by a learning-dynamics monitor
    (``dynamics``), and the trainer raises, naming the method, if it has one and gets none. The
    method may also have ``set_epoch(epoch)`` (called at the start of every epoch, before its
    first step) and ``param_groups()`` (SGD's or AdamW's parameter groups; a group with
    ``static_lr=True`` keeps its learning rate). Under DDP the method computes the loss of the
    global batch itself (e.g. :func:`~mp_contrastive.distributed.gather_with_grad`).

    The loop (:meth:`fit`): for each epoch, a random order of the training set (seeded); for each
    step, ``batch_size`` images of it, each augmented ``num_views`` times on the device by
    ``augment`` (and ``num_small_views`` times by ``small_augment``; seeded per rank), the
    method's loss, backward and an optimiser step (LARS, SGD or
    AdamW; linear warm-up then cosine decay of the learning rate, set before every step). Then:

    * precision: float32, or CUDA autocast in bf16 or fp16 (with a gradient scaler);
    * logs: ``steps.csv`` and ``epochs.csv`` (and TensorBoard) in ``config.out_dir``, a
      progress bar, ``callbacks`` after every step, ``dynamics`` every ``dynamics.every`` steps;
    * the kNN monitor: with ``monitor=(bank, queries)``, the weighted kNN top-1 of ``encoder``'s
      features before training and every ``eval_every`` epochs;
    * checkpoints: ``out_dir/checkpoint.pt`` at every epoch's end, every ``checkpoint_every``
      steps and on SIGINT / SIGTERM; :meth:`resume` continues bit for bit on the CPU;
    * DDP: under ``torchrun`` (an initialised process group) the method is wrapped in
      :class:`~torch.nn.parallel.DistributedDataParallel`, each rank takes its share of every
      batch, and rank 0 logs, evaluates and writes.

    Args:
        method: the self-supervised method (e.g. :class:`~mp_contrastive.vision.methods.SimCLRMethod`),
            as above.
        encoder: the part whose features are evaluated (the backbone).
        train: training images.
        augment: batched augmentation (a :class:`SimCLRAugment`).
        config: :class:`TrainConfig`.
        monitor: ``(bank, queries)`` images for the kNN monitor, or ``None``.
        device: where to train.
        callbacks: called as ``callback(trainer, step, loss)`` after every optimiser step.
        dynamics: a :class:`~mp_contrastive.monitor.DynamicsMonitor` fed with the nodes the loss
            saw (the method's ``MethodOutput.nodes``) and their class labels, on rank 0.
        small_augment: the small crops' augmentation (a :class:`SimCLRAugment` with a smaller
            ``size``), drawing ``config.num_small_views`` views of every image from the same
            seeded generator as ``augment``, after its views; needed exactly when
            ``config.num_small_views > 0``.

    ``examples/custom_method.py`` defines a method in a few lines and trains it.
    """

    def __init__(self, method: nn.Module, encoder: nn.Module, train: ImageArrays,
                 augment: SimCLRAugment, config: TrainConfig,
                 monitor: tuple[ImageArrays, ImageArrays] | None = None,
                 device: torch.device | str = "cpu",
                 callbacks: list[Callable[[Trainer, int, float], None]] | None = None,
                 dynamics: DynamicsMonitor | None = None,
                 small_augment: SimCLRAugment | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        self.rank, self.world = rank_and_world()
        check_positive_int(config.batch_size, "batch_size")  # not a ZeroDivisionError further down
        check_nonnegative_int(config.checkpoint_every, "checkpoint_every")
        _check_small_views(config.num_small_views, small_augment)
        if config.batch_size % self.world:
            raise ValueError(f"'batch_size' ({config.batch_size}) must be divisible by the number "
                             f"of processes ({self.world})")
        if len(train) < config.batch_size:
            raise ValueError(f"the training set ({len(train)} images) is smaller than one batch "
                             f"('batch_size' = {config.batch_size})")
        if config.precision not in PRECISIONS:
            raise ValueError(f"'precision' must be one of {PRECISIONS}, got {config.precision!r}")
        if config.precision != "32" and self.device.type != "cuda":
            raise ValueError(f"'precision' {config.precision!r} is CUDA autocast and the device is "
                             f"'{self.device}': use precision='32'")
        self.method = method.to(self.device)
        self.encoder = encoder
        self.train_data = train
        self.images = train.images.to(self.device)
        self.augment = augment
        self.small_augment = small_augment
        self.monitor = monitor
        self.callbacks = list(callbacks or [])
        self.dynamics = dynamics
        self.optimizer = build_optimizer(config.optimizer, method, config.lr, config.weight_decay,
                                         config.momentum)
        # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none.
        self.scaler = (torch.amp.GradScaler("cuda") if config.precision == "fp16" else None)
        self.steps_per_epoch = len(train) // config.batch_size
        self.total_steps = config.epochs * self.steps_per_epoch
        self.warmup_steps = round(config.warmup * self.total_steps)
        self.sampler_rng = torch.Generator().manual_seed(config.seed)
        self.augment_rng = torch.Generator(device=self.device).manual_seed(
            config.seed * 1000 + 1 + self.rank)
        self.epoch = 0  # epochs completed
        # Position within the running epoch: steps done, its batch order, their losses, seconds.
        self.step_in_epoch = 0
        self._epoch_order: Tensor | None = None
        self._epoch_losses: list[float] = []
        self._epoch_started = 0.0
        self.history: dict[str, list] = {"step_loss": [], "epochs": []}
        self.out_dir = Path(config.out_dir)
        self.train_step = self.method
        if self.world > 1:
            self.train_step = nn.parallel.DistributedDataParallel(
                self.method, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if config.compile:
            self.train_step = torch.compile(self.train_step)
        self.logs = TrainingLogs(self.out_dir, self.rank, config.tensorboard)
        self._signals: StopSignals | None = None

    @property
    def step(self) -> int:
        """Optimiser steps done so far."""
        return self.epoch * self.steps_per_epoch + self.step_in_epoch

    @property
    def run_settings(self) -> dict[str, Any]:
        """What the checkpoint stores and :meth:`resume` compares: the config's settings that
        shape the trajectory, ``config.extra``, the device type (a generator's state is
        device-specific) and the number of processes (each has its own augmentation stream)."""
        own = without_former_values({key: getattr(self.config, key) for key in _RESUME_KEYS},
                                    _ADDED_LATER)
        return plain_settings({**own, "device_type": self.device.type, "processes": self.world,
                               **self.config.extra})

    # -- checkpoints -----------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's content; a collective under DDP (every rank's augmentation state)."""
        mid_epoch = 0 < self.step_in_epoch
        return {
            "format": FORMAT,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "epoch_order": self._epoch_order if mid_epoch else None,
            "epoch_losses": list(self._epoch_losses) if mid_epoch else [],
            "epoch_seconds": time.perf_counter() - self._epoch_started if mid_epoch else 0.0,
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler_rng": self.sampler_rng.get_state(),
            "augment_rng": self._augment_states(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "settings": self.run_settings,
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
            "config": {k: v for k, v in asdict(self.config).items() if k != "extra"},
        }

    def _augment_states(self) -> list[Tensor]:
        """Every rank's augmentation generator state, in rank order."""
        state = self.augment_rng.get_state()
        if self.world == 1:
            return [state]
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, state)
        return states

    def save_checkpoint(self) -> None:
        """Write ``checkpoint.pt`` and its checksum (rank 0; call it on every rank under DDP)."""
        state = self.state_dict()
        if self.rank != 0:
            return
        # The logs first: a kill after the checkpoint then loses none of the rows it holds (a
        # resume drops the ones after it).
        self.logs.flush()
        if self.dynamics is not None:
            self.dynamics.flush()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(state, self.checkpoint_path)

    def resume(self, path: str | Path | None = None) -> None:
        """Continue from a checkpoint (default: ``out_dir/checkpoint.pt``), at the epoch end or
        the step it was written at.

        Everything is checked before anything is changed or written: the checksum, the format and
        the settings (a :class:`~mp_contrastive.vision.checkpoint.SettingsMismatch` lists every
        setting that differs), then the model's and the optimiser's shapes.
        """
        path = self.checkpoint_path if path is None else Path(path)
        state = load_checkpoint(path)
        compare_settings(state["settings"], self.run_settings, path)
        try:
            self.method.load_state_dict(state["method"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler is not None:  # fp16: the scale resumes where it was
                self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(f"the checkpoint '{path}' does not match the model (different "
                             f"architecture or method?): {str(error).splitlines()[0]}") from error
        self.sampler_rng.set_state(state["sampler_rng"])
        self.augment_rng.set_state(state["augment_rng"][self.rank])
        torch.set_rng_state(state["torch_rng"])
        self.history = state["history"]
        self.epoch = state["epoch"]
        self.step_in_epoch = state["step_in_epoch"]
        self._epoch_order = state["epoch_order"]
        self._epoch_losses = list(state["epoch_losses"])
        self._epoch_started = time.perf_counter() - state["epoch_seconds"]
        self.logs.truncate(self.step, self.epoch)
        if self.dynamics is not None and self.rank == 0:
            self.dynamics.truncate_logs(self.step)

    # -- training --------------------------------------------------------------------------------
    def fit(self, until_epoch: int | None = None) -> dict[str, list]:
        """Train up to ``until_epoch`` (default: all epochs); returns the history.

        With ``config.stop_on_signals`` (the default), SIGINT (Ctrl-C) or SIGTERM lets the running
        step finish, writes a checkpoint and raises
        :class:`~mp_contrastive.vision.trainer.Interrupted` (a ``KeyboardInterrupt``); a second signal
        stops at once.
        """
        end = self.config.epochs if until_epoch is None else min(until_epoch, self.config.epochs)
        if self.rank == 0 and self.monitor is not None and "knn_initial" not in self.history:
            self.history["knn_initial"] = self.evaluate_knn()
            print(f"epoch 0 (random initialisation): kNN top-1 {self.history['knn_initial']:.2f}%",
                  flush=True)
        self._signals = StopSignals() if self.config.stop_on_signals else None
        try:
            with self._signals or nullcontext():
                while self.epoch < end:
                    self._train_epoch()
                    self._end_epoch()
                    self.save_checkpoint()
                    self._stop_if_requested(saved=True)
        finally:
            self._signals = None
        return self.history

    def _end_epoch(self) -> None:
        """The epoch's record (mean loss, seconds, kNN), logged; the position reset."""
        losses = self._epoch_losses
        self.epoch += 1
        record = {"epoch": self.epoch, "loss": sum(losses) / len(losses),
                  "seconds": time.perf_counter() - self._epoch_started}
        self.step_in_epoch, self._epoch_order, self._epoch_losses = 0, None, []
        if self.rank == 0 and self.monitor is not None and (
                self.epoch % self.config.eval_every == 0 or self.epoch == self.config.epochs):
            record["knn_top1"] = self.evaluate_knn()
        self.history["epochs"].append(record)
        self.logs.epoch(record, self.config.epochs)

    def _stop_if_requested(self, saved: bool) -> None:
        """Checkpoint (unless ``saved``) and raise :class:`Interrupted` if a signal asked to stop.
        Under DDP the ranks agree first, so that all stop after the same step."""
        signum = self._signals.requested if self._signals is not None else None
        if self.world > 1 and self.config.stop_on_signals:
            flag = torch.tensor([signum or 0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag.item()) or None
        if signum is None:
            return
        if not saved:
            self.save_checkpoint()
        where = (f"at the end of epoch {self.epoch}" if self.step_in_epoch == 0 else
                 f"at step {self.step_in_epoch}/{self.steps_per_epoch} of epoch {self.epoch + 1}")
        raise Interrupted(f"stopped by {signal.Signals(signum).name} {where} (step {self.step} of "
                          f"{self.total_steps}); checkpoint written to '{self.checkpoint_path}': "
                          f"continue with --resume", signum)

    def _train_epoch(self) -> None:
        """The running epoch's remaining steps (all of them, unless resumed within it)."""
        config = self.config
        local = config.batch_size // self.world
        if self.step_in_epoch == 0:
            self._epoch_order = torch.randperm(len(self.train_data), generator=self.sampler_rng)
            self._epoch_losses = []
            self._epoch_started = time.perf_counter()
        order = self._epoch_order
        assert order is not None
        self.method.train()
        if hasattr(self.method, "set_epoch"):
            self.method.set_epoch(self.epoch)
        progress = progress_bar(self.steps_per_epoch, f"epoch {self.epoch + 1}/{config.epochs}",
                                config.progress and self.rank == 0, leave=False)
        progress.update(self.step_in_epoch)
        try:
            for it in range(self.step_in_epoch, self.steps_per_epoch):
                step = self.step
                lr = warmup_cosine(step, self.total_steps, self.warmup_steps, config.lr)
                for group in self.optimizer.param_groups:
                    if not group.get("static_lr", False):
                        group["lr"] = lr
                batch = order[it * config.batch_size:(it + 1) * config.batch_size]
                index = batch[self.rank * local:(self.rank + 1) * local].to(self.device)
                started = time.perf_counter()
                value, nodes = self._optimizer_step(index)
                self.step_in_epoch = it + 1
                self._epoch_losses.append(value)
                self.history["step_loss"].append(value)
                speed = config.batch_size / (time.perf_counter() - started)
                for callback in self.callbacks:
                    callback(self, step, value)
                if self.dynamics is not None and self.rank == 0 and self.dynamics.should_log(step):
                    assert nodes is not None  # _optimizer_step checked
                    self.dynamics(step, nodes.features, sample=nodes.sample,
                                  labels=self.train_data.labels[nodes.index.cpu()])
                progress.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.3g}", img_s=f"{speed:.0f}")
                progress.update()
                self.logs.step(step, self.epoch, value, lr, speed)
                self._stop_if_requested(saved=False)
                if (config.checkpoint_every and self.step % config.checkpoint_every == 0
                        and self.step_in_epoch < self.steps_per_epoch):  # the epoch's end saves
                    self.save_checkpoint()
        finally:
            progress.close()

    def _views(self, images: Tensor) -> list[Tensor]:
        """The ``num_views`` global crops of ``images``, then the ``num_small_views`` small ones, all
        from the one seeded generator (so a checkpoint's generator state resumes both); without
        small crops the stream is the one drawn before they existed."""
        views = [self.augment(images, self.augment_rng) for _ in range(self.config.num_views)]
        if self.small_augment is not None:
            views += [self.small_augment(images, self.augment_rng)
                      for _ in range(self.config.num_small_views)]
        return views

    def _optimizer_step(self, index: Tensor) -> tuple[float, LossNodes | None]:
        """One step on the images ``index`` (augmented ``num_views`` times, and
        ``num_small_views`` small crops); returns the loss and the nodes it saw."""
        views = self._views(self.images[index])
        with self._autocast():
            loss, nodes = self._method_output(self.train_step(views, index))
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:  # skips the step if the scaled gradients overflowed, then adapts the scale
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return float(loss.detach()), nodes

    def _method_output(self, output: Any) -> MethodOutput:
        """The method's return value as a :class:`MethodOutput`, checked before any step."""
        name = type(self.method).__name__
        if isinstance(output, Tensor):
            output = MethodOutput(output)
        elif not isinstance(output, MethodOutput):
            raise TypeError(f"{name}.forward must return a MethodOutput(loss, nodes) or a loss "
                            f"tensor, got {type(output).__name__}")
        if not isinstance(output.loss, Tensor) or output.loss.dim() != 0:
            got = (f"shape {tuple(output.loss.shape)}" if isinstance(output.loss, Tensor)
                   else type(output.loss).__name__)
            raise ValueError(f"{name}.forward must return a scalar loss tensor, got {got}")
        if self.dynamics is not None and output.nodes is None:
            raise ValueError(
                f"the learning-dynamics monitor (Trainer(dynamics=...)) needs the nodes the loss "
                f"saw and {name}.forward returned none: return MethodOutput(loss, "
                f"LossNodes(features, sample, index)), or train without the monitor")
        return output

    def _autocast(self) -> torch.autocast | nullcontext:
        if self.config.precision == "32":
            return nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

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


def _check_small_views(num_small_views: int, small_augment: SimCLRAugment | None) -> None:
    """Small crops need their augmentation, and an augmentation without small crops would be
    silently unused: both are refused, naming the setting."""
    check_nonnegative_int(num_small_views, "num_small_views")
    if num_small_views and small_augment is None:
        raise ValueError(f"'num_small_views' is {num_small_views} and no 'small_augment' draws "
                         f"them: pass Trainer(small_augment=SimCLRAugment(size=...))")
    if not num_small_views and small_augment is not None:
        raise ValueError("'small_augment' draws the small crops and 'num_small_views' is 0: set "
                         "TrainConfig(num_small_views=M > 0), or leave small_augment out")
