"""examples/oversmoothing.py end to end on the real Cora, in both readings of depth (tiny runs)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "oversmoothing.py"


def run(data_root, out, *args):
    command = [sys.executable, str(EXAMPLE), "--datasets", "Cora", "--data-root", str(data_root),
               "--out", str(out), "--threads", "1", "--no-progress", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("mode", ["propagation", "trained"])
def test_writes_table_and_plot(data_root, tmp_path, mode):
    args = ["--mode", mode, "--depths", "1", "2", "--schemes", "alignment", "contrastive",
            "--num-seeds", "2", "--epochs", "2"]
    printed = run(data_root, tmp_path, *args)
    table = (tmp_path / "table.md").read_text()
    assert (tmp_path / "accuracy_vs_depth.png").stat().st_size > 0
    assert table in printed
    lines = table.splitlines()
    assert lines[0] == f"| dataset | {'layers' if mode == 'trained' else 'propagation'} | 1 | 2 |"
    assert len(lines) == 4  # header, rule, one row per scheme
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    # trained mode: every seed is a run; propagation mode: one (deterministic) run per scheme
    assert len(runs) == (4 if mode == "trained" else 2)
    if mode == "trained":
        assert "±" in lines[2]
