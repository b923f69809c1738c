"""The public estimators (flowvar.variance.estimate): the trace formula, chunking, Prop 1(A), the t-profile
decomposition, repeated estimates, grouping, and method="fast" (the one-pass engine) against the autograd
numbers."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from per_sample_reference import F64, TOL
from per_sample_reference import rel as max_rel

from flowvar.couplings import IndependentCoupling, RotatedOTCoupling
from flowvar.distributions import StandardNormal
from flowvar.errors import ConfigError, DataError
from flowvar.gaussian import GaussianProblem
from flowvar.interpolants import Interpolant, UniformTime
from flowvar.loss import CFMLoss, per_sample_loss
from flowvar.models import CounterexampleField, GaussianParametricField, MLPField
from flowvar.variance import (
    FastVarianceReport,
    estimate_variance,
    fast_gradient_variance,
    gradient_variance,
    group_name,
    per_sample_gradients,
    repeated_estimates,
    variance_t_profile,
)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def flat(grads: dict[str, torch.Tensor]) -> np.ndarray:
    """(K, P) matrix of flattened per-sample gradients in parameter order."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1).numpy()


def test_trace_formula_matches_numpy_covariance(problem, random_field, gen):
    path = CFMLoss(Interpolant(sigma=0.3)).draw(RotatedOTCoupling(problem, 30.0), 3000, gen)
    G = flat(per_sample_gradients(random_field, path, method="closed_form"))
    rep = gradient_variance(random_field, path)
    K = G.shape[0]
    assert rep.n == K
    assert rel(rep.trace, np.cov(G.T, bias=True).trace()) < 1e-11
    assert rel(rep.trace_unbiased, np.cov(G.T, bias=False).trace()) < 1e-11
    assert rel(rep.trace_unbiased, rep.trace * K / (K - 1)) < 1e-14
    gbar = G.mean(0)
    assert rel(rep.mean_grad_sq_norm, float(gbar @ gbar)) < 1e-12
    assert rel(rep.mean_grad_sq_norm_unbiased, float(gbar @ gbar) - rep.trace_unbiased / K) < 1e-12
    signal = float(gbar @ gbar) - np.cov(G.T, bias=False).trace() / K  # unbiased ‖E g‖²
    assert signal > 0 and rep.normalised is not None
    assert rel(rep.normalised, np.cov(G.T, bias=False).trace() / signal) < 1e-10
    with torch.no_grad():
        assert rel(rep.mean_loss, float(per_sample_loss(random_field, path).mean())) < 1e-12
    assert rel(sum(rep.per_group.values()), rep.trace) < 1e-12
    assert rel(sum(rep.per_group_mean_grad_sq_norm.values()), rep.mean_grad_sq_norm) < 1e-12
    assert rel(rep.per_group["theta"], np.cov(G[:, :2].T, bias=True).trace()) < 1e-11
    np.testing.assert_allclose(rep.mean_grad["Theta"].numpy(), gbar[2:].reshape(2, 2), rtol=1e-12, atol=1e-12)
    assert rep.minibatch_trace(64) == rep.trace / 64


def test_chunking_invariance(problem, random_field, gen):
    path = CFMLoss(Interpolant(sigma=0.3)).draw(RotatedOTCoupling(problem, 90.0), 1000, gen)
    ref = gradient_variance(random_field, path, chunk_size=1000)
    for chunk in (1, 7, 64, 999):
        rep = gradient_variance(random_field, path, chunk_size=chunk)
        assert rel(rep.trace, ref.trace) < 1e-12
        assert rel(rep.mean_grad_sq_norm, ref.mean_grad_sq_norm) < 1e-12
        assert rel(rep.per_group["Theta"], ref.per_group["Theta"]) < 1e-12
    torch.manual_seed(1)
    mlp = MLPField(2, width=16, depth=2).double()
    ref = gradient_variance(mlp, path, chunk_size=1000)
    for chunk in (3, 100):
        assert rel(gradient_variance(mlp, path, chunk_size=chunk).trace, ref.trace) < 1e-12


def test_variance_at_zero_field_matches_analytic_value(problem, gen):
    """v ≡ 0 (θ = 0, Θ = 0) under OT: g_θ = −2(x1 − x0) = −2(μ + (M^{1/2} − I) x0), so
    tr Cov(g_θ) = 4 ‖M^{1/2} − I‖_F² = 4((2 − 1)² + (0.5 − 1)²) = 5, and E g_θ = −2μ, ‖E g_θ‖² = 200."""
    model = GaussianParametricField(2)
    rep = estimate_variance(model, CFMLoss(Interpolant(0.0)), RotatedOTCoupling(problem, 0.0), 40000, gen,
                            draw_chunk=10000)
    assert rep.n == 40000
    assert abs(rep.per_group["theta"] - 5.0) < 0.2  # Monte-Carlo SE ≈ 0.05
    assert abs(rep.per_group_mean_grad_sq_norm["theta"] - 200.0) < 2.0


def test_minibatch_variance_is_trace_over_batch(problem, random_field, gen):
    """The covariance trace of minibatch-mean gradients over many minibatches ≈ tr Cov(g) / B."""
    B, n_batches = 32, 600
    path = CFMLoss(Interpolant(sigma=0.3)).draw(RotatedOTCoupling(problem, 120.0), B * n_batches, gen)
    G = flat(per_sample_gradients(random_field, path, method="closed_form"))
    batch_means = G.reshape(n_batches, B, -1).mean(1)
    empirical = np.cov(batch_means.T, bias=False).trace()
    predicted = gradient_variance(random_field, path).minibatch_trace(B)
    assert abs(empirical / predicted - 1) < 0.2  # relative SE of the empirical trace ≈ 6%


@pytest.mark.parametrize("angle", [0.0, 30.0, 60.0, 90.0, 120.0])
def test_prop1a_pair_optimal_field_has_zero_loss_and_variance(problem, gen, angle):
    coupling = RotatedOTCoupling(problem, angle)
    field = problem.pair_optimal_field(coupling.rotation)
    rep = estimate_variance(field, CFMLoss(Interpolant(0.0)), coupling, 10000, gen)
    assert rep.method == "closed_form"
    assert rep.trace < 1e-20 and rep.mean_loss < 1e-20
    noisy = estimate_variance(field, CFMLoss(Interpolant(0.05)), coupling, 10000, gen)
    assert noisy.trace > 1e-4 and noisy.mean_loss > 1e-4


def test_prop1a_with_autograd(problem, gen):
    coupling = RotatedOTCoupling(problem, 120.0)
    field = problem.pair_optimal_field(coupling.rotation)  # frozen by default: still differentiated
    rep = estimate_variance(field, CFMLoss(Interpolant(0.0)), coupling, 300, gen, method="autograd")
    assert rep.method == "autograd-loop" and set(rep.per_group) == {"theta", "Theta"}
    assert rep.trace < 1e-20 and rep.mean_loss < 1e-20


def test_t_profile_decomposes_total(problem, random_field):
    loss = CFMLoss(Interpolant(sigma=0.3))
    coupling = RotatedOTCoupling(problem, 60.0)
    n_bins, n = 5, 400
    prof = variance_t_profile(random_field, loss, coupling, n, n_bins, torch.Generator().manual_seed(3))
    np.testing.assert_allclose(prof.edges, np.linspace(0, 1, n_bins + 1))
    np.testing.assert_allclose(prof.centres, np.arange(n_bins) / n_bins + 0.1)
    assert prof.traces.shape == (n_bins,) and prof.n_per_bin == n
    for rep, tr in zip(prof.reports, prof.traces):
        assert rel(sum(rep.per_group.values()), tr) < 1e-12
        # plug-in per bin (as documented, unlike the engine's unbiased bins); the unbiased one is in the report
        assert tr == rep.trace and rel(rep.trace_unbiased, tr * n / (n - 1)) < 1e-14
    # Redraw the same paths bin by bin (same generator, same order), pool them, compare.
    gen = torch.Generator().manual_seed(3)
    paths = [CFMLoss(loss.interpolant, UniformTime(prof.edges[b], prof.edges[b + 1])).draw(coupling, n, gen)
             for b in range(n_bins)]
    for b, p in enumerate(paths):
        assert bool(((p.t >= prof.edges[b]) & (p.t <= prof.edges[b + 1])).all())
        assert rel(gradient_variance(random_field, p).trace, prof.traces[b]) < 1e-12
    pooled = gradient_variance(random_field, paths[0].__class__(
        *(torch.cat([getattr(p, f) for p in paths]) for f in ("x0", "x1", "t", "z", "xt", "target"))))
    assert rel(prof.total, pooled.trace) < 1e-12
    assert prof.between > 0 and rel(prof.within + prof.between, prof.total) < 1e-15
    assert rel(float(prof.mean_losses.mean()), pooled.mean_loss) < 1e-12
    assert prof.traces.max() > 2 * prof.traces.min()  # the variance does depend on t here


def test_repeated_estimates_are_reproducible_and_independent(problem, random_field):
    loss, coupling = CFMLoss(Interpolant(0.3)), RotatedOTCoupling(problem, 30.0)
    a = repeated_estimates(random_field, loss, coupling, 500, repeats=4, seed=10)
    b = repeated_estimates(random_field, loss, coupling, 500, repeats=4, seed=10)
    assert a.shape == (4,) and np.array_equal(a, b)
    assert len(set(a.tolist())) == 4
    third = estimate_variance(random_field, loss, coupling, 500, torch.Generator().manual_seed(12))
    assert a[2] == third.trace
    losses = repeated_estimates(random_field, loss, coupling, 500, repeats=2, seed=10, statistic="mean_loss")
    assert losses[0] == estimate_variance(random_field, loss, coupling, 500,
                                          torch.Generator().manual_seed(10)).mean_loss


def test_group_by_module_and_callable(gen):
    torch.manual_seed(0)
    mlp = MLPField(2, width=8, depth=2).double()
    coupling = IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64))
    path = CFMLoss(Interpolant(0.0)).draw(coupling, 50, gen)
    by_param = gradient_variance(mlp, path)
    by_module = gradient_variance(mlp, path, group_by="module")
    assert set(by_module.per_group) == {"net.0", "net.2", "net.4"}
    assert rel(by_module.per_group["net.2"], by_param.per_group["net.2.weight"] + by_param.per_group["net.2.bias"]) \
        < 1e-14
    by_kind = gradient_variance(mlp, path, group_by=lambda name: name.rsplit(".", 1)[1])
    assert set(by_kind.per_group) == {"weight", "bias"}
    assert rel(sum(by_kind.per_group.values()), by_param.trace) < 1e-12
    assert group_name("theta", "module") == "theta"
    with pytest.raises(ConfigError, match="group_by"):
        group_name("theta", "layer")  # type: ignore[arg-type]


def test_trainable_only(problem, random_field, gen):
    path = CFMLoss(Interpolant(0.3)).draw(RotatedOTCoupling(problem, 0.0), 200, gen)
    random_field.theta.requires_grad_(False)
    for method in ("closed_form", "autograd"):
        rep = gradient_variance(random_field, path, method=method, trainable_only=True)  # type: ignore[arg-type]
        assert set(rep.per_group) == {"Theta"}
    full = gradient_variance(random_field, path)
    assert set(full.per_group) == {"theta", "Theta"}
    random_field.Theta.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        gradient_variance(random_field, path, trainable_only=True)


def test_errors(problem, gen):
    path = CFMLoss(Interpolant(0.1)).draw(RotatedOTCoupling(problem, 0.0), 10, gen)
    mlp = MLPField(2, width=4, depth=1).double()
    with pytest.raises(ConfigError, match="closed_form"):
        gradient_variance(mlp, path, method="closed_form")
    with pytest.raises(ConfigError, match="unknown method"):
        gradient_variance(mlp, path, method="exact")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="has no parameters"):
        gradient_variance(CounterexampleField(), path)
    one = CFMLoss(Interpolant(0.1)).draw(RotatedOTCoupling(problem, 0.0), 1, gen)
    with pytest.raises(DataError, match="at least 2"):
        gradient_variance(mlp, one)
    with pytest.raises(ConfigError, match="t_range"):
        variance_t_profile(mlp, CFMLoss(), RotatedOTCoupling(problem, 0.0), 10, 2, gen, t_range=(0.5, 0.5))
    with pytest.raises(ConfigError, match="statistic"):
        repeated_estimates(mlp, CFMLoss(), RotatedOTCoupling(problem, 0.0), 10, 2, statistic="std")  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mlp_field_trace_and_elementwise_match_autograd(dtype, gen):
    """The time-conditioned MLP: trace, per-group, normalised and element-wise variance vs torch.func."""
    torch.manual_seed(0)
    model = MLPField(3, width=32, depth=2).to(dtype)
    coupling = IndependentCoupling(StandardNormal(3, dtype), StandardNormal(3, dtype))
    path = CFMLoss(Interpolant(sigma=0.1)).draw(coupling, 200, gen)
    fast = fast_gradient_variance(model, path, chunk_size=64, elementwise=True, validate=True)
    m64 = copy.deepcopy(model).to(F64)
    ref_grads = per_sample_gradients(m64, type(path)(**{k: getattr(path, k).to(F64) for k in
                                                        ("x0", "x1", "t", "z", "xt", "target")}))
    flat = torch.cat([g.reshape(200, -1) for g in ref_grads.values()], 1)
    mean = flat.mean(0)
    trace = float((flat - mean).pow(2).sum(1).mean())
    tol = TOL[dtype]
    assert isinstance(fast, FastVarianceReport) and fast.method == "fast" and fast.n == 200
    assert math.isclose(fast.trace, trace, rel_tol=tol)
    assert math.isclose(fast.mean_grad_sq_norm, float(mean.pow(2).sum()), rel_tol=tol)
    trace_u = trace * 200 / 199
    assert math.isclose(fast.normalised, trace_u / (float(mean.pow(2).sum()) - trace_u / 200), rel_tol=10 * tol)
    for name, g in ref_grads.items():
        var = g.reshape(200, -1).var(0, unbiased=False).reshape(g.shape[1:])
        assert max_rel(fast.elementwise[name], var) < 10 * tol, name
        assert math.isclose(fast.per_group[name], float(var.sum()), rel_tol=10 * tol, abs_tol=1e-12 * trace)
    assert fast.per_layer.keys() == {"net.0", "net.2", "net.4"}
    assert math.isclose(sum(fast.per_layer.values()), fast.trace, rel_tol=1e-12)
    assert fast.fallback == {}


def test_variance_module_routes_fast_method(gen):
    """gradient_variance / estimate_variance(method="fast") give the autograd numbers; per_sample_gradients refuses."""
    torch.manual_seed(0)
    model = MLPField(2, width=16, depth=2).to(F64)
    coupling = IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64))
    loss = CFMLoss(Interpolant(sigma=0.2))
    path = loss.draw(coupling, 150, gen)
    slow = gradient_variance(model, path, method="autograd", group_by="module")
    fast = gradient_variance(model, path, method="fast", chunk_size=40, group_by="module")
    for key in ("trace", "trace_unbiased", "mean_grad_sq_norm", "normalised", "mean_loss"):
        assert math.isclose(getattr(fast, key), getattr(slow, key), rel_tol=1e-10), key
    assert fast.per_group.keys() == slow.per_group.keys()
    for k in slow.per_group:
        assert math.isclose(fast.per_group[k], slow.per_group[k], rel_tol=1e-9)
    a = estimate_variance(model, loss, coupling, 300, torch.Generator().manual_seed(3), method="fast", draw_chunk=128)
    b = estimate_variance(model, loss, coupling, 300, torch.Generator().manual_seed(3), method="autograd",
                          draw_chunk=128)
    assert math.isclose(a.trace, b.trace, rel_tol=1e-10) and a.n == b.n == 300
    pa = variance_t_profile(model, loss, coupling, 60, 3, torch.Generator().manual_seed(4), method="fast")
    pb = variance_t_profile(model, loss, coupling, 60, 3, torch.Generator().manual_seed(4), method="autograd")
    np.testing.assert_allclose(pa.traces, pb.traces, rtol=1e-10)
    with pytest.raises(ConfigError, match="never materialises"):
        per_sample_gradients(model, path, method="fast")


def test_parametric_field_fallback_matches_closed_form(gen):
    """The Gaussian parametric field has no rule: the fallback equals its closed-form variance."""
    problem = GaussianProblem(torch.tensor([5.0, 5.0]), torch.diag(torch.tensor([4.0, 0.25])))
    field = GaussianParametricField(2, torch.tensor([0.3, -0.2]), torch.tensor([[0.2, 0.1], [-0.1, 0.3]]))
    path = CFMLoss(Interpolant(sigma=0.3)).draw(RotatedOTCoupling(problem, 60.0), 64, gen)
    closed = gradient_variance(field, path, method="closed_form")
    fast = gradient_variance(field, path, method="fast")
    assert math.isclose(fast.trace, closed.trace, rel_tol=1e-10)
    assert set(fast.fallback) == {"theta", "Theta"}
    frozen = problem.pair_optimal_field()  # requires_grad=False: still measured, and left frozen
    zero = fast_gradient_variance(frozen, CFMLoss().draw(RotatedOTCoupling(problem, 0.0), 32, gen))
    assert zero.trace < 1e-20 and zero.mean_loss < 1e-20
    assert not any(p.requires_grad for p in frozen.parameters())


class _ReachedModelError(Exception):
    """Raised by a forward pre-hook once it has seen the model's input."""


def test_estimators_move_each_drawn_path_to_the_models_device():
    """Paths are drawn on the CPU; a model on another device (the 'meta' device stands in for a GPU here) got them
    there and refused them. Every estimator now hands the model its input on the model's device."""
    model = MLPField(2, width=8, depth=2).to("meta")
    seen: list[torch.device] = []

    def record_device(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(args[0].device)
        raise _ReachedModelError  # a meta model computes no numbers: stop at its first call

    model.register_forward_pre_hook(record_device)
    loss, coupling = CFMLoss(Interpolant(0.1)), IndependentCoupling(StandardNormal(2), StandardNormal(2))
    cpu_path = loss.draw(coupling, 16, torch.Generator().manual_seed(0))
    runs = {
        "gradient_variance": lambda: gradient_variance(model, cpu_path),
        "gradient_variance fast": lambda: gradient_variance(model, cpu_path, method="fast"),
        "per_sample_gradients": lambda: per_sample_gradients(model, cpu_path),
        "estimate_variance": lambda: estimate_variance(model, loss, coupling, 16, torch.Generator().manual_seed(0)),
        "estimate_variance fast": lambda: estimate_variance(model, loss, coupling, 16, None, method="fast"),
        "variance_t_profile": lambda: variance_t_profile(model, loss, coupling, 16, 2),
        "repeated_estimates": lambda: repeated_estimates(model, loss, coupling, 16, 2, method="fast"),
    }
    for name, run in runs.items():
        seen.clear()
        with pytest.raises(_ReachedModelError):
            run()
        assert [d.type for d in seen] == ["meta"], name


def test_path_to_device_moves_nothing_already_there(gen):
    """On the model's own device, or with no single device, the path is handed on as it is (no copy)."""
    from flowvar.variance.autograd import model_device, path_to_device

    torch.manual_seed(0)
    model = MLPField(2, width=16, depth=2).double()
    path = CFMLoss(Interpolant(0.1)).draw(IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64)), 50, gen)
    assert model_device(model) == torch.device("cpu") and path_to_device(path, model_device(model)) is path
    assert path_to_device(path, None) is path


def test_frozen_parameters_estimators_count_them_monitor_does_not(gen):
    """The documented difference (L1): by default the estimators measure frozen parameters too; the monitor
    measures the trainable ones, which trainable_only=True reproduces."""
    from flowvar.variance import GradientVarianceMonitor

    torch.manual_seed(0)
    model = MLPField(2, width=16, depth=2).double()
    model.net[0].requires_grad_(False)
    path = CFMLoss(Interpolant(0.1)).draw(IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64)), 64, gen)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    losses = per_sample_loss(model, path)
    losses.mean().backward()
    record = monitor.step(0, losses, path.t)
    monitor.close()
    assert record is not None
    everything = gradient_variance(model, path)
    trainable = gradient_variance(model, path, trainable_only=True)
    assert rel(record["trace"], trainable.trace) < 1e-10
    assert everything.trace > trainable.trace * (1 + 1e-3)


def test_repeated_estimates_takes_an_integer_seed(problem, random_field):
    loss, coupling = CFMLoss(Interpolant(0.3)), RotatedOTCoupling(problem, 30.0)
    for bad in (torch.Generator().manual_seed(3), True, 1.5, "3"):
        with pytest.raises(ConfigError, match="integer seed"):
            repeated_estimates(random_field, loss, coupling, 50, repeats=2, seed=bad)  # type: ignore[arg-type]
    a = repeated_estimates(random_field, loss, coupling, 50, repeats=2, seed=np.int64(4))  # type: ignore[arg-type]
    assert np.array_equal(a, repeated_estimates(random_field, loss, coupling, 50, repeats=2, seed=4))


def test_standard_errors_of_the_mean_loss_and_the_trace(problem, random_field, gen):
    """loss_sd is the sample sd of the per-sample losses and trace_sd that of d_k = ‖g_k − ḡ‖² (the plug-in trace's
    influence function) when every draw fits one chunk; chunked, loss_sd is unchanged and trace_sd is centred at the
    first chunk's mean, within a few percent; the fast engine records loss_sd and leaves trace_sd NaN."""
    path = CFMLoss(Interpolant(sigma=0.3)).draw(RotatedOTCoupling(problem, 30.0), 2000, gen)
    G = flat(per_sample_gradients(random_field, path, method="closed_form"))
    d = ((G - G.mean(0)) ** 2).sum(1)
    with torch.no_grad():
        losses = per_sample_loss(random_field, path).double().numpy()
    whole = gradient_variance(random_field, path, chunk_size=4096)
    assert rel(whole.loss_sd, float(losses.std(ddof=1))) < 1e-10
    assert rel(whole.trace_sd, float(d.std(ddof=1))) < 1e-10
    assert rel(whole.mean_loss_se, float(losses.std(ddof=1)) / math.sqrt(2000)) < 1e-10
    assert rel(whole.trace_se, float(d.std(ddof=1)) / math.sqrt(2000)) < 1e-10
    chunked = gradient_variance(random_field, path, chunk_size=250)
    assert rel(chunked.loss_sd, whole.loss_sd) < 1e-10
    assert rel(chunked.trace_sd, whole.trace_sd) < 0.05
    fast = fast_gradient_variance(MLPField(2, width=8, depth=1).double(), path)
    assert math.isfinite(fast.loss_sd) and math.isnan(fast.trace_sd)
    assert {"loss_sd", "trace_sd"} <= set(whole.to_dict())


def test_the_trace_standard_error_matches_the_spread_over_independent_draws(problem, random_field):
    """trace_se and mean_loss_se predict the sd of trace and mean_loss over independent repeats (within the
    sampling error of an sd from 40 repeats)."""
    loss = CFMLoss(Interpolant(sigma=0.3))
    reps = [estimate_variance(random_field, loss, RotatedOTCoupling(problem, 30.0), 400,
                              torch.Generator().manual_seed(100 + r)) for r in range(40)]
    for value, se in (("trace", "trace_se"), ("mean_loss", "mean_loss_se")):
        spread = float(np.std([getattr(r, value) for r in reps], ddof=1))
        predicted = float(np.mean([getattr(r, se) for r in reps]))
        assert 0.7 < predicted / spread < 1.4, (value, predicted, spread)
