"""benchmarks.headlines: the table is computed from the runs' results.json, runs are made only when
missing (resumed when a checkpoint exists), and a failed run stops with one line naming it."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from benchmarks import headlines


def fake_results(folder: Path, initial: float, final: float, probe: float) -> None:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "knn_top1_initial": initial, "knn_top1_final": final,
        "linear_probe": {"test_top1": probe}, "wall_seconds": 100.0}))


def test_table_from_existing_runs_and_docs_update(tmp_path, monkeypatch):
    finals = {"simsiam_cpu_off": [30.0, 31.0, 35.0], "simsiam_cpu_official": [29.0, 33.0, 34.0]}
    fake_results(tmp_path / "simclr_gat_cpu_0", 29.4, 43.15, 47.6)
    for folder, values in finals.items():
        for seed, final in enumerate(values):
            fake_results(tmp_path / f"{folder}_{seed}", 24.75, final, final + 5)
    monkeypatch.setattr(headlines.subprocess, "run", lambda *a, **k: pytest.fail("ran an example"))
    docs = tmp_path / "results.md"
    docs.write_text("before\n<!-- results-headlines -->\nold\n<!-- /results-headlines -->\nafter\n")

    report = headlines.main(["--out", str(tmp_path), "--update-docs", str(docs)])

    rows = [line for line in report.splitlines() if line.startswith("| SimSiam")]
    for row, values in zip(rows, finals.values(), strict=True):
        mean, std = statistics.mean(values), statistics.pstdev(values)
        assert f"{mean:.2f} ± {std:.2f}" in row  # trained kNN
        assert f"{mean - 24.75:.2f} ± {std:.2f}" in row  # gain over the random encoder
        assert f"{mean + 5:.2f} ± {std:.2f}" in row  # probe
    assert "43.15" in report and "47.60" in report
    text = docs.read_text()
    assert "old" not in text and report.strip() in text and text.endswith("after\n")


def test_missing_runs_are_made_and_resumed(tmp_path, monkeypatch):
    commands = []

    def run(cmd, cwd, env):
        assert env["OMP_NUM_THREADS"] == "1"
        commands.append(cmd)
        folder = Path(cmd[cmd.index("--out") + 1])
        (folder / "results.json").parent.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps({
            "knn_top1_initial": 20.0, "knn_top1_final": 30.0,
            "linear_probe": {"test_top1": 35.0}, "wall_seconds": 1.0}))
        return type("Done", (), {"returncode": 0})()

    (tmp_path / "simsiam_cpu_off_1").mkdir()
    (tmp_path / "simsiam_cpu_off_1" / "checkpoint.pt").write_bytes(b"")
    monkeypatch.setattr(headlines.subprocess, "run", run)
    headlines.main(["--out", str(tmp_path), "--seeds", "2", "--data-root", "/data"])

    assert len(commands) == 1 + 2 + 2  # the flagship once, each SimSiam arm per seed
    resumed = [cmd for cmd in commands if "--resume" in cmd]
    assert len(resumed) == 1 and resumed[0][resumed[0].index("--seed") + 1] == "1"
    assert "--multistage" in resumed[0] and "off" in resumed[0]
    assert all(cmd[cmd.index("--data-root") + 1] == "/data" for cmd in commands)


def test_a_failed_run_stops_with_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(headlines.subprocess, "run",
                        lambda cmd, cwd, env: type("Failed", (), {"returncode": 2})())
    with pytest.raises(SystemExit, match="cifar_simclr_gat.py"):
        headlines.main(["--out", str(tmp_path)])
