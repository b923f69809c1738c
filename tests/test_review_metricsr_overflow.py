"""flowvar.metrics after the metricsR review (session 35): float64 data whose squared distances overflow are refused
with a "rescale the data" error."""

from __future__ import annotations

import pytest
import torch

from flowvar import metrics
from flowvar.errors import DataError
from flowvar.metrics import (
    mmd2,
    pairing_accuracy,
    partner_distances,
)

F64 = torch.float64


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


# ---------------------------------------------------------------------------------------------- 4. overflow


def test_data_whose_squared_distances_overflow_are_refused(gen: torch.Generator) -> None:
    x, y = randn(gen, 10, 3) * 1e160, randn(gen, 10, 3) * 1e160
    # mmd2 said "most points coincide", partner_distances gave inf and pairing_accuracy(x, x) 0.1
    for call in (lambda: mmd2(x, y), lambda: partner_distances(x, {"p": y}), lambda: pairing_accuracy(x, x)):
        with pytest.raises(DataError, match="rescale the data") as info:
            call()
        assert "coincide" not in str(info.value)
    # the limit is on the largest possible norm sqrt(D)·max|x| = 1e150, so the result still fits: far-out data
    # below it are measured exactly as rescaled data are
    big = randn(gen, 10, 3) * 1e140
    assert pairing_accuracy(big, big).accuracy == 1.0
    assert mmd2(big, big * 1.5).mmd2 == pytest.approx(mmd2(big / 1e140, big * 1.5 / 1e140).mmd2, rel=1e-9)
    assert partner_distances(big, {"p": 2 * big})["p"].mean == pytest.approx(
        1e140 * partner_distances(big / 1e140, {"p": 2 * big / 1e140})["p"].mean, rel=1e-12)


def test_the_overflow_limit_scales_with_the_number_of_coordinates() -> None:
    one = torch.full((2, 1), 1e149, dtype=F64)
    metrics.as_matrix("x", one)  # sqrt(1)·1e149 < 1e150
    with pytest.raises(DataError, match=r"x holds entries up to 1e\+149.*10000 coordinates.*rescale the data"):
        metrics.as_matrix("x", one.expand(2, 10_000))  # sqrt(1e4)·1e149 = 1e151
