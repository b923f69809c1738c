"""flowvar.distributions: GaussianMixture refuses parameters that would sample NaN/Inf or fail inside torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowvar.distributions import Distribution, Empirical, GaussianMixture, StandardNormal
from flowvar.errors import ConfigError, ShapeError

MEANS = torch.zeros(2, 2)


@pytest.mark.parametrize("stds", [math.nan, math.inf, -math.inf, 0.0, -1.0, [1.0, math.nan], torch.tensor([1.0, 0.0])])
def test_stds_must_be_finite_and_positive(stds: object) -> None:
    # NaN stds used to sample all-NaN points and Inf stds ±Inf, without an error
    with pytest.raises(ConfigError, match="stds must be finite and > 0"):
        GaussianMixture(MEANS, stds)  # type: ignore[arg-type]


@pytest.mark.parametrize("stds", [torch.ones(3), torch.ones(2, 2), [1.0, 1.0, 1.0]])
def test_stds_of_a_wrong_shape_are_a_shape_error(stds: object) -> None:
    # used to fail in Tensor.expand with a raw RuntimeError (or broadcast (2, 2) silently)
    with pytest.raises(ShapeError, match=r"stds must be a scalar or have shape \(2,\)"):
        GaussianMixture(MEANS, stds)  # type: ignore[arg-type]


@pytest.mark.parametrize("stds", ["0.5", True, object()])
def test_stds_must_be_numbers(stds: object) -> None:
    with pytest.raises(ConfigError, match="stds must be"):
        GaussianMixture(MEANS, stds)  # type: ignore[arg-type]


@pytest.mark.parametrize("weights, match", [
    ([math.nan, 1.0], "finite and >= 0"),  # NaN passed the old checks and failed in torch.multinomial
    ([math.inf, 1.0], "finite and >= 0"),
    ([-0.5, 1.5], "finite and >= 0"),
    ([0.2, 0.2], r"sum to 1.*sum 0.4"),
    ([0.0, 0.0], r"sum to 1"),
])
def test_weights_must_be_finite_non_negative_and_normalised(weights: list[float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        GaussianMixture(MEANS, 0.5, torch.tensor(weights))


@pytest.mark.parametrize("weights", [[1.0], [0.5, 0.25, 0.25], [[0.5, 0.5]]])
def test_weights_of_a_wrong_length_are_a_shape_error(weights: list) -> None:
    with pytest.raises(ShapeError, match=r"weights must have shape \(2,\)"):
        GaussianMixture(MEANS, 0.5, weights)  # type: ignore[arg-type]


def test_means_must_be_a_finite_float_matrix() -> None:
    with pytest.raises(ConfigError, match="floating-point tensor"):
        GaussianMixture(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ConfigError, match="floating-point tensor"):
        GaussianMixture(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ConfigError, match="K rows of d numbers"):
        GaussianMixture([[0.0, 0.0], [1.0]])  # ragged
    with pytest.raises(ConfigError, match="floating-point tensor"):
        GaussianMixture("means")  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match=r"\(K, d\)"):
        GaussianMixture(torch.zeros(3))


def test_means_as_a_list_or_numpy_like_gaussian_problem() -> None:
    # GaussianProblem took lists and numpy, GaussianMixture refused a list
    means = torch.tensor([[0.0, 0.0], [3.0, -1.0]])
    for given, dtype in (([[0.0, 0.0], [3.0, -1.0]], torch.float32), ([[0, 0], [3, -1]], torch.float32),
                         (np.array([[0.0, 0.0], [3.0, -1.0]]), torch.float64)):
        gm = GaussianMixture(given, 0.5)  # type: ignore[arg-type]
        assert gm.dtype == dtype and torch.equal(gm.means, means.to(dtype))
        a = gm.sample(50, torch.Generator().manual_seed(3))
        b = GaussianMixture(means.to(dtype), 0.5).sample(50, torch.Generator().manual_seed(3))
        assert torch.equal(a, b)


def test_valid_mixtures_still_sample() -> None:
    g = torch.Generator().manual_seed(0)
    gm = GaussianMixture(torch.tensor([[0.0, 0.0], [10.0, 10.0]]), [0.1, 0.2], [0.25, 0.75])
    x = gm.sample(400, g)
    assert x.shape == (400, 2) and bool(torch.isfinite(x).all())
    assert 0.6 < float((x[:, 0] > 5).float().mean()) < 0.9
    assert GaussianMixture(MEANS, torch.tensor([0.5])).stds.tolist() == [0.5, 0.5]
    assert GaussianMixture.random(2, seed=1).sample(3, g).shape == (3, 2)


@pytest.mark.parametrize("distribution", [
    StandardNormal(2), StandardNormal((1, 3, 3), torch.float64), GaussianMixture(MEANS), Empirical(torch.randn(5, 2)),
])
def test_an_int_seed_in_place_of_a_generator_is_one_clear_error(distribution: Distribution) -> None:
    with pytest.raises(ConfigError, match=r"generator must be a torch.Generator or None, got int 0; pass "
                                          r"torch.Generator\(\).manual_seed\(0\)"):
        distribution.sample(8, 0)  # type: ignore[arg-type]
    assert distribution.sample(8, torch.Generator().manual_seed(0)).shape[0] == 8


def test_empirical_takes_numpy_data() -> None:
    data = np.arange(12, dtype=np.float64).reshape(6, 2)
    empirical = Empirical(data)  # type: ignore[arg-type]
    assert empirical.dtype == torch.float64 and torch.equal(empirical.data, torch.from_numpy(data))
