"""README's "σ = 0.05 in short" reads the published verdicts; these tests recompute each statement from both runs'
results.json, so the paragraph goes stale loudly when a rerun moves a verdict (reportR 7, session 30)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"quick": ROOT / "results" / "results.json", "full": ROOT / "results" / "full" / "results.json"}
TOY = ("fig6.", "solver_resolution.")  # the 180° + μ coupling
MEMORISATION = ("table1.", "prop2.", "memorisation_phase.", "sigma_tradeoff.", "lemma2.", "table2.")


def _verdicts(run: str) -> dict[str, str]:
    collection = json.loads(RUNS[run].read_text(encoding="utf-8"))
    return {c["id"]: c["verdict"] for e in collection["experiments"] if e.get("result")
            for c in e["result"]["claims"]}


def _about_sigma005(claim_id: str) -> bool:
    """A claim of σ = 0.05 against σ = 0 (table1's MMD claims compare exactly those two networks)."""
    return "sigma0.05" in claim_id or claim_id.startswith("table1.")


@pytest.mark.parametrize("run", sorted(RUNS))
def test_no_sigma005_memorisation_claim_is_confirmed_and_the_toy_ones_are(run: str) -> None:
    verdicts = _verdicts(run)
    memorisation = {i: v for i, v in verdicts.items() if _about_sigma005(i) and i.startswith(MEMORISATION)}
    assert memorisation and all(v in ("untestable", "refuted") for v in memorisation.values()), memorisation
    refuted = {i for i, v in memorisation.items() if v == "refuted"}
    assert all(i.startswith("table2.") for i in refuted), refuted  # "in table2 … it is refuted"
    toy = {i: v for i, v in verdicts.items() if _about_sigma005(i) and i.startswith(TOY)}
    assert toy and all(v == "confirmed" for v in toy.values()), toy
    confirmed = {i for i, v in verdicts.items() if _about_sigma005(i) and v == "confirmed"}
    assert confirmed == set(toy)  # the only σ = 0.05 claims confirmed


def test_larger_noise_and_the_sigma_study_read_as_the_readme_says() -> None:
    quick, full = _verdicts("quick"), _verdicts("full")
    assert quick["memorisation_phase.sigma0.5_reduces_memorisation"] == "confirmed"
    assert quick["lemma2.sigma0.5_moves_toward_ot"] == full["lemma2.sigma0.5_moves_toward_ot"] == "confirmed"
    assert quick["sigma_tradeoff.sigma_satisfying_both_margins_exists"] == "refuted"
    assert full["sigma_tradeoff.sigma_satisfying_both_margins_exists"] == "refuted"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## σ = 0.05 in short" in readme and "no σ meeting both of its\nmargins at either scale" in readme
