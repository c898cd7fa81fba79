"""The one progress bar and Markdown table the examples, the image trainer and the benchmarks
share: a disabled bar is an object whose methods do nothing, never ``None``."""

import sys

import pytest

from mp_contrastive._reporting import markdown_table, progress_bar


def _bar_methods_work(bar):
    bar.update()
    bar.update(3)
    bar.set_postfix(loss="0.1", lr="0.3")
    bar.set_postfix_str("text")
    bar.close()


def test_disabled_bar_is_a_silent_object(capsys):
    bar = progress_bar(10, "runs", enabled=False)
    assert bar is not None
    _bar_methods_work(bar)
    assert capsys.readouterr() == ("", "")


def test_enabled_bar_counts_the_updates():
    pytest.importorskip("tqdm")
    bar = progress_bar(10, "runs", leave=False)
    _bar_methods_work(bar)
    assert bar.n == 4 and bar.total == 10 and bar.desc.startswith("runs")


def test_bar_without_tqdm_is_silent(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # importing it raises ImportError
    bar = progress_bar(5, "runs")
    assert not hasattr(bar, "n")
    _bar_methods_work(bar)


def test_markdown_table():
    assert markdown_table(["a", "b"], [[1, 2.5], ["x", None]]) == (
        "| a | b |\n|---|---|\n| 1 | 2.5 |\n| x | None |")
    assert markdown_table(("a",), []) == "| a |\n|---|"
