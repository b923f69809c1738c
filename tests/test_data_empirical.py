"""``Empirical`` data must be real floating point: complex data lost their imaginary part inside the coupling (torch's
"Casting complex values to real discards the imaginary part" the only sign) and integer pixels trained on 0..255 with
no word, though the audit refuses the same arrays in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowvar.couplings import IndependentCoupling
from flowvar.distributions import Empirical, StandardNormal
from flowvar.errors import DataError


@pytest.mark.parametrize("data", [
    torch.tensor([[1 + 1j, 2 + 0j], [0j, 1j]]),
    torch.randint(0, 255, (50, 3)),
    torch.ones(4, 2, dtype=torch.bool),
    np.arange(12, dtype=np.uint8).reshape(6, 2),
], ids=["complex", "int64", "bool", "numpy-uint8"])
def test_empirical_refuses_data_that_is_not_real_floating_point(data: object) -> None:
    with pytest.raises(DataError, match=r"Empirical data must be a floating-point tensor, got dtype torch\.\w+; pass "
                                        r"Empirical data\.float\(\)"):
        Empirical(data)  # type: ignore[arg-type]


def test_empirical_float_data_still_feed_a_coupling() -> None:
    data = torch.arange(8, dtype=torch.float64).reshape(4, 2)
    coupling = IndependentCoupling(StandardNormal(2, torch.float64), Empirical(data))
    pairs = coupling.sample(5, torch.Generator().manual_seed(0))
    assert pairs.x1.dtype == torch.float64 and pairs.x0.shape == (5, 2)
    assert all(any(torch.equal(row, d) for d in data) for row in pairs.x1)
