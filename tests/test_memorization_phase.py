"""Experiment memorization_phase: its helpers against brute force and known answers, its config checks, and a
tiny end-to-end run (the plumbing, and that splitting the grid reproduces the full run's points)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flowvar.errors import ConfigError, ShapeError
from flowvar.experiments.base import build_config, get_experiment, run_experiment
from flowvar.experiments.memorization_phase import (
    best_threshold_separation,
    cell_key,
    line_spacing,
    reduction_map,
    region_verdict,
    tube_ratio,
)
from flowvar.results import Result

TINY = {"dims": "2,5", "ns": "8,16", "sigmas": "0,0.05,0.5", "widths": "16", "steps": "8", "n_eval": "32",
        "variance_samples": "16", "floor_samples": "64", "exact_sources": "8"}
POINT_KEYS = {"d", "n", "sigma", "width", "seed", "pairing_accuracy", "chance", "l2_partner", "l2_partner_rel",
              "mmd2_gen_unbiased", "mmd2_gen_biased", "final_loss", "loss_floor", "grad_var", "tube_ratio",
              "sigma_ratio", "spacing", "exact_accuracy"}


# ------------------------------------------------------------------------------------------------ line spacing


def _brute_spacing(x0: torch.Tensor, x1: torch.Tensor, n_t: int = 20_001) -> torch.Tensor:
    """min_{j≠i} min over a fine t grid of ‖μ_i(t) − μ_j(t)‖ from explicit differences."""
    t = torch.linspace(0, 1, n_t, dtype=torch.float64)[:, None, None]
    mu = (1 - t) * x0.double()[None] + t * x1.double()[None]  # (T, N, d)
    n = x0.shape[0]
    out = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        dist = (mu - mu[:, i:i + 1]).norm(dim=2).min(0).values  # (N,)
        dist[i] = math.inf
        out[i] = dist.min()
    return out


def test_line_spacing_matches_brute_force(gen: torch.Generator) -> None:
    x0, x1 = torch.randn(12, 3, generator=gen), 2 * torch.randn(12, 3, generator=gen)
    exact = line_spacing(x0, x1, chunk=5)  # chunk smaller than N: the blocks must stitch together
    brute = _brute_spacing(x0, x1)
    # the grid minimum can only overshoot the true minimum, by at most ‖b‖·Δt/2 in distance
    assert torch.all(exact <= brute + 1e-9)
    assert torch.allclose(exact, brute, atol=1e-3)


def test_line_spacing_known_geometries(gen: torch.Generator) -> None:
    x0 = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    # x1 = μ − x0: every line passes through μ/2 at t = ½ (Counter Example 1), so every spacing is 0
    assert torch.all(line_spacing(x0, 4.0 - x0) < 1e-6)
    # a common translation keeps lines parallel at equal times: spacing = nearest-source distance
    d = torch.cdist(x0, x0).fill_diagonal_(math.inf).min(1).values
    assert torch.allclose(line_spacing(x0, x0 + torch.tensor([3.0, -1.0], dtype=torch.float64)), d, atol=1e-10)
    with pytest.raises(ShapeError):
        line_spacing(x0[:1], x0[:1])
    with pytest.raises(ShapeError):
        line_spacing(x0, x0[:, :1])


def test_tube_ratio_is_sigma_root_d_over_spacing(gen: torch.Generator) -> None:
    x0, x1 = torch.randn(20, 50, generator=gen), torch.randn(20, 50, generator=gen)
    spacing = float(_brute_spacing(x0, x1, n_t=2001).median())
    assert tube_ratio(0.05, 50, spacing) == pytest.approx(0.05 * math.sqrt(50) / spacing, rel=1e-3)
    assert tube_ratio(0.05, 50, float(line_spacing(x0, x1).median())) == pytest.approx(
        0.05 * math.sqrt(50) / spacing, rel=1e-3)
    assert tube_ratio(0.0, 3, 0.5) == 0.0
    assert tube_ratio(0.1, 3, 0.0) == math.inf


# ------------------------------------------------------------------------------------------------ verdict logic


def _points(d: int, n: int, width: int, sigma: float, acc0: list[float], acc: list[float]) -> list[dict[str, Any]]:
    rows = []
    for s, (a0, a) in enumerate(zip(acc0, acc, strict=True)):
        rows.append({"d": d, "n": n, "width": width, "seed": s, "sigma": 0.0, "pairing_accuracy": a0})
        rows.append({"d": d, "n": n, "width": width, "seed": s, "sigma": sigma, "pairing_accuracy": a,
                     "tube_ratio": 0.5 + s})
    return rows


@pytest.fixture
def synthetic() -> list[dict[str, Any]]:
    """Four cells whose answers are known: reduced, small drop, one seed against, never memorised."""
    return (_points(2, 16, 64, 0.05, [1.0, 0.96], [0.5, 0.6])  # mean drop 0.43, both seeds > 0: reduced
            + _points(3, 16, 64, 0.05, [0.95, 0.95], [0.9, 0.88])  # mean drop 0.06 < 0.1: not reduced
            + _points(10, 16, 64, 0.05, [1.0, 0.9], [0.5, 0.95])  # mean drop 0.225 but seed 1 rises: not reduced
            + _points(50, 16, 64, 0.05, [0.3, 0.2], [0.0, 0.0]))  # acc0 0.25 < 0.9: not memorised


def test_reduction_map_classifies_cells(synthetic: list[dict[str, Any]]) -> None:
    cells = reduction_map(synthetic, 0.05, memorise_accuracy=0.9, margin=0.1)
    assert list(cells) == [cell_key(d, 16, 64) for d in (2, 3, 10, 50)]
    status = {k: c["status"] for k, c in cells.items()}
    assert status == {"d=2,N=16,width=64": "reduced", "d=3,N=16,width=64": "not_reduced",
                      "d=10,N=16,width=64": "not_reduced", "d=50,N=16,width=64": "not_memorised"}
    a = cells["d=2,N=16,width=64"]
    assert a["drops"] == pytest.approx([0.5, 0.36]) and a["mean_drop"] == pytest.approx(0.43)
    assert a["accuracy_sigma0"] == pytest.approx(0.98) and a["chance"] == 1 / 16
    assert a["tube_ratio"] == pytest.approx(1.0)  # mean over seeds of 0.5 and 1.5
    assert cells["d=10,N=16,width=64"]["mean_drop"] == pytest.approx(0.225)
    # a σ that is not in the points leaves nothing to compare
    assert reduction_map(synthetic, 0.2, 0.9, 0.1) == {}


def test_region_verdict_rules(synthetic: list[dict[str, Any]]) -> None:
    cells = reduction_map(synthetic, 0.05, 0.9, 0.1)
    partial = region_verdict(cells)
    assert not partial["confirmed"] and not partial["refuted"]  # a partial map: inconclusive
    assert partial["memorising_cells"] == 3 and partial["reduces_fraction"] == pytest.approx(1 / 3)
    assert partial["reduced_cells"] == ["d=2,N=16,width=64"]
    assert partial["not_memorised_cells"] == ["d=50,N=16,width=64"]

    def only(*keys: str) -> dict[str, Any]:
        return region_verdict({k: cells[k] for k in keys})

    assert only("d=2,N=16,width=64", "d=50,N=16,width=64")["confirmed"]
    refuted = only("d=3,N=16,width=64", "d=10,N=16,width=64")
    assert refuted["refuted"] and not refuted["confirmed"] and refuted["reduces_fraction"] == 0.0
    none = only("d=50,N=16,width=64")
    assert not none["confirmed"] and not none["refuted"] and math.isnan(none["reduces_fraction"])
    # a stricter margin moves the reduced cell out
    assert region_verdict(reduction_map(synthetic, 0.05, 0.9, 0.5))["refuted"]


def _brute_separation(values: list[float], labels: list[bool]) -> float:
    y = np.asarray(labels)
    best = 0.0
    for r in [*sorted(set(values)), math.inf, -math.inf]:
        pred = np.asarray(values) >= r
        best = max(best, 0.5 * ((pred & y).sum() / y.sum() + (~pred & ~y).sum() / (~y).sum()))
    return best


def test_best_threshold_separation_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(4, 15))
        values = rng.choice([0.1, 0.2, 0.5, 1.0, 2.0, 3.0], size=n).tolist()  # ties on purpose
        labels = (rng.random(n) < 0.5).tolist()
        if all(labels) or not any(labels):
            continue
        got = best_threshold_separation(values, labels)
        assert got["balanced_accuracy"] == pytest.approx(_brute_separation(values, labels))
        pred = np.asarray(values) >= got["threshold"]
        y = np.asarray(labels)
        assert 0.5 * ((pred & y).sum() / y.sum() + (~pred & ~y).sum() / (~y).sum()) == pytest.approx(
            got["balanced_accuracy"])


def test_best_threshold_separation_edge_cases() -> None:
    perfect = best_threshold_separation([0.1, 0.3, 1.2, 2.0], [False, False, True, True])
    assert perfect["balanced_accuracy"] == 1.0 and perfect["threshold"] == 1.2
    inverted = best_threshold_separation([0.1, 0.3, 1.2, 2.0], [True, True, False, False])
    assert inverted["balanced_accuracy"] == 0.5  # only "≥ r" rules: the reversed order is no better than chance
    one_label = best_threshold_separation([0.1, 0.3], [True, True])
    assert math.isnan(one_label["balanced_accuracy"]) and one_label["n_true"] == 2 and one_label["n_false"] == 0
    with pytest.raises(ShapeError):
        best_threshold_separation([0.1, 0.2], [True])


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(("overrides", "key"), [
    ({"sigmas": "0.05,0.2"}, "sigmas"),
    ({"sigmas": "0"}, "sigmas"),
    ({"sigmas": "0,0.05,0.05"}, "sigmas"),
    ({"sigmas": "0,-0.1,0.05"}, "sigmas"),
    ({"focus_sigma": "0.3"}, "focus_sigma"),
    ({"ns": "1,16"}, "ns"),
    ({"dims": "2,2"}, "dims"),
    ({"widths": "[]"}, "widths"),
    ({"n_eval": "1"}, "n_eval"),
    ({"activation": "swish"}, "activation"),
    ({"reduction_margin": "0"}, "reduction_margin"),
    ({"refute_separation": "0.95"}, "refute_separation"),
    ({"n_seeds": "0"}, "n_seeds"),
    ({"exact_sources": "0"}, "exact_sources"),
])
def test_config_rejects_bad_values(overrides: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_config(get_experiment("memorization_phase"), quick=True, overrides=overrides)


def test_yaml_defaults_are_valid_and_list_typed() -> None:
    spec = get_experiment("memorization_phase")
    full, quick = build_config(spec), build_config(spec, quick=True)
    assert full.dims == (2, 3, 10, 50) and 0.05 in full.sigmas and 0.0 in full.sigmas and len(full.widths) >= 2
    assert quick.steps < full.steps and quick.n_seeds == 1
    # a sweep splits the grid by single-element lists: each must be a valid config on its own
    assert build_config(spec, overrides={"dims": "[50]"}).dims == (50,)


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    out = tmp_path_factory.mktemp("memorization_phase")
    return run_experiment("memorization_phase", out, quick=True, overrides=TINY), out / "memorization_phase"


def test_tiny_run_writes_claims_points_and_figures(tiny: tuple[Result, Path]) -> None:
    folder = tiny[1]
    data = json.loads((folder / "result.json").read_text())
    ids = {c["id"] for c in data["claims"]}
    assert {"memorization_phase.sigma0_memorises", "memorization_phase.sigma0.05_reduces_memorisation",
            "memorization_phase.sigma0.5_reduces_memorisation", "memorization_phase.tube_ratio_governs"} == ids
    for claim in data["claims"]:
        assert claim["verdict"] in {"confirmed", "refuted", "inconclusive"} and claim["rule"] and claim["evidence"]
    points = data["metrics"]["points"]
    assert len(points) == 2 * 2 * 3 * 1  # dims × ns × sigmas × widths × seeds
    for p in points:
        assert set(p) >= POINT_KEYS
        assert p["chance"] == pytest.approx(1 / p["n"])
        assert p["tube_ratio"] == pytest.approx(p["sigma"] * math.sqrt(p["d"]) / p["spacing"])
    assert all(p["loss_floor"] == pytest.approx(0.0, abs=1e-9) for p in points if p["sigma"] == 0.0)
    assert all(p["loss_floor"] > 0 for p in points if p["sigma"] == 0.5)
    for key in ("region_sigma0.05_reduces_fraction", "tube_ratio_balanced_accuracy", "sigma0_memorising_cells"):
        assert key in data["metrics"]
    grid = data["metrics"]["grid"]["d=5"]["N=16"]["width=16"]["sigma=0.05"]
    assert grid["n_seeds"] == 1 and "pairing_accuracy" in grid
    assert set(data["figures"]) == {"heatmap_d2.png", "heatmap_d5.png", "accuracy_vs_tube_ratio.png"}
    for fig in data["figures"]:
        assert (folder / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sigma_comparisons_are_paired(tiny: tuple[Result, Path]) -> None:
    points = tiny[0].metrics["points"]
    for _, group in itertools.groupby(sorted(points, key=lambda p: (p["d"], p["n"])), key=lambda p: (p["d"], p["n"])):
        rows = list(group)  # every σ of one (d, N): the same pairs and the same evaluation set
        assert len({r["spacing"] for r in rows}) == 1 and len({r["mmd2_null_unbiased"] for r in rows}) == 1


def test_split_grid_reproduces_full_run_points(tiny: tuple[Result, Path], tmp_path: Path) -> None:
    """A sweep over dims=[5] must compute exactly the d = 5 points of the dims=[2, 5] run."""
    part = run_experiment("memorization_phase", tmp_path, quick=True, overrides={**TINY, "dims": "[5]"})
    full = [p for p in tiny[0].metrics["points"] if p["d"] == 5]
    keys = ("pairing_accuracy", "final_loss", "grad_var", "mmd2_gen_unbiased", "spacing", "loss_floor")
    assert [[p[k] for k in keys] for p in part.metrics["points"]] == [[p[k] for k in keys] for p in full]


def test_sweep_presets_split_the_grid() -> None:
    """The YAML's named sweeps expand to valid configs: by_dim one d per point, by_cell one cell per point."""
    from flowvar.sweep import Options, plan

    by_dim = plan(Options(experiment="memorization_phase", preset="by_dim"))
    assert [p.config.dims for p in by_dim.points] == [(2,), (3,), (10,), (50,)]
    by_cell = plan(Options(experiment="memorization_phase", preset="by_cell"))
    assert len(by_cell.points) == 4 * 5 * 2 * 3
    assert {p.config.n_seeds for p in by_cell.points} == {1} and {p.config.seed for p in by_cell.points} == {0, 1, 2}
