"""Training seeds as the replicates of a claim about trained networks, shared by the experiments that judge such a
claim with a per-network rule (fig6, solver_resolution).

A claim like "the σ = 0 network reproduces the rotation pairs" is judged by its rule on one trained network; one
network is one replicate, so it cannot tell a property of the training from one of that initialisation and batch
stream. Each training seed (its own initialisation and batches, :meth:`flowvar.experiments.base.RunContext.replicate`)
is judged on its own by the claim's rule, and the seeds' verdicts are combined:

* :func:`combine_seeds` — confirmed only if every one of at least :data:`MIN_SEEDS` seeds confirms, refuted only if
  every one refutes, inconclusive otherwise (as :func:`flowvar.stats.paired_over_seeds`, one seed is inconclusive);
* :func:`over_seeds` — a rule applied per seed and combined; :func:`status_over_seeds` for the per-setting status
  claims (:func:`flowvar.metrics.status_verdict`);
* :func:`in_every_seed` — a precondition measured per seed that must hold in every seed;
* :func:`per_seed_evidence`, :func:`seeds_rule_text` — the evidence and the rule text that say so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from flowvar.errors import ConfigError
from flowvar.metrics import status_verdict
from flowvar.results import Precondition

MIN_SEEDS = 2
"""Fewest training seeds for a trained-model claim to be confirmed or refuted: one network is one replicate (as in
:func:`flowvar.stats.paired_over_seeds`, where one seed is always inconclusive)."""
SEED_VERDICTS = ("confirmed", "refuted", "inconclusive")
"""What a claim's rule can give one seed's networks (a failed precondition is judged over all seeds, not per seed)."""

T = TypeVar("T")


@dataclass(frozen=True)
class SeedVerdicts:
    """A trained-model claim judged per training seed: ``per_seed`` (seed label → that seed's verdict by the claim's
    rule) and ``verdict``, their combination by :func:`combine_seeds`."""

    verdict: str
    per_seed: dict[str, str]


def combine_seeds(per_seed: Mapping[str, str]) -> str:
    """The verdict of a trained-model claim from its verdict in each training seed (seeds are the replicates).

    Confirmed if there are at least :data:`MIN_SEEDS` seeds and every seed's verdict is "confirmed"; refuted if at
    least :data:`MIN_SEEDS` and every one is "refuted"; inconclusive otherwise: seeds that disagree, any
    inconclusive seed, or a single seed (one trained network cannot tell a property of the training from one of
    that network, as :func:`flowvar.stats.paired_over_seeds` treats one seed). Raises ConfigError for a verdict
    other than confirmed / refuted / inconclusive.
    """
    unknown = sorted(set(per_seed.values()) - set(SEED_VERDICTS))
    if unknown:
        raise ConfigError(f"a seed's verdict must be one of {list(SEED_VERDICTS)}, got {unknown}")
    verdicts = list(per_seed.values())
    if len(verdicts) < MIN_SEEDS:
        return "inconclusive"
    if all(v == "confirmed" for v in verdicts):
        return "confirmed"
    if all(v == "refuted" for v in verdicts):
        return "refuted"
    return "inconclusive"


def over_seeds(evidence: Mapping[str, T], rule: Callable[[T], str]) -> SeedVerdicts:
    """Apply ``rule`` to each seed's ``evidence`` (seed label → that seed's numbers) and combine the verdicts
    (:func:`combine_seeds`)."""
    per_seed = {label: rule(ev) for label, ev in evidence.items()}
    return SeedVerdicts(combine_seeds(per_seed), per_seed)


def status_over_seeds(statuses: Mapping[str, Sequence[str]], holds: Literal["reproduces", "fails"]) -> SeedVerdicts:
    """A per-setting status claim over seeds: :func:`flowvar.metrics.status_verdict` on each seed's statuses
    (``statuses``: seed label → the status of each of that seed's settings), combined by :func:`combine_seeds`."""
    return over_seeds(statuses, lambda seed_statuses: status_verdict(seed_statuses, holds))


def in_every_seed(per_seed: Mapping[str, Precondition]) -> Precondition:
    """A precondition measured per training seed that must hold in every seed: the claim is judged over the seeds'
    networks together, so one seed where it fails makes the claim untestable. ``measured`` holds each seed's numbers
    under its label; the remedy is that of the seeds where it fails. No seed: does not hold."""
    statement = "; ".join(dict.fromkeys(p.statement for p in per_seed.values()))
    remedies = dict.fromkeys(p.remedy for p in per_seed.values() if not p.holds and p.remedy)
    return Precondition(f"in every training seed: {statement}",
                        holds=bool(per_seed) and all(p.holds for p in per_seed.values()),
                        measured={label: {"holds": p.holds, **p.measured} for label, p in per_seed.items()},
                        remedy="; ".join(remedies))


def per_seed_evidence(per_seed: Mapping[str, dict[str, Any]], verdicts: SeedVerdicts) -> dict[str, Any]:
    """A claim's evidence over seeds: every seed's evidence and verdict (``per_seed``, ``verdict_per_seed``), and the
    first seed's evidence also at the top level (``shown_seed`` names it: what the figures and the report's one-seed
    sentences show)."""
    first = next(iter(per_seed))
    return {**per_seed[first], "shown_seed": first, "verdict_per_seed": verdicts.per_seed,
            "per_seed": dict(per_seed)}


def seeds_rule_text(n_seeds: int) -> str:
    """The over-seeds part of every such claim's rule text (:func:`combine_seeds`)."""
    return (f" Judged per training seed ({n_seeds} here; each its own initialisation and batches): the rule above "
            f"gives each seed's networks their own verdict, and the claim is confirmed only if every one of at least "
            f"{MIN_SEEDS} seeds confirms, refuted only if every one of at least {MIN_SEEDS} refutes, inconclusive "
            f"otherwise (seeds that disagree, an inconclusive seed, or a single seed: one network is one replicate; "
            f"flowvar.experiments._seed_replicates.combine_seeds)")


__all__ = ["MIN_SEEDS", "SEED_VERDICTS", "SeedVerdicts", "combine_seeds", "in_every_seed", "over_seeds",
           "per_seed_evidence", "seeds_rule_text", "status_over_seeds"]
