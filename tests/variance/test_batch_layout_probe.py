"""Module inputs whose first dimension is not the batch (review varR, findings 1 and 2).

The rules read a module input's first dimension as the batch. When it has the batch's size without being the batch
(a learned (L, E) table projected by a Linear at L = B, a Linear applied to a sequence-first (L, B, E) tensor at
L = B, a positional Embedding of arange(L) at L = B) every per-sample norm was wrong with no error (+60 % / −25 % on
the trace; the monitor logged 1198.4 for a true 860.2), since Σ_i g_i — all the sum check sees — is right. The
validating pass's per-sample probe (:mod:`flowvar.variance.probe`) now recomputes two samples exactly and sends the
parameters that disagree to the whole-model fallback. When the first dimension is not even of the batch's size
((L, E) at L ≠ B, (1, E), tokens flattened to (B·L, E)) the rules used to raise ShapeError naming neither the module
nor a fix; such parameters now go to the whole-model fallback too, and are named in ``fallback``.

Every number is held against a brute-force per-sample loop in float64: one batched forward, then
``torch.autograd.grad(losses[i], params)`` for each sample (the engine's own definition of g_i, also for a forward
with dropout: the same forward's masks).
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowvar.errors import ConfigError
from flowvar.variance import GradNormEngine
from flowvar.variance.monitor import GradientVarianceMonitor

F64 = torch.float64
B = 6


def brute_force(model: nn.Module, losses: Tensor) -> tuple[dict[str, Tensor], float]:
    """({name: (B,) ‖g_{i,p}‖²}, plug-in trace) of the per-sample losses of one batched forward, sample by sample."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    rows = []
    for i in range(losses.shape[0]):
        grads = torch.autograd.grad(losses[i], list(params.values()), retain_graph=True, allow_unused=True)
        rows.append([torch.zeros_like(p) if g is None else g for p, g in zip(params.values(), grads)])
    per = {n: torch.stack([r[k] for r in rows]).to(F64) for k, n in enumerate(params)}
    sq = {n: g.flatten(1).pow(2).sum(1) for n, g in per.items()}
    total = sum(sq.values())
    trace = float(total.mean() - sum(g.mean(0).pow(2).sum() for g in per.values()))
    return sq, trace


def measure(model: nn.Module, x: Tensor, *, validate: bool, seed: int = 0, **engine_kw):
    """The engine's statistics of ℓ_i = ‖model(x)_i‖² (mean-reduced backward pass) and the brute force's of the same
    forward (re-run from the same seed, so a dropout draws the same masks)."""
    engine = GradNormEngine(model, **engine_kw)
    try:
        torch.manual_seed(seed)
        losses = model(x).flatten(1).pow(2).sum(1)
        losses.mean().backward()
        stats = engine.compute(reduction="mean", losses=losses.detach(), validate=validate)
    finally:
        engine.detach()
    torch.manual_seed(seed)
    ref_sq, ref_trace = brute_force(model, model(x).flatten(1).pow(2).sum(1))
    return stats, ref_sq, ref_trace


def assert_exact(stats, ref_sq: dict[str, Tensor], ref_trace: float, tol: float = 1e-10) -> None:
    assert stats.trace == pytest.approx(ref_trace, rel=tol)
    for name, sq in ref_sq.items():
        assert torch.allclose(stats.param_sq_norms[name], sq, rtol=tol, atol=tol * float(sq.max())), name


class SequenceFirst(nn.Module):
    """A Linear applied to x.transpose(0, 1), (L, B, E) — pre-``batch_first`` code (review c4c.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.l, self.o = nn.Linear(5, 5), nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.l(x.transpose(0, 1)).transpose(0, 1)
        return self.o(torch.tanh(h))


class Table(nn.Module):
    """A learned (L, E) table projected by a Linear and added to every sample (review c4d.py)."""

    def __init__(self, L: int, E: int = 5) -> None:
        super().__init__()
        self.pos, self.proj, self.o = nn.Parameter(torch.randn(L, E)), nn.Linear(E, E), nn.Linear(E, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.o(torch.tanh(x + self.proj(self.pos)))


class PositionalEmbedding(nn.Module):
    """nn.Embedding looked up with arange(L): the positional table of GPT-style code."""

    def __init__(self, L: int) -> None:
        super().__init__()
        self.pos, self.o = nn.Embedding(L, 5), nn.Linear(5, 2)
        self.register_buffer("idx", torch.arange(L))

    def forward(self, x: Tensor) -> Tensor:
        return self.o(torch.tanh(x + self.pos(self.idx)))


class Flattened(nn.Module):
    """Tokens flattened to (B·L, E) before an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.l, self.o = nn.Linear(5, 5), nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        b, L, E = x.shape
        return self.o(torch.tanh(self.l(x.reshape(b * L, E)))).reshape(b, L, 2)


class Shared(nn.Module):
    """A (1, E) parameter projected by a Linear and broadcast to the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.proj, self.o = nn.Parameter(torch.randn(1, 5)), nn.Linear(5, 5), nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.o(torch.tanh(x + self.proj(self.c)))


# ----------------------------------------------------------------------------------- L = B: the probe (finding 1)


@pytest.mark.parametrize("make", [SequenceFirst, lambda: Table(B), lambda: PositionalEmbedding(B)],
                         ids=["sequence-first", "table", "positional-embedding"])
def test_first_dimension_of_batch_size_is_caught_by_the_validating_pass(make) -> None:
    """At L = B the rule paired row r with sample r: the trace was 25-60 % off with no error. The validating pass
    measures the module through the whole model instead, names it in ``fallback`` and says so in ``probe``."""
    torch.manual_seed(0)
    model = make().to(F64)
    x = torch.randn(B, B, 5, dtype=F64)
    stats, ref_sq, ref_trace = measure(model, x, validate=True)
    assert_exact(stats, ref_sq, ref_trace)
    wrong = {"l.weight", "l.bias"} if isinstance(model, SequenceFirst) else \
        {"proj.weight", "proj.bias"} if isinstance(model, Table) else {"pos.weight"}
    assert wrong <= set(stats.fallback)
    module = next(iter(wrong)).split(".")[0]
    assert f"module {module!r}" in stats.fallback[next(iter(wrong))]
    assert "exact recomputation of sample" in stats.fallback[next(iter(wrong))]
    assert stats.probe is not None and "disagree with an exact recomputation" in stats.probe


def test_the_rules_were_wrong_there_without_validation() -> None:
    """What the probe guards against (documented, not a fix): the same pass measured without validation still pairs
    rows with samples, so compute(validate=False) at L = B gives a wrong trace — the monitor validates its first
    log, and validating once sends the module through the whole model for every later pass."""
    torch.manual_seed(0)
    model = Table(B).to(F64)
    x = torch.randn(B, B, 5, dtype=F64)
    stats, _, ref_trace = measure(model, x, validate=False)
    assert stats.probe is None
    assert abs(stats.trace - ref_trace) > 0.1 * ref_trace


def test_monitor_logs_the_true_trace_at_b_equal_l_and_keeps_it_on_later_steps() -> None:
    """Review c10.py: learned tokens projected by a Linear (Perceiver / learned-query style) at B = L = 8 logged
    1198.4 against a true 860.2. The first log (validate_first) finds it; later unvalidated logs stay exact because
    the module is measured through the whole model from then on."""
    torch.manual_seed(0)
    n = 8

    class Latents(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Parameter(torch.randn(n, 4))
            self.proj, self.inp, self.o = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            return self.o(torch.tanh(self.inp(x) + self.proj(self.tok) + t[:, None, None]))

    model = Latents().to(F64)
    monitor = GradientVarianceMonitor(model, every=1, t_bins=None)
    try:
        for step in range(2):
            x, t, u = torch.randn(n, n, 4, dtype=F64), torch.rand(n, dtype=F64), torch.randn(n, n, 4, dtype=F64)
            losses = (model(x, t) - u).pow(2).flatten(1).sum(1)
            losses.mean().backward()
            record = monitor.step(step, losses, coordinate_reduction="sum")
            model.zero_grad()
            _, ref = brute_force(model, (model(x, t) - u).pow(2).flatten(1).sum(1))
            assert record["trace"] == pytest.approx(ref, rel=1e-10), step
            assert {"proj.weight", "proj.bias"} <= set(record["fallback"])
        assert monitor.last_stats is not None and monitor.last_stats.probe is None  # the second log: not validated
    finally:
        monitor.close()


# -------------------------------------------------------------- first dimension not of the batch's size (finding 2)


@pytest.mark.parametrize("make, L", [(lambda: Table(7), 7), (Flattened, 7), (Shared, None), (SequenceFirst, 7),
                                     (lambda: PositionalEmbedding(7), 7)],
                         ids=["table-L7", "flattened", "shared-1xE", "sequence-first-L7", "positional-embedding-L7"])
def test_inputs_without_the_batch_first_go_through_the_whole_model(make, L) -> None:
    """These raised ShapeError ('the Linear input has shape (7, 5) but the batch has 6 samples'), naming neither
    the module nor a fix, although each loss depends on its own sample only. Now: exact through the whole model,
    named in ``fallback`` with the module, on every pass (validated or not)."""
    torch.manual_seed(0)
    model = make().to(F64)
    x = torch.randn(B, 5, dtype=F64) if L is None else torch.randn(B, L, 5, dtype=F64)
    for validate in (False, True):
        model.zero_grad()
        stats, ref_sq, ref_trace = measure(model, x, validate=validate)
        assert_exact(stats, ref_sq, ref_trace)
        layer = "pos" if isinstance(model, PositionalEmbedding) else \
            "proj" if isinstance(model, Table | Shared) else "l"
        why = stats.fallback[f"{layer}.weight"]
        assert f"module {layer!r}" in why and f"without the batch of {B} samples" in why


def test_conv1d_refusal_names_the_conv1d_module_and_the_fix() -> None:
    """A Conv1d convolving across the batch couples the samples: no per-sample gradients exist. It was refused as
    'the Conv2d input has shape ...' (the rule reshapes to 2-D); now the module's name and type, the cause and the
    fix are named."""
    torch.manual_seed(0)

    class AcrossBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.o = nn.Conv1d(5, 5, 3, padding=1), nn.Linear(5, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.o(torch.tanh(self.c(x.permute(1, 2, 0))).permute(2, 0, 1))

    model = AcrossBatch().to(F64)
    with pytest.raises(ConfigError) as info:
        measure(model, torch.randn(B, 7, 5, dtype=F64), validate=False)
    text = str(info.value)
    assert "module 'c' (Conv1d)" in text and "the Conv1d input has shape (7, 5, 6)" in text
    assert "couples the samples" in text and "batch_first=True" in text


@pytest.mark.parametrize("coupling", ["centred", "batch_norm"])
def test_coupling_written_with_functions_is_refused_on_the_validating_pass(coupling: str) -> None:
    """h − h.mean(0) or F.batch_norm(training=True) in a forward couples the samples: per-sample gradients do not
    exist, and the rules reported numbers anyway, the sum check holding (still so without validation). The probe's
    recomputation of sample 0 through the batch disagrees with the rule; the whole model cannot be recomputed one
    sample at a time; ConfigError names the module, instead of a number or a raw ValueError from F.batch_norm."""
    torch.manual_seed(0)

    class Coupled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 2)

        def forward(self, x: Tensor) -> Tensor:
            h = self.a(x)
            h = h - h.mean(0) if coupling == "centred" else F.batch_norm(h, None, None, training=True)
            return self.b(torch.tanh(h))

    model = Coupled().to(F64)
    x = torch.randn(8, 5, dtype=F64)
    stats, _, _ = measure(model, x, validate=False)  # not validated: not seen (documented)
    assert stats.fallback == {}
    model.zero_grad()
    with pytest.raises(ConfigError, match=r"module 'a' \(Linear\): .*exact recomputation of sample 0.*couples"):
        measure(model, x, validate=True)


# ------------------------------------------------------------------------------------- randomness and no false alarms


class DropoutNet(nn.Module):
    def __init__(self, sequence_first: bool) -> None:
        super().__init__()
        self.sequence_first = sequence_first
        self.l, self.d, self.o = nn.Linear(5, 5), nn.Dropout(0.3), nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.l(x.transpose(0, 1)).transpose(0, 1) if self.sequence_first else self.l(x)
        return self.o(self.d(torch.tanh(h)))


def test_probe_replays_dropout_and_leaves_the_random_stream_alone() -> None:
    """The probe recomputes the batch with the random-number state its forward began with (the same dropout masks),
    so a dropout model is checked, not skipped; the training run's random stream is as without it."""
    torch.manual_seed(0)
    model = DropoutNet(sequence_first=False).to(F64)
    x = torch.randn(B, B, 5, dtype=F64)
    engine = GradNormEngine(model)
    torch.manual_seed(3)
    losses = model(x).flatten(1).pow(2).sum(1)
    losses.mean().backward()
    before = torch.get_rng_state()
    stats = engine.compute(reduction="mean", losses=losses, validate=True)
    assert torch.equal(torch.get_rng_state(), before)
    engine.detach()
    assert stats.probe == "samples 0, 5: 4 parameter tensors agree with an exact recomputation"
    assert stats.fallback == {}
    torch.manual_seed(3)
    _, ref = brute_force(model, model(x).flatten(1).pow(2).sum(1))
    assert stats.trace == pytest.approx(ref, rel=1e-10)


def test_dropout_and_a_sequence_first_layer_at_l_equal_b_is_refused_naming_the_module() -> None:
    """Found by the probe, but the whole model cannot be recomputed one sample at a time with the pass's dropout
    masks: refused with the module named and the fix, rather than logged wrong."""
    torch.manual_seed(0)
    model = DropoutNet(sequence_first=True).to(F64)
    with pytest.raises(ConfigError) as info:
        measure(model, torch.randn(B, B, 5, dtype=F64), validate=True)
    text = str(info.value)
    assert "module 'l' (Linear)" in text and "exact recomputation of sample 0" in text
    assert "draws random numbers" in text and "batch_first=True" in text


def test_probe_without_the_random_state_says_it_did_not_run(caplog: pytest.LogCaptureFixture) -> None:
    """keep_rng off (a later pass, not announced): a dropout forward cannot be recomputed, and the probe says so in
    ``probe`` and the log instead of comparing against other masks."""
    torch.manual_seed(0)
    model = DropoutNet(sequence_first=False).to(F64)
    engine = GradNormEngine(model)
    engine.keep_rng = False
    losses = model(torch.randn(B, B, 5, dtype=F64)).flatten(1).pow(2).sum(1)
    losses.mean().backward()
    with caplog.at_level(logging.WARNING, logger="flowvar.variance.engine"):
        stats = engine.compute(reduction="mean", losses=losses, validate=True)
    engine.detach()
    assert stats.probe is not None and stats.probe.startswith("not run: the model's recomputation")
    assert "could not run" in caplog.text


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_no_false_alarm_on_a_transformer_at_l_equal_b(batch_first: bool, dtype: torch.dtype) -> None:
    """nn.TransformerEncoderLayer (both layouts: the engine moves a sequence-first layer's batch to the front) at
    L = B is measured right by the rules: the probe agrees, nothing goes to the fallback, in float64 and float32."""
    torch.manual_seed(0)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first)
            self.o = nn.Linear(8, 2)

        def forward(self, x: Tensor) -> Tensor:  # x (B, L, 8)
            h = self.layer(x) if batch_first else self.layer(x.transpose(0, 1)).transpose(0, 1)
            return self.o(h)

    model = Encoder().to(dtype)
    x = torch.randn(B, B, 8, dtype=dtype)
    stats, _, ref_trace = measure(model, x, validate=True)
    assert stats.fallback == {}
    assert stats.probe is not None and "agree with an exact recomputation" in stats.probe
    assert stats.trace == pytest.approx(ref_trace, rel=1e-10 if dtype == F64 else 1e-4)


def test_random_state_is_noted_only_until_the_first_compute() -> None:
    """The probe's random-number state costs a few µs per recorded pass: noted until the first compute() (the
    monitor: until its validating log), not on later passes; and kept only when the forward drew random numbers
    (a deterministic forward is recomputed without touching the generators)."""
    x = torch.randn(4, 3, dtype=F64)
    for model, first in ((nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5)), True), (nn.Linear(3, 2), False)):
        model = model.to(F64)
        engine = GradNormEngine(model)
        for expected in (first, False):
            model(x).pow(2).sum(1).mean().backward()
            (call,) = engine._root_calls
            assert (call.state is not None and call.state.rng is not None) is expected
            engine.compute(reduction="mean")
        engine.detach()
    monitor = GradientVarianceMonitor(nn.Linear(3, 2).to(F64), validate_first=False, t_bins=None)
    assert monitor.engine.keep_rng is False
    monitor.close()
