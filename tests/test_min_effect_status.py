"""Each rotation-pairing claim of fig6 and solver_resolution states the minimum effect of its OWN claimed status.

The claims that σ > 0 leaves the rotation pairs are confirmed on status 'fails'; their card once printed the
'reproduces' threshold (≥ 0.9 nearer R x0 + μ), which the confirming evidence (3–5 % nearer) plainly does not meet.
The texts are built from the thresholds that :func:`flowvar.metrics.rotation_pairing_status` applies, so the first
tests pin those thresholds to the status function's behaviour, and the last ones read the claims the experiments'
judging code writes (from a small synthetic stored result: nothing trained).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from flowvar.errors import ConfigError
from flowvar.experiments.base import RunContext, build_config, get_experiment
from flowvar.experiments.fig6 import _judge as judge_fig6
from flowvar.experiments.solver_resolution import _per_setting_claim
from flowvar.metrics import FAILS_FRACTION, rotation_pairing_status, status_min_effect
from flowvar.results import Precondition


def test_fails_fraction_is_the_status_functions_threshold() -> None:
    """FAILS_FRACTION is where rotation_pairing_status turns to 'fails' on the fraction alone (the mean distance to
    R x0 + μ kept below that to x0 + μ), for the defaults and another reproduce threshold."""
    for f, e in ((0.9, 0.1), (0.75, 0.3)):
        below = math.nextafter(FAILS_FRACTION, 0.0)
        assert rotation_pairing_status(below, 0.5, 1.0, 2.0, reproduce_fraction=f, reproduce_rel_error=e) == "fails"
        assert rotation_pairing_status(FAILS_FRACTION, 0.5, 1.0, 2.0, reproduce_fraction=f,
                                       reproduce_rel_error=e) == "partial"
        # … and the distance clause: at or past the translation target's mean distance it is 'fails' too
        assert rotation_pairing_status(0.7, 0.5, 2.0, 2.0, reproduce_fraction=f, reproduce_rel_error=e) == "fails"
        assert rotation_pairing_status(0.7, 0.5, 1.999, 2.0, reproduce_fraction=f,
                                       reproduce_rel_error=e) == "partial"


def test_min_effect_names_its_own_status_threshold() -> None:
    reproduces = status_min_effect("reproduces", 0.9, 0.1)
    fails = status_min_effect("fails", 0.9, 0.1)
    assert reproduces.startswith("≥ 0.9 of endpoints nearer R x0 + μ and a mean distance to it ≤ 0.1 × the mean gap")
    assert "status 'reproduces'" in reproduces and "'fails' at none" in reproduces
    assert fails.startswith(f"< {FAILS_FRACTION} of endpoints nearer R x0 + μ, or a mean distance to R x0 + μ ≥ "
                            f"the mean distance to x0 + μ")
    assert "status 'fails'" in fails and "'reproduces' at none" in fails
    assert "≥ 0.9" not in fails and "× the mean gap" not in fails  # not the opposite status's threshold
    for text in (reproduces, fails):
        assert "at more than half of the judged settings" in text and text.endswith("in every training seed")
    # the config's thresholds, not fixed numbers
    assert status_min_effect("reproduces", 0.75, 0.3).startswith("≥ 0.75 of endpoints nearer R x0 + μ and a mean "
                                                                 "distance to it ≤ 0.3 ×")


def test_min_effect_refuses_an_unknown_status() -> None:
    with pytest.raises(ConfigError, match="'reproduces' or 'fails'"):
        status_min_effect("partial", 0.9, 0.1)  # type: ignore[arg-type]


def _outcome(fraction: float) -> dict[str, Any]:
    """One solver's stored outcome with the fraction nearer R x0 + μ given and the status it earns."""
    dist_rot, dist_tr, gap = (0.05, 3.0, 2.5) if fraction >= 0.5 else (3.0, 0.05, 2.5)
    return {"status": rotation_pairing_status(fraction, dist_rot / gap, dist_rot, dist_tr),
            "fraction_nearer_rotation": fraction, "rel_error_rotation": dist_rot / gap,
            "mean_dist_rotation": dist_rot, "median_dist_rotation": dist_rot, "mean_dist_translation": dist_tr,
            "mean_gap": gap, "max_dist_rotation": dist_rot}


def test_fig6_claims_carry_their_own_min_effect(tmp_path: Path) -> None:
    """fig6's judging (what ``flowvar assemble`` runs on stored outcomes): the σ = 0 claim states the 'reproduces'
    threshold, each σ > 0 'leaves the rotation' claim the 'fails' one."""
    config = build_config(get_experiment("fig6"), quick=True,
                          overrides={"euler_steps": (3, 5), "primary_steps": 5, "n_eval": 20})
    solvers = ["euler_3", "euler_5", "dopri5"]
    sigma0 = {s: _outcome(1.0 if s != "dopri5" else 0.0) for s in solvers}
    noisy = {s: _outcome(0.0) for s in solvers}
    ideal = {"sigma=0.0": copy.deepcopy(sigma0), "sigma=0.05": copy.deepcopy(noisy)}
    outcomes = {f"seed={config.seed + k}": {"sigma=0.0": copy.deepcopy(sigma0), "sigma=0.05": copy.deepcopy(noisy)}
                for k in range(config.n_seeds)}
    training = {seed: {sig: {"final_loss_mean_last_5pct": 1.0, "minimum_loss": 0.0, "runtime_s": 0.0}
                       for sig in per} for seed, per in outcomes.items()}
    ctx = RunContext(name="fig6", out_dir=tmp_path, quick=True, seed=config.seed)
    x0 = torch.randn(config.n_eval, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    judge_fig6(ctx, config, training, outcomes, ideal, x0)
    claims = {c.id: c for c in ctx.claims}
    assert claims["fig6.sigma0_odd_euler_reproduces_rotation"].min_effect == status_min_effect(
        "reproduces", config.reproduce_fraction, config.reproduce_rel_error)
    leaves = claims["fig6.sigma0.05_leaves_rotation"]
    assert leaves.min_effect == status_min_effect("fails", config.reproduce_fraction, config.reproduce_rel_error)
    assert "claimed status 'fails'" in leaves.rule  # the rule it states the minimum effect of


def _solver_resolution_claim(tmp_path: Path, claim_id: str, holds: str, per_setting_effect: str | None = None):
    """solver_resolution's per-setting claim (its own code path) on two seeds' synthetic statuses at 20000 steps."""
    ctx = RunContext(name="solver_resolution", out_dir=tmp_path, quick=False, seed=0)
    config = build_config(get_experiment("solver_resolution"), quick=False)
    statuses = {f"seed={k}": {"20000/euler_10": holds, "20000/dopri5": holds} for k in range(2)}
    fitted = Precondition("every seed fitted at 20000 steps", holds=True, measured={})
    _per_setting_claim(ctx, config, claim_id, "a statement", statuses, holds, {}, {}, "the network's", fitted,
                       {seed: [] for seed in statuses}, {"euler_10": holds, "dopri5": holds}, "exact reference",
                       **({"per_setting_effect": per_setting_effect} if per_setting_effect else {}))
    return ctx.claims[-1], config


def test_solver_resolution_claims_carry_their_own_min_effect(tmp_path: Path) -> None:
    """The σ > 0 'no rotation' claims (claimed status 'fails') state the 'fails' threshold, the σ = 0 claim the
    'reproduces' one; both confirmed here, each meeting its own minimum effect."""
    no_rotation, config = _solver_resolution_claim(tmp_path, "solver_resolution.sigma0.05_no_rotation", "fails")
    assert no_rotation.verdict == "confirmed"
    assert no_rotation.min_effect == status_min_effect("fails", config.reproduce_fraction, config.reproduce_rel_error)
    assert no_rotation.min_effect.startswith(f"< {FAILS_FRACTION} of endpoints nearer")
    assert "claimed status 'fails'" in no_rotation.rule
    reproduces, _ = _solver_resolution_claim(tmp_path, "solver_resolution.sigma0_reproduces_rotation", "reproduces")
    assert reproduces.min_effect == status_min_effect("reproduces", config.reproduce_fraction,
                                                      config.reproduce_rel_error)
    assert reproduces.min_effect.startswith(f"≥ {config.reproduce_fraction} of endpoints nearer")
    joint, _ = _solver_resolution_claim(tmp_path, "solver_resolution.fig6_conclusion", "reproduces", "both halves")
    assert joint.min_effect.startswith("both halves, at more than half of the judged settings and 'fails' at none")
