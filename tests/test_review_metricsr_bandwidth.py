"""flowvar.metrics after the metricsR review (session 35): a bandwidth far above the data's scale (every kernel value
within 1e-8 of 1) warns and is recorded."""

from __future__ import annotations

import warnings

import pytest
import torch

from flowvar import metrics
from flowvar.metrics import mmd2

F64 = torch.float64


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


# ---------------------------------------------------------------------------------------------- 5. saturated kernel


def test_mmd_warns_and_records_when_the_kernel_saturates(gen: torch.Generator) -> None:
    x, y = randn(gen, 30, 3), randn(gen, 30, 3)
    with pytest.warns(metrics.BandwidthWarning, match="far above the distances") as info:
        res = mmd2(x, y + 5.0, bandwidth=1e6)
    assert "\n" not in str(info[0].message)
    assert res.kernel_saturates and not res.kernel_vanishes
    assert 1 - min(res.mean_kxx, res.mean_kyy, res.mean_kxy) < metrics.KERNEL_SATURATES_WITHIN
    # the same samples at the data's scale: no warning, nothing recorded
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        near = mmd2(x, y + 5.0, bandwidth=3.0)
    assert not near.kernel_saturates and near.mmd2 > 0.5


@pytest.mark.parametrize("bandwidth", ["median", "multi"])
@pytest.mark.parametrize("offset", [0.0, 1e-6, 1e6])
def test_the_median_heuristic_never_saturates(gen: torch.Generator, bandwidth: str, offset: float) -> None:
    # h² = median d²/2 puts half the pairs at k <= e^-1, so a mean kernel value within 1e-8 of 1 cannot occur; that
    # holds for nearly identical samples (the memorisation regime) and for clustered ones too
    y = randn(gen, 200, 5) * 3 + offset
    for x in (y + 1e-6 * randn(gen, 200, 5), randn(gen, 200, 5), torch.cat([y[:190], y[:10] + 1e3])):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            res = mmd2(x, y, bandwidth=bandwidth)
        assert not res.kernel_saturates and not res.kernel_vanishes


def test_one_point_per_set_saturates_on_the_cross_mean_alone(gen: torch.Generator) -> None:
    with pytest.warns(metrics.BandwidthWarning):
        one = mmd2(randn(gen, 1, 2), randn(gen, 1, 2), bandwidth=1e8, estimator="biased")
    assert one.kernel_saturates
