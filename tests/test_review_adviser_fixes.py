"""Review adviseR findings 1, 2, 5 and 6: duplicate items are warned about, σ = 0 (the gated reference) is never a
candidate, and the noise check forgives the same rounding as the drop rule."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from flowvar.advisor import advise_over_seeds
from flowvar.data import load_split
from flowvar.experiments import sigma_tradeoff as st
from flowvar.experiments._exact_minimiser import mechanism_precondition
from flowvar.results import Precondition

N = 64


def rows(accs: list[float], gs: list[float]) -> list[dict[str, float]]:
    return [{"pairing_accuracy": a, "generalisation": g} for a, g in zip(accs, gs, strict=True)]


def check(sigma: float, exact_m: list[float]) -> Precondition:
    return st.noise_can_act_precondition(exact_m, 0.1, sigma=sigma, spacing=1.0, sigma_sqrt_d=sigma)


def split(path: Path, n_train: int = 64) -> list[str]:
    """The warnings load_split gives for ``path`` (vectors; 200 rows)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_split("npy", str(path), n_train, 200, resolution=8, channels=None, seed=0, min_heldout=8)
    return [str(w.message) for w in caught]


# --- finding 1: duplicates ------------------------------------------------------------------------------------


def test_duplicated_items_get_a_warning_naming_the_counts_and_the_fix(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(10, 2)).astype(np.float32)
    np.save(tmp_path / "dups.npy", np.repeat(points, 20, axis=0))  # the reviewer's 10 points × 20 copies
    messages = [m for m in split(tmp_path / "dups.npy") if "distinct" in m]
    assert len(messages) == 1, messages
    text = messages[0]
    assert "its 64 training items hold only 10 distinct" in text
    assert "136 of its 136 held-out items equal a training item" in text
    assert "numpy.unique(x, axis=0)" in text and "assume distinct items" in text


def test_a_held_out_copy_alone_is_named(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(200, 3)).astype(np.float32)
    np.save(tmp_path / "one.npy", x)
    _, train, held = load_split("npy", str(tmp_path / "one.npy"), 100, 200, resolution=8, channels=None, seed=0,
                                min_heldout=8)
    row = {tuple(r): i for i, r in enumerate(x.tolist())}
    # the draw depends on the item count only: the held-out row's place now holds a copy of a training row
    x[row[tuple(held[0].tolist())]] = x[row[tuple(train[0].tolist())]]
    np.save(tmp_path / "one.npy", x)
    text = " ".join(split(tmp_path / "one.npy", n_train=100))
    assert "1 of its 100 held-out items equal a training item" in text and "distinct;" not in text, text


def test_distinct_items_and_digits_give_no_duplicate_warning(tmp_path: Path) -> None:
    np.save(tmp_path / "clean.npy", np.random.default_rng(2).normal(size=(200, 2)).astype(np.float32))
    assert not [m for m in split(tmp_path / "clean.npy") if "distinct" in m]
    # sklearn digits (1797 distinct rows): the published sigma_tradeoff digits runs stay silent
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_split("digits", None, 128, 512, resolution=8, channels=1, seed=0, min_heldout=8)
    assert not [w for w in caught if "distinct" in str(w.message)]


# --- findings 2 and 5: σ = 0 is the reference, never a candidate -------------------------------------------


def test_one_seed_never_names_sigma0_as_not_excluded() -> None:
    per_seed = {0.0: rows([1.0], [0.02]), 0.1: rows([0.02], [0.02])}
    adv = advise_over_seeds(per_seed, N, 0.25, 0.05, gen_floor=1e-3, memorise_accuracy=0.9,
                            noise_can_act={0.1: check(0.1, [0.02])})
    assert adv.outcome == "undecided" and adv.candidates == [0.1]
    assert "σ = 0.1 are not excluded" in adv.headline or "σ = 0.1 is not excluded" in adv.headline
    assert "0.1, 0" not in adv.headline
    assert "undecided σ: 0.1" in adv.reason and "undecided σ: 0.1, 0" not in adv.reason


def test_a_loose_mem_margin_never_recommends_sigma0() -> None:
    per_seed = {0.0: rows([0.91, 0.92, 0.91], [0.02, 0.021, 0.019]), 0.1: rows([0.9] * 3, [0.05, 0.06, 0.05])}
    adv = advise_over_seeds(per_seed, N, 0.25, 0.95, gen_floor=1e-3, memorise_accuracy=0.9,
                            noise_can_act={0.1: check(0.1, [0.5] * 3)})
    assert adv.sigma != 0.0 and adv.outcome != "recommended" and 0.0 not in adv.candidates
    assert adv.judgements[0].sigma == 0.0  # still shown, as the reference


# --- finding 6: the noise check forgives rounding as the drop rule does ---------------------------------------


def test_an_exact_m_of_0_9_loses_0_1_of_m() -> None:
    assert 1.0 - 0.9 < 0.1  # the rounding the check used to fail on
    assert check(0.1, [0.9] * 3).holds and check(0.1, [0.9]).holds
    assert mechanism_precondition([1.0 - 0.9] * 3, 0.1, measure="M", sigma=0.1).holds
    assert not check(0.1, [0.9 + 1e-9] * 3).holds  # a real shortfall still fails
    assert not mechanism_precondition([float("nan")], 0.1, measure="M", sigma=0.1).holds
