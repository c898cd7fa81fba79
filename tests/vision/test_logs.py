"""The trainer's logs: the same CSV files as before the monitor's loggers wrote them, a resume
that drops the redone rows, TensorBoard tags, and rank 0 only."""

import csv
import sys

import pytest

from mp_contrastive.vision.logs import TrainingLogs


def read(path):
    with path.open(newline="") as f:
        return list(csv.reader(f))


def run(logs, epochs, steps_per_epoch=2, start=0):
    for epoch in range(start, epochs):
        for it in range(steps_per_epoch):
            step = epoch * steps_per_epoch + it
            logs.step(step, epoch, 1.0 / (step + 1), 0.5, 100.0)
        record = {"epoch": epoch + 1, "loss": 0.5, "seconds": 0.25}
        if epoch % 2:
            record["knn_top1"] = 40.0
        logs.epoch(record, epochs)


def test_csv_files_and_resume(tmp_path, capsys):
    logs = TrainingLogs(tmp_path, tensorboard=False)
    run(logs, 3)
    assert "epoch 2/3: loss 0.5000, kNN top-1 40.00% (0.2 s)" in capsys.readouterr().out
    steps, epochs = read(tmp_path / "steps.csv"), read(tmp_path / "epochs.csv")
    assert steps[0] == ["step", "epoch", "loss", "lr", "images_per_s"] and len(steps) == 7
    assert steps[3] == ["2", "1", str(1 / 3), "0.5", "100.0"]
    assert epochs == [["epoch", "loss", "knn_top1", "seconds"], ["1", "0.5", "", "0.25"],
                      ["2", "0.5", "40.0", "0.25"], ["3", "0.5", "", "0.25"]]
    # Interrupted during epoch 3 with the checkpoint of epoch 1: a new process resumes.
    resumed = TrainingLogs(tmp_path, tensorboard=False)
    resumed.truncate(steps=2, epochs=1)
    assert len(read(tmp_path / "steps.csv")) == 3 and len(read(tmp_path / "epochs.csv")) == 2
    run(resumed, 3, start=1)
    assert read(tmp_path / "steps.csv") == steps and read(tmp_path / "epochs.csv") == epochs


def test_other_ranks_write_nothing_and_missing_tensorboard_is_skipped(tmp_path, monkeypatch):
    run(TrainingLogs(tmp_path / "rank1", rank=1), 2)
    assert not (tmp_path / "rank1").exists()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    logs = TrainingLogs(tmp_path / "run", tensorboard=True)
    run(logs, 1)
    assert logs.tensorboard is False and (tmp_path / "run" / "steps.csv").is_file()
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_tensorboard_scalars(tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    logs = TrainingLogs(tmp_path)
    run(logs, 2)
    events = accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    counts = {tag: len(events.Scalars(tag)) for tag in events.Tags()["scalars"]}
    assert counts == {"train/loss": 4, "train/lr": 4, "train/images_per_s": 4, "epoch/loss": 2,
                      "epoch/knn_top1": 1}
