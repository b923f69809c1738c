"""Exact per-sample gradients (flowvar.variance.autograd): the closed form against autograd, vmap and the
per-sample loop against one ordinary backward pass per sample, and the refusal of batch-coupled forwards."""

from __future__ import annotations

import pytest
import torch

from flowvar.couplings import IndependentCoupling, RotatedOTCoupling
from flowvar.distributions import StandardNormal
from flowvar.errors import ConfigError
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss, per_sample_loss
from flowvar.models import MLPField
from flowvar.variance import VarianceAccumulator, gradient_variance, per_sample_gradients
from flowvar.variance.autograd import GradientStream, path_chunks

F64 = torch.float64


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def test_closed_form_matches_autograd_parametric(problem, random_field, gen):
    path = CFMLoss(Interpolant(sigma=0.3)).draw(RotatedOTCoupling(problem, 60.0), 400, gen)
    cf = per_sample_gradients(random_field, path, method="closed_form")
    ag = per_sample_gradients(random_field, path, method="autograd")
    assert set(cf) == set(ag) == {"theta", "Theta"}
    for name in cf:
        scale = float(cf[name].abs().max())
        assert scale > 1.0  # a nontrivial comparison
        assert float((cf[name] - ag[name]).abs().max()) <= 1e-12 * scale
    r_cf = gradient_variance(random_field, path, method="closed_form")
    r_ag = gradient_variance(random_field, path, method="autograd")
    assert r_cf.method == "closed_form" and r_ag.method == "autograd-loop"  # vmap rejects the singularity check
    assert gradient_variance(random_field, path).method == "closed_form"  # auto
    assert rel(r_cf.trace, r_ag.trace) < 1e-10 and r_cf.trace > 1.0
    assert rel(r_cf.mean_grad_sq_norm, r_ag.mean_grad_sq_norm) < 1e-10
    assert rel(r_cf.mean_loss, r_ag.mean_loss) < 1e-12
    for g in ("theta", "Theta"):
        assert rel(r_cf.per_group[g], r_ag.per_group[g]) < 1e-10


def test_autograd_matches_single_sample_backward_loop_mlp(gen):
    torch.manual_seed(0)
    model = MLPField(2, width=16, depth=2, activation="selu").double()
    coupling = IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64))
    path = CFMLoss(Interpolant(sigma=0.1)).draw(coupling, 24, gen)
    fast = per_sample_gradients(model, path, chunk_size=10, strategy="vmap")
    loop = per_sample_gradients(model, path, strategy="loop")
    names = [n for n, _ in model.named_parameters()]
    assert list(fast) == names
    for i in range(24):  # reference: one ordinary backward pass per sample
        model.zero_grad()
        per_sample_loss(model, path.__class__(*(getattr(path, f)[i:i + 1] for f in
                                                 ("x0", "x1", "t", "z", "xt", "target")))).sum().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None
            assert float((fast[name][i] - p.grad).abs().max()) <= 1e-10 * max(1.0, float(p.grad.abs().max()))
            assert float((loop[name][i] - p.grad).abs().max()) <= 1e-10 * max(1.0, float(p.grad.abs().max()))
    assert gradient_variance(model, path).method == "autograd-vmap"


# --------------------------------------------------------------------------------------------- batch coupling


def coupled_path(n: int = 64, dtype: torch.dtype = torch.float32):
    coupling = IndependentCoupling(StandardNormal(3, dtype), StandardNormal(3, dtype))
    return CFMLoss(Interpolant(sigma=0.1)).draw(coupling, n, torch.Generator().manual_seed(1))


class Centred(torch.nn.Module):
    """h − h.mean(0): sample i's output depends on every sample of the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.out = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inner(torch.cat([x, t[:, None]], 1))
        return self.out(torch.tanh(h - h.mean(0)))


class FunctionalBatchNorm(Centred):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inner(torch.cat([x, t[:, None]], 1))
        return self.out(torch.relu(torch.nn.functional.batch_norm(h, None, None, training=True)))


class WithBatchNorm(torch.nn.Module):
    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        self.inner, self.bn, self.out = torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8, **kwargs), torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.inner(torch.cat([x, t[:, None]], 1)))))


@pytest.mark.parametrize("strategy", ["auto", "vmap", "loop"])
@pytest.mark.parametrize("model_type", [Centred, FunctionalBatchNorm])
def test_batch_coupled_forward_is_refused(model_type, strategy):
    """autograd evaluates one sample at a time; on a batch-coupled forward it differentiated another function than
    the batched one (trace 78 against the engine's 403, no error) — now a ConfigError naming cause and fix."""
    torch.manual_seed(0)
    model, path = model_type(), coupled_path()
    for run in (lambda: gradient_variance(model, path, strategy=strategy),
                lambda: per_sample_gradients(model, path, strategy=strategy)):
        with pytest.raises(ConfigError, match=r"couples the samples of a batch.*model\.eval\(\)"):
            run()


@pytest.mark.parametrize("kwargs", [{}, {"track_running_stats": False}])
@pytest.mark.parametrize("strategy", ["auto", "loop"])
def test_batchnorm_in_training_mode_gives_the_engines_error(kwargs, strategy):
    """The default method gave torch's raw vmap in-place error or 'Expected more than 1 value per channel'."""
    torch.manual_seed(0)
    model, path = WithBatchNorm(**kwargs), coupled_path()
    with pytest.raises(ConfigError) as autograd_error:
        gradient_variance(model, path, strategy=strategy)
    with pytest.raises(ConfigError) as fast_error:
        gradient_variance(model, path, method="fast")
    assert str(autograd_error.value) == str(fast_error.value)
    assert "bn (BatchNorm1d) normalises with batch statistics" in str(autograd_error.value)
    assert "model.eval()" in str(autograd_error.value)
    assert ("track_running_stats=True" in str(autograd_error.value)) is bool(kwargs)


@pytest.mark.parametrize("method", ["autograd", "fast"])
def test_a_batchnorm_without_running_statistics_is_told_a_remedy_that_works(method):
    """In eval mode a BatchNorm built with track_running_stats=False still normalises with batch statistics: the error
    told it to call model.eval(), which changed nothing. It now says to build it with running statistics (and the
    remedy is checked: so built and in eval mode, it is measured)."""
    torch.manual_seed(0)
    model, path = WithBatchNorm(track_running_stats=False).double(), coupled_path(dtype=F64)
    model.eval()
    with pytest.raises(ConfigError, match=r"no running statistics \(track_running_stats=False\), so it does so in "
                                          r"eval mode too: build it with track_running_stats=True"):
        gradient_variance(model, path, method=method)
    fixed = WithBatchNorm().double()
    fixed.load_state_dict(model.state_dict(), strict=False)
    fixed.eval()
    assert gradient_variance(fixed, path, method=method).trace > 0


def test_batchnorm_in_eval_mode_is_measured_and_agrees_with_fast():
    torch.manual_seed(0)
    model, path = WithBatchNorm().double(), coupled_path(dtype=F64)
    model.train()
    model(path.xt, path.t)  # running statistics away from their initial values
    model.eval()
    exact, fast = gradient_variance(model, path), gradient_variance(model, path, method="fast")
    assert exact.trace > 0.1 and rel(exact.trace, fast.trace) < 1e-10


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_coupling_check_leaves_per_sample_models_and_their_numbers_alone(strategy):
    """A per-sample model with dropout (two layers: the loop draws its masks in another order than a batched
    forward) and a float32 MLP are not flagged, and the check's forward, run in a fork of the global RNG, does not
    change the estimate."""
    torch.manual_seed(0)
    nn = torch.nn
    dropout = nn.Sequential(nn.Linear(4, 32), nn.Dropout(0.3), nn.Tanh(), nn.Linear(32, 32), nn.Dropout(0.5),
                            nn.Linear(32, 3))

    class Field(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = dropout

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.net(torch.cat([x, t[:, None]], 1))

    path = coupled_path(200)
    for model in (Field(), MLPField(3, width=64, depth=3)):
        traces = []
        for check in (True, False):
            stream = GradientStream(model, "autograd", strategy)
            stream.check_coupling = check
            torch.manual_seed(7)
            acc = VarianceAccumulator()
            for chunk in path_chunks(path, 64):
                acc.update(*stream(chunk))
            traces.append(acc.report().trace)
        assert traces[0] == traces[1] and traces[0] > 0
