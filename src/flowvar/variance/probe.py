"""The per-sample probe of a validating pass: a few samples' gradients recomputed exactly, for the engine to compare
with the per-sample squared norms its rules gave.

Why. The rules, and the fallback for a module alone, read the first dimension of a module's input as the batch, row r
as sample r (:func:`~flowvar.variance.rules.base.batched` checks only its size). When that dimension has the batch's
size without being the batch — a learned (L, E) table projected by a Linear at L = B, a Linear applied to a
sequence-first (L, B, E) tensor at L = B, a positional ``nn.Embedding`` looked up with ``arange(L)`` at L = B — the
rule hands sample r what belongs to row r, and every per-sample norm is wrong while Σ_i g_i, a sum over the same rows,
is right, so the sum check cannot see it (+60 % on a trace in review, with no error). A recomputation of one sample's
gradient can.

How (:func:`exact_sample_norms`). The model's recorded call is run again on the whole recorded batch, with leaf
copies of the measured parameters, from copies of its buffers as the call began, under the autocast state and the
default generators' random-number state it began with (:func:`rng_state`: dropout draws the same masks), and the
result is checked against the recorded output. Then, for each probed sample i, one backward pass of ⟨v, δ ⊙ 1_i⟩ —
δ = ∂L/∂v the output gradient the engine recorded, kept on row i of every output leaf and zeroed elsewhere — gives
every parameter's g_i (raw δ, before the reduction's scale): the part of the measured backward pass that reaches the
model's output through row i, which is the engine's definition of sample i's gradient and equals ∇ℓ_i whenever ℓ_i
depends on v_i alone. It needs no per-sample independence of the model's layers: it is the batch's own forward. Only
the model's output must carry the batch in its first dimension (so does the whole-model fallback).

Cost: one forward of the recorded batch and one backward per probed sample (two: the first and the last sample),
with the recomputation's graph held meanwhile (the measured pass's own graph is gone by then, so the peak is about
that of one training step); on validating passes only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils._pytree import tree_flatten, tree_unflatten

from flowvar.variance.records import F64, CallRecord, RngState
from flowvar.variance.rules.fallback import _autocast_as, _batch_dims, _eager, _recomputation, _relative_gap

__all__ = ["exact_sample_norms", "probe_samples", "rng_state", "rng_unchanged"]

#: One probe at a time in the process: torch's default generators and torch.compiler's stance, which a probe sets for
#: its recomputation and gives back after it, are global, and two probes interleaving on two threads would give back
#: each other's (found: a compile stance left at "force_eager" for the rest of the process)
_LOCK = threading.Lock()


def rng_state(args: tuple[Any, ...]) -> RngState:
    """torch's default generators' states as a recorded call of the model begins: the CPU one, and the CUDA one of
    each device among the call's tensor arguments (the current device when none is on CUDA, once CUDA is in use).
    A copy of the CPU state (5 KB) and a few bytes per CUDA device: a few µs, taken only while
    :attr:`~flowvar.variance.engine.GradNormEngine.keep_rng` is set."""
    cuda: dict[int, Tensor] = {}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        devices = {x.device.index for x in tree_flatten(args)[0] if isinstance(x, Tensor) and x.is_cuda}
        devices.discard(None)
        for d in devices or {torch.cuda.current_device()}:
            cuda[int(d)] = torch.cuda.get_rng_state(int(d))
    return torch.get_rng_state(), cuda


def rng_unchanged(rng: RngState) -> bool:
    """Whether the default generators are still in the states ``rng`` (:func:`rng_state` as the model's call began):
    then the forward drew no random numbers from them (nor did another thread meanwhile), and its recomputation
    needs no replay, so the probe leaves the generators alone."""
    cpu, cuda = rng
    return torch.equal(torch.get_rng_state(), cpu) and all(
        torch.equal(torch.cuda.get_rng_state(device), state) for device, state in cuda.items())


@contextmanager
def _replayed(rng: RngState | None) -> Iterator[None]:
    """The default generators set to ``rng`` inside, and given back their own states afterwards (so the training
    run's random stream is untouched); nothing when ``rng`` is None."""
    if rng is None:
        yield
        return
    cpu, cuda = rng
    with torch.random.fork_rng(devices=list(cuda)):
        torch.set_rng_state(cpu)
        for device, state in cuda.items():
            torch.cuda.set_rng_state(state, device)
        yield


def probe_samples(B: int) -> tuple[int, ...]:
    """The samples probed: the first and the last (one when B = 1). Two, so that a sample whose gradient happens to
    agree with what the rule gave it (δ_0 = 0) does not hide a wrong pairing of the rest."""
    return (0,) if B == 1 else (0, B - 1)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


def exact_sample_norms(model: nn.Module, call: CallRecord, params: dict[str, Tensor], buffers: dict[str, Tensor],
                       samples: tuple[int, ...], B: int) -> dict[str, Tensor] | str:
    """{name: (len(samples),) float64 ‖g_{i,p}‖² of raw δ} for the parameters ``params`` (the engine's names, as in
    ``model.named_parameters()``: every parameter that requires a gradient, so that the recomputation's backward
    reaches no tensor of the model's own) and the samples ``samples`` of the model's recorded ``call`` (module
    docstring); or
    a sentence saying why they cannot be had from this pass. ``buffers``: the model's buffers as the call began,
    copied before use (the recomputation never writes the model's own); the random-number state is the call's
    (:attr:`ForwardState.rng`), none when it was not noted."""
    out_idx = [k for k, g in enumerate(call.grads) if g is not None]
    _, out_dim = _batch_dims(model)  # the first dimension, but the second of a sequence-first RNN's (as the fallback)
    for k in out_idx:
        o = call.outputs[k]
        if not isinstance(o, Tensor) or o.ndim <= out_dim(k) or o.shape[out_dim(k)] != B:
            shape = tuple(o.shape) if isinstance(o, Tensor) else type(o).__name__
            return (f"output {k} of the model has shape {shape}, without the batch of {B} samples in dimension "
                    f"{out_dim(k)}")
    if not out_idx:
        return "no output gradient of the model was recorded"
    leaves, spec = tree_flatten((call.args, call.kwargs))
    args, kwargs = tree_unflatten([x.detach() if isinstance(x, Tensor) else x for x in leaves], spec)
    weights = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    state = {n: b.clone() for n, b in buffers.items()}
    rng = call.state.rng if call.state is not None else None
    # a model compiled in place (model.compile()) is recomputed eagerly, as the fallback does (a compile per probe
    # otherwise); the stance is global, so it is set only where it is needed
    compiled = any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())
    try:
        with _LOCK, _recomputation(model), _autocast_as(call.autocast), _eager() if compiled else nullcontext(), \
                _replayed(rng), torch.enable_grad():
            outs, _ = tree_flatten(functional_call(model, (weights, state), args, kwargs))
            if len(outs) != len(call.outputs) or any(
                    not isinstance(outs[k], Tensor) or outs[k].shape != call.outputs[k].shape for k in out_idx):
                return "the model's recomputation returned outputs of other shapes than the recorded call's"
            # the fallback's tolerances: float64 to rounding, float32 to ~1e-6, half types and autocast less
            tol = 1e-9 if all(outs[k].dtype == F64 for k in out_idx) else \
                1e-3 if all(outs[k].dtype == torch.float32 for k in out_idx) and not any(
                    dtype is not None for _, dtype in call.autocast) else 3e-2
            gap = max(_relative_gap(outs[k].detach(), call.outputs[k].detach()) for k in out_idx)
            if not gap <= tol:  # NaN too
                return (f"the model's recomputation from the recorded inputs differs from the recorded output "
                        f"(relative gap {gap:.2g}): its forward draws random numbers from a generator of its own or "
                        f"with keep_rng off, or its inputs or output were modified in place after the forward")
            used = [k for k in out_idx if outs[k].requires_grad]
            if not used:
                return "the model's recomputed output does not depend on the measured parameters"
            ys = [outs[k] for k in used]
            names = list(weights)
            zero = torch.zeros((), dtype=F64, device=ys[0].device)
            norms = []
            for j, i in enumerate(samples):
                cots = []
                for k in used:
                    delta = call.grads[k]
                    assert delta is not None
                    row = torch.zeros_like(outs[k])
                    row.select(out_dim(k), i).copy_(delta.select(out_dim(k), i))
                    cots.append(row)
                # backward() into the leaf copies (every measured parameter is one, so nothing else of the model's
                # is reached): reentrant checkpointing refuses autograd.grad
                torch.autograd.backward(ys, cots, retain_graph=j + 1 < len(samples))
                grads = [weights[n].grad for n in names]
                norms.append(torch.stack([
                    zero if g is None else torch.linalg.vector_norm(g.to_dense() if g.is_sparse else g,
                                                                    dtype=F64).square().to(zero.device)
                    for g in grads]))
                for w in weights.values():
                    w.grad = None
    except Exception as error:  # a probe that cannot run says why; it must not break a measurement that can
        return f"the model could not be recomputed on the recorded batch ({_first_line(error)})"
    table = torch.stack(norms, 1)  # (n_params, n_samples)
    return {n: table[q] for q, n in enumerate(names)}
