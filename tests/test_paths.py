"""Where the graph and image loaders look by default: one reading of ``$MP_CONTRASTIVE_DATA``."""

from pathlib import Path

from mp_contrastive._paths import default_cache_dir, default_data_root


def test_default_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MP_CONTRASTIVE_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.setenv("MP_CONTRASTIVE_DATA", "")
    assert default_data_root() is None
    monkeypatch.delenv("MP_CONTRASTIVE_DATA")
    assert default_data_root() is None


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "mp_contrastive"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "mp_contrastive"
