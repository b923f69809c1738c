"""examples/exact_minimiser_image_dimension.py (reportR 5): the check behind table2/table3's exception to the "noise
can act" policy — the exact CFM(σ) minimiser at the paper's image dimension D = 12 288 returns each source's shuffled
training partner at σ = 0.05, 0.5 and 2 — is a command with a published JSON, and the docs quote that JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from flowvar.advisor import SIGMA_OVER_SPACING_ONSET

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "exact_minimiser_image_dimension.py"
PUBLISHED = ROOT / "results" / "checks" / "exact_minimiser_image_dimension.json"
ROW_KEYS = {"sigma", "nearest_is_shuffled_partner", "nearest_is_ot_partner", "mean_l2_to_shuffled_partner",
            "mean_l2_to_ot_partner", "sigma_over_line_spacing", "runtime_s"}


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("exact_minimiser_image_dimension", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_structure(data: dict, n: int, sigmas: list[float]) -> None:
    """The fields a reader of the JSON relies on, and the numbers that must agree with each other."""
    assert {"check", "command", "quick", "config", "data", "ot", "median_line_spacing", "sigma_over_spacing_onset",
            "mean_distance_ot_vs_shuffled_partner", "per_sigma", "threads", "device", "versions",
            "runtime_s"} <= set(data)
    config = data["config"]
    assert config["n"] == n and config["dimension"] == 12288 and config["image_shape"] == [3, 64, 64]
    assert config["sigmas"] == sigmas and config["euler_steps"] == 100 and config["seed"] == 0
    assert data["data"]["channels"] == 3 and data["data"]["dataset"] == "digits"
    assert data["ot"]["method"] == "exact"
    assert {"flowvar", "torch", "git_commit"} <= set(data["versions"])
    assert data["threads"] == 1
    spacing = data["median_line_spacing"]
    assert spacing > 0
    assert [row["sigma"] for row in data["per_sigma"]] == sigmas
    for row in data["per_sigma"]:
        assert set(row) == ROW_KEYS
        assert row["sigma_over_line_spacing"] == pytest.approx(row["sigma"] / spacing, rel=1e-12)
        assert 0 <= row["nearest_is_shuffled_partner"] <= 1 and 0 <= row["nearest_is_ot_partner"] <= 1
        # the two partners are distinct images, so no endpoint's nearest image is both
        assert row["nearest_is_shuffled_partner"] + row["nearest_is_ot_partner"] <= 1


def test_the_quick_check_returns_the_partner_at_small_sigma_and_not_at_a_huge_one(tmp_path: Path) -> None:
    """--quick (32 images at D = 12 288) in a subprocess, as a user runs it. At σ = 0.05 and 2 (σ / spacing ≪ the
    onset 0.37) every endpoint lands on its shuffled partner (L2 ~1e-13 against a partner distance of ~90); at
    σ = 1000 (σ / spacing ≈ 28) the minimiser averages over all pairs and the partner is the nearest image for at
    most a few: the measure can fail."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--sigmas", "0.05,2,1000", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    _check_structure(data, 32, [0.05, 2.0, 1000.0])
    assert data["quick"] is True
    assert data["command"] == "python examples/exact_minimiser_image_dimension.py --quick --sigmas 0.05,2,1000"
    small, medium, huge = data["per_sigma"]
    for row in (small, medium):
        assert row["nearest_is_shuffled_partner"] == 1.0 and row["nearest_is_ot_partner"] == 0.0
        assert row["mean_l2_to_shuffled_partner"] < 1e-6
        assert row["mean_l2_to_ot_partner"] == pytest.approx(data["mean_distance_ot_vs_shuffled_partner"], rel=1e-6)
    assert huge["sigma_over_line_spacing"] > 1
    assert huge["nearest_is_shuffled_partner"] <= 0.1  # "a few per cent" (docs/experiments/table2.md)
    assert huge["mean_l2_to_shuffled_partner"] > 0.5 * data["mean_distance_ot_vs_shuffled_partner"]
    assert [line.split(":")[0] for line in proc.stdout.splitlines()[:3]] == ["σ = 0.05", "σ = 2", "σ = 1000"]
    assert proc.stderr == "", proc.stderr


def test_the_check_is_deterministic() -> None:
    """Two in-process runs at a tiny size give identical numbers (every random number from table2's named
    streams; float64 on the CPU)."""
    example = _example()
    first = example.run_check(6, (0.5, 300.0), 0)
    second = example.run_check(6, (0.5, 300.0), 0)
    for row in first["per_sigma"]:
        row.pop("runtime_s")
    for row in second["per_sigma"]:
        row.pop("runtime_s")
    assert first == second
    assert example.run_check(6, (0.5,), 1)["median_line_spacing"] != first["median_line_spacing"]  # the seed counts


def test_bad_sigmas_are_a_usage_error(tmp_path: Path) -> None:
    """--sigmas 0 is refused with the rule and an example, before any work and without writing a file."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sigmas", "0.05,0", "--out", str(tmp_path / "x.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--sigmas must all be finite and > 0, got '0.05,0'" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []


def _published() -> dict:
    assert PUBLISHED.is_file(), f"{PUBLISHED} is missing: run python examples/exact_minimiser_image_dimension.py"
    return json.loads(PUBLISHED.read_text(encoding="utf-8"))


def test_the_published_check_returns_every_partner_at_the_papers_sigmas() -> None:
    """The published full check (N = 512, D = 12 288, σ = 0.05, 0.5, 2): every endpoint's nearest training image is
    its shuffled partner, at σ / spacing far below the onset 0.37–0.49, computed by committed code (a clean commit,
    the plain command) — the premise of table2/table3's exception."""
    data = _published()
    _check_structure(data, 512, [0.05, 0.5, 2.0])
    assert data["quick"] is False and data["command"] == "python examples/exact_minimiser_image_dimension.py"
    assert len(data["versions"]["git_commit"]) == 40 and "+dirty" not in data["versions"]["git_commit"]
    assert data["sigma_over_spacing_onset"] == list(SIGMA_OVER_SPACING_ONSET)
    for row in data["per_sigma"]:
        assert row["nearest_is_shuffled_partner"] == 1.0 and row["nearest_is_ot_partner"] == 0.0
        assert row["mean_l2_to_shuffled_partner"] < 1e-6 < 60 < row["mean_l2_to_ot_partner"]
        assert row["sigma_over_line_spacing"] < SIGMA_OVER_SPACING_ONSET[0] / 4


def _quoted_numbers(data: dict) -> dict[str, str]:
    """The published numbers as the docs print them."""
    rows = data["per_sigma"]
    n = data["config"]["n"]
    counts = {f"{round(r['nearest_is_shuffled_partner'] * n)} of {n}" for r in rows}
    assert len(counts) == 1  # the docs say "at each σ"
    ratios = [f"{r['sigma_over_line_spacing']:.2g}" for r in rows]
    return {"command": "python examples/exact_minimiser_image_dimension.py",
            "json": "results/checks/exact_minimiser_image_dimension.json",
            "count": counts.pop(), "ratios": f"{', '.join(ratios[:-1])} and {ratios[-1]}",
            "max_ratio": f"σ / spacing ≤ {max(r['sigma_over_line_spacing'] for r in rows):.2g}",
            "l2_shuffled": f"{max(r['mean_l2_to_shuffled_partner'] for r in rows):.1e}",
            "l2_ot": f"{sum(r['mean_l2_to_ot_partner'] for r in rows) / len(rows):.1f}",
            "spacing": f"median spacing {data['median_line_spacing']:.1f}",
            "runtime": f"about {data['runtime_s'] / 60:.0f} min on one CPU thread"}


@pytest.mark.parametrize(("path", "keys"), [
    ("docs/experiments/table2.md", ("command", "json", "count", "ratios", "max_ratio", "l2_shuffled", "l2_ot",
                                    "spacing", "runtime")),
    ("docs/experiments/table3.md", ("command", "json", "count", "ratios", "max_ratio", "l2_shuffled", "l2_ot",
                                    "spacing")),
    ("src/flowvar/experiments/table2.py", ("command", "json", "count", "ratios", "l2_shuffled", "l2_ot")),
    ("src/flowvar/experiments/table3.py", ("command", "json", "count", "ratios")),
    ("src/flowvar/experiments/_exact_minimiser.py", ("command", "json", "count", "ratios")),
])
def test_the_docs_cite_the_check_and_quote_its_numbers(path: str, keys: tuple[str, ...]) -> None:
    """Each place that states the premise cites the command and the JSON and quotes the JSON's own numbers
    (whitespace-normalised: the prose wraps)."""
    quoted = _quoted_numbers(_published())
    text = " ".join((ROOT / path).read_text(encoding="utf-8").split())
    missing = {key: quoted[key] for key in keys if quoted[key] not in text}
    assert not missing, f"{path} does not quote {missing}"
