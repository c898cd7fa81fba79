"""The flagship script runs end to end on real CIFAR-10 (tiny settings) and resumes."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "cifar_simclr_gat.py"
TINY = ["--preset", "cpu", "--arch", "resnet10", "--width", "4", "--epochs", "2",
        "--train-subset", "256", "--batch-size", "64", "--monitor-queries", "100",
        "--probe-epochs", "2", "--no-progress"]


def run(*args: str, env_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env={"MP_CONTRASTIVE_DATA": str(env_root), "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": str(ROOT)},  # this checkout's package
                          timeout=300)


def test_flagship_runs_and_resumes(data_root, tmp_path):
    out = tmp_path / "run"
    done = run(*TINY, "--attention", "paper", "--out", str(out), env_root=data_root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "epoch 2/2" in done.stdout and "linear probe top-1" in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["attention"] == "paper"
    assert len(results["knn_top1_per_epoch"]) == 2 and results["knn_top1_initial"] is not None
    assert (out / "checkpoint.pt").is_file() and (out / "steps.csv").is_file()
    dynamics = (out / "dynamics.csv").read_text()
    assert dynamics.count("\n") >= 2  # a header and at least one measured step
    again = run(*TINY, "--attention", "paper", "--out", str(out), "--resume", env_root=data_root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "epoch 1/2" not in again.stdout  # nothing left to train: straight to evaluation
    assert (out / "dynamics.csv").read_text() == dynamics  # the resumed run keeps its rows
    assert not list(out.glob("events.out.tfevents*"))  # one TensorBoard folder: tensorboard/


def test_wrong_data_root_is_a_clear_error(tmp_path):
    done = run(*TINY, "--data-root", str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
               env_root=tmp_path)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("cifar_simclr_gat.py: error: argument --data-root: folder")
    assert "does not exist" in last and "--download" in last
    assert not (tmp_path / "o").exists()
    assert "Traceback" not in done.stderr


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
