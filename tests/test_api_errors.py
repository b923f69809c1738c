"""A library user's mistakes get one-line FlowvarErrors naming the fix (API review 25): a user's own model that
does not follow model(x, t) or the data's dtype, swapped or mistyped arguments, hand-built paths outside [0, 1] or
non-finite, losses of another batch given to the monitor, non-integral step numbers, and the inputs of
singular_times and exact_ot_permutation."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from flowvar.couplings import ExactOTCoupling, IndependentCoupling, Pairs
from flowvar.distributions import GaussianMixture, StandardNormal
from flowvar.errors import ConfigError, DataError, ShapeError
from flowvar.gaussian import GaussianProblem, singular_times
from flowvar.interpolants import Interpolant, UniformTime
from flowvar.loss import CFMLoss
from flowvar.models import MLPField
from flowvar.models.base import first_call, input_mismatch
from flowvar.ot import exact_ot_permutation
from flowvar.sampling import integrate
from flowvar.train import TrainConfig, train
from flowvar.variance import estimate_variance, fast_gradient_variance, gradient_variance
from flowvar.variance import monitor as monitor_module
from flowvar.variance.monitor import GradientVarianceMonitor, NonFiniteLossWarning


class Net(nn.Module):
    """A user's own field with flowvar's signature forward(x, t)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 2))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, t.reshape(-1, 1).to(x.dtype)], 1))


class TimeFirst(Net):
    """torchcfm's order, forward(t, x): flowvar's model(x, t) makes it index t's missing second axis."""

    def forward(self, t: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.net(torch.cat([x, t.reshape(-1, 1).to(x.dtype)], 1))


def coupling() -> ExactOTCoupling:
    return ExactOTCoupling(StandardNormal(2), GaussianMixture([[3.0, 0.0], [-3.0, 0.0]], stds=0.5))


def first_calls(model: nn.Module) -> dict[str, Callable[[], object]]:
    """Every entry point that calls a user's model first, on float32 data."""
    loss = CFMLoss(Interpolant(0.05))
    path = loss.draw(coupling(), 32, torch.Generator().manual_seed(0))
    return {
        "gradient_variance": lambda: gradient_variance(model, path),
        "gradient_variance fast": lambda: gradient_variance(model, path, method="fast"),
        "estimate_variance": lambda: estimate_variance(model, loss, coupling(), 64, torch.Generator().manual_seed(1)),
        "estimate_variance fast": lambda: estimate_variance(model, loss, coupling(), 64,
                                                            torch.Generator().manual_seed(1), method="fast"),
        "integrate": lambda: integrate(model, torch.randn(4, 2)),
        "train": lambda: train(model, loss, coupling(), TrainConfig(steps=2, batch_size=8, log_every=0)),
    }


@pytest.mark.parametrize("entry", list(first_calls(nn.Identity())))
def test_a_time_first_model_gets_the_calling_convention_everywhere(entry: str) -> None:
    """integrate and the estimators raised the model's bare IndexError, where train named the convention."""
    with pytest.raises(ConfigError, match=r"failed on its first call model\(x, t\) with x of shape \(\d+, 2\) and t "
                                          r"of shape \(\d+,\) \(IndexError: .*a model taking \(t, x\) needs a wrapper"):
        first_calls(TimeFirst())[entry]()


@pytest.mark.parametrize("entry", [e for e in first_calls(nn.Identity()) if e != "train"])
def test_a_float64_model_on_float32_data_is_named_with_the_right_conversion(entry: str) -> None:
    """torch's "mat1 and mat2 must have the same dtype" from integrate and the estimators; now the model, both dtypes
    and the conversions (model.float() for float32, not model.double()). train keeps its own pre-check, which
    names the coupling's dtype."""
    with pytest.raises(ConfigError, match=r"Net got x of dtype torch\.float32 but its parameters are torch\.float64; "
                                          r"convert the model \(model\.to\(torch\.float32\), i\.e\. model\.float\(\)\) "
                                          r"or the input \(x\.to\(torch\.float64\)\)") as caught:
        first_calls(Net().double())[entry]()
    assert "double()" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"coupling produces torch\.float32 data but the model's parameters are "
                                          r"torch\.float64"):
        first_calls(Net().double())["train"]()


def test_the_dtype_hint_names_the_conversion_to_the_inputs_dtype() -> None:
    to_float = input_mismatch(MLPField(2, 8, 1).double(), torch.zeros(3, 2))
    to_double = input_mismatch(MLPField(2, 8, 1), torch.zeros(3, 2, dtype=torch.float64))
    to_half = input_mismatch(MLPField(2, 8, 1), torch.zeros(3, 2, dtype=torch.float16))
    assert to_float is not None and "i.e. model.float()" in str(to_float) and "double" not in str(to_float)
    assert to_double is not None and "model.to(torch.float64), i.e. model.double()" in str(to_double)
    assert to_half is not None and "model.to(torch.float16))" in str(to_half) and "i.e." not in str(to_half)


def test_first_call_keeps_errors_that_are_not_the_models_call() -> None:
    """When a plain call of the model succeeds, the failure was in the computation around it (vmap, a meta tensor's
    .item()): the original error passes unchanged, and so do flowvar's own errors."""
    model, x, t = Net(), torch.randn(4, 2), torch.rand(4)

    def around() -> None:
        model(x, t)
        raise RuntimeError("vmap: something outside the model")

    with pytest.raises(RuntimeError, match="something outside the model"):
        first_call(around, model, x, t)
    with pytest.raises(ShapeError, match="expects x of shape"):  # MLPField's own error, as it was
        first_call(lambda: MLPField(3, 8, 1)(x, t), MLPField(3, 8, 1), x, t)
    assert first_call(lambda: model(x, t), model, x, t).shape == (4, 2)  # a correct call: its result


def test_the_loss_refuses_a_number_or_an_interpolant_in_the_wrong_place() -> None:
    """CFMLoss(0.05) failed at the first draw with an AttributeError; CFMLoss(None, Interpolant(0.05)) with a
    TypeError inside the interpolant."""
    with pytest.raises(ConfigError, match=r"first argument is the interpolant, got 0\.05; .*CFMLoss\(Interpolant\("
                                          r"0\.05\)\)"):
        CFMLoss(0.05)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"second argument is the time sampler .*got Interpolant\(sigma=0\.05.*the "
                                          r"interpolant comes first: CFMLoss\(Interpolant\(sigma\)\)"):
        CFMLoss(None, Interpolant(0.05))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"first argument is the interpolant, got the time sampler UniformTime; pass "
                                          r"it second"):
        CFMLoss(UniformTime())  # type: ignore[arg-type]
    loss = CFMLoss(Interpolant(0.05), UniformTime(0.2, 0.8))
    assert loss.interpolant.sigma == 0.05 and loss.time_sampler.lo == 0.2


def test_swapped_loss_and_coupling_name_the_right_call() -> None:
    model, loss, pairs = MLPField(2, 8, 1), CFMLoss(), coupling()
    with pytest.raises(ConfigError, match=r"the loss and the coupling are swapped .*call train\(model, loss, coupling, "
                                          r"config\)"):
        train(model, pairs, loss, TrainConfig(steps=2, batch_size=8, log_every=0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"swapped .*call estimate_variance\(model, loss, coupling, n_samples"):
        estimate_variance(model, pairs, loss, 64)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"coupling must be a Coupling, .*got 0\.5"):
        estimate_variance(model, loss, 0.5, 64)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"loss must be a CFMLoss, .*got None"):
        train(model, None, pairs, TrainConfig(steps=2, batch_size=8, log_every=0))  # type: ignore[arg-type]


@pytest.mark.parametrize("estimator", [gradient_variance, fast_gradient_variance])
def test_hand_built_paths_outside_the_unit_interval_or_non_finite_are_refused(estimator: Callable) -> None:
    """t · 100 gave a trace of 33656.7 instead of 269.4 and NaN inputs a NaN trace, both silently."""
    torch.manual_seed(0)
    model = MLPField(2, 16, 2)
    loss = CFMLoss(Interpolant(0.05))
    path = loss.draw(coupling(), 16, torch.Generator().manual_seed(0))
    assert math.isfinite(estimator(model, path).trace)
    with pytest.raises(DataError, match=r"t must lie in \[0, 1\].*got times from .* to \d+"):
        estimator(model, replace(path, t=path.t * 100))
    with pytest.raises(DataError, match=r"t must lie in \[0, 1\].*got NaN"):
        estimator(model, replace(path, t=path.t * float("nan")))
    nan_pairs = Pairs(torch.full((8, 2), float("nan")), torch.randn(8, 2))
    with pytest.raises(DataError, match=r"the path's xt holds 16 non-finite value"):
        estimator(model, loss.sample_path(nan_pairs, torch.Generator().manual_seed(0)))
    with pytest.raises(DataError, match=r"the path's target holds 1 non-finite value"):
        target = path.target.clone()
        target[3, 1] = float("inf")
        estimator(model, replace(path, target=target))


def _monitored_batch(batch: int = 16) -> tuple[GradientVarianceMonitor, Tensor, Tensor]:
    """A monitor after one forward/backward pass of a batch: (monitor, per-sample losses, times)."""
    torch.manual_seed(0)
    model = MLPField(2, 16, 2)
    monitor = GradientVarianceMonitor(model, t_bins=4)
    x, t = torch.randn(batch, 2), torch.rand(batch)
    losses = ((model(x, t) - 1) ** 2).sum(1)
    losses.mean().backward()
    return monitor, losses, t


def test_monitor_blames_the_losses_not_t_when_the_losses_are_part_of_the_batch() -> None:
    """losses[:8] of a batch of 16 with its 16 times raised "t must have shape (8,), got (16,)"."""
    monitor, losses, t = _monitored_batch()
    with pytest.raises(ShapeError, match=r"step 0: 8 per-sample losses for a batch of 16: pass step\(\) the "
                                         r"unreduced \(B,\) losses"):
        monitor.step(0, losses[:8], t)
    monitor, losses, t = _monitored_batch()
    with pytest.raises(ShapeError, match=r"t must have shape \(16,\), got \(5,\)"):  # the losses are right: t is not
        monitor.step(0, losses, t[:5])


def test_monitor_refuses_non_integral_steps_and_takes_integer_types() -> None:
    """step=1.5 was logged as step 1."""
    monitor, losses, t = _monitored_batch()
    with pytest.raises(ConfigError, match=r"step must be an integer .*got 1\.5"):
        monitor.step(1.5, losses, t)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"step must be an integer"):
        monitor.step(True, losses, t)
    for step, logged in ((np.int64(4), 4), (torch.tensor(6), 6), (8.0, 8)):
        monitor, losses, t = _monitored_batch()
        record = monitor.step(step, losses, t)  # type: ignore[arg-type]
        assert record is not None and record["step"] == logged and type(record["step"]) is int


def test_monitor_warns_once_on_non_finite_losses_and_keeps_logging() -> None:
    """NaN losses were logged silently. A warning, not an error: the monitor must not stop a loop that handles such
    steps itself (GradScaler skips them); the record keeps the NaN."""
    monitor, losses, t = _monitored_batch()
    with pytest.warns(NonFiniteLossWarning, match=r"step 0: the per-sample losses or their gradients hold NaN or Inf "
                                                  r"\(mean loss nan"):
        record = monitor.step(0, losses * float("nan"), t)
    assert record is not None and math.isnan(record["loss"]) and math.isfinite(record["trace"])
    assert record["memorisation"] is False
    model = monitor.engine.model
    x, tt = torch.randn(16, 2), torch.rand(16)
    again = ((model(x, tt) - 1) ** 2).sum(1)
    again.mean().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteLossWarning)  # once per monitor
        assert math.isnan(monitor.step(1, again * float("nan"), tt)["loss"])  # type: ignore[index]
    monitor, losses, t = _monitored_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteLossWarning)
        assert math.isfinite(monitor.step(0, losses, t)["loss"])  # type: ignore[index]


def test_monitor_docstring_says_what_a_zero_trace_logs() -> None:
    """The module docstring said `normalised` is NaN when the trace is 0; the log is 0.0."""
    torch.set_default_dtype(torch.float64)
    try:
        class Constant(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lin = nn.Linear(1, 2)

            def forward(self, x: Tensor, t: Tensor) -> Tensor:
                return self.lin(torch.zeros(x.shape[0], 1))

        model = Constant()
        monitor = GradientVarianceMonitor(model, t_bins=None)
        losses = ((model(torch.randn(8, 2), None) - torch.ones(8, 2)) ** 2).sum(1)
        losses.mean().backward()
        record = monitor.step(0, losses, None)
    finally:
        torch.set_default_dtype(torch.float32)
    assert record is not None and record["trace"] == 0.0 and record["normalised"] == 0.0
    doc = " ".join((monitor_module.__doc__ or "").split())
    assert "0.0 when the trace is 0" in doc and "NaN when the trace is 0" not in doc


def test_singular_times_names_the_matrix_when_given_the_problem() -> None:
    problem = GaussianProblem(torch.tensor([5.0, 5.0]), torch.diag(torch.tensor([4.0, 0.25])))
    with pytest.raises(ConfigError, match=r"Theta must be the \(d, d\) matrix Θ of the field, got a GaussianProblem; "
                                          r".*problem\.field_parameters\(rotation\)\[1\]"):
        singular_times(problem)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"Theta must be a square \(d, d\) matrix .*got 'abc'"):
        singular_times("abc")  # type: ignore[arg-type]
    assert singular_times(problem.field_parameters(torch.tensor([[-1.0, 0.0], [0.0, -1.0]]))[1]) == [
        pytest.approx(1 / 3), pytest.approx(2 / 3)]


def test_exact_ot_refuses_one_dimensional_point_sets_as_the_metrics_do() -> None:
    """(n,) was paired as n scalars, while mmd2 and pairing_accuracy refuse it as ambiguous."""
    with pytest.raises(ShapeError, match=r"needs two point sets \(n, \*shape\), got shapes \(8,\) and \(8,\); "
                                         r"reshape n scalars to \(n, 1\)"):
        exact_ot_permutation(torch.randn(8), torch.randn(8))
    x = torch.randn(8)
    perm = exact_ot_permutation(x[:, None], x.flip(0)[:, None])
    assert torch.equal(x.flip(0)[perm], x)


def test_documented_dtypes_of_independent_couplings_and_of_integrate() -> None:
    """The behaviours the docstrings now state: the couplings that draw each side convert the targets to the
    source's dtype; integrate's state takes a float64 closed-form field's dtype."""
    g = torch.Generator().manual_seed(0)
    target64 = GaussianMixture(torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    pairs = ExactOTCoupling(StandardNormal(2), target64).sample(4, g)
    assert pairs.x0.dtype == pairs.x1.dtype == torch.float32
    pairs = IndependentCoupling(target64, StandardNormal(2)).sample(4, g)
    assert pairs.x0.dtype == pairs.x1.dtype == torch.float64
    with pytest.raises(DataError, match="dtype"):  # Pairs takes both sides as given and refuses the mix
        Pairs(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.float64))
    field = GaussianProblem(torch.tensor([5.0, 5.0]), torch.eye(2)).ot_field()
    assert integrate(field, torch.randn(4, 2)).x1.dtype == torch.float64
    assert integrate(MLPField(2, 8, 1), torch.randn(4, 2)).x1.dtype == torch.float32


def test_variance_t_profile_names_its_bins_t_bins_and_keeps_n_bins_with_a_warning() -> None:
    from flowvar.variance import variance_t_profile

    torch.manual_seed(0)
    model = MLPField(2, width=8, depth=1)
    loss, coupling = CFMLoss(Interpolant(0.1)), IndependentCoupling(StandardNormal(2), StandardNormal(2))
    new = variance_t_profile(model, loss, coupling, 16, t_bins=3, generator=torch.Generator().manual_seed(1))
    with pytest.warns(FutureWarning, match="t_bins"):
        old = variance_t_profile(model, loss, coupling, 16, n_bins=3, generator=torch.Generator().manual_seed(1))
    assert new.traces.shape == (3,) and np.array_equal(new.traces, old.traces)
    # estimate_variance's habit (generator right after n_samples) lands in the bins' slot: named, not a torch error
    with pytest.raises(ConfigError, match=r"number of t-bins, got a torch.Generator.*generator=gen"):
        variance_t_profile(model, loss, coupling, 16, torch.Generator().manual_seed(1))


def test_a_results_versions_name_the_git_commit_of_the_code_that_made_it() -> None:
    from flowvar.results import Result, git_commit

    head = git_commit()
    stamped = Result(experiment="x", title="t", config={}, quick=True).versions["git_commit"]
    if head is None:  # an installed wheel: no checkout to name
        assert stamped == "unknown (not a git checkout)"
    else:
        assert stamped[:40] == head[:40] and len(head.split("+")[0]) == 40


def test_a_plain_callable_with_other_dtype_weights_is_told_dtype_not_argument_order() -> None:
    """A plain function (no parameters for input_mismatch to read) whose float64 weights meet float32 x: torch's
    error names the dtype, so the message says convert one of them — not that the model takes (t, x) (review coreA)."""
    weight = torch.eye(2, dtype=torch.float64)

    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x @ weight

    with pytest.raises(ConfigError, match=r"x is torch.float32 on cpu: convert the weights the callable uses, or x") \
            as caught:
        integrate(field, torch.randn(4, 2))
    assert "(t, x)" not in str(caught.value)
