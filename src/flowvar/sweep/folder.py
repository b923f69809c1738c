"""A sweep's output folder: one sweep per ``--out`` (:func:`refuse_other_sweep`), and in ``OUT/points`` the points
of its grid only (:func:`prune_earlier_points`).

A sweep writes ``sweep.json``, ``sweep.csv``, ``figures/`` and ``points/<key>/`` into its ``--out``. Run into a
folder that holds another sweep (another experiment, other axes), it would replace that sweep's table and figures —
the map a user came for — so it is refused before anything is written. Rerun with a changed value, it would leave
the earlier grid's point folders beside its own, and ``points/`` would no longer be "the grid's points"; they are
removed once the sweep has finished (each is a copy of its cache entry, which stays).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flowvar.cache import MANIFEST, Cache
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


def prune_points(out: Path, the_plan: Plan, cache: Cache) -> tuple[list[str], list[str]]:
    """Remove the folders of ``out/points`` that are no point of ``the_plan`` (an earlier grid's: a changed value,
    a sub-grid) and are exact copies of their cache entry — a rerun of the earlier grid's command installs them
    again, nothing is lost; returns the names removed and those kept: a folder the cache does not hold (its disk
    refused it, another ``--cache``), or that differs from its entry (files added by hand), stays."""
    folder = out / "points"
    wanted = {p.key for p in the_plan.points}
    removed: list[str] = []
    kept: list[str] = []
    if not folder.is_dir():
        return removed, kept
    for child in sorted(folder.iterdir()):
        if child.name in wanted or child.name.startswith(".") or not child.is_dir() or child.is_symlink():
            continue
        entry, _ = cache.check(child.name)
        files = (cache.manifest(child.name).get("files") or {}) if entry is not None else None
        here = {p.relative_to(child).as_posix(): file_digest(p) for p in sorted(child.rglob("*")) if p.is_file()}
        if files is None or here != {rel: digest for rel, digest in files.items() if rel != MANIFEST}:
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


__all__ = ["prune_earlier_points", "prune_points", "refuse_other_sweep"]
