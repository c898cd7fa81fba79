"""The row loggers: CSV (header extension, declared columns, append, truncate), TensorBoard,
memory."""

import csv

import pytest

from mp_contrastive.loggers import CSVLogger, MemoryLogger, MetricLogger, TensorBoardLogger


class FakeWriter:
    def __init__(self):
        self.scalars, self.flushes, self.closed = [], 0, False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closed = True


def read(path):
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_csv_logger_append_keeps_previous_rows(tmp_path):
    path = tmp_path / "log.csv"
    CSVLogger(path).log(0, {"a": 1.0})
    logger = CSVLogger(path, append=True)
    logger.log(5, {"a": 2.0})
    with path.open(newline="") as f:
        assert [r["a"] for r in csv.DictReader(f)] == ["1.0", "2.0"]
    CSVLogger(path)  # append=False starts afresh
    assert path.read_text() == ""


def test_csv_logger_declared_columns_index_and_truncate(tmp_path):
    path = tmp_path / "sub" / "epochs.csv"
    logger = CSVLogger(path, index="epoch", columns=["loss", "knn_top1", "seconds"])
    logger.log(1, {"loss": 4.5, "seconds": 0.25})  # knn_top1 only at some epochs: left empty
    logger.log(2, {"loss": 4.0, "knn_top1": 61.5, "seconds": 0.5})
    logger.log(3, {"loss": 3.5, "seconds": 0.5, "extra": 1})  # a new column extends the header
    assert read(path) == [["epoch", "loss", "knn_top1", "seconds", "extra"],
                          ["1", "4.5", "", "0.25", ""], ["2", "4.0", "61.5", "0.5", ""],
                          ["3", "3.5", "", "0.5", "1"]]
    resumed = CSVLogger(path, append=True, index="epoch", columns=["loss"])
    resumed.truncate(2)
    resumed.log(2, {"loss": 3.9, "seconds": 0.5})
    assert read(path) == [["epoch", "loss", "knn_top1", "seconds", "extra"],
                          ["1", "4.5", "", "0.25", ""], ["2", "3.9", "", "0.5", ""]]
    CSVLogger(tmp_path / "empty.csv").truncate(5)  # nothing written yet: nothing to drop
    assert (tmp_path / "empty.csv").read_text() == ""


def test_tensorboard_logger_prefix_flush_and_close():
    writer = FakeWriter()
    logger = TensorBoardLogger(writer, prefix="train")
    logger.log(3, {"loss": 1.5, "lr": 0.1})
    assert writer.scalars == [("train/loss", 1.5, 3), ("train/lr", 0.1, 3)]
    logger.flush()
    logger.close()  # a borrowed writer is flushed, never closed
    assert writer.flushes == 2 and not writer.closed
    with pytest.raises(TypeError, match="target"):
        TensorBoardLogger(42)


def test_memory_logger_and_protocol(tmp_path):
    logger = MemoryLogger()
    logger.log(4, {"a": 1.0})
    assert logger.rows == [{"step": 4, "a": 1.0}]
    for candidate in (logger, CSVLogger(tmp_path / "x.csv"), TensorBoardLogger(FakeWriter())):
        assert isinstance(candidate, MetricLogger)
    with pytest.raises(TypeError, match="path"):
        CSVLogger(None)


def scalars(folder):
    """Every scalar in ``folder``'s event files as ``(tag, step, value)``, in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    return [(value.tag, event.step, make_ndarray(value.tensor).item())
            for path in sorted(folder.glob("events.out.tfevents.*"))
            for event in EventFileLoader(str(path)).Load() for value in event.summary.value]


def test_truncate_tensorboard_drops_what_a_resumed_run_redoes(tmp_path):
    from mp_contrastive.loggers import truncate_tensorboard

    logger = TensorBoardLogger(tmp_path, prefix="train")
    for step in range(6):
        logger.log(step, {"loss": float(step), "lr": 0.1})
    epochs = TensorBoardLogger(logger.writer, prefix="epoch")
    for epoch in (1, 2):
        epochs.log(epoch, {"loss": float(epoch)})
    logger.close()
    assert logger.log_dir == tmp_path and epochs.log_dir is None
    kept = scalars(tmp_path)
    dropped = truncate_tensorboard(tmp_path, lambda tag, step: (
        step <= 1 if tag.startswith("epoch/") else step < 4))
    assert dropped == 2 * 2 + 1
    assert scalars(tmp_path) == [row for row in kept if row[1] < (2 if row[0] == "epoch/loss"
                                                                  else 4)]
    assert truncate_tensorboard(tmp_path, lambda tag, step: True) == 0  # nothing left to drop
    assert truncate_tensorboard(tmp_path / "none", lambda tag, step: False) == 0
