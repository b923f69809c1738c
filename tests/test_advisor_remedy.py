"""What the advisor tells the user to change when no σ cuts memorisation follows from the numbers (newcomer review F,
finding 1): "add seeds" only for a σ whose mean drop M(0) − M(σ) already reaches reduce_margin (seeds narrow the
bound, never move the mean), "extend sigmas" only when the exact CFM(σ) minimiser can act at some σ or was not
checked, and, when the exact minimiser keeps the pairs at every σ tried, a plain statement that the noise cannot act
at these σ, with σ / line spacing against the measured onset (σ√d, which the texts used to name, does not predict it:
newcomer review newR, finding 1) and what to change instead. Each per-σ line of ``Advice.summary()`` says what the
exact-minimiser check found there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flowvar.advise import Advice
from flowvar.advisor import SeedAdvice, advise_over_seeds, no_cut_remedy, seeds_could_confirm
from flowvar.experiments._exact_minimiser import closer_lines_remedy, mechanism_precondition
from flowvar.results import Precondition
from flowvar.stats import SeedComparison, paired_over_seeds

ROOT = Path(__file__).resolve().parents[1]
REMEDY = closer_lines_remedy(0.5, 9.1)  # the check's own remedy at σ = 0.5 (its wording: the PNG test below)


def rows(cells: dict[float, list[tuple[float, float]]]) -> dict[float, list[dict[str, float]]]:
    """σ → per-seed rows (pairing accuracy, G)."""
    return {s: [{"pairing_accuracy": a, "generalisation": g} for a, g in seeds] for s, seeds in cells.items()}


def check(holds: bool, lost: float, remedy: str = "") -> Precondition:
    """An exact-minimiser check as sigma_tradeoff records it: ``lost`` = the M the exact CFM(σ) minimiser loses."""
    return Precondition("the exact CFM(σ) minimiser moves its outputs off the training partners", holds,
                        {"seed_mean": lost, "min_effect": 0.1, "median_line_spacing": 9.1, "sigma_sqrt_d": 4.0},
                        "" if holds else remedy)


# the newcomer's digits run (N = 64, 3 seeds): M = 1 in every seed at every σ; σ = 0.2 and 0.5 improve G
DIGITS = rows({0.0: [(1.0, 0.290), (1.0, 0.300), (1.0, 0.297)],
               0.05: [(1.0, 0.262), (1.0, 0.267), (1.0, 0.260)],
               0.2: [(1.0, 0.210), (1.0, 0.218), (1.0, 0.217)],
               0.5: [(1.0, 0.228), (1.0, 0.233), (1.0, 0.231)]})


def advise(cells: dict[float, list[dict[str, float]]], checks: dict[float, Precondition] | None) -> SeedAdvice:
    return advise_over_seeds(cells, 64, 0.25, 0.05, gen_floor=0.0006, memorise_accuracy=0.5, noise_can_act=checks)


def test_every_sigma_kept_by_the_exact_minimiser_says_the_noise_cannot_act_and_no_seeds() -> None:
    checks = {0.05: check(False, 0.0, REMEDY), 0.2: check(False, 0.0, REMEDY), 0.5: check(False, 0.003, REMEDY)}
    adv = advise(DIGITS, checks)
    assert adv.outcome == "none" and adv.trade_off is None and adv.unattributed_cut is None
    for text in (adv.headline, adv.reason):
        assert "add seeds" not in text and "extend sigmas to larger values" not in text
    assert "σ√d" not in adv.headline
    assert adv.headline.startswith(
        "no σ satisfies both margins: no σ of the grid cuts memorisation by ≥ 0.1 with confidence (and none can on "
        "this grid: at every σ tried, up to 0.5, the exact CFM(σ) minimiser itself keeps the pairs (σ = 0.5 is 0.055 "
        "of the median line spacing 9.1; the exact minimiser starts losing pairs between 0.37 and 0.49 of it), so more "
        "seeds cannot change that; a larger σ or closer training lines could, as the reason says)")
    assert "a lower d" not in adv.headline  # codeG 8: file data fix d; the check's remedy (in the reason) knows
    # a larger σ follows from the measured onset: 0.49 × the spacing 9.1 = 4.46
    assert ("at every σ tried (σ = 0.05 … 0.5) the exact CFM(σ) minimiser itself keeps the pairs (it loses at most "
            "0.003 < 0.1 of M): the noise cannot act at these σ against the spacing of the training lines, so neither "
            "more seeds nor longer training can show a cut on this grid — to change that, a larger σ, about 0.49 × the "
            "median line spacing 9.1 = 4.46 or more (extend sigmas; the generalisation margin then says whether that "
            f"much noise blurs the data), or {REMEDY}") in adv.reason


def test_the_newcomers_png_run_reads_sigma_over_spacing_not_sigma_sqrt_d() -> None:
    """newR finding 1: 48 PNGs of 3 × 8 × 8 (d = 192), N = 32, median line spacing 3.04. The texts said the noise
    could not act "at this data's σ√d against the pair spacing" and printed σ√d = 6.93 > 3.04, which says the
    opposite. σ / spacing = 0.5 / 3.04 = 0.164 is what predicts it (the exact minimiser starts losing pairs between
    0.37 and 0.49 in results/full/memorisation_phase): the check's own remedy and the advisor's answer say that."""
    sigmas = (0.01, 0.05, 0.2, 0.5)
    checks = {s: mechanism_precondition([0.0, 0.0, 0.0], 0.1, measure="memorisation score M(0) − M(σ), M(0) = 1",
                                        sigma=s, spacing=3.04, sigma_sqrt_d=s * 192 ** 0.5) for s in sigmas}
    assert not any(c.holds for c in checks.values())
    top = checks[0.5]
    assert top.measured["sigma_over_spacing"] == pytest.approx(0.5 / 3.04)
    assert top.measured["sigma_over_spacing_onset"] == [0.37, 0.49] and top.measured["sigma_sqrt_d"] == \
        pytest.approx(6.93, abs=0.005)
    assert top.remedy == (
        "closer training lines: a median line spacing of at most about σ / 0.49 = 1.02 (more pairs N or a lower d "
        "shrink it), with the training budget for σ = 0 to memorise there (σ = 0.5 is 0.164 of the median line "
        "spacing 3.04, and the exact CFM(σ) minimiser starts losing pairs between σ / spacing 0.37 and 0.49, "
        "measured over d = 2 … 50 in results/full/memorisation_phase; σ√d = 6.93, the noise tube radius of PAPER.md "
        "§4 [D], does not predict it across d)")
    assert "σ√d" not in top.statement and "at this σ against the spacing of the training lines" in top.statement
    cells = rows({s: [(1.0, 0.379), (1.0, 0.380), (1.0, 0.378)] for s in (0.0, *sigmas)})
    adv = advise_over_seeds(cells, 32, 0.25, 0.05, gen_floor=0.0179, memorise_accuracy=0.9, noise_can_act=checks)
    assert adv.outcome == "none"
    assert "σ√d" not in adv.headline and adv.reason.count("σ√d") == 1  # only as what does not decide it
    assert "(σ = 0.5 is 0.16 of the median line spacing 3.04; the exact minimiser starts losing pairs between 0.37 " \
           "and 0.49 of it)" in adv.headline
    assert "a larger σ, about 0.49 × the median line spacing 3.04 = 1.49 or more (extend sigmas" in adv.reason
    assert top.remedy in adv.reason


def test_unchecked_pairs_at_m_one_suggest_larger_sigma_but_not_seeds() -> None:
    adv = advise(DIGITS, None)
    assert "add seeds" not in adv.headline and "add seeds" not in adv.reason
    assert ("more seeds would not help: no σ's mean drop M(0) − M(σ) reaches 0.1 (the largest is 0, at σ = 0.05), "
            "and seeds narrow the bound, not the mean") in adv.reason
    assert ("extend sigmas to larger values (the exact minimiser was not checked, so whether the noise can act at a "
            "larger σ is unknown)") in adv.reason
    assert "(more seeds would not help: no mean drop reaches 0.1; extend sigmas to larger values: whether the noise " \
           "can act there is unchecked)" in adv.headline


def test_a_sigma_where_the_exact_minimiser_acts_suggests_larger_sigma_only() -> None:
    checks = {0.05: check(False, 0.0, REMEDY), 0.2: check(False, 0.04, REMEDY), 0.5: check(True, 0.31)}
    adv = advise(DIGITS, checks)
    assert "(more seeds would not help: no mean drop where the noise can act reaches 0.1; extend sigmas to larger " \
           "values: the exact CFM(σ) minimiser can act at σ = 0.5)" in adv.headline
    assert "extend sigmas to larger values: the exact CFM(σ) minimiser can act at σ = 0.5 (it loses ≥ 0.1 of M " \
           "there)" in adv.reason
    assert "add seeds" not in adv.reason and "at every σ tried" not in adv.reason


def test_a_mean_drop_that_reaches_the_margin_but_not_its_bound_asks_for_seeds() -> None:
    # σ = 0.5: M(0) − M(σ) per seed 0.508, 0, 0 — mean 0.169 ≥ 0.1, lower bound < 0 with 3 seeds; M stays above 0.05
    cells = rows({0.0: [(1.0, 0.290), (1.0, 0.300), (1.0, 0.297)],
                  0.2: [(1.0, 0.210), (1.0, 0.218), (1.0, 0.217)],
                  0.5: [(0.5, 0.228), (1.0, 0.233), (1.0, 0.231)]})
    for checks in (None, {0.2: check(False, 0.0, REMEDY), 0.5: check(True, 0.4)}):
        adv = advise(cells, checks)
        assert adv.outcome == "none" and adv.trade_off is None
        assert "(add seeds: at σ = 0.5 the drop reaches 0.1 on the mean, not yet with confidence; extend sigmas" \
               in adv.headline
        assert "add seeds (--set n_seeds=…): at σ = 0.5 the mean drop M(0) − M(σ) = 0.169 reaches 0.1, but its " \
               "lower bound -0.325 is not above 0 (more seeds narrow the bound; the mean stays as measured)" \
               in adv.reason
    # the same drop where the exact minimiser keeps the pairs: the networks' drop, no σ to add seeds for
    adv = advise(cells, {0.2: check(False, 0.0, REMEDY), 0.5: check(False, 0.02, REMEDY)})
    assert "add seeds" not in adv.headline and "add seeds" not in adv.reason
    assert "at every σ tried (σ = 0.2 … 0.5) the exact CFM(σ) minimiser itself keeps the pairs" in adv.reason


def test_seeds_could_confirm_reads_the_mean_against_the_margin_not_the_bound() -> None:
    def drop(zero: list[float], noisy: list[float]) -> SeedComparison:
        return paired_over_seeds(zero, noisy, min_effect=0.1, scale=1.0, scale_name="M", alpha=0.05)

    assert not seeds_could_confirm(drop([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]))  # Δ = 0 in every seed: never
    assert not seeds_could_confirm(drop([1.0, 1.0, 1.0], [0.95, 1.0, 0.9]))  # mean 0.05 < 0.1: seeds won't move it
    assert seeds_could_confirm(drop([1.0, 1.0, 1.0], [0.5, 1.0, 1.0]))  # mean 0.167, lower bound < 0
    assert seeds_could_confirm(drop([1.0, 1.0, 1.0], [0.9, 1.0, 0.8]))  # mean 0.0999… = 0.1 up to rounding
    assert seeds_could_confirm(drop([1.0], [0.7]))  # one seed: no bound yet, the mean reaches
    assert not seeds_could_confirm(drop([1.0, 1.0, 1.0], [0.5, 0.52, 0.48]))  # already confirmed: nothing to add


def test_no_positive_sigma_asks_for_one() -> None:
    reason, head = no_cut_remedy({}, {}, 0.1)
    assert reason == "add σ > 0 to sigmas (the grid holds σ = 0 only)" and head == "(add σ > 0 to sigmas)"


def _advice(judgements: list[dict[str, Any]], checks: dict[str, Any] | None) -> Advice:
    margins = {"gen_margin": 0.25, "mem_margin": 0.05, "gen_floor": 0.0006, "gen_reference": 0.3,
               "gen_tolerance": 0.074, "chance": 1 / 64, "reduce_margin": 0.1}
    table = [{"sigma": j["sigma"], "pairing_accuracy": 1.0, "memorisation": 1.0, "generalisation": 0.3,
              "gen_mmd2.unbiased": 0.3, "fresh_copy_fraction": 0.0} for j in judgements]
    return Advice(None, False, False, "r", "rule", table, margins, "data", outcome="none", headline="h",
                  judgements=judgements, noise_checks=checks)


def test_each_per_sigma_line_says_what_the_exact_minimiser_check_found() -> None:
    adv = advise(DIGITS, {0.05: check(False, 0.0, REMEDY), 0.2: check(False, 0.0, REMEDY), 0.5: check(True, 0.31)})
    judged = [j.to_dict() for j in adv.judgements]
    checks = {"0.05": check(False, 0.0, REMEDY).to_dict(), "0.5": check(True, 0.31).to_dict()}  # none for 0.2
    lines = _advice(judged, checks).summary().splitlines()
    per = {line.split(":")[0].strip(): line for line in lines if line.startswith("  σ = ")}
    assert per["σ = 0"].endswith("reference → fails")  # σ = 0 is the reference: no check
    assert per["σ = 0.05"].endswith("→ fails; exact minimiser: keeps the pairs (loses 0 < 0.1 of M)")
    assert per["σ = 0.2"].endswith("→ fails; exact minimiser: not checked")
    assert per["σ = 0.5"].endswith("→ fails; exact minimiser: can act (loses 0.31 ≥ 0.1 of M)")
    assert all("not checked" in line for line in _advice(judged, None).summary().splitlines()
               if line.startswith("  σ = 0.")), "a result without checks says so at every σ > 0"


@pytest.mark.parametrize("folder", ["results", "results/full"])
def test_the_published_runs_per_sigma_lines_carry_their_checks(folder: str) -> None:
    """The published runs keep the checks in result.json (metrics.advice.noise_checks): rebuilt from them, each
    per-σ line of the summary names its check, as the stored check says."""
    data = json.loads((ROOT / folder / "results.json").read_text(encoding="utf-8"))
    result = next(e for e in data["experiments"] if e["name"] == "sigma_tradeoff")["result"]
    stored = result["metrics"]["advice"]["noise_checks"]
    lines = Advice.from_metrics(result["metrics"]).summary().splitlines()
    for key, found in stored.items():
        line = next(line for line in lines if line.startswith(f"  σ = {key}: "))
        assert ("exact minimiser: can act" if found["holds"] else "exact minimiser: keeps the pairs") in line
        assert f"loses {found['measured']['seed_mean']:.3g} " in line
