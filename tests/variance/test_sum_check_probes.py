"""The default sum check's random probes (flowvar.variance.records.Collector): ⟨G, R_j⟩ formed as u_jᵀ G v_j when
R_j = u_j v_jᵀ is the weight's own layout must equal the materialised ⟨G, R_j⟩, and the check must flag a
weight-only regulariser (the bias sums cannot see it) on every layer kind that checks by probes, while the same
pass without it passes."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from flowvar.errors import DataError
from flowvar.variance import GradNormEngine
from flowvar.variance.records import N_PROBES, Collector, RuleContext

B = 8


def _collector(shape: tuple[int, ...]) -> Collector:
    ctx = RuleContext(B=B, want_grad_sum=set(), want_sq_sum=False, segments=None, n_segments=1, chunk_bytes=1 << 20,
                      fallback_chunk=B, check=True)
    return Collector("w", torch.Size(shape), ctx, probes={})


@pytest.mark.parametrize("shape, view", [
    ((5, 7), lambda g: g[:, 0]),  # nn.Linear
    ((4, 3, 2, 2), lambda g: g.reshape(g.shape[0], 4, 3, 2, 2)),  # ungrouped Conv2d: (O, C·kh·kw) row-major
])
def test_factored_probe_equals_the_materialised_one(shape, view):
    c = _collector(shape)
    O, K = shape[0], int(torch.tensor(shape[1:]).prod())
    D, A = torch.randn(B, 1, 3, O, dtype=torch.float64), torch.randn(B, 1, 3, K, dtype=torch.float64)
    c.add_probe(D, A, view)
    assert c.probe_factors is not None and c.probe is not None and c.probe_sum is not None
    G = torch.randn(shape, dtype=torch.float64)
    u, v = c.probe_factors
    factored = torch.linalg.vecdot(u @ G.reshape(O, K), v)
    assert torch.allclose(factored, c.probe.reshape(N_PROBES, -1) @ G.reshape(-1), rtol=1e-12, atol=1e-12)
    # and the accumulated probe sums are ⟨Σ_i g_i, R_j⟩ of the materialised per-sample gradients
    total = view((D.transpose(-1, -2) @ A).sum(0, keepdim=True)).reshape(-1)
    assert torch.allclose(c.probe_sum, c.probe.reshape(N_PROBES, -1) @ total, rtol=1e-12)


def test_a_grouped_weight_keeps_the_materialised_probe():
    """Grouped layouts are not u vᵀ in the weight's (O, K) rows: no factors, the engine uses R_j."""
    c = _collector((6, 2))
    D, A = torch.randn(B, 3, 1, 2), torch.randn(B, 3, 1, 2)
    c.add_probe(D, A, lambda g: g.reshape(g.shape[0], 6, 2))
    assert c.probe_factors is None and c.probe is not None


class Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.head = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.conv(x)).flatten(1))


class Sequence(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.proj(x)).mean(1))


@pytest.mark.parametrize("make, shape, weight", [
    (lambda: nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), (4,), "0.weight"),
    (Conv, (2, 5, 5), "conv.weight"),
    (Sequence, (20, 6), "proj.weight"),
])
def test_the_default_check_flags_a_weight_only_regulariser(make, shape, weight):
    torch.manual_seed(0)
    model = make()
    x, y = torch.randn(B, *shape), torch.randn(B, 3)
    for extra in (0.0, 1e-2):  # (1e-3 moves these traces by ~1e-5 relative: within float32's tolerance, by design)
        model.zero_grad()
        with GradNormEngine(model) as engine:
            losses = (model(x) - y).pow(2).sum(1)
            loss = losses.mean() + extra * dict(model.named_parameters())[weight].pow(2).sum()
            loss.backward()
            if extra:
                with pytest.raises(DataError, match="do not add up"):
                    engine.compute(losses=losses)
            else:
                assert engine.compute(losses=losses).fallback == {}
