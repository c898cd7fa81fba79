"""Where the data loaders of :mod:`mp_contrastive.gnn` and :mod:`mp_contrastive.vision` look by
default: the folder ``$MP_CONTRASTIVE_DATA`` names, and the cache folder."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "default_data_root", "default_cache_dir"]

#: The environment variable the data loaders read when no data folder is given.
DATA_ENV = "MP_CONTRASTIVE_DATA"


def default_data_root() -> Path | None:
    """``$MP_CONTRASTIVE_DATA`` when set (and not empty), else ``None``: each loader documents what
    it falls back to (the image loaders: :func:`default_cache_dir`)."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None


def default_cache_dir() -> Path:
    """``~/.cache/mp_contrastive`` (``$XDG_CACHE_HOME`` respected): where Planetoid is processed
    and where the image loaders look when ``$MP_CONTRASTIVE_DATA`` is not set."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "mp_contrastive"
