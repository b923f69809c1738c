"""The shapes of ``t`` that :meth:`GradNormEngine.compute` bins.

``t`` was flattened before its shape was checked, so a (4, 4) ``t`` for a batch of 16 (the times transposed, or any
layout other than one time per row) was binned in flattened order — each sample's loss and gradient went to another
sample's time bin, silently — and a ``t`` of the wrong length was reported as "t must have shape (16,)" whatever
layout was given. Now ``t`` must hold one time per sample along its first dimension: (B,), (B, 1), (B, 1, 1, 1)
(broadcastable layouts people use) — any shape whose ``squeeze()`` is (B,); any other shape is refused with the
accepted forms named.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from flowvar.errors import ShapeError
from flowvar.variance import GradNormEngine

B = 16
BINS = 4


def _bin_mean_losses(t: Tensor) -> tuple[list[int], list[float], Tensor, Tensor]:
    """One pass of a small model on B samples; the engine's per-bin counts and mean losses for ``t`` given as is,
    and the losses and the flat times (B,) they belong to."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    x = torch.randn(B, 2, dtype=torch.float64)
    with GradNormEngine(model) as engine:
        losses = (model(x) - 1).pow(2).sum(1)
        losses.mean().backward()
        bins = engine.compute(reduction="mean", losses=losses, t=t, t_bins=BINS).bins()
    return bins.counts.tolist(), bins.mean_loss.tolist(), losses.detach(), t.reshape(-1)


def _expected_mean_losses(losses: Tensor, t_flat: Tensor) -> list[float]:
    index = (t_flat * BINS).long().clamp(max=BINS - 1)
    return [float(losses[index == k].mean()) for k in range(BINS)]


# times chosen so that every bin holds a different set of samples in row order and in flattened-(4, 4) order
TIMES = torch.linspace(0.01, 0.99, B, dtype=torch.float64)[
    torch.randperm(B, generator=torch.Generator().manual_seed(3))]


@pytest.mark.parametrize("shape", [(B,), (B, 1), (B, 1, 1, 1), (1, B)])
def test_one_time_per_sample_in_any_broadcastable_layout_is_binned_by_sample(shape: tuple[int, ...]) -> None:
    counts, mean_loss, losses, _ = _bin_mean_losses(TIMES.reshape(shape))
    expected = _expected_mean_losses(losses, TIMES)
    assert counts == torch.bincount((TIMES * BINS).long(), minlength=BINS).tolist()
    assert mean_loss == pytest.approx(expected, rel=1e-12)


def test_a_square_t_is_refused_not_binned_in_flattened_order() -> None:
    """(4, 4) has B = 16 elements: it was binned as t.reshape(-1), pairing sample i with another sample's time."""
    transposed = TIMES.reshape(4, 4).T
    assert not torch.equal(transposed.reshape(-1), TIMES)  # flattened order is not sample order
    with pytest.raises(ShapeError, match=r"t must have shape \(16,\), got \(4, 4\); accepted: \(16,\), \(16, 1\) or "
                                         r"\(16, 1, 1, 1\)"):
        _bin_mean_losses(transposed)


@pytest.mark.parametrize("shape", [(10,), (10, 1), (1, 10), (16, 2), (2, 8)])
def test_a_wrong_shape_names_the_shape_given_and_the_accepted_forms(shape: tuple[int, ...]) -> None:
    t = torch.rand(shape, dtype=torch.float64)
    given = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    with pytest.raises(ShapeError) as info:
        _bin_mean_losses(t)
    message = str(info.value)
    assert message.startswith(f"t must have shape (16,), got {given}; accepted: (16,), (16, 1) or (16, 1, 1, 1)")
    assert "\n" not in message
