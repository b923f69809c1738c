"""A sweep's output folder: one sweep per ``--out`` (:func:`refuse_other_sweep`), and in ``OUT/points`` the points
of its grid only (:func:`prune_earlier_points`).

A sweep writes ``sweep.json``, ``sweep.csv``, ``figures/`` and ``points/<key>/`` into its ``--out``. Run into a
folder that holds another sweep (another experiment, other axes), it would replace that sweep's table and figures —
the map a user came for — so it is refused before anything is written. Rerun with a changed value, it would leave
the earlier grid's point folders beside its own, and ``points/`` would no longer be "the grid's points"; they are
removed once the sweep has finished (each is a copy of its cache entry, which stays). An assembled result of an
earlier grid (``OUT/assembled/<experiment>``, :func:`set_aside_earlier_assembly`) is moved aside when the sweep writes
its first table, so that it is never read as this grid's.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flowvar.cache import MANIFEST, SUMMARY, Cache
from flowvar.cache_key import file_digest
from flowvar.errors import ConfigError, DataError
from flowvar.experiments.registry import canonical_name
from flowvar.sweep.tables import load_sweep

if TYPE_CHECKING:
    from flowvar.sweep.run import Plan

log = logging.getLogger("flowvar.sweep")


def refuse_other_sweep(out: Path, the_plan: Plan) -> None:
    """A one-line :class:`ConfigError` when ``out`` holds another sweep, which this one would replace (its
    ``sweep.json``, ``sweep.csv`` and figures; its points would be pruned, :func:`prune_points`). Creates nothing.

    The same sweep — which may be rerun, extended or changed in place — is one of the same experiment over the same
    axis keys (in any order; other values of them, other ``--set``/``--config`` values, another mode or ``--force``
    are a rerun of it), or one whose grid holds every point of the folder's (a strict extension: ``--seeds`` added
    where the folder's points ran the default seed). Anything else — another experiment, other axes — is another
    sweep: the refusal names what the folder holds (experiment, axes, its command) and the fix (another ``--out``, or
    remove the folder). An unreadable ``sweep.json`` is no sweep to protect (its own error asks for the rerun that
    rewrites it)."""
    try:
        held = load_sweep(out)
    except DataError:
        return
    if held is None:
        return
    meta = held.get("meta") or {}
    experiment = meta.get("experiment")
    theirs = [str(a["key"]) for a in held["axes"]]
    mine = [a.key for a in the_plan.axes]
    same_experiment = not isinstance(experiment, str) or canonical_name(experiment) == the_plan.spec.name
    if same_experiment and set(theirs) == set(mine):
        return
    keys = {p.key for p in the_plan.points}
    if same_experiment and held["points"] and all(p.get("key") in keys for p in held["points"]):
        return
    what = (f"a sweep of {experiment if isinstance(experiment, str) else 'an unnamed experiment'} over "
            f"{', '.join(theirs) or 'no axis'}")
    command = meta.get("command")
    raise ConfigError(f"{out} holds {what}{f' (`{command}`)' if command else ''}, not of {the_plan.spec.name} over "
                      f"{', '.join(mine)}: this sweep would replace its sweep.json, sweep.csv, figures and points; "
                      f"choose another --out, or remove {out} first")


def _some(names: Sequence[str], most: int = 5) -> str:
    """Up to ``most`` of ``names``, comma-separated, and how many more: a log line stays one readable line."""
    return ", ".join(names[:most]) + (f", … ({len(names) - most} more)" if len(names) > most else "")


@dataclass(frozen=True)
class EntryDifference:
    """How an installed point folder differs from its cache entry (:func:`entry_difference`): the files the entry
    lists that the folder holds with other bytes (``changed``) or lacks (``missing``), and the files the folder
    holds that the entry does not list (``added``: by hand, they change no number)."""

    changed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    @property
    def damaged(self) -> bool:
        """A file of the result changed or lost: the folder no longer holds the entry's result."""
        return bool(self.changed or self.missing)

    def __bool__(self) -> bool:
        """Any difference at all: the folder is no exact copy of its entry."""
        return bool(self.changed or self.missing or self.added)


def entry_difference(folder: Path, cache: Cache, key: str) -> EntryDifference | None:
    """How ``folder`` (a point's ``OUT/points/<key>``) differs from the valid cache entry of ``key`` it was installed
    from (:func:`flowvar.cache.install`), by the SHA-256 of each file against the entry's manifest; None when
    ``cache`` holds no valid entry of ``key`` (nothing to compare with). ``summary.md`` is compared by presence
    only: :func:`~flowvar.cache.install` renders it afresh from ``result.json`` with the current report code, so its
    bytes may differ from the entry's while the result is the same (``result.json`` itself is compared)."""
    entry, _ = cache.check(key)
    if entry is None:
        return None
    listed = {rel: digest for rel, digest in (cache.manifest(key).get("files") or {}).items() if rel != MANIFEST}
    here = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    changed = tuple(rel for rel, digest in listed.items()
                    if rel in here and rel != SUMMARY and file_digest(here[rel]) != digest)
    return EntryDifference(changed, tuple(rel for rel in listed if rel not in here),
                           tuple(rel for rel in here if rel not in listed))


def prune_points(out: Path, the_plan: Plan, cache: Cache) -> tuple[list[str], list[str]]:
    """Remove the folders of ``out/points`` that are no point of ``the_plan`` (an earlier grid's: a changed value,
    a sub-grid) and are exact copies of their cache entry (:func:`entry_difference`: every file the same, its
    ``summary.md`` there) — a rerun of the earlier grid's command installs them again, nothing is lost; returns the
    names removed and those kept: a folder the cache does not hold (its disk refused it, another ``--cache``), or
    that differs from its entry (files added by hand), stays."""
    folder = out / "points"
    wanted = {p.key for p in the_plan.points}
    removed: list[str] = []
    kept: list[str] = []
    if not folder.is_dir():
        return removed, kept
    for child in sorted(folder.iterdir()):
        if child.name in wanted or child.name.startswith(".") or not child.is_dir() or child.is_symlink():
            continue
        difference = entry_difference(child, cache, child.name)
        if difference is None or difference:
            kept.append(child.name)
            continue
        shutil.rmtree(child)
        removed.append(child.name)
    return removed, kept


def prune_earlier_points(out: Path, the_plan: Plan, cache: Cache) -> None:
    """:func:`prune_points` after a finished sweep, said in ``sweep.log``: one line naming the folders removed and
    the cache that keeps their results, one warning naming those kept; a folder that cannot be removed (gone
    read-only) is a warning, never a failed sweep."""
    try:
        removed, kept = prune_points(out, the_plan, cache)
    except OSError as e:
        log.warning("cannot remove the point folders of an earlier grid from %s: %s", out / "points", e.strerror or e)
        return
    if removed:
        log.info("removed %d point folder(s) of an earlier grid from points/ (%s); their results stay in the cache "
                 "%s: the earlier grid's command installs them again", len(removed), _some(removed), cache.root)
    if kept:
        log.warning("kept %d point folder(s) of an earlier grid in points/ (%s): the cache %s does not hold them as "
                    "they are; move them away by hand", len(kept), _some(kept), cache.root)


EARLIER_ASSEMBLIES = ".earlier-grids"
"""Where, inside ``OUT/assembled``, a sweep moves an assembled result of an earlier grid
(:func:`set_aside_earlier_assembly`): hidden, so ``flowvar show OUT/assembled`` lists the current result only."""


def set_aside_earlier_assembly(out: Path, the_plan: Plan) -> str | None:
    """Move ``OUT/assembled/<experiment>`` (``flowvar assemble OUT``'s default output) to
    ``OUT/assembled/.earlier-grids/<experiment>[-N]`` when it was assembled from other points than ``the_plan``'s
    (its ``assembled_from.keys``, the points' cache keys, are not this grid's: the grid was extended or changed, or
    the points recomputed by other code), with a warning in ``sweep.log`` and on the terminal naming both folders and
    the command that assembles this grid; returns that warning (the sweep repeats it on the terminal and in
    ``sweep.json``), or None when the assembled result is this grid's or there is none. Called when a sweep
    writes its first table (as the previous run's figures are removed then): from there on ``sweep.json`` describes
    this grid, and an assembled result left in place would silently describe another one. Nothing is deleted (the
    earlier result stays readable there) and a result whose keys are this grid's stays. Left alone: a folder that
    is no assembled sweep result (no ``assembled_from.keys`` list: a user's own result) and one inside a ``flowvar
    reproduce`` collection (``OUT/assembled/results.json``: moving it would break that collection), for which the
    warning alone is given; a move the disk refuses is a warning, never a failed sweep."""
    root = out / "assembled"
    folder = root / the_plan.spec.name
    try:
        source = json.loads((folder / "result.json").read_text()).get("metrics", {}).get("assembled_from")
    except (OSError, ValueError, AttributeError):
        return None
    keys = source.get("keys") if isinstance(source, dict) else None
    if not isinstance(keys, list) or set(keys) == {p.key for p in the_plan.points}:
        return None
    again = f"`flowvar assemble {out}` assembles this grid once the sweep has finished"
    why = (f"{folder} was assembled from {len(keys)} point(s) of another grid (or computed by other code) than this "
           f"sweep's {len(the_plan.points)}")
    if (root / "results.json").is_file():
        message = f"{why}; it is part of the `flowvar reproduce` collection in {root} and is left in place: {again}"
        log.warning("%s", message)
        return message
    aside = root / EARLIER_ASSEMBLIES / the_plan.spec.name
    n = 2
    while aside.exists() or aside.is_symlink():
        aside, n = root / EARLIER_ASSEMBLIES / f"{the_plan.spec.name}-{n}", n + 1
    try:
        aside.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(aside)
    except OSError as e:
        message = f"{why}, and cannot be moved aside ({e.strerror or e}): it does not describe this sweep; {again}"
        log.warning("%s", message)
        return message
    message = f"{why}: moved it to {aside}, so that it is not read as this sweep's; {again}"
    log.warning("%s", message)
    return message


__all__ = ["EARLIER_ASSEMBLIES", "EntryDifference", "entry_difference", "prune_earlier_points", "prune_points",
           "refuse_other_sweep", "set_aside_earlier_assembly"]
