"""A short run on 1,024 real CIFAR-10 images: learning, exact resumption, checkpoint safety."""

import csv
import os
import signal

import pytest
import torch

from mp_contrastive.experiments.vision import GLOBAL_CROP_SIZE, SMALL_CROP_DEFAULTS
from mp_contrastive.monitor import DynamicsMonitor
from mp_contrastive.vision import ProjectionHead, SimCLRAugment, SimCLRModel, resnet_cifar
from mp_contrastive.vision.checkpoint import FORMAT, MISSING, SettingsMismatch, load_checkpoint
from mp_contrastive.vision.data import load_cifar, stratified_subset
from mp_contrastive.vision.methods import MethodOutput, SimCLRMethod, SimSiamMethod
from mp_contrastive.vision.trainer import Interrupted, TrainConfig, Trainer


@pytest.fixture(scope="module")
def cifar_subset(data_root):
    generator = torch.Generator().manual_seed(0)
    train = load_cifar("cifar10", data_root, train=True,
                       select=lambda labels: stratified_subset(labels, 1024, generator))
    queries = load_cifar("cifar10", data_root, train=False,
                         select=lambda labels: stratified_subset(labels, 300, generator))
    return train, queries


def make_trainer(data, out_dir, attention="off", epochs=3, width=8, wrap=None, knn=True,
                 small_augment=None, **config_args):
    torch.manual_seed(0)
    train, queries = data
    backbone = resnet_cifar("resnet10", width)
    model = SimCLRModel(backbone, ProjectionHead(backbone.out_dim, out_dim=32))
    method = SimCLRMethod(model, temperature=0.5, attention=attention)
    config = TrainConfig(**{**dict(epochs=epochs, batch_size=128, optimizer="lars", lr=1.0,
                                   warmup=0.1, seed=0, out_dir=str(out_dir), progress=False,
                                   tensorboard=False, knn_k=20), **config_args})
    return Trainer(method if wrap is None else wrap(method), backbone, train, SimCLRAugment(),
                   config, monitor=(train, queries) if knn else None, small_augment=small_augment)


def test_loss_decreases_and_resume_is_exact(cifar_subset, tmp_path):
    full = make_trainer(cifar_subset, tmp_path / "full").fit()
    losses = full["step_loss"]
    assert len(losses) == 3 * 8
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < first - 0.05, (first, last)
    assert full["epochs"][-1]["knn_top1"] > 0 and "knn_initial" in full

    interrupted = make_trainer(cifar_subset, tmp_path / "resumed")
    interrupted.fit(until_epoch=1)
    resumed = make_trainer(cifar_subset, tmp_path / "resumed")
    resumed.resume()
    assert resumed.epoch == 1
    history = resumed.fit()
    assert history["step_loss"] == losses  # bit for bit
    rows = (tmp_path / "resumed" / "steps.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 24  # header + one row per step, none duplicated by the resume


def test_attention_run_checkpoint_and_dynamics_monitor(cifar_subset, tmp_path):
    trainer = make_trainer(cifar_subset, tmp_path, attention="official", epochs=1)
    trainer.dynamics = DynamicsMonitor(every=4, log_dir=tmp_path, temperature=0.5)
    trainer.fit()
    rows = trainer.dynamics.history
    assert len(rows) == 2  # steps 0 and 4 of 8
    assert {"alignment", "uniformity", "effective_rank"} <= set(rows[0])
    assert all(v == v for v in rows[-1].values())  # no NaN: labels and samples lined up
    assert (tmp_path / "dynamics.csv").read_text().count("\n") == 3
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]["step_loss"]) == 8
    assert load_checkpoint(tmp_path / "checkpoint.pt")["format"] == FORMAT


def test_resume_errors_are_clear(cifar_subset, tmp_path):
    make_trainer(cifar_subset, tmp_path, epochs=1).fit()
    with pytest.raises(ValueError, match="does not match the model"):
        make_trainer(cifar_subset, tmp_path, epochs=1, width=4).resume()
    with pytest.raises(SettingsMismatch) as error:
        make_trainer(cifar_subset, tmp_path, epochs=2).resume()
    assert error.value.differences == {"epochs": (1, 2)}  # it sets the lr schedule
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        make_trainer(cifar_subset, tmp_path / "empty").resume()


def files(folder):
    """Every file under ``folder`` and its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*")
            if path.is_file()}


def test_resume_refuses_every_changed_setting_and_writes_nothing(cifar_subset, tmp_path):
    stored = {"temperature": 0.5, "attention": "off", "train_subset": 1024, "crop_min": 0.08}
    first = make_trainer(cifar_subset, tmp_path, epochs=1, extra=stored)
    first.dynamics = DynamicsMonitor(every=4, log_dir=tmp_path, temperature=0.5)
    first.fit()
    before = files(tmp_path)
    changed = {**stored, "temperature": 0.7, "attention": "paper", "crop_min": 0.2}
    with pytest.raises(SettingsMismatch) as error:
        make_trainer(cifar_subset, tmp_path, epochs=1, extra=changed, lr=0.5).resume()
    assert error.value.differences == {"temperature": (0.5, 0.7), "attention": ("off", "paper"),
                                       "crop_min": (0.08, 0.2), "lr": (1.0, 0.5)}
    assert files(tmp_path) == before  # nothing written, nothing truncated


def stop_at(step_index, how):
    """A callback that interrupts the run once ``step_index`` is done: a SIGTERM sent to this
    process (the trainer saves and stops), or an exception standing for a kill (nothing saved)."""
    def callback(trainer, step, loss):
        if step == step_index:
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise RuntimeError("killed")
    return callback


def logged(folder, name, drop=("images_per_s", "seconds")):
    """A CSV's rows without its timing columns (the only ones a resumed run changes)."""
    with (folder / name).open(newline="") as file:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(file)]


def board(folder):
    """Every TensorBoard scalar but the throughput, sorted: a step logged twice shows."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    return sorted((value.tag, event.step, make_ndarray(value.tensor).item())
                  for path in (folder / "tensorboard").glob("events.out.tfevents.*")
                  for event in EventFileLoader(str(path)).Load() for value in event.summary.value
                  if value.tag != "train/images_per_s")


@pytest.fixture(scope="module")
def uninterrupted(cifar_subset, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    trainer = make_trainer(cifar_subset, out, epochs=2, tensorboard=True)
    trainer.dynamics = DynamicsMonitor(every=3, log_dir=out, temperature=0.5)
    trainer.fit()
    trainer.logs.flush()
    trainer.dynamics.flush()
    return trainer, out


@pytest.mark.parametrize("how", ["sigterm", "kill"])
def test_a_run_interrupted_within_an_epoch_resumes_bit_for_bit(cifar_subset, tmp_path,
                                                              uninterrupted, how):
    """Interrupted at step 11 of 16 (epoch 2): by SIGTERM, which checkpoints at that step, or by
    a kill, after which the run resumes from the --checkpoint-every 3 checkpoint of step 9; the
    resumed run's losses, weights, kNN figures and logged rows equal the uninterrupted run's."""
    reference, reference_out = uninterrupted
    handler = signal.getsignal(signal.SIGTERM)
    trainer = make_trainer(cifar_subset, tmp_path, epochs=2, checkpoint_every=3, tensorboard=True)
    trainer.dynamics = DynamicsMonitor(every=3, log_dir=tmp_path, temperature=0.5)
    trainer.callbacks.append(stop_at(10, how))
    with pytest.raises(Interrupted if how == "sigterm" else RuntimeError) as stopped:
        trainer.fit()
    trainer.logs.flush()  # what reached the disk before the kill, past the checkpoint too
    trainer.dynamics.flush()
    assert signal.getsignal(signal.SIGTERM) is handler  # put back
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (state["epoch"], state["step_in_epoch"]) == ((1, 3) if how == "sigterm" else (1, 1))
    if how == "sigterm":
        assert stopped.value.exit_status == 143 and "step 3/8 of epoch 2" in str(stopped.value)

    resumed = make_trainer(cifar_subset, tmp_path, epochs=2, checkpoint_every=3, tensorboard=True)
    resumed.dynamics = DynamicsMonitor(every=3, log_dir=tmp_path, temperature=0.5, resume=True)
    resumed.resume()
    history = resumed.fit()
    resumed.logs.flush()
    resumed.dynamics.flush()
    assert history["step_loss"] == reference.history["step_loss"]  # bit for bit
    assert [e["knn_top1"] for e in history["epochs"]] == [
        e["knn_top1"] for e in reference.history["epochs"]]
    weights, expected = resumed.method.state_dict(), reference.method.state_dict()
    assert all(torch.equal(weights[key], expected[key]) for key in expected)
    for name in ("steps.csv", "epochs.csv", "dynamics.csv"):
        assert logged(tmp_path, name) == logged(reference_out, name), name
    assert board(tmp_path) == board(reference_out)  # TensorBoard too: no step twice, none lost


def make_simsiam(data, out_dir, multistage="official"):
    torch.manual_seed(0)
    train, queries = data
    backbone = resnet_cifar("resnet10", 8)
    method = SimSiamMethod(backbone, backbone.out_dim, len(train), proj_dim=64,
                           proj_hidden_dim=64, pred_hidden_dim=16, multistage=multistage,
                           num_stages=2, warmup_epochs=1)
    config = TrainConfig(epochs=3, batch_size=128, optimizer="sgd", lr=0.05, warmup=0.0, seed=0,
                         out_dir=str(out_dir), progress=False, tensorboard=False, knn_k=20)
    return Trainer(method, backbone, train, SimCLRAugment(), config, monitor=None)


def test_simsiam_multistage_resume_is_exact(cifar_subset, tmp_path):
    """The multi-stage memory is part of the checkpoint: a resumed run reads the same stored
    stages and reproduces the losses bit for bit."""
    full = make_simsiam(cifar_subset, tmp_path / "full")
    losses = full.fit()["step_loss"]
    assert int((full.method.memory.written >= 0).sum()) > 0
    make_simsiam(cifar_subset, tmp_path / "resumed").fit(until_epoch=2)
    resumed = make_simsiam(cifar_subset, tmp_path / "resumed")
    resumed.resume()
    assert resumed.fit()["step_loss"] == losses
    static = [g for g in resumed.optimizer.param_groups if g.get("static_lr")]
    assert len(static) == 1 and static[0]["lr"] == 0.05  # the predictor's lr is not scheduled


@pytest.mark.parametrize("batch_size,error", [(0, ValueError), (-4, ValueError),
                                              (2.5, TypeError)])
def test_non_positive_or_non_int_batch_size_is_named(cifar_subset, tmp_path, batch_size, error):
    train, queries = cifar_subset
    backbone = resnet_cifar("resnet10", 8)
    model = SimCLRModel(backbone, ProjectionHead(backbone.out_dim, out_dim=32))
    config = TrainConfig(epochs=1, batch_size=batch_size, out_dir=str(tmp_path), progress=False,
                         tensorboard=False)
    with pytest.raises(error, match="'batch_size' must be"):
        Trainer(SimCLRMethod(model), backbone, train, SimCLRAugment(), config)


@pytest.mark.parametrize(("precision", "match"), [("16", "'precision' must be one of"),
                                                  ("fp16", "CUDA autocast"),
                                                  ("bf16", "CUDA autocast")])
def test_precision_is_checked_and_16_bit_needs_cuda(cifar_subset, tmp_path, precision, match):
    train, _ = cifar_subset
    backbone = resnet_cifar("resnet10", 4)
    method = SimCLRMethod(SimCLRModel(backbone, ProjectionHead(backbone.out_dim, out_dim=8)))
    config = TrainConfig(epochs=1, batch_size=64, precision=precision, out_dir=str(tmp_path),
                         progress=False, tensorboard=False)
    with pytest.raises(ValueError, match=match):
        Trainer(method, backbone, train, SimCLRAugment(), config, device="cpu")


class LossOnly(torch.nn.Module):
    """The smallest custom method: it returns its loss alone (no nodes)."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def set_epoch(self, epoch):
        self.method.set_epoch(epoch)

    def forward(self, views, index):
        return self.method(views, index).loss


def test_a_method_may_return_its_loss_alone(cifar_subset, tmp_path):
    """A plain loss tensor trains exactly as the MethodOutput it came from."""
    reference = make_trainer(cifar_subset, tmp_path / "output", epochs=1, knn=False).fit()
    alone = make_trainer(cifar_subset, tmp_path / "alone", epochs=1, knn=False, wrap=LossOnly)
    assert alone.fit()["step_loss"] == reference["step_loss"]


def test_the_dynamics_monitor_needs_the_nodes_and_names_the_method(cifar_subset, tmp_path):
    trainer = make_trainer(cifar_subset, tmp_path, epochs=1, knn=False, wrap=LossOnly)
    trainer.dynamics = DynamicsMonitor(every=4, temperature=0.5)
    before = [p.detach().clone() for p in trainer.method.parameters()]
    with pytest.raises(ValueError, match=r"LossOnly\.forward returned none.*LossNodes"):
        trainer.fit()
    assert trainer.step == 0 and trainer.dynamics.history == []
    after = list(trainer.method.parameters())
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))  # no step taken


class Returns(torch.nn.Module):
    """A method whose output is ``shape(loss)``."""

    def __init__(self, method, shape):
        super().__init__()
        self.method, self.shape = method, shape

    def forward(self, views, index):
        return self.shape(self.method(views, index).loss)


@pytest.mark.parametrize(("shape", "error", "match"), [
    (lambda loss: (loss, None), TypeError, r"Returns\.forward must return a MethodOutput"),
    (lambda loss: {"loss": loss}, TypeError, "got dict"),
    (lambda loss: loss.detach().item(), TypeError, "got float"),
    (lambda loss: MethodOutput(loss.expand(2)), ValueError, r"scalar loss tensor, got shape \(2,\)"),
    (lambda loss: loss.expand(2), ValueError, r"Returns\.forward must return a scalar"),
])
def test_a_method_that_returns_something_else_is_named(cifar_subset, tmp_path, shape, error,
                                                       match):
    trainer = make_trainer(cifar_subset, tmp_path, epochs=1, width=4, knn=False,
                           wrap=lambda method: Returns(method, shape))
    with pytest.raises(error, match=match):
        trainer.fit()


class ViewShapes(torch.nn.Module):
    """A method that records the shapes of the views it is given."""

    def __init__(self, method):
        super().__init__()
        self.method, self.shapes = method, []

    def forward(self, views, index):
        self.shapes.append([tuple(view.shape) for view in views])
        return self.method(views, index)


SMALL = SMALL_CROP_DEFAULTS["small_crop_size"]


def with_small_crops(data, out_dir, **kwargs):
    """Two global views and two small crops of the image examples' default shape, one short
    epoch."""
    small_augment = SimCLRAugment(size=SMALL, scale=(SMALL_CROP_DEFAULTS["small_crop_min"],
                                                     SMALL_CROP_DEFAULTS["small_crop_max"]))
    return make_trainer(data, out_dir, epochs=1, width=4, knn=False, num_small_views=2,
                        small_augment=small_augment, **kwargs)


def test_small_crops_are_drawn_after_the_global_views_from_the_same_generator(cifar_subset,
                                                                             tmp_path):
    """The method gets the global views, then the small crops; the global views are the ones a
    run without small crops draws (the stream only continues past them), and with no small crops
    the stream is the one drawn before they existed: the same generator calls, nothing more."""
    small = with_small_crops(cifar_subset, tmp_path / "small", wrap=ViewShapes)
    plain = make_trainer(cifar_subset, tmp_path / "plain", epochs=1, width=4, knn=False)
    by_hand = torch.Generator()  # the generator as a fresh trainer seeds it
    by_hand.set_state(plain.augment_rng.get_state())
    images = small.images[:64]
    drawn, expected = small._views(images), plain._views(images)
    large, small_side = (64, 3, GLOBAL_CROP_SIZE, GLOBAL_CROP_SIZE), (64, 3, SMALL, SMALL)
    assert [tuple(v.shape) for v in drawn] == [large] * 2 + [small_side] * 2
    assert all(torch.equal(a, b) for a, b in zip(drawn[:2], expected, strict=True))
    augment = SimCLRAugment()
    again = [augment(images, by_hand) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(expected, again, strict=True))
    assert torch.equal(plain.augment_rng.get_state(), by_hand.get_state())

    small.callbacks.append(stop_at(0, "kill"))
    with pytest.raises(RuntimeError, match="killed"):
        small.fit()
    assert small.method.shapes == [[(128, *large[1:])] * 2 + [(128, *small_side[1:])] * 2]


def test_a_run_with_small_crops_resumes_bit_for_bit_within_an_epoch(cifar_subset, tmp_path):
    """Killed after step 5 of 8, the run resumes from its step-3 checkpoint and reproduces the
    uninterrupted run's losses and weights exactly (so both runs drew the same small crops)."""
    reference = with_small_crops(cifar_subset, tmp_path / "full")
    losses = reference.fit()["step_loss"]
    assert len(losses) == 8 and all(loss == loss for loss in losses)

    killed = with_small_crops(cifar_subset, tmp_path / "run", checkpoint_every=3)
    killed.callbacks.append(stop_at(4, "kill"))
    with pytest.raises(RuntimeError, match="killed"):
        killed.fit()
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step_in_epoch"] == 3
    resumed = with_small_crops(cifar_subset, tmp_path / "run", checkpoint_every=3)
    resumed.resume()
    assert resumed.fit()["step_loss"] == losses  # bit for bit
    weights, expected = resumed.method.state_dict(), reference.method.state_dict()
    assert all(torch.equal(weights[key], expected[key]) for key in expected)

    # The number of small crops is a setting of the run: a run without them is refused.
    with pytest.raises(SettingsMismatch) as error:
        make_trainer(cifar_subset, tmp_path / "run", epochs=1, width=4, knn=False).resume()
    assert error.value.differences == {"num_small_views": (2, MISSING)}


def test_a_run_without_small_crops_stores_no_small_crop_setting(cifar_subset, tmp_path):
    """Checkpoints from before small crops lack the setting: a run without them stores none, so
    it resumes those checkpoints."""
    assert "num_small_views" not in make_trainer(cifar_subset, tmp_path, epochs=1).run_settings
    assert with_small_crops(cifar_subset, tmp_path).run_settings["num_small_views"] == 2


@pytest.mark.parametrize(("small_views", "small_augment", "match"), [
    (2, None, "'small_augment'"),
    (0, SimCLRAugment(size=16), "'num_small_views'"),
    (-1, SimCLRAugment(size=16), "'num_small_views'"),
])
def test_small_crops_and_their_augmentation_come_together(cifar_subset, tmp_path, small_views,
                                                          small_augment, match):
    with pytest.raises(ValueError, match=match):
        make_trainer(cifar_subset, tmp_path, epochs=1, width=4, knn=False,
                     num_small_views=small_views, small_augment=small_augment)
