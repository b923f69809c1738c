"""flowvar.metrics after the metricsR review (session 35): point shapes that differ only in layout (channels-last images
beside channels-first ones) are refused by every metric that compares two point sets."""

from __future__ import annotations

import pytest
import torch

from flowvar import metrics
from flowvar.errors import ShapeError
from flowvar.metrics import (
    fitted_linear_map,
    line_spacing,
    median_heuristic,
    mmd2,
    nearest_neighbours,
    nn_distance_ratio,
    pairing_accuracy,
    partner_distances,
    rotation_pairing,
)

F64 = torch.float64


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


# ---------------------------------------------------------------------------------------------- 1. point shapes


@pytest.fixture
def chw_hwc(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """50 images (3, 8, 8) in [-1, 1], and the same images channels-last (8, 8, 3)."""
    x = torch.rand(50, 3, 8, 8, generator=gen, dtype=F64) * 2 - 1
    return x, x.permute(0, 2, 3, 1).contiguous()


HWC_FIX = r"y\.permute\(0, 3, 1, 2\)"


def test_channels_last_images_are_refused_by_every_two_set_metric(chw_hwc: tuple[torch.Tensor, torch.Tensor]) -> None:
    # the same images in another layout gave MMD² 0.0273, L2 11.2 and pairing accuracy 0.0 (instead of 0, 0, 1)
    x, y = chw_hwc
    shapes = r"\(3, 8, 8\).*\(8, 8, 3\)"
    with pytest.raises(ShapeError, match=rf"x has points of shape {shapes}.*{HWC_FIX}"):
        mmd2(x, y, estimator="biased")
    with pytest.raises(ShapeError, match=rf"x_hat has points of shape {shapes}.*targets\.permute\(0, 3, 1, 2\)"):
        pairing_accuracy(x, y)
    with pytest.raises(ShapeError, match=r"x_hat has points of shape \(3, 8, 8\).*partners\['p'\]"):
        partner_distances(x, {"p": y})
    with pytest.raises(ShapeError, match=r"x_hat has points of shape \(3, 8, 8\).*train"):
        nn_distance_ratio(x, y)
    with pytest.raises(ShapeError, match=r"query has points of shape"):
        nearest_neighbours(x, y)
    with pytest.raises(ShapeError, match=rf"x has points of shape {shapes}"):
        median_heuristic(x, y)
    with pytest.raises(ShapeError, match=r"x0 has points of shape \(3, 8, 8\).*x1"):
        line_spacing(x, y)
    with pytest.raises(ShapeError, match=r"x0 has points of shape \(2, 3\).*x1.*\(3, 2\)"):
        fitted_linear_map(x[:10, 0, :2, :3], x[:10, 0, :3, :2])
    with pytest.raises(ShapeError, match=r"x1_hat has points of shape \(2, 1\).*x0.*\(1, 2\)"):
        rotation_pairing(torch.ones(4, 2, 1), torch.ones(4, 1, 2), torch.tensor([5.0, 0.0]))
    # evaluate_outputs goes through pairing_accuracy; the fix moves whichever set is channels-last to channels-first
    ref = metrics.Reference(x, x, 1.0, x, x, 1 / 3)
    with pytest.raises(ShapeError, match=r"x_hat\.permute\(0, 3, 1, 2\)"):
        metrics.evaluate_outputs(y, x, ref)


def test_the_message_is_one_line_and_names_a_fix_for_non_permutations(gen: torch.Generator) -> None:
    with pytest.raises(ShapeError) as info:
        mmd2(randn(gen, 10, 2, 3), randn(gen, 10, 6, 1))
    msg = str(info.value)
    assert "\n" not in msg and "(2, 3)" in msg and "(6, 1)" in msg and ".flatten(1)" in msg
    assert "permute" not in msg  # (6, 1) is no permutation of (2, 3)


def test_flat_sets_beside_shaped_ones_stay_accepted(gen: torch.Generator,
                                                    chw_hwc: tuple[torch.Tensor, torch.Tensor]) -> None:
    # internal callers pass flat sets beside shaped ones (sigma_tradeoff: pairing_accuracy(ends, x1.flatten(1)))
    x, _ = chw_hwc
    flat = x.flatten(1)
    assert pairing_accuracy(x, flat).accuracy == 1.0
    assert pairing_accuracy(flat, x).accuracy == 1.0
    assert partner_distances(x, {"p": flat})["p"].mean == 0.0
    assert mmd2(x, flat, estimator="biased").mmd2 == 0.0
    assert mmd2(randn(gen, 10, 2), randn(gen, 10, 1, 2)).n == 10
    assert fitted_linear_map(x[:, 0, 0, :2].reshape(50, 1, 2), x[:, 0, 0, :2]).A.shape == (2, 2)
    # equal point shapes of course
    assert mmd2(x, x.clone(), estimator="biased").mmd2 == 0.0
    # a flat set of another size is still refused by the flattened check
    with pytest.raises(ShapeError, match="same space"):
        mmd2(x, flat[:, :10])


def test_as_points_returns_the_point_shape_and_same_dim_is_the_one_check(gen: torch.Generator) -> None:
    x = randn(gen, 4, 3, 2, 2)
    flat, shape = metrics.as_points("x", x)
    assert shape == (3, 2, 2) and flat.shape == (4, 12) and torch.equal(flat, x.flatten(1))
    metrics.same_dim("a", flat, "b", flat, (3, 2, 2), (12,))  # one side flat: only sizes compared
    with pytest.raises(ShapeError, match=r"b\.permute\(0, 3, 1, 2\)"):
        metrics.same_dim("a", flat, "b", flat, (3, 2, 2), (2, 2, 3))
