"""The committed cache of a long sweep in progress (``results/in_progress/<experiment>/cache/``): every entry is one
the sweep will take as a hit on another machine. A damaged, foreign or mixed entry would be recomputed there, or
refused at assembly, hours later; here it fails at once."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest

from flowvar.cache import MANIFEST, Cache, _key_of
from flowvar.experiments.base import build_config, get_experiment
from flowvar.sweep.grid import canonical, presets

ROOT = Path(__file__).resolve().parents[1]
IN_PROGRESS = ROOT / "results" / "in_progress"
PRESET = {"memorisation_phase": "by_cell"}
"""The sweep preset each in-progress folder is the cache of (its README's command)."""

FOLDERS = sorted(p for p in IN_PROGRESS.glob("*") if p.is_dir()) if IN_PROGRESS.is_dir() else []


def entries(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "cache").iterdir() if p.is_dir())


def test_each_in_progress_folder_names_a_known_sweep_and_says_how_to_resume() -> None:
    for folder in FOLDERS:
        assert folder.name in PRESET, f"{folder}: which sweep is this the cache of? (add it to PRESET)"
        readme = (folder / "README.md").read_text(encoding="utf-8")
        assert f"--preset {PRESET[folder.name]}" in readme and "git worktree add" in readme, folder
        names = {p.name for p in (folder / "cache").iterdir()}
        assert not {n for n in names if n.startswith(".")}, f"{folder}: staging or work folders were committed"


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_every_committed_entry_is_whole_and_keyed_by_its_own_inputs(folder: Path) -> None:
    cache = Cache(folder / "cache")
    for entry in entries(folder):
        found, problem = cache.check(entry.name)  # re-hashes every file, reloads result.json; deletes nothing
        assert found is not None and problem is None, f"{entry.name}: {problem}"
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        assert _key_of(manifest["experiment"], manifest["inputs"]) == entry.name, (
            f"{entry.name}: its folder name is not the key of its recorded inputs")


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_the_entries_are_points_of_one_sweep_run_by_one_code_version(folder: Path) -> None:
    """One code version, torch and thread count (else no single checkout hits them all), full mode, and each
    config exactly one grid point of the preset's sweep (the YAML's full values, the point's axes set)."""
    spec = get_experiment(folder.name)
    grid = presets(spec, quick=False)[PRESET[folder.name]].grid
    expected = {}
    for combo in itertools.product(*grid.values()):
        overrides = dict(zip(grid, combo, strict=True))
        expected[canonical(dataclasses.asdict(build_config(spec, quick=False, overrides=overrides)))] = overrides
    runs = {"code_version": set(), "torch": set(), "torch_threads": set()}
    seen = []
    for entry in entries(folder):
        inputs = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))["inputs"]
        assert inputs["experiment"] == folder.name and inputs["quick"] is False, entry.name
        for field, values in runs.items():
            values.add(inputs[field])
        point = expected.get(canonical(inputs["config"]))
        assert point is not None, f"{entry.name}: its config is no point of the {PRESET[folder.name]} sweep"
        seen.append(canonical(point))
    assert all(len(v) <= 1 for v in runs.values()), f"{folder}: entries of several runs: {runs}"
    assert len(seen) == len(set(seen)), f"{folder}: a grid point committed twice"
