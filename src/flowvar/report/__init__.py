"""Reading finished runs back and reporting them: the verdict tables of ``flowvar show`` and the report of
``flowvar reproduce`` (``results.json``, ``report.md`` and the self-contained ``report.html``).

* :mod:`flowvar.report.collection`: loading run folders and collections, the compact verdict table, the README's
  generated block;
* :mod:`flowvar.report.story`: what a reader takes from one result, in words (finding paragraph, claim sentences,
  paper-beside-ours tables, figure captions), generated from the result; :mod:`flowvar.report.narrators` refines
  it for flowvar's own experiments;
* :mod:`flowvar.report.html`, :mod:`flowvar.report.markdown`: the renderings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from flowvar.files import atomic_write_text
from flowvar.report.collection import (
    KIND_TEXT,
    PAPER_REF,
    PAPER_TITLE,
    README_BEGIN,
    README_END,
    README_FULL_BEGIN,
    README_FULL_END,
    STATUS_TEXT,
    collection_results,
    format_duration,
    load_collection,
    load_results,
    merge_spread,
    readme_markers,
    readme_section,
    reconcile_copies,
    update_readme,
    verdict_counts,
    verdict_table,
)
from flowvar.report.html import render_html
from flowvar.report.markdown import render_markdown, result_markdown
from flowvar.report.narrators import build_story
from flowvar.report.story import Story, narrator
from flowvar.results import Result, to_jsonable

log = logging.getLogger("flowvar.report")


def write_reports(folder: Path | str, meta: dict[str, Any], experiments: list[dict[str, Any]]) -> dict[str, Path]:
    """Write ``results.json``, ``report.md`` and ``report.html`` into ``folder``; return their paths."""
    folder = Path(folder)
    collection = to_jsonable({"meta": meta, "experiments": experiments})
    paths = {"json": folder / "results.json", "md": folder / "report.md", "html": folder / "report.html"}
    atomic_write_text(paths["json"], json.dumps(collection, indent=1))
    atomic_write_text(paths["md"], render_markdown(collection))
    atomic_write_text(paths["html"], render_html(collection, folder))
    return paths


def rewrite_reports(folder: Path | str, collection: dict[str, Any] | None = None) -> dict[str, Path]:
    """Re-render ``report.md`` and ``report.html`` of a ``flowvar reproduce`` folder from its ``results.json``, and
    each experiment's ``summary.md`` from its ``result.json`` (after an upgrade of the report; nothing is
    recomputed). A folder without ``results.json`` is a :class:`~flowvar.errors.DataError`.

    ``collection``: the folder's results.json already read by :func:`load_collection` and reconciled by
    :func:`reconcile_copies` (the caller has shown its warnings); without it both are done here and each
    disagreement is logged as a warning. Every file is rendered from the same result of each experiment, its own
    ``result.json``: report.md and summary.md cannot tell one experiment two ways. An experiment whose result.json
    flowvar cannot read keeps its summary.md."""
    from flowvar.errors import DataError

    folder = Path(folder)
    if collection is None:
        collection = load_collection(folder)
        if collection is None:
            raise DataError(f"{folder} is not a `flowvar reproduce` folder (no results.json); run `flowvar "
                            f"reproduce --out {folder}` first")
        for note in reconcile_copies(folder, collection):
            log.warning("%s", note)
    paths = {"md": folder / "report.md", "html": folder / "report.html"}
    atomic_write_text(paths["md"], render_markdown(collection))
    atomic_write_text(paths["html"], render_html(collection, folder))
    for entry in collection["experiments"]:
        result_json = folder / entry["name"] / "result.json"
        if not result_json.is_file():
            continue
        try:
            result = Result.load(result_json)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue  # named by reconcile_copies; its summary.md is the only rendering left of it
        atomic_write_text(result_json.parent / "summary.md", result_markdown(result))
    return paths


__all__ = [
    "KIND_TEXT",
    "PAPER_REF",
    "PAPER_TITLE",
    "README_BEGIN",
    "README_END",
    "README_FULL_BEGIN",
    "README_FULL_END",
    "STATUS_TEXT",
    "Story",
    "build_story",
    "collection_results",
    "format_duration",
    "load_collection",
    "load_results",
    "merge_spread",
    "narrator",
    "readme_markers",
    "readme_section",
    "render_html",
    "render_markdown",
    "rewrite_reports",
    "update_readme",
    "verdict_counts",
    "verdict_table",
    "write_reports",
]
