"""The GPU check starts: its dry run goes through every section on tiny sizes on the CPU, writes
its report, and leaves the docs alone; without a GPU and without --dry-run it refuses."""

import torch

from benchmarks.__main__ import main as suite_main


def test_dry_run_goes_through_every_section(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MP_CONTRASTIVE_DATA", str(data_root))
    docs = tmp_path / "performance.md"
    docs.write_text("<!-- results-gpu-check -->\nbefore\n<!-- /results-gpu-check -->\n")
    assert suite_main(["gpu-check", "--dry-run", "--steps", "4", "--out", str(tmp_path / "out"),
                       "--update-docs", str(docs)]) == 0
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    for section in ("### Flagship", "tiny cpu preset, bank 128, kNN", "### Losses at batch 4096",
                    "### Memory bank", "### faiss against the exact search", "### NCCL"):
        assert section in report
    assert "edges equal to the exact search: 100.00%" in report
    assert "before" in docs.read_text()  # a dry run is no measurement: the docs keep theirs
    assert capsys.readouterr().out.strip() == report.strip()


def test_without_a_gpu_only_the_dry_run_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # runs on a GPU machine too
    assert suite_main(["gpu-check", "--out", str(tmp_path / "out")]) == 2
    assert "--dry-run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
