"""What a reader takes from one experiment's result, in words: the finding paragraph, one readable sentence per
claim (its decisive numbers and the clause of the rule that gave the verdict), the paper-beside-ours table and the
captions of the figures.

Everything here is *generated from the result* (never typed in): :func:`build_story` makes a generic story from
the claims alone, and a narrator registered for the experiment with :func:`narrator` (flowvar's own live in
:mod:`flowvar.report.narrators`; a plugin may add its own) refines it with the experiment's structure: which
numbers decide, which settings to tabulate beside the paper's. A narrator that fails on an unexpected result
(an older ``result.json``, a renamed evidence key) never breaks the report: the generic story stays, and the
failure is recorded in :attr:`Story.problems` and shown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flowvar.results import Claim, Result

VERDICT_WORD = {"confirmed": "Confirmed", "refuted": "Refuted", "inconclusive": "Inconclusive",
                "untestable": "Untestable here"}


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class ClaimText:
    """A claim in words: ``numbers`` (its two or three decisive numbers, one short clause) and ``rule`` (the part of
    the rule that turned them into the verdict)."""

    numbers: str
    rule: str

    def sentence(self, verdict: str) -> str:
        """``"Refuted: <numbers>. <rule>."``"""
        return f"{VERDICT_WORD.get(verdict, verdict)}: {_period(self.numbers)} {_period(self.rule)}".strip()


Mark = tuple[str | None, str, str]
"""A verdict mark in a table row: (claim id to link, or None; verdict class for the badge colour; text shown)."""


def claim_mark(claim: Claim) -> Mark:
    """The mark of a claim: linked to it, coloured and labelled by its verdict."""
    return claim.id, claim.verdict, claim.verdict


@dataclass
class Table:
    """A paper-beside-ours table: ``columns`` (headers of the data columns, units stated), ``rows`` of cells
    (text), one list of marks per row shown in a last column headed ``verdict_header`` (a :data:`Mark`: the claim
    that row's numbers decide, or a per-row status), and ``notes`` (units, metric definitions, how the settings
    differ from the paper's)."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    verdicts: list[list[Mark]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdict_header: str = "verdict"

    def add(self, cells: list[str], verdicts: Iterable[Mark] = ()) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"table {self.title!r}: a row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(cells)
        self.verdicts.append(list(verdicts))


@dataclass
class FigureText:
    """A figure's caption (what to see in it) and the claim it supports (None: shown after the claims)."""

    caption: str
    claim: str | None = None


@dataclass
class Story:
    """One experiment for a reader. ``label``: short name ("Fig. 6"); ``paper``: what the paper says (one
    sentence); ``found``: what we found at this scale; ``verdict``: the conclusion in words; ``scale``: the run's
    size (N, steps, seeds); ``claims``: readable text per claim id; ``tables``: paper beside ours; ``figures``:
    caption per figure file; ``problems``: why a narrator's refinement is missing."""

    experiment: str
    label: str
    paper: str
    found: str
    verdict: str
    scale: str
    claims: dict[str, ClaimText] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: dict[str, FigureText] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def sentences(self) -> tuple[str, str, str]:
        """The finding's three sentences: what the paper says (without the label it follows everywhere it is shown:
        :func:`without_label`), what we found at this scale, the verdict."""
        return (_cap(_period(without_label(self.paper, self.label))), f"At this scale: {_period(self.found)}",
                _period(self.verdict))

    def body(self) -> str:
        """The finding paragraph without its label: what the paper says, what we found at this scale, the
        verdict."""
        return " ".join(self.sentences())

    def paragraph(self) -> str:
        """The finding paragraph: ``label: body``."""
        return f"{self.label}: {self.body()}"


_PAPER_SOURCE = re.compile(r"(?i)(the paper) \(([^()]*)\)")


def without_label(paper: str, label: str) -> str:
    """The paper sentence with the source in its leading bracket dropped where it repeats ``label``, the name the
    sentence is shown after ("Fig. 6: The paper (Fig. 6): …" read the name twice): ``the paper (Fig. 6): …`` →
    ``the paper: …``, ``the paper (Table 2, CelebA 64×64): …`` → ``the paper (CelebA 64×64): …``; a label
    "Proposition 2 / Remark 2" matches "(Proposition 2, Remark 2)". Any other sentence is returned unchanged."""
    m = _PAPER_SOURCE.match(paper)
    if m is None:
        return paper
    inner = m.group(2)
    for name in dict.fromkeys((label, label.replace(" / ", ", "))):
        if inner == name or inner.startswith(name + ", "):
            rest = inner[len(name):].removeprefix(", ")
            return m.group(1) + (f" ({rest})" if rest else "") + paper[m.end():]
    return paper


# ---------------------------------------------------------------------------------------------------------------
# Numbers in words
# ---------------------------------------------------------------------------------------------------------------

def num(value: Any, digits: int = 3) -> str:
    """A number for a sentence: ``0.966``, ``6.11``, ``1.2e-12``, ``4000``; NaN as ``n/a``; a bool as ``yes``/``no``
    and None as ``none`` (a reader never sees Python's True/False/None); other values as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, str):
        return {"nan": "n/a", "inf": "∞", "-inf": "−∞"}.get(value, value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{max(digits - 1, 1)}e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")
        return f"{value:.{digits}g}"
    return str(value)


def pct(fraction: Any) -> str:
    """A fraction as a percentage for a sentence: ``0.966`` → ``97 %``."""
    return f"{100 * float(fraction):.0f} %" if isinstance(fraction, int | float) else num(fraction)


def mean_sd(values: Iterable[Any]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite numbers in ``values``."""
    xs = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
    if not xs:
        return math.nan, math.nan, 0
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd, len(xs)


def pm(mean: Any, sd: Any, digits: int = 3) -> str:
    """``mean ± sd``."""
    return f"{num(mean, digits)} ± {num(sd, 2)}"


def label(key: str) -> str:
    """An evidence key as words: ``max_dist_to_rotation_partner`` → ``max dist to rotation partner``."""
    return key.replace("_", " ").strip()


def _period(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."


def _scalar(v: Any) -> bool:
    return isinstance(v, int | float | str | bool) or v is None


def short_value(v: Any, limit: int = 60) -> str | None:
    """A compact reading of an evidence value, or None when it is too complex for a sentence: numbers; short
    strings; up to four scalars (``a, b, c``); a long list of numbers as its range; a dict of up to four scalars
    (``k v, k v``), or of repeated statuses or flags grouped by value (``no (width=16, width=64)``, each value once
    with its keys in brackets); a record holding numbers never grouped (two of its quantities that happen to be
    equal are still two quantities): up to six ``name value`` pairs, names as words (``training loss 0.354, minimum
    loss 0``); an empty list or dict as ``none``; bools as ``yes``/``no`` (:func:`num`)."""
    if isinstance(v, bool) or v is None:
        return num(v)
    if isinstance(v, int | float):
        return num(v)
    if isinstance(v, str):
        return num(v) if len(v) <= limit else None
    if isinstance(v, list):
        if not v:
            return "none"
        if all(_scalar(x) for x in v):
            if len(v) <= 4:
                text = ", ".join(num(x) for x in v)
                return text if len(text) <= limit else None
            numbers = [float(x) for x in v if isinstance(x, int | float) and not isinstance(x, bool)]
            if len(numbers) == len(v):
                return f"{num(min(numbers))} to {num(max(numbers))} ({len(v)} values)"
        return None
    if isinstance(v, dict):
        if not v:
            return "none"
        if all(_scalar(x) for x in v.values()):
            if any(isinstance(x, int | float) and not isinstance(x, bool) for x in v.values()):
                if len(v) > 6:
                    return None
                text = ", ".join(f"{label(k)} {num(x)}" for k, x in v.items())
                return text if len(text) <= (limit if len(v) <= 4 else 2 * limit) else None
            groups: dict[str, list[str]] = {}
            for k, x in v.items():  # equal values once: "failed: … (euler_10, euler_100)"
                groups.setdefault(num(x), []).append(str(k))
            if len(groups) < len(v):  # the value first, its keys in brackets: a value may itself hold ": "
                text = ", ".join(f"{x} ({', '.join(ks)})" for x, ks in groups.items())
                return text if len(text) <= 2 * limit else None
            if len(v) <= 4:
                text = ", ".join(f"{k} {num(x)}" for k, x in v.items())
                return text if len(text) <= limit else None
    return None


def flatten(value: Any, prefix: str = "", limit: int = 400) -> list[tuple[str, str]]:
    """``(dotted path, readable value)`` rows for a nested evidence or metrics value (what the folded sections
    show instead of raw JSON). Lists of scalars are joined (long ones cut with a count); lists of dicts are indexed;
    at most ``limit`` rows."""
    rows: list[tuple[str, str]] = []

    def walk(v: Any, path: str) -> None:
        if len(rows) >= limit:
            return
        if isinstance(v, dict) and v:
            for k, x in v.items():
                walk(x, f"{path}.{k}" if path else str(k))
        elif isinstance(v, list) and v and not all(_scalar(x) for x in v):
            for i, x in enumerate(v):
                walk(x, f"{path}[{i}]")
        elif isinstance(v, list):
            shown = ", ".join(num(x) for x in v[:12])
            rows.append((path, (shown + f", … ({len(v)} values)") if len(v) > 12 else (shown or "none")))
        elif isinstance(v, dict):
            rows.append((path, "none"))
        else:
            rows.append((path, num(v)))

    walk(value, prefix)
    if len(rows) >= limit:
        rows.append(("…", f"cut after {limit} rows"))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Rules in words
# ---------------------------------------------------------------------------------------------------------------

_CLAUSE = re.compile(r"(?i)\b(confirmed|refuted|inconclusive)\b\s+(if|when|otherwise|in between)")


def rule_clauses(rule: str) -> dict[str, str]:
    """The clauses of a rule text by verdict: ``{"confirmed": "confirmed if …", "refuted": "refuted if …", …}``.

    A clause runs from ``confirmed if`` / ``refuted if`` / ``inconclusive otherwise`` to the next such clause or
    the end of its sentence. Rules that state no such clause give an empty dict.
    """
    out: dict[str, str] = {}
    matches = list(_CLAUSE.finditer(rule))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(rule)
        text = rule[m.start():end]
        stop = re.search(r"\.\s|[;,]\s*(else|otherwise)\b", text)  # the end of its sentence or an "else"
        if stop:
            text = text[:stop.start()]
        text = re.sub(r"[;,]\s*(or|and)?\s*$", "", text.strip()).strip().rstrip(";,.")
        out.setdefault(m.group(1).lower(), text)
    return out


def precondition_parts(precondition: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The measured numbers of each part of a precondition of several (:func:`flowvar.results.all_preconditions`:
    every entry of ``measured`` is "[i]" → that part's numbers with its ``holds``), or None for a single one."""
    measured = precondition.get("measured") or {}
    parts = [v for k, v in measured.items() if re.fullmatch(r"\[\d+\]", str(k)) and isinstance(v, dict)]
    return parts if parts and len(parts) == len(measured) else None


def failed_part(precondition: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The statement and measured numbers of the part of a precondition that failed. A precondition of several parts
    (:func:`flowvar.results.all_preconditions`: statements joined by "; and ", each part's numbers under "[i]" with
    its ``holds``) names only the failing parts; any other precondition is given whole."""
    statement = str(precondition.get("statement", "unstated"))
    measured = precondition.get("measured") or {}
    parts = precondition_parts(precondition)
    statements = statement.split("; and ")
    if parts is None or len(statements) != len(parts):
        return statement, measured
    failing = [(text, part) for text, part in zip(statements, parts, strict=True) if not part.get("holds", True)]
    if not failing:
        return statement, measured
    numbers = {k: v for _, part in failing for k, v in part.items() if k != "holds"}
    return "; and ".join(text for text, _ in failing), numbers


def rule_text(claim: Claim) -> str:
    """The part of the claim's rule that gave its verdict, in one sentence.

    Confirmed/refuted: that clause of the rule. Inconclusive: what confirming and refuting would have needed.
    Untestable: the precondition that failed, the rule's own verdict, and how to make it testable.
    """
    clauses = rule_clauses(claim.rule)
    if claim.verdict == "untestable":
        pre = claim.precondition or {}
        statement, numbers = failed_part(pre)
        measured = _measured_text(numbers)
        text = f"Not judged: the precondition does not hold — {statement}"
        if measured:
            text += f" (measured: {measured})"
        if claim.verdict_if_testable:
            text += f"; the rule alone would say {claim.verdict_if_testable}"
        if pre.get("remedy"):
            text += f". To test it: {pre['remedy']}"
        return text
    if claim.verdict in ("confirmed", "refuted") and claim.verdict in clauses:
        return "Rule: " + _cap(clauses[claim.verdict])
    if claim.verdict == "inconclusive" and ("confirmed" in clauses or "refuted" in clauses):
        need = [clauses[v] for v in ("confirmed", "refuted") if v in clauses]
        return "Rule: neither outcome was reached — " + "; ".join(need)
    return "Rule: " + claim.rule


def _measured_text(numbers: dict[str, Any], items: int = 3) -> str:
    """The first ``items`` measured numbers of a failed precondition in words, "label: value; …" (a measured key may
    be a phrase ending in a number, "…, the latter 0", hence the colon). A per-seed record says whether that seed met
    it and then its numbers, ``seed 0 (not met): training loss 0.354, minimum loss 0, …``, not its ``holds`` flag as
    one more value."""
    parts = []
    for key, value in list(numbers.items())[:items]:
        name = re.sub(r"^seed=(\d+)$", r"seed \1", label(key))
        if isinstance(value, dict) and isinstance(value.get("holds"), bool):
            name += " (met)" if value["holds"] else " (not met)"
            value = {k: v for k, v in value.items() if k != "holds"}
        text = short_value(value)
        if text is not None:
            parts.append(f"{name}: {text}")
    return "; ".join(parts)


def judgement_rows(claim: Claim) -> list[tuple[str, str]]:
    """How a claim was judged, as readable ``(what, text)`` rows for the folded section: the full rule, the
    precondition and what was measured for it (or that there is none), the rule's own verdict when the precondition
    failed, the minimum effect and the replicates (no raw dicts: measured values are flattened)."""
    rows = [("rule", claim.rule)]
    pre = claim.precondition
    if pre:
        rows.append((f"precondition ({'holds' if pre.get('holds') else 'does NOT hold'})", str(pre.get("statement"))))
        # "key: value", not "key = value": a measured key may itself be a phrase holding "=" ("…, M(0) = 1")
        measured = "; ".join(f"{k}: {v}" for k, v in flatten(pre.get("measured") or {}, limit=40))
        if measured:
            rows.append(("measured for the precondition", measured))
        if not pre.get("holds") and pre.get("remedy"):
            rows.append(("to make it testable", str(pre["remedy"])))
    else:  # said, not left out: a reader must not take a missing row for a precondition the card failed to show
        rows.append(("precondition", "none: nothing measured in this run is required before the rule is applied "
                                     "(it cannot be untestable); the rule reads the evidence as it is"))
    if claim.verdict_if_testable:
        rows.append(("the rule alone would say", claim.verdict_if_testable))
    if claim.min_effect:
        rows.append(("minimum effect", claim.min_effect))
    if claim.replicates:
        rows.append(("replicates", claim.replicates))
    return rows


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------------------------
# The generic story
# ---------------------------------------------------------------------------------------------------------------

_SKIP_EVIDENCE = {"alpha", "paper", "comparison", "min_effect_fraction", "tol", "tolerance_deg"}


def paired_text(comparison: dict[str, Any]) -> ClaimText | None:
    """A paired-over-seeds comparison (:func:`flowvar.stats.paired_over_seeds`'s record) in words, or None when the
    record lacks its fields."""
    try:
        conf = 100 * (1 - float(comparison["alpha"]))
        numbers = (f"{comparison['label']} = {num(comparison['mean'])} (mean over {comparison['n_seeds']} seed(s); "
                   f"one-sided {conf:.0f} % bounds {num(comparison['lower'])} to {num(comparison['upper'])}; "
                   f"minimum effect {num(comparison['min_effect'])})")
    except (KeyError, TypeError, ValueError):
        return None
    reason = comparison.get("reason")
    return ClaimText(numbers, "Rule: " + reason if isinstance(reason, str) and reason else "")


def generic_numbers(evidence: dict[str, Any], items: int = 3) -> str:
    """Up to ``items`` readable ``label value`` pairs from the top level of ``evidence`` (what a generic claim
    sentence quotes), skipping values too complex for a sentence."""
    parts = _readable(evidence, items)
    return "; ".join(parts) if parts else "the numbers are in the full evidence below"


def _readable(evidence: dict[str, Any], items: int) -> list[str]:
    parts: list[str] = []
    for k, v in evidence.items():
        if k in _SKIP_EVIDENCE:
            continue
        text = short_value(v)
        if text is not None:  # a keyed reading ("failed: … (euler_10, …)") after a colon, a number after a space
            parts.append(f"{label(k)}: {text}" if isinstance(v, dict) else f"{label(k)} {text}")
        if len(parts) == items:
            break
    return parts


def claim_text(claim: Claim) -> ClaimText:
    """The generic readable text of a claim: a paired comparison when the evidence holds one, else its first
    readable numbers; and the clause of its rule that decided (:func:`rule_text`)."""
    comparison = claim.evidence.get("comparison")
    if isinstance(comparison, dict) and claim.verdict != "untestable":
        text = paired_text(comparison)
        if text is not None:
            return ClaimText(text.numbers, text.rule or rule_text(claim))
    if claim.verdict == "untestable" and not _readable(claim.evidence, 1):
        measured = (claim.precondition or {}).get("measured") or {}
        flat = {k: v for k, v in flatten(measured)[:3]}
        return ClaimText("precondition measured: " + generic_numbers(flat), rule_text(claim))
    return ClaimText(generic_numbers(claim.evidence), rule_text(claim))


_LABEL = re.compile(r"^(Fig\. \d+|Table \d+|Lemma \d+|Proposition \d+( / Remark \d+)?|Counter Example \d+)")


def short_label(result: Result) -> str:
    """``Fig. 6`` from a title "Fig. 6: …"; else the part before the colon, else the experiment name."""
    m = _LABEL.match(result.title)
    if m:
        return m.group(1)
    head = result.title.split(":", 1)[0].strip()
    return head if head and len(head) <= 40 else result.experiment


_ITEM_SHAPE = re.compile(r"item shape \((\d+(?:, \d+)*),?\)")


def _data_size(result: Result) -> str:
    """The data's item size for the scale line: from the item shape the run recorded in its ``data`` choice (a
    user's vectors or images: ``d = 4``, ``16×16 px``), else the config's ``resolution`` for an image data set; ""
    for GMM data (whose ``dim`` the line gives)."""
    c = result.config
    if c["dataset"] == "gmm":
        return ""
    found = _ITEM_SHAPE.search(str(result.choices.get("data", "")))
    if found:
        shape = [int(v) for v in found.group(1).split(", ")]
        return f" d = {shape[0]}" if len(shape) == 1 else f" {shape[-2]}×{shape[-1]} px"
    res = c.get("resolution")
    return f" {res}×{res} px" if res else ""


def scale_text(result: Result) -> str:
    """The run's size from its config: mode, data, N, dimension, training steps, repeats and seeds (whichever the
    experiment has). A run on a ``dataset`` other than gmm reads its item size from the data it recorded
    (:func:`_data_size`); its config's ``dim`` (a GMM key) is not its dimension and is left out."""
    c = result.config
    parts = ["quick mode" if result.quick else "full mode"]
    if c.get("dataset"):
        parts.append(f"{c['dataset']}{_data_size(result)}")
    for key, name in (("ns", "N"), ("n_train", "N"), ("n", "N"), ("n_pairs", "N")):
        if key in c and c[key] is not None:
            v = c[key]
            parts.append(f"{name} = {', '.join(num(x) for x in v) if isinstance(v, list) else num(v)}")
            break
    for key in ("dims", "dim"):
        if c.get("dataset") not in (None, "gmm"):
            break
        if key in c and c[key] is not None:
            v = c[key]
            parts.append(f"d = {', '.join(num(x) for x in v) if isinstance(v, list) else num(v)}")
            break
    for key in ("steps", "train_steps"):
        if key in c and c[key] is not None:
            v = c[key]
            parts.append(f"{', '.join(num(x) for x in v) if isinstance(v, list) else num(v)} training steps")
            break
    if "repeats" in c:
        parts.append(f"R = {num(c['repeats'])} Monte-Carlo repeats of K = {num(c.get('n_samples', '?'))} draws")
    elif "n_samples" in c:
        parts.append(f"{num(c['n_samples'])} samples")
    parts.append(f"{num(c.get('n_seeds', 1))} seed(s)")
    return ", ".join(parts)


def first_paper_sentence(paper: dict[str, Any]) -> str:
    for key in ("claims", "claim", "abstract", "statement", "message"):
        if isinstance(paper.get(key), str):
            return paper[key]
    for v in paper.values():
        if isinstance(v, str) and len(v) > 20:
            return v
    return "no statement recorded"


def verdict_sentence(claims: list[Claim]) -> str:
    """The conclusion over an experiment's claims: the reproductions decide; identities are implementation checks;
    findings are ours."""
    rep = [c for c in claims if c.kind == "reproduction"]
    ident = [c for c in claims if c.kind == "identity"]
    fin = [c for c in claims if c.kind == "finding"]
    parts = []
    if rep:
        v = [c.verdict for c in rep]
        n = len(v)
        if all(x == "confirmed" for x in v):
            parts.append(f"The paper's claim holds here ({n} of {n} reproductions confirmed)")
        elif all(x == "refuted" for x in v):
            parts.append(f"The paper's claim does not hold here ({n} of {n} reproductions refuted)")
        else:
            counts = ", ".join(f"{v.count(x)} {x}" for x in ("confirmed", "refuted", "inconclusive", "untestable")
                               if v.count(x))
            parts.append(f"Reproductions: {counts}")
    if ident:
        ok = sum(c.verdict == "confirmed" for c in ident)
        parts.append(f"{ok} of {len(ident)} implementation checks hold" if ok < len(ident) or rep else
                     f"All {len(ident)} implementation checks (identities) hold: the code computes what the paper "
                     f"derives")
    if fin:
        fv = [c.verdict for c in fin]
        parts.append("findings of ours: " + ", ".join(f"{fv.count(x)} {x}" for x in
                                                      ("confirmed", "refuted", "inconclusive", "untestable")
                                                      if fv.count(x)))
    return "; ".join(parts) + "."


def short_statement(text: str, limit: int = 110) -> str:
    return shorten(text.strip().rstrip("."), limit)


def shorten(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit - 1].rsplit(" ", 1)[0].rstrip(";,") + " …"


# ---------------------------------------------------------------------------------------------------------------
# Narrators
# ---------------------------------------------------------------------------------------------------------------

Narrator = Callable[[Result, Story], None]
NARRATORS: dict[str, Narrator] = {}


def narrator(name: str) -> Callable[[Narrator], Narrator]:
    """Decorator registering ``fn(result, story)`` to refine the generic story of experiment ``name`` in place
    (set ``found``, ``verdict``, claim texts, tables, figure captions). Plugins may register their own."""
    def wrap(fn: Narrator) -> Narrator:
        NARRATORS[name] = fn
        return fn
    return wrap


def claim_or_none(result: Result, claim_id: str) -> Claim | None:
    """The claim ``claim_id`` of ``result``, or None where the result has no such claim (an experiment's claims
    change over versions: a narrator leaves out what it does not find instead of falling back whole)."""
    return next((c for c in result.claims if c.id == claim_id), None)


def claim_by_id(result: Result, claim_id: str) -> Claim:
    """The claim ``claim_id`` of ``result`` (KeyError if absent: a narrator then falls back to the generic story)."""
    claim = claim_or_none(result, claim_id)
    if claim is None:
        raise KeyError(f"no claim {claim_id}")
    return claim


def claims_matching(result: Result, pattern: str) -> list[Claim]:
    """The claims whose id matches the regular expression ``pattern`` (whole id)."""
    rx = re.compile(pattern)
    return [c for c in result.claims if rx.fullmatch(c.id)]


__all__ = [
    "NARRATORS",
    "VERDICT_WORD",
    "ClaimText",
    "FigureText",
    "Story",
    "Table",
    "claim_by_id",
    "claim_mark",
    "claim_or_none",
    "claim_text",
    "claims_matching",
    "failed_part",
    "first_paper_sentence",
    "flatten",
    "generic_numbers",
    "judgement_rows",
    "label",
    "mean_sd",
    "narrator",
    "num",
    "paired_text",
    "pct",
    "pm",
    "precondition_parts",
    "rule_clauses",
    "rule_text",
    "scale_text",
    "short_label",
    "short_statement",
    "short_value",
    "shorten",
    "verdict_sentence",
    "without_label",
]
