"""The report as data, before any rendering: every experiment of a ``flowvar reproduce`` collection with its result
and its :class:`~flowvar.report.story.Story`, the run's scale for the banner, and the claim counts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flowvar.report.collection import collection_counts, status_line
from flowvar.report.narrators import build_story
from flowvar.report.story import Story, num
from flowvar.results import Result


@dataclass
class Entry:
    """One experiment of the report: its collection entry (status, cache key, error), result and story (None for
    an experiment that failed or did not run). ``in_collection``: from a ``flowvar reproduce`` collection (whose
    experiments the run chose among all registered ones), not a bare ``flowvar run`` folder."""

    name: str
    entry: dict[str, Any]
    result: Result | None
    story: Story | None
    in_collection: bool = True

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
                  build_story(r), in_collection=False) for r in results]


@dataclass
class Absent:
    """Experiments a run has no result for, grouped by why: ``names`` and ``why`` (one sentence a reader can act
    on). ``kind``: ``"failed"``, ``"interrupted"`` (the run stopped while they computed), ``"not run"`` (the run
    stopped before them) or ``"not selected"`` (registered, but the run's ``--only`` left them out)."""

    kind: str
    names: list[str]
    why: str

    def line(self) -> str:
        """``"table1, table2: not run — the run was interrupted …"``."""
        return f"{', '.join(self.names)}: {self.kind} — {self.why}"


def _estimates(names: list[str], quick: bool) -> dict[str, float]:
    """Each experiment's wall-clock estimate for this mode from its YAML file (seconds on 2 CPU cores); names
    without one are left out. A report never fails over an estimate, so an unreadable file gives none."""
    from flowvar.experiments.config import read_yaml
    from flowvar.experiments.registry import CONFIG_DIR

    out: dict[str, float] = {}
    for name in names:
        try:
            value = (read_yaml(CONFIG_DIR / f"{name}.yaml") or {}).get("expected_runtime_s", {})[
                "quick" if quick else "full"]
            out[name] = float(value)
        except Exception:  # a plugin's experiment, a missing or malformed file: no estimate shown
            continue
    return out


def absent(items: list[Entry], mode: str | None = None) -> list[Absent]:
    """What a run lacks, and why: each failed experiment (its error), those the run was interrupted in (continued
    from their checkpoints by the same command) and before (not started), and, for a ``flowvar reproduce``
    collection, the registered experiments it did not select (with their estimated wall time at this run's scale,
    the usual reason to leave one out). ``mode``: the run's "quick" or "full" (its meta); without it, read off the
    results present (full when there are none)."""
    from flowvar.experiments.registry import discover

    out = [Absent("failed", [e.name], f"{e.entry.get('error') or 'no error recorded'}; rerun it after the fix")
           for e in items if e.status == "failed"]
    quick = mode == "quick" if mode in ("quick", "full") else any(e.result.quick for e in items
                                                                   if e.result is not None)

    def cost(names: list[str]) -> str:
        times = _estimates(names, quick)
        text = ", ".join(f"{n} ≈ {_rough(times[n])}" for n in names if n in times)
        return f" (estimated wall time at this scale on 2 CPU cores: {text})" if text else ""

    running = [e.name for e in items if e.status == "not run" and e.entry.get("in_flight")]
    if running:
        out.append(Absent("interrupted", running, "the run was interrupted while they were computing; rerun the "
                                                  "same command to continue them from their last checkpoints"))
    stopped = [e.name for e in items if e.status == "not run" and not e.entry.get("in_flight")]
    if stopped:
        out.append(Absent("not run", stopped, "the run was interrupted before they started; rerun the same command "
                                               "to finish them, the finished ones come from the cache" + cost(stopped)))
    if items and all(e.in_collection for e in items):
        present = {e.name for e in items}
        left = [n for n in discover() if n not in present]
        if left:  # with results kept from earlier runs, more than the last command's --only chose what is here
            chose = ("neither this command's --only nor those of the earlier runs kept in this folder selected them"
                     if any(e.status == "kept" for e in items) else "the command's --only left them out")
            out.append(Absent("not selected", left, chose + cost(left)))
    return out


def interrupted_unlisted(meta: dict[str, Any], missing: list[Absent]) -> bool:
    """Whether an interrupted run needs its own "rerun to finish" line: none of :func:`absent`'s lines names an
    experiment it stopped (in flight or not started) — e.g. it stopped while writing the report."""
    return bool(meta.get("interrupted")) and not any(a.kind in ("not run", "interrupted") for a in missing)


def _rough(seconds: float) -> str:
    """An estimate in words, no more precise than it is: ``45 min``, ``9 h``."""
    return f"{max(1, round(seconds / 60))} min" if seconds < 5400 else f"{round(seconds / 3600)} h"


def _range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return num(lo) if lo == hi else f"{num(lo)} to {num(hi)}"


def paper_setting(result: Result) -> str:
    """The paper's data setting for this experiment as its result records it (``paper["setting"]`` up to the first
    ";", ``x`` between numbers as ``×``): ``"CelebA 64×64 RGB, N = 5K"`` for Table 3, ``"… N = 5K and 50K"`` for
    Table 2; "" when it records none."""
    setting = result.paper.get("setting")
    if not isinstance(setting, str):
        return ""
    return re.sub(r"(\d)x(\d)", "\\1×\\2", setting.split(";", 1)[0].strip())  # 64x64 as the report writes it


def run_scale(mode: str, items: list[Entry]) -> tuple[str, list[str]]:
    """The banner: a title (``"Quick run: scaled down"``; a run without every experiment says how many it has)
    and lines on the run's scale across experiments — training seeds, training steps, image data and N (beside the
    paper's setting of that experiment, :func:`paper_setting`), Monte-Carlo repeats — from the configs."""
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
    images = [(e.name, e.result.config, paper_setting(e.result)) for e in items if e.result is not None
              and e.result.config.get("resolution") and e.result.config.get("dataset") not in (None, "gmm")]
    for name, c, paper in images:
        ns = c.get("ns") or [c.get("n") or c.get("n_train")]
        lines.append(f"{name}: {c['dataset']} {c['resolution']}×{c['resolution']} px, N = "
                     f"{', '.join(num(n) for n in ns if n is not None)}" + (f" (the paper: {paper})" if paper else ""))
    repeats = [float(c["repeats"]) for c in configs if "repeats" in c]
    if repeats:
        lines.append(f"variance estimates: R = {_range(repeats)} Monte-Carlo repeats per point")
    title = ("Quick run: every experiment scaled down to run on a CPU; numbers are not at the paper's scale"
             if mode == "quick" else "Full run: the experiments' full (paper-scale) settings")
    missing = sum(len(a.names) for a in absent(items, mode))
    if missing:
        done = sum(e.result is not None for e in items)
        title += f" — partial: {done} of {done + missing} experiments have a result"
    return title, lines


def kind_counts(collection: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Claims by kind and verdict (:func:`flowvar.results.claim_counts`)."""
    return collection_counts(collection)


__all__ = ["Absent", "Entry", "absent", "entries", "interrupted_unlisted", "kind_counts", "paper_setting",
           "result_entries", "run_scale"]
