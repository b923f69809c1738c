"""flowvar.metrics after the metrics review (session 33, metricsR): input checks, centring in line_spacing and the
NN-ratio citation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flowvar import metrics
from flowvar.errors import ConfigError, DataError, ShapeError
from flowvar.metrics import line_spacing, nn_distance_ratio, path_straightness

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


# ---------------------------------------------------------------------------------------------- line_spacing


def test_line_spacing_refuses_non_finite_rows(gen: torch.Generator) -> None:
    x0, x1 = randn(gen, 8, 2), randn(gen, 8, 2)
    bad = x0.clone()
    bad[3, 0] = math.nan  # one NaN line used to turn every spacing into NaN, silently
    with pytest.raises(DataError, match="x0 holds 1 non-finite"):
        line_spacing(bad, x1)
    bad1 = x1.clone()
    bad1[0, 1] = math.inf
    with pytest.raises(DataError, match="x1 holds 1 non-finite"):
        line_spacing(x0, bad1)


def test_line_spacing_accepts_numpy_and_lists(gen: torch.Generator) -> None:
    x0, x1 = randn(gen, 9, 3), randn(gen, 9, 3)
    ref = line_spacing(x0, x1)
    assert torch.allclose(line_spacing(x0.numpy(), x1.numpy()), ref, rtol=1e-12, atol=0)
    assert torch.allclose(line_spacing(x0.tolist(), x1.float().numpy()), ref, rtol=1e-6, atol=0)
    with pytest.raises(DataError, match="x1 must hold real numbers"):
        line_spacing(x0, torch.ones(9, 3, dtype=torch.bool))


def test_line_spacing_is_exact_far_from_the_origin(gen: torch.Generator) -> None:
    # the distance between lines is invariant to a constant added to every x0 (and x1), and to a constant added to
    # every direction u = x1 − x0: centring p and u removes the Gram-matrix cancellation (4e-3 absolute at 1e6)
    x0, x1 = randn(gen, 100, 5), randn(gen, 100, 5)
    ref = line_spacing(x0, x1)
    shift = torch.full((5,), 1e6, dtype=F64)
    assert torch.allclose(line_spacing(x0 + shift, x1 + shift), ref, rtol=1e-8, atol=1e-8)
    assert torch.allclose(line_spacing(x0, x1 + shift), ref, rtol=1e-8, atol=1e-8)
    # the caller's tensors are not modified by the centring
    x0c = x0.clone()
    line_spacing(x0, x1)
    assert torch.equal(x0, x0c)


# ---------------------------------------------------------------------------------------------- clear errors


def test_rotation_pairing_checks_its_inputs(gen: torch.Generator) -> None:
    x0, x1 = randn(gen, 10, 3), randn(gen, 10, 3)
    mu = torch.tensor([5.0, 0.0, 0.0], dtype=F64)
    ref = metrics.rotation_pairing(x1, x0, mu)
    with pytest.raises(ShapeError, match=r"mu must have shape \(3,\)"):
        metrics.rotation_pairing(x1, x0, mu[:2])
    with pytest.raises(ShapeError, match=r"mu must have shape \(3,\)"):
        metrics.rotation_pairing(x1, x0, 5.0)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="gap"):
        metrics.rotation_pairing(x1, torch.zeros(10, 3, dtype=F64), mu)
    with pytest.raises(DataError, match="mu holds 1 non-finite"):
        metrics.rotation_pairing(x1, x0, torch.tensor([math.nan, 0.0, 0.0]))
    with pytest.raises(ShapeError):
        metrics.rotation_pairing(x1[:9], x0, mu)
    out = metrics.rotation_pairing(x1.numpy(), x0.numpy(), mu.numpy())
    assert out == pytest.approx(ref, rel=1e-12)


def test_nn_distance_ratio_threshold_is_a_real_number_not_a_bool(gen: torch.Generator) -> None:
    x, tr = randn(gen, 6, 2), randn(gen, 20, 2)
    ref = nn_distance_ratio(x, tr, threshold=0.3)
    for t in (np.float32(0.3), np.float64(0.3)):
        assert nn_distance_ratio(x, tr, threshold=t).fraction_below == ref.fraction_below  # type: ignore[arg-type]
    for t in (True, np.bool_(True), math.nan, 0.0, 1.5, "0.3"):
        with pytest.raises(ConfigError, match="threshold"):
            nn_distance_ratio(x, tr, threshold=t)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- path_straightness


@pytest.mark.parametrize("dtype", [torch.complex64, torch.bool])
def test_path_straightness_refuses_non_real_trajectories(dtype: torch.dtype) -> None:
    traj = torch.zeros(3, 4, 2, dtype=dtype)
    with pytest.raises(DataError, match="trajectory must hold real numbers"):
        path_straightness(traj, torch.linspace(0, 1, 3))


# ---------------------------------------------------------------------------------------------- citation


def test_nn_ratio_cites_the_papers_that_use_the_ratio_test() -> None:
    doc = nn_distance_ratio.__doc__ or ""
    assert "Yoon et al. 2023" in doc and "Gu et al. 2023" in doc
    # Somepalli et al. scored copying by SSCD feature similarity: named, if at all, only with that
    flat = " ".join(doc.split())
    if "Somepalli" in flat:
        assert "SSCD" in flat[flat.index("Somepalli"):].split(")")[0]
    audit = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    line = next(ln for ln in audit.splitlines() if "NN1/NN2 distance-ratio test" in ln)
    assert "Yoon et al. 2023" in line and "Somepalli" not in line
