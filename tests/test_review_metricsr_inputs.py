"""flowvar.metrics after the metricsR review (session 35): polar_decomposition, path_straightness and distance_stats
check their input as as_matrix does."""

from __future__ import annotations

import math

import pytest
import torch

from flowvar.errors import DataError, ShapeError
from flowvar.metrics import (
    distance_stats,
    path_straightness,
    polar_decomposition,
    rotation_angle,
)

F64 = torch.float64


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


# ---------------------------------------------------------------------------------------------- 2. polar / paths


@pytest.mark.parametrize(("value", "match"), [
    (None, "A is None"),
    ("abc", "A must be a tensor or array of numbers"),
    (torch.eye(2, dtype=torch.complex64), "A must hold real numbers"),
    (torch.eye(2, dtype=torch.bool), "A must hold real numbers"),
    (torch.tensor([[1.0, math.nan], [0.0, 1.0]]), "A holds 1 non-finite"),
])
def test_polar_decomposition_validates_like_as_matrix(value: object, match: str) -> None:
    # complex input returned (0.0,) after dropping the imaginary part; None and "abc" raised bare torch errors
    for f in (polar_decomposition, rotation_angle):
        with pytest.raises(DataError, match=match) as info:
            f(value)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)


def test_polar_decomposition_still_takes_lists_and_integers() -> None:
    assert rotation_angle([[0, -1], [1, 0]]) == pytest.approx(90.0)
    assert polar_decomposition(torch.eye(3, dtype=torch.long)).principal_angles_deg == (0.0,)
    with pytest.raises(ShapeError, match="square"):
        polar_decomposition(torch.zeros(0, 0))


@pytest.mark.parametrize(("traj", "times", "error", "match"), [
    (None, torch.linspace(0, 1, 5), DataError, "trajectory is None"),
    (torch.zeros(5, 3, 2), None, DataError, "times is None"),
    (torch.zeros(5, 3, 2), "abc", DataError, "times must be a tensor or array of numbers"),
    ("abc", torch.linspace(0, 1, 5), DataError, "trajectory must be a tensor or array of numbers"),
    (torch.zeros(5, 3, 2), torch.linspace(0, 1, 5).to(torch.complex64), DataError, "times must hold real numbers"),
    (torch.zeros(5, 3, 2), torch.ones(5, dtype=torch.bool), DataError, "times must hold real numbers"),
    (torch.zeros(5, 3, 0), torch.linspace(0, 1, 5), ShapeError, "zero coordinates"),
    (torch.zeros(5, 3, 2, 0), torch.linspace(0, 1, 5), ShapeError, "zero coordinates"),
])
def test_path_straightness_validates_like_as_matrix(traj: object, times: object, error: type, match: str) -> None:
    # each of these returned a number (complex times cast, zero coordinates: Straightness(0.0, ...)) or a bare error
    with pytest.raises(error, match=match) as info:
        path_straightness(traj, times)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_path_straightness_still_takes_lists() -> None:
    traj = torch.stack([torch.zeros(3, 2), torch.ones(3, 2)])  # straight lines at constant speed
    s = path_straightness(traj.tolist(), [0.0, 1.0])
    assert s.straightness == 0.0 and s.kinetic_energy == pytest.approx(2.0)


# ---------------------------------------------------------------------------------------------- 3. distance_stats


def test_distance_stats_validates_its_input() -> None:
    with pytest.raises(DataError, match="d holds 1 non-finite"):
        distance_stats(torch.tensor([1.0, math.nan]))  # gave mean = std = median = nan
    with pytest.raises(DataError, match="d is None"):
        distance_stats(None)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="d must hold real numbers"):
        distance_stats(torch.ones(3, dtype=torch.complex64))
    s = distance_stats([1.0, 2.0, 4.0])  # type: ignore[arg-type]  # was AttributeError: 'list' ... 'reshape'
    assert (s.mean, s.median, s.n) == (pytest.approx(7 / 3), 2.0, 3)
    assert s.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
