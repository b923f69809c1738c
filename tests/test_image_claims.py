"""What the image experiments' claims need before they judge a network (table2, table3): the network fitted its pairs
(its final loss, less the loss floor of the exact CFM(σ) minimiser, a small fraction of the zero field's), and —
table2's margin claim — fitted comparably at both N; the exact CFM(σ) minimiser is its own claim of kind "finding".
Checked on the published results, judged again from their stored numbers (``flowvar assemble``), and on the same
results with one stored number changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from flowvar.errors import ConfigError
from flowvar.experiments import table2
from flowvar.experiments._exact_minimiser import exact_minimiser_loss
from flowvar.experiments._imaging import (
    EVALUATED,
    FIT_LEVEL,
    FLOOR_SE_MARGIN,
    evaluated_loss,
    fitted_in_runs,
    fitted_precondition,
    loss_floor,
)
from flowvar.results import Result, judge
from flowvar.sweep.assemble import rejudge_result

REPO = Path(__file__).resolve().parents[1]


def test_fitted_precondition() -> None:
    # the published quick N = 64 (0.4 %) and digits at full N (6.6–6.8 %) fitted; the referee's 20-step run (37 %)
    # did not, nor does a diverged seed
    assert FIT_LEVEL == 0.1
    ok = fitted_precondition([0.0035, 0.0048], sigma=0.0, pairs="shuffled OT pairs (N=64)")
    assert ok.holds and ok.measured["evaluated_loss_relative_to_zero_field_per_seed"] == [0.0035, 0.0048]
    assert "0.1 × (the zero field's loss on the same pairs − that floor)" in ok.statement and "N=64" in ok.statement
    under = fitted_precondition([0.374, 0.02], sigma=0.0, pairs="p")
    assert not under.holds and "train longer" in under.remedy
    assert judge("x", "s", {}, rule="r", kind="reproduction", verdict="refuted", precondition=under).verdict == \
        "untestable"
    assert not fitted_precondition([float("nan"), 0.01], sigma=0.05, pairs="p").holds
    assert not fitted_precondition([], sigma=0.05, pairs="p").holds
    assert fitted_precondition([0.1], sigma=0.05, pairs="p").holds  # the level itself passes


def test_the_fit_precondition_judges_the_excess_over_the_loss_floor() -> None:
    # σ > 0 where the noise tubes overlap: the exact minimiser itself scores 0.40 × the zero field's loss. A network
    # at 0.45 is 0.05 above what any training can reach: fitted — the old rule (0.45 > 0.1) called it unfitted
    assert not fitted_precondition([0.45, 0.43], sigma=0.05, pairs="p").holds
    pre = fitted_precondition([0.45, 0.43], sigma=0.05, pairs="p", floor_ratios=[0.40, 0.41],
                              floor_se_ratios=[0.002, 0.001])
    assert pre.holds and "loss floor" in pre.statement
    assert pre.measured["floor_used_per_seed"] == pytest.approx([0.40 - FLOOR_SE_MARGIN * 0.002, 0.41 - 0.002])
    assert pre.measured["excess_over_floor_per_seed"] == pytest.approx([0.054, 0.022])
    assert pre.measured["exact_loss_floor_relative_to_zero_field_per_seed"] == [0.40, 0.41]
    # the floor's Monte-Carlo error is taken off it first: a floor known only to ± 0.05 cannot excuse 0.15
    assert not fitted_precondition([0.45], sigma=0.05, pairs="p", floor_ratios=[0.40], floor_se_ratios=[0.05]).holds
    # 0.2 above the floor is not fitted, in any seed; a NaN floor or loss fails; the floor never goes below 0
    assert not fitted_precondition([0.45, 0.61], sigma=0.05, pairs="p", floor_ratios=[0.40, 0.41]).holds
    assert not fitted_precondition([0.45], sigma=0.05, pairs="p", floor_ratios=[float("nan")]).holds
    low = fitted_precondition([0.09], sigma=0.05, pairs="p", floor_ratios=[0.001], floor_se_ratios=[0.01])
    assert low.holds and low.measured["floor_used_per_seed"] == [0.0]
    assert not fitted_precondition([0.11], sigma=0.05, pairs="p", floor_ratios=[0.001], floor_se_ratios=[0.01]).holds
    # σ = 0: the floor is 0 exactly; a stored σ > 0 row set without floors is judged with 0 and says so
    assert "0 exactly" in fitted_precondition([0.05], sigma=0.0, pairs="p").measured["floor_note"]
    old = fitted_precondition([0.05, 0.2], sigma=0.05, pairs="p")
    assert "not recorded" in old.measured["floor_note"] and old.measured["floor_used_per_seed"] == [0.0, 0.0]
    assert not old.holds


def test_the_fit_rule_asks_for_90_percent_of_the_removable_loss_whatever_the_floor() -> None:
    """r − f ≤ 0.1 × (1 − f): with r − f ≤ 0.1 alone a floor of 0.95 let the zero field itself (r = 1, no transport)
    pass, and at f = 0.4 a network removing only 83 % of what it can passed (code review M1)."""
    assert not fitted_precondition([1.0], sigma=3.0, pairs="p", floor_ratios=[0.95], floor_se_ratios=[0.0]).holds
    assert not fitted_precondition([0.5], sigma=0.3, pairs="p", floor_ratios=[0.4], floor_se_ratios=[0.0]).holds
    assert fitted_precondition([0.45], sigma=0.3, pairs="p", floor_ratios=[0.4], floor_se_ratios=[0.0]).holds
    near = fitted_precondition([0.955], sigma=3.0, pairs="p", floor_ratios=[0.95], floor_se_ratios=[0.0])
    assert near.holds and near.measured["allowed_excess_per_seed"] == pytest.approx([0.005])
    # σ = 0's floor is 0 exactly, nothing drawn — also when the σ > 0 floors are recorded beside it
    zero = fitted_precondition([0.05], sigma=0.0, pairs="p", floor_ratios=[0.0], floor_se_ratios=[0.0])
    assert "nothing drawn" in zero.measured["floor_note"] and "path draws" not in zero.measured["floor_note"]
    # the statement's last clause is the experiment's own control
    assert fitted_precondition([0.5], sigma=0.0, pairs="p", control="C").statement.endswith("; otherwise C")


def test_fitted_in_runs_reads_the_floor_only_where_every_seed_has_it() -> None:
    rows = [{"sigma=0.05": {"loss_last_relative_to_zero_field": 0.45, "exact_loss_floor_relative_to_zero_field": 0.4,
                            "exact_loss_floor_se_relative_to_zero_field": 0.002}},
            {"sigma=0.05": {"loss_last_relative_to_zero_field": 0.43, "exact_loss_floor_relative_to_zero_field": 0.41,
                            "exact_loss_floor_se_relative_to_zero_field": 0.001}}]
    assert fitted_in_runs(rows, sigma=0.05, pairs="p", ema_decay=None).holds
    del rows[1]["sigma=0.05"]["exact_loss_floor_relative_to_zero_field"]  # one seed without it: floor 0 for all
    partial = fitted_in_runs(rows, sigma=0.05, pairs="p", ema_decay=None)
    assert not partial.holds and "not recorded" in partial.measured["floor_note"]


def test_loss_floor_is_the_exact_minimisers_loss_relative_to_the_zero_field() -> None:
    # two pairs from one source to ±e1 (images 1 × 2 × 2): the zero field's loss is 1. A wide σ hides which pair a
    # point is on, the posterior mean of x1 − x0 is ~0 and the floor ~ the zero field's loss; a narrow σ tells them
    # apart except near t = 0, and the floor is ~0; σ = 0 is 0 exactly, nothing drawn
    x0 = torch.zeros(2, 1, 2, 2)
    x1 = torch.zeros(2, 1, 2, 2)
    x1[0, 0, 0, 0], x1[1, 0, 0, 0] = 1.0, -1.0
    gen = torch.Generator().manual_seed(0)
    wide = loss_floor(x0, x1, 100.0, 1.0, gen)
    assert wide["exact_loss_floor_relative_to_zero_field"] == pytest.approx(1.0, abs=0.02)
    narrow = loss_floor(x0, x1, 0.01, 1.0, torch.Generator().manual_seed(0))
    assert 0 < narrow["exact_loss_floor_relative_to_zero_field"] < 0.05
    assert narrow["exact_loss_floor_se_relative_to_zero_field"] > 0
    assert loss_floor(x0, x1, 0.0, 1.0, gen) == {"exact_loss_floor_relative_to_zero_field": 0.0,
                                                 "exact_loss_floor_se_relative_to_zero_field": 0.0}
    # relative to the zero field given, from the shared estimator (flattened float64 pairs, its own stream)
    mean, se = exact_minimiser_loss(x0, x1, 0.3, 4096, torch.Generator().manual_seed(5), rows=512)
    assert loss_floor(x0, x1, 0.3, 2.0, torch.Generator().manual_seed(5)) == {
        "exact_loss_floor_relative_to_zero_field": mean / 2.0, "exact_loss_floor_se_relative_to_zero_field": se / 2.0}


def test_comparable_fit_precondition() -> None:
    # the quick run: σ = 0 at 0.4 % of the zero field's loss at N = 64, 4.3 % at N = 256 — a tenfold looser fit
    quick = table2.comparable_fit_precondition([0.0035, 0.0048], [0.0406, 0.0446], labels=("N=64", "N=256"))
    assert not quick.holds and quick.measured["seed_mean_ratio_larger_to_smaller"] == pytest.approx(0.0426 / 0.00415,
                                                                                                     rel=1e-3)
    assert "train longer" in quick.remedy
    assert table2.comparable_fit_precondition([0.004, 0.005], [0.006, 0.007], labels=("a", "b")).holds  # 1.4×
    assert not table2.comparable_fit_precondition([0.05, 0.05], [0.15, 0.05], labels=("a", "b")).holds  # 15 % > 10 %
    assert not table2.comparable_fit_precondition([0.0, 0.0], [0.0, 0.0], labels=("a", "b")).holds  # no ratio


def test_mean_pairwise_distance_leaves_out_each_image_to_itself() -> None:
    # three images at mutual distances 3, 4, 5: the mean over the three pairs is 4 (with the zero diagonal, 8/3)
    x = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]).reshape(3, 1, 1, 2)
    scales = table2.image_scales(x, 0.05)
    assert scales["mean_pairwise_distance_between_images"] == pytest.approx(4.0)


def _sigma_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every per-seed, per-σ row of a stored table2 or table3 result (the rows the fit rule reads)."""
    metrics = data["metrics"]
    runs = [r for cell in metrics["table2"].values() for r in cell["runs"]] if "table2" in metrics else metrics["runs"]
    return [row for r in runs for k, row in r.items() if k.startswith("sigma=")]


def _as_if_ema_measured(data: dict[str, Any]) -> None:
    """The stored result with the evaluated (EMA) weights' loss as recorded, or — in a result recorded before it was
    measured — equal to the raw weights' final training loss (what such a result needs to be judged on the networks)."""
    for row in _sigma_rows(data):
        if EVALUATED not in row:
            row[EVALUATED] = row["loss_last_relative_to_zero_field"]
            row["evaluated_weights"] = "ema"


def _as_if_stored_before_the_ema_loss(data: dict[str, Any]) -> None:
    """The stored result as a run recorded it before the evaluated weights' loss was measured (the raw weights'
    training loss only)."""
    for row in _sigma_rows(data):
        for key in (EVALUATED, "evaluated_loss_se_relative_to_zero_field", "evaluated_weights"):
            row.pop(key, None)


def _stored(tmp_path: Path, where: str, edit: Any = None, *, measured: bool = True) -> Path:
    """A copy of the published result ``results/<where>`` (``edit``: a function changing its parsed JSON), with the
    evaluated weights' loss as recorded or filled in as the raw weights' (:func:`_as_if_ema_measured`), or, where
    ``measured`` is False, removed (:func:`_as_if_stored_before_the_ema_loss`)."""
    folder = tmp_path / "stored" / Path(where).name
    shutil.copytree(REPO / "results" / where, folder)
    data = json.loads((folder / "result.json").read_text())
    (_as_if_ema_measured if measured else _as_if_stored_before_the_ema_loss)(data)
    if edit is not None:
        edit(data)
    (folder / "result.json").write_text(json.dumps(data))
    return folder


def _claims(result: Result) -> dict[str, Any]:
    return {c.id: c for c in result.claims}


def test_the_published_quick_table2_judged_by_this_code(tmp_path: Path) -> None:
    """results/table2 (digits 8 px, N = 64 and 256, 500 steps) from its stored numbers: both networks fitted (loss
    ≤ 6 % of the zero field's), so "σ = 0.05 generalises" is judged on them — refuted (they land on the shuffled
    partner) — and the exact minimiser's finding is refuted too (it returns every shuffled partner); the margin
    claim is untestable (σ = 0 fitted ten times more closely at N = 64 than at N = 256). The run records the zero
    field's own difference, which alone would meet the generalisation effect (why the fit preconditions), and the
    exact minimiser's loss floor (0 here: no tubes overlap). Judged again, nothing changes."""
    stored = _stored(tmp_path, "table2")
    before = Result.load(stored / "result.json")
    result, folder = rejudge_result(stored, tmp_path / "new")
    claims = _claims(result)
    assert [c.id for c in result.claims] == [
        "table2.N=64.sigma0_memorises", "table2.N=64.sigma0.05_generalises",
        "table2.N=64.exact_minimiser_breaks_pairing", "table2.N=256.sigma0_memorises",
        "table2.N=256.sigma0.05_generalises", "table2.N=256.exact_minimiser_breaks_pairing",
        "table2.margin_shrinks_with_n"]
    assert {c.id: c.verdict for c in result.claims} == {c.id: c.verdict for c in before.claims}
    for n in (64, 256):  # (the published file lacks the EMA's loss: here filled in as the raw weights')
        memo, gen = claims[f"table2.N={n}.sigma0_memorises"], claims[f"table2.N={n}.sigma0.05_generalises"]
        assert memo.verdict == "confirmed" and memo.precondition["holds"]
        assert gen.verdict == "refuted" and gen.precondition["holds"] and gen.kind == "reproduction"
        assert len(gen.precondition["measured"]) == 3  # σ = 0 memorised, σ = 0 fitted, σ = 0.05 fitted
        control = gen.evidence["zero_field_control"]["l2_to_shuffled_minus_l2_to_ot_per_seed"]
        assert min(control) >= gen.evidence["comparison"]["min_effect"]  # no transport would "generalise"
        fitted1 = gen.precondition["measured"]["[3]"]
        assert "not recorded" not in fitted1["floor_note"] and fitted1["floor_used_per_seed"] == [0.0, 0.0]
        exact = claims[f"table2.N={n}.exact_minimiser_breaks_pairing"]
        assert exact.kind == "finding" and exact.verdict == "refuted" and exact.precondition is None
        assert exact.evidence["comparison"]["mean"] == pytest.approx(-6.1, abs=0.15)
    margin = claims["table2.margin_shrinks_with_n"]
    assert margin.verdict == "untestable" and margin.verdict_if_testable == "confirmed"
    assert not margin.precondition["measured"]["[2]"]["holds"]
    # the stored numbers are kept: what the judging reads, and the summaries over images
    assert result.metrics["per_seed_means"] == before.metrics["per_seed_means"]
    assert result.metrics["table2"] == before.metrics["table2"]
    # the bar figure is redrawn; the grids need the images and are the run's own files, kept
    assert set(result.figures) == set(before.figures) and all((folder / f).is_file() for f in result.figures)


def test_a_stored_table2_without_floor_or_control_is_judged_with_floor_zero(tmp_path: Path) -> None:
    """results/digits_full_n/table2 (N = 1797, 3 seeds) as first computed, before the loss floor and the zero-field
    control were recorded (its session-27 rerun records both; removed here): judged with floor 0 (the conservative
    reading, said in the precondition) and no control."""
    def unrecorded(data: dict[str, Any]) -> None:
        for cell in data["metrics"]["table2"].values():
            for run in cell["runs"]:
                run.pop("zero_field", None)
        for row in _sigma_rows(data):
            row.pop("exact_loss_floor_relative_to_zero_field", None)
            row.pop("exact_loss_floor_se_relative_to_zero_field", None)

    result, _ = rejudge_result(_stored(tmp_path, "digits_full_n/table2", unrecorded), tmp_path / "new")
    gen = _claims(result)["table2.N=1797.sigma0.05_generalises"]
    assert gen.verdict == "refuted" and gen.evidence["zero_field_control"] is None
    fitted1 = gen.precondition["measured"]["[3]"]
    assert "not recorded" in fitted1["floor_note"] and fitted1["floor_used_per_seed"] == [0.0, 0.0, 0.0]


def test_an_undertrained_table2_network_refutes_nothing(tmp_path: Path) -> None:
    """The referee's 20-step run: σ = 0's final loss 37 % of the zero field's. With that loss stored beside the
    published distances, "σ = 0 memorises" is untestable (its rule alone: confirmed), and so is "σ = 0.05
    generalises" when σ = 0.05 did not fit (here with the zero field's own distances, which its rule alone would
    confirm: no transport at all lands 0.88–0.89 nearer the OT partner against a minimum effect of 0.61)."""
    def underfit(data: dict[str, Any]) -> None:
        cell = data["metrics"]["table2"]["N=64"]
        cell["runs"][0]["sigma=0.0"][EVALUATED] = 0.374
        for run in cell["runs"]:
            run["sigma=0.05"][EVALUATED] = 1.0  # the zero field's own loss
        means = data["metrics"]["per_seed_means"]["N=64"]
        means["l2_to_shuffled_sigma0.05"] = [means["l2_to_ot_sigma0.05"][i] + d for i, d in enumerate((0.889, 0.882))]

    result, _ = rejudge_result(_stored(tmp_path, "table2", underfit), tmp_path / "new")
    claims = _claims(result)
    memo = claims["table2.N=64.sigma0_memorises"]
    assert memo.verdict == "untestable" and memo.verdict_if_testable == "confirmed"
    assert memo.precondition["measured"]["evaluated_loss_relative_to_zero_field_per_seed"][0] == 0.374
    gen = claims["table2.N=64.sigma0.05_generalises"]
    assert gen.verdict == "untestable" and gen.verdict_if_testable == "confirmed"
    assert [p["holds"] for p in gen.precondition["measured"].values()] == [True, False, False]
    assert claims["table2.N=256.sigma0_memorises"].verdict == "confirmed"  # N = 256 untouched


def test_a_stored_table2_with_a_positive_floor_is_judged_on_the_excess(tmp_path: Path) -> None:
    """The published quick N = 64 with σ = 0.05's final loss raised to 0.45 × the zero field's: without a floor
    "σ = 0.05 generalises" is untestable (not fitted); with a recorded floor of 0.40 in every seed the network is
    0.05 above what training can reach, fitted, and the claim is judged on it (refuted, as the published one)."""
    def raised(floor: float | None) -> Any:
        def edit(data: dict[str, Any]) -> None:
            for run in data["metrics"]["table2"]["N=64"]["runs"]:
                run["sigma=0.05"][EVALUATED] = 0.45
                if floor is not None:
                    run["sigma=0.05"]["exact_loss_floor_relative_to_zero_field"] = floor
                    run["sigma=0.05"]["exact_loss_floor_se_relative_to_zero_field"] = 0.001
        return edit

    without, _ = rejudge_result(_stored(tmp_path / "a", "table2", raised(None)), tmp_path / "new_a")
    gen = _claims(without)["table2.N=64.sigma0.05_generalises"]
    assert gen.verdict == "untestable" and gen.verdict_if_testable == "refuted"
    with_floor, _ = rejudge_result(_stored(tmp_path / "b", "table2", raised(0.40)), tmp_path / "new_b")
    gen = _claims(with_floor)["table2.N=64.sigma0.05_generalises"]
    assert gen.verdict == "refuted" and gen.precondition["holds"]
    assert gen.precondition["measured"]["[3]"]["excess_over_floor_per_seed"] == pytest.approx([0.052, 0.052])


def test_table2_assembles_from_one_whole_run_only(tmp_path: Path) -> None:
    from flowvar.experiments.base import build_config, get_experiment

    stored = json.loads((REPO / "results" / "table2" / "result.json").read_text())
    config = build_config(get_experiment("table2"), quick=True, overrides=stored["config"])
    with pytest.raises(ConfigError, match="one whole run"):
        table2.assemble(config, [stored["metrics"], stored["metrics"]], None)  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["table3", "digits_full_n/table3"])
def test_the_published_table3_judged_by_this_code(tmp_path: Path, where: str) -> None:
    """results/table3 and digits_full_n/table3 from their stored numbers: both retrained networks fitted (σ = 0 at
    0.7–0.9 %, σ = 0.05 at 2.4–3.5 % of the zero field's loss) and σ = 0 copied, so both claims are judged on the
    networks — refuted (both land next to the generated partner) — and the exact CFM(0.05) minimiser's finding is
    refuted (it copies every pair)."""
    result, _ = rejudge_result(_stored(tmp_path, where), tmp_path / "new")
    claims = _claims(result)
    for cid in ("table3.sigma0_copies_generated_pairs", "table3.sigma0_farther_from_ot"):
        assert claims[cid].verdict == "refuted" and claims[cid].precondition["holds"]
        # the base flow made images (1.14–1.20 × the training spacing), σ = 0 copied, both networks fitted
        assert len(claims[cid].precondition["measured"]) == 4
        base = claims[cid].precondition["measured"]["[1]"]
        assert base["holds"] and 1.1 < min(base["ratio_per_seed"]) <= max(base["ratio_per_seed"]) < 1.2
        # both runs record the floor (digits_full_n since its session-27 rerun; judged with floor 0 and said before)
        assert "not recorded" not in claims[cid].precondition["measured"]["[4]"]["floor_note"]
    exact = claims["table3.exact_minimiser_breaks_copying"]
    assert exact.kind == "finding" and exact.verdict == "refuted"
    assert max(exact.evidence["exact_minimiser_l2_to_generated_sigma0.05_per_seed"]) < 1e-10


def test_an_unfitted_table3_network_is_untestable(tmp_path: Path) -> None:
    def unfit(data: dict[str, Any]) -> None:
        data["metrics"]["runs"][1]["sigma=0.05"][EVALUATED] = 0.5

    result, _ = rejudge_result(_stored(tmp_path, "table3", unfit), tmp_path / "new")
    claims = _claims(result)
    for cid in ("table3.sigma0_copies_generated_pairs", "table3.sigma0_farther_from_ot"):
        assert claims[cid].verdict == "untestable" and claims[cid].verdict_if_testable == "refuted"
        assert "train longer (steps) until CFM(σ=0.05)" in claims[cid].precondition["remedy"]
    assert claims["table3.exact_minimiser_breaks_copying"].verdict == "refuted"  # no network in it


@pytest.mark.parametrize("where", ["table2", "table3", "digits_full_n/table2", "digits_full_n/table3"])
def test_a_stored_result_without_the_evaluated_weights_loss_is_untestable(tmp_path: Path, where: str) -> None:
    """Results stored before session 27 (EMA 0.99) recorded only the raw weights' training loss, but every distance
    is computed from the EMA weights, which without bias correction can still be mostly the initialisation (the
    referee's 30-step run: raw weights fitted, EMA outputs 7.5 from both partners). Re-judged, the fit of the
    evaluated weights is unknown: every network claim is untestable, with "rerun" as the remedy; the rule alone would
    give the published verdicts, and the exact minimiser's findings (no network) are unchanged."""
    stored = _stored(tmp_path, where, measured=False)
    before = {c.id: c.verdict_if_testable or c.verdict for c in Result.load(stored / "result.json").claims}
    result, _ = rejudge_result(stored, tmp_path / "new")
    for claim in result.claims:
        if "exact_minimiser" in claim.id:
            assert claim.verdict == before[claim.id]
            continue
        assert claim.verdict == "untestable" and claim.verdict_if_testable == before[claim.id], claim.id
        text = json.dumps(claim.precondition, ensure_ascii=False)
        if claim.id.endswith("margin_shrinks_with_n"):  # its fit comparison reads the unknown losses as NaN
            assert text.lower().count("nan") >= 4
        else:
            assert "this result predates the evaluated (EMA, decay 0.99) weights' loss" in text


def test_the_fit_rule_judges_the_evaluated_weights_not_the_raw_ones() -> None:
    """An EMA that is still mostly its initialisation (evaluated loss 0.62 × the zero field's) beside raw weights that
    fitted (0.05): not fitted. Where the EMA is off the raw weights are the evaluated ones and a stored row without
    the evaluated loss is judged on their training loss."""
    rows = [{"sigma=0.0": {"loss_last_relative_to_zero_field": 0.05, EVALUATED: 0.62, "evaluated_weights": "ema"}},
            {"sigma=0.0": {"loss_last_relative_to_zero_field": 0.04, EVALUATED: 0.03, "evaluated_weights": "ema"}}]
    pre = fitted_in_runs(rows, sigma=0.0, pairs="p", ema_decay=0.99)
    assert not pre.holds and pre.measured["evaluated_loss_relative_to_zero_field_per_seed"] == [0.62, 0.03]
    assert pre.measured["raw_training_loss_last_relative_to_zero_field_per_seed"] == [0.05, 0.04]
    assert "train longer" in pre.remedy and "ema" in pre.measured["loss_note"]
    rows[0]["sigma=0.0"][EVALUATED] = 0.02
    assert fitted_in_runs(rows, sigma=0.0, pairs="p", ema_decay=0.99).holds
    raw = [{"sigma=0.0": {"loss_last_relative_to_zero_field": v}} for v in (0.05, 0.04)]
    off = fitted_in_runs(raw, sigma=0.0, pairs="p", ema_decay=None)
    assert off.holds and "EMA off" in off.measured["loss_note"]
    unknown = fitted_in_runs(raw, sigma=0.0, pairs="p", ema_decay=0.999)
    assert not unknown.holds and "rerun" in unknown.remedy


def test_evaluated_loss_is_the_cfm_loss_of_the_given_weights() -> None:
    """One fixed pair (1 × 2 × 2 images): the zero field scores exactly its own loss (ratio 1), the constant field
    x1 − x0 (the pair's exact minimiser, any σ) scores 0, half of it a quarter of the zero field's loss."""
    x0 = torch.zeros(1, 1, 2, 2)
    x1 = torch.ones(1, 1, 2, 2)

    class Constant(torch.nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return torch.full_like(x, self.value)

    zero_field = float((x1 - x0).pow(2).sum())  # 4
    got = evaluated_loss(Constant(0.0), (x0, x1), 0.0, zero_field, torch.Generator().manual_seed(0), ema=True)
    assert got[EVALUATED] == pytest.approx(1.0) and got["evaluated_weights"] == "ema"
    exact = evaluated_loss(Constant(1.0), (x0, x1), 0.3, zero_field, torch.Generator().manual_seed(0), ema=False)
    assert exact[EVALUATED] == 0.0 and exact["evaluated_weights"] == "raw"
    half = evaluated_loss(Constant(0.5), (x0, x1), 0.0, zero_field, torch.Generator().manual_seed(0), ema=True)
    assert half[EVALUATED] == pytest.approx(0.25)


def test_table3_base_flow_must_have_made_images() -> None:
    """The referee's tiny run: the base flow's "generated" images lie 7.1 (median) from the nearest training image
    against a spacing of 2.49 (2.85 ×: noise → noise pairs) — not met; the published quick run's 2.98 (1.20 ×) is."""
    from flowvar.experiments import table3

    assert table3.BASE_SPACING_FACTOR == 2.0
    noise = table3.base_made_images_precondition([7.1, 2.98], [2.49, 2.49])
    assert not noise.holds and noise.measured["ratio_per_seed"] == pytest.approx([2.851, 1.197], abs=1e-3)
    assert "base_steps" in noise.remedy
    assert table3.base_made_images_precondition([2.98, 2.95], [2.49, 2.49]).holds
    assert table3.base_made_images_precondition([4.98], [2.49]).holds  # the level itself passes
    assert not table3.base_made_images_precondition([float("nan")], [2.49]).holds
    # N = 16 (the tiny run's own spacing ~4.0): 7.1 is under 2 × 4.0 but past the midpoint to √D = 8 (no movement)
    tiny = table3.base_made_images_precondition([7.1], [4.0], 8.0)
    assert not tiny.holds and tiny.measured["limit_per_seed"] == [6.0]
    assert table3.base_made_images_precondition([2.98], [2.49], 8.0).measured["limit_per_seed"] == [4.98]
    assert not table3.base_made_images_precondition([], []).holds


def test_table3_copying_is_judged_beyond_the_zero_field() -> None:
    """t3tiny: σ = 0's relative margin 0.78 passes the old rule, but the zero field (no movement) already has 6.1 /
    7.8 = 0.78: not copying. The published quick run: 0.95 against the zero field's 0.29 — copied. Without a recorded
    zero field the network's margin alone is judged, and said."""
    from flowvar.experiments import table3

    ref = [7.8, 7.8]
    tiny_zero = [{"l2_to_ot": 9.76, "l2_to_generated": 3.65}] * 2
    stuck = table3.copied_precondition([9.76, 9.76], [3.65, 3.65], ref, 0.1, zero_field=tiny_zero)
    assert not stuck.holds and stuck.measured["relative_margin_beyond_zero_field_per_seed"] == pytest.approx([0, 0])
    assert table3.copied_precondition([9.76, 9.76], [3.65, 3.65], ref, 0.1).holds  # the old rule: met
    assert "not recorded" in table3.copied_precondition([9.76], [3.65], [7.8], 0.1).measured["zero_field_note"]
    quick_zero = [{"l2_to_ot": 9.396, "l2_to_generated": 8.299}, {"l2_to_ot": 9.384, "l2_to_generated": 8.285}]
    quick = table3.copied_precondition([3.743, 3.653], [0.204, 0.204], [3.730, 3.627], 0.1, zero_field=quick_zero)
    assert quick.holds
    assert quick.measured["relative_margin_zero_field_per_seed"] == pytest.approx([0.294, 0.303], abs=1e-3)
    # a margin 0.05 beyond the zero field's is too little, though 0.6 on its own
    moved = [{"l2_to_ot": 9.0, "l2_to_generated": 3.5}]
    near = table3.copied_precondition([10.0], [4.0], [10.0], 0.1, zero_field=moved)
    assert not near.holds and near.measured["relative_margin_beyond_zero_field_per_seed"] == pytest.approx([0.05])


def test_a_table3_whose_base_flow_made_noise_is_untestable(tmp_path: Path) -> None:
    """The published quick table3 with seed 1's generated images at 7.1 from the training set (the referee's tiny
    run's base): both network claims untestable, the base precondition naming base_steps."""
    def noise(data: dict[str, Any]) -> None:
        data["metrics"]["runs"][1]["base_model"]["generated_median_nn_distance_to_training"] = 7.1

    result, _ = rejudge_result(_stored(tmp_path, "table3", noise), tmp_path / "new")
    claims = _claims(result)
    for cid in ("table3.sigma0_copies_generated_pairs", "table3.sigma0_farther_from_ot"):
        assert claims[cid].verdict == "untestable" and claims[cid].verdict_if_testable == "refuted"
        assert not claims[cid].precondition["measured"]["[1]"]["holds"]
        assert claims[cid].precondition["measured"]["[2]"]["holds"]
