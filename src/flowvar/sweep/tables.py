"""A sweep's aggregation: each point's outcome, metrics flattened to dotted names, ``sweep.json``/``sweep.csv``,
the mean ± sd over seeds per cell, and the terminal table of ``flowvar show``."""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import re
import string
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowvar.cache import config_dict
from flowvar.errors import ConfigError, DataError
from flowvar.files import atomic_write_text
from flowvar.results import Result, to_jsonable
from flowvar.sweep.grid import Axis, Point, axis_labels, canonical, short_label

STATUSES = ("computed", "cached", "failed", "not run")




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
of its cell's mean (a cell where every point is untestable is drawn as a "no verdict" mark saying so), never counted
as inconclusive."""

NOT_JUDGED = "claim absent"
"""Why a finished point gives a verdict map no verdict when it has no claim of that id (or pattern)."""

NOT_REPORTED = "not reported"
"""Why a finished point gives a metric figure no value when it reports no metric of that name."""

AMBIGUOUS = "ambiguous pattern"
"""Why a finished point gives no value when the pattern matches several of its names."""


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
    point's config (:func:`_fills`), then ``*``/``?`` match by :mod:`fnmatch`. ``(name, value)``; ``(None, None)``
    when nothing matches; ``(pattern, None)`` when several names match (ambiguous)."""
    matches = matching_names(pattern, outcome, values)
    if len(matches) == 1:
        return matches[0], values[matches[0]]
    return (pattern if matches else None), None


class _ShortFloats(string.Formatter):
    """Fills a bare ``{key}`` holding a float with ``format(value, "g")`` (``2.0`` → ``2``), as fig4 and fig5 write
    σ in their metric names (``σ=2/90deg``); any explicit format spec is kept."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, float) and not format_spec:
            return format(value, "g")
        return super().format_field(value, format_spec)


def _fills(pattern: str, outcome: PointOutcome) -> list[str]:
    """``pattern`` with its ``{key}`` placeholders filled from the point's config: first with Python's ``str`` of
    each value (``sigma1.0``, as table2 names its claims), then, where it differs, with floats written ``:g``
    (``σ=2``, as fig4/fig5 name their metrics). Empty when a placeholder names no key of the config."""
    if "{" not in pattern:
        return [pattern]
    config = config_dict(outcome.point.config)
    try:
        filled = [pattern.format(**config), _ShortFloats().format(pattern, **config)]
    except (KeyError, IndexError, AttributeError, ValueError, TypeError):
        return []
    return list(dict.fromkeys(filled))


def matching_names(pattern: str, outcome: PointOutcome, values: Collection[str]) -> list[str]:
    """The names among ``values`` that ``pattern`` names for this point, sorted: a filled pattern (:func:`_fills`,
    ``str`` form first) that is one of them, else every name the first filled form whose ``*``/``?``/``[``
    wildcards match anything matches (several: the pattern is ambiguous)."""
    names = _fills(pattern, outcome)
    for name in names:
        if name in values:
            return [name]
    for name in names:
        if any(ch in name for ch in "*?["):
            matches = sorted(m for m in values if fnmatch.fnmatchcase(m, name))
            if matches:
                return matches
    return []


def resolve_metric(pattern: str, outcome: PointOutcome) -> tuple[str | None, float | None]:
    """The flattened metric ``pattern`` names for this point (see :func:`_resolve`) and its numeric value."""
    name, value = _resolve(pattern, outcome, outcome.metrics)
    return name, (_number(value) if value is not None else None)


def close_metric_names(pattern: str, names: Sequence[str], n: int = 5) -> list[str]:
    """Up to ``n`` metric names like ``pattern`` (a misspelt ``--metric``): :func:`difflib.get_close_matches` on the
    whole dotted name, then on its last part (``y`` finds ``stats.y``, ``l2_to_ot`` finds ``...l2_to_ot.mean``)."""
    import difflib

    close = difflib.get_close_matches(pattern, list(names), n=n, cutoff=0.6)
    by_part: dict[str, list[str]] = {}
    for name in names:
        for part in name.split("."):
            by_part.setdefault(part, []).append(name)
    for part in pattern.split(".")[::-1]:
        if not part or any(ch in part for ch in "*?[{"):
            continue
        for hit in difflib.get_close_matches(part, list(by_part), n=3, cutoff=0.75):
            close += sorted(by_part[hit])
    return list(dict.fromkeys(close))[:n]


def unknown_metrics(patterns: Sequence[str], outcomes: Sequence[PointOutcome]) -> list[str]:
    """The ``--metric`` patterns that name no metric of any finished point in ``outcomes``, whatever the
    placeholders hold: each ``{config_key}`` counts as a ``*`` wildcard, so a pattern that names another point's
    metric is not unknown. Empty when no point has finished (nothing to check against yet)."""
    done = [o for o in outcomes if o.status in ("computed", "cached")]
    if not done:
        return []
    return unknown_patterns(patterns, {m for o in done for m in o.metrics})


def unknown_patterns(patterns: Sequence[str], names: Collection[str]) -> list[str]:
    """The patterns that match none of ``names``, each ``{config_key}`` placeholder counting as a ``*``."""
    unknown = []
    for pattern in patterns:
        shape = "".join("*" if part.startswith("{") else part
                        for part in _split_placeholders(pattern))
        if not any(fnmatch.fnmatchcase(m, shape) for m in names):
            unknown.append(pattern)
    return unknown


def unknown_placeholders(pattern: str, keys: Collection[str]) -> list[str]:
    """The placeholders of ``pattern`` (``{key}``, ``{ns[0]}``, ``{sigma:g}``) whose root name — before any ``[``,
    ``.``, ``!`` or ``:`` — is none of ``keys`` (the experiment's config keys), as written (``{xx}``), in order; a
    placeholder with no name (``{}``) counts too. Such a pattern is filled at no point (:func:`_fills` gives
    nothing), so its figure would be empty: :func:`check_placeholders` refuses it before anything runs. Text that
    is no format string (an unclosed ``{``) is left to the name checks."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError:
        return []
    return [f"{{{name}}}" for name in fields if re.split(r"[.\[]", name, maxsplit=1)[0] not in keys]


def check_placeholders(metrics: Sequence[str], verdicts: Sequence[str], experiment: str,
                       keys: Sequence[str]) -> None:
    """Raise :class:`ConfigError` (one line) when a ``--metric`` or ``--verdict`` pattern has a ``{placeholder}``
    naming no config key of ``experiment`` (:func:`unknown_placeholders`: ``by_x.x={xx}`` for ``{x}``), listing the
    keys and the close ones. Checked before anything runs: such a pattern names nothing at any point, and a sweep
    would otherwise find the typo only at its end, as a missing figure."""
    import difflib

    parts = []
    for flag, patterns in (("--metric", metrics), ("--verdict", verdicts)):
        for pattern in patterns:
            for placeholder in unknown_placeholders(pattern, keys):
                close = difflib.get_close_matches(placeholder.strip("{}"), list(keys), n=1, cutoff=0.5)
                parts.append(f"{flag} {pattern!r}: the placeholder {placeholder} names no config key of {experiment}"
                             + (f" (did you mean {{{close[0]}}}?)" if close else ""))
    if parts:
        raise ConfigError("; ".join(parts) + f"; a placeholder is filled from a config key: {', '.join(keys)}")


def _split_placeholders(pattern: str) -> list[str]:
    """``"a.{x}.b"`` → ``["a.", "{x}", ".b"]``: the literal parts and the ``{config_key}`` placeholders."""
    return [part for part in re.split(r"(\{[^{}]*\})", pattern) if part]


def placeholder_pattern(pattern: str, grid: Sequence[Mapping[str, Any]], names: Collection[str]) -> str | None:
    """``pattern`` with a swept value written out (``by_x.x=2.0``, which only the point x = 2 reports) replaced by
    its ``{key}`` placeholder (``by_x.x={x}``), when that form names something among ``names`` (placeholders
    counting as ``*``, :func:`unknown_patterns`); None when no such form does. ``grid``: every point's swept values
    (``Point.values``); they are tried as the points write them: ``str`` and, for a float, ``:g``."""
    for values in grid:
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                continue
            for text in dict.fromkeys([str(value), *([format(value, "g")] if isinstance(value, float) else [])]):
                if text and text in pattern:
                    candidate = pattern.replace(text, "{" + key + "}")
                    if not unknown_patterns([candidate], names):
                        return candidate
    return None


def check_outputs(metrics: Sequence[str], verdicts: Sequence[str], outcomes: Sequence[PointOutcome], experiment: str,
                  *, names_in: str = "", consequence: str = "", grid: Sequence[Mapping[str, Any]] = ()) -> None:
    """Raise :class:`ConfigError` (one line) when a ``--metric`` pattern names no metric, or a ``--verdict`` pattern
    no claim, of the finished points in ``outcomes`` (:func:`unknown_patterns`; placeholders count as wildcards),
    naming the close matches, else a few of the valid names and how many there are; or when a pattern matches
    several names of one point (:func:`matching_names`), listing them. ``names_in`` is a clause
    saying where the full list can be read, ``consequence`` what the refusal left behind; ``grid``, the swept values
    of every point of the grid (default: those of ``outcomes``), lets a literal name that only other points report
    be answered with its placeholder form (:func:`placeholder_pattern`). Nothing to check against
    (no finished point) passes: the caller checks again when a point finishes."""
    done = [o for o in outcomes if o.status in ("computed", "cached")]
    if not done:
        return
    parts = []
    for flag, patterns, noun, names in (
            ("--metric", metrics, "metric", sorted({m for o in done for m in o.metrics})),
            ("--verdict", verdicts, "claim", sorted({c for o in done for c in o.verdicts}))):
        for pattern in unknown_patterns(patterns, names):
            close = close_metric_names(pattern, names)
            listing = (f"close: {', '.join(close)}" if close else
                       f"it reports {len(names)}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}")
            hint = placeholder_pattern(pattern, grid or [o.point.values for o in outcomes], names)
            parts.append(f"{flag} {pattern!r} names no {noun} of {experiment} ({listing})"
                         + (f"; it names a value of the grid, which other points may report: write it with its "
                            f"placeholder, {flag} {hint!r}" if hint else ""))
    # a pattern matching several names of one point gives that point no value (its figure would be empty)
    for flag, patterns, noun, names_of in (("--metric", metrics, "metrics", lambda o: o.metrics),
                                           ("--verdict", verdicts, "claims", lambda o: o.verdicts)):
        for pattern in patterns:
            several = next(((o, m) for o in done if len(m := matching_names(pattern, o, names_of(o))) > 1), None)
            if several is not None:
                parts.append(f"{flag} {pattern!r} matches several {noun} of {experiment} at point "
                             f"{several[0].point.label} ({', '.join(several[1])}): make it name one")
    if parts:
        raise ConfigError("; ".join(parts) + (f"; {names_in}" if names_in else "")
                          + (f"; {consequence}" if consequence else ""))


def _gap(outcome: PointOutcome, pattern: str, names: dict[str, Any], missing: str) -> tuple[bool, Any]:
    """``(True, reason)`` when ``outcome`` cannot give ``pattern`` a value for a reason that is not the value itself:
    its status when it did not finish, ``missing`` when no name matches, :data:`AMBIGUOUS` when several do; else
    ``(False, the matched value)``."""
    if outcome.status not in ("computed", "cached"):
        return True, outcome.status
    name, value = _resolve(pattern, outcome, names)
    if name is None:
        return True, missing
    if value is None:
        return True, AMBIGUOUS
    return False, value


def metric_gap(pattern: str, outcome: PointOutcome) -> str | None:
    """Why ``outcome`` gives the metric figure of ``pattern`` no value ("failed", "not run", :data:`NOT_REPORTED`,
    :data:`AMBIGUOUS`, "not a number", "not finite": the cases :func:`cell_table` leaves out), or None."""
    gap, value = _gap(outcome, pattern, outcome.metrics, NOT_REPORTED)
    if gap:
        return value
    number = _number(value)
    return "not a number" if number is None else (None if math.isfinite(number) else "not finite")


def verdict_gap(pattern: str, outcome: PointOutcome) -> str | None:
    """Why ``outcome`` gives the verdict map of ``pattern`` (a claim id, or a pattern as for metrics) no verdict
    ("failed", "not run", :data:`NOT_JUDGED`, :data:`AMBIGUOUS`, or the unscored verdict: "untestable"), or None."""
    gap, value = _gap(outcome, pattern, outcome.verdicts, NOT_JUDGED)
    return value if gap else (None if value in VERDICT_SCORE else str(value))


def verdict_of(pattern: str, outcome: PointOutcome) -> str | None:
    """The verdict (``"confirmed"``, ..., ``"untestable"``) of the one claim ``pattern`` names at this finished
    point; None when it did not finish, names no claim or several."""
    if outcome.status not in ("computed", "cached"):
        return None
    return _resolve(pattern, outcome, outcome.verdicts)[1]


VERDICT_LETTER = {"confirmed": "c", "inconclusive": "i", "refuted": "r"}
"""How a split cell (:func:`verdict_splits`) writes each scored verdict: ``1 c / 1 r``."""


def verdict_splits(axes: Sequence[Axis], outcomes: Sequence[PointOutcome],
                   verdict: Callable[[PointOutcome], str | None]) -> dict[tuple[str, ...], str]:
    """The cells (:func:`cell_of`) whose seeds give different scored verdicts, each with their counts in the order
    confirmed, inconclusive, refuted (``"1 c / 1 r"``). The mean score of such a cell (one confirmed, one refuted:
    0) would read as "inconclusive", a verdict no seed gave: a verdict map draws these cells as split, never in a
    verdict's colour. Unscored verdicts (untestable) and points with none are not counted."""
    found: dict[tuple[str, ...], list[str]] = {}
    for o in outcomes:
        v = verdict(o)
        if v in VERDICT_SCORE:
            found.setdefault(cell_of(axes, o.point.values), []).append(v)  # type: ignore[arg-type]
    return {cell: " / ".join(f"{verdicts.count(v)} {letter}" for v, letter in VERDICT_LETTER.items()
                             if v in verdicts)
            for cell, verdicts in found.items() if len(set(verdicts)) > 1}


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


def slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)
    return keep.strip("_")[:120] or "metric"


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    return mean, std, len(finite)


def cell_of(axes: Sequence[Axis], values: dict[str, Any]) -> tuple[str, ...]:
    """The cell of a point with these swept ``values``: the :func:`~flowvar.sweep.grid.canonical` text of each of
    its non-seed values, in axis order (never a rounded label: ``x=1`` and ``x=1.0000001`` are two cells)."""
    return tuple(canonical(values[a.key]) for a in axes if a.key != "seed")


def cell_table(axes: Sequence[Axis], outcomes: Sequence[PointOutcome], value: Callable[[PointOutcome], float | None]
               ) -> dict[tuple[str, ...], tuple[float, float, int]]:
    """Mean, standard deviation and count over seeds of ``value`` for every combination of the non-seed axes
    (keyed by :func:`cell_of`); failed points and missing values are left out."""
    groups: dict[tuple[str, ...], list[float]] = {}
    for o in outcomes:
        cell = cell_of(axes, o.point.values)
        v = value(o) if o.status in ("computed", "cached") else None
        groups.setdefault(cell, [])
        if v is not None:
            groups[cell].append(v)
    return {cell: _mean_std(vs) for cell, vs in groups.items()}


def cell_gaps(axes: Sequence[Axis], outcomes: Sequence[PointOutcome], reason: Callable[[PointOutcome], str | None]
              ) -> dict[tuple[str, ...], str]:
    """For every cell of :func:`cell_table` none of whose points gives a value, why: the distinct
    ``reason(outcome)`` of its points (:func:`metric_gap`, :func:`verdict_gap`) joined by " / " (seeds may
    differ). A figure draws these cells as marked gaps, so every point of the grid appears in it."""
    reasons: dict[tuple[str, ...], list[str | None]] = {}
    for o in outcomes:
        reasons.setdefault(cell_of(axes, o.point.values), []).append(reason(o))
    return {cell: " / ".join(sorted(set(why))) for cell, why in reasons.items()  # type: ignore[arg-type]
            if all(r is not None for r in why)}


def cell_shortfalls(axes: Sequence[Axis], outcomes: Sequence[PointOutcome],
                    reason: Callable[[PointOutcome], str | None]) -> dict[tuple[str, ...], str]:
    """For every cell some of whose points give a value and some do not (a seed judged, another untestable or
    failed), why the others do not: each distinct ``reason(outcome)`` (:func:`metric_gap`, :func:`verdict_gap`)
    with its count, in order of appearance (``"1 untestable"``, ``"1 failed, 2 untestable"``). A figure writes it
    beside the cell's "k of n seeds", so that "confirmed, 1 of 2 seeds (1 untestable)" and "(1 failed)" read apart;
    the cells with no value at all are :func:`cell_gaps`'."""
    reasons: dict[tuple[str, ...], list[str | None]] = {}
    for o in outcomes:
        reasons.setdefault(cell_of(axes, o.point.values), []).append(reason(o))
    out = {}
    for cell, why in reasons.items():
        missing = [r for r in why if r is not None]
        if missing and len(missing) < len(why):
            out[cell] = ", ".join(f"{missing.count(r)} {r}" for r in dict.fromkeys(missing))
    return out


def load_sweep(folder: Path | str) -> dict[str, Any] | None:
    """The ``sweep.json`` of a sweep folder, or None when ``folder`` has none."""
    path = Path(folder) / "sweep.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not a valid sweep index ({type(e).__name__}); rerun the sweep command to "
                        f"rewrite it") from None
    missing = [k for k in ("axes", "points") if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:  # an empty table would read as a sweep of no points
        raise DataError(f"{path} is not a sweep index (no {' or '.join(missing)} list); rerun the sweep command to "
                        f"rewrite it")
    problem = sweep_index_problem(data)
    if problem:  # a hand-edited or foreign file: one line here, not a KeyError in whoever reads it
        raise DataError(f"{path} is not a valid sweep index ({problem}); rerun the sweep command to rewrite it")
    return data


def sweep_index_problem(data: dict[str, Any]) -> str | None:
    """What makes ``data`` (a parsed ``sweep.json`` with ``axes`` and ``points`` lists) unreadable by the table,
    figures and assembly, or None: each axis ``{"key": str, "values": list}``, each point a dict whose ``values``
    is a dict and whose ``verdicts``, ``metrics`` and ``plotted``, where present, are dicts, and ``meta`` a dict
    whose ``metrics`` (where present) is a list."""
    meta = data.get("meta", {})
    if not isinstance(meta, dict) or not isinstance(meta.get("metrics", []), list):
        return "meta must be an object with a metrics list"
    for i, axis in enumerate(data["axes"]):
        if not isinstance(axis, dict) or not isinstance(axis.get("key"), str) or \
                not isinstance(axis.get("values", []), list):
            return f"axes[{i}] must be {{'key': name, 'values': [...]}}"
    for i, point in enumerate(data["points"]):
        if not isinstance(point, dict) or not isinstance(point.get("values"), dict):
            return f"points[{i}] has no 'values' object"
        wrong = [k for k in ("verdicts", "metrics", "plotted") if not isinstance(point.get(k, {}), dict)]
        if wrong:
            return f"points[{i}].{wrong[0]} must be an object"
    return None


def sweep_table(data: dict[str, Any]) -> str:
    """A plain-text table of a loaded ``sweep.json``: one row per point with its values, status, verdict counts
    (confirmed/inconclusive/refuted/untestable) and (up to three of) the plotted ``--metric`` values."""
    keys = [a["key"] for a in data.get("axes", [])]
    # each value as its axis writes it: distinct where six digits would write two values alike
    written = {a["key"]: dict(zip(map(canonical, a.get("values") or []),
                                  axis_labels(Axis(a["key"], tuple(a.get("values") or [])))))
               for a in data.get("axes", [])}
    metrics = list(data.get("meta", {}).get("metrics") or [])[:3]
    header = ["#", *keys, "status", "verdicts (c/i/r/u)", *metrics]
    rows = []
    for p in data.get("points", []):
        counts = [sum(v == k for v in p.get("verdicts", {}).values())
                  for k in ("confirmed", "inconclusive", "refuted", "untestable")]
        plotted = p.get("plotted", {})
        # sweep.json writes a non-finite value as the text "inf"/"-inf"/"nan" (JSON has no number for it): shown as
        # that value, not as "–", which says there is none
        numbers = [_number(plotted.get(m)) for m in metrics]
        values = [f"{v:.4g}" if v is not None else "–" for v in numbers]
        labels = [written.get(k, {}).get(canonical(p["values"].get(k))) or short_label(p["values"].get(k))
                  for k in keys]
        rows.append([str(p.get("point", "")), *labels, p.get("status", ""),
                     "/".join(map(str, counts)) if p.get("verdicts") else "–", *values])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    return "\n".join(lines)


__all__ = ["AMBIGUOUS", "NOT_JUDGED", "NOT_REPORTED", "STATUSES", "VERDICT_LETTER", "VERDICT_SCORE", "PointOutcome",
           "cell_gaps", "cell_of", "cell_shortfalls", "cell_table", "check_outputs", "check_placeholders",
           "close_metric_names", "flatten", "load_sweep", "matching_names", "metric_gap", "placeholder_pattern",
           "resolve_metric", "resolve_verdict", "slug", "sweep_index_problem", "sweep_table", "unknown_metrics",
           "unknown_patterns", "unknown_placeholders", "verdict_gap", "verdict_of", "verdict_splits", "write_tables"]
