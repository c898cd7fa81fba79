"""The memory-bank benchmarks run end to end on tiny sizes and print their tables and verdicts;
the three-arm table is built from the runs' own files and written between the docs markers."""

import json

import pytest

from benchmarks import bank_training, memory_bank


def test_memory_bank_benchmark_prints_tables_and_verdicts(capsys):
    memory_bank.main(["--sizes", "512", "1024", "--batch", "16", "--dim", "8", "--repeats", "2",
                      "--draws", "2", "--k", "4", "--num-samples", "16"])
    out = capsys.readouterr().out
    assert out.count("lightly NTXentLoss") == 4  # two tables x two sizes
    for row in ("SimCLRLoss dense", "SimCLRLoss knn", "gradient cosine"):
        assert row in out
    assert "K=1024: kNN" in out and ("PASS" in out or "FAIL" in out)


def fake_run(folder, knn, probe, speeds):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "settings": {"batch_size": 256}, "knn_top1_final": knn,
        "linear_probe": {"test_top1": probe}}))
    (folder / "steps.csv").write_text("step,epoch,loss,lr,images_per_s\n" + "".join(
        f"{i},0,1.0,0.1,{s}\n" for i, s in enumerate(speeds)))


def test_bank_training_table_from_finished_runs(tmp_path, capsys):
    """Finished runs are reused (nothing is trained here); the table has mean +- std per arm and
    the verdict on the kNN arm against the dense one."""
    values = {0: [40.0, 30.0, 30.5], 1: [42.0, 32.0, 31.0]}  # per seed: batch, dense, kNN
    for seed, per_arm in values.items():
        for arm, knn in enumerate(per_arm):
            fake_run(tmp_path / "runs" / f"arm{arm}_seed{seed}", knn, knn + 5, [512.0, 256.0])
    docs = tmp_path / "results.md"
    docs.write_text("before\n<!-- results-memory-bank -->\nold\n<!-- /results-memory-bank -->\n")
    bank_training.main(["--seeds", "0", "1", "--out", str(tmp_path / "runs"),
                        "--update-docs", str(docs)])
    text = docs.read_text()
    assert "old" not in text and text.startswith("before\n")
    assert "| batch-only SimCLR | 41.00 ± 1.41 | 46.00 ± 1.41 | 0.750 |" in text
    assert "kNN arm - dense arm: -0.25 points; dense std 1.41: within one standard deviation" in text
    assert capsys.readouterr().out.strip() in text


def test_bank_training_checks_the_docs_markers_first(tmp_path, capsys):
    docs = tmp_path / "results.md"
    docs.write_text("no markers\n")
    with pytest.raises(SystemExit):
        bank_training.main(["--out", str(tmp_path / "runs"), "--update-docs", str(docs)])
    assert "results-memory-bank" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
