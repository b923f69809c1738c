"""``report.md`` and the text of ``flowvar show``: the same findings, paper-beside-ours tables and readable claim
sentences as ``report.html`` (:mod:`flowvar.report.html`), as Markdown and as plain terminal text."""

from __future__ import annotations

import textwrap
from typing import Any

from flowvar.report.collection import (
    KIND_TEXT,
    PAPER_REF,
    PAPER_TITLE,
    assembled,
    code_stamp,
    environment,
    format_duration,
    kept,
    md_cell,
    own_runtimes,
    status_text,
)
from flowvar.report.document import (
    Entry,
    absent,
    entries,
    interrupted_unlisted,
    kind_counts,
    result_entries,
    run_scale,
)
from flowvar.report.narrators import TABLE
from flowvar.report.story import Table, flatten, judgement_rows, shorten
from flowvar.results import KINDS, VERDICTS, Result, claim_counts, headline


def table_markdown(table: Table) -> list[str]:
    """A paper-beside-ours table as Markdown lines (title in bold, notes as a list below)."""
    marks = any(table.verdicts)
    head = table.columns + ([table.verdict_header] if marks else [])
    lines = [f"**{table.title}**", "", "| " + " | ".join(md_cell(c) for c in head) + " |",
             "|" + "---|" * len(head)]
    for cells, verdicts in zip(table.rows, table.verdicts, strict=True):
        row = [md_cell(c) for c in cells]
        if marks:
            row.append(", ".join(f"**{text}**" + (f" (`{cid}`)" if cid else "") for cid, _, text in verdicts))
        lines.append("| " + " | ".join(row) + " |")
    if table.notes:
        lines += [""] + [f"- {n}" for n in table.notes]
    return [*lines, ""]


def findings_markdown(items: list[Entry]) -> list[str]:
    """One paragraph per experiment (label in bold), each followed by its scale."""
    lines = []
    for e in items:
        if e.story is None:
            lines += [f"- **{e.name}**: {e.status_text}", ""]
            continue
        tables = "; ".join(f"*{t.title}*" for t in e.story.tables)
        lines += [f"- **{e.story.label}** ({e.name}): {e.story.body()} *Scale: {e.story.scale}.*"
                  + (f" Paper beside ours: {tables}, in its section below." if tables else ""), ""]
    return lines


def _figure_lines(e: Entry, name: str, prefix: str) -> list[str]:
    fig = e.story.figures.get(name) if e.story else None
    caption = fig.caption if fig else name
    return [f"![{md_cell(caption)}]({prefix}{name})", "", f"*Figure ({prefix}{name}).* {caption}", ""]


def experiment_markdown(e: Entry, prefix: str = "", heading: str = "##") -> list[str]:
    """One experiment's section: its scale, paragraph, paper-beside-ours tables, claims in words with their
    figures (paths prefixed by ``prefix``) and the full evidence folded, and its notes."""
    r, story = e.result, e.story
    assert r is not None and story is not None
    lines: list[str] = []
    lines += [f"*Scale: {story.scale}.*", "", story.paragraph(), ""]
    lines += [f"*{p}*" for p in story.problems]
    placed: set[str] = set()
    for table in story.tables:
        lines += table_markdown(table)
    for name in r.figures:
        fig = story.figures.get(name)
        if story.tables and fig is not None and fig.claim == TABLE:
            placed.add(name)
            lines += _figure_lines(e, name, prefix)
    lines += [f"{heading} Claims", ""]
    for c in r.claims:
        text = story.claims[c.id]
        lines += [f"- **{c.verdict}** `{c.id}` ({c.kind}): {c.statement}", "",
                  f"  Ours: {text.numbers}. {text.rule}", ""]
        for name in r.figures:
            fig = story.figures.get(name)
            if name not in placed and fig is not None and fig.claim == c.id:
                placed.add(name)
                lines += ["  " + x if x else "" for x in _figure_lines(e, name, prefix)]
        lines += ["  <details><summary>Full evidence</summary>", "",
                  "  | evidence | value |", "  |---|---|"]
        lines += [f"  | {md_cell(k)} | {md_cell(v)} |" for k, v in flatten(c.evidence, limit=60)]
        lines += [""] + [f"  - {k}: {v}" for k, v in judgement_rows(c)] + ["", "  </details>", ""]
    for name in r.figures:
        if name not in placed:
            lines += _figure_lines(e, name, prefix)
    if r.notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in r.notes] + [""]
    return lines


def provenance_lines(collection: dict[str, Any]) -> list[str]:
    """Where the results that the collection's own command did not compute come from, one line per source (the
    header of ``report.md`` and of ``flowvar show``): ``"table1: assembled from the 40 points of `flowvar sweep …`
    (`flowvar assemble`)"`` and ``"fig4, fig5: kept from `flowvar reproduce …` (date), not rerun by this command"``.
    Without them the header's command would pass for the source of every result."""
    return ([f"{name}: {text}" for name, text in assembled(collection)]
            + [f"{', '.join(names)}: kept from {where}, not rerun by this command"
               for names, where in kept(collection)])


def render_markdown(collection: dict[str, Any]) -> str:
    """``report.md``: the scale banner, the findings, the counts, the verdict table, per experiment its paragraph,
    paper-beside-ours tables, claims in words with their figures (linked by relative path) and the full evidence
    folded, the choices the paper leaves open, and the environment."""
    meta = collection["meta"]
    items = entries(collection)
    counts = kind_counts(collection)
    missing = absent(items, str(meta.get("mode", "")) or None)
    without = sum(len(a.names) for a in missing)
    title, scale_lines = run_scale(str(meta.get("mode", "quick")), items)
    lines = [f"# Reproduction report: {PAPER_TITLE}", "", f"{PAPER_REF}", "",
             f"`{meta['command']}` · {meta['mode']} mode · {code_stamp(meta)} · {meta['created']} · "
             f"wall time {format_duration(meta['wall_s'])}{own_runtimes(collection)}", "",
             *[f"{line}\n" for line in provenance_lines(collection)],
             f"> **{title}.**"] + [f"> - {x}" for x in scale_lines]
    if missing:
        lines += [">", "> **Not in this run:**"] + [f"> - {a.line()}" for a in missing]
    lines += [""]
    if interrupted_unlisted(meta, missing):
        lines += ["**Interrupted**: rerun the same command to finish (completed experiments are cached).", ""]
    lines += ["## Findings", "", f"**{headline(counts)}**" + (f"; {without} experiment(s) without a result"
                                                              if without else ""), "",
              "| claims | " + " | ".join(VERDICTS) + " | total |", "|---|" + "---|" * (len(VERDICTS) + 1)]
    lines += [f"| {k} | " + " | ".join(str(counts.get(k, {}).get(v, 0)) for v in VERDICTS)
              + f" | {sum(counts.get(k, {}).values())} |" for k in KINDS]
    lines += ["", KIND_TEXT, "", *findings_markdown(items)]
    lines += [f"- **Not in this run**: {a.line()}" for a in missing if a.kind == "not selected"]
    lines += [""] if any(a.kind == "not selected" for a in missing) else []
    lines += ["## Verdicts", "", "| experiment | claim | kind | verdict | evidence |", "|---|---|---|---|---|"]
    for e in items:
        if e.result is None or e.story is None:
            lines.append(f"| {e.name} | — | — | **{e.status}** | {md_cell(e.entry.get('error') or '')} |")
            continue
        for c in e.result.claims:
            lines.append(f"| {e.name} | `{c.id}` | {c.kind} | **{c.verdict}** | "
                         f"{md_cell(shorten(e.story.claims[c.id].numbers, 200))} |")
    for e in items:
        lines += ["", f"## {e.name}" + (f": {e.result.title}" if e.result else ""), "", f"Status: {e.status_text}", ""]
        if e.result is not None and e.story is not None:
            lines += experiment_markdown(e, prefix=f"{e.name}/", heading="###")
            lines += [f"Details: [{e.name}/summary.md]({e.name}/summary.md)"]
    lines += ["", "## Choices the paper leaves open", "", "| experiment | choice | ours |", "|---|---|---|"]
    for e in items:
        for k, v in (e.result.choices if e.result else {}).items():
            lines.append(f"| {e.name} | {md_cell(k)} | {md_cell(v)} |")
    lines += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in environment(collection).items()]
    lines += ["", "| experiment | mode | seed | compute time (s) | this run | cache key |", "|---|---|---|---|---|---|"]
    for e in items:
        r = e.result
        seed = r.config.get("seed", "—") if r else "—"
        mode = ("quick" if r.quick else "full") if r else "—"
        runtime = f"{r.runtime_s:.1f}" if r else "—"
        lines.append(f"| {e.name} | {mode} | {seed} | {runtime} | {status_text(e.entry)} | "
                     f"`{e.entry.get('key') or '—'}` |")
    return "\n".join(lines) + "\n"


def result_markdown(result: Result) -> str:
    """``summary.md`` of one experiment run: title and mode, the findings paragraph, the paper-beside-ours tables,
    the claims in words with their figures and folded evidence, the choices the paper leaves open, and the
    metrics and config folded (readable rows, no JSON).

    Rendered from ``result`` as its ``result.json`` stores it (:meth:`Result.to_dict`: tuples become lists, NaN the
    string "nan"), so the summary a run writes and the one ``flowvar show --write-report`` renders from that file are
    the same bytes: one rendering of a result, whichever process holds it."""
    result = Result.from_dict(result.to_dict())
    (e,) = result_entries([result])
    mode = "quick" if result.quick else "full"
    lines = [f"# {result.experiment}: {result.title}", "",
             f"Mode: {mode} · runtime {format_duration(result.runtime_s)} · device {result.device}", "",
             f"**{headline(claim_counts(result.claims))}**", ""]
    lines += experiment_markdown(e)
    if result.choices:
        lines += ["## Choices the paper leaves open", "", "| choice | ours |", "|---|---|"]
        lines += [f"| {md_cell(k)} | {md_cell(v)} |" for k, v in result.choices.items()] + [""]
    for title, values in (("The paper's statements and numbers", result.paper), ("Metrics", result.metrics),
                          ("Config", result.config)):
        if values:
            lines += [f"<details><summary>{title}</summary>", "", "| key | value |", "|---|---|"]
            lines += [f"| {md_cell(k)} | {md_cell(v)} |" for k, v in flatten(values, limit=400)]
            lines += ["", "</details>", ""]
    return "\n".join(lines) + "\n"


def findings_text(items: list[Entry], width: int = 110, mode: str | None = None) -> str:
    """The findings and the paper-beside-ours tables as terminal text (``flowvar show``): one wrapped paragraph per
    experiment, then each table as a Markdown table. ``mode``: the run's "quick" or "full" (for what is missing)."""
    out = ["Findings", "========", ""]
    for e in items:
        if e.story is None:
            out += [f"{e.name}: {e.status_text}", ""]
            continue
        paper, found, verdict = e.story.sentences()  # one block each: the verdict never hides mid-paragraph
        out += textwrap.wrap(f"{e.story.label}: {paper}", width)
        for text in (found, verdict, f"(scale: {e.story.scale})"):
            out += textwrap.wrap(text, width, initial_indent="  ", subsequent_indent="  ")
        out += [f"  ! {p}" for p in e.story.problems] + [""]
    missing = absent(items, mode)
    if missing:
        out += ["Not in this run:"]
        for a in missing:
            out += textwrap.wrap(a.line(), width, initial_indent="  - ", subsequent_indent="    ")
        out += [""]
    tables = [(e, t) for e in items if e.story for t in e.story.tables]
    if tables:
        out += ["Paper beside ours", "=================", ""]
        for _, table in tables:
            out += table_markdown(table)
    return "\n".join(out).rstrip() + "\n"


__all__ = ["experiment_markdown", "findings_markdown", "findings_text", "provenance_lines", "render_markdown",
           "result_markdown", "table_markdown"]
