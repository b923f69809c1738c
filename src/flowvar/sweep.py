"""``flowvar sweep``: an experiment over the cartesian grid of its config keys, cached, aggregated and plotted.

A sweep is ``EXPERIMENT`` plus axes ``--grid key=v1,v2,...`` (and ``--seeds``, shorthand for an axis over
``seed``). :func:`plan` builds and validates the config of every grid point before anything runs: the
experiment's YAML defaults (full or ``--quick``), ``--config``, ``--set`` and then the point's values, each
type-checked against the config dataclass. Every point is then looked up in the result cache
(:mod:`flowvar.cache`, the same keys as ``flowvar reproduce`` and ``flowvar run --cache``: experiment, full
config, mode, code version, torch version and thread count). Hits are not recomputed; misses run on a backend:

* ``local``: in this process (``jobs=1``) or in ``jobs`` spawned worker processes;
* ``ray``: one Ray task per point, on the cluster at ``ray_address`` (``ray.init(address=...)``) or on a
  local Ray instance with ``jobs`` CPUs. The cache folder must be visible to every node (a shared file system).

So an interrupted sweep continues where it stopped, and an extended grid (more values, more seeds) runs only
the new points. A point that fails is recorded with its error (and the traceback in ``OUT/sweep.log``); the
others finish. Output, in ``OUT``:

* ``points/<key>/``: each point's result folder (``result.json``, ``summary.md``, figures);
* ``sweep.json``: the grid, the options, and per point its values, status, cache key, runtime, verdicts and
  every scalar metric flattened to dotted names (``a.b.c``); ``sweep.csv``: the same, one row per point;
* ``figures/``: for every ``--metric`` (a flattened name, optionally with ``*`` wildcards and ``{config_key}``
  placeholders filled from each point's config, e.g. ``table2.N={ns[0]}.sigma={sigmas[1]}.l2_to_ot.mean``) a
  line plot (one swept key) or heatmap (two; more: one panel per value of the rest) of its mean over seeds, with
  the standard deviation over seeds as error bars or annotations; and for every claim a verdict map
  (confirmed +1, inconclusive 0, refuted −1, averaged over seeds): where the paper's claim holds.

Presets. An experiment's YAML file may define named sweeps (``sweeps: {NAME: {description, grid, set, metrics,
quick: {grid, set}}}``), run with ``--preset NAME``; ``--grid``/``--set`` given on the command line override
the preset's axes and values. ``table2`` and ``table3`` define their σ and N sweeps this way.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import itertools
import json
import logging
import math
import sys
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from flowvar.cache import Cache, cache_key, code_version, config_dict, install
from flowvar.errors import ConfigError
from flowvar.results import Result, atomic_write_text, to_jsonable, versions
from flowvar.runner import Backend, dispatch, make_backend, sigterm_as_interrupt

log = logging.getLogger("flowvar.sweep")
STATUSES = ("computed", "cached", "failed", "not run")


# --------------------------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Axis:
    """One swept config key and its values (already coerced to the field's type)."""

    key: str
    values: tuple[Any, ...]


def split_values(text: str) -> list[str]:
    """Split ``v1,v2,...`` on the commas outside brackets and quotes: ``[0,0.05],[0,0.1]`` → two values."""
    parts, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


def _canonical(value: Any) -> str:
    return json.dumps(to_jsonable(value), sort_keys=True)


def parse_axis(spec: Any, item: str, *, source: str = "--grid") -> Axis:
    """``"key=v1,v2"`` → :class:`Axis` for experiment ``spec``; values are YAML (lists as ``[a,b]``)."""
    from flowvar.experiments.base import _parse_scalar

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{source} expects key=v1,v2,..., got {item!r} (for example --grid sigma=0,0.05)")
    raws = split_values(raw)
    if not raw.strip() or any(not r for r in raws):
        raise ConfigError(f"{source} {item}: empty value list for {key} (give one or more values: "
                          f"{key}=v1,v2)")
    return make_axis(spec, key, [_parse_scalar(text) for text in raws], f"{source} {item}")


def make_axis(spec: Any, key: str, values: Sequence[Any], where: str) -> Axis:
    """An :class:`Axis` of ``spec``'s config key ``key`` from parsed values (YAML scalars or lists), each coerced
    to the field's type; an unknown key, no values or a value given twice is a :class:`ConfigError` starting with
    ``where``."""
    from flowvar.experiments.base import coerce

    hints = typing.get_type_hints(spec.config_cls)
    if key not in hints:
        raise ConfigError(f"{where}: unknown config key {key!r} for {spec.name}; valid keys: "
                          f"{', '.join(spec.field_names())}")
    if not values:
        raise ConfigError(f"{where}: {key} must list one or more values")
    coerced, seen = [], set()
    for raw in values:
        value = coerce(key, raw, hints[key], source=f"{where}: {key}={raw}")
        canon = _canonical(value)
        if canon in seen:
            raise ConfigError(f"{where}: {key} lists {raw} twice")
        seen.add(canon)
        coerced.append(value)
    return Axis(key, tuple(coerced))


def parse_seeds(text: str | None) -> list[int] | None:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) → a list of seeds; None → None."""
    if text is None:
        return None
    seeds: list[int] = []
    try:
        for part in split_values(text):
            if "-" in part.strip("-"):
                lo, hi = part.split("-", 1)
                seeds += list(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"--seeds expects integers like 0,1,2 or a range 0-4, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must list distinct seeds, got {text!r}")
    return seeds


@dataclass(frozen=True)
class Preset:
    """A named sweep from an experiment's YAML ``sweeps:`` section."""

    name: str
    description: str
    grid: dict[str, list[Any]]
    set: dict[str, Any]
    metrics: list[str]
    seeds: list[int] | None
    verdicts: list[str] = field(default_factory=list)


def presets(spec: Any, quick: bool) -> dict[str, Preset]:
    """The named sweeps of ``spec``'s YAML file (with their ``quick:`` parts applied when ``quick``)."""
    from flowvar.experiments.base import read_yaml

    path = spec.defaults_file
    if path is None or not Path(path).is_file():
        return {}
    section = (read_yaml(path) or {}).get("sweeps") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: sweeps must be a mapping of preset names")
    out = {}
    for name, body in section.items():
        if not isinstance(body, dict) or not isinstance(body.get("grid", {}), dict):
            raise ConfigError(f"{path}: sweep preset {name} must be a mapping with a grid: {{key: [values]}}")
        grid, values = dict(body.get("grid") or {}), dict(body.get("set") or {})
        if quick:
            q = body.get("quick") or {}
            grid.update(q.get("grid") or {})
            values.update(q.get("set") or {})
        seeds = body.get("seeds")
        out[str(name)] = Preset(str(name), str(body.get("description", "")), grid, values,
                                [str(m) for m in body.get("metrics") or []],
                                [int(s) for s in seeds] if seeds else None,
                                [str(v) for v in body.get("verdicts") or []])
    return out


def preset_axes(spec: Any, preset: Preset) -> list[Axis]:
    """A preset's grid as axes (values written as YAML lists are coerced like ``--grid`` values)."""
    where = f"{spec.name} sweep preset {preset.name}"
    for key, values in preset.grid.items():
        if not isinstance(values, list):
            raise ConfigError(f"{where}: {key} must list one or more values")
    return [make_axis(spec, key, values, where) for key, values in preset.grid.items()]


@dataclass
class Point:
    """One grid point: the swept values, the overrides that build its config, the config and its cache key."""

    index: int
    values: dict[str, Any]
    overrides: dict[str, Any]
    config: Any
    key: str

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_short(v)}" for k, v in self.values.items()) or "(defaults)"


def _short(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def expand(spec: Any, axes: Sequence[Axis], *, quick: bool, overrides: dict[str, Any] | None = None,
           config_file: Path | None = None, threads: int = 1) -> list[Point]:
    """Every point of the cartesian product of ``axes`` (the last axis varies fastest), configured and keyed.

    ``overrides`` (``--set``) apply to every point before the point's own values. A point whose config is
    invalid raises :class:`ConfigError` naming it; two points with the same config are an error too.
    """
    from flowvar.experiments.base import build_config

    points: list[Point] = []
    keys: dict[str, str] = {}
    for index, combo in enumerate(itertools.product(*(a.values for a in axes))):
        values = {a.key: v for a, v in zip(axes, combo)}
        merged = {**(overrides or {}), **values}
        label = " ".join(f"{k}={_short(v)}" for k, v in values.items())
        try:
            config = build_config(spec, quick=quick, overrides=merged, config_file=config_file)
        except ConfigError as e:
            raise ConfigError(f"grid point {label}: {e}") from None
        key = cache_key(spec.name, config, quick, threads)
        if key in keys:
            raise ConfigError(f"grid points {keys[key]} and {label} have the same config; drop one of the values")
        keys[key] = label
        points.append(Point(index, to_jsonable(values), merged, config, key))
    return points


# --------------------------------------------------------------------------------------------------- options


@dataclass
class Options:
    """What ``flowvar sweep`` was asked to do (see the CLI help for each flag)."""

    experiment: str
    grid: list[str] = field(default_factory=list)
    seeds: list[int] | None = None
    preset: str | None = None
    out: Path | None = None
    cache_dir: Path | None = None
    quick: bool = False
    jobs: int = 1
    backend: str = "local"
    ray_address: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    config_file: Path | None = None
    threads: int | None = None
    metrics: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    force: bool = False
    quiet: bool = False

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path("sweeps") / self.experiment

    @property
    def cache_root(self) -> Path:
        """``--cache``, else ``OUT/.cache`` (like ``flowvar reproduce``)."""
        return Path(self.cache_dir) if self.cache_dir is not None else self.out_dir / ".cache"


@dataclass
class Plan:
    """A validated sweep: the experiment, its axes, its points, the metrics and claim patterns to plot."""

    spec: Any
    axes: list[Axis]
    points: list[Point]
    metrics: list[str]
    threads: int
    verdicts: list[str] = field(default_factory=list)


def plan(options: Options) -> Plan:
    """Validate everything and configure every point; nothing is written. Raises :class:`ConfigError`."""
    from flowvar.experiments.base import get_experiment, load_plugin
    from flowvar.runner import default_threads

    if options.jobs < 1:
        raise ConfigError(f"--jobs must be a positive integer, got {options.jobs}")
    if options.threads is not None and options.threads < 1:
        raise ConfigError(f"--threads must be a positive integer, got {options.threads}")
    make_backend(options.backend, options.jobs, 1, options.ray_address)  # checks --backend and --ray-address
    if options.config_file is not None and not Path(options.config_file).is_file():
        raise ConfigError(f"config file {options.config_file} does not exist")
    for plugin in options.plugins:
        load_plugin(plugin)
    spec = get_experiment(options.experiment)
    threads = options.threads or default_threads()
    axes: dict[str, Axis] = {}
    metrics = list(options.metrics)
    verdicts = list(options.verdicts)
    overrides: dict[str, Any] = {}
    seeds = options.seeds
    if options.preset is not None:
        known = presets(spec, options.quick)
        if options.preset not in known:
            listing = "; ".join(f"{p.name}: {p.description}" for p in known.values()) or "none"
            raise ConfigError(f"{spec.name} has no sweep preset {options.preset!r} (presets: {listing})")
        preset = known[options.preset]
        axes.update({a.key: a for a in preset_axes(spec, preset)})
        overrides.update(preset.set)
        metrics = metrics or preset.metrics
        verdicts = verdicts or preset.verdicts
        seeds = seeds if seeds is not None else preset.seeds
    for item in options.grid:
        axis = parse_axis(spec, item)
        if axis.key in axes and options.preset is None:
            raise ConfigError(f"--grid names {axis.key} twice; list all its values in one --grid {axis.key}=...")
        axes[axis.key] = axis
    if seeds is not None:
        if "seed" not in spec.field_names():
            raise ConfigError(f"--seeds: experiment {spec.name} takes no seed")
        if "seed" in axes:
            raise ConfigError("give the seeds either with --seeds or with --grid seed=..., not both")
        axes["seed"] = Axis("seed", tuple(seeds))
    if not axes:
        raise ConfigError("empty grid: give at least one --grid key=v1,v2 (or --seeds, or --preset)")
    for key, raw in options.overrides.items():
        if key not in spec.field_names():
            raise ConfigError(f"--set {key}={raw}: unknown config key {key!r} for {spec.name}; valid keys: "
                              f"{', '.join(spec.field_names())}")
    overrides.update(options.overrides)
    for key in list(overrides):
        if key in axes:
            raise ConfigError(f"{key} is both swept (--grid) and fixed (--set); drop one")
    points = expand(spec, list(axes.values()), quick=options.quick, overrides=overrides,
                    config_file=options.config_file, threads=threads)
    return Plan(spec, list(axes.values()), points, metrics, threads, verdicts)


# --------------------------------------------------------------------------------------------------- running


# --------------------------------------------------------------------------------------------------- aggregation


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metric dicts → ``{"a.b.c": scalar}``; lists and ``None`` are left out (tables, curves)."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        elif isinstance(v, bool | int | float | str):
            out[name] = v
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    return None


VERDICT_SCORE = {"confirmed": 1.0, "inconclusive": 0.0, "refuted": -1.0}
"""Verdicts as numbers for the verdict maps. "untestable" has none: a point whose precondition failed is left out
of its cell's mean (a cell where every point is untestable shows "—"), never counted as inconclusive."""


@dataclass
class PointOutcome:
    """How one point ended: its status, timings, verdicts and flattened metrics."""

    point: Point
    status: str = "not run"
    wall_s: float = 0.0
    runtime_s: float | None = None
    error: str | None = None
    verdicts: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    result: Result | None = None

    def absorb(self, result: Result) -> None:
        self.result = result
        self.runtime_s = result.runtime_s
        self.verdicts = {c.id: c.verdict for c in result.claims}
        self.metrics = flatten(result.metrics)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"point": self.point.index, "values": self.point.values, "key": self.point.key,
                            "status": self.status, "wall_s": self.wall_s, "runtime_s": self.runtime_s,
                            "error": self.error, "output": self.output, "verdicts": self.verdicts,
                            "metrics": self.metrics})


def _resolve(pattern: str, outcome: PointOutcome, values: dict[str, Any]) -> tuple[str | None, Any]:
    """The entry of ``values`` that ``pattern`` names for this point: ``{key}`` placeholders are filled from the
    point's config, then ``*``/``?`` match by :mod:`fnmatch`. ``(name, value)``; ``(None, None)`` when nothing
    matches; ``(pattern, None)`` when several names match (ambiguous)."""
    try:
        name = pattern.format(**config_dict(outcome.point.config)) if "{" in pattern else pattern
    except (KeyError, IndexError, AttributeError, ValueError):
        return None, None
    if name in values:
        return name, values[name]
    if not any(ch in name for ch in "*?["):
        return None, None
    matches = [m for m in values if fnmatch.fnmatchcase(m, name)]
    if len(matches) == 1:
        return matches[0], values[matches[0]]
    return (name if matches else None), None


def resolve_metric(pattern: str, outcome: PointOutcome) -> tuple[str | None, float | None]:
    """The flattened metric ``pattern`` names for this point (see :func:`_resolve`) and its numeric value."""
    name, value = _resolve(pattern, outcome, outcome.metrics)
    return name, (_number(value) if value is not None else None)


def resolve_verdict(pattern: str, outcome: PointOutcome) -> tuple[str | None, float | None]:
    """The claim ``pattern`` names for this point (placeholders, wildcards as for metrics) and its verdict score
    (+1 confirmed, 0 inconclusive, −1 refuted). Claims named after swept values (``table2.N=256.sigma0.05_...``)
    become one map: ``table2.N={ns[0]}.sigma{sigmas[1]}_generalises``."""
    name, verdict = _resolve(pattern, outcome, outcome.verdicts)
    return name, (VERDICT_SCORE.get(verdict) if verdict is not None else None)


def write_tables(out: Path, meta: dict[str, Any], axes: Sequence[Axis], outcomes: Sequence[PointOutcome]) -> None:
    """``sweep.json`` (everything) and ``sweep.csv`` (one row per point), both written atomically."""
    patterns = list(meta.get("metrics") or [])
    plotted = [{m: resolve_metric(m, o)[1] for m in patterns} for o in outcomes]
    data = {"meta": meta, "axes": [{"key": a.key, "values": to_jsonable(list(a.values))} for a in axes],
            "points": [{**o.to_dict(), "plotted": to_jsonable(p)} for o, p in zip(outcomes, plotted)]}
    atomic_write_text(out / "sweep.json", json.dumps(to_jsonable(data), indent=1))
    claim_ids = sorted({c for o in outcomes for c in o.verdicts})
    metric_names = sorted({m for o in outcomes for m in o.metrics})
    header = (["point"] + [a.key for a in axes] + ["status", "key", "wall_s", "runtime_s", "error"]
              + [f"plot:{m}" for m in patterns] + [f"verdict:{c}" for c in claim_ids] + metric_names)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for o, p in zip(outcomes, plotted):
        values = [json.dumps(o.point.values[a.key]) if isinstance(o.point.values[a.key], list)
                  else o.point.values[a.key] for a in axes]
        writer.writerow([o.point.index, *values, o.status, o.point.key, f"{o.wall_s:.3f}",
                         "" if o.runtime_s is None else f"{o.runtime_s:.3f}", o.error or ""]
                        + ["" if p[m] is None else p[m] for m in patterns]
                        + [o.verdicts.get(c, "") for c in claim_ids] + [o.metrics.get(m, "") for m in metric_names])
    atomic_write_text(out / "sweep.csv", buffer.getvalue())


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)
    return keep.strip("_")[:120] or "metric"


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    return mean, std, len(finite)


def cell_table(axes: Sequence[Axis], outcomes: Sequence[PointOutcome], value: Callable[[PointOutcome], float | None]
               ) -> dict[tuple[str, ...], tuple[float, float, int]]:
    """Mean, standard deviation and count over seeds of ``value`` for every combination of the non-seed axes
    (keyed by the values' labels); failed points and missing values are left out."""
    keys = [a.key for a in axes if a.key != "seed"]
    groups: dict[tuple[str, ...], list[float]] = {}
    for o in outcomes:
        cell = tuple(_short(o.point.values[k]) for k in keys)
        v = value(o) if o.status in ("computed", "cached") else None
        groups.setdefault(cell, [])
        if v is not None:
            groups[cell].append(v)
    return {cell: _mean_std(vs) for cell, vs in groups.items()}


def numeric_positions(axis: Axis) -> tuple[list[float] | None, str]:
    """x positions for a line plot: the values of a numeric axis, or, for a list-valued axis whose lists differ
    in one numeric position only (``sigmas=[0,0.05],[0,0.1]``), that position's values (label ``sigmas[1]``).
    None when the axis is categorical."""

    def is_number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if all(is_number(v) for v in axis.values):
        return [float(v) for v in axis.values], axis.key
    lists = [v for v in axis.values if isinstance(v, list | tuple)]
    if len(lists) == len(axis.values) and len({len(v) for v in lists}) == 1:
        varying = [j for j in range(len(lists[0])) if len({_canonical(v[j]) for v in lists}) > 1]
        if len(varying) == 1 and all(is_number(v[varying[0]]) for v in lists):
            return [float(v[varying[0]]) for v in lists], f"{axis.key}[{varying[0]}]"
    return None, axis.key


def plot_metric(path: Path, title: str, axes: Sequence[Axis], table: dict[tuple[str, ...], tuple[float, float, int]],
                *, verdict: bool = False) -> Path | None:
    """Line plot (one varying axis), heatmap (two) or heatmap panels (more) of a :func:`cell_table`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = [a for a in axes if a.key != "seed"]
    varying = [i for i, a in enumerate(swept) if len(a.values) > 1]
    labels = [[_short(v) for v in a.values] for a in swept]
    if not table:
        return None

    def cell(assignment: dict[int, str]) -> tuple[float, float, int]:
        return table.get(tuple(assignment.get(i, labels[i][0]) for i in range(len(swept))), (math.nan, math.nan, 0))

    if len(varying) <= 1:
        i = varying[0] if varying else 0
        xs = labels[i] if swept else ["all"]
        numbers, xlabel = numeric_positions(swept[i]) if swept else (None, "")
        stats = [cell({i: x}) for x in xs] if swept else [next(iter(table.values()))]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        positions = numbers if numbers is not None else list(range(len(xs)))
        ax.errorbar(positions, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3)
        if numbers is None:
            ax.set_xticks(positions, xs, rotation=30 if max(len(x) for x in xs) > 6 else 0)
        elif min(numbers) >= 0 and max(numbers) > 20 * max(min(v for v in numbers if v > 0), 1e-12):
            ax.set_xscale("symlog", linthresh=min(v for v in numbers if v > 0))
        ax.set_xlabel(xlabel)
        if verdict:
            ax.set_ylim(-1.2, 1.2)
            ax.set_yticks([-1, 0, 1], ["refuted", "inconclusive", "confirmed"])
        ax.set_ylabel("verdict (mean over seeds)" if verdict else "mean ± sd over seeds")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    else:
        row, col = varying[0], varying[1]
        rest = varying[2:]
        combos = list(itertools.product(*(labels[i] for i in rest))) or [()]
        if len(combos) > 12:
            log.warning("%s: %d panels; plotting the first 12", title, len(combos))
            combos = combos[:12]
        n = len(combos)
        fig, axs = plt.subplots(1, n, figsize=(1.2 + 0.9 * len(labels[col]) * n, 1.2 + 0.6 * len(labels[row])),
                                squeeze=False)
        for ax, combo in zip(axs[0], combos):
            fixed = {i: v for i, v in zip(rest, combo)}
            grid = [[cell({**fixed, row: r, col: c}) for c in labels[col]] for r in labels[row]]
            means = [[g[0] for g in line] for line in grid]
            kwargs = {"cmap": "RdYlGn", "vmin": -1, "vmax": 1} if verdict else {"cmap": "viridis"}
            image = ax.imshow(means, aspect="auto", **kwargs)
            for r, line in enumerate(grid):
                for c, (m, s, k) in enumerate(line):
                    text = "—" if k == 0 else (f"{m:.3g}" + (f"\n±{s:.2g}" if k > 1 else ""))
                    shade = image.norm(m) if math.isfinite(m) else 0.0
                    dark = not verdict and shade < 0.6  # white on the dark end of viridis, black elsewhere
                    ax.text(c, r, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
            ax.set_xticks(range(len(labels[col])), labels[col], rotation=30 if max(map(len, labels[col])) > 6 else 0)
            ax.set_yticks(range(len(labels[row])), labels[row])
            ax.set_xlabel(swept[col].key)
            ax.set_ylabel(swept[row].key)
            if combo:
                ax.set_title(", ".join(f"{swept[i].key}={v}" for i, v in fixed.items()), fontsize=8)
            fig.colorbar(image, ax=ax, fraction=0.046)
        fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def draw_figures(out: Path, plan_: Plan, outcomes: Sequence[PointOutcome]) -> tuple[list[str], list[str]]:
    """One figure per chosen metric and one verdict map per claim into ``out/figures``; returns the figure
    paths (relative to ``out``) and warnings for metrics no point reported."""
    figures, warnings = [], []
    folder = out / "figures"
    for stale in folder.glob("*.png"):  # the figures of an earlier run of this sweep (other metrics, other grid)
        stale.unlink()
    done = [o for o in outcomes if o.status in ("computed", "cached")]
    for pattern in plan_.metrics:
        resolved = [resolve_metric(pattern, o) for o in done]
        if not any(v is not None for _, v in resolved):
            ambiguous = any(n is not None for n, _ in resolved)
            import difflib

            names = sorted({m for o in done for m in o.metrics})
            close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.5)
            warnings.append(f"metric {pattern!r} " + ("matches several names per point; make the pattern more "
                                                       "specific" if ambiguous else "was reported by no point")
                            + (f" (close: {', '.join(close)})" if close else ""))
            continue
        lookup = {id(o): v for o, (_, v) in zip(done, resolved)}
        table = cell_table(plan_.axes, outcomes, lambda o, lookup=lookup: lookup.get(id(o)))
        path = plot_metric(folder / f"{_slug(pattern)}.png", pattern, plan_.axes, table)
        if path is not None:
            figures.append(path.relative_to(out).as_posix())
    for pattern in plan_.verdicts:
        scores = {id(o): resolve_verdict(pattern, o)[1] for o in done}
        if all(v is None for v in scores.values()):
            warnings.append(f"verdict pattern {pattern!r} names no claim of any point")
            continue
        table = cell_table(plan_.axes, outcomes, lambda o, scores=scores: scores.get(id(o)))
        path = plot_metric(folder / f"verdict-{_slug(pattern)}.png", f"verdict: {pattern}", plan_.axes, table,
                           verdict=True)
        if path is not None:
            figures.append(path.relative_to(out).as_posix())
    # a map per claim id that several points judge (an id only one point has would be a single cell: see the
    # tables, or name it with a --verdict pattern)
    counts: dict[str, int] = {}
    for o in done:
        for c in o.verdicts:
            counts[c] = counts.get(c, 0) + 1
    for claim in sorted(c for c, n in counts.items() if n > 1 or len(done) == 1):
        table = cell_table(plan_.axes, outcomes,
                           lambda o, claim=claim: VERDICT_SCORE.get(o.verdicts.get(claim, "")))
        path = plot_metric(folder / f"verdict-{_slug(claim)}.png", f"verdict: {claim}", plan_.axes, table,
                           verdict=True)
        if path is not None:
            figures.append(path.relative_to(out).as_posix())
    return figures, warnings


# --------------------------------------------------------------------------------------------------- sweep


@dataclass
class Summary:
    """The outcome of :func:`sweep`."""

    out: Path
    outcomes: list[PointOutcome]
    wall_s: float
    figures: list[str]
    warnings: list[str]

    @property
    def failed(self) -> list[PointOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


def dry_run(options: Options) -> str:
    """What :func:`sweep` would do, without doing it or writing anything: every point, whether the cache holds it,
    and an estimate of the time the missing ones take (from the cache's last runtime of the experiment, else
    its YAML estimate)."""
    from flowvar.experiments.base import expected_runtime
    from flowvar.report import format_duration

    the_plan = plan(options)
    cache = Cache(options.cache_root)
    lines, missing = [], 0
    for point in the_plan.points:
        entry, problem = cache.check(point.key)
        state = "cached" if entry is not None else ("corrupted: recompute" if problem else "to compute")
        missing += entry is None
        lines.append(f"{point.index:>4}  {point.label}  [{point.key}]  {state}")
    each = cache.last_runtime(the_plan.spec.name, options.quick) or expected_runtime(the_plan.spec, options.quick)
    eta = (f"~{format_duration(missing * each / options.jobs)} with --jobs {options.jobs}" if each else
           "no runtime estimate")
    lines.append(f"{len(the_plan.points)} points: {len(the_plan.points) - missing} cached, {missing} to compute "
                 f"({eta}); cache {cache.root}")
    return "\n".join(lines)


def command_line(options: Options) -> str:
    parts = [f"flowvar sweep {options.experiment}"] + [f"--grid {g}" for g in options.grid]
    if options.preset:
        parts.append(f"--preset {options.preset}")
    if options.seeds is not None:
        parts.append("--seeds " + ",".join(map(str, options.seeds)))
    parts += ["--quick"] if options.quick else []
    parts += [f"--set {k}={v}" for k, v in options.overrides.items()]
    parts += [f"--jobs {options.jobs}", f"--backend {options.backend}", f"--out {options.out_dir}"]
    if options.ray_address:
        parts.append(f"--ray-address {options.ray_address}")
    parts += [f"--metric {m}" for m in options.metrics] + [f"--verdict {v}" for v in options.verdicts]
    parts += [f"--plugin {p}" for p in options.plugins]
    return " ".join(parts)


def sweep(options: Options, stream: IO[str] | None = None) -> Summary:
    """Run (or fetch from the cache) every grid point, then write the tables and figures; see the module doc."""
    stream = stream or sys.stderr
    the_plan = plan(options)
    backend = make_backend(options.backend, options.jobs, the_plan.threads, options.ray_address)
    backend.start()  # a missing Ray, an unreachable cluster: fail before anything is written
    try:
        return _sweep(options, the_plan, backend, stream)
    finally:
        backend.close()


def _sweep(options: Options, the_plan: Plan, backend: Backend, stream: IO[str]) -> Summary:
    from flowvar.experiments.base import expected_runtime
    from flowvar.runner import DEFAULT_EXPECTED_S, Outcome, Progress, Task, check_writable, exclusive, log_to

    out = options.out_dir
    check_writable(out)
    cache = Cache(options.cache_root)
    name = the_plan.spec.name
    started = time.perf_counter()
    outcomes = [PointOutcome(p) for p in the_plan.points]
    by_key = {o.point.key: o for o in outcomes}
    with sigterm_as_interrupt(), exclusive(out, "sweep"), log_to(out / "sweep.log"):
        log.info("start: %s (%d points, code %s, %d thread(s) per point)", command_line(options),
                 len(outcomes), code_version(name), the_plan.threads)
        cache.clean_stale()
        expected = cache.last_runtime(name, options.quick) or expected_runtime(the_plan.spec, options.quick)
        tasks = [Task(o.point.label, o.point.key, float(expected or DEFAULT_EXPECTED_S), {}) for o in outcomes]
        progress = Progress(tasks, options.jobs, options.quiet, stream)
        last_write = [0.0]

        def meta(interrupted: bool = False) -> dict[str, Any]:
            return {"experiment": name, "command": command_line(options), "mode": "quick" if options.quick else "full",
                    "backend": options.backend, "jobs": options.jobs, "threads_per_point": the_plan.threads,
                    "code_version": code_version(name), "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                    "wall_s": time.perf_counter() - started, "cache": str(cache.root), "metrics": the_plan.metrics,
                    "verdict_patterns": the_plan.verdicts,
                    "versions": versions(), "interrupted": interrupted,
                    "counts": {s: sum(o.status == s for o in outcomes) for s in STATUSES}}

        computed_times: list[float] = []

        def finish(o: PointOutcome) -> None:
            if o.status == "computed":  # re-estimate the ETA of what is left from the points computed so far
                computed_times.append(o.wall_s)
                estimate = sum(computed_times) / len(computed_times)
                for label in progress.expected:
                    if label not in progress.finished and label not in progress.running:
                        progress.expected[label] = estimate
            progress.finish(Outcome(o.point.label, o.status, o.point.key, o.wall_s, error=o.error,
                                    result=o.result))
            if time.perf_counter() - last_write[0] > 2.0:  # keep the tables current without rewriting per point
                write_tables(out, meta(), the_plan.axes, outcomes)
                last_write[0] = time.perf_counter()

        interrupted = False
        figures: list[str] = []
        warnings: list[str] = []
        try:
            misses = []
            for o in outcomes:
                t0 = time.perf_counter()
                entry = None if options.force else cache.lookup(o.point.key)
                if entry is None:
                    misses.append(o.point)
                    continue
                _install(out, o, entry, "cached", time.perf_counter() - t0)
                finish(o)
            if misses:
                log.info("to compute: %d of %d points", len(misses), len(outcomes))
                config_file = str(options.config_file) if options.config_file is not None else None
                plugins = [str(Path(p).resolve()) if str(p).endswith(".py") else str(p) for p in options.plugins]

                def args(p: Point) -> tuple:
                    return (name, p.overrides, options.quick, None, config_file, str(cache.root.resolve()),
                            the_plan.threads, plugins)

                for point, reply in dispatch(backend, misses, args, lambda p: progress.start(p.label)):
                    o = by_key[point.key]
                    if reply["status"] == "computed":
                        entry = cache.lookup(point.key)
                        if entry is None or reply.get("key") != point.key:
                            reply = {"status": "failed", "wall_s": reply["wall_s"],
                                     "error": "the code changed during the sweep: the point's result has another "
                                              "cache key; rerun the sweep"}
                        else:
                            _install(out, o, entry, "computed", reply["wall_s"])
                    if reply["status"] != "computed":
                        o.status, o.wall_s, o.error = "failed", reply["wall_s"], reply["error"]
                        log.error("failed: %s: %s\n%s", point.label, reply["error"], reply.get("traceback", ""))
                    else:
                        log.info("computed: %s key=%s in %.1f s", point.label, point.key, o.wall_s)
                    finish(o)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted; finished points are cached: rerun the same command to continue")
            raise
        finally:
            progress.close()
            write_tables(out, meta(interrupted), the_plan.axes, outcomes)
            if not interrupted:
                figures, warnings = draw_figures(out, the_plan, outcomes)
                for w in warnings:
                    log.warning("%s", w)
                write_tables(out, {**meta(), "figures": figures, "warnings": warnings}, the_plan.axes, outcomes)
            log.info("finished in %.1f s: %s", time.perf_counter() - started,
                     ", ".join(f"{s}={sum(o.status == s for o in outcomes)}" for s in STATUSES))
    return Summary(out, outcomes, time.perf_counter() - started, figures, warnings)


def _install(out: Path, outcome: PointOutcome, entry: Path, status: str, wall_s: float) -> None:
    dest = out / "points" / outcome.point.key
    install(entry, dest)
    outcome.status, outcome.wall_s = status, wall_s
    outcome.output = dest.relative_to(out).as_posix()
    outcome.absorb(Result.load(dest / "result.json"))


def load_sweep(folder: Path | str) -> dict[str, Any] | None:
    """The ``sweep.json`` of a sweep folder, or None when ``folder`` has none."""
    path = Path(folder) / "sweep.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} does not load ({type(e).__name__}); rerun the sweep to rewrite it") from None


def sweep_table(data: dict[str, Any]) -> str:
    """A plain-text table of a loaded ``sweep.json``: one row per point with its values, status, verdict counts
    and (up to three of) the plotted ``--metric`` values."""
    keys = [a["key"] for a in data.get("axes", [])]
    metrics = list(data.get("meta", {}).get("metrics") or [])[:3]
    header = ["#", *keys, "status", "verdicts (c/i/r)", *metrics]
    rows = []
    for p in data.get("points", []):
        counts = [sum(v == k for v in p.get("verdicts", {}).values()) for k in ("confirmed", "inconclusive", "refuted")]
        plotted = p.get("plotted", {})
        values = [f"{plotted[m]:.4g}" if isinstance(plotted.get(m), int | float) else "–" for m in metrics]
        rows.append([str(p.get("point", "")), *(_short(p["values"].get(k)) for k in keys), p.get("status", ""),
                     "/".join(map(str, counts)) if p.get("verdicts") else "–", *values])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    return "\n".join(lines)


__all__ = ["Axis", "Options", "Plan", "Point", "PointOutcome", "Preset", "Summary", "cell_table", "draw_figures",
           "dry_run", "expand", "flatten", "load_sweep", "numeric_positions", "parse_axis", "parse_seeds", "plan",
           "plot_metric", "presets", "resolve_metric", "resolve_verdict", "split_values", "sweep", "sweep_table",
           "write_tables"]
