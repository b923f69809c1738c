"""Claims, verdicts and the result of one experiment run (``result.json`` + ``summary.md``).

A verdict is never typed in: :func:`judge` computes it from the claim's evidence by a rule stated next to the
claim (a tolerance, a p-value, a sign), and records the rule. Every claim also says

* its **kind** (:data:`KINDS`): an *identity* holds by construction when the code is right (an implementation
  check: a telescoping Euler sum, a closed-form endpoint); a *reproduction* is an empirical statement of the
  paper that could come out either way; a *finding* is a statement of ours beyond the paper. Reports count the
  three apart and headline the reproductions;
* its **precondition** (:class:`Precondition`), measured in the same run: when it does not hold, the claim is
  *untestable* here, whatever the rule would have said (recorded beside it), with the number and the remedy;
* its **minimum effect size** (text naming the threshold and the scale it is relative to) and its
  **replicates** (what the unit of replication is: training seeds, Monte-Carlo repeats, or none for an
  identity).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Verdict = Literal["confirmed", "refuted", "inconclusive", "untestable"]
VERDICTS: tuple[str, ...] = ("confirmed", "refuted", "inconclusive", "untestable")
ClaimKind = Literal["identity", "reproduction", "finding"]
KINDS: tuple[str, ...] = ("identity", "reproduction", "finding")


@dataclass(frozen=True)
class Precondition:
    """What must hold in this run for a claim to be testable at all, measured in the same run.

    ``statement``: the condition in words; ``holds``: whether it did; ``measured``: the numbers it was judged
    on; ``remedy``: what would make the claim testable when it does not hold (a larger N, more steps, …).
    """

    statement: str
    holds: bool
    measured: dict[str, Any] = field(default_factory=dict)
    remedy: str = ""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))


def all_preconditions(*preconditions: Precondition) -> Precondition:
    """Several preconditions that must all hold, as one: the statements joined, each one's measured numbers under
    its index, the remedies of those that fail."""
    holds = all(p.holds for p in preconditions)
    return Precondition("; and ".join(p.statement for p in preconditions), holds,
                        {f"[{i}]": {"holds": p.holds, **p.measured} for i, p in enumerate(preconditions, 1)},
                        "; ".join(p.remedy for p in preconditions if not p.holds and p.remedy))


@dataclass
class Claim:
    """One checkable statement of the paper (or ours) with its verdict, the numbers behind it and how it was
    judged; see the module doc for ``kind``, ``precondition``, ``min_effect`` and ``replicates``.

    ``verdict_if_testable`` is what the rule gave on the evidence when the precondition failed (the verdict is
    then "untestable"); None otherwise.
    """

    id: str
    statement: str
    verdict: Verdict
    evidence: dict[str, Any]
    rule: str
    kind: ClaimKind = "reproduction"
    precondition: dict[str, Any] | None = None
    min_effect: str = ""
    replicates: str = ""
    verdict_if_testable: str | None = None


def verdict_from(confirmed: bool, refuted: bool, what: str = "rule") -> Verdict:
    """"confirmed" if ``confirmed``, else "refuted" if ``refuted``, else "inconclusive"; both true is a bug."""
    if confirmed and refuted:
        raise ValueError(f"{what}: a rule cannot both confirm and refute")
    return "confirmed" if confirmed else "refuted" if refuted else "inconclusive"


def judge(claim_id: str, statement: str, evidence: dict[str, Any], *, rule: str, kind: ClaimKind,
          verdict: Verdict | None = None, confirmed: bool | None = None, refuted: bool | None = None,
          precondition: Precondition | None = None, min_effect: str = "", replicates: str = "") -> Claim:
    """Build a :class:`Claim`.

    The rule's outcome is either ``verdict`` (what a pure rule function returned on ``evidence``) or the pair
    ``confirmed``/``refuted`` (``confirmed`` wins, both true is a bug). A ``precondition`` that does not hold
    turns it into "untestable" (the rule's outcome kept as ``verdict_if_testable``).
    """
    if kind not in KINDS:
        raise ValueError(f"claim {claim_id}: kind must be one of {KINDS}, got {kind!r}")
    if verdict is None:
        if confirmed is None or refuted is None:
            raise ValueError(f"claim {claim_id}: give either verdict= or both confirmed= and refuted=")
        verdict = verdict_from(bool(confirmed), bool(refuted), f"claim {claim_id} ({rule})")
    elif confirmed is not None or refuted is not None:
        raise ValueError(f"claim {claim_id}: give verdict= or confirmed=/refuted=, not both")
    if verdict not in VERDICTS:
        raise ValueError(f"claim {claim_id}: unknown verdict {verdict!r}")
    if kind == "identity" and precondition is not None:
        raise ValueError(f"claim {claim_id}: an identity holds by construction and takes no precondition")
    if_testable = None
    if precondition is not None and not precondition.holds:
        if_testable, verdict = verdict, "untestable"
    return Claim(claim_id, statement, verdict, to_jsonable(evidence), rule, kind,
                 precondition.to_dict() if precondition is not None else None, min_effect, replicates, if_testable)


#: The key of :func:`claim_counts` that holds, per kind, how many untestable claims their rule alone would refute.
UNTESTABLE_REFUTED = "untestable_refuted"


def claim_counts(claims: list[Claim] | list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """How many claims of each kind have each verdict: ``{kind: {verdict: n}}`` (every kind and verdict listed),
    and under :data:`UNTESTABLE_REFUTED` ``{kind: n}`` the untestable claims whose rule alone refutes them (their
    ``verdict_if_testable``): a headline must not let a failed precondition hide what the evidence points to."""
    counts = {k: {v: 0 for v in VERDICTS} for k in KINDS}
    set_aside = {k: 0 for k in KINDS}
    for c in claims:
        kind = c.get("kind", "reproduction") if isinstance(c, dict) else c.kind
        verdict = c["verdict"] if isinstance(c, dict) else c.verdict
        if_testable = c.get("verdict_if_testable") if isinstance(c, dict) else c.verdict_if_testable
        counts.setdefault(kind, {v: 0 for v in VERDICTS})
        counts[kind][verdict] = counts[kind].get(verdict, 0) + 1
        if verdict == "untestable" and if_testable == "refuted":
            set_aside[kind] = set_aside.get(kind, 0) + 1
    counts[UNTESTABLE_REFUTED] = set_aside
    return counts


def verdict_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """The claims whose verdict differs between two judgings of one result (claim id → verdict), in ``before``'s
    order then the new ones: ``["prop2.x: confirmed → untestable", "new.claim: not a claim → refuted"]``."""
    ids = [*before, *(k for k in after if k not in before)]
    return [f"{k}: {before.get(k, 'not a claim')} → {after.get(k, 'no longer a claim')}"
            for k in ids if before.get(k) != after.get(k)]


def headline(counts: dict[str, dict[str, int]]) -> str:
    """The report's headline from :func:`claim_counts`: the reproductions, then identities and findings.

    E.g. "9 of 20 reproductions confirmed, 4 refuted, 5 inconclusive, 2 untestable here (1 of them refuted by their
    rule alone) · 14 of 14 identities hold · findings: 3 confirmed, 1 refuted, 0 inconclusive, 0 untestable". The
    reproductions are always stated first (the headline of issue 15); a run without any reads "no reproduction
    claims in this run" rather than "0 of 0 reproductions confirmed, 0 refuted, ...", a row of zeros a reader takes
    for a result. Identities and findings are listed only where there are some.
    """
    rep = counts.get("reproduction", {})
    n_rep = sum(rep.values())
    ident = counts.get("identity", {})
    n_id = sum(ident.values())
    fin = counts.get("finding", {})
    set_aside = counts.get(UNTESTABLE_REFUTED, {})

    def aside(kind: str) -> str:  # what the failed preconditions set aside
        n = set_aside.get(kind, 0)
        return f" ({n} of them refuted by their rule alone)" if n else ""

    parts = [f"{rep.get('confirmed', 0)} of {n_rep} reproductions confirmed, {rep.get('refuted', 0)} refuted, "
             f"{rep.get('inconclusive', 0)} inconclusive, {rep.get('untestable', 0)} untestable here"
             + aside("reproduction") if n_rep else "no reproduction claims in this run"]
    broken = n_id - ident.get("confirmed", 0)
    if n_id:
        parts.append(f"{ident.get('confirmed', 0)} of {n_id} identities hold"
                     + (f" ({broken} do not: an implementation defect)" if broken else ""))
    if sum(fin.values()):
        parts.append(f"findings: {fin.get('confirmed', 0)} confirmed, {fin.get('refuted', 0)} refuted, "
                     f"{fin.get('inconclusive', 0)} inconclusive, {fin.get('untestable', 0)} untestable"
                     + aside("finding"))
    return " · ".join(parts)


def to_jsonable(value: Any) -> Any:
    """Convert tensors, numpy values, tuples and non-finite floats into plain JSON values.

    Non-finite floats become the strings "inf", "-inf" and "nan" so the file stays strict JSON.
    """
    try:
        import numpy as np
        import torch
    except ImportError:  # pragma: no cover
        np = torch = None  # type: ignore[assignment]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if torch is not None and isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if np is not None and isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if np is not None and isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, bool | int | str) or value is None:
        return value
    return str(value)


_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}  # to_jsonable's text for each, and the float


def from_jsonable(value: Any) -> Any:
    """Stored metrics back as computed, the inverse of :func:`to_jsonable` on non-finite floats: the strings "nan",
    "inf" and "-inf" become NaN, inf and −inf again, in dicts and lists at any depth (copied); anything else is kept.
    :func:`flowvar.experiments.base.assemble_experiment` applies it to every part, so a rule judging stored metrics
    again sees the NaN the run saw, not a string it cannot compare."""
    if isinstance(value, Mapping):
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value


RESULT_MARKER = "result.json"
"""The file every folder flowvar writes holds: an existing folder without it is not flowvar's to replace."""


RESULT_FILES = (RESULT_MARKER, "summary.md")
"""Files of a result folder besides its figures (listed in its result.json)."""


def git_commit() -> str | None:
    """The git commit of the flowvar source tree (``+dirty`` when tracked files differ from it), or None when the
    source is not a git checkout (an installed wheel) or git is missing."""
    import subprocess

    root = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head or None


@functools.cache
def _process_commit() -> str:
    """:func:`git_commit` when this process first asks: its code was imported then, so a later commit of the
    checkout is not the code that computed its results (and a sweep's many results ask git once)."""
    return git_commit() or "unknown (not a git checkout)"


def versions() -> dict[str, str]:
    """Versions of Python, flowvar and the numerical libraries, the machine, and ``git_commit``: the commit of the
    flowvar source the process runs (``+dirty`` with uncommitted changes; "unknown (not a git checkout)" for an
    installed wheel), so a stored result names the code that produced it (``flowvar`` alone is ``0.1.0`` for all)."""
    out = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine()}
    import importlib.metadata as md

    for dist in ("flowvar", "torch", "numpy", "scipy", "pot", "torchdiffeq", "matplotlib"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    out["git_commit"] = _process_commit()
    return out


def _field_problem(what: str, missing: set[str], unknown: set[str]) -> str:
    parts = ([f"missing {', '.join(sorted(missing))}"] if missing else []) + \
        ([f"unknown {', '.join(sorted(unknown))}"] if unknown else [])
    return f"{what}: {'; '.join(parts)}"


RESULT_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "experiment": (str,), "title": (str,), "config": (dict,), "quick": (bool,), "claims": (list,),
    "metrics": (dict,), "paper": (dict,), "choices": (dict,), "notes": (list,), "figures": (list,),
    "runtime_s": (int, float), "device": (str,), "versions": (dict,)}
"""The JSON types of a ``result.json``'s fields, checked on load: the report reads them without checking again."""

CLAIM_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "statement": (str,), "verdict": (str,), "evidence": (dict,), "rule": (str,), "kind": (str,),
    "precondition": (dict, type(None)), "min_effect": (str,), "replicates": (str,),
    "verdict_if_testable": (str, type(None))}
"""The JSON types of a claim's fields in a ``result.json``."""


def _wrong_types(data: Mapping[str, Any], types: Mapping[str, tuple[type, ...]]) -> str | None:
    """The first field of ``data`` whose value is not of its JSON type in ``types``, as ``"name must be a …, got
    …"``, or None. A bool is no number here (JSON keeps them apart)."""
    for name, allowed in types.items():
        if name not in data:
            continue
        value = data[name]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            return f"{name} must be a {names}, got {type(value).__name__}"
    return None


@dataclass
class Result:
    """Everything one experiment run reports; serialised to ``result.json``."""

    experiment: str
    title: str
    config: dict[str, Any]
    quick: bool
    claims: list[Claim] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    runtime_s: float = 0.0
    device: str = "cpu"
    versions: dict[str, str] = field(default_factory=versions)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        """The result a ``result.json`` holds. ValueError (naming what is wrong, not a constructor's internals) for a
        mapping that is not one: missing or unknown fields, a verdict or kind flowvar does not use."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        if required - set(data) or set(data) - fields:
            raise ValueError(_field_problem("result", required - set(data), set(data) - fields))
        data = dict(data)
        wrong = _wrong_types(data, RESULT_FIELD_TYPES)
        if wrong:
            raise ValueError(f"result field {wrong}")
        claims = []
        claim_fields = {f.name for f in dataclasses.fields(Claim)}
        claim_required = {f.name for f in dataclasses.fields(Claim) if f.default is dataclasses.MISSING}
        for c in data.get("claims", []):
            if not isinstance(c, dict):
                raise ValueError(f"claim {c!r}: not a JSON object")
            if claim_required - set(c) or set(c) - claim_fields:
                raise ValueError(_field_problem(f"claim {c.get('id', '?')}", claim_required - set(c),
                                                set(c) - claim_fields))
            wrong = _wrong_types(c, CLAIM_FIELD_TYPES)
            if wrong:
                raise ValueError(f"claim {c.get('id', '?')}: field {wrong}")
            if c["verdict"] not in VERDICTS or c.get("kind", "reproduction") not in KINDS:
                raise ValueError(f"claim {c['id']} has verdict {c['verdict']!r} and kind {c.get('kind')!r}; "
                                 f"verdicts are {', '.join(VERDICTS)} and kinds {', '.join(KINDS)}")
            claims.append(Claim(**c))
        data["claims"] = claims
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> Result:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def summary_markdown(self) -> str:
        """A plain summary (verdict table, metrics, the paper's numbers, open choices, config), no JSON. The
        experiments' ``summary.md`` uses the report's richer renderer
        (:func:`flowvar.report.markdown.result_markdown`)."""
        mode = "quick" if self.quick else "full"
        lines = [f"# {self.experiment}: {self.title}", "",
                 f"Mode: {mode} · runtime {self.runtime_s:.1f} s · device {self.device}", ""]
        lines += ["## Claims", "", headline(claim_counts(self.claims)), "",
                  "| claim | kind | verdict | statement | evidence |", "|---|---|---|---|---|"]
        for c in self.claims:
            ev = "; ".join(f"{k}={format_value(v)}" for k, v in list(c.evidence.items())[:8])
            lines.append(f"| `{c.id}` | {c.kind} | **{c.verdict}** | {c.statement} | {ev} |")
        lines += ["", "How each claim was judged:", ""] + [f"- `{c.id}`: {judgement_text(c)}" for c in self.claims]
        if self.metrics:
            lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {format_value(v)} |" for k, v in self.metrics.items()]
        if self.paper:
            lines += ["", "## The paper's numbers", ""]
            lines += [f"- **{k}**: {format_value(v)}" for k, v in self.paper.items()]
        if self.choices:
            lines += ["", "## Choices the paper leaves open", ""] + [f"- **{k}**: {v}" for k, v in self.choices.items()]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        if self.figures:
            lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in self.figures]
        lines += ["", "## Config", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {format_value(v)} |" for k, v in self.config.items()] + [""]
        return "\n".join(lines)


def judgement_text(c: Claim | dict[str, Any]) -> str:
    """The rule, the precondition (with what was measured), the minimum effect and the replicates, in one line."""
    get = c.get if isinstance(c, dict) else lambda k, d=None: getattr(c, k, d)
    parts = [f"rule: {get('rule')}"]
    pre = get("precondition")
    if pre:
        measured = ", ".join(f"{k} = {format_value(v)}" for k, v in (pre.get("measured") or {}).items())
        state = "holds" if pre.get("holds") else "does NOT hold"
        parts.append(f"precondition ({state}): {pre.get('statement')}" + (f" [{measured}]" if measured else "")
                     + (f"; to make it testable: {pre['remedy']}" if not pre.get("holds") and pre.get("remedy")
                        else ""))
        if get("verdict_if_testable"):
            parts.append(f"the rule alone would say: {get('verdict_if_testable')}")
    if get("min_effect"):
        parts.append(f"minimum effect: {get('min_effect')}")
    if get("replicates"):
        parts.append(f"replicates: {get('replicates')}")
    return " · ".join(parts)


def format_value(v: Any) -> str:
    """Compact rendering of a number or a short list for tables."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        if len(v) > 6:
            return "[" + ", ".join(format_value(x) for x in v[:6]) + ", …]"
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {format_value(x)}" for k, x in list(v.items())[:6]) + "}"
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "…"


__all__ = [
    "KINDS",
    "RESULT_FILES",
    "RESULT_MARKER",
    "VERDICTS",
    "Claim",
    "Precondition",
    "Result",
    "all_preconditions",
    "claim_counts",
    "format_value",
    "from_jsonable",
    "git_commit",
    "headline",
    "judge",
    "judgement_text",
    "to_jsonable",
    "verdict_changes",
    "verdict_from",
    "versions",
]
