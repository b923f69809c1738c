"""`flowvar cache list` / `prune` derive an entry's state from its key, as a lookup does (review revC 5, 11)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from flowvar.cache import MANIFEST, Cache, run_cached
from flowvar.cache_admin import format_survey, prune, survey
from flowvar.cache_key import _key_of

TINY = {"n_samples": "300", "angles": "0,180"}


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real prop1 entry: (cache root, key)."""
    root = tmp_path_factory.mktemp("cache")
    run = run_cached("prop1", tmp_path_factory.mktemp("out"), Cache(root), quick=True, overrides=TINY)
    return root, run.key


def _copy(stored: tuple[Path, str], tmp_path: Path) -> Cache:
    root, _ = stored
    shutil.copytree(root, tmp_path / "cache")
    return Cache(tmp_path / "cache")


def _edit_manifest(cache: Cache, key: str, change: dict) -> dict:
    manifest = cache.manifest(key)
    manifest["inputs"].update(change)
    (cache.path(key) / MANIFEST).write_text(json.dumps(manifest))
    return manifest


def test_an_entry_whose_recorded_inputs_do_not_hash_to_its_key_is_corrupt(stored: tuple[Path, str],
                                                                        tmp_path: Path) -> None:
    """revC 5: an edited inputs.code_version was still a hit, listed as outdated. The key is the hash of the
    inputs: such an entry is corrupt, for list, prune and lookup alike."""
    cache = _copy(stored, tmp_path)
    key = stored[1]
    _edit_manifest(cache, key, {"code_version": "0.0.0+edited"})
    [item] = survey(cache).entries
    assert (item.status, item.detail) == ("corrupt", "its recorded inputs do not hash to its key")
    assert "corrupt (its recorded inputs do not hash to its key)" in format_survey(survey(cache))
    reasons: list[str] = []
    assert cache.lookup(key, on_corrupt=lambda k, r: reasons.append(r)) is None
    assert reasons == ["its recorded inputs do not hash to its key (the manifest was edited)"]
    # prune removes one too (a lookup would, on its next run)
    cache = _copy(stored, tmp_path / "again")
    _edit_manifest(cache, key, {"torch": "2.12.0+cpu"})  # edited in place: no longer its key's record
    report = prune(cache)
    assert [i.status for i in report.removed] == ["corrupt"] and not cache.path(key).exists()


def test_an_entry_of_another_torch_is_unreachable_and_pruned(stored: tuple[Path, str], tmp_path: Path) -> None:
    """revC 5: entries recorded with another torch were "current" and never pruned, though torch is part of the key
    and no run of this installation looks them up. An entry as another torch's run stores it (its key the hash of
    its inputs) is listed unreachable, saying why, and pruned; the current one stays."""
    cache = _copy(stored, tmp_path)
    key = stored[1]
    inputs = {**cache.manifest(key)["inputs"], "torch": "2.12.0+cpu"}
    other = _key_of("prop1", inputs)
    cache.store(other, cache.path(key), inputs)
    states = {i.name: (i.status, i.detail) for i in survey(cache).entries}
    assert states == {key: ("current", ""),
                      other: ("unreachable", f"torch 2.12.0+cpu; this installation has {torch.__version__}")}
    assert cache.lookup(other) is not None  # a valid entry, of a key no run here computes
    listing = format_survey(survey(cache))
    assert f"unreachable (torch 2.12.0+cpu; this installation has {torch.__version__})" in listing
    report = prune(cache)
    assert [i.name for i in report.removed] == [other]
    assert cache.lookup(key) is not None and not cache.path(other).exists()


def test_an_unreadable_entry_is_pruned(stored: tuple[Path, str], tmp_path: Path) -> None:
    """revC 11: an entry listed "unreadable" was never pruned, and nothing looks it up but to delete it."""
    cache = _copy(stored, tmp_path)
    key = stored[1]
    (cache.path(key) / MANIFEST).write_text("{")
    [item] = survey(cache).entries
    assert item.status == "unreadable" and item.prunable()
    assert "`flowvar cache prune` would free" in format_survey(survey(cache))
    report = prune(cache)
    assert [i.name for i in report.removed] == [key] and not cache.path(key).exists()
