"""A real cache entry for the cache tests to copy and damage: one tiny quick prop1 run (a second)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flowvar.cache import Cache, run_cached

#: prop1's quick config cut to a second's work.
TINY = {"n_samples": "300", "angles": "0,180"}


def store_prop1(factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real prop1 entry in a fresh cache: (cache root, key)."""
    root = factory.mktemp("cache")
    run = run_cached("prop1", factory.mktemp("out"), Cache(root), quick=True, overrides=TINY)
    return root, run.key


def copy_cache(stored: tuple[Path, str], tmp_path: Path) -> Cache:
    """A private copy of the cache of ``stored`` under ``tmp_path``, to damage."""
    shutil.copytree(stored[0], tmp_path / "cache")
    return Cache(tmp_path / "cache")
