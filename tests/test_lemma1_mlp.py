"""lemma1_mlp: every rule on synthetic evidence that confirms, refutes and is inconclusive; the schedule; a tiny run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from experiment_checks import rejudge_with_outdated_verdicts
from flowvar.errors import ConfigError
from flowvar.experiments.base import build_config, get_experiment, run_experiment
from flowvar.experiments.lemma1_mlp import (
    PARAMETRIC_FAIL,
    Lemma1MLPConfig,
    converged_precondition,
    extrapolated_floor,
    extrapolated_floor_fraction,
    floor_rule,
    last_doubling,
    parametric_rule,
    schedule,
    width_floor,
    width_floor_status,
    width_rule,
)

KW = {"flat_factor": 1.25, "positive_factor": 1000.0, "zero_loss": 1e-12, "alpha": 0.05, "floor_fraction": 0.1}
PARAMETRIC_AT_ZERO = [1e-30, 3e-31, 2e-29]


# ---------------------------------------------------------------------------------------------- rules


def test_parametric_rule_reaches_every_outcome() -> None:
    assert parametric_rule(PARAMETRIC_AT_ZERO, 1e-12) == "confirmed"
    assert parametric_rule([1e-3, 5e-4, 2e-2], 1e-12) == "refuted"  # plainly unfitted on every seed
    assert parametric_rule([1e-30, 1e-3], 1e-12) == "inconclusive"  # seeds disagree
    assert parametric_rule([1e-9, 1e-8], 1e-12) == "inconclusive"  # small but not zero: neither
    assert parametric_rule([2 * PARAMETRIC_FAIL], 1e-12) == "refuted"
    assert parametric_rule([], 1e-12) == "inconclusive"


def test_width_floor_status_flat_and_far_above_parametric_is_a_floor() -> None:
    earlier = [2.10e-3, 1.60e-3, 3.20e-3]
    before = [2.00e-3, 1.50e-3, 3.00e-3]
    after = [1.98e-3, 1.49e-3, 2.97e-3]  # ≈ 1 % better per doubling: flat
    assert width_floor_status(earlier, before, after, PARAMETRIC_AT_ZERO, **KW) == "floor"
    trend = last_doubling(before, after, flat_factor=1.25, alpha=0.05)
    assert trend.verdict == "refuted" and -math.log10(1.25) < trend.lower and trend.upper < math.log10(1.25)


def test_width_floor_status_still_falling_towards_a_floor_in_sight_is_not_decided() -> None:
    """A loss still falling × 2.1–2.3 per doubling but slowing down: the last three stage ends extrapolate
    (L = c + a·q^k) to a floor at 0.56–0.71 of the final loss on every seed. It has not reached it, and its trend
    does not rule a floor out, so the width is "still_falling" (the claim's precondition fails), not evidence for or
    against a floor."""
    floors = [0.8e-3, 0.7e-3, 1.0e-3]
    earlier, before, after = ([c + a * q**k for c, a, q in zip(floors, [40e-3, 36e-3, 50e-3], [0.2, 0.2, 0.25],
                                                                 strict=True)] for k in (1, 2, 3))
    fractions = [extrapolated_floor_fraction(e, b, a) for e, b, a in zip(earlier, before, after, strict=True)]
    assert fractions == pytest.approx([c / a for c, a in zip(floors, after, strict=True)])
    assert all(0.5 < f < 0.75 for f in fractions)
    assert all(b / a > 1.8 for b, a in zip(before, after, strict=True))
    assert width_floor_status(earlier, before, after, PARAMETRIC_AT_ZERO, **KW) == "still_falling"


def test_width_floor_status_power_law_without_levelling_is_no_floor_in_sight() -> None:
    """A loss falling × 2 per doubling with no sign of slowing (a power law in steps towards zero, q ≈ ½ on every seed):
    the extrapolated floor is shown below a tenth of the final loss, so at this budget the loss is set by training, not
    by a floor — a refutation."""
    earlier = [4.0e-3, 3.0e-3, 5.2e-3]
    before = [2.0e-3, 1.45e-3, 2.6e-3]
    after = [1.0e-3, 0.7e-3, 1.3e-3]
    fractions = [extrapolated_floor_fraction(e, b, a) for e, b, a in zip(earlier, before, after, strict=True)]
    assert all(abs(f) < 0.01 for f in fractions)
    floor = extrapolated_floor(fractions, floor_fraction=0.1, alpha=0.05)
    assert floor is not None and floor.verdict == "refuted" and floor.upper < 0.1
    assert width_floor_status(earlier, before, after, PARAMETRIC_AT_ZERO, **KW) == "no_floor_in_sight"
    # a two-stage run has no third stage end (NaN): no trend, so the same last doubling is only still falling
    assert width_floor_status([math.nan] * 3, before, after, PARAMETRIC_AT_ZERO, **KW) == "still_falling"
    # a noisier trend (φ = 0, 0.17, −0.18: seeds slowing down and speeding up) does not show the floor below a tenth
    # of the final loss: still falling, its trend undecided
    noisy = ([4.0e-3, 3.3e-3, 5.0e-3], [2.0e-3, 1.5e-3, 2.6e-3], [1.0e-3, 0.72e-3, 1.3e-3])
    assert extrapolated_floor([extrapolated_floor_fraction(*x) for x in zip(*noisy, strict=True)], floor_fraction=0.1,
                              alpha=0.05).verdict == "inconclusive"  # type: ignore[union-attr]
    assert width_floor_status(*noisy, PARAMETRIC_AT_ZERO, **KW) == "still_falling"
    # one seed: nothing is shown either way
    assert width_floor_status(earlier[:1], before[:1], after[:1], PARAMETRIC_AT_ZERO[:1], **KW) == "undecided"


def test_width_floor_status_a_slow_power_law_inside_the_flat_band_is_no_floor() -> None:
    """A loss falling ×1.2 per doubling at the same pace every stage (a power law in steps towards zero) changes by less
    than ×1.25 over the last doubling, but its trend extrapolates to a floor at φ ≈ 0 of the final loss: it is heading
    to zero, so it is no floor (it used to be called one because the flat test ran first), but "no floor in sight"."""
    final = [1.0e-3, 1.3e-3, 0.8e-3]
    earlier, before, after = [a * 1.2**2 for a in final], [a * 1.2 for a in final], final
    trend = last_doubling(before, after, flat_factor=1.25, alpha=0.05)
    assert trend.verdict == "refuted" and trend.lower > -math.log10(1.25)  # inside the flat band both ways
    fractions = [extrapolated_floor_fraction(e, b, a) for e, b, a in zip(earlier, before, after, strict=True)]
    assert all(abs(f) < 1e-12 for f in fractions)
    assert width_floor_status(earlier, before, after, PARAMETRIC_AT_ZERO, **KW) == "no_floor_in_sight"
    # falling 10^0.001 … 10^0.04 per doubling, each seed at its own steady pace (φ = 0): flat both ways, the fall not
    # shown (lower bound < 0), the trend allowing no floor: neither a floor nor shown without one — undecided
    paces = [10**0.001, 10**0.04, 10**0.002]
    earlier, before, after = ([a * r**k for a, r in zip(final, paces, strict=True)] for k in (2, 1, 0))
    trend = last_doubling(before, after, flat_factor=1.25, alpha=0.05)
    assert trend.verdict == "refuted" and -math.log10(1.25) < trend.lower < 0
    floor = extrapolated_floor([extrapolated_floor_fraction(*x) for x in zip(earlier, before, after, strict=True)],
                               floor_fraction=0.1, alpha=0.05)
    assert floor is not None and floor.verdict == "refuted"
    assert width_floor_status(earlier, before, after, PARAMETRIC_AT_ZERO, **KW) == "undecided"
    # with no third stage end (a two-stage run: φ is NaN) the trend shows nothing, and flat is a floor
    assert width_floor_status([math.nan] * 3, before, after, PARAMETRIC_AT_ZERO, **KW) == "floor"


def test_width_floor_records_the_tests_its_status_reads() -> None:
    """width_floor's trend, φ and floor test are the ones the status is decided by (the evidence shows what decided)."""
    floors = [0.8e-3, 0.7e-3, 1.0e-3]
    earlier, before, after = ([c + a * q**k for c, a, q in zip(floors, [40e-3, 36e-3, 50e-3], [0.2, 0.2, 0.25],
                                                                 strict=True)] for k in (1, 2, 3))
    judged = width_floor(earlier, before, after, PARAMETRIC_AT_ZERO, **KW)
    assert judged.status == "still_falling" == width_floor_status(earlier, before, after, PARAMETRIC_AT_ZERO, **KW)
    assert judged.trend.to_dict() == last_doubling(before, after, flat_factor=1.25, alpha=0.05).to_dict()
    assert judged.fractions == [extrapolated_floor_fraction(*x) for x in zip(earlier, before, after, strict=True)]
    assert judged.floor is not None and judged.floor.to_dict() == extrapolated_floor(  # type: ignore[union-attr]
        judged.fractions, floor_fraction=0.1, alpha=0.05).to_dict()
    # at zero the tests are still recorded
    zero = width_floor([1e-13] * 3, [1e-13] * 3, [1e-13] * 3, PARAMETRIC_AT_ZERO, **KW)
    assert zero.status == "zero" and zero.fractions == [1.0, 1.0, 1.0]


def test_extrapolated_floor_fraction_cases() -> None:
    assert extrapolated_floor_fraction(4.0, 2.0, 1.0) == pytest.approx(0.0)  # pure power law: no floor
    assert extrapolated_floor_fraction(1.0 + 0.4, 1.0 + 0.2, 1.0 + 0.1) == pytest.approx(1.0 / 1.1)  # floor 1
    assert extrapolated_floor_fraction(3.0, 2.0, 1.0) == -1.0  # not slowing down (q = 1)
    assert extrapolated_floor_fraction(3.0, 2.5, 1.0) == -1.0  # speeding up (q = 3)
    assert extrapolated_floor_fraction(8.0, 2.0, 1.0) == pytest.approx(0.8)  # q = 1/6: c = 1 − 1/5
    assert extrapolated_floor_fraction(2.0, 1.0, 1.0) == 1.0  # the last stage did not fall
    assert extrapolated_floor_fraction(1.0, 1.2, 1.0) != extrapolated_floor_fraction(1.0, 1.2, 1.0)  # NaN: rose first
    assert math.isnan(extrapolated_floor_fraction(1.0, 0.0, 0.0))
    assert extrapolated_floor([0.0, math.nan], floor_fraction=0.1, alpha=0.05) is None


def test_width_floor_status_reaching_zero() -> None:
    """An MLP whose loss is flat because it is already at numerical zero has no positive floor."""
    before = [1e-13, 2e-13, 1.5e-13]
    after = [1e-13, 2e-13, 1.5e-13]
    assert width_floor_status(before, before, after, PARAMETRIC_AT_ZERO, **KW) == "zero"
    # reaching zero while still falling fast is zero, not still falling
    assert width_floor_status([1e-7, 1e-7, 1e-7], [1e-9, 2e-9, 1e-9], [1e-13, 2e-13, 1.5e-13], PARAMETRIC_AT_ZERO,
                              **KW) == "zero"


def test_width_floor_status_a_rising_loss_is_no_floor() -> None:
    """Over the last doubling the loss rises ×1.6–2 on every seed (Adam kicked off its minimum): its improvement is
    shown below ×1.25 but it is not flat, so it is undecided rather than a floor."""
    before = [1.0e-3, 1.2e-3, 0.9e-3]
    after = [1.6e-3, 2.2e-3, 1.8e-3]
    trend = last_doubling(before, after, flat_factor=1.25, alpha=0.05)
    assert trend.verdict == "refuted" and trend.lower < -math.log10(1.25)
    assert width_floor_status(before, before, after, PARAMETRIC_AT_ZERO, **KW) == "undecided"


def test_width_floor_status_undecided_cases() -> None:
    # one seed: a trained-model comparison is never decided
    assert width_floor_status([2e-3], [1e-3], [1e-3], [1e-30], **KW) == "undecided"
    # flat, but not far above the parametric class (which here did not reach zero)
    assert width_floor_status([2.1e-3, 1.6e-3, 3.2e-3], [2e-3, 1.5e-3, 3e-3], [1.98e-3, 1.49e-3, 2.97e-3],
                              [1e-5, 1e-5, 1e-5], **KW) == "undecided"
    # seeds disagree: one falls × 4, one is flat, one rises
    assert width_floor_status([8e-3, 1e-3, 1e-3], [4e-3, 1e-3, 1e-3], [1e-3, 1e-3, 1.3e-3], PARAMETRIC_AT_ZERO,
                              **KW) == "undecided"
    # falling by ×1.07–1.29 over the last doubling: neither shown flat nor shown falling by ×1.25, and the
    # extrapolated floors (0.96, −1, 0.15 of the final loss) decide nothing: undecided, not refuted
    assert width_floor_status([1.29e-3, 1.23e-3, 1.68e-3], [1.072e-3, 1.175e-3, 1.288e-3], [1e-3, 1e-3, 1e-3],
                              PARAMETRIC_AT_ZERO, **KW) == "undecided"


def test_floor_rule_over_widths() -> None:
    assert floor_rule({"width=16": "floor", "width=64": "floor"}) == "confirmed"
    assert floor_rule({"width=16": "floor", "width=64": "zero"}) == "refuted"  # one width represents v̂_OT
    assert floor_rule({"width=16": "still_falling", "width=64": "zero"}) == "refuted"
    assert floor_rule({"width=16": "floor", "width=64": "no_floor_in_sight"}) == "refuted"  # set by training
    assert floor_rule({"width=16": "still_falling", "width=64": "no_floor_in_sight"}) == "refuted"
    assert floor_rule({"width=16": "floor", "width=64": "undecided"}) == "inconclusive"
    assert floor_rule({"width=16": "still_falling", "width=64": "floor"}) == "inconclusive"  # (precondition fails)
    assert floor_rule({}) == "inconclusive"


def test_converged_precondition() -> None:
    assert converged_precondition({"width=16": "floor", "width=64": "undecided"}, 1.25).holds
    falling = converged_precondition({"width=16": "still_falling", "width=64": "floor"}, 1.25)
    assert not falling.holds and "width=16 still improving" in falling.remedy
    assert falling.measured["still_falling"] == ["width=16"]
    # a width at zero refutes whatever the others do: more training cannot undo it
    assert converged_precondition({"width=16": "still_falling", "width=64": "zero"}, 1.25).holds
    assert converged_precondition({"width=16": "still_falling", "width=64": "no_floor_in_sight"}, 1.25).holds


def test_width_rule_reaches_every_outcome() -> None:
    assert width_rule([4e-3, 5e-3, 3e-3], [5e-4, 6e-4, 4e-4], width_factor=2.0, alpha=0.05).verdict == "confirmed"
    # the larger width is no better (or worse): the data exclude a ×2 improvement
    assert width_rule([1e-3, 1.1e-3, 0.9e-3], [1.05e-3, 1.2e-3, 0.95e-3], width_factor=2.0,
                      alpha=0.05).verdict == "refuted"
    assert width_rule([4e-3], [5e-4], width_factor=2.0, alpha=0.05).verdict == "inconclusive"  # one seed
    assert width_rule([4e-3, 1e-3, 5e-3], [5e-4, 2e-3, 4e-4], width_factor=2.0,
                      alpha=0.05).verdict == "inconclusive"  # noisy


# ---------------------------------------------------------------------------------------------- config


def test_schedule_doubles_steps_and_halves_lr() -> None:
    config = build_config(get_experiment("lemma1_mlp"), overrides={"stages": "4", "first_stage_steps": "200"})
    assert schedule(config, 3e-3) == [(200, 3e-3), (400, 1.5e-3), (800, 7.5e-4), (1600, 3.75e-4)]
    assert all(n * lr == pytest.approx(0.6) for n, lr in schedule(config, 3e-3))  # the same budget per stage


def test_yaml_holds_the_values_and_quick_is_float64_staged() -> None:
    spec = get_experiment("lemma1_mlp")
    assert isinstance(build_config(spec), Lemma1MLPConfig)
    quick = build_config(spec, quick=True)
    assert quick.stages >= 2 and quick.n_seeds >= 2 and len(quick.widths) >= 2


@pytest.mark.parametrize(("overrides", "match"), [
    ({"stages": "1"}, "stages"), ({"floor_fraction": "1.0"}, "floor_fraction"), ({"n_seeds": "0"}, "n_seeds"),
    ({"flat_factor": "1.0"}, "flat_factor"),
    ({"zero_loss": "0.01"}, "zero_loss"), ({"widths": "16,16"}, "widths"), ({"alpha": "0.6"}, "alpha"),
])
def test_config_errors(overrides: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_config(get_experiment("lemma1_mlp"), quick=True, overrides=overrides)


# ---------------------------------------------------------------------------------------------- tiny run


def test_tiny_run_records_kind_precondition_and_replicates(tmp_path: Path) -> None:
    """30 steps: the parametric class is nowhere near zero, so the MLP floor is untestable (with the measured loss)
    and the rule's own outcome is kept; every number comes from this run."""
    overrides = {"widths": "4,8", "stages": "3", "first_stage_steps": "10", "n_seeds": "2", "eval_samples": "200"}
    run_experiment("lemma1_mlp", tmp_path, quick=True, overrides=overrides)
    data = json.loads((tmp_path / "lemma1_mlp" / "result.json").read_text())
    claims = {c["id"]: c for c in data["claims"]}
    assert set(claims) == {"lemma1_mlp.parametric_reaches_zero", "lemma1_mlp.mlp_positive_floor",
                           "lemma1_mlp.floor_shrinks_with_width"}
    for c in claims.values():
        assert c["min_effect"] and c["replicates"] and c["rule"]
    # "shrinks with width" is the spec's expectation (PAPER.md §5 item 8), not the paper's (§2: cannot represent)
    assert {k: c["kind"] for k, c in claims.items()} == {"lemma1_mlp.parametric_reaches_zero": "reproduction",
                                                         "lemma1_mlp.mlp_positive_floor": "reproduction",
                                                         "lemma1_mlp.floor_shrinks_with_width": "finding"}
    assert claims["lemma1_mlp.parametric_reaches_zero"]["verdict"] == "refuted"
    floor = claims["lemma1_mlp.mlp_positive_floor"]
    assert floor["verdict"] == "untestable" and floor["verdict_if_testable"] in {"confirmed", "refuted",
                                                                                "inconclusive"}
    assert floor["precondition"]["holds"] is False
    measured = floor["precondition"]["measured"]["[1]"]["parametric_best_relative_loss"]
    statuses = floor["precondition"]["measured"]["[2]"]["status_per_width"]
    assert statuses == {w: v["status"] for w, v in floor["evidence"]["per_width"].items()}
    assert measured == claims["lemma1_mlp.parametric_reaches_zero"]["evidence"]["best_relative_loss_per_seed"]
    assert set(floor["evidence"]["per_width"]) == {"width=4", "width=8"}
    assert data["metrics"]["stage_end_steps"] == [10, 30, 70]
    curve = data["metrics"]["mlp"]["width=8"]["seed=1"]["relative_loss"]
    assert len(curve) == 3 and all(v > 0 for v in curve)
    per_width = floor["evidence"]["per_width"]["width=8"]
    assert per_width["relative_loss_at_T/4"] == [data["metrics"]["mlp"]["width=8"][s]["relative_loss"][0]
                                                 for s in ("seed=0", "seed=1")]
    assert len(per_width["extrapolated_floor_over_final"]) == 2
    assert not any("1e-30" in n or "≈" in n for n in data["notes"])  # no exploratory numbers written in
    assert "schedule" in data["choices"] and "replicates" in data["choices"]
    assert (tmp_path / "lemma1_mlp" / "loss_vs_steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_stored_result_is_judged_again_without_training(tmp_path: Path) -> None:
    """`flowvar assemble` on a stored lemma1_mlp result: the same claims from the stored per-stage losses; outdated
    verdicts are replaced and named; a loss record made a power law towards zero is refuted by the new rule; curves of
    another length are refused."""
    from flowvar.sweep.assemble import rejudge_result

    overrides = {"widths": "4,8", "stages": "3", "first_stage_steps": "10", "n_seeds": "2", "eval_samples": "200"}
    whole = run_experiment("lemma1_mlp", tmp_path / "first", quick=True, overrides=overrides)
    stored = tmp_path / "first" / "lemma1_mlp"
    result, folder, _ = rejudge_with_outdated_verdicts(stored, tmp_path / "second", whole)
    assert result.metrics["mlp"] == json.loads(json.dumps(whole.metrics["mlp"]))
    assert [c.evidence for c in result.claims] == [c.evidence for c in whole.claims]
    assert (folder / "loss_vs_steps.png").is_file()

    # a parametric class at zero and width 4 falling × 2 per stage on both seeds, width 8 flat: refuted (width 4)
    data = json.loads((stored / "result.json").read_text())
    for s, curve in (("seed=0", [4e-3, 2e-3, 1e-3]), ("seed=1", [5.2e-3, 2.6e-3, 1.3e-3])):
        data["metrics"]["parametric"][s]["best_relative_loss"] = 1e-30
        data["metrics"]["mlp"]["width=4"][s]["relative_loss"] = curve
        data["metrics"]["mlp"]["width=8"][s]["relative_loss"] = [2e-3, 1.99e-3, 1.985e-3]
    (stored / "result.json").write_text(json.dumps(data))
    edited, _ = rejudge_result(stored, tmp_path / "third")
    claim = {c.id: c for c in edited.claims}["lemma1_mlp.mlp_positive_floor"]
    assert claim.evidence["per_width"]["width=4"]["status"] == "no_floor_in_sight"
    assert claim.verdict == "refuted" and claim.precondition is not None and claim.precondition["holds"]

    data["metrics"]["mlp"]["width=8"]["seed=0"]["relative_loss"] = [2e-3, 1.99e-3]
    (stored / "result.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="3 stage ends per seed"):
        rejudge_result(stored, tmp_path / "fourth")


def test_a_loss_without_a_log_is_an_undecided_or_zero_width_not_an_error() -> None:
    """Review verdictR 3: a NaN loss (a diverged seed) or an exact 0 raised a DataError from the log10 trend, while
    the docstring promised "undecided" (NaN) and the zero status decides an exact zero itself."""
    nan_seed = width_floor([1e-2] * 3, [1e-3, math.nan, 1e-3], [1e-3] * 3, PARAMETRIC_AT_ZERO, **KW)
    assert nan_seed.status == "undecided" and nan_seed.trend.verdict == "inconclusive"
    assert "no trend to test" in nan_seed.trend.reason and "nan" in nan_seed.trend.reason
    assert width_floor([1e-2] * 3, [1e-13] * 3, [0.0] * 3, PARAMETRIC_AT_ZERO, **KW).status == "zero"
    finite = last_doubling([1e-3, 2e-3], [1e-4, 2e-4], flat_factor=1.25, alpha=0.05)
    assert finite.verdict == "confirmed"  # finite losses are judged as before
