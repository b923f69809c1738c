"""Experiments prop2 and table1: tiny end-to-end runs (the plumbing) and unit tests of their helpers."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from flowvar.couplings import exact_ot_permutation
from flowvar.distributions import GaussianMixture
from flowvar.errors import ConfigError, ShapeError
from flowvar.experiments.base import build_config, get_experiment, run_experiment
from flowvar.experiments.prop2 import (
    TrainingMonitor,
    ZeroPerturbedField,
    grid_hits,
    line_encounters,
    make_pairs,
    two_proportion_se,
)
from flowvar.experiments.table1 import paired_direction, unbiased_floor
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss
from flowvar.metrics import mmd2
from flowvar.models import MemorizingField, MLPField
from flowvar.results import Result, to_jsonable
from flowvar.sampling import time_grid
from flowvar.variance import gradient_variance

TINY = {
    "prop2": {"cf_pairs": "16", "cf_families": "random,rot180", "cf_sigmas": "0.05,0.2", "cf_loss_samples": "200",
              "cf_variance_samples": "16", "dims": "2", "n_pairs": "8", "steps": "6", "log_every": "3",
              "variance_samples": "16", "floor_samples": "200", "width": "16", "depth": "2"},
    "table1": {"n_seeds": "2", "dims": "2,5", "n_train": "32", "width": "16", "depth": "2", "steps": "5",
               "n_eval": "64"},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Result, Path]]:
    """Each experiment run once at its tiny size: name → (Result, output folder)."""
    out = tmp_path_factory.mktemp("experiments")
    return {name: (run_experiment(name, out, quick=True, overrides=TINY[name]), out / name) for name in TINY}


@pytest.mark.parametrize("name", sorted(TINY))
def test_experiment_writes_complete_result(name: str, runs: dict[str, tuple[Result, Path]]) -> None:
    folder = runs[name][1]
    result = json.loads((folder / "result.json").read_text())
    assert result["experiment"] == name and result["quick"] is True
    assert result["claims"]
    for claim in result["claims"]:
        assert claim["verdict"] in {"confirmed", "refuted", "inconclusive"}
        assert claim["evidence"] and claim["rule"] and claim["statement"] and claim["id"].startswith(name)
    assert result["metrics"] and result["paper"] and result["choices"]
    expected = build_config(get_experiment(name), quick=True, overrides=TINY[name])
    assert result["config"] == to_jsonable(dataclasses.asdict(expected))
    assert result["figures"]
    for fig in result["figures"]:
        assert (folder / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "summary.md").exists()


def test_prop2_claims_cover_both_parts(runs: dict[str, tuple[Result, Path]]) -> None:
    result = runs["prop2"][0]
    ids = {c.id for c in result.claims}
    assert {"prop2.closed_form.zero_loss_zero_variance", "prop2.closed_form.ode_returns_partner",
            "prop2.remark2.no_zero_loss_with_noise", "prop2.remark2.noise_breaks_pairing",
            "prop2.neural.d=2.sigma0_memorises"} <= ids
    # the closed-form facts hold at any size: exact zeros and exact reproduction of the pairs
    verdicts = {c.id: c.verdict for c in result.claims}
    assert verdicts["prop2.closed_form.zero_loss_zero_variance"] == "confirmed"
    assert verdicts["prop2.closed_form.ode_returns_partner"] == "confirmed"
    hist = result.metrics["neural_histories"]["d=2"]["sigma=0.0"]
    assert [h["updates"] for h in hist] == [0, 2, 5, 6]


def test_table1_reports_every_estimator(runs: dict[str, tuple[Result, Path]]) -> None:
    result = runs["table1"][0]
    seed_row = result.metrics["runs"]["d=2"]["sigma=0.05"]["seeds"][0]
    for key in ("memorisation.biased", "memorisation.paired", "memorisation.unbiased", "memorisation.unbiased.floor",
                "generalisation.unbiased", "generalisation.biased", "generalisation.unbiased.multi",
                "l2_partner.mean", "pairing_accuracy", "fresh_copy_fraction"):
        assert key in seed_row and math.isfinite(seed_row[key])
    assert seed_row["memorisation.biased"] >= 0
    assert len(result.claims) == 3 * 2
    assert "d=3, CFM(σ=0.0)" not in result.metrics["comparison_with_paper"]  # only the dims that ran


def test_table1_rejects_bad_sigmas() -> None:
    with pytest.raises(ConfigError):
        build_config(get_experiment("table1"), overrides={"sigmas": "0.05,0.1"})


# ------------------------------------------------------------------------------------------------ helpers


def test_line_encounters_rot180_all_collide_at_half(gen: torch.Generator) -> None:
    x0 = torch.randn(10, 2, generator=gen, dtype=torch.float64)
    enc = line_encounters(x0, 3.0 - x0)
    assert enc.n_line_pairs == 45 and enc.collisions == 45 and enc.spatial_crossings == 45
    assert enc.collision_times == (0.5,) and enc.min_simultaneous_distance < 1e-12


def test_line_encounters_crossing_without_collision() -> None:
    # two segments crossing at (1, 1), reached at t = 0.5 by the first and t = 0.25 by the second
    x0 = torch.tensor([[0.0, 0.0], [-1.0, 3.0]], dtype=torch.float64)
    x1 = torch.tensor([[2.0, 2.0], [7.0, -5.0]], dtype=torch.float64)
    enc = line_encounters(x0, x1)
    assert enc.spatial_crossings == 1 and enc.collisions == 0 and enc.collision_times == ()
    assert enc.min_simultaneous_distance > 0.1
    parallel = line_encounters(x0, x0 + torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert parallel.spatial_crossings == 0 and parallel.collisions == 0
    assert parallel.min_simultaneous_distance == pytest.approx(math.sqrt(10.0))


def test_line_encounters_other_dims_and_shapes(gen: torch.Generator) -> None:
    x0 = torch.randn(6, 3, generator=gen)
    assert line_encounters(x0, x0 + 1).spatial_crossings is None
    with pytest.raises(ShapeError):
        line_encounters(x0, x0[:, :2])


def test_grid_hits_odd_and_even_grids() -> None:
    assert grid_hits(time_grid(101), (0.5,)) == 0
    assert grid_hits(time_grid(100), (0.5,)) == 1
    assert grid_hits(time_grid(100), ()) == 0
    assert grid_hits(time_grid(4), (0.25, 0.75, 0.3)) == 2


def test_zero_perturbed_field_equals_base_and_has_zero_gradients(gen: torch.Generator) -> None:
    x0 = torch.randn(12, 2, generator=gen, dtype=torch.float64)
    x1 = torch.randn(12, 2, generator=gen, dtype=torch.float64) * 3
    base = MemorizingField(x0, x1)
    probe = ZeroPerturbedField(base, 2)
    x, t = torch.randn(5, 2, generator=gen, dtype=torch.float64), torch.rand(5, generator=gen, dtype=torch.float64)
    assert torch.equal(probe(x, t), base(x, t))
    from flowvar.couplings import FixedPairs

    path = CFMLoss(Interpolant(0.0)).draw(FixedPairs(x0, x1), 40, gen)
    rep = gradient_variance(probe, path)
    assert rep.trace == 0.0 and rep.mean_grad_sq_norm == 0.0 and rep.mean_loss == 0.0
    noisy = CFMLoss(Interpolant(0.3)).draw(FixedPairs(x0, x1), 40, gen)
    assert gradient_variance(probe, noisy).trace > 0  # off the lines the residuals, hence gradients, are not 0


def test_make_pairs_families(gen: torch.Generator) -> None:
    gmm = GaussianMixture.random(2, 4, 3.0, 0.5, seed=0, dtype=torch.float64)
    x0, x1 = make_pairs("ot", 20, gmm, torch.Generator().manual_seed(1))
    assert torch.equal(exact_ot_permutation(x0, x1), torch.arange(20))  # already OT-paired
    s0, s1 = make_pairs("shuffled_ot", 20, gmm, torch.Generator().manual_seed(1))
    assert torch.equal(s0, x0) and not bool((s1 == x1).all(1).any())  # a derangement of the OT partners
    assert sorted(s1[:, 0].tolist()) == sorted(x1[:, 0].tolist())
    r0, r1 = make_pairs("rot180", 5, gmm, gen, mu=2.0)
    assert torch.allclose(r0 + r1, torch.full_like(r0, 2.0))
    with pytest.raises(ConfigError):
        make_pairs("bogus", 5, gmm, gen)


def test_two_proportion_se() -> None:
    assert two_proportion_se(1.0, 1.0, 10) == 0.0
    assert two_proportion_se(0.5, 0.5, 100) == pytest.approx(math.sqrt(0.5 / 100))


def test_training_monitor_leaves_gradients_alone(gen: torch.Generator) -> None:
    from flowvar.couplings import FixedPairs

    x0, x1 = torch.randn(8, 2, generator=gen), torch.randn(8, 2, generator=gen)
    pairs = FixedPairs(x0, x1)
    loss = CFMLoss(Interpolant(0.0))
    model = MLPField(2, 8, 1)
    loss(model, loss.draw(pairs, 16, gen)).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    monitor = TrainingMonitor(loss, pairs, every=5, n_samples=8, euler_steps=11, generator=gen)
    assert monitor.on_step(2, model, None, 0.0) is None
    out = monitor.on_step(5, model, None, 0.0)
    assert out is not None and out["updates"] == 4 and 0 <= out["accuracy"] <= 1 and out["trace"] > 0
    assert all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters())


def test_paired_direction_rules() -> None:
    assert paired_direction([1.0, 1.0, 1.0], [2.0, 2.1, 1.9])["verdict"] == "confirmed"
    assert paired_direction([2.0, 2.1, 1.9], [1.0, 1.0, 1.0])["verdict"] == "refuted"
    mixed = paired_direction([1.0, 1.0, 1.0], [2.0, 0.5, 1.5])
    assert mixed["verdict"] == "inconclusive" and mixed["seeds_in_direction"] == 2 and mixed["seeds_against"] == 1
    weak = paired_direction([0.0, 0.0, 0.0], [1.0, 0.01, 0.02])  # all positive, t ≈ 1.05 < t_(0.95, 2) ≈ 2.92
    assert weak["verdict"] == "inconclusive" and weak["t_critical"] == pytest.approx(2.919986, rel=1e-5)
    same = paired_direction([1.0, 2.0], [1.5, 2.5])
    assert same["t_ratio"] == math.inf and same["verdict"] == "confirmed"
    single = paired_direction([1.0], [2.0])
    assert single["verdict"] == "inconclusive" and math.isnan(single["t_critical"])
    with pytest.raises(ConfigError):
        paired_direction([1.0], [1.0, 2.0])


def test_unbiased_floor_matches_self_comparison(gen: torch.Generator) -> None:
    x = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    res = mmd2(x, x, bandwidth=1.3, estimator="unbiased")
    assert res.mmd2 == pytest.approx(unbiased_floor(res.mean_kxy, 50), rel=1e-10)
    assert mmd2(x, x, bandwidth=1.3, estimator="biased").mmd2 == pytest.approx(0.0, abs=1e-12)


def test_memorisation_mmd_is_blind_to_the_pairing(gen: torch.Generator) -> None:
    """What table1's note relies on: a permuted copy of the targets scores 0 (biased) and below 0 (paired)."""
    y = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    shuffled = y[torch.randperm(40, generator=gen)]
    assert mmd2(shuffled, y, bandwidth=1.0, estimator="biased").mmd2 == pytest.approx(0.0, abs=1e-12)
    assert mmd2(shuffled, y, bandwidth=1.0, estimator="paired").mmd2 < mmd2(y, y, bandwidth=1.0,
                                                                           estimator="paired").mmd2 == 0.0


def test_prop2_validates_config() -> None:
    spec = get_experiment("prop2")
    for bad in ({"euler_steps": "100"}, {"cf_sigmas": "0.2,0.05"}, {"cf_families": "random,bogus"}, {"sigma": "0"}):
        with pytest.raises(ConfigError):
            build_config(spec, overrides=bad)
