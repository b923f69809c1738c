"""flowvar.audit.core.moments: the entry mean and variance of the data and the pairs (the swapped-files check), in
float64, summed over chunks instead of a float64 copy of the whole training set on the host."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowvar.audit.core import moments


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 22])
def test_chunked_moments_are_numpys_float64_mean_and_variance(dtype: torch.dtype, chunk: int) -> None:
    # a large mean beside a small spread (smaller for float16, whose steps near 1000 are 0.5): a one-pass
    # Σx² − n·mean² would lose the variance's digits
    offset = 10.0 if dtype == torch.float16 else 1000.0
    x = (offset + 0.01 * torch.randn(13, 3, 2, generator=torch.Generator().manual_seed(0))).to(dtype)
    ref = x.double().numpy().reshape(-1)
    mean, var, n = moments(x, chunk=chunk)
    assert n == ref.size == 78
    assert mean == pytest.approx(float(ref.mean()), rel=1e-15, abs=0)
    assert var == pytest.approx(float(ref.var()), rel=1e-9, abs=0)  # population variance (ddof=0), as before
    assert var > 0


def test_moments_of_an_integer_tensor_and_of_no_entries() -> None:
    x = torch.arange(10).reshape(5, 2)
    assert moments(x, chunk=3) == (4.5, float(np.var(np.arange(10.0))), 10)
    mean, var, n = moments(torch.zeros(0, 4))
    assert math.isnan(mean) and math.isnan(var) and n == 0
