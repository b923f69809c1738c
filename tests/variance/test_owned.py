"""Layers whose gradients the engine computes itself (flowvar.variance.owned): after ``backward()`` every ``.grad``
is autograd's, whatever the engine does afterwards; the statistics equal those measured with autograd computing
every gradient (``own_grads=False``) and the torch.func reference; the guards leave calls to autograd where owning
them would be wrong (checkpointing, unarmed engine, inputs without grad, parameters used outside their module)."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from per_sample_reference import F64, rel
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from flowvar.errors import DataError
from flowvar.variance import GradNormEngine

B = 10


class ConvNet(nn.Module):
    """A stem whose input does not require grad, then convolutions the engine owns (large feature maps: the rule
    materialises their per-sample gradients), a strided, a dilated/grouped and a circular-padded one, a 1×1, and
    one small-map convolution it leaves to autograd (ghost norm preferred)."""

    def __init__(self, ch: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, ch, 3, padding=1)
        self.a = nn.Conv2d(ch, ch, 3, padding=1)
        self.b = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.c = nn.Conv2d(2 * ch, 2 * ch, 3, padding=2, dilation=2, groups=2)
        self.d = nn.Conv2d(2 * ch, ch, 3, padding=1, padding_mode="circular", bias=False)
        self.e = nn.Conv2d(ch, ch, 1)
        self.small = nn.Conv2d(ch, 8 * ch, 3, stride=4, padding=1)
        self.head = nn.Linear(8 * ch, 3)

    def trunk(self, x: Tensor) -> Tensor:
        h = F.silu(self.stem(x))
        h = F.silu(self.a(h))
        h = F.silu(self.b(h))
        h = F.silu(self.c(h)) + h
        h = F.silu(self.d(h))
        return self.e(h)

    def forward(self, x: Tensor) -> Tensor:
        h = self.small(self.trunk(x))
        return self.head(h.mean((2, 3)))


def data(dtype: torch.dtype, n: int = B, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 12, 12, generator=g, dtype=dtype), torch.randn(n, 3, generator=g, dtype=dtype)


def losses_of(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return (model(x) - y).pow(2).sum(1)


def autograd_grads(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    ref = copy.deepcopy(model)
    losses_of(ref, x, y).mean().backward()
    return {n: p.grad.clone() for n, p in ref.named_parameters() if p.grad is not None}


def owned_rules(stats) -> set[str]:
    return {n.rsplit(".", 1)[0] for n, r in stats.rules.items() if r.endswith("-owned")}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grads_after_backward_are_autograds_and_statistics_unchanged(dtype):
    torch.manual_seed(0)
    model = ConvNet().to(dtype)
    x, y = data(dtype)
    want = autograd_grads(model, x, y)
    off = copy.deepcopy(model)
    engine = GradNormEngine(model, elementwise=True)
    losses = losses_of(model, x, y)
    losses.mean().backward()
    tol = 1e-12 if dtype == F64 else 1e-5
    for n, p in model.named_parameters():  # before compute(): .grad is complete when backward() returns
        assert p.requires_grad, n
        assert rel(p.grad, want[n]) < tol, n
    stats = engine.compute(reduction="mean", losses=losses)
    assert owned_rules(stats) == {"a", "b", "c", "d", "e"}  # not the stem (input without grad), not the small map
    engine_off = GradNormEngine(off, elementwise=True, own_grads=False)
    losses_off = losses_of(off, x, y)
    losses_off.mean().backward()
    ref = engine_off.compute(reduction="mean", losses=losses_off)
    assert not owned_rules(ref)
    assert rel(torch.tensor(stats.trace), torch.tensor(ref.trace)) < tol
    for n in ref.param_sq_norms:
        assert rel(stats.param_sq_norms[n], ref.param_sq_norms[n]) < tol, n
        assert rel(stats.mean_grad[n], ref.mean_grad[n]) < tol, n
        assert rel(stats.sq_sum[n], ref.sq_sum[n]) < tol, n


def test_bins_and_validation_measure_the_records_again():
    """Per-segment sums are not stashed at the end of the backward pass (t is not known then): the rule measures the
    recorded call again, with the same result; ``validate`` checks the owned sums against the per-sample ones."""
    model = ConvNet().to(F64)
    x, y = data(F64)
    off = copy.deepcopy(model)
    t = torch.rand(B, generator=torch.Generator().manual_seed(3), dtype=F64)
    out = []
    for m, own in ((model, True), (off, False)):
        engine = GradNormEngine(m, own_grads=own)
        losses = losses_of(m, x, y)
        losses.sum().backward()
        out.append(engine.compute(reduction="sum", losses=losses, t=t, t_bins=3, validate=True))
    got, ref = out
    assert not owned_rules(got)  # measured from the records, by the rule
    for n in ref.seg_sq_norms:
        assert rel(got.seg_sq_norms[n], ref.seg_sq_norms[n]) < 1e-12, n
        assert rel(got.param_sq_norms[n], ref.param_sq_norms[n]) < 1e-12, n


def test_accumulation_and_a_second_backward_pass_add_to_grad_as_autograd_does():
    model = ConvNet().to(F64)
    x, y = data(F64)
    x2, y2 = data(F64, seed=1)
    ref = copy.deepcopy(model)
    engine = GradNormEngine(model)
    # two micro-batches without zero_grad, the second backward pass run twice (retain_graph)
    losses_of(model, x, y).mean().backward()
    second = losses_of(model, x2, y2).mean()
    second.backward(retain_graph=True)
    second.backward()
    losses_of(ref, x, y).mean().backward()
    second_ref = losses_of(ref, x2, y2).mean()
    second_ref.backward(retain_graph=True)
    second_ref.backward()
    for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert rel(p.grad, q.grad) < 1e-12, n
    engine.clear()


def test_a_single_call_back_propagated_twice_is_refused():
    """retain_graph and a second backward pass through the same call: refused whether owned or not (the records hold
    both passes' δ, which cannot be told from a second loss back-propagated through the same forward)."""
    model = ConvNet().to(F64)
    x, y = data(F64)
    for own in (True, False):
        engine = GradNormEngine(model, own_grads=own)
        losses = losses_of(model, x, y)
        losses.sum().backward(retain_graph=True)
        losses.sum().backward()
        with pytest.raises(DataError, match="two backward passes went through the same recorded forward"):
            engine.compute(reduction="sum", losses=2 * losses)
        engine.detach()


def test_a_forward_that_raises_leaves_every_parameter_trainable():
    model = ConvNet().to(F64)
    GradNormEngine(model)
    x, _ = data(F64)
    bad = torch.randn(B, 3, 12, 12, dtype=F64, requires_grad=True)  # wrong channel count for model.a
    with pytest.raises(RuntimeError):
        model.a(bad)
    assert all(p.requires_grad for p in model.parameters())
    model(x)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointed_layers_are_left_to_autograd(reentrant):
    """A forward recomputed inside the backward pass (activation checkpointing) would compute the gradient twice:
    those calls are not owned, and .grad is autograd's."""
    model = ConvNet().to(F64)
    x, y = data(F64)
    x.requires_grad_()  # reentrant checkpointing differentiates its segment only through inputs that require grad

    def forward(m: ConvNet, inp: Tensor) -> Tensor:
        h = checkpoint(m.trunk, inp, use_reentrant=reentrant)
        return m.head(m.small(h).mean((2, 3)))

    ref = copy.deepcopy(model)
    (forward(ref, x) - y).pow(2).sum(1).mean().backward()
    engine = GradNormEngine(model)
    losses = (forward(model, x) - y).pow(2).sum(1)
    losses.mean().backward()
    for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert rel(p.grad, q.grad) < 1e-12, n
    engine.clear()


def test_disarmed_engine_and_frozen_parameters_are_left_alone():
    model = ConvNet().to(F64)
    x, y = data(F64)
    model.c.weight.requires_grad_(False)
    engine = GradNormEngine(model)
    engine.armed = False
    want = autograd_grads(model, x, y)
    losses_of(model, x, y).mean().backward()
    for n, p in model.named_parameters():
        assert (p.grad is None) == (n == "c.weight"), n
        if p.grad is not None:
            assert rel(p.grad, want[n]) < 1e-12, n
    assert not model.c.weight.requires_grad
    engine.armed = True
    model.zero_grad()
    losses = losses_of(model, x, y)
    losses.mean().backward()
    assert model.c.weight.grad is None and not model.c.weight.requires_grad  # a frozen weight stays frozen
    stats = engine.compute(reduction="mean", losses=losses)
    assert "c.weight" not in stats.param_sq_norms and "c.bias" in stats.param_sq_norms


class SharedOutside(ConvNet):
    """``a``'s weight is also used directly by the forward (outside ``a``'s own call)."""

    def trunk(self, x: Tensor) -> Tensor:
        h = super().trunk(x)
        return h + 0.1 * F.conv2d(h, self.a.weight, padding=1)


def test_a_parameter_also_used_outside_its_module_gets_its_whole_gradient_and_exact_statistics():
    model = SharedOutside().to(F64)
    x, y = data(F64)
    off = copy.deepcopy(model)
    want = autograd_grads(model, x, y)
    out = []
    for m, own in ((model, True), (off, False)):
        engine = GradNormEngine(m, own_grads=own)
        for _ in range(2):  # the second step knows a.weight is used outside and leaves it to autograd
            m.zero_grad()
            losses = losses_of(m, x, y)
            losses.mean().backward()
            if own:
                for n, p in m.named_parameters():
                    assert rel(p.grad, want[n]) < 1e-12, n
            stats = engine.compute(reduction="mean", losses=losses)
        out.append(stats)
    assert "a.weight" in model_outside(out[0])
    for n in out[1].param_sq_norms:
        assert rel(out[0].param_sq_norms[n], out[1].param_sq_norms[n]) < 1e-10, n


def test_a_deep_copy_of_a_hooked_model_owns_its_own_gradients():
    """copy.deepcopy(model) with the engine attached (an EMA copy, a second run from the same weights) copies the
    engine too: the copy's gradients go to the copy, and the original's engine is untouched."""
    model = ConvNet().to(F64)
    x, y = data(F64)
    engine = GradNormEngine(model)
    clone = copy.deepcopy(model)
    want = autograd_grads(model, x, y)
    losses_of(clone, x, y).mean().backward()
    for (n, p), q in zip(clone.named_parameters(), model.parameters(), strict=True):
        assert rel(p.grad, want[n]) < 1e-12, n
        assert q.grad is None, n
    assert not engine.has_records


def model_outside(stats) -> set[str]:
    return {n for n, r in stats.rules.items() if r.startswith("model-")}


def test_recorded_tensors_are_freed_without_the_garbage_collector():
    """The end-of-backward hook holds the engine weakly: no cycle keeps a step's graph alive."""
    model = ConvNet()
    engine = GradNormEngine(model)
    x, y = data(torch.float32)
    gc.disable()
    try:
        losses = losses_of(model, x, y)
        out = weakref.ref(losses)
        losses.mean().backward()
        engine.compute(reduction="mean", losses=losses)
        del losses
        assert out() is None
    finally:
        gc.enable()


class Tokens(nn.Module):
    """Sequence Linear layers the engine owns (S = 16 positions; not the embedding, whose input needs no
    gradient), a batch-first and a sequence-first PyTorch
    encoder layer (the latter's Linear layers see (S, B, ·) inputs and are left to autograd), and a DiT block."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        from flowvar.models.transformer import DiTBlock

        self.embed = nn.Linear(3, width)
        self.first = nn.TransformerEncoderLayer(width, 2, 16, dropout=0.0, batch_first=True)
        self.second = nn.TransformerEncoderLayer(width, 2, 16, dropout=0.0, batch_first=False)
        self.dit = DiTBlock(width, 2, 2.0)
        self.cond = nn.Linear(1, width)
        self.head = nn.Linear(width, 3)

    def forward(self, x: Tensor) -> Tensor:  # x (B, S, 3)
        h = self.first(self.embed(x))
        h = self.second(h.transpose(0, 1)).transpose(0, 1)
        h = self.dit(h, self.cond(x[:, :1, 0]))
        return self.head(h).mean(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sequence_linear_layers_of_transformers(dtype):
    torch.manual_seed(0)
    model = Tokens().to(dtype)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(B, 16, 3, generator=g, dtype=dtype), torch.randn(B, 3, generator=g, dtype=dtype)
    want = autograd_grads(model, x, y)
    off = copy.deepcopy(model)
    out = []
    for m, own in ((model, True), (off, False)):
        engine = GradNormEngine(m, elementwise=True, own_grads=own)
        losses = losses_of(m, x, y)
        losses.mean().backward()
        if own:
            for n, p in m.named_parameters():
                assert rel(p.grad, want[n]) < (1e-12 if dtype == F64 else 1e-5), n
        out.append(engine.compute(reduction="mean", losses=losses))
    got, ref = out
    owned = owned_rules(got)
    assert {"first.linear1", "first.linear2", "dit.fc1", "dit.qkv", "head"} <= owned, owned
    assert "embed" not in owned  # its input does not require grad
    assert not any(n.startswith("second.") for n in owned)  # sequence-first: (S, B, ·) inputs
    tol = 1e-10 if dtype == F64 else 1e-5
    for n in ref.param_sq_norms:
        assert rel(got.param_sq_norms[n], ref.param_sq_norms[n]) < tol, n
        assert rel(got.sq_sum[n], ref.sq_sum[n]) < tol, n


def test_calls_under_autocast_are_left_to_autograd():
    model = ConvNet()
    x, y = data(torch.float32)
    engine = GradNormEngine(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = losses_of(model, x, y).float()
    losses.mean().backward()
    assert not engine.owned.calls  # nothing owned: autograd computed every gradient in its own precision
    assert all(p.grad is not None for p in model.parameters())
    engine.clear()


@pytest.mark.parametrize("own", [True, False])
def test_a_deep_copy_between_backward_and_compute(own):
    """An EMA copy or a checkpoint taken after backward() and before compute(): the copy carries no records of the
    original's pass (they hold its non-leaf tensors), trains on its own, and the original still measures its pass."""
    model = ConvNet().to(F64)
    x, y = data(F64)
    off = copy.deepcopy(model)
    engine = GradNormEngine(model, own_grads=own)
    want = autograd_grads(model, x, y)
    losses = losses_of(model, x, y)
    losses.mean().backward()
    clone = copy.deepcopy(model)
    clone.zero_grad()
    losses_of(clone, x, y).mean().backward()
    for n, p in clone.named_parameters():
        assert rel(p.grad, want[n]) < 1e-12, n
    stats = engine.compute(reduction="mean", losses=losses)
    engine_off = GradNormEngine(off, own_grads=False)
    losses_off = losses_of(off, x, y)
    losses_off.mean().backward()
    ref = engine_off.compute(reduction="mean", losses=losses_off)
    for n in ref.param_sq_norms:
        assert rel(stats.param_sq_norms[n], ref.param_sq_norms[n]) < 1e-12, n
