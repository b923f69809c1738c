"""The monitor's loss-scale check: the output gradient of a squared error ℓ_i = a‖v_i − u_i‖² gives away a, and only
the usual constants (1, 1/2, 1/D, 1/(2D)) pass silently.

The statistics are those of the backward pass's per-sample terms (divided by the declared reduction and
``loss_scale``); the losses handed to ``step()`` set the loss column, the t-profile's losses and this check. When the
backward pass was of other losses than those (their mean over coordinates, a gradient-accumulation factor) every
logged statistic is off by a constant from the one of the losses given, silently. The old check
accepted every a in [1/(16 D), 16]: torchcfm's README loss ``torch.mean((vt - ut) ** 2)`` with losses summed over
coordinates (a = 1/D²) logged traces 1/64 of the true one at D = 8 and 1/256 at D = 16 without a word, and gradient
accumulation over k micro-batches without ``loss_scale`` (a = 1/k²) too. Each case below: the logged trace against a
torch.func reference of the losses given to ``step()``, and the warning (or its absence)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.func import functional_call, grad, vmap

from flowvar.errors import ConfigError
from flowvar.variance.monitor import GradientVarianceMonitor, LossScaleWarning

F64 = torch.float64
B = 32


def _model(d: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, d)).to(F64)


def _reference_trace(model: torch.nn.Module, x: torch.Tensor, u: torch.Tensor, weight: float, over: str) -> float:
    """tr Cov(g) of ℓ_i = weight × (sum or mean over coordinates of (v_i − u_i)²), torch.func per-sample gradients."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, ui):
        sq = (functional_call(model, p, (xi[None],)) - ui[None]).pow(2)
        return weight * (sq.sum() if over == "sum" else sq.mean())

    per = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, u)
    g = torch.cat([v.reshape(B, -1) for v in per.values()], 1)
    return float((g - g.mean(0)).pow(2).sum(1).mean())


def _run(d: int, *, weight: float = 1.0, over: str = "sum", backward=None, loss_scale: float = 1.0,
         declared: str | None = None):
    """One logged step: losses ``weight`` × (sum|mean over coordinates of (v − u)²) given to step(), the backward pass
    of ``backward(v, u, losses)`` (default: losses.mean()), ``declared`` passed as coordinate_reduction. Returns
    (logged / true trace, LossScaleWarnings)."""
    model = _model(d)
    g = torch.Generator().manual_seed(1)
    x, u = torch.randn(B, 3, generator=g, dtype=F64), 2 * torch.randn(B, d, generator=g, dtype=F64)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    v = model(x)
    sq = (v - u).pow(2)
    losses = weight * (sq.sum(1) if over == "sum" else sq.mean(1))
    (losses.mean() if backward is None else backward(v, u, losses)).backward()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = monitor.step(0, losses, loss_scale=loss_scale, coordinate_reduction=declared)
    monitor.close()
    ratio = record["trace"] / _reference_trace(model, x, u, weight, over)
    return ratio, [w for w in caught if issubclass(w.category, LossScaleWarning)]


def _torchcfm_readme_loss(v, u, losses):
    return torch.mean((v - u) ** 2)  # the mean over batch *and* coordinates, while the losses sum over coordinates


@pytest.mark.parametrize("d", [3, 8, 16])
def test_losses_summed_over_coordinates_but_the_mean_back_propagated_are_warned_about(d):
    """a = 1/D²: every statistic D² too small. The warning names a, D² and the fix."""
    ratio, caught = _run(d, backward=_torchcfm_readme_loss)
    assert math.isclose(ratio, 1 / d ** 2, rel_tol=1e-9)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert f"a = {1 / d ** 2:.4g}" in text and f"D = {d}" in text
    assert "mean over coordinates" in text and f"{d * d} × too small" in text


def test_mistakes_that_map_a_usual_constant_onto_another_cannot_be_seen():
    """D = 2: 1/D² = 1/(2D), the constant of ½ × the mean over coordinates; accumulation over k = 4 at D = 8:
    1/k² = 1/(2D). Usual losses, so no warning, and the logged traces are 1/4 and 1/16 of the true ones (documented
    limit of the check)."""
    ratio, caught = _run(2, backward=_torchcfm_readme_loss)
    assert math.isclose(ratio, 1 / 4, rel_tol=1e-9) and not caught
    ratio, caught = _run(8, backward=lambda v, u, losses: losses.mean() / 4)
    assert math.isclose(ratio, 1 / 16, rel_tol=1e-9) and not caught


def test_declaring_the_coordinate_reduction_sees_the_torchcfm_readme_loss_at_d_2():
    """torchcfm's README at D = 2 (its 2-D tutorials): losses summed over coordinates, torch.mean((v − u) ** 2)
    back-propagated, the logged trace ¼ of the true one — silent above; with coordinate_reduction="sum" only
    a ∈ {1, 1/2} pass, so a = 1/4 is warned about, naming the mean over coordinates."""
    ratio, caught = _run(2, backward=_torchcfm_readme_loss, declared="sum")
    assert math.isclose(ratio, 1 / 4, rel_tol=1e-9)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "a = 0.25 " in text and "coordinate_reduction='sum'" in text
    assert "mean over coordinates" in text and "4 × too small" in text


@pytest.mark.parametrize(("d", "k", "over"), [(2, 2, "sum"), (4, 2, "sum"), (8, 4, "sum"), (16, 4, "sum")])
def test_declaring_the_coordinate_reduction_sees_accumulation_without_loss_scale(d, k, over):
    """(loss / k).backward() without loss_scale: a = 1/k², a usual constant (silent) when k² = D or 2D — but not one
    of the declared 'sum' convention's, so warned about, naming k; with loss_scale=1/k exact and silent. (Losses that
    are a mean over coordinates give a = 1/(D k²), never usual: warned about without a declaration.)"""
    def divided(v, u, losses):
        return losses.mean() / k

    ratio, caught = _run(d, over=over, backward=divided)
    assert math.isclose(ratio, 1 / k ** 2, rel_tol=1e-9) and not caught
    ratio, caught = _run(d, over=over, backward=divided, declared=over)
    assert math.isclose(ratio, 1 / k ** 2, rel_tol=1e-9)
    assert len(caught) == 1 and f"k = {k} micro-batches" in str(caught[0].message)
    ratio, caught = _run(d, over=over, backward=divided, loss_scale=1 / k, declared=over)
    assert math.isclose(ratio, 1.0, rel_tol=1e-9) and not caught


@pytest.mark.parametrize("d", [1, 2, 3, 8])
@pytest.mark.parametrize(("weight", "over"), [(1.0, "sum"), (0.5, "sum"), (1.0, "mean"), (0.5, "mean")])
def test_the_usual_squared_errors_declared_right_are_silent(d, weight, over):
    ratio, caught = _run(d, weight=weight, over=over, declared=over)
    assert math.isclose(ratio, 1.0, rel_tol=1e-9) and not caught


def test_a_wrong_declaration_is_named_and_a_bad_value_refused():
    """Losses summed over D = 8 coordinates and back-propagated as given (exact), declared 'mean': a = 1 is no
    constant of 'mean', and the warning says the statistics are right and which declaration to pass."""
    ratio, caught = _run(8, declared="mean")
    assert math.isclose(ratio, 1.0, rel_tol=1e-9)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "not a mean as declared" in text and "coordinate_reduction='sum'" in text
    with pytest.raises(ConfigError, match=r"coordinate_reduction must be 'sum' .*got 'coords'"):
        _run(3, declared="coords")


@pytest.mark.parametrize(("d", "k"), [(3, 2), (3, 4), (2, 4), (8, 2)])
def test_gradient_accumulation_without_loss_scale_is_warned_about(d, k):
    """(loss / k).backward() without loss_scale=1/k: a = 1/k², every statistic k² too small; with it, exact and
    silent."""
    def divided(v, u, losses):
        return losses.mean() / k

    ratio, caught = _run(d, backward=divided)
    assert math.isclose(ratio, 1 / k ** 2, rel_tol=1e-9)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert f"k = {k} micro-batches" in text and f"loss_scale=1/{k}" in text
    ratio, caught = _run(d, backward=divided, loss_scale=1 / k)
    assert math.isclose(ratio, 1.0, rel_tol=1e-9) and not caught


@pytest.mark.parametrize("d", [3, 8])
@pytest.mark.parametrize(("weight", "over"), [(1.0, "sum"), (0.5, "sum"), (1.0, "mean"), (0.5, "mean")])
def test_the_usual_squared_errors_are_silent(d, weight, over):
    """‖v − u‖², ½‖v − u‖², the mean over coordinates and half of it, each back-propagated as given: exact, silent."""
    ratio, caught = _run(d, weight=weight, over=over)
    assert math.isclose(ratio, 1.0, rel_tol=1e-9)
    assert not caught


def test_a_deliberate_loss_weight_is_named_and_can_be_filtered():
    """ℓ_i = 5‖v − u‖² is measured right (g_i = ∇ℓ_i) but a = 5 is no usual constant: warned, naming the weight and
    the filter, which silences it."""
    ratio, caught = _run(3, weight=5.0)
    assert math.isclose(ratio, 1.0, rel_tol=1e-9)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "a = 5 " in text and "deliberate loss weight" in text
    assert "warnings.filterwarnings('ignore', category=LossScaleWarning)" in text
    with warnings.catch_warnings():
        warnings.filterwarnings("error")
        warnings.filterwarnings("ignore", category=LossScaleWarning)
        _run(3, weight=5.0)


def test_the_mean_over_coordinates_given_and_the_sum_back_propagated_is_warned_about():
    """The reverse mix-up: a = D, every statistic D² too large."""
    ratio, caught = _run(8, over="mean", backward=lambda v, u, losses: (v - u).pow(2).sum(1).mean())
    assert math.isclose(ratio, 64.0, rel_tol=1e-9)
    assert len(caught) == 1 and "64 × too large" in str(caught[0].message)


def test_the_statistics_are_of_the_backward_pass_and_the_loss_column_of_the_losses_given():
    """Per-sample weights w_i ∈ [0.5, 1.5] in the backward pass only ((w · ℓ).mean()), the unweighted ℓ given to
    step(): the logged trace is that of the weighted terms' per-sample gradients ∇(w_i ℓ_i) (torch.func, 1e-10), not
    of ∇ℓ_i; the loss column is the unweighted mean; a_i varies, so the scale check says nothing
    (docs/gradient_variance.md, "The loss-scale check")."""
    d = 3
    model = _model(d)
    g = torch.Generator().manual_seed(1)
    x, u = torch.randn(B, 3, generator=g, dtype=F64), 2 * torch.randn(B, d, generator=g, dtype=F64)
    w = 0.5 + torch.rand(B, generator=g, dtype=F64)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    losses = (model(x) - u).pow(2).sum(1)
    (w * losses).mean().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LossScaleWarning)
        record = monitor.step(0, losses)
    monitor.close()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def weighted(p, xi, ui, wi):
        return wi * (functional_call(model, p, (xi[None],)) - ui[None]).pow(2).sum()

    per = vmap(grad(weighted), in_dims=(None, 0, 0, 0))(params, x, u, w)
    gw = torch.cat([v.reshape(B, -1) for v in per.values()], 1)
    assert math.isclose(record["trace"], float((gw - gw.mean(0)).pow(2).sum(1).mean()), rel_tol=1e-10)
    assert not math.isclose(record["trace"], _reference_trace(model, x, u, 1.0, "sum"), rel_tol=1e-2)
    assert math.isclose(record["loss"], float(losses.detach().mean()), rel_tol=1e-12)
