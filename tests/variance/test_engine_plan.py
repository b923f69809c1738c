"""A model changed after its GradNormEngine was built: the engine measures what it planned, so it must refuse what it
did not plan rather than leave it out.

A raw engine used to measure only the parameters present at construction: a head appended afterwards gave trace
0.321 against the true 2.470 with no error and no fallback listed (the new parameters carry no hook, so the sum check
cannot see them), and a BatchNorm in training mode put in place of an ``nn.Identity`` afterwards was measured
without the coupling error it gets when present at construction (its module list was fixed in ``__init__``). Only
the monitor checked the model, with a check of its own. Now ``compute()`` surveys the model on every call, and the
monitor words the same finding with its own remedy.
"""

from __future__ import annotations

import pytest
import torch
from per_sample_reference import F64, reference, rel
from torch import nn

from flowvar.errors import ConfigError
from flowvar.variance import GradientVarianceMonitor, GradNormEngine
from flowvar.variance.engine import UnplannedParametersError

B = 6


def trace_of(per_sample: dict[str, torch.Tensor]) -> float:
    """tr Cov(g) = (1/B) Σ_i ‖g_i‖² − ‖ḡ‖² from {name: (B, *shape)} per-sample gradients."""
    return sum(float(g.flatten(1).pow(2).sum(1).mean() - g.mean(0).pow(2).sum()) for g in per_sample.values())


def measured(model: nn.Module, engine: GradNormEngine, x: torch.Tensor) -> float:
    losses = model(x).pow(2).sum(1)
    losses.mean().backward()
    return engine.compute(losses=losses).trace


def test_a_layer_appended_after_the_engine_was_built_is_refused_naming_its_parameters(gen):
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh()).to(F64)
    engine = GradNormEngine(model)
    model.append(nn.Linear(8, 2).to(F64))
    x = torch.randn(B, 3, generator=gen, dtype=F64)
    with pytest.raises(UnplannedParametersError, match=r"'2\.weight', '2\.bias'; in module '2'\).*"
                                                       r"engine\.detach\(\), then GradNormEngine\(model\)") as caught:
        measured(model, engine, x)
    assert isinstance(caught.value, ConfigError)
    assert caught.value.parameters == ["2.weight", "2.bias"]
    engine.detach()
    model.zero_grad()
    with GradNormEngine(model) as rebuilt:  # the remedy works: every parameter measured, exactly
        got = measured(model, rebuilt, x)
    assert rel(torch.tensor(got), torch.tensor(trace_of(reference(model, x, torch.zeros(B, 2, dtype=F64))))) < 1e-10


def test_what_the_plan_reads_by_name_is_still_measured(gen):
    """Parameters reassigned on a planned module (the rule and the fallback read the module's current ones) and
    parameters frozen at construction and unfrozen later are not new modules: measured, not refused."""
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).to(F64)
    model[2].weight.requires_grad_(False)
    engine = GradNormEngine(model)
    model[0].weight = nn.Parameter(torch.randn(8, 3, generator=gen, dtype=F64))
    model[2].weight.requires_grad_(True)
    x = torch.randn(B, 3, generator=gen, dtype=F64)
    got = measured(model, engine, x)
    engine.detach()
    assert rel(torch.tensor(got), torch.tensor(trace_of(reference(model, x, torch.zeros(B, 2, dtype=F64))))) < 1e-10


@pytest.mark.parametrize("affine", [True, False])
def test_a_batchnorm_in_training_mode_put_in_after_the_engine_was_built_is_refused_as_coupling(gen, affine):
    """affine=False: no parameters, so only the survey of the coupling modules sees it; affine=True: the coupling is
    named before the new parameters (a new engine would refuse it too)."""
    model = nn.Sequential(nn.Linear(3, 8), nn.Identity(), nn.Linear(8, 2)).to(F64)
    engine = GradNormEngine(model)
    model[1] = nn.BatchNorm1d(8, affine=affine).to(F64)
    with pytest.raises(ConfigError, match=r"1 \(BatchNorm1d\) normalises with batch statistics"):
        measured(model, engine, torch.randn(B, 3, generator=gen, dtype=F64))
    engine.detach()


def test_the_monitor_words_the_engines_finding_with_its_own_remedy(gen):
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh()).to(F64)
    monitor = GradientVarianceMonitor(model, every=1, t_bins=None, sigma=0.0)
    model.append(nn.Linear(8, 2).to(F64))
    losses = model(torch.randn(B, 3, generator=gen, dtype=F64)).pow(2).sum(1)
    losses.mean().backward()
    with pytest.raises(ConfigError, match=r"step 4: .*added after the monitor was built \('2\.weight', '2\.bias'; in "
                                          r"module '2'\).*Build the GradientVarianceMonitor after the model is final"
                       ) as caught:
        monitor.step(4, losses)
    assert not isinstance(caught.value, UnplannedParametersError)  # the engine's remedy is not the monitor user's
    monitor.close()
