"""Result files are replaced whole: a failure during the write leaves the old file as it was and
no temporary file behind."""

import os

import pytest

from mp_contrastive._files import write_text_atomic


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
