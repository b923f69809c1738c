"""The σ advisor's rule: which interpolant noise σ stops CFM from memorising its training pairs without hurting
generalisation (PAPER.md §2 Prop 2 / Remark 2, §3.4–3.5, §4 "GMM" and "Images").

Prop 2: on N fixed pairs with the deterministic interpolant (σ = 0) a zero-loss field exists and ODE integration
from a training source returns its own partner, whatever the pairing. Remark 2: noise x_t = (1−t)x0 + t x1 + σz
removes that solution; how much σ it takes depends on σ√D against the spacing of the training pairs, and too much σ
blurs the learnt distribution. The advisor weighs both sides as functions of σ by a stated rule:

* :func:`recommend_sigma` — the pure rule on a per-σ table (unit-tested on synthetic tables);
  :func:`fallback_sigma` — the flagged fallback when no σ satisfies it; :func:`rule_text` — the rule in words;
  :func:`gen_tolerance` — the generalisation slack τ.

The scores come from :func:`flowvar.metrics.evaluate_outputs` (per σ, means over seeds):

* memorisation M(σ) = (a − 1/N) / (1 − 1/N), a = pairing accuracy of Euler outputs from the N training sources (the
  fraction whose nearest training target is their own partner). M = 0 at chance, 1 for perfect pairing.
* generalisation G(σ) = unbiased MMD² (RBF, one median-heuristic bandwidth of the held-out data shared by every σ)
  between outputs from fresh sources and held-out real data; lower is better, 0 in expectation for a perfect model.

The experiment ``flowvar run sigma_tradeoff`` (:mod:`flowvar.experiments.sigma_tradeoff`) measures them and applies
the rule; ``flowvar advise-sigma --data PATH`` (:func:`flowvar.advise.advise_sigma`) runs it on a user's data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from flowvar.errors import ConfigError
from flowvar.metrics import GEN_KEY, MEM_KEY

DEFAULT_SIGMAS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
"""The σ grid of the study (0 is the deterministic baseline; 0.05 is the paper's noisy setting)."""

# --------------------------------------------------------------------------------------------- the rule


def finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool): a score the rule can use."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def gen_tolerance(best: float, gen_margin: float, gen_floor: float = 0.0) -> float:
    """The generalisation slack τ = max(gen_margin · max(G*, 0), gen_floor) above the best score G*.

    The relative part is the stated margin; the absolute floor is the estimator's noise level (a relative margin of
    a best value near 0 would otherwise shrink to nothing and rank σ by estimator noise).
    """
    return max(gen_margin * max(best, 0.0), gen_floor)


def rule_text(gen_margin: float, mem_margin: float, gen_floor: float = 0.0, *, gen_name: str = "G",
              mem_name: str = "M") -> str:
    """The rule of :func:`recommend_sigma` (and its fallback) in one paragraph, with the margins filled in."""
    return (f"Let G* = min over σ of the generalisation score {gen_name}(σ) (lower is better) and "
            f"τ = max({gen_margin:g} · max(G*, 0), {gen_floor:.3g}) (relative margin {gen_margin:g}, absolute noise "
            f"floor {gen_floor:.3g}). Among the σ with {gen_name}(σ) ≤ G* + τ, recommend the smallest σ whose "
            f"memorisation score {mem_name}(σ) = (pairing accuracy − 1/N)/(1 − 1/N) is ≤ {mem_margin:g} (within "
            f"{mem_margin:g} of chance on the 0 = chance … 1 = perfect-pairing scale). Rows with a non-finite score "
            f"are left out. If no σ qualifies there is no recommendation by the rule; the flagged fallback (not a "
            f"recommendation) is the σ with the smallest {mem_name} among those with {gen_name}(σ) ≤ G* + τ (ties: "
            f"the smaller σ), given only if its {mem_name} is at least reduce_margin below {mem_name}(0); otherwise "
            f"there is no fallback, and the smallest σ that does cut {mem_name} is named with its {gen_name} cost.")


def _clean(table: Sequence[Mapping[str, Any]], gen_key: str, mem_key: str) -> tuple[list[Mapping[str, Any]], list[Any]]:
    """Rows sorted by σ with finite scores, and the σ of the rows left out. Raises ConfigError on a bad table."""
    if not isinstance(table, Sequence) or isinstance(table, str | bytes):
        raise ConfigError(f"the per-σ table must be a list of rows (mappings), got {type(table).__name__}")
    rows, dropped, seen = [], [], set()
    for k, row in enumerate(table):
        if not isinstance(row, Mapping) or "sigma" not in row or gen_key not in row or mem_key not in row:
            raise ConfigError(f"row {k} of the per-σ table must be a mapping with keys 'sigma', {gen_key!r} and "
                              f"{mem_key!r}, got {row!r}")
        sigma = row["sigma"]
        if not finite_number(sigma) or sigma < 0:
            raise ConfigError(f"row {k} of the per-σ table has sigma={sigma!r}; σ must be a finite number >= 0")
        if sigma in seen:
            raise ConfigError(f"the per-σ table lists σ = {sigma} twice; average the rows of one σ first")
        seen.add(sigma)
        if finite_number(row[gen_key]) and finite_number(row[mem_key]):
            rows.append(row)
        else:
            dropped.append(sigma)
    rows.sort(key=lambda r: float(r["sigma"]))
    return rows, sorted(dropped)


def _check_margins(gen_margin: float, mem_margin: float, gen_floor: float) -> None:
    if not finite_number(gen_margin) or gen_margin < 0:
        raise ConfigError(f"gen_margin must be a finite number >= 0 (a relative margin, e.g. 0.25), got {gen_margin!r}")
    if not finite_number(mem_margin) or not 0 <= mem_margin < 1:
        raise ConfigError(f"mem_margin must be in [0, 1) (distance from chance on the 0 … 1 memorisation scale, e.g. "
                          f"0.05), got {mem_margin!r}")
    if not finite_number(gen_floor) or gen_floor < 0:
        raise ConfigError(f"gen_floor must be a finite number >= 0, got {gen_floor!r}")


def _qualified(rows: list[Mapping[str, Any]], gen_key: str, gen_margin: float,
               gen_floor: float) -> tuple[list[Mapping[str, Any]], float, float]:
    best = min(float(r[gen_key]) for r in rows)
    tol = gen_tolerance(best, gen_margin, gen_floor)
    return [r for r in rows if float(r[gen_key]) <= best + tol], best, tol


def recommend_sigma(table: Sequence[Mapping[str, Any]], gen_margin: float, mem_margin: float, *,
                    gen_floor: float = 0.0, gen_key: str = GEN_KEY, mem_key: str = MEM_KEY
                    ) -> tuple[float | None, str]:
    """The advisor's rule on a per-σ table; returns (σ or None, the reason in words).

    ``table``: rows (any order) with ``"sigma"``, a generalisation score ``table[i][gen_key]`` (lower is better) and a
    memorisation score ``table[i][mem_key]`` (0 = chance, 1 = perfect pairing). With G* = min_σ G(σ) and
    τ = max(gen_margin · max(G*, 0), gen_floor), the σ that *generalise* are those with G(σ) ≤ G* + τ; the answer
    is the smallest of them with M(σ) ≤ ``mem_margin``. None when no σ qualifies (see :func:`fallback_sigma`) or no
    row has finite scores. Rows with a non-finite score are left out (and named in the reason).
    """
    _check_margins(gen_margin, mem_margin, gen_floor)
    rows, dropped = _clean(table, gen_key, mem_key)
    note = f" (left out for non-finite scores: σ = {', '.join(f'{s:g}' for s in dropped)})" if dropped else ""
    if not rows:
        return None, f"no σ has finite scores{note}; nothing to recommend"
    good, best, tol = _qualified(rows, gen_key, gen_margin, gen_floor)
    gen_list = ", ".join(f"{float(r['sigma']):g}" for r in good)
    for r in good:
        if float(r[mem_key]) <= mem_margin:
            sigma = float(r["sigma"])
            return sigma, (f"σ = {sigma:g} is the smallest σ with memorisation {float(r[mem_key]):.3g} ≤ "
                           f"{mem_margin:g} among the σ whose generalisation is within τ = {tol:.3g} of the best "
                           f"{best:.3g} (σ ∈ {{{gen_list}}}){note}")
    low = min(good, key=lambda r: float(r[mem_key]))
    last = rows[-1]
    hint = (f"; even the largest σ of the grid (σ = {float(last['sigma']):g}) has memorisation "
            f"{float(last[mem_key]):.3g} > {mem_margin:g}: memorisation may stop at a larger σ (extend sigmas) if "
            f"generalisation allows" if float(last[mem_key]) > mem_margin else "")
    return None, (f"no σ satisfies both margins: the σ whose generalisation is within τ = {tol:.3g} of the best "
                  f"{best:.3g} (σ ∈ {{{gen_list}}}) all have memorisation > {mem_margin:g} (lowest "
                  f"{float(low[mem_key]):.3g} at σ = {float(low['sigma']):g}){hint}{note}")


def fallback_sigma(table: Sequence[Mapping[str, Any]], gen_margin: float, *, gen_floor: float = 0.0,
                   reduce_margin: float = 0.1, gen_key: str = GEN_KEY, mem_key: str = MEM_KEY
                   ) -> tuple[float | None, str]:
    """The flagged fallback when :func:`recommend_sigma` finds nothing: among the σ whose generalisation is within
    τ of the best (as in the rule), the one with the smallest memorisation score (ties: the smaller σ) — but only if
    it lowers memorisation by at least ``reduce_margin`` below the table's smallest σ (σ = 0, the baseline):
    M(σ_0) − M(σ) ≥ ``reduce_margin``. A σ that does not cut memorisation is no answer to "which σ stops
    memorising" (an argmin of M among values that all sit near 1 only ranks noise, or picks the smaller σ on a tie).

    Returns (σ or None, the reason). None when no row has finite scores, or when no σ within τ cuts memorisation;
    the reason then names the smallest σ of the grid that does cut it (by ``reduce_margin``) with its generalisation
    cost G(σ) − G*, as a trade-off for the user to weigh, not a recommendation."""
    _check_margins(gen_margin, 0.0, gen_floor)
    if not finite_number(reduce_margin) or not 0 < reduce_margin <= 1:
        raise ConfigError(f"reduce_margin must be in (0, 1] (a drop on the 0 … 1 memorisation scale, e.g. 0.1), got "
                          f"{reduce_margin!r}")
    rows, _ = _clean(table, gen_key, mem_key)
    if not rows:
        return None, "no σ has finite scores; no fallback either"
    good, best, tol = _qualified(rows, gen_key, gen_margin, gen_floor)
    base = rows[0]
    m_base, s_base = float(base[mem_key]), float(base["sigma"])
    low = min(good, key=lambda r: (float(r[mem_key]), float(r["sigma"])))
    sigma = float(low["sigma"])
    if m_base - float(low[mem_key]) >= reduce_margin:
        return sigma, (f"FALLBACK, not a σ meeting both margins: σ = {sigma:g} lowers memorisation from "
                       f"{m_base:.3g} (σ = {s_base:g}) to {float(low[mem_key]):.3g} (by ≥ reduce_margin = "
                       f"{reduce_margin:g}), the lowest among the σ whose generalisation is within τ = {tol:.3g} of "
                       f"the best {best:.3g}")
    cutters = [r for r in rows if m_base - float(r[mem_key]) >= reduce_margin]
    text = (f"no fallback either: no σ whose generalisation is within τ = {tol:.3g} of the best {best:.3g} lowers "
            f"memorisation by ≥ reduce_margin = {reduce_margin:g} below M = {m_base:.3g} at σ = {s_base:g} (the "
            f"lowest there is {float(low[mem_key]):.3g} at σ = {sigma:g})")
    if cutters:
        cut = cutters[0]
        g_cut = float(cut[gen_key])
        text += (f"; the smallest σ that does cut memorisation is σ = {float(cut['sigma']):g} (memorisation "
                 f"{float(cut[mem_key]):.3g}) at a generalisation cost: G = {g_cut:.3g}, {g_cut - best:+.3g} "
                 f"against the best (τ = {tol:.3g}) — a trade-off to weigh, not a recommendation")
    else:
        text += "; no σ of the grid cuts memorisation by that much (extend sigmas)"
    return None, text


__all__ = ["DEFAULT_SIGMAS", "fallback_sigma", "finite_number", "gen_tolerance", "recommend_sigma", "rule_text"]
