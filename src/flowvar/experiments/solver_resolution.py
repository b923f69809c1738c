"""Solver resolution: when does a flow trained on the 180° + μ coupling return the rotation pairs? (PAPER.md §4).

``fig6`` evaluates one trained network per σ on a handful of grids. This study maps the same question over the
axes that decide it: the ODE solver (Euler with odd and even step counts 10 … 1001, midpoint/RK4, adaptive
dopri5), the training length and the interpolant noise σ, and measures the quantity that explains the answer,
the width of the network's *turning window* around t = ½.

Protocol (fig6's protocol; the grid evaluation and the status rule are the library's, shared with fig6):

1. For each of ``n_seeds`` training seeds (seed s = ``seed`` + k, the replicates: fig6's, a seed's own
   "init" and "batches" streams of ``ctx.replicate(k)``, the same for every σ within the seed) and each σ in
   ``sigmas``, train one time-conditioned MLP exactly as ``fig6`` does (fresh pairs of
   ``RotatedOTCoupling(problem, rotation=R_180)`` at every step, constant noise f = σ) and stop at every length in
   ``train_steps``: the run is trained in segments through :func:`flowvar.train.train`'s checkpoint/resume, which
   ends bit-identical to an uninterrupted run, so a seed's model at 4000 steps is the one an uninterrupted
   4000-step run (``fig6``, or a sweep job with ``train_steps=[4000]``) would give.
2. At each checkpoint, integrate ``n_eval`` fresh sources x0 ~ N(0, I) (the same for every seed, σ and checkpoint) with
   Euler on every grid in ``euler_steps``, midpoint and RK4 on ``rk_steps`` and dopri5, and record per solver
   (:func:`flowvar.metrics.rotation_pairing_on_solvers`): the fraction of endpoints nearer the rotation partner
   R x0 + μ = −x0 + μ than the translation target x0 + μ, the mean distance to the rotation partner relative to the
   gap 2‖x0‖, and the status reproduces/partial/fails (:func:`flowvar.metrics.rotation_pairing_status`, fig6's).
3. The exact CFM minimiser at each σ (:func:`exact_minimiser`) on the same sources and solvers:
   the reference rows (σ = 0: the rotation on every odd Euler grid, undefined at t = ½ so even grids and
   midpoint/RK4 stop; σ > 0: the translation, except Euler steps wider than σ, see below).
4. The turning window (:func:`turning_window`). On the training lines x = tμ ± y, y = s x0 (s = 1 − 2t), the
   radial rate of a field is k(x0, t) = ⟨v(tμ + y, t) − v(tμ − y, t), y⟩ / (2‖y‖²). The exact σ = 0 field has
   k = −2/s: it contracts ever faster as t → ½ and expands after. The exact σ > 0 minimiser has
   k = −2s/(s² + σ²), whose contraction rate K(s) = −k peaks at 1/σ at s = σ. A network is smooth, so K saturates
   at a finite peak K_max; the window half-width is w = 1/K_max (= σ for the exact σ minimiser, 0 for the exact
   σ = 0 field).
   One Euler step of size h from the last node before ½, at s* = h (odd n) or s* = 2h (even n), multiplies y by
   1 − h·K(s*); the sign of y, i.e. the side (rotation or translation) the endpoint lands on, flips iff
   h·K(s*) > 1 (:func:`jump_factor`). For the exact σ minimiser this gives: odd grids jump iff h > σ = w, even grids
   never. For a network we measure K per source on its training line and *predict* the fraction that lands on
   the rotation side, to be compared with what Euler returns.

Verdicts (pure rule functions, unit-tested): σ = 0 reproduces the rotation pairs, per (training length, solver)
setting; σ = ``contrast_sigma`` does not; the paper's Fig. 6 conclusion (both at once) per setting
(:func:`joint_status`); all three through :func:`flowvar.metrics.status_verdict`, fig6's rule (decided when no
setting says the opposite and a strict majority of the settings say it). The outcome depends
on the solver resolution (coarse odd Euler vs fine Euler and dopri5, :func:`resolution_rule`); the turning window
predicts which grids jump (:func:`window_rule`). Training seeds are the replicates: every rule judges each seed's
networks on their own, and the seeds' verdicts combine as in fig6
(:func:`flowvar.experiments._seed_replicates.combine_seeds`:
confirmed only if every one of at least two seeds confirms, refuted only if every one refutes, else inconclusive;
one seed is always inconclusive). Within a seed, a training length enters the per-setting claims only where its network
fitted the coupling (training loss within :func:`flowvar.experiments._counterexample_fit.fit_allowance` of the exact
minimum, as in fig6: for σ = 0 half the σ = 0 loss of the exact CFM(``contrast_sigma``) minimiser, for σ > 0
L_min(``contrast_sigma``); :func:`fit_precondition`); a seed with no such length makes the claim untestable. The
per-setting claims are judged only on the solvers where the exact minimiser itself behaves as the claim says
(:func:`judged_solvers`), and the σ = 0 ones (``sigma0_reproduces_rotation``, ``fig6_conclusion``) only where the exact
CFM(σ_eq) minimiser reproduces too, σ_eq the σ whose σ = 0 loss is the σ = 0 fit allowance (≈ contrast σ/2;
:class:`flowvar.experiments._counterexample_fit.FitEquivalent`): the allowance admits fields that blurred, so only
there would every admitted field reproduce if the claim held. The window claim is judged by balanced agreement, its
σ = 0 cases apart (:func:`window_score`).
:func:`assemble` judges stored points again (``flowvar assemble``), nothing trained.

Why this module is long: one experiment, one file (the layout's rule): the solver grid, the per-grid status, the
window finding and their rules are one protocol; the rules are pure functions tested apart.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from flowvar.couplings import RotatedOTCoupling
from flowvar.errors import ConfigError
from flowvar.experiments._counterexample_fit import (
    FitEquivalent,
    fit_allowance,
    fit_allowance_text,
    fit_equivalent_sigma,
)
from flowvar.experiments._seed_replicates import (
    SeedVerdicts,
    in_every_seed,
    over_seeds,
    per_seed_evidence,
    seeds_rule_text,
    status_over_seeds,
)
from flowvar.experiments.base import RunContext, assembles, not_a_part, register
from flowvar.files import atomic_write_bytes
from flowvar.gaussian import counterexample_problem
from flowvar.metrics import (
    FAILS_FRACTION,
    STATUS_VERDICT_RULE,
    counterexample_min_loss,
    rotation_pairing_on_solvers,
    status_min_effect,
    status_threshold_text,
)
from flowvar.models import CounterexampleField, MLPField, NoisyCounterexampleField
from flowvar.models.base import VectorField
from flowvar.results import Precondition, all_preconditions
from flowvar.seeding import Streams
from flowvar.stats import balanced_accuracy
from flowvar.train import CHECKPOINT_NAME, train_cfm

RK_METHODS: tuple[str, ...] = ("midpoint", "rk4")
"""Fixed-grid higher-order columns; both evaluate half-steps, so on the exact σ = 0 field every uniform grid meets ½."""


@dataclass
class SolverResolutionConfig:
    """Axes (list-typed, sweepable): ``sigmas``, ``train_steps``, ``euler_steps``, ``rk_steps``.

    Training as ``fig6`` (``n_seeds`` training seeds, the replicates; ``width``, ``depth``, ``activation``,
    ``batch_size``, ``lr``); ``n_eval`` evaluation sources; dopri5 with ``rtol``/``atol`` and at most
    ``max_dopri_steps`` steps. Verdict thresholds: ``reproduce_fraction``,
    ``reproduce_rel_error`` (fig6's status), ``contrast_sigma`` (the paper's σ = 0.05), ``coarse_max_steps`` /
    ``fine_min_steps`` / ``dependence_margin`` (claim 3), ``window_agreement`` (claim 4). Turning-window profile:
    ``window_sources`` sources, ``window_points`` log-spaced s = 1 − 2t in [``window_s_min``, 0.5] on each side of ½.
    """

    seed: int
    n_seeds: int
    mu: float
    sigmas: tuple[float, ...]
    train_steps: tuple[int, ...]
    width: int
    depth: int
    activation: str
    batch_size: int
    lr: float
    n_eval: int
    euler_steps: tuple[int, ...]
    rk_steps: tuple[int, ...]
    rtol: float
    atol: float
    max_dopri_steps: int
    reproduce_fraction: float
    reproduce_rel_error: float
    contrast_sigma: float
    coarse_max_steps: int
    fine_min_steps: int
    dependence_margin: float
    window_sources: int
    window_points: int
    window_s_min: float
    window_agreement: float

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the key and the fix for any value the study cannot use."""
        def need(ok: bool, key: str, msg: str) -> None:
            if not ok:
                raise ConfigError(f"solver_resolution: {key}={_show(getattr(self, key))} {msg}")

        need(len(self.sigmas) > 0 and all(math.isfinite(s) and s >= 0 for s in self.sigmas), "sigmas",
             "must be a non-empty list of finite noise levels >= 0, e.g. [0, 0.05]")
        need(len(set(self.sigmas)) == len(self.sigmas), "sigmas", "has repeated values; list each σ once")
        need(0.0 in self.sigmas, "sigmas", "must contain 0 (the paper's deterministic training), e.g. [0, 0.05]")
        need(math.isfinite(self.contrast_sigma) and self.contrast_sigma > 0, "contrast_sigma",
             "must be a noise level > 0 (the paper's σ = 0.05); the fig6_conclusion claim is made when it is in sigmas")
        need(len(self.train_steps) > 0 and all(n >= 1 for n in self.train_steps), "train_steps",
             "must be a non-empty list of training lengths >= 1, e.g. [1000, 4000]")
        need(len(set(self.train_steps)) == len(self.train_steps), "train_steps", "has repeated values")
        need(len(self.euler_steps) > 0 and all(n >= 2 for n in self.euler_steps), "euler_steps",
             "must be a non-empty list of step counts >= 2 (one step cannot jump or hit t = ½), e.g. [11, 10, 101]")
        need(len(set(self.euler_steps)) == len(self.euler_steps), "euler_steps", "has repeated values")
        need(all(n >= 1 for n in self.rk_steps), "rk_steps", "must hold step counts >= 1 (or be [] to skip them)")
        need(self.coarse_max_steps >= 2, "coarse_max_steps", "must be >= 2, e.g. 21")
        need(self.fine_min_steps > self.coarse_max_steps, "fine_min_steps",
             f"must exceed coarse_max_steps={self.coarse_max_steps}")
        # below NO_GAP a gap would both confirm (≥ margin) and count as "no gap" (< NO_GAP, what refutes)
        need(NO_GAP <= self.dependence_margin <= 1, "dependence_margin",
             f"must be in [NO_GAP = {NO_GAP}, 1] (a smaller gap counts as no dependence), e.g. 0.5")
        need(0.5 < self.reproduce_fraction <= 1, "reproduce_fraction", "must be in (0.5, 1], e.g. 0.9")
        need(0 < self.reproduce_rel_error < 1, "reproduce_rel_error", "must be in (0, 1), e.g. 0.1")
        need(0.5 < self.window_agreement <= 1, "window_agreement", "must be in (0.5, 1], e.g. 0.9")
        need(self.n_eval >= 2, "n_eval", "must be >= 2")
        need(self.width >= 1 and self.depth >= 1, "width", f"and depth={self.depth} must be >= 1")
        need(self.rtol > 0 and self.atol > 0, "rtol", f"and atol={self.atol} must be > 0, e.g. 1e-6")
        need(self.max_dopri_steps >= 1, "max_dopri_steps", "must be >= 1, e.g. 20000")
        need(self.window_sources >= 1, "window_sources", "must be >= 1, e.g. 256")
        need(self.window_points >= 10, "window_points", "must be >= 10, e.g. 200")
        need(0 < self.window_s_min < 0.1, "window_s_min", "must be in (0, 0.1), e.g. 1e-4")


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple | list) else repr(value)


# ---------------------------------------------------------------------------------------------- turning window


def radial_rate(field: nn.Module | Any, x0: Tensor, mu: Tensor, t: Tensor) -> Tensor:
    """The radial rate of ``field`` on the training lines of the 180° + μ coupling.

    For each source x0_i (``x0``: (n, d)) and time t_j (``t``: (T,), every t_j ≠ ½), with s = 1 − 2t_j and
    y = s x0_i (the lines of x0_i and −x0_i pass through tμ ± y):

        k_ij = ⟨v(t_j μ + y, t_j) − v(t_j μ − y, t_j), y⟩ / (2‖y‖²).

    The symmetric difference drops the offset v(tμ, t) − μ, which moves every point alike and cannot flip y (a
    trained network's small offset would otherwise dominate as ‖y‖ → 0). Returns (T, n). Exact values (linear
    fields): σ = 0 field k = −2/s; σ > 0 minimiser k = −2s/(s² + σ²). ``mu``: (d,).
    """
    if bool((t == 0.5).any()):
        raise ConfigError("radial_rate: t = 0.5 is where every training line meets (y = 0); sample t ≠ 0.5")
    rows = []
    n = x0.shape[0]
    with torch.no_grad():
        for tj in t.to(x0.dtype):
            y = (1 - 2 * tj) * x0
            v = field(torch.cat([tj * mu + y, tj * mu - y]), tj.expand(2 * n))
            rows.append(((v[:n] - v[n:]) * y).sum(1) / (2 * (y * y).sum(1)))
    return torch.stack(rows)


@dataclass(frozen=True)
class TurningWindow:
    """The measured turning window of a field around t = ½ (see the module doc, step 4).

    ``s``: the sampled s = 1 − 2t (log-spaced, increasing); ``contraction``: median_i K_i at t = ½ − s/2 (K = −k);
    ``expansion``: median_i k_i at t = ½ + s/2. ``peak_rate`` K_max = max contraction, at ``t_peak``; ``halfwidth``
    w = 1/K_max; ``turn_width``: t(max expansion) − t(max contraction); ``resolved``: the peak is not at the
    smallest sampled s, or the rate is flat there (K(s_min) ≤ 1.01 K(s_1)); False when the rate is largest at s_min
    and still growing, as for the exact σ = 0 field (K = 2/s), and w is then only an upper bound.
    """

    halfwidth: float
    peak_rate: float
    t_peak: float
    turn_width: float
    resolved: bool
    s: list[float]
    contraction: list[float]
    expansion: list[float]

    def summary(self) -> dict[str, Any]:
        """The scalars, without the profiles; ``critical_steps`` = K_max = 1/w: Euler grids with fewer steps (h > w)
        can jump the window."""
        return {"halfwidth": self.halfwidth, "critical_steps": self.peak_rate, "peak_rate": self.peak_rate,
                "t_peak": self.t_peak, "turn_width": self.turn_width, "resolved": self.resolved}


def turning_window(field: nn.Module | Any, x0: Tensor, mu: Tensor, s_min: float = 1e-4, points: int = 200
                   ) -> TurningWindow:
    """Measure the turning window of ``field`` from :func:`radial_rate` on ``points`` log-spaced s in [s_min, ½].

    ``x0``: (n, d) sources, ``mu``: (d,). Exact σ > 0 minimiser: K(s) = 2s/(s² + σ²), so K_max = 1/σ at s = σ,
    w = σ and turn_width = σ (up to the sampling of s). Exact σ = 0 field: K = 2/s, unresolved, w = s_min/2.
    """
    s = torch.logspace(math.log10(s_min), math.log10(0.5), points, dtype=torch.float64)
    before = -radial_rate(field, x0, mu, 0.5 - s / 2).median(dim=1).values
    after = radial_rate(field, x0, mu, 0.5 + s / 2).median(dim=1).values
    i, j = int(before.argmax()), int(after.argmax())
    peak = float(before[i])
    return TurningWindow(halfwidth=1.0 / peak if peak > 0 else math.inf, peak_rate=peak,
                         t_peak=float(0.5 - s[i] / 2), turn_width=float((s[i] + s[j]) / 2),
                         resolved=bool(before[0] < peak or before[0] <= 1.01 * before[1]), s=s.tolist(),
                         contraction=before.tolist(),
                         expansion=after.tolist())


def jump_factor(field: nn.Module | Any, x0: Tensor, mu: Tensor, n: int) -> Tensor:
    """The factor 1 − h·K(s*) by which the Euler step from the last node before t = ½ scales y = x − tμ.

    ``n`` uniform steps, h = 1/n; the last node before ½ is at s* = 1 − 2t = h for odd n and 2h for even n. K is
    measured per source on its training line (:func:`radial_rate`), so this assumes the Euler path is still on
    it, exact for the closed-form fields, whose Euler steps map lines to lines. A negative factor flips y: the
    endpoint lands on the rotation side. Returns (n_sources,).
    """
    h = 1.0 / n
    s_star = h if n % 2 == 1 else 2 * h
    k = radial_rate(field, x0, mu, torch.tensor([0.5 - s_star / 2], dtype=torch.float64))[0]
    return 1 + h * k


def predicted_fraction(field: nn.Module | Any, x0: Tensor, mu: Tensor, n: int, tol: float = 1e-9) -> float | None:
    """The fraction of sources whose :func:`jump_factor` is negative (predicted to land on the rotation side).

    None when some factor is within ``tol`` of 0: that step lands on the meeting point μ/2 at t = ½, where the
    outcome is undefined (the exact σ = 0 field on an even grid, whose factor is exactly 1 − h·(1/h) = 0).
    """
    factor = jump_factor(field, x0, mu, n)
    if bool((factor.abs() < tol).any()):
        return None
    return float((factor < 0).double().mean())


# ---------------------------------------------------------------------------------------------- evaluation


def solver_names(config: SolverResolutionConfig) -> list[str]:
    """Every solver column: ``euler_N`` (by N), ``midpoint_N``, ``rk4_N``, then ``dopri5``."""
    return ([f"euler_{n}" for n in sorted(config.euler_steps)]
            + [f"{m}_{n}" for m in RK_METHODS for n in sorted(config.rk_steps)] + ["dopri5"])


def exact_minimiser(mu: float, sigma: float) -> VectorField:
    """The exact CFM minimiser of the 180° + μ coupling at noise σ: the σ = 0 field (undefined at t = ½) or the
    σ > 0 conditional expectation, whose exact flow is the translation x0 ↦ x0 + μ."""
    return CounterexampleField(mu, 2) if sigma == 0 else NoisyCounterexampleField(mu, sigma)


def evaluate(field: nn.Module | Any, x0: Tensor, mu: Tensor, config: SolverResolutionConfig
             ) -> dict[str, dict[str, Any] | str]:
    """Outcome per solver (:func:`solver_names`), by :func:`flowvar.metrics.rotation_pairing_on_solvers` (fig6's
    grid evaluation and status rule); a stopped solver gives a ``"failed: …"`` string."""
    return rotation_pairing_on_solvers(field, x0, mu, solver_names(config),
                                       reproduce_fraction=config.reproduce_fraction,
                                       reproduce_rel_error=config.reproduce_rel_error, rtol=config.rtol,
                                       atol=config.atol, max_dopri_steps=config.max_dopri_steps)


# ---------------------------------------------------------------------------------------------- rules


def joint_status(sigma0: str, contrast: str) -> str:
    """The status of the paper's Fig. 6 conclusion at one setting from the σ = 0 and σ = contrast statuses:
    "reproduces" when σ = 0 reproduces and the contrast fails; "fails" when σ = 0 fails or the contrast reproduces
    (either half contradicted); "partial" otherwise (a partial or stopped half)."""
    if sigma0 == "fails" or contrast == "reproduces":
        return "fails"
    if sigma0 == "reproduces" and contrast == "fails":
        return "reproduces"
    return "partial"


NO_GAP = 0.1
"""resolution_rule: a gap below this (none, or reversed) at every fitted training length refutes the dependence."""
WINDOW_REFUTE = 0.7
"""window_rule: a balanced agreement below this refutes the turning-window explanation (chance is 0.5)."""


def resolution_rule(gaps: list[float | None], margin: float) -> str:
    """solver_resolution.sigma0_depends_on_resolution from the coarse − fine gaps, one per (fitted) training length.

    Confirmed if every gap is known and ≥ ``margin``; refuted if every gap is known and < :data:`NO_GAP` (the coarse
    odd grids land on the rotation side at most NO_GAP more often than the fine solvers: no dependence, or the
    reverse one, however negative); inconclusive otherwise (a gap that could not be computed, e.g. no coarse odd
    grid, counts neither way). ``margin`` ≥ NO_GAP (the config checks ``dependence_margin``), so no gap does both.
    """
    if not gaps or any(g is None for g in gaps):
        return "inconclusive"
    known = [float(g) for g in gaps if g is not None]
    if not all(math.isfinite(g) for g in known):
        return "inconclusive"
    if all(g >= margin for g in known):
        return "confirmed"
    if all(g < NO_GAP for g in known):
        return "refuted"
    return "inconclusive"


def balanced_agreement(observed: Sequence[bool], predicted: Sequence[bool]) -> float | None:
    """The balanced accuracy of ``predicted`` against ``observed`` (per case: True = the majority of endpoints on the
    rotation side): ½ (share of the observed-rotation cases predicted rotation + share of the observed-translation
    cases predicted translation). A predictor that ignores its input ("always translation") scores ½ whatever the
    classes' sizes, where its plain agreement is the majority class's share (~0.9 here). None when either side
    was never observed (the score would then be a plain agreement) or the lists are empty."""
    if len(observed) != len(predicted):
        raise ConfigError(f"balanced_agreement: {len(observed)} observed vs {len(predicted)} predicted cases")
    score = balanced_accuracy(observed, predicted)  # stats' formula; NaN (a side never observed) → None here
    return None if math.isnan(score) else score


def window_score(balanced_all: float | None, balanced_sigma0: float | None) -> float | None:
    """What :func:`window_rule` judges for one seed: the smaller of the balanced agreement over all its cases and
    over its σ = 0 networks' cases alone (the σ = 0 networks are the claim's subject, and the σ > 0 cases, almost
    all on the translation side, must not carry them); None if either is None."""
    if balanced_all is None or balanced_sigma0 is None:
        return None
    return min(balanced_all, balanced_sigma0)


def window_rule(agreement: float | None, threshold: float) -> str:
    """solver_resolution.window_explains_jumps from one seed's :func:`window_score` (balanced agreement of the
    predicted and observed majority side over its (network, Euler grid) cases): confirmed if ≥ ``threshold``,
    refuted if < :data:`WINDOW_REFUTE`, inconclusive in between, with no score (None) or a non-finite one."""
    if agreement is None or not math.isfinite(agreement):
        return "inconclusive"
    if agreement >= threshold:
        return "confirmed"
    if agreement < WINDOW_REFUTE:
        return "refuted"
    return "inconclusive"


def resolution_over_seeds(gaps: dict[str, list[float | None]], margin: float) -> SeedVerdicts:
    """solver_resolution.sigma0_depends_on_resolution over training seeds: :func:`resolution_rule` on each seed's
    gaps (seed label → its fitted training lengths' gaps), combined by
    :func:`flowvar.experiments._seed_replicates.combine_seeds` (every one of ≥ 2 seeds must confirm, resp. refute)."""
    return over_seeds(gaps, lambda seed_gaps: resolution_rule(seed_gaps, margin))


def window_over_seeds(agreement: dict[str, float | None], threshold: float) -> SeedVerdicts:
    """solver_resolution.window_explains_jumps over training seeds: :func:`window_rule` on each seed's
    :func:`window_score` (from that seed's own (network, Euler grid) cases; never pooled across seeds), combined by
    :func:`flowvar.experiments._seed_replicates.combine_seeds`."""
    return over_seeds(agreement, lambda seed_agreement: window_rule(seed_agreement, threshold))


def fit_precondition(sigma: float, excess: dict[int, float], allowed: float, dim: int = 2) -> Precondition:
    """At least one training length's network at noise σ fitted the coupling: training loss − L_min(σ) ≤ ``allowed``
    (:func:`flowvar.experiments._counterexample_fit.fit_allowance` (σ, contrast σ), fig6's too: for σ = 0 half the σ = 0
    loss of the exact CFM(contrast σ) minimiser, for σ > 0 L_min(contrast σ)). ``excess``: training length → measured
    excess loss. Scale: 4d, the loss of the best constant field v = μ."""
    fitted = sorted(k for k, v in excess.items() if math.isfinite(v) and v <= allowed)
    scale = 4.0 * dim
    return Precondition(
        f"some training length's σ = {sigma:g} network fitted the coupling (training loss − L_min(σ) ≤ "
        f"{allowed:.4g} = {allowed / scale:.3g} × {scale:g}, the loss of the best constant field; "
        f"_counterexample_fit.fit_allowance); only fitted lengths enter the claim",
        holds=bool(fitted),
        measured={"excess_loss": {f"train_steps={k}": v for k, v in sorted(excess.items())},
                  "allowed_excess": allowed, "fitted_train_steps": fitted},
        remedy="add a longer training length (train_steps) or widen the network")


def judged_solvers(exact: Mapping[str, str], holds: str, reference: str, details: Mapping[str, str] | None = None
                   ) -> tuple[list[str], dict[str, str]]:
    """The solvers on which a per-setting claim is judged: those where the exact reference itself has the status the
    claim asserts (``holds``), and why each other one is left out.

    ``exact``: solver → the exact reference's status for the claim's statement (the exact σ minimiser's
    :func:`flowvar.metrics.rotation_pairing_status`, "failed" for a stopped solver; for the Fig. 6 conclusion the
    :func:`joint_status` of the exact σ = 0 field and the exact contrast minimiser); ``reference``: its name, for the
    reasons. Where even the exact minimiser does not behave as the claim says (the exact CFM(σ) minimiser lands on
    the rotation side on odd Euler grids with h = 1/n > σ; the exact σ = 0 field stops at t = ½ on even grids,
    midpoint and RK4), a network that does the same obeys its σ's CFM optimum, so that setting cannot count for or
    against the claim. ``details``: solver → what the reason adds in brackets (the joint claim: both references'
    statuses). Returns (judged solvers in ``exact``'s order, {solver: reason} for the rest)."""
    judged = [solver for solver, status in exact.items() if status == holds]
    not_judged = {}
    for solver, status in exact.items():
        if status == holds:
            continue
        what = "stops there" if status == "failed" else f"is itself '{status}' there"
        extra = f" ({details[solver]})" if details and solver in details else ""
        not_judged[solver] = f"not judged: the {reference} {what}{extra}, where the claim says '{holds}'"
    return judged, not_judged


def point_rows(sigma: float, train_steps: int | None, field_kind: str, outcomes: dict[str, dict[str, Any] | str],
               predicted: dict[str, float | None] | None = None, *, seed: int | None = None) -> list[dict[str, Any]]:
    """Flat, sweep-friendly rows, one per solver: training seed (None for the exact minimiser), σ, training length
    (None for the exact minimiser), field kind, solver, method, n_steps, parity, step size, fraction_rotation,
    rel_error_rotation, distances, status, nfe, error and (Euler on trained nets) ``predicted_fraction_rotation``
    from :func:`jump_factor`."""
    rows = []
    for solver, out in outcomes.items():
        method, _, steps = solver.partition("_")
        n = int(steps) if steps else None
        ok = isinstance(out, dict)
        rows.append({"seed": seed, "sigma": sigma, "train_steps": train_steps, "field": field_kind, "solver": solver,
                     "method": method, "n_steps": n,
                     "parity": "adaptive" if n is None else ("odd" if n % 2 else "even"),
                     "step_size": None if n is None else 1.0 / n,
                     "fraction_rotation": out["fraction_nearer_rotation"] if ok else None,
                     "rel_error_rotation": out["rel_error_rotation"] if ok else None,
                     "mean_dist_rotation": out["mean_dist_rotation"] if ok else None,
                     "mean_dist_translation": out["mean_dist_translation"] if ok else None,
                     "mean_gap": out["mean_gap"] if ok else None,
                     "status": out["status"] if ok else "failed",
                     "nfe": out["nfe"] if ok else None,
                     "error": None if ok else out,
                     "predicted_fraction_rotation": (predicted or {}).get(solver)})
    return rows


def _checkpoints(config: SolverResolutionConfig, sigma: float, workdir: Path, ctx: RunContext, replica: Streams
                 ) -> Iterator[tuple[int, nn.Module, dict[str, float]]]:
    """Train one fig6 MLP of training seed ``replica`` at noise σ and yield (steps, float64 eval copy, training
    stats) at each ``train_steps``.

    Segments resume from the previous segment's checkpoint, so each yielded model is the uninterrupted run's at that
    step. Each length has its own folder ``workdir/seed=s/sigma=σ/steps=N`` (its checkpoint copied from the previous
    length's before it trains on): when ``workdir`` outlives an interrupted run (the cache's work folder), a rerun
    loads the lengths it had finished instead of retraining them. The initialisation and batch streams are fig6's
    (the seed's "init" and "batches", seeded alike for every σ: the same initialisation and first batch; later
    batches differ between σ = 0 and σ > 0, since only σ > 0 draws the noise z from the batch generator).
    """
    problem, rotation = counterexample_problem(config.mu, 2)
    with replica.global_rng("init"):
        model = MLPField(2, width=config.width, depth=config.depth, activation=config.activation)
    coupling = RotatedOTCoupling(problem, rotation=rotation, dtype=torch.float32)
    previous: Path | None = None
    for steps in sorted(config.train_steps):
        folder = workdir / f"seed={replica.seed}" / f"sigma={sigma}" / f"steps={steps}"
        if previous is not None and not (folder / CHECKPOINT_NAME).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            # continue the previous length; atomically: a copy cut off by a kill would be a corrupt checkpoint
            atomic_write_bytes(folder / CHECKPOINT_NAME, (previous / CHECKPOINT_NAME).read_bytes(), what="checkpoint")
        res = train_cfm(model, coupling, sigma, steps=steps, batch_size=config.batch_size, lr=config.lr,
                        seed=replica.derive_seed("batches"), progress=ctx.progress, checkpoint_dir=folder,
                        checkpoint_every=ctx.checkpoint_every(steps))
        previous = folder
        tail = res.losses[-max(1, len(res.losses) // 20):]
        yield steps, copy.deepcopy(model).double().eval(), {"loss_mean_last_5pct": sum(tail) / len(tail),
                                                             "train_segment_s": res.runtime_s}


# ---------------------------------------------------------------------------------------------- the run


def _record_choices(config: SolverResolutionConfig, ctx: RunContext, seeds: list[int]) -> None:
    """The run's choices (also what :func:`assemble` records when it judges stored points)."""
    ctx.choice("μ", f"'+5' read as μ = ({config.mu}, {config.mu}) (PAPER.md §2 [I])")
    ctx.choice("network and training", f"fig6's: MLPField width {config.width}, depth {config.depth}, "
               f"{config.activation}, Adam lr {config.lr}, batch {config.batch_size}, fresh 180° pairs per step, "
               f"within a training seed the same init for every σ and the batch generator seeded alike (the same "
               f"first batch; later batches differ between σ = 0 and σ > 0, as only σ > 0 draws the noise z from it); "
               f"one run per (seed, σ) "
               f"stopped at "
               f"{sorted(config.train_steps)} steps (segments resumed from checkpoints = the uninterrupted run)")
    ctx.choice("solvers", f"{config.n_eval} fresh sources (same for every seed, σ and length), float64; Euler "
               f"{sorted(config.euler_steps)}, midpoint/RK4 {sorted(config.rk_steps)}, dopri5 rtol {config.rtol} "
               f"atol {config.atol} (≤ {config.max_dopri_steps} steps)")
    ctx.choice("status", f"flowvar.metrics.rotation_pairing_status (fig6's): 'reproduces' if ≥ "
               f"{config.reproduce_fraction} of endpoints are nearer R x0 + μ than x0 + μ and mean distance to "
               f"R x0 + μ ≤ {config.reproduce_rel_error} × mean 2‖x0‖; 'fails' if < {FAILS_FRACTION} are nearer or "
               f"the mean distance to R x0 + μ ≥ that to x0 + μ; else 'partial'. Over one seed's settings "
               f"(flowvar.metrics.status_verdict): {STATUS_VERDICT_RULE}; over seeds "
               f"(_seed_replicates.combine_seeds): every seed must agree")
    ctx.choice("fit precondition", f"a (seed, σ, training length) network enters the per-setting claims when its "
               f"training loss (mean of the last 5 % of steps) exceeds the exact minimum L_min(σ) = 8σ·arctan(1/σ) by "
               f"at most (_counterexample_fit.fit_allowance, fig6's precondition too): σ = 0, "
               f"{fit_allowance_text(0.0, config.contrast_sigma)}; σ > 0, "
               f"{fit_allowance_text(config.contrast_sigma, config.contrast_sigma)}; every seed needs one such length")
    ctx.choice("fit-equivalent σ", f"the σ = 0 claims are judged only on solvers where the exact CFM(σ_eq) minimiser "
               f"reproduces the pairs too, σ_eq = {fit_equivalent_sigma(config.contrast_sigma):.4g} the σ whose σ = 0 "
               f"loss is the σ = 0 fit allowance (_counterexample_fit.FitEquivalent; fig6's rule): there every field "
               f"the precondition admits would reproduce if the claim held")
    ctx.choice("replicates", f"{config.n_seeds} training seed(s) ({seeds[0]}…{seeds[-1]}), each with its own "
               f"initialisation and batch stream (the seed's 'init' and 'batches' streams), one run per (seed, σ) "
               f"with its checkpoints at every training length; every claim's rule judges each seed's networks on "
               f"their own ({config.n_eval} fresh sources per solver, the same for every seed) and the claim is "
               f"confirmed (refuted) only if every one of at least 2 seeds confirms (refutes) it, else inconclusive")
    ctx.choice("turning window", f"radial rate k = ⟨v(tμ + y) − v(tμ − y), y⟩/(2‖y‖²) on the training lines "
               f"y = (1 − 2t) x0 of {config.window_sources} sources, median over sources, {config.window_points} "
               f"log-spaced s = 1 − 2t in [{config.window_s_min}, 0.5]; w = 1/max contraction rate")


@register("solver_resolution",
          title="Solver resolution: 180° + μ coupling across Euler step counts, dopri5, training length and σ",
          config=SolverResolutionConfig, runtime_scales_with=("sigmas",),
          paper={"fig6": "deterministic training learns the rotation anyway, and inference reproduces the training "
                         "pairs; σ = 0.05 already restores generalisation (PAPER.md §2, §3.3)",
                 "design_D": "expect the outcome to depend on the solver resolution: Euler steps wider than the "
                             "network's turning window around t = ½ jump over it; fine grids and adaptive solvers "
                             "follow the smooth field (PAPER.md §4, Fig. 6)"})
def run(config: SolverResolutionConfig, ctx: RunContext) -> None:
    problem, _ = counterexample_problem(config.mu, 2)
    mu = problem.mean
    replicas = [ctx.replicate(k) for k in range(config.n_seeds)]
    seeds = [rep.seed for rep in replicas]
    _record_choices(config, ctx, seeds)

    x0 = _sources(config, ctx)  # fig6's sources
    xw = x0[:config.window_sources]
    euler_ns = sorted(config.euler_steps)
    points: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    profiles: dict[tuple[int | None, float, int | None], TurningWindow] = {}  # (seed, σ, length); exact: seed None
    training: list[dict[str, Any]] = []
    for sigma in config.sigmas:
        exact = exact_minimiser(config.mu, sigma)
        predicted = {f"euler_{n}": predicted_fraction(exact, x0, mu, n) for n in euler_ns}
        points += point_rows(sigma, None, "exact", evaluate(exact, x0, mu, config), predicted)
        win = turning_window(exact, xw, mu, config.window_s_min, config.window_points)
        windows.append({"seed": None, "sigma": sigma, "train_steps": None, "field": "exact", **win.summary()})
        profiles[(None, sigma, None)] = win
    with contextlib.ExitStack() as stack:
        # the run's work folder when it has one (resumable), else a temporary folder for the segments
        tmp = ctx.work_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="flowvar-solver-resolution-"))
        for replica in replicas:
            seed = replica.seed
            for sigma in config.sigmas:
                for steps, net, stats in _checkpoints(config, sigma, Path(tmp), ctx, replica):
                    start = time.perf_counter()
                    predicted = {f"euler_{n}": predicted_fraction(net, x0, mu, n) for n in euler_ns}
                    points += point_rows(sigma, steps, "trained", evaluate(net, x0, mu, config), predicted, seed=seed)
                    win = turning_window(net, xw, mu, config.window_s_min, config.window_points)
                    windows.append({"seed": seed, "sigma": sigma, "train_steps": steps, "field": "trained",
                                    **win.summary()})
                    profiles[(seed, sigma, steps)] = win
                    # minimum_loss, excess_loss and fitted are derived by _judge (training_fit), whenever judged
                    training.append({"seed": seed, "sigma": sigma, "train_steps": steps, **stats,
                                     "eval_s": time.perf_counter() - start})
    # the turning-window figure's profiles (exact minimisers; the first seed at its longest training), so that
    # assemble can draw it again from the stored result
    longest = max(config.train_steps)
    stored = [{"seed": sd, "sigma": sg, "train_steps": n, **dataclasses.asdict(w)}
              for (sd, sg, n), w in profiles.items() if sd is None or (sd == seeds[0] and n == longest)]
    _judge(ctx, config, points, windows, training, stored, seeds, x0)


def _sources(config: SolverResolutionConfig, ctx: RunContext) -> Tensor:
    """The ``n_eval`` evaluation sources, (n_eval, 2) float64, of the run's "eval" stream (fig6's): the same in
    :func:`run` and :func:`assemble`, the stream being named by the config's seed."""
    return torch.randn(config.n_eval, 2, generator=ctx.generator("eval"), dtype=torch.float64)


def training_fit(training: Sequence[Mapping[str, Any]], contrast_sigma: float) -> list[dict[str, Any]]:
    """The training rows with what the fit rule derives from their measured loss, recomputed: ``minimum_loss`` =
    L_min(σ) (:func:`flowvar.metrics.counterexample_min_loss`), ``excess_loss`` = ``loss_mean_last_5pct`` − L_min(σ)
    and ``fitted`` = excess ≤ :func:`flowvar.experiments._counterexample_fit.fit_allowance` (σ, ``contrast_sigma``).
    Called whenever the claims are judged, so a stored result judged again (``flowvar assemble``) never keeps a flag
    written under an earlier allowance (the paper-scale result said σ = 0 fitted at 2000–10 000 steps while its
    verdicts, under the allowance 0.157, admitted only 20 000)."""
    rows = []
    for row in training:
        floor = counterexample_min_loss(float(row["sigma"]))
        excess = float(row["loss_mean_last_5pct"]) - floor
        rows.append({**row, "minimum_loss": floor, "excess_loss": excess,
                     "fitted": bool(math.isfinite(excess)
                                    and excess <= fit_allowance(float(row["sigma"]), contrast_sigma))})
    return rows


def _judge(ctx: RunContext, config: SolverResolutionConfig, points: list[dict[str, Any]],
           windows: list[dict[str, Any]], training: list[dict[str, Any]], profile_rows: list[dict[str, Any]],
           seeds: list[int], x0: Tensor) -> None:
    """Record the metrics, claims and figures from the points, windows, training rows and stored window profiles
    (what :func:`run` computed, or what :func:`assemble` read from stored results). ``x0``: the run's sources,
    (n_eval, 2), on which the exact CFM(σ_eq) minimiser (the σ = 0 fit allowance's equivalent σ,
    :func:`flowvar.experiments._counterexample_fit.fit_equivalent_sigma`) is evaluated here, as the other exact rows
    were (a closed-form field: nothing trained); the training rows' fit columns are derived again
    (:func:`training_fit`)."""
    training = training_fit(training, config.contrast_sigma)
    sigma_eq = fit_equivalent_sigma(config.contrast_sigma)
    blurred = evaluate(exact_minimiser(config.mu, sigma_eq), x0, counterexample_problem(config.mu, 2)[0].mean, config)
    fit_equivalent = FitEquivalent(sigma_eq, config.contrast_sigma,
                                   {sv: o["status"] if isinstance(o, dict) else "failed" for sv, o in blurred.items()},
                                   config.reproduce_rel_error)
    ctx.metric("points", points)
    ctx.metric("windows", windows)
    ctx.metric("training", training)
    ctx.metric("fit_equivalent_minimiser", {"sigma": sigma_eq, "outcomes": blurred})
    ctx.metric("fraction_rotation", _nested(points, "fraction_rotation"))
    ctx.metric("status", _nested(points, "status"))
    ctx.metric("window_halfwidth", {f"sigma={s}": {_row_key(w["seed"], w["train_steps"]): w["halfwidth"]
                                                   for w in windows if w["sigma"] == s} for s in config.sigmas})
    ctx.metric("window_profiles", profile_rows)
    fields = {f.name for f in dataclasses.fields(TurningWindow)}
    profiles = {(r["seed"], r["sigma"], r["train_steps"]): TurningWindow(**{k: r[k] for k in fields})
                for r in profile_rows}
    _claims(ctx, config, points, windows, training, seeds, fit_equivalent)
    _figures(ctx, config, points, profiles, solver_names(config), seeds, windows)


_PART_KEYS = ("points", "windows", "training")
"""What :func:`assemble` reads from each stored result (``window_profiles`` too where the result has them)."""


@assembles("solver_resolution")
def assemble(config: SolverResolutionConfig, parts: Sequence[Mapping[str, Any]], ctx: RunContext) -> None:
    """The run's result from stored points, nothing trained: one stored result judged again (``flowvar assemble
    results/full/solver_resolution``), or the parts of a sweep that split ``train_steps`` (the ``split`` preset),
    their trained rows joined (the exact minimiser's rows, the same in every part, once) and judged as :func:`run`
    judges its own.

    Valid because a (seed, σ) network at n steps is the same in every part (segments resumed from checkpoints equal
    the uninterrupted run; the streams are named by the seed, never by a length's place in ``train_steps``), and the
    evaluation sources come from the run's "eval" stream. Results stored before ``window_profiles`` was kept give a
    turning-window figure of the exact minimisers' profiles with the trained networks' peaks (K_max at its s) only.
    Refused (a DataError) for a part that is not a solver_resolution result, and (a ConfigError) when the parts do
    not hold every (seed, σ, training length) of ``config`` once."""
    seeds = [config.seed + k for k in range(config.n_seeds)]
    points: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    training: list[dict[str, Any]] = []
    profile_rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    exact_points: dict[tuple[Any, ...], dict[str, Any]] = {}
    exact_windows: dict[float, dict[str, Any]] = {}
    for i, part in enumerate(parts):
        if not isinstance(part, Mapping) or not all(isinstance(part.get(k), list) for k in _PART_KEYS):
            raise not_a_part(i, parts, "solver_resolution", ", ".join(_PART_KEYS))
        part = {k: part.get(k) or [] for k in (*_PART_KEYS, "window_profiles")}
        for row in part["points"]:
            if row.get("field") == "exact":
                exact_points.setdefault((row["sigma"], row["solver"]), dict(row))
            else:
                points.append(dict(row))
        for row in part["windows"]:
            if row.get("field") == "exact":
                exact_windows.setdefault(row["sigma"], dict(row))
            else:
                windows.append(dict(row))
        training += [dict(r) for r in part["training"]]
        for row in part["window_profiles"]:
            profile_rows.setdefault((row["seed"], row["sigma"], row["train_steps"]), dict(row))
    expected = sorted((sd, sg, n) for sd in seeds for sg in config.sigmas for n in config.train_steps)
    held = sorted((r["seed"], r["sigma"], r["train_steps"]) for r in training)
    if held != expected:
        missing, extra = sorted(set(expected) - set(held)), sorted(set(held) - set(expected))
        raise ConfigError("the stored rows do not make up the run (seed, σ, training length): "
                          + "; ".join([f"missing {missing[:6]}"] * bool(missing) + [f"outside it {extra[:6]}"]
                                      * bool(extra) + ["some twice"] * (not missing and not extra))
                          + "; recompute them")
    names = solver_names(config)
    if sorted(exact_points) != sorted((sg, sv) for sg in config.sigmas for sv in names):
        raise ConfigError("the stored exact-minimiser rows are not every σ × solver of the config; recompute them")
    # the whole run's order: exact rows first, then seed, σ, training length, solver
    order = {sv: j for j, sv in enumerate(names)}
    points = [exact_points[(sg, sv)] for sg in config.sigmas for sv in names] + sorted(
        points, key=lambda r: (seeds.index(r["seed"]), config.sigmas.index(r["sigma"]), r["train_steps"],
                               order[r["solver"]]))
    windows = [exact_windows[sg] for sg in config.sigmas] + sorted(
        windows, key=lambda r: (seeds.index(r["seed"]), config.sigmas.index(r["sigma"]), r["train_steps"]))
    training.sort(key=lambda r: (seeds.index(r["seed"]), config.sigmas.index(r["sigma"]), r["train_steps"]))
    longest = max(config.train_steps)
    _record_choices(config, ctx, seeds)
    _judge(ctx, config, points, windows, training,
           [r for k, r in profile_rows.items() if k[0] is None or (k[0] == seeds[0] and k[2] == longest)], seeds,
           _sources(config, ctx))


def _seed_label(seed: int) -> str:
    return f"seed={seed}"


def _row_key(seed: int | None, train_steps: int | None) -> str:
    """``exact`` for the exact minimiser's rows (no seed, no training length), else ``seed=<s>.train_steps=<n>``."""
    return "exact" if train_steps is None else f"seed={seed}.train_steps={train_steps}"


def _nested(points: list[dict[str, Any]], value: str) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"sigma=<σ>": {"seed=<s>.train_steps=<n>" | "exact": {solver: row[value]}}}``: the points as nested dicts,
    which ``flowvar sweep`` flattens to ``fraction_rotation.sigma=0.0.seed=0.train_steps=4000.euler_11`` (lists it
    skips)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for p in points:
        out.setdefault(f"sigma={p['sigma']}", {}).setdefault(_row_key(p["seed"], p["train_steps"]),
                                                            {})[p["solver"]] = p[value]
    return out


def _table(points: list[dict[str, Any]], sigma: float, field_kind: str = "trained", seed: int | None = None
           ) -> dict[int | None, dict[str, dict[str, Any]]]:
    """train_steps → solver → row, for one σ, field kind and (trained networks) training seed."""
    out: dict[int | None, dict[str, dict[str, Any]]] = {}
    for p in points:
        if p["sigma"] == sigma and p["field"] == field_kind and (field_kind == "exact" or p["seed"] == seed):
            out.setdefault(p["train_steps"], {})[p["solver"]] = p
    return out


def _status_map(table: dict[int | None, dict[str, dict[str, Any]]]) -> dict[str, dict[str, str]]:
    return {f"train_steps={k}": {s: r["status"] for s, r in v.items()} for k, v in table.items()}


OPPOSITE = {"reproduces": "fails", "fails": "reproduces"}


def _per_setting_claim(ctx: RunContext, config: SolverResolutionConfig, claim_id: str, statement: str,
                       statuses: dict[str, dict[str, str]], holds: str, per_seed_extra: dict[str, dict[str, Any]],
                       shared: dict[str, Any], condition: str, precondition: Precondition,
                       unfitted: dict[str, list[int]], exact: dict[str, str], reference: str,
                       details: dict[str, str] | None = None, fit_equivalent: FitEquivalent | None = None,
                       per_setting_effect: str | None = None) -> None:
    """Judge a statement evaluated at every (fitted training length, judged solver) setting of each training seed
    with fig6's rule, :func:`flowvar.metrics.status_verdict`, per seed, combined over seeds
    (:func:`flowvar.experiments._seed_replicates.status_over_seeds`). ``statuses``: seed label → setting label
    ('<train_steps>/<solver>') → status; ``exact``: solver → the exact reference's status for the statement, which
    picks the judged solvers (:func:`judged_solvers`); the other settings are listed in the evidence
    (``not_judged_solvers`` with the reason, per seed ``not_judged_at`` with the network's status), not judged.
    ``fit_equivalent`` (the σ = 0 claims): of those solvers only the ones where the exact CFM(σ_eq) minimiser
    reproduces too are judged (:meth:`flowvar.experiments._counterexample_fit.FitEquivalent.split`: there every
    field the σ = 0 fit allowance admits would reproduce if the claim held), and its precondition joins the others.
    The minimum effect is the claimed status ``holds``'s own threshold
    (:func:`flowvar.experiments.fig6.status_min_effect`), or ``per_setting_effect`` for what one setting must show
    when the status is not one network's (the joint status)."""
    opposite = OPPOSITE[holds]
    candidates, not_judged = judged_solvers(exact, holds, reference, details)
    judged, blurred = fit_equivalent.split(candidates) if fit_equivalent is not None else (candidates, {})
    not_judged = {sv: not_judged.get(sv) or blurred[sv] for sv in exact if sv not in judged}
    per_seed: dict[str, dict[str, Any]] = {}
    judged_statuses: dict[str, dict[str, str]] = {}
    for seed, seed_statuses in statuses.items():
        on = {k: v for k, v in seed_statuses.items() if k.split("/", 1)[1] in judged}
        judged_statuses[seed] = on
        yes = [k for k, v in on.items() if v == holds]  # in (training length, solver column) order
        no = [k for k, v in on.items() if v == opposite]
        neither = [k for k, v in on.items() if v not in (holds, opposite)]
        per_seed[seed] = {"n_judged": len(on), "n_holding": len(yes), "n_contradicting": len(no),
                          "holds_at": yes, "contradicted_at": no, "neither_at": neither,
                          "not_judged_at": {k: v for k, v in seed_statuses.items() if k not in on},
                          "unfitted_train_steps": unfitted[seed], **per_seed_extra.get(seed, {})}
    verdicts = status_over_seeds({seed: list(v.values()) for seed, v in judged_statuses.items()},
                                 holds)  # type: ignore[arg-type]
    some_solver = Precondition(
        f"some solver on which the {reference} is itself '{holds}' (elsewhere a network that does what its σ's exact "
        f"minimiser does cannot count for or against the claim)", holds=bool(candidates),
        measured={"judged_solvers": candidates, "exact_status": dict(exact)},
        remedy="add solvers on which the exact minimiser behaves as the claim says, e.g. odd Euler grids with "
               "n > 1/σ steps")
    ctx.claim(claim_id, statement,
              {**per_seed_evidence(per_seed, verdicts), "judged_solvers": judged, "not_judged_solvers": not_judged,
               **shared},
              # with no judged solver a precondition fails (no candidate, or none left by σ_eq): untestable, the
              # rule's outcome on no settings (inconclusive) kept as verdict_if_testable
              verdict=verdicts.verdict,
              precondition=all_preconditions(precondition, some_solver,
                                             *([fit_equivalent.precondition(candidates)] if fit_equivalent else [])),
              kind="reproduction",
              min_effect=status_min_effect(holds, config.reproduce_fraction, config.reproduce_rel_error,
                                           per_setting=per_setting_effect),
              replicates=f"{config.n_seeds} training seed(s) per σ (one network per seed, σ and training length), "
                         f"judged per seed and combined (every seed must agree); {config.n_eval} fresh sources per "
                         f"solver, the same for every seed",
              rule=f"a setting is one (training length, solver) pair of one training seed, over that seed's fitted "
                   f"training lengths × the judged solvers: those on which the {reference} is itself '{holds}' "
                   f"(solver_resolution.judged_solvers; the others are listed in not_judged_solvers with the reason "
                   f"and the networks' statuses there in not_judged_at, not judged)"
                   + (f", and of those only the solvers where the exact CFM(σ_eq = {fit_equivalent.sigma:.4g}) "
                      f"minimiser reproduces too: σ_eq is the σ whose exact minimiser's σ = 0 loss equals the σ = 0 "
                      f"fit allowance {fit_equivalent.allowance:.4g}, so the precondition admits fields as blurred as "
                      f"it, and on an odd Euler grid every smaller σ reproduces wherever it does "
                      f"(_counterexample_fit.exact_euler_ratio): there every admitted field would reproduce if the "
                      f"claim held, elsewhere a fitted network's 'fails' is what an admitted field does "
                      f"(_counterexample_fit.FitEquivalent)" if fit_equivalent else "")
                   + f". Its status is {condition} "
                   f"(flowvar.metrics.rotation_pairing_status: 'reproduces' if ≥ {config.reproduce_fraction} nearer "
                   f"R x0 + μ and mean distance ≤ {config.reproduce_rel_error} × mean 2‖x0‖, 'fails' if "
                   f"< {FAILS_FRACTION} nearer or not nearer on average, else 'partial'). A seed's verdict over its "
                   f"judged settings, with the claimed status '{holds}' and the opposite '{opposite}' "
                   f"(flowvar.metrics.status_verdict): "
                   f"{STATUS_VERDICT_RULE}; no judged solver: untestable."
                   + seeds_rule_text(config.n_seeds))


def _claims(ctx: RunContext, config: SolverResolutionConfig, points: list[dict[str, Any]],
            windows: list[dict[str, Any]], training: list[dict[str, Any]], seeds: list[int],
            fit_equivalent: FitEquivalent) -> None:
    labels = [_seed_label(s) for s in seeds]
    excess = {(r["seed"], r["sigma"], r["train_steps"]): r["excess_loss"] for r in training}
    has_contrast = config.contrast_sigma in config.sigmas

    def excess_of(seed: int, sigma: float) -> dict[int, float]:
        return {k: v for (sd, sg, k), v in excess.items() if sd == seed and sg == sigma}

    def fitted(seed: int, sigma: float) -> set[int]:
        return {k for k, v in excess_of(seed, sigma).items() if v <= fit_allowance(sigma, config.contrast_sigma)}

    def fit_in_every_seed(sigma: float) -> Precondition:
        return in_every_seed({_seed_label(s): fit_precondition(sigma, excess_of(s, sigma),
                                                               fit_allowance(sigma, config.contrast_sigma))
                              for s in seeds})

    def exact_status(sigma: float) -> dict[str, str]:
        return {solver: r["status"] for solver, r in _table(points, sigma, "exact").get(None, {}).items()}

    def key(steps: int | None, solver: str) -> str:
        return f"{steps}/{solver}"

    def setting_statuses(sigma: float) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, Any]],
                                                 dict[str, list[int]]]:
        """Per seed: the fitted settings' statuses, the full status map, the unfitted lengths."""
        statuses, maps, unfit = {}, {}, {}
        for s in seeds:
            table, fit = _table(points, sigma, seed=s), fitted(s, sigma)
            statuses[_seed_label(s)] = {key(k, sv): r["status"] for k, v in table.items() if k in fit
                                        for sv, r in v.items()}
            maps[_seed_label(s)] = {"status_map": _status_map(table)}
            unfit[_seed_label(s)] = sorted(set(table) - fit)
        return statuses, maps, unfit

    statuses0, maps0, unfit0 = setting_statuses(0.0)
    _per_setting_claim(ctx, config, "solver_resolution.sigma0_reproduces_rotation",
                       "σ = 0 training reproduces the rotation pairs x0 ↦ R x0 + μ at inference (paper's Fig. 6), "
                       "judged per solver setting where the exact σ = 0 field and the exact CFM(σ_eq) minimiser, as "
                       "blurred as the fit allowance lets a σ = 0 network be, both reproduce them.",
                       statuses0, "reproduces", maps0,
                       {"exact_minimiser": _status_map(_table(points, 0.0, "exact"))},
                       "the σ = 0 network's (labels: '<train_steps>/<solver>')", fit_in_every_seed(0.0), unfit0,
                       exact_status(0.0), "exact σ = 0 field", fit_equivalent=fit_equivalent)

    for sigma in [s for s in config.sigmas if s > 0]:
        statuses, maps, unfit = setting_statuses(sigma)
        _per_setting_claim(ctx, config, f"solver_resolution.sigma{sigma:g}_no_rotation",
                           f"σ = {sigma:g} training does not reproduce the rotation pairs (the outputs move to the "
                           f"translation side), judged per solver setting.", statuses, "fails", maps,
                           {"exact_minimiser": _status_map(_table(points, sigma, "exact"))},
                           f"the σ = {sigma:g} network's", fit_in_every_seed(sigma), unfit, exact_status(sigma),
                           f"exact CFM({sigma:g}) minimiser")

    if has_contrast:
        exact_0, exact_c = exact_status(0.0), exact_status(config.contrast_sigma)
        joint: dict[str, dict[str, str]] = {}
        both: dict[str, Precondition] = {}
        unfit_joint: dict[str, list[int]] = {}
        for s in seeds:
            zero, contrast = _table(points, 0.0, seed=s), _table(points, config.contrast_sigma, seed=s)
            both_fit = fitted(s, 0.0) & fitted(s, config.contrast_sigma)
            joint[_seed_label(s)] = {key(k, sv): joint_status(r["status"], contrast[k][sv]["status"])
                                     for k, v in zero.items() if k in both_fit for sv, r in v.items()}
            unfit_joint[_seed_label(s)] = sorted(set(zero) - both_fit)
            measured = {f"excess_loss_sigma{sg:g}": {f"train_steps={k}": v for k, v in sorted(excess_of(s, sg).items())}
                        for sg in (0.0, config.contrast_sigma)}
            allowed = {f"sigma{sg:g}": fit_allowance(sg, config.contrast_sigma) for sg in (0.0, config.contrast_sigma)}
            both[_seed_label(s)] = Precondition(
                f"some training length at which both the σ = 0 and the σ = {config.contrast_sigma:g} networks fitted "
                f"the coupling (training loss − L_min(σ) ≤ _counterexample_fit.fit_allowance(σ): "
                + ", ".join(f"{allowed[f'sigma{sg:g}']:.4g} at σ = {sg:g}" for sg in (0.0, config.contrast_sigma))
                + ")", holds=bool(both_fit),
                measured={**measured, "allowed_excess": allowed, "fitted_train_steps": sorted(both_fit)},
                remedy="add a longer training length (train_steps) or widen the network")
        # the joint status's minimum effect: each half its own status's threshold
        zero_t, contrast_t = (status_threshold_text(st, config.reproduce_fraction, config.reproduce_rel_error)
                              for st in ("reproduces", "fails"))
        joint_effect = (f"the σ = 0 network with {zero_t} and the σ = {config.contrast_sigma:g} network of the same "
                        f"seed with {contrast_t}, i.e. joint status 'reproduces'")
        _per_setting_claim(ctx, config, "solver_resolution.fig6_conclusion",
                           f"The paper's Fig. 6 conclusion, σ = 0 reproduces the rotation pairs while σ = "
                           f"{config.contrast_sigma:g} does not, holds at every (fitted training length, solver) "
                           f"setting at which the exact minimisers themselves show it and the exact CFM(σ_eq) "
                           f"minimiser, as blurred as the fit allowance lets a σ = 0 network be, reproduces the pairs "
                           f"too (the judged settings; holds_at lists where the networks do).",
                           joint, "reproduces", {}, {},
                           f"the joint status (solver_resolution.joint_status): 'reproduces' when the σ = 0 network "
                           f"reproduces and the σ = {config.contrast_sigma:g} network of the same seed fails, 'fails' "
                           f"when σ = 0 fails or σ = {config.contrast_sigma:g} reproduces, 'partial' otherwise",
                           in_every_seed(both), unfit_joint,
                           {sv: joint_status(st, exact_c.get(sv, "failed")) for sv, st in exact_0.items()},
                           f"exact references' joint status (exact σ = 0 field with the exact CFM"
                           f"({config.contrast_sigma:g}) minimiser)",
                           {sv: f"exact σ = 0: {st}; exact σ = {config.contrast_sigma:g}: {exact_c.get(sv)}"
                            for sv, st in exact_0.items()}, fit_equivalent=fit_equivalent,
                           per_setting_effect=joint_effect)
    else:
        ctx.note(f"contrast_sigma={config.contrast_sigma:g} is not in sigmas {list(config.sigmas)}: no "
                 f"fig6_conclusion claim in this run (a sweep job over a subset of σ); aggregate the points instead.")

    gaps_per_seed: dict[str, dict[str, Any]] = {}
    for s in seeds:
        gaps: dict[str, Any] = {}
        fit0 = fitted(s, 0.0)
        for steps, row in sorted(_table(points, 0.0, seed=s).items()):
            coarse = [r["fraction_rotation"] for r in row.values() if r["method"] == "euler" and r["parity"] == "odd"
                      and r["n_steps"] <= config.coarse_max_steps and r["fraction_rotation"] is not None]
            fine = [r["fraction_rotation"] for sv, r in row.items() if r["fraction_rotation"] is not None and
                    (sv == "dopri5" or (r["method"] == "euler" and r["n_steps"] >= config.fine_min_steps))]
            gap = (sum(coarse) / len(coarse) - sum(fine) / len(fine)) if coarse and fine else None
            gaps[f"train_steps={steps}"] = {"coarse_odd_mean_fraction": sum(coarse) / len(coarse) if coarse else None,
                                            "fine_mean_fraction": sum(fine) / len(fine) if fine else None, "gap": gap,
                                            "fitted": steps in fit0}
        gaps_per_seed[_seed_label(s)] = {"per_train_steps": gaps,
                                         "judged_gaps": [g["gap"] for g in gaps.values() if g["fitted"]]}
    verdicts = resolution_over_seeds({seed: ev["judged_gaps"] for seed, ev in gaps_per_seed.items()},
                                     config.dependence_margin)
    ctx.claim("solver_resolution.sigma0_depends_on_resolution",
              "For the σ = 0 network the pairing returned at inference depends on the solver resolution: coarse odd "
              "Euler grids land on the rotation side, fine Euler grids and dopri5 do not (PAPER.md §4 [D]).",
              {**per_seed_evidence(gaps_per_seed, verdicts), "margin": config.dependence_margin,
               "coarse": f"odd Euler n <= {config.coarse_max_steps}",
               "fine": f"Euler n >= {config.fine_min_steps} and dopri5"},
              verdict=verdicts.verdict,
              precondition=fit_in_every_seed(0.0), kind="finding",
              min_effect=f"a gap ≥ {config.dependence_margin} in the fraction nearer R x0 + μ (scale: the fraction, "
                         f"0 to 1), at every fitted training length of every training seed",
              replicates=f"{config.n_seeds} training seed(s) (one σ = 0 network per seed and training length), "
                         f"judged per seed and combined (every seed must agree); {config.n_eval} fresh sources",
              rule=f"gap = mean fraction nearer R x0 + μ over coarse odd Euler grids (n <= {config.coarse_max_steps}) "
                   f"− mean over fine solvers (Euler n >= {config.fine_min_steps}, dopri5), per fitted training "
                   f"length of a seed (solver_resolution.resolution_rule). A seed confirms if gap >= "
                   f"{config.dependence_margin} at every one of its fitted training lengths, refutes if gap < "
                   f"{NO_GAP} at every one (no dependence, or the reverse one), and is inconclusive otherwise (also "
                   f"when a gap cannot be computed)."
                   + seeds_rule_text(config.n_seeds))

    window_per_seed: dict[str, dict[str, Any]] = {}
    for s in seeds:
        cases: list[dict[str, Any]] = []
        for p in points:
            if (p["seed"] == s and p["field"] == "trained" and p["method"] == "euler"
                    and p["fraction_rotation"] is not None and p["predicted_fraction_rotation"] is not None):
                w = next(x["halfwidth"] for x in windows if x["field"] == "trained" and x["seed"] == s
                         and x["sigma"] == p["sigma"] and x["train_steps"] == p["train_steps"])
                cases.append({"sigma": p["sigma"], "train_steps": p["train_steps"], "n_steps": p["n_steps"],
                              "observed": p["fraction_rotation"], "predicted": p["predicted_fraction_rotation"],
                              "agree": (p["fraction_rotation"] > 0.5) == (p["predicted_fraction_rotation"] > 0.5),
                              "step_wider_than_window": p["step_size"] > w})
        odd = [c for c in cases if c["n_steps"] % 2 == 1]
        zero = [c for c in cases if c["sigma"] == 0]
        observed_rotation = sum(c["observed"] > 0.5 for c in cases)
        balanced = balanced_agreement([c["observed"] > 0.5 for c in cases], [c["predicted"] > 0.5 for c in cases])
        balanced0 = balanced_agreement([c["observed"] > 0.5 for c in zero], [c["predicted"] > 0.5 for c in zero])
        window_per_seed[_seed_label(s)] = {
            "score": window_score(balanced, balanced0), "balanced_agreement": balanced,
            "balanced_agreement_sigma0": balanced0,
            # what "never predict rotation" (the majority side) would agree: the plain agreement's trivial baseline
            "majority_side_share": (max(observed_rotation, len(cases) - observed_rotation) / len(cases)
                                    if cases else None),
            "n_observed_rotation": observed_rotation,
            "n_observed_rotation_sigma0": sum(c["observed"] > 0.5 for c in zero), "n_cases_sigma0": len(zero),
            "agreement": sum(c["agree"] for c in cases) / len(cases) if cases else None, "n_cases": len(cases),
            "agreement_per_sigma": {f"sigma={sg:g}": sum(c["agree"] for c in cases if c["sigma"] == sg)
                                    / max(1, sum(c["sigma"] == sg for c in cases)) for sg in config.sigmas},
            "mean_abs_fraction_error": (sum(abs(c["observed"] - c["predicted"]) for c in cases) / len(cases)
                                        if cases else None),
            "odd_grid_agreement_of_h_gt_w": ((sum((c["observed"] > 0.5) == c["step_wider_than_window"] for c in odd)
                                              / len(odd)) if odd else None),
            "disagreements": [c for c in cases if not c["agree"]][:20]}
    verdicts = window_over_seeds({seed: ev["score"] for seed, ev in window_per_seed.items()}, config.window_agreement)
    ctx.claim("solver_resolution.window_explains_jumps",
              "The network's turning window around t = ½ explains which Euler grids return the rotation: the side an "
              "endpoint lands on is the sign of the last pre-½ step's factor 1 − h·K(s*), K the measured "
              "contraction rate on the training line (a step wider than the window over-shoots).",
              {**per_seed_evidence(window_per_seed, verdicts),
               "windows": [w for w in windows if w["field"] == "trained"]},
              verdict=verdicts.verdict,
              kind="finding",
              min_effect=f"balanced agreement ≥ {config.window_agreement} over a seed's cases and over its σ = 0 "
                         f"networks' cases alone, in every training seed (scale: 0 to 1; a predictor that ignores "
                         f"the window, e.g. 'never rotation', scores 0.5 however few cases land on the rotation side)",
              replicates=f"{config.n_seeds} training seed(s), judged per seed (a seed's cases: its trained networks, "
                         f"every σ and training length, × every Euler grid; never pooled across seeds) and combined "
                         f"(every seed must agree); {config.n_eval} sources per case",
              rule=f"per trained network of a seed (every σ and training length) and Euler grid: predicted majority "
                   f"side = whether > 0.5 of the sources have 1 − h·K_i(s*) < 0 (s* = h for odd n, 2h for even n; "
                   f"flowvar.experiments.solver_resolution.jump_factor), observed = whether > 0.5 of the Euler "
                   f"endpoints are nearer R x0 + μ. Balanced agreement (solver_resolution.balanced_agreement) = ½ "
                   f"(share of the observed-rotation cases predicted rotation + share of the observed-translation "
                   f"cases predicted translation): most cases land on the translation side, so the plain agreement "
                   f"of a predictor that never says rotation is already the majority share (majority_side_share). "
                   f"A seed's score is the smaller of its balanced agreement over all cases and over its σ = 0 "
                   f"networks' cases alone (solver_resolution.window_score; None, so inconclusive, when a side was "
                   f"never observed). A seed confirms if the score is >= {config.window_agreement}, refutes if < "
                   f"{WINDOW_REFUTE}, and is inconclusive otherwise (solver_resolution.window_rule)."
                   + seeds_rule_text(config.n_seeds)
                   + " agreement (plain) and odd_grid_agreement_of_h_gt_w, the cruder rule 'odd grid lands on "
                     "rotation iff 1/n > w = 1/K_max', are reported, not judged")

    # Top-level scalars for sweeps, per seed (dicts: flowvar sweep flattens them to <name>.seed=<s>).
    longest = max(config.train_steps)
    finest_repro, finest_major, dopri, halfwidth, conclusion = {}, {}, {}, {}, {}
    for s, label in zip(seeds, labels, strict=True):
        z = _table(points, 0.0, seed=s).get(longest, {})
        euler = [r for r in z.values() if r["method"] == "euler" and r["fraction_rotation"] is not None]
        repro = [r["n_steps"] for r in euler if r["status"] == "reproduces"]
        major = [r["n_steps"] for r in euler if r["fraction_rotation"] > 0.5]
        finest_repro[label] = max(repro) if repro else None
        finest_major[label] = max(major) if major else None
        contrast = _table(points, config.contrast_sigma, seed=s) if has_contrast else {}
        conclusion[label] = [key(k, sv) for k, v in _table(points, 0.0, seed=s).items() for sv, r in v.items()
                             if contrast and joint_status(r["status"], contrast[k][sv]["status"]) == "reproduces"]
        for sigma in config.sigmas:
            d = _table(points, sigma, seed=s).get(longest, {}).get("dopri5")
            dopri.setdefault(f"fraction_rotation_dopri5_sigma{sigma:g}", {})[label] = (d["fraction_rotation"] if d
                                                                                      else None)
            w = next(x for x in windows if x["field"] == "trained" and x["seed"] == s and x["sigma"] == sigma
                     and x["train_steps"] == longest)
            halfwidth.setdefault(f"window_halfwidth_sigma{sigma:g}", {})[label] = w["halfwidth"]
    ctx.metric("sigma0_finest_reproducing_euler_steps", finest_repro)
    ctx.metric("sigma0_finest_rotation_majority_euler_steps", finest_major)
    for name, per_seed in {**dopri, **halfwidth}.items():
        ctx.metric(name, per_seed)
    ctx.metric("fig6_conclusion_settings", conclusion)
    ctx.note("points: one flat row per (seed, σ, train_steps, solver) for the trained networks (field 'trained') and "
             "per (σ, solver) for the exact CFM minimiser (field 'exact', seed and train_steps null). Scalars "
             f"(sigma0_*, fraction_rotation_dopri5_*, window_halfwidth_*, fig6_conclusion_settings) are per training "
             f"seed at the longest training, {longest} steps. Claim evidence: per_seed (every seed's numbers), "
             f"verdict_per_seed, and the first seed's ({labels[0]}) numbers at the top level (shown_seed).")


# ---------------------------------------------------------------------------------------------- figures


def _figures(ctx: RunContext, config: SolverResolutionConfig, points: list[dict[str, Any]],
             profiles: dict[tuple[int | None, float, int | None], TurningWindow], names: list[str],
             seeds: list[int], windows: list[dict[str, Any]]) -> None:
    """The first training seed's networks (every figure says so) beside the exact minimiser: every seed's numbers are
    in the points and the claims' per-seed evidence. A profile missing from ``profiles`` (a result stored before they
    were kept) is drawn as its peak (s at t_peak, K_max) from ``windows``; a missing exact profile is not drawn."""
    shown = seeds[0]
    which = f"training seed {shown} (first of {len(seeds)})"
    steps_rows: list[int | None] = [*sorted(config.train_steps), None]
    fig, axes = plt.subplots(len(config.sigmas), 1, figsize=(0.62 * len(names) + 2.5,
                                                             (0.42 * len(steps_rows) + 1.3) * len(config.sigmas)),
                             squeeze=False)
    cmap = plt.get_cmap("coolwarm").with_extremes(bad="lightgrey")
    for ax, sigma in zip(axes[:, 0], config.sigmas, strict=True):
        grid = np.full((len(steps_rows), len(names)), np.nan)
        for i, steps in enumerate(steps_rows):
            table = _table(points, sigma, "exact" if steps is None else "trained", seed=shown).get(steps, {})
            for j, solver in enumerate(names):
                f = table.get(solver, {}).get("fraction_rotation")
                if f is not None:
                    grid[i, j] = f
                ax.text(j, i, "×" if f is None else f"{f:.2f}", ha="center", va="center", fontsize=6.5)
        ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(names)), [n.replace("euler_", "E").replace("midpoint_", "mid")
                                          .replace("rk4_", "rk4·") for n in names], rotation=60, fontsize=7)
        ax.set_yticks(range(len(steps_rows)), [f"{s} steps" if s else "exact" for s in steps_rows], fontsize=7)
        ax.set_title(f"σ = {sigma:g}, {which}: fraction of endpoints nearer R x0 + μ (× = solver stopped)",
                     fontsize=9)
    fig.tight_layout()
    ctx.figure("fraction_heatmap", fig)

    longest = max(config.train_steps)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for sigma, color in zip(config.sigmas, colors * 3, strict=False):
        rows = _table(points, sigma, seed=shown).get(longest, {})
        for parity, marker, ls in (("odd", "o", "-"), ("even", "s", "--")):
            pts = sorted((r["n_steps"], r["fraction_rotation"]) for r in rows.values()
                         if r["method"] == "euler" and r["parity"] == parity and r["fraction_rotation"] is not None)
            if pts:
                ax.semilogx(*zip(*pts, strict=True), marker=marker, ls=ls, color=color,
                            label=f"σ = {sigma:g}, {parity} Euler")
            pred = sorted((r["n_steps"], r["predicted_fraction_rotation"]) for r in rows.values()
                          if r["method"] == "euler" and r["parity"] == parity
                          and r["predicted_fraction_rotation"] is not None)
            if pred:
                ax.semilogx(*zip(*pred, strict=True), marker="x", ls="none", color=color, alpha=0.7)
        dop = rows.get("dopri5", {}).get("fraction_rotation")
        if dop is not None:
            ax.axhline(dop, color=color, ls=":", label=f"σ = {sigma:g}, dopri5")
    ax.set_xlabel("Euler steps n")
    ax.set_ylabel("fraction nearer R x0 + μ than x0 + μ")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{which}, trained {longest} steps; × = predicted from the turning window", fontsize=9)
    ax.legend(fontsize=7)
    ctx.figure("fraction_vs_steps", fig)

    fig, ax = plt.subplots(figsize=(7, 4.8))
    for sigma, color in zip(config.sigmas, colors * 3, strict=False):
        for steps, ls, lw in ((None, "--", 0.9), (longest, "-", 1.8)):
            label = f"exact σ = {sigma:g}" if steps is None else f"trained σ = {sigma:g}, {steps} steps"
            win = profiles.get((None, sigma, None) if steps is None else (shown, sigma, steps))
            if win is not None:
                ax.loglog(win.s, np.clip(win.contraction, 1e-3, None), ls=ls, lw=lw, color=color,
                          label=f"{label}: w = {win.halfwidth:.3g}")
                continue
            peak = next((w for w in windows if w["field"] == ("exact" if steps is None else "trained")
                         and w["sigma"] == sigma and w["seed"] == (None if steps is None else shown)
                         and w["train_steps"] == steps), None)
            if peak is not None and peak["peak_rate"] > 0:
                ax.loglog([1 - 2 * peak["t_peak"]], [peak["peak_rate"]], marker="o" if steps else "x", ls="none",
                          color=color, label=f"{label}: peak only (profile not stored), w = {peak['halfwidth']:.3g}")
    s_line = np.logspace(math.log10(config.window_s_min), math.log10(0.5), config.window_points)
    ax.loglog(s_line, 1 / s_line, color="k", ls=":", lw=1, label="K = 1/s: odd grid with h = s jumps above it")
    ax.set_xlabel("s = 1 − 2t (t = ½ − s/2)")
    ax.set_ylabel("contraction rate K = −k (median over sources; ≤ 0 drawn at 1e-3)")
    ax.set_title(f"turning window ({which}): an Euler step h from s* jumps it where h·K(s*) > 1 (s* = h odd, 2h "
                 f"even)", fontsize=8)
    ax.legend(fontsize=6.5)
    ctx.figure("turning_window", fig)


__all__ = ["RK_METHODS", "SolverResolutionConfig", "TurningWindow", "assemble", "balanced_agreement", "evaluate",
           "judged_solvers", "jump_factor", "point_rows", "predicted_fraction", "radial_rate", "resolution_over_seeds",
           "solver_names", "training_fit", "turning_window", "window_over_seeds", "window_rule", "window_score"]
