"""Texts that explain whether the noise can act use σ / the median line spacing against the measured onset
(_exact_minimiser.SIGMA_OVER_SPACING_ONSET), not the tube radius σ√d against the spacing."""

from __future__ import annotations

from flowvar.experiments import sigma_tradeoff as st
from flowvar.experiments.memorisation_phase import region_precondition


def _seed(memorisation: float, spacing: float) -> dict[str, float]:
    return {"memorisation": memorisation, "line_spacing_median": spacing, "dim": 8}


def test_scale_note_reports_sigma_over_spacing_and_what_the_exact_minimiser_did() -> None:
    # d = 8, spacing ≈ 1.05 (the quick GMM run): σ = 0.05 keeps every pair, σ = 1 loses them (M falls by 0.5)
    exact = {0.05: [_seed(1.0, 1.0), _seed(1.0, 1.1)], 1.0: [_seed(0.5, 1.0), _seed(0.5, 1.1)]}
    note = st.scale_note(st.noise_checks(exact, 0.1))
    assert "σ / the median line spacing (1.05, seed mean)" in note
    assert "σ=0.05 → 0.0476 (keeps its pairs)" in note and "σ=1 → 0.952 (loses pairs)" in note
    assert "between σ / spacing 0.37 and 0.49" in note
    # σ√D is named only as what does not locate the onset, never as the scale the tubes overlap at
    assert "does not locate that onset" in note and "approaches" not in note


def test_scale_note_without_a_positive_sigma() -> None:
    assert "no σ > 0" in st.scale_note({})


def test_memorisation_phase_out_of_reach_remedy_names_the_spacing_sigma_needs() -> None:
    # no memorising cell where the exact CFM(0.05) minimiser loses pairs, and none where it does but σ = 0 under-fits
    verdict = {"testable_cells": 0, "memorising_cells": 1, "noise_cannot_act_cells": ["d=4,N=16,width=256"],
               "not_memorised_cells": [], "noise_acts_not_memorised_cells": [], "noise_not_measured_cells": []}
    pre = region_precondition(verdict, 0.05, 0.1)
    assert not pre.holds and "at that σ against the line spacing" in pre.statement
    # 0.05 / 0.49 = 0.102: the spacing at which the onset's upper edge is reached
    assert "median line spacing is at most about σ / 0.49 = 0.102" in pre.remedy
    assert "σ / spacing 0.37–0.49" in pre.remedy and "σ√d" not in pre.remedy + pre.statement
