"""GradientVarianceMonitor: logged values against an independent torch.func computation, the trainer
callback, CSV/JSON logs and plot, and the memorisation warning (fires when memorising, not when noisy)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import warnings

import numpy as np
import pytest
import torch
from monitor_models import StopAt as _StopAt
from monitor_models import log_rows as _log_rows

from flowvar.couplings import IndependentCoupling, RotatedOTCoupling
from flowvar.distributions import StandardNormal
from flowvar.errors import ConfigError, DataError, ShapeError
from flowvar.gaussian import GaussianProblem
from flowvar.interpolants import Interpolant, PathSample
from flowvar.loss import CFMLoss, per_sample_loss
from flowvar.models import GaussianParametricField, MLPField
from flowvar.train import TrainConfig, train
from flowvar.variance import per_sample_gradients
from flowvar.variance.monitor import GradientVarianceMonitor, LossScaleWarning, MemorisationWarning

F64 = torch.float64
T_BINS = 4



def independent(model: torch.nn.Module, path: PathSample) -> dict[str, object]:
    """The logged quantities from torch.func per-sample gradients (float64), computed from scratch."""
    grads = per_sample_gradients(model, path, method="autograd")
    g = torch.cat([v.reshape(v.shape[0], -1) for v in grads.values()], 1).to(F64)
    B = g.shape[0]
    mean = g.mean(0)
    trace = float((g - mean).pow(2).sum(1).mean())
    with torch.no_grad():
        losses = per_sample_loss(model, path).to(F64)
    bins = (path.t * T_BINS).floor().long().clamp(0, T_BINS - 1)
    traces, sq_norms, bin_losses = [], [], []
    for k in range(T_BINS):
        gk = g[bins == k]
        n_k = gk.shape[0]  # unbiased conditional trace: divide by n_k − 1
        traces.append(float((gk - gk.mean(0)).pow(2).sum(1).sum()) / (n_k - 1) if n_k >= 2 else math.nan)
        sq_norms.append(float(gk.pow(2).sum(1).mean()))
        bin_losses.append(float(losses[bins == k].mean()))
    return {"loss": float(losses.mean()), "trace": trace, "trace_unbiased": trace * B / (B - 1),
            "mean_grad_sq_norm": float(mean.pow(2).sum()),
            "normalised": _unbiased_ratio(trace * B / (B - 1), float(mean.pow(2).sum()) - trace / (B - 1)),
            "mean_sq_norm": float(g.pow(2).sum(1).mean()), "bin_trace": traces, "bin_sq_norm": sq_norms,
            "bin_loss": bin_losses,
            "bin_count": [int((bins == k).sum()) for k in range(T_BINS)]}


def _unbiased_ratio(trace_u: float, signal_u: float) -> float:
    """tr Cov / ‖E g‖², both unbiased; inf when the unbiased ‖E g‖² is not positive."""
    return trace_u / signal_u if signal_u > 0 else math.inf


def assert_record(record: dict, ref: dict, tol: float = 1e-10, bin_traces: bool = True) -> None:
    for key in ("loss", "trace", "trace_unbiased", "mean_grad_sq_norm", "normalised", "mean_sq_norm"):
        assert math.isclose(record[key], ref[key], rel_tol=tol), key
    prof = record["t_profile"]
    assert prof["counts"] == ref["bin_count"]
    np.testing.assert_allclose(prof["loss"], ref["bin_loss"], rtol=tol)
    np.testing.assert_allclose(prof["mean_sq_norm"], ref["bin_sq_norm"], rtol=tol)
    if bin_traces:
        np.testing.assert_allclose(prof["trace"], ref["bin_trace"], rtol=tol)
    else:
        assert all(math.isnan(x) for x in prof["trace"])


def test_user_loop_logs_equal_torch_func(gen, tmp_path):
    """A hand-written loop (Adam, mean reduction): every logged record equals the independent computation."""
    torch.manual_seed(0)
    model = MLPField(2, width=16, depth=2).to(F64)
    loss = CFMLoss(Interpolant(sigma=0.1))
    coupling = IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    monitor = GradientVarianceMonitor(model, every=2, t_bins=T_BINS, profile_every=2, log_path=tmp_path / "gv.csv",
                                      sigma=0.1)
    refs = {}
    for step in range(7):
        path = loss.draw(coupling, 64, gen)
        losses = per_sample_loss(model, path)
        opt.zero_grad()
        losses.mean().backward()
        # the hooks record fully ahead of logged steps, and lightly (no owned gradients) the pass after each logged
        # step, which a next micro-batch may number as that step
        assert bool(monitor.engine._records) and monitor.engine.light == (step % 2 == 1)
        out = monitor.step(step, losses, path.t)
        if step % 2 == 0:
            refs[step] = independent(model, path)
            assert out is not None and out["step"] == step
        else:
            assert out is None
        opt.step()
    monitor.close()
    assert [r["step"] for r in monitor.history] == [0, 2, 4, 6]
    for k, record in enumerate(monitor.history):  # conditional bin traces on every 2nd logged step
        assert_record(record, refs[record["step"]], bin_traces=k % 2 == 0)
        assert record["memorisation"] is False and record["fallback"] == []
        assert record["per_layer"].keys() == {"net.0", "net.2", "net.4"}
    with (tmp_path / "gv.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [0, 2, 4, 6]
    assert math.isclose(float(rows[1]["trace"]), refs[2]["trace"], rel_tol=1e-12)
    assert math.isclose(float(rows[2][f"t_bin{T_BINS - 1}_trace"]), refs[4]["bin_trace"][-1], rel_tol=1e-12)
    assert rows[1][f"t_bin{T_BINS - 1}_trace"] == "nan"
    png = monitor.plot(tmp_path / "gv.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_with_one_profiled_log_warns_nothing(gen, tmp_path):
    """The t-profile panel of a single profiled log was a zero-width image: matplotlib warned "Attempting to set
    identical low and high xlims" (the README's 30-step example, API review)."""
    import warnings

    model = MLPField(2, width=8, depth=1)
    monitor = GradientVarianceMonitor(model, warn=False)
    path = CFMLoss().draw(IndependentCoupling(StandardNormal(2), StandardNormal(2)), 32, gen)
    losses = per_sample_loss(model, path)
    losses.mean().backward()
    monitor.step(0, losses, path.t)
    assert ["t_profile" in r for r in monitor.history] == [True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = monitor.plot(tmp_path / "one.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sum_reduction_and_json_logs(gen, tmp_path):
    torch.manual_seed(0)
    model = MLPField(2, width=8, depth=1).to(F64)
    path = CFMLoss(Interpolant(sigma=0.2)).draw(IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64)),
                                                 48, gen)
    ref = independent(model, path)
    for suffix, reduction in ((".json", "sum"), (".jsonl", "mean")):
        monitor = GradientVarianceMonitor(model, t_bins=T_BINS, profile_every=1, log_path=tmp_path / f"gv{suffix}")
        for step in range(2):
            model.zero_grad()
            losses = per_sample_loss(model, path)
            (losses.sum() if reduction == "sum" else losses.mean()).backward()
            monitor.step(step, losses, path.t, reduction=reduction)
        monitor.close()
        for record in monitor.history:
            assert_record(record, ref)
        text = (tmp_path / f"gv{suffix}").read_text()
        records = json.loads(text)["records"] if suffix == ".json" else [json.loads(x) for x in text.splitlines()]
        assert [r["step"] for r in records] == [0, 1]
        assert math.isclose(records[1]["trace"], ref["trace"], rel_tol=1e-12)


def test_trainer_callback_logs_equal_torch_func(tmp_path):
    """flowvar.train with the monitor as a callback; a second callback computes the reference at the same θ."""
    torch.manual_seed(0)
    model = MLPField(2, width=16, depth=2).to(F64)
    monitor = GradientVarianceMonitor(model, every=3, t_bins=T_BINS, profile_every=1)
    refs: dict[int, dict] = {}

    class Reference:
        def on_step(self, step, model, path, loss_value):
            if step % 3 == 0:
                refs[step] = independent(model, path)

    coupling = IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64))
    result = train(model, CFMLoss(Interpolant(sigma=0.1)), coupling,
                   TrainConfig(steps=9, batch_size=40, lr=1e-2, log_every=0), callbacks=[monitor, Reference()])
    assert [r["step"] for r in monitor.history] == [3, 6, 9]
    for record in monitor.history:
        assert_record(record, refs[record["step"]])
        assert record["deterministic"] is False  # read off the path: z ≠ 0
    logged = [h for h in result.history if "gv_trace" in h]
    assert [h["step"] for h in logged] == [3, 6, 9]
    assert math.isclose(logged[0]["gv_trace"], refs[3]["trace"], rel_tol=1e-10)
    assert math.isclose(logged[0]["gv_loss"], result.losses[2], rel_tol=1e-10)


def _memorisation_run(sigma: float) -> GradientVarianceMonitor:
    """Adam on the Gaussian parametric field from θ = Θ = 0 under the OT map coupling: with σ = 0 it converges
    to the pair-optimal field (loss and variance → 0, Prop. 1(A)); with σ > 0 both stay positive."""
    problem = GaussianProblem(torch.tensor([1.0, 1.0]), torch.diag(torch.tensor([2.0, 0.5])))
    model = GaussianParametricField(2)
    monitor = GradientVarianceMonitor(model, every=10, t_bins=T_BINS)
    train(model, CFMLoss(Interpolant(sigma=sigma)), RotatedOTCoupling(problem, 0.0),
          TrainConfig(steps=200, batch_size=32, lr=0.05, log_every=0), callbacks=[monitor])
    return monitor


def test_memorisation_warning_fires_on_a_memorising_run():
    with pytest.warns(MemorisationWarning, match="σ > 0") as caught:
        monitor = _memorisation_run(0.0)
    assert len([w for w in caught if issubclass(w.category, MemorisationWarning)]) == 1  # once per monitor
    assert monitor.memorisation_step is not None
    last = monitor.history[-1]
    assert last["memorisation"] is True and last["deterministic"] is True
    assert last["loss"] < 1e-3 * monitor.history[0]["loss"] and last["trace"] < 1e-3 * monitor.history[0]["trace"]
    assert set(last["fallback"]) == {"theta", "Theta"}  # the parametric field has no fast rule


def test_memorisation_warning_silent_on_a_noisy_run():
    with warnings.catch_warnings():
        warnings.simplefilter("error", MemorisationWarning)
        monitor = _memorisation_run(0.3)
    assert monitor.memorisation_step is None
    assert not any(r["memorisation"] for r in monitor.history)
    assert monitor.history[-1]["loss"] > 1e-3  # the noisy loss has a positive floor


def test_collapse_from_the_first_step_uses_the_absolute_floor(gen):
    """At the pair-optimal field from the start there is no peak to fall from: the absolute floor applies."""
    problem = GaussianProblem(torch.tensor([1.0, 1.0]), torch.diag(torch.tensor([2.0, 0.5])))
    field = problem.pair_optimal_field(trainable=True)
    monitor = GradientVarianceMonitor(field, t_bins=None, sigma=0.0, patience=2)
    coupling = RotatedOTCoupling(problem, 0.0)

    def log_steps(mon: GradientVarianceMonitor, steps: int) -> None:
        for step in range(steps):
            path = CFMLoss().draw(coupling, 16, gen)
            losses = per_sample_loss(field, path)
            field.zero_grad()
            losses.mean().backward()
            mon.step(step, losses, path.t)

    with pytest.warns(MemorisationWarning, match="deterministic interpolant"):
        log_steps(monitor, 3)
    assert monitor.memorisation_step == 1
    assert "t_profile" not in monitor.history[0]
    monitor.close()
    declared_noisy = GradientVarianceMonitor(field, t_bins=None, sigma=0.3, patience=1)  # σ > 0: never flagged
    with warnings.catch_warnings():
        warnings.simplefilter("error", MemorisationWarning)
        log_steps(declared_noisy, 2)
    assert declared_noisy.memorisation_step is None


def test_monitor_errors(gen, tmp_path):
    model = MLPField(2, width=8, depth=1)
    with pytest.raises(ConfigError, match="log_path"):
        GradientVarianceMonitor(model, log_path=tmp_path / "gv.txt")
    with pytest.raises(ConfigError, match="every"):
        GradientVarianceMonitor(model, every=0)
    monitor = GradientVarianceMonitor(model)
    with pytest.raises(DataError, match="nothing logged"):
        monitor.plot(tmp_path / "x.png")
    path = CFMLoss().draw(IndependentCoupling(StandardNormal(2), StandardNormal(2)), 16, gen)
    losses = per_sample_loss(model, path)
    (losses.mean() + model.net[0].weight.pow(2).sum()).backward()  # an extra loss term
    with pytest.raises(DataError, match="do not add up"):
        monitor.step(0, losses, path.t)
    with pytest.raises(ConfigError, match="another model"):
        monitor.on_step(1, MLPField(2), path, 0.0)
    monitor.close()


def test_step_calls_left_out_between_logged_steps_still_log_exactly(gen):
    """step() called on logged steps only (``if step % every == 0``): the hooks stay armed (lightly) across the
    unreported steps, and each logged record is the exact statistics of that step's own pass (not of the passes
    before it, whose records are dropped as each new pass begins)."""
    torch.manual_seed(0)
    model = MLPField(2, width=8, depth=1).to(F64)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    monitor = GradientVarianceMonitor(model, every=3, t_bins=T_BINS, profile_every=1)
    coupling = IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no log is skipped
        for step in range(10):
            path = CFMLoss().draw(coupling, 16, gen)
            losses = per_sample_loss(model, path)
            opt.zero_grad()
            losses.mean().backward()
            if step % 3 == 0:
                ref = independent(model, path)
                assert_record(monitor.step(step, losses, path.t), ref)
            assert len(monitor.engine._root_calls) <= 1
            opt.step()
    assert [r["step"] for r in monitor.history] == [0, 3, 6, 9]
    monitor.close()


def test_step_before_backward_is_refused_not_logged_as_zero(gen):
    """step() after the forward but before backward: every rule would read "unused" and log a trace of 0. The
    pass's records are kept, so that step() after the backward pass logs it exactly."""
    model = MLPField(2, width=8, depth=1).to(F64)
    monitor = GradientVarianceMonitor(model, t_bins=T_BINS, profile_every=1)
    path = CFMLoss().draw(IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64)), 16, gen)
    losses = per_sample_loss(model, path)
    with pytest.raises(DataError, match=r"after loss\.backward"):
        monitor.step(0, losses, path.t)
    assert monitor.history == []
    losses.mean().backward()
    assert_record(monitor.step(0, losses, path.t), independent(model, path))
    monitor.close()


def test_step_twice_is_refused_and_micro_batches_are_logged_however_numbered(gen):
    """A second step() for a measured step names its cause instead of "recorded no forward pass"; micro-batches of
    gradient accumulation are logged exactly whether numbered by their optimizer step (with every > 1 the hooks are
    armed, lightly, for a repeat of a logged step's number) or by micro-batch."""
    torch.manual_seed(0)
    coupling = IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64))
    model = MLPField(2, width=8, depth=1).to(F64)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    path = CFMLoss().draw(coupling, 16, gen)
    losses = per_sample_loss(model, path)
    losses.mean().backward()
    monitor.step(0, losses, path.t)
    with pytest.raises(DataError, match=r"step 0: step\(\) was already called for this step, and the model has not "
                                        r"run since"):
        monitor.step(0, losses, path.t)
    monitor.close()

    k = 2
    monitor = GradientVarianceMonitor(model, every=2, t_bins=T_BINS, profile_every=1)
    model.zero_grad()
    for _ in range(k):  # micro-batches numbered by their optimizer step: each one of a logged step is logged
        path = CFMLoss().draw(coupling, 16, gen)
        losses = per_sample_loss(model, path)
        (losses.mean() / k).backward()
        assert_record(monitor.step(0, losses, path.t, loss_scale=1 / k), independent(model, path))
    with pytest.raises(DataError, match=r"step 0: step\(\) was already called for this step"):
        monitor.step(0, losses, path.t, loss_scale=1 / k)
    monitor.close()

    monitor = GradientVarianceMonitor(model, every=2, t_bins=T_BINS, profile_every=1)
    for step in range(3):
        model.zero_grad()
        for j in range(k):  # the advice: step() after each micro-batch's backward, numbered by micro-batch
            path = CFMLoss().draw(coupling, 16, gen)
            losses = per_sample_loss(model, path)
            (losses.mean() / k).backward()
            record = monitor.step(step * k + j, losses, path.t, loss_scale=1 / k)
            assert (record is not None) == (j == 0)
            if record is not None:
                assert_record(record, independent(model, path))
    assert [r["step"] for r in monitor.history] == [0, 2, 4]
    monitor.close()


def test_losses_not_of_the_measured_batch_name_both_sizes(gen):
    """8 per-sample losses for a batch of 16 (was a ShapeError about a Linear layer's input); the concatenated
    losses of two accumulated micro-batches given to one step() say what the docs say to do."""
    model = MLPField(2, width=8, depth=1)
    coupling = IndependentCoupling(StandardNormal(2), StandardNormal(2))
    monitor = GradientVarianceMonitor(model, t_bins=None)
    path = CFMLoss().draw(coupling, 16, gen)
    losses = per_sample_loss(model, path)
    losses.mean().backward()
    with pytest.raises(ShapeError, match=r"^step 0: 8 per-sample losses for a batch of 16: pass step\(\) the "
                                         r"unreduced \(B,\) losses"):
        monitor.step(0, losses[:8], path.t[:8])
    model.zero_grad()
    parts, times = [], []
    for n in (16, 12):  # gradient accumulation over two micro-batches, one step() over all their losses
        path = CFMLoss().draw(coupling, n, gen)
        losses = per_sample_loss(model, path)
        (losses.mean() / 2).backward()
        parts.append(losses)
        times.append(path.t)
    with pytest.raises(ShapeError, match=r"^step 1: 28 per-sample losses of 2 forward passes of the model \(16 \+ 12 "
                                         r"samples\) given to one step\(\).*after each micro-batch's backward with "
                                         r"that micro-batch's losses and loss_scale=1/k \(here 1/2\)"):
        monitor.step(1, torch.cat(parts), torch.cat(times), loss_scale=0.5)
    monitor.close()


def _scaled_step(gen, backward_scale: float, backward_reduction: str = "mean", **step_kwargs):
    """One logged step whose backward pass is of ``backward_scale`` × the ``backward_reduction`` of the losses;
    returns (record, independent reference, LossScaleWarnings issued)."""
    torch.manual_seed(0)
    model = MLPField(2, width=8, depth=1).to(F64)
    path = CFMLoss().draw(IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64)), 32, gen)
    monitor = GradientVarianceMonitor(model, t_bins=T_BINS, profile_every=1)
    losses = per_sample_loss(model, path)
    (backward_scale * (losses.sum() if backward_reduction == "sum" else losses.mean())).backward()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = monitor.step(0, losses, path.t, **step_kwargs)
    monitor.close()
    return record, independent(model, path), [w for w in caught if issubclass(w.category, LossScaleWarning)]


def test_loss_scale_undoes_a_grad_scaler_or_accumulation_factor(gen):
    """scaler.scale(loss).backward() multiplies every δ by the scale: loss_scale= divides it out exactly."""
    for scale in (1024.0, 0.25):  # a GradScaler's scale; gradient accumulation over 4 micro-batches
        record, ref, caught = _scaled_step(gen, scale, loss_scale=scale)
        assert_record(record, ref)
        assert not caught
    record, ref, caught = _scaled_step(gen, 1.0, "sum", reduction="sum")
    assert_record(record, ref)
    assert not caught
    with pytest.raises(ConfigError, match="loss_scale"):
        _scaled_step(gen, 1.0, loss_scale=0.0)


@pytest.mark.parametrize(("backward_scale", "reduction", "declared"), [(65536.0, "mean", "mean"),
                                                                       (1.0, "sum", "mean"), (1.0, "mean", "sum")])
def test_an_undeclared_factor_on_the_backward_pass_is_warned_about(gen, backward_scale, reduction, declared):
    """A GradScaler not declared, or the other reduction: every statistic is off by the factor's square. For
    squared-error losses the output gradient gives it away: one LossScaleWarning naming loss_scale."""
    record, ref, caught = _scaled_step(gen, backward_scale, reduction, reduction=declared)
    assert not math.isclose(record["trace"], ref["trace"], rel_tol=0.5)  # the wrong number the warning is about
    assert len(caught) == 1 and "loss_scale" in str(caught[0].message)


def test_the_scale_check_accepts_usual_squared_errors_and_ignores_weighted_losses(gen):
    """ℓ = mean over coordinates, ½‖·‖² are right as declared (no warning); per-sample weights vary a_i: no
    judgement either way."""
    torch.manual_seed(0)
    model = MLPField(2, width=8, depth=1).to(F64)
    path = CFMLoss().draw(IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64)), 32, gen)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    for step, make in enumerate((lambda r: r.pow(2).mean(1), lambda r: 0.5 * r.pow(2).sum(1),
                                 lambda r: r.pow(2).sum(1) * (1 + path.t))):
        model.zero_grad()
        losses = make(model(path.xt, path.t) - path.target)
        losses.mean().backward()
        with warnings.catch_warnings():
            warnings.simplefilter("error", LossScaleWarning)
            monitor.step(step, losses, path.t)
    monitor.close()


def test_the_scale_check_runs_on_the_first_logged_steps_only(gen):
    """A mis-declared scale is a property of the loop's code and shows from the first logs; later logs pay nothing
    for the check (SCALE_CHECKS), so a factor that first appears after them is not judged."""
    from flowvar.variance.monitor import SCALE_CHECKS

    torch.manual_seed(0)
    model = MLPField(2, width=8, depth=1).to(F64)
    path = CFMLoss().draw(IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64)), 32, gen)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(SCALE_CHECKS + 1):
            model.zero_grad()
            losses = per_sample_loss(model, path)
            # declared right on the checked logs, an undeclared GradScaler-like factor on the one after
            (losses.mean() * (65536.0 if step == SCALE_CHECKS else 1.0)).backward()
            monitor.step(step, losses, path.t)
    monitor.close()
    assert not [w for w in caught if issubclass(w.category, LossScaleWarning)]


def test_a_layer_replaced_after_the_monitor_was_built_is_refused(gen):
    """The new layer's parameters carry no hooks: leaving them out of the trace would be a silently wrong number."""
    model = MLPField(2, width=8, depth=1)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    model.net[2] = torch.nn.Linear(8, 2)
    path = CFMLoss().draw(IndependentCoupling(StandardNormal(2), StandardNormal(2)), 16, gen)
    losses = per_sample_loss(model, path)
    losses.mean().backward()
    with pytest.raises(ConfigError, match=r"'net\.2'.*Build the GradientVarianceMonitor after"):
        monitor.step(0, losses, path.t)
    monitor.close()


@pytest.mark.parametrize("how", ["weight_norm", "same_parameter"])
def test_a_parametrization_added_after_the_monitor_was_built_is_named(gen, how):
    """weight_norm brings new parameters (the replaced-layer check names the module); a parametrization whose
    original is the weight itself keeps its identity, so only the sum check fails, and its error names the layer and
    the fix rather than an extra loss term."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import weight_norm

    class Doubled(torch.nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return 2 * w

    model = MLPField(2, width=8, depth=1)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    if how == "weight_norm":
        weight_norm(model.net[0])
    else:
        weight = model.net[0].weight
        parametrize.register_parametrization(model.net[0], "weight", Doubled())
        assert model.net[0].parametrizations.weight.original is weight
    path = CFMLoss().draw(IndependentCoupling(StandardNormal(2), StandardNormal(2)), 16, gen)
    losses = per_sample_loss(model, path)
    losses.mean().backward()
    expected = (r"'net\.0\.parametrizations\.weight'.*Build the GradientVarianceMonitor after" if how == "weight_norm"
                else r"'net\.0' gained a parametrization .* Build it after the model is final")
    with pytest.raises((DataError, ConfigError), match=expected):
        monitor.step(0, losses, path.t)
    monitor.close()


def test_a_step_after_close_says_the_monitor_was_closed(gen):
    """It said no backward pass reached the model's parameters and to check torch.no_grad() and copies: the backward
    pass did reach them; the monitor was closed."""
    model = MLPField(2, width=8, depth=1)
    coupling = IndependentCoupling(StandardNormal(2), StandardNormal(2))
    with GradientVarianceMonitor(model, t_bins=None) as monitor:
        path = CFMLoss().draw(coupling, 16, gen)
        losses = per_sample_loss(model, path)
        losses.mean().backward()
        assert monitor.step(0, losses, path.t) is not None
    model.zero_grad()
    losses = per_sample_loss(model, path)
    losses.mean().backward()
    closed = r"step 1: this monitor was closed \(close\(\), or the end of its with-block.*build a new GradientVariance"
    with pytest.raises(ConfigError, match=closed):
        monitor.step(1, losses, path.t)
    with pytest.raises(ConfigError, match=closed):
        monitor.on_step(1, model, path, float(losses.mean()))


def test_the_monitor_adds_no_hook_of_its_own_to_the_model():
    """Nothing of the monitor may run on an unlogged step: the loss-scale check reads the output gradient the
    engine records anyway (engine.root_grad), so the model carries the engine's hooks and no others."""
    from flowvar.variance.engine import GradNormEngine

    model = MLPField(2, width=8, depth=1)
    engine = GradNormEngine(model)
    counts = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    engine.detach()
    monitor = GradientVarianceMonitor(model, t_bins=None)
    assert [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()] == counts
    monitor.close()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_an_ema_deepcopy_with_an_open_log_keeps_working(gen, tmp_path):
    """copy.deepcopy(model) copies the monitor's hooks: they must not drag the monitor (and its open log) along."""
    import copy

    model = MLPField(2, width=8, depth=1).to(F64)
    monitor = GradientVarianceMonitor(model, t_bins=None, log_path=tmp_path / "gv.csv")
    coupling = IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64))
    for step in range(2):
        path = CFMLoss().draw(coupling, 16, gen)
        model.zero_grad()
        losses = per_sample_loss(model, path)
        losses.mean().backward()
        record = monitor.step(step, losses, path.t)
        assert math.isclose(record["trace"], independent(model, path)["trace"], rel_tol=1e-10)
        ema = copy.deepcopy(model)  # the log file is open from step 0 on
        assert torch.equal(ema(path.xt, path.t), model(path.xt, path.t))
    monitor.close()


def _train_monitored(ckpt, callbacks_extra=(), *, profile_every=1, log_path=None, model_seed=0, warn=True):
    """12 steps of CFM(σ = 0.1) on a 2-D MLP (float64) with a monitor logging every 2 steps, checkpoints every 4."""
    coupling = IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64))
    config = TrainConfig(steps=12, batch_size=32, lr=1e-2, checkpoint_every=4, log_every=0)
    torch.manual_seed(model_seed)
    model = MLPField(2, width=8, depth=1).to(F64)
    monitor = GradientVarianceMonitor(model, every=2, t_bins=4, profile_every=profile_every, log_path=log_path,
                                      warn=warn)
    try:
        train(model, CFMLoss(Interpolant(sigma=0.1)), coupling, config, ckpt, callbacks=[monitor, *callbacks_extra])
    finally:
        monitor.close()
    return monitor


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_resumed_run_continues_the_log_instead_of_truncating_it(tmp_path, suffix):
    """Train 12 steps logging every 2, checkpoint every 4, killed at step 11 (after logging 10); resume to 12. The
    log holds every logged step once, the rows up to the checkpoint (step 8) kept and the killed run's step 10
    replaced by the resumed run's; a fresh run into the same file starts it afresh."""
    log_path, ckpt = tmp_path / f"gv{suffix}", tmp_path / "ckpt"

    def run(callbacks_extra, model_seed=0):
        return _train_monitored(ckpt, callbacks_extra, log_path=log_path, model_seed=model_seed)

    def rows():
        text = log_path.read_text()
        if suffix == ".csv":
            return list(csv.DictReader(text.splitlines()))
        if suffix == ".jsonl":
            return [json.loads(x) for x in text.splitlines()]
        return json.loads(text)["records"]

    with pytest.raises(KeyboardInterrupt):
        run([_StopAt(11)])
    killed = {int(float(r["step"])): float(r["trace"]) for r in rows()}
    assert sorted(killed) == [2, 4, 6, 8, 10]
    resumed = run([], model_seed=99)  # the checkpoint restores the weights
    assert [r["step"] for r in resumed.history] == [10, 12]
    final = rows()
    steps = [int(float(r["step"])) for r in final]
    assert steps == [2, 4, 6, 8, 10, 12]
    for r in final[:4]:  # kept verbatim from the killed run
        assert float(r["trace"]) == killed[int(float(r["step"]))]
    # the uninterrupted run logs the same numbers (resume is bit-identical)
    shutil.rmtree(ckpt)
    straight = run([])  # a fresh run into the existing file: its first step precedes every row, none is kept
    assert [r["step"] for r in straight.history] == steps
    assert [float(r["trace"]) for r in rows()] == [float(r["trace"]) for r in final]
    if suffix == ".csv":
        assert "t_bin0_trace" in final[0]


def test_a_resumed_run_keeps_the_detector_and_the_profile_cadence(tmp_path):
    """As a trainer callback the monitor's state (peaks, streak, flagged step, records logged) is checkpointed: a
    run killed at step 11 and resumed from its step-8 checkpoint logs steps 10 and 12 with the per-bin traces on the
    same steps as the uninterrupted run (every 5th record: steps 2 and 12), and ends in the same state."""
    def run(ckpt, callbacks_extra=()):
        return _train_monitored(ckpt, callbacks_extra, profile_every=5, warn=False)

    def profiled(monitor):
        return {r["step"]: not math.isnan(r["t_profile"]["trace"][0]) for r in monitor.history}

    straight = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", [_StopAt(11)])
    resumed = run(tmp_path / "b")
    assert profiled(straight) == {2: True, 4: False, 6: False, 8: False, 10: False, 12: True}
    assert profiled(resumed) == {10: False, 12: True}
    assert resumed.state_dict() == straight.state_dict()
    assert [r["trace"] for r in resumed.history] == [r["trace"] for r in straight.history[-2:]]


def _func_trace(model: torch.nn.Module, x: torch.Tensor, u: torch.Tensor) -> float:
    """tr Cov(g) of ℓ_i = ‖model(x_i) − u_i‖² from torch.func per-sample gradients (float64)."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, ui):
        return (functional_call(model, p, (xi[None],)) - ui[None]).pow(2).sum()

    per = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, u)
    g = torch.cat([v.reshape(v.shape[0], -1) for v in per.values()], 1).to(F64)
    return float((g - g.mean(0)).pow(2).sum(1).mean())


@pytest.mark.parametrize("stance", ["eager", "without set_stance"])
def test_a_model_compiled_in_place_is_measured_exactly(monkeypatch, stance):
    """model.compile(backend="eager") (in place): no module hook runs inside the compiled call, so the whole model goes
    to the exact fallback, whose vmap raised an AssertionError inside dynamo's fake tensors. The recomputation now runs
    eagerly (torch.compiler.set_stance); without it (torch < 2.6) the compiler's AssertionError sends the fallback to
    its per-sample loop. Both equal torch.func on an uncompiled copy."""
    import contextlib

    import flowvar.variance.rules.fallback as fallback

    if stance != "eager":
        monkeypatch.setattr(fallback, "_eager", contextlib.nullcontext)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2)).to(F64)
    reference = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2)).to(F64)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    model.compile(backend="eager")
    g = torch.Generator().manual_seed(1)
    for step in range(2):
        x, u = torch.randn(16, 3, generator=g, dtype=F64), 3 * torch.randn(16, 2, generator=g, dtype=F64)
        model.zero_grad()
        losses = (model(x) - u).pow(2).sum(1)
        losses.mean().backward()
        record = monitor.step(step, losses)
        reference.load_state_dict(model.state_dict())
        assert math.isclose(record["trace"], _func_trace(reference, x, u), rel_tol=1e-10)
        assert "0.weight" in record["fallback"]
    monitor.close()


def test_an_assertion_of_the_module_itself_is_not_taken_for_vmap_failing():
    """Only the compiler's AssertionError sends the fallback to its loop; a module's own assertion is raised."""
    class Asserting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, x):
            assert x.ndim == 2 and x.shape[0] > 1, "a batch of several samples is expected"
            return x * self.w

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), Asserting()).to(F64)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    x = torch.randn(8, 2, dtype=F64)
    losses = model(x).pow(2).sum(1)
    losses.mean().backward()
    with pytest.raises(AssertionError, match="a batch of several samples"):
        monitor.step(0, losses)
    monitor.close()


class _OwnMatmul(torch.nn.Module):
    """A layer without a rule (measured by the fallback); ``centred`` couples the samples (h − mean over the batch)."""

    def __init__(self, centred: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.W = torch.nn.Parameter(torch.randn(3, 16, dtype=F64) / 3 ** 0.5)
        self.centred = centred

    def forward(self, x):
        h = torch.tanh(x @ self.W)
        return h - h.mean(0) if self.centred else h


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_step_after_the_optimizer_step_names_the_changed_parameters(optimizer):
    """monitor.step() after optimizer.step(): the fallback recomputes a layer with weights the forward did not use and
    misses its recorded output. That said "couples the samples... eval mode"; the whole recorded batch is not
    reproduced either, so the error now names the changed parameters and the order of calls."""
    model = torch.nn.Sequential(_OwnMatmul(), torch.nn.Linear(16, 2)).to(F64)
    opt = (torch.optim.SGD(model.parameters(), lr=0.5) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=0.1))
    monitor = GradientVarianceMonitor(model, t_bins=None)
    x, u = torch.randn(16, 3, dtype=F64), 3 * torch.randn(16, 2, dtype=F64)
    losses = (model(x) - u).pow(2).sum(1)
    losses.mean().backward()
    opt.step()
    with pytest.raises(ConfigError, match=r"module '0' \(_OwnMatmul\) does not reproduce its recorded output even on "
                                          r"the whole recorded batch .*parameters changed since the forward pass.*"
                                          r"Call monitor\.step\(\) after backward and before optimizer\.step\(\)"):
        monitor.step(0, losses)
    monitor.close()


def test_a_layer_coupling_the_samples_is_still_named_so():
    """The same layer centred over the batch reproduces its batch output but not one sample at a time."""
    model = torch.nn.Sequential(_OwnMatmul(centred=True), torch.nn.Linear(16, 2)).to(F64)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    x, u = torch.randn(16, 3, dtype=F64), 3 * torch.randn(16, 2, dtype=F64)
    losses = (model(x) - u).pow(2).sum(1)
    losses.mean().backward()
    with pytest.raises(ConfigError, match=r"module '0' \(_OwnMatmul\) gives a different output when recomputed "
                                          r"one sample at a time .*whole recorded batch is reproduced: its forward "
                                          r"couples"):
        monitor.step(0, losses)
    monitor.close()


def _loop_into(path, every, steps, state=None):
    """A plain loop logging steps 1..``steps`` every ``every`` into ``path``; ``state``: a resume
    (load_state_dict of an earlier monitor's state). Returns the monitor."""
    torch.manual_seed(every)
    model = MLPField(2, width=8, depth=1).to(F64)
    monitor = GradientVarianceMonitor(model, every=every, t_bins=None, log_path=path)
    if state is not None:
        monitor.load_state_dict(state)
    g = torch.Generator().manual_seed(every)
    for step in steps:
        x, u = torch.randn(16, 2, generator=g, dtype=F64), torch.randn(16, 2, generator=g, dtype=F64)
        model.zero_grad()
        losses = (model(x, torch.rand(16, generator=g, dtype=F64)) - u).pow(2).sum(1)
        losses.mean().backward()
        monitor.step(step, losses)
    monitor.close()
    return monitor


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_new_run_into_an_existing_log_starts_it_afresh(tmp_path, suffix):
    """Steps from 1 with every=3 log first at step 3, after the old run's steps 1 and 2: those rows were kept as if
    resumed (and the .json header said every=3 over them). Only a resume (load_state_dict) keeps earlier rows."""
    path = tmp_path / f"gv{suffix}"
    _loop_into(path, every=1, steps=range(1, 7))
    assert [int(float(r["step"])) for r in _log_rows(path)] == [1, 2, 3, 4, 5, 6]
    fresh = _loop_into(path, every=3, steps=range(1, 7))
    rows = _log_rows(path)
    assert [int(float(r["step"])) for r in rows] == [3, 6]
    assert [float(r["trace"]) for r in rows] == [r["trace"] for r in fresh.history]
    if suffix == ".json":
        assert json.loads(path.read_text())["config"]["every"] == 3
    # a resume from the fresh run's state after its step 3 keeps the rows before its own first log (step 6)
    resumed = _loop_into(path, every=3, steps=range(4, 7), state={**fresh.state_dict(), "logged": 1})
    rows = _log_rows(path)
    assert [int(float(r["step"])) for r in rows] == [3, 6]
    assert float(rows[0]["trace"]) == fresh.history[0]["trace"]
    assert float(rows[1]["trace"]) == resumed.history[0]["trace"]
