"""The image trainer's logs, written through :mod:`mp_contrastive.loggers` on rank 0:
``steps.csv`` (step, epoch, loss, lr, images_per_s), ``epochs.csv`` (epoch, loss, knn_top1,
seconds), TensorBoard scalars ``train/*`` per step and ``epoch/*`` per epoch in
``tensorboard/``, and one console line per epoch."""

from __future__ import annotations

from pathlib import Path

from mp_contrastive.loggers import CSVLogger, TensorBoardLogger, truncate_tensorboard

__all__ = ["TrainingLogs"]

STEP_COLUMNS = ("epoch", "loss", "lr", "images_per_s")
EPOCH_COLUMNS = ("loss", "knn_top1", "seconds")


class TrainingLogs:
    """Rows of a training run in ``out_dir``. Files are opened on the first row (in append mode,
    so a resumed run continues them after :meth:`truncate`); every method is a no-op off rank 0.

    Args:
        out_dir (Path): the run's folder.
        rank (int): this process's rank; only rank 0 writes.
        tensorboard (bool): also write TensorBoard events (skipped, with :attr:`tensorboard` set
            to ``False``, when the ``tensorboard`` package is missing).
    """

    def __init__(self, out_dir: str | Path, rank: int = 0, tensorboard: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.rank = rank
        self.tensorboard = tensorboard
        self._csv: dict[str, CSVLogger] = {}
        self._board: dict[str, TensorBoardLogger] | None = None

    def _file(self, name: str) -> CSVLogger:
        if name not in self._csv:
            index, columns = (("step", STEP_COLUMNS) if name == "steps.csv"
                              else ("epoch", EPOCH_COLUMNS))
            self._csv[name] = CSVLogger(self.out_dir / name, append=True, index=index,
                                        columns=columns)
        return self._csv[name]

    def _boards(self) -> dict[str, TensorBoardLogger] | None:
        if self._board is None and self.tensorboard:
            try:
                train = TensorBoardLogger(self.out_dir / "tensorboard", prefix="train")
            except ImportError:
                self.tensorboard = False
                return None
            self._board = {"train": train, "epoch": TensorBoardLogger(train.writer, prefix="epoch")}
        return self._board

    def step(self, step: int, epoch: int, loss: float, lr: float, speed: float) -> None:
        """One optimiser step: its loss, learning rate and throughput (images per second)."""
        if self.rank != 0:
            return
        self._file("steps.csv").log(step, {"epoch": epoch, "loss": loss, "lr": lr,
                                           "images_per_s": speed})
        boards = self._boards()
        if boards is not None:
            boards["train"].log(step, {"loss": loss, "lr": lr, "images_per_s": speed})

    def epoch(self, record: dict[str, float], epochs: int) -> None:
        """One epoch's ``record`` (``epoch``, ``loss``, ``seconds``, optional ``knn_top1``)."""
        if self.rank != 0:
            return
        epoch = int(record["epoch"])
        row = {k: record[k] for k in EPOCH_COLUMNS if k in record}
        self._file("epochs.csv").log(epoch, row)
        knn = f", kNN top-1 {record['knn_top1']:.2f}%" if "knn_top1" in record else ""
        print(f"epoch {epoch}/{epochs}: loss {record['loss']:.4f}{knn} "
              f"({record['seconds']:.1f} s)", flush=True)
        boards = self._boards()
        if boards is not None:
            boards["epoch"].log(epoch, {k: record[k] for k in ("loss", "knn_top1") if k in record})
            boards["epoch"].flush()

    def flush(self) -> None:
        """Write the pending TensorBoard events to disk (the CSV rows are written at once); the
        trainer calls it before each checkpoint, so that a kill loses no row the checkpoint
        holds."""
        if self._board is not None:
            self._board["train"].flush()

    def truncate(self, steps: int, epochs: int) -> None:
        """Keep the rows (CSV and TensorBoard) of the first ``steps`` steps and ``epochs`` epochs,
        those a checkpoint holds: a resumed run redoes what came after it (from an epoch's end or
        from within an epoch) and must not log it twice."""
        if self.rank != 0:
            return
        for name, below in (("steps.csv", steps), ("epochs.csv", epochs + 1)):
            if (self.out_dir / name).is_file():
                self._file(name).truncate(below)
        # TensorBoard's epoch scalars are indexed by epoch, the others (train/*, and the dynamics
        # monitor's in the same folder) by step.
        truncate_tensorboard(self.out_dir / "tensorboard", lambda tag, step: (
            step <= epochs if tag.startswith("epoch/") else step < steps))
