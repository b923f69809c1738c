"""``report.html``: one self-contained page (figures embedded as base64 PNG, inline CSS, no script, no links out)
that answers at a glance what holds, what does not, where, and how sure we are.

Layout: the title and a scale banner; a contents list; the findings (one generated paragraph per experiment and
the counts by claim kind); the verdict table (linked to every claim); then per experiment its paragraph, the
paper-beside-ours tables, and one card per claim (its sentence, decisive numbers, rule, its figures, and the full
evidence folded underneath); finally the choices the paper leaves open and the environment. Verdict colours are
from the Okabe–Ito colour-blind-safe palette and every badge also carries its word. A print stylesheet drops the
contents list and keeps tables whole.

At phone widths (≤ 600 px) a row's verdict shows without sideways scrolling: in the verdict table it follows the
claim (the experiment column, which the claim id already names, is hidden there), and in a paper-beside-ours table
it follows the row's first cell (its setting); the Markdown report keeps verdicts last, where a wide page shows them.
A figure is enlarged by a click, or from the keyboard (Tab to it, Space): the checkbox doing it is hidden only
visually, so it stays in the tab order, and the figure shows a focus outline (drawn inside the image: the
figure's sideways-scrolling box would clip one outside it).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import yaml

from flowvar.report.collection import (
    KIND_TEXT,
    PAPER_REF,
    PAPER_TITLE,
    assembled,
    code_stamp,
    environment,
    format_duration,
    kept,
    own_runtimes,
    status_text,
)
from flowvar.report.document import Absent, Entry, absent, entries, interrupted_unlisted, kind_counts, run_scale
from flowvar.report.narrators import TABLE
from flowvar.report.story import Mark, Story, Table, flatten, judgement_rows, shorten
from flowvar.results import KINDS, VERDICTS, Claim, headline

ZOOM_HINT = "(select the figure to enlarge it: click it, or Tab to it and press Space)"
"""The line under every figure saying that it can be enlarged, and how without a mouse."""

# Okabe–Ito (colour-blind safe), darkened where white text needs contrast ≥ 4.5.
_CSS = """
:root{--ok:#00785a;--no:#b33c00;--mid:#8a6100;--na:#7a4d96;--grey:#5f6b76;--line:#d0d7de;--soft:#f6f8fa;
--ink:#1f2328;--link:#0b5cad}
*{box-sizing:border-box}
body{font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1120px;margin:0 auto;
padding:1em 1.2em 3em;color:var(--ink);overflow-wrap:break-word}
a{color:var(--link)}h1{font-size:1.65em;line-height:1.25;margin:.4em 0 .2em}
h2{border-bottom:1px solid var(--line);padding-bottom:.2em;margin-top:2.2em;font-size:1.35em}
h3{font-size:1.08em;margin:1.4em 0 .4em}
.meta{color:var(--grey);font-size:.9em}
.banner{border:3px solid var(--mid);background:#fff7e6;padding:.7em 1em;margin:1em 0;border-radius:6px}
.banner.full{border-color:var(--ok);background:#e9f7f2}.banner strong{font-size:1.08em}
.banner ul{margin:.3em 0 0;padding-left:1.2em}
nav.toc{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:.4em 1em;margin:1em 0}
nav.toc ol{margin:.3em 0;padding-left:1.4em}nav.toc li{margin:.1em 0}
.scroll{overflow-x:auto;max-width:100%;margin:.6em 0}
table{border-collapse:collapse;font-size:.92em}td,th{border:1px solid var(--line);padding:.3em .55em;
vertical-align:top;text-align:left}th{background:var(--soft)}
td{overflow-wrap:break-word}
code{font-size:.88em;background:var(--soft);padding:0 .2em;overflow-wrap:anywhere}code.id{overflow-wrap:normal}
.badge{display:inline-block;padding:0 .55em;border-radius:1em;font-weight:600;font-size:.84em;color:#fff;
white-space:nowrap;margin:.05em .15em .05em 0}
.confirmed{background:var(--ok)}.refuted{background:var(--no)}.inconclusive{background:var(--mid)}
.untestable{background:var(--na)}.failed,.notrun{background:var(--grey)}
td.verdict{min-width:7.5em}td.verdict .badge{white-space:normal;max-width:13em}
.finding{border-left:5px solid var(--line);padding:.2em .9em;margin:.9em 0}
.finding p{margin:.3em 0}
.claim{border:1px solid var(--line);border-left:5px solid var(--line);border-radius:4px;padding:.3em .9em;
margin:1em 0}
.c-confirmed{border-left-color:var(--ok)}.c-refuted{border-left-color:var(--no)}
.c-inconclusive{border-left-color:var(--mid)}.c-untestable{border-left-color:var(--na)}
.claim p{margin:.35em 0}.rule{color:#3d4751;font-size:.93em}
.problem{color:var(--no)}
figure{margin:1em 0;overflow-x:auto}figure img{max-width:100%;height:auto;border:1px solid var(--line);background:#fff}
label.zoom{position:relative}label.zoom img{cursor:zoom-in}
label.zoom input{position:absolute;top:0;left:0;width:1px;height:1px;margin:0;padding:0;border:0;overflow:hidden;
clip:rect(0 0 0 0);clip-path:inset(50%);white-space:nowrap;opacity:0}
label.zoom input:checked+img{max-width:none;cursor:zoom-out}
label.zoom input:focus-visible+img{outline:3px solid var(--link);outline-offset:-3px}
figcaption{color:#3d4751;font-size:.9em;margin-top:.3em}.hint{color:var(--grey)}
details{margin:.5em 0}summary{cursor:pointer;color:var(--link)}
pre{background:var(--soft);padding:.6em;overflow:auto;font-size:.84em;max-width:100%}
.notes{color:#3d4751;font-size:.9em;margin:.2em 0 1em;padding-left:1.2em}
@media (max-width:600px){body{font-size:15px;padding:.6em .7em 2em}h1{font-size:1.35em}
td,th{padding:.25em .35em}
table.verdicts .exp{display:none}table.verdicts td.nums{min-width:18em}}
@media print{nav.toc,summary,.hint{display:none}body{max-width:none;font-size:11pt;padding:0}
.scroll{overflow:visible}a{color:inherit;text-decoration:none}
.claim,.finding,figure,table{break-inside:avoid}h2{break-after:avoid}
.badge{border:1px solid #000;-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""


def _h(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badge(verdict: str, text: str | None = None) -> str:
    cls = verdict.replace(" ", "")
    return f'<span class="badge {_h(cls)}">{_h(text if text is not None else verdict)}</span>'


def claim_anchor(claim_id: str) -> str:
    """The page anchor of a claim card."""
    return f"claim-{claim_id}"


def exp_anchor(name: str) -> str:
    """The page anchor of an experiment's section."""
    return f"exp-{name}"


def _mark_html(mark: Mark) -> str:
    claim_id, verdict, text = mark
    badge = _badge(verdict, text)
    return f'<a href="#{_h(claim_anchor(claim_id))}">{badge}</a>' if claim_id else badge


def table_anchor(name: str, index: int) -> str:
    """The page anchor of an experiment's ``index``-th paper-beside-ours table."""
    return f"table-{name}-{index}"


def _table_html(table: Table, anchor: str) -> str:
    """A paper-beside-ours table; its verdict column (where a row has marks) comes second, after the cell that
    names the row, so that a phone shows both without scrolling the table sideways (the data columns scroll)."""
    marks = any(table.verdicts)
    head = "".join(f"<th>{_h(c)}</th>" for c in table.columns)
    if marks:
        first, rest = table.columns[:1], table.columns[1:]
        head = ("".join(f"<th>{_h(c)}</th>" for c in first) + f"<th class=verdict>{_h(table.verdict_header)}</th>"
                + "".join(f"<th>{_h(c)}</th>" for c in rest))
    body = ""
    for cells, verdicts in zip(table.rows, table.verdicts, strict=True):
        tds = [f"<td>{_h(c)}</td>" for c in cells]
        if marks:
            tds.insert(1, f"<td class=verdict>{' '.join(_mark_html(m) for m in verdicts)}</td>")
        body += "<tr>" + "".join(tds) + "</tr>"
    notes = "".join(f"<li>{_h(n)}</li>" for n in table.notes)
    return (f'<h3 id="{_h(anchor)}">{_h(table.title)}</h3>'
            f"<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
            + (f"<ul class=notes>{notes}</ul>" if notes else ""))


def _figure_html(folder: Path, experiment: str, name: str, caption: str) -> str:
    path = folder / experiment / name
    if not name.lower().endswith(".png"):
        return f"<p class=meta>figure {_h(experiment)}/{_h(name)}: not a PNG, not embedded</p>"
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return f"<p class=meta>figure {_h(experiment)}/{_h(name)} is missing</p>"
    # a figure wider than the page is shrunk to fit (the solver_resolution heatmaps' cell labels then read at ~5 px):
    # a click, or Space on the focused checkbox (its accessible name is the image's alt text), shows it at its own
    # size, scrolling sideways inside its frame; a second fits it again (CSS only: the page carries no script)
    return (f'<figure><label class=zoom title="click, or Tab and Space: full size / fit to the page">'
            f'<input type=checkbox><img alt="{_h(caption)}" src="data:image/png;base64,{data}"></label>'
            f"<figcaption><strong>Figure ({_h(experiment)}/{_h(name)}).</strong> {_h(caption)} "
            f"<span class=hint>{ZOOM_HINT}</span></figcaption></figure>")


def _code_spans(text: str) -> str:
    """``text`` escaped, its `backtick` spans as <code>."""
    return re.sub(r"`([^`]*)`", lambda m: f"<code>{m.group(1)}</code>", _h(text))


def _absent_html(a: Absent) -> str:
    """One group of experiments without a result: the names (linked to their section where the report has one),
    a badge saying why, and what to do."""
    names = ", ".join(f"<strong>{_h(n)}</strong>" if a.kind == "not selected" else
                      f'<a href="#{_h(exp_anchor(n))}"><strong>{_h(n)}</strong></a>' for n in a.names)
    return f"{names} {_badge('notrun' if a.kind != 'failed' else 'failed', a.kind)} {_h(a.why)}"


def _id_html(claim_id: str) -> str:
    """A claim id that wraps only after its ``.`` and ``_`` (``fig6.sigma0_odd_euler…``), not inside words."""
    return "".join(_h(ch) + ("<wbr>" if ch in "._" else "") for ch in claim_id)


def _flat_table(value: Any) -> str:
    rows = flatten(value)
    if not rows:
        return "<p class=meta>none</p>"
    return ("<div class=scroll><table>" + "".join(f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in rows)
            + "</table></div>")


def _claim_html(claim: Claim, story: Story, figures: str) -> str:
    text = story.claims[claim.id]
    return (f'<div class="claim c-{_h(claim.verdict)}" id="{_h(claim_anchor(claim.id))}">'
            f"<p>{_badge(claim.verdict)} <code>{_h(claim.id)}</code> · {_h(claim.kind)}</p>"
            f"<p>{_h(claim.statement)}</p>"
            f"<p><strong>Ours:</strong> {_h(text.numbers)}.</p>"
            f"<p class=rule>{_h(text.rule)}</p>{figures}"
            f"<details><summary>Full evidence, precondition, minimum effect and replicates</summary>"
            f"{_flat_table(claim.evidence)}<div class=scroll><table>"
            + "".join(f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in judgement_rows(claim))
            + "</table></div></details></div>")


def _experiment_html(item: Entry, folder: Path) -> list[str]:
    r, story = item.result, item.story
    parts = [f'<section id="{_h(exp_anchor(item.name))}">',
             f"<h2>{_h(item.name)}" + (f": {_h(r.title)}" if r else "") + "</h2>",
             f"<p class=meta>{_h(item.status_text)}" + (f" · {_h(story.scale)}" if story else "") + "</p>"]
    if r is None or story is None:
        return [*parts, "</section>"]
    parts.append(f"<p>{_h(story.paragraph())}</p>")
    parts += [f"<p class=problem>{_h(p)}</p>" for p in story.problems]
    placed: set[str] = set()

    def figs(where: str | None) -> str:
        out = ""
        for name in r.figures:
            fig = story.figures.get(name)
            target = fig.claim if fig is not None else None
            if name not in placed and target == where:
                placed.add(name)
                out += _figure_html(folder, item.name, name, fig.caption if fig else name)
        return out

    for i, table in enumerate(story.tables):
        parts.append(_table_html(table, table_anchor(item.name, i)))
    parts.append(figs(TABLE) if story.tables else "")
    parts.append("<h3>Claims</h3>")
    for c in r.claims:
        parts.append(_claim_html(c, story, figs(c.id)))
    rest = [n for n in r.figures if n not in placed]
    for name in rest:  # figures for no claim, or for a claim this result lacks
        fig = story.figures.get(name)
        placed.add(name)
        parts.append(_figure_html(folder, item.name, name, fig.caption if fig else name))
    if r.notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{_h(n)}</li>" for n in r.notes) + "</ul>")
    if r.metrics:
        parts.append(f"<details><summary>All metrics of {_h(item.name)}</summary>{_flat_table(r.metrics)}</details>")
    config = yaml.safe_dump(r.config, default_flow_style=None, sort_keys=False, width=100, allow_unicode=True)
    parts.append(f"<details><summary>Config of {_h(item.name)}</summary><pre>{_h(config)}</pre></details>")
    parts.append("</section>")
    return parts


def render_html(collection: dict[str, Any], folder: Path | str) -> str:
    """``report.html`` of a ``flowvar reproduce`` collection whose experiment folders (figures) are in ``folder``."""
    folder = Path(folder)
    meta = collection["meta"]
    items = entries(collection)
    counts = kind_counts(collection)
    title, scale_lines = run_scale(str(meta.get("mode", "quick")), items)
    missing = absent(items, str(meta.get("mode", "")) or None)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>flowvar reproduction report ({_h(meta['mode'])})</title><style>{_CSS}</style></head><body>",
             "<header>", f"<h1>Reproduction report: {_h(PAPER_TITLE)}</h1>", f"<p class=meta>{_h(PAPER_REF)}</p>",
             f"<p class=meta><code>{_h(meta['command'])}</code> · {_h(meta['mode'])} mode · {_h(code_stamp(meta))} · "
             f"{_h(meta['created'])} · wall time {format_duration(meta['wall_s'])}{_h(own_runtimes(collection))}</p>",
             *[f"<p class=meta>{_h(name)}: {_code_spans(text)}</p>" for name, text in assembled(collection)],
             *[f"<p class=meta>{_h(', '.join(names))}: kept from {_code_spans(where)}, not rerun by this command</p>"
               for names, where in kept(collection)],
             f'<div class="banner {"full" if meta.get("mode") == "full" else "quick"}" id="scale">'
             f"<strong>{_h(title)}</strong><ul>" + "".join(f"<li>{_h(x)}</li>" for x in scale_lines) + "</ul>"
             + ("<p class=absent><strong>Not in this run:</strong></p><ul>" + "".join(
                 f"<li>{_absent_html(a)}</li>" for a in missing) + "</ul>" if missing else "") + "</div>"]
    if interrupted_unlisted(meta, missing):
        parts.append("<p class=problem><strong>Interrupted</strong>: rerun the same command to finish (completed "
                     "experiments are cached).</p>")
    parts.append("</header>")
    toc = ['<nav class="toc" aria-label="Contents"><strong>Contents</strong><ol>',
           '<li><a href="#findings">Findings</a></li>', '<li><a href="#verdicts">Verdict table</a></li>']
    for e in items:
        judged = [c.verdict for c in (e.result.claims if e.result else []) if c.kind != "identity"]
        n_id = sum(c.kind == "identity" for c in (e.result.claims if e.result else []))
        badges = " ".join(_badge(v, f"{judged.count(v)} {v}") for v in VERDICTS if judged.count(v))
        if n_id and e.result:
            ok = sum(c.kind == "identity" and c.verdict == "confirmed" for c in e.result.claims)
            badges += f" <span class=meta>{ok} of {n_id} identities hold</span>"
        label = e.story.label if e.story else e.name
        toc.append(f'<li><a href="#{_h(exp_anchor(e.name))}">{_h(label)}</a> <span class=meta>({_h(e.name)})</span>'
                   + (f" {badges}" if badges else (f" {_badge('failed', e.status)}" if e.failed else "")) + "</li>")
    toc += ['<li><a href="#choices">Choices the paper leaves open</a></li>',
            '<li><a href="#environment">Environment</a></li>', "</ol></nav>"]
    parts += toc
    without = sum(len(a.names) for a in missing)
    parts += ['<section id="findings"><h2>Findings</h2>', f"<p><strong>{_h(headline(counts))}</strong>"
              + (f' · <a href="#scale">{without} experiment(s) without a result</a>' if without else "") + "</p>",
              "<div class=scroll><table><tr><th>claims</th>" + "".join(f"<th>{_badge(v)}</th>" for v in VERDICTS)
              + "<th>total</th></tr>"
              + "".join(f"<tr><th>{_h(k)}</th>" + "".join(f"<td>{counts.get(k, {}).get(v, 0)}</td>" for v in VERDICTS)
                        + f"<td>{sum(counts.get(k, {}).values())}</td></tr>" for k in KINDS)
              + "</table></div>", f"<p class=meta>{_h(KIND_TEXT)}</p>"]
    for e in items:
        if e.story is None:
            parts.append(f'<div class="finding"><p>{_badge("failed", e.status)} <a href="#{_h(exp_anchor(e.name))}">'
                         f"{_h(e.name)}</a>: {_h(e.status_text)}</p></div>")
            continue
        verdicts = {c.verdict for c in e.result.claims if c.kind == "reproduction"} if e.result else set()
        cls = next((v for v in ("refuted", "inconclusive", "untestable", "confirmed") if v in verdicts), "")
        # the table's title in a tooltip, not in the text: the findings stay short, the tables come below
        tables = ", ".join(f'<a href="#{_h(table_anchor(e.name, i))}" title="{_h(t.title)}">'
                           f'{"the table" if len(e.story.tables) == 1 else f"table {i + 1}"}</a>'
                           for i, t in enumerate(e.story.tables))
        parts.append(f'<div class="finding c-{cls}" id="finding-{_h(e.name)}"><p><a href="#{_h(exp_anchor(e.name))}">'
                     f"<strong>{_h(e.story.label)}</strong></a>: {_h(e.story.body())}</p>"
                     + (f"<p class=meta>The paper's numbers beside ours: {tables} below.</p>" if tables else "")
                     + f"<p class=meta>Scale: {_h(e.story.scale)}.</p></div>")
    selected_out = [a for a in missing if a.kind == "not selected"]
    parts += [f'<div class="finding"><p>{_absent_html(a)}</p></div>' for a in selected_out]
    parts.append("</section>")
    parts += ['<section id="verdicts"><h2>Verdict table</h2>',
              "<p class=meta>Every claim: its kind, verdict and decisive numbers; the claim links to its card "
              "(the rule, the figure and the full evidence).</p>",
              # the verdict right after the claim, and the experiment column (which the claim id names) hidden on a
              # phone: there claim and verdict show side by side, the numbers scroll (the Markdown keeps its order)
              "<div class=scroll><table class=verdicts><thead><tr><th class=exp>experiment</th><th>claim</th>"
              "<th class=verdict>verdict</th><th>kind</th><th class=nums>decisive numbers</th></tr></thead><tbody>"]
    for e in items:
        link = f'<a href="#{_h(exp_anchor(e.name))}">{_h(e.name)}</a>'
        if e.result is None or e.story is None:  # the claim cell names the experiment too: a phone hides its column
            parts.append(f"<tr><td class=exp>{link}</td><td>none: {link} has no result</td>"
                         f"<td class=verdict>{_badge('failed', e.status)}</td><td>—</td>"
                         f"<td class=nums>{_h(e.entry.get('error') or '')}</td></tr>")
            continue
        for c in e.result.claims:
            parts.append(f"<tr><td class=exp>{link}</td>"
                         f'<td><a href="#{_h(claim_anchor(c.id))}"><code class=id>{_id_html(c.id)}</code></a></td>'
                         f"<td class=verdict>{_badge(c.verdict)}</td><td>{_h(c.kind)}</td>"
                         f"<td class=nums>{_h(shorten(e.story.claims[c.id].numbers, 220))}</td></tr>")
    parts.append("</tbody></table></div></section>")
    for e in items:
        parts += _experiment_html(e, folder)
    parts += ['<section id="choices"><h2>Choices the paper leaves open</h2>',
              "<div class=scroll><table><tr><th>experiment</th><th>choice</th><th>ours</th></tr>"]
    for e in items:
        for k, v in (e.result.choices if e.result else {}).items():
            parts.append(f"<tr><td>{_h(e.name)}</td><td>{_h(k)}</td><td>{_h(v)}</td></tr>")
    parts += ["</table></div></section>", '<section id="environment"><h2>Environment</h2>',
              "<div class=scroll><table>"]
    parts += [f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in environment(collection).items()]
    parts += ["</table></div>", "<div class=scroll><table><tr><th>experiment</th><th>mode</th><th>seed</th>"
              "<th>compute time</th><th>this run</th><th>cache key</th></tr>"]
    for e in items:
        r = e.result
        seed = r.config.get("seed", "—") if r else "—"
        mode = ("quick" if r.quick else "full") if r else "—"
        runtime = f"{r.runtime_s:.1f} s" if r else "—"
        parts.append(f"<tr><td>{_h(e.name)}</td><td>{mode}</td><td>{_h(seed)}</td><td>{runtime}</td>"
                     f"<td>{_h(status_text(e.entry))}</td><td><code>{_h(e.entry.get('key') or '—')}"
                     f"</code></td></tr>")
    parts += ["</table></div></section>", "</body></html>"]
    return "\n".join(parts) + "\n"


__all__ = ["ZOOM_HINT", "claim_anchor", "exp_anchor", "render_html", "table_anchor"]
