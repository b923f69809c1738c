"""flowvar.ot.images: exact image OT against brute force, the blockwise approximation and its gap report.

The derangement behind the adversarial coupling is tested in tests/test_couplings.py
(test_derangement_has_no_fixed_points); here we check that adversarial_pairs uses it on the OT pairs.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from flowvar.data import load_images
from flowvar.errors import ConfigError, DataError, ShapeError
from flowvar.ot import (
    Assignment,
    adversarial_pairs,
    approximation_gap,
    blockwise_assignment,
    cost_matrix,
    exact_assignment,
    exact_ot_permutation,
    ot_assignment,
    pair_costs,
    random_pairing_cost,
    squared_distances,
)


def noise_and_images(n: int, seed: int = 0, shape: tuple[int, ...] = (1, 2, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.rand(n, *shape, generator=g) * 2 - 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_matches_brute_force(seed: int) -> None:
    x0, x1 = noise_and_images(7, seed)
    cost = squared_distances(x0, x1).numpy()
    best = min(itertools.permutations(range(7)), key=lambda p: sum(cost[i, p[i]] for i in range(7)))
    result = exact_assignment(x0, x1)
    assert result.permutation.tolist() == list(best)
    assert result.cost == pytest.approx(sum(cost[i, best[i]] for i in range(7)) / 7, rel=1e-12)
    assert result.method == "exact" and result.blocks == 1


def test_exact_matches_squared_distance_lsa_on_digits() -> None:
    x1 = load_images("digits", n=120, resolution=8).images
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(exact_assignment(x0, x1).permutation, exact_ot_permutation(x0, x1))


def test_cost_matrix_in_blocks_equals_dense() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20, 3, 4, 4, generator=g), torch.randn(13, 3, 4, 4, generator=g)
    dense = ((a.flatten(1).double()[:, None] - b.flatten(1).double()[None]) ** 2).sum(-1).numpy()
    for block in (1, 7, 64):
        np.testing.assert_allclose(cost_matrix(a, b, block=block), dense, rtol=1e-12, atol=1e-10)
    perm = torch.randperm(13, generator=g)
    np.testing.assert_allclose(pair_costs(a[:13], b, perm, block=5).numpy(), dense[np.arange(13), perm.numpy()],
                               rtol=1e-12)


def test_blockwise_is_a_permutation_with_non_increasing_rounds() -> None:
    x1 = load_images("digits", n=300, resolution=8).images
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(1))
    approx = blockwise_assignment(x0, x1, block_size=40, refine_rounds=3, seed=2)
    assert sorted(approx.permutation.tolist()) == list(range(300))
    assert approx.largest_block <= 40 and approx.blocks >= 300 // 40
    assert len(approx.round_costs) == 4
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(approx.round_costs))
    assert approx.cost == pytest.approx(float(pair_costs(x0, x1, approx.permutation).mean()), rel=1e-12)
    # a leaf that holds everything is the exact problem
    whole = blockwise_assignment(x0, x1, block_size=300, refine_rounds=0)
    assert torch.equal(whole.permutation, exact_assignment(x0, x1).permutation)


def test_gap_report_is_correct_and_small_on_digits() -> None:
    """The reported gap statistics are recomputed by hand, and the documented quality holds (docs/table2.md:
    on 8 px digits with 8 leaves, 2 refinement rounds lose < 15% of what exact OT gains over a random pairing,
    a relative gap in mean cost < 3%)."""
    x1 = load_images("digits", n=512, resolution=8).images
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(4))
    exact = exact_assignment(x0, x1)
    approx = blockwise_assignment(x0, x1, block_size=64, refine_rounds=2, seed=0)
    gap = approximation_gap(x0, x1, approx, exact)
    random = float(squared_distances(x0, x1).mean())
    assert gap.cost_random == pytest.approx(random, rel=1e-10)
    assert random_pairing_cost(x0, x1) == pytest.approx(random, rel=1e-10)
    assert gap.relative_gap == pytest.approx(approx.cost / exact.cost - 1, rel=1e-12)
    assert gap.improvement_lost == pytest.approx((approx.cost - exact.cost) / (random - exact.cost), rel=1e-12)
    assert gap.same_partner_fraction == pytest.approx(float((approx.permutation == exact.permutation).double().mean()))
    assert 0 <= gap.relative_gap < 0.03
    assert 0 <= gap.improvement_lost < 0.15
    assert set(gap.as_dict()) >= {"relative_gap", "improvement_lost", "same_partner_fraction", "n"}
    # refinement helps: zero rounds lose more of the OT gain
    rough = approximation_gap(x0, x1, blockwise_assignment(x0, x1, block_size=64, refine_rounds=0), exact)
    assert rough.improvement_lost > gap.improvement_lost
    # a deliberately bad "approximation" (the identity) is reported as such
    ident = Assignment(torch.arange(512), float(pair_costs(x0, x1).mean()), "blockwise", 1, 512, 0, (), 0.0)
    bad = approximation_gap(x0, x1, ident, exact)
    assert bad.improvement_lost == pytest.approx((ident.cost - exact.cost) / (random - exact.cost), rel=1e-12)
    assert bad.improvement_lost > 0.5


def test_ot_assignment_switches_to_blockwise_above_max_exact() -> None:
    x0, x1 = noise_and_images(30, shape=(1, 4, 4))
    assert ot_assignment(x0, x1, max_exact=30).method == "exact"
    assert ot_assignment(x0, x1, max_exact=29, block_size=8).method == "blockwise"
    with pytest.raises(ConfigError, match="blockwise"):
        ot_assignment(x0, x1, method="exact", max_exact=29)
    with pytest.raises(ConfigError, match="unknown OT method"):
        ot_assignment(x0, x1, method="sinkhorn")  # type: ignore[arg-type]


def test_adversarial_pairs_shuffle_the_ot_partners() -> None:
    x0, x1 = noise_and_images(25, shape=(1, 4, 4))
    assignment = exact_assignment(x0, x1)
    pairs = adversarial_pairs(x0, x1, assignment, torch.Generator().manual_seed(0))
    assert torch.equal(pairs.original_x1, x1[assignment.permutation])
    assert not bool((pairs.permutation == torch.arange(25)).any())  # a derangement: nobody keeps its OT partner
    assert torch.equal(pairs.x1, x1[assignment.permutation][pairs.permutation])
    with pytest.raises(ShapeError, match="these very sets"):
        adversarial_pairs(x0[:24], x1[:24], assignment)


def test_bad_inputs_name_problem_and_fix() -> None:
    x0, x1 = noise_and_images(6, shape=(1, 4, 4))
    with pytest.raises(ShapeError, match="one noise sample per image"):
        exact_assignment(x0, x1[:5])
    with pytest.raises(ShapeError, match="images' shape"):
        exact_assignment(x0, torch.rand(6, 1, 3, 3))
    with pytest.raises(DataError, match="non-finite"):
        exact_assignment(x0, x1.clone().index_fill_(0, torch.tensor([2]), float("nan")))
    with pytest.raises(ConfigError, match="block_size"):
        blockwise_assignment(x0, x1, block_size=1)
    with pytest.raises(ConfigError, match="refine_rounds"):
        blockwise_assignment(x0, x1, refine_rounds=-1)
    with pytest.raises(DataError, match="at least one"):
        exact_assignment(x0[:0], x1[:0])
