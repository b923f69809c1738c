"""Review otR, finding 4 (images part): flowvar.ot.images' pair_costs and blockwise_assignment check their arguments
in one line instead of raising torch's or Python's own errors (or pricing a non-bijection silently)."""

from __future__ import annotations

import pytest
import torch

from flowvar.errors import ConfigError, DataError, ShapeError
from flowvar.ot import blockwise_assignment, exact_assignment, pair_costs


def _points(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 2, 2, generator=g), torch.rand(n, 1, 2, 2, generator=g)


def test_pair_costs_refuses_a_permutation_that_is_not_a_bijection() -> None:
    """[0, 0, 0] was priced silently (every source with target 0), [0, 0, 5] gave torch's IndexError."""
    x0, x1 = _points(3)
    for bad, outside, repeated in (([0, 0, 0], 0, 2), ([0, 0, 5], 1, 1), ([-1, 1, 2], 1, 0), ([2, 1, 2], 0, 1)):
        with pytest.raises(DataError, match=rf"^permutation must be a bijection of range\(3\) \(every target exactly "
                                            rf"once\), got {outside} entries outside 0\.\.2 and {repeated} repeated; "):
            pair_costs(x0, x1, torch.tensor(bad))
    with pytest.raises(DataError, match=r"^permutation must hold integer indices, got dtype torch.float32"):
        pair_costs(x0, x1, torch.tensor([0.0, 2.0, 1.0]))
    with pytest.raises(ShapeError, match=r"permutation must have shape \(3,\), got \(2,\)"):
        pair_costs(x0, x1, torch.tensor([0, 1]))
    # a bijection is priced from exact differences, as before (a list works too)
    perm = torch.tensor([2, 0, 1])
    expected = (x0.flatten(1).double() - x1.flatten(1).double()[perm]).pow(2).sum(1)
    torch.testing.assert_close(pair_costs(x0, x1, perm), expected, rtol=1e-15, atol=0)
    torch.testing.assert_close(pair_costs(x0, x1, [2, 0, 1]), expected, rtol=1e-15, atol=0)  # type: ignore[arg-type]


def test_pair_costs_block_must_be_a_positive_integer() -> None:
    """block=0 gave Python's "range() arg 3 must not be zero"."""
    x0, x1 = _points(5)
    for bad in (0, -2, 1.5, "4"):
        with pytest.raises(ConfigError, match=r"^block must be a positive integer, got "):
            pair_costs(x0, x1, block=bad)  # type: ignore[arg-type]
    torch.testing.assert_close(pair_costs(x0, x1, block=2), pair_costs(x0, x1, block=1024), rtol=0, atol=0)


def test_blockwise_seed_and_block_are_checked() -> None:
    """seed="a" gave int()'s "invalid literal", seed=2.7 was truncated to 2 silently; block=0 reached range()."""
    x0, x1 = _points(12)
    for bad in ("a", 2.7, -1, True, None, 2**63):
        with pytest.raises(ConfigError, match=r"^blockwise_assignment's seed must be an integer in \[0, 2\*\*63\)"):
            blockwise_assignment(x0, x1, block_size=4, seed=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^block must be a positive integer, got 0"):
        blockwise_assignment(x0, x1, block_size=4, block=0)
    # valid seeds: deterministic per seed, a bijection, and the exact pairing when N <= block_size
    first, again = (blockwise_assignment(x0, x1, block_size=4, refine_rounds=1, seed=7) for _ in range(2))
    assert torch.equal(first.permutation, again.permutation)
    assert sorted(first.permutation.tolist()) == list(range(12))
    whole = blockwise_assignment(x0, x1, block_size=16, seed=0)
    assert torch.equal(whole.permutation, exact_assignment(x0, x1).permutation)
