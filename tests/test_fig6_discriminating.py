"""fig6's reproduction claims are judged only on the settings that discriminate between the exact references (the
exact σ = 0 field reproduces the rotation pairs, the exact σ = contrast minimiser fails to): the rule on synthetic
evidence for every outcome, and the discriminating set on the exact references themselves."""

from __future__ import annotations

import pytest
import torch

from flowvar.errors import ConfigError
from flowvar.experiments.fig6 import (
    discriminating_settings,
    ideal_field,
    judge_on_discriminating_settings,
    pairing_status,
)
from flowvar.metrics import rotation_pairing_on_solvers

# The exact references on fig6's quick grids (results/fig6/result.json, ideal_minimiser_outcomes): Euler 11 jumps the
# σ = 0.05 flip (h = 1/11 > σ), the even grids stop the σ = 0 field at t = ½.
EXACT_ZERO = {"euler_11": "reproduces", "euler_51": "reproduces", "euler_101": "reproduces", "euler_10": "failed",
              "dopri5": "reproduces"}
EXACT_CONTRAST = {"euler_11": "partial", "euler_51": "fails", "euler_101": "fails", "euler_10": "fails",
                  "dopri5": "fails"}
ODD = ["euler_11", "euler_51", "euler_101"]


def seeds(*statuses: dict[str, str]) -> dict[str, dict[str, str]]:
    return {f"seed={k}": s for k, s in enumerate(statuses)}


def judge(statuses: dict[str, dict[str, str]], holds: str = "reproduces", settings: list[str] = ODD,
          zero: dict[str, str] = EXACT_ZERO, contrast: dict[str, str] = EXACT_CONTRAST):
    return judge_on_discriminating_settings(statuses, settings, zero, contrast, holds=holds,  # type: ignore[arg-type]
                                            contrast_sigma=0.05)


def test_discriminating_settings_on_synthetic_references() -> None:
    assert discriminating_settings(EXACT_ZERO, EXACT_CONTRAST, ODD) == ["euler_51", "euler_101"]
    assert discriminating_settings(EXACT_ZERO, EXACT_CONTRAST, list(EXACT_ZERO)) == ["euler_51", "euler_101", "dopri5"]
    with pytest.raises(ConfigError, match="euler_21"):  # a setting the references were not evaluated on
        discriminating_settings(EXACT_ZERO, EXACT_CONTRAST, ["euler_21"])


def test_pairing_status_of_an_outcome() -> None:
    assert pairing_status({"status": "partial", "fraction_nearer_rotation": 1.0}) == "partial"
    assert pairing_status("failed: the vector field is not finite at t = 0.5") == "failed"


def test_rule_confirmed_refuted_inconclusive_untestable() -> None:
    # Euler 11 is partial in every seed (any fitted network jumps there, as the exact σ = 0.05 minimiser does): it is
    # not judged, so it no longer blocks either verdict.
    confirm = {"euler_11": "partial", "euler_51": "reproduces", "euler_101": "reproduces"}
    refute = {"euler_11": "partial", "euler_51": "fails", "euler_101": "fails"}
    mixed = {"euler_11": "reproduces", "euler_51": "reproduces", "euler_101": "partial"}
    confirmed = judge(seeds(confirm, confirm))
    assert confirmed.verdict == "confirmed" and confirmed.precondition.holds
    assert confirmed.judged == ["euler_51", "euler_101"]
    assert list(confirmed.not_judged) == ["euler_11"]
    # the exact σ = 0.05 minimiser is partial there (it read "the exact references agree ... both land on the
    # rotation side", which only a 'reproduces' minimiser would justify)
    assert confirmed.not_judged["euler_11"].startswith(
        "not judged: the exact σ = 0.05 minimiser does not clearly leave the rotation pairs there either")
    assert "exact σ = 0: reproduces" in confirmed.not_judged["euler_11"]
    assert "exact σ = 0.05: partial" in confirmed.not_judged["euler_11"]
    refuted = judge(seeds(refute, refute))
    assert refuted.verdict == "refuted" and refuted.seeds.per_seed == {"seed=0": "refuted", "seed=1": "refuted"}
    # a partial discriminating setting in one seed; seeds that disagree; one seed: inconclusive
    assert judge(seeds(mixed, confirm)).verdict == "inconclusive"
    disagree = judge(seeds(confirm, refute))
    assert disagree.verdict == "inconclusive"
    assert disagree.seeds.per_seed == {"seed=0": "confirmed", "seed=1": "refuted"}
    assert judge(seeds(confirm)).verdict == "inconclusive"
    # the same rule for "σ = 0.05 leaves the rotation" (holds = fails), over every solver
    every = list(EXACT_ZERO)
    leaves = {"euler_11": "partial", "euler_51": "fails", "euler_101": "fails", "euler_10": "fails", "dopri5": "fails"}
    stays = {"euler_11": "reproduces", "euler_51": "reproduces", "euler_101": "reproduces", "euler_10": "partial",
             "dopri5": "reproduces"}
    judged_fails = judge(seeds(leaves, leaves), "fails", every)
    assert judged_fails.verdict == "confirmed" and judged_fails.judged == ["euler_51", "euler_101", "dopri5"]
    assert judged_fails.not_judged["euler_10"].startswith("not judged: the exact σ = 0 field stops there")
    assert judge(seeds(stays, stays), "fails", every).verdict == "refuted"
    # no discriminating setting: untestable, with the references' statuses as the numbers
    coarse = judge(seeds(confirm, confirm), settings=["euler_11"])
    assert coarse.verdict == "untestable" and not coarse.precondition.holds
    assert coarse.judged == [] and coarse.seeds.verdict == "inconclusive"
    assert coarse.precondition.measured["discriminating_settings"] == []
    assert coarse.precondition.measured["exact_sigma0_status"] == {"euler_11": "reproduces"}
    assert coarse.precondition.measured["exact_sigma0.05_status"] == {"euler_11": "partial"}
    assert "n > 1/σ = 20" in coarse.precondition.remedy
    # a σ = 0 field that does not reproduce there is no reference either
    odd_zero = {**EXACT_ZERO, "euler_51": "partial"}
    assert judge(seeds(confirm, confirm), zero=odd_zero).judged == ["euler_101"]
    assert judge(seeds(confirm, confirm), zero=odd_zero).not_judged["euler_51"].startswith(
        "not judged: the exact σ = 0 field does not reproduce the rotation pairs there")


def test_rule_rejects_a_seed_without_every_setting() -> None:
    with pytest.raises(ConfigError, match="seed=1"):
        judge(seeds({"euler_11": "partial", "euler_51": "fails", "euler_101": "fails"}, {"euler_51": "fails"}))


@pytest.mark.parametrize("sigma", [0.05, 0.15])  # no grid with h = σ exactly: there it lands on μ
def test_discriminating_set_is_the_odd_euler_grids_finer_than_sigma(gen: torch.Generator, sigma: float) -> None:
    """On the exact references the discriminating solvers are the odd Euler grids with step h = 1/n < σ and dopri5.

    Odd Euler with h > σ: the exact σ minimiser's step across t = ½ multiplies y = x − tμ by (σ² − h²)/(σ² + h²) < 0,
    so it jumps to the rotation side as the σ = 0 field does. Even Euler grids, midpoint and RK4 (odd or even) evaluate
    the σ = 0 field at t = ½ and stop. dopri5 follows the σ = 0 field's exact straight path x0 + t(μ − 2x0), whose
    velocity is constant along it, to R x0 + μ, and the σ minimiser's translation.
    """
    mu = torch.tensor([5.0, 5.0], dtype=torch.float64)
    x0 = torch.randn(200, 2, generator=gen, dtype=torch.float64)
    counts = [3, 5, 7, 11, 19, 21, 25, 51, 101, 4, 10, 20, 50, 100]
    solvers = ([f"euler_{n}" for n in counts] + [f"midpoint_{n}" for n in (11, 21, 51, 10, 50)]
               + [f"rk4_{n}" for n in (11, 51, 10, 50)] + ["dopri5"])
    zero, contrast = ({s: pairing_status(o) for s, o in rotation_pairing_on_solvers(ideal_field(5.0, sig), x0, mu,
                                                                                     solvers).items()}
                      for sig in (0.0, sigma))
    expected = [f"euler_{n}" for n in counts if n % 2 == 1 and 1 / n < sigma] + ["dopri5"]
    assert discriminating_settings(zero, contrast, solvers) == expected
    assert expected[:-1] == ([f"euler_{n}" for n in (21, 25, 51, 101)] if sigma == 0.05 else
                             [f"euler_{n}" for n in (7, 11, 19, 21, 25, 51, 101)])
    assert all(zero[s] == "failed" for s in solvers if s.startswith(("midpoint", "rk4")))
