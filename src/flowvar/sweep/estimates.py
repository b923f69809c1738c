"""A sweep's runtime estimates (the ETA of ``flowvar sweep`` and ``--dry-run``): a main-effects model of
log-runtime fitted to the points already timed, and, before any is, each point's share of a known runtime of the
experiment (its newest cache entry, else its YAML estimate)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from flowvar.cache import Cache

if TYPE_CHECKING:
    from flowvar.sweep.run import Plan

TRAINING_LENGTH_FIELDS: frozenset[str] = frozenset({"train_steps"})
"""List fields that hold the stopping points of *one* training run (solver_resolution's ``train_steps``: each length
trained on from the previous one's checkpoint and evaluated there), where an experiment does not declare them a grid
(``runtime_scales_with``). A part of such a list trains to its own longest length and evaluates its own lengths, so
it is charged by :func:`segment_share`, not the whole run (a by-name convention: the registry declares grids only;
a field of that name that *is* a grid is read as one)."""


def runtime_model(known: Sequence[tuple[dict[str, Any], float]]) -> Callable[[dict[str, Any]], float] | None:
    """A predictor of a point's runtime (seconds) from its swept values, fitted to the points already timed
    (``(values, seconds)``); None when none is.

    The points of one grid can differ in cost by orders of magnitude (memorisation_phase's cells: 4 min at d = 2,
    width 64; an hour at d = 50, width 256), so the mean of the points timed so far misleads an ETA. The model is
    the main effects of log-runtime, ``log t = b + Σ_axes e_axis(value)``, least squares with a small ridge on the
    effects: a cost that multiplies along the axes (steps × width² × N) is fitted exactly from the points that
    vary one axis at a time, and a value no timed point has gets effect 0, the typical level of that axis."""
    timed = [(values, float(s)) for values, s in known if s is not None and s > 0]
    if not timed:
        return None

    def levels_of(values: dict[str, Any]) -> list[tuple[str, str]]:
        # repr, not canonical(): every value comes from one plan, coerced to its field's type (40x faster)
        return [(k, repr(v)) for k, v in values.items()]

    rows = [levels_of(values) for values, _ in timed]
    column = {level: j + 1 for j, level in enumerate(sorted({level for row in rows for level in row}))}
    design = np.zeros((len(rows), len(column) + 1))
    design[:, 0] = 1.0
    for i, row in enumerate(rows):
        design[i, [column[level] for level in row]] = 1.0
    target = np.log([s for _, s in timed])
    ridge = np.sqrt(1e-6) * np.eye(len(column) + 1)[1:]  # the intercept is free; the one-hot effects need a tie-break
    coef = np.linalg.lstsq(np.vstack([design, ridge]), np.concatenate([target, np.zeros(len(column))]),
                           rcond=None)[0].tolist()
    return lambda values: float(np.exp(coef[0] + sum(coef[column[lv]] for lv in levels_of(values) if lv in column)))


def point_share(config: Any, reference: dict[str, Any], grids: Sequence[str]) -> float:
    """The share of the run of ``reference`` (a config as a dict) that a point with ``config`` computes:
    ``Π_k len(config.k) / len(reference.k)`` over the experiment's grid fields ``grids``
    (:attr:`~flowvar.experiments.registry.ExperimentSpec.runtime_scales_with`: a point with ``dims=[2]`` of the full
    ``dims=[2, 3, 10, 50]`` is a quarter of it; a ``--set ns=[1797]`` of ``ns=[500, 1797]`` a half), times
    :func:`segment_share` for a training-length list (:data:`TRAINING_LENGTH_FIELDS`). Any other field counts 1: a
    solver grid only changes what is evaluated (an upper bound: its part evaluates fewer solvers), a vector is not a
    grid, and a scalar's effect on the runtime is unknown to flowvar."""
    from flowvar.cache import config_dict

    share = 1.0
    for key, mine in config_dict(config).items():
        whole = reference.get(key)
        if not (isinstance(mine, list | tuple) and isinstance(whole, list | tuple) and whole):
            continue
        if key in grids:
            share *= len(mine) / len(whole)
        elif key in TRAINING_LENGTH_FIELDS:
            share *= segment_share(mine, whole)
    return share


def segment_share(part: Sequence[float], whole: Sequence[float]) -> float:
    """The share of a run over the training lengths ``whole`` that a run over ``part`` costs, at most:
    max(len(part) / len(whole), max(part) / max(whole)).

    Such a run trains once, to its longest length, and evaluates at each length, so its time is a · (lengths) +
    b · (longest length) (solver_resolution's cost model, docs/experiments/solver_resolution.md: 125 s per
    evaluation, 6.5 ms per training step). The part's share is then a weighted mean of its share of the evaluations
    and its share of the training, and so at most the larger of the two — whatever a and b are, which flowvar does
    not know. Before this, every part was charged the whole run: the split preset's five points read 5 × 9300 s for
    a study of 9300 s (its 1000-step point is one evaluation and 1/20 of the training: at most 1/5). Work that
    depends on neither (set-up, solver_resolution's exact reference rows) is scaled too, which the bound leaves out;
    the longest length's point is charged the whole run, as before (its training is the whole run's). ``whole`` is
    the reference's list (:func:`baseline_runtime`), which may itself be a part (a cached point): the bound holds for
    any two lists, so a part longer than it is charged more than it (the mediant inequality). Non-positive or empty
    lists count 1 (nothing to scale by)."""
    top = max((float(v) for v in whole), default=0.0)
    if not part or top <= 0:
        return 1.0
    return max(len(part) / len(whole), max(float(v) for v in part) / top)


def baseline_runtime(spec: Any, cache: Cache, quick: bool) -> tuple[float, dict[str, Any]] | None:
    """A runtime of the experiment and the config it is of: the newest cache entry of this mode (its recorded
    runtime and config), else the YAML file's estimate of the whole run with the default config; None when neither
    exists. A sweep's point covers part of that config (:func:`point_share`) and is charged that share of it, not
    the whole (memorisation_phase's by_cell points each compute 1 of 40 cells of the 10 h YAML estimate)."""
    from flowvar.cache import config_dict
    from flowvar.experiments.base import build_config, expected_runtime

    for manifest in reversed(cache.timed_entries(spec.name, quick)):
        config = (manifest.get("inputs") or {}).get("config")
        if isinstance(config, dict):
            return float(manifest["runtime_s"]), config
    estimate = expected_runtime(spec, quick)
    if estimate is None:
        return None
    return float(estimate), config_dict(build_config(spec, quick=quick))


def point_estimates(the_plan: Plan, cache: Cache, quick: bool) -> dict[str, float] | None:
    """Each point's expected runtime (seconds, by point label) before any point of the plan is timed: the
    :func:`baseline_runtime` scaled by the point's :func:`point_share` of it (for a training-length split, an upper
    bound per point: :func:`segment_share`); None when there is no baseline."""
    baseline = baseline_runtime(the_plan.spec, cache, quick)
    if baseline is None:
        return None
    seconds, reference = baseline
    grids = the_plan.spec.runtime_scales_with
    return {p.label: seconds * point_share(p.config, reference, grids) for p in the_plan.points}


__all__ = ["TRAINING_LENGTH_FIELDS", "baseline_runtime", "point_estimates", "point_share", "runtime_model",
           "segment_share"]
