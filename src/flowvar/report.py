"""Reading finished runs back and rendering their verdicts: terminal and Markdown tables, and the report of
``flowvar reproduce`` (``results.json``, ``report.md`` and the self-contained ``report.html``)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import yaml

from flowvar.errors import DataError
from flowvar.results import (
    KINDS,
    VERDICTS,
    Result,
    atomic_write_text,
    claim_counts,
    format_value,
    headline,
    judgement_text,
    to_jsonable,
)


def load_results(folder: Path | str) -> list[Result]:
    """Every ``*/result.json`` directly under ``folder`` (one per experiment), sorted by experiment name.

    Hidden folders (the ``.cache`` of ``flowvar reproduce``, staging folders) are skipped. A missing folder, or
    one with no results, is a :class:`DataError`; an unreadable result file is reported by name instead of being
    trusted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"no run folder at {folder}; pass the --out folder of a finished `flowvar run`")
    results = []
    for path in sorted(folder.glob("*/result.json")):
        if path.parent.name.startswith("."):
            continue
        try:
            results.append(Result.load(path))
        except (ValueError, TypeError, KeyError) as e:
            raise DataError(f"{path} is not a valid flowvar result ({e}); rerun that experiment") from None
    if not results:
        raise DataError(f"{folder} holds no */result.json; run `flowvar run EXPERIMENT --out {folder}` first")
    return sorted(results, key=lambda r: r.experiment)


def verdict_table(results: list[Result], evidence_items: int = 3) -> str:
    """A Markdown table: one row per claim with its verdict and the first few evidence numbers."""
    lines = ["| experiment | claim | kind | verdict | evidence |", "|---|---|---|---|---|"]
    for r in results:
        for c in r.claims:
            ev = "; ".join(f"{k}={format_value(v)}" for k, v in list(c.evidence.items())[:evidence_items])
            lines.append(f"| {r.experiment} | `{c.id}` | {c.kind} | **{c.verdict}** | {ev} |")
    return "\n".join(lines)


def verdict_counts(results: list[Result]) -> dict[str, dict[str, int]]:
    """How many claims of each kind have each verdict (:func:`flowvar.results.claim_counts`)."""
    return claim_counts([c for r in results for c in r.claims])


# ---------------------------------------------------------------------------------------------------------------
# The reproduce report: results.json, report.md and the self-contained report.html
# ---------------------------------------------------------------------------------------------------------------

PAPER_TITLE = "Gradient Variance Reveals Failure Modes in Flow-Based Generative Models"
PAPER_REF = "Reu, Dromigny, Bronstein, Vargas; NeurIPS 2025, arXiv 2510.18118"
STATUS_TEXT = {"computed": "computed", "cached": "cache hit", "failed": "FAILED", "not run": "not run"}
_SPREAD = ("std", "sem", "se", "stderr")
KIND_TEXT = ("Kinds: an identity holds by construction when the code is right (an implementation check); a "
             "reproduction is an empirical statement of the paper that could come out either way; a finding is a "
             "statement of ours beyond the paper. Untestable: the claim's precondition, measured in this run, does not "
             "hold, so the run cannot judge it.")


def format_duration(seconds: float) -> str:
    """``4.2 s``, ``41 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def load_collection(folder: Path | str) -> dict[str, Any] | None:
    """The ``results.json`` of a ``flowvar reproduce`` folder, or None if ``folder`` has none."""
    path = Path(folder) / "results.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not a valid flowvar reproduce collection ({type(e).__name__}); rerun "
                        f"`flowvar reproduce`") from None
    if not isinstance(data, dict) or not isinstance(data.get("experiments"), list):
        raise DataError(f"{path} is not a valid flowvar reproduce collection; rerun `flowvar reproduce`")
    return data


def collection_results(collection: dict[str, Any]) -> list[Result]:
    """The results held by a collection (experiments that failed or did not run have none)."""
    return [Result.from_dict(e["result"]) for e in collection["experiments"] if e.get("result")]


def merge_spread(values: dict[str, Any]) -> list[tuple[str, Any, str | None]]:
    """Pair each ``X_mean`` (or ``mean``) with its ``X_std``/``X_sem``/``X_se``, and each ``X`` with ``X_ci``.

    Returns ``(label, value, spread_text)`` triples in the original order; consumed spread keys are dropped.
    ``spread_text`` is e.g. ``"± 0.012 (std)"`` or ``"95% CI [0.1, 0.3]"``, or None when the entry has none.
    """
    used: set[str] = set()
    out: list[tuple[str, Any, str | None]] = []
    for key, value in values.items():
        if key in used:
            continue
        base = key[:-5] if key.endswith("_mean") else "" if key == "mean" else None
        spread = None
        if base is not None and isinstance(value, int | float) and not isinstance(value, bool):
            for kind in _SPREAD:
                partner = f"{base}_{kind}" if base else kind
                if isinstance(values.get(partner), int | float):
                    spread = f"± {format_value(values[partner])} ({kind})"
                    used.add(partner)
                    break
            label = base or key
        else:
            label = key
        ci = values.get(f"{key}_ci")
        if spread is None and isinstance(ci, list) and len(ci) == 2:
            spread = f"CI [{format_value(ci[0])}, {format_value(ci[1])}]"
            used.add(f"{key}_ci")
        out.append((label, value, spread))
    return out


def _evidence_text(evidence: dict[str, Any], items: int, limit: int | None = None) -> str:
    parts = []
    for label, value, spread in merge_spread(evidence)[:items]:
        parts.append(f"{label}={format_value(value)}" + (f" {spread}" if spread else ""))
    text = "; ".join(parts)
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"


def _md(text: Any) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, line breaks flattened)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _experiments(collection: dict[str, Any]) -> list[dict[str, Any]]:
    return list(collection["experiments"])


def _claims(collection: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(e["name"], c) for e in _experiments(collection) if e.get("result") for c in e["result"]["claims"]]


def _status_line(entry: dict[str, Any]) -> str:
    result = entry.get("result") or {}
    if entry["status"] == "cached":
        return f"cache hit (computed earlier in {format_duration(result.get('runtime_s', 0))})"
    if entry["status"] == "computed":
        return f"computed in {format_duration(entry.get('wall_s', 0))}"
    if entry["status"] == "failed":
        return f"FAILED: {entry.get('error')}"
    return "not run (interrupted)"


def _counts(collection: dict[str, Any]) -> dict[str, dict[str, int]]:
    return claim_counts([c for _, c in _claims(collection)])


def _verdict_rows(collection: dict[str, Any], limit: int) -> list[str]:
    """One Markdown row per claim: experiment, id, kind, verdict and the first evidence numbers (``limit`` chars)."""
    return [f"| {name} | `{c['id']}` | {c.get('kind', 'reproduction')} | **{c['verdict']}** | "
            f"{_md(_evidence_text(c['evidence'], 3, limit))} |" for name, c in _claims(collection)]


def render_markdown(collection: dict[str, Any]) -> str:
    """``report.md``: the verdict table, per experiment the paper's statement, our claims and figures (linked by
    relative path), the choices the paper leaves open, and the environment."""
    meta = collection["meta"]
    lines = [f"# Reproduction report: {PAPER_TITLE}", "", f"{PAPER_REF}", "",
             f"`{meta['command']}` · {meta['mode']} mode · flowvar {meta['code_version']} · {meta['created']} · "
             f"wall time {format_duration(meta['wall_s'])}", ""]
    if meta.get("interrupted"):
        lines += ["**Interrupted**: rerun the same command to finish (completed experiments are cached).", ""]
    counts = _counts(collection)
    failed = [e for e in _experiments(collection) if e["status"] in ("failed", "not run")]
    lines += ["## Verdicts", "", f"**{headline(counts)}**"
              + (f"; {len(failed)} experiment(s) without a result" if failed else ""), "",
              KIND_TEXT, "", "| experiment | claim | kind | verdict | evidence |", "|---|---|---|---|---|"]
    lines += _verdict_rows(collection, 200)
    for e in failed:
        lines.append(f"| {e['name']} | — | — | **{e['status']}** | {_md(e.get('error') or '')} |")
    for e in _experiments(collection):
        r = e.get("result")
        lines += ["", f"## {e['name']}" + (f": {r['title']}" if r else ""), "", f"Status: {_status_line(e)}", ""]
        if not r:
            continue
        if r.get("paper"):
            lines += ["**The paper:**", ""] + [f"- {k}: {format_value(v) if not isinstance(v, str) else v}"
                                                for k, v in r["paper"].items()] + [""]
        lines += ["| claim | kind | verdict | statement | our evidence | how it was judged |",
                  "|---|---|---|---|---|---|"]
        for c in r["claims"]:
            lines.append(f"| `{c['id']}` | {c.get('kind', 'reproduction')} | **{c['verdict']}** | "
                         f"{_md(c['statement'])} | {_md(_evidence_text(c['evidence'], 8))} | "
                         f"{_md(judgement_text(c))} |")
        if r.get("notes"):
            lines += ["", "Notes:", ""] + [f"- {n}" for n in r["notes"]]
        if r.get("figures"):
            lines += [""] + [f"![{e['name']}/{f}]({e['name']}/{f})" for f in r["figures"]]
        lines += ["", f"Details: [{e['name']}/summary.md]({e['name']}/summary.md)"]
    lines += ["", "## Choices the paper leaves open", "", "| experiment | choice | ours |", "|---|---|---|"]
    for e in _experiments(collection):
        for k, v in ((e.get("result") or {}).get("choices") or {}).items():
            lines.append(f"| {e['name']} | {_md(k)} | {_md(v)} |")
    lines += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in _environment(collection).items()]
    lines += ["", "| experiment | mode | seed | compute time (s) | this run | cache key |", "|---|---|---|---|---|---|"]
    for e in _experiments(collection):
        r = e.get("result") or {}
        seed = (r.get("config") or {}).get("seed", "—")
        mode = ("quick" if r.get("quick") else "full") if r else "—"
        runtime = f"{r['runtime_s']:.1f}" if r else "—"
        lines.append(f"| {e['name']} | {mode} | {seed} | {runtime} | {STATUS_TEXT.get(e['status'], e['status'])} | "
                     f"`{e.get('key') or '—'}` |")
    return "\n".join(lines) + "\n"


def _environment(collection: dict[str, Any]) -> dict[str, str]:
    meta = collection["meta"]
    v = meta.get("versions", {})
    env = {"machine": f"{v.get('platform', '?')} ({v.get('machine', '?')}), {meta.get('cpu_cores', '?')} CPU cores",
           "parallelism": f"{meta.get('jobs', 1)} job(s) × {meta.get('threads_per_experiment', '?')} torch thread(s)",
           "code version": str(meta.get("code_version")),
           "versions": ", ".join(f"{k} {v[k]}" for k in ("python", "flowvar", "torch", "numpy", "scipy", "pot",
                                                          "torchdiffeq", "matplotlib") if k in v),
           "wall time": format_duration(meta.get("wall_s", 0)), "cache": str(meta.get("cache"))}
    return env


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1f2328}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #d0d7de;padding:.25em .5em;
vertical-align:top;text-align:left}th{background:#f6f8fa}code{font-size:.9em;background:#f6f8fa;padding:0 .2em}
.badge{display:inline-block;padding:0 .5em;border-radius:1em;font-weight:600;font-size:.85em;color:#fff;
white-space:nowrap}.confirmed{background:#1a7f37}.refuted{background:#cf222e}.inconclusive{background:#9a6700}
.untestable{background:#8250df}.failed,.notrun{background:#6e7781}.meta{color:#57606a}
.claim{border-left:4px solid #d0d7de;padding:.2em .8em;margin:1em 0}.claim.c-confirmed{border-color:#1a7f37}
.claim.c-refuted{border-color:#cf222e}
.claim.c-inconclusive{border-color:#9a6700}.claim.c-untestable{border-color:#8250df}
.rule{color:#57606a;font-size:.9em}figure{margin:1em 0}
figure img{max-width:100%;border:1px solid #d0d7de}figcaption{color:#57606a;font-size:.85em}
details{margin:.5em 0}summary{cursor:pointer;color:#0969da}pre{background:#f6f8fa;padding:.6em;overflow:auto;
font-size:.85em}.chips span{margin-right:.6em}
"""


def _badge(verdict: str) -> str:
    cls = verdict.replace(" ", "")
    return f'<span class="badge {cls}">{html.escape(verdict)}</span>'


def _h(value: Any) -> str:
    return html.escape(str(value))


def _html_value(value: Any, depth: int = 0) -> str:
    """Numbers compactly; a list of row dicts as a table (with ± columns); a dict as a key/value table."""
    if isinstance(value, dict) and value and depth < 3:
        rows = "".join(f"<tr><th>{_h(label)}</th><td>{_html_value(v, depth + 1)}"
                       f"{' ' + _h(spread) if spread else ''}</td></tr>" for label, v, spread in merge_spread(value))
        return f"<table>{rows}</table>"
    if (isinstance(value, list) and value and depth < 3 and all(isinstance(r, dict) for r in value)
            and len(value) <= 200):
        merged = [merge_spread(r) for r in value]
        columns: list[str] = []
        for row in merged:
            for label, _, _ in row:
                if label not in columns:
                    columns.append(label)
        head = "".join(f"<th>{_h(c)}</th>" for c in columns)
        body = ""
        for row in merged:
            cells = {label: (v, spread) for label, v, spread in row}
            body += "<tr>" + "".join(
                f"<td>{_h(format_value(cells[c][0]))}{' ' + _h(cells[c][1]) if cells[c][1] else ''}</td>"
                if c in cells else "<td></td>" for c in columns) + "</tr>"
        return f"<table><tr>{head}</tr>{body}</table>"
    if isinstance(value, dict | list) and depth >= 3:
        return f"<code>{_h(json.dumps(value)[:300])}</code>"
    if isinstance(value, str):
        return _h(value)
    return _h(format_value(value))


def _figure_html(folder: Path, experiment: str, name: str) -> str:
    path = folder / experiment / name
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return f"<p class=meta>figure {_h(experiment)}/{_h(name)} is missing</p>"
    mime = "image/png" if name.lower().endswith(".png") else "image/svg+xml" if name.lower().endswith(".svg") else ""
    if not mime:
        return f"<p class=meta>figure {_h(name)}: unsupported format</p>"
    return (f'<figure><img alt="{_h(experiment)}: {_h(name)}" src="data:{mime};base64,{data}">'
            f"<figcaption>{_h(experiment)}/{_h(name)}</figcaption></figure>")


def render_html(collection: dict[str, Any], folder: Path | str) -> str:
    """``report.html``: one self-contained page (figures embedded as base64 PNG, inline CSS, no links out)."""
    folder = Path(folder)
    meta = collection["meta"]
    exps = _experiments(collection)
    counts = _counts(collection)
    failed = [e for e in exps if e["status"] in ("failed", "not run")]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>flowvar reproduction report ({_h(meta['mode'])})</title><style>{_CSS}</style></head><body>",
             f"<h1>Reproduction report: {_h(PAPER_TITLE)}</h1>", f"<p class=meta>{_h(PAPER_REF)}</p>",
             f"<p class=meta><code>{_h(meta['command'])}</code> · {_h(meta['mode'])} mode · flowvar "
             f"{_h(meta['code_version'])} · {_h(meta['created'])} · wall time {format_duration(meta['wall_s'])}</p>"]
    if meta.get("interrupted"):
        parts.append("<p><strong>Interrupted</strong>: rerun the same command to finish (completed experiments are "
                     "cached).</p>")
    parts += ['<h2 id="verdicts">Verdicts</h2>', f"<p><strong>{_h(headline(counts))}</strong></p>",
              "<table><tr><th>kind</th>" + "".join(f"<th>{_badge(v)}</th>" for v in VERDICTS) + "</tr>"
              + "".join(f"<tr><th>{_h(k)}</th>" + "".join(f"<td>{counts[k][v]}</td>" for v in VERDICTS) + "</tr>"
                        for k in KINDS) + "</table>"
              + (f"<p>{_badge('failed')} {len(failed)} experiment(s) without a result</p>" if failed else ""),
              f"<p class=meta>{_h(KIND_TEXT)}</p>",
              "<table><tr><th>experiment</th><th>claim</th><th>kind</th><th>verdict</th><th>evidence</th></tr>"]
    for name, c in _claims(collection):
        parts.append(f'<tr><td><a href="#exp-{_h(name)}">{_h(name)}</a></td><td><a href="#claim-{_h(c["id"])}">'
                     f'<code>{_h(c["id"])}</code></a></td><td>{_h(c.get("kind", "reproduction"))}</td>'
                     f'<td>{_badge(c["verdict"])}</td><td>{_h(_evidence_text(c["evidence"], 3, 200))}</td></tr>')
    for e in failed:
        parts.append(f'<tr><td><a href="#exp-{_h(e["name"])}">{_h(e["name"])}</a></td><td>—</td><td>—</td>'
                     f"<td>{_badge(e['status'])}</td><td>{_h(e.get('error') or '')}</td></tr>")
    parts.append("</table>")
    for e in exps:
        r = e.get("result")
        parts.append(f'<h2 id="exp-{_h(e["name"])}">{_h(e["name"])}' + (f": {_h(r['title'])}" if r else "") + "</h2>")
        parts.append(f"<p class=meta>{_h(_status_line(e))}</p>")
        if not r:
            continue
        if r.get("paper"):
            parts += ["<h3>The paper</h3>", _html_value(r["paper"])]
        parts.append("<h3>Claims</h3>")
        for c in r["claims"]:
            parts.append(f'<div class="claim c-{_h(c["verdict"])}" id="claim-{_h(c["id"])}"><p>{_badge(c["verdict"])} '
                         f"<code>{_h(c['id'])}</code> · {_h(c.get('kind', 'reproduction'))}</p>"
                         f"<p>{_h(c['statement'])}</p>"
                         f"<p><strong>Ours:</strong></p>{_html_value(c['evidence'])}"
                         f"<p class=rule>{_h(judgement_text(c))}</p></div>")
        for f in r.get("figures") or []:
            parts.append(_figure_html(folder, e["name"], f))
        if r.get("notes"):
            parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{_h(n)}</li>" for n in r["notes"]) + "</ul>")
        if r.get("metrics"):
            parts.append(f"<details><summary>All metrics of {_h(e['name'])}</summary>{_html_value(r['metrics'])}"
                         "</details>")
        config = yaml.safe_dump(r["config"], default_flow_style=None, sort_keys=False, width=110, allow_unicode=True)
        parts.append(f"<details><summary>Config of {_h(e['name'])}</summary><pre>{_h(config)}</pre></details>")
    parts += ['<h2 id="choices">Choices the paper leaves open</h2>',
              "<table><tr><th>experiment</th><th>choice</th><th>ours</th></tr>"]
    for e in exps:
        for k, v in ((e.get("result") or {}).get("choices") or {}).items():
            parts.append(f"<tr><td>{_h(e['name'])}</td><td>{_h(k)}</td><td>{_h(v)}</td></tr>")
    parts += ["</table>", '<h2 id="environment">Environment</h2>', "<table>"]
    parts += [f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in _environment(collection).items()]
    parts += ["</table>", "<table><tr><th>experiment</th><th>mode</th><th>seed</th><th>compute time</th>"
              "<th>this run</th><th>cache key</th></tr>"]
    for e in exps:
        r = e.get("result") or {}
        seed = (r.get("config") or {}).get("seed", "—")
        mode = ("quick" if r.get("quick") else "full") if r else "—"
        runtime = f"{r['runtime_s']:.1f} s" if r else "—"
        parts.append(f"<tr><td>{_h(e['name'])}</td><td>{mode}</td><td>{_h(seed)}</td><td>{runtime}</td>"
                     f"<td>{_h(STATUS_TEXT.get(e['status'], e['status']))}</td><td><code>{_h(e.get('key') or '—')}"
                     f"</code></td></tr>")
    parts += ["</table>", "</body></html>"]
    return "\n".join(parts) + "\n"


README_BEGIN = "<!-- reference-run:begin (generated by `flowvar show DIR --update-readme README.md`; do not edit) -->"
README_END = "<!-- reference-run:end -->"


def readme_section(collection: dict[str, Any], folder_label: str) -> str:
    """The README's verdict section, generated from a reproduce folder's ``results.json`` (``collection``): where the
    run came from (command, mode, commit, date), the headline by claim kind, and one row per claim with its kind,
    verdict and two or three evidence numbers. Delimited by :data:`README_BEGIN` / :data:`README_END`."""
    meta = collection["meta"]
    counts = _counts(collection)
    exps = _experiments(collection)
    commit = meta.get("git_commit") or "unknown commit"
    failed = [e["name"] for e in exps if e["status"] in ("failed", "not run")]
    lines = [README_BEGIN, "",
             f"From the reference run in [`{folder_label}/`]({folder_label}/report.md): `{meta['command']}` "
             f"({meta['mode']} mode) at commit `{commit[:12]}`, {meta['created']}, {len(exps)} experiments, wall time "
             f"{format_duration(meta['wall_s'])} on {meta.get('cpu_cores', '?')} CPU cores"
             + (f"; without a result: {', '.join(failed)}" if failed else "") + ".", "",
             f"**{headline(counts)}**", "", KIND_TEXT, "",
             "| experiment | claim | kind | verdict | evidence |", "|---|---|---|---|---|"]
    lines += _verdict_rows(collection, 160)
    lines += ["", README_END]
    return "\n".join(lines)


def update_readme(readme: Path | str, section: str) -> bool:
    """Replace the text between :data:`README_BEGIN` and :data:`README_END` in ``readme`` by ``section``; return
    whether the file changed. A README without the markers is a :class:`DataError`."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise DataError(f"{path} has no reference-run block; add the lines {README_BEGIN!r} and {README_END!r} "
                        f"where the verdict table goes")
    new = text[:start] + section + text[end + len(README_END):]
    if new == text:
        return False
    atomic_write_text(path, new)
    return True


def write_reports(folder: Path | str, meta: dict[str, Any], experiments: list[dict[str, Any]]) -> dict[str, Path]:
    """Write ``results.json``, ``report.md`` and ``report.html`` into ``folder``; return their paths."""
    folder = Path(folder)
    collection = to_jsonable({"meta": meta, "experiments": experiments})
    paths = {"json": folder / "results.json", "md": folder / "report.md", "html": folder / "report.html"}
    atomic_write_text(paths["json"], json.dumps(collection, indent=1))
    atomic_write_text(paths["md"], render_markdown(collection))
    atomic_write_text(paths["html"], render_html(collection, folder))
    return paths
