"""flowvar.couplings: the coupling classes (exact OT pairing itself: tests/test_ot.py)."""

import pytest
import torch

from flowvar.couplings import (
    ExactOTCoupling,
    FixedPairs,
    IndependentCoupling,
    Pairs,
    RotatedOTCoupling,
    derangement,
)
from flowvar.distributions import GaussianMixture, StandardNormal
from flowvar.errors import ConfigError, DataError, ShapeError
from flowvar.gaussian import GaussianProblem, rotation_matrix


def test_exact_ot_coupling_is_a_bijection_of_the_drawn_targets() -> None:
    coupling = ExactOTCoupling(StandardNormal(2), GaussianMixture.random(2, seed=1))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    pairs = coupling.sample(64, g1)
    x0, x1 = IndependentCoupling(coupling.source, coupling.target).draw(64, g2)
    assert torch.equal(pairs.x0, x0)
    # every drawn target appears exactly once: sorting rows gives the same multiset
    assert torch.equal(torch.sort(pairs.x1[:, 0]).values, torch.sort(x1[:, 0]).values)
    # and the OT pairing is no more expensive than the independent one
    assert float(((pairs.x0 - pairs.x1) ** 2).sum()) <= float(((x0 - x1) ** 2).sum())


@pytest.mark.parametrize("angle", [0.0, 30.0, 120.0, 180.0])
def test_rotated_coupling_targets(angle: float) -> None:
    problem = GaussianProblem(torch.tensor([5.0, 5.0]), torch.diag(torch.tensor([4.0, 0.25])))
    coupling = RotatedOTCoupling(problem, angle)
    pairs = coupling.sample(5000, torch.Generator().manual_seed(0))
    R = rotation_matrix(angle)
    expected = torch.tensor([5.0, 5.0], dtype=torch.float64) + pairs.x0 @ (problem.cov_sqrt @ R).T
    assert torch.allclose(pairs.x1, expected, atol=1e-12)
    # R x0 ~ N(0, I): the targets are N(μ, M) for every angle (Monte-Carlo check of the moments)
    assert torch.allclose(pairs.x1.mean(0), problem.mean, atol=0.1)
    assert torch.allclose(torch.cov(pairs.x1.T), problem.cov, atol=0.15)


def test_rotation_in_a_plane_of_higher_dim() -> None:
    R = rotation_matrix(90, dim=4, plane=(1, 3))
    assert torch.allclose(R @ R.T, torch.eye(4, dtype=torch.float64))
    e1 = torch.zeros(4, dtype=torch.float64)
    e1[1] = 1
    assert torch.equal(R @ e1, torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ConfigError, match="plane"):
        rotation_matrix(30, dim=3, plane=(0, 3))


@pytest.mark.parametrize("n", [2, 3, 10, 257])
def test_derangement_has_no_fixed_points(n: int) -> None:
    for seed in range(20):
        perm = derangement(n, torch.Generator().manual_seed(seed))
        assert sorted(perm.tolist()) == list(range(n))
        assert not bool((perm == torch.arange(n)).any())
    with pytest.raises(ConfigError):
        derangement(1)


def test_fixed_pairs_shuffle_and_sampling() -> None:
    x0 = torch.arange(20.0).reshape(10, 2)
    x1 = -x0
    pairs = FixedPairs(x0, x1, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pairs.x1, x1[pairs.permutation])
    assert not bool((pairs.permutation == torch.arange(10)).any())
    batch = pairs.sample(50, torch.Generator().manual_seed(1))
    assert torch.equal(batch.x0, x0[batch.index]) and torch.equal(batch.x1, pairs.x1[batch.index])
    full = pairs.all()
    assert torch.equal(full.index, torch.arange(10))


def test_bad_pairs_are_rejected_with_clear_messages() -> None:
    with pytest.raises(DataError, match="empty"):
        FixedPairs(torch.zeros(0, 2), torch.zeros(0, 2))
    with pytest.raises(ShapeError, match="same shape"):
        FixedPairs(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(DataError, match="non-finite"):
        FixedPairs(torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2))
    with pytest.raises(ShapeError, match="same shape"):
        Pairs(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ShapeError, match="event shape"):
        IndependentCoupling(StandardNormal(2), StandardNormal(3))
    with pytest.raises(ConfigError, match="solver"):
        ExactOTCoupling(StandardNormal(2), StandardNormal(2), solver="sinkhorn")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="positive integer"):
        StandardNormal(2).sample(0)
