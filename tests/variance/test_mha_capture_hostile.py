"""A hostile review of the captured projections of nn.MultiheadAttention (issue 20): while the engine records, each
armed forward of the module replaces the module-global ``torch.nn.functional.linear`` with a wrapper that observes
the in-projection and ``out_proj`` calls. These tests try to leave that wrapper installed (interrupts, threads,
detach mid-forward, other people's patches of F.linear), to make it observe calls it must not, and to make the rule
read the wrong tensors (shared modules, decoder layers, chained attention, checkpointing, compile, Jacobians) —
every number against per-sample gradients computed independently (torch.func, or one backward pass per sample).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from per_sample_reference import F64, assert_exact, first_tensor, measure, reference_loop
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils.checkpoint import checkpoint

from flowvar.errors import DataError
from flowvar.variance import GradientVarianceMonitor, GradNormEngine
from flowvar.variance.rules import attention

B = 4
TORCH_LINEAR = attention._ORIGINAL_LINEAR  # F.linear as torch defines it (flowvar was imported before any patch)


def reference_vmap(model: nn.Module, inputs: tuple[Tensor, ...], y: Tensor) -> dict[str, Tensor]:
    """torch.func per-sample gradients of ℓ_i = ‖model(*inputs_i) − y_i‖² (the model's dtype)."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict[str, Tensor], *row: Tensor) -> Tensor:
        *xs, yi = row
        return (first_tensor(functional_call(model, p, tuple(x[None] for x in xs))) - yi[None]).pow(2).sum()

    return vmap(grad(loss), in_dims=(None,) + (0,) * (len(inputs) + 1))(params, *inputs, y)


def one_step(engine: GradNormEngine, model: nn.Module, inputs: tuple[Tensor, ...], y: Tensor, **compute: object):
    """One recorded forward/backward pass of the mean of ℓ_i = ‖model(*inputs)_i − y_i‖², then compute()."""
    losses = (first_tensor(model(*inputs)) - y).pow(2).flatten(1).sum(1)
    losses.mean().backward()
    return engine.compute(reduction="mean", losses=losses, **compute)


def assert_unwrapped(linear: Callable[..., Tensor] = TORCH_LINEAR) -> None:
    """F.linear is ``linear`` again and no capture is open anywhere."""
    assert torch.nn.functional.linear is linear, torch.nn.functional.linear
    assert not getattr(attention._LOCAL, "active", None) and not attention._OPEN


@pytest.fixture
def no_recompute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the attention is recomputed: the captured projections must cover the call."""

    def refuse(*args: object) -> None:
        raise AssertionError("the attention was recomputed")

    monkeypatch.setattr(attention.MultiheadAttentionRule, "_recompute", staticmethod(refuse))


@pytest.fixture(autouse=True)
def leaves_f_linear_alone() -> Iterator[None]:
    """Every test ends with F.linear as torch defines it and no capture open (whatever it did in between)."""
    yield
    assert_unwrapped()


class SelfAttend(nn.Module):
    """x (B, L, E) → self-attention (batch first) → Linear; ``weights``: need_weights=True (the attention formed
    explicitly, differentiable twice, rather than PyTorch's fused kernel)."""

    def __init__(self, weights: bool = False) -> None:
        super().__init__()
        self.weights = weights
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 8)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.attn(x, x, x, need_weights=self.weights)[0])


def data(gen: torch.Generator, dtype: torch.dtype = F64, L: int = 5) -> tuple[Tensor, Tensor]:
    return torch.randn(B, L, 8, generator=gen, dtype=dtype), torch.randn(B, L, 8, generator=gen, dtype=dtype)


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt (PyTorch runs ``always_call`` hooks only for ``Exception``)."""


def interrupt_the_attention_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next attention core raises :class:`Interrupt` (after the in-projection, before out_proj), once."""
    inner = F.scaled_dot_product_attention

    def core(*args: object, **kwargs: object) -> Tensor:
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", inner)
        raise Interrupt

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", core)


# --------------------------------------------------------------------------------------------- when it is installed


class Spy:
    """Notes, for every F.multi_head_attention_forward call, whether F.linear was the wrapper during it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[bool] = []
        inner = F.multi_head_attention_forward

        def spy(*args: object, **kwargs: object) -> object:
            self.seen.append(torch.nn.functional.linear is attention._observing_linear)
            return inner(*args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "multi_head_attention_forward", spy)


@pytest.mark.parametrize("how", ["recording", "disarmed", "no_grad", "inference_mode", "vmap", "detached"])
def test_the_wrapper_is_installed_only_while_the_engine_records(how, gen, monkeypatch):
    spy = Spy(monkeypatch)
    torch.manual_seed(0)
    model = SelfAttend().to(F64)
    x, _ = data(gen)
    engine = GradNormEngine(model)
    if how == "recording":
        model(x)
    elif how == "disarmed":
        engine.armed = False
        model(x)
    elif how == "no_grad":
        with torch.no_grad():
            model(x)
    elif how == "inference_mode":
        with torch.inference_mode():
            model(x)
    elif how == "vmap":
        vmap(lambda row: model(row[None]))(x)
    else:
        engine.detach()
        model(x)
    assert spy.seen == [how == "recording"]
    assert_unwrapped()
    engine.detach()


def test_the_monitor_installs_the_wrapper_only_on_its_steps(gen, monkeypatch):
    """every=3: the wrapper is in place during the forward of steps 0, 3, 6 and of the step after each (recorded
    lightly: a next micro-batch may repeat a logged step's number), never during the others — nor during the
    recomputation of step 0's batch by the per-sample probe of the first (validating) log."""
    spy = Spy(monkeypatch)
    torch.manual_seed(0)
    model = SelfAttend().to(F64)
    x, y = data(gen)
    with GradientVarianceMonitor(model, every=3, t_bins=None) as monitor:
        for step in range(7):
            losses = (model(x) - y).pow(2).flatten(1).sum(1)
            losses.mean().backward()
            monitor.step(step, losses)
            assert_unwrapped()
    assert spy.seen == [True, False] + [step % 3 in (0, 1) for step in range(1, 7)]


# --------------------------------------------------------------------------------------------- left wrapped


def test_an_interrupt_inside_the_forward_is_cleaned_up(gen, monkeypatch):
    """A KeyboardInterrupt inside the attention's forward runs no ``always_call`` hook, so the capture stays open: it
    must observe nothing after that (a later disarmed forward with gradients on keeps no tensors), and F.linear is
    torch's again at the model's next call, the module's next call, or engine.clear() — then steps are exact."""
    torch.manual_seed(0)
    model = SelfAttend().to(F64)
    x, y = data(gen)
    engine = GradNormEngine(model)

    for restore in ("clear", "model", "module"):
        interrupt_the_attention_core(monkeypatch)  # the capture is open and holds the in-projection's call
        with pytest.raises(Interrupt):
            model(x)
        assert torch.nn.functional.linear is attention._observing_linear  # (what PyTorch leaves: no hook ran)
        if restore == "clear":
            engine.clear()
        elif restore == "model":
            engine.armed = False
            model(x)  # a disarmed forward with gradients on: nothing recorded, nothing kept
            engine.armed = True
        else:
            engine.armed = False
            model.attn(x, x, x)  # the module itself, disarmed
            engine.armed = True
        assert_unwrapped()
        assert not engine._captures
    stats = one_step(engine, model, (x,), y, validate=True)
    assert_exact(stats, reference_vmap(model, (x,), y), 1e-10)
    engine.detach()


def test_a_deep_copy_after_an_interrupt(gen, monkeypatch):
    """An interrupted forward left a capture (holding non-leaf tensors) open: the model can still be deep-copied,
    and both the copy and the original measure their next step exactly."""
    torch.manual_seed(0)
    model = SelfAttend().to(F64)
    x, y = data(gen)
    engine = GradNormEngine(model)
    interrupt_the_attention_core(monkeypatch)
    with pytest.raises(Interrupt):
        model(x)
    clone = copy.deepcopy(model)
    clone_engine = next(h.__self__ for h in clone._forward_hooks.values()
                        if isinstance(getattr(h, "__self__", None), GradNormEngine))
    assert isinstance(clone_engine, GradNormEngine) and clone_engine is not engine
    want = reference_vmap(model, (x,), y)
    assert_exact(one_step(engine, model, (x,), y, validate=True), want, 1e-10)
    assert_exact(one_step(clone_engine, clone, (x,), y, validate=True), want, 1e-10)
    engine.detach()
    clone_engine.detach()


def test_detach_while_the_forward_is_inside_the_attention(gen):
    """engine.detach() from a hook inside the attention's forward: the capture is closed, F.linear is torch's."""
    torch.manual_seed(0)
    model = SelfAttend().to(F64)
    x, _ = data(gen)
    engine = GradNormEngine(model)
    handle = model.attn.register_forward_pre_hook(lambda m, a: engine.detach())
    model(x)
    handle.remove()
    assert_unwrapped()


def test_detach_from_another_thread_while_a_forward_is_inside_the_attention(gen):
    torch.manual_seed(0)
    model = SelfAttend().to(F64)
    x, _ = data(gen)
    engine = GradNormEngine(model)
    inside, detached = threading.Event(), threading.Event()

    def pause(module: nn.Module, args: object) -> None:
        inside.set()
        assert detached.wait(10)

    handle = model.attn.register_forward_pre_hook(pause)
    worker = threading.Thread(target=model, args=(x,))
    worker.start()
    assert inside.wait(10)
    engine.detach()
    detached.set()
    worker.join(10)
    handle.remove()
    assert_unwrapped()


def test_one_model_run_by_two_threads_at_once(gen):
    """Two threads inside the same hooked model's attention at the same time (one engine): each thread's capture
    is its own, both are closed, and the next step is exact."""
    torch.manual_seed(0)
    model = SelfAttend().to(F64)
    x, y = data(gen)
    engine = GradNormEngine(model)
    both = threading.Barrier(2, timeout=10)
    handle = model.attn.register_forward_pre_hook(lambda m, a: both.wait() and None)
    workers = [threading.Thread(target=model, args=(x,)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    handle.remove()
    assert_unwrapped()
    engine.clear()
    assert_exact(one_step(engine, model, (x,), y, validate=True), reference_vmap(model, (x,), y), 1e-10)
    engine.detach()


def test_two_threads_train_two_models_at_once(gen, no_recompute):
    """A hooked attention model and a hooked MLP trained on two threads, 10 steps each: every step of both exact,
    no thread observes the other's calls, F.linear is torch's at the end."""
    errors: list[BaseException] = []
    start = threading.Barrier(2, timeout=10)

    def train(make: Callable[[], nn.Module], seed: int) -> None:
        try:
            g = torch.Generator().manual_seed(seed)
            torch.manual_seed(seed)
            model = make().to(F64)
            engine = GradNormEngine(model)
            start.wait()
            for _ in range(10):
                x, y = data(g)
                assert_exact(one_step(engine, model, (x,), y, validate=True), reference_vmap(model, (x,), y),
                             1e-10)
            engine.detach()
        except BaseException as e:  # (handed to the main thread)
            errors.append(e)

    mlp = lambda: nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 8))  # noqa: E731
    workers = [threading.Thread(target=train, args=(SelfAttend, 1)), threading.Thread(target=train, args=(mlp, 2))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert not errors, errors


# ----------------------------------------------------------------------------------- other patches of F.linear


def test_a_patch_of_f_linear_made_before_training_is_used_and_kept(gen, monkeypatch):
    """A library replaced F.linear after flowvar was imported (here: a pass-through that counts, and one that changes
    the numbers): the attention must still run through it while the engine records (the model computes what it
    computes without the engine), the patch is in place afterwards, and the measured numbers are exact."""
    torch.manual_seed(0)
    model = SelfAttend().to(F64)
    x, y = data(gen)
    calls = [0]

    def counting(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        calls[0] += 1
        return TORCH_LINEAR(input, weight, bias)

    def scaled(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # not a plain linear map
        return 1.5 * TORCH_LINEAR(input, weight, bias)

    for patch in (counting, scaled):
        monkeypatch.setattr(torch.nn.functional, "linear", patch)
        with torch.no_grad():
            plain = model(x)
        calls[0] = 0
        engine = GradNormEngine(model)
        out = model(x)
        assert torch.equal(out, plain)  # the patch ran inside the attention too
        assert patch is not counting or calls[0] == 3  # packed in-projection, out_proj, head
        assert torch.nn.functional.linear is patch
        engine.clear()
        stats = one_step(engine, model, (x,), y)  # the default cheap check catches what the patch changes
        assert_exact(stats, reference_vmap(model, (x,), y), 1e-10)
        assert torch.nn.functional.linear is patch
        engine.detach()
        monkeypatch.undo()


def test_a_patch_of_f_linear_made_inside_the_forward(gen):
    """A hook registered after the engine's swaps F.linear for the attention's forward and puts back what it found
    (the wrapper): F.linear is torch's once the step is over, and the numbers are exact."""
    torch.manual_seed(0)
    model = SelfAttend().to(F64)
    x, y = data(gen)
    engine = GradNormEngine(model)
    saved: list[Callable[..., Tensor]] = []
    seen = [0]

    def swap_in(module: nn.Module, args: object) -> None:
        found = torch.nn.functional.linear
        saved.append(found)

        def quantised(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
            seen[0] += 1
            return found(input, weight, bias)

        torch.nn.functional.linear = quantised

    def swap_out(module: nn.Module, args: object, output: object) -> None:
        torch.nn.functional.linear = saved.pop()

    handles = [model.attn.register_forward_pre_hook(swap_in), model.attn.register_forward_hook(swap_out)]
    stats = one_step(engine, model, (x,), y, validate=True)
    assert seen[0] == 4  # two projections per forward: the step's, and the validating pass's probe recomputing it
    assert_exact(stats, reference_vmap(model, (x,), y), 1e-10)
    for h in handles:
        h.remove()
    model(x)  # any later F.linear call puts torch's back
    assert_unwrapped()
    engine.detach()


def test_a_patch_installed_over_the_wrapper_and_never_removed(gen):
    """A library patches F.linear lazily, once, while the wrapper is in place (so its 'original' is the wrapper) and
    never restores it: later steps must neither recurse without end nor lose the patch, and stay exact."""
    torch.manual_seed(0)
    model = SelfAttend().to(F64)
    x, y = data(gen)
    engine = GradNormEngine(model)
    patched: list[Callable[..., Tensor]] = []

    def patch_once(module: nn.Module, args: object) -> None:
        if patched:
            return
        original = torch.nn.functional.linear

        def lazy(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
            return original(input, weight, bias)

        patched.append(lazy)
        torch.nn.functional.linear = lazy

    handle = model.attn.register_forward_pre_hook(patch_once)
    try:
        for _ in range(3):
            assert_exact(one_step(engine, model, (x,), y, validate=True), reference_vmap(model, (x,), y), 1e-10)
            assert torch.nn.functional.linear is patched[0]
    finally:
        handle.remove()
        engine.detach()
        torch.nn.functional.linear = TORCH_LINEAR


# --------------------------------------------------------------------------------------------- the numbers


def test_two_engines_on_one_model_both_read_the_projections(gen, no_recompute):
    torch.manual_seed(0)
    model = SelfAttend().to(F64)
    x, y = data(gen)
    first, second = GradNormEngine(model), GradNormEngine(model)
    losses = (model(x) - y).pow(2).flatten(1).sum(1)
    losses.mean().backward()
    want = reference_vmap(model, (x,), y)
    for engine in (first, second):
        assert_exact(engine.compute(losses=losses, validate=True), want, 1e-10)
        engine.detach()


class SharedTwice(nn.Module):
    """One MultiheadAttention used three times in a forward: self-attention, cross-attention on a memory, and
    self-attention again on the first result (weights shared across 'layers')."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        h = self.attn(x, x, x)[0]
        return self.attn(h, memory, memory, need_weights=False)[0] + self.attn(h, h, h)[0]


class Chained(nn.Module):
    """An attention whose query and value come from another attention's outputs; per-head weights used in the loss,
    no biases, kdim/vdim."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.MultiheadAttention(8, 2, batch_first=True)
        self.second = nn.MultiheadAttention(8, 2, batch_first=False, bias=False, kdim=6, vdim=5)
        self.k, self.v = nn.Linear(8, 6), nn.Linear(8, 5)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        q, v = self.first(x, memory, memory)[0], self.first(x, x, x)[0]
        out, w = self.second(q.transpose(0, 1), self.k(x).transpose(0, 1), self.v(v).transpose(0, 1),
                             average_attn_weights=False)
        return out.transpose(0, 1) + w.sum(1)[..., :1]


class Decoder(nn.Module):
    """nn.TransformerDecoderLayer: causal self-attention plus cross-attention on the memory (with padding)."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.layer = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.1, batch_first=batch_first)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        L, S = x.shape[1], memory.shape[1]
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
        pad = torch.zeros(x.shape[0], S, dtype=torch.bool)
        pad[:, -1] = True
        if not self.batch_first:
            x, memory = x.transpose(0, 1), memory.transpose(0, 1)
        out = self.layer(x, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=pad)
        return out if self.batch_first else out.transpose(0, 1)


class Seq2Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Transformer(8, 2, 2, 2, 16, dropout=0.0, batch_first=True)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        return self.net(memory, x)


class EncoderTwice(nn.Module):
    """One sequence-first nn.TransformerEncoderLayer applied twice (padding mask, causal mask on the second pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        L = x.shape[1]
        pad = torch.zeros(x.shape[0], L, dtype=torch.bool)
        pad[:, -1] = True
        h = self.layer(x.transpose(0, 1), src_key_padding_mask=pad)
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
        return self.layer(h, src_mask=causal, is_causal=True).transpose(0, 1)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "encoder-twice": EncoderTwice,
    "shared-three-times": SharedTwice,
    "chained": Chained,
    "decoder-batch-first": lambda: Decoder(True).eval(),  # eval: dropout=0.1 is off
    "decoder-sequence-first": lambda: Decoder(False).eval(),
    "transformer": Seq2Seq,
}


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_transformer_models_are_exact_from_their_projections(name, dtype, gen, no_recompute):
    torch.manual_seed(0)
    model = MODELS[name]().to(dtype)
    x, _ = data(gen, dtype)
    memory = torch.randn(B, 3, 8, generator=gen, dtype=dtype)
    with torch.no_grad():
        y = torch.randn(first_tensor(model(x, memory)).shape, generator=gen, dtype=dtype)
    stats = measure(model, (x, memory), y, validate=True)
    if dtype == F64:
        assert_exact(stats, reference_vmap(model, (x, memory), y), 1e-10)
    else:  # against float64
        model64 = copy.deepcopy(model).to(F64)
        assert_exact(stats, reference_vmap(model64, (x.to(F64), memory.to(F64)), y.to(F64)), 1e-4)
    assert stats.fallback == {}
    assert all(r.startswith(("mha-", "linear-", "layernorm")) for r in stats.rules.values()), stats.rules


def test_attention_inside_modules_measured_by_the_fallback(gen, no_recompute):
    """Blocks with a direct parameter (a learned position table: the block goes to the fallback, which runs the
    block again, attention included, inside torch.func while measuring) around attentions read from their
    projections."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos = nn.Parameter(torch.randn(5, 8))
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x: Tensor) -> Tensor:
            h = x + self.pos
            return 2 * self.attn(h, h, h)[0]

    torch.manual_seed(0)
    model = nn.Sequential(Block(), Block()).to(F64)
    x, y = data(gen)
    stats = measure(model, (x,), y, validate=True)
    assert_exact(stats, reference_vmap(model, (x,), y), 1e-10)
    assert set(stats.fallback) == {"0.pos", "1.pos"}
    assert_unwrapped()


def test_a_sample_whose_every_key_is_masked(gen, no_recompute):
    """A sample whose keys are all padded away (PyTorch's fused kernel gives it zeros): exact, against one backward
    pass per sample (a recomputation refused such a call)."""

    class Padded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x: Tensor, pad: Tensor) -> Tensor:
            return self.attn(x, x, x, key_padding_mask=pad > 0, need_weights=False)[0]

    torch.manual_seed(0)
    model = Padded().to(F64)
    x, y = data(gen)
    pad = torch.zeros(B, x.shape[1], dtype=F64)
    pad[0] = 1.0
    pad[1, -1] = 1.0
    stats = measure(model, (x, pad), y, validate=True)
    assert_exact(stats, reference_loop(model, (x, pad), y), 1e-10)


@pytest.mark.parametrize("reentrant", [False, True])
def test_a_checkpointed_attention(reentrant, gen, no_recompute):
    """torch.utils.checkpoint around the attention model: the forward is run again inside the backward pass."""

    class Checkpointed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = SelfAttend()

        def forward(self, x: Tensor) -> Tensor:
            return checkpoint(self.inner, x, use_reentrant=reentrant)

    torch.manual_seed(0)
    model = Checkpointed().to(F64)
    x, y = data(gen)
    stats = measure(model, (x.requires_grad_(reentrant),), y, validate=True)
    want = {f"inner.{k}": g for k, g in reference_vmap(model.inner, (x.detach(),), y).items()}
    assert_exact(stats, want, 1e-10)


def test_jacobians_and_double_backward_through_the_attention(gen, no_recompute):
    """A batched Jacobian (is_grads_batched) before the training pass does not disturb it; a backward pass of a
    gradient penalty (double backward) is not a pass of the per-sample losses and raises, never a wrong number."""
    torch.manual_seed(0)
    model = SelfAttend(weights=True).to(F64)
    x, y = data(gen)
    engine = GradNormEngine(model)
    losses = (model(x) - y).pow(2).flatten(1).sum(1)
    params = list(model.parameters())
    jac = torch.autograd.grad(losses, params, torch.eye(B, dtype=F64), is_grads_batched=True, retain_graph=True)
    want = reference_vmap(model, (x,), y)
    for g, name in zip(jac, dict(model.named_parameters())):
        assert float((g - want[name]).abs().max()) <= 1e-10 * float(want[name].abs().max())
    losses.mean().backward()
    assert_exact(engine.compute(losses=losses, validate=True), want, 1e-10)
    losses = (model(x) - y).pow(2).flatten(1).sum(1)
    grads = torch.autograd.grad(losses.mean(), params, create_graph=True)
    sum(g.pow(2).sum() for g in grads).backward()
    with pytest.raises(DataError):
        engine.compute(losses=losses, validate=True)
    engine.detach()


def test_a_compiled_model(gen):
    """torch.compile'd (eager backend): exact (the hooks inside the compiled region do not see the pass, so the
    parameters go through the whole model), and F.linear is torch's after every step."""
    torch.manual_seed(0)
    model = SelfAttend().to(F64)
    x, y = data(gen)
    engine = GradNormEngine(model)
    compiled = torch.compile(model, backend="eager")
    want = reference_vmap(model, (x,), y)
    for _ in range(2):
        assert_exact(one_step(engine, compiled, (x,), y, validate=True), want, 1e-10)
        assert_unwrapped()
    engine.detach()


@pytest.mark.parametrize("style", ["parametrize", "weight_norm"])
def test_a_reparametrised_out_proj_is_measured(style, gen):
    """out_proj's weight computed by a parametrisation (a user's, or new-style weight_norm: its tensors are then
    ``out_proj.parametrizations.weight.original{0,1}``; the attention's forward reads ``out_proj.weight``, so the
    parametrisation runs inside it): every parameter is measured — none skipped, as the rule's measuring the computed
    weight did — exactly, by the fallback, which says so."""
    torch.manual_seed(0)
    model = SelfAttend().to(F64)
    if style == "parametrize":
        class Scale(nn.Module):
            def forward(self, w: Tensor) -> Tensor:
                return 1.5 * w

        torch.nn.utils.parametrize.register_parametrization(model.attn.out_proj, "weight", Scale())
    else:
        torch.nn.utils.parametrizations.weight_norm(model.attn.out_proj)
    x, y = data(gen)
    stats = measure(model, (x,), y, validate=True)
    assert_exact(stats, reference_vmap(model, (x,), y), 1e-10)
    assert {n for n in stats.param_sq_norms if n.startswith("attn.")} <= set(stats.fallback)
