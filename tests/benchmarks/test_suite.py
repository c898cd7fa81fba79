"""The benchmark runner: resumable, exact aggregation, failures isolated."""

import json
import math
import statistics

import pytest
from scipy import stats

from benchmarks.suite import Cell, markdown_summary, run_cells, summarize, welch_p_value, write_outputs


def counting_cells(calls: list[str], fail: set[str] = frozenset()):
    def make(method: str, seed: int, value: float):
        def run():
            calls.append(f"{method}{seed}")
            if method in fail:
                raise RuntimeError(f"{method} exploded")
            return {"acc": value, "other": 1.0}
        baseline = None if method == "base" else "base"
        return Cell("toy", "data", method, seed, run, baseline, ("acc",))
    return [make("base", 0, 70.0), make("base", 1, 72.0), make("variant", 0, 75.0),
            make("variant", 1, 78.0), make("broken", 0, 0.0)]


def test_second_run_skips_finished_cells(tmp_path):
    calls: list[str] = []
    first = run_cells(counting_cells(calls), tmp_path, progress=False)
    assert len(calls) == 5 and all(r["status"] == "ok" for r in first)
    second = run_cells(counting_cells(calls), tmp_path, progress=False)
    assert len(calls) == 5  # nothing ran again
    assert [r["metrics"] for r in second] == [r["metrics"] for r in first]
    assert len(list((tmp_path / "cells").glob("*.json"))) == 5


def test_failing_cell_is_reported_and_retried_without_losing_others(tmp_path):
    calls: list[str] = []
    messages: list[str] = []
    records = run_cells(counting_cells(calls, fail={"broken"}), tmp_path, progress=False,
                        log=messages.append)
    broken = [r for r in records if r["method"] == "broken"][0]
    assert broken["status"] == "failed" and "broken exploded" in broken["error"]
    assert sum(r["status"] == "ok" for r in records) == 4
    assert messages and "broken" in messages[0]
    calls.clear()
    records = run_cells(counting_cells(calls), tmp_path, progress=False)  # fixed now
    assert calls == ["broken0"]  # only the failed cell is retried
    assert all(r["status"] == "ok" for r in records)
    paths = write_outputs(records, tmp_path)
    assert "Failed cells" not in paths["markdown"].read_text()


def test_aggregation_math():
    records = [
        {"domain": "d", "dataset": "x", "method": "base", "seed": s, "baseline": None,
         "status": "ok", "metrics": {"acc": v}, "metrics_reported": ["acc"], "seconds": 1}
        for s, v in enumerate([70.0, 72.0, 71.0])
    ] + [
        {"domain": "d", "dataset": "x", "method": "new", "seed": s, "baseline": "base",
         "status": "ok", "metrics": {"acc": v}, "metrics_reported": ["acc"], "seconds": 1}
        for s, v in enumerate([75.0, 78.0, 76.5])
    ] + [{"domain": "d", "dataset": "x", "method": "new", "seed": 9, "baseline": "base",
          "status": "failed", "metrics": {}, "error": "x", "seconds": 1}]
    rows = {r.method: r for r in summarize(records)}
    assert rows["base"].n == 3 and rows["base"].mean == pytest.approx(71.0)
    assert rows["base"].std == pytest.approx(1.0)  # sample standard deviation
    new = rows["new"]
    assert new.mean == pytest.approx(76.5) and new.std == pytest.approx(1.5)
    assert new.difference == pytest.approx(5.5) and new.baseline == "base"
    expected_p = stats.ttest_ind([75.0, 78.0, 76.5], [70.0, 72.0, 71.0], equal_var=False).pvalue
    assert new.p_value == pytest.approx(expected_p)
    # By hand: Welch t = 5.5 / sqrt(1.5^2/3 + 1^2/3).
    t = 5.5 / math.sqrt(1.5**2 / 3 + 1.0 / 3)
    assert stats.t.sf(abs(t), df=((1.5**2 / 3 + 1 / 3) ** 2) / (
        (1.5**2 / 3) ** 2 / 2 + (1 / 3) ** 2 / 2)) * 2 == pytest.approx(expected_p)
    table = markdown_summary(list(rows.values()))
    assert "76.5 ± 1.5 (3)" in table and "+5.5 vs base" in table and "p=0.0" in table


def test_p_value_edge_cases():
    assert welch_p_value([1.0], [2.0, 3.0]) is None
    assert welch_p_value([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert welch_p_value([1.0, 1.0], [2.0, 2.0]) == 0.0
    assert statistics.stdev([70.0, 72.0, 71.0]) == 1.0


def test_outputs_written(tmp_path):
    calls: list[str] = []
    records = run_cells(counting_cells(calls, fail={"broken"}), tmp_path, progress=False,
                        log=lambda m: None)
    paths = write_outputs(records, tmp_path)
    assert paths["csv"].read_text().count("\n") == 1 + 4 * 2 + 1  # header, 2 metrics, failed row
    assert "Failed cells: toy/data/broken/seed0" in paths["markdown"].read_text()
    assert paths["plot"].stat().st_size > 1000
    cell = json.loads(next((tmp_path / "cells").glob("toy__data__variant__seed0.json")).read_text())
    assert cell["metrics"]["acc"] == 75.0 and cell["baseline"] == "base"


def test_duplicate_cells_rejected(tmp_path):
    cells = counting_cells([])
    with pytest.raises(ValueError, match="share the same"):
        run_cells(cells + cells[:1], tmp_path, progress=False)


def test_replace_marked_section(tmp_path):
    from benchmarks.suite import replace_marked_section

    page = tmp_path / "results.md"
    page.write_text("intro\n<!-- results-quick -->\nold table\n<!-- /results-quick -->\nafter\n")
    replace_marked_section(page, "results-quick", "| a |\n|---|\n| 1 |\n")
    assert page.read_text() == ("intro\n<!-- results-quick -->\n| a |\n|---|\n| 1 |\n"
                                "<!-- /results-quick -->\nafter\n")
    with pytest.raises(ValueError, match="results-perf"):
        replace_marked_section(page, "results-perf", "x")


def test_every_perf_module_takes_the_arguments_perf_passes():
    """`python -m benchmarks perf` calls each module's main with its PERF arguments and --seed, in
    process: each module's parser accepts exactly that command line (argparse exits on an unknown
    option or a bad value). Parsing it is the behaviour; grepping each module's --help in a
    subprocess (26 s here) proved less."""
    import importlib

    from benchmarks.__main__ import PERF

    for name, argv in PERF.items():
        parser = importlib.import_module(f"benchmarks.{name}").build_parser()
        args = parser.parse_args([*argv, "--seed", "3"])
        assert args.seed == 3, name


def test_perf_section_nests_headings():
    from benchmarks.__main__ import perf_section

    body = "## losses: `python -m benchmarks.losses `\n\n# Loss table\n\n| a |\n\n## Sub\ntext"
    out = perf_section(body, "cpu")
    assert out.splitlines() == ["Machine: cpu.", "", "### losses: `python -m benchmarks.losses `",
                                "", "#### Loss table", "", "| a |", "", "#### Sub", "text"]


def test_perf_section_fits_under_the_performance_page_heading():
    """docs/performance.md puts the tables under "## Tables": module headings one level below."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "performance.md").read_text()
    tables = page.split("<!-- results-perf -->", 1)[1].split("<!-- /results-perf -->", 1)[0]
    assert "## Tables\n" in page.split("<!-- results-perf -->", 1)[0]
    assert tables.strip().startswith("Machine: ")
    headings = {line.split(" ", 1)[0] for line in tables.splitlines() if line.startswith("#")}
    assert headings == {"###", "####"}


def test_update_docs_writes_the_suite_table_and_plot_into_a_docs_page(tmp_path, monkeypatch):
    import benchmarks.__main__ as entry

    calls: list[str] = []
    monkeypatch.setattr(entry, "build_cells", lambda *args: counting_cells(calls)[:4])
    page = tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    page.write_text("# Results\n<!-- results-quick -->\nold\n<!-- /results-quick -->\nend\n")
    assert entry.main(["run", "--suite", "quick", "--domains", "synthetic", "--out",
                       str(tmp_path / "runs"), "--no-progress", "--update-docs", str(page)]) == 0
    text = page.read_text()
    assert "old" not in text and text.startswith("# Results\n") and text.endswith("end\n")
    assert "quick suite: 4 cells" in text and "76.5 ± 2.1 (2)" in text
    assert (tmp_path / "docs" / "figures" / "quick_summary.png").stat().st_size > 1000


def test_update_docs_writes_the_perf_tables_into_a_docs_page(tmp_path, monkeypatch):
    import sys
    import types

    import benchmarks.__main__ as entry

    fake = types.ModuleType("benchmarks.fake")
    fake.main = lambda argv=None: print("# Fake table\n\n| a |\n|---|\n| 1 |")
    monkeypatch.setitem(sys.modules, "benchmarks.fake", fake)
    monkeypatch.setattr(entry, "PERF", {"fake": []})
    page = tmp_path / "performance.md"
    page.write_text("## Tables\n\n<!-- results-perf -->\nold\n<!-- /results-perf -->\n")
    assert entry.main(["perf", "--out", str(tmp_path / "perf"), "--update-docs", str(page)]) == 0
    tables = page.read_text().split("<!-- results-perf -->\n", 1)[1]
    assert tables.startswith("Machine: ") and "old" not in tables
    assert "### fake: `python -m benchmarks.fake `" in tables and "#### Fake table" in tables
