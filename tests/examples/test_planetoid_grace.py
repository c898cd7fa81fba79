"""The GRACE example in mini-batches, in one process and under torchrun (two gloo ranks)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "planetoid_grace.py"
ARGS = ["--datasets", "SBM-2000", "--variants", "vanilla", "--num-seeds", "1", "--batch-size",
        "250", "--epochs", "2", "--threads", "1", "--no-progress"]


def run(command, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_torchrun_two_ranks_train_and_rank_zero_writes(tmp_path):
    out = tmp_path / "ddp"
    done = run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                str(EXAMPLE), *ARGS, "--out", str(out)], tmp_path)
    stored = json.loads((out / "results.json").read_text())
    assert stored["settings"]["processes"] == 2
    result = stored["runs"]["SBM-2000/vanilla/0"]
    assert result["path"] == "dense" and 20.0 < result["test_acc"] <= 100.0
    assert done.stdout.count("| SBM-2000 | vanilla |") == 1  # one table: rank 0's


def test_full_batch_under_torchrun_is_refused(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    args = [a for a in ARGS if a not in ("--batch-size", "250")]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           str(EXAMPLE), *args, "--out", str(tmp_path / "o")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "--batch-size" in done.stderr
