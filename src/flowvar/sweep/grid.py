"""The grid of a sweep: axes from ``--grid``/``--seeds``/presets, and their cartesian product of configs."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowvar.cache import cache_key
from flowvar.errors import ConfigError
from flowvar.results import to_jsonable


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


def canonical(value: Any) -> str:
    return json.dumps(to_jsonable(value), sort_keys=True)


def parse_axis(spec: Any, item: str, *, source: str = "--grid") -> Axis:
    """``"key=v1,v2"`` → :class:`Axis` for experiment ``spec``; values are YAML (lists as ``[a,b]``)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        # the example names a key of this experiment (a generic sigma=... is a key most experiments lack)
        example = item.strip() if item.strip() in spec.field_names() else \
            next((k for k in spec.field_names() if k != "seed"), "seed")
        raise ConfigError(f"{source} expects key=v1,v2,..., got {item!r} (for example {source} "
                          f"{example}=v1,v2; {spec.name}'s keys: {', '.join(spec.field_names())})")
    raws = split_values(raw)
    if not raw.strip():
        raise ConfigError(f"{source} {item}: empty value list for {key} (give one or more values: "
                          f"{key}=v1,v2)")
    if any(not r for r in raws):
        raise ConfigError(f"{source} {item}: an empty value between commas (value {raws.index('') + 1} of "
                          f"{len(raws)}); drop the extra comma: {key}={','.join(r for r in raws if r)}")
    # read as --set reads its text: decimal integers, a str-typed key keeps what was typed (data_dir=0.50)
    return make_axis(spec, key, raws, f"{source} {item}", typed=True)


def make_axis(spec: Any, key: str, values: Sequence[Any], where: str, *, typed: bool = False) -> Axis:
    """An :class:`Axis` of ``spec``'s config key ``key`` from parsed values (YAML scalars or lists) or, ``typed``,
    the texts typed on the command line, each coerced to the field's type; an unknown key, no values or a value
    given twice is a :class:`ConfigError` starting with ``where``."""
    from flowvar.experiments.base import coerce

    hints = typing.get_type_hints(spec.config_cls)
    if key not in hints:
        raise ConfigError(f"{where}: unknown config key {key!r} for {spec.name}; valid keys: "
                          f"{', '.join(spec.field_names())}")
    if not values:
        raise ConfigError(f"{where}: {key} must list one or more values")
    coerced, seen = [], set()
    for raw in values:
        value = coerce(key, raw, hints[key], source=f"{where}: {key}={raw}", typed=typed)
        canon = canonical(value)
        if canon in seen:
            raise ConfigError(f"{where}: {key} lists {raw} twice")
        seen.add(canon)
        coerced.append(value)
    return Axis(key, tuple(coerced))


MAX_POINTS = 10_000
"""The most points a sweep plans (each is configured and keyed up front, ~5 ms each): beyond, a typo, not a grid."""


def parse_seeds(text: str | None) -> list[int] | None:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) → a list of seeds; None → None."""
    if text is None:
        return None
    seeds: list[int] = []
    try:
        for part in split_values(text):
            if "-" in part.strip("-"):
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise ConfigError(f"--seeds range {part.strip()} runs backwards; write it low-high, e.g. {hi}-{lo}")
                if hi - lo + 1 > MAX_POINTS:
                    raise ConfigError(f"--seeds range {part.strip()} has {hi - lo + 1} seeds; a sweep takes at most "
                                      f"{MAX_POINTS} points")
                seeds += list(range(lo, hi + 1))
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
    names: dict[str, str] = field(default_factory=dict)
    """Each swept value as its axis writes it (:func:`axis_labels`); a key left out is written :func:`short_label`."""

    @property
    def label(self) -> str:
        """``key=value`` for every swept key, distinct between the points of one grid."""
        return " ".join(f"{k}={self.names.get(k) or short_label(v)}" for k, v in self.values.items()) or "(defaults)"


def short_label(value: Any, digits: int = 6) -> str:
    """A value as a sweep writes it: floats to ``digits`` significant digits (``%g``), lists as ``[a,b]``."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(short_label(v, digits) for v in value) + "]"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def axis_labels(axis: Axis) -> list[str]:
    """One label per value of ``axis`` (tick labels, point labels, ``flowvar show``): :func:`short_label`, with as
    many more significant digits as it takes to tell the values apart (``1`` and ``1.0000001``; ``1234567`` and
    ``1234568``, which six digits both write ``1.23457e+06``), else the values' JSON text (:func:`canonical`).
    An axis's values are distinct (:func:`make_axis`), so its labels are."""
    for digits in range(6, 18):
        labels = [short_label(v, digits) for v in axis.values]
        if len(set(labels)) == len(labels):
            return labels
    return [canonical(v) for v in axis.values]


def check_shared_options(spec: Any, overrides: dict[str, Any], config_file: Path | None) -> None:
    """The errors of what every grid point shares — a ``--config`` file (an unknown key, a value of the wrong type)
    and the ``--set`` values — as their own, before any point is built: a typo in the file is the file's, not "grid
    point repeats=2"'s. The same checks :func:`flowvar.experiments.base.build_config` makes (``user_config``,
    ``coerce``); an error that needs a point's values (a cross-field check) is still reported with its point."""
    import typing

    from flowvar.experiments.config import coerce, user_config

    if config_file is not None:
        user_config(spec, config_file)
    hints = typing.get_type_hints(spec.config_cls)
    for key, raw in overrides.items():
        if key in hints:  # an unknown key: named by plan() and build_config, with the valid keys
            coerce(key, raw, hints[key])


def expand(spec: Any, axes: Sequence[Axis], *, quick: bool, overrides: dict[str, Any] | None = None,
           config_file: Path | None = None, threads: int = 1) -> list[Point]:
    """Every point of the cartesian product of ``axes`` (the last axis varies fastest), configured and keyed.

    ``overrides`` (``--set``) apply to every point before the point's own values. A point whose config is
    invalid raises :class:`ConfigError` naming it; two points with the same config are an error too.
    """
    from flowvar.experiments.base import build_config

    size = math.prod(len(a.values) for a in axes)
    if size > MAX_POINTS:
        raise ConfigError(f"the grid has {size} points ({' × '.join(f'{len(a.values)} {a.key}' for a in axes)}); a "
                          f"sweep takes at most {MAX_POINTS}: split it into several sweeps")
    check_shared_options(spec, overrides or {}, config_file)
    points: list[Point] = []
    keys: dict[str, str] = {}
    written = [axis_labels(a) for a in axes]
    for index, positions in enumerate(itertools.product(*(range(len(a.values)) for a in axes))):
        values = {a.key: a.values[j] for a, j in zip(axes, positions)}
        names = {a.key: labels[j] for a, labels, j in zip(axes, written, positions)}
        merged = {**(overrides or {}), **values}
        label = " ".join(f"{k}={names[k]}" for k in values)
        try:
            config = build_config(spec, quick=quick, overrides=merged, config_file=config_file)
        except ConfigError as e:
            raise ConfigError(f"grid point {label}: {e}") from None
        key = cache_key(spec.name, config, quick, threads)
        if key in keys:
            raise ConfigError(f"grid points {keys[key]} and {label} have the same config; drop one of the values")
        keys[key] = label
        points.append(Point(index, to_jsonable(values), merged, config, key, names))
    check_read_axes(spec, axes, points)
    return points


def check_read_axes(spec: Any, axes: Sequence[Axis], points: Sequence[Point]) -> None:
    """Refuse a grid two of whose points differ only in fields the experiment does not read at them (its
    ``ignores`` hook, :func:`flowvar.experiments.ignoring`: sigma_tradeoff's ``resolution`` with ``dataset=gmm``;
    fig6's figure-only ``primary_steps``; prop1's, fig4's and fig5's ``cov_diag`` once ``cov`` is set): they would
    compute the same metrics and verdicts under two cache keys, and a map over that axis would draw a flat line or
    row — "no effect" — that nothing tested. A one-line :class:`ConfigError` names the field, why the experiment
    does not read it, the two points and the fix. An experiment without the hook is not checked."""
    ignores = getattr(spec, "ignores", None)
    swept = {a.key for a in axes}
    if ignores is None or not swept:
        return
    unused = [dict(ignores(point.config)) for point in points]
    seen: dict[str, int] = {}
    for i, point in enumerate(points):
        if not swept & set(unused[i]):  # every swept field is read here: the point's key says what it computes
            continue
        read = {f.name: getattr(point.config, f.name) for f in dataclasses.fields(point.config)
                if f.name not in unused[i]}
        j = seen.setdefault(canonical([read, sorted(unused[i])]), i)
        if j == i:
            continue
        first = points[j]
        key = next(k for k in point.values if canonical(point.values[k]) != canonical(first.values[k]))
        # read nowhere: drop the axis; read at some points (dataset=gmm,digits × resolution): sweep it where it is
        fix = (f"drop {key} from the grid" if all(key in u for u in unused) else
               f"drop {key} from the grid, or sweep it in a sweep of its own where it is read")
        raise ConfigError(f"sweeping {key}: {spec.name} does not read {key} {unused[j][key]}; the grid points "
                          f"{first.label} and {point.label} would compute the same metrics and verdicts (a flat map "
                          f"that nothing tested): {fix}")


def check_disjoint_replicates(experiment: str, points: Sequence[Point], seeds_from: str) -> None:
    """Refuse seed values that make two points of one cell train the same seed.

    An experiment with ``n_seeds`` replicates trains seeds ``seed, …, seed + n_seeds − 1`` at each point
    (:meth:`RunContext.replicate <flowvar.experiments.base.RunContext.replicate>`), so with n_seeds = 2 the points
    seed=0 and seed=1 of one cell (the same values of every other axis) share the training of seed 1, and the
    cell's mean ± sd and "k of n seeds" would count one model twice as independent replicates. The seeds of one
    cell must lie at least its effective ``n_seeds`` (after ``--quick``, ``--config``, ``--set`` and the preset)
    apart; a :class:`ConfigError` names the first overlap and the fix: seeds ``n_seeds`` apart, or one replicate
    per point. ``seeds_from`` is the flag that gave the seeds (``--seeds``, ``--grid seed=``, a preset)."""
    cells: dict[str, list[tuple[int, int]]] = {}
    for p in points:
        n = getattr(p.config, "n_seeds", None)
        if "seed" in p.values and isinstance(n, int) and not isinstance(n, bool) and n > 1:
            cell = canonical({k: v for k, v in p.values.items() if k != "seed"})
            cells.setdefault(cell, []).append((int(p.values["seed"]), n))
    for members in cells.values():
        members.sort()
        for (low, n), (high, _) in itertools.pairwise(members):
            if high < low + n:
                def written(seeds: Sequence[int], flag: str) -> str:
                    return f"{flag}{'' if flag.endswith('=') else ' '}{','.join(map(str, seeds))}"

                spaced = [members[0][0] + n * j for j in range(len(members))]
                fix = written(spaced, seeds_from if seeds_from in ("--seeds", "--grid seed=") else "--seeds")
                raise ConfigError(f"{written([s for s, _ in members], seeds_from)}: every point of {experiment} "
                                  f"trains n_seeds = {n} seeds (seed … "
                                  f"seed + {n - 1}), so the points seed={low} and seed={high} would share the training "
                                  f"of seed {high} and count it twice in their cell's mean ± sd; give seeds {n} "
                                  f"apart: {fix} (steps of n_seeds = {n}), or --set n_seeds=1")


__all__ = ["MAX_POINTS", "Axis", "Point", "Preset", "axis_labels", "canonical", "check_disjoint_replicates",
           "check_read_axes", "check_shared_options", "expand", "make_axis", "parse_axis", "parse_seeds",
           "preset_axes", "presets", "short_label", "split_values"]
