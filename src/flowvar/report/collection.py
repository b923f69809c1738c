"""Reading finished runs back (a ``flowvar run`` folder, a ``flowvar reproduce`` collection), the compact verdict
tables, and the README's generated verdict block."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowvar.errors import DataError
from flowvar.files import atomic_write_text
from flowvar.results import RESULT_MARKER, Result, claim_counts, format_value, headline


def load_results(folder: Path | str) -> list[Result]:
    """Every ``*/result.json`` directly under ``folder`` (one per experiment), sorted by experiment name.

    Hidden folders (the ``.cache`` of ``flowvar reproduce``, staging folders) are skipped. A missing folder, or
    one with no results, is a :class:`DataError`; an unreadable result file is reported by name instead of being
    trusted.
    """
    folder = Path(folder)
    if folder.is_file():
        holder = folder.parent
        raise DataError(f"{folder} is a file, not a run folder; " + (
            f"the folder holding it is one: `flowvar show {holder}`" if _is_run_folder(holder)
            else "pass the --out folder of a finished `flowvar run`"))
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


def _is_run_folder(folder: Path) -> bool:
    """Whether ``flowvar show`` reads ``folder``: one experiment's (``result.json``), a reproduce, sweep or run
    ``--out`` folder (``results.json``, ``sweep.json``, ``*/result.json``)."""
    return (any((folder / name).is_file() for name in (RESULT_MARKER, "results.json", "sweep.json"))
            or any(folder.glob(f"*/{RESULT_MARKER}")))


def reconcile_copies(folder: Path | str, collection: dict[str, Any]) -> list[str]:
    """Make a reproduce folder's ``collection`` (its ``results.json``, :func:`load_collection`) tell each experiment
    from that experiment's own ``NAME/result.json``, and say where the two copies disagree; returns one warning per
    experiment whose copies differ (``collection`` is changed in place).

    Source of truth: ``NAME/result.json``, the file ``flowvar run`` writes, the cache stores and checksums, and
    ``flowvar reproduce`` and ``flowvar assemble`` read back; ``results.json`` holds a copy of it. Rendering each
    file from its own copy would let ``report.md`` and ``NAME/summary.md`` disagree without a word. A
    ``result.json`` that flowvar cannot read is named and results.json's copy is kept; a missing one is no
    disagreement (a report copied without its folders).
    """
    folder = Path(folder)
    notes = []
    for entry in collection["experiments"]:
        copy = entry.get("result")
        path = folder / entry["name"] / RESULT_MARKER
        if not copy or not path.is_file():
            continue
        try:
            own = json.loads(path.read_text())
            Result.from_dict(own)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            notes.append(f"{path} is not a valid flowvar result ({type(e).__name__}): {entry['name']} is shown from "
                         f"the copy in {folder / 'results.json'} and its summary.md is left as it is; rerun the "
                         f"folder's `flowvar reproduce` command with --only {entry['name']}")
            continue
        if own == copy:
            continue
        entry["result"] = own
        notes.append(f"{folder / 'results.json'} and {path} disagree on {_difference(copy, own)}; shown from "
                     f"{path}, the experiment's own result (the file the cache, reproduce and assemble use); to make "
                     f"them agree, rerun the folder's `flowvar reproduce` command with --only {entry['name']} (a "
                     f"cache hit installs the stored result again)")
    return notes


def _difference(copy: dict[str, Any], own: dict[str, Any]) -> str:
    """Where results.json's ``copy`` of a result differs from its ``own`` result.json, in words: the claims whose
    verdicts differ with both verdicts, else the first claim field or evidence entry that differs with both values,
    else the first differing field of the result."""
    copied = {c.get("id"): c for c in copy.get("claims", []) if isinstance(c, dict)}
    owned = {c.get("id"): c for c in own.get("claims", []) if isinstance(c, dict)}
    verdicts = [f"{cid} (results.json: {copied[cid].get('verdict')}, result.json: {owned[cid].get('verdict')})"
                for cid in owned if cid in copied and copied[cid].get("verdict") != owned[cid].get("verdict")]
    if verdicts:
        return "the verdict of " + ", ".join(verdicts)
    for cid, claim in owned.items():
        other = copied.get(cid)
        if other is None or other == claim:
            continue
        for field in claim:
            if other.get(field) == claim[field]:
                continue
            if field == "evidence" and isinstance(other.get(field), dict):
                key = next(k for k in {**claim[field], **other[field]}
                           if claim[field].get(k, "(none)") != other[field].get(k, "(none)"))
                return (f"{cid}'s evidence {key} (results.json: {format_value(other[field].get(key, '(none)'))}, "
                        f"result.json: {format_value(claim[field].get(key, '(none)'))})")
            return f"{cid}'s {field}"
    key = next((k for k in {**own, **copy} if own.get(k) != copy.get(k)), "claims")
    return f"its {key}"


def verdict_table(results: list[Result], limit: int = 160) -> str:
    """A Markdown table: one row per claim with its kind, verdict and its decisive numbers in words
    (:class:`flowvar.report.story.ClaimText`, cut at ``limit`` characters)."""
    from flowvar.report.narrators import build_story
    from flowvar.report.story import shorten

    lines = ["| experiment | claim | kind | verdict | evidence |", "|---|---|---|---|---|"]
    for r in results:
        story = build_story(r)
        for c in r.claims:
            ev = shorten(story.claims[c.id].numbers, limit)
            lines.append(f"| {r.experiment} | `{c.id}` | {c.kind} | **{c.verdict}** | {md_cell(ev)} |")
    return "\n".join(lines)


def verdict_counts(results: list[Result]) -> dict[str, dict[str, int]]:
    """How many claims of each kind have each verdict (:func:`flowvar.results.claim_counts`)."""
    return claim_counts([c for r in results for c in r.claims])


# ---------------------------------------------------------------------------------------------------------------
# The reproduce report: results.json, report.md and the self-contained report.html
# ---------------------------------------------------------------------------------------------------------------

PAPER_TITLE = "Gradient Variance Reveals Failure Modes in Flow-Based Generative Models"
PAPER_REF = "Reu, Dromigny, Bronstein, Vargas; NeurIPS 2025, arXiv 2510.18118"
STATUS_TEXT = {"computed": "computed", "cached": "cache hit", "assembled": "assembled from a sweep", "failed": "FAILED",
               "not run": "not run", "kept": "kept from an earlier run"}
WITH_RESULT = ("computed", "cached", "assembled", "kept")
"""The statuses of a collection entry that hold a result (``kept``: a result already in the folder that the command
did not select, see :mod:`flowvar.reproduce`)."""
UNRECORDED_META = {"command": "flowvar reproduce (command not recorded)", "code_version": "(not recorded)",
                   "created": "(date not recorded)", "wall_s": 0.0}
"""What the report shows for a meta field the ``results.json`` lacks (an older or hand-made file)."""
_SPREAD = ("std", "sem", "se", "stderr")
KIND_TEXT = ("Kinds: an identity holds by construction when the code is right (an implementation check); a "
             "reproduction is an empirical statement of the paper that could come out either way; a finding is a "
             "statement of ours beyond the paper. Untestable: the claim's precondition, measured in this run, does not "
             "hold, so the run cannot judge it. In the headline, “n of them refuted by their rule alone” counts the "
             "untestable claims whose rule, applied to this run's numbers with the unmet precondition ignored, would "
             "read refuted.")
"""The kinds and the headline's words, under every headline (report, README block, ``flowvar show``). "Refuted by
their rule alone" counts :data:`flowvar.results.UNTESTABLE_REFUTED`: untestable claims whose ``verdict_if_testable``
(the rule's verdict on the evidence, kept when the precondition turned it untestable) is refuted."""


def format_duration(seconds: float) -> str:
    """``4.2 s``, ``41 s``, ``3 min 05 s``, ``1 h 02 min``: rounded to the last unit shown (2073.9 s is
    ``34 min 34 s``; 59.7 s is ``1 min 00 s``, 3599.8 s ``1 h 00 min``)."""
    seconds = max(0.0, float(seconds))
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def load_collection(folder: Path | str) -> dict[str, Any] | None:
    """The ``results.json`` of a ``flowvar reproduce`` folder, or None if ``folder`` has none.

    Checked here, once, for everything the report reads, so ``flowvar show`` and ``show --write-report`` take the same
    files: a file that is not a JSON object with an ``experiments`` list, an experiment without a name or with an
    unknown status, a status that needs a result without one, or a result flowvar cannot read is one
    :class:`DataError`. Missing meta fields get :data:`UNRECORDED_META`; the mode is the results' own when they agree
    (:func:`_settle_mode`).
    """
    path = Path(folder) / "results.json"
    if not path.is_file():
        return None
    invalid = f"{path} is not a valid flowvar reproduce collection"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{invalid} ({type(e).__name__}); rerun `flowvar reproduce`") from None
    if not isinstance(data, dict) or not isinstance(data.get("experiments"), list):
        raise DataError(f"{invalid}; rerun `flowvar reproduce`")
    meta = data.setdefault("meta", {})
    if not isinstance(meta, dict):
        raise DataError(f"{invalid} (its meta is not a JSON object); rerun `flowvar reproduce`")
    quick_flags = []
    for i, e in enumerate(data["experiments"]):
        problem = _entry_problem(e)
        if problem is None and e.get("result"):
            try:
                quick_flags.append(Result.from_dict(e["result"]).quick)
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                problem = f"its result is not a flowvar result: {error}"
        if problem:
            name = e.get("name") if isinstance(e, dict) and isinstance(e.get("name"), str) else f"#{i + 1}"
            raise DataError(f"{invalid} (experiment {name}: {problem}); rerun `flowvar reproduce`")
    for key, default in UNRECORDED_META.items():
        meta.setdefault(key, default)
    if not isinstance(meta["wall_s"], int | float) or isinstance(meta["wall_s"], bool):
        raise DataError(f"{invalid} (meta.wall_s {meta['wall_s']!r} is not a number of seconds); rerun `flowvar "
                        f"reproduce`")
    if not isinstance(meta.get("versions", {}), dict):
        meta["versions"] = {}
    _settle_mode(meta, quick_flags, invalid)
    return data


def _entry_problem(entry: Any) -> str | None:
    """What keeps one ``experiments`` record of a results.json from being reported, or None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        return "not a record with a name"
    status = entry.setdefault("status", "computed" if entry.get("result") else "not run")
    if status not in STATUS_TEXT:
        return f"status {status!r} is none of {', '.join(STATUS_TEXT)}"
    if status in WITH_RESULT and not isinstance(entry.get("result"), dict):
        return f"status {status!r} without a result"
    return None


def _settle_mode(meta: dict[str, Any], quick_flags: list[bool], invalid: str) -> None:
    """The collection's mode (the report's Quick/Full banner). Rule: when every result has the same ``quick`` flag,
    that flag's mode is the mode, whatever the meta records — a disagreeing record is kept as ``meta.recorded_mode``
    and explained in ``meta.mode_note``; with mixed results the recorded mode stays, with a note; with no result the
    recorded mode stands, and a file that records none is a :class:`DataError` (nothing tells the scale)."""
    recorded = meta.get("mode")
    modes = {"quick" if q else "full" for q in quick_flags}
    if len(modes) == 1:
        (ours,) = modes
        if recorded != ours:
            meta["mode"] = ours
            if recorded is not None:
                meta["recorded_mode"] = recorded
                meta["mode_note"] = (f"results.json records {recorded!r} mode but its results ran in {ours} mode: "
                                     f"reported as a {ours} run")
    elif recorded not in ("quick", "full"):
        raise DataError(f"{invalid} (meta.mode {recorded!r} is neither quick nor full"
                        + (", and its results mix both" if modes else ", and it has no result to tell")
                        + "); rerun `flowvar reproduce`")
    elif modes:
        meta["mode_note"] = (f"results.json mixes quick and full results; reported as its recorded {recorded} mode "
                             f"(each experiment's own mode is in the experiments table)")


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


def md_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, line breaks flattened)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _experiments(collection: dict[str, Any]) -> list[dict[str, Any]]:
    return list(collection["experiments"])


def _claims(collection: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(e["name"], c) for e in _experiments(collection) if e.get("result") for c in e["result"]["claims"]]


def assembled(collection: dict[str, Any]) -> list[tuple[str, str]]:
    """(experiment, where its result comes from) of each experiment that ``flowvar assemble`` added to the
    collection: ``"assembled from the 40 points of `flowvar sweep …` (`flowvar assemble`)"``, then ``", re-judged by
    flowvar X from its stored points"`` where a stored result was judged again — its results come from that sweep
    or run, not from the collection's own command. Commands in backticks."""
    return [(e["name"], assembly_text(e["assembled_from"], ((e.get("result") or {}).get("versions") or {})
                                      .get("git_commit")))
            for e in _experiments(collection)
            if e.get("status") == "assembled" and isinstance(e.get("assembled_from"), dict)]


def assembly_text(source: dict[str, Any], commit: str | None = None) -> str:
    """How an assembled result came about, from its ``assembled_from`` (see :func:`assembled`) and the git
    ``commit`` the assembled result recorded (``versions.git_commit``). The judge is named by that commit where it
    is recorded — flowvar's version ``0.1.0+783d61a94489`` ends in a digest of the source, which looks like a commit
    and is none (readerB, session 28) — and otherwise by that version, called a code digest."""
    rejudged = source.get("rejudged")
    if commit and not str(commit).startswith("unknown"):
        judge = f"at commit `{_short_commit(str(commit))}`"
    else:
        judge = f"by flowvar {source.get('assembled_by', '?')} (a code digest; its commit was not recorded)"
    if source.get("sweep") is None and isinstance(rejudged, dict):  # a whole run's stored result, judged again
        return f"re-judged {judge} from the points its own run stored (`flowvar assemble`)"
    text = f"assembled from the {source.get('points', '?')} points of `{source.get('command')}` (`flowvar assemble`)"
    if isinstance(rejudged, dict):
        text += f", re-judged {judge} from its stored points"
    return text


def kept(collection: dict[str, Any]) -> list[tuple[list[str], str]]:
    """The results a ``reproduce --only`` kept from earlier runs into the folder, grouped by where they came from:
    (experiments, "`command` (date)" or "an earlier command") in order of appearance — the header must not let the
    collection's own command pass for the source of every result."""
    groups: dict[str, list[str]] = {}
    for e in _experiments(collection):
        if e.get("status") != "kept":
            continue
        source = e.get("kept_from") or {}
        where = (f"`{source['command']}` ({source.get('created') or 'date not recorded'})" if source.get("command")
                 else "an earlier command (not a recorded `flowvar reproduce` run)")
        groups.setdefault(where, []).append(e["name"])
    return [(names, where) for where, names in groups.items()]


def status_text(entry: dict[str, Any]) -> str:
    """The runtime table's "this run" cell of a collection entry: :data:`STATUS_TEXT` of its status, except that an
    entry assembled from one stored result (``flowvar assemble`` re-judging it, no sweep) says so — it was read as
    "assembled from a sweep"."""
    status = entry.get("status")
    source = entry.get("assembled_from") or {}
    if status == "assembled" and source.get("sweep") is None and isinstance(source.get("rejudged"), dict):
        return "re-judged from its stored points"
    return STATUS_TEXT.get(status, str(status))


def status_line(entry: dict[str, Any]) -> str:
    result = entry.get("result") or {}
    if entry["status"] == "cached":
        return f"cache hit (computed earlier in {format_duration(result.get('runtime_s', 0))})"
    if entry["status"] == "computed":
        return f"computed in {format_duration(entry.get('wall_s', 0))}"
    if entry["status"] == "assembled":
        source = entry.get("assembled_from") or {}
        rejudged = "; its claims re-judged from the stored points" if isinstance(source.get("rejudged"), dict) else ""
        took = format_duration(result.get("runtime_s", 0))
        if source.get("sweep") is None and rejudged:
            return f"re-judged from the points its run stored (computed in {took})"
        return f"assembled from the {source.get('points', '?')} points of a sweep (computed in {took} in all){rejudged}"
    if entry["status"] == "kept":
        source = entry.get("kept_from") or {}
        earlier = (f"the run `{source['command']}` ({source.get('created') or 'date not recorded'})"
                   if source.get("command") else "an earlier command (not a recorded `flowvar reproduce` run)")
        return (f"kept: its result was already in this folder, from {earlier}; this command did not select it "
                f"(--only) and did not rerun it (computed in {format_duration(result.get('runtime_s', 0))})")
    if entry["status"] == "failed":
        return f"FAILED: {entry.get('error')}"
    return "not run (interrupted)"


def collection_counts(collection: dict[str, Any]) -> dict[str, dict[str, int]]:
    return claim_counts([c for _, c in _claims(collection)])


def _verdict_rows(collection: dict[str, Any], limit: int) -> list[str]:
    """One Markdown row per claim: experiment, id, kind, verdict and its decisive numbers in words (the report's
    claim sentence, :func:`flowvar.report.narrators.build_story`, cut at ``limit`` characters)."""
    from flowvar.report.narrators import build_story
    from flowvar.report.story import shorten

    rows = []
    for e in _experiments(collection):
        if not e.get("result"):
            continue
        story = build_story(Result.from_dict(e["result"]))
        for c in e["result"]["claims"]:
            text = story.claims[c["id"]].numbers if c["id"] in story.claims else _evidence_text(c["evidence"], 3, limit)
            rows.append(f"| {e['name']} | `{c['id']}` | {c.get('kind', 'reproduction')} | **{c['verdict']}** | "
                        f"{md_cell(shorten(text, limit))} |")
    return rows


def environment(collection: dict[str, Any]) -> dict[str, str]:
    meta = collection["meta"]
    v = meta.get("versions", {})
    env = {"machine": f"{v.get('platform', '?')} ({v.get('machine', '?')}), {meta.get('cpu_cores', '?')} CPU cores",
           "parallelism": f"{meta.get('jobs', 1)} job(s) × {meta.get('threads_per_experiment', '?')} torch thread(s)",
           "code version": str(meta.get("code_version")),
           "versions": ", ".join(f"{k} {v[k]}" for k in ("python", "flowvar", "torch", "numpy", "scipy", "pot",
                                                          "torchdiffeq", "matplotlib") if k in v),
           "wall time": format_duration(meta.get("wall_s", 0)), "cache": str(meta.get("cache"))}
    return env


README_BEGIN = "<!-- reference-run:begin (generated by `flowvar show DIR --update-readme README.md`; do not edit) -->"
README_END = "<!-- reference-run:end -->"
README_FULL_BEGIN = ("<!-- paper-scale-run:begin (generated by `flowvar show DIR --update-readme README.md`; do not "
                     "edit) -->")
README_FULL_END = "<!-- paper-scale-run:end -->"


def readme_markers(mode: str) -> tuple[str, str]:
    """The README block a run of ``mode`` goes to: the quick reference run's, or the paper-scale (full) run's."""
    return (README_FULL_BEGIN, README_FULL_END) if mode == "full" else (README_BEGIN, README_END)


def _short_commit(commit: str) -> str:
    """A commit's first 12 characters, keeping a "+dirty" mark (the run read uncommitted changes)."""
    return commit[:12] + ("+dirty" if commit.endswith("+dirty") and len(commit) > 12 else "")


def code_stamp(meta: dict[str, Any]) -> str:
    """The code a run used, for a report's banner: ``flowvar 0.1.0+<digest>, commit 2b7514b168d5`` (the commit where
    the run recorded one, as the README's run line names it)."""
    commit = meta.get("git_commit")
    return f"flowvar {meta['code_version']}" + (f", commit {_short_commit(str(commit))}" if commit else "")


def readme_section(collection: dict[str, Any], folder_label: str) -> str:
    """The README's verdict section, generated from a reproduce folder's ``results.json`` (``collection``): where the
    run came from (command, mode, commit, date), the headline by claim kind, and one row per claim with its kind,
    verdict and two or three evidence numbers. Delimited by the markers of its mode (:func:`readme_markers`)."""
    meta = collection["meta"]
    begin, end = readme_markers(str(meta.get("mode", "quick")))
    counts = collection_counts(collection)
    exps = _experiments(collection)
    commit = meta.get("git_commit") or "unknown commit"
    failed = [e["name"] for e in exps if e["status"] in ("failed", "not run")]
    kept = [e["name"] for e in exps if e["status"] == "kept"]
    which = "paper-scale run" if meta.get("mode") == "full" else "reference run"
    lines = [begin, "",
             f"From the {which} in [`{folder_label}/`]({folder_label}/report.md): `{meta['command']}` "
             f"({meta['mode']} mode) at commit `{_short_commit(commit)}`, {meta['created']}, {len(exps)} experiments, "
             f"wall time {format_duration(meta['wall_s'])} on {meta.get('cpu_cores', '?')} CPU cores"
             + own_runtimes(collection)
             + (f"; without a result: {', '.join(failed)}" if failed else "")
             + (f"; kept from earlier runs into the folder (not rerun by this command): {', '.join(kept)}" if kept
                else "")
             + ("; interrupted: the experiments it had not finished are not in it" if meta.get("interrupted")
                else "")
             + "".join(f"; {name} {text}" for name, text in assembled(collection))
             + ".", "",
             f"**{headline(counts)}**", "", KIND_TEXT, "",
             "| experiment | claim | kind | verdict | evidence |", "|---|---|---|---|---|"]
    lines += _verdict_rows(collection, 160)
    lines += ["", end]
    return "\n".join(lines)


def own_runtimes(collection: dict[str, Any]) -> str:
    """Where the folder holds results this command did not compute (kept, assembled), its wall time is not theirs:
    ``" (this command's, for fig4, fig5 and prop1; the experiments' own runtimes sum to 15 h 14 min)"``, so
    "13 experiments, wall time 8 min 30 s" cannot read as the cost of all 13; empty when the command computed all."""
    exps = _experiments(collection)
    ran = [e["name"] for e in exps if e["status"] in ("computed", "cached", "failed")]
    if len(ran) == len(exps):
        return ""
    own = [float(e["result"]["runtime_s"]) for e in exps
           if isinstance(e.get("result"), dict) and isinstance(e["result"].get("runtime_s"), int | float)]
    names = ", ".join(ran[:-1]) + (" and " if len(ran) > 1 else "") + ran[-1] if ran else ""
    return (f" (this command's{f', for {names}' if names else ', which computed none of them'}; the "
            f"experiments' own runtimes sum to {format_duration(sum(own))})")


def update_readme(readme: Path | str, section: str) -> bool:
    """Replace the text between :data:`README_BEGIN` and :data:`README_END` in ``readme`` by ``section``; return
    whether the file changed. The block is the one whose begin marker opens ``section`` (the quick reference run's
    or the paper-scale run's); a README without its markers is a :class:`DataError`."""
    path = Path(readme)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}; give the README to update") from None
    begin, end_marker = next((b, e) for b, e in (readme_markers("full"), readme_markers("quick"))
                             if section.startswith(b))
    start, end = text.find(begin), text.find(end_marker)
    if start < 0 or end < start:
        raise DataError(f"{path} has no block for this run; add the lines {begin!r} and {end_marker!r} "
                        f"where its verdict table goes")
    new = text[:start] + section + text[end + len(end_marker):]
    if new == text:
        return False
    atomic_write_text(path, new)
    return True


__all__ = ["KIND_TEXT", "PAPER_REF", "PAPER_TITLE", "README_BEGIN", "README_END", "README_FULL_BEGIN",
           "README_FULL_END", "STATUS_TEXT", "UNRECORDED_META", "WITH_RESULT", "assembled", "assembly_text",
           "collection_counts", "collection_results", "environment", "format_duration", "load_collection",
           "load_results", "md_cell", "merge_spread", "readme_markers", "readme_section", "reconcile_copies",
           "status_line", "status_text",
           "update_readme", "verdict_counts", "verdict_table"]
