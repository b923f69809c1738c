"""Review integR 2: ``gradient_variance(method="autograd")`` on a model that carries a monitor and is compiled in place.

``model.compile()`` compiles the module in place and keeps the monitor's forward hooks (flowvar.variance.owned) on
it, so torch.func's vmap over that module made dynamo trace the hooks under functorch's batching, which failed with a
bare ``AssertionError: False != True`` from inside dynamo. The autograd method now differentiates the module's own
Python forward (the compiler's "force_eager" stance, as the engine's fallback does), which is what the compiled code
computes: its trace must equal the one-pass engine's (method="fast") and the uncompiled model's.
"""

from __future__ import annotations

import pytest
import torch

from flowvar.interpolants import PathSample
from flowvar.models import MLPField
from flowvar.variance import gradient_variance
from flowvar.variance.monitor import GradientVarianceMonitor

pytestmark = [pytest.mark.skipif(not hasattr(torch.compiler, "set_stance"),
                                 reason="torch.compiler.set_stance: torch >= 2.6"),
              # dynamo tracing the monitor's hooks in the compiled training step (a graph break, nothing of ours)
              pytest.mark.filterwarnings("ignore:Dynamo does not know how to trace the builtin")]


def _path(n: int = 16) -> PathSample:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(n, 2, generator=g, dtype=torch.float64) + 3
    t = torch.rand(n, generator=g, dtype=torch.float64)
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    return PathSample(x0=x0, x1=x1, t=t, z=torch.zeros_like(x0), xt=xt, target=x1 - x0)


def test_autograd_method_on_a_monitored_model_compiled_in_place_agrees_with_fast() -> None:
    path = _path()
    torch.manual_seed(0)
    model = MLPField(2, 16, 1).double()
    reference = gradient_variance(model, path, method="autograd").trace  # uncompiled, no monitor
    monitor = GradientVarianceMonitor(model)
    model.compile(backend="eager")
    try:
        autograd = gradient_variance(model, path, method="autograd")
        fast = gradient_variance(model, path, method="fast")
    finally:
        monitor.close()
        torch._dynamo.reset()
    assert reference > 0
    assert autograd.trace == pytest.approx(fast.trace, rel=1e-10)
    assert autograd.trace == pytest.approx(reference, rel=1e-10)
    # the stance is given back: compiled code runs compiled again afterwards
    assert torch.compiler.is_compiling() is False


def test_the_monitor_still_measures_the_compiled_model_after_an_autograd_cross_check() -> None:
    """The cross-check leaves the monitor's hooks working on the compiled model: a training step measured after it
    equals the uncompiled step's trace (float64)."""
    path = _path(12)
    traces = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = MLPField(2, 16, 1).double()
        monitor = GradientVarianceMonitor(model, t_bins=None)
        if compiled:
            model.compile(backend="eager")
            gradient_variance(model, path, method="autograd")
        try:
            model.zero_grad()
            losses = (model(path.xt, path.t) - path.target).pow(2).sum(1)
            losses.mean().backward()
            traces.append(monitor.step(0, losses)["trace"])
        finally:
            monitor.close()
            torch._dynamo.reset()
    assert traces[1] == pytest.approx(traces[0], rel=1e-9)
