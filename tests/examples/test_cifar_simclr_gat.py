"""The flagship script runs end to end on real CIFAR-10 (tiny settings) and resumes: exactly,
after a SIGTERM or a kill within an epoch; never with changed settings or a damaged checkpoint."""

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "cifar_simclr_gat.py"
TINY = ["--preset", "cpu", "--arch", "resnet10", "--width", "4", "--epochs", "2",
        "--train-subset", "256", "--batch-size", "64", "--monitor-queries", "100",
        "--probe-epochs", "2", "--no-progress"]


def environment(data_root: Path) -> dict[str, str]:
    return {"MP_CONTRASTIVE_DATA": str(data_root), "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),  # this checkout's package
            "OMP_NUM_THREADS": "1"}  # the same float sums in every process


def run(*args: str, env_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=environment(env_root), timeout=300)


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*")
            if path.is_file()}


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_flagship_runs_and_resumes(data_root, tmp_path):
    out = tmp_path / "run"
    # one epoch of plain SimCLR, then the paper's attention (appendix C.2's warm-up)
    done = run(*TINY, "--attention", "paper", "--attention-warmup", "1", "--out", str(out),
               env_root=data_root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "epoch 2/2" in done.stdout and "linear probe top-1" in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["attention"] == "paper"
    assert results["settings"]["attention_warmup"] == 1
    assert len(results["knn_top1_per_epoch"]) == 2 and results["knn_top1_initial"] is not None
    assert (out / "checkpoint.pt").is_file() and (out / "steps.csv").is_file()
    dynamics = (out / "dynamics.csv").read_text()
    assert dynamics.count("\n") >= 2  # a header and at least one measured step
    again = run(*TINY, "--attention", "paper", "--attention-warmup", "1", "--out", str(out),
                "--resume", env_root=data_root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "epoch 1/2" not in again.stdout  # nothing left to train: straight to evaluation
    assert (out / "dynamics.csv").read_text() == dynamics  # the resumed run keeps its rows
    assert not list(out.glob("events.out.tfevents*"))  # one TensorBoard folder: tensorboard/

    # Every setting that changes the run is refused, each listed; the folder is left as it was.
    before = files(out)
    changed = {"--temperature": "0.5", "--attention": "official", "--beta": "2",
               "--train-subset": "128", "--jitter-strength": "0.4", "--crop-min": "0.2",
               "--lr": "0.01", "--seed": "1", "--epochs": "3", "--memory-bank": "64"}
    args = [*TINY, "--attention", "paper", "--attention-warmup", "1", "--out", str(out),
            "--resume"]
    refused = one_line_error(run(*TINY, "--out", str(out), "--resume",
                                 *(x for item in changed.items() for x in item),
                                 env_root=data_root))
    listed = refused.split("other settings (")[1].split("); resume")[0].split("; ")
    # Another attention mode also changes the resolved warm-up (the paper mode's alone).
    expected = sorted([*changed, "--attention-warmup"])
    assert sorted(item.split(":")[0] for item in listed) == expected, refused
    assert "--temperature: stored 0.2, now 0.5" in refused
    assert files(out) == before
    # Allowed to change: where the run is shown and what only runs after training.
    allowed = run(*args, "--probe-epochs", "1", "--dynamics-every", "7", "--checkpoint-every",
                  "3", env_root=data_root)
    assert allowed.returncode == 0, allowed.stderr[-2000:]

    # A damaged checkpoint: one line naming it, nothing written.
    checkpoint = out / "checkpoint.pt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    before = files(out)
    damaged = one_line_error(run(*args, env_root=data_root))
    assert str(checkpoint) in damaged and "does not match its checksum" in damaged
    assert files(out) == before


def test_a_failed_resume_creates_nothing(data_root, tmp_path):
    out = tmp_path / "never"
    error = one_line_error(run(*TINY, "--out", str(out), "--resume", env_root=data_root))
    assert "no checkpoint at" in error and not out.exists()


def test_wrong_data_root_is_a_clear_error(tmp_path):
    done = run(*TINY, "--data-root", str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
               env_root=tmp_path)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("cifar_simclr_gat.py: error: argument --data-root: folder")
    assert "does not exist" in last and "--download" in last
    assert not (tmp_path / "o").exists()
    assert "Traceback" not in done.stderr


def test_simsiam_paper_preset_runs_at_tiny_size_with_the_official_probe(data_root, tmp_path):
    """The paper preset's own settings (stem, zero-init, normalisation, official probe) run end to
    end; on the CPU its fp16 falls back to float32, saying so."""
    script = SCRIPT.parent / "cifar_simsiam_multistage.py"
    out = tmp_path / "paper"
    tiny = ["--arch", "resnet10", "--width", "4", "--epochs", "2", "--train-subset", "256",
            "--batch-size", "64", "--monitor-queries", "100", "--probe-epochs", "1",
            "--no-progress", "--proj-dim", "32", "--pred-dim", "8", "--multistage-warmup", "1"]
    done = subprocess.run(
        [sys.executable, str(script), "--preset", "paper", *tiny, "--out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={"MP_CONTRASTIVE_DATA": str(data_root), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "so this run trains in float32" in done.stdout
    results = json.loads((out / "results.json").read_text())
    settings = results["settings"]
    assert (settings["probe"], settings["precision"], settings["stem_padding"],
            settings["zero_init_residual"], settings["normalize"]) == ("official", "32", 2, True, True)
    assert set(results["linear_probe"]) == {"train_top1", "test_top1"}
    assert 0.0 <= results["linear_probe"]["test_top1"] <= 100.0


def test_simsiam_multistage_example_runs(data_root, tmp_path):
    script = SCRIPT.parent / "cifar_simsiam_multistage.py"
    out = tmp_path / "simsiam"
    done = subprocess.run(
        [sys.executable, str(script), *TINY, "--multistage", "paper", "--stages", "2",
         "--multistage-warmup", "1", "--proj-dim", "32", "--pred-dim", "8", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={"MP_CONTRASTIVE_DATA": str(data_root), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["multistage"] == "paper" and results["settings"]["stages"] == 2


def test_flagship_with_a_knn_memory_bank_runs_and_resumes(data_root, tmp_path):
    out = tmp_path / "bank"
    bank = ["--attention", "off", "--memory-bank", "128", "--affinity", "knn", "--key-momentum",
            "0.9", "--out", str(out)]
    done = run(*TINY, *bank, env_root=data_root)
    assert done.returncode == 0, done.stderr[-2000:]
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert (settings["memory_bank"], settings["affinity"], settings["key_momentum"]) == (128, "knn",
                                                                                           0.9)
    state = __import__("torch").load(out / "checkpoint.pt", weights_only=True)["method"]
    assert int(state["loss.memory.bank.count"]) == 128  # the bank is in the checkpoint
    assert state["loss.memory.index.centroids"].numel() > 0  # and the kNN index's cells
    assert any(key.startswith("key_model.") for key in state)


# 32 steps per epoch, a checkpoint every 5 steps: a signal sent 4 steps into the second epoch
# lands within it, a second or more before its end.
FAULT = ["--preset", "cpu", "--arch", "resnet10", "--width", "4", "--epochs", "3",
         "--train-subset", "512", "--batch-size", "16", "--monitor-queries", "100",
         "--probe-epochs", "2", "--no-progress", "--checkpoint-every", "5", "--dynamics-every", "4",
         "--attention", "paper"]


def logged(folder: Path, name: str) -> list[dict[str, str]]:
    """A CSV's rows without its timing columns (the only ones a resumed run changes)."""
    with (folder / name).open(newline="") as file:
        return [{k: v for k, v in row.items() if k not in ("images_per_s", "seconds")}
                for row in csv.DictReader(file)]


def wait_for_rows(path: Path, rows: int, process: subprocess.Popen) -> None:
    """Until ``path`` has ``rows`` lines (the run logs a row per step as it goes)."""
    deadline = time.monotonic() + 240
    while not (path.is_file() and path.read_text().count("\n") >= rows):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended first"
        time.sleep(0.02)


def board(folder: Path) -> list[tuple[str, int, float]]:
    """Every TensorBoard scalar of a run but its throughput, sorted: a step logged twice shows."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    return sorted((value.tag, event.step, make_ndarray(value.tensor).item())
                  for path in (folder / "tensorboard").glob("events.out.tfevents.*")
                  for event in EventFileLoader(str(path)).Load() for value in event.summary.value
                  if value.tag != "train/images_per_s")


FIGURES = ("knn_top1_initial", "knn_top1_per_epoch", "loss_per_epoch", "linear_probe", "settings")


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    done = run(*FAULT, "--out", str(out), env_root=data_root)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_stopped_within_an_epoch_and_resumed_equals_an_uninterrupted_run(data_root, tmp_path,
                                                                        uninterrupted, signum):
    """SIGTERM: the run checkpoints at its step and exits 143 with one line. SIGKILL: nothing is
    saved, the run resumes from its last --checkpoint-every checkpoint. Either way the resumed
    run's logged rows (CSV and TensorBoard) and final figures are those of the uninterrupted
    run."""
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(SCRIPT), *FAULT, "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment(data_root))
    try:
        wait_for_rows(out / "steps.csv", 1 + 36, process)  # 4 steps into the second epoch
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=300)
    finally:  # a failed wait leaves no run behind
        if process.poll() is None:
            process.kill()
            process.communicate()
    if signum == signal.SIGTERM:
        assert process.returncode == 143 and "Traceback" not in stderr, stderr[-2000:]
        # One line that names the signal, the checkpoint it wrote and the flag that resumes (what
        # a user acts on); its sentence is free to change.
        last = stderr.strip().splitlines()
        assert len(last) == 1 and "SIGTERM" in last[0] and "--resume" in last[0], last
        written = re.findall(r"'([^']+\.pt)'", last[0])
        assert len(written) == 1 and Path(written[0]).is_file(), last[0]
    else:
        assert process.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists()  # stopped before the end

    resumed = run(*FAULT, "--out", str(out), "--resume", env_root=data_root)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "epoch 1/3" not in resumed.stdout and "epoch 3/3" in resumed.stdout
    results = json.loads((out / "results.json").read_text())
    expected = json.loads((uninterrupted / "results.json").read_text())
    assert {k: results[k] for k in FIGURES} == {k: expected[k] for k in FIGURES}
    for name in ("steps.csv", "epochs.csv", "dynamics.csv"):
        assert logged(out, name) == logged(uninterrupted, name), name
    assert board(out) == board(uninterrupted)
