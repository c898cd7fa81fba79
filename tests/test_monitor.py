"""The training monitor: period, values, loggers, subsampling, robustness."""

import csv
import math
import sys

import pytest
import torch

from mp_contrastive import dynamics
from mp_contrastive.graph import augmentation_graph
from mp_contrastive.loggers import CSVLogger, MemoryLogger, MetricLogger, TensorBoardLogger
from mp_contrastive.losses import SimCLRLoss
from mp_contrastive.monitor import DynamicsMonitor, measure_dynamics, metric_columns


class FakeWriter:
    """Stands in for a SummaryWriter: records add_scalar calls."""

    def __init__(self):
        self.scalars = []
        self.flushed = False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushed = True


def batch(gen, num_samples=16, views=2, dim=8, num_classes=4):
    z = torch.randn(num_samples * views, dim, generator=gen)
    sample = torch.arange(num_samples).repeat(views)
    labels = (sample % num_classes)
    return z, sample, labels


def test_logs_only_every_n_steps_and_returns_none_otherwise(gen):
    z, sample, labels = batch(gen)
    memory = MemoryLogger()
    monitor = DynamicsMonitor(every=3, loggers=memory)
    returned = [monitor(step, z, sample=sample, labels=labels) for step in range(10)]
    assert [r is not None for r in returned] == [s % 3 == 0 for s in range(10)]
    assert [row["step"] for row in memory.rows] == [0, 3, 6, 9]
    assert [row["step"] for row in monitor.history] == [0, 3, 6, 9]
    assert monitor.should_log(6) and not monitor.should_log(7)


def test_image_batch_values_equal_the_dynamics_functions(gen):
    z, sample, labels = batch(gen)
    tau = 0.5
    row = DynamicsMonitor(every=1, temperature=tau)(0, z, sample=sample, labels=labels)
    g = augmentation_graph(sample=sample)
    unit = torch.nn.functional.normalize(z, dim=1)
    gap = dynamics.equilibrium_gap(unit / math.sqrt(tau), g.edge_index, g.edge_weight)
    dist = dynamics.class_distances(unit, labels)
    expected = {
        "alignment": dynamics.alignment_metric(z, sample=sample),
        "uniformity": dynamics.uniformity_metric(z),
        "effective_rank": dynamics.effective_rank(z),
        "equilibrium_tv": gap.total_variation,
        "equilibrium_kl": gap.kl,
        "intra_class_distance": dist.intra,
        "inter_class_distance": dist.inter,
        "class_distance_ratio": dist.ratio,
    }
    for key, value in expected.items():
        assert row[key] == pytest.approx(float(value), rel=1e-6), key
    # With two views the KL gap is exactly the NT-Xent loss (Abar rows are one-hot).
    loss = SimCLRLoss(temperature=tau)(z, sample)
    assert row["equilibrium_kl"] == pytest.approx(loss.item(), rel=1e-5)
    assert "class_subspace_distance" in row and "class_lambda2_mean" not in row


def test_graph_trainer_with_edge_index_and_opt_in_connectivity(gen):
    # Two classes, each a cycle of 6 nodes, plus one cross-class edge.
    ring = torch.arange(6)
    edges = torch.stack([ring, (ring + 1) % 6])
    edge_index = torch.cat([edges, edges + 6, torch.tensor([[0], [6]])], 1)
    edge_index = torch.cat([edge_index, edge_index.flip(0)], 1)
    labels = torch.tensor([0] * 6 + [1] * 6)
    z = torch.randn(12, 4, generator=gen)
    monitor = DynamicsMonitor(every=1, metrics=["alignment", "class_subspace_distance",
                                                "class_connectivity"])
    row = monitor(0, z, edge_index=edge_index, labels=labels)
    assert set(row) == {"alignment", "class_subspace_distance", "class_lambda2_mean",
                        "class_lambda2_min"}
    assert row["class_lambda2_min"] == pytest.approx(1 - math.cos(2 * math.pi / 6))
    unit = torch.nn.functional.normalize(z, dim=1)
    dist = dynamics.class_subspace_distance(unit, edge_index, labels)
    assert row["class_subspace_distance"] == pytest.approx(float((dist / math.sqrt(6)).mean()),
                                                           rel=1e-6)
    assert row["alignment"] == pytest.approx(float(dynamics.alignment_metric(z, edge_index)))


def test_auto_metrics_follow_the_inputs(gen):
    z, sample, labels = batch(gen)
    monitor = DynamicsMonitor(every=1)
    assert set(monitor(0, z)) == {"uniformity", "effective_rank"}
    assert "alignment" in monitor(0, z, sample=sample)
    assert "class_distance_ratio" in monitor(0, z, labels=labels)
    # A batch of a single class has no inter-class pair: nan, not an exception mid-training.
    row = monitor(0, z, labels=torch.zeros_like(labels))
    assert math.isnan(row["class_distance_ratio"])


def test_csv_logger_writes_rows_and_extends_its_header(tmp_path, gen):
    z, sample, labels = batch(gen)
    with DynamicsMonitor(every=2, log_dir=tmp_path / "run") as monitor:
        for step in range(6):
            # labels known only from step 4 on: the class columns appear late
            monitor(step, z, sample=sample, labels=labels if step >= 4 else None)
    with (tmp_path / "run" / "dynamics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 2, 4]
    assert rows[0]["class_distance_ratio"] == "" and rows[2]["class_distance_ratio"] != ""
    assert float(rows[2]["alignment"]) == pytest.approx(monitor.history[2]["alignment"])
    assert list(rows[0])[0] == "step"


def test_tensorboard_logger_with_a_writer_and_without_tensorboard(tmp_path, monkeypatch, gen):
    z, sample, _ = batch(gen)
    writer = FakeWriter()
    monitor = DynamicsMonitor(every=1, loggers=[TensorBoardLogger(writer, prefix="dyn")])
    monitor(7, z, sample=sample)
    monitor.close()
    tags = {tag for tag, _, step in writer.scalars if step == 7}
    assert {"dyn/alignment", "dyn/uniformity", "dyn/equilibrium_tv"} <= tags
    assert writer.flushed  # a borrowed writer is flushed, not closed
    assert isinstance(CSVLogger(tmp_path / "x.csv"), MetricLogger)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ImportError, match="tensorboard"):
        TensorBoardLogger(tmp_path)
    with pytest.raises(TypeError, match="target"):
        TensorBoardLogger(42)


def test_large_batches_are_subsampled_reproducibly(gen):
    z, sample, labels = batch(gen, num_samples=300, views=2, dim=16)
    full = DynamicsMonitor(every=1, temperature=0.5)(0, z, sample=sample, labels=labels)
    rows = [DynamicsMonitor(every=1, temperature=0.5, max_nodes=200, seed=3)(
        0, z, sample=sample, labels=labels) for _ in range(2)]
    assert rows[0] == rows[1]  # fixed seed: the same subset
    # Linear metrics use every node; the subsampled ones estimate the full values.
    for key in ("alignment", "class_distance_ratio"):
        assert rows[0][key] == pytest.approx(full[key], rel=1e-6)
    for key in ("uniformity", "equilibrium_kl", "equilibrium_tv"):
        assert rows[0][key] == pytest.approx(full[key], rel=0.05)
    assert rows[0]["uniformity"] != full["uniformity"]


def test_non_finite_features_log_nan_and_warn_once(gen):
    z, sample, labels = batch(gen)
    z[3, 0] = math.nan
    monitor = DynamicsMonitor(every=1)
    with pytest.warns(UserWarning, match="non-finite"):
        row = monitor(0, z, sample=sample, labels=labels)
    assert row and all(math.isnan(v) for v in row.values())
    assert "class_distance_ratio" in row and "equilibrium_kl" in row


def test_monitor_does_not_touch_gradients(gen):
    z, sample, _ = batch(gen)
    z.requires_grad_()
    DynamicsMonitor(every=1)(0, z, sample=sample)
    assert z.grad is None and z.grad_fn is None


def test_bad_arguments_name_themselves(gen, tmp_path):
    z, sample, labels = batch(gen)
    for kwargs, error, match in [
        ({"every": 0}, ValueError, "every"),
        ({"every": 2.5}, TypeError, "every"),
        ({"metrics": "all"}, ValueError, "metrics"),
        ({"metrics": ["alignment", "loss"]}, ValueError, "metrics"),
        ({"temperature": -1.0}, ValueError, "temperature"),
        ({"max_nodes": 1}, ValueError, "max_nodes"),
        ({"loggers": [object()]}, TypeError, "loggers"),
        ({"log_dir": 3}, TypeError, "log_dir"),
    ]:
        with pytest.raises(error, match=match):
            DynamicsMonitor(**kwargs)
    monitor = DynamicsMonitor(every=1, metrics=["alignment", "class_distances"])
    with pytest.raises(ValueError, match="'sample' or 'edge_index'"):
        monitor(0, z, labels=labels)
    with pytest.raises(ValueError, match="labels"):
        monitor(0, z, sample=sample)
    with pytest.raises(ValueError, match="sample"):
        monitor(0, z, sample=sample[:5], labels=labels)
    with pytest.raises(TypeError, match="not both"):
        monitor(0, z, sample=sample, edge_index=torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="features"):
        monitor(0, z.numpy(), sample=sample)
    with pytest.raises(TypeError, match="step"):
        monitor(1.0, z, sample=sample)
    with pytest.raises(TypeError, match="path"):
        CSVLogger(None)


def test_two_line_attach_in_a_training_loop(tmp_path, gen):
    """A tiny SimCLR run: the monitor rides along and sees contrastive learning shrink the KL gap
    to the equilibrium (it is the loss itself for two views) and spread the features."""
    num_samples, dim = 32, 6
    centers = torch.randn(4, dim, generator=gen) * 3
    data = centers[torch.arange(num_samples) % 4] + torch.randn(num_samples, dim, generator=gen)
    encoder = torch.nn.Sequential(torch.nn.Linear(dim, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.3)
    loss_fn = SimCLRLoss(temperature=0.5)
    monitor = DynamicsMonitor(every=10, log_dir=tmp_path, temperature=0.5)
    sample = torch.arange(num_samples).repeat(2)
    for step in range(41):
        views = [data + 0.3 * torch.randn(data.shape, generator=gen) for _ in range(2)]
        z = encoder(torch.cat(views))
        loss = loss_fn(z, sample)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        monitor(step, z, sample=sample, labels=sample % 4)
    first, last = monitor.history[0], monitor.history[-1]
    assert len(monitor.history) == 5
    assert last["equilibrium_kl"] < first["equilibrium_kl"] - 0.3
    assert last["uniformity"] < first["uniformity"] - 0.5  # uniformity spreads the features
    assert last["effective_rank"] > first["effective_rank"]
    assert (tmp_path / "dynamics.csv").read_text().count("\n") == 6


def test_measure_dynamics_is_the_monitor_row(gen):
    z, sample, labels = batch(gen, num_samples=40)
    kwargs = {"sample": sample, "labels": labels}
    row = DynamicsMonitor(every=1, temperature=0.5, max_nodes=30, seed=2)(0, z, **kwargs)
    again = measure_dynamics(z, **kwargs, temperature=0.5, max_nodes=30,
                             generator=torch.Generator().manual_seed(2))
    assert again == row
    assert list(row) == metric_columns(["alignment", "uniformity", "effective_rank",
                                        "equilibrium_gap", "class_distances",
                                        "class_subspace_distance"])
    full = measure_dynamics(z, **kwargs, temperature=0.5)  # no subsample: every row
    assert full["uniformity"] == pytest.approx(float(dynamics.uniformity_metric(z)), rel=1e-6)
    assert full["uniformity"] != row["uniformity"]
    chosen = measure_dynamics(z, edge_index=augmentation_graph(40, 2).edge_index,
                              metrics=["alignment", "effective_rank"])
    assert list(chosen) == ["alignment", "effective_rank"]
    assert chosen["alignment"] == pytest.approx(row["alignment"], rel=1e-6)


def test_measure_dynamics_nan_row_and_bad_input(gen):
    z, sample, labels = batch(gen)
    z[0, 0] = math.inf
    row = measure_dynamics(z, sample=sample, metrics=["equilibrium_gap"])
    assert list(row) == ["equilibrium_tv", "equilibrium_kl"]
    assert all(math.isnan(v) for v in row.values())
    for kwargs, error, match in [
        ({"metrics": "all"}, ValueError, "metrics"),
        ({"metrics": ["class_distances"]}, ValueError, "labels"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"max_nodes": 1}, ValueError, "max_nodes"),
        ({"max_nodes": 2.0}, TypeError, "max_nodes"),
        ({"labels": labels[:3]}, ValueError, "labels"),
    ]:
        with pytest.raises(error, match=match):
            measure_dynamics(z, **kwargs)
