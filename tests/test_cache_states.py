"""`flowvar cache list` / `prune` derive an entry's state from its key, as a lookup does (review revC 5, 11)."""

import json
from pathlib import Path

import pytest
import torch

from cache_entries import copy_cache, store_prop1
from flowvar.cache import MANIFEST, Cache
from flowvar.cache_admin import format_survey, prune, survey
from flowvar.cache_key import _key_of
from flowvar.cli import main


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return store_prop1(tmp_path_factory)



def _edit_manifest(cache: Cache, key: str, change: dict) -> dict:
    manifest = cache.manifest(key)
    manifest["inputs"].update(change)
    (cache.path(key) / MANIFEST).write_text(json.dumps(manifest))
    return manifest


def test_an_entry_whose_recorded_inputs_do_not_hash_to_its_key_is_corrupt(stored: tuple[Path, str],
                                                                        tmp_path: Path) -> None:
    """revC 5: an edited inputs.code_version was still a hit, listed as outdated. The key is the hash of the
    inputs: such an entry is corrupt, for list, prune and lookup alike."""
    cache = copy_cache(stored, tmp_path)
    key = stored[1]
    _edit_manifest(cache, key, {"code_version": "0.0.0+edited"})
    [item] = survey(cache).entries
    assert (item.status, item.detail) == ("corrupt", "its recorded inputs do not hash to its key")
    assert "corrupt (its recorded inputs do not hash to its key)" in format_survey(survey(cache))
    reasons: list[str] = []
    assert cache.lookup(key, on_corrupt=lambda k, r: reasons.append(r)) is None
    assert reasons == ["its recorded inputs do not hash to its key (the manifest was edited)"]
    # prune removes one too (a lookup would, on its next run)
    cache = copy_cache(stored, tmp_path / "again")
    _edit_manifest(cache, key, {"torch": "2.12.0+cpu"})  # edited in place: no longer its key's record
    report = prune(cache)
    assert [i.status for i in report.removed] == ["corrupt"] and not cache.path(key).exists()


def test_entries_of_another_torch_or_device_are_another_installations_kept_unless_asked(
        stored: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """revC 5 listed entries of another torch "unreachable" and pruned them; review revX 5: the device is part of a
    ``device: auto`` config's key too, and on a cache shared by installations (a GPU box and a laptop) those entries
    are the other one's valid results. Entries as another torch's or device's run stores them (each key the hash of
    its inputs) are listed "other installation", saying why, kept by prune, and removed only with
    ``other_installations``; the current one stays throughout. A work folder of another torch is the same state."""
    cache = copy_cache(stored, tmp_path)
    key = stored[1]
    here = "cuda" if torch.cuda.is_available() else "cpu"
    there = "cpu" if here == "cuda" else "cuda"
    inputs = {**cache.manifest(key)["inputs"], "torch": "2.12.0+cpu"}
    other_torch = _key_of("prop1", inputs)
    cache.store(other_torch, cache.path(key), inputs)
    on_device = {**cache.manifest(key)["inputs"], "device": there}
    other_device = _key_of("prop1", on_device)
    cache.store(other_device, cache.path(key), on_device)
    work_inputs = {**inputs, "config": {**inputs["config"], "n_samples": 301}}
    other_work = _key_of("prop1", work_inputs)
    cache.start_work(other_work, work_inputs)
    (cache.work_dir(other_work) / "checkpoint.pt").write_bytes(b"c")
    seen = survey(cache)
    states = {i.name: (i.status, i.detail) for i in seen.entries}
    assert states == {key: ("current", ""),
                      other_torch: ("other installation",
                                    f"torch 2.12.0+cpu; this installation has {torch.__version__}"),
                      other_device: ("other installation", f"device {there}; this installation has {here}")}
    assert [(i.name, i.status) for i in seen.work] == [(other_work, "other installation")]
    assert cache.lookup(other_torch) is not None  # a valid entry, of a key no run here computes
    listing = format_survey(seen)
    assert f"other installation (torch 2.12.0+cpu; this installation has {torch.__version__})" in listing
    assert f"other installation (device {there}; this installation has {here})" in listing
    assert "note: 2 entries of another installation (another torch, library or device)" in listing
    assert "kept by prune (--other-installations removes them)" in listing
    assert "would free 0 B (0 folders)" in listing
    assert prune(cache).removed == []
    assert cache.path(other_torch).is_dir() and cache.path(other_device).is_dir()
    # the command line's --other-installations is the library's other_installations=True
    assert main(["cache", "prune", "--cache", str(cache.root), "--other-installations", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert other_torch in said and other_device in said and cache.path(other_torch).is_dir()
    report = prune(cache, other_installations=True)
    assert sorted(i.name for i in report.removed) == sorted([other_torch, other_device, other_work])
    assert cache.lookup(key) is not None and not cache.path(other_torch).exists()
    assert not cache.path(other_device).exists() and not cache.work_dir(other_work).exists()


def test_an_unreadable_entry_is_pruned(stored: tuple[Path, str], tmp_path: Path) -> None:
    """revC 11: an entry listed "unreadable" was never pruned, and nothing looks it up but to delete it."""
    cache = copy_cache(stored, tmp_path)
    key = stored[1]
    (cache.path(key) / MANIFEST).write_text("{")
    [item] = survey(cache).entries
    assert item.status == "unreadable" and item.prunable()
    assert "`flowvar cache prune` would free" in format_survey(survey(cache))
    report = prune(cache)
    assert [i.name for i in report.removed] == [key] and not cache.path(key).exists()
