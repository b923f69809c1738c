"""Claims, verdicts and the result of one experiment run (``result.json`` + ``summary.md``).

A verdict is never typed in: :func:`judge` computes it from booleans that the experiment derives from
its evidence by a rule stated next to the claim (a tolerance, a p-value, a sign), and records the rule.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Verdict = Literal["confirmed", "refuted", "inconclusive"]
VERDICTS: tuple[str, ...] = ("confirmed", "refuted", "inconclusive")


@dataclass
class Claim:
    """One checkable statement of the paper with our verdict and the numbers behind it."""

    id: str
    statement: str
    verdict: Verdict
    evidence: dict[str, Any]
    rule: str


def judge(claim_id: str, statement: str, evidence: dict[str, Any], *, confirmed: bool, refuted: bool,
          rule: str) -> Claim:
    """Build a :class:`Claim`: ``confirmed`` wins if true, else ``refuted``, else inconclusive.

    ``confirmed`` and ``refuted`` must not both be true (that would be a bug in the rule).
    """
    if confirmed and refuted:
        raise ValueError(f"claim {claim_id}: a rule cannot both confirm and refute ({rule})")
    verdict: Verdict = "confirmed" if confirmed else "refuted" if refuted else "inconclusive"
    return Claim(claim_id, statement, verdict, to_jsonable(evidence), rule)


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


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass
class Staging:
    """A folder being filled by :func:`staged_folder`; set ``keep = False`` to drop it instead of installing it."""

    path: Path
    keep: bool = True


@contextlib.contextmanager
def staged_folder(dest: Path | str) -> Iterator[Staging]:
    """Fill a hidden sibling ``.<name>.XXXX`` of ``dest``; on success it replaces ``dest`` by a rename.

    So ``dest`` is always either its old self or the complete new folder, never half-written: on an exception
    (or ``keep = False``) the staging folder is removed and ``dest`` is left as it was. A folder that cannot be
    created is a one-line :class:`~flowvar.errors.ConfigError` naming it.
    """
    from flowvar.errors import ConfigError

    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    except OSError as e:
        raise ConfigError(f"cannot write to output folder {dest.parent}: {e.strerror or e}; choose another --out"
                          ) from None
    stage = Staging(path)
    try:
        yield stage
        if stage.keep:
            if dest.exists():
                shutil.rmtree(dest)
            path.rename(dest)
        else:
            shutil.rmtree(path, ignore_errors=True)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def versions() -> dict[str, str]:
    """Versions of Python, flowvar and the numerical libraries, and the machine."""
    out = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine()}
    import importlib.metadata as md

    for dist in ("flowvar", "torch", "numpy", "scipy", "pot", "torchdiffeq", "matplotlib"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


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
        data = dict(data)
        data["claims"] = [Claim(**c) for c in data.get("claims", [])]
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> Result:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def summary_markdown(self) -> str:
        """A human-readable summary: verdict table, metrics, the paper's numbers, open choices."""
        mode = "quick" if self.quick else "full"
        lines = [f"# {self.experiment}: {self.title}", "",
                 f"Mode: {mode} · runtime {self.runtime_s:.1f} s · device {self.device}", ""]
        lines += ["## Claims", "", "| claim | verdict | statement | evidence |", "|---|---|---|---|"]
        for c in self.claims:
            ev = "; ".join(f"{k}={format_value(v)}" for k, v in list(c.evidence.items())[:8])
            lines.append(f"| `{c.id}` | **{c.verdict}** | {c.statement} | {ev} |")
        lines += ["", "Rules:", ""] + [f"- `{c.id}`: {c.rule}" for c in self.claims]
        if self.metrics:
            lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {format_value(v)} |" for k, v in self.metrics.items()]
        if self.paper:
            lines += ["", "## The paper's numbers", "", "```", json.dumps(self.paper, indent=1), "```"]
        if self.choices:
            lines += ["", "## Choices the paper leaves open", ""] + [f"- **{k}**: {v}" for k, v in self.choices.items()]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        if self.figures:
            lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in self.figures]
        lines += ["", "## Config", "", "```", json.dumps(self.config, indent=1), "```", ""]
        return "\n".join(lines)


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
