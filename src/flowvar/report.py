"""Reading finished runs back and rendering their verdicts (terminal and Markdown)."""

from __future__ import annotations

import json
from pathlib import Path

from flowvar.errors import DataError
from flowvar.results import Result, format_value


def load_results(folder: Path | str) -> list[Result]:
    """Every ``*/result.json`` directly under ``folder`` (one per experiment), sorted by experiment name.

    A missing folder, or one with no results, is a :class:`DataError`; an unreadable result file is reported
    by name instead of being trusted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"no run folder at {folder}; pass the --out folder of a finished `flowvar run`")
    results = []
    for path in sorted(folder.glob("*/result.json")):
        try:
            results.append(Result.load(path))
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise DataError(f"{path} is not a valid flowvar result ({e}); rerun that experiment") from None
    if not results:
        raise DataError(f"{folder} holds no */result.json; run `flowvar run EXPERIMENT --out {folder}` first")
    return sorted(results, key=lambda r: r.experiment)


def verdict_table(results: list[Result], evidence_items: int = 3) -> str:
    """A Markdown table: one row per claim with its verdict and the first few evidence numbers."""
    lines = ["| experiment | claim | verdict | evidence |", "|---|---|---|---|"]
    for r in results:
        for c in r.claims:
            ev = "; ".join(f"{k}={format_value(v)}" for k, v in list(c.evidence.items())[:evidence_items])
            lines.append(f"| {r.experiment} | `{c.id}` | **{c.verdict}** | {ev} |")
    return "\n".join(lines)


def verdict_counts(results: list[Result]) -> dict[str, int]:
    counts = {"confirmed": 0, "refuted": 0, "inconclusive": 0}
    for r in results:
        for c in r.claims:
            counts[c.verdict] += 1
    return counts
