"""Review trainR2, findings 1, 2, 4, 5: a non-finite gradient with a finite loss, non-finite data from a coupling,
the "last good" wording, and a model on the meta device."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from flowvar.couplings import Coupling, FixedPairs, Pairs
from flowvar.errors import ConfigError, TrainingError
from flowvar.loss import CFMLoss
from flowvar.models import MLPField
from flowvar.train import TrainConfig, train

X0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
X1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1)) + 3


class NanGradAt(nn.Module):
    """A finite output on every call; on call number ``at`` its gradient is NaN (d sqrt(u)/du at u = 0 is inf, times
    the zero gradient of u: value 0 added, gradient NaN) — the shape of a half-precision gradient overflow too."""

    def __init__(self, at: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 2)
        self.calls, self.at = 0, at

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        y = self.lin(torch.cat([x, t[:, None]], 1))
        if self.calls == self.at:
            y = y + torch.sqrt((y - y.detach()).abs().sum())
        return y


def _finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.parametrize("grad_clip", [None, 1.0])
@pytest.mark.parametrize("at", [10, 20])
def test_nan_gradient_with_finite_loss_is_named_at_its_step_before_the_update(tmp_path, grad_clip, at):
    for ck in (None, tmp_path / f"ck{at}{grad_clip}"):
        model = NanGradAt(at)
        config = TrainConfig(steps=20, batch_size=16, log_every=0, grad_clip=grad_clip, checkpoint_every=5)
        with pytest.raises(TrainingError) as info:
            train(model, CFMLoss(), FixedPairs(X0, X1), config, checkpoint_dir=ck)
        msg = str(info.value)
        assert f"the gradient became non-finite (nan) at step {at} while the loss was finite" in msg
        assert "clipping cannot repair" in msg and "Lower the learning rate" not in msg
        assert "\n" not in msg
        # the update of that step was not applied: the model holds finite weights of step at − 1
        assert _finite(model)
        if ck is not None:
            assert f"the checkpoint of step {at - 5} is kept" in msg
        else:
            assert "no checkpoint was written" in msg


class Loader(Coupling):
    """A user's coupling over a data loader with one corrupt record in batch ``bad``."""

    def __init__(self, bad: int) -> None:
        self.calls, self.bad = 0, bad

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Pairs:
        self.calls += 1
        x1 = torch.randn(batch_size, 2, generator=generator) + 3
        if self.calls == self.bad:
            x1[5, 1] = float("nan")
        return Pairs(torch.randn(batch_size, 2, generator=generator), x1)


@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_non_finite_data_from_a_coupling_is_named_as_the_data_not_the_learning_rate(grad_clip):
    torch.manual_seed(0)
    model = MLPField(2, 16, 2, "silu")
    config = TrainConfig(steps=20, batch_size=16, log_every=0, grad_clip=grad_clip)
    with pytest.raises(TrainingError) as info:
        train(model, CFMLoss(), Loader(bad=7), config)
    msg = str(info.value)
    assert "the loss became non-finite (nan) at step 7" in msg
    assert "The batch drawn at step 7 holds non-finite x1 values from the coupling (Loader)" in msg
    assert "clean the data" in msg
    assert "learning rate" not in msg and "grad_clip" not in msg


def test_lr_advice_fits_the_grad_clip_setting():
    torch.manual_seed(0)
    for grad_clip, expected, absent in [(None, "or set grad_clip", "lower grad_clip"),
                                        (1.0, "or grad_clip (now 1.0)", "set grad_clip")]:
        model = MLPField(2, 16, 2, "silu")
        config = TrainConfig(steps=20, batch_size=16, lr=1e30, log_every=0, grad_clip=grad_clip)
        with pytest.raises(TrainingError) as info:
            train(model, CFMLoss(), FixedPairs(X0, X1), config)
        msg = str(info.value)
        assert "lower the learning rate (lr=1e+30)" in msg.lower() and expected in msg and absent not in msg
        assert "holds non-finite" not in msg


class Overflow(nn.Module):
    """Finite loss and gradients, but its one weight overflows under a huge lr: weights become inf."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        # bounded output: the loss stays finite however large w grows
        return torch.tanh(self.w) * x


def test_a_model_with_non_finite_weights_is_never_returned_without_checkpoint_dir():
    model = Overflow()
    with pytest.raises(TrainingError) as info:
        train(model, CFMLoss(), FixedPairs(X0, X1), TrainConfig(steps=3, batch_size=8, lr=3e38, log_every=0))
    msg = str(info.value)
    assert "parameters ['w'] became non-finite by step 3" in msg and "no checkpoint_dir was given" in msg
    assert "None" not in msg


def test_last_good_wording_without_a_checkpoint(tmp_path):
    model = Overflow()
    config = TrainConfig(steps=3, batch_size=8, lr=3e38, log_every=0, grad_clip=1.0)
    with pytest.raises(TrainingError) as info:
        train(model, CFMLoss(), FixedPairs(X0, X1), config, checkpoint_dir=tmp_path)
    msg = str(info.value)
    assert "last good: step None" not in msg and "no checkpoint was written" in msg
    assert "or grad_clip (now 1.0)" in msg and "set grad_clip" not in msg


def test_meta_device_model_is_a_one_line_config_error():
    model = MLPField(2, 16, 2, "silu").to("meta")
    with pytest.raises(ConfigError, match="meta device") as info:
        train(model, CFMLoss(), FixedPairs(X0, X1), TrainConfig(steps=2, batch_size=8, log_every=0))
    assert "\n" not in str(info.value) and "materialise" in str(info.value)


class _HugeGradientOf(torch.autograd.Function):
    """Value 0; gradient 3e38 in each of its input's 4 entries (finite, a norm of 6e38 beyond float32's 3.4e38)."""

    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:
        return w.new_zeros(())

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return torch.full((4,), 3e38)


class HugeGradient(nn.Module):
    """Finite loss and finite gradient values whose float32 norm overflows."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x + _HugeGradientOf.apply(self.w)


def test_an_overflowing_gradient_norm_is_told_from_a_nan_gradient():
    with pytest.raises(TrainingError) as info:
        train(HugeGradient(), CFMLoss(), FixedPairs(X0, X1), TrainConfig(steps=3, batch_size=8, log_every=0))
    msg = str(info.value)
    assert "the gradient norm overflowed (inf) at step 1 while the loss was finite" in msg
    assert "gradients are finite but huge: Lower the learning rate (lr=0.001) or set grad_clip" in msg
