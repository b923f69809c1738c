"""The report as data, before any rendering: every experiment of a ``flowvar reproduce`` collection with its result
and its :class:`~flowvar.report.story.Story`, the run's scale for the banner, and the claim counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowvar.report.collection import collection_counts, status_line
from flowvar.report.narrators import build_story
from flowvar.report.story import Story, num
from flowvar.results import Result


@dataclass
class Entry:
    """One experiment of the report: its collection entry (status, cache key, error), result and story (None for
    an experiment that failed or did not run)."""

    name: str
    entry: dict[str, Any]
    result: Result | None
    story: Story | None

    @property
    def status(self) -> str:
        return str(self.entry.get("status", "computed"))

    @property
    def status_text(self) -> str:
        return status_line(self.entry)

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "not run")


def entries(collection: dict[str, Any]) -> list[Entry]:
    """The collection's experiments in order, each with its result and story."""
    out = []
    for e in collection["experiments"]:
        result = Result.from_dict(e["result"]) if e.get("result") else None
        out.append(Entry(e["name"], e, result, build_story(result) if result is not None else None))
    return out


def result_entries(results: list[Result]) -> list[Entry]:
    """Entries for bare results (a ``flowvar run`` folder: no collection, every experiment computed)."""
    return [Entry(r.experiment, {"name": r.experiment, "status": "computed", "wall_s": r.runtime_s}, r,
                  build_story(r)) for r in results]


def _range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return num(lo) if lo == hi else f"{num(lo)} to {num(hi)}"


def run_scale(mode: str, items: list[Entry]) -> tuple[str, list[str]]:
    """The banner: a title (``"Quick run: scaled down"``) and lines on the run's scale across experiments —
    training seeds, training steps, image data and N, Monte-Carlo repeats — from the configs."""
    configs = [e.result.config for e in items if e.result is not None]
    seeds = [float(c.get("n_seeds", 1)) for c in configs]
    steps = [float(v) for c in configs for k in ("steps", "train_steps", "base_steps") if k in c
             for v in (c[k] if isinstance(c[k], list) else [c[k]]) if isinstance(v, int | float)]
    lines = []
    if seeds:
        lines.append(f"training seeds per experiment: {_range(seeds)} (the unit the verdicts compare over; one seed "
                     f"is always inconclusive for a seed comparison)")
    if steps:
        lines.append(f"training steps: {_range(steps)} per network")
    images = [(e.name, e.result.config) for e in items if e.result is not None and e.result.config.get("resolution")
              and e.result.config.get("dataset") not in (None, "gmm")]
    for name, c in images:
        ns = c.get("ns") or [c.get("n") or c.get("n_train")]
        lines.append(f"{name}: {c['dataset']} {c['resolution']}×{c['resolution']} px, N = "
                     f"{', '.join(num(n) for n in ns if n is not None)} (the paper: CelebA 64×64 RGB, N = 5K/50K)")
    repeats = [float(c["repeats"]) for c in configs if "repeats" in c]
    if repeats:
        lines.append(f"variance estimates: R = {_range(repeats)} Monte-Carlo repeats per point")
    title = ("Quick run: every experiment scaled down to run on a CPU; numbers are not at the paper's scale"
             if mode == "quick" else "Full run: the experiments' full settings")
    return title, lines


def kind_counts(collection: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Claims by kind and verdict (:func:`flowvar.results.claim_counts`)."""
    return collection_counts(collection)


__all__ = ["Entry", "entries", "kind_counts", "result_entries", "run_scale"]
