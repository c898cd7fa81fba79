"""Every benchmark entry point refuses out-of-range values where it parses them: an argparse error
naming the flag, exit status 2, nothing measured or written. In-process (``main(argv)``)."""

import importlib
import re

import pytest

from benchmarks.__main__ import PERF
from benchmarks.__main__ import main as suite_main
from tests.command_line import assert_help_shows_every_default, refused

MODULES = {name: importlib.import_module(f"benchmarks.{name}") for name in [*PERF, "multicrop"]}

COMMON = [(["--repeats", "0"], "--repeats"), (["--repeats", "-3"], "--repeats"),
          (["--seed", "-1"], "--seed"), (["--seed", "x"], "--seed"),
          (["--threads", "0"], "--threads")]
CASES = {
    "multicrop": COMMON + [
        (["--crops", "1+2"], "--crops"), (["--crops", "2-2"], "--crops"),
        (["--crops", "2+x"], "--crops"), (["--small-size", "0"], "--small-size"),
        (["--small-size", "32"], "--small-size"), (["--batch-size", "1"], "--batch-size")],
    "losses": COMMON + [
        (["--sizes", "0"], "--sizes"), (["--sizes", "512", "-2"], "--sizes"),
        (["--sizes", "513"], "--sizes"), (["--dim", "0"], "--dim"),
        (["--temperature", "0"], "--temperature"), (["--temperature", "-1"], "--temperature"),
        (["--temperature", "inf"], "--temperature")],
    "training_step": COMMON + [
        (["--batch-size", "0"], "--batch-size"), (["--batch-size", "1"], "--batch-size"),
        (["--arch", "resnet7"], "--arch"), (["--width", "0"], "--width")],
    "monitor_overhead": COMMON + [
        (["--batch", "0"], "--batch"), (["--every", "0"], "--every"),
        (["--setups", "cnn"], "--setups"), (["--threads", "0"], "--threads")],
    "affinity": COMMON + [
        (["--threads", "0"], "--threads"), (["--sections", "all"], "--sections"),
        (["--features", "gauss"], "--features")],
    "gnn": COMMON + [(["--threads", "-1"], "--threads"), (["--data-root", "{missing}"], "--data-root")],
    "layer_overhead": COMMON + [(["--threads", "0"], "--threads"), (["--device", "tpu"], "--device")],
    "memory_bank": COMMON + [
        (["--sizes", "0"], "--sizes"), (["--batch", "0"], "--batch"), (["--dim", "0"], "--dim"),
        (["--temperature", "0"], "--temperature"), (["--draws", "0"], "--draws"),
        (["--k", "0"], "--k"), (["--num-samples", "0"], "--num-samples"),
        (["--checkpoint", "{missing}"], "--checkpoint")],
}
SUITE = {
    "run": [(["--domains", "bogus"], "--domains"), (["--domains", "images,bogus"], "--domains"),
            (["--domains", ","], "--domains"), (["--suite", "medium"], "--suite"),
            (["--seeds", "0"], "--seeds"), (["--seeds", "-1"], "--seeds"),
            (["--data-root", "{missing}"], "--data-root"),
            (["--update-docs", "{missing}"], "--update-docs"),
            (["--update-docs", "{readme}"], "--update-docs")],
    "perf": [(["--only", "nothing"], "--only"), (["--seed", "-1"], "--seed"),
             (["--update-docs", "{missing}"], "--update-docs"),
             (["--update-docs", "{readme}"], "--update-docs"),
             (["--only", "losses", "--update-docs", "{perf_page}"], "--only")],
}


def refused_last_line(main, argv, capsys) -> str:
    return refused(main, argv, capsys).strip().splitlines()[-1]


def fill(argv, tmp_path):
    readme = tmp_path / "README.md"  # exists, but without the results markers
    readme.write_text("# no markers here\n")
    perf_page = tmp_path / "performance.md"  # holds the perf markers
    perf_page.write_text("<!-- results-perf -->\n<!-- /results-perf -->\n")
    return [a.replace("{missing}", str(tmp_path / "missing")).replace("{readme}", str(readme))
            .replace("{perf_page}", str(perf_page)) for a in argv]


@pytest.mark.parametrize(("name", "argv", "flag"),
                         [(name, argv, flag) for name, cases in CASES.items() for argv, flag in cases],
                         ids=lambda value: " ".join(value) if isinstance(value, list) else value)
def test_benchmark_module_refuses_out_of_range_value(name, argv, flag, tmp_path, capsys):
    last = refused_last_line(MODULES[name].main, fill(argv, tmp_path), capsys)
    assert re.search(rf"error: argument {flag}( |:|/)", last), last


@pytest.mark.parametrize(("command", "argv", "flag"),
                         [(command, argv, flag) for command, cases in SUITE.items()
                          for argv, flag in cases],
                         ids=lambda value: " ".join(value) if isinstance(value, list) else value)
def test_suite_refuses_out_of_range_value_and_writes_nothing(command, argv, flag, tmp_path,
                                                             monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    last = refused_last_line(suite_main, [command, *fill(argv, tmp_path), "--out", str(out)],
                             capsys)
    assert re.search(rf"error: argument {flag}( |:|/)", last), last
    # no out, no runs/, the pages as fill wrote them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "performance.md"]
    assert (tmp_path / "README.md").read_text() == "# no markers here\n"
    assert (tmp_path / "performance.md").read_text() == ("<!-- results-perf -->\n"
                                                         "<!-- /results-perf -->\n")


def test_suite_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    last = refused_last_line(suite_main, ["run", "--out", str(tmp_path / "taken")], capsys)
    assert "argument --out" in last


def test_domains_parse_into_a_list(tmp_path):
    from benchmarks.__main__ import build_parser

    parser = build_parser()
    assert parser.parse_args(["run"]).domains == ["images", "graphs", "synthetic"]
    assert parser.parse_args(["run", "--domains", " graphs , synthetic"]).domains == ["graphs",
                                                                                     "synthetic"]
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results-full -->\nold\n<!-- /results-full -->\n")
    args = parser.parse_args(["run", "--suite", "full", "--update-docs", str(readme)])
    assert args.update_docs == str(readme)


@pytest.mark.parametrize("name", list(PERF))
def test_benchmark_help_shows_every_default(name, capsys):
    assert_help_shows_every_default(MODULES[name], capsys)


def test_suite_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        suite_main(["run", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: images,graphs,synthetic)" in shown
    assert "(default: 2 in the quick suite, 3 in the full one)" in shown
