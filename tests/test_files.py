"""Result files (text, plots) are replaced whole: a failure during the write leaves the old file as
it was and no temporary file behind."""

import os

import pytest

from mp_contrastive._files import save_figure_atomic, write_text_atomic


def test_write_replaces_whole_file(tmp_path):
    path = tmp_path / "results.json"
    write_text_atomic(path, '{"a": 1}')
    write_text_atomic(path, '{"a": 2}')
    assert path.read_text() == '{"a": 2}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_text_atomic(path, "old")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_figure_is_saved_whole_in_the_format_of_its_suffix(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure_atomic(fig, tmp_path / "plot.png", dpi=20)
    save_figure_atomic(fig, tmp_path / "plot.svg")
    plt.close(fig)
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "plot.svg"]
