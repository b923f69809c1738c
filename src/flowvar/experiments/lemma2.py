"""Lemma 2: ReFlow stagnates at a straight non-OT coupling without noise, and moves with noise (PAPER.md §2, §5.7).

Setting: x0 ~ N(0, I_2), target N(0, I_2), initial coupling x1 = R_120 x0 (a valid coupling whose
interpolation x0 ↦ ((1 − t)I + tR) x0 is injective for every t, so its lines never cross; OT would be 0°).

Protocol, for each σ in ``sigmas``:

* round 0: train a fresh MLP with the CFM loss on fresh pairs from the 120° coupling at every step;
* round k ≥ 1 (ReFlow): integrate the round-(k − 1) model from ``n_pairs`` fresh sources to get the
  pairs (x0, Φ_{k−1}(x0)) (``ReflowCoupling(...).materialise``), and train a *fresh* MLP (same
  initialisation as round 0) on that fixed pair set with the same σ;
* after every round: integrate the round's model from ``n_eval`` fresh sources, fit x̂1 ≈ A x0 + b
  (:func:`flowvar.metrics.fitted_linear_map`), and report the rotation angle of A
  (:func:`flowvar.metrics.rotation_angle`, polar decomposition), the straightness of the learned paths
  (:func:`flowvar.metrics.path_straightness`, Liu et al.) and the transport cost E‖x̂1 − x0‖².

Reference (our derivation [D], constant noise f = σ, target x1 − x0): for a rotation coupling by θ the
CFM minimiser is linear, v(x, t) = (R − I) A_tᵀ x / (|A_t|² + σ²) with A_t = (1 − t)I + tR (a scaled rotation,
A_t A_tᵀ = |A_t|² I). In complex notation its flow map is a pure rotation by
θ' = ∫₀¹ w(t) d arg A_t, w = |A_t|² / (|A_t|² + σ²) (the log-modulus part integrates to 0 by symmetry), so
θ' = θ at σ = 0 (idempotence) and θ' < θ for σ > 0 (:func:`ideal_reflow_angle`). Iterating it gives the
angle an ideal learner would reach after each round; the trained MLPs are compared with it.

Replicates: ``n_seeds`` training seeds, each its own chain of rounds (initialisation, data streams, ReFlow sources
and evaluation sources). Claims (pure rule functions, unit-tested; the closed form and the σ = 0 stagnation
judgement live in the kit :mod:`flowvar.experiments._reflow_stagnation` and are importable from here):

* ``sigma0_stagnation`` (:func:`stagnation_rule`): at σ = 0 every later round stays within a band of the coupling's
  angle, on every seed. The band (:func:`stagnation_band`) is min(``angle_tol_deg``, ½ × the drift of the exact
  CFM(σ = :data:`CONTRAST_SIGMA`) minimiser over the same rounds), so that "stays" tells σ = 0 from the paper's
  σ = 0.05 (whose exact minimiser moves only 2.5° / 3.2° in 2 / 3 rounds from 120°, less than the tolerance).
  Precondition: round 0 learned the coupling (its map's angle within the tolerance, singular values near 1, a small
  affine-fit residual), the band is > 0, and it separates the two on the networks as well: the negative control
  (:func:`negative_control`, the same rule on the σ = :data:`CONTRAST_SIGMA` network chains) has no seed that
  stays within it. The control of every σ > 0 is in the evidence.
* ``sigma<σ>_moves_toward_ot`` (:func:`moves_rule`): after the last round the angle has dropped by at least
  ``angle_tol_deg`` more than at σ = 0, paired over seeds (:func:`flowvar.stats.paired_over_seeds`; testable from
  2 seeds). The drop is
  the total, coupling angle → last round: round 0 (CFM(σ) on the coupling) is the coupling's first rectification,
  itself a ReFlow of it, so it counts; its evidence splits the total per seed (:func:`drop_split`: coupling → round
  0, round 0 → last round) so that a reader sees where the movement happens. Precondition: the exact minimiser
  predicts a drop of at least twice the tolerance, so that a network that follows it to within the tolerance can
  show the effect; measured beside it, in closed form (no training), where the claim would be testable — the
  smallest coupling angle whose ideal drop reaches that (:func:`min_testable_coupling_angle`) and the ReFlow rounds
  needed at the coupling's own angle. The paper's protocol stays at its angle.

:func:`assemble` judges a stored result again (``flowvar assemble results/full/lemma2``) from its per-round rows,
with nothing trained.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from flowvar.couplings import Coupling, ReflowCoupling, RotatedOTCoupling
from flowvar.distributions import StandardNormal
from flowvar.errors import ConfigError
from flowvar.experiments._reflow_stagnation import (
    BAND_FLOOR_DEG,
    CONTRAST_SIGMA,
    ROUND0_RESIDUAL_TOL,
    ROUND0_SINGULAR_VALUE_TOL,
    STAGNATION_REFUTE,
    all_finite,
    ideal_angles,
    ideal_reflow_angle,
    later_deviation,
    negative_control,
    stagnation_band,
    stagnation_precondition,
    stagnation_rule,
)
from flowvar.experiments.base import RunContext, assembles, not_a_part, register
from flowvar.gaussian import GaussianProblem
from flowvar.metrics import fitted_linear_map, path_straightness, rotation_angle
from flowvar.results import Precondition
from flowvar.sampling import integrate
from flowvar.stats import SeedComparison, paired_over_seeds
from flowvar.train import train_mlp_field

NAME = "lemma2"

@dataclass
class Lemma2Config:
    seed: int
    n_seeds: int
    angle_deg: float
    sigmas: tuple[float, ...]
    rounds: int
    width: int
    depth: int
    activation: str
    steps: int
    batch_size: int
    lr: float
    n_pairs: int
    n_eval: int
    method: str
    ode_steps: int
    rtol: float
    atol: float
    angle_tol_deg: float
    alpha: float

    def validate(self) -> None:
        if not 0 < self.angle_deg < 180:  # before any training: the ideal angle and the judging need it
            raise ConfigError(f"angle_deg must be in (0, 180) (0° is OT; at 180° A_t = 0 at t = ½, the ideal ReFlow "
                              f"angle is undefined), got {self.angle_deg}")
        if self.n_seeds < 1:
            raise ConfigError(f"n_seeds must be >= 1 (>= 2 for the σ > 0 comparison to decide), got {self.n_seeds}")
        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1 (round 0 plus at least one ReFlow), got {self.rounds}")
        if 0.0 not in self.sigmas:
            raise ConfigError(f"sigmas must contain 0 (the stagnation claim), got {list(self.sigmas)}")
        if self.method == "euler" and self.ode_steps % 2 == 0:
            raise ConfigError("use an odd ode_steps with Euler (PAPER.md §2: even grids evaluate t = ½)")
        if self.angle_tol_deg <= 0:
            raise ConfigError(f"angle_tol_deg must be > 0, got {self.angle_tol_deg}")


def min_testable_coupling_angle(sigma: float, rectifications: int, required_drop_deg: float, *, step_deg: float = 1.0,
                            resolution_deg: float = 0.01) -> float | None:
    """The smallest coupling angle θ in (0°, 180°) at which the ideal drop θ − θ_n after ``rectifications``
    (:func:`ideal_angles`) reaches ``required_drop_deg``, to ``resolution_deg``: a scan every ``step_deg`` up to
    179°, then bisection between the last angle below and the first at or above. None when no scanned angle
    reaches it (σ = 0 never moves). Closed form, no training: where a σ would be testable, not a protocol change.
    The lines of every rotation coupling below 180° never cross (module docstring), so the question stays Lemma 2's.
    """
    def drop(theta: float) -> float:
        return theta - ideal_angles(theta, sigma, rectifications)[-1]

    below = 0.0
    for theta in np.arange(step_deg, 179.0 + step_deg / 2, step_deg):
        if drop(float(theta)) >= required_drop_deg:
            above = float(theta)
            break
        below = float(theta)
    else:
        return None
    while above - below > resolution_deg:
        middle = (below + above) / 2
        below, above = (below, middle) if drop(middle) >= required_drop_deg else (middle, above)
    return above


def drop_split(angles_per_seed: Sequence[Sequence[float]], coupling_deg: float) -> dict[str, list[float]]:
    """Per seed (one list of angles, rounds 0 … K, each): the total drop ``coupling_deg`` − θ_K and its two parts,
    coupling → round 0 (the first rectification, CFM on the coupling) and round 0 → round K (the ReFlow rounds on
    generated pairs); a NaN angle makes its parts NaN."""
    return {"coupling_to_round0_deg": [coupling_deg - a[0] for a in angles_per_seed],
            "round0_to_last_deg": [a[0] - a[-1] for a in angles_per_seed],
            "total_deg": [coupling_deg - a[-1] for a in angles_per_seed]}


def _solve(model: torch.nn.Module, x0: torch.Tensor, config: Lemma2Config, trajectory: bool = False) -> Any:
    return integrate(model, x0, method=config.method, steps=config.ode_steps, rtol=config.rtol, atol=config.atol,
                     return_trajectory=trajectory)


def evaluate_round(model: torch.nn.Module, x0: torch.Tensor, config: Lemma2Config) -> dict[str, float]:
    """Angle of the fitted affine map, straightness and transport cost of the model's flow from ``x0``."""
    sol = _solve(model, x0, config, trajectory=True)
    x1_hat = sol.x1.double()
    A, b = fitted_linear_map(x0, x1_hat)
    s = path_straightness(sol.trajectory, sol.times)
    resid = x1_hat - (x0.double() @ A.T + b)
    sv = torch.linalg.svdvals(A)
    return {"angle_deg": rotation_angle(A, on_reflection="nan"),
            "singular_values": [float(v) for v in sv],
            "offset_norm": float(b.norm()),
            "fit_residual_rms": float(resid.pow(2).sum(1).mean().sqrt()),
            "straightness": s.straightness, "straightness_normalized": s.normalized,
            "transport_cost": float((x1_hat - x0.double()).pow(2).sum(1).mean()),
            "nfe": sol.nfe}


def moves_rule(drops: Sequence[float], drops_sigma0: Sequence[float], *, tol: float, coupling_deg: float,
               alpha: float) -> tuple[str, SeedComparison | None]:
    """lemma2.sigma<σ>_moves_toward_ot from the total drop (coupling angle − last round's angle) per seed at σ and at
    σ = 0 (the network's own drift): paired over seeds, "drop(σ) − drop(0) ≥ ``tol``"
    (:func:`flowvar.stats.paired_over_seeds`; scale: the coupling's angle to OT). Its verdict is the claim's; a NaN
    angle makes it inconclusive (no comparison, None)."""
    if not (all_finite(drops) and all_finite(drops_sigma0)):
        return "inconclusive", None
    cmp = paired_over_seeds(drops, drops_sigma0, min_effect=tol, scale=abs(coupling_deg),
                            scale_name="the initial coupling's angle to OT (deg)", alpha=alpha,
                            labels=("drop(σ)", "drop(σ = 0)"))
    return cmp.verdict, cmp


@register(NAME, title="Lemma 2: ReFlow stagnates at the 120° coupling at σ = 0; noise moves it toward OT",
          config=Lemma2Config, runtime_scales_with=("sigmas",),
          paper={"lemma2": "ReFlow is idempotent on straight couplings: reflows with noiseless interpolants stagnate "
                           "when arriving at straight couplings (reviewer's wording; statement not seen)",
                 "remark2": "noise invalidates the assumptions of Lemma 2; repeated noisy rectification converges to "
                            "entropy-regularised OT"})
def run(config: Lemma2Config, ctx: RunContext) -> None:
    problem = GaussianProblem.isotropic(2, 0.0)
    base = RotatedOTCoupling(problem, config.angle_deg, dtype=torch.float32)
    seeds = _record_choices(config, ctx)
    rounds = list(range(config.rounds + 1))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {f"sigma={sigma}": {} for sigma in config.sigmas}
    for j, s in enumerate(seeds):
        rep = ctx.replicate(j)  # seed s: its initialisation (the same for every σ and round) and its streams
        for sigma in config.sigmas:
            coupling: Coupling = base
            per_round: list[dict[str, Any]] = []
            for k in rounds:
                model, res = train_mlp_field(coupling, sigma, 2, width=config.width, depth=config.depth,
                                             activation=config.activation, init_seed=rep.derive_seed("init"),
                                             steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                                             seed=rep.derive_seed("batches", f"sigma={sigma}", k),
                                             progress=ctx.progress,
                                             checkpoint_dir=ctx.checkpoint_dir(f"seed={s}", f"sigma={sigma}",
                                                                               f"round={k}"),
                                             checkpoint_every=ctx.checkpoint_every(config.steps))
                model.eval()
                x0 = torch.randn(config.n_eval, 2, generator=rep.generator("eval", f"sigma={sigma}", k),
                                 dtype=torch.float32)
                row: dict[str, Any] = {"round": k, **evaluate_round(model, x0, config)}
                tail = res.losses[-max(1, len(res.losses) // 20):]
                row["final_loss"] = sum(tail) / len(tail)
                row["train_runtime_s"] = res.runtime_s
                per_round.append(row)
                if k < config.rounds:
                    reflow = ReflowCoupling(model, StandardNormal(2, torch.float32),
                                            solve=lambda x, m=model: _solve(m, x, config).x1)
                    coupling = reflow.materialise(config.n_pairs, rep.generator("reflow", f"sigma={sigma}", k))
            results[f"sigma={sigma}"][f"seed={s}"] = per_round
    _judge(ctx, config, results, seeds)


def _record_choices(config: Lemma2Config, ctx: RunContext) -> list[int]:
    """The run's choices (what :func:`run` and :func:`assemble` both record); returns the training seeds."""
    ctx.choice("problem", f"N(0, I_2) → N(0, I_2), initial coupling x1 = R_{config.angle_deg:g} x0 (PAPER.md §5.7)")
    ctx.choice("σ values", f"{list(config.sigmas)}: σ = 0 for stagnation, σ = 0.05 as in the paper's CFM(σ = 0.05), "
                           f"and a larger σ where the ideal minimiser moves visibly per round (ideal_angle_deg); "
                           f"constant noise f = σ, target x1 − x0 (TorchCFM)")
    ctx.choice("network", f"MLPField width {config.width}, depth {config.depth}, {config.activation}, float32; "
                          f"every round starts from the same fresh initialisation (not warm-started from the previous "
                          f"round, so that stagnation cannot come from inheriting the weights)")
    ctx.choice("training", f"Adam lr {config.lr}, batch {config.batch_size}, {config.steps} steps per round; round 0 "
                           f"on fresh {config.angle_deg:g}° pairs every step, ReFlow rounds on {config.n_pairs} fixed "
                           f"pairs generated once per round from fresh sources (minibatches drawn with replacement)")
    ctx.choice("ODE solver", f"{config.method} ({config.ode_steps} uniform steps"
               + (f"; rtol {config.rtol}, atol {config.atol}; the steps only set saved states)"
                  if config.method not in ("euler", "midpoint", "heun", "rk4") else ")")
               + " for both ReFlow pair generation and evaluation; the rotation coupling's lines never cross, so no "
                 "grid issue")
    ctx.choice("evaluation", f"{config.n_eval} fresh sources per round; least-squares affine fit x̂1 ≈ A x0 + b; angle "
                             f"of A's orthogonal polar factor; straightness from the saved trajectory")
    seeds = [ctx.replicate(j).seed for j in range(config.n_seeds)]
    tol, a0 = config.angle_tol_deg, config.angle_deg
    ctx.choice("tolerance", f"angle tolerance {tol}° = {tol / abs(a0):.3g} × the {a0:g}° between the initial coupling "
                            f"and OT (training and fit noise of one network per round)")
    ctx.choice("replicates", f"{config.n_seeds} training seeds {seeds}, each its own chain of rounds (initialisation, "
                             f"data streams, ReFlow and evaluation sources); σ comparisons paired over seeds at "
                             f"one-sided α = {config.alpha} (flowvar.stats.paired_over_seeds); one seed is always "
                             f"inconclusive there")
    return seeds


@assembles(NAME)
def assemble(config: Lemma2Config, parts: Sequence[Mapping[str, Any]], ctx: RunContext) -> None:
    """The run's result from stored per-round rows, nothing trained: one stored result judged again (``flowvar
    assemble results/full/lemma2``), or parts whose ``rounds`` together hold every (σ, seed) chain of ``config`` once,
    judged as :func:`run` judges its own.

    Valid because a chain's draws (batches, evaluation and ReFlow sources) come from streams named by σ, the round
    and the seed, and its initialisation from the seed alone. Refused (a DataError) for a part that is not a lemma2
    result, and (a ConfigError) when a chain is missing, outside ``config``, held twice, or not ``rounds`` + 1 rows.
    """
    seeds = [config.seed + k for k in range(config.n_seeds)]
    chains: dict[str, dict[str, Any]] = {}
    for i, part in enumerate(parts):
        rounds = part.get("rounds") if isinstance(part, Mapping) else None
        if not isinstance(rounds, Mapping) or not all(isinstance(v, Mapping) for v in rounds.values()):
            raise not_a_part(i, parts, "lemma2", "the per-round rows per σ and seed")
        for label, per_seed in rounds.items():
            for seed, rows in per_seed.items():
                if seed in chains.setdefault(label, {}):
                    raise ConfigError(f"two parts hold {label} {seed}: a split run holds every chain once")
                chains[label][seed] = rows
    expected = {(f"sigma={s}", f"seed={sd}") for s in config.sigmas for sd in seeds}
    found = {(label, seed) for label, per_seed in chains.items() for seed in per_seed}
    bad = sorted((expected - found) | {k for k in expected & found if not _chain_ok(chains[k[0]][k[1]], config)})
    extra = sorted(found - expected)
    if bad or extra:
        raise ConfigError("the parts do not make up the run: "
                          + "; ".join([f"missing or not {config.rounds + 1} rounds: "
                                       f"{', '.join(' '.join(k) for k in bad)}"] * bool(bad)
                                      + [f"outside it: {', '.join(' '.join(k) for k in extra)}"] * bool(extra)))
    _record_choices(config, ctx)
    # the run's order: σ as in config, seeds in order
    _judge(ctx, config, {f"sigma={s}": {f"seed={sd}": [dict(r) for r in chains[f"sigma={s}"][f"seed={sd}"]]
                                        for sd in seeds} for s in config.sigmas}, seeds)


def _chain_ok(rows: Any, config: Lemma2Config) -> bool:
    """One (σ, seed) chain as the judging reads it: rounds 0 … ``config.rounds``, each with its angle, transport cost,
    straightness, singular values and fit residual."""
    return isinstance(rows, list) and [r.get("round") if isinstance(r, Mapping) else None for r in rows] == list(
        range(config.rounds + 1)) and all({"angle_deg", "transport_cost", "straightness", "singular_values",
                                           "fit_residual_rms"} <= set(r) for r in rows)


def moves_precondition(config: Lemma2Config, sigma: float) -> Precondition:
    """``sigma<σ>_moves_toward_ot`` is testable where there are at least 2 seeds (one seed can never decide the
    paired comparison) and the exact minimiser's drop after the run's ``rounds`` + 1 rectifications
    (:func:`ideal_angles`) is at least twice the tolerance. Measured beside it, in closed form: the smallest coupling
    angle at which the drop would be (:func:`min_testable_coupling_angle`), the ideal drop at the coupling's angle
    and every 10° above it up to 170°, and the ReFlow rounds needed at the coupling's angle (up to 200). The remedy
    names only what fails (empty when it holds)."""
    tol, a0, n = config.angle_tol_deg, config.angle_deg, config.rounds + 1
    required = 2 * tol
    ideal_drop = a0 - ideal_angles(a0, sigma, n)[-1]
    where = min_testable_coupling_angle(sigma, n, required)
    by_angle = {f"{a:g}": a - ideal_angles(a, sigma, n)[-1] for a in [a0, *np.arange(10 * math.floor(a0 / 10) + 10,
                                                                                    171, 10)] if 0 < a < 180}
    if where is not None:
        by_angle[f"{where:g}"] = where - ideal_angles(where, sigma, n)[-1]
    angles = [a0, *ideal_angles(a0, sigma, 200)]
    needed = next((k - 1 for k, a in enumerate(angles) if k > 0 and a0 - a >= required), None)
    moves_enough, seeds_enough = ideal_drop >= required, config.n_seeds >= 2
    remedies = ["n_seeds >= 2 (a paired comparison over one seed is always inconclusive)"] * (not seeds_enough)
    if not moves_enough:
        remedy = (f"more rounds ({needed} ReFlow rounds after round 0 at {a0:g}°)" if needed is not None else
                  "more rounds") + ", or a larger σ (the ideal drop per round grows with σ)"
        if where is not None:
            remedy += (f"; or a coupling angle of at least {where:.1f}° (closed form: the ideal drop after {n} "
                       f"rectifications reaches {required:g}° there; the paper's protocol stays at {a0:g}°)")
        remedies.append(remedy)
    return Precondition(
        f"at least 2 seeds (one cannot decide a paired comparison), and the exact minimiser's drop after "
        f"{config.rounds} round(s) at σ = {sigma} is at least twice the tolerance ({required:g}°), so a network that "
        f"follows it to within the tolerance can show it",
        holds=moves_enough and seeds_enough,
        measured={"n_seeds": config.n_seeds, "ideal_drop_deg": ideal_drop, "required_drop_deg": required,
                  "smallest_testable_coupling_angle_deg": where, "ideal_drop_deg_by_coupling_angle": by_angle,
                  "rounds_needed_at_coupling_angle": needed},
        remedy="; ".join(remedies))


def _judge(ctx: RunContext, config: Lemma2Config, results: dict[str, dict[str, list[dict[str, Any]]]],
           seeds: list[int]) -> None:
    """Everything after the training, from the per-round rows of each (σ, seed) chain: the metrics, claims, note and
    figure (what :func:`run` and :func:`assemble` share)."""
    tol, a0 = config.angle_tol_deg, config.angle_deg
    rounds = list(range(config.rounds + 1))
    ideal = {f"sigma={sigma}": ideal_angles(a0, sigma, len(rounds)) for sigma in config.sigmas}
    angles = {key: {sd: [r["angle_deg"] for r in rows] for sd, rows in per.items()} for key, per in results.items()}
    ctx.metric("rounds", results)
    ctx.metric("angle_deg", angles)
    ctx.metric("ideal_angle_deg", ideal)
    ctx.metric("ot_transport_cost", 0.0)
    ctx.metric("initial_transport_cost", 4 * (1 - math.cos(math.radians(a0))))

    replicates = f"{config.n_seeds} training seed(s) {seeds}, each its own chain of {config.rounds + 1} rounds"
    angles0 = [angles["sigma=0.0"][f"seed={s}"] for s in seeds]
    band, drift = stagnation_band(a0, tol, config.rounds)
    refute_deg = STAGNATION_REFUTE * tol
    devs = [later_deviation(a, a0) for a in angles0]
    # the negative control: the same rule on every σ > 0's network chains (at CONTRAST_SIGMA it is the precondition's)
    controls = {f"sigma={sigma}": negative_control([angles[f"sigma={sigma}"][f"seed={s}"] for s in seeds], a0, band,
                                                   refute_deg, ideal[f"sigma={sigma}"])
                for sigma in config.sigmas if sigma != 0}
    contrast = next((controls[f"sigma={x}"] for x in config.sigmas if x == CONTRAST_SIGMA), None)
    ctx.claim("lemma2.sigma0_stagnation",
              f"At σ = 0 ReFlow stagnates: the rotation angle stays ≈ {a0:g}° across rounds (OT would be 0°).",
              {"angles_deg_per_seed": {f"seed={s}": a for s, a in zip(seeds, angles0, strict=True)},
               "max_dev_later_rounds_per_seed": devs,
               "transport_cost": {f"seed={s}": [r["transport_cost"] for r in results["sigma=0.0"][f"seed={s}"]]
                                  for s in seeds},
               "straightness": {f"seed={s}": [r["straightness"] for r in results["sigma=0.0"][f"seed={s}"]]
                                for s in seeds},
               "tolerance_deg": tol, "contrast_sigma": CONTRAST_SIGMA, "contrast_ideal_drift_deg": drift,
               "band_deg": band, "refute_beyond_deg": refute_deg, "negative_control": controls},
              verdict=stagnation_rule(angles0, a0, band, refute_deg),
              precondition=stagnation_precondition([results["sigma=0.0"][f"seed={s}"][0] for s in seeds], a0, tol,
                                                   band, drift, control=contrast),
              kind="reproduction",
              min_effect=f"every ReFlow round within {band:.3g}° of {a0:g}° = min(the {tol}° tolerance, ½ × the "
                         f"{drift:.3g}° the exact CFM(σ = {CONTRAST_SIGMA:g}) minimiser drifts over the same rounds) "
                         f"(scale: the {a0:g}° from the initial coupling to OT; {band:.3g}° = {band / abs(a0):.3g} of "
                         f"it); refuted beyond {refute_deg:g}° ({STAGNATION_REFUTE:g} × the tolerance)",
              replicates=replicates + " (each must stay)",
              rule=f"lemma2.stagnation_rule over rounds 1 … {config.rounds}: band = min({tol}°, ½ × {drift:.3g}°) = "
                   f"{band:.3g}°, where {drift:.3g}° is the exact CFM(σ = {CONTRAST_SIGMA:g}) minimiser's drift from "
                   f"{a0:g}° over round 0 and {config.rounds} ReFlow round(s) (lemma2.stagnation_band: staying within "
                   f"it tells σ = 0 from the paper's σ = {CONTRAST_SIGMA:g}); a seed stays if every round's angle is "
                   f"within the band of {a0:g}°, leaves if some round is more than {refute_deg:g}° "
                   f"({STAGNATION_REFUTE:g} × the tolerance) away (NaN: a reflection, counts as away). Confirmed if "
                   f"every seed stays; refuted if every seed leaves; inconclusive otherwise. Negative control "
                   f"(lemma2.negative_control, evidence negative_control): the same rule on every σ > 0's network "
                   f"chains; testable only if no σ = {CONTRAST_SIGMA:g} chain stays within the band")

    split0 = drop_split(angles0, a0)
    for sigma in config.sigmas:
        if sigma == 0:
            continue
        per_seed = [angles[f"sigma={sigma}"][f"seed={s}"] for s in seeds]
        split = drop_split(per_seed, a0)
        verdict, cmp = moves_rule(split["total_deg"], split0["total_deg"], tol=tol, coupling_deg=a0,
                                  alpha=config.alpha)
        ideal_split = drop_split([ideal[f"sigma={sigma}"]], a0)
        ctx.claim(f"lemma2.sigma{sigma}_moves_toward_ot",
                  f"With noise σ = {sigma} the ReFlow rounds move the angle toward 0° (OT): after "
                  f"{config.rounds} round(s) it has dropped by more than at σ = 0. The drop is the total from the "
                  f"coupling's {a0:g}°, round 0 included (CFM(σ) on the coupling is its first rectification, a ReFlow "
                  f"of it); the split coupling → round 0 → last round is reported beside it, not judged.",
                  {"angles_deg_per_seed": {f"seed={s}": a for s, a in zip(seeds, per_seed, strict=True)},
                   "ideal_minimiser_angles_deg": ideal[f"sigma={sigma}"],
                   "total_drop_deg": split["total_deg"], "sigma0_total_drop_deg": split0["total_deg"],
                   "drop_coupling_to_round0_deg": split["coupling_to_round0_deg"],
                   "drop_round0_to_last_deg": split["round0_to_last_deg"],
                   "sigma0_drop_coupling_to_round0_deg": split0["coupling_to_round0_deg"],
                   "sigma0_drop_round0_to_last_deg": split0["round0_to_last_deg"],
                   "ideal_drop_split_deg": [ideal_split["coupling_to_round0_deg"][0],
                                            ideal_split["round0_to_last_deg"][0]],
                   "monotone_decrease_per_seed": [all_finite(a) and all(y < x for x, y in itertools.pairwise([a0, *a]))
                                                  for a in per_seed],
                   "comparison": cmp.to_dict() if cmp is not None else "a NaN angle (reflection): no comparison",
                   "transport_cost": {f"seed={s}": [r["transport_cost"] for r in results[f"sigma={sigma}"][f"seed={s}"]]
                                      for s in seeds},
                   "tolerance_deg": tol},
                  verdict=verdict,  # type: ignore[arg-type]
                  precondition=moves_precondition(config, sigma),
                  kind="reproduction",
                  min_effect=(cmp.effect_text() if cmp is not None else
                              f"drop(σ) − drop(σ = 0) ≥ {tol}° (scale: the {a0:g}° to OT)"),
                  replicates=replicates + f", paired over seeds at one-sided α = {config.alpha}",
                  rule=f"drop = {a0:g}° − the angle after the last round, per seed (round 0, the first "
                       f"rectification, included); paired over seeds (flowvar.stats.paired_over_seeds, "
                       f"lemma2.moves_rule), d_s = drop_s(σ) − drop_s(0), the σ = 0 chain of the same seed measuring "
                       f"the network's own drift: confirmed if d > 0 at one-sided α = {config.alpha} and mean d ≥ "
                       f"{tol}°; refuted if the upper bound of d is below {tol}°; inconclusive otherwise (always with "
                       f"one seed; also with a NaN angle)")
    ctx.note("ideal_angle_deg: the angle an exact CFM minimiser would reach after each round (module docstring [D]); "
             "it tells how far the noisy rounds are expected to move, independent of the network.")
    _figure(ctx, config, results, ideal, seeds)


def _figure(ctx: RunContext, config: Lemma2Config, results: dict[str, dict[str, list[dict[str, Any]]]],
            ideal: dict[str, list[float]], seeds: list[int]) -> None:
    rounds = list(range(config.rounds + 1))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for sigma, color in zip(config.sigmas, ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7"),
                            strict=False):
        for j, s in enumerate(seeds):
            rows = results[f"sigma={sigma}"][f"seed={s}"]
            label = f"σ = {sigma} (MLP, {config.n_seeds} seed(s))" if j == 0 else None
            axes[0].plot(rounds, [r["angle_deg"] for r in rows], marker="o", color=color, alpha=0.8, label=label)
            axes[1].plot(rounds, [r["transport_cost"] for r in rows], marker="o", color=color, alpha=0.8,
                         label=f"σ = {sigma}" if j == 0 else None)
        axes[0].plot(rounds, ideal[f"sigma={sigma}"], ls="--", color=color, alpha=0.6, label=f"σ = {sigma} (ideal)")
    axes[0].axhline(0, color="k", lw=0.6)
    axes[0].set_xlabel("round k (0 = trained on the initial coupling)")
    axes[0].set_ylabel("rotation angle of fitted A (deg)")
    axes[0].set_xticks(rounds)
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"Lemma 2: ReFlow from the {config.angle_deg:g}° coupling")
    axes[1].set_xlabel("round k")
    axes[1].set_ylabel("E‖x̂1 − x0‖²")
    axes[1].set_xticks(rounds)
    axes[1].legend(fontsize=7)
    axes[1].set_title("transport cost (OT: 0)")
    ctx.figure("angle_vs_round", fig)


__all__ = [
    "BAND_FLOOR_DEG",
    "CONTRAST_SIGMA",
    "NAME",
    "ROUND0_RESIDUAL_TOL",
    "ROUND0_SINGULAR_VALUE_TOL",
    "STAGNATION_REFUTE",
    "Lemma2Config",
    "assemble",
    "drop_split",
    "evaluate_round",
    "ideal_angles",
    "ideal_reflow_angle",
    "later_deviation",
    "min_testable_coupling_angle",
    "moves_precondition",
    "moves_rule",
    "negative_control",
    "run",
    "stagnation_band",
    "stagnation_precondition",
    "stagnation_rule",
]
