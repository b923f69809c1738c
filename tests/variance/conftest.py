"""Fixtures of the gradient-variance tests: the PAPER.md §4 Gaussian problem and a random parametric field."""

from __future__ import annotations

import pytest
import torch

from flowvar.gaussian import GaussianProblem, singular_times
from flowvar.models import GaussianParametricField

F64 = torch.float64


@pytest.fixture
def problem() -> GaussianProblem:
    """PAPER.md §4: μ = (5, 5), M = diag(4, 0.25)."""
    return GaussianProblem(torch.tensor([5.0, 5.0]), torch.diag(torch.tensor([4.0, 0.25])))


@pytest.fixture
def random_field(gen: torch.Generator) -> GaussianParametricField:
    """Random (θ, Θ) with I + tΘ invertible on [0, 1] (checked)."""
    theta = torch.randn(2, generator=gen, dtype=F64)
    Theta = 0.3 * torch.randn(2, 2, generator=gen, dtype=F64)
    assert singular_times(Theta) == []
    return GaussianParametricField(2, theta, Theta)
