"""Counter Example 1: the 180° + μ coupling, where every line meets at one point (PAPER.md §2, §5.5).

Coupling x1 = R_180 x0 + μ with x0 ~ N(0, I_2). Θ̂ = R − I = −2I, so I + tΘ̂ = (1 − 2t)I is singular at
t = ½ exactly and every line x_t = tμ + (1 − 2t)x0 passes through μ/2 there. Off t = ½ the exact
conditional-expectation field is v(x, t) = μ − 2(x − tμ)/(1 − 2t); its ODE dy/dt = −2y/(1 − 2t)
(y = x − tμ) has solutions y = c(1 − 2t) that all pass through y = 0 at t = ½, so the continuation
after t = ½ is not unique and the endpoint is decided by the solver. We integrate the exact field on
odd and even Euler grids, midpoint/RK4 grids, and dopri5, and record where each lands.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from flowvar.errors import ConfigError, SolverError
from flowvar.experiments.base import RunContext, register
from flowvar.gaussian import counterexample_problem, meeting_point, singular_times
from flowvar.metrics import rotation_pairing
from flowvar.models import CounterexampleField
from flowvar.results import Verdict
from flowvar.rules import at_every_setting, below
from flowvar.sampling import integrate


@dataclass
class Counterexample1Config:
    seed: int
    mu: float
    n_samples: int
    euler_steps: tuple[int, ...]
    rk_steps: tuple[int, ...]
    rtol: float
    atol: float

    def validate(self) -> None:
        if not any(n % 2 == 1 for n in self.euler_steps) or not any(n % 2 == 0 for n in self.euler_steps):
            raise ConfigError(f"euler_steps needs an odd and an even step count (the claims compare the two), got "
                              f"{list(self.euler_steps)}")


def rule_single_crossing(evidence: dict) -> Verdict:
    """ce1.single_crossing_point from ``singular_times``, ``meeting_time`` and ``max_distance_to_mu_half``."""
    times, dist = evidence["singular_times"], float(evidence["max_distance_to_mu_half"])
    if times != [0.5] or not dist <= 1e-6:
        return "refuted"
    return "confirmed" if evidence["meeting_time"] is not None and dist < 1e-12 else "inconclusive"


def failure_time(error: SolverError) -> float | None:
    """The time at which the field returned a non-finite value, as the solver's message names it ("… non-finite
    values (NaN or Inf) at t = 0.5 …"); None for a failure that names no such time (e.g. a state that overflowed
    while every field value was finite)."""
    found = re.search(r"non-finite values \(NaN or Inf\) at t = ([-+0-9.eE]+)", str(error))
    return float(found.group(1)) if found else None


def failure(error: SolverError) -> str:
    """A short record of a failed integration: where the field stopped being finite."""
    t = failure_time(error)
    return f"failed: non-finite field at t = {t:g}" if t is not None else f"failed: {error}"


HALF_TOLERANCE = 1e-6
"""A recorded failure time counts as t = ½ within this: the solver's message prints the time to 6 digits."""


def rule_odd_euler_reproduces_pairs(max_dist_by_grid: Mapping[str, float]) -> Verdict:
    """Odd Euler grid → max ‖x̂1 − (R x0 + μ)‖ over the sources (inf for a grid whose integration failed):
    "confirmed" if the largest is < 1e-8, "refuted" if > 1e-3 or if any grid's value is NaN (np.max propagates it),
    "inconclusive" in between or without an odd grid."""
    if not max_dist_by_grid:
        return "inconclusive"
    return below(float(np.max(list(max_dist_by_grid.values()))), confirm_below=1e-8, refute_above=1e-3)


def rule_even_euler_hits_singularity(non_finite_field_at: Mapping[str, float | None]) -> Verdict:
    """Even Euler grid → the time at which the field returned a non-finite value (:func:`failure_time`; None when
    the grid finished, or failed without naming such a time). A grid *stops at t = ½* when that time is within
    :data:`HALF_TOLERANCE` of ½. An identity, each grid deterministic: "confirmed" if every grid does, "refuted" if
    any grid does not (one such grid is a counterexample: an implementation defect, not a matter of chance),
    "inconclusive" without an even grid (:func:`flowvar.rules.at_every_setting` with ``identity=True``)."""
    return at_every_setting({k: t is not None and abs(t - 0.5) <= HALF_TOLERANCE
                             for k, t in non_finite_field_at.items()}, identity=True)


@register("counterexample1", title="Counter Example 1: all lines meet at t = ½ (180° + μ coupling)",
          config=Counterexample1Config,
          paper={"statement": "T(x0) = R_180 x0 + 5: T is invertible but the interpolation map is not invertible "
                              "at t = 1/2, so the ideal rectified flow cannot recover (x0, x1)"})
def run(config: Counterexample1Config, ctx: RunContext) -> None:
    problem, rotation = counterexample_problem(config.mu, 2)
    _, Theta = problem.field_parameters(rotation)
    times = singular_times(Theta)
    meet = meeting_point(problem, rotation)
    x0 = torch.randn(config.n_samples, 2, generator=ctx.generator("sources"), dtype=torch.float64)
    x1 = problem.ot_map(x0, rotation)
    mid = 0.5 * x0 + 0.5 * x1
    spread_at_half = float((mid - problem.mean / 2).norm(dim=1).max())
    ctx.choice("μ", f"'+5' read as μ = ({config.mu}, {config.mu}) (PAPER.md §2 [I])")
    ctx.metric("singular_times", times)
    ctx.metric("max_distance_to_mu_half_at_t_half", spread_at_half)
    evidence = {"singular_times": times, "meeting_time": meet[0] if meet else None,
                "max_distance_to_mu_half": spread_at_half}
    ctx.claim("ce1.single_crossing_point",
              "All interpolating lines meet at one point (μ/2) at t = ½, where I + tΘ̂ is singular.",
              evidence, verdict=rule_single_crossing(evidence), kind="identity", replicates="analytic (float64)",
              min_effect="exact: ‖x_½ − μ/2‖ < 1e-12 (refuted above 1e-6)",
              rule="confirmed if singular_times(Θ̂) == [0.5] exactly, a meeting time exists and max ‖x_½ − μ/2‖ < "
                   "1e-12; refuted if the singular times differ or the distance exceeds 1e-6")

    field = CounterexampleField(config.mu, 2)
    outcomes: dict[str, dict[str, float] | str] = {}
    non_finite_at: dict[str, float | None] = {}  # the recorded failure time of each run (None: it finished)
    runs = [("euler", n) for n in config.euler_steps] + [(m, n) for m in ("midpoint", "rk4") for n in config.rk_steps]
    for method, steps in runs:
        key = f"{method}_{steps}"
        try:
            outcomes[key] = rotation_pairing(integrate(field, x0, method=method, steps=steps).x1, x0, problem.mean)
        except SolverError as e:
            outcomes[key], non_finite_at[key] = failure(e), failure_time(e)
        else:
            non_finite_at[key] = None
    try:
        sol = integrate(field, x0, method="dopri5", rtol=config.rtol, atol=config.atol)
        outcomes["dopri5"] = {**rotation_pairing(sol.x1, x0, problem.mean), "nfe": sol.nfe}
    except SolverError as e:
        outcomes["dopri5"] = failure(e)
    ctx.metric("exact_field_endpoints", outcomes)

    odd = {k: v for k, v in outcomes.items() if k.startswith("euler_") and int(k.split("_")[1]) % 2 == 1}
    even = {k: v for k, v in outcomes.items() if k.startswith("euler_") and int(k.split("_")[1]) % 2 == 0}
    odd_dist = {k: v["max_dist_rotation"] if isinstance(v, dict) else math.inf for k, v in odd.items()}
    ctx.claim("ce1.odd_euler_reproduces_pairs",
              "Euler on a grid that jumps over t = ½ (odd step count) maps each x0 exactly to its training "
              "partner R x0 + μ under the exact field.",
              {"max_dist_to_rotation_partner": float(np.max(list(odd_dist.values()))) if odd else math.nan,
               "grids": sorted(odd), "max_dist_by_grid": odd_dist},
              verdict=rule_odd_euler_reproduces_pairs(odd_dist),
              kind="identity", replicates="analytic (float64)", min_effect="exact: error < 1e-8 (refuted above 1e-3)",
              rule="confirmed if max ‖x̂1 − (R x0 + μ)‖ < 1e-8 on every odd Euler grid; refuted if > 1e-3 (a failed "
                   "integration counts as infinite) or NaN on any grid; inconclusive in between or without an odd "
                   "grid")
    ctx.claim("ce1.even_euler_hits_singularity",
              "An even Euler grid evaluates the field exactly at t = ½, where it is undefined (0/0).",
              {"outcomes": {k: v if isinstance(v, str) else "finite" for k, v in even.items()},
               "non_finite_field_at_t": {k: non_finite_at[k] for k in even}},
              verdict=rule_even_euler_hits_singularity({k: non_finite_at[k] for k in even}),
              kind="identity", replicates="analytic (float64)",
              min_effect="exact: every even grid stops at t = ½",
              rule=f"confirmed if every even Euler grid stops with a non-finite field value at t = ½ (the failure "
                   f"time the solver records, within {HALF_TOLERANCE:g}); refuted if any grid does not (it finishes, "
                   f"or fails elsewhere or for another reason: each grid is deterministic, so one such grid is a "
                   f"counterexample to the identity); inconclusive without an even grid")
    ctx.note("The ODE of the exact field has non-unique solutions after t = ½ (all y = c(1 − 2t) pass through 0); "
             "which pairing the solver returns is a property of the solver. See exact_field_endpoints for "
             "midpoint/RK4 (which evaluate half-steps) and dopri5.")

    import matplotlib.pyplot as plt

    k = 30
    sol = integrate(field, x0[:k], method="euler", steps=101, return_trajectory=True)
    traj = sol.trajectory.numpy()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot(traj[:, :, 0], traj[:, :, 1], color="#0072B2", alpha=0.5, lw=0.8)
    ax.scatter(x0[:k, 0], x0[:k, 1], s=10, color="grey", label="x0")
    ax.scatter(x1[:k, 0], x1[:k, 1], s=10, color="#D55E00", label="R x0 + μ")
    ax.scatter([config.mu / 2], [config.mu / 2], marker="*", s=150, color="k", label="μ/2 (t = ½)")
    ax.set_aspect("equal")
    ax.set_xlabel("x₁ (coordinate 1)")
    ax.set_ylabel("x₂ (coordinate 2)")
    ax.legend(loc="upper left")
    ax.set_title("Counter Example 1: exact field, Euler 101 steps")
    ctx.figure("trajectories", fig)


__all__ = ["HALF_TOLERANCE", "Counterexample1Config", "failure", "failure_time", "rule_even_euler_hits_singularity",
           "rule_odd_euler_reproduces_pairs", "rule_single_crossing", "run"]
